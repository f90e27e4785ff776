//! Search and querying (query function): the query language, structured search, aggregation,
//! time series and similar programs. The engine is `dspy_storage_core::query`; these handlers
//! only decode the request and encode the answer.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::Utc;
use dspy_storage_core::query::{
    parse_query, parse_structured, AggregateRequest, TimeSeriesRequest,
};
use serde_json::{json, Value};

use super::programs::program_id;
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::extract::{json_body, Params};
use crate::AppState;

/// `GET /search?q=&sort=&limit=&cursor=&project=`
pub async fn search_get(
    State(state): State<AppState>,
    Caller(who): Caller,
    params: Params,
) -> ApiResult<Response> {
    for name in params.0.keys() {
        if !["q", "sort", "limit", "cursor", "project"].contains(&name.as_str()) {
            return Err(ApiError::bad_request(format!(
                "unknown query parameter {name:?}; expected q, sort, limit, cursor, project"
            ))
            .field(name.clone()));
        }
    }
    let req = parse_query(
        params.get("q").unwrap_or(""),
        params.explicit_project()?,
        params.get("sort"),
        params.usize("limit")?,
        params.get("cursor"),
        Utc::now(),
    )?;
    Ok(Json(state.storage.search(&who, &req).await?).into_response())
}

/// `POST /search` with the structured form.
pub async fn search_post(
    State(state): State<AppState>,
    Caller(who): Caller,
    params: Params,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    let body: Value = json_body(&headers, body, state.max_body_bytes).await?;
    let req = parse_structured(&body, params.explicit_project()?)?;
    Ok(Json(state.storage.search(&who, &req).await?).into_response())
}

/// `POST /aggregate`
pub async fn aggregate(
    State(state): State<AppState>,
    Caller(who): Caller,
    params: Params,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    let body: Value = json_body(&headers, body, state.max_body_bytes).await?;
    let req = AggregateRequest::parse(&body, params.explicit_project()?)?;
    Ok(Json(state.storage.aggregate(&who, &req).await?).into_response())
}

/// `POST /time-series`
pub async fn time_series(
    State(state): State<AppState>,
    Caller(who): Caller,
    params: Params,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    let body: Value = json_body(&headers, body, state.max_body_bytes).await?;
    let req = TimeSeriesRequest::parse(&body, params.explicit_project()?)?;
    Ok(Json(state.storage.time_series(&who, &req).await?).into_response())
}

/// `GET /programs/{id}/similar?threshold=0.8&limit=10`
pub async fn similar(
    State(state): State<AppState>,
    Caller(who): Caller,
    Path(id): Path<String>,
    params: Params,
) -> ApiResult<Response> {
    let id = program_id(&id)?;
    let threshold = match params.get("threshold") {
        None => 0.8,
        Some(t) => t
            .parse::<f64>()
            .ok()
            .filter(|x| (0.0..=1.0).contains(x))
            .ok_or_else(|| {
                ApiError::bad_request("threshold must be a number between 0 and 1")
                    .field("threshold")
            })?,
    };
    let limit = match params.usize("limit")? {
        None => 10,
        Some(n) if (1..=100).contains(&n) => n,
        Some(_) => {
            return Err(ApiError::bad_request("limit must be between 1 and 100").field("limit"))
        }
    };
    let results = state.storage.similar(&who, &id, threshold, limit).await?;
    Ok(Json(json!({ "id": id, "results": results })).into_response())
}
