//! Backup and restore (the backup function; also run daily by a schedule).

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use dspy_storage_core::backup::{self, BackupRun, Manifest, RestoreOptions};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::auth::Caller;
use crate::error::ApiResult;
use crate::extract::json_body_or_default;
use crate::AppState;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    name: Option<String>,
}

/// The `201` answer of a finished backup.
pub fn created_view(m: &Manifest) -> Value {
    json!({
        "backup_id": m.backup_id,
        "backup_name": m.name,
        "status": "complete",
        "size": m.size,
        "programs_count": m.counts.programs,
        "metrics_count": m.counts.metrics,
        "created_at": m.created_at,
        "finished_at": m.finished_at,
        "counts": m.counts,
        "skipped": m.skipped,
    })
}

/// `POST /backups` body `{"name"?}` (or no body) → `201` with the new backup's summary.
pub async fn create(
    State(state): State<AppState>,
    Caller(who): Caller,
    lambda: Option<axum::Extension<lambda_http::Context>>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    let req: CreateBody = json_body_or_default(&headers, body, state.max_body_bytes).await?;
    // In Lambda the backup stops a minute before the invocation's deadline.
    let deadline = lambda.map(|c| crate::jobs::stop_before(c.0.deadline()));
    match crate::jobs::run_backup(&state, &who, req.name, deadline).await? {
        BackupRun::Finished(m) => Ok((StatusCode::CREATED, Json(created_view(&m))).into_response()),
        BackupRun::Suspended { name, pass } => Ok((
            StatusCode::ACCEPTED,
            Json(json!({"backup_name": name, "status": "in_progress", "pass": pass})),
        )
            .into_response()),
    }
}

/// `GET /backups` → `{"backups": [...]}`, newest first.
pub async fn list(State(state): State<AppState>, Caller(who): Caller) -> ApiResult<Response> {
    let backups = backup::list_backups(&who, &state.backup_location()).await?;
    Ok(Json(json!({ "backups": backups })).into_response())
}

/// `GET /backups/{name}` → the manifest.
pub async fn manifest(
    State(state): State<AppState>,
    Caller(who): Caller,
    Path(name): Path<String>,
) -> ApiResult<Response> {
    let m = backup::get_manifest(&who, &state.backup_location(), &name).await?;
    Ok(Json(m).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RestoreBody {
    #[serde(default = "yes")]
    verify_compatibility: bool,
}

fn yes() -> bool {
    true
}

impl Default for RestoreBody {
    fn default() -> Self {
        RestoreBody {
            verify_compatibility: yes(),
        }
    }
}

/// `POST /backups/{name}/restore` body `{"verify_compatibility": true}` → the restore report.
pub async fn restore(
    State(state): State<AppState>,
    Caller(who): Caller,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    let req: RestoreBody = json_body_or_default(&headers, body, state.max_body_bytes).await?;
    let options = RestoreOptions {
        verify_compatibility: req.verify_compatibility,
        progress: None,
    };
    let report = backup::restore(
        &who,
        &state.storage,
        &state.backup_location(),
        &name,
        &options,
    )
    .await?;
    Ok(Json(report).into_response())
}
