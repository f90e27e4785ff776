//! Versions, aliases, rollback, delete and metadata updates.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use dspy_storage_core::domain::{format_time, AliasName, Version};
use dspy_storage_core::storage::registry::{MetadataPatch, SignatureOrder};
use serde::Deserialize;
use serde_json::{json, Value};

use dspy_storage_core::access::Principal;
use dspy_storage_core::storage::LoadedProgram;

use super::programs::{exact_bytes, loaded, program_id, ProgramView};
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::extract::{parse_json, read_body, signature, Params};
use crate::AppState;

/// `GET /signatures?project=&sort=name|updated&limit=&cursor=`
pub async fn list_signatures(
    State(state): State<AppState>,
    Caller(who): Caller,
    params: Params,
) -> ApiResult<Response> {
    let project = params.project()?;
    let order = params
        .get("sort")
        .map(SignatureOrder::parse)
        .transpose()?
        .unwrap_or_default();
    let listing = state
        .storage
        .list_signatures(
            &who,
            &project,
            order,
            params.usize("limit")?,
            params.get("cursor"),
        )
        .await?;
    Ok(Json(json!({
        "project": project,
        "signatures": listing.items,
        "next_cursor": listing.next_cursor,
    }))
    .into_response())
}

/// `GET /projects` → the projects the caller may see.
pub async fn list_projects(
    State(state): State<AppState>,
    Caller(who): Caller,
) -> ApiResult<Response> {
    let projects = state.storage.list_projects(&who).await?;
    Ok(Json(json!({ "projects": projects })).into_response())
}

fn alias(raw: &str) -> ApiResult<AliasName> {
    AliasName::parse(raw).map_err(ApiError::from)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AliasBody {
    version: String,
    /// Absent: unconditional. A version: the alias must point there. `null`: must not exist.
    #[serde(default, deserialize_with = "some_option")]
    expected_version: Option<Option<String>>,
    /// An admin's override of a failed gate: `{"reason": "..."}`.
    #[serde(default, rename = "override")]
    override_: Option<Value>,
}

fn some_option<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

/// `PUT /signatures/{signature}/aliases/{alias}` body `{"version", "expected_version"?}`
pub async fn put_alias(
    State(state): State<AppState>,
    Caller(who): Caller,
    Path((sig, name)): Path<(String, String)>,
    params: Params,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    let (signature, alias, project) = (signature(&sig)?, alias(&name)?, params.project()?);
    let bytes = read_body(&headers, body, state.max_body_bytes).await?;
    let body: AliasBody = parse_json(&bytes)?;
    let version = Version::parse(&body.version)?;
    let expected = body
        .expected_version
        .map(|e| e.as_deref().map(Version::parse).transpose())
        .transpose()
        .map_err(|e| ApiError::from(e).field("expected_version"))?;
    let override_reason = body
        .override_
        .as_ref()
        .map(dspy_storage_core::model::policy::parse_override)
        .transpose()?;
    let moved = state
        .storage
        .move_alias(
            &who,
            &project,
            &signature,
            &alias,
            &version,
            expected,
            override_reason,
        )
        .await?;
    let target = moved.target;
    let mut answer = json!({
        "signature": signature,
        "project": project,
        "alias": alias,
        "version": target.version,
        "id": target.id,
        "updated_at": format_time(&target.updated_at),
    });
    if let Some(entry) = moved.entry {
        answer["history"] = json!(entry);
    }
    Ok(Json(answer).into_response())
}

/// `GET /signatures/{signature}/aliases/{alias}/policy`
pub async fn get_policy(
    State(state): State<AppState>,
    Caller(who): Caller,
    Path((sig, name)): Path<(String, String)>,
    params: Params,
) -> ApiResult<Response> {
    let (signature, alias, project) = (signature(&sig)?, alias(&name)?, params.project()?);
    let policy = state
        .storage
        .get_alias_policy(&who, &project, &signature, &alias)
        .await?;
    Ok(Json(policy).into_response())
}

/// `PUT /signatures/{signature}/aliases/{alias}/policy` (admin) body `{"protected"?, "require"?}`
pub async fn put_policy(
    State(state): State<AppState>,
    Caller(who): Caller,
    Path((sig, name)): Path<(String, String)>,
    params: Params,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    let (signature, alias, project) = (signature(&sig)?, alias(&name)?, params.project()?);
    let bytes = read_body(&headers, body, state.max_body_bytes).await?;
    let value: Value = parse_json(&bytes)?;
    let policy = dspy_storage_core::model::policy::parse_policy(&value)?;
    let record = state
        .storage
        .set_alias_policy(&who, &project, &signature, &alias, policy)
        .await?;
    Ok(Json(record).into_response())
}

/// `DELETE /signatures/{signature}/aliases/{alias}/policy` (admin) → 204
pub async fn delete_policy(
    State(state): State<AppState>,
    Caller(who): Caller,
    Path((sig, name)): Path<(String, String)>,
    params: Params,
) -> ApiResult<StatusCode> {
    let (signature, alias, project) = (signature(&sig)?, alias(&name)?, params.project()?);
    state
        .storage
        .delete_alias_policy(&who, &project, &signature, &alias)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /signatures/{signature}/aliases/{alias}/history?project=&limit=&cursor=`
pub async fn alias_history(
    State(state): State<AppState>,
    Caller(who): Caller,
    Path((sig, name)): Path<(String, String)>,
    params: Params,
) -> ApiResult<Response> {
    let (signature, alias, project) = (signature(&sig)?, alias(&name)?, params.project()?);
    let listing = state
        .storage
        .alias_history(
            &who,
            &project,
            &signature,
            &alias,
            params.usize("limit")?,
            params.get("cursor"),
        )
        .await?;
    Ok(Json(json!({
        "signature": signature,
        "project": project,
        "alias": alias,
        "entries": listing.items,
        "next_cursor": listing.next_cursor,
    }))
    .into_response())
}

async fn by_alias(
    state: &AppState,
    who: &Principal,
    sig: &str,
    name: &str,
    params: &Params,
) -> ApiResult<LoadedProgram> {
    let (signature, alias, project) = (signature(sig)?, alias(name)?, params.project()?);
    Ok(state
        .storage
        .get_alias(who, &project, &signature, &alias)
        .await?)
}

/// `GET /signatures/{signature}/aliases/{alias}` → the program, as `GET /programs/{id}`
pub async fn get_alias(
    State(state): State<AppState>,
    Caller(who): Caller,
    Path((sig, name)): Path<(String, String)>,
    params: Params,
) -> ApiResult<Response> {
    Ok(loaded(&by_alias(&state, &who, &sig, &name, &params).await?))
}

/// `GET /signatures/{signature}/aliases/{alias}/program` → exactly the stored bytes
pub async fn get_alias_bytes(
    State(state): State<AppState>,
    Caller(who): Caller,
    Path((sig, name)): Path<(String, String)>,
    params: Params,
    headers: HeaderMap,
) -> ApiResult<Response> {
    Ok(exact_bytes(
        &by_alias(&state, &who, &sig, &name, &params).await?,
        &headers,
    ))
}

/// `DELETE /signatures/{signature}/aliases/{alias}` → 204
pub async fn delete_alias(
    State(state): State<AppState>,
    Caller(who): Caller,
    Path((sig, name)): Path<(String, String)>,
    params: Params,
) -> ApiResult<StatusCode> {
    let (signature, alias, project) = (signature(&sig)?, alias(&name)?, params.project()?);
    state
        .storage
        .delete_alias(&who, &project, &signature, &alias)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RollbackBody {
    to_version: String,
}

/// `POST /signatures/{signature}/rollback` body `{"to_version"}` → 201
pub async fn rollback(
    State(state): State<AppState>,
    Caller(who): Caller,
    Path(sig): Path<String>,
    params: Params,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    let (signature, project) = (signature(&sig)?, params.project()?);
    let bytes = read_body(&headers, body, state.max_body_bytes).await?;
    let body: RollbackBody = parse_json(&bytes)?;
    let to = Version::parse(&body.to_version).map_err(|e| ApiError::from(e).field("to_version"))?;
    let stored = state
        .storage
        .rollback(&who, &project, &signature, &to)
        .await?;
    Ok((StatusCode::CREATED, Json(stored)).into_response())
}

/// `DELETE /programs/{id}?force=true` → 204
pub async fn delete_program(
    State(state): State<AppState>,
    Caller(who): Caller,
    Path(id): Path<String>,
    params: Params,
) -> ApiResult<StatusCode> {
    let force = params.bool("force")?;
    let id = program_id(&id)?;
    state.storage.delete_program(&who, &id, force).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `PATCH /programs/{id}/metadata` → the new metadata view
pub async fn patch_metadata(
    State(state): State<AppState>,
    Caller(who): Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    let id = program_id(&id)?;
    let bytes = read_body(&headers, body, state.max_body_bytes).await?;
    let value: Value = parse_json(&bytes)?;
    if !value.is_object() {
        return Err(ApiError::bad_request("the body must be a JSON object"));
    }
    let patch: MetadataPatch = serde_json::from_value(value)
        .map_err(|e| ApiError::bad_request(format!("invalid metadata patch: {e}")))?;
    let record = state.storage.update_metadata(&who, &id, patch).await?;
    Ok(Json(ProgramView::new(&record, None)).into_response())
}
