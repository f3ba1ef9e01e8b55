//! Device clocks across a change of offset (issue 14): the hub wrote device clocks with one
//! fixed `utc_offset_minutes`, an hour off for half the year. With `timezone = Europe/Berlin` the
//! clock written before the spring-forward change is CET and the one written at the next session
//! after it is CEST.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

#[path = "fake_bluez/mod.rs"]
mod fake_bluez;

use fake_bluez::devices::{clock_bytes, glucose_meter, GlucoseMeter};
use fake_bluez::harness::{fast_config, Env};
use std::sync::Arc;
use vitals_hub::gatt::datetime::{CurrentTime, LocalTimeInformation};
use vitals_hub::gatt::GattValue;
use vitals_hub::model::{LocalDateTime, ManualClock, UtcMillis, Zone};

const METER: &str = "C0:26:DA:00:00:41";

fn lt(s: &str) -> LocalDateTime {
    s.parse().unwrap()
}

#[test]
fn device_clock_follows_the_zone_across_spring_forward() {
    fake_bluez::harness::run(|broker| async move {
        let clock = Arc::new(ManualClock::new(
            UtcMillis::parse_rfc3339("2026-03-29T00:50:00Z").unwrap(),
        ));
        // The meter's clock is a day behind; it has a writable Local Time Information.
        let mut dev = glucose_meter(
            METER,
            GlucoseMeter::new(lt("2026-03-20T00:00:00"), 2),
            lt("2026-03-28T01:50:00"),
        );
        dev.services
            .iter_mut()
            .find(|s| s.uuid == 0x1805)
            .unwrap()
            .chars
            .push(Arc::new(fake_bluez::CharSpec {
                uuid: 0x2A0F,
                flags: vec!["read", "write"],
                value: std::sync::Mutex::new(vec![0, 0]),
                notifying: std::sync::atomic::AtomicBool::new(false),
            }));
        let lti = |v: &[u8]| LocalTimeInformation::decode(v).unwrap();
        let fake = fake_bluez::FakeBluez::start(&broker.address, vec![dev]).await;
        let mut cfg = fast_config();
        cfg.zone = Zone::named("Europe/Berlin").unwrap();
        cfg.cooldown_ms = 300;
        cfg.devices = vec![vitals_hub::ble::DeviceConfig {
            name: "meter".into(),
            legacy_address: Some(METER.into()),
            user_id: None,
            set_clock: true,
        }];
        let env =
            Env::with_clock(fake, &[(METER, "glucose")], cfg, None, |p| p, clock.clone()).await;
        let written = || env.fake.device(METER).writes_to(0x2A2B);
        env.wait_for(30, "the first clock write", || async {
            !written().is_empty() && !env.fake.device(METER).writes_to(0x2A0F).is_empty()
        })
        .await;
        let first = CurrentTime::decode(&written()[0]).unwrap();
        assert_eq!(
            first.date_time.to_local(),
            Some(lt("2026-03-29T01:50:00")),
            "CET"
        );
        // Local Time Information: zone UTC+1 (4 quarter hours), no DST.
        let info = env.fake.device(METER).writes_to(0x2A0F);
        assert_eq!(info.len(), 1);
        assert_eq!(
            (lti(&info[0]).time_zone.0, lti(&info[0]).dst_offset.0),
            (4, 0)
        );
        // The change: 01:00 UTC is 03:00 CEST. The meter keeps 01:50 (its clock stands still
        // here), 80 minutes behind the new local time: the next session writes it.
        clock.set(UtcMillis::parse_rfc3339("2026-03-29T01:10:00Z").unwrap());
        env.fake
            .device(METER)
            .set_value(0x2A2B, clock_bytes(lt("2026-03-29T01:50:00")));
        // The hub's cooldown runs on this manual clock: time must pass for the next session (a
        // first session still running when the clock was set ends "now" and would otherwise wait
        // for ever — the test failed that way on a loaded machine). 400 ms per 100 ms poll.
        env.wait_for(30, "the second clock write", || async {
            clock.advance(400);
            // The Local Time Information is written right after the clock, in the same session.
            written().len() >= 2 && env.fake.device(METER).writes_to(0x2A0F).len() >= 2
        })
        .await;
        let second = CurrentTime::decode(&written()[1])
            .unwrap()
            .date_time
            .to_local()
            .unwrap();
        // CEST: 03:10 plus the time advanced while waiting (CET would be 02:10).
        assert!(
            second >= lt("2026-03-29T03:10:00") && second < lt("2026-03-29T03:13:00"),
            "CEST expected, got {second:?}"
        );
        // ... and after the change: UTC+1 standard with one hour of DST (it used to be the
        // start-up offset, DST 0, whatever the season).
        let info = env.fake.device(METER).writes_to(0x2A0F);
        assert_eq!(
            (lti(&info[1]).time_zone.0, lti(&info[1]).dst_offset.0),
            (4, 4)
        );
        env.stop().await;
    });
}
