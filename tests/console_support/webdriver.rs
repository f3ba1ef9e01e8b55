//! Headless Chromium through chromedriver (WebDriver, the fantoccini client), shared by the tests
//! that drive the console in a real browser. Needs Debian's `chromium` and `chromium-driver`
//! (`.ci/run` installs them when missing).

use fantoccini::{ClientBuilder, Locator};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// `prog` on the PATH.
pub fn find(prog: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| PathBuf::from(d).join(prog))
        .find(|p| p.is_file())
}

/// chromedriver's path when both it and chromium are installed; `None` (the test skips) when
/// not, except under `CI=true`, where a missing browser fails the test.
pub fn chromedriver_or_skip() -> Option<PathBuf> {
    match (
        find("chromedriver"),
        find("chromium").or_else(|| find("chromium-browser")),
    ) {
        (Some(d), Some(_)) => Some(d),
        _ => {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "chromium and chromium-driver are required under CI=true (.ci/run installs them)"
            );
            eprintln!(
                "skipped: chromium / chromedriver not installed (apt install chromium chromium-driver)"
            );
            None
        }
    }
}

/// chromedriver on a free loopback port; killed when dropped.
pub struct Driver {
    child: std::process::Child,
    pub port: u16,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub async fn driver(exe: &Path) -> Driver {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = std::process::Command::new(exe)
        .arg(format!("--port={port}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let d = Driver { child, port };
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return d;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("chromedriver did not listen on {port}");
}

/// A headless Chromium session through `d`, accepting the console's development certificate.
pub async fn session(d: &Driver) -> fantoccini::Client {
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({ "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1200,1000"] }),
    );
    // The console's certificate is from a development CA the browser does not know.
    caps.insert("acceptInsecureCerts".into(), serde_json::json!(true));
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    ClientBuilder::new(connector)
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{}", d.port))
        .await
        .expect("a chromedriver session")
}

/// After a click that navigates (a form's POST and redirect, a link), WebDriver may answer before
/// the new page is in: wait for it (up to 20 s) instead of reading the old page.
pub async fn wait_path(c: &fantoccini::Client, path: &str) {
    for _ in 0..100 {
        if c.current_url().await.unwrap().path() == path {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("the browser never reached {path}");
}

/// The same, for a page that stays at its address: wait for `text` in its source.
pub async fn wait_source(c: &fantoccini::Client, text: &str) {
    for _ in 0..100 {
        if c.source().await.unwrap().contains(text) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("the page never showed {text:?}");
}

/// Type `text` into the input named `name` (after clearing it).
pub async fn fill(c: &fantoccini::Client, name: &str, text: &str) {
    let e = c
        .find(Locator::Css(&format!("[name='{name}']")))
        .await
        .unwrap_or_else(|e| panic!("no field {name}: {e}"));
    e.clear().await.unwrap();
    e.send_keys(text).await.unwrap();
}

/// Log in on the console at `base` as `user`; waits for the worklist.
pub async fn log_in(c: &fantoccini::Client, base: &str, user: &str, password: &str) {
    c.goto(&format!("{base}/login")).await.unwrap();
    fill(c, "user", user).await;
    fill(c, "password", password).await;
    c.find(Locator::Css("main button[type=submit]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_path(c, "/").await;
}

/// Click the first element matching the CSS selector `css`.
pub async fn click(c: &fantoccini::Client, css: &str) {
    c.find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("nothing to click at {css}: {e}"))
        .click()
        .await
        .unwrap();
}

/// The text of the first element matching the CSS selector `css`.
pub async fn text_of(c: &fantoccini::Client, css: &str) -> String {
    c.find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("no element at {css}: {e}"))
        .text()
        .await
        .unwrap()
}

/// A screenshot of the browser's page written to `target/tmp/{name}.png`.
pub async fn screenshot(c: &fantoccini::Client, name: &str) {
    let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}.png"));
    std::fs::write(&path, c.screenshot().await.unwrap())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
}
