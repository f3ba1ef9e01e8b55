//! The console's authentication over real HTTPS: no page without a session, a wrong password and
//! a missing or stale CSRF token refused, login attempts rate-limited, cookies flagged, a disabled
//! account's session ended.

#![cfg(feature = "clinic")]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod console_support;
use console_support::*;
use vitals_hub::clinic::console::auth::{LOGIN_COOKIE, MAX_FAILS_PER_NAME, SESSION_COOKIE};

#[tokio::test]
async fn without_a_session_every_page_redirects_to_login() {
    let env = start().await;
    let mut b = Browser::new(&env);
    for path in ["/", "/patient/1", "/nothing-here"] {
        let p = b.get(path).await;
        assert_eq!(p.status, 303, "{path}");
        assert_eq!(p.location.as_deref(), Some("/login"), "{path}");
        assert!(!p.body.contains("Worklist"));
    }
    let p = b.post("/logout", &[("csrf", "x")]).await;
    assert_eq!(p.status, 303);
    assert_eq!(p.location.as_deref(), Some("/login"));
    // A made-up session cookie is no session.
    b.cookies.push((SESSION_COOKIE.into(), "00".repeat(32)));
    let p = b.get("/").await;
    assert_eq!(p.location.as_deref(), Some("/login"));
    env.stop().await;
}

#[tokio::test]
async fn wrong_password_is_refused_and_the_right_one_opens_a_flagged_session() {
    let env = start().await;
    let mut b = Browser::new(&env);
    let p = b.login(USER, "not the password at all").await;
    assert_eq!(p.status, 401);
    assert!(p.body.contains("Wrong user name or password"));
    assert!(!b.has_cookie(SESSION_COOKIE));
    let p = b.login("nobody", PASSWORD).await;
    assert_eq!(p.status, 401);
    assert!(!b.has_cookie(SESSION_COOKIE));

    let p = b.login(USER, PASSWORD).await;
    assert_eq!(p.status, 303, "{}", p.body);
    assert_eq!(p.location.as_deref(), Some("/"));
    let cookie = p
        .set_cookies
        .iter()
        .find(|c| c.starts_with(SESSION_COOKIE))
        .expect("a session cookie");
    for flag in ["HttpOnly", "Secure", "SameSite=Strict", "Path=/"] {
        assert!(cookie.contains(flag), "{cookie} lacks {flag}");
    }
    assert!(!cookie.contains("Domain"), "{cookie}");
    let p = b.get("/").await;
    assert_eq!(p.status, 200);
    assert!(p.body.contains("Worklist") && p.body.contains(USER));
    env.stop().await;
}

#[tokio::test]
async fn forms_without_the_csrf_token_are_refused() {
    let env = start().await;
    let mut b = Browser::new(&env);
    // Login without the token, with a wrong one, and with the token but without its cookie.
    let p = b.get("/login").await;
    let csrf = csrf_of(&p.body);
    let p = b
        .post("/login", &[("user", USER), ("password", PASSWORD)])
        .await;
    assert_eq!(p.status, 403);
    let p = b
        .post(
            "/login",
            &[
                ("user", USER),
                ("password", PASSWORD),
                ("csrf", &"ab".repeat(32)),
            ],
        )
        .await;
    assert_eq!(p.status, 403);
    let mut other = Browser::new(&env);
    let p = other
        .post(
            "/login",
            &[("user", USER), ("password", PASSWORD), ("csrf", &csrf)],
        )
        .await;
    assert_eq!(p.status, 403, "a token without its cookie");
    assert!(!other.has_cookie(SESSION_COOKIE));

    // Logged in: logout without the session's token does nothing.
    assert_eq!(b.login(USER, PASSWORD).await.status, 303);
    assert!(!b.has_cookie(LOGIN_COOKIE));
    let p = b.post("/logout", &[]).await;
    assert_eq!(p.status, 403);
    let p = b.post("/logout", &[("csrf", &csrf)]).await;
    assert_eq!(p.status, 403, "the login token is not the session's");
    let page = b.get("/").await;
    assert_eq!(page.status, 200, "still logged in");
    let token = csrf_of(&page.body);
    let p = b.post("/logout", &[("csrf", &token)]).await;
    assert_eq!(p.status, 303);
    assert!(!b.has_cookie(SESSION_COOKIE));
    assert_eq!(b.get("/").await.status, 303);
    env.stop().await;
}

#[tokio::test]
async fn login_attempts_are_rate_limited_per_account() {
    let env = start().await;
    let mut b = Browser::new(&env);
    for _ in 0..MAX_FAILS_PER_NAME {
        assert_eq!(b.login(USER, "guessing the password").await.status, 401);
    }
    let p = b.login(USER, PASSWORD).await;
    assert_eq!(p.status, 429, "even the right password is not checked now");
    assert!(!b.has_cookie(SESSION_COOKIE));
    env.stop().await;
}

#[tokio::test]
async fn a_disabled_account_loses_its_session() {
    let env = start().await;
    let mut b = Browser::new(&env);
    assert_eq!(b.login(USER, PASSWORD).await.status, 303);
    assert_eq!(b.get("/").await.status, 200);
    vitals_hub::clinic::console::users::UserStore::open(&env.db)
        .unwrap()
        .disable(USER)
        .unwrap();
    assert_eq!(b.get("/").await.status, 303);
    assert_eq!(b.login(USER, PASSWORD).await.status, 401);
    env.stop().await;
}
