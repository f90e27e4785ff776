//! Reading DSPy programs: diff two versions, render a program's prompts, check compatibility.

use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use dspy_storage_core::domain::{ProgramId, VersionSelector};

use super::programs::program_id;
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::extract::{signature, Params};
use crate::AppState;

/// A required `latest`-or-semver query parameter.
fn selector(params: &Params, name: &str) -> ApiResult<VersionSelector> {
    let raw = params.get(name).ok_or_else(|| {
        ApiError::bad_request(format!(
            "query parameter {name} is required: a version (semver) or `latest`"
        ))
        .field(name)
    })?;
    VersionSelector::parse(raw).map_err(|e| {
        ApiError::bad_request(format!(
            "{name} must be a version (semver) or `latest`: {e}"
        ))
        .field(name)
    })
}

/// `GET /signatures/{signature}/diff?from=A&to=B&project=`
pub async fn diff(
    State(state): State<AppState>,
    Caller(who): Caller,
    Path(sig): Path<String>,
    params: Params,
) -> ApiResult<Response> {
    let signature = signature(&sig)?;
    let project = params.project()?;
    let from = selector(&params, "from")?;
    let to = selector(&params, "to")?;
    let diff = state
        .storage
        .diff_versions(&who, &project, &signature, &from, &to)
        .await?;
    Ok(Json(diff).into_response())
}

/// `GET /programs/{id}/prompt` (`text/markdown`)
pub async fn prompt(
    State(state): State<AppState>,
    Caller(who): Caller,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let id = program_id(&id)?;
    let markdown = state.storage.prompt(&who, &id).await?;
    Ok((
        [(header::CONTENT_TYPE, "text/markdown; charset=utf-8")],
        markdown,
    )
        .into_response())
}

/// `GET /programs/{id}/compatibility?with={other_id}`
pub async fn compatibility(
    State(state): State<AppState>,
    Caller(who): Caller,
    Path(id): Path<String>,
    params: Params,
) -> ApiResult<Response> {
    let id = program_id(&id)?;
    let other = match params.get("with") {
        None => {
            return Err(ApiError::bad_request(
                "query parameter with is required: the id of the program to compare with",
            )
            .field("with"))
        }
        Some(raw) => ProgramId::parse(raw).map_err(|_| {
            ApiError::bad_request(format!("with must be a program id (a UUID), not {raw:?}"))
                .field("with")
        })?,
    };
    let answer = state.storage.compatibility(&who, &id, &other).await?;
    Ok(Json(serde_json::json!({
        "id": id,
        "with": other,
        "compatible": answer.compatible,
        "differences": answer.differences,
    }))
    .into_response())
}
