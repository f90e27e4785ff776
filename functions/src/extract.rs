//! Reading requests: bodies with a size limit, JSON with our error shape, query parameters.
//!
//! The query string is decoded ONCE per request, by the guard ([`check_uri`], which also enforces
//! the limits); the decoded [`Params`] travel in the request's extensions and handlers take them
//! as an axum extractor. Percent-escapes are decoded here, strictly: a malformed escape or
//! non-UTF-8 result is a `400`, where the lenient decoders of `percent-encoding` and
//! `form_urlencoded` would pass `%ZZ` through as text.

use std::collections::HashMap;

use axum::body::Body;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
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
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        // The path of the value that failed (`trials`, `records[3].timestamp`) is its `field`.
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path.is_empty() || path == "." {
            ApiError::bad_request(format!("invalid JSON body: {inner}"))
        } else {
            ApiError::bad_request(format!("invalid JSON body: {path}: {inner}")).field(path)
        }
    })?;
    de.end()
        .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))?;
    Ok(value)
}

/// Reads a body ([`read_body`]) and parses it as JSON ([`parse_json`]).
pub async fn json_body<T: DeserializeOwned>(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
) -> ApiResult<T> {
    parse_json(&read_body(headers, body, limit).await?)
}

/// [`json_body`], where an empty (or all-whitespace) body means `T::default()`.
pub async fn json_body_or_default<T: DeserializeOwned + Default>(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
) -> ApiResult<T> {
    let bytes = read_body(headers, body, limit).await?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    parse_json(&bytes)
}

/// Parses an owned JSON value (for bodies that hold no borrowed parts).
pub fn parse_json_owned<T: DeserializeOwned>(bytes: &[u8]) -> ApiResult<T> {
    parse_json(bytes)
}

/// Query parameters, validated one by one. An axum extractor: the guard decodes the query
/// string once and leaves the result in the request's extensions; outside the guard (a router
/// built without it, a unit test) the query string is decoded here, with the same rules.
#[derive(Clone, Debug, Default)]
pub struct Params(pub HashMap<String, String>);

impl<S: Send + Sync> FromRequestParts<S> for Params {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        // Taken, not copied: a handler takes its parameters once.
        match parts.extensions.remove::<Params>() {
            Some(params) => Ok(params),
            None => Params::from_uri(&parts.uri),
        }
    }
}

impl Params {
    /// The query string of `uri`, without the guard's limits; a name given twice is a `400`.
    pub fn from_uri(uri: &axum::http::Uri) -> ApiResult<Self> {
        let q = uri.query().unwrap_or("");
        let mut map = HashMap::new();
        for (k, v) in serde_urlencoded_pairs(q)? {
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

    /// `?project=`, default `default`.
    pub fn project(&self) -> ApiResult<Project> {
        Ok(self
            .explicit_project()?
            .unwrap_or_else(Project::default_project))
    }

    /// `?project=` when given (a search must know whether it was: see
    /// `dspy_storage_core::query::parse::search_project`).
    pub fn explicit_project(&self) -> ApiResult<Option<Project>> {
        self.get("project")
            .map(|p| Project::parse(p).map_err(ApiError::from))
            .transpose()
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

/// Percent-decodes `s`; `None` when an escape is malformed or the result is not UTF-8.
pub fn percent_decode(s: &str) -> Option<String> {
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

/// Longest request URI (path and query), in bytes.
pub const MAX_URI_BYTES: usize = 8192;
/// Longest query string, in bytes.
pub const MAX_QUERY_BYTES: usize = 4096;
/// Most query parameters in one request.
pub const MAX_QUERY_PARAMS: usize = 32;
/// Longest decoded query parameter value, in characters.
pub const MAX_PARAM_CHARS: usize = 2048;
/// Longest search query (`q`), in characters, and most terms in it.
pub const MAX_SEARCH_QUERY_CHARS: usize = 1024;
pub const MAX_SEARCH_QUERY_TERMS: usize = 32;
/// Deepest nesting of a JSON body (objects and arrays).
pub const MAX_JSON_DEPTH: usize = 64;

/// Checks a request URI against the limits above (every route, before its handler): sizes,
/// percent-encoding, control characters, a parameter given twice. Returns the decoded
/// parameters (what the guard hands on to the handlers).
pub fn check_uri(uri: &axum::http::Uri) -> ApiResult<Params> {
    let uri_len = uri.path().len() + uri.query().map_or(0, |q| q.len() + 1);
    if uri_len > MAX_URI_BYTES {
        return Err(ApiError::bad_request(format!(
            "the request URI is longer than {MAX_URI_BYTES} bytes"
        )));
    }
    let path = percent_decode(uri.path())
        .ok_or_else(|| ApiError::bad_request("the path is not valid percent-encoded UTF-8"))?;
    if path.chars().any(char::is_control) {
        return Err(ApiError::bad_request(
            "the path contains control characters",
        ));
    }
    let q = uri.query().unwrap_or("");
    if q.len() > MAX_QUERY_BYTES {
        return Err(ApiError::bad_request(format!(
            "the query string is longer than {MAX_QUERY_BYTES} bytes"
        )));
    }
    let pairs = serde_urlencoded_pairs(q)?;
    if pairs.len() > MAX_QUERY_PARAMS {
        return Err(ApiError::bad_request(format!(
            "at most {MAX_QUERY_PARAMS} query parameters are allowed"
        )));
    }
    let mut params = HashMap::with_capacity(pairs.len());
    for (k, v) in pairs {
        if params.contains_key(&k) {
            return Err(
                ApiError::bad_request(format!("query parameter {k} is given twice")).field(k),
            );
        }
        if k.is_empty() || k.len() > 64 || k.chars().any(char::is_control) {
            return Err(ApiError::bad_request(
                "query parameter names must be 1-64 printable characters",
            ));
        }
        if v.chars().any(|c| c.is_control() && c != '\t') {
            return Err(ApiError::bad_request(format!(
                "query parameter {k} contains control characters"
            ))
            .field(k));
        }
        let chars = v.chars().count();
        if chars > MAX_PARAM_CHARS {
            return Err(ApiError::bad_request(format!(
                "query parameter {k} is longer than {MAX_PARAM_CHARS} characters"
            ))
            .field(k));
        }
        if k == "q" {
            if chars > MAX_SEARCH_QUERY_CHARS {
                return Err(ApiError::bad_request(format!(
                    "the search query is longer than {MAX_SEARCH_QUERY_CHARS} characters"
                ))
                .field("q"));
            }
            if v.split_whitespace().count() > MAX_SEARCH_QUERY_TERMS {
                return Err(ApiError::bad_request(format!(
                    "the search query has more than {MAX_SEARCH_QUERY_TERMS} terms"
                ))
                .field("q"));
            }
        }
        params.insert(k, v);
    }
    Ok(Params(params))
}

/// Checks a JSON body before any handler parses it: well-formed, nested at most
/// [`MAX_JSON_DEPTH`] deep, no object with the same key twice (two `project`s could otherwise
/// be read differently by two readers). `400` saying what is wrong.
pub fn check_json(bytes: &[u8]) -> ApiResult<()> {
    use serde::de::Deserializer as _;
    let mut de = serde_json::Deserializer::from_slice(bytes);
    de.deserialize_any(JsonShape { depth: 0 })
        .and_then(|()| de.end())
        .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))
}

/// A visitor that walks JSON without building it, checking depth and duplicate keys.
struct JsonShape {
    depth: usize,
}

impl<'de> serde::de::DeserializeSeed<'de> for JsonShape {
    type Value = ();
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for JsonShape {
    type Value = ();
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let depth = self.nested::<A::Error>()?;
        while seq.next_element_seed(JsonShape { depth })?.is_some() {}
        Ok(())
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let depth = self.nested::<A::Error>()?;
        let mut keys = std::collections::HashSet::new();
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            if !keys.insert(key.clone()) {
                return Err(serde::de::Error::custom(format!(
                    "the key {key:?} appears twice in one object"
                )));
            }
            map.next_value_seed(JsonShape { depth })?;
        }
        Ok(())
    }
}

impl JsonShape {
    fn nested<E: serde::de::Error>(&self) -> Result<usize, E> {
        if self.depth >= MAX_JSON_DEPTH {
            return Err(E::custom(format!(
                "the body is nested deeper than {MAX_JSON_DEPTH} levels"
            )));
        }
        Ok(self.depth + 1)
    }
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

    #[tokio::test]
    async fn the_extractor_takes_the_guards_params_and_decodes_without_them() {
        let req = axum::http::Request::get("/x?project=a%2Db&limit=5")
            .body(())
            .unwrap();
        let (mut parts, ()) = req.into_parts();
        let decoded = Params::from_request_parts(&mut parts, &()).await.unwrap();
        assert_eq!(decoded.get("project"), Some("a-b"));
        assert_eq!(decoded.usize("limit").unwrap(), Some(5));
        // What the guard decoded is what the handler sees; the URI is not read again.
        let from_guard = check_uri(&"/x?project=b".parse().unwrap()).unwrap();
        parts.extensions.insert(from_guard);
        let taken = Params::from_request_parts(&mut parts, &()).await.unwrap();
        assert_eq!(taken.get("project"), Some("b"));
        assert_eq!(taken.get("limit"), None);
        let (mut bad, ()) = axum::http::Request::get("/x?a=%ZZ")
            .body(())
            .unwrap()
            .into_parts();
        let err = Params::from_request_parts(&mut bad, &()).await.unwrap_err();
        assert_eq!(err.status, StatusCode::BAD_REQUEST);
    }

    #[test]
    fn json_shape() {
        assert!(check_json(br#"{"a": [1, {"b": null}], "c": "x"}"#).is_ok());
        assert!(check_json(br#"{"a": 1, "a": 2}"#).is_err());
        assert!(check_json(br#"{"a": {"b": 1, "b": 1}}"#).is_err());
        assert!(check_json(b"{\"a\": 1} x").is_err());
        let deep = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
        assert!(check_json(deep(MAX_JSON_DEPTH).as_bytes()).is_ok());
        assert!(check_json(deep(MAX_JSON_DEPTH + 1).as_bytes()).is_err());
        assert!(check_json(deep(100_000).as_bytes()).is_err());
    }

    #[test]
    fn uri_limits() {
        assert!(check_uri(&"/x?a=1&b=2".parse().unwrap()).is_ok());
        assert!(check_uri(&"/x?a=1&a=2".parse().unwrap()).is_err());
        assert!(check_uri(&"/x?a=%00".parse().unwrap()).is_err());
        assert!(check_uri(&"/x%00y".parse().unwrap()).is_err());
        assert!(check_uri(&"/x?a=%C3%28".parse().unwrap()).is_err());
        let many: Vec<String> = (0..=MAX_QUERY_PARAMS).map(|i| format!("p{i}=1")).collect();
        assert!(check_uri(&format!("/x?{}", many.join("&")).parse().unwrap()).is_err());
        let terms = vec!["t"; MAX_SEARCH_QUERY_TERMS + 1].join("+");
        assert!(check_uri(&format!("/x?q={terms}").parse().unwrap()).is_err());
    }
}
