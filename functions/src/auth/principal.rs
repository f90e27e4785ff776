//! The identity model: who calls (a [`Principal`], from the core), how the handlers get it
//! ([`Caller`]) and how a request is authenticated ([`AccessControl`]).

use std::sync::Arc;

use axum::http::StatusCode;

pub use dspy_storage_core::access::{Principal, Role, Scope, ANONYMOUS};

use super::lambda::LambdaAuth;
use super::tokens::{bearer, TokenTable};
use crate::error::ApiError;

/// The caller of a request, as the guard put it in the request's extensions.
#[derive(Debug, Clone)]
pub struct Caller(pub Principal);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut http::request::Parts,
        _state: &S,
    ) -> Result<Self, ApiError> {
        parts
            .extensions
            .get::<Principal>()
            .cloned()
            .map(Caller)
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal_error",
                    "the request has no caller: its route is not behind the guard",
                )
            })
    }
}

/// Whether and how callers are authenticated.
#[derive(Debug, Clone, Default)]
pub enum AccessControl {
    /// Everyone may do everything (local development; `serve` logs a loud warning).
    #[default]
    Off,
    /// `Authorization: Bearer <token>` looked up in a token table (`serve --auth-file`).
    Tokens(Arc<TokenTable>),
    /// The API Gateway authorizer context of a Lambda request.
    Lambda(LambdaAuth),
}

impl AccessControl {
    pub fn is_off(&self) -> bool {
        matches!(self, AccessControl::Off)
    }

    pub(super) fn authenticate(&self, parts: &http::request::Parts) -> Result<Principal, ApiError> {
        match self {
            AccessControl::Off => Ok(ANONYMOUS.clone()),
            AccessControl::Tokens(table) => {
                let token = bearer(&parts.headers).ok_or_else(|| {
                    ApiError::unauthenticated("send Authorization: Bearer <token>")
                })?;
                table
                    .lookup(token)
                    .cloned()
                    .ok_or_else(|| ApiError::unauthenticated("unknown token"))
            }
            AccessControl::Lambda(l) => l.principal(parts),
        }
    }
}
