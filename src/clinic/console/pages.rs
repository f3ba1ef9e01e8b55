//! The console's HTML, as maud templates (escaped by default). No script: every action is a form
//! carrying the session's CSRF token.

use super::auth::Session;
use super::fleet::{Fleet, HubRow};
use super::patient::PatientView;
use super::worklist::{HubState, Row, WorklistSettings};
use jiff::tz::TimeZone;
use jiff::Timestamp;
use maud::{html, Markup, DOCTYPE};

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:0;color:#222}\
header{background:#234;color:#fff;padding:.5em 1em;display:flex;justify-content:space-between;align-items:center}\
header a{color:#fff}main{padding:1em}table{border-collapse:collapse}\
td,th{border-bottom:1px solid #ccc;padding:.3em .6em;text-align:left}\
.crit{background:#fdd}.chart{position:relative;margin:0 0 1.6em 4em}.chart svg{display:block}.ytick{position:absolute;right:100%;margin-right:.3em;transform:translateY(-50%);font-size:.8em;white-space:nowrap}.xtick{position:absolute;top:100%;transform:translateX(-50%);font-size:.8em;white-space:nowrap}figure.chart-fig{margin:0;overflow-x:auto}.warn{background:#ffe9c6}.err{color:#a00}.muted{color:#777}";

pub(super) fn page(title: &str, session: Option<&Session>, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " — vitals clinic" }
                style { (STYLE) }
            }
            body {
                header {
                    a href="/" { "vitals clinic" }
                    @if session.is_some() {
                        nav { a href="/" { "Worklist" } " · " a href="/fleet" { "Fleet" } }
                    }
                    @if let Some(s) = session {
                        form method="post" action="/logout" {
                            span { (s.user) " (" (s.role.as_str()) ") " }
                            input type="hidden" name="csrf" value=(s.csrf);
                            button type="submit" { "Log out" }
                        }
                    }
                }
                main { (body) }
            }
        }
    }
}

/// The login form.
pub fn login(csrf: &str, error: Option<&str>) -> Markup {
    page(
        "Log in",
        None,
        html! {
            h1 { "Log in" }
            @if let Some(e) = error { p.err role="alert" { (e) } }
            form method="post" action="/login" {
                input type="hidden" name="csrf" value=(csrf);
                p { label { "User " input name="user" autocomplete="username" required; } }
                p { label { "Password " input type="password" name="password" autocomplete="current-password" required; } }
                p { button type="submit" { "Log in" } }
            }
        },
    )
}

/// A message page (refusals).
pub fn message(title: &str, text: &str) -> Markup {
    page(
        title,
        None,
        html! { h1 { (title) } p { (text) } p { a href="/" { "Back" } } },
    )
}

/// A duration as "45 s", "5 min", "3 h", "2 d".
pub fn age(now: Timestamp, t: Timestamp) -> String {
    let s = now.duration_since(t).as_secs().max(0);
    match s {
        0..=89 => format!("{s} s"),
        90..=5399 => format!("{} min", s / 60),
        5400..=129_599 => format!("{} h", s / 3600),
        _ => format!("{} d", s / 86_400),
    }
}

fn row_class(r: &Row) -> &'static str {
    if r.critical_unacked > 0 {
        "crit"
    } else if r.open.iter().sum::<usize>() > 0 {
        "warn"
    } else {
        ""
    }
}

/// The worklist.
pub fn worklist(session: &Session, rows: &[Row], now: Timestamp, tz: &TimeZone) -> Markup {
    page(
        "Worklist",
        Some(session),
        html! {
            h1 { "Worklist" }
            p.muted.zone { "Times in " (zone_name(tz)) "." }
            @if rows.is_empty() { p.muted { "No patient has data in this clinic yet." } }
            @else {
                table #worklist {
                    thead { tr {
                        th { "Patient" } th { "Open alerts" } th { "Latest readings" }
                        th { "Hub" } th { "Days with readings (30 d)" }
                    } }
                    tbody {
                        @for r in rows {
                            tr class=(row_class(r)) data-patient=(r.patient) {
                                td {
                                    a href={ "/patient/" (r.patient) } { (r.patient) }
                                    @if let Some(l) = &r.label { " " span.label { (l) } }
                                }
                                td {
                                    @if r.critical_unacked > 0 {
                                        strong { (r.critical_unacked) " critical unacknowledged" } br;
                                    }
                                    @let [h, m, l] = r.open;
                                    @if h + m + l == 0 { span.muted { "none" } }
                                    @else { (h) " high · " (m) " moderate · " (l) " low" }
                                }
                                td {
                                    @for (kind, (v, flags, t)) in &r.latest {
                                        div {
                                            (kind) ": " strong { (v) }
                                            @if !flags.is_empty() { " " span.err { (flags.join(" ")) } }
                                            " " span.muted { "(" (age(now, *t)) " ago)" }
                                        }
                                    }
                                    @if r.stale { div.err { "stale: no recent reading" } }
                                }
                                td {
                                    @match &r.hub {
                                        HubState::Online { last } => {
                                            "online " span.muted { "(heartbeat " (age(now, *last)) " ago)" }
                                        }
                                        HubState::Offline { since } => {
                                            span.err { "offline since " (when(*since, tz)) }
                                        }
                                        HubState::Unknown => { span.muted { "no heartbeat received" } }
                                    }
                                }
                                td { (r.days_with_readings) " (" (r.band()) ")" }
                            }
                        }
                    }
                }
            }
        },
    )
}

/// A time in the clinic's zone, with the offset shown.
fn when(t: Timestamp, tz: &TimeZone) -> String {
    t.to_zoned_datetime(tz.clone())
        .strftime("%Y-%m-%d %H:%M %:z")
        .to_string()
}

/// The zone's name as shown under the header.
fn zone_name(tz: &TimeZone) -> String {
    tz.iana_name().unwrap_or("the system's zone").to_owned()
}

/// The patient page: charts, readings, alerts with the acknowledge form.
pub fn patient(session: &Session, v: &PatientView, now: Timestamp, tz: &TimeZone) -> Markup {
    page(
        &v.patient,
        Some(session),
        html! {
            h1 {
                "Patient " (v.patient)
                @if let Some(l) = &v.label { " — " span.label { (l) } }
            }
            p.muted.zone { "Times in " (zone_name(tz)) "." }
            p { a #limits-link href={ "/patient/" (v.patient) "/limits" } { "Alert limits" } }
            @if session.role == super::users::Role::Admin {
                form.label method="post" action={ "/patient/" (v.patient) "/label" } {
                    input type="hidden" name="csrf" value=(session.csrf);
                    label {
                        "Display label "
                        input name="label" maxlength=(super::records::MAX_LABEL)
                            value=(v.label.as_deref().unwrap_or(""))
                            placeholder="e.g. initials and room (empty: none)";
                    }
                    " " button type="submit" { "Save label" }
                    " " span.muted { "Kept by the clinic only; the hubs send no demographics." }
                }
            }
            (device_panel(&v.devices, now, tz))
            h2 { "Alerts" }
            @if v.alerts.is_empty() { p.muted { "No alert in the last 30 days." } }
            @else {
                table #alerts {
                    thead { tr { th { "When" } th { "Alert" } th { "Severity" } th { "Acknowledged" } } }
                    tbody {
                        @for a in &v.alerts {
                            tr class=(if a.severity == "high" && a.can_ack { "crit" } else { "" }) data-issue=(a.issue) {
                                td { (a.at.map(|t| when(t, tz)).unwrap_or_default()) }
                                td { (a.text) " " span.muted { (a.episode) } }
                                td { (a.severity) }
                                td {
                                    @for (who, at, note) in &a.acks {
                                        div { (who) ", " (at.parse::<Timestamp>().map(|t| when(t, tz)).unwrap_or_else(|_| at.clone())) ": " (note) }
                                    }
                                    @if a.can_ack {
                                        form method="post" action={ "/alert/" (a.issue.trim_start_matches("DetectedIssue/")) "/ack" } {
                                            input type="hidden" name="csrf" value=(session.csrf);
                                            input name="note" required maxlength="2000" placeholder="note (required)";
                                            " " button type="submit" { "Acknowledge" }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            @let rules = super::patient::band_rules(v);
            @for (kind, readings) in &v.kinds {
                @let band = super::patient::band(kind, readings, &rules);
                @let unit = super::patient::chart_unit(readings);
                section.kind data-kind=(kind) {
                    h2 { (kind) " — last 30 days" }
                    @match super::patient::chart(readings, band.as_ref(), now, tz) {
                        Ok(c) => {
                            figure.chart-fig {
                                div.chart data-points=(readings.iter().filter(|r| r.value.is_some()).count())
                                    data-band-unit=[band.as_ref().map(|b| b.unit.ucum())]
                                    data-band-low=[band.as_ref().and_then(|b| b.low)]
                                    data-band-high=[band.as_ref().and_then(|b| b.high)]
                                    data-critical-low=[band.as_ref().and_then(|b| b.critical_low)]
                                    data-critical-high=[band.as_ref().and_then(|b| b.critical_high)]
                                    data-band-version=[band.as_ref().and(v.limits.as_ref()).map(|l| l.version)]
                                    style={ "width:" (super::patient::CHART_SIZE.0) "px;height:" (super::patient::CHART_SIZE.1) "px" } {
                                    (maud::PreEscaped(c.svg))
                                    @for (py, t) in &c.y_ticks { span.ytick style={ "top:" (py) "px" } { (t) } }
                                    @for (px, t) in &c.x_ticks { span.xtick style={ "left:" (px) "px" } { (t) } }
                                }
                                figcaption.muted {
                                    "Vertical: " span.axis-unit { (unit.map(|u| u.ucum()).unwrap_or("value (mixed or no unit)")) }
                                    @if *kind == "Blood pressure" { " (systolic)" }
                                    "; horizontal: date (" (zone_name(tz)) ", midnight)."
                                }
                            }
                        }
                        Err(e) => { p.err { "chart unavailable: " (e) } }
                    }
                    p.muted.band-source {
                        @match &band {
                            Some(b) => {
                                "Green band: normal " (num(b.low)) " to " (num(b.high)) ", red lines: critical "
                                (num(b.critical_low)) " and " (num(b.critical_high)) " " (b.unit.ucum()) ", from "
                                @match &v.limits {
                                    Some(l) => { "this patient's alert limits version " (l.version) ", effective "
                                        (Timestamp::from_millisecond(l.effective.0).map(|t| when(t, tz)).unwrap_or_else(|_| l.effective.to_rfc3339())) "." }
                                    None => { "the hub's documented starting limits: no alert-limits version is saved for this patient." }
                                }
                                " Red dots: flagged readings (marks as the hub sent them)."
                            }
                            None => { "No limit band for this kind. Red dots: flagged readings." }
                        }
                    }
                    table.readings {
                        thead { tr { th { "When" } th { "Value" } th { "Flag" } th { "Time from" } } }
                        tbody {
                            @for r in readings.iter().rev() {
                                tr {
                                    td { (when(r.at, tz)) } td { (r.text) } td.err { (r.flags.join(" ")) }
                                    td class=(if r.time == super::patient::TimeQuality::Device { "muted" } else { "warn" }) { (r.time.text()) }
                                }
                            }
                        }
                    }
                }
            }
        },
    )
}

/// A limit as the page shows it (`—`: none).
fn num(v: Option<f64>) -> String {
    v.map(|x| {
        let s = format!("{x:.2}");
        s.trim_end_matches('0').trim_end_matches('.').to_owned()
    })
    .unwrap_or_else(|| "—".into())
}

fn offset_text(d: jiff::SignedDuration) -> String {
    let s = d.as_secs();
    let sign = if s < 0 { "behind" } else { "ahead" };
    let a = s.unsigned_abs();
    if a < 90 {
        format!("{a} s {sign}")
    } else if a < 5400 {
        format!("{} min {sign}", a / 60)
    } else {
        format!("{:.1} h {sign}", a as f64 / 3600.0)
    }
}

/// The patient's hub and devices: state, battery, last contact, clock offset and correction.
fn device_panel(d: &super::patient::Devices, now: Timestamp, tz: &TimeZone) -> Markup {
    html! {
        h2 { "Devices" }
        @if d.hubs.is_empty() && d.devices.is_empty() {
            p.muted { "No device of this patient has reached the clinic yet." }
        } @else {
            table #devices {
                thead { tr {
                    th { "Device" } th { "Battery" } th { "Last seen" } th { "Clock" }
                } }
                tbody {
                    @for h in &d.hubs {
                        tr class=(hub_class(h)) data-device=(h.hub) {
                            td { "Hub " span.muted { (h.hub) } @if let Some(v) = &h.software_version { " · " (v) } }
                            td { span.muted { "mains" } }
                            td {
                                @match &h.state {
                                    HubState::Online { last } => { "heartbeat " (age(now, *last)) " ago" }
                                    HubState::Offline { since } => { span.err { "offline since " (when(*since, tz)) } }
                                    HubState::Unknown => { span.muted { "no heartbeat in 30 d" } }
                                }
                            }
                            td { span.muted { "the clinic's reference (NTP)" } }
                        }
                    }
                    @for v in &d.devices {
                        tr data-device=(v.ident) {
                            td { @if let Some(n) = &v.name { (n) " " } span.muted { (v.ident) } }
                            td {
                                @match v.battery_percent {
                                    Some(b) if b <= super::fleet::BATTERY_WARN => { span.err { (b) " %" } }
                                    Some(b) => { (b) " %" }
                                    None => { (absent("not reported")) }
                                }
                            }
                            td {
                                @match v.last_seen {
                                    Some(t) => { (age(now, t)) " ago" }
                                    None => { (absent("not in the newest heartbeat")) }
                                }
                            }
                            td {
                                @match v.clock_offset {
                                    Some(o) => { "offset " (offset_text(o)) "; " strong { "readings corrected" } }
                                    None => { span.muted { "no offset measured; readings as the device dated them" } }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn bytes(b: u64) -> String {
    const GB: u64 = 1024 * 1024 * 1024;
    if b >= GB {
        format!("{:.1} GiB", b as f64 / GB as f64)
    } else {
        format!("{} MiB", b / (1024 * 1024))
    }
}

/// "—" with a short note, for a field this hub's heartbeat did not carry.
fn absent(note: &str) -> Markup {
    html! { span.muted title=(note) { "— " small { "(" (note) ")" } } }
}

fn hub_class(r: &HubRow) -> &'static str {
    match r.state {
        HubState::Offline { .. } => "crit",
        _ if !r.problems.is_empty() => "warn",
        _ => "",
    }
}

/// The fleet page: every hub, offline and failing first.
pub fn fleet(
    session: &Session,
    f: &Fleet,
    now: Timestamp,
    s: &WorklistSettings,
    tz: &TimeZone,
) -> Markup {
    page(
        "Fleet",
        Some(session),
        html! {
            h1 { "Fleet" }
            p.muted.zone { "Times in " (zone_name(tz)) "." }
            p.muted {
                "A hub is offline after " (s.missed_heartbeats) " missed heartbeats (interval "
                (s.heartbeat_interval.as_mins()) " min). Values are from each hub's newest heartbeat."
            }
            @if f.truncated {
                p.err { "Too many heartbeats in the last 30 days for one search: the oldest are not shown, so a hub silent for long may show \"no heartbeat\"." }
            }
            @if f.rows.is_empty() { p.muted { "No hub has sent a heartbeat to this clinic yet." } }
            @else {
                table #fleet {
                    thead { tr {
                        th { "Hub" } th { "Patient" } th { "State" } th { "Software" }
                        th { "Security updates pending" } th { "Last update" }
                        th { "Upload backlog" } th { "Free disk" } th { "Certificate" }
                        th { "Devices' batteries" }
                        th { "Security events (7 days)" }
                        th { "Problems" }
                    } }
                    tbody {
                        @for r in &f.rows {
                            tr class=(hub_class(r)) data-hub=(r.hub) {
                                td { (r.hub) }
                                td {
                                    @match &r.patient {
                                        Some(p) => { a href={ "/patient/" (p) } { (p) } }
                                        None => { (absent("not enrolled to a patient")) }
                                    }
                                }
                                td.state {
                                    @match &r.state {
                                        HubState::Online { last } => {
                                            "online " span.muted { "(heartbeat " (age(now, *last)) " ago)" }
                                        }
                                        HubState::Offline { since } => {
                                            span.err { "offline since " (when(*since, tz)) }
                                        }
                                        HubState::Unknown => { span.muted { "no heartbeat received" } }
                                    }
                                }
                                td { @match &r.software_version { Some(v) => { (v) } None => { (absent("not reported")) } } }
                                td.security-updates { @match r.security_updates_pending { Some(n) => { (n) } None => { (absent("unknown")) } } }
                                td.last-update {
                                    @match &r.last_update {
                                        Some(u) if u.starts_with("ok ") => { (u) }
                                        Some(u) => { span.err { (u) } }
                                        None => { (absent("none reported")) }
                                    }
                                }
                                td { @match r.backlog { Some(b) => { (b) " readings" } None => { (absent("not reported")) } } }
                                td { @match r.free_disk_bytes { Some(b) => { (bytes(b)) } None => { (absent("not reported by this hub")) } } }
                                td {
                                    @match r.cert_days_left {
                                        Some(d) => { (d) " days left" }
                                        None => { (absent("not reported by this hub")) }
                                    }
                                }
                                td {
                                    @if r.devices.is_empty() { (absent("no device reported")) }
                                    @for d in &r.devices {
                                        div {
                                            (d.ident) ": "
                                            @match d.battery_percent { Some(b) => { strong { (b) " %" } } None => { (absent("battery not reported")) } }
                                            @if let Some(secs) = d.last_seen_secs {
                                                " " span.muted { "(seen " (age(now, now - jiff::SignedDuration::from_secs(secs))) " before the heartbeat)" }
                                            }
                                        }
                                    }
                                }
                                td.security {
                                    @if let Some(t) = r.spike_alert {
                                        div.err.spike { "security alert raised " (when(t, tz)) }
                                    }
                                    @if r.security.is_empty() { span.muted { "none" } }
                                    @for x in &r.security {
                                        div data-code=(x.code) {
                                            (x.code) " × " (x.count) " "
                                            span.muted { "(last " (when(x.last, tz)) ")" }
                                        }
                                    }
                                }
                                td { @if r.problems.is_empty() { span.muted { "none" } } @else { span.err { (r.problems.join("; ")) } } }
                            }
                        }
                    }
                }
            }
        },
    )
}
