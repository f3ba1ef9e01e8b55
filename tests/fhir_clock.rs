#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]
//! Clock truth upstream (issue 14): a device whose clock the hub never checked is not uploaded as
//! synchronised (its Observations say `device_clock_unchecked`), and the hub's own PhgDevice
//! claims SNTP sync only when systemd-timedated says `NTPSynchronized`, also with
//! `require_clock_sync = false` (uploads do not wait, the claim still follows the fact).

mod uplink_support;

use serde_json::Value;
use std::collections::HashMap;
use std::sync::Arc;
use uplink_support::timedate::{fake_timedate1, Broker};
use uplink_support::*;
use vitals_hub::fhir::bundle::Item;
use vitals_hub::fhir::codes::{self, mdc};
use vitals_hub::fhir::device_info::{phd_device_info, DeviceIdentity};
use vitals_hub::fhir::{self, BundleContext, DeviceClock, HubInfo, ReadingInput};
use vitals_hub::model::device::{ClockSample, DeviceInfo};
use vitals_hub::model::{Decimal, Kind, LocalDateTime, Reading, Unit, UtcMillis, Value as V};
use vitals_hub::receiver::pki::DevCa;
use vitals_hub::uplink::{NotRequired, SystemdTimeSyncAt};

fn ident() -> DeviceIdentity<'static> {
    DeviceIdentity {
        key: "dev-meter",
        address: "00:60:19:4B:2C:1D",
        name: Some("meter"),
        serial: None,
        profile: "glucose",
    }
}

fn local(s: &str) -> LocalDateTime {
    s.parse().unwrap()
}

/// The Observation of one glucose reading at device time `t` from a device with `clock`.
fn observation(clock: DeviceClock, t: LocalDateTime) -> Value {
    let mut dev = phd_device_info(ident(), DeviceInfo::default(), 60);
    dev.clock = clock;
    let hub = HubInfo {
        mac: "DC:A6:32:12:34:56".parse().unwrap(),
        manufacturer: "Example".into(),
        model: "vitals-hub".into(),
        software_version: "0.1.0".into(),
        ntp: true,
        utc_offset_minutes: 60,
    };
    let mut r = Reading::new(
        Kind::Glucose,
        V::Number(Decimal::new(104, 0)),
        Unit::MgPerDl,
    );
    r.device_time = Some(t);
    r.sequence = Some(7);
    let refs = HashMap::new();
    let ctx = BundleContext {
        patient_id: "RPM-1",
        hub: &hub,
        hub_ref: None,
        device_refs: &refs,
        nonce: 1,
        more_may_follow: false,
    };
    let items = [Item::Reading(ReadingInput {
        tag: 1,
        device: &dev,
        reading: &r,
        received_at: UtcMillis(1_780_000_000_000),
        test_data: false,
        interpretation: None,
    })];
    let b = fhir::bundle::build(&ctx, &items);
    b.json["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["resource"].clone())
        .find(|r| {
            r["resourceType"] == "Observation"
                && r["code"]["coding"][0]["code"].as_str()
                    != Some(mdc::TIME_ABS.to_string().as_str())
        })
        .unwrap()
}

fn hub_flags(obs: &Value) -> Vec<String> {
    obs["interpretation"]
        .as_array()
        .map(|a| {
            a.iter()
                .flat_map(|i| i["coding"].as_array().cloned().unwrap_or_default())
                .filter(|c| c["system"] == codes::HUB_FLAG_SYSTEM)
                .map(|c| c["code"].as_str().unwrap().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn a_device_clock_never_checked_is_not_uploaded_as_synchronised() {
    // No clock sample recorded: unchecked (it used to be taken as synchronised).
    let dev = phd_device_info(ident(), DeviceInfo::default(), 60);
    assert_eq!(
        dev.clock,
        DeviceClock::Unchecked {
            utc_offset_minutes: 60
        }
    );
    let t = local("2026-01-15T08:30:00");
    let obs = observation(dev.clock, t);
    assert_eq!(obs["effectiveDateTime"], "2026-01-15T08:30:00+01:00");
    assert_eq!(hub_flags(&obs), vec!["device_clock_unchecked".to_string()]);

    // A clock the hub set: synchronised, no such flag.
    let info = DeviceInfo {
        clock: Some(ClockSample {
            device: t,
            hub: UtcMillis(0),
            set_by_hub_offset_minutes: Some(60),
        }),
        ..DeviceInfo::default()
    };
    let set = phd_device_info(ident(), info, 60);
    assert!(matches!(set.clock, DeviceClock::Synchronized { .. }));
    assert!(hub_flags(&observation(set.clock, t)).is_empty());
}

fn phg_sync_code(rx: &vitals_hub::receiver::Receiver) -> String {
    let phg = rx
        .resources("Device")
        .into_iter()
        .find(|d| {
            d["meta"]["profile"]
                .as_array()
                .is_some_and(|p| p.iter().any(|u| u.as_str().unwrap().ends_with("PhgDevice")))
        })
        .expect("no PhgDevice uploaded");
    let prop = phg["property"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| {
            p["type"]["coding"][0]["code"].as_str()
                == Some(mdc::TIME_SYNC_PROTOCOL.to_string().as_str())
        })
        .unwrap()
        .clone();
    prop["valueCode"][0]["coding"][0]["code"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// `require_clock_sync = false` used to answer "synchronised" for everything, so the PhgDevice
/// always claimed SNTPv4.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_phg_claims_sntp_only_when_timedated_says_synchronised() {
    for (ntp, want) in [(false, mdc::TIME_SYNC_NONE), (true, mdc::TIME_SYNC_SNTPV4)] {
        let broker = Broker::start();
        let _service = fake_timedate1(&broker.address, ntp).await;
        let ca = DevCa::new("clinic").unwrap();
        let rx = clinic(&ca).await;
        let h = hub_for(2, &ca).await;
        let mut cfg = uplink_config(&h, &url(&rx));
        cfg.require_clock_sync = false;
        let sync = NotRequired(SystemdTimeSyncAt(broker.address.clone()));
        let mut up = uplink_timed(&h, cfg, Arc::new(sync));
        // Uploads do not wait for the clock ...
        assert_eq!(up.drain(DRAIN).await.unwrap().acked, 2);
        // ... and the PhgDevice tells what timedated said.
        assert_eq!(
            phg_sync_code(&rx),
            want.to_string(),
            "NTPSynchronized={ntp}"
        );
        rx.shutdown().await;
    }
}
