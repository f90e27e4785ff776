//! Retention and archive (the cleanup function): `POST /maintenance/cleanup`,
//! `POST /programs/{id}/archive`, `POST /programs/{id}/restore`, and the scheduled run.

use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use dspy_storage_core::domain::{parse_time, ProgramStatus};
use dspy_storage_core::retention::cleanup::CleanupOptions;
use dspy_storage_core::retention::PolicyInput;
use serde::Deserialize;

use super::programs::program_id;
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::extract::json_body_or_default;
use crate::AppState;

/// How long one HTTP cleanup call works before it answers a `next_cursor` (API Gateway gives an
/// integration 30 s).
pub const HTTP_BUDGET: Duration = Duration::from_secs(25);

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct CleanupBody {
    /// Default `true`: a call that does not say otherwise changes nothing.
    dry_run: Option<bool>,
    policy: Option<PolicyInput>,
    /// Evaluate the policy at this time ("what would next month's run do"); dry runs only when
    /// it is in the future.
    as_of: Option<String>,
    /// Continue a run that answered a `next_cursor`.
    cursor: Option<String>,
}

/// `POST /maintenance/cleanup` body `{"dry_run", "policy"?, "as_of"?, "cursor"?}`
pub async fn cleanup(
    State(state): State<AppState>,
    Caller(who): Caller,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    let parsed: CleanupBody = json_body_or_default(&headers, body, state.max_body_bytes).await?;
    let dry_run = parsed.dry_run.unwrap_or(true);
    let policy = parsed.policy.unwrap_or_default().resolve(&state.policy)?;
    let now = dspy_storage_core::domain::now();
    let as_of = match &parsed.as_of {
        Some(t) => {
            let t = parse_time("as_of", t)?;
            if !dry_run && t > now + chrono::Duration::minutes(1) {
                return Err(ApiError::bad_request(
                    "as_of in the future is only allowed with \"dry_run\": true",
                )
                .field("as_of"));
            }
            t
        }
        None => now,
    };
    let opts = CleanupOptions {
        as_of,
        cursor: parsed.cursor,
        deadline: Some(Instant::now() + HTTP_BUDGET),
        ..CleanupOptions::new(policy, dry_run)
    };
    let report = state.storage.cleanup(&who, &opts).await?;
    crate::jobs::log_cleanup("http", &report);
    Ok(Json(report).into_response())
}

/// `POST /programs/{id}/archive` → `200 {"id", "signature", "version", "status": "archived", "updated_at"}`
pub async fn archive(
    State(state): State<AppState>,
    Caller(who): Caller,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let id = program_id(&id)?;
    let change = state.storage.archive_program(&who, &id).await?;
    Ok(Json(change).into_response())
}

/// `POST /programs/{id}/restore` → `200` with status `active` when the program is readable
/// again, `202` with status `restoring` while the archive retrieves it.
pub async fn restore(
    State(state): State<AppState>,
    Caller(who): Caller,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let id = program_id(&id)?;
    let change = state.storage.restore_program(&who, &id).await?;
    let status = if change.status == ProgramStatus::Active {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    Ok((status, Json(change)).into_response())
}
