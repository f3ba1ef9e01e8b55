//! Every profile end to end through real btleplug against the fake BlueZ: a cuff that indicates two
//! stored readings and hangs up, a thermometer, a two-user scale (the other user's reading is held,
//! not stored), a PLX spot-check oximeter, a heart-rate strap and a PLX continuous oximeter (stored
//! as windowed summaries, every raw value to the alert hook), and a CGM with E2E-CRC (a record with
//! a bad CRC is an event; the rest are stored with session-start-relative times).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

#[path = "fake_bluez/mod.rs"]
mod fake_bluez;

use fake_bluez::devices::{dt, stream_device, Stream};
use fake_bluez::harness::{fast_config, now_local, Env};
use std::collections::HashMap;
use std::time::Duration;
use vitals_hub::ble::{BleEvent, DeviceConfig};
use vitals_hub::gatt::bp::{BloodPressureMeasurement, PressureUnit};
use vitals_hub::gatt::cgm::{
    CgmFeature, CgmMeasurement, CgmRecord, SessionStartTime, FEATURE_E2E_CRC,
};
use vitals_hub::gatt::datetime::{DstOffset, TimeZone};
use vitals_hub::gatt::hr::HeartRateMeasurement;
use vitals_hub::gatt::plx::{ContinuousMeasurement, SpotCheckMeasurement};
use vitals_hub::gatt::thermo::{TemperatureMeasurement, TemperatureUnit};
use vitals_hub::gatt::weight::{MeasurementSystem, WeightMeasurement};
use vitals_hub::gatt::{Float, GattValue, SFloat};
use vitals_hub::model::{Decimal, Kind, LocalDateTime};

const CUFF: &str = "C0:26:DA:00:01:01";
const THERMO: &str = "C0:26:DA:00:01:02";
const SCALE: &str = "C0:26:DA:00:01:03";
const PLX_SPOT: &str = "C0:26:DA:00:01:04";
const HR: &str = "C0:26:DA:00:01:05";
const PLX_CONT: &str = "C0:26:DA:00:01:06";
const CGM: &str = "C0:26:DA:00:01:07";

fn sf(m: i64, e: i16) -> SFloat {
    SFloat::from_decimal(Decimal::new(m, e)).unwrap()
}

fn eq(a: Decimal, m: i64, e: i16) -> bool {
    a.cmp_value(&Decimal::new(m, e)).is_eq()
}

fn stream(trigger: u16, values: Vec<(u16, Vec<u8>)>, gap_ms: u64, hang_up: bool) -> Stream {
    Stream {
        trigger,
        values,
        gap: Duration::from_millis(gap_ms),
        hang_up,
        sent: false,
    }
}

fn bp(t: LocalDateTime, sys: i64, dia: i64, user: u8) -> Vec<u8> {
    BloodPressureMeasurement {
        unit: PressureUnit::MmHg,
        systolic: sf(sys, 0),
        diastolic: sf(dia, 0),
        mean_arterial_pressure: sf((sys + 2 * dia) / 3, 0),
        timestamp: Some(dt(t)),
        pulse_rate: Some(sf(70, 0)),
        user_id: Some(user),
        measurement_status: None,
    }
    .encode()
    .unwrap()
}

#[test]
fn every_profile_end_to_end() {
    fake_bluez::harness::run(|broker| async move {
        let now = now_local();
        let t1 = now.add_minutes(-120).unwrap();
        let t2 = now.add_minutes(-60).unwrap();
        let cuff = stream_device(
            CUFF,
            "BLEsmart_cuff",
            0x1810,
            vec![
                (0x2A35, &["indicate"], vec![]),
                (0x2A49, &["read"], vec![0, 0]),
            ],
            stream(
                0x2A35,
                vec![(0x2A35, bp(t1, 128, 82, 1)), (0x2A35, bp(t2, 131, 85, 1))],
                0,
                true,
            ),
            now,
        );
        let temp = TemperatureMeasurement {
            temperature: Float::from_raw(0xFF00_0000 | 375),
            unit: TemperatureUnit::Celsius,
            timestamp: Some(dt(t2)),
            temperature_type: None,
        }
        .encode()
        .unwrap();
        let thermo = stream_device(
            THERMO,
            "thermo",
            0x1809,
            vec![(0x2A1C, &["indicate"], vec![])],
            stream(0x2A1C, vec![(0x2A1C, temp)], 0, false),
            now,
        );
        let w = |raw: u16, user: u8, t: LocalDateTime| {
            WeightMeasurement {
                system: MeasurementSystem::Si,
                weight_raw: raw,
                timestamp: Some(dt(t)),
                user_id: Some(user),
                bmi_height: None,
            }
            .encode()
            .unwrap()
        };
        // 14500 x 0.005 kg = 72.5 kg for user 1 (the patient); user 2 is someone else.
        let scale = stream_device(
            SCALE,
            "scale",
            0x181D,
            vec![
                (0x2A9D, &["indicate"], vec![]),
                (0x2A9E, &["read"], vec![0, 0, 0, 0]),
            ],
            stream(
                0x2A9D,
                vec![(0x2A9D, w(14_500, 1, t1)), (0x2A9D, w(17_000, 2, t2))],
                0,
                true,
            ),
            now,
        );
        let spot = SpotCheckMeasurement {
            spo2_pct: sf(97, 0),
            pulse_rate_per_min: sf(66, 0),
            timestamp: Some(dt(t1)),
            measurement_status: None,
            device_sensor_status: None,
            pulse_amplitude_index_pct: None,
            device_clock_not_set: false,
        }
        .encode()
        .unwrap();
        let plx_spot = stream_device(
            PLX_SPOT,
            "oxi-spot",
            0x1822,
            vec![
                (0x2A5E, &["indicate"], vec![]),
                (0x2A60, &["read"], vec![0, 0]),
            ],
            stream(0x2A5E, vec![(0x2A5E, spot)], 0, true),
            now,
        );
        let hr_values: Vec<(u16, Vec<u8>)> = (0..30)
            .map(|i| {
                let m = HeartRateMeasurement {
                    heart_rate: 60 + i,
                    heart_rate_u16: false,
                    sensor_contact: 0,
                    energy_expended_kj: None,
                    rr_intervals: vec![],
                };
                (0x2A37, m.encode().unwrap())
            })
            .collect();
        let hr = stream_device(
            HR,
            "strap",
            0x180D,
            vec![(0x2A37, &["notify"], vec![]), (0x2A38, &["read"], vec![1])],
            stream(0x2A37, hr_values, 10, true),
            now,
        );
        let cont: Vec<(u16, Vec<u8>)> = (0..20)
            .map(|i| {
                let m = ContinuousMeasurement {
                    spo2_pct: sf(94 + (i % 3), 0),
                    pulse_rate_per_min: sf(70, 0),
                    fast: None,
                    slow: None,
                    measurement_status: None,
                    device_sensor_status: None,
                    pulse_amplitude_index_pct: None,
                };
                (0x2A5F, m.encode().unwrap())
            })
            .collect();
        let plx_cont = stream_device(
            PLX_CONT,
            "oxi-cont",
            0x1822,
            vec![
                (0x2A5F, &["notify"], vec![]),
                (0x2A60, &["read"], vec![0, 0]),
            ],
            stream(0x2A5F, cont, 10, true),
            now,
        );
        let sst_time = now.add_minutes(-30).unwrap();
        let rec = |mg: i64, off: u16| CgmRecord {
            glucose_mg_dl: sf(mg, 0),
            time_offset_min: off,
            status_octet: None,
            cal_temp_octet: None,
            warning_octet: None,
            trend_mg_dl_min: None,
            quality_pct: None,
            e2e_crc: true,
        };
        let m1 = CgmMeasurement {
            records: vec![rec(110, 5), rec(115, 10)],
        }
        .encode()
        .unwrap();
        let mut bad = CgmMeasurement {
            records: vec![rec(120, 15)],
        }
        .encode()
        .unwrap();
        let last = bad.len() - 1;
        bad[last] ^= 0xFF; // E2E-CRC broken
        let m3 = CgmMeasurement {
            records: vec![rec(125, 20)],
        }
        .encode()
        .unwrap();
        let cgm = stream_device(
            CGM,
            "cgm",
            0x181F,
            vec![
                (0x2AA7, &["notify"], vec![]),
                (
                    0x2AA8,
                    &["read"],
                    CgmFeature::new(1 << FEATURE_E2E_CRC, 9, 5)
                        .encode()
                        .unwrap(),
                ),
                (
                    0x2AAA,
                    &["read", "write"],
                    SessionStartTime::new(sst_time, TimeZone(0), DstOffset(0), true)
                        .encode()
                        .unwrap(),
                ),
                (0x2AAC, &["write", "indicate"], vec![]),
            ],
            stream(
                0x2AA7,
                vec![(0x2AA7, m1), (0x2AA7, bad), (0x2AA7, m3)],
                0,
                true,
            ),
            now,
        );
        let mut cfg = fast_config();
        // The harness registers devices without a pairing name, so the scale's settings are found
        // by the address an older config would carry (the by-name path: ble's unit tests).
        cfg.devices = vec![DeviceConfig {
            name: "scale".into(),
            legacy_address: Some(SCALE.into()),
            user_id: Some(1),
            set_clock: false,
        }];
        let allowed = [
            (CUFF, "blood_pressure"),
            (THERMO, "thermometer"),
            (SCALE, "weight"),
            (PLX_SPOT, "pulse_oximeter"),
            (HR, "heart_rate"),
            (PLX_CONT, "pulse_oximeter"),
            (CGM, "cgm"),
        ];
        let mut env = Env::start(
            &broker,
            vec![cuff, thermo, scale, plx_spot, hr, plx_cont, cgm],
            &allowed,
            cfg,
        )
        .await;
        let mut keys = HashMap::new();
        for (a, _) in allowed {
            keys.insert(
                a,
                env.store.device_by_address(a).await.unwrap().unwrap().key,
            );
        }
        env.wait_for(60, "every device's session ended", || async {
            let ended: Vec<_> = env
                .hub
                .events()
                .into_iter()
                .filter_map(|e| match e {
                    BleEvent::SessionEnded { device, .. } => Some(device),
                    _ => None,
                })
                .collect();
            keys.values().all(|k| ended.contains(k))
        })
        .await;
        let readings = env.readings().await;
        let of = |a: &str, k: Kind| -> Vec<_> {
            readings
                .iter()
                .filter(|r| r.device == keys[a] && r.reading.kind == k)
                .map(|r| r.reading.clone())
                .collect()
        };
        // Cuff: two stored readings with their own times.
        let sys = of(CUFF, Kind::Systolic);
        assert_eq!(sys.len(), 2);
        assert!(eq(sys[0].value.number().unwrap(), 128, 0));
        assert_eq!(sys[0].device_time, Some(t1));
        assert_eq!(of(CUFF, Kind::Diastolic).len(), 2);
        assert_eq!(of(CUFF, Kind::PulseRate).len(), 2);
        // Thermometer.
        let t = of(THERMO, Kind::BodyTemperature);
        assert_eq!(t.len(), 1);
        assert!(eq(t[0].value.number().unwrap(), 375, -1));
        assert_eq!(t[0].device_time, Some(t2));
        // Scale: user 1 stored, user 2 held for assignment.
        let wt = of(SCALE, Kind::BodyWeight);
        assert_eq!(wt.len(), 1, "{wt:?}");
        assert!(eq(wt[0].value.number().unwrap(), 725, -1));
        assert_eq!(wt[0].user_id, Some(1));
        let held = env.hub.held();
        assert_eq!(held.len(), 1);
        assert_eq!(held[0].user_id, 2);
        assert_eq!(held[0].device, keys[SCALE]);
        // ... and persisted in the store, sealed, out of the outbox.
        let stored_held = env.store.held(10).await.unwrap();
        assert_eq!(stored_held.len(), 1);
        assert_eq!(stored_held[0].user_id, 2);
        assert_eq!(stored_held[0].device, keys[SCALE]);
        assert_eq!(stored_held[0].stable_key, held[0].stable_key);
        // PLX spot-check.
        let s = of(PLX_SPOT, Kind::Spo2);
        assert_eq!(s.len(), 1);
        assert!(eq(s[0].value.number().unwrap(), 97, 0));
        assert_eq!(s[0].device_time, Some(t1));
        // Heart rate: summaries (mean per window); the counts add up to every value sent.
        let events = env.hub.events();
        let summaries = |dev: &str, kind: Kind| -> Vec<(u64, Decimal, Decimal, Decimal)> {
            events
                .iter()
                .filter_map(|e| match e {
                    BleEvent::Summary {
                        device,
                        kind: k,
                        count,
                        min,
                        mean,
                        max,
                        window_ms,
                        ..
                    } if *device == keys[dev] && *k == kind => {
                        assert_eq!(*window_ms, 60_000);
                        Some((*count, *min, *mean, *max))
                    }
                    _ => None,
                })
                .collect()
        };
        let hs = summaries(HR, Kind::HeartRate);
        assert_eq!(hs.iter().map(|s| s.0).sum::<u64>(), 30, "{hs:?}");
        assert_eq!(of(HR, Kind::HeartRate).len(), hs.len());
        if hs.len() == 1 {
            assert!(eq(hs[0].1, 60, 0) && eq(hs[0].3, 89, 0));
            assert!(eq(hs[0].2, 745, -1), "mean {:?}", hs[0].2);
            assert!(eq(
                of(HR, Kind::HeartRate)[0].value.number().unwrap(),
                745,
                -1
            ));
        }
        // The stored summaries carry count, min and max with the mean.
        let stored: Vec<_> = readings
            .iter()
            .filter(|r| r.device == keys[HR] && r.reading.kind == Kind::HeartRate)
            .map(|r| r.summary.unwrap())
            .collect();
        assert_eq!(stored.iter().map(|s| s.count).sum::<u64>(), 30);
        assert!(stored.iter().all(|s| s.window_ms == 60_000));
        for (s, e) in stored.iter().zip(&hs) {
            assert_eq!((s.count, s.min, s.max), (e.0, e.1, e.3));
        }
        let ps = summaries(PLX_CONT, Kind::Spo2);
        assert_eq!(ps.iter().map(|s| s.0).sum::<u64>(), 20);
        assert_eq!(of(PLX_CONT, Kind::Spo2).len(), ps.len());
        // Every raw value reached the alert hook.
        let mut raw_hr = 0;
        let mut raw_spo2 = 0;
        while let Ok(v) = env.alerts.try_recv() {
            // The held reading (user 2 on the scale) is someone else's: not for the alert rules.
            assert!(
                !(v.device == keys[SCALE] && v.reading.user_id == Some(2)),
                "another user's reading reached the alert hook"
            );
            if v.device == keys[HR] && v.reading.kind == Kind::HeartRate {
                raw_hr += 1;
            }
            if v.device == keys[PLX_CONT] && v.reading.kind == Kind::Spo2 {
                raw_spo2 += 1;
            }
        }
        assert_eq!((raw_hr, raw_spo2), (30, 20));
        // CGM: three good records timed from the session start, the bad CRC an event.
        let c = of(CGM, Kind::CgmGlucose);
        assert_eq!(c.len(), 3, "{c:?}");
        assert!(eq(c[0].value.number().unwrap(), 110, 0));
        assert_eq!(c[0].device_time, Some(sst_time.add_minutes(5).unwrap()));
        assert_eq!(c[2].device_time, Some(sst_time.add_minutes(20).unwrap()));
        assert!(events.iter().any(|e| matches!(e, BleEvent::Malformed { device, characteristic: 0x2AA7, .. } if *device == keys[CGM])));
        env.stop().await;
    });
}
