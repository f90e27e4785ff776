//! Reading requests: bodies with a size limit, JSON with our error shape, query parameters.

use std::collections::HashMap;

use axum::body::Body;
use axum::http::{HeaderMap, StatusCode};
use bytes::Bytes;
use dspy_storage_core::domain::{Project, Signature};
use serde::de::DeserializeOwned;

use crate::error::{ApiError, ApiResult};

/// Reads a whole body, refusing more than `limit` bytes with `413`.
pub async fn read_body(headers: &HeaderMap, body: Body, limit: usize) -> ApiResult<Bytes> {
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("the request body is over the limit of {limit} bytes"),
        )
    };
    if let Some(len) = headers
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
    {
        if len > limit as u64 {
            return Err(too_large());
        }
    }
    axum::body::to_bytes(body, limit)
        .await
        .map_err(|_| too_large())
}

/// Parses a JSON body into `T`; any failure is a `400` saying where.
pub fn parse_json<'a, T: serde::Deserialize<'a>>(bytes: &'a [u8]) -> ApiResult<T> {
    if bytes.is_empty() {
        return Err(ApiError::bad_request(
            "the request body is empty; a JSON object is expected",
        ));
    }
    serde_json::from_slice(bytes)
        .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))
}

/// Parses an owned JSON value (for bodies that hold no borrowed parts).
pub fn parse_json_owned<T: DeserializeOwned>(bytes: &[u8]) -> ApiResult<T> {
    parse_json(bytes)
}

/// Query parameters, validated one by one.
pub struct Params(pub HashMap<String, String>);

impl Params {
    pub fn from_uri(uri: &axum::http::Uri) -> ApiResult<Self> {
        let q = uri.query().unwrap_or("");
        let pairs: Vec<(String, String)> = serde_urlencoded_pairs(q)?;
        let mut map = HashMap::new();
        for (k, v) in pairs {
            if map.insert(k.clone(), v).is_some() {
                return Err(
                    ApiError::bad_request(format!("query parameter {k} is given twice")).field(k),
                );
            }
        }
        Ok(Params(map))
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    pub fn project(&self) -> ApiResult<Project> {
        match self.get("project") {
            None => Ok(Project::default_project()),
            Some(p) => Project::parse(p).map_err(ApiError::from),
        }
    }

    pub fn usize(&self, name: &str) -> ApiResult<Option<usize>> {
        self.get(name)
            .map(|v| {
                v.parse::<usize>().map_err(|_| {
                    ApiError::bad_request(format!("{name} must be a non-negative integer"))
                        .field(name)
                })
            })
            .transpose()
    }

    pub fn bool(&self, name: &str) -> ApiResult<bool> {
        match self.get(name) {
            None => Ok(false),
            Some("true") | Some("1") => Ok(true),
            Some("false") | Some("0") => Ok(false),
            Some(_) => {
                Err(ApiError::bad_request(format!("{name} must be true or false")).field(name))
            }
        }
    }
}

fn serde_urlencoded_pairs(q: &str) -> ApiResult<Vec<(String, String)>> {
    let mut out = Vec::new();
    for part in q.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = part.split_once('=').unwrap_or((part, ""));
        let dec = |s: &str| {
            let s = s.replace('+', " ");
            percent_decode(&s).ok_or_else(|| {
                ApiError::bad_request("the query string is not valid percent-encoded UTF-8")
            })
        };
        out.push((dec(k)?, dec(v)?));
    }
    Ok(out)
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            let v = u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?;
            out.push(v);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// A signature from a path segment.
pub fn signature(raw: &str) -> ApiResult<Signature> {
    Signature::parse(raw).map_err(ApiError::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_query() {
        let p = Params::from_uri(&"/x?project=a%2Db&q=version%3A1.*+x".parse().unwrap()).unwrap();
        assert_eq!(p.get("project"), Some("a-b"));
        assert_eq!(p.get("q"), Some("version:1.* x"));
        assert!(Params::from_uri(&"/x?a=1&a=2".parse().unwrap()).is_err());
        assert!(Params::from_uri(&"/x?a=%ZZ".parse().unwrap()).is_err());
    }
}
