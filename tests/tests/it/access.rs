//! Access control on both backends, through the HTTP API: bearer tokens of an auth file (the
//! local server) and API Gateway authorizer contexts (Lambda).
//!
//! The access table (`access_table`) lists, for EVERY route of the route table, the role it needs
//! and every input through which a request names a project; each is tried with no token, too weak
//! a role, the wrong project and an allowed caller (see the comment above `access_table`). A route
//! of the route table without an entry fails the test.
//!
//! Every refused request (401, 403, 404) is checked to change nothing in the store.

use std::sync::Arc;

use axum::body::Body;
use dspy_storage_core::blob::codec::sha256_hex;
use dspy_storage_functions::auth::{
    scope_from_claim, AccessControl, LambdaAuth, Principal, Role, TokenTable,
};
use dspy_storage_functions::{function_router, AppState, Function};
use dspy_storage_tests::{backends, Answer, Client, Kind, TestStore};
use http::Method;
use serde_json::{json, Value};
use tower::ServiceExt;

const ADMIN: &str = "tok-admin-all";
const WRITER_A: &str = "tok-writer-a";
const READER_A: &str = "tok-reader-a";
const ADMIN_A: &str = "tok-admin-a";
const WRITER_B: &str = "tok-writer-b";

/// The auth file of these tests, as an operator writes it (hashes, not tokens).
fn auth_file() -> String {
    let entry = |name: &str, token: &str, projects: &str, role: &str| {
        format!(
            "[[token]]\nname = \"{name}\"\nsha256 = \"{}\"\nprojects = {projects}\nrole = \"{role}\"\n\n",
            sha256_hex(token.as_bytes())
        )
    };
    [
        entry("admin", ADMIN, r#"["*"]"#, "admin"),
        entry("writer-a", WRITER_A, r#"["a"]"#, "writer"),
        entry("reader-a", READER_A, r#"["a"]"#, "reader"),
        entry("admin-a", ADMIN_A, r#"["a"]"#, "admin"),
        entry("writer-b", WRITER_B, r#"["b"]"#, "writer"),
    ]
    .concat()
}

fn tokens() -> AccessControl {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("auth.toml");
    std::fs::write(&path, auth_file()).unwrap();
    AccessControl::Tokens(Arc::new(TokenTable::load(&path).expect("auth file loads")))
}

struct Ids {
    a: String,
    b: String,
}

/// Two versions of S in project a (production → 1.0.0), one in project b.
async fn setup(admin: &Client, k: Kind) -> Ids {
    let store = |project: &str| {
        json!({"program": {"predict": {"demos": [], "signature": {"instructions": "Answer.", "fields": []}}},
               "metadata": {"signature": "S", "project": project}})
    };
    let mut ids = Vec::new();
    for project in ["a", "a", "b"] {
        let a = call(
            admin,
            Some(ADMIN),
            Method::POST,
            "/programs",
            Some(&store(project)),
        )
        .await;
        ids.push(
            a.expect(k, "setup store", 201)["id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    call(
        admin,
        Some(ADMIN),
        Method::PUT,
        "/signatures/S/aliases/production?project=a",
        Some(&json!({"version": "1.0.0"})),
    )
    .await
    .expect(k, "setup alias", 200);
    Ids {
        a: ids[0].clone(),

        b: ids[2].clone(),
    }
}

async fn call(
    client: &Client,
    token: Option<&str>,
    method: Method,
    uri: &str,
    body: Option<&Value>,
) -> Answer {
    let auth = token.map(|t| format!("Bearer {t}"));
    let mut headers = vec![("content-type", "application/json")];
    if let Some(a) = &auth {
        headers.push(("authorization", a.as_str()));
    }
    let body = body.map_or_else(Body::empty, |b| Body::from(b.to_string()));
    client.request(method, uri, &headers, body).await
}

const UNKNOWN_ID: &str = "01936d3e-0000-7000-8000-000000000000";

#[tokio::test]
async fn another_projects_program_is_indistinguishable_from_a_missing_one() {
    for store in backends().await {
        let k = store.kind;
        let client = store.client_with_access(tokens());
        let ids = setup(&client, k).await;
        for suffix in ["", "/metadata", "/prompt"] {
            let hidden = call(
                &client,
                Some(READER_A),
                Method::GET,
                &format!("/programs/{}{suffix}", ids.b),
                None,
            )
            .await;
            let missing = call(
                &client,
                Some(READER_A),
                Method::GET,
                &format!("/programs/{UNKNOWN_ID}{suffix}"),
                None,
            )
            .await;
            let h = hidden.expect_error(k, "hidden", 404, "not_found");
            let m = missing.expect_error(k, "missing", 404, "not_found");
            assert_eq!(
                h["error"]["message"]
                    .as_str()
                    .unwrap()
                    .replace(&ids.b, "ID"),
                m["error"]["message"]
                    .as_str()
                    .unwrap()
                    .replace(UNKNOWN_ID, "ID"),
                "{k:?}: {suffix}: same message for hidden and missing"
            );
            assert_eq!(
                h.as_object().unwrap().keys().collect::<Vec<_>>(),
                m.as_object().unwrap().keys().collect::<Vec<_>>()
            );
        }
    }
}

#[tokio::test]
async fn access_control_off_lets_everything_through() {
    // The default of `serve` and of the test fixture: no token needed, nothing refused.
    for store in backends().await {
        let k = store.kind;
        let client = store.client();
        let s = client
            .post_json(
                "/programs",
                &json!({"program": 1, "metadata": {"signature": "S", "project": "zz"}}),
            )
            .await
            .expect(k, "store", 201);
        client
            .get(&format!("/programs/{}", s["id"].as_str().unwrap()))
            .await
            .expect(k, "load", 200);
        // A token is ignored when access control is off.
        call(
            &client,
            Some("whatever"),
            Method::GET,
            "/signatures?project=zz",
            None,
        )
        .await
        .expect(k, "list", 200);
    }
}

// ----- Lambda: the API Gateway authorizer context ------------------------------------------------

fn fixture(name: &str) -> Value {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/events")
        .join(name);
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// An API Gateway v2 event for `method path` with `authorizer` as its request context's
/// authorizer (None: no authorizer at all).
fn lambda_event(
    method: &str,
    path: &str,
    body: Option<&Value>,
    authorizer: Option<Value>,
) -> String {
    let (path_only, query) = path.split_once('?').unwrap_or((path, ""));
    let mut e = fixture("load-get-health.json");
    e["routeKey"] = Value::String(format!("{method} {path_only}"));
    e["rawPath"] = Value::String(path_only.into());
    e["rawQueryString"] = Value::String(query.into());
    e["requestContext"]["http"]["method"] = Value::String(method.into());
    e["requestContext"]["http"]["path"] = Value::String(path_only.into());
    e["requestContext"]["routeKey"] = e["routeKey"].clone();
    match authorizer {
        Some(a) => e["requestContext"]["authorizer"] = a,
        None => {
            e["requestContext"]
                .as_object_mut()
                .unwrap()
                .remove("authorizer");
        }
    }
    if let Some(b) = body {
        let text = b.to_string();
        e["headers"]["content-type"] = "application/json".into();
        e["headers"]["content-length"] = Value::String(text.len().to_string());
        e["body"] = Value::String(text);
    }
    e.to_string()
}

fn jwt(projects: &str, role: &str) -> Value {
    json!({"jwt": {"claims": {"sub": "user-1", "dspy_projects": projects, "dspy_role": role}, "scopes": null}})
}

async fn invoke(store: &TestStore, auth: &LambdaAuth, function: Function, event: &str) -> Answer {
    let state =
        AppState::new(store.storage.clone()).with_access(AccessControl::Lambda(auth.clone()));
    let request = lambda_http::request::from_str(event).expect("a valid API Gateway event");
    let response = function_router(state, function)
        .oneshot(request)
        .await
        .expect("infallible");
    Answer::from_response(response).await
}

#[tokio::test]
async fn lambda_takes_projects_and_role_from_the_authorizer() {
    let auth = LambdaAuth::default();
    for store in backends().await {
        let k = store.kind;
        let store_body =
            |p: &str| json!({"program": {"x": 1}, "metadata": {"signature": "L", "project": p}});
        // JWT claims in the shapes API Gateway passes them.
        let mut ids = Vec::new();
        for (project, claim) in [("a", "[a c]"), ("b", r#"["b"]"#)] {
            let e = lambda_event(
                "POST",
                "/programs",
                Some(&store_body(project)),
                Some(jwt(claim, "writer")),
            );
            let s =
                invoke(&store, &auth, Function::Store, &e)
                    .await
                    .expect(k, "store via JWT", 201);
            ids.push(s["id"].as_str().unwrap().to_owned());
        }
        let get =
            |id: &str, a: Option<Value>| lambda_event("GET", &format!("/programs/{id}"), None, a);
        invoke(
            &store,
            &auth,
            Function::Load,
            &get(&ids[0], Some(jwt("a", "reader"))),
        )
        .await
        .expect(k, "reader a reads a", 200);
        invoke(
            &store,
            &auth,
            Function::Load,
            &get(&ids[1], Some(jwt("a", "reader"))),
        )
        .await
        .expect_error(k, "reader a reads b", 404, "not_found");
        invoke(
            &store,
            &auth,
            Function::Load,
            &get(&ids[1], Some(jwt("*", "reader"))),
        )
        .await
        .expect(k, "reader * reads b", 200);
        let e = lambda_event(
            "POST",
            "/programs",
            Some(&store_body("a")),
            Some(jwt("a", "reader")),
        );
        invoke(&store, &auth, Function::Store, &e)
            .await
            .expect_error(k, "reader stores", 403, "forbidden");
        let e = lambda_event(
            "POST",
            "/programs",
            Some(&store_body("b")),
            Some(jwt("a", "admin")),
        );
        invoke(&store, &auth, Function::Store, &e)
            .await
            .expect_error(k, "admin of a stores in b", 404, "not_found");
        // Missing or bad claims: authenticated by API Gateway, but no role here.
        let no_role =
            json!({"jwt": {"claims": {"sub": "u", "dspy_projects": "a"}, "scopes": null}});
        invoke(&store, &auth, Function::Load, &get(&ids[0], Some(no_role)))
            .await
            .expect_error(k, "no dspy_role", 403, "forbidden");
        invoke(
            &store,
            &auth,
            Function::Load,
            &get(&ids[0], Some(jwt("a", "superuser"))),
        )
        .await
        .expect_error(k, "unknown role", 403, "forbidden");
        // No authorizer context at all (a route without auth, or a hand-made event): 401.
        invoke(&store, &auth, Function::Load, &get(&ids[0], None))
            .await
            .expect_error(k, "no authorizer", 401, "unauthenticated");
        // A Lambda authorizer's context (what the scheduled cleanup and backup carry).
        let lambda_ctx = json!({"lambda": {"principalId": "scheduler", "dspy_role": "reader", "dspy_projects": ["b"]}});
        invoke(
            &store,
            &auth,
            Function::Load,
            &get(&ids[1], Some(lambda_ctx.clone())),
        )
        .await
        .expect(k, "lambda authorizer reads b", 200);
        invoke(
            &store,
            &auth,
            Function::Load,
            &get(&ids[0], Some(lambda_ctx)),
        )
        .await
        .expect_error(k, "lambda authorizer reads a", 404, "not_found");
        // AWS_IAM callers: DSPY_STORAGE_IAM_ROLE (default reader) on DSPY_STORAGE_IAM_PROJECTS (default *).
        let iam = json!({"iam": {"accessKey": "AKIA", "accountId": "123456789012", "callerId": "AIDA", "userArn": "arn:aws:iam::123456789012:user/ci", "userId": "AIDA"}});
        invoke(
            &store,
            &auth,
            Function::Load,
            &get(&ids[1], Some(iam.clone())),
        )
        .await
        .expect(k, "IAM reader reads", 200);
        let e = lambda_event(
            "POST",
            "/programs",
            Some(&store_body("a")),
            Some(iam.clone()),
        );
        invoke(&store, &auth, Function::Store, &e)
            .await
            .expect_error(k, "IAM reader stores", 403, "forbidden");
        let writer = LambdaAuth {
            iam_role: Role::Writer,
            iam_projects: scope_from_claim("a").unwrap(),
        };
        invoke(&store, &writer, Function::Store, &e)
            .await
            .expect(k, "IAM writer stores in a", 201);
        invoke(&store, &writer, Function::Load, &get(&ids[1], Some(iam)))
            .await
            .expect_error(k, "IAM writer of a reads b", 404, "not_found");
        // Health stays public.
        invoke(
            &store,
            &auth,
            Function::Load,
            &lambda_event("GET", "/health", None, None),
        )
        .await
        .expect(k, "health", 200);
    }
}

#[test]
fn principals_filter_projects_for_listing_handlers() {
    let p = Principal::new("x", scope_from_claim("a,b").unwrap(), Role::Reader);
    assert!(p.may_see("a") && p.may_see("b") && !p.may_see("c"));
    assert_eq!(p.project_filter().unwrap().len(), 2);
    assert!(dspy_storage_functions::auth::ANONYMOUS
        .project_filter()
        .is_none());
}

/// The logs written while a [`LogCapture`] is alive.
#[derive(Clone, Default)]
struct Captured(Arc<std::sync::Mutex<Vec<u8>>>);

/// The buffers of the captures alive now; the global subscriber writes each event to all of them.
static CAPTURES: std::sync::Mutex<Vec<Captured>> = std::sync::Mutex::new(Vec::new());
/// How many captures are alive (read on every event: no lock when none is).
static CAPTURING: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// The global subscriber's writer: one formatted event (one JSON line) per `write`, appended to
/// every live capture.
struct ToCaptures;

impl std::io::Write for ToCaptures {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        for c in CAPTURES.lock().unwrap().iter() {
            c.0.lock().unwrap().extend_from_slice(buf);
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for ToCaptures {
    type Writer = ToCaptures;
    fn make_writer(&'a self) -> ToCaptures {
        ToCaptures
    }
}

/// Enables every callsite only while a capture is alive. `Interest::sometimes` keeps tracing from
/// caching the answer per callsite, so a capture sees callsites that other tests hit first.
struct WhileCapturing;

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for WhileCapturing {
    fn register_callsite(
        &self,
        _: &'static tracing::Metadata<'static>,
    ) -> tracing::subscriber::Interest {
        tracing::subscriber::Interest::sometimes()
    }
    fn enabled(
        &self,
        _: &tracing::Metadata<'_>,
        _: tracing_subscriber::layer::Context<'_, S>,
    ) -> bool {
        CAPTURING.load(std::sync::atomic::Ordering::SeqCst) > 0
    }
}

/// Every event of the process (any thread, every level) while it lives, as JSON lines.
struct LogCapture(Captured);

impl LogCapture {
    fn start() -> LogCapture {
        // Global (not thread-local): tracing caches per-callsite interest across threads, so a
        // thread-local subscriber misses events whose callsites other tests registered first.
        // Installed once for the whole test binary (all its modules share the process); it
        // formats and keeps events only while a capture is alive.
        static INSTALLED: std::sync::OnceLock<()> = std::sync::OnceLock::new();
        INSTALLED.get_or_init(|| {
            use tracing_subscriber::layer::SubscriberExt;
            // JSON lines at every level, as the Lambda functions log.
            let subscriber = tracing_subscriber::fmt()
                .json()
                .with_max_level(tracing::Level::TRACE)
                .with_writer(ToCaptures)
                .finish()
                .with(WhileCapturing);
            tracing::subscriber::set_global_default(subscriber)
                .expect("the only global subscriber of the test binary");
        });
        let captured = Captured::default();
        CAPTURES.lock().unwrap().push(captured.clone());
        CAPTURING.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        LogCapture(captured)
    }

    fn text(&self) -> String {
        String::from_utf8(self.0 .0.lock().unwrap().clone()).unwrap()
    }
}

impl Drop for LogCapture {
    fn drop(&mut self) {
        CAPTURING.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
        CAPTURES
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|c| !Arc::ptr_eq(&c.0, &self.0 .0));
    }
}

#[tokio::test]
async fn tokens_claims_and_keys_never_reach_the_logs() {
    // The tests running meanwhile (of any module) log here too, which only widens the check.
    let captured = LogCapture::start();
    const KEY: &str = "3333333333333333333333333333333333333333333333333333333333333333";
    let config = dspy_storage_core::config::StorageConfig::default()
        .with_encryption_key(KEY)
        .unwrap();
    let store = dspy_storage_tests::embedded_with(config).await;
    let k = store.kind;
    let client = store.client_with_access(tokens());
    let ids = setup(&client, k).await;
    for token in [ADMIN, READER_A, "tok-unknown-secret"] {
        for uri in [
            format!("/programs/{}", ids.b),
            "/signatures?project=a".into(),
        ] {
            call(&client, Some(token), Method::GET, &uri, None).await;
        }
        call(
            &client,
            Some(token),
            Method::DELETE,
            &format!("/programs/{}", ids.b),
            None,
        )
        .await;
    }
    let auth = LambdaAuth::default();
    let e = lambda_event(
        "GET",
        &format!("/programs/{}", ids.a),
        None,
        Some(jwt("b", "reader")),
    );
    invoke(&store, &auth, Function::Load, &e)
        .await
        .expect_error(k, "jwt", 404, "not_found");
    let logs = captured.text();
    assert!(
        logs.contains("unauthenticated request refused"),
        "the refusals are logged: {logs}"
    );
    for line in logs.lines() {
        serde_json::from_str::<Value>(line)
            .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
    }
    for secret in [
        ADMIN,
        READER_A,
        "tok-unknown-secret",
        KEY,
        &sha256_hex(ADMIN.as_bytes()),
    ] {
        assert!(!logs.contains(secret), "{secret} appears in the logs");
    }
}

/// Handlers that read across projects filter by the caller: the report counts only the caller's
/// projects, and another project's optimization run is as missing as an unknown one.
#[tokio::test]
async fn cross_project_reads_show_only_the_callers_projects() {
    for store in backends().await {
        let k = store.kind;
        let client = store.client_with_access(tokens());
        setup(&client, k).await; // a: 2 programs, b: 1
        let report = |token| {
            let client = client.clone();
            async move {
                call(&client, Some(token), Method::GET, "/report", None)
                    .await
                    .expect(k, "report", 200)
            }
        };
        let all = report(ADMIN).await;
        assert_eq!(all["total_programs"], 3, "{k:?}: {all}");
        let only_a = report(READER_A).await;
        assert_eq!(only_a["total_programs"], 2, "{k:?}: {only_a}");
        assert_eq!(only_a["signatures"], 1, "{k:?}: {only_a}");
        for list in ["by_programs", "by_loads"] {
            for entry in only_a["top_signatures"][list].as_array().unwrap() {
                assert_eq!(entry["project"], "a", "{k:?}: {list}: {entry}");
            }
        }
        let only_b = report(WRITER_B).await;
        assert_eq!(only_b["total_programs"], 1, "{k:?}: {only_b}");

        let run_b = call(
            &client,
            Some(WRITER_B),
            Method::POST,
            "/optimization-runs",
            Some(&json!({"signature": "S", "project": "b", "method": "miprov2"})),
        )
        .await
        .expect(k, "run in b", 201);
        let id = run_b["id"].as_str().unwrap();
        call(
            &client,
            Some(WRITER_B),
            Method::GET,
            &format!("/optimization-runs/{id}"),
            None,
        )
        .await
        .expect(k, "own run", 200);
        let hidden = call(
            &client,
            Some(READER_A),
            Method::GET,
            &format!("/optimization-runs/{id}"),
            None,
        )
        .await
        .expect_error(k, "another project's run", 404, "not_found");
        assert!(
            !hidden.to_string().contains("\"b\""),
            "{k:?}: nothing of the run leaks: {hidden}"
        );
    }
}

// ----- The access table: every route × every way of naming a project × four callers --------------
//
// For each route of the route table (`dspy_storage_functions::all_routes()`) the table below lists
// the role it needs and every input through which a request to it names a project (a "naming").
// Each naming is tried four times, on both backends, through the router:
//
// 1. no token                → 401 (public routes: 200);
// 2. too weak a role         → 403 (the target's project, one role below; none below `reader`);
// 3. the wrong project       → 404 `not_found` showing nothing of the target (whole-store routes:
//                              403 for an admin of one project; cross-project listings: 200 with
//                              nothing of the target in it);
// 4. allowed                 → the route's success status.
//
// The refused cases must leave the store unchanged. A route of the route table that has no entry
// here fails the test (and so does an entry that names no route): a route added later gets rows.

/// The role a route needs (stated here, independently of the guard's derivation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Need {
    Reader,
    Writer,
    Admin,
}

impl Need {
    fn name(self) -> &'static str {
        match self {
            Need::Reader => "reader",
            Need::Writer => "writer",
            Need::Admin => "admin",
        }
    }
    fn weaker(self) -> Option<Need> {
        match self {
            Need::Reader => None,
            Need::Writer => Some(Need::Reader),
            Need::Admin => Some(Need::Writer),
        }
    }
}

/// What a naming reaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reach {
    /// One project: outside the caller's projects it does not exist (404).
    Project,
    /// The whole store: callers restricted to some projects are refused (403).
    WholeStore,
    /// A listing across projects: a restricted caller sees only its projects.
    CrossProject,
    /// No stored data (health, OpenAPI): anyone.
    Public,
}

/// The project a naming targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    Alpha,
    /// The default project (the request names none).
    Default,
}

impl Target {
    fn project(self) -> &'static str {
        match self {
            Target::Alpha => "alpha",
            Target::Default => "default",
        }
    }
}

/// Programs, versions, an alias, metric records and runs of one signature in one project, and
/// (for the shared fixtures) cursors of its listings as received by the project's reader.
#[derive(Debug, Clone, Default)]
struct Ctx {
    project: String,
    sig: String,
    /// Version 1.0.0 (alias `production`), with 3 metric records.
    id: String,
    /// Version 1.0.1 (latest).
    id2: String,
    run: String,
    cursors: std::collections::HashMap<&'static str, String>,
}

impl Ctx {
    fn cursor(&self, name: &str) -> &str {
        self.cursors
            .get(name)
            .unwrap_or_else(|| panic!("fixture of {} has no {name} cursor", self.project))
    }
    /// Text only the target's stored data holds (descriptions, tags, instructions).
    fn marker(&self) -> String {
        format!("{}-secret", self.project)
    }
}

type Build = Box<dyn Fn(&Ctx, &Ctx) -> (String, Option<Value>) + Send + Sync>;

/// One way of naming a project on one route.
struct Naming {
    how: &'static str,
    target: Target,
    reach: Reach,
    /// `(target, own)` → URI and body; `own` is the caller's own project's fixture (the target's
    /// for callers allowed there).
    build: Build,
    ok: u16,
    /// What a caller with the role but outside the project gets.
    hidden: (u16, &'static str),
}

fn naming(
    how: &'static str,
    target: Target,
    ok: u16,
    build: impl Fn(&Ctx, &Ctx) -> (String, Option<Value>) + Send + Sync + 'static,
) -> Naming {
    Naming {
        how,
        target,
        reach: Reach::Project,
        build: Box::new(build),
        ok,
        hidden: (404, "not_found"),
    }
}

impl Naming {
    fn reach(mut self, reach: Reach) -> Self {
        self.reach = reach;
        self
    }
    fn hidden(mut self, status: u16, code: &'static str) -> Self {
        self.hidden = (status, code);
        self
    }
}

struct Entry {
    method: Method,
    path: &'static str,
    need: Need,
    namings: Vec<Naming>,
}

fn entry(method: Method, path: &'static str, need: Need, namings: Vec<Naming>) -> Entry {
    Entry {
        method,
        path,
        need,
        namings,
    }
}

fn get(uri: String) -> (String, Option<Value>) {
    (uri, None)
}

fn program_json(project: &str) -> Value {
    json!({"predict": {"demos": [], "signature": {"instructions": format!("{project}-secret instructions"), "fields": []}}})
}

/// `?project=P` (and only that).
fn q_project(t: &Ctx) -> String {
    format!("project={}", t.project)
}

/// The namings of a signature route `path` (`{sig}` is replaced): `?project=` and the default.
fn signature_namings(
    ok: u16,
    path: &'static str,
    query: &'static str,
    body: Option<fn(&Ctx) -> Value>,
) -> Vec<Naming> {
    let uri = move |t: &Ctx, project: Option<&str>| {
        let mut q: Vec<String> = Vec::new();
        if let Some(p) = project {
            q.push(format!("project={p}"));
        }
        if !query.is_empty() {
            q.push(query.to_owned());
        }
        let p = path.replace("{sig}", &t.sig);
        if q.is_empty() {
            p
        } else {
            format!("{p}?{}", q.join("&"))
        }
    };
    vec![
        naming("?project=", Target::Alpha, ok, move |t, _| {
            (uri(t, Some(&t.project)), body.map(|b| b(t)))
        }),
        naming(
            "the default project (no ?project=)",
            Target::Default,
            ok,
            move |t, _| (uri(t, None), body.map(|b| b(t))),
        ),
    ]
}

fn id_naming(ok: u16, suffix: &'static str, body: Option<fn(&Ctx) -> Value>) -> Vec<Naming> {
    vec![naming(
        "the path's program id",
        Target::Alpha,
        ok,
        move |t, _| (format!("/programs/{}{suffix}", t.id), body.map(|b| b(t))),
    )]
}

fn whole_store(
    ok: u16,
    build: impl Fn(&Ctx) -> (String, Option<Value>) + Send + Sync + 'static,
) -> Vec<Naming> {
    vec![
        naming("the whole store", Target::Alpha, ok, move |t, _| build(t)).reach(Reach::WholeStore),
    ]
}

fn access_table() -> Vec<Entry> {
    use Method as M;
    use Need::*;
    use Target::*;
    let metrics = |_: &Ctx| json!({"metrics": {"accuracy": 0.5}});
    let patch = |_: &Ctx| json!({"tags": {"add": ["x"]}});
    let alias = |_: &Ctx| json!({"version": "1.0.0"});
    let rollback = |_: &Ctx| json!({"to_version": "1.0.0"});
    let policy = |_: &Ctx| json!({"protected": true});
    let agg = |t: &Ctx, where_: &str| -> Value {
        let mut b = json!({"group_by": "optimization_method", "metrics": {"n": {"count": "id"}}, "signature": t.sig});
        match where_ {
            "project" => b["project"] = json!(t.project),
            "filters" => b["filters"] = json!({"project": t.project}),
            _ => {}
        }
        b
    };
    let ts = |t: &Ctx, where_: &str| -> Value {
        let mut b = json!({"signature": t.sig, "metric": "performance", "interval": "day", "time_range": "7d"});
        match where_ {
            "project" => b["project"] = json!(t.project),
            "filters" => b["filters"] = json!({"project": t.project}),
            _ => {}
        }
        b
    };
    vec![
        // ----- programs
        entry(M::POST, "/programs", Writer, vec![
            naming("body metadata.project", Alpha, 201, |t, _| {
                ("/programs".to_string(), Some(json!({"program": program_json(&t.project), "metadata": {"signature": format!("{}.new", t.sig), "project": t.project}})))
            }),
            naming("the default project (no metadata.project)", Default, 201, |t, _| {
                ("/programs".to_string(), Some(json!({"program": program_json(&t.project), "metadata": {"signature": format!("{}.new", t.sig)}})))
            }),
            naming("metadata.project of a DSPy.rb import (import_optimization=true)", Alpha, 201, |t, _| {
                let program: Value = serde_json::from_str(&dspy_storage_tests::shared_program("dspyrb_chain_of_thought_miprov2.json")).unwrap();
                ("/programs?import_optimization=true".into(), Some(json!({"program": program, "metadata": {"signature": format!("{}.rb", t.sig), "project": t.project}})))
            }),
        ]),
        entry(M::GET, "/programs/{id}", Reader, id_naming(200, "", None)),
        entry(M::GET, "/programs/{id}/program", Reader, id_naming(200, "/program", None)),
        entry(M::GET, "/programs/{id}/metadata", Reader, id_naming(200, "/metadata", None)),
        entry(M::PATCH, "/programs/{id}/metadata", Writer, id_naming(200, "/metadata", Some(patch))),
        entry(M::DELETE, "/programs/{id}", Writer, vec![
            naming("the path's program id", Alpha, 204, |t, _| get(format!("/programs/{}", t.id2))),
            naming("the path's program id (?force=true)", Alpha, 204, |t, _| get(format!("/programs/{}?force=true", t.id))),
        ]),
        // ----- versions, aliases, rollback
        entry(M::GET, "/projects", Reader, vec![
            naming("every project (a listing across projects)", Alpha, 200, |_, _| get("/projects".into())).reach(Reach::CrossProject),
        ]),
        entry(M::GET, "/signatures", Reader, vec![
            naming("?project=", Alpha, 200, |t, _| get(format!("/signatures?{}", q_project(t)))),
            naming("?project= (by last update)", Alpha, 200, |t, _| get(format!("/signatures?{}&sort=updated", q_project(t)))),
            naming("the default project (no ?project=)", Default, 200, |_, _| get("/signatures".into())),
            naming("a cursor (with its ?project=)", Alpha, 200, |t, _| {
                get(format!("/signatures?{}&limit=1&cursor={}", q_project(t), t.cursor("signatures")))
            }),
        ]),
        entry(M::GET, "/signatures/{signature}/versions", Reader, {
            let mut v = signature_namings(200, "/signatures/{sig}/versions", "", None);
            v.push(naming("a cursor (with its ?project=)", Alpha, 200, |t, _| {
                get(format!("/signatures/{}/versions?{}&limit=1&cursor={}", t.sig, q_project(t), t.cursor("versions")))
            }));
            v
        }),
        entry(M::GET, "/signatures/{signature}/versions/{version}", Reader, {
            let mut v = signature_namings(200, "/signatures/{sig}/versions/latest", "", None);
            v.extend(signature_namings(200, "/signatures/{sig}/versions/1.0.0", "", None));
            v
        }),
        entry(M::GET, "/signatures/{signature}/versions/{version}/program", Reader, {
            let mut v = signature_namings(200, "/signatures/{sig}/versions/latest/program", "", None);
            v.extend(signature_namings(200, "/signatures/{sig}/versions/1.0.0/program", "", None));
            v
        }),
        entry(M::PUT, "/signatures/{signature}/aliases/{alias}", Writer,
            signature_namings(200, "/signatures/{sig}/aliases/staging", "", Some(alias))),
        entry(M::GET, "/signatures/{signature}/aliases/{alias}", Reader,
            signature_namings(200, "/signatures/{sig}/aliases/production", "", None)),
        entry(M::GET, "/signatures/{signature}/aliases/{alias}/program", Reader,
            signature_namings(200, "/signatures/{sig}/aliases/production/program", "", None)),
        entry(M::DELETE, "/signatures/{signature}/aliases/{alias}", Writer,
            signature_namings(204, "/signatures/{sig}/aliases/production", "", None)),
        entry(M::PUT, "/signatures/{signature}/aliases/{alias}/policy", Admin,
            signature_namings(200, "/signatures/{sig}/aliases/production/policy", "", Some(policy))),
        entry(M::GET, "/signatures/{signature}/aliases/{alias}/policy", Reader,
            signature_namings(200, "/signatures/{sig}/aliases/canary/policy", "", None)),
        entry(M::DELETE, "/signatures/{signature}/aliases/{alias}/policy", Admin,
            signature_namings(204, "/signatures/{sig}/aliases/canary/policy", "", None)),
        entry(M::GET, "/signatures/{signature}/aliases/{alias}/history", Reader,
            signature_namings(200, "/signatures/{sig}/aliases/production/history", "", None)),
        entry(M::POST, "/signatures/{signature}/rollback", Writer,
            signature_namings(201, "/signatures/{sig}/rollback", "", Some(rollback))),
        // ----- reading DSPy programs
        entry(M::GET, "/signatures/{signature}/diff", Reader,
            signature_namings(200, "/signatures/{sig}/diff", "from=1.0.0&to=latest", None)),
        entry(M::GET, "/programs/{id}/prompt", Reader, id_naming(200, "/prompt", None)),
        entry(M::GET, "/programs/{id}/compatibility", Reader, vec![
            naming("the path's program id", Alpha, 200, |t, _| get(format!("/programs/{}/compatibility?with={}", t.id, t.id2))),
            naming("the ?with= program id (the path's in the caller's project)", Alpha, 200, |t, own| {
                get(format!("/programs/{}/compatibility?with={}", own.id, t.id))
            }),
        ]),
        // ----- performance tracking
        entry(M::POST, "/programs/{id}/metrics", Writer, id_naming(201, "/metrics", Some(metrics))),
        entry(M::GET, "/programs/{id}/metrics", Reader, {
            let mut v = id_naming(200, "/metrics", None);
            v.push(naming("a cursor (with its path id)", Alpha, 200, |t, _| {
                get(format!("/programs/{}/metrics?limit=1&cursor={}", t.id, t.cursor("history")))
            }));
            v
        }),
        entry(M::GET, "/programs/{id}/trends", Reader, id_naming(200, "/trends", None)),
        entry(M::GET, "/programs/{id}/trends.svg", Reader, id_naming(200, "/trends.svg", None)),
        entry(M::GET, "/signatures/{signature}/trends", Reader,
            signature_namings(200, "/signatures/{sig}/trends", "", None)),
        entry(M::GET, "/signatures/{signature}/trends.svg", Reader,
            signature_namings(200, "/signatures/{sig}/trends.svg", "", None)),
        entry(M::POST, "/optimization-runs", Writer, vec![
            naming("body project", Alpha, 201, |t, _| {
                ("/optimization-runs".into(), Some(json!({"signature": t.sig, "method": "miprov2", "project": t.project})))
            }),
            naming("the default project (no project)", Default, 201, |t, _| {
                ("/optimization-runs".into(), Some(json!({"signature": t.sig, "method": "miprov2"})))
            }),
            naming("program_ids (the run in the caller's project)", Alpha, 201, |t, own| {
                ("/optimization-runs".into(), Some(json!({"signature": t.sig, "method": "miprov2", "project": own.project, "program_ids": [t.id]})))
            })
            // Another project's program is as unknown as a missing one: 400 on program_ids[0].
            .hidden(400, "invalid_request"),
        ]),
        entry(M::GET, "/optimization-runs", Reader, vec![
            naming("?project=", Alpha, 200, |t, _| get(format!("/optimization-runs?{}", q_project(t)))),
            naming("?project= with ?signature=", Alpha, 200, |t, _| get(format!("/optimization-runs?{}&signature={}", q_project(t), t.sig))),
            naming("the default project (no ?project=)", Default, 200, |_, _| get("/optimization-runs".into())),
            naming("a cursor (with its ?project=)", Alpha, 200, |t, _| {
                get(format!("/optimization-runs?{}&limit=1&cursor={}", q_project(t), t.cursor("runs")))
            }),
        ]),
        entry(M::GET, "/optimization-runs/{id}", Reader, vec![
            naming("the path's run id", Alpha, 200, |t, _| get(format!("/optimization-runs/{}", t.run))),
        ]),
        entry(M::GET, "/report", Reader, vec![
            naming("every project (a listing across projects)", Alpha, 200, |_, _| get("/report".into())).reach(Reach::CrossProject),
        ]),
        // ----- search and querying
        entry(M::GET, "/search", Reader, vec![
            naming("?project=", Alpha, 200, |t, _| get(format!("/search?{}&q=signature:{}", q_project(t), t.sig))),
            naming("the default project (no project named)", Default, 200, |t, _| get(format!("/search?q=signature:{}", t.sig))),
            naming("q=project:P", Alpha, 200, |t, _| get(format!("/search?q=project:{}", t.project))),
            naming("q=signature:S project:P", Alpha, 200, |t, _| get(format!("/search?q=signature:{}+project:{}", t.sig, t.project))),
            naming("q=project:\"P\" (quoted)", Alpha, 200, |t, _| get(format!("/search?q=project:%22{}%22", t.project))),
            naming("q=project:P project:P (repeated)", Alpha, 200, |t, _| get(format!("/search?q=project:{0}+project:{0}", t.project))),
            naming("?project=P and q=project:P (agreeing)", Alpha, 200, |t, _| get(format!("/search?{}&q=project:{}", q_project(t), t.project))),
            naming("q=project:P with free text", Alpha, 200, |t, _| get(format!("/search?q=secret+project:{}", t.project))),
            naming("a cursor (with its query)", Alpha, 200, |t, _| {
                get(format!("/search?{}&q=signature:{}&limit=1&cursor={}", q_project(t), t.sig, t.cursor("search_get")))
            }),
        ]),
        entry(M::POST, "/search", Reader, vec![
            naming("body project", Alpha, 200, |t, _| ("/search".into(), Some(json!({"project": t.project})))),
            naming("body project {\"eq\": P}", Alpha, 200, |t, _| ("/search".into(), Some(json!({"project": {"eq": t.project}})))),
            naming("body project [P] (in)", Alpha, 200, |t, _| ("/search".into(), Some(json!({"project": [t.project]})))),
            naming("?project=", Alpha, 200, |t, _| (format!("/search?{}", q_project(t)), Some(json!({"signature": t.sig})))),
            naming("the default project (no project named)", Default, 200, |t, _| ("/search".into(), Some(json!({"signature": t.sig})))),
            naming("a cursor (with its body)", Alpha, 200, |t, _| {
                ("/search".into(), Some(json!({"project": t.project, "signature": t.sig, "limit": 1, "cursor": t.cursor("search_post")})))
            }),
        ]),
        entry(M::POST, "/aggregate", Reader, vec![
            naming("body project", Alpha, 200, move |t, _| ("/aggregate".into(), Some(agg(t, "project")))),
            naming("body filters.project", Alpha, 200, move |t, _| ("/aggregate".into(), Some(agg(t, "filters")))),
            naming("?project=", Alpha, 200, move |t, _| (format!("/aggregate?{}", q_project(t)), Some(agg(t, "")))),
            naming("the default project (no project named)", Default, 200, move |t, _| ("/aggregate".into(), Some(agg(t, "")))),
        ]),
        entry(M::POST, "/time-series", Reader, vec![
            naming("body project", Alpha, 200, move |t, _| ("/time-series".into(), Some(ts(t, "project")))),
            naming("body filters.project", Alpha, 200, move |t, _| ("/time-series".into(), Some(ts(t, "filters")))),
            naming("?project=", Alpha, 200, move |t, _| (format!("/time-series?{}", q_project(t)), Some(ts(t, "")))),
            naming("the default project (no project named)", Default, 200, move |t, _| ("/time-series".into(), Some(ts(t, "")))),
        ]),
        entry(M::GET, "/programs/{id}/similar", Reader, id_naming(200, "/similar?threshold=0", None)),
        // ----- retention and archive
        entry(M::POST, "/maintenance/cleanup", Admin,
            whole_store(200, |_| ("/maintenance/cleanup".into(), Some(json!({"dry_run": true}))))),
        entry(M::POST, "/programs/{id}/archive", Admin, id_naming(200, "/archive", None)),
        entry(M::POST, "/programs/{id}/restore", Admin, id_naming(200, "/restore", None)),
        // ----- backup and restore
        entry(M::POST, "/backups", Admin,
            whole_store(201, |t| ("/backups".into(), Some(json!({"name": format!("b-{}", t.sig.to_lowercase())}))))),
        entry(M::GET, "/backups", Admin, whole_store(200, |_| get("/backups".into()))),
        entry(M::GET, "/backups/{name}", Admin, whole_store(200, |_| get("/backups/nightly".into()))),
        entry(M::POST, "/backups/{name}/restore", Admin,
            whole_store(200, |_| ("/backups/nightly/restore".into(), Some(json!({}))))),
        // ----- public
        entry(M::GET, "/health", Reader, vec![
            naming("nothing (public)", Alpha, 200, |_, _| get("/health".into())).reach(Reach::Public),
        ]),
        entry(M::GET, "/openapi.json", Reader, vec![
            naming("nothing (public)", Alpha, 200, |_, _| get("/openapi.json".into())).reach(Reach::Public),
        ]),
    ]
}

const PROJECTS: [&str; 3] = ["alpha", "beta", "default"];
const ROLES: [Need; 3] = [Need::Reader, Need::Writer, Need::Admin];

fn token(project: &str, need: Need) -> String {
    format!("tok-{project}-{}", need.name())
}

/// Tokens `tok-<project>-<role>` for alpha, beta and default, `tok-all-<role>` on every project,
/// and a second alpha reader (another principal with the same scope).
fn matrix_tokens() -> AccessControl {
    let mut file = String::new();
    let mut add = |name: String, projects: &str, role: &str| {
        file.push_str(&format!(
            "[[token]]\nname = \"{name}\"\nsha256 = \"{}\"\nprojects = {projects}\nrole = \"{role}\"\n\n",
            sha256_hex(name.as_bytes())
        ));
    };
    for p in PROJECTS {
        for r in ROLES {
            add(token(p, r), &format!("[\"{p}\"]"), r.name());
        }
    }
    for r in ROLES {
        add(token("all", r), "[\"*\"]", r.name());
    }
    add("tok-alpha-reader2".into(), "[\"alpha\"]", "reader");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("auth.toml");
    std::fs::write(&path, file).unwrap();
    AccessControl::Tokens(Arc::new(TokenTable::load(&path).expect("auth file loads")))
}

/// Stores the fixture of `sig` in `project` (as the all-projects admin).
async fn make_fixture(c: &Client, k: Kind, project: &str, sig: &str) -> Ctx {
    let admin = Some("tok-all-admin");
    let mut ids = Vec::new();
    for (v, score) in [("1.0.0", 0.8), ("1.0.1", 0.9)] {
        let body = json!({"program": program_json(project), "metadata": {
            "signature": sig, "project": project, "version": v, "performance": score,
            "optimization_method": "miprov2", "description": format!("{project}-secret description"),
            "tags": [format!("{project}-secret-tag")]}});
        let a = call(c, admin, Method::POST, "/programs", Some(&body)).await;
        ids.push(
            a.expect(k, "fixture store", 201)["id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    call(
        c,
        admin,
        Method::PUT,
        &format!("/signatures/{sig}/aliases/production?project={project}"),
        Some(&json!({"version": "1.0.0"})),
    )
    .await
    .expect(k, "fixture alias", 200);
    // A policy (not protected, no gate: the other routes' rows are unaffected) on `canary`.
    call(
        c,
        admin,
        Method::PUT,
        &format!("/signatures/{sig}/aliases/canary/policy?project={project}"),
        Some(&json!({"protected": false})),
    )
    .await
    .expect(k, "fixture policy", 200);
    let records = json!({"records": [{"metrics": {"accuracy": 0.7}}, {"metrics": {"accuracy": 0.8}}, {"metrics": {"accuracy": 0.9}}]});
    call(
        c,
        admin,
        Method::POST,
        &format!("/programs/{}/metrics", ids[0]),
        Some(&records),
    )
    .await
    .expect(k, "fixture metrics", 201);
    let mut run = String::new();
    for _ in 0..2 {
        let r = call(
            c,
            admin,
            Method::POST,
            "/optimization-runs",
            Some(&json!({"signature": sig, "method": "miprov2", "project": project})),
        )
        .await
        .expect(k, "fixture run", 201);
        run = r["id"].as_str().unwrap().to_owned();
    }
    Ctx {
        project: project.into(),
        sig: sig.into(),
        id: ids[0].clone(),
        id2: ids[1].clone(),
        run,
        cursors: Default::default(),
    }
}

/// The shared fixture of a project: signatures `S` and `S2`, and cursors of every listing as the
/// project's reader received them.
async fn shared_fixture(c: &Client, k: Kind, project: &str) -> Ctx {
    let mut ctx = make_fixture(c, k, project, "S").await;
    make_fixture(c, k, project, "S2").await;
    let reader = token(project, Need::Reader);
    let reader = Some(reader.as_str());
    let next = |a: Answer, what: &str| -> String {
        a.expect(k, what, 200)["next_cursor"]
            .as_str()
            .unwrap_or_else(|| panic!("{k:?}: {what}: no next_cursor"))
            .to_owned()
    };
    let p = project;
    let gets = [
        (
            "search_get",
            format!("/search?project={p}&q=signature:S&limit=1"),
        ),
        ("signatures", format!("/signatures?project={p}&limit=1")),
        (
            "versions",
            format!("/signatures/S/versions?project={p}&limit=1"),
        ),
        ("history", format!("/programs/{}/metrics?limit=1", ctx.id)),
        ("runs", format!("/optimization-runs?project={p}&limit=1")),
    ];
    for (name, uri) in gets {
        let a = call(c, reader, Method::GET, &uri, None).await;
        ctx.cursors
            .insert(name, next(a, &format!("fixture cursor {name}")));
    }
    let a = call(
        c,
        reader,
        Method::POST,
        "/search",
        Some(&json!({"project": p, "signature": "S", "limit": 1})),
    )
    .await;
    ctx.cursors
        .insert("search_post", next(a, "fixture cursor search_post"));
    ctx
}

/// Items (but the load counters, which loads write in the background) and blob keys and sizes:
/// what a refused request must not change.
async fn state_of(
    store: &TestStore,
) -> (Vec<dspy_storage_core::backend::Item>, Vec<(String, u64)>) {
    let mut items = Vec::new();
    let mut start = None;
    loop {
        let page = store.storage.items().scan(start, 1000).await.expect("scan");
        items.extend(
            page.items
                .into_iter()
                .filter(|i| !(i.pk.starts_with("STATS#") && i.sk == "LOADS")),
        );
        match page.next {
            Some(n) => start = Some(n),
            None => break,
        }
    }
    items.sort_by(|a, b| (&a.pk, &a.sk).cmp(&(&b.pk, &b.sk)));
    let mut blobs = Vec::new();
    let mut start = None;
    loop {
        let (page, next) = store
            .storage
            .blobs()
            .list("", start, 1000)
            .await
            .expect("list");
        blobs.extend(page.into_iter().map(|m| (m.key, m.size)));
        match next {
            Some(n) => start = Some(n),
            None => break,
        }
    }
    blobs.sort();
    (items, blobs)
}

#[tokio::test]
async fn the_access_table_covers_every_route_and_every_way_of_naming_a_project() {
    let table = access_table();
    // Every route of the route table has an entry, and every entry is a route.
    let routes: Vec<(Method, &str)> = dspy_storage_functions::all_routes()
        .into_iter()
        .map(|r| (r.method, r.path))
        .collect();
    for (m, p) in &routes {
        assert!(
            table.iter().any(|e| e.method == *m && e.path == *p),
            "route {m} {p} is in the route table but not in the access table: add its namings"
        );
    }
    for e in &table {
        assert!(
            routes.iter().any(|(m, p)| *m == e.method && *p == e.path),
            "the access table names {} {}, which is no route",
            e.method,
            e.path
        );
        assert!(!e.namings.is_empty(), "{} {}: no naming", e.method, e.path);
    }
    let functions: std::collections::HashMap<(Method, &str), Function> =
        dspy_storage_functions::all_routes()
            .into_iter()
            .map(|r| ((r.method, r.path), r.function))
            .collect();
    let namings: usize = table.iter().map(|e| e.namings.len()).sum();
    println!("access table: {} routes, {namings} namings", table.len());

    let mut failures: Vec<String> = Vec::new();
    for store in backends().await {
        let k = store.kind;
        let c = store.client_with_access(matrix_tokens());
        let mut shared = std::collections::HashMap::new();
        for p in PROJECTS {
            shared.insert(p, shared_fixture(&c, k, p).await);
        }
        call(
            &c,
            Some("tok-all-admin"),
            Method::POST,
            "/backups",
            Some(&json!({"name": "nightly"})),
        )
        .await
        .expect(k, "fixture backup", 201);
        let mut fresh = 0usize;
        let mut cases = 0usize;
        for e in &table {
            let function = functions[&(e.method.clone(), e.path)];
            for n in &e.namings {
                let target = &shared[n.target.project()];
                let beta = &shared["beta"];
                let what =
                    |case: &str| format!("{k:?}: {} {} [{}] {case}", e.method, e.path, n.how);
                let mut check = |ok: bool, case: &str, a: &Answer, detail: &str| {
                    if !ok {
                        failures.push(format!(
                            "{}: {detail}; got {} {}",
                            what(case),
                            a.status,
                            String::from_utf8_lossy(&a.body)
                                .chars()
                                .take(300)
                                .collect::<String>()
                        ));
                    }
                };
                let before = state_of(&store).await;
                // 1. No token.
                let (uri, body) = (n.build)(target, target);
                let a = call(&c, None, e.method.clone(), &uri, body.as_ref()).await;
                cases += 1;
                if n.reach == Reach::Public {
                    check(a.status == 200, "no token", &a, "expected 200 (public)");
                } else {
                    check(
                        a.status == 401 && error_code(&a) == Some("unauthenticated".into()),
                        "no token",
                        &a,
                        "expected 401 unauthenticated",
                    );
                }
                // 2. Too weak a role (in the target's project).
                if let (Some(weak), false) = (e.need.weaker(), n.reach == Reach::Public) {
                    let t = match n.reach {
                        Reach::WholeStore => token("all", weak),
                        _ => token(n.target.project(), weak),
                    };
                    let a = call(&c, Some(&t), e.method.clone(), &uri, body.as_ref()).await;
                    cases += 1;
                    check(
                        a.status == 403 && error_code(&a) == Some("forbidden".into()),
                        &format!("weak role {t}"),
                        &a,
                        "expected 403 forbidden",
                    );
                }
                // 3. The wrong project.
                match n.reach {
                    Reach::Project => {
                        let t = token("beta", e.need);
                        let (uri, body) = (n.build)(target, beta);
                        let a = call(&c, Some(&t), e.method.clone(), &uri, body.as_ref()).await;
                        cases += 1;
                        let (status, code) = n.hidden;
                        check(
                            a.status.as_u16() == status && error_code(&a) == Some(code.into()),
                            &format!("wrong project {t}"),
                            &a,
                            &format!("expected {status} {code}"),
                        );
                        let text = String::from_utf8_lossy(&a.body);
                        let sent = format!(
                            "{uri} {}",
                            body.as_ref().map(Value::to_string).unwrap_or_default()
                        );
                        let leaked = leaks(target, n.target, &text, &sent);
                        check(
                            leaked.is_none(),
                            &format!("wrong project {t}"),
                            &a,
                            &format!(
                                "the answer shows the target's {}",
                                leaked.unwrap_or_default()
                            ),
                        );
                    }
                    Reach::WholeStore => {
                        let t = token("alpha", Need::Admin);
                        let a = call(&c, Some(&t), e.method.clone(), &uri, body.as_ref()).await;
                        cases += 1;
                        check(
                            a.status == 403 && error_code(&a) == Some("forbidden".into()),
                            &format!("one project's admin {t}"),
                            &a,
                            "expected 403 forbidden",
                        );
                    }
                    Reach::CrossProject | Reach::Public => {}
                }
                let after = state_of(&store).await;
                if before != after {
                    let none = Answer {
                        status: http::StatusCode::OK,
                        headers: Default::default(),
                        body: Default::default(),
                    };
                    check(
                        false,
                        "refused cases",
                        &none,
                        "a refused request changed the store",
                    );
                }
                if n.reach == Reach::CrossProject {
                    let t = token("beta", e.need);
                    let a = call(&c, Some(&t), e.method.clone(), &uri, body.as_ref()).await;
                    cases += 1;
                    let text = String::from_utf8_lossy(&a.body);
                    check(
                        a.status == 200,
                        &format!("other project {t}"),
                        &a,
                        "expected 200",
                    );
                    check(
                        !text.contains(&target.project) && !text.contains(&target.marker()),
                        &format!("other project {t}"),
                        &a,
                        "the listing shows the target's project",
                    );
                }
                // 4. Allowed.
                let mutating = e.method != Method::GET && function != Function::Query;
                let ctx = if mutating {
                    fresh += 1;
                    make_fixture(&c, k, n.target.project(), &format!("F{fresh}")).await
                } else {
                    target.clone()
                };
                let t = match n.reach {
                    Reach::WholeStore | Reach::CrossProject => Some(token("all", e.need)),
                    Reach::Public => None,
                    Reach::Project => Some(token(n.target.project(), e.need)),
                };
                let (uri, body) = (n.build)(&ctx, &ctx);
                let a = call(&c, t.as_deref(), e.method.clone(), &uri, body.as_ref()).await;
                cases += 1;
                check(
                    a.status.as_u16() == n.ok,
                    &format!("allowed {t:?}"),
                    &a,
                    &format!("expected {}", n.ok),
                );
            }
        }
        println!("{k:?}: {cases} cases");
    }
    assert!(
        failures.is_empty(),
        "{} failure(s):\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// What of the target's data an answer shows that the request did not itself send: its stored
/// text, its program or run ids, its project's name.
fn leaks(target: &Ctx, which: Target, text: &str, sent: &str) -> Option<&'static str> {
    if text.contains(&target.marker()) {
        return Some("stored data");
    }
    for id in [&target.id, &target.id2, &target.run] {
        if text.contains(id.as_str()) && !sent.contains(id.as_str()) {
            return Some("ids");
        }
    }
    // (The default project's name is in messages about any request naming no project.)
    if which == Target::Alpha && text.contains(&target.project) && !sent.contains(&target.project) {
        return Some("project name");
    }
    None
}

fn error_code(a: &Answer) -> Option<String> {
    serde_json::from_slice::<Value>(&a.body)
        .ok()
        .and_then(|v| v["error"]["code"].as_str().map(str::to_owned))
}

/// A search (aggregation, time series) runs in exactly ONE project: inputs naming two projects,
/// a wildcard or `!=` on project are a 400 that says so, for every caller; nothing of the named
/// projects is shown. A cursor works only for the caller it was given to.
#[tokio::test]
async fn a_search_names_exactly_one_project() {
    for store in backends().await {
        let k = store.kind;
        let c = store.client_with_access(matrix_tokens());
        let alpha = shared_fixture(&c, k, "alpha").await;
        let beta = shared_fixture(&c, k, "beta").await;
        let get = |uri: String| (Method::GET, uri, None::<Value>);
        let post = |uri: &str, body: Value| (Method::POST, uri.to_owned(), Some(body));
        let agg = json!({"metrics": {"n": {"count": "id"}}});
        let with = |mut b: Value, extra: Value| {
            for (k, v) in extra.as_object().unwrap() {
                b[k] = v.clone();
            }
            b
        };
        let rows = vec![
            ("q", get("/search?q=project:alpha+project:beta".into())),
            ("q", get("/search?q=project:beta+project:alpha".into())),
            ("q", get("/search?project=beta&q=project:alpha".into())),
            (
                "q",
                get("/search?project=beta&q=signature:S+project:%22alpha%22".into()),
            ),
            ("q", get("/search?q=project:al*".into())),
            ("q", get("/search?q=project:*".into())),
            ("q", get("/search?q=project!=beta".into())),
            ("q", get("/search?q=project%3Ea".into())),
            (
                "project",
                post("/search", json!({"project": ["alpha", "beta"]})),
            ),
            (
                "project",
                post("/search", json!({"project": {"in": ["beta", "alpha"]}})),
            ),
            (
                "project",
                post("/search", json!({"project": {"ne": "beta"}})),
            ),
            (
                "project",
                post("/search", json!({"project": {"prefix": "a"}})),
            ),
            (
                "project",
                post("/search?project=beta", json!({"project": "alpha"})),
            ),
            (
                "project",
                post(
                    "/aggregate",
                    with(
                        agg.clone(),
                        json!({"project": "beta", "filters": {"project": "alpha"}}),
                    ),
                ),
            ),
            (
                "project",
                post(
                    "/aggregate?project=beta",
                    with(agg.clone(), json!({"filters": {"project": "alpha"}})),
                ),
            ),
            (
                "project",
                post(
                    "/aggregate",
                    with(agg.clone(), json!({"filters": {"project": {"ne": "beta"}}})),
                ),
            ),
            (
                "project",
                post(
                    "/time-series",
                    json!({"project": "beta", "filters": {"project": "alpha"}}),
                ),
            ),
            (
                "project",
                post("/time-series?project=beta", json!({"project": "alpha"})),
            ),
        ];
        for token in ["tok-beta-reader", "tok-all-reader"] {
            for (field, (method, uri, body)) in &rows {
                let a = call(&c, Some(token), method.clone(), uri, body.as_ref()).await;
                let what = format!("{token} {method} {uri} {body:?}");
                let v = a.expect_error(k, &what, 400, "invalid_request");
                assert_eq!(v["error"]["field"], *field, "{k:?}: {what}: {v}");
                let m = v["error"]["message"].as_str().unwrap();
                assert!(
                    m.contains("exactly one project") || m.contains("disagree"),
                    "{k:?}: {what}: {m}"
                );
                let text = String::from_utf8_lossy(&a.body);
                assert!(
                    !text.contains("alpha-secret") && !text.contains("beta-secret"),
                    "{k:?}: {what}"
                );
            }
        }
        // One project the caller may not see: 404, however it is named; its own project: 200.
        for uri in [
            "/search?q=project:alpha".to_string(),
            "/search?q=signature:S+project:alpha".into(),
            "/search?project=alpha&q=project:alpha".into(),
            "/search?q=project:%22alpha%22+project:alpha".into(),
        ] {
            let a = call(&c, Some("tok-beta-reader"), Method::GET, &uri, None).await;
            a.expect_error(k, &uri, 404, "not_found");
            assert!(!String::from_utf8_lossy(&a.body).contains("alpha-secret"));
            let own = uri.replace("alpha", "beta");
            let v = call(&c, Some("tok-beta-reader"), Method::GET, &own, None)
                .await
                .expect(k, &own, 200);
            let results = v["results"].as_array().unwrap();
            assert!(
                !results.is_empty() && results.iter().all(|r| r["project"] == "beta"),
                "{k:?}: {own}: {v}"
            );
        }
        // Cursors are bound to the caller that received them: another principal with the same
        // projects gets a 400 saying so; a caller of another project a 404 (or, naming its own
        // project, a 400: the cursor is not its own).
        let listings = [
            format!(
                "/search?project=alpha&q=signature:S&limit=1&cursor={}",
                alpha.cursor("search_get")
            ),
            format!(
                "/signatures?project=alpha&limit=1&cursor={}",
                alpha.cursor("signatures")
            ),
            format!(
                "/signatures/S/versions?project=alpha&limit=1&cursor={}",
                alpha.cursor("versions")
            ),
            format!(
                "/programs/{}/metrics?limit=1&cursor={}",
                alpha.id,
                alpha.cursor("history")
            ),
            format!(
                "/optimization-runs?project=alpha&limit=1&cursor={}",
                alpha.cursor("runs")
            ),
        ];
        for uri in &listings {
            call(&c, Some("tok-alpha-reader"), Method::GET, uri, None)
                .await
                .expect(k, &format!("own cursor {uri}"), 200);
            let v = call(&c, Some("tok-alpha-reader2"), Method::GET, uri, None)
                .await
                .expect_error(
                    k,
                    &format!("another principal {uri}"),
                    400,
                    "invalid_request",
                );
            assert_eq!(v["error"]["field"], "cursor", "{k:?}: {v}");
            assert!(
                v["error"]["message"]
                    .as_str()
                    .unwrap()
                    .contains("another caller"),
                "{k:?}: {v}"
            );
            call(&c, Some("tok-beta-reader"), Method::GET, uri, None)
                .await
                .expect_error(k, &format!("another project {uri}"), 404, "not_found");
        }
        let v = call(
            &c,
            Some("tok-beta-reader"),
            Method::GET,
            &format!(
                "/search?project=beta&q=signature:S&limit=1&cursor={}",
                alpha.cursor("search_get")
            ),
            None,
        )
        .await
        .expect_error(k, "alpha's cursor in beta", 400, "invalid_request");
        assert_eq!(v["error"]["field"], "cursor", "{k:?}: {v}");
        let _ = beta;
    }
}
