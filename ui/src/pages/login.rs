//! `/ui/login` (the sign-in form) and `/ui/logout`. A token is accepted when the API accepts it
//! (`GET /projects` answers), then kept in an `HttpOnly`, `SameSite=Strict` cookie.

use axum::extract::{Form, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::Response;
use maud::html;

use super::{param, Params};
use crate::api::ApiError;
use crate::layout::{self, csrf_field, Flash, Nav};
use crate::session::{self, Ctx};
use crate::Ui;

/// Only a dashboard path is a place to come back to (no open redirect, nothing that is no
/// header value).
fn next_of(next: Option<&str>) -> &str {
    match next {
        Some(n)
            if n.starts_with("/ui/")
                && !n.contains('\\')
                && n.bytes().all(|b| b.is_ascii_graphic()) =>
        {
            n
        }
        _ => "/ui/",
    }
}

fn form(ctx: &Ctx, next: &str, status: StatusCode, flash: Option<&Flash>) -> Response {
    let nav = Nav {
        projects: vec![],
        project: "default".into(),
    };
    let body = html! {
        h1 { "Sign in" }
        @if ctx.sign_in {
            form id="login" method="post" action="/ui/login" {
                (csrf_field(ctx))
                input type="hidden" name="next" value=(next);
                label { "Token " input type="password" name="token" size="40" required autocomplete="current-password"; }
                button type="submit" { "Sign in" }
            }
            p.help { "A token of the server's --auth-file. Each page then shows only your projects, and each action needs the role its API route needs." }
        } @else {
            p { "This server has no --auth-file: no sign-in is needed. " a href="/ui/" { "Go to the signatures" } }
        }
    };
    layout::respond(ctx, status, layout::page(ctx, &nav, "Sign in", flash, body))
}

pub async fn page(
    State(ui): State<Ui>,
    headers: HeaderMap,
    Query(params): Query<Params>,
) -> Response {
    let ctx = Ctx::of(&ui, &headers);
    form(&ctx, next_of(param(&params, "next")), StatusCode::OK, None)
}

pub async fn sign_in(
    State(ui): State<Ui>,
    headers: HeaderMap,
    Form(params): Form<Params>,
) -> Response {
    let ctx = Ctx::of(&ui, &headers);
    if let Some(r) = ctx.csrf_refusal(param(&params, "csrf")) {
        return r;
    }
    let next = next_of(param(&params, "next")).to_owned();
    let token = params.get("token").map(|t| t.trim()).unwrap_or_default();
    if !ui.sign_in {
        return layout::see_other(&ctx, &next);
    }
    match ui.api.get("/projects", Some(token)).await {
        Ok(_) if !token.is_empty() => {
            let mut r = layout::see_other(&ctx, &next);
            r.headers_mut()
                .append(header::SET_COOKIE, session::token_cookie(token));
            r
        }
        Ok(_) => form(
            &ctx,
            &next,
            StatusCode::UNAUTHORIZED,
            Some(&Flash::Failed(ApiError {
                status: StatusCode::UNAUTHORIZED,
                code: "unauthenticated".into(),
                message: "enter a token".into(),
                field: Some("token".into()),
            })),
        ),
        Err(e) => {
            let status = e.status;
            form(&ctx, &next, status, Some(&Flash::Failed(e)))
        }
    }
}

pub async fn sign_out(
    State(ui): State<Ui>,
    headers: HeaderMap,
    Form(params): Form<Params>,
) -> Response {
    let ctx = Ctx::of(&ui, &headers);
    if let Some(r) = ctx.csrf_refusal(param(&params, "csrf")) {
        return r;
    }
    let mut r = layout::see_other(&ctx, "/ui/login");
    r.headers_mut()
        .append(header::SET_COOKIE, session::clear_token_cookie());
    r
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_dashboard_paths_are_places_to_come_back_to() {
        use super::next_of;
        assert_eq!(next_of(Some("/ui/search?q=a%20b")), "/ui/search?q=a%20b");
        for bad in [
            "https://evil.example/",
            "//evil.example/ui/",
            "/ui/\r\nSet-Cookie: x=1",
            "/ui/\\x",
            "/ui/ x",
            "/api",
        ] {
            assert_eq!(next_of(Some(bad)), "/ui/", "{bad:?}");
        }
        assert_eq!(next_of(None), "/ui/");
    }
}
