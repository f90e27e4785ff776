//! EventBridge scheduled events for the functions that have a scheduled job (backup): the Lambda
//! entry dispatches between API Gateway HTTP API events (the routers) and scheduled events
//! (`{"source": "aws.events", "detail-type": "Scheduled Event", ...}`) to a per-function hook.

use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, Instant, SystemTime};

use lambda_http::request::LambdaRequest;
use lambda_http::{lambda_runtime, service_fn, Adapter, LambdaEvent, Service};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{json, Value};

use crate::{function_router, AppState, Function};

/// A scheduled job: runs with the state, stops by the deadline (when it can), returns the JSON
/// summary that is logged and returned.
pub type Hook = fn(AppState, Option<Instant>) -> Pin<Box<dyn Future<Output = Value> + Send>>;

/// The scheduled job of a function, if it has one.
pub fn hook(function: Function) -> Option<Hook> {
    match function {
        Function::Backup => Some(|state, deadline| Box::pin(backup_job(state, deadline))),
        _ => None,
    }
}

#[derive(Deserialize)]
struct ScheduledProbe {
    source: Option<String>,
    #[serde(rename = "detail-type")]
    detail_type: Option<String>,
}

/// Whether an event is an EventBridge scheduled event (not an HTTP request).
pub fn is_scheduled(event: &str) -> bool {
    serde_json::from_str::<ScheduledProbe>(event).is_ok_and(|p| {
        p.detail_type.as_deref() == Some("Scheduled Event")
            || p.source.as_deref() == Some("aws.events")
    })
}

/// The daily backup: a new backup (or the rest of an unfinished one), then retention.
pub async fn backup_job(state: AppState, deadline: Option<Instant>) -> Value {
    let options = dspy_storage_core::backup::BackupOptions {
        retain: Some(state.backup_retain),
        deadline,
        ..Default::default()
    };
    let location = crate::routes::backup_location(&state);
    let started = Instant::now();
    let result =
        dspy_storage_core::backup::create_backup(&state.storage, &location, &options).await;
    let summary = match result {
        Ok(dspy_storage_core::backup::BackupRun::Finished(m)) => json!({
            "job": "backup", "status": "complete", "backup_name": m.name,
            "backup_id": m.backup_id, "size": m.size, "counts": m.counts,
            "retain": state.backup_retain,
            "duration_s": started.elapsed().as_secs_f64(),
        }),
        Ok(dspy_storage_core::backup::BackupRun::Suspended { name, pass }) => json!({
            "job": "backup", "status": "in_progress", "backup_name": name, "pass": pass,
            "note": "stopped before the function's deadline; the next run resumes it",
            "duration_s": started.elapsed().as_secs_f64(),
        }),
        Err(e) => json!({"job": "backup", "status": "failed", "error": e.to_string()}),
    };
    tracing::info!(summary = %summary, "scheduled backup");
    summary
}

/// Runs a function that has a scheduled hook: HTTP events go to its router, scheduled events to
/// the hook (with the invocation's deadline less one minute).
pub async fn run(
    state: AppState,
    function: Function,
    hook: Hook,
) -> Result<(), lambda_http::Error> {
    let router = function_router(state.clone(), function);
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Box<RawValue>>| {
        let (router, state) = (router.clone(), state.clone());
        async move {
            if is_scheduled(event.payload.get()) {
                let left = event
                    .context
                    .deadline()
                    .duration_since(SystemTime::now())
                    .unwrap_or_default();
                let deadline = Instant::now() + left.saturating_sub(Duration::from_secs(60));
                return Ok::<Value, lambda_http::Error>(hook(state, Some(deadline)).await);
            }
            let request: LambdaRequest = serde_json::from_str(event.payload.get())?;
            let mut adapter = Adapter::from(router);
            let response = match adapter.call(LambdaEvent::new(request, event.context)).await {
                Ok(r) => r,
                Err(never) => match never {},
            };
            Ok(serde_json::to_value(response)?)
        }
    }))
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scheduled_events_are_recognised() {
        let scheduled = r#"{"version": "0", "id": "x", "detail-type": "Scheduled Event",
            "source": "aws.events", "account": "1", "time": "2026-11-25T03:00:00Z",
            "region": "us-east-1", "resources": [], "detail": {}}"#;
        assert!(is_scheduled(scheduled));
        let http = r#"{"version": "2.0", "routeKey": "POST /backups", "rawPath": "/backups"}"#;
        assert!(!is_scheduled(http));
        assert!(!is_scheduled("[]"));
    }
}
