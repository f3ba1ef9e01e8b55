//! The console's accounts, in the clinic's store (table `console_users`): a name, a role
//! (clinician or admin), an argon2id password hash (PHC string) and whether the account is
//! disabled. Owns hashing and verification; a password is never stored, logged or echoed.
//!
//! The table lives in the same SQLite file as the hubs' resources (one file to back up), on its
//! own connection (WAL mode lets the ingest and the console write side by side).

use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use argon2::{Algorithm, Argon2, Params, Version};
use ring::rand::SecureRandom;
use rusqlite::{params, Connection, OptionalExtension};
use std::path::Path;
use zeroize::Zeroizing;

/// Shortest password accepted (NIST SP 800-63B: at least 8; a clinic account guards PHI).
pub const MIN_PASSWORD: usize = 12;
/// Longest password accepted: bounds the hashing work an attacker can ask for.
pub const MAX_PASSWORD: usize = 256;

/// What an account may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Clinician,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Clinician => "clinician",
            Role::Admin => "admin",
        }
    }
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "clinician" => Some(Role::Clinician),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }
}

/// An account as the console sees it (never the hash).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub role: Role,
    pub disabled: bool,
}

/// Errors managing accounts.
#[derive(Debug, thiserror::Error)]
pub enum UserError {
    #[error("user name {0:?} is not acceptable: 1 to 64 of a-z 0-9 . _ - (lower case)")]
    BadName(String),
    #[error("the password is {0} characters; use {MIN_PASSWORD} to {MAX_PASSWORD}")]
    BadPassword(usize),
    #[error("user {0:?} exists already; change its password with `vitals-clinic user passwd`")]
    Exists(String),
    #[error("no user {0:?}; see the accounts with `vitals-clinic user list`")]
    NoSuchUser(String),
    #[error("password hashing failed: {0}")]
    Hash(String),
    #[error("the clinic store: {0}")]
    Db(#[from] rusqlite::Error),
}

/// The accounts table on its own connection to the clinic's store.
#[derive(Debug)]
pub struct UserStore {
    conn: Connection,
    /// A hash of a random password, verified against when the user does not exist, so a wrong
    /// name costs the same time as a wrong password (no user enumeration by timing).
    dummy: String,
}

/// The argon2id parameters: OWASP's first recommendation (19 MiB, 2 passes, 1 lane).
fn hasher() -> Result<Argon2<'static>, UserError> {
    let params = Params::new(19 * 1024, 2, 1, None).map_err(|e| UserError::Hash(e.to_string()))?;
    Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
}

/// Random bytes from ring's system generator (the one random source of the crate).
pub fn random_bytes<const N: usize>() -> Result<[u8; N], UserError> {
    let mut b = [0u8; N];
    ring::rand::SystemRandom::new()
        .fill(&mut b)
        .map_err(|_| UserError::Hash("the system random generator failed".into()))?;
    Ok(b)
}

/// An argon2id PHC string for `password`.
pub fn hash_password(password: &str) -> Result<String, UserError> {
    check_password(password)?;
    let salt: [u8; 16] = random_bytes()?;
    let h = hasher()?
        .hash_password_with_salt(password.as_bytes(), &salt)
        .map_err(|e| UserError::Hash(e.to_string()))?;
    Ok(h.to_string())
}

fn check_password(password: &str) -> Result<(), UserError> {
    let n = password.chars().count();
    if !(MIN_PASSWORD..=MAX_PASSWORD).contains(&n) {
        return Err(UserError::BadPassword(n));
    }
    Ok(())
}

/// A user name: 1 to 64 of `a-z 0-9 . _ -`.
pub fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
}

impl UserStore {
    /// Open (and create the table in) the clinic store at `path`.
    pub fn open(path: &Path) -> Result<UserStore, UserError> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.execute_batch(
            "PRAGMA journal_mode=WAL;
             CREATE TABLE IF NOT EXISTS console_users(
               name TEXT PRIMARY KEY,
               role TEXT NOT NULL,
               phc TEXT NOT NULL,
               disabled INTEGER NOT NULL DEFAULT 0,
               created TEXT NOT NULL,
               changed TEXT NOT NULL);",
        )?;
        let dummy_pw = hex::encode(random_bytes::<16>()?);
        Ok(UserStore {
            conn,
            dummy: hash_password(&dummy_pw)?,
        })
    }

    /// Create an account.
    pub fn add(&mut self, name: &str, role: Role, password: &str) -> Result<(), UserError> {
        if !valid_name(name) {
            return Err(UserError::BadName(name.to_owned()));
        }
        let phc = hash_password(password)?;
        let now = jiff::Timestamp::now().to_string();
        let n = self.conn.execute(
            "INSERT OR IGNORE INTO console_users(name, role, phc, disabled, created, changed) VALUES (?1, ?2, ?3, 0, ?4, ?4)",
            params![name, role.as_str(), phc, now],
        )?;
        if n == 0 {
            return Err(UserError::Exists(name.to_owned()));
        }
        Ok(())
    }

    /// Set a new password (and enable the account again).
    pub fn set_password(&mut self, name: &str, password: &str) -> Result<(), UserError> {
        let phc = hash_password(password)?;
        let n = self.conn.execute(
            "UPDATE console_users SET phc = ?2, disabled = 0, changed = ?3 WHERE name = ?1",
            params![name, phc, jiff::Timestamp::now().to_string()],
        )?;
        if n == 0 {
            return Err(UserError::NoSuchUser(name.to_owned()));
        }
        Ok(())
    }

    /// Disable an account: it can no longer log in, and its sessions end at their next request.
    pub fn disable(&mut self, name: &str) -> Result<(), UserError> {
        let n = self.conn.execute(
            "UPDATE console_users SET disabled = 1, changed = ?2 WHERE name = ?1",
            params![name, jiff::Timestamp::now().to_string()],
        )?;
        if n == 0 {
            return Err(UserError::NoSuchUser(name.to_owned()));
        }
        Ok(())
    }

    /// One account (never its hash).
    pub fn get(&self, name: &str) -> Result<Option<User>, UserError> {
        Ok(self
            .conn
            .query_row(
                "SELECT name, role, disabled FROM console_users WHERE name = ?1",
                [name],
                |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, bool>(2)?,
                    ))
                },
            )
            .optional()?
            .map(|(name, role, disabled)| User {
                name,
                role: Role::parse(&role).unwrap_or(Role::Clinician),
                disabled,
            }))
    }

    /// Every account, by name.
    pub fn list(&self) -> Result<Vec<User>, UserError> {
        let mut st = self
            .conn
            .prepare("SELECT name, role, disabled FROM console_users ORDER BY name")?;
        let it = st.query_map([], |r| {
            Ok(User {
                name: r.get(0)?,
                role: Role::parse(&r.get::<_, String>(1)?).unwrap_or(Role::Clinician),
                disabled: r.get(2)?,
            })
        })?;
        Ok(it.collect::<rusqlite::Result<_>>()?)
    }

    /// The account if `password` is right and the account is enabled. Takes the same time for an
    /// unknown name (a dummy hash is verified).
    pub fn verify(&self, name: &str, password: &str) -> Result<Option<User>, UserError> {
        let row: Option<(String, String, bool)> = self
            .conn
            .query_row(
                "SELECT role, phc, disabled FROM console_users WHERE name = ?1",
                [name],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()?;
        let password = Zeroizing::new(password.to_owned());
        if password.chars().count() > MAX_PASSWORD {
            return Ok(None);
        }
        let phc = row.as_ref().map_or(self.dummy.as_str(), |r| r.1.as_str());
        let ok = hasher()?.verify_password(password.as_bytes(), phc).is_ok();
        Ok(match row {
            Some((role, _, false)) if ok => Some(User {
                name: name.to_owned(),
                role: Role::parse(&role).unwrap_or(Role::Clinician),
                disabled: false,
            }),
            _ => None,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn hashes_are_argon2id_and_verify() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = UserStore::open(&dir.path().join("c.db")).unwrap();
        s.add("dr.a", Role::Clinician, "correct horse battery")
            .unwrap();
        let phc: String = s
            .conn
            .query_row("SELECT phc FROM console_users", [], |r| r.get(0))
            .unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
        assert!(s.verify("dr.a", "correct horse battery").unwrap().is_some());
        assert!(s.verify("dr.a", "correct horse batterY").unwrap().is_none());
        assert!(s
            .verify("nobody", "correct horse battery")
            .unwrap()
            .is_none());
        assert!(matches!(
            s.add("dr.a", Role::Admin, "another long one"),
            Err(UserError::Exists(_))
        ));
        assert!(matches!(
            s.add("Dr A", Role::Admin, "another long one"),
            Err(UserError::BadName(_))
        ));
        assert!(matches!(
            s.add("dr.b", Role::Admin, "short"),
            Err(UserError::BadPassword(5))
        ));
        s.disable("dr.a").unwrap();
        assert!(s.verify("dr.a", "correct horse battery").unwrap().is_none());
        s.set_password("dr.a", "a new long password").unwrap();
        assert!(s.verify("dr.a", "a new long password").unwrap().is_some());
    }
}
