//! Security events upstream (issue 19 part 3): which of the hub's events are security events, the
//! code each maps to, and the window that aggregates them.
//!
//! Every event the store records (`events`) whose kind is listed in [`CODES`], or whose severity
//! is `security`, also counts into a *security report*: one open aggregate per code, opened by
//! the first event and closed [`StoreConfig::security_window_ms`](super::StoreConfig) later. A
//! closed aggregate is an outbox entry (item `security`) uploaded once as an `AuditEvent` with
//! its count and first/last time (`fhir::audit`). A flood of events of one kind is one row per
//! window, never a row per event; the codes are a fixed list, so a hostile radio environment can
//! create at most `CODES.len() + 1` rows per window.
//!
//! Nothing of an event's detail leaves the hub this way (details name devices): only the code,
//! the event kinds (fixed vocabularies), the count and the two times.

/// The default aggregation window: 15 minutes.
pub const DEFAULT_WINDOW_MS: i64 = 15 * 60_000;

/// Events kinds → security code. The codes are the `AuditEvent.subtype` codes of the hub's code
/// system (`fhir::audit::CODE_SYSTEM`); README "Security events upstream" lists them.
pub const CODES: &[(&str, &str)] = &[
    // BLE: pairing failures and passkey mismatches, spoofing, unbonded connections (a paired
    // device's address without a bond in BlueZ; `ble_pairing_needed`, which also covers a device
    // registered but never paired, is an operational event, not a security one).
    ("ble_pairing_failed", "pairing-failure"),
    ("ble_passkey_mismatch", "pairing-failure"),
    ("ble_spoof_attempt", "spoof-attempt"),
    ("ble_unbonded_connection", "unbonded-connection"),
    // TLS failures, by kind.
    ("uplink_server_cert_untrusted", "tls-server-untrusted"),
    ("uplink_server_cert_expired", "tls-server-expired"),
    (
        "uplink_server_cert_not_yet_valid",
        "tls-server-not-yet-valid",
    ),
    ("uplink_server_cert_wrong_name", "tls-server-wrong-name"),
    ("uplink_server_no_client_auth", "tls-server-no-client-auth"),
    ("uplink_server_rejected_client_cert", "tls-client-rejected"),
    ("uplink_client_cert_revoked", "tls-client-revoked"),
    ("uplink_client_cert_expired", "tls-client-expired"),
    ("uplink_client_cert_unusable", "tls-client-unusable"),
    ("uplink_ca_bundle", "tls-ca-bundle"),
    ("uplink_tls", "tls-other"),
    ("uplink_patient_mismatch", "patient-mismatch"),
    // The hub's clock.
    ("clock_jump", "clock-jump"),
    // Integrity at rest.
    ("integrity_failure", "integrity-failure"),
    ("corrupt_database_moved", "integrity-failure"),
    ("integrity_check_failed", "integrity-failure"),
    // Configuration, keys, software.
    ("config_changed", "config-change"),
    ("kek_created", "key-rotation"),
    ("kek_rotated", "key-rotation"),
    ("data_key_rotated", "key-rotation"),
    ("data_key_rotation_failed", "key-rotation-failed"),
    ("uplink_client_cert_renewed", "certificate-renewal"),
    (
        "uplink_client_cert_renewal_failed",
        "certificate-renewal-failed",
    ),
    (
        "uplink_client_cert_renewal_rolled_back",
        "certificate-renewal-failed",
    ),
    ("software_version_changed", "software-version"),
    ("update", "software-update"),
    // Technician's operations.
    ("wipe", "wipe"),
    ("commissioned", "commissioning"),
    // The clinic's alert limits.
    ("alert_limits_changed", "limits-change"),
    ("alert_limits_pending", "limits-change"),
    ("alert_limits_refused", "limits-refused"),
    ("alert_limits_unusable", "limits-refused"),
];

/// The code of a `security`-severity event whose kind is not in [`CODES`].
pub const OTHER: &str = "other-security";

/// The security code of an event, if it is a security event.
pub fn code_for(kind: &str, severity: &str) -> Option<&'static str> {
    CODES
        .iter()
        .find(|(k, _)| *k == kind)
        .map(|(_, c)| *c)
        .or_else(|| (severity == "security").then_some(OTHER))
}

/// One aggregate as uploaded (no PHI).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SecurityReport {
    pub id: i64,
    /// Stable: the AuditEvent's identifier (conditional create), so a resend is not stored twice.
    pub uuid: String,
    pub code: String,
    /// The event kinds counted (sorted, distinct).
    pub kinds: Vec<String>,
    pub count: u64,
    /// First and last event, ms since the epoch.
    pub first_at: i64,
    pub last_at: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_map_to_codes_and_unknown_security_events_are_other() {
        assert_eq!(
            code_for("integrity_failure", "security"),
            Some("integrity-failure")
        );
        assert_eq!(code_for("update", "info"), Some("software-update"));
        assert_eq!(code_for("store_opened", "info"), None);
        assert_eq!(code_for("something_new", "security"), Some(OTHER));
        // Every code is a token the AuditEvent can carry.
        for (_, c) in CODES {
            assert!(
                c.bytes().all(|b| b.is_ascii_lowercase() || b == b'-'),
                "{c}"
            );
        }
    }
}
