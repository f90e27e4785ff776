//! Routes whose capability has not landed yet answer `501` in the API's error shape.

use axum::http::Method;
use axum::http::Uri;

use crate::error::ApiError;

pub async fn not_implemented(method: Method, uri: Uri) -> ApiError {
    ApiError::not_implemented(&format!("{method} {}", uri.path()))
}
