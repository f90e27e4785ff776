//! The `cleanup` Lambda function: the cleanup routes of API.md behind API Gateway.

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    dspy_storage_functions::lambda::run(dspy_storage_functions::Function::Cleanup).await
}
