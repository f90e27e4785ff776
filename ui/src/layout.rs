//! The frame of every page (header, project switcher, notices) and the helpers pages share.
//! Every value goes through maud, which escapes it; nothing here writes unescaped user text.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use maud::{html, Markup, DOCTYPE};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde_json::Value;

use crate::api::ApiError;
use crate::session::Ctx;
use crate::CSP;

/// Characters left as they are in a path segment or a query value.
const KEEP: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// Percent-encodes a path segment or a query value.
pub fn enc(s: &str) -> String {
    utf8_percent_encode(s, KEEP).to_string()
}

/// A query string (`?a=1&b=2`) of the pairs whose value is present.
pub fn query(pairs: &[(&str, Option<&str>)]) -> String {
    let parts: Vec<String> = pairs
        .iter()
        .filter_map(|(k, v)| v.map(|v| format!("{k}={}", enc(v))))
        .collect();
    if parts.is_empty() {
        String::new()
    } else {
        format!("?{}", parts.join("&"))
    }
}

/// A notice shown above a page's content.
#[derive(Debug, Clone)]
pub enum Flash {
    Done(String),
    Failed(ApiError),
}

/// What the header needs: the projects the caller may see and the one shown.
#[derive(Debug, Clone, Default)]
pub struct Nav {
    pub projects: Vec<String>,
    pub project: String,
}

/// The whole page.
pub fn page(ctx: &Ctx, nav: &Nav, title: &str, flash: Option<&Flash>, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · dspy-storage" }
                link rel="stylesheet" href="/ui/style.css";
                link rel="icon" href="/ui/favicon.svg" type="image/svg+xml";
            }
            body {
                header.top {
                    a.brand href={ "/ui/" (query(&[("project", Some(&nav.project))])) } { "dspy-storage" }
                    nav {
                        a href={ "/ui/" (query(&[("project", Some(&nav.project))])) } { "Signatures" }
                        a href={ "/ui/search" (query(&[("project", Some(&nav.project))])) } { "Search" }
                        a href={ "/ui/monitoring" (query(&[("project", Some(&nav.project))])) } { "Monitoring" }
                    }
                    form.switcher method="get" action="/ui/" {
                        label for="project-switch" { "Project" }
                        select id="project-switch" name="project" {
                            @for p in &nav.projects {
                                option value=(p) selected[*p == nav.project] { (p) }
                            }
                            @if !nav.projects.contains(&nav.project) {
                                option value=(nav.project) selected { (nav.project) }
                            }
                        }
                        button type="submit" { "Show" }
                    }
                    @if ctx.sign_in {
                        form.signout method="post" action="/ui/logout" {
                            input type="hidden" name="csrf" value=(ctx.csrf);
                            button type="submit" { "Sign out" }
                        }
                    }
                }
                @if !ctx.sign_in {
                    p.warning role="alert" {
                        "Access control is OFF: this server (no --auth-file) lets every caller read, write and delete everything. Keep it on localhost."
                    }
                }
                main {
                    @if let Some(f) = flash { (flash_markup(f)) }
                    (body)
                }
            }
        }
    }
}

pub fn flash_markup(f: &Flash) -> Markup {
    match f {
        Flash::Done(text) => html! { p.notice.ok role="status" { (text) } },
        Flash::Failed(e) => html! {
            p.notice.error role="alert" {
                strong { (e.status.as_u16()) " " (e.code) } ": " (e.message)
                @if let Some(field) = &e.field { " (field " code { (field) } ")" }
            }
        },
    }
}

/// A rendered page as a response: the status, the security headers and the CSRF cookie.
pub fn respond(ctx: &Ctx, status: StatusCode, markup: Markup) -> Response {
    let mut response = (status, markup.into_string()).into_response();
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    ctx.set_cookies(&mut response);
    response
}

/// A page that says only what went wrong, with the API's status.
pub fn error_page(ctx: &Ctx, nav: &Nav, e: &ApiError) -> Response {
    if e.status == StatusCode::UNAUTHORIZED && ctx.sign_in {
        return to_login(ctx, None);
    }
    let body = html! {
        h1 { "Not shown" }
        p { a href={ "/ui/" (query(&[("project", Some(&nav.project))])) } { "Back to the signatures" } }
    };
    respond(
        ctx,
        e.status,
        page(ctx, nav, "Error", Some(&Flash::Failed(e.clone())), body),
    )
}

/// An error before anything else is known (no project list).
pub fn plain_error(ctx: &Ctx, status: StatusCode, code: &str, message: &str) -> Response {
    let e = ApiError {
        status,
        code: code.into(),
        message: message.into(),
        field: None,
    };
    let nav = Nav {
        projects: vec![],
        project: "default".into(),
    };
    let body = html! { h1 { "Refused" } };
    respond(
        ctx,
        status,
        page(ctx, &nav, "Refused", Some(&Flash::Failed(e)), body),
    )
}

/// To the sign-in form, coming back to `next` afterwards.
pub fn to_login(ctx: &Ctx, next: Option<&str>) -> Response {
    let mut r = Redirect::to(&format!("/ui/login{}", query(&[("next", next)]))).into_response();
    ctx.set_cookies(&mut r);
    r
}

/// A 303 to `to` (after a form: the browser GETs the page again).
pub fn see_other(ctx: &Ctx, to: &str) -> Response {
    let mut r = Redirect::to(to).into_response();
    ctx.set_cookies(&mut r);
    r
}

pub fn perf(v: &Value) -> String {
    match v.as_f64() {
        Some(x) => format!("{x:.4}")
            .trim_end_matches('0')
            .trim_end_matches('.')
            .to_owned(),
        None => "—".into(),
    }
}

/// A stored time (RFC 3339, UTC) as `YYYY-MM-DD HH:MM:SS`, with the exact value in `datetime`.
pub fn when(v: &Value) -> Markup {
    match v.as_str() {
        Some(t) if t.len() >= 19 && t.is_char_boundary(19) => {
            html! { time datetime=(t) title=(t) { (t[..10]) " " (t[11..19]) } }
        }
        _ => html! { (text(v)) },
    }
}

pub fn text(v: &Value) -> String {
    match v {
        Value::Null => "—".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A byte count for people.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut x = n as f64;
    let mut u = 0;
    while x >= 1024.0 && u < UNITS.len() - 1 {
        x /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{x:.1} {}", UNITS[u])
    }
}

/// Any JSON value as nested tables (objects), tables with a column per key (arrays of flat
/// objects) and lists (other arrays); scalars as text, numbers rounded for reading.
pub fn json_view(v: &Value) -> Markup {
    match v {
        Value::Object(map) if !map.is_empty() => html! {
            table.kv {
                @for (k, val) in map {
                    tr { th { (k) } td { (json_view(val)) } }
                }
            }
        },
        Value::Array(items) if !items.is_empty() && items.iter().all(is_flat_object) => {
            let mut columns: Vec<&str> = Vec::new();
            for item in items {
                for k in item.as_object().into_iter().flat_map(|o| o.keys()) {
                    if !columns.contains(&k.as_str()) {
                        columns.push(k);
                    }
                }
            }
            html! {
                table.list.rows {
                    thead { tr { @for c in &columns { th { (c) } } } }
                    tbody { @for item in items {
                        tr { @for c in &columns { td { (json_view(&item[*c])) } } }
                    } }
                }
            }
        }
        Value::Array(items) if !items.is_empty() => html! {
            ol.json { @for item in items { li { (json_view(item)) } } }
        },
        Value::String(s) => html! { span.s { (s) } },
        Value::Number(n) => html! { code { (number(n)) } },
        Value::Null => html! { span.empty { "—" } },
        other => html! { code { (other.to_string()) } },
    }
}

fn is_flat_object(v: &Value) -> bool {
    v.as_object()
        .is_some_and(|o| o.values().all(|x| !x.is_object() && !x.is_array()))
}

/// A number for reading: integers as they are, others to at most 4 decimals.
fn number(n: &serde_json::Number) -> String {
    match (n.as_i64(), n.as_u64(), n.as_f64()) {
        (Some(i), _, _) => i.to_string(),
        (_, Some(u), _) => u.to_string(),
        (_, _, Some(f)) => perf(&Value::from(f)),
        _ => n.to_string(),
    }
}

/// The hidden CSRF field of a form.
pub fn csrf_field(ctx: &Ctx) -> Markup {
    html! { input type="hidden" name="csrf" value=(ctx.csrf); }
}
