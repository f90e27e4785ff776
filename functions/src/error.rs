//! Every error answer of the API, mapped from the core's errors in ONE place.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use dspy_storage_core::Error;
use serde_json::json;

/// An error answer: status, machine code, human message and optionally the offending field.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub field: Option<String>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            field: None,
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", message)
    }

    pub fn field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// `401 unauthenticated`: no or unknown credentials.
    pub fn unauthenticated(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthenticated", message)
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        use StatusCode as S;
        let message = e.to_string();
        let (status, code, field) = match e {
            Error::InvalidInput { field, .. } => (S::BAD_REQUEST, "invalid_request", field),
            Error::NotFound(_) => (S::NOT_FOUND, "not_found", None),
            Error::Forbidden(_) => (S::FORBIDDEN, "forbidden", None),
            Error::AlreadyExists(_) | Error::Precondition(_) | Error::ConditionFailed { .. } => {
                (S::CONFLICT, "conflict", None)
            }
            Error::PolicyViolation(_) => (S::CONFLICT, "policy_violation", None),
            Error::Archived(_) => (S::CONFLICT, "archived", None),
            Error::PayloadTooLarge(_) => (S::PAYLOAD_TOO_LARGE, "payload_too_large", None),
            Error::Integrity(_) => (S::UNPROCESSABLE_ENTITY, "integrity_error", None),
            Error::Throttled(_) => (S::TOO_MANY_REQUESTS, "throttled", None),
            Error::Unavailable(_) => (S::SERVICE_UNAVAILABLE, "unavailable", None),
            _ => (S::INTERNAL_SERVER_ERROR, "internal_error", None),
        };
        if status.is_server_error() {
            tracing::error!(%status, code, error = %message, "request failed");
        }
        ApiError {
            status,
            code,
            message,
            field,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut error = json!({"code": self.code, "message": self.message});
        if let Some(field) = self.field {
            error["field"] = json!(field);
        }
        (self.status, Json(json!({ "error": error }))).into_response()
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
