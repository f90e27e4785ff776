//! The `cleanup` Lambda function: the cleanup routes of API.md behind API Gateway, and the daily
//! retention run on an EventBridge schedule (the configured policy; see `routes::maintenance`).

use dspy_storage_functions::routes::maintenance;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    dspy_storage_functions::lambda::run_with_schedule(
        dspy_storage_functions::Function::Cleanup,
        |state, event, deadline| Box::pin(maintenance::scheduled(state, event, deadline)),
    )
    .await
}
