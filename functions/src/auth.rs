//! Authentication and request hardening: ONE axum middleware ([`guard`]) on every route of every
//! router built by [`crate::router_for`], so a route added to the table later is covered without
//! code of its own.
//!
//! For each request, in this order:
//! 1. **authenticate** → a [`Principal`] (an id, the projects it may see, its role). Local server
//!    with `--auth-file`: a bearer token looked up by its SHA-256 in a [`TokenTable`]; Lambda: the
//!    API Gateway authorizer context (JWT claims `dspy_projects` and `dspy_role`, or a Lambda
//!    authorizer's context with the same keys, or an IAM caller mapped by [`LambdaAuth`]);
//!    [`AccessControl::Off`] makes every caller [`ANONYMOUS`] (`dspy-storage serve` without
//!    `--auth-file`). No or unknown credentials → `401 unauthenticated`.
//! 2. **role**: derived from the route, never listed per route ([`required_role`]): the cleanup and
//!    backup functions need `admin`; `GET`/`HEAD` and the query function's `POST`s (search,
//!    aggregate, time series) need `reader`; everything else needs `writer`. Too weak → `403`.
//! 3. **input limits** ([`crate::extract::check_uri`], [`crate::extract::check_json`]): URI and
//!    query sizes, percent-encoding, control characters, duplicate parameters; the body is read
//!    within the body limit (`413`), and a JSON body's depth and duplicate keys are checked (`400`).
//!
//! The principal goes into the request's extensions; handlers take it ([`Caller`]) and hand it to
//! the core operation, which decides there — where the project is read — whether the caller may
//! see it (see `dspy_storage_core::access`). Nothing here looks at which projects a request names.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use dspy_storage_core::codec::sha256_hex;
use serde::Deserialize;
use serde_json::Value;

use crate::error::ApiError;
use crate::extract;
use crate::{AppState, Function};

pub use dspy_storage_core::access::{Principal, Role, Scope, ANONYMOUS};

/// A scope from a claim value as API Gateway passes it: `*`, `a,b`, `a b`, `[a b]` (how an HTTP
/// API JWT authorizer flattens an array claim) or a JSON array `["a","b"]`.
pub fn scope_from_claim(text: &str) -> Result<Scope, String> {
    let t = text.trim();
    if t.starts_with('[') {
        if let Ok(list) = serde_json::from_str::<Vec<String>>(t) {
            return Scope::from_names(list);
        }
    }
    let t = t.trim_start_matches('[').trim_end_matches(']');
    Scope::from_names(t.split(|c: char| c == ',' || c.is_whitespace()))
}

fn scope_from_value(v: &Value) -> Result<Scope, String> {
    match v {
        Value::String(s) => scope_from_claim(s),
        Value::Array(items) => Scope::from_names(
            items
                .iter()
                .map(|i| i.as_str().ok_or("dspy_projects must hold strings"))
                .collect::<Result<Vec<_>, _>>()?,
        ),
        _ => Err("dspy_projects must be a string or an array of strings".into()),
    }
}

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

/// Tokens of the local server, from a TOML file of `[[token]]` tables:
///
/// ```toml
/// [[token]]
/// name = "ci"                      # optional, for the logs
/// sha256 = "9f86d081884c7d65…"     # hex SHA-256 of the bearer token
/// projects = ["team-a", "team-b"]  # or ["*"]
/// role = "writer"                  # reader | writer | admin
/// ```
#[derive(Debug, Clone, Default)]
pub struct TokenTable {
    by_sha256: HashMap<String, Principal>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenFile {
    #[serde(default)]
    token: Vec<TokenEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenEntry {
    #[serde(default)]
    name: Option<String>,
    sha256: String,
    projects: Vec<String>,
    role: String,
}

impl TokenTable {
    pub fn from_toml(text: &str) -> Result<TokenTable, String> {
        let file: TokenFile = toml::from_str(text).map_err(|e| format!("auth file: {e}"))?;
        if file.token.is_empty() {
            return Err("auth file: no [[token]] table".into());
        }
        let mut table = TokenTable::default();
        for (i, t) in file.token.into_iter().enumerate() {
            let n = i + 1;
            let hash = t.sha256.trim().to_ascii_lowercase();
            if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(format!(
                    "auth file: token {n}: sha256 must be 64 hex digits (the SHA-256 of the token)"
                ));
            }
            let role = Role::parse(&t.role).ok_or_else(|| {
                format!("auth file: token {n}: role must be reader, writer or admin")
            })?;
            let scope =
                Scope::from_names(&t.projects).map_err(|e| format!("auth file: token {n}: {e}"))?;
            if scope == Scope::Only(BTreeSet::new()) {
                return Err(format!("auth file: token {n}: projects is empty"));
            }
            let principal = Principal::new(
                t.name
                    .map(|name| format!("token {name}"))
                    .unwrap_or_else(|| format!("token {}…", &hash[..12])),
                scope,
                role,
            );
            if table.by_sha256.insert(hash, principal).is_some() {
                return Err(format!(
                    "auth file: token {n}: the same sha256 appears twice"
                ));
            }
        }
        Ok(table)
    }

    pub fn load(path: &std::path::Path) -> Result<TokenTable, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        TokenTable::from_toml(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Adds a token in the clear (tests, embedding).
    pub fn with_token(mut self, token: &str, principal: Principal) -> TokenTable {
        self.by_sha256
            .insert(sha256_hex(token.as_bytes()), principal);
        self
    }

    pub fn len(&self) -> usize {
        self.by_sha256.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_sha256.is_empty()
    }

    fn lookup(&self, token: &str) -> Option<&Principal> {
        self.by_sha256.get(&sha256_hex(token.as_bytes()))
    }
}

/// How Lambda maps callers that come without `dspy_*` claims: an `AWS_IAM`-authorized caller
/// gets `DSPY_STORAGE_IAM_ROLE` (default `reader`) on `DSPY_STORAGE_IAM_PROJECTS` (default `*`);
/// the IAM policy's `execute-api:Invoke` resources decide which routes it reaches at all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LambdaAuth {
    pub iam_role: Role,
    pub iam_projects: Scope,
}

impl Default for LambdaAuth {
    fn default() -> Self {
        LambdaAuth {
            iam_role: Role::Reader,
            iam_projects: Scope::All,
        }
    }
}

impl LambdaAuth {
    pub fn from_env() -> Result<LambdaAuth, String> {
        let mut auth = LambdaAuth::default();
        if let Some(r) = std::env::var("DSPY_STORAGE_IAM_ROLE")
            .ok()
            .filter(|s| !s.is_empty())
        {
            auth.iam_role =
                Role::parse(&r).ok_or("DSPY_STORAGE_IAM_ROLE must be reader, writer or admin")?;
        }
        if let Some(p) = std::env::var("DSPY_STORAGE_IAM_PROJECTS")
            .ok()
            .filter(|s| !s.is_empty())
        {
            auth.iam_projects =
                scope_from_claim(&p).map_err(|e| format!("DSPY_STORAGE_IAM_PROJECTS: {e}"))?;
        }
        Ok(auth)
    }

    /// The caller of a Lambda request, from its API Gateway request context.
    fn principal(&self, parts: &http::request::Parts) -> Result<Principal, ApiError> {
        use lambda_http::request::RequestContext;
        use lambda_http::RequestExt;
        let unauthenticated =
            || unauthenticated("the request carries no authorizer context (JWT, Lambda or IAM)");
        let ctx = parts
            .extensions
            .request_context_ref()
            .ok_or_else(unauthenticated)?;
        let authorizer = match ctx {
            RequestContext::ApiGatewayV2(c) => c.authorizer.as_ref(),
            RequestContext::ApiGatewayV1(c) => Some(&c.authorizer),
            _ => None,
        };
        if let Some(a) = authorizer {
            // HTTP API JWT authorizer: claims as strings.
            if let Some(jwt) = &a.jwt {
                let name = jwt
                    .claims
                    .get("sub")
                    .map(|s| format!("jwt sub {s}"))
                    .unwrap_or_else(|| "jwt".into());
                return from_claims(
                    name,
                    jwt.claims
                        .get("dspy_projects")
                        .map(|s| Value::String(s.clone())),
                    jwt.claims.get("dspy_role").map(String::as_str),
                );
            }
            // REST API Cognito authorizer (`claims`) or a Lambda authorizer's context.
            let fields = a
                .fields
                .get("claims")
                .and_then(Value::as_object)
                .map(|c| c.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
                .unwrap_or_else(|| a.fields.clone());
            if fields.contains_key("dspy_role") || fields.contains_key("dspy_projects") {
                let name = fields
                    .get("sub")
                    .or_else(|| fields.get("principalId"))
                    .and_then(Value::as_str)
                    .map(|s| format!("authorizer {s}"))
                    .unwrap_or_else(|| "authorizer".into());
                return from_claims(
                    name,
                    fields.get("dspy_projects").cloned(),
                    fields.get("dspy_role").and_then(Value::as_str),
                );
            }
            if let Some(iam) = &a.iam {
                let who = iam
                    .user_arn
                    .clone()
                    .or_else(|| iam.caller_id.clone())
                    .unwrap_or_else(|| "unknown".into());
                return Ok(self.iam_principal(who));
            }
        }
        if let RequestContext::ApiGatewayV1(c) = ctx {
            if let Some(arn) = &c.identity.user_arn {
                return Ok(self.iam_principal(arn.clone()));
            }
        }
        Err(unauthenticated())
    }

    fn iam_principal(&self, who: String) -> Principal {
        Principal::new(
            format!("iam {who}"),
            self.iam_projects.clone(),
            self.iam_role,
        )
    }
}

fn from_claims(
    name: String,
    projects: Option<Value>,
    role: Option<&str>,
) -> Result<Principal, ApiError> {
    let forbidden = |m: String| ApiError::new(StatusCode::FORBIDDEN, "forbidden", m);
    let role = role.and_then(Role::parse).ok_or_else(|| {
        forbidden("the caller's dspy_role claim is missing or not reader, writer or admin".into())
    })?;
    let scope = projects
        .ok_or_else(|| forbidden("the caller has no dspy_projects claim".into()))
        .and_then(|v| scope_from_value(&v).map_err(|e| forbidden(format!("dspy_projects: {e}"))))?;
    Ok(Principal::new(name, scope, role))
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

    fn authenticate(&self, parts: &http::request::Parts) -> Result<Principal, ApiError> {
        match self {
            AccessControl::Off => Ok(ANONYMOUS.clone()),
            AccessControl::Tokens(table) => {
                let token = bearer(&parts.headers)
                    .ok_or_else(|| unauthenticated("send Authorization: Bearer <token>"))?;
                table
                    .lookup(token)
                    .cloned()
                    .ok_or_else(|| unauthenticated("unknown token"))
            }
            AccessControl::Lambda(l) => l.principal(parts),
        }
    }
}

fn unauthenticated(message: &str) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, "unauthenticated", message)
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty() && token.len() <= 4096)
        .then_some(token)
}

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
    extract::check_uri(&parts.uri)?;
    let bytes = extract::read_body(&parts.headers, body, gs.app.max_body_bytes).await?;
    if !bytes.is_empty() && looks_like_json(&parts.headers, &bytes) {
        extract::check_json(&bytes)?;
    }
    parts.extensions.insert(principal);
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

    #[test]
    fn project_claims_parse_in_every_shape() {
        let ab = Scope::Only(["a".to_string(), "b".to_string()].into());
        assert_eq!(scope_from_claim("a,b").unwrap(), ab);
        assert_eq!(scope_from_claim("a b").unwrap(), ab);
        assert_eq!(scope_from_claim("[a b]").unwrap(), ab);
        assert_eq!(scope_from_claim(r#"["a","b"]"#).unwrap(), ab);
        assert_eq!(scope_from_claim("*").unwrap(), Scope::All);
        assert_eq!(scope_from_claim("[a *]").unwrap(), Scope::All);
        assert!(scope_from_claim("a/../b").is_err());
    }

    #[test]
    fn token_files_are_validated() {
        let h = sha256_hex(b"secret");
        let ok = format!("[[token]]\nsha256 = \"{h}\"\nprojects = [\"a\"]\nrole = \"writer\"\n");
        let t = TokenTable::from_toml(&ok).unwrap();
        assert_eq!(t.lookup("secret").unwrap().role, Role::Writer);
        assert!(t.lookup("other").is_none());
        for bad in [
            String::new(),
            ok.replace(&h, "abc"),
            ok.replace("writer", "root"),
            ok.replace("[\"a\"]", "[]"),
            ok.replace("[\"a\"]", "[\"../etc\"]"),
            format!("{ok}{ok}"),
            ok.replace("role", "rolle"),
        ] {
            assert!(TokenTable::from_toml(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn bearer_tokens() {
        let mut h = HeaderMap::new();
        assert_eq!(bearer(&h), None);
        h.insert("authorization", "Bearer abc".parse().unwrap());
        assert_eq!(bearer(&h), Some("abc"));
        h.insert("authorization", "bearer   abc ".parse().unwrap());
        assert_eq!(bearer(&h), Some("abc"));
        h.insert("authorization", "Basic abc".parse().unwrap());
        assert_eq!(bearer(&h), None);
        h.insert("authorization", "Bearer ".parse().unwrap());
        assert_eq!(bearer(&h), None);
    }
}
