//! The HTTP side of dspy-storage: one axum router per Lambda function, all built from one route
//! table over the core [`Storage`] service. Each Lambda binary runs its router with lambda_http;
//! `dspy-storage serve` runs them all merged. No storage logic lives here.

use axum::http::{Method, StatusCode};
use axum::Router;

pub mod auth;
pub mod env;
pub mod error;
pub mod extract;
pub mod jobs;
pub mod lambda;
pub mod openapi;
pub mod routes;
pub mod state;

pub use routes::{all_routes, Function};
pub use state::AppState;

use error::ApiError;

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
