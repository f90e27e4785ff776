//! `/ui/monitoring`: the report's figures (`GET /report`: totals, recent activity, storage
//! health, top signatures, trends) and, on demand, the cleanup dry run's preview
//! (`POST /maintenance/cleanup` with `dry_run: true`: what the retention policy would archive or
//! delete, with reasons; it needs the admin role, like the API route).

use axum::extract::{Query, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::Response;
use maud::{html, Markup};
use serde_json::{json, Value};

use super::{begin, param, Params};
use crate::layout::{self, enc, json_view, query, text, Flash};
use crate::Ui;

pub async fn page(
    State(ui): State<Ui>,
    headers: HeaderMap,
    uri: Uri,
    Query(params): Query<Params>,
) -> Response {
    let (ctx, nav) = match begin(&ui, &headers, &uri, param(&params, "project")).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let report = match ui.api.get("/report", ctx.token()).await {
        Ok(v) => v,
        Err(e) => return layout::error_page(&ctx, &nav, &e),
    };
    let preview = if param(&params, "preview") == Some("cleanup") {
        Some(
            ui.api
                .json(
                    Method::POST,
                    "/maintenance/cleanup",
                    ctx.token(),
                    Some(&json!({ "dry_run": true })),
                )
                .await,
        )
    } else {
        None
    };
    let p = nav.project.as_str();
    let figures = ["total_programs", "storage_size", "signatures"];
    let body = html! {
        h1 { "Monitoring" }
        p.meta { "Over the projects you may see." }
        section id="figures" {
            dl.figures {
                @for f in figures {
                    div { dt { (f.replace('_', " ")) } dd {
                        @if f == "storage_size" { (report[f].as_u64().map(layout::bytes).unwrap_or_else(|| text(&report[f]))) }
                        @else { (text(&report[f])) }
                    } }
                }
            }
        }
        @for (key, title) in [("storage_health", "Storage health"), ("recent_activity", "Recent activity"), ("top_signatures", "Top signatures"), ("performance_trends", "Performance trends")] {
            @if !report[key].is_null() {
                section id=(key.replace('_', "-")) { h2 { (title) } (json_view(&report[key])) }
            }
        }
        section id="cleanup" {
            h2 { "Cleanup preview" }
            p { "What the retention policy would archive or delete now (a dry run: nothing changes). Needs the admin role." }
            form method="get" action="/ui/monitoring" {
                input type="hidden" name="project" value=(p);
                input type="hidden" name="preview" value="cleanup";
                button type="submit" { "Preview cleanup" }
            }
            @if let Some(pv) = &preview {
                @match pv {
                    Err(e) => (layout::flash_markup(&Flash::Failed(e.clone()))),
                    Ok(v) => (cleanup_view(v)),
                }
            }
        }
    };
    let status = match &preview {
        Some(Err(e)) if e.status == StatusCode::FORBIDDEN => StatusCode::FORBIDDEN,
        _ => StatusCode::OK,
    };
    layout::respond(
        &ctx,
        status,
        layout::page(&ctx, &nav, "Monitoring", None, body),
    )
}

fn cleanup_view(v: &Value) -> Markup {
    let empty = Vec::new();
    html! {
        p.meta { "As of " (text(&v["as_of"])) @if v["complete"].as_bool() == Some(false) { " · stopped at its time budget (more remain)" } }
        (json_view(&v["summary"]))
        @for (key, title) in [("archived", "Would archive"), ("deleted", "Would delete"), ("skipped", "Skipped")] {
            @let rows = v[key].as_array().unwrap_or(&empty);
            h3 { (title) " (" (rows.len()) ")" }
            @if !rows.is_empty() {
                table.list id={ "cleanup-" (key) } {
                    thead { tr { th { "Program" } th { "Reason" } } }
                    tbody { @for r in rows {
                        tr {
                            td { a href={ "/ui/programs/" (enc(r["id"].as_str().unwrap_or_default())) (query(&[])) } { (text(&r["signature"])) " " (text(&r["version"])) } }
                            td { (text(&r["reason"])) }
                        }
                    } }
                }
            }
        }
    }
}
