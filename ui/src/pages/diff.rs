//! `/ui/diff/{signature}?from=&to=`: two versions side by side, per predictor (rendered from
//! the diff the core computes, `GET /signatures/{signature}/diff`): instructions line by line
//! with the changed lines marked, demos added and removed, fields changed; JSON-pointer changes
//! for what lies outside the predictors, or for programs that are not DSPy programs.

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::Response;
use maud::{html, Markup};
use serde_json::Value;

use super::{begin, param, Params};
use crate::layout::{self, enc, json_view, query, text};
use crate::Ui;

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
    let from = param(&params, "from").unwrap_or("latest");
    let to = param(&params, "to").unwrap_or("latest");
    let api_uri = format!(
        "/signatures/{}/diff{}",
        enc(&signature),
        query(&[
            ("from", Some(from)),
            ("to", Some(to)),
            ("project", Some(&nav.project))
        ])
    );
    let d = match ui.api.get(&api_uri, ctx.token()).await {
        Ok(v) => v,
        Err(e) => return layout::error_page(&ctx, &nav, &e),
    };
    let (va, vb) = (text(&d["from"]["version"]), text(&d["to"]["version"]));
    let title = format!("{signature}: {va} → {vb}");
    let empty = Vec::new();
    let body = html! {
        h1 { "Diff of " a href=(super::signature::url(&signature, &nav.project)) { (signature) } }
        p.meta {
            a href={ "/ui/programs/" (enc(d["from"]["id"].as_str().unwrap_or_default())) } { (va) }
            " → "
            a href={ "/ui/programs/" (enc(d["to"]["id"].as_str().unwrap_or_default())) } { (vb) }
            " · compared as " strong { (text(&d["kind"])) }
            @if d["identical"].as_bool() == Some(true) { " · " strong.ok { "identical" } }
        }
        @if let Some(preds) = d["predictors"].as_array() {
            @for p in preds { (predictor(p, &va, &vb)) }
        }
        @let changes = d["changes"].as_array().unwrap_or(&empty);
        @if !changes.is_empty() {
            section.changes {
                h2 { @if d["predictors"].is_array() { "Other changes" } @else { "Changes" } }
                table.list id="pointer-changes" {
                    thead { tr { th { "Change" } th { "JSON pointer" } th { (va) } th { (vb) } } }
                    tbody { @for c in changes {
                        tr class={ "op-" (text(&c["op"])) } {
                            td { (text(&c["op"])) }
                            td { code { (text(&c["path"])) } }
                            td.del { @if !c["from"].is_null() { (json_view(&c["from"])) } }
                            td.add { @if !c["value"].is_null() { (json_view(&c["value"])) } }
                        }
                    } }
                }
            }
        }
    };
    layout::respond(
        &ctx,
        StatusCode::OK,
        layout::page(&ctx, &nav, &title, None, body),
    )
}

fn predictor(p: &Value, va: &str, vb: &str) -> Markup {
    let status = text(&p["status"]);
    let empty = Vec::new();
    html! {
        article.predictor data-predictor=(text(&p["name"])) {
            h2 { (text(&p["name"])) " " span class={ "badge " (status) } { (status) } }
            @if let Some(sig) = p.get("signature") {
                p { "Signature class: " del { (text(&sig["from"])) } " → " ins { (text(&sig["to"])) } }
            }
            @if let Some(unified) = p["instructions_diff"].as_str() {
                h3 { "Instructions" }
                (side_by_side(unified, va, vb))
            }
            @let fields = &p["fields"];
            @if fields.is_object() {
                h3 { "Fields" }
                ul.fields {
                    @for f in fields["added"].as_array().unwrap_or(&empty) { li.add { "added " code { (text(&f["name"])) } " " (json_view(f)) } }
                    @for f in fields["removed"].as_array().unwrap_or(&empty) { li.del { "removed " code { (text(&f["name"])) } " " (json_view(f)) } }
                    @for f in fields["changed"].as_array().unwrap_or(&empty) {
                        li.chg { "changed " code { (text(&f["name"])) }
                            div.pair { div.del { (json_view(&f["from"])) } div.add { (json_view(&f["to"])) } }
                        }
                    }
                    @if fields["reordered"].as_bool() == Some(true) { li { "the fields are in another order" } }
                }
            }
            @let demos = &p["demos"];
            @if demos.is_object() {
                h3 { "Demos" }
                @for d in demos["removed"].as_array().unwrap_or(&empty) {
                    div.demo.del { span.demo-n { "− #" (d["index"].as_u64().unwrap_or(0) + 1) " of " (va) } (json_view(&d["demo"])) }
                }
                @for d in demos["added"].as_array().unwrap_or(&empty) {
                    div.demo.add { span.demo-n { "+ #" (d["index"].as_u64().unwrap_or(0) + 1) " of " (vb) } (json_view(&d["demo"])) }
                }
            }
            @if status == "unchanged" { p.empty { "No change." } }
        }
    }
}

/// One row of a side-by-side view: the left line (A), the right line (B), or a hunk separator.
#[derive(Debug, PartialEq)]
pub enum Row {
    Hunk(String),
    Same(String),
    Changed(Option<String>, Option<String>),
}

/// Reads a unified diff into side-by-side rows: context lines on both sides, each run of
/// removed lines paired with the run of added lines that follows it.
pub fn rows(unified: &str) -> Vec<Row> {
    let mut out = Vec::new();
    let (mut dels, mut adds): (Vec<String>, Vec<String>) = (vec![], vec![]);
    fn flush(out: &mut Vec<Row>, dels: &mut Vec<String>, adds: &mut Vec<String>) {
        let n = dels.len().max(adds.len());
        let (mut d, mut a) = (dels.drain(..), adds.drain(..));
        for _ in 0..n {
            out.push(Row::Changed(d.next(), a.next()));
        }
    }
    for line in unified.lines() {
        if line.starts_with("---") || line.starts_with("+++") {
            continue;
        }
        if let Some(h) = line.strip_prefix("@@") {
            flush(&mut out, &mut dels, &mut adds);
            out.push(Row::Hunk(format!("@@{h}")));
        } else if let Some(l) = line.strip_prefix('-') {
            if !adds.is_empty() {
                flush(&mut out, &mut dels, &mut adds);
            }
            dels.push(l.to_owned());
        } else if let Some(l) = line.strip_prefix('+') {
            adds.push(l.to_owned());
        } else if line.starts_with('\\') {
            continue;
        } else {
            flush(&mut out, &mut dels, &mut adds);
            out.push(Row::Same(line.strip_prefix(' ').unwrap_or(line).to_owned()));
        }
    }
    flush(&mut out, &mut dels, &mut adds);
    out
}

fn side_by_side(unified: &str, va: &str, vb: &str) -> Markup {
    html! {
        table.sbs {
            thead { tr { th { (va) } th { (vb) } } }
            tbody { @for row in rows(unified) {
                @match row {
                    Row::Hunk(h) => tr.hunk { td colspan="2" { (h) } },
                    Row::Same(l) => tr { td { pre { (l) } } td { pre { (l) } } },
                    Row::Changed(a, b) => tr.changed {
                        td class=(if a.is_some() { "del" } else { "none" }) { pre { (a.unwrap_or_default()) } }
                        td class=(if b.is_some() { "add" } else { "none" }) { pre { (b.unwrap_or_default()) } }
                    },
                }
            } }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unified_diff_becomes_side_by_side_rows() {
        let u = "--- 1.0.0\n+++ 1.1.0\n@@ -1,3 +1,3 @@\n keep\n-old a\n-old b\n+new a\n tail\n";
        assert_eq!(
            rows(u),
            vec![
                Row::Hunk("@@ -1,3 +1,3 @@".into()),
                Row::Same("keep".into()),
                Row::Changed(Some("old a".into()), Some("new a".into())),
                Row::Changed(Some("old b".into()), None),
                Row::Same("tail".into()),
            ]
        );
    }
}
