//! Access control on both backends, through the HTTP API: bearer tokens of an auth file (the
//! local server) and API Gateway authorizer contexts (Lambda). One data-driven table of
//! (caller, request, expected answer) rows covers every route; a route merged later gets rows
//! here, the guard itself (functions/src/auth.rs) covers it without code of its own.
//!
//! Every refused request (401, 403, 404) is checked to change nothing in the store.

use std::sync::Arc;

use axum::body::Body;
use dspy_storage_core::codec::sha256_hex;
use dspy_storage_functions::auth::{
    AccessControl, LambdaAuth, Principal, Projects, Role, TokenTable,
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

/// What a row expects.
#[derive(Debug, Clone, Copy)]
enum Expect {
    /// This status and error code (the request is refused: nothing may change).
    Refused(u16, &'static str),
    /// This status (success).
    Ok(u16),
    /// The guard lets it through: anything but 401/403 and not the scope's 404 (for routes whose
    /// handler may still answer 501 on this branch, or any answer of their own).
    Passes,
}

/// One row: caller token (None = no Authorization header), method, URI and body templates
/// (`{a}`, `{a2}`, `{b}` become program ids; `{unknown}` an id of no program).
struct Row {
    token: Option<&'static str>,
    method: Method,
    uri: &'static str,
    body: Option<Value>,
    expect: Expect,
}

fn row(
    token: Option<&'static str>,
    method: Method,
    uri: &'static str,
    body: Option<Value>,
    expect: Expect,
) -> Row {
    Row {
        token,
        method,
        uri,
        body,
        expect,
    }
}

fn rows() -> Vec<Row> {
    use Expect::*;
    use Method as M;
    let (nf, fb, un) = (
        Refused(404, "not_found"),
        Refused(403, "forbidden"),
        Refused(401, "unauthenticated"),
    );
    let store_a = json!({"program": {"p": 1}, "metadata": {"signature": "S", "project": "a"}});
    let store_b = json!({"program": {"p": 1}, "metadata": {"signature": "S", "project": "b"}});
    let store_default = json!({"program": {"p": 1}, "metadata": {"signature": "S"}});
    let patch = json!({"tags": {"add": ["x"]}});
    let alias = json!({"version": "1.0.0"});
    let rollback = json!({"to_version": "1.0.0"});
    let ra = Some(READER_A);
    let wa = Some(WRITER_A);
    let aa = Some(ADMIN_A);
    let wb = Some(WRITER_B);
    let ad = Some(ADMIN);
    vec![
        // --- authentication ---------------------------------------------------------------
        row(None, M::GET, "/programs/{a}", None, un),
        row(Some("not-a-token"), M::GET, "/programs/{a}", None, un),
        row(None, M::GET, "/signatures?project=a", None, un),
        row(None, M::POST, "/programs", Some(store_a.clone()), un),
        row(None, M::DELETE, "/programs/{a}", None, un),
        row(None, M::GET, "/search?q=x", None, un),
        row(None, M::POST, "/backups", Some(json!({})), un),
        row(None, M::GET, "/health", None, Ok(200)),
        row(None, M::GET, "/openapi.json", None, Ok(200)),
        // --- reader: reads its project, nothing else --------------------------------------
        row(ra, M::GET, "/programs/{a}", None, Ok(200)),
        row(ra, M::GET, "/programs/{a}/metadata", None, Ok(200)),
        row(ra, M::GET, "/programs/{a}/prompt", None, Ok(200)),
        row(
            ra,
            M::GET,
            "/programs/{a}/compatibility?with={a2}",
            None,
            Ok(200),
        ),
        row(ra, M::GET, "/signatures?project=a", None, Ok(200)),
        row(
            ra,
            M::GET,
            "/signatures/S/versions?project=a",
            None,
            Ok(200),
        ),
        row(
            ra,
            M::GET,
            "/signatures/S/versions/latest?project=a",
            None,
            Ok(200),
        ),
        row(
            ra,
            M::GET,
            "/signatures/S/versions/1.0.0?project=a",
            None,
            Ok(200),
        ),
        row(
            ra,
            M::GET,
            "/signatures/S/aliases/production?project=a",
            None,
            Ok(200),
        ),
        row(
            ra,
            M::GET,
            "/signatures/S/diff?from=1.0.0&to=latest&project=a",
            None,
            Ok(200),
        ),
        row(ra, M::GET, "/programs/{b}", None, nf),
        row(ra, M::GET, "/programs/{b}/metadata", None, nf),
        row(ra, M::GET, "/programs/{b}/prompt", None, nf),
        row(ra, M::GET, "/programs/{b}/compatibility?with={a}", None, nf),
        row(ra, M::GET, "/programs/{a}/compatibility?with={b}", None, nf),
        row(ra, M::GET, "/programs/{unknown}", None, nf),
        row(ra, M::GET, "/signatures", None, nf),
        row(ra, M::GET, "/signatures?project=b", None, nf),
        row(ra, M::GET, "/signatures/S/versions", None, nf),
        row(ra, M::GET, "/signatures/S/versions?project=b", None, nf),
        row(
            ra,
            M::GET,
            "/signatures/S/versions/latest?project=b",
            None,
            nf,
        ),
        row(
            ra,
            M::GET,
            "/signatures/S/aliases/production?project=b",
            None,
            nf,
        ),
        row(
            ra,
            M::GET,
            "/signatures/S/diff?from=1.0.0&to=latest&project=b",
            None,
            nf,
        ),
        row(ra, M::POST, "/programs", Some(store_a.clone()), fb),
        row(
            ra,
            M::PATCH,
            "/programs/{a}/metadata",
            Some(patch.clone()),
            fb,
        ),
        row(ra, M::DELETE, "/programs/{a}", None, fb),
        row(
            ra,
            M::PUT,
            "/signatures/S/aliases/staging?project=a",
            Some(alias.clone()),
            fb,
        ),
        row(
            ra,
            M::DELETE,
            "/signatures/S/aliases/production?project=a",
            None,
            fb,
        ),
        row(
            ra,
            M::POST,
            "/signatures/S/rollback?project=a",
            Some(rollback.clone()),
            fb,
        ),
        // --- writer: writes its project; other projects do not exist for it ---------------
        row(wa, M::POST, "/programs", Some(store_b.clone()), nf),
        row(wa, M::POST, "/programs", Some(store_default.clone()), nf),
        row(
            wa,
            M::POST,
            "/programs?project=b",
            Some(store_a.clone()),
            nf,
        ),
        row(
            wa,
            M::POST,
            "/programs?project=a",
            Some(store_default.clone()),
            nf,
        ),
        row(
            wa,
            M::POST,
            "/signatures/S/rollback",
            Some(json!({"to_version": "1.0.0", "project": "a"})),
            nf,
        ),
        row(
            wa,
            M::DELETE,
            "/signatures/S/aliases/production",
            Some(json!({"project": "a"})),
            nf,
        ),
        row(
            wa,
            M::PATCH,
            "/programs/{b}/metadata",
            Some(patch.clone()),
            nf,
        ),
        row(wa, M::DELETE, "/programs/{b}", None, nf),
        row(wa, M::DELETE, "/programs/{b}?force=true", None, nf),
        row(
            wa,
            M::PUT,
            "/signatures/S/aliases/staging?project=b",
            Some(alias.clone()),
            nf,
        ),
        row(
            wa,
            M::PUT,
            "/signatures/S/aliases/staging",
            Some(alias.clone()),
            nf,
        ),
        row(
            wa,
            M::DELETE,
            "/signatures/S/aliases/production?project=b",
            None,
            nf,
        ),
        row(
            wa,
            M::POST,
            "/signatures/S/rollback?project=b",
            Some(rollback.clone()),
            nf,
        ),
        row(
            wb,
            M::PATCH,
            "/programs/{a}/metadata",
            Some(patch.clone()),
            nf,
        ),
        row(wb, M::DELETE, "/programs/{a}", None, nf),
        row(
            wa,
            M::PATCH,
            "/programs/{a}/metadata",
            Some(patch.clone()),
            Ok(200),
        ),
        row(
            wa,
            M::PUT,
            "/signatures/S/aliases/staging?project=a",
            Some(alias.clone()),
            Ok(200),
        ),
        row(
            wa,
            M::POST,
            "/signatures/S/rollback?project=a",
            Some(rollback.clone()),
            Ok(201),
        ),
        row(wa, M::POST, "/programs", Some(store_a.clone()), Ok(201)),
        row(
            wa,
            M::POST,
            "/maintenance/cleanup",
            Some(json!({"dry_run": true})),
            fb,
        ),
        row(wa, M::POST, "/programs/{a}/archive", None, fb),
        // --- routes of the other features (search, metrics, retention, backup) ---------------
        row(ra, M::GET, "/search?q=signature:S", None, Passes),
        row(
            ra,
            M::POST,
            "/search",
            Some(json!({"project": "a"})),
            Passes,
        ),
        row(ra, M::POST, "/search", Some(json!({"project": "b"})), nf),
        row(
            ra,
            M::POST,
            "/search",
            Some(json!({"filters": {"project": {"in": ["a", "b"]}}})),
            nf,
        ),
        row(
            ra,
            M::POST,
            "/search",
            Some(json!({"project": {"ne": "a"}})),
            fb,
        ),
        row(
            ra,
            M::POST,
            "/aggregate",
            Some(json!({"project": "b", "group_by": "optimization_method"})),
            nf,
        ),
        row(
            ra,
            M::POST,
            "/time-series",
            Some(json!({"project": "b", "signature": "S", "metric": "performance"})),
            nf,
        ),
        row(ra, M::GET, "/programs/{b}/similar", None, nf),
        row(ra, M::GET, "/programs/{a}/similar", None, Passes),
        row(ra, M::GET, "/programs/{b}/metrics", None, nf),
        row(ra, M::GET, "/programs/{b}/trends", None, nf),
        row(ra, M::GET, "/programs/{b}/trends.svg", None, nf),
        row(ra, M::GET, "/signatures/S/trends?project=b", None, nf),
        row(
            ra,
            M::POST,
            "/programs/{a}/metrics",
            Some(json!({"metrics": {"accuracy": 0.5}})),
            fb,
        ),
        row(
            wb,
            M::POST,
            "/programs/{a}/metrics",
            Some(json!({"metrics": {"accuracy": 0.5}})),
            nf,
        ),
        row(ra, M::GET, "/report", None, Passes),
        row(
            wa,
            M::POST,
            "/optimization-runs",
            Some(json!({"signature": "S", "method": "miprov2"})),
            nf,
        ),
        row(
            wa,
            M::POST,
            "/optimization-runs",
            Some(json!({"signature": "S", "project": "a"})),
            Passes,
        ),
        row(aa, M::POST, "/programs/{b}/archive", None, nf),
        row(aa, M::POST, "/programs/{b}/restore", None, nf),
        row(aa, M::POST, "/programs/{a}/archive", None, Passes),
        row(
            aa,
            M::POST,
            "/maintenance/cleanup",
            Some(json!({"dry_run": true})),
            fb,
        ),
        row(aa, M::POST, "/backups", Some(json!({})), fb),
        row(aa, M::GET, "/backups", None, fb),
        row(aa, M::POST, "/backups/nightly/restore", Some(json!({})), fb),
        row(ra, M::GET, "/backups", None, fb),
        row(ad, M::GET, "/backups", None, Passes),
        row(
            ad,
            M::POST,
            "/maintenance/cleanup",
            Some(json!({"dry_run": true})),
            Passes,
        ),
        row(ad, M::GET, "/programs/{b}", None, Ok(200)),
        row(
            ad,
            M::GET,
            "/signatures/S/versions?project=b",
            None,
            Ok(200),
        ),
    ]
}

struct Ids {
    a: String,
    a2: String,
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
        a2: ids[1].clone(),
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

fn fill(template: &str, ids: &Ids) -> String {
    template
        .replace("{a2}", &ids.a2)
        .replace("{a}", &ids.a)
        .replace("{b}", &ids.b)
        .replace("{unknown}", UNKNOWN_ID)
}

#[tokio::test]
async fn the_access_table_holds_on_every_route() {
    let table = rows();
    assert!(table.len() >= 80, "{} rows", table.len());
    for store in backends().await {
        let k = store.kind;
        let client = store.client_with_access(tokens());
        let ids = setup(&client, k).await;
        for r in &table {
            let uri = fill(r.uri, &ids);
            let what = format!("{:?} {} {uri}", r.token, r.method);
            let before = match r.expect {
                Expect::Refused(..) => Some(store.snapshot().await),
                _ => None,
            };
            let a = call(&client, r.token, r.method.clone(), &uri, r.body.as_ref()).await;
            match r.expect {
                Expect::Refused(status, code) => {
                    a.expect_error(k, &what, status, code);
                    assert_eq!(
                        store.snapshot().await,
                        before.unwrap(),
                        "{k:?}: {what}: a refused request changed the store"
                    );
                }
                Expect::Ok(status) => {
                    a.expect_status(k, &what, status);
                }
                Expect::Passes => {
                    let hidden = a.status == 404
                        && a.json()["error"]["message"]
                            .as_str()
                            .is_some_and(|m| m.contains(&ids.b));
                    let refused = [401, 403].contains(&a.status.as_u16()) || hidden;
                    assert!(
                        !refused,
                        "{k:?}: {what}: the guard refused it: {} {}",
                        a.status,
                        String::from_utf8_lossy(&a.body)
                    )
                }
            }
        }
    }
}

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
            iam_projects: Projects::from_claim("a").unwrap(),
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
    let p = Principal {
        name: "x".into(),
        projects: Projects::from_claim("a,b").unwrap(),
        role: Role::Reader,
    };
    assert!(p.may_see("a") && p.may_see("b") && !p.may_see("c"));
    assert_eq!(p.project_filter().unwrap().len(), 2);
    assert!(Principal::unrestricted().project_filter().is_none());
}

/// A `MakeWriter` into a shared buffer (the logs of one test).
#[derive(Clone, Default)]
struct Captured(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Captured {
        self.clone()
    }
}

#[tokio::test]
async fn tokens_claims_and_keys_never_reach_the_logs() {
    let captured = Captured::default();
    // JSON lines at every level, as the Lambda functions log.
    let subscriber = tracing_subscriber::fmt()
        .json()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(captured.clone())
        .finish();
    // Global (not thread-local): tracing caches per-callsite interest across threads, so a
    // thread-local subscriber misses events whose callsites other tests registered first. The
    // other tests of this file then log here too, which only widens the check.
    tracing::subscriber::set_global_default(subscriber).expect("the only global subscriber");
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
    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
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
