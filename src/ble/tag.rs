//! How logs name a device without its address: a keyed MAC (HMAC-SHA-256, truncated to 8 bytes),
//! so a tag cannot be brute-forced over the few million addresses of known manufacturer prefixes
//! without the key. The key comes from the store (derived from its index key; see
//! `Store::address_tag_key`) and is handed in at start: `ble` never reads the store itself.

use ring::hmac;

/// The domain of address tags (keeps them apart from any other MAC under the same key).
const DOMAIN: &[u8] = b"vitals-hub/v1|address-tag|";

/// Tags addresses for logs.
#[derive(Clone)]
pub struct AddressTags {
    key: hmac::Key,
}

impl std::fmt::Debug for AddressTags {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AddressTags(..)")
    }
}

impl AddressTags {
    /// Tags under `key` (32 bytes from the store).
    pub fn new(key: &[u8]) -> AddressTags {
        AddressTags {
            key: hmac::Key::new(hmac::HMAC_SHA256, key),
        }
    }

    /// Tags under a random key of this process (tools that have no store open): stable within
    /// the run only.
    pub fn ephemeral() -> AddressTags {
        use ring::rand::SecureRandom as _;
        let mut k = [0u8; 32];
        // A failing system RNG leaves the key zero: tags then only lose their secrecy.
        let _ = ring::rand::SystemRandom::new().fill(&mut k);
        AddressTags::new(&k)
    }

    /// `dev-` and 16 hex digits.
    pub fn tag(&self, address: &str) -> String {
        let mut ctx = hmac::Context::with_key(&self.key);
        ctx.update(DOMAIN);
        ctx.update(address.to_ascii_uppercase().as_bytes());
        let mac = ctx.sign();
        let mut out = String::from("dev-");
        for b in mac.as_ref().iter().take(8) {
            out.push_str(&format!("{b:02x}"));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_differ_by_key_and_are_not_the_unkeyed_hash() {
        let a = "C0:26:DA:01:02:03";
        let one = AddressTags::new(&[1u8; 32]);
        let two = AddressTags::new(&[2u8; 32]);
        assert_eq!(one.tag(a), one.tag(&a.to_ascii_lowercase()));
        assert_ne!(one.tag(a), two.tag(a));
        assert_eq!(one.tag(a).len(), 4 + 16);
        // The old tag: 32 bits of FNV-1a, computable by anyone.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in a.as_bytes() {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        let fnv = format!("dev-{:08x}", h >> 32);
        assert_ne!(one.tag(a), fnv);
        assert!(!one.tag(a).starts_with(&fnv));
    }
}
