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
use dspy_storage_functions::{app, AppState};
use dspy_storage_tests::faults::{faulty_storage, Fault, FaultPlan};
use dspy_storage_tests::{backends, Answer, Client, Kind};
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

/// One operation under faults.
struct Case {
    name: &'static str,
    setup: &'static [Req],
    request: Req,
    /// Statuses of a successful answer (first try or retry).
    ok: &'static [u16],
    /// Whether repeating a request that already succeeded is harmless (then it is retried
    /// whatever the first answer said; otherwise only when the state is still the one before).
    idempotent: bool,
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
            ok: &[201],
            idempotent: true,
            whole_store: false,
        },
        Case {
            name: "store-first-version",
            setup: &[],
            request: STORE_V1,
            ok: &[201, 409],
            idempotent: true,
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
            ok: &[201],
            idempotent: false,
            whole_store: false,
        },
        Case {
            name: "delete-latest",
            setup: &[STORE_V1, STORE_V2, ALIAS_PROD_V1],
            request: req("DELETE", "/programs/{id2}", None),
            ok: &[204, 404],
            idempotent: true,
            whole_store: false,
        },
        Case {
            name: "delete-alias-target-forced",
            setup: &[STORE_V1, STORE_V2, ALIAS_PROD_V1],
            request: req("DELETE", "/programs/{id1}?force=true", None),
            ok: &[204, 404],
            idempotent: true,
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
            ok: &[200],
            idempotent: true,
            whole_store: false,
        },
        Case {
            name: "alias-remove",
            setup: &[STORE_V1, ALIAS_PROD_V1],
            request: req("DELETE", "/signatures/{sig}/aliases/production", None),
            ok: &[204, 404],
            idempotent: true,
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
            ok: &[200],
            idempotent: true,
            whole_store: false,
        },
        Case {
            name: "archive",
            setup: &[STORE_V1, STORE_V2],
            request: req("POST", "/programs/{id1}/archive", None),
            ok: &[200],
            idempotent: true,
            whole_store: false,
        },
        Case {
            // A backup changes no program: every fault leaves the store as it was, and the
            // retry (same name: resumed or already complete) succeeds.
            name: "backup",
            setup: &[STORE_V1, STORE_V2],
            request: BACKUP_NAMED,
            ok: &[201, 409],
            idempotent: true,
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
            ok: &[200],
            idempotent: true,
            whole_store: true,
        },
        Case {
            name: "restore",
            setup: &[STORE_V1, STORE_V2, ARCHIVE_V1],
            request: req("POST", "/programs/{id1}/restore", None),
            ok: &[200],
            idempotent: true,
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
    }
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
        return json!({"versions": [], "known": known});
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
    json!({"versions": versions, "known": known, "best": summary["best_performance"]})
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
        if r.uri == "/programs" {
            ids.push(a.json()["id"].as_str().unwrap().to_owned());
        }
    }
    ids
}

fn assert_answer_shape(k: Kind, what: &str, a: &Answer, ok: &[u16]) {
    let s = a.status.as_u16();
    if ok.contains(&s) {
        return;
    }
    assert!(
        [503, 429].contains(&s),
        "{k:?}: {what}: a fault may only answer 503/429, got {s}: {}",
        String::from_utf8_lossy(&a.body)
    );
    a.assert_error(s, if s == 503 { "unavailable" } else { "throttled" });
}

#[tokio::test]
async fn every_step_of_every_operation_survives_every_fault() {
    let mut summary = Vec::new();
    for store in backends().await {
        let k = store.kind;
        let plan = FaultPlan::default();
        let shared = Client {
            router: app(AppState::new(Arc::new(faulty_storage(&store, &plan)))),
        };
        for case in cases() {
            let isolated = case.whole_store;
            let fresh = || async {
                if isolated {
                    let s = match k {
                        Kind::Aws => dspy_storage_tests::aws().await.expect("AWS store"),
                        _ => dspy_storage_tests::embedded().await,
                    };
                    let c = Client {
                        router: app(AppState::new(Arc::new(faulty_storage(&s, &plan)))),
                    };
                    (c, Some(s))
                } else {
                    (shared.clone(), None)
                }
            };
            let (client, _kept) = fresh().await;
            // A fault-free run: the state the operation leads to, and its backend calls.
            let sig = format!("{}-clean", case.name);
            plan.reset();
            let ids = set_up(&client, k, &case, &sig).await;
            plan.reset();
            let a = send(&client, case.request, &sig, &ids, true).await;
            let steps = plan.calls();
            assert!(
                case.ok.contains(&a.status.as_u16()),
                "{k:?}: {}: {}",
                case.name,
                String::from_utf8_lossy(&a.body)
            );
            let clean_after = visible(&client, k, &sig, &ids, case.name).await;
            let mut injected = 0;
            for n in 1..=steps.len() {
                for fault in Fault::ALL {
                    let sig = format!("{}-{n}-{fault:?}", case.name).to_lowercase();
                    let what = format!("{}: {fault:?} at step {n} ({})", case.name, steps[n - 1]);
                    plan.reset();
                    let (client, _kept) = fresh().await;
                    let ids = set_up(&client, k, &case, &sig).await;
                    let before = visible(&client, k, &sig, &ids, &what).await;
                    plan.arm(n, fault);
                    let a = send(&client, case.request, &sig, &ids, true).await;
                    plan.reset();
                    injected += 1;
                    assert_answer_shape(k, &what, &a, case.ok);
                    if fault == Fault::Throttle {
                        assert!(
                            case.ok.contains(&a.status.as_u16()),
                            "{k:?}: {what}: a throttle is retried: {} {}",
                            a.status,
                            String::from_utf8_lossy(&a.body)
                        );
                    }
                    let state = visible(&client, k, &sig, &ids, &what).await;
                    assert!(
                        state == before || state == clean_after,
                        "{k:?}: {what}: partial state\nbefore: {before}\nafter: {clean_after}\nseen: {state}"
                    );
                    // The client retries what did not visibly succeed (every idempotent request).
                    if case.idempotent || state == before {
                        let again = send(&client, case.request, &sig, &ids, true).await;
                        assert!(
                            case.ok.contains(&again.status.as_u16()),
                            "{k:?}: {what}: the retry fails: {} {}",
                            again.status,
                            String::from_utf8_lossy(&again.body)
                        );
                    }
                    let last = visible(&client, k, &sig, &ids, &what).await;
                    assert_eq!(
                        last, clean_after,
                        "{k:?}: {what}: the retry leads to the fault-free state"
                    );
                }
            }
            summary.push(format!(
                "{k:?} {}: {} steps ({}), {injected} faults injected and survived",
                case.name,
                steps.len(),
                steps.join(" → ")
            ));
        }
    }
    for line in &summary {
        println!("{line}");
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
        plan.arm_repeated(1, Fault::Throttle, 1000);
        let a = send(&client, case.request, "throttled", &ids, true).await;
        plan.reset();
        a.expect_error(k, "throttled store", 429, "throttled");
        assert_eq!(
            visible(&client, k, "throttled", &ids, "after").await,
            before
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
