//! Each Lambda binary run as AWS runs it: the process is started with the Lambda environment
//! (`AWS_LAMBDA_RUNTIME_API`, function name, memory, …) against a local implementation of the
//! Lambda Runtime API (below), which hands it real event JSON through
//! `GET /2018-06-01/runtime/invocation/next` and collects what it posts to
//! `/runtime/invocation/{id}/response`. This exercises the whole `main`: tracing, the storage built
//! from the environment once, and the runtime loop — against the local AWS (LocalStack).
//!
//! Also printed: each function's cold start, from process spawn to its first `next` request (the
//! moment it is ready to take an event).
//!
//! Skipped (with a message) when no AWS endpoint is configured, unless DSPY_STORAGE_REQUIRE_AWS=1.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::Router;
use dspy_storage_core::open::{self, AwsLocation};
use serde_json::Value;
use tokio::sync::Notify;

/// What a function posted back for one invocation.
#[derive(Debug, Clone)]
enum Outcome {
    Response(Value),
    Error(String),
}

#[derive(Default)]
struct RuntimeState {
    queue: Mutex<VecDeque<(String, String)>>,
    queued: Notify,
    outcomes: Mutex<HashMap<String, Outcome>>,
    answered: Notify,
    first_next: Mutex<Option<Instant>>,
    init_error: Mutex<Option<String>>,
}

/// A local Lambda Runtime API for one function process.
struct RuntimeApi {
    state: Arc<RuntimeState>,
    addr: SocketAddr,
    next_id: Mutex<u64>,
}

async fn next(State(s): State<Arc<RuntimeState>>) -> impl IntoResponse {
    s.first_next
        .lock()
        .unwrap()
        .get_or_insert_with(Instant::now);
    loop {
        let notified = s.queued.notified();
        if let Some((id, event)) = s.queue.lock().unwrap().pop_front() {
            // As a function with a 5-minute timeout (scheduled work keeps a 60 s margin).
            let deadline = chrono::Utc::now().timestamp_millis() + 300_000;
            let mut headers = HeaderMap::new();
            headers.insert("lambda-runtime-aws-request-id", id.parse().unwrap());
            headers.insert(
                "lambda-runtime-deadline-ms",
                deadline.to_string().parse().unwrap(),
            );
            headers.insert(
                "lambda-runtime-invoked-function-arn",
                "arn:aws:lambda:us-east-1:123456789012:function:test"
                    .parse()
                    .unwrap(),
            );
            headers.insert(
                "lambda-runtime-trace-id",
                "Root=1-5759e988-bd862e3fe1be46a994272793;Sampled=1"
                    .parse()
                    .unwrap(),
            );
            headers.insert("content-type", "application/json".parse().unwrap());
            return (StatusCode::OK, headers, event);
        }
        notified.await;
    }
}

async fn response(
    State(s): State<Arc<RuntimeState>>,
    Path(id): Path<String>,
    body: String,
) -> StatusCode {
    let value = serde_json::from_str(&body).unwrap_or(Value::String(body));
    s.outcomes
        .lock()
        .unwrap()
        .insert(id, Outcome::Response(value));
    s.answered.notify_waiters();
    StatusCode::ACCEPTED
}

async fn error(
    State(s): State<Arc<RuntimeState>>,
    Path(id): Path<String>,
    body: String,
) -> StatusCode {
    s.outcomes.lock().unwrap().insert(id, Outcome::Error(body));
    s.answered.notify_waiters();
    StatusCode::ACCEPTED
}

async fn init_error(State(s): State<Arc<RuntimeState>>, body: String) -> StatusCode {
    *s.init_error.lock().unwrap() = Some(body);
    s.answered.notify_waiters();
    StatusCode::ACCEPTED
}

impl RuntimeApi {
    async fn start() -> RuntimeApi {
        let state = Arc::new(RuntimeState::default());
        let app = Router::new()
            .route("/2018-06-01/runtime/invocation/next", get(next))
            .route(
                "/2018-06-01/runtime/invocation/{id}/response",
                post(response),
            )
            .route("/2018-06-01/runtime/invocation/{id}/error", post(error))
            .route("/2018-06-01/runtime/init/error", post(init_error))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        RuntimeApi {
            state,
            addr,
            next_id: Mutex::new(0),
        }
    }

    /// Hands `event` to the function and waits for its answer.
    async fn invoke(&self, event: &str) -> Outcome {
        let id = {
            let mut n = self.next_id.lock().unwrap();
            *n += 1;
            format!("req-{n}")
        };
        self.state
            .queue
            .lock()
            .unwrap()
            .push_back((id.clone(), event.to_owned()));
        self.state.queued.notify_waiters();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let answered = self.state.answered.notified();
            if let Some(o) = self.state.outcomes.lock().unwrap().remove(&id) {
                return o;
            }
            if let Some(e) = self.state.init_error.lock().unwrap().clone() {
                panic!("the function failed to initialise: {e}");
            }
            assert!(Instant::now() < deadline, "no answer to {id} within 60 s");
            let _ = tokio::time::timeout(Duration::from_millis(500), answered).await;
        }
    }
}

/// A function process, killed on drop.
struct FunctionProcess {
    child: std::process::Child,
    api: RuntimeApi,
    cold_start: Duration,
}

impl Drop for FunctionProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn binary(name: &str) -> PathBuf {
    PathBuf::from(match name {
        "store" => env!("CARGO_BIN_EXE_store"),
        "load" => env!("CARGO_BIN_EXE_load"),
        "query" => env!("CARGO_BIN_EXE_query"),
        "trend" => env!("CARGO_BIN_EXE_trend"),
        "cleanup" => env!("CARGO_BIN_EXE_cleanup"),
        "backup" => env!("CARGO_BIN_EXE_backup"),
        other => panic!("no function {other}"),
    })
}

/// Starts a function the way the Lambda service does and waits until it asks for its first event.
async fn start_function(name: &str, location: &AwsLocation) -> FunctionProcess {
    start_function_with(name, location, &[]).await
}

/// [`start_function`] with more environment variables.
async fn start_function_with(
    name: &str,
    location: &AwsLocation,
    env: &[(&str, &str)],
) -> FunctionProcess {
    let api = RuntimeApi::start().await;
    let spawned = Instant::now();
    let mut cmd = std::process::Command::new(binary(name));
    for (k, v) in env {
        cmd.env(k, v);
    }
    let child = cmd
        .env("AWS_LAMBDA_RUNTIME_API", api.addr.to_string())
        .env("AWS_LAMBDA_FUNCTION_NAME", format!("dspy-storage-{name}"))
        .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256")
        .env(
            "AWS_LAMBDA_LOG_GROUP_NAME",
            format!("/dspy-storage/test/{name}"),
        )
        .env("AWS_LAMBDA_LOG_STREAM_NAME", "test")
        .env("DSPY_STORAGE_TABLE", &location.table)
        .env("DSPY_STORAGE_BUCKET", &location.bucket)
        .env("RUST_LOG", "warn")
        .env_remove("DSPY_STORAGE_EVENT_BUS")
        .env_remove("DSPY_STORAGE_EVENTS_FILE")
        .env_remove("DSPY_STORAGE_CURSOR_SECRET_FILE")
        .stdin(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("spawning {name}: {e}"));
    let deadline = spawned + Duration::from_secs(30);
    let cold_start = loop {
        if let Some(t) = *api.state.first_next.lock().unwrap() {
            break t - spawned;
        }
        if let Some(e) = api.state.init_error.lock().unwrap().clone() {
            panic!("{name} failed to initialise: {e}");
        }
        assert!(Instant::now() < deadline, "{name} never asked for an event");
        tokio::time::sleep(Duration::from_millis(2)).await;
    };
    FunctionProcess {
        child,
        api,
        cold_start,
    }
}

fn fixture(name: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/events")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// An API Gateway v2 event for `method path` with an optional JSON body.
fn http_event(method: &str, path: &str, body: Option<&Value>) -> String {
    let (path_only, query) = path.split_once('?').unwrap_or((path, ""));
    let mut e: Value = serde_json::from_str(&fixture("load-get-health.json")).unwrap();
    e["routeKey"] = Value::String(format!("{method} {path_only}"));
    e["rawPath"] = Value::String(path_only.into());
    e["rawQueryString"] = Value::String(query.into());
    e["requestContext"]["http"]["method"] = Value::String(method.into());
    e["requestContext"]["http"]["path"] = Value::String(path_only.into());
    e["requestContext"]["routeKey"] = e["routeKey"].clone();
    if let Some(b) = body {
        let text = b.to_string();
        e["headers"]["content-type"] = "application/json".into();
        e["headers"]["content-length"] = Value::String(text.len().to_string());
        e["body"] = Value::String(text);
    }
    e.to_string()
}

/// The status and JSON body of an API Gateway v2 response.
fn http_answer(name: &str, outcome: Outcome) -> (u16, Value) {
    let r = match outcome {
        Outcome::Response(r) => r,
        Outcome::Error(e) => panic!("{name}: the function reported an error: {e}"),
    };
    let status = r["statusCode"]
        .as_u64()
        .unwrap_or_else(|| panic!("{name}: no statusCode in {r}")) as u16;
    let body = r["body"].as_str().unwrap_or("");
    let body = if r["isBase64Encoded"] == true {
        use base64::Engine;
        String::from_utf8(
            base64::engine::general_purpose::STANDARD
                .decode(body)
                .unwrap(),
        )
        .unwrap()
    } else {
        body.to_owned()
    };
    let json = if body.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("{name}: body is not JSON ({e}): {body}"))
    };
    (status, json)
}

fn aws_configured() -> bool {
    dspy_storage_core::testing::aws_test_enabled("the Lambda runtime on AWS")
}

async fn fresh_location() -> AwsLocation {
    let name = format!("dspy-rt-{}", uuid_like());
    let location = AwsLocation {
        table: name.clone(),
        bucket: name,
    };
    open::aws(
        &dspy_storage_core::backend::aws::sdk_config().await,
        &location,
        Default::default(),
        true,
        None,
    )
    .await
    .expect("table and bucket created");
    location
}

fn uuid_like() -> String {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{:x}{:x}", t, std::process::id())
}

#[tokio::test]
async fn every_function_binary_serves_api_gateway_events_through_the_runtime_api() {
    if !aws_configured() {
        return;
    }
    let location = fresh_location().await;
    let mut cold = Vec::new();

    // store: the real API Gateway fixture.
    let store = start_function("store", &location).await;
    cold.push(("store", store.cold_start));
    let (status, stored) = http_answer(
        "store",
        store.api.invoke(&fixture("store-post-programs.json")).await,
    );
    assert_eq!(status, 201, "store: {stored}");
    let id = stored["id"].as_str().expect("stored id").to_owned();
    // A route of another function is not this function's: 404 in the error shape.
    let (status, body) = http_answer(
        "store",
        store.api.invoke(&http_event("GET", "/health", None)).await,
    );
    assert_eq!(status, 404, "store answers only its routes: {body}");
    assert_eq!(body["error"]["code"], "not_found");

    // load: the program by id (the fixture's placeholder id replaced) and the health route.
    let load = start_function("load", &location).await;
    cold.push(("load", load.cold_start));
    let event =
        fixture("load-get-program.json").replace("00000000-0000-0000-0000-000000000000", &id);
    let (status, body) = http_answer("load", load.api.invoke(&event).await);
    assert_eq!(status, 200, "load: {body}");
    assert_eq!(body["id"], id.as_str(), "load: {body}");
    let (status, body) = http_answer(
        "load",
        load.api.invoke(&fixture("load-get-health.json")).await,
    );
    assert_eq!(status, 200, "health: {body}");
    assert_eq!(body["status"], "ok");
    // Many invocations on one warm process.
    for _ in 0..5 {
        let (status, _) = http_answer("load", load.api.invoke(&event).await);
        assert_eq!(status, 200);
    }

    // The other four answer their own routes through their own router (and 404 the others).
    for name in ["query", "trend", "cleanup", "backup"] {
        let f = start_function(name, &location).await;
        cold.push((name, f.cold_start));
        let (status, body) = http_answer(
            name,
            f.api.invoke(&http_event("GET", "/health", None)).await,
        );
        assert_eq!(
            status, 404,
            "{name}: /health is the load function's: {body}"
        );
        assert_eq!(body["error"]["code"], "not_found", "{name}");
        let own = match name {
            "query" => http_event("GET", "/search?q=signature:qa.Answer", None),
            "trend" => http_event("GET", "/report", None),
            "cleanup" => http_event(
                "POST",
                "/maintenance/cleanup",
                Some(&serde_json::json!({"dry_run": true})),
            ),
            _ => http_event("GET", "/backups", None),
        };
        let (status, body) = http_answer(name, f.api.invoke(&own).await);
        assert_eq!(status, 200, "{name}: its own route is served: {body}");
        assert!(
            body.is_object(),
            "{name}: a JSON object answer ({status}): {body}"
        );
    }

    // The daily schedule: cleanup gets a real EventBridge scheduled event (no HTTP shape), runs
    // its configured policy and answers the run's summary.
    let cleanup = start_function("cleanup", &location).await;
    let outcome = cleanup
        .api
        .invoke(&fixture("cleanup-scheduled-event.json"))
        .await;
    let summary = match outcome {
        Outcome::Response(v) => v,
        Outcome::Error(e) => panic!("cleanup: scheduled run failed: {e}"),
    };
    assert_eq!(summary["dry_run"], false, "cleanup: {summary}");
    assert_eq!(summary["complete"], true, "cleanup: {summary}");
    assert_eq!(
        summary["event_id"], "53dc4d37-cffa-4f76-80c9-8b7d4a4d2eaa",
        "cleanup: {summary}"
    );
    assert!(
        summary["summary"]["programs"].as_u64() >= Some(1),
        "cleanup saw the stored program: {summary}"
    );

    // The daily backup: the same kind of scheduled event to the backup function.
    let backup = start_function("backup", &location).await;
    let outcome = backup
        .api
        .invoke(&fixture("cleanup-scheduled-event.json"))
        .await;
    let summary = match outcome {
        Outcome::Response(v) => v,
        Outcome::Error(e) => panic!("backup: scheduled run failed: {e}"),
    };
    assert_eq!(summary["job"], "backup", "backup: {summary}");
    assert_eq!(summary["status"], "complete", "backup: {summary}");
    assert!(
        summary["counts"]["programs"].as_u64() >= Some(1),
        "the backup holds the stored program: {summary}"
    );

    println!("\n| function | cold start (spawn → ready for the first event) |\n|---|---:|");
    for (name, d) in &cold {
        println!("| {name} | {:.1} ms |", d.as_secs_f64() * 1000.0);
    }
}

/// The load function reads its cursor secret from Secrets Manager once per cold start
/// (`DSPY_STORAGE_CURSOR_SECRET_ARN`): a cursor one instance hands out works in another instance,
/// also one started after the secret was rotated (AWSPREVIOUS); an instance without the secret
/// refuses it, saying why.
#[tokio::test]
async fn cursors_survive_cold_starts_and_a_rotation_of_the_secrets_manager_secret() {
    if !aws_configured() {
        return;
    }
    let location = fresh_location().await;
    let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .http_client(dspy_storage_core::backend::aws::https_client())
        .load()
        .await;
    let sm = aws_sdk_secretsmanager::Client::new(&sdk);
    let arn = sm
        .create_secret()
        .name(format!("dspy-runtime-cursor-{}", uuid_like()))
        .secret_string(format!("first-{}", uuid_like()))
        .send()
        .await
        .expect("CreateSecret")
        .arn()
        .unwrap()
        .to_owned();
    let store = start_function("store", &location).await;
    for _ in 0..2 {
        let body = serde_json::json!({"program": {"x": 1}, "metadata": {"signature": "rt.Cursor"}});
        let (status, v) = http_answer(
            "store",
            store
                .api
                .invoke(&http_event("POST", "/programs", Some(&body)))
                .await,
        );
        assert_eq!(status, 201, "store: {v}");
    }
    let env = [("DSPY_STORAGE_CURSOR_SECRET_ARN", arn.as_str())];
    let first = start_function_with("load", &location, &env).await;
    let (status, page) = http_answer(
        "load",
        first
            .api
            .invoke(&http_event(
                "GET",
                "/signatures/rt.Cursor/versions?limit=1",
                None,
            ))
            .await,
    );
    assert_eq!(status, 200, "load: {page}");
    let cursor = page["next_cursor"]
        .as_str()
        .expect("a next cursor")
        .to_owned();
    let next = format!("/signatures/rt.Cursor/versions?limit=1&cursor={cursor}");
    let second = start_function_with("load", &location, &env).await;
    let (status, body) = http_answer(
        "load",
        second.api.invoke(&http_event("GET", &next, None)).await,
    );
    assert_eq!(status, 200, "another cold start, same secret: {body}");
    assert_eq!(body["versions"][0]["version"], "1.0.1", "{body}");
    sm.put_secret_value()
        .secret_id(&arn)
        .secret_string(format!("second-{}", uuid_like()))
        .send()
        .await
        .expect("PutSecretValue");
    let rotated = start_function_with("load", &location, &env).await;
    let (status, body) = http_answer(
        "load",
        rotated.api.invoke(&http_event("GET", &next, None)).await,
    );
    assert_eq!(status, 200, "after a rotation (AWSPREVIOUS): {body}");
    let without = start_function("load", &location).await;
    let (status, body) = http_answer(
        "load",
        without.api.invoke(&http_event("GET", &next, None)).await,
    );
    assert_eq!(status, 400, "an instance without the secret: {body}");
    assert_eq!(body["error"]["field"], "cursor", "{body}");
}
