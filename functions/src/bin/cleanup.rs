//! The `cleanup` Lambda function: the cleanup routes of docs/API.md behind API Gateway, and the daily
//! retention run on an EventBridge schedule (the configured policy; see `jobs::cleanup_scheduled`).

use dspy_storage_functions::{jobs, lambda, Function};

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    lambda::run_with_schedule(Function::Cleanup, |state, event, deadline| {
        Box::pin(jobs::cleanup_scheduled(state, event, deadline))
    })
    .await
}
