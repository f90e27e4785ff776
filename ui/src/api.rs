//! The dashboard's client of the HTTP API: requests go to the API's router in process, with the
//! signed-in caller's token as `Authorization: Bearer`, so the API's guard and handlers decide
//! everything — authentication, the role a route needs, input limits, project scope.

use axum::body::Body;
use axum::http::{header, HeaderMap, Method, Request, StatusCode};
use axum::Router;
use bytes::Bytes;
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;

/// The API router, called in process.
#[derive(Clone)]
pub struct Api {
    router: Router,
}

/// An answer of the API.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// An error answer of the API, as API.md shapes it.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: String,
    pub message: String,
    pub field: Option<String>,
}

impl ApiError {
    fn of(answer: &Answer) -> ApiError {
        let v: Value = serde_json::from_slice(&answer.body).unwrap_or(Value::Null);
        let e = &v["error"];
        ApiError {
            status: answer.status,
            code: e["code"].as_str().unwrap_or("error").to_owned(),
            message: e["message"]
                .as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| String::from_utf8_lossy(&answer.body).into_owned()),
            field: e["field"].as_str().map(str::to_owned),
        }
    }

    pub(crate) fn internal(message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            code: "internal_error".into(),
            message: message.into(),
            field: None,
        }
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

impl Api {
    pub fn new(router: Router) -> Api {
        Api { router }
    }

    /// Sends one request: `uri` is the API path with its query string, `token` the caller's.
    pub async fn send(
        &self,
        method: Method,
        uri: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> ApiResult<Answer> {
        let mut req = Request::builder().method(method).uri(uri);
        if let Some(t) = token {
            req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let body = match body {
            Some(v) => {
                req = req.header(header::CONTENT_TYPE, "application/json");
                Body::from(serde_json::to_vec(v).expect("JSON serializes"))
            }
            None => Body::empty(),
        };
        let req = req
            .body(body)
            .map_err(|e| ApiError::internal(format!("request to {uri}: {e}")))?;
        let response = self
            .router
            .clone()
            .oneshot(req)
            .await
            .map_err(|e| ApiError::internal(format!("{uri}: {e}")))?;
        let status = response.status();
        let headers = response.headers().clone();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| ApiError::internal(format!("{uri}: {e}")))?
            .to_bytes();
        Ok(Answer {
            status,
            headers,
            body,
        })
    }

    /// Sends a request and reads a 2xx answer's JSON (`null` when empty); any other status is
    /// the API's error.
    pub async fn json(
        &self,
        method: Method,
        uri: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> ApiResult<Value> {
        let answer = self.ok(method, uri, token, body).await?;
        if answer.body.is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&answer.body)
            .map_err(|e| ApiError::internal(format!("{uri} answered no JSON: {e}")))
    }

    /// Sends a request; any status but 2xx is the API's error.
    pub async fn ok(
        &self,
        method: Method,
        uri: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> ApiResult<Answer> {
        let answer = self.send(method, uri, token, body).await?;
        if answer.status.is_success() || answer.status == StatusCode::NOT_MODIFIED {
            Ok(answer)
        } else {
            Err(ApiError::of(&answer))
        }
    }

    pub async fn get(&self, uri: &str, token: Option<&str>) -> ApiResult<Value> {
        self.json(Method::GET, uri, token, None).await
    }
}
