//! Fault injection on both backends: every multi-step operation, with an error, a throttle and a
//! timeout (the call happens, its answer is lost) injected at EACH of its backend calls in turn
//! (`dspy_storage_tests::faults`). After every fault:
//! - the API shows either the state before the operation or the state after it — never a part
//!   (every listed version loads with its bytes verified, `latest` and the signature summary agree
//!   with the listing, no program is visible by id but missing from the listing or the reverse);
//! - a throttle is retried inside (the operation succeeds);
//! - the answer is a success, or `503 unavailable` / `429 throttled` in the error shape (never a
//!   422, another 5xx or a wrong answer);
//! - the same request retried succeeds and leaves exactly the state of a fault-free run.
//!
//! Operations are rows of [`cases`]: setup requests, the request, what a retry may answer. Adding
//! an operation (archive, restore, backup, restore-from-backup) is one row.

use dspy_storage_core::access::OPERATOR;
use std::sync::Arc;

use axum::body::Body;
use dspy_storage_core::backup::BackupLocation;
use dspy_storage_functions::{app, AppState};
use dspy_storage_tests::faults::{faulty_storage, Fault, FaultPlan};
use dspy_storage_tests::{backends, Answer, Client, Kind, RawState, TestStore};
use http::Method;
use serde_json::{json, Value};

/// A request template: `{sig}` is the iteration's signature, `{id1}`, `{id2}`, … the ids the setup
/// stores answered, in order.
#[derive(Clone, Copy)]
struct Req {
    method: &'static str,
    uri: &'static str,
    body: Option<&'static str>,
}

const fn req(method: &'static str, uri: &'static str, body: Option<&'static str>) -> Req {
    Req { method, uri, body }
}

const STORE_V1: Req = req(
    "POST",
    "/programs",
    Some(
        r#"{"program": {"predict": {"demos": [], "signature": {"instructions": "first"}}}, "metadata": {"signature": "{sig}", "version": "1.0.0", "performance": 0.5, "tags": ["a"]}}"#,
    ),
);
const STORE_V2: Req = req(
    "POST",
    "/programs",
    Some(
        r#"{"program": {"predict": {"demos": [], "signature": {"instructions": "second"}}}, "metadata": {"signature": "{sig}", "version": "1.0.1", "performance": 0.9, "tags": ["b"]}}"#,
    ),
);
const ALIAS_PROD_V1: Req = req(
    "PUT",
    "/signatures/{sig}/aliases/production",
    Some(r#"{"version": "1.0.0"}"#),
);

const ARCHIVE_V1: Req = req("POST", "/programs/{id1}/archive", None);
const BACKUP_NAMED: Req = req("POST", "/backups", Some(r#"{"name": "b-{sig}"}"#));
const DELETE_V2: Req = req("DELETE", "/programs/{id2}", None);
/// Metric records with record ids (so a request sent again after it took effect writes
/// nothing), over two months and three days.
const APPEND_V1: Req = req(
    "POST",
    "/programs/{id1}/metrics",
    Some(
        r#"{"records": [{"metrics": {"accuracy": 0.5, "latency": 1.5}, "timestamp": "2026-01-31T23:00:00Z", "record_id": "a"}, {"metrics": {"accuracy": 0.7}, "timestamp": "2026-02-01T01:00:00Z", "record_id": "b", "environment": {"host": "h"}}, {"metrics": {"accuracy": 0.9}, "timestamp": "2026-02-02T01:00:00Z", "record_id": "c"}]}"#,
    ),
);
const APPEND_V2: Req = req(
    "POST",
    "/programs/{id2}/metrics",
    Some(
        r#"{"records": [{"metrics": {"accuracy": 0.8}, "timestamp": "2026-11-02T00:00:00Z", "record_id": "x"}, {"metrics": {"accuracy": 0.9}, "timestamp": "2026-11-03T00:00:00Z", "record_id": "y"}]}"#,
    ),
);
/// A protected alias with a gate 1.0.1 meets (its records above: mean 0.85).
const POLICY_GATE: Req = req(
    "PUT",
    "/signatures/{sig}/aliases/production/policy",
    Some(r#"{"protected": true, "require": {"metric": "accuracy", "min": 0.5, "min_records": 2}}"#),
);
/// A gate no version meets.
const POLICY_STRICT: Req = req(
    "PUT",
    "/signatures/{sig}/aliases/production/policy",
    Some(r#"{"require": {"metric": "accuracy", "min": 0.99}}"#),
);
const READ_V1_METRICS: Req = req("GET", "/programs/{id1}/metrics?limit=2", None);

/// One operation under faults.
struct Case {
    name: &'static str,
    setup: &'static [Req],
    request: Req,
    /// The answer of the request when it takes effect (a first try, or the client's retry of a
    /// try that failed and changed nothing).
    ok: u16,
    /// The answer when the same request is sent again after it took effect (a client that
    /// retries after a lost answer). `None`: not repeatable (a rollback makes a new version each
    /// time), so a try that took effect must not answer an error.
    repeat: Option<u16>,
    /// Run every iteration on a fresh store (a table and bucket of its own on AWS): whole-store
    /// operations, whose steps grow with everything the store holds.
    whole_store: bool,
}

fn cases() -> Vec<Case> {
    vec![
        Case {
            name: "store",
            setup: &[STORE_V1],
            // With an Idempotency-Key (see `send`): a retry answers as the first try did.
            request: req(
                "POST",
                "/programs",
                Some(
                    r#"{"program": {"predict": {"demos": [], "signature": {"instructions": "third"}}}, "metadata": {"signature": "{sig}", "tags": ["new", "x"]}}"#,
                ),
            ),
            ok: 201,
            repeat: Some(201),
            whole_store: false,
        },
        Case {
            name: "store-first-version",
            setup: &[],
            request: STORE_V1,
            ok: 201,
            repeat: Some(201),
            whole_store: false,
        },
        Case {
            name: "rollback",
            setup: &[STORE_V1, STORE_V2],
            request: req(
                "POST",
                "/signatures/{sig}/rollback",
                Some(r#"{"to_version": "1.0.0"}"#),
            ),
            ok: 201,
            repeat: None,
            whole_store: false,
        },
        Case {
            name: "delete-latest",
            setup: &[STORE_V1, STORE_V2, ALIAS_PROD_V1],
            request: req("DELETE", "/programs/{id2}", None),
            ok: 204,
            repeat: Some(404),
            whole_store: false,
        },
        Case {
            name: "delete-alias-target-forced",
            setup: &[STORE_V1, STORE_V2, ALIAS_PROD_V1],
            request: req("DELETE", "/programs/{id1}?force=true", None),
            ok: 204,
            repeat: Some(404),
            whole_store: false,
        },
        Case {
            name: "alias-move",
            setup: &[STORE_V1, STORE_V2, ALIAS_PROD_V1],
            request: req(
                "PUT",
                "/signatures/{sig}/aliases/production",
                Some(r#"{"version": "1.0.1"}"#),
            ),
            ok: 200,
            repeat: Some(200),
            whole_store: false,
        },
        Case {
            // The gate reads the target's record and metric blocks; the transaction checks the
            // claim, writes the head, checks the policy's revision and writes the history entry.
            name: "alias-move-gated",
            setup: &[
                STORE_V1,
                STORE_V2,
                ALIAS_PROD_V1,
                APPEND_V2,
                READ_V1_METRICS,
                POLICY_GATE,
            ],
            request: req(
                "PUT",
                "/signatures/{sig}/aliases/production",
                Some(r#"{"version": "1.0.1"}"#),
            ),
            ok: 200,
            repeat: Some(200),
            whole_store: false,
        },
        Case {
            // A refusal changes no alias and writes one history entry (whose write, sent again
            // by the server after a lost answer, finds it written). Sent again by the client it
            // is refused and recorded again — every refusal is kept —, so it is not a request
            // that "changes nothing when sent again": `repeat` is None (a try that recorded its
            // refusal must have answered it).
            name: "alias-move-refused",
            setup: &[
                STORE_V1,
                STORE_V2,
                ALIAS_PROD_V1,
                READ_V1_METRICS,
                POLICY_STRICT,
            ],
            request: req(
                "PUT",
                "/signatures/{sig}/aliases/production",
                Some(r#"{"version": "1.0.1"}"#),
            ),
            ok: 409,
            repeat: None,
            whole_store: false,
        },
        Case {
            // The policy and its history entry in one transaction; the same policy again
            // writes nothing.
            name: "policy-set",
            setup: &[STORE_V1, ALIAS_PROD_V1],
            request: POLICY_GATE,
            ok: 200,
            repeat: Some(200),
            whole_store: false,
        },
        Case {
            name: "alias-remove",
            setup: &[STORE_V1, ALIAS_PROD_V1],
            request: req("DELETE", "/signatures/{sig}/aliases/production", None),
            ok: 204,
            repeat: Some(404),
            whole_store: false,
        },
        Case {
            name: "metadata-patch",
            setup: &[STORE_V1, STORE_V2],
            request: req(
                "PATCH",
                "/programs/{id1}/metadata",
                Some(
                    r#"{"tags": {"add": ["x"], "remove": ["a"]}, "description": "patched", "set": {"k": 1}}"#,
                ),
            ),
            ok: 200,
            repeat: Some(200),
            whole_store: false,
        },
        Case {
            name: "archive",
            setup: &[STORE_V1, STORE_V2],
            request: req("POST", "/programs/{id1}/archive", None),
            ok: 200,
            repeat: Some(200),
            whole_store: false,
        },
        Case {
            // A backup changes no program: every fault leaves the store as it was, and the
            // retry (same name: resumed or already complete) succeeds.
            name: "backup",
            setup: &[STORE_V1, STORE_V2],
            request: BACKUP_NAMED,
            ok: 201,
            repeat: Some(409),
            whole_store: true,
        },
        Case {
            // Restore-from-backup into a live store that lost a version since the backup: the
            // deleted program comes back whole (record, claim, tags, head in one transaction)
            // or not at all, and running the restore again completes it.
            name: "restore-from-backup",
            setup: &[STORE_V1, STORE_V2, BACKUP_NAMED, DELETE_V2],
            request: req(
                "POST",
                "/backups/b-{sig}/restore",
                Some(r#"{"verify_compatibility": true}"#),
            ),
            ok: 200,
            repeat: Some(200),
            whole_store: true,
        },
        Case {
            // One transaction (program check, blocks, claims, day marks, counter): a lost
            // answer is sent again by the server and found committed by its blocks.
            name: "metric-append",
            setup: &[STORE_V1],
            request: APPEND_V1,
            ok: 201,
            repeat: Some(201),
            whole_store: false,
        },
        Case {
            // A read changes nothing (the setup's read learned the store's metric layout).
            name: "metric-read",
            setup: &[STORE_V1, APPEND_V1, READ_V1_METRICS],
            request: READ_V1_METRICS,
            ok: 200,
            repeat: Some(200),
            whole_store: false,
        },
        Case {
            name: "restore",
            setup: &[STORE_V1, STORE_V2, ARCHIVE_V1],
            request: req("POST", "/programs/{id1}/restore", None),
            ok: 200,
            repeat: Some(200),
            whole_store: false,
        },
    ]
}

fn fill(template: &str, sig: &str, ids: &[String]) -> String {
    let mut s = template.replace("{sig}", sig);
    for (i, id) in ids.iter().enumerate() {
        s = s.replace(&format!("{{id{}}}", i + 1), id);
    }
    s
}

async fn send(client: &Client, r: Req, sig: &str, ids: &[String], idempotent: bool) -> Answer {
    let method: Method = r.method.parse().unwrap();
    let uri = fill(r.uri, sig, ids);
    let idem = format!("idem-{sig}");
    let mut headers = vec![("content-type", "application/json")];
    if idempotent && r.method == "POST" && r.uri == "/programs" {
        headers.push(("idempotency-key", idem.as_str()));
    }
    let body = r
        .body
        .map_or_else(Body::empty, |b| Body::from(fill(b, sig, ids)));
    client.request(method, &uri, &headers, body).await
}

/// What the API shows of a signature, without ids and times (so two runs compare), checking
/// on the way that it is consistent. Panics on any partial state.
async fn visible(c: &Client, k: Kind, sig: &str, ids: &[String], what: &str) -> Value {
    let mut known = Vec::new();
    let mut metrics = Vec::new();
    let mut by_id = std::collections::BTreeMap::new();
    for id in ids {
        let a = c.get(&format!("/programs/{id}")).await;
        assert!(
            [200, 404, 409].contains(&a.status.as_u16()),
            "{k:?}: {what}: GET /programs/{id}: {} {}",
            a.status,
            String::from_utf8_lossy(&a.body)
        );
        if a.status == 409 {
            // Archived (or being restored): a whole state, never a half one.
            a.assert_error(409, "archived");
        }
        known.push(a.status.as_u16());
        if a.status == 200 {
            by_id.insert(id.clone(), a.json());
        }
        if a.status != 404 {
            // The program's metric history, in order, without ids and receive times.
            let h = c.get(&format!("/programs/{id}/metrics?limit=10000")).await;
            let h = h.expect(k, &format!("{what}: metric history of {id}"), 200);
            let records: Vec<Value> = h["records"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| {
                    json!([
                        r["timestamp"],
                        r["record_id"],
                        r["metrics"],
                        r["environment"]
                    ])
                })
                .collect();
            metrics.push(json!(records));
        }
    }
    // The production alias's history and policy (without times, ids and revisions).
    let h = c
        .get(&format!(
            "/signatures/{sig}/aliases/production/history?limit=1000"
        ))
        .await
        .expect(k, &format!("{what}: alias history"), 200);
    let history: Vec<Value> = h["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            json!([
                e["action"],
                e["from_version"],
                e["to_version"],
                e["by"],
                e["gate"]["passed"],
                e["gate"]["records"],
                e["override_reason"],
                e["policy"]
            ])
        })
        .collect();
    let policy = c
        .get(&format!("/signatures/{sig}/aliases/production/policy"))
        .await;
    let policy = match policy.status.as_u16() {
        404 => Value::Null,
        _ => {
            let p = policy.expect(k, &format!("{what}: policy"), 200);
            json!([p["protected"], p["require"]])
        }
    };
    let l = c.get(&format!("/signatures/{sig}/versions")).await;
    if l.status == 404 {
        assert!(
            by_id.is_empty(),
            "{k:?}: {what}: programs visible by id but no versions"
        );
        let summaries = all_summaries(c, k, what).await;
        assert!(
            !summaries.iter().any(|s| s["signature"] == sig),
            "{k:?}: {what}: a signature summary without versions"
        );
        return json!({"versions": [], "known": known, "metrics": metrics, "history": history, "policy": policy});
    }
    let listing = l.expect(k, what, 200);
    let mut versions = Vec::new();
    let mut listed_ids = std::collections::BTreeSet::new();
    for v in listing["versions"].as_array().unwrap() {
        let id = v["id"].as_str().unwrap();
        listed_ids.insert(id.to_owned());
        let p = c.get(&format!("/programs/{id}")).await;
        let p = if p.status == 409 {
            p.assert_error(409, "archived");
            // An archived version: its record (no blob read) must say so.
            let m = c.get(&format!("/programs/{id}/metadata")).await;
            let m = m.expect(k, &format!("{what}: metadata of archived {id}"), 200);
            assert_ne!(m["status"], "active", "{k:?}: {what}: 409 but active");
            m
        } else {
            p.expect(
                k,
                &format!("{what}: listed version {} loads", v["version"]),
                200,
            )
        };
        let by_version = c
            .get(&format!(
                "/signatures/{sig}/versions/{}",
                v["version"].as_str().unwrap()
            ))
            .await;
        if by_version.status == 409 {
            let e = by_version.assert_error(409, "archived");
            assert!(
                e["error"]["message"].as_str().unwrap().contains(id),
                "{k:?}: {what}: the version resolves to {id}: {e}"
            );
        } else {
            assert_eq!(
                by_version.expect(k, what, 200)["id"],
                id,
                "{k:?}: {what}: claim and record agree"
            );
        }
        versions.push(json!({
            "version": v["version"], "aliases": v["aliases"], "sha256": p["sha256"],
            "tags": p["metadata"]["tags"], "description": p["metadata"]["description"],
            "k": p["metadata"]["k"], "status": p["status"], "performance": p["performance"],
            "rollback_to": p["metadata"]["rollback_to"],
        }));
    }
    for id in by_id.keys() {
        assert!(
            listed_ids.contains(id),
            "{k:?}: {what}: {id} loads but is not listed"
        );
    }
    let latest = c
        .get(&format!("/signatures/{sig}/versions/latest"))
        .await
        .expect(k, &format!("{what}: latest"), 200);
    let last = versions.last().unwrap()["version"].clone();
    assert_eq!(
        latest["version"], last,
        "{k:?}: {what}: latest is the highest version"
    );
    let summaries = all_summaries(c, k, what).await;
    let summary = summaries
        .iter()
        .find(|s| s["signature"] == sig)
        .unwrap_or_else(|| panic!("{k:?}: {what}: no summary of {sig}"))
        .clone();
    assert_eq!(
        summary["versions"],
        versions.len(),
        "{k:?}: {what}: version count"
    );
    assert_eq!(
        summary["latest_version"], last,
        "{k:?}: {what}: summary latest"
    );
    json!({"versions": versions, "known": known, "best": summary["best_performance"], "metrics": metrics, "history": history, "policy": policy})
}

/// Every signature summary of the default project (all pages).
async fn all_summaries(c: &Client, k: Kind, what: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let uri = match &cursor {
            Some(cur) => format!("/signatures?limit=100&cursor={cur}"),
            None => "/signatures?limit=100".to_owned(),
        };
        let page = c.get(&uri).await.expect(k, what, 200);
        out.extend(page["signatures"].as_array().unwrap().iter().cloned());
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => return out,
        }
    }
}

async fn set_up(client: &Client, k: Kind, case: &Case, sig: &str) -> Vec<String> {
    let mut ids = Vec::new();
    for r in case.setup {
        let a = send(client, *r, sig, &ids, false).await;
        assert!(
            a.status.is_success(),
            "{k:?}: setup of {sig}: {}",
            String::from_utf8_lossy(&a.body)
        );
        if r.uri == "/programs" && r.method == "POST" {
            ids.push(a.json()["id"].as_str().unwrap().to_owned());
        }
    }
    ids
}

fn assert_answer_shape(k: Kind, what: &str, a: &Answer, ok: u16) {
    let s = a.status.as_u16();
    if s == ok {
        return;
    }
    assert!(
        [503, 429].contains(&s),
        "{k:?}: {what}: a fault may only answer 503/429, got {s}: {}",
        String::from_utf8_lossy(&a.body)
    );
    a.assert_error(s, if s == 503 { "unavailable" } else { "throttled" });
}

/// Items that change without the operation: the load counter, written in the background by
/// the reads that check the state, and the metric layout item the embedded store writes on its
/// first metric read.
const NOT_COMPARED: &[&str] = &["LOADS", "LAYOUT#metric-blocks"];

/// One row's figures for the summary the test prints.
#[derive(Default)]
struct Row {
    steps: usize,
    fired: usize,
    survived: usize,
}

/// What a backup row must show after each fault and retry: the backup is listed complete, its
/// manifest answers, and a restore of it into a fresh, empty store reproduces the source's
/// programs, claims, heads, tags and blobs (the fault layer is not between them).
async fn check_backup(k: Kind, what: &str, source: &TestStore, client: &Client, name: &str) {
    let listed = client.get("/backups").await.expect(k, what, 200);
    let entry = listed["backups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["backup_name"] == name)
        .unwrap_or_else(|| panic!("{k:?}: {what}: backup {name} is not listed: {listed}"));
    assert_eq!(entry["status"], "complete", "{k:?}: {what}: {entry}");
    client
        .get(&format!("/backups/{name}"))
        .await
        .expect(k, &format!("{what}: manifest"), 200);
    let target = dspy_storage_tests::store_of(k).await;
    let mut state = AppState::new(target.storage.clone());
    state.backup = Some(BackupLocation::new(source.storage.blobs().clone()));
    let restorer = Client { router: app(state) };
    restorer
        .post_json(
            &format!("/backups/{name}/restore"),
            &json!({"verify_compatibility": true}),
        )
        .await
        .expect(k, &format!("{what}: restore into a fresh store"), 200);
    let programs_of = |raw: &RawState| -> Vec<String> {
        raw.items
            .iter()
            .filter(|((pk, _), _)| {
                ["PROG#", "SIG#", "TAG#", "MET#", "RUN#"]
                    .iter()
                    .any(|p| pk.starts_with(p))
            })
            .map(|((pk, sk), attrs)| format!("{pk} {sk} {attrs:?}"))
            .chain(
                raw.blobs
                    .iter()
                    .filter(|(key, _)| key.starts_with("programs/"))
                    .map(|(key, size)| format!("{key} {size}")),
            )
            .collect()
    };
    let (src, restored) = (
        RawState::of(&source.storage).await,
        RawState::of(&target.storage).await,
    );
    assert_eq!(
        programs_of(&restored),
        programs_of(&src),
        "{k:?}: {what}: the restored store equals the source"
    );
}

#[tokio::test]
async fn every_step_of_every_operation_survives_every_fault() {
    let mut summary = Vec::new();
    for store in backends().await {
        let k = store.kind;
        let plan = FaultPlan::default();
        for case in cases() {
            // A store of its own per row (and per iteration for whole-store operations), so
            // the raw state compared below stays small.
            let shared = dspy_storage_tests::store_of(k).await;
            let shared_client = Client {
                router: app(AppState::new(Arc::new(faulty_storage(&shared, &plan)))),
            };
            let isolated = case.whole_store;
            let fresh = || async {
                if isolated {
                    let s = dspy_storage_tests::store_of(k).await;
                    let c = Client {
                        router: app(AppState::new(Arc::new(faulty_storage(&s, &plan)))),
                    };
                    (c, Some(s))
                } else {
                    (shared_client.clone(), None)
                }
            };
            // A fault-free run: the state the operation leads to, and its backend calls.
            let (client, kept) = fresh().await;
            let raw_store = kept.as_ref().unwrap_or(&shared);
            let sig = format!("{}-clean", case.name);
            plan.reset();
            let ids = set_up(&client, k, &case, &sig).await;
            let raw_before = RawState::of(&raw_store.storage).await;
            plan.reset();
            let a = send(&client, case.request, &sig, &ids, true).await;
            let steps = plan.calls();
            assert!(
                !steps.is_empty(),
                "{k:?}: {}: the fault-free run made no backend call",
                case.name
            );
            a.expect_status(k, case.name, case.ok);
            let clean_after = visible(&client, k, &sig, &ids, case.name).await;
            let clean_delta =
                RawState::of(&raw_store.storage)
                    .await
                    .delta(&raw_before, &sig, &ids, NOT_COMPARED);
            // What applying it and then sending it again leaves (a re-sent alias move or patch
            // writes again: same content, a new revision).
            let mut clean_repeated = clean_delta.clone();
            if case.name == "backup" {
                check_backup(k, case.name, raw_store, &client, &format!("b-{sig}")).await;
            }
            if let Some(repeat) = case.repeat {
                // Sent again after it took effect: the documented answer, and no change.
                let again = send(&client, case.request, &sig, &ids, true).await;
                again.expect_status(k, &format!("{}: sent again", case.name), repeat);
                clean_repeated = RawState::of(&raw_store.storage).await.delta(
                    &raw_before,
                    &sig,
                    &ids,
                    NOT_COMPARED,
                );
                assert_eq!(
                    visible(&client, k, &sig, &ids, case.name).await,
                    clean_after,
                    "{k:?}: {}: sending it again changes nothing",
                    case.name
                );
            }
            drop(kept);
            let mut row = Row {
                steps: steps.len(),
                ..Row::default()
            };
            // Every step on the embedded backend. On AWS the whole-store rows (backup, restore
            // from a backup: a fresh table and bucket per iteration, and another to restore the
            // backup into) are faulted at a documented sample: the first and the last step and
            // the first call of every kind.
            let sampled = |n: usize| {
                k == Kind::Embedded
                    || !case.whole_store
                    || n == 1
                    || n == steps.len()
                    || !steps[..n - 1].contains(&steps[n - 1])
            };
            for n in (1..=steps.len()).filter(|&n| sampled(n)) {
                for fault in Fault::ALL {
                    let sig = format!("{}-{n}-{fault:?}", case.name).to_lowercase();
                    let what = format!("{}: {fault:?} at step {n} ({})", case.name, steps[n - 1]);
                    plan.reset();
                    let (client, kept) = fresh().await;
                    let raw_store = kept.as_ref().unwrap_or(&shared);
                    let ids = set_up(&client, k, &case, &sig).await;
                    let before = visible(&client, k, &sig, &ids, &what).await;
                    let raw_before = RawState::of(&raw_store.storage).await;
                    plan.arm(n, fault);
                    let a = send(&client, case.request, &sig, &ids, true).await;
                    let fired = plan.fired();
                    let calls = plan.calls();
                    plan.reset();
                    // The fault fired at call n, and call n is the step of the clean run. On
                    // AWS a whole-store operation reads the table by a scan, whose order is the
                    // hash order of keys that hold this iteration's new ids: its calls come in
                    // another order each time, so there call n must be of a kind the clean run
                    // made.
                    let (at, name) = fired.first().cloned().unwrap_or_else(|| {
                        panic!("{k:?}: {what}: the fault never fired; calls: {calls:?}")
                    });
                    assert_eq!(at, n, "{k:?}: {what}: the fault fires at call {n}");
                    if k == Kind::Aws && case.whole_store {
                        assert!(
                            steps.contains(&name),
                            "{k:?}: {what}: call {n} is {name}, which the clean run never made"
                        );
                    } else {
                        assert_eq!(
                            name,
                            steps[n - 1],
                            "{k:?}: {what}: call {n} is the clean run's step; calls: {calls:?}"
                        );
                    }
                    row.fired += 1;
                    assert_answer_shape(k, &what, &a, case.ok);
                    if fault == Fault::Throttle {
                        a.expect_status(k, &format!("{what}: a throttle is retried"), case.ok);
                    }
                    let state = visible(&client, k, &sig, &ids, &what).await;
                    let delta = RawState::of(&raw_store.storage).await.delta(
                        &raw_before,
                        &sig,
                        &ids,
                        NOT_COMPARED,
                    );
                    let took_effect = state == clean_after;
                    assert!(
                        took_effect || state == before,
                        "{k:?}: {what}: partial state\nbefore: {before}\nafter: {clean_after}\nseen: {state}"
                    );
                    // Below the API too: nothing, or exactly what the fault-free run changed.
                    if took_effect && case.name != "backup" {
                        assert_eq!(
                            delta, clean_delta,
                            "{k:?}: {what}: raw state after the fault"
                        );
                    } else if case.name != "backup" {
                        // (An archive moves the blob to the archive tier, then the record: when
                        // the commit fails, the blob is asked back, so nothing is left either.)
                        assert_eq!(
                            delta,
                            Vec::<String>::new(),
                            "{k:?}: {what}: raw state after a failed try"
                        );
                    }
                    let succeeded = a.status.as_u16() == case.ok;
                    if !succeeded && took_effect && case.repeat.is_none() {
                        panic!("{k:?}: {what}: took effect but answered {}", a.status);
                    }
                    // The client sends it again when it did not see a success; a repeatable
                    // request is also sent again after a success (the answer was lost).
                    let expected_again = match (succeeded, took_effect) {
                        (false, false) => Some(case.ok),
                        _ => case.repeat,
                    };
                    let sent_again = expected_again.is_some();
                    if let Some(expected) = expected_again {
                        let again = send(&client, case.request, &sig, &ids, true).await;
                        if case.name == "backup" && !succeeded {
                            // Whether the lost try completed the backup shows only in the
                            // answer of the retry: resumed and finished (201), or it had
                            // finished and the name is taken (409 "already exists" — never
                            // "another backup is running").
                            if again.status == 409 {
                                let e = again.assert_error(409, "conflict");
                                let m = e["error"]["message"].as_str().unwrap();
                                assert!(m.contains("already exists"), "{k:?}: {what}: {m}");
                            } else {
                                again.expect_status(k, &format!("{what}: the retry"), case.ok);
                            }
                        } else {
                            again.expect_status(k, &format!("{what}: the retry"), expected);
                        }
                    }
                    let last = visible(&client, k, &sig, &ids, &what).await;
                    assert_eq!(
                        last, clean_after,
                        "{k:?}: {what}: the retry leads to the fault-free state"
                    );
                    if case.name == "backup" {
                        check_backup(k, &what, raw_store, &client, &format!("b-{sig}")).await;
                    } else {
                        let delta = RawState::of(&raw_store.storage).await.delta(
                            &raw_before,
                            &sig,
                            &ids,
                            NOT_COMPARED,
                        );
                        // Applied once (a failed try, then the retry), or applied and sent again.
                        let want = if sent_again && took_effect {
                            &clean_repeated
                        } else {
                            &clean_delta
                        };
                        assert_eq!(&delta, want, "{k:?}: {what}: raw state after the retry");
                    }
                    row.survived += 1;
                }
            }
            summary.push(format!(
                "{k:?} {}: {} steps, {} faults fired, {} survived{} ({})",
                case.name,
                row.steps,
                row.fired,
                row.survived,
                if row.fired < row.steps * Fault::ALL.len() {
                    " (a sample: first, last and the first call of each kind)"
                } else {
                    ""
                },
                steps.join(" → ")
            ));
        }
    }
    for line in &summary {
        dspy_storage_tests::report(line);
    }
}

#[tokio::test]
async fn a_throttle_that_outlasts_the_retries_is_a_429_and_changes_nothing() {
    for store in backends().await {
        let k = store.kind;
        let plan = FaultPlan::default();
        let client = Client {
            router: app(AppState::new(Arc::new(faulty_storage(&store, &plan)))),
        };
        let case = &cases()[0];
        let ids = set_up(&client, k, case, "throttled").await;
        let before = visible(&client, k, "throttled", &ids, "before").await;
        let raw_before = RawState::of(&store.storage).await;
        // Every transaction is throttled, every other call goes through: the store reads the
        // head and writes its blob, then its commit never succeeds.
        plan.arm_every("items.transact", Fault::Throttle);
        let a = send(&client, case.request, "throttled", &ids, true).await;
        let calls = plan.calls();
        let fired = plan.fired();
        plan.reset();
        a.expect_error(k, "throttled store", 429, "throttled");
        assert!(
            calls.iter().any(|c| c == "blobs.put"),
            "{k:?}: the store reached its blob write: {calls:?}"
        );
        assert!(
            fired.len() > 1 && fired.iter().all(|(_, name)| name == "items.transact"),
            "{k:?}: the commit was throttled on every attempt: {fired:?}"
        );
        assert_eq!(
            visible(&client, k, "throttled", &ids, "after").await,
            before
        );
        // Below the API: the blob it wrote was removed again; nothing else changed.
        assert_eq!(
            RawState::of(&store.storage)
                .await
                .delta(&raw_before, "throttled", &ids, NOT_COMPARED),
            Vec::<String>::new(),
            "{k:?}: raw state after a persistent throttle"
        );
    }
}

#[tokio::test]
async fn a_corrupted_or_missing_blob_is_a_422_never_wrong_data() {
    for store in backends().await {
        let k = store.kind;
        let client = store.client();
        let s = client
            .post_json(
                "/programs",
                &json!({"program": {"x": "secret"}, "metadata": {"signature": "C"}}),
            )
            .await
            .expect(k, "store", 201);
        let id = s["id"].as_str().unwrap().to_owned();
        let key = store
            .storage
            .get_record(
                &OPERATOR,
                &dspy_storage_core::domain::ProgramId::parse(&id).unwrap(),
            )
            .await
            .unwrap()
            .blob_key;
        let good = store.storage.blobs().get(&key).await.unwrap();
        let mut bad = good.to_vec();
        let mid = bad.len() / 2;
        bad[mid] ^= 0x01;
        let fresh = || Client {
            // A new process: no cached program.
            router: app(AppState::new(Arc::new(
                dspy_storage_core::storage::Storage::new(
                    store.storage.items().clone(),
                    store.storage.blobs().clone(),
                    dspy_storage_core::config::StorageConfig::default(),
                    "fresh",
                ),
            ))),
        };
        for (what, bytes) in [
            ("one bit flipped", bytes::Bytes::from(bad)),
            ("truncated", good.slice(..good.len() / 2)),
            ("empty", bytes::Bytes::new()),
            (
                "another program",
                bytes::Bytes::from_static(b"{\"x\": \"other\"}"),
            ),
        ] {
            let sha = dspy_storage_core::blob::codec::sha256_hex(&bytes);
            store.storage.blobs().put(&key, bytes, &sha).await.unwrap();
            for path in [
                format!("/programs/{id}"),
                "/signatures/C/versions/latest".into(),
                format!("/programs/{id}/prompt"),
            ] {
                fresh().get(&path).await.expect_error(
                    k,
                    &format!("{what}: {path}"),
                    422,
                    "integrity_error",
                );
            }
            // Metadata needs no blob: still readable.
            fresh()
                .get(&format!("/programs/{id}/metadata"))
                .await
                .expect(k, what, 200);
        }
        store.storage.blobs().delete(&key).await.unwrap();
        fresh().get(&format!("/programs/{id}")).await.expect_error(
            k,
            "missing blob",
            422,
            "integrity_error",
        );
        let sha = dspy_storage_core::blob::codec::sha256_hex(&good);
        store.storage.blobs().put(&key, good, &sha).await.unwrap();
        fresh()
            .get(&format!("/programs/{id}"))
            .await
            .expect(k, "repaired", 200);
    }
}

/// A restore from the archive as S3 Glacier does it (the emulators and the embedded store restore
/// at once): the fault layer keeps the blob `Restoring` until the copy is ready. The first call
/// answers `202 restoring` and the program stays unloadable (`409 archived`) while the copy is
/// being made; once it is ready, the next restore call moves it back (`200 active`). Every step
/// of both phases is faulted in turn (error, throttle, timeout): the state is the one before or
/// the one after, and the retry reaches the one after.
#[tokio::test]
async fn a_restore_under_way_is_restoring_until_its_copy_is_ready_under_every_fault() {
    for store in backends().await {
        let k = store.kind;
        let plan = FaultPlan::default();
        plan.slow_restores();
        let client = Client {
            router: app(AppState::new(Arc::new(faulty_storage(&store, &plan)))),
        };
        let status_of = |id: String| {
            let client = client.clone();
            async move {
                // A load may finish a restore whose copy is ready: load first, then the record.
                let load = client.get(&format!("/programs/{id}")).await;
                let m = client.get(&format!("/programs/{id}/metadata")).await;
                let m = m.expect(k, "metadata", 200);
                if load.status == 200 {
                    assert_eq!(
                        m["status"], "active",
                        "{k:?}: a program that loads is active"
                    );
                } else {
                    load.expect_error(k, "a program not yet restored", 409, "archived");
                    assert_ne!(m["status"], "active", "{k:?}: 409 archived but active");
                }
                m["status"].as_str().unwrap().to_owned()
            }
        };
        let mut rows = Vec::new();
        for phase in ["request", "finish"] {
            let mut steps: Option<Vec<String>> = None;
            let mut fired = 0;
            let mut n = 0;
            loop {
                for fault in Fault::ALL {
                    let sig = format!("slow-{phase}-{n}-{fault:?}").to_lowercase();
                    plan.reset();
                    let case = Case {
                        name: "slow-restore",
                        setup: &[STORE_V1, STORE_V2, ARCHIVE_V1],
                        request: req("POST", "/programs/{id1}/restore", None),
                        ok: 0,
                        repeat: None,
                        whole_store: false,
                    };
                    let ids = set_up(&client, k, &case, &sig).await;
                    let id = ids[0].clone();
                    let restore = || send(&client, case.request, &sig, &ids, false);
                    assert_eq!(status_of(id.clone()).await, "archived", "{k:?}: {sig}");
                    if phase == "finish" {
                        restore().await.expect(k, &format!("{sig}: asked"), 202);
                        plan.finish_restores();
                    }
                    let (ok, before, after) = match phase {
                        "request" => (202, "archived", "restoring"),
                        _ => (200, "restoring", "active"),
                    };
                    if n > 0 {
                        plan.arm(n, fault);
                    } else {
                        plan.reset();
                    }
                    let a = restore().await;
                    let calls = plan.calls();
                    let hit = plan.fired();
                    plan.reset();
                    let what = format!("{sig}: {fault:?} at step {n} of {calls:?}");
                    if n == 0 {
                        a.expect(k, &what, ok);
                        assert_eq!(a.json()["status"], after, "{k:?}: {what}");
                        assert_eq!(status_of(id.clone()).await, after, "{k:?}: {what}");
                        if phase == "request" {
                            // Still under way: asking again changes nothing.
                            restore().await.expect(k, &format!("{what}: again"), 202);
                            assert_eq!(status_of(id.clone()).await, "restoring", "{k:?}: {what}");
                        }
                        steps = Some(calls);
                        break;
                    }
                    let steps = steps.as_ref().unwrap();
                    assert_eq!(
                        hit.first(),
                        Some(&(n, steps[n - 1].clone())),
                        "{k:?}: {what}: the fault fires at step {n}"
                    );
                    fired += 1;
                    assert_answer_shape(k, &what, &a, ok);
                    let seen = status_of(id.clone()).await;
                    assert!(seen == before || seen == after, "{k:?}: {what}: {seen}");
                    if a.status.as_u16() != ok {
                        restore().await.expect(k, &format!("{what}: the retry"), ok);
                    }
                    assert_eq!(
                        status_of(id.clone()).await,
                        after,
                        "{k:?}: {what}: after the retry"
                    );
                }
                n += 1;
                if n > steps.as_ref().map_or(0, Vec::len) {
                    break;
                }
            }
            let steps = steps.unwrap();
            assert!(!steps.is_empty(), "{k:?}: {phase}: no backend call");
            assert_eq!(fired, steps.len() * Fault::ALL.len(), "{k:?}: {phase}");
            rows.push(format!(
                "{k:?} slow restore ({phase}): {} steps, {fired} faults fired and survived ({})",
                steps.len(),
                steps.join(" → ")
            ));
        }
        for row in rows {
            dspy_storage_tests::report(&row);
        }
    }
}

/// A backup whose metric part goes up as a multipart upload, faulted at a documented sample of
/// its steps: every multipart step (start, each part, complete) on both backends, and on the
/// embedded one also the first and last step and the first call of every other kind (see the
/// sample below); each iteration writes 14 MB into a fresh store. After each fault
/// and retry the backup is listed complete, its manifest answers and a restore into a fresh
/// store equals the source.
#[tokio::test]
async fn a_backup_over_the_multipart_threshold_survives_every_fault() {
    let mut kinds = vec![Kind::Embedded];
    if dspy_storage_tests::aws_configured() {
        kinds.push(Kind::Aws);
    }
    for k in kinds {
        let plan = FaultPlan::default();
        let fresh = || async {
            let s = dspy_storage_tests::store_of(k).await;
            // 48 items of 300,000 random characters (an item may hold 400 KB) are one backup
            // part of about 10 MiB once compressed, over the backup's 8 MiB multipart chunk;
            // few large items keep each fresh store quick to fill on AWS.
            dspy_storage_tests::put_noise_items(&s, 48, 300_000).await;
            let c = Client {
                router: app(AppState::new(Arc::new(faulty_storage(&s, &plan)))),
            };
            (s, c)
        };
        let backup =
            |c: Client| async move { c.post_json("/backups", &json!({"name": "big"})).await };
        let (store, client) = fresh().await;
        plan.reset();
        backup(client.clone()).await.expect(k, "clean backup", 201);
        let steps = plan.calls();
        for needed in [
            "blobs.start_multipart",
            "multipart.write_part",
            "multipart.complete",
        ] {
            assert!(
                steps.iter().any(|s| s == needed),
                "{k:?}: the backup goes over the multipart threshold ({needed}): {steps:?}"
            );
        }
        check_backup(k, "clean multipart backup", &store, &client, "big").await;
        drop(store);
        // The sample: every multipart step; on the embedded backend also the first and last
        // step and the first call of every other kind (the scan pages between are the same
        // call again and again). On AWS those other calls are faulted by the backup row of
        // `every_step_of_every_operation_survives_every_fault`, on a small store: each
        // iteration here moves 14 MB through the emulator twice (the backup, and the restore
        // that checks it).
        let sample: Vec<usize> = (1..=steps.len())
            .filter(|&n| {
                steps[n - 1].contains("multipart")
                    || (k == Kind::Embedded
                        && (n == 1 || n == steps.len() || !steps[..n - 1].contains(&steps[n - 1])))
            })
            .collect();
        let mut fired = 0;
        for &n in &sample {
            for fault in Fault::ALL {
                let what = format!("multipart backup: {fault:?} at step {n} ({})", steps[n - 1]);
                let (store, client) = fresh().await;
                plan.arm(n, fault);
                let a = backup(client.clone()).await;
                let hit = plan.fired();
                plan.reset();
                assert_eq!(
                    hit.first(),
                    Some(&(n, steps[n - 1].clone())),
                    "{k:?}: {what}: the fault fires at step {n}"
                );
                fired += 1;
                assert_answer_shape(k, &what, &a, 201);
                if a.status != 201 {
                    let again = backup(client.clone()).await;
                    if again.status == 409 {
                        let e = again.assert_error(409, "conflict");
                        let m = e["error"]["message"].as_str().unwrap();
                        assert!(m.contains("already exists"), "{k:?}: {what}: {m}");
                    } else {
                        again.expect_status(k, &format!("{what}: the retry"), 201);
                    }
                }
                check_backup(k, &what, &store, &client, "big").await;
            }
        }
        dspy_storage_tests::report(&format!(
            "{k:?} multipart backup: {} steps, {} faulted ({}), {fired} faults fired and survived ({})",
            steps.len(),
            sample.len(),
            if k == Kind::Embedded {
                "the first and last step, every multipart step, the first call of each other kind"
            } else {
                "every multipart step; the other calls in the backup row of the fault table"
            },
            steps.join(" → ")
        ));
    }
}
