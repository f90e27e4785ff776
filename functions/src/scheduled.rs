//! The scheduled jobs of the functions that run on an EventBridge schedule besides serving HTTP:
//! the daily backup here (the cleanup's is `routes::maintenance::scheduled`). The Lambda entry
//! (`lambda::run_with_schedule`) sends scheduled events to them and HTTP events to the router.

use std::time::Instant;

use serde_json::{json, Value};

use crate::AppState;

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

/// The backup job as a scheduled handler: a failed backup is an error of the invocation (so
/// the schedule's retry policy and the Errors alarm see it).
pub async fn backup_scheduled(
    state: AppState,
    _event: Value,
    deadline: Option<Instant>,
) -> dspy_storage_core::Result<Value> {
    let summary = backup_job(state, deadline).await;
    if summary["status"] == "failed" {
        return Err(dspy_storage_core::Error::Unavailable(format!(
            "scheduled backup failed: {}",
            summary["error"].as_str().unwrap_or("unknown error")
        )));
    }
    Ok(summary)
}
