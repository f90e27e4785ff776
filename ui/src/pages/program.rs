//! `/ui/programs/{id}`: a program's metadata (tags editable), status with archive and restore,
//! size and SHA-256 (the API verifies the bytes before answering), the prompt view (each
//! predictor's instructions, fields and demos), its metric history and trend chart, the exact
//! saved JSON to download, similar programs, and compatibility with another version.

use axum::body::Body;
use axum::extract::{Form, Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use dspy_storage_core::dspy::{parse_program, DspyProgram, ProgramFormat};
use maud::{html, Markup};
use serde_json::{json, Value};

use super::{begin, param, submit, Call, Params, Submitted};
use crate::api::ApiResult;
use crate::layout::{self, csrf_field, enc, json_view, perf, query, text, Flash, Nav};
use crate::session::Ctx;
use crate::Ui;

/// Metadata keys shown in the facts table rather than with the other metadata.
const SHOWN: [&str; 8] = [
    "signature",
    "version",
    "project",
    "optimization_method",
    "performance",
    "tags",
    "description",
    "environment",
];

pub async fn page(
    State(ui): State<Ui>,
    headers: HeaderMap,
    uri: Uri,
    Path(id): Path<String>,
    Query(params): Query<Params>,
) -> Response {
    let (ctx, nav) = match begin(&ui, &headers, &uri, param(&params, "project")).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let flash = match param(&params, "done") {
        Some("tags") => Some(Flash::Done("Tags saved.".into())),
        Some("archived") => Some(Flash::Done(
            "Archived: the program's blob is in cold storage.".into(),
        )),
        Some("restored") => Some(Flash::Done(
            "Restore requested: the program is active again once its blob is back.".into(),
        )),
        _ => None,
    };
    render(&ui, &ctx, nav, &id, &params, StatusCode::OK, flash.as_ref()).await
}

/// The program: loaded whole (verified against its SHA-256 by the API) while active; its
/// metadata alone while archived or restoring.
async fn load(ui: &Ui, ctx: &Ctx, id: &str) -> ApiResult<(Value, bool)> {
    match ui
        .api
        .get(&format!("/programs/{}", enc(id)), ctx.token())
        .await
    {
        Ok(v) => Ok((v, true)),
        Err(e) if e.code == "archived" => {
            let meta = ui
                .api
                .get(&format!("/programs/{}/metadata", enc(id)), ctx.token())
                .await?;
            Ok((meta, false))
        }
        Err(e) => Err(e),
    }
}

async fn render(
    ui: &Ui,
    ctx: &Ctx,
    mut nav: Nav,
    id: &str,
    params: &Params,
    status: StatusCode,
    flash: Option<&Flash>,
) -> Response {
    let (program, has_bytes) = match load(ui, ctx, id).await {
        Ok(v) => v,
        Err(e) => return layout::error_page(ctx, &nav, &e),
    };
    let project = text(&program["project"]);
    nav.project = project.clone();
    let signature = text(&program["signature"]);
    let version = text(&program["version"]);
    let id_enc = enc(id);
    let metrics_uri = format!(
        "/programs/{id_enc}/metrics{}",
        query(&[("limit", Some("50")), ("cursor", param(params, "cursor"))])
    );
    // Similar programs compare against every program of the signature: asked for on demand.
    let want_similar = param(params, "similar") == Some("1");
    let similar_uri = format!("/programs/{id_enc}/similar?limit=5");
    let with = param(params, "with");
    let (history, similar, compat) = tokio::join!(
        ui.api.get(&metrics_uri, ctx.token()),
        async {
            if want_similar {
                Some(ui.api.get(&similar_uri, ctx.token()).await)
            } else {
                None
            }
        },
        compatibility(ui, ctx, id, &signature, &project, with),
    );
    let meta = program["metadata"].as_object().cloned().unwrap_or_default();
    let others: serde_json::Map<String, Value> = meta
        .iter()
        .filter(|(k, _)| !SHOWN.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let tags: Vec<String> = meta
        .get("tags")
        .and_then(Value::as_array)
        .map(|a| a.iter().map(text).collect())
        .unwrap_or_default();
    let status_text = text(&program["status"]);
    let updated_at = text(&program["updated_at"]);
    let title = format!("{signature} {version}");
    let body = html! {
        h1 { a href=(super::signature::url(&signature, &project)) { (signature) } " " span.version { (version) } }
        section id="facts" {
            table.kv {
                tr { th { "Id" } td { code { (id) } } }
                tr { th { "Project" } td { (project) } }
                tr { th { "Status" } td { span class={ "status " (status_text) } { (status_text) } } }
                tr { th { "Performance" } td { (perf(&program["performance"])) } }
                tr { th { "Method" } td { (text(&meta.get("optimization_method").cloned().unwrap_or(Value::Null))) } }
                tr { th { "Description" } td { (text(&meta.get("description").cloned().unwrap_or(Value::Null))) } }
                tr { th { "Created" } td { (text(&program["created_at"])) } }
                tr { th { "Updated" } td { (updated_at) } }
                tr { th { "Previous version" } td { (text(&program["previous_version"])) } }
                tr { th { "Size" } td { (program["size"].as_u64().map(layout::bytes).unwrap_or_default()) } }
                tr { th { "SHA-256" } td {
                    code.sha { (text(&program["sha256"])) }
                    @if has_bytes { " " span.verified title="The stored bytes matched this checksum when this page was made" { "✓ verified" } }
                    @else { " " span.unverified { "not read (archived)" } }
                } }
                @if let Some(env) = meta.get("environment") { tr { th { "Environment" } td { (json_view(env)) } } }
            }
            @if !others.is_empty() {
                details { summary { "Other metadata (" (others.len()) ")" } (json_view(&Value::Object(others.clone()))) }
            }
        }
        section id="tags" {
            h2 { "Tags" }
            p { @for t in &tags {
                form.inline.tag-form method="post" action={ "/ui/programs/" (id_enc) "/tags" } {
                    (csrf_field(ctx))
                    input type="hidden" name="expected_updated_at" value=(updated_at);
                    input type="hidden" name="remove" value=(t);
                    span.tag { (t) } button.small type="submit" title={ "Remove tag " (t) } { "×" }
                }
                " "
            } }
            form.inline method="post" action={ "/ui/programs/" (id_enc) "/tags" } {
                (csrf_field(ctx))
                input type="hidden" name="expected_updated_at" value=(updated_at);
                label { "Add tags " input type="text" name="add" size="24" placeholder="comma,separated" required; }
                button type="submit" { "Add" }
            }
        }
        section id="actions" {
            h2 { "Actions" }
            @if has_bytes {
                a.button href={ "/ui/programs/" (id_enc) "/download" } download { "Download saved JSON" }
                " "
            }
            @if status_text == "active" {
                form.inline method="post" action={ "/ui/programs/" (id_enc) "/archive" } {
                    (csrf_field(ctx)) button type="submit" { "Archive (cold storage)" }
                }
            } @else {
                form.inline method="post" action={ "/ui/programs/" (id_enc) "/restore" } {
                    (csrf_field(ctx)) button type="submit" { "Restore" }
                }
            }
            " "
            form.inline method="post" action={ "/ui/programs/" (id_enc) "/delete" } {
                (csrf_field(ctx))
                input type="hidden" name="project" value=(project);
                input type="hidden" name="signature" value=(signature);
                input type="hidden" name="version" value=(version);
                label.small { input type="checkbox" name="force" value="true"; " with its aliases" }
                button.danger type="submit" { "Delete this version" }
            }
        }
        section id="prompt" {
            h2 { "Prompt" }
            @if has_bytes { (prompt_view(&program["program"])) } @else { p.empty { "The program is archived: restore it to read it." } }
        }
        section id="metrics" {
            h2 { "Metrics" }
            figure.chart {
                img src={ "/ui/programs/" (id_enc) "/trends.svg?days=90" } alt={ "Metric trends of " (title) " over 90 days" } width="900";
            }
            (history_view(&history, id))
        }
        section id="similar" {
            h2 { "Similar programs" }
            @match &similar {
                Some(found) => (similar_view(found)),
                None => form method="get" action={ "/ui/programs/" (id_enc) } {
                    input type="hidden" name="similar" value="1";
                    button type="submit" { "Find similar programs" }
                },
            }
        }
        section id="compatibility" {
            h2 { "Compatibility" }
            form.inline method="get" action={ "/ui/programs/" (id_enc) } {
                label { "Can it replace version " input type="text" name="with" size="10" value=(with.unwrap_or_default()) required; }
                button type="submit" { "Check" }
            }
            @if let Some(c) = compat { (compat_view(&c)) }
        }
    };
    layout::respond(ctx, status, layout::page(ctx, &nav, &title, flash, body))
}

async fn compatibility(
    ui: &Ui,
    ctx: &Ctx,
    id: &str,
    signature: &str,
    project: &str,
    with: Option<&str>,
) -> Option<ApiResult<Value>> {
    let with = with?;
    // The exact-bytes route names the version's program in a header (and reads no JSON).
    let other_id = match ui
        .api
        .ok(
            Method::GET,
            &format!(
                "/signatures/{}/versions/{}/program{}",
                enc(signature),
                enc(with),
                query(&[("project", Some(project))])
            ),
            ctx.token(),
            None,
        )
        .await
    {
        Ok(a) => a
            .headers
            .get("x-dspy-program-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        Err(e) => return Some(Err(e)),
    };
    let other_id = other_id?;
    Some(
        ui.api
            .get(
                &format!(
                    "/programs/{}/compatibility?with={}",
                    enc(id),
                    enc(&other_id)
                ),
                ctx.token(),
            )
            .await,
    )
}

fn compat_view(c: &ApiResult<Value>) -> Markup {
    match c {
        Err(e) => layout::flash_markup(&Flash::Failed(e.clone())),
        Ok(v) => html! {
            p.compat {
                @if v["compatible"].as_bool() == Some(true) { span.ok { "Compatible" } } @else { span.bad { "Not compatible" } }
            }
            @if let Some(d) = v["differences"].as_array() {
                @if !d.is_empty() { ul { @for x in d { li { (json_view(x)) } } } }
            }
        },
    }
}

/// Each predictor's instructions, fields and demos; a non-DSPy program as JSON.
fn prompt_view(program: &Value) -> Markup {
    match parse_program(program) {
        Some(p) if p.format != ProgramFormat::Other => predictors_view(&p),
        _ => html! {
            p.empty { "Not a DSPy program: its JSON." }
            pre.json { (serde_json::to_string_pretty(program).unwrap_or_default()) }
        },
    }
}

fn predictors_view(p: &DspyProgram) -> Markup {
    html! {
        @if let Some(class) = &p.class_name { p.meta { "Class " code { (class) } } }
        @for pred in &p.predictors {
            article.predictor {
                h3 { (pred.name) @if let Some(s) = &pred.signature { " " small { (s) } } }
                h4 { "Instructions" }
                pre.instructions { (pred.instructions) }
                h4 { "Fields" }
                @if !pred.fields_known { p.empty { "The program does not record its fields." } }
                @else {
                    table.list {
                        thead { tr { th { "Field" } th { "Role" } th { "Type" } th { "Prefix" } th { "Description" } } }
                        tbody { @for f in &pred.fields {
                            tr {
                                td { code { (f.name) } }
                                td { (f.role.as_deref().unwrap_or("—")) }
                                td { (f.ty.as_deref().unwrap_or("—")) }
                                td { (f.prefix.as_deref().unwrap_or("—")) }
                                td { (f.description.as_deref().unwrap_or("—")) }
                            }
                        } }
                    }
                }
                h4 { "Demos (" (pred.demos.len()) ")" }
                @for (i, d) in pred.demos.iter().enumerate() {
                    div.demo { span.demo-n { "#" (i + 1) } (json_view(d)) }
                }
            }
        }
    }
}

fn history_view(history: &ApiResult<Value>, id: &str) -> Markup {
    let h = match history {
        Err(e) => return layout::flash_markup(&Flash::Failed(e.clone())),
        Ok(h) => h,
    };
    let empty = Vec::new();
    let records = h["records"].as_array().unwrap_or(&empty);
    let mut names: Vec<&str> = records
        .iter()
        .filter_map(|r| r["metrics"].as_object())
        .flat_map(|m| m.keys().map(String::as_str))
        .collect();
    names.sort_unstable();
    names.dedup();
    html! {
        @if records.is_empty() { p.empty { "No metric record yet (" code { "POST /programs/" (id) "/metrics" } ")." } }
        @else {
            table.list id="history" {
                thead { tr { th { "Time" } @for n in &names { th { (n) } } th { "Environment" } } }
                tbody { @for r in records {
                    tr {
                        td { (layout::when(&r["timestamp"])) }
                        @for n in &names { td.num { (perf(&r["metrics"][*n])) } }
                        td { @if let Some(env) = r["environment"].as_object() {
                            @for (k, v) in env { span.env { (k) "=" (text(v)) } " " }
                        } }
                    }
                } }
            }
            @if let Some(next) = h["next_cursor"].as_str() {
                p.pager { a rel="next" href={ "/ui/programs/" (enc(id)) (query(&[("cursor", Some(next))])) } { "Older records →" } }
            }
        }
    }
}

fn similar_view(similar: &ApiResult<Value>) -> Markup {
    let s = match similar {
        Err(e) => return layout::flash_markup(&Flash::Failed(e.clone())),
        Ok(s) => s,
    };
    let empty = Vec::new();
    let results = s["results"].as_array().unwrap_or(&empty);
    html! {
        @if results.is_empty() { p.empty { "No similar program." } }
        @else {
            table.list {
                thead { tr { th { "Program" } th { "Similarity" } th { "Performance" } } }
                tbody { @for r in results {
                    tr {
                        td { a href={ "/ui/programs/" (enc(r["id"].as_str().unwrap_or_default())) } { (text(&r["signature"])) " " (text(&r["version"])) } }
                        td.num { (perf(&r["similarity"])) }
                        td.num { (perf(&r["performance"])) }
                    }
                } }
            }
        }
    }
}

/// Passes an SVG chart of the API through with its own content type and a CSP of its own.
pub(crate) async fn svg(ui: &Ui, ctx: &Ctx, uri: &str) -> Response {
    match ui.api.ok(Method::GET, uri, ctx.token(), None).await {
        Ok(a) => (
            [
                (
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("image/svg+xml; charset=utf-8"),
                ),
                (
                    header::CONTENT_SECURITY_POLICY,
                    HeaderValue::from_static("default-src 'none'; style-src 'unsafe-inline'"),
                ),
                (
                    header::X_CONTENT_TYPE_OPTIONS,
                    HeaderValue::from_static("nosniff"),
                ),
            ],
            a.body,
        )
            .into_response(),
        Err(e) => (e.status, format!("{}: {}", e.code, e.message)).into_response(),
    }
}

pub async fn chart(
    State(ui): State<Ui>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(params): Query<Params>,
) -> Response {
    let ctx = Ctx::of(&ui, &headers);
    let uri = format!(
        "/programs/{}/trends.svg{}",
        enc(&id),
        query(&[("days", param(&params, "days"))])
    );
    svg(&ui, &ctx, &uri).await
}

/// The program's saved JSON, exactly its stored bytes, as a download.
pub async fn download(
    State(ui): State<Ui>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let ctx = Ctx::of(&ui, &headers);
    let answer = match ui
        .api
        .ok(
            Method::GET,
            &format!("/programs/{}/program", enc(&id)),
            ctx.token(),
            None,
        )
        .await
    {
        Ok(a) => a,
        Err(e) => return (e.status, format!("{}: {}", e.code, e.message)).into_response(),
    };
    let name = |h: &str| {
        answer
            .headers
            .get(h)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("program")
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
                    c
                } else {
                    '_'
                }
            })
            .collect::<String>()
    };
    let filename = format!(
        "{}-{}.json",
        name("x-dspy-signature"),
        name("x-dspy-version")
    );
    let mut response = Response::new(Body::from(answer.body.clone()));
    let h = response.headers_mut();
    for (k, v) in answer.headers.iter() {
        if k.as_str().starts_with("x-dspy-") || k == header::ETAG {
            h.insert(k.clone(), v.clone());
        }
    }
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(
        header::CONTENT_DISPOSITION,
        HeaderValue::from_str(&format!("attachment; filename=\"{filename}\"")).expect("ascii"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

/// Runs a program form's API call; back to the page with a notice, or the page again with the
/// API's error and status.
async fn act(
    ui: &Ui,
    req: (&HeaderMap, &Uri),
    id: &str,
    form: &Params,
    call: Call,
    done: &str,
) -> Response {
    match submit(ui, req, form, None, call).await {
        Err(r) => r,
        Ok(Submitted::Done { ctx, .. }) => layout::see_other(
            &ctx,
            &format!("/ui/programs/{}{}", enc(id), query(&[("done", Some(done))])),
        ),
        Ok(Submitted::Refused { ctx, nav, error }) => {
            if load(ui, &ctx, id).await.is_err() {
                // The program cannot be shown to this caller: the action's own refusal is the
                // answer.
                return layout::error_page(&ctx, &nav, &error);
            }
            let status = error.status;
            let flash = Flash::Failed(error);
            render(ui, &ctx, nav, id, &Params::new(), status, Some(&flash)).await
        }
    }
}

/// `POST /ui/programs/{id}/tags`: `add` (comma-separated) and/or `remove`, with the
/// `expected_updated_at` the page was made with → `PATCH /programs/{id}/metadata`.
pub async fn tags(
    State(ui): State<Ui>,
    headers: HeaderMap,
    uri: Uri,
    Path(id): Path<String>,
    Form(form): Form<Params>,
) -> Response {
    let split = |name: &str| -> Vec<String> {
        param(&form, name)
            .map(|v| {
                v.split(',')
                    .map(str::trim)
                    .filter(|t| !t.is_empty())
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut body = json!({ "tags": { "add": split("add"), "remove": split("remove") } });
    if let Some(t) = param(&form, "expected_updated_at") {
        body["expected_updated_at"] = json!(t);
    }
    let call = Call {
        method: Method::PATCH,
        uri: format!("/programs/{}/metadata", enc(&id)),
        body: Some(body),
    };
    act(&ui, (&headers, &uri), &id, &form, call, "tags").await
}

/// `POST /ui/programs/{id}/archive` → `POST /programs/{id}/archive` (admin).
pub async fn archive(
    State(ui): State<Ui>,
    headers: HeaderMap,
    uri: Uri,
    Path(id): Path<String>,
    Form(form): Form<Params>,
) -> Response {
    lifecycle(&ui, (&headers, &uri), &id, &form, "archive", "archived").await
}

/// `POST /ui/programs/{id}/restore` → `POST /programs/{id}/restore` (admin).
pub async fn restore(
    State(ui): State<Ui>,
    headers: HeaderMap,
    uri: Uri,
    Path(id): Path<String>,
    Form(form): Form<Params>,
) -> Response {
    lifecycle(&ui, (&headers, &uri), &id, &form, "restore", "restored").await
}

async fn lifecycle(
    ui: &Ui,
    req: (&HeaderMap, &Uri),
    id: &str,
    form: &Params,
    action: &str,
    done: &str,
) -> Response {
    let call = Call {
        method: Method::POST,
        uri: format!("/programs/{}/{action}", enc(id)),
        body: None,
    };
    act(ui, req, id, form, call, done).await
}

/// `POST /ui/programs/{id}/delete`: back to the signature's page (see
/// [`super::signature::delete_version`]).
pub async fn delete(
    State(ui): State<Ui>,
    headers: HeaderMap,
    uri: Uri,
    Path(id): Path<String>,
    Form(form): Form<Params>,
) -> Response {
    super::signature::delete_version(&ui, &headers, &uri, &id, &form).await
}
