//! What every Lambda binary shares: JSON logs, the storage built once from the environment, and
//! running a function's router on lambda_http.

use std::time::{Duration, Instant, UNIX_EPOCH};

use axum::Router;
use dspy_storage_core::open::AwsConfig;
use lambda_http::request::LambdaRequest;
use lambda_http::tower::ServiceExt;
use lambda_http::{service_fn, Context, LambdaEvent};
use serde_json::Value;

use crate::env::{lambda_access, Env};
use crate::jobs::stop_before;
use crate::{function_router, AppState, Function};

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

/// Builds the handler state once per cold start: every setting read from the environment once
/// ([`Env::lambda`]), every AWS client built from one configuration, access control from the API
/// Gateway authorizer context ([`lambda_access`]).
pub async fn state_from_env() -> Result<AppState, lambda_http::Error> {
    let var = |name: &str| std::env::var(name).ok();
    let env = Env::lambda(var)?;
    let aws = AwsConfig::new();
    Ok(env.state(&aws).await?.with_access(lambda_access(var)?))
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
/// epoch) less [`crate::jobs::DEADLINE_MARGIN`].
fn deadline_of(context: &Context) -> Option<Instant> {
    (context.deadline != 0)
        .then(|| stop_before(UNIX_EPOCH + Duration::from_millis(context.deadline)))
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
