#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]
//! The store methods the uplink added (schema v3): device info (sealed), per-destination state,
//! audit events.

#[path = "store_support/mod.rs"]
mod store_support;
use store_support::*;
use vitals_hub::model::{LocalDateTime, UtcMillis};
use vitals_hub::store::{ClockSample, DeviceInfo, Store};

#[test]
fn device_info_state_and_events_round_trip_and_survive_key_rotation() {
    let dir = tempfile::tempdir().unwrap();
    rt().block_on(async {
        let store = Store::open(config(dir.path()), clock()).await.unwrap();
        let dev = device(&store).await;
        assert_eq!(store.device_info(&dev).await.unwrap(), None);
        let info = DeviceInfo {
            system_id: Some("00-09-1F-FF-FE-80-1A-2B".into()),
            manufacturer: Some("Example Cuff Co".into()),
            model: Some("BP-200".into()),
            clock: Some(ClockSample {
                device: LocalDateTime::new(2025, 3, 14, 8, 0, 0).unwrap(),
                hub: UtcMillis(T0),
                set_by_hub_offset_minutes: None,
            }),
            battery_percent: Some(80),
            ..DeviceInfo::default()
        };
        store.set_device_info(&dev, info.clone()).await.unwrap();
        assert_eq!(store.device_info(&dev).await.unwrap(), Some(info.clone()));
        store
            .set_uplink_state("https://clinic", "hub", "Device/1")
            .await
            .unwrap();
        store
            .set_uplink_state("https://clinic", "hub", "Device/2")
            .await
            .unwrap();
        assert_eq!(
            store
                .uplink_state("https://clinic", "hub")
                .await
                .unwrap()
                .as_deref(),
            Some("Device/2")
        );
        assert_eq!(
            store.uplink_state("https://other", "hub").await.unwrap(),
            None
        );
        store
            .append_event("uplink_test", "warning", "detail".into())
            .await
            .unwrap();
        assert!(store
            .events(5)
            .await
            .unwrap()
            .iter()
            .any(|e| e.kind == "uplink_test" && e.severity == "warning"));
        store.rotate_data_key(10).await.unwrap();
        assert_eq!(store.device_info(&dev).await.unwrap(), Some(info));
        // Plaintext never reaches the file.
        store.close().await;
        let raw = std::fs::read(dir.path().join("store.db")).unwrap();
        assert!(!raw.windows(7).any(|w| w == b"BP-200\""));
        assert!(!raw.windows(15).any(|w| w == b"Example Cuff Co"));
    });
}
