#![cfg(feature = "clinic")]
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
use vitals_hub::model::{Decimal, Kind, LocalDateTime, Reading, Unit, UtcMillis, Value as V, Zone};
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
    let hub = HubInfo {
        mac: "DC:A6:32:12:34:56".parse().unwrap(),
        manufacturer: "Example".into(),
        model: "vitals-hub".into(),
        software_version: "0.1.0".into(),
        ntp: true,
        utc_offset_minutes: 60,
        zone: None,
    };
    observation_with(&hub, clock, t)
}

fn observation_with(hub: &HubInfo, clock: DeviceClock, t: LocalDateTime) -> Value {
    let mut dev = phd_device_info(ident(), DeviceInfo::default(), 60);
    dev.clock = clock;
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
        hub,
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

/// The observation of a reading at `t` from a device whose clock the hub set in winter (its
/// fixed offset then), uploaded by a hub that knows its zone.
fn effective_in(zone: &str, winter_offset: i32, t: LocalDateTime) -> String {
    let mut dev = phd_device_info(ident(), DeviceInfo::default(), winter_offset);
    dev.clock = DeviceClock::Synchronized {
        utc_offset_minutes: winter_offset,
    };
    let hub = HubInfo {
        mac: "DC:A6:32:12:34:56".parse().unwrap(),
        manufacturer: "Example".into(),
        model: "vitals-hub".into(),
        software_version: "0.1.0".into(),
        ntp: true,
        utc_offset_minutes: winter_offset,
        zone: Some(Zone::named(zone).unwrap()),
    };
    observation_with(&hub, dev.clock, t)["effectiveDateTime"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Both 2026 changes in Europe/Berlin (29 March, 25 October) and America/New_York (8 March,
/// 1 November), around each change: the stored UTC instant of a device wall-clock time (a gap
/// read with the offset before, a fold as its first occurrence, both uncertain), the FHIR
/// `effectiveDateTime` (the same instant, with the offset in force then — it used to carry the
/// one offset of the clock's setting, an hour off for half the year) and the clock the hub writes.
#[test]
fn dst_2026_berlin_and_new_york_stored_instant_fhir_time_and_device_clock() {
    // (zone, winter offset, device local time, stored UTC, uncertain, effectiveDateTime)
    let cases = [
        (
            "Europe/Berlin",
            60,
            "2026-03-29T01:30:00",
            "2026-03-29T00:30:00Z",
            false,
            "2026-03-29T01:30:00+01:00",
        ),
        (
            "Europe/Berlin",
            60,
            "2026-03-29T02:30:00",
            "2026-03-29T01:30:00Z",
            true,
            "2026-03-29T02:30:00+01:00",
        ),
        (
            "Europe/Berlin",
            60,
            "2026-03-29T03:30:00",
            "2026-03-29T01:30:00Z",
            false,
            "2026-03-29T03:30:00+02:00",
        ),
        (
            "Europe/Berlin",
            60,
            "2026-07-01T12:00:00",
            "2026-07-01T10:00:00Z",
            false,
            "2026-07-01T12:00:00+02:00",
        ),
        (
            "Europe/Berlin",
            60,
            "2026-10-25T01:30:00",
            "2026-10-24T23:30:00Z",
            false,
            "2026-10-25T01:30:00+02:00",
        ),
        (
            "Europe/Berlin",
            60,
            "2026-10-25T02:30:00",
            "2026-10-25T00:30:00Z",
            true,
            "2026-10-25T02:30:00+02:00",
        ),
        (
            "Europe/Berlin",
            60,
            "2026-10-25T03:30:00",
            "2026-10-25T02:30:00Z",
            false,
            "2026-10-25T03:30:00+01:00",
        ),
        (
            "America/New_York",
            -300,
            "2026-03-08T01:30:00",
            "2026-03-08T06:30:00Z",
            false,
            "2026-03-08T01:30:00-05:00",
        ),
        (
            "America/New_York",
            -300,
            "2026-03-08T02:30:00",
            "2026-03-08T07:30:00Z",
            true,
            "2026-03-08T02:30:00-05:00",
        ),
        (
            "America/New_York",
            -300,
            "2026-03-08T03:30:00",
            "2026-03-08T07:30:00Z",
            false,
            "2026-03-08T03:30:00-04:00",
        ),
        (
            "America/New_York",
            -300,
            "2026-11-01T00:30:00",
            "2026-11-01T04:30:00Z",
            false,
            "2026-11-01T00:30:00-04:00",
        ),
        (
            "America/New_York",
            -300,
            "2026-11-01T01:30:00",
            "2026-11-01T05:30:00Z",
            true,
            "2026-11-01T01:30:00-04:00",
        ),
        (
            "America/New_York",
            -300,
            "2026-11-01T02:30:00",
            "2026-11-01T07:30:00Z",
            false,
            "2026-11-01T02:30:00-05:00",
        ),
    ];
    for (zone, winter, t, utc, uncertain, effective) in cases {
        let z = Zone::named(zone).unwrap();
        let r = z.resolve(local(t));
        assert_eq!(r.utc.to_rfc3339(), utc, "{zone} {t}");
        assert_eq!(r.quality.uncertain(), uncertain, "{zone} {t}");
        assert_eq!(
            effective_in(zone, winter, local(t)),
            effective,
            "{zone} {t}"
        );
    }

    // The clock the hub writes a minute before and at each change (wall clock, GATT zone and
    // DST fields of Local Time Information).
    let writes = [
        (
            "Europe/Berlin",
            "2026-03-29T00:59:00Z",
            "2026-03-29T01:59:00",
            (4, 0),
        ),
        (
            "Europe/Berlin",
            "2026-03-29T01:00:00Z",
            "2026-03-29T03:00:00",
            (4, 4),
        ),
        (
            "Europe/Berlin",
            "2026-10-25T00:59:00Z",
            "2026-10-25T02:59:00",
            (4, 4),
        ),
        (
            "Europe/Berlin",
            "2026-10-25T01:00:00Z",
            "2026-10-25T02:00:00",
            (4, 0),
        ),
        (
            "America/New_York",
            "2026-03-08T06:59:00Z",
            "2026-03-08T01:59:00",
            (-20, 0),
        ),
        (
            "America/New_York",
            "2026-03-08T07:00:00Z",
            "2026-03-08T03:00:00",
            (-20, 4),
        ),
        (
            "America/New_York",
            "2026-11-01T05:59:00Z",
            "2026-11-01T01:59:00",
            (-20, 4),
        ),
        (
            "America/New_York",
            "2026-11-01T06:00:00Z",
            "2026-11-01T01:00:00",
            (-20, 0),
        ),
    ];
    for (zone, at, wall, fields) in writes {
        let z = Zone::named(zone).unwrap();
        let utc = UtcMillis(local(at.trim_end_matches('Z')).to_epoch_seconds() * 1000);
        assert_eq!(z.local_at(utc), Some(local(wall)), "{zone} at {at}");
        assert_eq!(z.gatt_fields(utc), fields, "{zone} at {at}");
    }
}
