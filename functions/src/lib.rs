//! The HTTP side of dspy-storage: one axum router per Lambda function, all built from one route
//! table over the core [`Storage`] service. Each Lambda binary runs its router with lambda_http;
//! `dspy-storage serve` runs them all merged. No storage logic lives here.

use std::sync::Arc;

use axum::http::{Method, StatusCode};
use axum::Router;
use dspy_storage_core::config::{StorageConfig, DEFAULT_MAX_BODY_BYTES};
use dspy_storage_core::service::Storage;

pub mod error;
pub mod extract;
pub mod lambda;
pub mod openapi;
pub mod routes;
pub mod scheduled;

pub use routes::{all_routes, Function};

use error::ApiError;

/// Shared state of every handler.
#[derive(Clone)]
pub struct AppState {
    pub storage: Arc<Storage>,
    pub max_body_bytes: usize,
    /// Where backups go (`None`: the program blob store, under `backups/`).
    pub backup: Option<dspy_storage_core::backup::BackupLocation>,
    /// Complete backups kept after a new one (`DSPY_STORAGE_BACKUP_RETAIN`, default 30).
    pub backup_retain: usize,
}

impl AppState {
    pub fn new(storage: Arc<Storage>) -> Self {
        AppState {
            storage,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            backup: None,
            backup_retain: dspy_storage_core::backup::DEFAULT_RETAIN,
        }
    }
}

/// A router serving the routes of the given functions (plus our 404/405 answers).
pub fn router_for(state: AppState, functions: &[Function]) -> Router {
    let mut router: Router<AppState> = Router::new();
    for route in all_routes()
        .into_iter()
        .filter(|r| functions.contains(&r.function))
    {
        router = router.route(route.path, route.handler);
    }
    router
        .fallback(|method: Method, uri: axum::http::Uri| async move {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("no route for {method} {}", uri.path()),
            )
        })
        .method_not_allowed_fallback(|method: Method, uri: axum::http::Uri| async move {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "invalid_request",
                format!("{method} is not allowed on {}", uri.path()),
            )
        })
        .layer(axum::extract::DefaultBodyLimit::disable())
        .with_state(state)
}

/// The router of one Lambda function.
pub fn function_router(state: AppState, function: Function) -> Router {
    router_for(state, &[function])
}

/// Every route: what `dspy-storage serve` runs.
pub fn app(state: AppState) -> Router {
    router_for(state, &Function::ALL)
}

/// Storage configuration from the environment shared by the Lambda functions and the CLI:
/// `DSPY_STORAGE_COMPRESSION` (zstd|gzip|lz4|none) and `DSPY_STORAGE_ENCRYPTION_KEY` (32 bytes,
/// hex or base64).
pub fn config_from_env() -> dspy_storage_core::Result<StorageConfig> {
    let mut config = StorageConfig::default();
    if let Ok(c) = std::env::var("DSPY_STORAGE_COMPRESSION") {
        config.compression = c.parse()?;
    }
    if let Ok(k) = std::env::var("DSPY_STORAGE_ENCRYPTION_KEY") {
        if !k.is_empty() {
            config = config.with_encryption_key(&k)?;
        }
    }
    Ok(config)
}
