//! Sessions, CSRF tokens and the login rate limit of the console.
//!
//! Guarantees: a session token is 256 random bits, kept in a cookie marked `HttpOnly; Secure;
//! SameSite=Strict` under the `__Host-` prefix (no Domain, Path=/), and held server side only as
//! its SHA-256 (a memory dump shows no usable token). A session ends after [`IDLE`] without a
//! request, after [`ABSOLUTE`] in any case, at logout, and when its account is disabled. Every form
//! carries the session's CSRF token (the login form a pre-session token bound to its own cookie),
//! compared in constant time. Login attempts are counted per account name and per client address
//! in a fixed window; past the limit every attempt is refused unchecked until the window ends.
//! Every table here is bounded: when full, the oldest entry goes.

use super::users::{random_bytes, Role};
use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// The session cookie's name (`__Host-`: the browser refuses it without Secure, with a Domain or
/// with a Path other than `/`).
pub const SESSION_COOKIE: &str = "__Host-vh_session";
/// The login form's pre-session CSRF cookie.
pub const LOGIN_COOKIE: &str = "__Host-vh_login";
/// A session ends after this long without a request.
pub const IDLE: Duration = Duration::from_secs(30 * 60);
/// A session ends this long after login, however busy.
pub const ABSOLUTE: Duration = Duration::from_secs(12 * 3600);
/// Most sessions held at once (the oldest is ended for a new one).
pub const MAX_SESSIONS: usize = 10_000;
/// Failed logins per account name in one [`WINDOW`].
pub const MAX_FAILS_PER_NAME: u32 = 5;
/// Failed logins per client address in one [`WINDOW`].
pub const MAX_FAILS_PER_ADDR: u32 = 20;
/// The rate limit's window.
pub const WINDOW: Duration = Duration::from_secs(15 * 60);
/// Most names and addresses the limiter tracks at once.
const MAX_TRACKED: usize = 10_000;

/// A fresh random token, hex (256 bits).
pub fn new_token() -> Option<String> {
    random_bytes::<32>().ok().map(hex::encode)
}

fn digest(token: &str) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// Equality of two tokens that leaks nothing about them through timing.
pub fn same_token(a: &str, b: &str) -> bool {
    // Compare digests: how long the comparison takes tells nothing about the token's bytes.
    digest(a) == digest(b)
}

/// A logged-in clinician.
#[derive(Debug, Clone)]
pub struct Session {
    pub user: String,
    pub role: Role,
    /// The CSRF token every form of this session carries.
    pub csrf: String,
    created: Instant,
    last: Instant,
}

/// The sessions, keyed by the SHA-256 of their token.
#[derive(Debug, Default)]
pub struct Sessions {
    map: HashMap<[u8; 32], Session>,
}

impl Sessions {
    /// Start a session; returns its token (for the cookie).
    pub fn start(&mut self, user: &str, role: Role, now: Instant) -> Option<(String, Session)> {
        self.map.retain(|_, s| {
            now.duration_since(s.last) < IDLE && now.duration_since(s.created) < ABSOLUTE
        });
        if self.map.len() >= MAX_SESSIONS {
            if let Some(k) = self.map.iter().min_by_key(|(_, s)| s.last).map(|(k, _)| *k) {
                self.map.remove(&k);
            }
        }
        let token = new_token()?;
        let s = Session {
            user: user.to_owned(),
            role,
            csrf: new_token()?,
            created: now,
            last: now,
        };
        self.map.insert(digest(&token), s.clone());
        Some((token, s))
    }

    /// The live session of a token (its idle clock restarted), or `None`.
    pub fn touch(&mut self, token: &str, now: Instant) -> Option<Session> {
        let k = digest(token);
        let live = self.map.get(&k).is_some_and(|s| {
            now.duration_since(s.last) < IDLE && now.duration_since(s.created) < ABSOLUTE
        });
        if !live {
            self.map.remove(&k);
            return None;
        }
        let s = self.map.get_mut(&k)?;
        s.last = now;
        Some(s.clone())
    }

    /// End a session.
    pub fn end(&mut self, token: &str) {
        self.map.remove(&digest(token));
    }

    /// End every session of an account (disabled).
    pub fn end_user(&mut self, user: &str) {
        self.map.retain(|_, s| s.user != user);
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

#[derive(Debug, Clone, Copy)]
struct Window {
    start: Instant,
    fails: u32,
}

/// Failed-login counters per account name and per client address.
#[derive(Debug, Default)]
pub struct LoginLimiter {
    names: HashMap<String, Window>,
    addrs: HashMap<IpAddr, Window>,
}

fn over<K: std::hash::Hash + Eq>(m: &HashMap<K, Window>, k: &K, max: u32, now: Instant) -> bool {
    m.get(k)
        .is_some_and(|w| now.duration_since(w.start) < WINDOW && w.fails >= max)
}

fn count<K: std::hash::Hash + Eq + Clone>(m: &mut HashMap<K, Window>, k: &K, now: Instant) {
    if m.len() >= MAX_TRACKED {
        m.retain(|_, w| now.duration_since(w.start) < WINDOW);
        if m.len() >= MAX_TRACKED {
            if let Some(old) = m
                .iter()
                .min_by_key(|(_, w)| w.start)
                .map(|(k, _)| k.clone())
            {
                m.remove(&old);
            }
        }
    }
    let w = m.entry(k.clone()).or_insert(Window {
        start: now,
        fails: 0,
    });
    if now.duration_since(w.start) >= WINDOW {
        *w = Window {
            start: now,
            fails: 0,
        };
    }
    w.fails = w.fails.saturating_add(1);
}

impl LoginLimiter {
    /// Whether an attempt for `name` from `addr` may be checked at all.
    pub fn allowed(&self, name: &str, addr: IpAddr, now: Instant) -> bool {
        !over(&self.names, &name.to_owned(), MAX_FAILS_PER_NAME, now)
            && !over(&self.addrs, &addr, MAX_FAILS_PER_ADDR, now)
    }

    /// Count a failed attempt.
    pub fn failed(&mut self, name: &str, addr: IpAddr, now: Instant) {
        count(&mut self.names, &name.to_owned(), now);
        count(&mut self.addrs, &addr, now);
    }

    /// A successful login clears the account's counter (not the address's).
    pub fn succeeded(&mut self, name: &str) {
        self.names.remove(name);
    }
}

/// The value of cookie `name` in a `Cookie` request header.
pub fn cookie<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    header.split(';').find_map(|kv| {
        let (k, v) = kv.trim().split_once('=')?;
        (k == name).then_some(v)
    })
}

/// A `Set-Cookie` value for a console cookie (session lifetime: no Max-Age, gone with the browser).
pub fn set_cookie(name: &str, value: &str) -> String {
    format!("{name}={value}; Path=/; HttpOnly; Secure; SameSite=Strict")
}

/// A `Set-Cookie` value that deletes the cookie.
pub fn clear_cookie(name: &str) -> String {
    format!("{name}=; Path=/; HttpOnly; Secure; SameSite=Strict; Max-Age=0")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn sessions_expire_when_idle_and_absolutely() {
        let mut s = Sessions::default();
        let t0 = Instant::now();
        let (tok, _) = s.start("a", Role::Clinician, t0).unwrap();
        assert!(s.touch(&tok, t0 + IDLE / 2).is_some());
        assert!(s.touch(&tok, t0 + IDLE / 2 + IDLE).is_none(), "idle");
        let (tok, _) = s.start("a", Role::Clinician, t0).unwrap();
        let mut t = t0;
        while t < t0 + ABSOLUTE - IDLE {
            t += IDLE / 2;
            assert!(s.touch(&tok, t).is_some());
        }
        assert!(s.touch(&tok, t0 + ABSOLUTE).is_none(), "absolute");
        assert!(s.touch("not a token", t0).is_none());
    }

    #[test]
    fn limiter_counts_per_name_and_window() {
        let mut l = LoginLimiter::default();
        let a: IpAddr = [127, 0, 0, 1].into();
        let t = Instant::now();
        for _ in 0..MAX_FAILS_PER_NAME {
            assert!(l.allowed("x", a, t));
            l.failed("x", a, t);
        }
        assert!(!l.allowed("x", a, t));
        assert!(l.allowed("y", a, t));
        assert!(l.allowed("x", a, t + WINDOW));
    }

    #[test]
    fn cookies_parse_and_tokens_compare() {
        assert_eq!(
            cookie("a=1; __Host-vh_session=abc", SESSION_COOKIE),
            Some("abc")
        );
        assert_eq!(cookie("x__Host-vh_session=abc", SESSION_COOKIE), None);
        assert!(same_token("abc", "abc"));
        assert!(!same_token("abc", "abd"));
        assert!(!same_token("abc", "ab"));
    }
}
