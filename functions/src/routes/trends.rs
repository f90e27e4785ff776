//! Performance tracking (the trend function): metric records, history, trends and charts,
//! optimization runs, the monitoring report. The logic is in the core (`metrics`, `trend`,
//! `chart`, `runs`, `report`).

use crate::auth::Caller;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use dspy_storage_core::domain::Signature;
use dspy_storage_core::tracking::chart;
use dspy_storage_core::tracking::report::TrendAnswer;
use dspy_storage_core::tracking::runs::{NewRun, OptimizationRun, RunFilter};
use serde_json::{json, Value};

use super::programs::program_id;
use crate::error::{ApiError, ApiResult};
use crate::extract::{json_body, signature, Params};
use crate::AppState;

fn days(params: &Params) -> ApiResult<Option<i64>> {
    params
        .get("days")
        .map(|v| {
            v.parse::<i64>()
                .map_err(|_| ApiError::bad_request("days must be a whole number").field("days"))
        })
        .transpose()
}

/// `POST /programs/{id}/metrics`
pub async fn record_metrics(
    State(state): State<AppState>,
    Caller(who): Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    let id = program_id(&id)?;
    let value: Value = json_body(&headers, body, state.max_body_bytes).await?;
    let recorded = state.storage.record_metrics(&who, &id, &value).await?;
    Ok((StatusCode::CREATED, Json(recorded)).into_response())
}

/// `GET /programs/{id}/metrics?from=&to=&limit=&cursor=`
pub async fn history(
    State(state): State<AppState>,
    Caller(who): Caller,
    Path(id): Path<String>,
    params: Params,
) -> ApiResult<Response> {
    let id = program_id(&id)?;
    let history = state
        .storage
        .metric_history(
            &who,
            &id,
            params.get("from"),
            params.get("to"),
            params.usize("limit")?,
            params.get("cursor"),
        )
        .await?;
    Ok(Json(history).into_response())
}

fn svg(body: String) -> Response {
    (
        [(header::CONTENT_TYPE, "image/svg+xml; charset=utf-8")],
        body,
    )
        .into_response()
}

fn subtitle(t: &TrendAnswer) -> String {
    format!(
        "last {} day(s), {} to {} UTC, {} record(s)",
        t.window.days,
        &t.window.from[..10],
        &t.window.to[..10],
        t.trends.records
    )
}

/// `GET /programs/{id}/trends?days=N`
pub async fn program_trends(
    State(state): State<AppState>,
    Caller(who): Caller,
    Path(id): Path<String>,
    params: Params,
) -> ApiResult<Response> {
    let id = program_id(&id)?;
    let t = state
        .storage
        .program_trends(&who, &id, days(&params)?)
        .await?;
    Ok(Json(json!({"program_id": id, "window": t.window, "records": t.trends.records, "metrics": t.trends.metrics, "daily": t.trends.daily})).into_response())
}

/// `GET /programs/{id}/trends.svg?days=N`
pub async fn program_chart(
    State(state): State<AppState>,
    Caller(who): Caller,
    Path(id): Path<String>,
    params: Params,
) -> ApiResult<Response> {
    let id = program_id(&id)?;
    let record = state.storage.get_record(&who, &id).await?;
    let t = state
        .storage
        .program_trends_of(&who, &record, days(&params)?)
        .await?;
    let title = format!("{} {} — program {}", record.signature, record.version, id);
    Ok(svg(chart::render(&title, &subtitle(&t), &t.trends)))
}

async fn signature_answer(
    state: &AppState,
    who: &dspy_storage_core::access::Principal,
    sig: &str,
    params: &Params,
) -> ApiResult<(Signature, TrendAnswer)> {
    let signature = signature(sig)?;
    let t = state
        .storage
        .signature_trends(who, &params.project()?, &signature, days(params)?)
        .await?;
    Ok((signature, t))
}

/// `GET /signatures/{signature}/trends?days=N&project=`
pub async fn signature_trends(
    State(state): State<AppState>,
    Caller(who): Caller,
    Path(sig): Path<String>,
    params: Params,
) -> ApiResult<Response> {
    let (signature, t) = signature_answer(&state, &who, &sig, &params).await?;
    Ok(Json(json!({"signature": signature, "window": t.window, "records": t.trends.records, "programs": t.programs, "metrics": t.trends.metrics, "daily": t.trends.daily})).into_response())
}

/// `GET /signatures/{signature}/trends.svg?days=N&project=`
pub async fn signature_chart(
    State(state): State<AppState>,
    Caller(who): Caller,
    Path(sig): Path<String>,
    params: Params,
) -> ApiResult<Response> {
    let (signature, t) = signature_answer(&state, &who, &sig, &params).await?;
    let title = format!(
        "{signature} — all versions ({} program(s))",
        t.programs.len()
    );
    Ok(svg(chart::render(&title, &subtitle(&t), &t.trends)))
}

/// `POST /optimization-runs`
pub async fn create_run(
    State(state): State<AppState>,
    Caller(who): Caller,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    let new: NewRun = json_body(&headers, body, state.max_body_bytes).await?;
    let run = OptimizationRun::from_request(new, chrono::Utc::now())?;
    let run = state.storage.create_run(&who, run).await?;
    Ok((StatusCode::CREATED, Json(json!({"id": run.id, "run": run}))).into_response())
}

/// `GET /optimization-runs/{id}`
pub async fn get_run(
    State(state): State<AppState>,
    Caller(who): Caller,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    Ok(Json(state.storage.get_run(&who, &id).await?).into_response())
}

/// `GET /optimization-runs?signature=&method=&project=&limit=&cursor=`
pub async fn list_runs(
    State(state): State<AppState>,
    Caller(who): Caller,
    params: Params,
) -> ApiResult<Response> {
    let filter = RunFilter {
        project: Some(params.project()?),
        signature: params.get("signature").map(signature).transpose()?,
        method: params.get("method").map(str::to_owned),
        limit: params.usize("limit")?,
        cursor: params.get("cursor").map(str::to_owned),
    };
    let listing = state.storage.list_runs(&who, filter).await?;
    Ok(Json(json!({"runs": listing.items, "next_cursor": listing.next_cursor})).into_response())
}

/// `GET /report`
pub async fn report(State(state): State<AppState>, Caller(who): Caller) -> ApiResult<Response> {
    Ok(Json(state.storage.report(&who).await?).into_response())
}
