//! Access control and request hardening: ONE axum middleware ([`guard`]) on every route of every
//! router built by [`crate::router_for`], so a route added to the table later is covered without
//! code of its own.
//!
//! For each request, in this order:
//! 1. **authenticate** → a [`Principal`] (projects and role). Local server with `--auth-file`: a
//!    bearer token looked up by its SHA-256 in a [`TokenTable`]; Lambda: the API Gateway
//!    authorizer context (JWT claims `dspy_projects` and `dspy_role`, or a Lambda authorizer's
//!    context with the same keys, or an IAM caller mapped by [`LambdaAuth`]);
//!    [`AccessControl::Off`] lets everything through (`dspy-storage serve` without `--auth-file`).
//!    No or unknown credentials → `401 unauthenticated`.
//! 2. **role**: derived from the route, never listed per route ([`required_role`]): the cleanup and
//!    backup functions need `admin`; `GET`/`HEAD` and the query function's `POST`s (search,
//!    aggregate, time series) need `reader`; everything else needs `writer`. Too weak → `403`.
//! 3. **input limits** ([`crate::extract::check_uri`], [`crate::extract::check_json`]): URI and
//!    query sizes, percent-encoding, control characters, duplicate parameters; the body is read
//!    within the body limit (`413`), and a JSON body's depth and duplicate keys are checked (`400`).
//! 4. **project scope** (restricted principals only; one `GetItem` for `{id}` routes): every
//!    project the request names — `?project=`, a body's top-level `project` or `metadata.project`
//!    (default `default` on signature routes without `?project=`, on `POST /programs` without
//!    `metadata.project`, and on any write naming no project or program), the project of the program of
//!    a `/programs/{id}…` path and of a `?with=` program id — must be one the caller may see, else
//!    `404 not_found` with the same message as an unknown program (no existence leak). A
//!    whole-store route (the backup function; an admin route naming no project) needs projects
//!    `*` (`403`).
//!
//! The principal is put in the request's extensions: handlers that list across projects (search,
//! aggregate, report) filter with [`Principal::may_see`] / [`Principal::project_filter`].

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use dspy_storage_core::codec::sha256_hex;
use dspy_storage_core::domain::{ProgramId, Project};
use serde::Deserialize;
use serde_json::Value;

use crate::error::ApiError;
use crate::extract;
use crate::{AppState, Function};

/// What a caller may do. Ordered: each role can do everything the previous one can.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Read and search.
    Reader,
    /// + store, metrics, aliases, rollback, delete, metadata updates.
    Writer,
    /// + cleanup, archive, restore, backups.
    Admin,
}

impl Role {
    pub fn parse(s: &str) -> Option<Role> {
        match s.trim().to_ascii_lowercase().as_str() {
            "reader" => Some(Role::Reader),
            "writer" => Some(Role::Writer),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Reader => "reader",
            Role::Writer => "writer",
            Role::Admin => "admin",
        }
    }
}

/// The projects a caller may see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Projects {
    /// `*`: every project (and whole-store operations).
    All,
    Only(BTreeSet<String>),
}

impl Projects {
    /// From a list of names; `*` anywhere means all. Each name must be a valid project.
    pub fn from_names<I, S>(names: I) -> Result<Projects, String>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut set = BTreeSet::new();
        for n in names {
            let n = n.as_ref().trim();
            if n.is_empty() {
                continue;
            }
            if n == "*" {
                return Ok(Projects::All);
            }
            Project::parse(n).map_err(|e| format!("project {n:?}: {e}"))?;
            set.insert(n.to_owned());
        }
        Ok(Projects::Only(set))
    }

    /// From a claim value as API Gateway passes it: `*`, `a,b`, `a b`, `[a b]` (how an HTTP API
    /// JWT authorizer flattens an array claim) or a JSON array `["a","b"]`.
    pub fn from_claim(text: &str) -> Result<Projects, String> {
        let t = text.trim();
        if t.starts_with('[') {
            if let Ok(list) = serde_json::from_str::<Vec<String>>(t) {
                return Projects::from_names(list);
            }
        }
        let t = t.trim_start_matches('[').trim_end_matches(']');
        Projects::from_names(t.split(|c: char| c == ',' || c.is_whitespace()))
    }

    fn from_value(v: &Value) -> Result<Projects, String> {
        match v {
            Value::String(s) => Projects::from_claim(s),
            Value::Array(items) => Projects::from_names(
                items
                    .iter()
                    .map(|i| i.as_str().ok_or("dspy_projects must hold strings"))
                    .collect::<Result<Vec<_>, _>>()?,
            ),
            _ => Err("dspy_projects must be a string or an array of strings".into()),
        }
    }
}

/// Who is calling: a name for the logs (never a secret), the projects and the role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub name: String,
    pub projects: Projects,
    pub role: Role,
}

impl Principal {
    /// Everything allowed: what [`AccessControl::Off`] puts in the extensions.
    pub fn unrestricted() -> Principal {
        Principal {
            name: "anonymous (access control off)".into(),
            projects: Projects::All,
            role: Role::Admin,
        }
    }

    pub fn may_see(&self, project: &str) -> bool {
        match &self.projects {
            Projects::All => true,
            Projects::Only(set) => set.contains(project),
        }
    }

    /// `None`: every project; `Some(set)`: only these (for handlers that list across projects).
    pub fn project_filter(&self) -> Option<&BTreeSet<String>> {
        match &self.projects {
            Projects::All => None,
            Projects::Only(set) => Some(set),
        }
    }

    pub fn is_restricted(&self) -> bool {
        self.projects != Projects::All
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
            let projects = Projects::from_names(&t.projects)
                .map_err(|e| format!("auth file: token {n}: {e}"))?;
            if projects == Projects::Only(BTreeSet::new()) {
                return Err(format!("auth file: token {n}: projects is empty"));
            }
            let principal = Principal {
                name: t.name.unwrap_or_else(|| format!("token {}…", &hash[..8])),
                projects,
                role,
            };
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
    pub iam_projects: Projects,
}

impl Default for LambdaAuth {
    fn default() -> Self {
        LambdaAuth {
            iam_role: Role::Reader,
            iam_projects: Projects::All,
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
                Projects::from_claim(&p).map_err(|e| format!("DSPY_STORAGE_IAM_PROJECTS: {e}"))?;
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
        Principal {
            name: format!("iam {who}"),
            projects: self.iam_projects.clone(),
            role: self.iam_role,
        }
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
    let projects = projects
        .ok_or_else(|| forbidden("the caller has no dspy_projects claim".into()))
        .and_then(|v| {
            Projects::from_value(&v).map_err(|e| forbidden(format!("dspy_projects: {e}")))
        })?;
    Ok(Principal {
        name,
        projects,
        role,
    })
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
            AccessControl::Off => Ok(Principal::unrestricted()),
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

/// Query parameters that name another program by id (its project is checked like the path's).
pub const PROGRAM_ID_PARAMS: [&str; 1] = ["with"];

/// The middleware state of one route: the app state, the function serving the route and its
/// path as written in the route table.
#[derive(Clone)]
pub struct GuardState {
    pub app: AppState,
    pub function: Function,
    pub path: &'static str,
}

/// The middleware: authenticate, authorize, check the input limits and the project scope (see the
/// module doc), then hand the request on unchanged (its body re-assembled from the bytes read).
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
        Principal::unrestricted()
    } else {
        access.authenticate(&parts).inspect_err(|e| {
            tracing::info!(method = %parts.method, route = %path, reason = %e.message, "unauthenticated request refused");
        })?
    };
    // 2. May this role call this route?
    let needed = required_role(function, &parts.method);
    if principal.role < needed {
        tracing::info!(principal = %principal.name, method = %parts.method, route = %path, "role too weak");
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
    // 4. Project scope.
    if principal.is_restricted() && !public {
        check_scope(gs, &principal, &parts, function, path, &params, &bytes).await?;
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

fn hidden(what: &str) -> ApiError {
    ApiError::not_found(what.to_owned())
}

#[allow(clippy::too_many_arguments)]
async fn check_scope(
    gs: &GuardState,
    principal: &Principal,
    parts: &http::request::Parts,
    function: Function,
    path: &str,
    params: &[(String, String)],
    body: &[u8],
) -> Result<(), ApiError> {
    let mut named: Vec<String> = params
        .iter()
        .filter(|(k, _)| k == "project")
        .map(|(_, v)| v.clone())
        .collect();
    let query_named = !named.is_empty();
    let mut body_named = false;
    if !body.is_empty() {
        if let Ok(v) = serde_json::from_slice::<Value>(body) {
            let before = named.len();
            body_projects(&v, &mut named)?;
            body_named = named.len() > before;
        }
    }
    // Where the handlers take the project from, the default applies when it is absent THERE
    // (a `?project=` beside a store body that names none must not hide the default project).
    let signature_scoped = path == "/signatures" || path.contains("{signature}");
    let stores_program = path == "/programs" && parts.method == Method::POST;
    // Programs named by id: the path's `{id}` and id-valued query parameters.
    let mut ids: Vec<String> = Vec::new();
    if path.starts_with("/programs/{id}") {
        if let Some(id) = parts.uri.path().split('/').nth(2) {
            ids.push(percent_decoded(id));
        }
    }
    for (k, v) in params {
        if PROGRAM_ID_PARAMS.contains(&k.as_str()) {
            ids.push(v.clone());
        }
    }
    if (signature_scoped && !query_named) || (stores_program && !body_named) {
        named.push(Project::DEFAULT.to_owned());
    }
    // A write that names no project and no program lands in the default project (every write
    // route of the API defaults so): the caller must be allowed there. (Reads naming none list
    // across projects: their handlers filter with the principal.)
    let needed = required_role(function, &parts.method);
    if named.is_empty() && ids.is_empty() && needed == Role::Writer {
        named.push(Project::DEFAULT.to_owned());
    }
    for p in &named {
        if !principal.may_see(p) {
            tracing::info!(principal = %principal.name, route = %path, "project outside the caller's scope");
            return Err(hidden(&format!(
                "signature or project not found (project {p:?})"
            )));
        }
    }
    for raw in &ids {
        let Ok(id) = ProgramId::parse(raw) else {
            continue; // a malformed id names no program: the handler answers 404
        };
        match gs.app.storage.get_record(&id).await {
            Ok(record) if !principal.may_see(record.project.as_str()) => {
                tracing::info!(principal = %principal.name, route = %path, "program outside the caller's scope");
                return Err(hidden(&format!("no program with id {id}")));
            }
            Ok(_) | Err(dspy_storage_core::Error::NotFound(_)) => {}
            Err(e) => return Err(e.into()),
        }
    }
    // Whole-store operations: backups, and admin routes that name no project or program.
    let whole_store = function == Function::Backup
        || (needed == Role::Admin && named.is_empty() && ids.is_empty());
    if whole_store {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!(
                "{} {path} works on the whole store: it needs projects \"*\"",
                parts.method
            ),
        ));
    }
    Ok(())
}

fn percent_decoded(segment: &str) -> String {
    extract::percent_decode(segment).unwrap_or_else(|| segment.to_owned())
}

/// Projects a JSON body names: `project` at the top level, in `metadata` or in `filters` — a
/// string, an array of strings, or an operator object whose `eq`/`in` name them. Any other
/// operator on `project` (`ne`, `prefix`, …) could reach projects the caller may not see: refused
/// for restricted callers.
fn body_projects(v: &Value, out: &mut Vec<String>) -> Result<(), ApiError> {
    let Some(obj) = v.as_object() else {
        return Ok(());
    };
    let mut candidates = vec![obj.get("project")];
    for container in ["metadata", "filters"] {
        candidates.push(obj.get(container).and_then(|m| m.get("project")));
    }
    for p in candidates.into_iter().flatten() {
        collect_project_names(p, out)?;
    }
    Ok(())
}

fn collect_project_names(v: &Value, out: &mut Vec<String>) -> Result<(), ApiError> {
    match v {
        Value::String(s) => out.push(s.clone()),
        Value::Array(items) => {
            for i in items {
                collect_project_names(i, out)?;
            }
        }
        Value::Object(ops) => {
            for (op, operand) in ops {
                match op.as_str() {
                    "eq" | "in" => collect_project_names(operand, out)?,
                    _ => {
                        return Err(ApiError::new(
                            StatusCode::FORBIDDEN,
                            "forbidden",
                            format!("a caller restricted to some projects filters project with eq or in, not {op}"),
                        )
                        .field("project"))
                    }
                }
            }
        }
        _ => {} // wrong types are the handler's 400
    }
    Ok(())
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
        let ab = Projects::Only(["a".to_string(), "b".to_string()].into());
        assert_eq!(Projects::from_claim("a,b").unwrap(), ab);
        assert_eq!(Projects::from_claim("a b").unwrap(), ab);
        assert_eq!(Projects::from_claim("[a b]").unwrap(), ab);
        assert_eq!(Projects::from_claim(r#"["a","b"]"#).unwrap(), ab);
        assert_eq!(Projects::from_claim("*").unwrap(), Projects::All);
        assert_eq!(Projects::from_claim("[a *]").unwrap(), Projects::All);
        assert!(Projects::from_claim("a/../b").is_err());
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

    #[test]
    fn body_projects_are_collected() {
        let mut out = Vec::new();
        body_projects(
            &serde_json::json!({"metadata": {"project": "a"}, "filters": {"project": {"in": ["b", "c"]}}, "project": "d"}),
            &mut out,
        )
        .unwrap();
        out.sort();
        assert_eq!(out, ["a", "b", "c", "d"]);
        assert!(body_projects(&serde_json::json!({"project": {"ne": "a"}}), &mut out).is_err());
    }
}
