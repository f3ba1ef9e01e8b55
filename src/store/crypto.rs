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
//!
//! Key material is wiped after use (`zeroize`): [`Kek`], [`DataKey`] and [`IndexKey`] hold their
//! 32 bytes in a [`Zeroizing`] buffer and implement [`ZeroizeOnDrop`]; [`random_key`] and
//! [`Kek::unwrap_key`] hand out `Zeroizing` buffers, and the intermediate plaintext of an unwrap is
//! wiped too. ring's own key objects (`LessSafeKey`, `hmac::Key`) have no zeroising drop and the
//! crate forbids `unsafe`, so they are never kept: each seal, open or hash builds one on the stack
//! from the zeroising bytes and drops it at once (for ChaCha20-Poly1305 that is a 32-byte copy; for
//! the HMAC two SHA-256 blocks — nothing next to an fsync).

use ring::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey, NONCE_LEN};
use ring::hmac;
use ring::rand::SecureRandom;
use zeroize::{ZeroizeOnDrop, Zeroizing};

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

/// Random bytes that must be unique and unpredictable but are never secret: AEAD nonces (stored in
/// the clear in front of their ciphertext) and the random part of row identifiers (stored in the
/// clear). Drawn from the system generator [`PUBLIC_POOL`] bytes at a time and each byte handed out
/// once: one `getrandom` per ~40 values instead of one each, which was a tenth of a single
/// append's time on a virtual CPU (issue 20). Keys never come from here ([`random_key`] asks the
/// system each time). Owned by the store's one worker thread; a process forked from the hub (a
/// hook) execs at once and never seals, so no two writers share a buffer.
pub struct PublicRandom {
    rng: ring::rand::SystemRandom,
    buf: [u8; PUBLIC_POOL],
    pos: usize,
}

/// Bytes drawn from the system per refill of [`PublicRandom`].
const PUBLIC_POOL: usize = 512;

impl std::fmt::Debug for PublicRandom {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PublicRandom").finish_non_exhaustive()
    }
}

impl Default for PublicRandom {
    fn default() -> Self {
        PublicRandom {
            rng: ring::rand::SystemRandom::new(),
            buf: [0; PUBLIC_POOL],
            pos: PUBLIC_POOL,
        }
    }
}

impl PublicRandom {
    /// Fill `out` with bytes no other call has had.
    pub fn fill(&mut self, out: &mut [u8]) -> Result<(), CryptoError> {
        if out.len() > PUBLIC_POOL {
            return self.rng.fill(out).map_err(|_| CryptoError::Random);
        }
        if PUBLIC_POOL - self.pos < out.len() {
            self.rng
                .fill(&mut self.buf)
                .map_err(|_| CryptoError::Random)?;
            self.pos = 0;
        }
        let end = self.pos + out.len();
        let taken = self.buf.get(self.pos..end).ok_or(CryptoError::Random)?;
        out.copy_from_slice(taken);
        self.pos = end;
        Ok(())
    }

    /// A fresh random nonce for one seal.
    pub fn nonce(&mut self) -> Result<SealNonce, CryptoError> {
        let mut n = [0u8; NONCE_LEN];
        self.fill(&mut n)?;
        Ok(SealNonce(n))
    }
}

/// A random nonce for one seal: made only by [`PublicRandom::nonce`] (or from the system generator
/// by [`SealNonce::from_system`]) and consumed by the seal, so it cannot be used twice.
pub struct SealNonce([u8; NONCE_LEN]);

impl std::fmt::Debug for SealNonce {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SealNonce")
    }
}

impl SealNonce {
    /// A nonce straight from the system generator (rare seals: key wrapping).
    pub fn from_system(rng: &dyn SecureRandom) -> Result<SealNonce, CryptoError> {
        let mut n = [0u8; NONCE_LEN];
        rng.fill(&mut n).map_err(|_| CryptoError::Random)?;
        Ok(SealNonce(n))
    }
}

fn seal_raw(
    key: &LessSafeKey,
    nonce: SealNonce,
    aad: &[u8],
    plaintext: &[u8],
) -> Result<Vec<u8>, CryptoError> {
    let SealNonce(nonce) = nonce;
    // Sealed in place in its final buffer, sized up front: no copy of the plaintext (a wrapped
    // key, PHI) is left behind in a freed allocation.
    let mut out = Vec::with_capacity(NONCE_LEN + plaintext.len() + TAG_LEN);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(plaintext);
    let body = out.get_mut(NONCE_LEN..).ok_or(CryptoError::Random)?;
    let tag = key
        .seal_in_place_separate_tag(Nonce::assume_unique_for_key(nonce), Aad::from(aad), body)
        .map_err(|_| CryptoError::Random)?;
    out.extend_from_slice(tag.as_ref());
    Ok(out)
}

/// Open `sealed` in one buffer and return it cut to the plaintext (no second copy of it).
fn open_raw(key: &LessSafeKey, aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, CryptoError> {
    let (nonce, body) = sealed
        .split_at_checked(NONCE_LEN)
        .ok_or(CryptoError::Open)?;
    let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| CryptoError::Open)?;
    let mut body = body.to_vec();
    let len = key
        .open_in_place(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(aad),
            &mut body,
        )
        .map_err(|_| CryptoError::Open)?
        .len();
    body.truncate(len);
    Ok(body)
}

/// 32 bytes of key material, wiped when dropped.
type KeyBytes = Zeroizing<[u8; KEY_LEN]>;

fn key_bytes(bytes: &[u8; KEY_LEN]) -> KeyBytes {
    Zeroizing::new(*bytes)
}

/// A short-lived ring key for one operation (see the module note on why it is not kept).
fn aead_key(bytes: &[u8]) -> Result<LessSafeKey, CryptoError> {
    UnboundKey::new(AEAD, bytes)
        .map(LessSafeKey::new)
        .map_err(|_| CryptoError::KeyLength)
}

/// Check the length once, at construction, so later operations cannot fail on it.
fn checked(bytes: &[u8; KEY_LEN]) -> Result<KeyBytes, CryptoError> {
    aead_key(bytes)?;
    Ok(key_bytes(bytes))
}

/// The key-encryption key. Its bytes are wiped on drop.
pub struct Kek {
    key: KeyBytes,
    id: String,
}

impl std::fmt::Debug for Kek {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kek")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// The only secret field is a [`Zeroizing`] buffer.
impl ZeroizeOnDrop for Kek {}

impl Kek {
    pub fn new(bytes: &[u8; KEY_LEN]) -> Result<Kek, CryptoError> {
        // The id is a keyed fingerprint: it tells which KEK wrapped a key without revealing the KEK.
        let mac = hmac::Key::new(hmac::HMAC_SHA256, bytes);
        let tag = hmac::sign(&mac, format!("{DOMAIN}|kek-id").as_bytes());
        let id = hex::encode(tag.as_ref().get(..8).unwrap_or_default());
        Ok(Kek {
            key: checked(bytes)?,
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
        seal_raw(
            &aead_key(self.key.as_slice())?,
            SealNonce::from_system(rng)?,
            &Kek::aad(purpose, key_id),
            key,
        )
    }

    /// The key wrapped by [`Kek::wrap`], in a buffer wiped when dropped.
    pub fn unwrap_key(
        &self,
        purpose: &str,
        key_id: i64,
        wrapped: &[u8],
    ) -> Result<Zeroizing<[u8; KEY_LEN]>, CryptoError> {
        let plain = Zeroizing::new(open_raw(
            &aead_key(self.key.as_slice())?,
            &Kek::aad(purpose, key_id),
            wrapped,
        )?);
        let key: [u8; KEY_LEN] = plain
            .as_slice()
            .try_into()
            .map_err(|_| CryptoError::KeyLength)?;
        Ok(Zeroizing::new(key))
    }
}

/// A data key: seals and opens PHI columns. Its bytes are wiped on drop.
pub struct DataKey {
    id: i64,
    key: KeyBytes,
}

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataKey")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// The only secret field is a [`Zeroizing`] buffer.
impl ZeroizeOnDrop for DataKey {}

impl DataKey {
    pub fn new(id: i64, bytes: &[u8; KEY_LEN]) -> Result<DataKey, CryptoError> {
        Ok(DataKey {
            id,
            key: checked(bytes)?,
        })
    }
    pub fn id(&self) -> i64 {
        self.id
    }
    pub fn seal(
        &self,
        nonce: SealNonce,
        place: &Place<'_>,
        plaintext: &[u8],
    ) -> Result<Vec<u8>, CryptoError> {
        seal_raw(
            &aead_key(self.key.as_slice())?,
            nonce,
            &phi_aad(place, self.id),
            plaintext,
        )
    }
    pub fn open(&self, place: &Place<'_>, sealed: &[u8]) -> Result<Vec<u8>, CryptoError> {
        open_raw(
            &aead_key(self.key.as_slice())?,
            &phi_aad(place, self.id),
            sealed,
        )
    }
}

/// The index key: keyed hashes for lookups without plaintext. Its bytes are wiped on drop.
pub struct IndexKey {
    key: KeyBytes,
}

impl std::fmt::Debug for IndexKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IndexKey").finish_non_exhaustive()
    }
}

/// The only field is a [`Zeroizing`] buffer.
impl ZeroizeOnDrop for IndexKey {}

impl IndexKey {
    pub fn new(bytes: &[u8; KEY_LEN]) -> IndexKey {
        IndexKey {
            key: key_bytes(bytes),
        }
    }

    /// HMAC-SHA256 over `domain ‖ 0x00 ‖ value`, truncated to 128 bits (ample against collisions at
    /// any volume a hub sees, and half the index size); the domain keeps hashes of different things
    /// apart.
    pub fn hash(&self, domain: &str, value: &[u8]) -> Vec<u8> {
        let mac = hmac::Key::new(hmac::HMAC_SHA256, self.key.as_slice());
        let mut ctx = hmac::Context::with_key(&mac);
        ctx.update(DOMAIN.as_bytes());
        ctx.update(b"|");
        ctx.update(domain.as_bytes());
        ctx.update(&[0]);
        ctx.update(value);
        ctx.sign().as_ref().iter().take(16).copied().collect()
    }
}

/// 32 random bytes for a new key, in a buffer wiped when dropped.
pub fn random_key(rng: &dyn SecureRandom) -> Result<Zeroizing<[u8; KEY_LEN]>, CryptoError> {
    let mut k = Zeroizing::new([0u8; KEY_LEN]);
    rng.fill(k.as_mut_slice())
        .map_err(|_| CryptoError::Random)?;
    Ok(k)
}

/// Seal throughput of one algorithm over `payload` bytes for about `millis` ms: (seals/s, MB/s).
pub fn seal_throughput(alg: &'static aead::Algorithm, payload: usize, millis: u64) -> (f64, f64) {
    let rng = ring::rand::SystemRandom::new();
    let Ok(bytes) = random_key(&rng) else {
        return (0.0, 0.0);
    };
    let Ok(key) = UnboundKey::new(alg, bytes.as_slice()).map(LessSafeKey::new) else {
        return (0.0, 0.0);
    };
    let data = vec![0x5au8; payload];
    let aad = b"vitals-hub/v1|bench";
    // Nonces as the store draws them.
    let mut public = PublicRandom::default();
    let start = std::time::Instant::now();
    let mut n: u64 = 0;
    while start.elapsed().as_millis() < u128::from(millis) {
        for _ in 0..64 {
            let Ok(nonce) = public.nonce() else {
                return (0.0, 0.0);
            };
            if seal_raw(&key, nonce, aad, &data).is_err() {
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
        let mut public = PublicRandom::default();
        let sealed = k.seal(public.nonce().unwrap(), &here, b"secret").unwrap();
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
        assert_ne!(
            sealed,
            k.seal(public.nonce().unwrap(), &here, b"secret").unwrap()
        );
    }

    #[test]
    fn public_random_never_hands_out_the_same_bytes_twice() {
        // Across several refills of the pool, with draws that do not divide it evenly.
        let mut public = PublicRandom::default();
        let mut seen = std::collections::HashSet::new();
        for _ in 0..(5 * PUBLIC_POOL / NONCE_LEN) {
            let SealNonce(n) = public.nonce().unwrap();
            assert!(seen.insert(n), "a nonce came out twice");
            let mut uuid_bits = [0u8; 10];
            public.fill(&mut uuid_bits).unwrap();
            assert_ne!(uuid_bits, [0u8; 10]);
        }
        // More than a pool's worth at once comes straight from the system.
        let mut big = vec![0u8; PUBLIC_POOL + 1];
        public.fill(&mut big).unwrap();
        assert!(big.iter().any(|b| *b != 0));
    }

    #[test]
    fn kek_wrap_binds_key_id() {
        let rng = SystemRandom::new();
        let kek = Kek::new(&random_key(&rng).unwrap()).unwrap();
        let dek = random_key(&rng).unwrap();
        let w = kek.wrap(&rng, "data", 1, &dek).unwrap();
        assert_eq!(*kek.unwrap_key("data", 1, &w).unwrap(), *dek);
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

    /// Regression (issue 12): key material was not wiped after use. Every key type the store keeps
    /// zeroises on drop, every buffer of key bytes it hands out is `Zeroizing`, and what those
    /// buffers do on drop (`zeroize`) really clears the bytes.
    #[test]
    fn key_material_is_zeroised_on_drop() {
        fn wipes_on_drop<T: ZeroizeOnDrop>() {}
        fn wiping_buffer<T: zeroize::Zeroize>(_: &Zeroizing<T>) {}
        wipes_on_drop::<Kek>();
        wipes_on_drop::<DataKey>();
        wipes_on_drop::<IndexKey>();
        wipes_on_drop::<Zeroizing<[u8; KEY_LEN]>>();

        let rng = SystemRandom::new();
        let kek_bytes = random_key(&rng).unwrap();
        wiping_buffer(&kek_bytes);
        let kek = Kek::new(&kek_bytes).unwrap();
        let dek = random_key(&rng).unwrap();
        let unwrapped = kek
            .unwrap_key("data", 1, &kek.wrap(&rng, "data", 1, &dek).unwrap())
            .unwrap();
        wiping_buffer(&unwrapped);

        // The key types keep their bytes in this wrapper; its drop runs exactly this `zeroize`.
        let k = DataKey::new(1, &dek).unwrap();
        let i = IndexKey::new(&dek);
        let field: &Zeroizing<[u8; KEY_LEN]> = &k.key;
        wiping_buffer(field);
        wiping_buffer(&i.key);
        let mut b = Zeroizing::new(*dek);
        zeroize::Zeroize::zeroize(&mut b);
        assert_eq!(*b, [0u8; KEY_LEN]);
        // No key bytes in the Debug output either.
        let shown = format!("{kek:?} {k:?} {i:?}");
        assert!(!shown.contains(&format!("{:?}", &dek[..4])), "{shown}");
    }
}
