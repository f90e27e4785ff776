//! What every Lambda binary shares: JSON logs, the storage built once from the environment, and
//! running a function's router on lambda_http.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use dspy_storage_core::open::{aws, event_publisher, AwsLocation};
use lambda_http::request::LambdaRequest;
use lambda_http::tower::ServiceExt;
use lambda_http::{service_fn, Context, LambdaEvent};
use serde_json::Value;

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
    // Read once per cold start (functions that issue no cursors get no secret: an ephemeral one).
    match crate::cursor_keys_from_env().await? {
        Some(keys) => {
            tracing::info!(source = keys.source(), "cursor secret loaded");
            storage = storage.with_cursor_keys(keys);
        }
        None => tracing::info!(
            "no cursor secret configured: cursors of this function work within one instance only"
        ),
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
    let mut state = AppState::new(Arc::new(storage)).with_access(access);
    crate::routes::backup_settings_from_env(&mut state).await?;
    Ok(state)
}

/// The whole `main` of a Lambda function.
pub async fn run(function: Function) -> Result<(), lambda_http::Error> {
    init_tracing();
    let state = state_from_env().await?;
    tracing::info!(function = function.name(), "ready");
    lambda_http::run(function_router(state, function)).await
}

// ----- functions that also run on a schedule -----------------------------------------------------

/// What a scheduled run of a function answers: a JSON summary (also logged).
pub type ScheduledFuture =
    std::pin::Pin<Box<dyn std::future::Future<Output = dspy_storage_core::Result<Value>> + Send>>;

/// The scheduled work of a function: the state, the event, and the instant to stop before (the
/// invocation's deadline less a margin; `None` when unknown).
pub type ScheduledHandler = fn(AppState, Value, Option<Instant>) -> ScheduledFuture;

/// Time kept free before the invocation's deadline to write the status and answer.
const DEADLINE_MARGIN: Duration = Duration::from_secs(60);

/// True for an EventBridge scheduled event (`"detail-type": "Scheduled Event"` from `aws.events`
/// or `aws.scheduler`).
pub fn is_scheduled_event(event: &Value) -> bool {
    event.get("detail-type").and_then(Value::as_str) == Some("Scheduled Event")
        && matches!(
            event.get("source").and_then(Value::as_str),
            Some("aws.events") | Some("aws.scheduler")
        )
}

/// The instant to stop scheduled work before: the context's deadline (milliseconds since the
/// epoch) less [`DEADLINE_MARGIN`].
fn deadline_of(context: &Context) -> Option<Instant> {
    (context.deadline != 0)
        .then(|| stop_before(UNIX_EPOCH + Duration::from_millis(context.deadline)))
}

/// The instant to stop work that must end by `deadline`: [`DEADLINE_MARGIN`] before it (now,
/// when that has passed).
pub(crate) fn stop_before(deadline: SystemTime) -> Instant {
    let left = deadline
        .duration_since(SystemTime::now())
        .unwrap_or_default()
        .saturating_sub(DEADLINE_MARGIN);
    Instant::now() + left
}

/// Handles one invocation of a function that serves HTTP routes AND runs on a schedule: an
/// EventBridge scheduled event runs `scheduled`; anything else is an API Gateway (or ALB) event
/// for the function's router, answered as lambda_http would.
pub async fn handle_event(
    router: Router,
    state: AppState,
    scheduled: ScheduledHandler,
    event: LambdaEvent<Value>,
) -> Result<Value, lambda_http::Error> {
    let (payload, context) = event.into_parts();
    if is_scheduled_event(&payload) {
        let deadline = deadline_of(&context);
        return match scheduled(state, payload, deadline).await {
            Ok(summary) => {
                tracing::info!(summary = %summary, "scheduled run finished");
                Ok(summary)
            }
            Err(e) => {
                tracing::error!(error = %e, "scheduled run failed");
                Err(e.into())
            }
        };
    }
    let request: LambdaRequest = serde_json::from_value(payload)
        .map_err(|e| format!("not an API Gateway, ALB or scheduled event: {e}"))?;
    let adapter = lambda_http::Adapter::from(router);
    let response = adapter
        .oneshot(LambdaEvent::new(request, context))
        .await
        .map_err(|e: std::convert::Infallible| -> lambda_http::Error { match e {} })?;
    Ok(serde_json::to_value(response)?)
}

/// The whole `main` of a function that also runs on a schedule (cleanup, backup).
pub async fn run_with_schedule(
    function: Function,
    scheduled: ScheduledHandler,
) -> Result<(), lambda_http::Error> {
    init_tracing();
    let state = state_from_env().await?;
    tracing::info!(function = function.name(), "ready (HTTP and schedule)");
    let router = function_router(state.clone(), function);
    lambda_http::lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| {
        handle_event(router.clone(), state.clone(), scheduled, event)
    }))
    .await
}
