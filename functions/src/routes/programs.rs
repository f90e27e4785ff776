//! Programs: store, load, metadata; version listing and version reads; health.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::Utc;
use dspy_storage_core::access::Principal;
use dspy_storage_core::blob::codec::sha256_hex;
use dspy_storage_core::domain::{format_time, NewMetadata, ProgramId, VersionSelector};
use dspy_storage_core::model::record::ProgramRecord;
use dspy_storage_core::storage::{Idempotency, LoadedProgram};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::extract::{parse_json, read_body, signature, Params};
use crate::AppState;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StoreBody<'a> {
    #[serde(borrow)]
    program: Option<&'a RawValue>,
    metadata: Option<Value>,
}

/// `POST /programs`
pub async fn store(
    State(state): State<AppState>,
    Caller(who): Caller,
    uri: Uri,
    params: Params,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    let bytes = read_body(&headers, body, state.max_body_bytes).await?;
    let parsed: StoreBody = parse_json(&bytes)?;
    let program = parsed.program.ok_or_else(|| {
        ApiError::bad_request("the body must have a \"program\" (any JSON value)").field("program")
    })?;
    let metadata = NewMetadata::parse(parsed.metadata.unwrap_or(Value::Null), Utc::now())?;
    let idempotency = match headers.get("idempotency-key") {
        None => None,
        Some(v) => {
            let key = v.to_str().map_err(|_| {
                ApiError::bad_request("Idempotency-Key must be printable ASCII")
                    .field("Idempotency-Key")
            })?;
            let mut request = format!("POST {}\n", uri.path()).into_bytes();
            request.extend_from_slice(&bytes);
            Some(Idempotency::parse(key, sha256_hex(&request))?)
        }
    };
    let import = params.bool("import_optimization")?;
    let (outcome, run_id) = if import {
        let (outcome, run) = state
            .storage
            .store_importing_run(&who, program, metadata, idempotency)
            .await?;
        (outcome, Some(run.id))
    } else {
        (
            state
                .storage
                .store(&who, program, metadata, idempotency)
                .await?,
            None,
        )
    };
    let mut response = match run_id {
        None => (StatusCode::CREATED, Json(&outcome.stored)).into_response(),
        Some(run_id) => {
            let mut body = serde_json::to_value(&outcome.stored).unwrap_or_default();
            body["optimization_run_id"] = Value::String(run_id.to_string());
            (StatusCode::CREATED, Json(body)).into_response()
        }
    };
    if outcome.replayed {
        response.headers_mut().insert(
            "idempotent-replayed",
            axum::http::HeaderValue::from_static("true"),
        );
    }
    Ok(response)
}

/// The metadata part of every program answer.
#[derive(Serialize)]
pub struct ProgramView<'a> {
    pub id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub program: Option<&'a RawValue>,
    pub metadata: &'a Map<String, Value>,
    pub signature: &'a str,
    pub version: String,
    pub project: &'a str,
    pub created_at: String,
    pub updated_at: String,
    pub size: u64,
    pub sha256: &'a str,
    pub status: dspy_storage_core::domain::ProgramStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub performance: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub previous_version: Option<String>,
}

impl<'a> ProgramView<'a> {
    pub fn new(record: &'a ProgramRecord, program: Option<&'a RawValue>) -> Self {
        ProgramView {
            id: record.id.to_string(),
            program,
            metadata: &record.metadata,
            signature: record.signature.as_str(),
            version: record.version.to_string(),
            project: record.project.as_str(),
            created_at: format_time(&record.created_at),
            updated_at: format_time(&record.updated_at),
            size: record.blob.size,
            sha256: &record.blob.sha256,
            status: record.status,
            performance: record.primary_score,
            previous_version: record.previous_version.as_ref().map(ToString::to_string),
        }
    }
}

pub(super) fn loaded(p: &LoadedProgram) -> Response {
    Json(ProgramView::new(&p.record, Some(&p.program))).into_response()
}

/// The `…/program` answer: exactly the stored program bytes (what the record's `sha256`
/// covers), the record's facts in headers, and `304` when `If-None-Match` names its ETag.
pub(super) fn exact_bytes(p: &LoadedProgram, request: &HeaderMap) -> Response {
    let r = &p.record;
    let etag = format!("\"{}\"", r.blob.sha256);
    let facts: [(&'static str, String); 8] = [
        ("etag", etag.clone()),
        ("x-dspy-program-id", r.id.to_string()),
        ("x-dspy-signature", r.signature.to_string()),
        ("x-dspy-version", r.version.to_string()),
        ("x-dspy-project", r.project.to_string()),
        ("x-dspy-status", status_name(r.status)),
        ("x-dspy-sha256", r.blob.sha256.clone()),
        ("x-dspy-created-at", format_time(&r.created_at)),
    ];
    let mut response = if if_none_match(request, &etag) {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        (
            [(header::CONTENT_TYPE, "application/json")],
            p.program.get().to_owned(),
        )
            .into_response()
    };
    for (name, value) in facts {
        if let Ok(v) = HeaderValue::from_str(&value) {
            response
                .headers_mut()
                .insert(header::HeaderName::from_static(name), v);
        }
    }
    response
}

/// `active` | `archived` | `restoring`, as in the JSON answers.
fn status_name(status: dspy_storage_core::domain::ProgramStatus) -> String {
    match serde_json::to_value(status) {
        Ok(Value::String(s)) => s,
        _ => String::new(),
    }
}

/// Whether `If-None-Match` (`*` or a list of entity tags, weak comparison) names `etag`.
fn if_none_match(request: &HeaderMap, etag: &str) -> bool {
    request
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .any(|tag| tag == "*" || tag.strip_prefix("W/").unwrap_or(tag) == etag)
}

pub(super) fn program_id(raw: &str) -> ApiResult<ProgramId> {
    // A malformed id can name no program: 404 like any unknown id.
    ProgramId::parse(raw).map_err(|_| ApiError::not_found(format!("no program with id {raw:?}")))
}

async fn by_id(state: &AppState, who: &Principal, id: &str) -> ApiResult<LoadedProgram> {
    let id = program_id(id)?;
    Ok(state.storage.get_program(who, &id).await?)
}

/// `GET /programs/{id}`
pub async fn get(
    State(state): State<AppState>,
    Caller(who): Caller,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    Ok(loaded(&by_id(&state, &who, &id).await?))
}

/// `GET /programs/{id}/program` → exactly the stored bytes (see [`exact_bytes`])
pub async fn get_bytes(
    State(state): State<AppState>,
    Caller(who): Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    Ok(exact_bytes(&by_id(&state, &who, &id).await?, &headers))
}

/// `GET /programs/{id}/metadata`
pub async fn get_metadata(
    State(state): State<AppState>,
    Caller(who): Caller,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let id = program_id(&id)?;
    let record = state.storage.get_record(&who, &id).await?;
    Ok(Json(ProgramView::new(&record, None)).into_response())
}

#[derive(Serialize)]
struct VersionEntry<'a> {
    version: String,
    id: String,
    created_at: String,
    performance: Option<f64>,
    size: u64,
    /// `null` for versions stored before claims carried it.
    optimization_method: Option<&'a str>,
    tags: &'a [String],
    aliases: &'a [String],
}

/// `GET /signatures/{signature}/versions?project=&limit=&cursor=`
pub async fn list_versions(
    State(state): State<AppState>,
    Caller(who): Caller,
    Path(sig): Path<String>,
    params: Params,
) -> ApiResult<Response> {
    let signature = signature(&sig)?;
    let project = params.project()?;
    let listing = state
        .storage
        .list_versions(
            &who,
            &project,
            &signature,
            params.usize("limit")?,
            params.get("cursor"),
        )
        .await?;
    let versions: Vec<VersionEntry> = listing
        .items
        .iter()
        .map(|c| VersionEntry {
            version: c.version.to_string(),
            id: c.id.to_string(),
            created_at: format_time(&c.created_at),
            performance: c.performance,
            size: c.size,
            optimization_method: c.optimization_method.as_deref(),
            tags: &c.tags,
            aliases: listing
                .aliases
                .get(&c.version.to_string())
                .map_or(&[][..], Vec::as_slice),
        })
        .collect();
    Ok(Json(serde_json::json!({
        "signature": signature,
        "project": project,
        "versions": versions,
        "aliases": listing
            .aliases
            .iter()
            .flat_map(|(version, names)| names.iter().map(move |n| (n.clone(), version.clone())))
            .collect::<std::collections::BTreeMap<String, String>>(),
        "next_cursor": listing.next_cursor,
    }))
    .into_response())
}

async fn by_version(
    state: &AppState,
    who: &Principal,
    sig: &str,
    version: &str,
    params: &Params,
) -> ApiResult<LoadedProgram> {
    let signature = signature(sig)?;
    let project = params.project()?;
    let selector = VersionSelector::parse(version)?;
    Ok(state
        .storage
        .get_version(who, &project, &signature, &selector)
        .await?)
}

/// `GET /signatures/{signature}/versions/{version}` (`latest` or a semver)
pub async fn get_version(
    State(state): State<AppState>,
    Caller(who): Caller,
    Path((sig, version)): Path<(String, String)>,
    params: Params,
) -> ApiResult<Response> {
    Ok(loaded(
        &by_version(&state, &who, &sig, &version, &params).await?,
    ))
}

/// `GET /signatures/{signature}/versions/{version}/program` → exactly the stored bytes
pub async fn get_version_bytes(
    State(state): State<AppState>,
    Caller(who): Caller,
    Path((sig, version)): Path<(String, String)>,
    params: Params,
    headers: HeaderMap,
) -> ApiResult<Response> {
    Ok(exact_bytes(
        &by_version(&state, &who, &sig, &version, &params).await?,
        &headers,
    ))
}

/// `GET /health`
pub async fn health(State(state): State<AppState>) -> Json<dspy_storage_core::storage::Health> {
    Json(state.storage.health())
}
