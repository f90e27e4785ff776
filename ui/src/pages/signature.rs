//! `/ui/signatures/{signature}`: a signature's versions (semver order, paged) with their
//! aliases, performance, method, tags and creation time; its trend chart; each alias's promotion
//! policy and a link to its history; forms to move or remove an alias (compare-and-set: a move
//! made meanwhile by someone else is reported as a conflict, never overwritten; a move the
//! alias's policy refuses shows the API's `policy_violation` message, the failed requirement with
//! its measured value; an admin may give an override reason), roll back to a version, delete a
//! version, and diff two versions. `/ui/signatures/{signature}/aliases/{alias}/history`: the
//! alias's history, newest first, paged.

use axum::extract::{Form, Path, Query, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::Response;
use maud::html;
use serde_json::{json, Value};

use super::{begin, param, submit, Call, Params, Submitted};
use crate::layout::{self, csrf_field, enc, perf, query, text, Flash, Nav};
use crate::session::Ctx;
use crate::Ui;

/// The page's URL.
pub fn url(signature: &str, project: &str) -> String {
    format!(
        "/ui/signatures/{}{}",
        enc(signature),
        query(&[("project", Some(project))])
    )
}

pub async fn page(
    State(ui): State<Ui>,
    headers: HeaderMap,
    uri: Uri,
    Path(signature): Path<String>,
    Query(params): Query<Params>,
) -> Response {
    let (ctx, nav) = match begin(&ui, &headers, &uri, param(&params, "project")).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let flash = done_notice(&params);
    render(
        &ui,
        &ctx,
        &nav,
        &signature,
        param(&params, "cursor"),
        StatusCode::OK,
        flash.as_ref(),
    )
    .await
}

/// The notice of a finished action (`done=` after the form's redirect); names are escaped.
fn done_notice(params: &Params) -> Option<Flash> {
    let alias = param(params, "alias").unwrap_or_default();
    let version = param(params, "version").unwrap_or_default();
    let text = match param(params, "done")? {
        "moved" => format!("Alias {alias} now points at {version}."),
        "removed" => format!("Alias {alias} removed."),
        "rolled_back" => format!("Rolled back: version {version} is the new latest."),
        "deleted" => format!("Version {version} deleted."),
        _ => return None,
    };
    Some(Flash::Done(text))
}

async fn render(
    ui: &Ui,
    ctx: &Ctx,
    nav: &Nav,
    signature: &str,
    cursor: Option<&str>,
    status: StatusCode,
    flash: Option<&Flash>,
) -> Response {
    let p = nav.project.as_str();
    let api_uri = format!(
        "/signatures/{}/versions{}",
        enc(signature),
        query(&[
            ("project", Some(p)),
            ("limit", Some("100")),
            ("cursor", cursor)
        ])
    );
    let listing = match ui.api.get(&api_uri, ctx.token()).await {
        Ok(v) => v,
        Err(e) => return layout::error_page(ctx, nav, &e),
    };
    let empty = Vec::new();
    let versions = listing["versions"].as_array().unwrap_or(&empty);
    let aliases = listing["aliases"].as_object().cloned().unwrap_or_default();
    let names: Vec<&str> = versions
        .iter()
        .filter_map(|v| v["version"].as_str())
        .collect();
    // Each alias's policy (one in-process read per alias; a 404 is "no policy").
    let mut policies: Vec<(String, Option<Value>)> = Vec::new();
    for alias in aliases.keys() {
        let uri = format!(
            "/signatures/{}/aliases/{}/policy{}",
            enc(signature),
            enc(alias),
            query(&[("project", Some(p))])
        );
        let policy = ui.api.get(&uri, ctx.token()).await.ok();
        policies.push((alias.clone(), policy));
    }
    let policy_of = |alias: &str| -> Option<&Value> {
        policies
            .iter()
            .find(|(a, _)| a == alias)
            .and_then(|(_, p)| p.as_ref())
    };
    let last = names.last().copied().unwrap_or_default();
    let before_last = names.len().checked_sub(2).map(|i| names[i]).unwrap_or(last);
    let sig_enc = enc(signature);
    let body = html! {
        h1 { "Signature " span.sig { (signature) } }
        p.meta { "Project " strong { (p) } " · " a href={ "/ui/search" (query(&[("project", Some(p)), ("q", Some(&format!("signature:{signature}")))])) } { "search its programs" } }
        figure.chart {
            img src={ "/ui/signatures/" (sig_enc) "/trends.svg" (query(&[("project", Some(p)), ("days", Some("90"))])) } alt={ "Metric trends of " (signature) " over 90 days" } width="900";
        }
        section id="aliases" {
            h2 { "Aliases" }
            @if aliases.is_empty() { p.empty { "No alias yet." } }
            table.list {
                thead { tr { th { "Alias" } th { "Version" } th { "Policy" } th { "Move to" } th { "" } } }
                tbody {
                    @for (alias, version) in &aliases {
                        @let version = text(version);
                        tr data-alias=(alias) {
                            td { span.alias { (alias) } " " a.small href={ "/ui/signatures/" (sig_enc) "/aliases/" (enc(alias)) "/history" (query(&[("project", Some(p))])) } { "history" } }
                            td { (version) }
                            td.policy { (policy_summary(policy_of(alias))) }
                            td {
                                form.inline method="post" action={ "/ui/signatures/" (sig_enc) "/alias" } {
                                    (csrf_field(ctx))
                                    input type="hidden" name="project" value=(p);
                                    input type="hidden" name="alias" value=(alias);
                                    input type="hidden" name="expected_version" value=(version);
                                    label { "version " input type="text" name="version" size="10" required list="versions" placeholder=(last); }
                                    label.small { " override reason " input type="text" name="override_reason" size="16" maxlength="500" placeholder="admin only"; }
                                    button type="submit" { "Move" }
                                }
                            }
                            td {
                                form.inline method="post" action={ "/ui/signatures/" (sig_enc) "/alias/remove" } {
                                    (csrf_field(ctx))
                                    input type="hidden" name="project" value=(p);
                                    input type="hidden" name="alias" value=(alias);
                                    button.danger type="submit" { "Remove" }
                                }
                            }
                        }
                    }
                }
            }
            form.inline id="new-alias" method="post" action={ "/ui/signatures/" (sig_enc) "/alias" } {
                (csrf_field(ctx))
                input type="hidden" name="project" value=(p);
                input type="hidden" name="expected_version" value="";
                label { "New alias " input type="text" name="alias" size="14" required pattern="[a-z0-9_-]{1,64}"; }
                label { " at version " input type="text" name="version" size="10" required list="versions" placeholder=(last); }
                button type="submit" { "Create" }
            }
            datalist id="versions" { @for v in &names { option value=(v) {} } }
        }
        section id="versions" {
            h2 { "Versions" }
            form.inline method="get" action={ "/ui/diff/" (sig_enc) } {
                input type="hidden" name="project" value=(p);
                label { "Diff " input type="text" name="from" size="10" list="versions" value=(before_last); }
                label { " → " input type="text" name="to" size="10" list="versions" value=(last); }
                button type="submit" { "Compare" }
            }
            table.list id="version-table" {
                thead { tr { th { "Version" } th { "Aliases" } th { "Performance" } th { "Method" } th { "Tags" } th { "Created" } th { "Size" } th { "Actions" } } }
                tbody {
                    @for (i, v) in versions.iter().enumerate() {
                        @let version = v["version"].as_str().unwrap_or_default();
                        @let id = v["id"].as_str().unwrap_or_default();
                        tr data-version=(version) {
                            td { a href={ "/ui/programs/" (enc(id)) } { (version) } }
                            td { @if let Some(a) = v["aliases"].as_array() { @for n in a { span.alias { (text(n)) } " " } } }
                            td.num { (perf(&v["performance"])) }
                            td { (text(&v["optimization_method"])) }
                            td { @if let Some(tags) = v["tags"].as_array() { @for t in tags { span.tag { (text(t)) } " " } } }
                            td { (layout::when(&v["created_at"])) }
                            td.num { (v["size"].as_u64().map(layout::bytes).unwrap_or_default()) }
                            td.actions {
                                @if i > 0 {
                                    a href={ "/ui/diff/" (sig_enc) (query(&[("project", Some(p)), ("from", Some(names[i - 1])), ("to", Some(version))])) } { "diff prev" }
                                    " "
                                }
                                form.inline method="post" action={ "/ui/signatures/" (sig_enc) "/rollback" } {
                                    (csrf_field(ctx))
                                    input type="hidden" name="project" value=(p);
                                    input type="hidden" name="to_version" value=(version);
                                    button type="submit" title="Store a new version identical to this one" { "Roll back to" }
                                }
                                form.inline method="post" action={ "/ui/programs/" (enc(id)) "/delete" } {
                                    (csrf_field(ctx))
                                    input type="hidden" name="project" value=(p);
                                    input type="hidden" name="signature" value=(signature);
                                    input type="hidden" name="version" value=(version);
                                    label.small { input type="checkbox" name="force" value="true"; " with its aliases" }
                                    button.danger type="submit" { "Delete" }
                                }
                            }
                        }
                    }
                }
            }
            @if let Some(next) = listing["next_cursor"].as_str() {
                p.pager { a rel="next" href={ "/ui/signatures/" (sig_enc) (query(&[("project", Some(p)), ("cursor", Some(next))])) } { "Next versions →" } }
            }
        }
    };
    layout::respond(ctx, status, layout::page(ctx, nav, signature, flash, body))
}

/// One line for an alias's policy: "protected", the gate's requirements, or "none".
fn policy_summary(policy: Option<&Value>) -> String {
    let Some(p) = policy else {
        return "none".into();
    };
    let mut parts = Vec::new();
    if p["protected"] == true {
        parts.push("protected (admin)".to_owned());
    }
    if let Some(r) = p["require"].as_object() {
        let metric = r.get("metric").map(text).unwrap_or_default();
        let mut gate = format!("gate: {metric}");
        if let Some(min) = r.get("min").and_then(Value::as_f64) {
            gate.push_str(&format!(" mean ≥ {min}"));
        }
        if let Some(n) = r.get("min_records").and_then(Value::as_u64) {
            gate.push_str(&format!(", ≥ {n} records"));
        }
        if let Some(w) = r.get("window").and_then(Value::as_str) {
            gate.push_str(&format!(" in {w}"));
        }
        if let Some(env) = r.get("environment").and_then(Value::as_object) {
            let pairs: Vec<String> = env
                .iter()
                .map(|(k, v)| format!("{k}={}", text(v)))
                .collect();
            gate.push_str(&format!(" ({})", pairs.join(", ")));
        }
        if r.get("not_worse_than_current") == Some(&Value::Bool(true)) {
            let tol = r.get("tolerance").and_then(Value::as_f64).unwrap_or(0.0);
            gate.push_str(&format!(", not worse than current − {tol}"));
        }
        parts.push(gate);
    }
    if parts.is_empty() {
        "none".into()
    } else {
        parts.join("; ")
    }
}

/// `GET /ui/signatures/{signature}/aliases/{alias}/history`: the alias's history, newest first
/// (`GET …/aliases/{alias}/history`, 50 a page).
pub async fn history(
    State(ui): State<Ui>,
    headers: HeaderMap,
    uri: Uri,
    Path((signature, alias)): Path<(String, String)>,
    Query(params): Query<Params>,
) -> Response {
    let (ctx, nav) = match begin(&ui, &headers, &uri, param(&params, "project")).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let p = nav.project.as_str();
    let api_uri = format!(
        "/signatures/{}/aliases/{}/history{}",
        enc(&signature),
        enc(&alias),
        query(&[
            ("project", Some(p)),
            ("limit", Some("50")),
            ("cursor", param(&params, "cursor"))
        ])
    );
    let listing = match ui.api.get(&api_uri, ctx.token()).await {
        Ok(v) => v,
        Err(e) => return layout::error_page(&ctx, &nav, &e),
    };
    let empty = Vec::new();
    let entries = listing["entries"].as_array().unwrap_or(&empty);
    let sig_enc = enc(&signature);
    let body = html! {
        h1 { "History of " span.alias { (alias) } " · " a href=(url(&signature, p)) { span.sig { (signature) } } }
        @if entries.is_empty() { p.empty { "Nothing has happened to this alias yet." } }
        table.list id="alias-history" {
            thead { tr { th { "Time" } th { "Action" } th { "From" } th { "To" } th { "By" } th { "Gate" } th { "Reason" } } }
            tbody {
                @for e in entries {
                    tr data-action=(text(&e["action"])) {
                        td { (layout::when(&e["at"])) }
                        td { (text(&e["action"])) }
                        td { (text(&e["from_version"])) }
                        td { (text(&e["to_version"])) }
                        td { (text(&e["by"])) }
                        td.gate { (gate_summary(&e["gate"])) }
                        td { (text(&e["override_reason"])) }
                    }
                }
            }
        }
        @if let Some(next) = listing["next_cursor"].as_str() {
            p.pager { a rel="next" href={ "/ui/signatures/" (sig_enc) "/aliases/" (enc(&alias)) "/history" (query(&[("project", Some(p)), ("cursor", Some(next))])) } { "Older →" } }
        }
    };
    let title = format!("{signature} · {alias} history");
    layout::respond(
        &ctx,
        StatusCode::OK,
        layout::page(&ctx, &nav, &title, None, body),
    )
}

/// A gate's evaluation in a few words: what failed, or passed with the measured mean.
fn gate_summary(gate: &Value) -> String {
    if !gate.is_object() {
        return String::new();
    }
    if let Some(failed) = gate["failed"].as_str() {
        return format!("failed: {failed}");
    }
    let mean = gate["mean"]
        .as_f64()
        .map_or("no mean".to_owned(), |m| format!("mean {m:.3}"));
    format!(
        "passed: {} {mean} over {} records",
        text(&gate["metric"]),
        gate["records"].as_u64().unwrap_or(0)
    )
}

/// The signature's trend chart, as the API draws it (`image/svg+xml`).
pub async fn chart(
    State(ui): State<Ui>,
    headers: HeaderMap,
    Path(signature): Path<String>,
    Query(params): Query<Params>,
) -> Response {
    let ctx = Ctx::of(&ui, &headers);
    let uri = format!(
        "/signatures/{}/trends.svg{}",
        enc(&signature),
        query(&[
            ("project", param(&params, "project")),
            ("days", param(&params, "days"))
        ])
    );
    super::program::svg(&ui, &ctx, &uri).await
}

/// Runs a form's API call; on success back to the page with a notice, on failure the page again
/// with the API's error and status.
async fn act(
    ui: &Ui,
    req: (&HeaderMap, &Uri),
    signature: &str,
    form: &Params,
    call: Call,
    done: impl FnOnce(&Value) -> Vec<(&'static str, String)>,
) -> Response {
    match submit(ui, req, form, param(form, "project"), call).await {
        Err(r) => r,
        Ok(Submitted::Done { ctx, nav, answer }) => {
            let extra = done(&answer);
            let mut pairs: Vec<(&str, Option<&str>)> = vec![("project", Some(&nav.project))];
            pairs.extend(extra.iter().map(|(k, v)| (*k, Some(v.as_str()))));
            let to = format!("/ui/signatures/{}{}", enc(signature), query(&pairs));
            layout::see_other(&ctx, &to)
        }
        Ok(Submitted::Refused { ctx, nav, error }) => {
            let status = error.status;
            let flash = Flash::Failed(error);
            render(ui, &ctx, &nav, signature, None, status, Some(&flash)).await
        }
    }
}

/// `POST /ui/signatures/{signature}/alias`: `alias`, `version`, `expected_version` (empty: the
/// alias must not exist yet) → `PUT /signatures/{signature}/aliases/{alias}`.
pub async fn move_alias(
    State(ui): State<Ui>,
    headers: HeaderMap,
    uri: Uri,
    Path(signature): Path<String>,
    Form(form): Form<Params>,
) -> Response {
    let alias = form.get("alias").cloned().unwrap_or_default();
    let version = form.get("version").cloned().unwrap_or_default();
    let mut body = json!({ "version": version.trim() });
    if let Some(reason) = form.get("override_reason").filter(|r| !r.trim().is_empty()) {
        body["override"] = json!({ "reason": reason });
    }
    if let Some(expected) = form.get("expected_version") {
        body["expected_version"] = if expected.is_empty() {
            Value::Null
        } else {
            Value::String(expected.clone())
        };
    }
    let api_uri = format!(
        "/signatures/{}/aliases/{}{}",
        enc(&signature),
        enc(&alias),
        query(&[("project", param(&form, "project"))])
    );
    act(
        &ui,
        (&headers, &uri),
        &signature,
        &form,
        Call {
            method: Method::PUT,
            uri: api_uri,
            body: Some(body),
        },
        |a| {
            vec![
                ("done", "moved".into()),
                ("alias", text(&a["alias"])),
                ("version", text(&a["version"])),
            ]
        },
    )
    .await
}

/// `POST /ui/signatures/{signature}/alias/remove`: `alias` → `DELETE …/aliases/{alias}`.
pub async fn remove_alias(
    State(ui): State<Ui>,
    headers: HeaderMap,
    uri: Uri,
    Path(signature): Path<String>,
    Form(form): Form<Params>,
) -> Response {
    let alias = form.get("alias").cloned().unwrap_or_default();
    let api_uri = format!(
        "/signatures/{}/aliases/{}{}",
        enc(&signature),
        enc(&alias),
        query(&[("project", param(&form, "project"))])
    );
    act(
        &ui,
        (&headers, &uri),
        &signature,
        &form,
        Call {
            method: Method::DELETE,
            uri: api_uri,
            body: None,
        },
        move |_| vec![("done", "removed".into()), ("alias", alias)],
    )
    .await
}

/// `POST /ui/signatures/{signature}/rollback`: `to_version` → `POST …/rollback`.
pub async fn rollback(
    State(ui): State<Ui>,
    headers: HeaderMap,
    uri: Uri,
    Path(signature): Path<String>,
    Form(form): Form<Params>,
) -> Response {
    let to = form.get("to_version").cloned().unwrap_or_default();
    let api_uri = format!(
        "/signatures/{}/rollback{}",
        enc(&signature),
        query(&[("project", param(&form, "project"))])
    );
    act(
        &ui,
        (&headers, &uri),
        &signature,
        &form,
        Call {
            method: Method::POST,
            uri: api_uri,
            body: Some(json!({ "to_version": to })),
        },
        |a| {
            vec![
                ("done", "rolled_back".into()),
                ("version", text(&a["version"])),
            ]
        },
    )
    .await
}

/// `POST /ui/programs/{id}/delete` from the versions table: `DELETE /programs/{id}`
/// (`force=true` also removes the aliases pointing at it; without it the API refuses an alias
/// target with `409`).
pub async fn delete_version(
    ui: &Ui,
    headers: &HeaderMap,
    uri: &Uri,
    id: &str,
    form: &Params,
) -> Response {
    let signature = form.get("signature").cloned().unwrap_or_default();
    let version = form.get("version").cloned().unwrap_or_default();
    let force = param(form, "force") == Some("true");
    let api_uri = format!(
        "/programs/{}{}",
        enc(id),
        query(&[("force", force.then_some("true"))])
    );
    act(
        ui,
        (headers, uri),
        &signature,
        form,
        Call {
            method: Method::DELETE,
            uri: api_uri,
            body: None,
        },
        move |_| vec![("done", "deleted".into()), ("version", version)],
    )
    .await
}
