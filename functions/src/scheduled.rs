//! The scheduled jobs of the functions that run on an EventBridge schedule besides serving HTTP:
//! the daily backup here (the cleanup's is `routes::maintenance::scheduled`). The Lambda entry
//! (`lambda::run_with_schedule`) sends scheduled events to them and HTTP events to the router.

use std::time::Instant;

use serde_json::{json, Value};

use dspy_storage_core::backup::BackupRun;

use crate::AppState;

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
    let result = crate::routes::backups::run_backup(
        state,
        &dspy_storage_core::access::SCHEDULER,
        None,
        deadline,
    )
    .await;
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
