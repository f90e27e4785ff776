//! The `backup` Lambda function: the backup routes of docs/API.md behind API Gateway, and the daily
//! backup on an EventBridge schedule (see `jobs::backup_scheduled`).

use dspy_storage_functions::{jobs, lambda, Function};

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    lambda::run_with_schedule(Function::Backup, |state, event, deadline| {
        Box::pin(jobs::backup_scheduled(state, event, deadline))
    })
    .await
}
