//! `/ui/`: the signatures of a project, by name or most recently updated first, paged
//! (`GET /signatures?sort=`).

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::Response;
use maud::html;

use super::{begin, param, Params};
use crate::layout::{self, enc, perf, query, text};
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
    let sort = match param(&params, "sort") {
        Some("updated") => "updated",
        _ => "name",
    };
    let cursor = param(&params, "cursor");
    let api_uri = format!(
        "/signatures{}",
        query(&[
            ("project", Some(&nav.project)),
            ("sort", Some(sort)),
            ("limit", Some("50")),
            ("cursor", cursor),
        ])
    );
    let listing = match ui.api.get(&api_uri, ctx.token()).await {
        Ok(v) => v,
        Err(e) => return layout::error_page(&ctx, &nav, &e),
    };
    let empty = Vec::new();
    let rows = listing["signatures"].as_array().unwrap_or(&empty);
    let p = nav.project.as_str();
    let body = html! {
        h1 { "Signatures in " span.project { (p) } }
        p.sort {
            "Order: "
            @if sort == "name" { strong { "by name" } } @else {
                a href={ "/ui/" (query(&[("project", Some(p)), ("sort", Some("name"))])) } { "by name" }
            }
            " · "
            @if sort == "updated" { strong { "recently updated" } } @else {
                a href={ "/ui/" (query(&[("project", Some(p)), ("sort", Some("updated"))])) } { "recently updated" }
            }
        }
        @if rows.is_empty() && cursor.is_none() {
            p.empty { "No signature in this project yet: store a program with " code { "POST /programs" } " or " code { "dspy-storage store" } "." }
        } @else {
            table.list id="signatures" {
                thead { tr { th { "Signature" } th { "Latest" } th { "Best performance" } th { "Versions" } th { "Aliases" } th { "Last update" } } }
                tbody {
                    @for s in rows {
                        @let name = s["signature"].as_str().unwrap_or_default();
                        tr {
                            td { a href={ "/ui/signatures/" (enc(name)) (query(&[("project", Some(p))])) } { (name) } }
                            td { (text(&s["latest_version"])) }
                            td.num { (perf(&s["best_performance"])) }
                            td.num { (text(&s["versions"])) }
                            td {
                                @if let Some(aliases) = s["aliases"].as_object() {
                                    @for (alias, version) in aliases {
                                        span.alias { (alias) " → " (text(version)) } " "
                                    }
                                }
                            }
                            td { (layout::when(&s["updated_at"])) }
                        }
                    }
                }
            }
        }
        @if let Some(next) = listing["next_cursor"].as_str() {
            p.pager { a rel="next" href={ "/ui/" (query(&[("project", Some(p)), ("sort", Some(sort)), ("cursor", Some(next))])) } { "Next page →" } }
        }
    };
    layout::respond(
        &ctx,
        StatusCode::OK,
        layout::page(&ctx, &nav, "Signatures", None, body),
    )
}
