//! The heartbeat: the hub's PhgDevice and hub-status Observations (backlog, free disk, certificate
//! lifetime, software version, each device's last contact and battery), subject = the hub.

use super::bundle::{
    coding, entry, mdc_coding, new_builder, Builder, BuiltBundle, BundleContext, EntryInfo,
    EntryKind, MAX_ENTRIES,
};
use super::codes::{self, mdc};
use super::identifier::if_none_exist;
use super::{format_instant, FhirError};
use crate::model::UtcMillis;
use serde_json::{json, Map, Value as Json};

/// What the heartbeat reports about one medical device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceStatus {
    pub ident: super::DeviceIdent,
    pub last_seen_secs: Option<i64>,
    pub battery_percent: Option<u8>,
}

/// The hub's status for the heartbeat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubStatus {
    pub at: UtcMillis,
    pub backlog: u64,
    pub free_disk_bytes: Option<u64>,
    pub cert_days_left: Option<i64>,
    pub devices: Vec<DeviceStatus>,
    /// The hub's software updates (issue 19); each field absent when not known.
    pub updates: UpdateStatus,
}

/// What the heartbeat says of the hub's updates.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UpdateStatus {
    /// Security updates apt would install (Debian's security suite); `None`: unknown.
    pub security_pending: Option<u32>,
    /// The last upgrade's outcome (`ok 0.9.1 from 0.9.0 at …`, `rolled-back …`), one line.
    pub last_outcome: Option<String>,
}

/// The heartbeat: the PhgDevice plus hub-status Observations (subject = the hub).
pub fn heartbeat_bundle(
    ctx: &BundleContext<'_>,
    status: &HubStatus,
) -> Result<BuiltBundle, FhirError> {
    let ctx = BundleContext {
        hub_ref: None,
        ..ctx.clone()
    };
    let mut b = new_builder(&ctx);
    let hub_id = super::Eui64::from_eui48(ctx.hub.mac).compact();
    let secs = status.at.as_millis().div_euclid(1000) - super::EPOCH_2000_SECS;
    let at = format_instant(status.at, ctx.hub.utc_offset_minutes, true)?;
    let obs = |b: &mut Builder<'_, '_>,
               code: &str,
               suffix: &str,
               value: (&str, Json),
               focus: Option<Json>| {
        let ident = format!("{hub_id}-hub-status-{code}{suffix}-{secs}");
        let mut m = Map::new();
        m.insert("resourceType".into(), json!("Observation"));
        m.insert(
            "identifier".into(),
            json!([{ "system": codes::HUB_STATUS_SYSTEM, "value": ident }]),
        );
        m.insert("status".into(), json!("final"));
        m.insert(
            "category".into(),
            json!([{ "coding": [coding(codes::PHD_CATEGORY, "phd", None)] }]),
        );
        let code_json = if code == "battery" {
            json!({ "coding": [mdc_coding(mdc::BATT_CHARGE)] })
        } else {
            json!({ "coding": [coding(codes::HUB_STATUS_SYSTEM, code, None)] })
        };
        m.insert("code".into(), code_json);
        m.insert("subject".into(), json!({ "reference": b.hub_ref }));
        if let Some(f) = focus {
            m.insert("focus".into(), json!([f]));
        }
        m.insert("effectiveDateTime".into(), json!(at));
        m.insert(value.0.into(), value.1);
        m.insert("device".into(), json!({ "reference": b.hub_ref }));
        let url = b.urn();
        let cond = if_none_exist(codes::HUB_STATUS_SYSTEM, &ident);
        b.push(
            entry(&url, Json::Object(m), "Observation", cond),
            EntryInfo {
                kind: EntryKind::HubStatus,
                tags: vec![],
                identifier: ident,
            },
        );
    };
    let q = |v: Json, unit: &str| json!({ "value": v, "unit": unit, "system": codes::UCUM, "code": unit });
    obs(
        &mut b,
        "backlog-depth",
        "",
        ("valueQuantity", q(json!(status.backlog), "1")),
        None,
    );
    if let Some(f) = status.free_disk_bytes {
        obs(
            &mut b,
            "free-disk",
            "",
            ("valueQuantity", q(json!(f), "By")),
            None,
        );
    }
    if let Some(d) = status.cert_days_left {
        obs(
            &mut b,
            "cert-days-left",
            "",
            ("valueQuantity", q(json!(d), "d")),
            None,
        );
    }
    if let Some(n) = status.updates.security_pending {
        obs(
            &mut b,
            "security-updates-pending",
            "",
            ("valueQuantity", q(json!(n), "1")),
            None,
        );
    }
    if let Some(o) = &status.updates.last_outcome {
        obs(&mut b, "last-update", "", ("valueString", json!(o)), None);
    }
    obs(
        &mut b,
        "software-version",
        "",
        ("valueString", json!(ctx.hub.software_version)),
        None,
    );
    for d in status
        .devices
        .iter()
        .take(MAX_ENTRIES.saturating_sub(8) / 2)
    {
        let (system, value) = match d.ident {
            super::DeviceIdent::SystemId(e) => (codes::SYSID_SYSTEM, e.dashed()),
            super::DeviceIdent::BtMac(m) => (codes::BTMAC_SYSTEM, m.dashed()),
        };
        let focus = json!({ "identifier": { "system": system, "value": value } });
        let suffix = format!("-{}", d.ident);
        if let Some(s) = d.last_seen_secs {
            obs(
                &mut b,
                "device-last-seen",
                &suffix,
                ("valueQuantity", q(json!(s), "s")),
                Some(focus.clone()),
            );
        }
        if let Some(p) = d.battery_percent {
            obs(
                &mut b,
                "battery",
                &suffix,
                ("valueQuantity", q(json!(p), "%")),
                Some(focus),
            );
        }
    }
    Ok(b.finish(0, Vec::new()))
}
