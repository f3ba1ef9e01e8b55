//! The console's HTML, as maud templates (escaped by default). No script: every action is a form
//! carrying the session's CSRF token.

use super::auth::Session;
use maud::{html, Markup, DOCTYPE};

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:0;color:#222}\
header{background:#234;color:#fff;padding:.5em 1em;display:flex;justify-content:space-between;align-items:center}\
header a{color:#fff}main{padding:1em}table{border-collapse:collapse}\
td,th{border-bottom:1px solid #ccc;padding:.3em .6em;text-align:left}\
.crit{background:#fdd}.warn{background:#ffe9c6}.err{color:#a00}.muted{color:#777}";

fn page(title: &str, session: Option<&Session>, body: Markup) -> Markup {
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

/// The worklist.
pub fn worklist(session: &Session) -> Markup {
    page("Worklist", Some(session), html! { h1 { "Worklist" } })
}
