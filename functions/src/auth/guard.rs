//! The guard: ONE axum middleware on every route of every router built by
//! [`crate::router_for`] (see the [module doc](super) for what it does, in which order).

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::{Role, ANONYMOUS};
use crate::error::ApiError;
use crate::extract;
use crate::{AppState, Function};

/// The role a route needs, derived from its function and method (see the module doc).
pub fn required_role(function: Function, method: &Method) -> Role {
    match function {
        Function::Cleanup | Function::Backup => Role::Admin,
        _ if method == Method::GET || method == Method::HEAD => Role::Reader,
        Function::Query => Role::Reader,
        _ => Role::Writer,
    }
}

/// Routes anyone may call when access control is on (they show no stored data).
pub const PUBLIC_ROUTES: [&str; 2] = ["/health", "/openapi.json"];

/// The middleware state of one route: the app state, the function serving the route and its
/// path as written in the route table.
#[derive(Clone)]
pub struct GuardState {
    pub app: AppState,
    pub function: Function,
    pub path: &'static str,
}

/// The middleware: authenticate, authorize, check the input limits (see the module doc), then
/// hand the request on unchanged (its body re-assembled from the bytes read) with its caller.
pub async fn guard(State(gs): State<GuardState>, req: Request, next: Next) -> Response {
    match check(&gs, req).await {
        Ok(req) => next.run(req).await,
        Err(e) => e.into_response(),
    }
}

async fn check(gs: &GuardState, req: Request) -> Result<Request, ApiError> {
    let (mut parts, body) = req.into_parts();
    let path = gs.path;
    let function = gs.function;
    let access = &gs.app.access;
    let public = PUBLIC_ROUTES.contains(&path);

    // 1. Who is calling.
    let principal = if public {
        ANONYMOUS.clone()
    } else {
        access.authenticate(&parts).inspect_err(|e| {
            tracing::info!(method = %parts.method, route = %path, reason = %e.message, "unauthenticated request refused");
        })?
    };
    // 2. May this role call this route?
    let needed = required_role(function, &parts.method);
    if principal.role < needed {
        tracing::info!(principal = %principal.id, method = %parts.method, route = %path, "role too weak");
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!(
                "{} {path} needs the {} role; the caller is a {}",
                parts.method,
                needed.as_str(),
                principal.role.as_str()
            ),
        ));
    }
    // 3. Input limits.
    let params = extract::check_uri(&parts.uri)?;
    let bytes = extract::read_body(&parts.headers, body, gs.app.max_body_bytes).await?;
    if !bytes.is_empty() && looks_like_json(&parts.headers, &bytes) {
        extract::check_json(&bytes)?;
    }
    parts.extensions.insert(principal);
    parts.extensions.insert(params);
    Ok(Request::from_parts(parts, Body::from(bytes)))
}

fn looks_like_json(headers: &HeaderMap, bytes: &[u8]) -> bool {
    let declared = headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.to_ascii_lowercase().contains("json"));
    declared
        || bytes
            .iter()
            .find(|b| !b.is_ascii_whitespace())
            .is_some_and(|b| matches!(b, b'{' | b'['))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_are_derived_from_the_route() {
        use Function::*;
        assert_eq!(required_role(Load, &Method::GET), Role::Reader);
        assert_eq!(required_role(Query, &Method::POST), Role::Reader);
        assert_eq!(required_role(Store, &Method::POST), Role::Writer);
        assert_eq!(required_role(Store, &Method::DELETE), Role::Writer);
        assert_eq!(required_role(Trend, &Method::POST), Role::Writer);
        assert_eq!(required_role(Trend, &Method::GET), Role::Reader);
        assert_eq!(required_role(Cleanup, &Method::POST), Role::Admin);
        assert_eq!(required_role(Backup, &Method::GET), Role::Admin);
        assert!(Role::Reader < Role::Writer && Role::Writer < Role::Admin);
    }
}
