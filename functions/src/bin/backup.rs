//! The `backup` Lambda function: the backup routes of API.md behind API Gateway, and the daily
//! backup on an EventBridge schedule (see `scheduled::backup_job`).

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    dspy_storage_functions::lambda::run_with_schedule(
        dspy_storage_functions::Function::Backup,
        |state, event, deadline| {
            Box::pin(dspy_storage_functions::scheduled::backup_scheduled(
                state, event, deadline,
            ))
        },
    )
    .await
}
