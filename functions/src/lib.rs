//! The HTTP side of dspy-storage: one axum router per Lambda function, all built from one route
//! table over the core [`Storage`] service. Each Lambda binary runs its router with lambda_http;
//! `dspy-storage serve` runs them all merged. No storage logic lives here.

use std::sync::Arc;

use axum::http::{Method, StatusCode};
use axum::Router;
use dspy_storage_core::config::{StorageConfig, DEFAULT_MAX_BODY_BYTES};
use dspy_storage_core::service::Storage;

pub mod auth;
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
    /// Who may call what (see [`auth`]); off unless the server or Lambda turns it on.
    pub access: auth::AccessControl,
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
            access: auth::AccessControl::Off,
            backup: None,
            backup_retain: dspy_storage_core::backup::DEFAULT_RETAIN,
        }
    }

    /// The same state with access control `access`.
    pub fn with_access(mut self, access: auth::AccessControl) -> Self {
        self.access = access;
        self
    }
}

/// A router serving the routes of the given functions (plus our 404/405 answers).
pub fn router_for(state: AppState, functions: &[Function]) -> Router {
    let mut router: Router<AppState> = Router::new();
    for route in all_routes()
        .into_iter()
        .filter(|r| functions.contains(&r.function))
    {
        // Every route (not the 404/405 fallbacks) goes through the guard: authentication,
        // roles, input limits, project scope (see `auth`).
        let guard = auth::GuardState {
            app: state.clone(),
            function: route.function,
            path: route.path,
        };
        let handler = route
            .handler
            .route_layer(axum::middleware::from_fn_with_state(guard, auth::guard));
        router = router.route(route.path, handler);
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
/// hex or base64), `DSPY_STORAGE_ARCHIVE_CLASS` (GLACIER|DEEP_ARCHIVE).
pub fn config_from_env() -> dspy_storage_core::Result<StorageConfig> {
    let mut config = StorageConfig::default();
    if let Ok(c) = std::env::var("DSPY_STORAGE_COMPRESSION") {
        config.compression = c.parse()?;
    }
    if let Some(f) = std::env::var_os("DSPY_STORAGE_ENCRYPTION_KEY_FILE").filter(|f| !f.is_empty())
    {
        config = config.with_key_file(std::path::Path::new(&f))?;
    }
    if let Ok(k) = std::env::var("DSPY_STORAGE_ENCRYPTION_KEY") {
        if !k.is_empty() {
            config = config.with_encryption_key(&k)?;
        }
    }
    if let Ok(c) = std::env::var("DSPY_STORAGE_ARCHIVE_CLASS") {
        if !c.is_empty() {
            config.archive_storage_class = c;
        }
    }
    Ok(config)
}

/// Envelope encryption with KMS data keys, from `DSPY_STORAGE_KMS_KEY_ID` (a key id, ARN or
/// alias) and `DSPY_STORAGE_KMS_DATA_KEY_TTL` (how long a data key is reused, default `5m`).
pub async fn data_keys_from_env(
) -> dspy_storage_core::Result<Option<Arc<dyn dspy_storage_core::envelope::DataKeyProvider>>> {
    let Some(key_id) = std::env::var("DSPY_STORAGE_KMS_KEY_ID")
        .ok()
        .filter(|k| !k.trim().is_empty())
    else {
        return Ok(None);
    };
    let mut cache = dspy_storage_core::envelope::DataKeyCache::default();
    if let Ok(ttl) = std::env::var("DSPY_STORAGE_KMS_DATA_KEY_TTL") {
        if !ttl.is_empty() {
            cache.ttl =
                dspy_storage_core::config::parse_duration("DSPY_STORAGE_KMS_DATA_KEY_TTL", &ttl)?;
        }
    }
    Ok(Some(
        dspy_storage_core::envelope::kms_provider(key_id.trim(), cache).await,
    ))
}

/// The secret cursors are signed with (see `dspy_storage_core::cursor`), read once: the Secrets
/// Manager secret `DSPY_STORAGE_CURSOR_SECRET_ARN` (the Lambda functions that issue or read
/// cursors; the SAM template creates it), else the file `DSPY_STORAGE_CURSOR_SECRET_FILE`
/// (created, mode 0600, when missing); `None` when neither is set (an ephemeral secret: cursors
/// then work within this process only).
pub async fn cursor_keys_from_env(
) -> dspy_storage_core::Result<Option<dspy_storage_core::cursor::CursorKeys>> {
    use dspy_storage_core::cursor::CursorKeys;
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
    if let Some(arn) = var("DSPY_STORAGE_CURSOR_SECRET_ARN") {
        return CursorKeys::from_secrets_manager(arn.trim()).await.map(Some);
    }
    if let Some(path) = var("DSPY_STORAGE_CURSOR_SECRET_FILE") {
        return CursorKeys::load_or_create(std::path::Path::new(path.trim())).map(Some);
    }
    Ok(None)
}

/// Where change events go, from `DSPY_STORAGE_EVENT_BUS` (an EventBridge bus name or ARN) or
/// `DSPY_STORAGE_EVENTS_FILE` (a JSON Lines file); none when both are unset or empty.
pub fn events_target_from_env() -> Option<dspy_storage_core::open::EventsTarget> {
    let bus = std::env::var("DSPY_STORAGE_EVENT_BUS").ok();
    let file = std::env::var_os("DSPY_STORAGE_EVENTS_FILE").map(std::path::PathBuf::from);
    dspy_storage_core::open::EventsTarget::from_settings(bus.as_deref(), file.as_deref())
}
