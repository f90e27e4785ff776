//! The Lambda side: API Gateway HTTP API (payload format 2.0) events, parsed by lambda_http as the
//! Lambda runtime does, sent through each function's own router. The events are hand-written
//! fixtures under `tests/fixtures/events/`.

use std::collections::BTreeMap;

use axum::Router;
use dspy_storage_core::blob::codec::sha256_hex;
use dspy_storage_functions::{all_routes, function_router, AppState, Function};
use dspy_storage_tests::{backends, Answer, TestStore};
use http::StatusCode;
use serde_json::value::RawValue;
use serde_json::{json, Value};
use tower::ServiceExt;

/// The placeholder program id of `load-get-program.json`.
const PLACEHOLDER_ID: &str = "00000000-0000-0000-0000-000000000000";

fn event(name: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/events")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Parses an API Gateway event the way lambda_http's runtime does and runs it through `router`.
async fn invoke(router: Router, event_json: &str) -> Answer {
    let request = lambda_http::request::from_str(event_json).expect("a valid API Gateway event");
    let response = router.oneshot(request).await.expect("infallible");
    Answer::from_response(response).await
}

fn router(store: &TestStore, function: Function) -> Router {
    function_router(AppState::new(store.storage.clone()), function)
}

/// The `program` raw text inside an event's (decoded) body.
fn program_of_body(body: &str) -> String {
    let map: BTreeMap<String, Box<RawValue>> = serde_json::from_str(body).expect("JSON body");
    map["program"].get().to_owned()
}

#[test]
fn fixtures_are_api_gateway_v2_events() {
    for name in [
        "store-post-programs.json",
        "store-post-programs-base64.json",
        "load-get-program.json",
        "load-get-latest-version.json",
        "load-get-health.json",
        "query-get-search.json",
    ] {
        let text = event(name);
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["version"], "2.0", "{name}");
        assert_eq!(v["requestContext"]["stage"], "$default", "{name}");
        let method = v["requestContext"]["http"]["method"].as_str().unwrap();
        let request =
            lambda_http::request::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(request.method().as_str(), method, "{name}");
        assert_eq!(
            request.uri().path(),
            v["rawPath"].as_str().unwrap(),
            "{name}"
        );
        let query = v["rawQueryString"].as_str().unwrap();
        assert_eq!(request.uri().query().unwrap_or(""), query, "{name}");
        // Decoded body length matches the content-length header API Gateway forwards.
        let body: &[u8] = request.body().as_ref();
        assert_eq!(
            body.len().to_string(),
            v["headers"]["content-length"].as_str().unwrap(),
            "{name}"
        );
    }
}

#[tokio::test]
async fn store_then_load_through_the_function_routers() {
    let store_event = event("store-post-programs.json");
    let event_body: Value = serde_json::from_str(&store_event).unwrap();
    let program = program_of_body(event_body["body"].as_str().unwrap());
    for store in backends().await {
        let k = store.kind;
        let stored = invoke(router(&store, Function::Store), &store_event).await;
        let s = stored.expect(k, "store event", 201);
        assert_eq!(s["signature"], "LambdaQA", "{k:?}");
        assert_eq!(s["version"], "1.0.0", "{k:?}");
        assert_eq!(s["project"], "lambda-tests", "{k:?}");
        assert_eq!(s["size"], program.len() as u64, "{k:?}");
        assert_eq!(s["sha256"], sha256_hex(program.as_bytes()), "{k:?}");
        let id = s["id"].as_str().unwrap().to_owned();

        // A redelivered event (no Idempotency-Key) conflicts on the taken version.
        invoke(router(&store, Function::Store), &store_event)
            .await
            .expect_error(k, "store event again", 409, "conflict");

        // Load by id: the fixture's path and pathParameters with the real id.
        let load_event = event("load-get-program.json").replace(PLACEHOLDER_ID, &id);
        let loaded = invoke(router(&store, Function::Load), &load_event).await;
        let l = loaded.expect(k, "load event", 200);
        assert_eq!(l["id"], id.as_str(), "{k:?}");
        assert_eq!(l["signature"], "LambdaQA", "{k:?}");
        assert_eq!(l["project"], "lambda-tests", "{k:?}");
        assert_eq!(l["metadata"]["optimization_method"], "miprov2", "{k:?}");
        assert_eq!(
            l["metadata"]["tags"],
            serde_json::json!(["lambda"]),
            "{k:?}"
        );
        assert_eq!(l["performance"], 0.87, "{k:?}");
        assert_eq!(
            loaded.raw_program(),
            program,
            "{k:?}: byte-identical program"
        );
        assert!(
            loaded
                .headers
                .get("content-type")
                .is_some_and(|v| v.to_str().unwrap().starts_with("application/json")),
            "{k:?}: JSON content type"
        );

        // The fixture as written names no stored program.
        invoke(
            router(&store, Function::Load),
            &event("load-get-program.json"),
        )
        .await
        .expect_error(k, "unknown id", 404, "not_found");

        // Latest version of the signature in the event's project.
        let latest_event = event("load-get-latest-version.json");
        let latest = invoke(router(&store, Function::Load), &latest_event).await;
        let v = latest.expect(k, "latest event", 200);
        assert_eq!(v["id"], id.as_str(), "{k:?}");
        assert_eq!(v["version"], "1.0.0", "{k:?}");
        assert_eq!(latest.raw_program(), program, "{k:?}");
        // Without ?project= the default project is read: it has no such signature.
        let mut no_project: Value = serde_json::from_str(&latest_event).unwrap();
        no_project["rawQueryString"] = "".into();
        no_project
            .as_object_mut()
            .unwrap()
            .remove("queryStringParameters");
        invoke(router(&store, Function::Load), &no_project.to_string())
            .await
            .expect_error(k, "latest in the default project", 404, "not_found");

        // A function's router serves only its own routes.
        // /programs/{id} exists on the store function for DELETE: GET there is 405.
        invoke(router(&store, Function::Store), &load_event)
            .await
            .expect_error(k, "GET /programs/{id} on store", 405, "invalid_request");
        invoke(router(&store, Function::Query), &load_event)
            .await
            .expect_error(k, "GET /programs/{id} on query", 404, "not_found");
        invoke(router(&store, Function::Load), &store_event)
            .await
            .expect_error(k, "POST /programs on load", 404, "not_found");
        invoke(router(&store, Function::Trend), &store_event)
            .await
            .expect_error(k, "POST /programs on trend", 404, "not_found");
        invoke(router(&store, Function::Query), &latest_event)
            .await
            .expect_error(k, "versions on query", 404, "not_found");
        // Still exactly one version: the refused requests stored nothing.
        let a = invoke(
            router(&store, Function::Load),
            &latest_event.replace("/versions/latest", "/versions"),
        )
        .await;
        let list = a.expect(k, "versions", 200);
        assert_eq!(
            list["versions"].as_array().unwrap().len(),
            1,
            "{k:?}: {list}"
        );
    }
}

#[tokio::test]
async fn base64_encoded_body_is_decoded() {
    let b64_event = event("store-post-programs-base64.json");
    let plain = {
        // The same request, with the body decoded by lambda_http itself.
        let request = lambda_http::request::from_str(&b64_event).unwrap();
        String::from_utf8(request.body().as_ref().to_vec()).expect("UTF-8 body")
    };
    let program = program_of_body(&plain);
    assert!(
        program.contains("Résumé ✓"),
        "the fixture carries non-ASCII text"
    );
    for store in backends().await {
        let k = store.kind;
        let s = invoke(router(&store, Function::Store), &b64_event)
            .await
            .expect(k, "base64 store event", 201);
        assert_eq!(s["signature"], "LambdaB64", "{k:?}");
        assert_eq!(s["version"], "1.0.0", "{k:?}");
        assert_eq!(s["size"], program.len() as u64, "{k:?}: size in bytes");
        assert_eq!(s["sha256"], sha256_hex(program.as_bytes()), "{k:?}");
        let id = s["id"].as_str().unwrap();
        let load_event = event("load-get-program.json").replace(PLACEHOLDER_ID, id);
        let loaded = invoke(router(&store, Function::Load), &load_event).await;
        let v = loaded.expect(k, "load", 200);
        assert_eq!(v["metadata"]["description"], "sent base64-encoded", "{k:?}");
        assert_eq!(
            loaded.raw_program(),
            program,
            "{k:?}: byte-identical program"
        );

        // A base64 body that is not the JSON it claims is a 400 in the error shape.
        let mut bad: Value = serde_json::from_str(&b64_event).unwrap();
        bad["body"] = "bm90IGpzb24=".into(); // "not json"
        bad["headers"]["content-length"] = "8".into();
        invoke(router(&store, Function::Store), &bad.to_string())
            .await
            .expect_error(k, "base64 non-JSON body", 400, "invalid_request");
    }
}

#[tokio::test]
async fn health_event_is_served_by_the_load_function_only() {
    let health = event("load-get-health.json");
    for store in backends().await {
        let k = store.kind;
        let v = invoke(router(&store, Function::Load), &health)
            .await
            .expect(k, "health", 200);
        assert_eq!(v["status"], "ok", "{k:?}");
        assert!(v["backend"].is_string(), "{k:?}");
        for f in Function::ALL.into_iter().filter(|f| *f != Function::Load) {
            invoke(router(&store, f), &health).await.expect_error(
                k,
                &format!("health on {}", f.name()),
                404,
                "not_found",
            );
        }
    }
}

#[tokio::test]
async fn query_function_serves_search() {
    let search = event("query-get-search.json");
    for store in backends().await {
        let k = store.kind;
        let c = store.client();
        let mut best = String::new();
        for perf in [0.9, 0.5] {
            let v = c
                .post_json(
                    "/programs",
                    &serde_json::json!({"program": {}, "metadata": {"signature": "LambdaQA", "performance": perf}}),
                )
                .await
                .expect(k, "store", 201);
            if perf > 0.8 {
                best = v["id"].as_str().unwrap().to_owned();
            }
        }
        // `q=signature:LambdaQA performance>0.8&limit=10`, percent-encoded by API Gateway.
        let v = invoke(router(&store, Function::Query), &search)
            .await
            .expect(k, "search on query", 200);
        let results = v["results"].as_array().unwrap();
        assert_eq!(results.len(), 1, "{k:?}: {v}");
        assert_eq!(results[0]["id"], best.as_str());
        invoke(router(&store, Function::Load), &search)
            .await
            .expect_error(k, "search on load", 404, "not_found");
    }
}

/// Each function's router serves exactly the routes of its function: on its own router a route
/// is not answered by the fallback (what a router with no routes answers); on every other
/// function's router it is (404), or the path exists there for another method (405). A route
/// that answers 501 does so only on its own router.
#[tokio::test]
async fn each_function_router_serves_exactly_its_routes() {
    for store in backends().await {
        let k = store.kind;
        let state = AppState::new(store.storage.clone());
        let template: Value = serde_json::from_str(&event("load-get-health.json")).unwrap();
        for route in all_routes() {
            let path = route
                .path
                .replace("{id}", "0190a5c2-7b1e-7c3d-8e4f-123456789abc")
                .replace("{signature}", "NoSuchSignature")
                .replace("{version}", "latest")
                .replace("{alias}", "production")
                .replace("{name}", "no-such-backup");
            let mut ev = template.clone();
            ev["routeKey"] = format!("{} {}", route.method, route.path).into();
            ev["requestContext"]["routeKey"] = ev["routeKey"].clone();
            ev["rawPath"] = path.clone().into();
            ev["requestContext"]["http"]["path"] = path.clone().into();
            ev["requestContext"]["http"]["method"] = route.method.as_str().into();
            let ev = ev.to_string();
            let fallback =
                invoke(dspy_storage_functions::router_for(state.clone(), &[]), &ev).await;
            fallback.expect_error(
                k,
                &format!("{} {path} unrouted", route.method),
                404,
                "not_found",
            );
            for f in Function::ALL {
                let reply = invoke(router(&store, f), &ev).await;
                let what = format!("{} {path} on {}", route.method, f.name());
                let is_fallback = reply.status == fallback.status && reply.body == fallback.body;
                if f == route.function {
                    assert!(
                        !is_fallback && reply.status != StatusCode::METHOD_NOT_ALLOWED,
                        "{k:?}: {what}: not served by its own function: {} {}",
                        reply.status,
                        String::from_utf8_lossy(&reply.body)
                    );
                    assert!(
                        !reply.status.is_server_error(),
                        "{k:?}: {what}: {} {}",
                        reply.status,
                        String::from_utf8_lossy(&reply.body)
                    );
                } else if reply.status == StatusCode::METHOD_NOT_ALLOWED {
                    reply.expect_error(k, &what, 405, "invalid_request");
                } else {
                    assert!(
                        is_fallback,
                        "{k:?}: {what}: served by another function: {} {}",
                        reply.status,
                        String::from_utf8_lossy(&reply.body)
                    );
                }
            }
        }
    }
}

/// What a function's routes call on AWS, observed: a scenario of each function's main routes runs
/// through that function's own router on the AWS backend, and every SDK operation the request
/// counter sees must be among the function's `sdk_calls` in `infra/iam-actions.json` — the list
/// its IAM role is derived from (`functions/tests/infra.rs`). A call the list misses would be
/// refused by IAM once deployed (LocalStack does not enforce IAM). Covers store, load (with the
/// load-count write), query (free text through the word index) and trend; not yet cleanup and
/// backup. The counter names operations, not the actions inside a transaction: that
/// `TransactWriteItems` needs `UpdateItem` (counter `Add`s) is the mapping in the JSON.
#[tokio::test]
async fn each_function_calls_only_what_its_role_grants() {
    let Some(store) = dspy_storage_tests::aws().await else {
        return;
    };
    let k = store.kind;
    let counter = store.counter.clone().expect("the AWS fixture counts");
    let iam: Value = serde_json::from_str(
        &std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../infra/iam-actions.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let client = |f: Function| dspy_storage_tests::Client {
        router: router(&store, f),
    };
    let json_req = |c: &dspy_storage_tests::Client, m: http::Method, uri: String, body: Value| {
        let c = dspy_storage_tests::Client {
            router: c.router.clone(),
        };
        async move {
            c.request(
                m,
                &uri,
                &[("content-type", "application/json")],
                body.to_string(),
            )
            .await
        }
    };
    let check = |function: &str| {
        let allowed: Vec<String> = iam["functions"][function]["sdk_calls"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_owned())
            .collect();
        let seen = counter.snapshot();
        assert!(
            !seen.is_empty(),
            "{function}: the scenario made no AWS call"
        );
        for call in seen.keys() {
            assert!(
                allowed.contains(call),
                "{function} calls {call}, which infra/iam-actions.json does not list \
                 (its role would refuse it): seen {seen:?}"
            );
        }
        counter.reset();
    };

    let s = client(Function::Store);
    counter.reset();
    let body = |v: &str| {
        json!({"program": {"predictors": {"qa": {"v": v}}},
               "metadata": {"signature": "IamScope", "tags": ["roles"],
                            "description": "observed calls of every function"}})
    };
    let first = s
        .post_json("/programs", &body("1"))
        .await
        .expect(k, "store 1", 201);
    let id = first["id"].as_str().unwrap().to_owned();
    s.post_json("/programs", &body("2"))
        .await
        .expect(k, "store 2", 201);
    json_req(
        &s,
        http::Method::PATCH,
        format!("/programs/{id}/metadata"),
        json!({"tags": {"add": ["x"]}}),
    )
    .await
    .expect(k, "patch", 200);
    json_req(
        &s,
        http::Method::PUT,
        "/signatures/IamScope/aliases/production".into(),
        json!({"version": "1.0.0"}),
    )
    .await
    .expect(k, "set alias", 200);
    s.post_json(
        "/signatures/IamScope/rollback",
        &json!({"to_version": "1.0.0"}),
    )
    .await
    .expect(k, "rollback", 201);
    check("store");

    let l = client(Function::Load);
    l.get(&format!("/programs/{id}"))
        .await
        .expect(k, "load by id", 200);
    l.get("/signatures/IamScope/aliases/production/program")
        .await
        .expect(k, "load alias", 200);
    l.get("/signatures/IamScope/versions/latest/program")
        .await
        .expect(k, "load latest", 200);
    l.get("/signatures/IamScope/versions")
        .await
        .expect(k, "versions", 200);
    store.storage.flush_load_counts().await;
    check("load");

    let q = client(Function::Query);
    let found = q
        .get("/search?q=observed")
        .await
        .expect(k, "free text", 200);
    // The two stores and the rollback copy share the description's words.
    assert_eq!(
        found["results"].as_array().map(Vec::len),
        Some(3),
        "{found}"
    );
    q.get("/search?q=signature:IamScope%20tag:roles")
        .await
        .expect(k, "tag search", 200);
    check("query");

    let t = client(Function::Trend);
    let rec = json!({"records": [{"metrics": {"accuracy": 0.8}, "record_id": "r1"}, {"metrics": {"accuracy": 0.9}}]});
    t.post_json(&format!("/programs/{id}/metrics"), &rec)
        .await
        .expect(k, "metrics", 201);
    t.post_json(&format!("/programs/{id}/metrics"), &rec)
        .await
        .expect(k, "metrics again", 201);
    t.get(&format!("/programs/{id}/metrics"))
        .await
        .expect(k, "history", 200);
    t.get(&format!("/programs/{id}/trends"))
        .await
        .expect(k, "trends", 200);
    check("trend");

    // Delete last: the store function again.
    s.request(
        http::Method::DELETE,
        &format!("/programs/{id}?force=true"),
        &[],
        "",
    )
    .await
    .expect(k, "forced delete", 204);
    check("store");
}
