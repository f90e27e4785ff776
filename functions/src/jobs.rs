//! The scheduled jobs of the two functions that run on an EventBridge schedule besides serving
//! HTTP — the daily cleanup ([`cleanup_scheduled`]) and the daily backup ([`backup_scheduled`]) —
//! and what they share with the HTTP routes that start the same work: a backup run with the
//! state's location and retention ([`run_backup`]), the cleanup log line, and the instant to stop
//! before ([`stop_before`]). The Lambda entry (`lambda::run_with_schedule`) sends scheduled
//! events here and HTTP events to the router.

use std::time::{Duration, Instant, SystemTime};

use serde_json::{json, Value};

use dspy_storage_core::access::{Principal, SCHEDULER};
use dspy_storage_core::backup::{self, BackupOptions, BackupRun};
use dspy_storage_core::retention::cleanup::CleanupReport;

use crate::AppState;

/// Time kept free before an invocation's deadline to write the status and answer.
pub const DEADLINE_MARGIN: Duration = Duration::from_secs(60);

/// The instant to stop work that must end by `deadline`: [`DEADLINE_MARGIN`] before it (now,
/// when that has passed).
pub fn stop_before(deadline: SystemTime) -> Instant {
    let left = deadline
        .duration_since(SystemTime::now())
        .unwrap_or_default()
        .saturating_sub(DEADLINE_MARGIN);
    Instant::now() + left
}

// ----- cleanup -------------------------------------------------------------------------------------

/// The one log line of a cleanup run (`trigger`: `http` or `schedule`).
pub fn log_cleanup(trigger: &str, report: &CleanupReport) {
    tracing::info!(
        trigger,
        dry_run = report.dry_run,
        complete = report.complete,
        summary = %serde_json::to_string(&report.summary).unwrap_or_default(),
        "cleanup finished"
    );
}

/// The scheduled cleanup (an EventBridge "Scheduled Event"; the event carries no policy): the
/// configured policy, counts only, stopping before `deadline` and resuming there on the next
/// run; then, when it completed, the conversion of metric records written before blocks, until
/// `deadline`. Answers (and logs) the summary as JSON.
pub async fn cleanup_scheduled(
    state: AppState,
    event: Value,
    deadline: Option<Instant>,
) -> dspy_storage_core::Result<Value> {
    let report = state
        .storage
        .scheduled_cleanup(&SCHEDULER, state.policy.clone(), deadline)
        .await?;
    log_cleanup("schedule", &report);
    // Then, with the time left, metric records written before blocks are converted (nothing
    // once none is left; see `dspy_storage_core::tracking::migrate`).
    let conversion = if report.complete {
        state.storage.convert_metrics_scheduled(deadline).await?
    } else {
        None
    };
    if let Some(c) = &conversion {
        tracing::info!(
            records = c.records_converted,
            complete = c.complete,
            "metric records converted into blocks"
        );
    }
    Ok(json!({
        "event_id": event.get("id"),
        "dry_run": false,
        "as_of": report.as_of,
        "policy": report.policy,
        "complete": report.complete,
        "summary": report.summary,
        "metric_conversion": conversion,
    }))
}

// ----- backup --------------------------------------------------------------------------------------

/// Runs a backup with the state's location and retention, stopping at `deadline` (the next
/// run resumes it).
pub async fn run_backup(
    state: &AppState,
    who: &Principal,
    name: Option<String>,
    deadline: Option<Instant>,
) -> dspy_storage_core::Result<BackupRun> {
    let options = BackupOptions {
        name,
        retain: Some(state.backup_retain),
        deadline,
        ..Default::default()
    };
    backup::create_backup(who, &state.storage, &state.backup_location(), &options).await
}

/// The daily backup: a new backup (or the rest of an unfinished one), then retention; its
/// summary (status `complete`, `in_progress` or `failed`), logged.
pub async fn backup_job(state: AppState, deadline: Option<Instant>) -> Value {
    backup_summary(&state, deadline)
        .await
        .unwrap_or_else(|e| json!({"job": "backup", "status": "failed", "error": e.to_string()}))
}

/// The backup job as a scheduled handler: a failed backup is an error of the invocation (so
/// the schedule's retry policy and the Errors alarm see it).
pub async fn backup_scheduled(
    state: AppState,
    _event: Value,
    deadline: Option<Instant>,
) -> dspy_storage_core::Result<Value> {
    backup_summary(&state, deadline)
        .await
        .map_err(|e| dspy_storage_core::Error::Unavailable(format!("scheduled backup failed: {e}")))
}

async fn backup_summary(
    state: &AppState,
    deadline: Option<Instant>,
) -> dspy_storage_core::Result<Value> {
    let started = Instant::now();
    let result = run_backup(state, &SCHEDULER, None, deadline).await;
    let summary = match &result {
        Ok(BackupRun::Finished(m)) => json!({
            "job": "backup", "status": "complete", "backup_name": m.name,
            "backup_id": m.backup_id, "size": m.size, "counts": m.counts,
            "retain": state.backup_retain,
            "duration_s": started.elapsed().as_secs_f64(),
        }),
        Ok(BackupRun::Suspended { name, pass }) => json!({
            "job": "backup", "status": "in_progress", "backup_name": name, "pass": pass,
            "note": "stopped before the function's deadline; the next run resumes it",
            "duration_s": started.elapsed().as_secs_f64(),
        }),
        Err(e) => json!({"job": "backup", "status": "failed", "error": e.to_string()}),
    };
    tracing::info!(summary = %summary, "scheduled backup");
    result.map(|_| summary)
}
