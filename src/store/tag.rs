//! The key `ble` tags device addresses with in logs (`ble::AddressTags`): derived from the index
//! key (HMAC-SHA256 under a fixed label), so it is as secret as the index key, survives KEK
//! rotation, differs between hubs, and needs no schema change. Handed to `ble` at start; `ble`
//! never reads the store.

use super::{Result, Store};

/// The label the tag key is derived under (never used for any other hash).
const LABEL: &str = "ble-address-tag-key";

impl Store {
    /// 32 bytes for `ble::AddressTags::new`. Key material: never log it.
    pub async fn address_tag_key(&self) -> Result<[u8; 32]> {
        self.call(|db| {
            let h1 = db.index()?.hash(LABEL, &[1]);
            let h2 = db.index()?.hash(LABEL, &[2]);
            let mut k = [0u8; 32];
            for (d, s) in k.iter_mut().zip(h1.iter().chain(h2.iter())) {
                *d = *s;
            }
            Ok(k)
        })
        .await
    }
}
