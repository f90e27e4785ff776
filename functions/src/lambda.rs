//! What every Lambda binary shares: JSON logs, the storage built once from the environment, and
//! running a function's router on lambda_http.

use std::sync::Arc;

use dspy_storage_core::open::{aws, event_publisher, AwsLocation};

use crate::{config_from_env, events_target_from_env, function_router, AppState, Function};

/// Structured JSON logs (CloudWatch), level from `RUST_LOG` (default `info`).
pub fn init_tracing() {
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_current_span(false)
        .without_time()
        .init();
}

fn required_env(name: &str) -> Result<String, lambda_http::Error> {
    std::env::var(name).map_err(|_| format!("environment variable {name} is not set").into())
}

/// Builds the handler state once per cold start: `DSPY_STORAGE_TABLE`, `DSPY_STORAGE_BUCKET`,
/// plus the shared configuration of [`config_from_env`] and the events target of
/// [`events_target_from_env`].
pub async fn state_from_env() -> Result<AppState, lambda_http::Error> {
    let location = AwsLocation {
        table: required_env("DSPY_STORAGE_TABLE")?,
        bucket: required_env("DSPY_STORAGE_BUCKET")?,
    };
    let mut storage = aws(&location, config_from_env()?, false, None).await?;
    if let Some(keys) = crate::data_keys_from_env().await? {
        storage = storage.with_data_keys(keys);
    }
    if let Some(target) = events_target_from_env() {
        storage = storage.with_events(event_publisher(&target, None).await);
    }
    // Lambda checks access, from the API Gateway authorizer context (see `auth`) — unless
    // DSPY_STORAGE_ACCESS_CONTROL=off, meant only for the local Lambda loop (`cargo lambda watch`
    // sends no authorizer context); the stack never sets it.
    let access = if std::env::var("DSPY_STORAGE_ACCESS_CONTROL").is_ok_and(|v| v == "off") {
        tracing::warn!("ACCESS CONTROL IS OFF (DSPY_STORAGE_ACCESS_CONTROL=off): every caller may do everything; never deploy this");
        crate::auth::AccessControl::Off
    } else {
        crate::auth::AccessControl::Lambda(crate::auth::LambdaAuth::from_env()?)
    };
    Ok(AppState::new(Arc::new(storage)).with_access(access))
}

/// The whole `main` of a Lambda function.
pub async fn run(function: Function) -> Result<(), lambda_http::Error> {
    init_tracing();
    let state = state_from_env().await?;
    tracing::info!(function = function.name(), "ready");
    lambda_http::run(function_router(state, function)).await
}
