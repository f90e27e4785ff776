//! The web dashboard of dspy-storage (`/ui/`), served by `dspy-storage serve` beside the API.
//!
//! Every page and every action is a client of the HTTP API's own router, called in process
//! ([`api::Api`]): the guard of the API authenticates the caller (the bearer token the sign-in
//! form keeps in an `HttpOnly`, `SameSite=Strict` cookie), checks the role the route needs and
//! the input limits, and the core decides which projects the caller sees — exactly as for a
//! `curl` of the same route. The dashboard adds no access rule of its own, so it cannot grant
//! what the API refuses. It renders the API's answers as HTML (maud escapes every value), guards
//! every form with a CSRF token ([`session`]) and sends a strict Content-Security-Policy: no
//! script runs on these pages, and everything they need is inside the binary.
//!
//! One module per page ([`pages`]); [`layout`] holds the frame and the helpers they share.

use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;

pub mod api;
pub mod layout;
pub mod pages;
pub mod session;

/// What the dashboard's handlers share: the API router they call, and whether callers must
/// sign in (the API runs with `--auth-file`).
#[derive(Clone)]
pub struct Ui {
    pub api: api::Api,
    pub sign_in: bool,
}

/// The stylesheet, compiled into the binary.
pub const STYLE: &str = include_str!("style.css");

/// The dashboard's Content-Security-Policy: only this origin's stylesheet, images and forms;
/// no script, frame, plugin or base-URI change.
pub const CSP: &str = "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

/// The dashboard's routes (`/ui/...` and `/` → `/ui/`) over `api`, the router of the HTTP API
/// (what `dspy_storage_functions::app` builds). `sign_in`: the API
/// authenticates callers, so the pages ask for a token. Merge the result with the API router.
pub fn router(api: Router, sign_in: bool) -> Router {
    let ui = Ui {
        api: api::Api::new(api),
        sign_in,
    };
    use pages::*;
    Router::new()
        .route("/", get(|| async { Redirect::to("/ui/") }))
        .route("/ui", get(|| async { Redirect::to("/ui/") }))
        .route("/ui/", get(signatures::page))
        .route("/ui/style.css", get(style))
        .route("/ui/favicon.svg", get(favicon))
        .route("/ui/login", get(login::page).post(login::sign_in))
        .route("/ui/logout", post(login::sign_out))
        .route("/ui/signatures/{signature}", get(signature::page))
        .route(
            "/ui/signatures/{signature}/trends.svg",
            get(signature::chart),
        )
        .route(
            "/ui/signatures/{signature}/alias",
            post(signature::move_alias),
        )
        .route(
            "/ui/signatures/{signature}/alias/remove",
            post(signature::remove_alias),
        )
        .route(
            "/ui/signatures/{signature}/aliases/{alias}/history",
            get(signature::history),
        )
        .route(
            "/ui/signatures/{signature}/rollback",
            post(signature::rollback),
        )
        .route("/ui/diff/{signature}", get(diff::page))
        .route("/ui/programs/{id}", get(program::page))
        .route("/ui/programs/{id}/trends.svg", get(program::chart))
        .route("/ui/programs/{id}/download", get(program::download))
        .route("/ui/programs/{id}/tags", post(program::tags))
        .route("/ui/programs/{id}/archive", post(program::archive))
        .route("/ui/programs/{id}/restore", post(program::restore))
        .route("/ui/programs/{id}/delete", post(program::delete))
        .route("/ui/search", get(search::page))
        .route("/ui/monitoring", get(monitoring::page))
        .with_state(ui)
}

/// The tab icon (an SVG, so that no request for `/favicon.ico` goes unanswered).
const FAVICON: &str = r##"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 16 16"><rect width="16" height="16" rx="3" fill="#17233b"/><path d="M4 4h4a4 4 0 0 1 0 8H4z" fill="#fff"/></svg>"##;

async fn favicon() -> Response {
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("image/svg+xml"),
            ),
            (
                header::CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=86400"),
            ),
        ],
        FAVICON,
    )
        .into_response()
}

async fn style() -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static("text/css")),
            (
                header::CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=3600"),
            ),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
        ],
        STYLE,
    )
        .into_response()
}
