//! Bundle assembly: the transaction Bundle's entries (each a conditional create), the grouping of
//! blood-pressure components, the 50-entry limit and the `urn:uuid` references between entries.
//! What each entry holds comes from [`super::observation`] (readings, devices, coincident
//! timestamps), [`super::alert`] (alerts) and [`super::heartbeat`] (hub status).

use super::codes;
use super::observation::is_bp_component;
use super::{FhirError, HubInfo, Interpretation, PhdDeviceInfo};
use crate::model::{Kind, Reading, UtcMillis};
use serde_json::{json, Map, Value as Json};
use std::collections::{HashMap, HashSet};

pub use super::heartbeat::{heartbeat_bundle, DeviceStatus, HubStatus};
pub use super::observation::{phd_device, phg_device, reading_identifier, stable_key};

/// Entries per transaction Bundle, at most (fhir-phd.md: keep bundles ≤ ~50).
pub const MAX_ENTRIES: usize = 50;

/// One reading to upload.
#[derive(Debug, Clone)]
pub struct ReadingInput<'a> {
    /// The caller's id for this reading (the outbox id); reported back per entry.
    pub tag: i64,
    pub device: &'a PhdDeviceInfo,
    pub reading: &'a Reading,
    pub received_at: UtcMillis,
    pub test_data: bool,
    /// Set by the alert rules when a threshold applies (L/H/LL/HH).
    pub interpretation: Option<Interpretation>,
}

/// One hub alert to upload (as a `Communication`).
#[derive(Debug, Clone)]
pub struct AlertInput<'a> {
    pub tag: i64,
    pub payload: &'a Json,
    pub stable_key: &'a str,
}

/// An item of a batch, in outbox order.
#[derive(Debug, Clone)]
pub enum Item<'a> {
    Reading(ReadingInput<'a>),
    Alert(AlertInput<'a>),
}

impl Item<'_> {
    pub fn tag(&self) -> i64 {
        match self {
            Item::Reading(r) => r.tag,
            Item::Alert(a) => a.tag,
        }
    }
}

/// What the bundle is built against.
#[derive(Debug, Clone)]
pub struct BundleContext<'a> {
    /// The provisioned patient's logical id (`Patient/<id>`).
    pub patient_id: &'a str,
    pub hub: &'a HubInfo,
    /// The server's id of the hub's PhgDevice (`Device/…`), once known.
    pub hub_ref: Option<&'a str>,
    /// The server's ids of PhdDevices, by store device key.
    pub device_refs: &'a HashMap<String, String>,
    /// Random per bundle; makes the `urn:uuid` fullUrls unique.
    pub nonce: u64,
    /// More items may follow the last one (the batch was full): keep a trailing blood-pressure group
    /// for the next bundle so its components are never split.
    pub more_may_follow: bool,
}

/// What an entry of the built bundle stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    HubDevice,
    /// A PhdDevice, by store device key.
    Device(String),
    Observation,
    CoincidentTime,
    Alert,
    HubStatus,
}

/// One bundle entry: its kind and the caller's tags it carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryInfo {
    pub kind: EntryKind,
    pub tags: Vec<i64>,
    /// The conditional-create identifier value (never logged: it contains the patient id).
    pub identifier: String,
}

/// A built transaction Bundle.
#[derive(Debug, Clone)]
pub struct BuiltBundle {
    pub json: Json,
    pub entries: Vec<EntryInfo>,
    /// How many input items this bundle covers (mapped, or listed in `unmapped`).
    pub consumed: usize,
    /// Items that cannot be mapped; the caller rejects them with the reason.
    pub unmapped: Vec<(i64, FhirError)>,
}

impl BuiltBundle {
    /// Tags of every item carried by an entry of this bundle.
    pub fn tags(&self) -> Vec<i64> {
        self.entries
            .iter()
            .flat_map(|e| e.tags.iter().copied())
            .collect()
    }
}

pub(super) fn coding(system: &str, code: &str, display: Option<&str>) -> Json {
    let mut m = Map::new();
    m.insert("system".into(), json!(system));
    m.insert("code".into(), json!(code));
    if let Some(d) = display {
        m.insert("display".into(), json!(d));
    }
    Json::Object(m)
}

pub(super) fn mdc_coding(code: u32) -> Json {
    coding(codes::MDC, &code.to_string(), codes::mdc_display(code))
}

pub(super) fn entry(full_url: &str, resource: Json, url: &str, if_none: String) -> Json {
    json!({
        "fullUrl": full_url,
        "resource": resource,
        "request": { "method": "POST", "url": url, "ifNoneExist": if_none }
    })
}

pub(super) struct Builder<'c, 'a> {
    pub(super) ctx: &'c BundleContext<'a>,
    pub(super) entries: Vec<Json>,
    pub(super) infos: Vec<EntryInfo>,
    pub(super) hub_ref: String,
    pub(super) device_refs: HashMap<String, String>,
    pub(super) cts_refs: HashMap<String, String>,
    pub(super) counter: u64,
}

impl Builder<'_, '_> {
    pub(super) fn urn(&mut self) -> String {
        self.counter += 1;
        let n = self.ctx.nonce;
        format!(
            "urn:uuid:{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
            (n >> 32) as u32,
            (n >> 16) as u16,
            (n & 0xfff) as u16,
            ((n >> 12) & 0xfff) as u16,
            self.counter
        )
    }

    pub(super) fn push(&mut self, e: Json, info: EntryInfo) {
        self.entries.push(e);
        self.infos.push(info);
    }

    pub(super) fn finish(
        mut self,
        consumed: usize,
        unmapped: Vec<(i64, FhirError)>,
    ) -> BuiltBundle {
        mark_test_dependencies(&mut self.entries, &self.infos);
        BuiltBundle {
            json: json!({ "resourceType": "Bundle", "type": "transaction", "entry": self.entries }),
            entries: self.infos,
            consumed,
            unmapped,
        }
    }
}

/// Whether a resource carries `meta.security` HTEST.
fn is_htest(resource: &Json) -> bool {
    resource
        .pointer("/meta/security")
        .and_then(Json::as_array)
        .is_some_and(|a| {
            a.iter()
                .any(|c| c.get("code").and_then(Json::as_str) == Some("HTEST"))
        })
}

/// Add HTEST to a resource's `meta.security` (once).
pub(super) fn add_htest(resource: &mut Json) {
    if is_htest(resource) {
        return;
    }
    let Some(obj) = resource.as_object_mut() else {
        return;
    };
    let meta = obj.entry("meta").or_insert_with(|| json!({}));
    if let Some(m) = meta.as_object_mut() {
        let sec = m.entry("security").or_insert_with(|| json!([]));
        if let Some(a) = sec.as_array_mut() {
            a.push(coding(codes::ACT_REASON, "HTEST", Some("test health data")));
        }
    }
}

/// Test data in, test data out: the Devices and coincident-time Observations that only test
/// Observations reference carry HTEST too (one referenced by real data stays unmarked).
fn mark_test_dependencies(entries: &mut [Json], infos: &[EntryInfo]) {
    let texts: Vec<(bool, bool, String)> = entries
        .iter()
        .map(|e| {
            let r = e.get("resource").cloned().unwrap_or(Json::Null);
            let obs = r.get("resourceType").and_then(Json::as_str) == Some("Observation");
            (obs, is_htest(&r), r.to_string())
        })
        .collect();
    for (i, info) in infos.iter().enumerate() {
        if !matches!(
            info.kind,
            EntryKind::HubDevice | EntryKind::Device(_) | EntryKind::CoincidentTime
        ) {
            continue;
        }
        let Some(url) = entries
            .get(i)
            .and_then(|e| e.get("fullUrl"))
            .and_then(Json::as_str)
            .map(|u| format!("\"{u}\""))
        else {
            continue;
        };
        let (mut test, mut real) = (false, false);
        for (j, (obs, htest, text)) in texts.iter().enumerate() {
            if j == i || !*obs || !text.contains(&url) {
                continue;
            }
            if *htest {
                test = true;
            } else if !matches!(
                infos.get(j).map(|x| &x.kind),
                Some(EntryKind::CoincidentTime)
            ) {
                real = true;
            }
        }
        if test && !real {
            if let Some(r) = entries.get_mut(i).and_then(|e| e.get_mut("resource")) {
                add_htest(r);
            }
        }
    }
}

pub(super) fn new_builder<'c, 'a>(ctx: &'c BundleContext<'a>) -> Builder<'c, 'a> {
    let mut b = Builder {
        ctx,
        entries: Vec::new(),
        infos: Vec::new(),
        hub_ref: String::new(),
        device_refs: ctx.device_refs.clone(),
        cts_refs: HashMap::new(),
        counter: 0,
    };
    b.hub_ref = match ctx.hub_ref {
        Some(r) => r.to_owned(),
        None => {
            let url = b.urn();
            let (resource, cond) = phg_device(ctx.hub);
            b.push(
                entry(&url, resource, "Device", cond.clone()),
                EntryInfo {
                    kind: EntryKind::HubDevice,
                    tags: vec![],
                    identifier: cond,
                },
            );
            url
        }
    };
    b
}

/// Group adjacent items: the BP components of one measurement together, everything else alone.
fn groups<'i, 'a>(items: &'i [Item<'a>]) -> Vec<(usize, usize)> {
    let mut out: Vec<(usize, usize)> = Vec::new();
    let key = |it: &Item<'_>| match it {
        Item::Reading(r) if is_bp_component(r.reading.kind) => {
            Some((r.device.key.clone(), r.reading.device_time, r.received_at))
        }
        _ => None,
    };
    let mut i = 0;
    while i < items.len() {
        let k = items.get(i).and_then(key);
        let mut j = i + 1;
        if k.is_some() {
            let mut seen: HashSet<Kind> = HashSet::new();
            if let Some(Item::Reading(r)) = items.get(i) {
                seen.insert(r.reading.kind);
            }
            while let Some(Item::Reading(r)) = items.get(j) {
                if items.get(j).and_then(key) != k || !seen.insert(r.reading.kind) {
                    break;
                }
                j += 1;
            }
        }
        out.push((i, j));
        i = j;
    }
    out
}

/// Build one transaction Bundle from the front of `items` (at most [`MAX_ENTRIES`] entries).
/// `consumed` says how many items it covers; the rest go into the next bundle.
pub fn build(ctx: &BundleContext<'_>, items: &[Item<'_>]) -> BuiltBundle {
    build_max(ctx, items, MAX_ENTRIES)
}

/// [`build`] with at most `max` entries (a server's limit; never above [`MAX_ENTRIES`]). The
/// first group of items always goes in, so a bundle may exceed a `max` below one group's size.
pub fn build_max(ctx: &BundleContext<'_>, items: &[Item<'_>], max: usize) -> BuiltBundle {
    let max = max.clamp(1, MAX_ENTRIES);
    let mut b = new_builder(ctx);
    let mut unmapped = Vec::new();
    let gs = groups(items);
    let mut consumed = 0;
    let last = gs.len().saturating_sub(1);
    for (gi, (start, end)) in gs.iter().copied().enumerate() {
        let slice = items.get(start..end).unwrap_or_default();
        let readings: Vec<&ReadingInput<'_>> = slice
            .iter()
            .filter_map(|it| match it {
                Item::Reading(r) => Some(r),
                Item::Alert(_) => None,
            })
            .collect();
        if gi == last && gi > 0 && ctx.more_may_follow {
            if let Some(r) = readings.first() {
                if is_bp_component(r.reading.kind) {
                    break;
                }
            }
        }
        let need = 1 + readings
            .first()
            .map(|r| b.extra_needed(r.device))
            .unwrap_or(0);
        if b.entries.len() + need > max && consumed > 0 {
            break;
        }
        match slice.first() {
            Some(Item::Alert(a)) => b.alert(a),
            Some(Item::Reading(_)) => {
                let before = (b.entries.len(), b.device_refs.clone(), b.cts_refs.clone());
                if let Err(e) = b.reading_group(&readings) {
                    // Roll back any device / CTS entry added for this group only.
                    b.entries.truncate(before.0);
                    b.infos.truncate(before.0);
                    b.device_refs = before.1;
                    b.cts_refs = before.2;
                    for r in &readings {
                        unmapped.push((r.tag, e.clone()));
                    }
                }
            }
            None => {}
        }
        consumed = end;
    }
    b.finish(consumed, unmapped)
}

/// Split a built bundle into bundles of at most `max` entries each (one entry more when an entry
/// needs more dependencies than fit). The entries other bundles' entries reference by `urn:uuid`
/// (the Devices, a coincident time) are copied into each bundle that references them: they are
/// conditional creates, so the server keeps one. A copy carries no tags (its original acks them).
pub fn split(built: &BuiltBundle, max: usize) -> Vec<BuiltBundle> {
    let max = max.max(1);
    let entries: Vec<Json> = built
        .json
        .get("entry")
        .and_then(Json::as_array)
        .cloned()
        .unwrap_or_default();
    if entries.len() <= max || entries.len() != built.entries.len() {
        return vec![built.clone()];
    }
    let urls: Vec<Option<String>> = entries
        .iter()
        .map(|e| e.get("fullUrl").and_then(Json::as_str).map(str::to_owned))
        .collect();
    // The entries each entry references (by index), found by its fullUrl in the entry's text.
    let deps: Vec<Vec<usize>> = entries
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let text = e.get("resource").map(Json::to_string).unwrap_or_default();
            urls.iter()
                .enumerate()
                .filter(|(j, u)| {
                    *j != i
                        && u.as_deref()
                            .is_some_and(|u| text.contains(&format!("\"{u}\"")))
                })
                .map(|(j, _)| j)
                .collect()
        })
        .collect();
    let referenced: HashSet<usize> = deps.iter().flatten().copied().collect();
    let mut out = Vec::new();
    let mut cur: Vec<usize> = Vec::new();
    let flush = |cur: &mut Vec<usize>, out: &mut Vec<BuiltBundle>, own: &HashSet<usize>| {
        if cur.is_empty() {
            return;
        }
        let mut ent = Vec::new();
        let mut infos = Vec::new();
        for &i in cur.iter() {
            ent.push(entries.get(i).cloned().unwrap_or(Json::Null));
            let mut info = built.entries.get(i).cloned().unwrap_or(EntryInfo {
                kind: EntryKind::Observation,
                tags: vec![],
                identifier: String::new(),
            });
            if !own.contains(&i) {
                info.tags.clear();
            }
            infos.push(info);
        }
        out.push(BuiltBundle {
            json: json!({ "resourceType": "Bundle", "type": "transaction", "entry": ent }),
            entries: infos,
            consumed: 0,
            unmapped: vec![],
        });
        cur.clear();
    };
    // Each entry is "owned" (its tags acked) by the first bundle that holds it.
    let mut owned: HashSet<usize> = HashSet::new();
    let mut own_here: HashSet<usize> = HashSet::new();
    for i in 0..entries.len() {
        if referenced.contains(&i) && owned.contains(&i) {
            continue;
        }
        let mut need: Vec<usize> = deps
            .get(i)
            .map(|d| d.iter().copied().filter(|j| !cur.contains(j)).collect())
            .unwrap_or_default();
        need.push(i);
        if !cur.is_empty() && cur.len() + need.len() > max {
            flush(&mut cur, &mut out, &own_here);
            own_here.clear();
            need = deps.get(i).cloned().unwrap_or_default();
            need.push(i);
        }
        for j in need {
            if !cur.contains(&j) {
                cur.push(j);
                if owned.insert(j) {
                    own_here.insert(j);
                }
            }
        }
    }
    flush(&mut cur, &mut out, &own_here);
    if let Some(first) = out.first_mut() {
        first.consumed = built.consumed;
        first.unmapped = built.unmapped.clone();
    }
    out
}

#[cfg(test)]
mod split_and_test_tests {
    use super::*;

    fn info(kind: EntryKind, tags: Vec<i64>) -> EntryInfo {
        EntryInfo {
            kind,
            tags,
            identifier: String::new(),
        }
    }

    fn obs(n: u32, dev: &str, test: bool) -> Json {
        let mut r = json!({"resourceType": "Observation", "device": {"reference": dev}});
        if test {
            add_htest(&mut r);
        }
        json!({"fullUrl": format!("urn:uuid:o{n}"), "resource": r})
    }

    fn dev(u: &str) -> Json {
        json!({"fullUrl": u, "resource": {"resourceType": "Device"}})
    }

    #[test]
    fn devices_only_test_data_references_are_marked_htest() {
        let mut entries = vec![
            dev("urn:uuid:d1"),
            dev("urn:uuid:d2"),
            obs(1, "urn:uuid:d1", true),
            obs(2, "urn:uuid:d2", true),
            obs(3, "urn:uuid:d2", false),
        ];
        let infos = vec![
            info(EntryKind::Device("a".into()), vec![]),
            info(EntryKind::Device("b".into()), vec![]),
            info(EntryKind::Observation, vec![1]),
            info(EntryKind::Observation, vec![2]),
            info(EntryKind::Observation, vec![3]),
        ];
        mark_test_dependencies(&mut entries, &infos);
        assert!(
            is_htest(&entries[0]["resource"]),
            "only test data references d1"
        );
        assert!(
            !is_htest(&entries[1]["resource"]),
            "real data references d2"
        );
    }

    #[test]
    fn split_copies_referenced_devices_and_keeps_each_tag_once() {
        let mut entries = vec![dev("urn:uuid:hub")];
        let mut infos = vec![info(EntryKind::HubDevice, vec![])];
        for i in 0..9 {
            entries.push(obs(i, "urn:uuid:hub", false));
            infos.push(info(EntryKind::Observation, vec![i64::from(i)]));
        }
        let built = BuiltBundle {
            json: json!({"resourceType": "Bundle", "type": "transaction", "entry": entries}),
            entries: infos,
            consumed: 9,
            unmapped: vec![],
        };
        let parts = split(&built, 4);
        assert!(parts.len() >= 3);
        let mut tags: Vec<i64> = parts.iter().flat_map(BuiltBundle::tags).collect();
        tags.sort_unstable();
        assert_eq!(tags, (0..9).collect::<Vec<_>>());
        for p in &parts {
            assert!(p.entries.len() <= 4);
            assert_eq!(
                p.json["entry"][0]["fullUrl"], "urn:uuid:hub",
                "the hub device in each part"
            );
        }
        assert_eq!(split(&built, 50).len(), 1);
    }
}
