//! What every Lambda binary shares: JSON logs, the storage built once from the environment, and
//! running a function's router on lambda_http.

use std::sync::Arc;

use dspy_storage_core::open::{aws, AwsLocation};

use crate::{config_from_env, function_router, AppState, Function};

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
/// plus the shared configuration of [`config_from_env`].
pub async fn state_from_env() -> Result<AppState, lambda_http::Error> {
    let location = AwsLocation {
        table: required_env("DSPY_STORAGE_TABLE")?,
        bucket: required_env("DSPY_STORAGE_BUCKET")?,
    };
    let storage = aws(&location, config_from_env()?, false, None).await?;
    let mut state = AppState::new(Arc::new(storage));
    crate::routes::backup_settings_from_env(&mut state).await?;
    Ok(state)
}

/// The whole `main` of a Lambda function.
pub async fn run(function: Function) -> Result<(), lambda_http::Error> {
    init_tracing();
    let state = state_from_env().await?;
    tracing::info!(function = function.name(), "ready");
    if let Some(hook) = crate::scheduled::hook(function) {
        return crate::scheduled::run(state, function, hook).await;
    }
    lambda_http::run(function_router(state, function)).await
}
