//! The `query` Lambda function: the query routes of docs/API.md behind API Gateway.

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    dspy_storage_functions::lambda::run(dspy_storage_functions::Function::Query).await
}
