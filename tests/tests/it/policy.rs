//! Promotion policies through the router on both backends: protected aliases (a writer refused,
//! an admin allowed, forced deletes of a protected target), evaluation gates (too few records,
//! too low a mean, the window, the environment, `not_worse_than_current` with its tolerance, a
//! rollback version judged on the version it copies), overrides, the alias history (content,
//! paging, newest first), and the race of a move against a policy change.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use axum::body::Body;
use dspy_storage_core::access::OPERATOR;
use dspy_storage_core::backend::{Item, ItemStore, Page, PageKey, Query, WriteOp};
use dspy_storage_core::blob::codec::sha256_hex;
use dspy_storage_core::domain::{AliasName, Project, Signature, Version};
use dspy_storage_core::model::policy::parse_policy;
use dspy_storage_core::storage::Storage;
use dspy_storage_core::Result;
use dspy_storage_functions::auth::{AccessControl, TokenTable};
use dspy_storage_tests::{backends, Answer, Client, Kind, TestStore};
use http::Method;
use serde_json::{json, Value};

const ADMIN: &str = "tok-policy-admin";
const WRITER: &str = "tok-policy-writer";
const READER: &str = "tok-policy-reader";

fn tokens() -> AccessControl {
    let entry = |name: &str, token: &str, role: &str| {
        format!(
            "[[token]]\nname = \"{name}\"\nsha256 = \"{}\"\nprojects = [\"*\"]\nrole = \"{role}\"\n\n",
            sha256_hex(token.as_bytes())
        )
    };
    let file = [
        entry("release-admin", ADMIN, "admin"),
        entry("ci-writer", WRITER, "writer"),
        entry("dash-reader", READER, "reader"),
    ]
    .concat();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("auth.toml");
    std::fs::write(&path, file).unwrap();
    AccessControl::Tokens(Arc::new(TokenTable::load(&path).expect("auth file loads")))
}

async fn call(c: &Client, token: &str, method: Method, uri: &str, body: Option<Value>) -> Answer {
    let auth = format!("Bearer {token}");
    let headers = [
        ("content-type", "application/json"),
        ("authorization", auth.as_str()),
    ];
    let body = body.map_or_else(Body::empty, |b| Body::from(b.to_string()));
    c.request(method, uri, &headers, body).await
}

/// Stores version `v` of `sig` and returns its id.
async fn put_version(c: &Client, k: Kind, sig: &str, v: &str) -> String {
    let body = json!({"program": {"predict": {"demos": [], "signature": {"instructions": format!("v{v}")}}},
                      "metadata": {"signature": sig, "version": v}});
    call(c, ADMIN, Method::POST, "/programs", Some(body))
        .await
        .expect(k, "store", 201)["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Records one `accuracy` value per entry of `values` (now, with `env`).
async fn record(c: &Client, k: Kind, id: &str, values: &[f64], env: Value) {
    let records: Vec<Value> = values
        .iter()
        .map(|v| json!({"metrics": {"accuracy": v}, "environment": env}))
        .collect();
    call(
        c,
        WRITER,
        Method::POST,
        &format!("/programs/{id}/metrics"),
        Some(json!({ "records": records })),
    )
    .await
    .expect(k, "record metrics", 201);
}

async fn set_policy(c: &Client, k: Kind, sig: &str, alias: &str, policy: Value) -> Value {
    call(
        c,
        ADMIN,
        Method::PUT,
        &format!("/signatures/{sig}/aliases/{alias}/policy"),
        Some(policy),
    )
    .await
    .expect(k, "set policy", 200)
}

async fn move_to(c: &Client, token: &str, sig: &str, alias: &str, body: Value) -> Answer {
    call(
        c,
        token,
        Method::PUT,
        &format!("/signatures/{sig}/aliases/{alias}"),
        Some(body),
    )
    .await
}

async fn history(c: &Client, k: Kind, sig: &str, alias: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut uri = format!("/signatures/{sig}/aliases/{alias}/history?limit=2");
        if let Some(cur) = &cursor {
            uri.push_str(&format!("&cursor={cur}"));
        }
        let page = call(c, READER, Method::GET, &uri, None)
            .await
            .expect(k, "history page", 200);
        out.extend(page["entries"].as_array().unwrap().iter().cloned());
        match page["next_cursor"].as_str() {
            Some(n) => cursor = Some(n.to_owned()),
            None => return out,
        }
    }
}

fn client(store: &TestStore) -> Client {
    store.client_with_access(tokens())
}

#[tokio::test]
async fn a_protected_alias_needs_the_admin_role_to_move_or_remove() {
    for store in backends().await {
        let k = store.kind;
        let c = client(&store);
        let sig = "pol.Protected";
        put_version(&c, k, sig, "1.0.0").await;
        let id2 = put_version(&c, k, sig, "1.0.1").await;
        move_to(&c, WRITER, sig, "production", json!({"version": "1.0.0"}))
            .await
            .expect(k, "writer sets the unprotected alias", 200);
        // Policies: only an admin sets or removes them; a reader reads them.
        let uri = format!("/signatures/{sig}/aliases/production/policy");
        call(
            &c,
            WRITER,
            Method::PUT,
            &uri,
            Some(json!({"protected": true})),
        )
        .await
        .expect_error(k, "writer sets a policy", 403, "forbidden");
        call(&c, READER, Method::GET, &uri, None)
            .await
            .expect_error(k, "no policy yet", 404, "not_found");
        let set = set_policy(&c, k, sig, "production", json!({"protected": true})).await;
        assert_eq!(set["protected"], true, "{k:?}: {set}");
        assert_eq!(set["updated_by"], "token release-admin", "{k:?}: {set}");
        let got = call(&c, READER, Method::GET, &uri, None).await.expect(
            k,
            "reader reads the policy",
            200,
        );
        assert_eq!(got["rev"], set["rev"], "{k:?}");

        // A writer is refused (and nothing changes); an admin moves it.
        let before = store.snapshot().await;
        let refused = move_to(&c, WRITER, sig, "production", json!({"version": "1.0.1"})).await;
        let e = refused.expect_error(k, "writer moves a protected alias", 403, "forbidden");
        assert!(
            e["error"]["message"]
                .as_str()
                .unwrap()
                .contains("protected alias production"),
            "{k:?}: {e}"
        );
        call(
            &c,
            WRITER,
            Method::DELETE,
            &format!("/signatures/{sig}/aliases/production"),
            None,
        )
        .await
        .expect_error(k, "writer removes a protected alias", 403, "forbidden");
        assert_eq!(
            before,
            store.snapshot().await,
            "{k:?}: a 403 changes nothing"
        );
        call(
            &c,
            WRITER,
            Method::DELETE,
            &format!("/programs/{id2}?force=true"),
            None,
        )
        .await
        .expect(k, "a forced delete of a version no alias points at", 204);
        let id2 = put_version(&c, k, sig, "1.0.2").await;
        move_to(&c, ADMIN, sig, "production", json!({"version": "1.0.2"}))
            .await
            .expect(k, "admin moves the protected alias", 200);
        // A forced delete of the protected alias's target needs admin too.
        let before = store.snapshot().await;
        call(
            &c,
            WRITER,
            Method::DELETE,
            &format!("/programs/{id2}?force=true"),
            None,
        )
        .await
        .expect_error(
            k,
            "writer force-deletes a protected target",
            403,
            "forbidden",
        );
        assert_eq!(
            before,
            store.snapshot().await,
            "{k:?}: a 403 changes nothing"
        );
        call(
            &c,
            ADMIN,
            Method::DELETE,
            &format!("/programs/{id2}?force=true"),
            None,
        )
        .await
        .expect(k, "admin force-deletes the protected target", 204);
        let h = history(&c, k, sig, "production").await;
        let actions: Vec<&str> = h.iter().map(|e| e["action"].as_str().unwrap()).collect();
        assert_eq!(
            actions,
            ["delete_target", "move", "policy_set", "move"],
            "{k:?}: newest first: {h:?}"
        );
        assert_eq!(h[0]["by"], "token release-admin");
        assert_eq!(h[0]["from_version"], "1.0.2");
        assert_eq!(h[1]["from_version"], "1.0.0");
        assert_eq!(h[1]["to_version"], "1.0.2");
        assert_eq!(h[3]["by"], "token ci-writer");
        assert_eq!(h[3]["from_version"], Value::Null);
        // Removing the policy (admin) lets a writer set the alias again.
        call(&c, WRITER, Method::DELETE, &uri, None)
            .await
            .expect_error(k, "writer removes a policy", 403, "forbidden");
        call(&c, ADMIN, Method::DELETE, &uri, None).await.expect(
            k,
            "admin removes the policy",
            204,
        );
        call(&c, ADMIN, Method::DELETE, &uri, None)
            .await
            .expect_error(k, "no policy left", 404, "not_found");
        move_to(&c, WRITER, sig, "production", json!({"version": "1.0.0"}))
            .await
            .expect(k, "writer sets the alias again", 200);
        let h = history(&c, k, sig, "production").await;
        assert_eq!(h[0]["action"], "move");
        assert_eq!(h[1]["action"], "policy_removed");
    }
}

#[tokio::test]
async fn a_gate_refuses_too_few_or_too_low_records_and_accepts_enough() {
    for store in backends().await {
        let k = store.kind;
        let c = client(&store);
        let sig = "pol.Gate";
        let v1 = put_version(&c, k, sig, "1.0.0").await;
        let v2 = put_version(&c, k, sig, "1.0.1").await;
        let v3 = put_version(&c, k, sig, "1.0.2").await;
        let eval = json!({"name": "eval"});
        // 1.0.0: too few records in the eval environment (the dev ones do not count).
        record(&c, k, &v1, &[0.95, 0.96], eval.clone()).await;
        record(&c, k, &v1, &[0.99, 0.99, 0.99], json!({"name": "dev"})).await;
        // 1.0.1: enough records, too low a mean: 0.874 over 5.
        record(&c, k, &v2, &[0.87, 0.87, 0.88, 0.874, 0.876], eval.clone()).await;
        // 1.0.2: meets it.
        record(&c, k, &v3, &[0.93, 0.91, 0.92], eval.clone()).await;
        set_policy(
            &c,
            k,
            sig,
            "production",
            json!({"require": {"metric": "accuracy", "min": 0.9, "min_records": 3,
                   "window": "7d", "environment": {"name": "eval"}}}),
        )
        .await;
        let e = move_to(&c, ADMIN, sig, "production", json!({"version": "1.0.0"}))
            .await
            .expect_error(k, "too few records", 409, "policy_violation");
        let msg = e["error"]["message"].as_str().unwrap();
        assert!(
            msg.contains(
                "accuracy has 2 records in the last 7d with environment name=eval < min_records 3"
            ),
            "{k:?}: {msg}"
        );
        let e = move_to(&c, WRITER, sig, "production", json!({"version": "1.0.1"}))
            .await
            .expect_error(k, "too low a mean", 409, "policy_violation");
        let msg = e["error"]["message"].as_str().unwrap();
        assert!(
            msg.contains("accuracy mean 0.874 over 5 records") && msg.contains("< min 0.9"),
            "{k:?}: {msg}"
        );
        // Nothing moved.
        call(
            &c,
            READER,
            Method::GET,
            &format!("/signatures/{sig}/aliases/production"),
            None,
        )
        .await
        .expect_error(k, "no alias after refusals", 404, "not_found");
        let ok = move_to(&c, WRITER, sig, "production", json!({"version": "1.0.2"}))
            .await
            .expect(k, "a version that meets the gate", 200);
        assert_eq!(ok["version"], "1.0.2");
        assert_eq!(ok["history"]["gate"]["passed"], true, "{k:?}: {ok}");
        assert_eq!(ok["history"]["gate"]["records"], 3, "{k:?}: {ok}");
        let h = history(&c, k, sig, "production").await;
        let actions: Vec<&str> = h.iter().map(|e| e["action"].as_str().unwrap()).collect();
        assert_eq!(
            actions,
            ["move", "refused", "refused", "policy_set"],
            "{k:?}"
        );
        assert_eq!(h[1]["to_version"], "1.0.1");
        assert_eq!(h[1]["by"], "token ci-writer");
        assert_eq!(h[1]["gate"]["records"], 5);
        assert!((h[1]["gate"]["mean"].as_f64().unwrap() - 0.874).abs() < 1e-9);
        assert_eq!(h[2]["gate"]["records"], 2, "the dev records do not count");
        assert!(h[1]["gate"]["failed"]
            .as_str()
            .unwrap()
            .contains("< min 0.9"));
    }
}

#[tokio::test]
async fn the_window_leaves_out_older_records_and_a_rollback_is_judged_on_what_it_copies() {
    for store in backends().await {
        let k = store.kind;
        let c = client(&store);
        let sig = "pol.Window";
        let v1 = put_version(&c, k, sig, "1.0.0").await;
        put_version(&c, k, sig, "1.0.1").await;
        let old = (chrono::Utc::now() - chrono::Duration::days(30)).to_rfc3339();
        let records: Vec<Value> = (0..5)
            .map(|_| json!({"metrics": {"accuracy": 0.99}, "timestamp": old}))
            .collect();
        call(
            &c,
            WRITER,
            Method::POST,
            &format!("/programs/{v1}/metrics"),
            Some(json!({"records": records})),
        )
        .await
        .expect(k, "old records", 201);
        set_policy(&c, k, sig, "production",
            json!({"require": {"metric": "accuracy", "min": 0.9, "min_records": 2, "window": "7d"}})).await;
        let e = move_to(&c, WRITER, sig, "production", json!({"version": "1.0.0"}))
            .await
            .expect_error(k, "records older than the window", 409, "policy_violation");
        assert!(
            e["error"]["message"]
                .as_str()
                .unwrap()
                .contains("has 0 records in the last 7d"),
            "{k:?}: {e}"
        );
        record(&c, k, &v1, &[0.95, 0.97], json!({})).await;
        // A rollback to 1.0.0 makes 1.0.2 with no records of its own: judged on 1.0.0's.
        let rb = call(
            &c,
            WRITER,
            Method::POST,
            &format!("/signatures/{sig}/rollback"),
            Some(json!({"to_version": "1.0.0"})),
        )
        .await
        .expect(k, "rollback", 201);
        assert_eq!(rb["version"], "1.0.2");
        let ok = move_to(&c, WRITER, sig, "production", json!({"version": "1.0.2"}))
            .await
            .expect(k, "a rollback version judged on the version it copies", 200);
        assert_eq!(ok["history"]["gate"]["records"], 2, "{k:?}: {ok}");
        assert_eq!(
            ok["history"]["gate"]["programs"].as_array().unwrap().len(),
            2,
            "{k:?}: {ok}"
        );
        assert_eq!(
            ok["history"]["gate"]["programs"][1],
            v1.as_str(),
            "{k:?}: {ok}"
        );
        // 1.0.1 has none at all.
        move_to(&c, WRITER, sig, "production", json!({"version": "1.0.1"}))
            .await
            .expect_error(k, "a version without records", 409, "policy_violation");
    }
}

#[tokio::test]
async fn not_worse_than_current_allows_the_tolerance_and_an_admin_may_override() {
    for store in backends().await {
        let k = store.kind;
        let c = client(&store);
        let sig = "pol.NotWorse";
        let v1 = put_version(&c, k, sig, "1.0.0").await;
        let v2 = put_version(&c, k, sig, "1.0.1").await;
        record(&c, k, &v1, &[0.9, 0.9], json!({})).await;
        record(&c, k, &v2, &[0.885, 0.885], json!({})).await;
        let strict = json!({"require": {"metric": "accuracy", "not_worse_than_current": true, "tolerance": 0.01}});
        set_policy(&c, k, sig, "production", strict).await;
        // No target yet: the comparison is skipped.
        move_to(&c, WRITER, sig, "production", json!({"version": "1.0.0"}))
            .await
            .expect(k, "first target", 200);
        let e = move_to(&c, WRITER, sig, "production", json!({"version": "1.0.1"}))
            .await
            .expect_error(
                k,
                "worse than current beyond the tolerance",
                409,
                "policy_violation",
            );
        let msg = e["error"]["message"].as_str().unwrap();
        assert!(
            msg.contains(
                "accuracy mean 0.885 over 2 records < current 1.0.0's mean 0.900 - tolerance 0.01"
            ),
            "{k:?}: {msg}"
        );
        // A writer may not override; an admin may, and it is recorded.
        move_to(
            &c,
            WRITER,
            sig,
            "production",
            json!({"version": "1.0.1", "override": {"reason": "hotfix for ticket 42"}}),
        )
        .await
        .expect_error(k, "a writer's override", 403, "forbidden");
        move_to(
            &c,
            ADMIN,
            sig,
            "production",
            json!({"version": "1.0.1", "override": {}}),
        )
        .await
        .expect_error(k, "an override without a reason", 400, "invalid_request");
        let ok = move_to(
            &c,
            ADMIN,
            sig,
            "production",
            json!({"version": "1.0.1", "override": {"reason": "hotfix for ticket 42"}}),
        )
        .await
        .expect(k, "an admin's override", 200);
        assert_eq!(ok["history"]["action"], "override");
        let h = history(&c, k, sig, "production").await;
        assert_eq!(h[0]["action"], "override");
        assert_eq!(h[0]["override_reason"], "hotfix for ticket 42");
        assert_eq!(h[0]["by"], "token release-admin");
        assert_eq!(h[0]["gate"]["passed"], false);
        assert_eq!(h[0]["gate"]["current_version"], "1.0.0");
        assert_eq!(h[1]["action"], "refused");
        // With a wider tolerance 1.0.0 (0.900) is within 0.02 of current 1.0.1 (0.885)... and so
        // is any move back; a narrower one refuses a worse version only.
        set_policy(&c, k, sig, "production",
            json!({"require": {"metric": "accuracy", "not_worse_than_current": true, "tolerance": 0.02}})).await;
        move_to(&c, WRITER, sig, "production", json!({"version": "1.0.0"}))
            .await
            .expect(k, "better than current", 200);
        move_to(&c, WRITER, sig, "production", json!({"version": "1.0.1"}))
            .await
            .expect(k, "worse by 0.015, within a tolerance of 0.02", 200);
    }
}

#[tokio::test]
async fn the_history_pages_newest_first_and_answers_moves_without_change_once() {
    for store in backends().await {
        let k = store.kind;
        let c = client(&store);
        let sig = "pol.History";
        for v in ["1.0.0", "1.0.1", "1.0.2"] {
            put_version(&c, k, sig, v).await;
        }
        let order = ["1.0.0", "1.0.1", "1.0.2", "1.0.0", "1.0.1"];
        for v in order {
            let a = move_to(&c, WRITER, sig, "canary", json!({"version": v}))
                .await
                .expect(k, "move", 200);
            assert!(a["history"].is_object(), "{k:?}: {a}");
        }
        // A PUT to the current target writes nothing.
        let same = move_to(&c, WRITER, sig, "canary", json!({"version": "1.0.1"}))
            .await
            .expect(k, "no change", 200);
        assert!(same.get("history").is_none(), "{k:?}: {same}");
        call(
            &c,
            WRITER,
            Method::DELETE,
            &format!("/signatures/{sig}/aliases/canary"),
            None,
        )
        .await
        .expect(k, "remove", 204);
        let h = history(&c, k, sig, "canary").await;
        assert_eq!(h.len(), 6, "{k:?}: {h:?}");
        assert_eq!(h[0]["action"], "remove");
        assert_eq!(h[0]["from_version"], "1.0.1");
        let tos: Vec<&str> = h[1..]
            .iter()
            .map(|e| e["to_version"].as_str().unwrap())
            .collect();
        assert_eq!(tos, ["1.0.1", "1.0.0", "1.0.2", "1.0.1", "1.0.0"], "{k:?}");
        let froms: Vec<Value> = h[1..].iter().map(|e| e["from_version"].clone()).collect();
        assert_eq!(
            froms,
            [
                json!("1.0.0"),
                json!("1.0.2"),
                json!("1.0.1"),
                json!("1.0.0"),
                Value::Null
            ]
        );
        let times: Vec<&str> = h.iter().map(|e| e["at"].as_str().unwrap()).collect();
        assert!(
            times.windows(2).all(|w| w[0] >= w[1]),
            "{k:?}: newest first {times:?}"
        );
        // Cursors are bound to the alias's listing.
        let first = call(
            &c,
            READER,
            Method::GET,
            &format!("/signatures/{sig}/aliases/canary/history?limit=1"),
            None,
        )
        .await
        .expect(k, "first page", 200);
        let cursor = first["next_cursor"].as_str().unwrap();
        call(
            &c,
            READER,
            Method::GET,
            &format!("/signatures/{sig}/aliases/other/history?cursor={cursor}"),
            None,
        )
        .await
        .expect_error(k, "another alias's cursor", 400, "invalid_request");
        // An alias never moved has an empty history.
        let none = call(
            &c,
            READER,
            Method::GET,
            &format!("/signatures/{sig}/aliases/never/history"),
            None,
        )
        .await
        .expect(k, "empty history", 200);
        assert_eq!(none["entries"], json!([]));
        assert_eq!(none["next_cursor"], Value::Null);
    }
}

/// An item store that runs a hook once, right before the first transaction that commits an
/// alias move: the policy changes between the move's evaluation and its commit.
struct Interleave {
    inner: Arc<dyn ItemStore>,
    armed: AtomicBool,
    hook: Arc<Storage>,
}

#[async_trait]
impl ItemStore for Interleave {
    async fn get(&self, pk: &str, sk: &str) -> Result<Option<Item>> {
        self.inner.get(pk, sk).await
    }
    async fn get_many(&self, keys: &[(String, String)]) -> Result<Vec<Option<Item>>> {
        self.inner.get_many(keys).await
    }
    async fn transact(&self, ops: Vec<WriteOp>) -> Result<()> {
        let is_move = ops.iter().any(|op| match op {
            WriteOp::Put { item, .. } => {
                item.pk.starts_with("AHIST#")
                    && item
                        .data()
                        .is_some_and(|d| d.contains("\"action\":\"move\""))
            }
            _ => false,
        });
        if is_move && self.armed.swap(false, Ordering::SeqCst) {
            let (p, s, a) = ids();
            self.hook
                .set_alias_policy(
                    &OPERATOR,
                    &p,
                    &s,
                    &a,
                    parse_policy(&json!({"require": {"metric": "accuracy", "min": 0.9}})).unwrap(),
                )
                .await
                .expect("the strict policy is set between evaluation and commit");
        }
        self.inner.transact(ops).await
    }
    async fn query(&self, query: &Query) -> Result<Page<Item>> {
        self.inner.query(query).await
    }
    async fn batch_put(&self, items: Vec<Item>) -> Result<()> {
        self.inner.batch_put(items).await
    }
    async fn batch_put_once(&self, items: Vec<Item>) -> Result<Vec<Item>> {
        self.inner.batch_put_once(items).await
    }
    async fn scan(&self, start: Option<PageKey>, limit: usize) -> Result<Page<Item>> {
        self.inner.scan(start, limit).await
    }
}

fn ids() -> (Project, Signature, AliasName) {
    (
        Project::parse("default").unwrap(),
        Signature::parse("pol.Race").unwrap(),
        AliasName::parse("production").unwrap(),
    )
}

#[tokio::test]
async fn a_move_never_commits_against_a_policy_it_was_not_judged_by() {
    for store in backends().await {
        let k = store.kind;
        let c = client(&store);
        let (p, s, a) = ids();
        let good = put_version(&c, k, s.as_str(), "1.0.0").await;
        let bad = put_version(&c, k, s.as_str(), "1.0.1").await;
        record(&c, k, &good, &[0.95], json!({})).await;
        record(&c, k, &bad, &[0.5], json!({})).await;
        set_policy(
            &c,
            k,
            s.as_str(),
            "production",
            json!({"require": {"metric": "accuracy"}}),
        )
        .await;

        // 1. Deterministic: the strict policy lands between the move's evaluation (permissive:
        // any record) and its transaction. The transaction is conditioned on the permissive
        // policy's revision, so it fails, the move is judged again and refused.
        let interleaved = Storage::new(
            Arc::new(Interleave {
                inner: store.storage.items().clone(),
                armed: AtomicBool::new(true),
                hook: store.storage.clone(),
            }),
            store.storage.blobs().clone(),
            store.storage.config().clone(),
            "interleaved",
        );
        let v = Version::parse("1.0.1").unwrap();
        let err = interleaved
            .put_alias(&OPERATOR, &p, &s, &a, &v, None)
            .await
            .expect_err("the move is judged again by the policy in force");
        assert!(
            matches!(err, dspy_storage_core::Error::PolicyViolation(_)),
            "{k:?}: {err}"
        );
        assert!(
            err.to_string()
                .contains("accuracy mean 0.500 over 1 records < min 0.9"),
            "{k:?}: {err}"
        );

        // 2. Concurrent: movers flip the alias between the good and the bad version while the
        // policy flips between permissive and strict. Every committed move must satisfy the
        // policy whose revision it recorded, and that revision must be one that was set.
        let permissive = json!({"require": {"metric": "accuracy"}});
        let strict = json!({"require": {"metric": "accuracy", "min": 0.9}});
        let mut tasks = Vec::new();
        for m in 0..4 {
            let c = c.clone();
            tasks.push(tokio::spawn(async move {
                for i in 0..6 {
                    let v = if (i + m) % 2 == 0 { "1.0.1" } else { "1.0.0" };
                    let a =
                        move_to(&c, WRITER, "pol.Race", "production", json!({"version": v})).await;
                    let code = a.status.as_u16();
                    assert!(
                        matches!(code, 200 | 409 | 503),
                        "{}: {}",
                        code,
                        String::from_utf8_lossy(&a.body)
                    );
                }
            }));
        }
        for t in 0..2 {
            let c = c.clone();
            let (permissive, strict) = (permissive.clone(), strict.clone());
            tasks.push(tokio::spawn(async move {
                for i in 0..6 {
                    let body = if (i + t) % 2 == 0 {
                        strict.clone()
                    } else {
                        permissive.clone()
                    };
                    let a = call(
                        &c,
                        ADMIN,
                        Method::PUT,
                        "/signatures/pol.Race/aliases/production/policy",
                        Some(body),
                    )
                    .await;
                    assert!(
                        matches!(a.status.as_u16(), 200 | 503),
                        "{}",
                        String::from_utf8_lossy(&a.body)
                    );
                }
            }));
        }
        for t in tasks {
            t.await.expect("task");
        }
        let h = history(&c, k, "pol.Race", "production").await;
        let mut policies = std::collections::HashMap::new();
        for e in h.iter().filter(|e| e["action"] == "policy_set") {
            policies.insert(
                e["policy_rev"].as_str().unwrap().to_owned(),
                e["policy"].clone(),
            );
        }
        let moves: Vec<&Value> = h.iter().filter(|e| e["action"] == "move").collect();
        assert!(!moves.is_empty(), "{k:?}: some moves committed");
        for m in &moves {
            let rev = m["policy_rev"]
                .as_str()
                .expect("every move recorded the policy it was judged by");
            let policy = policies
                .get(rev)
                .unwrap_or_else(|| panic!("{k:?}: unknown revision {rev}"));
            let min = policy["require"]["min"].as_f64();
            let mean = m["gate"]["mean"].as_f64().unwrap();
            assert!(
                min.is_none_or(|min| mean >= min),
                "{k:?}: a move against its policy: {m}"
            );
        }
        // The alias's target satisfies the policy in force now.
        let now = call(
            &c,
            READER,
            Method::GET,
            "/signatures/pol.Race/aliases/production/policy",
            None,
        )
        .await
        .expect(k, "policy now", 200);
        let target = call(
            &c,
            READER,
            Method::GET,
            "/signatures/pol.Race/aliases/production",
            None,
        )
        .await;
        if target.status == 200 && now["require"]["min"].is_number() {
            // Moved under the strict policy, or before it: the last move's recorded policy
            // decides; it is checked above. The strict policy does not move the alias.
            let last_move = moves[0];
            assert_eq!(target.json()["version"], last_move["to_version"], "{k:?}");
        }
    }
}

#[tokio::test]
async fn cleanup_keeps_the_newest_thousand_entries_of_an_alias() {
    use dspy_storage_core::model::policy::{HistoryAction, HistoryEntry};
    use dspy_storage_core::retention::cleanup::CleanupOptions;
    use dspy_storage_core::retention::policy::Policy;
    for store in backends().await {
        let k = store.kind;
        let c = client(&store);
        let sig = "pol.Prune";
        put_version(&c, k, sig, "1.0.0").await;
        move_to(&c, WRITER, sig, "production", json!({"version": "1.0.0"}))
            .await
            .expect(k, "a real move (the newest entry)", 200);
        // 1,004 older entries written below the API (a long-lived alias), one second apart.
        let (p, s) = (
            Project::parse("default").unwrap(),
            Signature::parse(sig).unwrap(),
        );
        let alias = AliasName::parse("production").unwrap();
        let start = chrono::Utc::now() - chrono::Duration::days(30);
        let items: Vec<Item> = (0..1004)
            .map(|i| {
                let mut e = HistoryEntry::new(&alias, HistoryAction::Move, "old-writer");
                e.at = start + chrono::Duration::seconds(i);
                e.to_version = Some(Version::parse("1.0.0").unwrap());
                e.to_id = None;
                e.to_item(&p, &s)
            })
            .collect();
        let oldest: Vec<String> = items.iter().take(5).map(|i| i.sk.clone()).collect();
        store.storage.items().batch_put(items).await.unwrap();
        // Another alias with few entries is not touched.
        move_to(&c, WRITER, sig, "staging", json!({"version": "1.0.0"}))
            .await
            .expect(k, "staging", 200);
        let dry = store
            .storage
            .cleanup(&OPERATOR, &CleanupOptions::new(Policy::default(), true))
            .await
            .unwrap();
        assert_eq!(
            dry.summary.alias_history_pruned, 5,
            "{k:?}: counted in a dry run"
        );
        assert_eq!(
            history(&c, k, sig, "production").await.len(),
            1005,
            "{k:?}: a dry run deletes nothing"
        );
        let real = store
            .storage
            .cleanup(&OPERATOR, &CleanupOptions::new(Policy::default(), false))
            .await
            .unwrap();
        assert_eq!(real.summary.alias_history_pruned, 5, "{k:?}");
        let h = history(&c, k, sig, "production").await;
        assert_eq!(h.len(), 1000, "{k:?}");
        assert_eq!(
            h[0]["by"], "token ci-writer",
            "{k:?}: the newest entry stays"
        );
        let pk = format!("AHIST#default#{sig}#production");
        for sk in &oldest {
            assert!(
                store.storage.items().get(&pk, sk).await.unwrap().is_none(),
                "{k:?}: {sk} pruned"
            );
        }
        assert_eq!(history(&c, k, sig, "staging").await.len(), 1, "{k:?}");
        let again = store
            .storage
            .cleanup(&OPERATOR, &CleanupOptions::new(Policy::default(), false))
            .await
            .unwrap();
        assert_eq!(
            again.summary.alias_history_pruned, 0,
            "{k:?}: nothing more to prune"
        );
    }
}

#[tokio::test]
async fn backups_carry_policies_and_history_and_a_restore_keeps_live_policies() {
    use dspy_storage_core::backup::BackupLocation;
    for store in backends().await {
        let k = store.kind;
        let c = client(&store);
        let sig = "pol.Backup";
        put_version(&c, k, sig, "1.0.0").await;
        move_to(&c, WRITER, sig, "production", json!({"version": "1.0.0"}))
            .await
            .expect(k, "move", 200);
        set_policy(&c, k, sig, "production", json!({"protected": true})).await;
        set_policy(&c, k, sig, "staging", json!({"protected": true})).await;
        call(
            &c,
            ADMIN,
            Method::POST,
            "/backups",
            Some(json!({"name": "pol"})),
        )
        .await
        .expect(k, "backup", 201);
        // Into a fresh store: every policy and entry comes back; the protected alias the restore
        // sets is recorded.
        let fresh = dspy_storage_tests::store_of(k).await;
        let mut state =
            dspy_storage_functions::AppState::new(fresh.storage.clone()).with_access(tokens());
        state.backup = Some(BackupLocation::new(store.storage.blobs().clone()));
        let fc = Client {
            router: dspy_storage_functions::app(state),
        };
        // A live policy of the target wins over the backup's.
        set_policy(&fc, k, sig, "staging", json!({"protected": false})).await;
        let r = call(
            &fc,
            ADMIN,
            Method::POST,
            "/backups/pol/restore",
            Some(json!({})),
        )
        .await
        .expect(k, "restore", 200);
        assert_eq!(r["restored_alias_policies"], 1, "{k:?}: {r}");
        assert_eq!(r["restored_protected_aliases"], 1, "{k:?}: {r}");
        assert!(
            r["restored_alias_history"].as_u64().unwrap() >= 3,
            "{k:?}: {r}"
        );
        let staging = call(
            &fc,
            READER,
            Method::GET,
            &format!("/signatures/{sig}/aliases/staging/policy"),
            None,
        )
        .await
        .expect(k, "live policy", 200);
        assert_eq!(
            staging["protected"], false,
            "{k:?}: the live policy is kept"
        );
        let prod = call(
            &fc,
            READER,
            Method::GET,
            &format!("/signatures/{sig}/aliases/production/policy"),
            None,
        )
        .await
        .expect(k, "restored policy", 200);
        assert_eq!(prod["protected"], true);
        let h = history(&fc, k, sig, "production").await;
        let actions: Vec<&str> = h.iter().map(|e| e["action"].as_str().unwrap()).collect();
        assert_eq!(actions, ["restore", "policy_set", "move"], "{k:?}: {h:?}");
        assert_eq!(h[0]["by"], "token release-admin");
        assert_eq!(h[0]["backup"], "pol");
        assert_eq!(h[0]["to_version"], "1.0.0");
        // The restored alias is protected in the target: a writer may not move it.
        call(
            &fc,
            WRITER,
            Method::DELETE,
            &format!("/signatures/{sig}/aliases/production"),
            None,
        )
        .await
        .expect_error(k, "protected after restore", 403, "forbidden");
        // Restoring again writes nothing new.
        let again = call(
            &fc,
            ADMIN,
            Method::POST,
            "/backups/pol/restore",
            Some(json!({})),
        )
        .await
        .expect(k, "restore again", 200);
        assert_eq!(again["restored_alias_policies"], 0, "{k:?}: {again}");
        assert_eq!(again["restored_protected_aliases"], 0, "{k:?}: {again}");
        assert_eq!(history(&fc, k, sig, "production").await.len(), 3, "{k:?}");
    }
}
