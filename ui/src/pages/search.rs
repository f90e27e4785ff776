//! `/ui/search?q=`: the query language (`GET /search`), a syntax error shown at its position,
//! results with their summary and relevance, paged.

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::Response;
use maud::{html, Markup};

use super::{begin, param, Params};
use crate::layout::{self, enc, perf, query, text, Flash};
use crate::Ui;

/// The character position an error message of the query parser names (`… at position 12: …`).
pub fn error_position(message: &str) -> Option<usize> {
    let rest = &message[message.find("position ")? + "position ".len()..];
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

fn caret(q: &str, pos: usize) -> Markup {
    let before: String = q.chars().take(pos).collect();
    let at: String = q.chars().skip(pos).take(1).collect();
    let after: String = q.chars().skip(pos + 1).collect();
    html! {
        pre.caret { (before) mark { @if at.is_empty() { " " } @else { (at) } } (after) }
    }
}

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
    let p = nav.project.as_str();
    let q = param(&params, "q");
    let cursor = param(&params, "cursor");
    let (answer, status, flash) = match q {
        None => (None, StatusCode::OK, None),
        Some(q) => {
            let api_uri = format!(
                "/search{}",
                query(&[
                    ("q", Some(q)),
                    ("project", Some(p)),
                    ("limit", Some("20")),
                    ("cursor", cursor)
                ])
            );
            match ui.api.get(&api_uri, ctx.token()).await {
                Ok(v) => (Some(v), StatusCode::OK, None),
                Err(e) if e.status == StatusCode::UNAUTHORIZED && ctx.sign_in => {
                    return layout::to_login(&ctx, None)
                }
                Err(e) => (None, e.status, Some(e)),
            }
        }
    };
    let empty = Vec::new();
    let body = html! {
        h1 { "Search" }
        form id="search" method="get" action="/ui/search" {
            input type="hidden" name="project" value=(p);
            input type="search" name="q" size="60" value=(q.unwrap_or_default()) placeholder="performance>0.8 method:miprov2 tag:production created:last_week" aria-label="query";
            button type="submit" { "Search" }
        }
        p.help { "Terms: " code { "field:value" } " (" code { "*" } " wildcards), " code { "field>n" } ", " code { "field<=n" } ", " code { "field!=v" } ", " code { "created:today|yesterday|last_week|last_month|30d" } "; other words are free text, each the start of a word of the program, in any case (" code { "class" } " finds ClassifyText). Fields: signature, version, method, performance, tag, environment, team, description, status, id, created, updated, meta.<key>." }
        @if let Some(e) = &flash {
            @if let (Some(pos), Some(q)) = (error_position(&e.message), q) {
                div.query-error { (caret(q, pos)) }
            }
        }
        @if let Some(a) = &answer {
            @let results = a["results"].as_array().unwrap_or(&empty);
            @if results.is_empty() { p.empty { "No program matches." } }
            @else {
                table.list id="results" {
                    thead { tr { th { "Program" } th { "Performance" } th { "Relevance" } th { "Status" } th { "Summary" } th { "Created" } } }
                    tbody { @for r in results {
                        tr {
                            td { a href={ "/ui/programs/" (enc(r["id"].as_str().unwrap_or_default())) } { (text(&r["signature"])) " " (text(&r["version"])) } }
                            td.num { (perf(&r["performance"])) }
                            td.num { (perf(&r["relevance_score"])) }
                            td { (text(&r["status"])) }
                            td { (text(&r["summary"])) }
                            td { (layout::when(&r["created_at"])) }
                        }
                    } }
                }
            }
            @if let Some(next) = a["next_cursor"].as_str() {
                p.pager { a rel="next" href={ "/ui/search" (query(&[("project", Some(p)), ("q", q), ("cursor", Some(next))])) } { "Next results →" } }
            }
        }
    };
    let flash = flash.map(Flash::Failed);
    layout::respond(
        &ctx,
        status,
        layout::page(&ctx, &nav, "Search", flash.as_ref(), body),
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_position_is_read_from_the_message() {
        assert_eq!(
            super::error_position("query syntax error at position 12: expected a value"),
            Some(12)
        );
        assert_eq!(super::error_position("no position"), None);
    }
}
