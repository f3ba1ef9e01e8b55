//! The key hierarchy and the AEAD envelope of every PHI column.
//!
//! KEK (file or systemd credential, never in the database)
//!  └─ wraps, in the `keys` table:
//!     - data keys (`purpose = 'data'`): seal PHI columns; exactly one is `active` at a time, older ones
//!       are `retired` and only open rows until re-encryption has moved those rows to the active key;
//!     - one index key (`purpose = 'index'`): HMAC-SHA256 for lookups that must not need plaintext
//!       (reading and alert deduplication, device address lookup).
//!
//! Sealed value layout: `nonce (12 random bytes) ‖ ciphertext ‖ tag (16)`. The associated data binds
//! it to its place: `vitals-hub/v1 | phi | table | column | row uuid | key id`, so a ciphertext moved to
//! another row, column or table, or relabelled with another key id, fails to open.

use ring::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey, NONCE_LEN};
use ring::hmac;
use ring::rand::SecureRandom;

/// The AEAD every sealed value uses. ChaCha20-Poly1305: the Raspberry Pi 4 (Cortex-A72) has no ARMv8
/// AES instructions, where ring's constant-time software AES-GCM is several times slower; on CPUs with
/// AES instructions both are far faster than the SD card. `vitals-hub bench store` measures both.
pub static AEAD: &aead::Algorithm = &aead::CHACHA20_POLY1305;

/// Length of a data key, the index key and the KEK.
pub const KEY_LEN: usize = 32;
const TAG_LEN: usize = 16;
const DOMAIN: &str = "vitals-hub/v1";

/// Errors of the crypto layer. Open failures carry no detail on purpose: the caller names the row.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    /// The system random number generator failed.
    #[error("the system random number generator failed")]
    Random,
    /// Authentication failed: wrong key, wrong place, or tampered bytes.
    #[error("ciphertext failed authentication")]
    Open,
    /// Key bytes of the wrong length.
    #[error("key material of the wrong length")]
    KeyLength,
}

/// Where a sealed value lives; part of its associated data.
#[derive(Debug, Clone, Copy)]
pub struct Place<'a> {
    pub table: &'static str,
    pub column: &'static str,
    pub row: &'a str,
}

fn phi_aad(place: &Place<'_>, key_id: i64) -> Vec<u8> {
    format!(
        "{DOMAIN}|phi|{}|{}|{}|{key_id}",
        place.table, place.column, place.row
    )
    .into_bytes()
}

fn seal_raw(
    key: &LessSafeKey,
    rng: &dyn SecureRandom,
    aad: &[u8],
    plaintext: &[u8],
) -> Result<Vec<u8>, CryptoError> {
    let mut nonce = [0u8; NONCE_LEN];
    rng.fill(&mut nonce).map_err(|_| CryptoError::Random)?;
    let mut out = Vec::with_capacity(NONCE_LEN + plaintext.len() + TAG_LEN);
    out.extend_from_slice(&nonce);
    let mut body = plaintext.to_vec();
    key.seal_in_place_append_tag(
        Nonce::assume_unique_for_key(nonce),
        Aad::from(aad),
        &mut body,
    )
    .map_err(|_| CryptoError::Random)?;
    out.extend_from_slice(&body);
    Ok(out)
}

fn open_raw(key: &LessSafeKey, aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, CryptoError> {
    let (nonce, body) = sealed
        .split_at_checked(NONCE_LEN)
        .ok_or(CryptoError::Open)?;
    let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| CryptoError::Open)?;
    let mut body = body.to_vec();
    let plain = key
        .open_in_place(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(aad),
            &mut body,
        )
        .map_err(|_| CryptoError::Open)?;
    Ok(plain.to_vec())
}

fn aead_key(bytes: &[u8]) -> Result<LessSafeKey, CryptoError> {
    UnboundKey::new(AEAD, bytes)
        .map(LessSafeKey::new)
        .map_err(|_| CryptoError::KeyLength)
}

/// The key-encryption key.
#[derive(Debug)]
pub struct Kek {
    key: LessSafeKey,
    id: String,
}

impl Kek {
    pub fn new(bytes: &[u8; KEY_LEN]) -> Result<Kek, CryptoError> {
        // The id is a keyed fingerprint: it tells which KEK wrapped a key without revealing the KEK.
        let mac = hmac::Key::new(hmac::HMAC_SHA256, bytes);
        let tag = hmac::sign(&mac, format!("{DOMAIN}|kek-id").as_bytes());
        let id = hex::encode(tag.as_ref().get(..8).unwrap_or_default());
        Ok(Kek {
            key: aead_key(bytes)?,
            id,
        })
    }

    /// A short public fingerprint of this KEK, stored next to every key it wraps.
    pub fn id(&self) -> &str {
        &self.id
    }

    fn aad(purpose: &str, key_id: i64) -> Vec<u8> {
        format!("{DOMAIN}|kek-wrap|{purpose}|{key_id}").into_bytes()
    }

    pub fn wrap(
        &self,
        rng: &dyn SecureRandom,
        purpose: &str,
        key_id: i64,
        key: &[u8; KEY_LEN],
    ) -> Result<Vec<u8>, CryptoError> {
        seal_raw(&self.key, rng, &Kek::aad(purpose, key_id), key)
    }

    pub fn unwrap_key(
        &self,
        purpose: &str,
        key_id: i64,
        wrapped: &[u8],
    ) -> Result<[u8; KEY_LEN], CryptoError> {
        let plain = open_raw(&self.key, &Kek::aad(purpose, key_id), wrapped)?;
        plain
            .as_slice()
            .try_into()
            .map_err(|_| CryptoError::KeyLength)
    }
}

/// A data key: seals and opens PHI columns.
#[derive(Debug)]
pub struct DataKey {
    id: i64,
    key: LessSafeKey,
}

impl DataKey {
    pub fn new(id: i64, bytes: &[u8; KEY_LEN]) -> Result<DataKey, CryptoError> {
        Ok(DataKey {
            id,
            key: aead_key(bytes)?,
        })
    }
    pub fn id(&self) -> i64 {
        self.id
    }
    pub fn seal(
        &self,
        rng: &dyn SecureRandom,
        place: &Place<'_>,
        plaintext: &[u8],
    ) -> Result<Vec<u8>, CryptoError> {
        seal_raw(&self.key, rng, &phi_aad(place, self.id), plaintext)
    }
    pub fn open(&self, place: &Place<'_>, sealed: &[u8]) -> Result<Vec<u8>, CryptoError> {
        open_raw(&self.key, &phi_aad(place, self.id), sealed)
    }
}

/// The index key: keyed hashes for lookups without plaintext.
#[derive(Debug)]
pub struct IndexKey {
    mac: hmac::Key,
}

impl IndexKey {
    pub fn new(bytes: &[u8; KEY_LEN]) -> IndexKey {
        IndexKey {
            mac: hmac::Key::new(hmac::HMAC_SHA256, bytes),
        }
    }

    /// HMAC-SHA256 over `domain ‖ 0x00 ‖ value`, truncated to 128 bits (ample against collisions at
    /// any volume a hub sees, and half the index size); the domain keeps hashes of different things
    /// apart.
    pub fn hash(&self, domain: &str, value: &[u8]) -> Vec<u8> {
        let mut ctx = hmac::Context::with_key(&self.mac);
        ctx.update(DOMAIN.as_bytes());
        ctx.update(b"|");
        ctx.update(domain.as_bytes());
        ctx.update(&[0]);
        ctx.update(value);
        ctx.sign().as_ref().iter().take(16).copied().collect()
    }
}

/// 32 random bytes for a new key.
pub fn random_key(rng: &dyn SecureRandom) -> Result<[u8; KEY_LEN], CryptoError> {
    let mut k = [0u8; KEY_LEN];
    rng.fill(&mut k).map_err(|_| CryptoError::Random)?;
    Ok(k)
}

/// Seal throughput of one algorithm over `payload` bytes for about `millis` ms: (seals/s, MB/s).
pub fn seal_throughput(alg: &'static aead::Algorithm, payload: usize, millis: u64) -> (f64, f64) {
    let rng = ring::rand::SystemRandom::new();
    let Ok(bytes) = random_key(&rng) else {
        return (0.0, 0.0);
    };
    let Ok(key) = UnboundKey::new(alg, &bytes).map(LessSafeKey::new) else {
        return (0.0, 0.0);
    };
    let data = vec![0x5au8; payload];
    let aad = b"vitals-hub/v1|bench";
    let start = std::time::Instant::now();
    let mut n: u64 = 0;
    while start.elapsed().as_millis() < u128::from(millis) {
        for _ in 0..64 {
            if seal_raw(&key, &rng, aad, &data).is_err() {
                return (0.0, 0.0);
            }
        }
        n += 64;
    }
    let secs = start.elapsed().as_secs_f64();
    let per_s = n as f64 / secs;
    (per_s, per_s * payload as f64 / 1e6)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::rand::SystemRandom;

    #[test]
    fn seal_open_round_trip_and_place_binding() {
        let rng = SystemRandom::new();
        let k = DataKey::new(3, &random_key(&rng).unwrap()).unwrap();
        let here = Place {
            table: "readings",
            column: "sealed",
            row: "a",
        };
        let sealed = k.seal(&rng, &here, b"secret").unwrap();
        assert_eq!(k.open(&here, &sealed).unwrap(), b"secret");
        let other_row = Place { row: "b", ..here };
        assert_eq!(k.open(&other_row, &sealed), Err(CryptoError::Open));
        let other_col = Place {
            column: "x",
            ..here
        };
        assert_eq!(k.open(&other_col, &sealed), Err(CryptoError::Open));
        let k4 = DataKey::new(4, &random_key(&rng).unwrap()).unwrap();
        assert_eq!(k4.open(&here, &sealed), Err(CryptoError::Open));
        assert_eq!(k.open(&here, &sealed[..5]), Err(CryptoError::Open));
        // Random nonces: sealing twice gives different bytes.
        assert_ne!(sealed, k.seal(&rng, &here, b"secret").unwrap());
    }

    #[test]
    fn kek_wrap_binds_key_id() {
        let rng = SystemRandom::new();
        let kek = Kek::new(&random_key(&rng).unwrap()).unwrap();
        let dek = random_key(&rng).unwrap();
        let w = kek.wrap(&rng, "data", 1, &dek).unwrap();
        assert_eq!(kek.unwrap_key("data", 1, &w).unwrap(), dek);
        assert!(kek.unwrap_key("data", 2, &w).is_err());
        assert!(kek.unwrap_key("index", 1, &w).is_err());
        assert_eq!(kek.id().len(), 16);
    }

    #[test]
    fn index_hash_is_domain_separated() {
        let k = IndexKey::new(&[1u8; 32]);
        assert_ne!(k.hash("reading", b"x"), k.hash("alert", b"x"));
        assert_eq!(k.hash("reading", b"x"), k.hash("reading", b"x"));
    }
}
