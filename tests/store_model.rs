//! The outbox checked against an in-memory model: random sequences of append / mark in flight / ack /
//! retry / reject / crash / reopen (as vector checks its disk buffer).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod store_support;

use proptest::prelude::*;
use std::collections::BTreeMap;
use std::sync::Arc;
use store_support::*;
use vitals_hub::model::{Clock, UtcMillis};
use vitals_hub::store::{OutboxPayload, OutboxState, Store};

#[derive(Debug, Clone)]
enum Op {
    /// Append `n` readings; `dup` re-appends an earlier stable key in the same batch.
    Append {
        n: usize,
        dup: Option<usize>,
    },
    Alert {
        dup: Option<usize>,
    },
    MarkInFlight(Vec<usize>),
    Ack(Vec<usize>),
    Retry(Vec<usize>, i64),
    Reject(Vec<usize>),
    Advance(i64),
    /// Drop the handle without closing it and open the file again.
    Crash,
    /// Close properly and open again.
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    let picks = || proptest::collection::vec(0usize..64, 0..4);
    prop_oneof![
        4 => (1usize..4, proptest::option::of(0usize..64)).prop_map(|(n, dup)| Op::Append { n, dup }),
        1 => proptest::option::of(0usize..64).prop_map(|dup| Op::Alert { dup }),
        3 => picks().prop_map(Op::MarkInFlight),
        3 => picks().prop_map(Op::Ack),
        2 => (picks(), 0i64..5_000).prop_map(|(p, d)| Op::Retry(p, d)),
        1 => picks().prop_map(Op::Reject),
        1 => (0i64..5_000).prop_map(Op::Advance),
        1 => Just(Op::Crash),
        1 => Just(Op::Reopen),
    ]
}

#[derive(Debug, Clone)]
struct Entry {
    key: String,
    alert: bool,
    state: OutboxState,
    attempts: u32,
    next: i64,
}

/// The model: outbox entries in append order (= outbox id order).
#[derive(Debug, Default)]
struct Model {
    entries: BTreeMap<i64, Entry>,
    keys: Vec<String>,
}

impl Model {
    fn pick(&self, i: usize) -> Option<i64> {
        let ids: Vec<i64> = self.entries.keys().copied().collect();
        if ids.is_empty() {
            None
        } else {
            Some(ids[i % ids.len()])
        }
    }
    fn due(&self, now: i64) -> Vec<i64> {
        let mut v: Vec<(bool, i64)> = self
            .entries
            .iter()
            .filter(|(_, e)| e.state == OutboxState::Pending && e.next <= now)
            .map(|(id, e)| (!e.alert, *id))
            .collect();
        v.sort();
        v.into_iter().map(|(_, id)| id).collect()
    }
}

fn run(ops: Vec<Op>) {
    let dir = tempfile::tempdir().unwrap();
    let clock = clock();
    let rt = rt();
    rt.block_on(async {
        // The store's own security reports (the KEK created at the first open is one) take outbox
        // rows too; a window longer than the test keeps them out of the due list, and the model's
        // ids start after them.
        let cfg = || {
            let mut c = config(dir.path());
            c.security_window_ms = i64::MAX / 4;
            c
        };
        let open = || Store::open(cfg(), clock.clone() as Arc<dyn Clock>);
        let mut store = open().await.unwrap();
        let base = i64::try_from(store.stats().await.unwrap().security_open).unwrap();
        let dev = device(&store).await;
        let mut m = Model::default();
        let mut next_key = 0usize;
        for op in ops {
            let now = clock.now();
            let reject = matches!(op, Op::Reject(_));
            let graceful = matches!(op, Op::Reopen);
            match op {
                Op::Append { n, dup } => {
                    let mut items = Vec::new();
                    let mut fresh = Vec::new();
                    for _ in 0..n {
                        let k = format!("reading-{next_key}");
                        next_key += 1;
                        items.push(reading(100, &k));
                        fresh.push(k);
                    }
                    let dup_key = dup.and_then(|d| {
                        let rs: Vec<&String> =
                            m.keys.iter().filter(|k| k.starts_with("reading")).collect();
                        (!rs.is_empty()).then(|| rs[d % rs.len()].clone())
                    });
                    if let Some(k) = &dup_key {
                        items.push(reading(100, k));
                    }
                    let out = store.append(&dev, items, None).await.unwrap();
                    assert_eq!(out.duplicates, usize::from(dup_key.is_some()));
                    assert_eq!(out.ids.len(), n + usize::from(dup_key.is_some()));
                    // New outbox ids follow the model's order; find them via pending later.
                    for k in fresh {
                        m.keys.push(k.clone());
                        let id = m.entries.keys().last().copied().unwrap_or(base) + 1;
                        m.entries.insert(
                            id,
                            Entry {
                                key: k,
                                alert: false,
                                state: OutboxState::Pending,
                                attempts: 0,
                                next: i64::MIN,
                            },
                        );
                    }
                }
                Op::Alert { dup } => {
                    let alerts: Vec<String> = m
                        .keys
                        .iter()
                        .filter(|k| k.starts_with("alert"))
                        .cloned()
                        .collect();
                    let key = match dup {
                        Some(d) if !alerts.is_empty() => alerts[d % alerts.len()].clone(),
                        _ => {
                            next_key += 1;
                            format!("alert-{next_key}")
                        }
                    };
                    let is_dup = m.keys.contains(&key);
                    let (_, was_dup) = store
                        .append_alert(serde_json::json!({"rule": "low"}), &key, vec![])
                        .await
                        .unwrap();
                    assert_eq!(was_dup, is_dup);
                    if !is_dup {
                        m.keys.push(key.clone());
                        let id = m.entries.keys().last().copied().unwrap_or(base) + 1;
                        m.entries.insert(
                            id,
                            Entry {
                                key,
                                alert: true,
                                state: OutboxState::Pending,
                                attempts: 0,
                                next: i64::MIN,
                            },
                        );
                    }
                }
                Op::MarkInFlight(p) | Op::Ack(p) | Op::Reject(p) | Op::Retry(p, _)
                    if m.entries.is_empty() =>
                {
                    let _ = p;
                }
                Op::MarkInFlight(p) => {
                    let mut ids: Vec<i64> = p.iter().filter_map(|&i| m.pick(i)).collect();
                    ids.dedup();
                    let mut expect = 0;
                    for id in &ids {
                        let e = m.entries.get_mut(id).unwrap();
                        if e.state == OutboxState::Pending {
                            e.state = OutboxState::InFlight;
                            e.attempts += 1;
                            expect += 1;
                        }
                    }
                    assert_eq!(store.mark_in_flight(ids).await.unwrap(), expect);
                }
                Op::Ack(p) | Op::Reject(p) => {
                    let mut ids: Vec<i64> = p.iter().filter_map(|&i| m.pick(i)).collect();
                    ids.dedup();
                    let mut expect = 0;
                    for id in &ids {
                        let e = m.entries.get_mut(id).unwrap();
                        if matches!(e.state, OutboxState::Pending | OutboxState::InFlight) {
                            e.state = if reject {
                                OutboxState::Rejected
                            } else {
                                OutboxState::Acked
                            };
                            expect += 1;
                        }
                    }
                    let n = if reject {
                        store.reject(ids, "422 invalid").await.unwrap()
                    } else {
                        store.ack(ids).await.unwrap()
                    };
                    assert_eq!(n, expect);
                }
                Op::Retry(p, d) => {
                    let mut ids: Vec<i64> = p.iter().filter_map(|&i| m.pick(i)).collect();
                    ids.dedup();
                    let next = now.as_millis() + d;
                    let mut expect = 0;
                    for id in &ids {
                        let e = m.entries.get_mut(id).unwrap();
                        if matches!(e.state, OutboxState::Pending | OutboxState::InFlight) {
                            e.state = OutboxState::Pending;
                            e.next = next;
                            expect += 1;
                        }
                    }
                    assert_eq!(
                        store
                            .retry(ids, "503 from clinic", UtcMillis(next))
                            .await
                            .unwrap(),
                        expect
                    );
                }
                Op::Advance(d) => clock.advance(d),
                Op::Crash | Op::Reopen => {
                    if graceful {
                        store.close().await;
                    } else {
                        // The worker finishes what it was given; nothing is left uncommitted.
                        drop(store);
                    }
                    for e in m.entries.values_mut() {
                        if e.state == OutboxState::InFlight {
                            e.state = OutboxState::Pending;
                        }
                    }
                    store = open().await.unwrap();
                }
            }
            // Check: the due list, in order, with payloads and attempts.
            let now = clock.now();
            let got = store.pending(10_000, now).await.unwrap();
            let want = m.due(now.as_millis());
            let got_ids: Vec<i64> = got.iter().map(|i| i.id).collect();
            assert_eq!(got_ids, want);
            for item in &got {
                let e = &m.entries[&item.id];
                assert_eq!(item.attempts, e.attempts);
                let key = match &item.payload {
                    OutboxPayload::Reading(r) => &r.stable_key,
                    OutboxPayload::Alert(a) => &a.stable_key,
                };
                assert_eq!(key, &e.key);
                assert_eq!(matches!(item.payload, OutboxPayload::Alert(_)), e.alert);
            }
            // The uplink's read ahead: the due list without some entries, at most a batch; here
            // every other due entry and one that does not exist are left out, batch 3.
            let exclude: std::collections::HashSet<i64> =
                want.iter().step_by(2).copied().chain([i64::MAX]).collect();
            let ahead = store
                .pending_excluding(3, now, exclude.clone())
                .await
                .unwrap();
            let ahead_ids: Vec<i64> = ahead.iter().map(|i| i.id).collect();
            let want_ahead: Vec<i64> = want
                .iter()
                .filter(|id| !exclude.contains(id))
                .take(3)
                .copied()
                .collect();
            assert_eq!(ahead_ids, want_ahead);
            let s = store.stats().await.unwrap();
            let count =
                |st: OutboxState| m.entries.values().filter(|e| e.state == st).count() as u64;
            assert_eq!(s.pending, count(OutboxState::Pending));
            assert_eq!(s.in_flight, count(OutboxState::InFlight));
            assert_eq!(s.acked, count(OutboxState::Acked));
            assert_eq!(s.rejected, count(OutboxState::Rejected));
        }
        assert_eq!(store.integrity_check().await.unwrap(), "ok");
        store.close().await;
    });
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]
    #[test]
    fn outbox_matches_model(ops in proptest::collection::vec(op(), 1..40)) {
        run(ops);
    }
}
