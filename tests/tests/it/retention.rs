//! Retention and archive (docs/API.md "Retention and archive") on both backends, through the HTTP API:
//! a two-year dataset (imports set `created_at`), dry run, real run (exactly the dry run's plan),
//! loads of archived programs (`409 archived`), restore (with the `restoring` state held open by
//! a fake archive), garbage collection, resumable slices, and the cleanup Lambda function fed a
//! real EventBridge scheduled event and an API Gateway event.

use dspy_storage_core::access::OPERATOR;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{Duration, Utc};
use dspy_storage_core::backend::{BlobMeta, BlobStore, BlobTier};
use dspy_storage_core::blob::codec::sha256_hex;
use dspy_storage_core::config::StorageConfig;
use dspy_storage_core::domain::{format_time, ProgramId};
use dspy_storage_core::model::keys;
use dspy_storage_core::retention::cleanup::CleanupOptions;
use dspy_storage_core::retention::Policy;
use dspy_storage_core::storage::Storage;
use dspy_storage_functions::jobs;
use dspy_storage_functions::lambda::{handle_event, is_scheduled_event};
use dspy_storage_functions::{function_router, AppState, Function};
use dspy_storage_tests::{backends, backends_with, Client, Kind, TestStore};
use http::Method;
use lambda_http::{Context, LambdaEvent};
use serde_json::{json, Value};

const SIG: &str = "ret.Classify";

fn program(n: usize) -> String {
    format!(
        r#"{{"predict": {{"demos": [], "signature": {{"instructions": "Classify, take {n}."}}}}, "n": {n}}}"#
    )
}

/// Stores `1.0.0` .. `1.0.11` of [`SIG`], created 730, 670, ..., 70 days ago (60 days apart):
/// `1.0.1` scores best, `1.0.2` is tagged production, `1.0.4` is tagged `old`; alias `staging`
/// points at `1.0.3`. Returns the ids by version number.
async fn two_years(client: &Client, k: Kind) -> Vec<String> {
    let now = Utc::now();
    let mut ids = Vec::new();
    for n in 0..12usize {
        let created = now - Duration::days(730 - 60 * n as i64);
        let score = if n == 1 { 0.99 } else { 0.5 + n as f64 / 100.0 };
        let tags: Vec<&str> = match n {
            2 => vec!["production"],
            4 => vec!["old"],
            _ => vec![],
        };
        let body = format!(
            r#"{{"program": {}, "metadata": {}}}"#,
            program(n),
            json!({"signature": SIG, "version": format!("1.0.{n}"), "created_at": format_time(&created),
                   "performance": {"accuracy": score}, "tags": tags, "optimization_method": "miprov2"})
        );
        let s = client
            .post_raw("/programs", body)
            .await
            .expect(k, "import", 201);
        ids.push(s["id"].as_str().unwrap().to_owned());
    }
    client
        .request(
            Method::PUT,
            &format!("/signatures/{SIG}/aliases/staging"),
            &[("content-type", "application/json")],
            r#"{"version": "1.0.3"}"#,
        )
        .await
        .expect(k, "alias", 200);
    ids
}

/// `{version: reason}` of one list of a cleanup answer.
fn listed(report: &Value, list: &str) -> BTreeMap<String, String> {
    report[list]
        .as_array()
        .unwrap_or_else(|| panic!("{list} in {report}"))
        .iter()
        .map(|e| {
            assert_eq!(e["signature"], SIG, "{e}");
            (
                e["version"].as_str().unwrap().to_owned(),
                e["reason"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn versions(list: &BTreeMap<String, String>) -> BTreeSet<String> {
    list.keys().cloned().collect()
}

fn set(vs: &[&str]) -> BTreeSet<String> {
    vs.iter().map(|v| v.to_string()).collect()
}

async fn cleanup(client: &Client, k: Kind, body: Value) -> Value {
    client
        .post_json("/maintenance/cleanup", &body)
        .await
        .expect(k, &format!("cleanup {body}"), 200)
}

#[tokio::test]
async fn two_years_of_versions_dry_run_real_run_archive_and_restore() {
    for store in backends().await {
        let (k, client) = (store.kind, store.client());
        let ids = two_years(&client, k).await;
        let policy = json!({"keep_latest": 2});

        // Dry run: the plan, with a reason per program; nothing changes.
        let dry = cleanup(&client, k, json!({"dry_run": true, "policy": policy})).await;
        assert_eq!(dry["dry_run"], true, "{k:?}");
        let (kept, archived, deleted) = (
            listed(&dry, "kept"),
            listed(&dry, "archived"),
            listed(&dry, "deleted"),
        );
        assert_eq!(
            versions(&archived),
            set(&["1.0.7", "1.0.8", "1.0.9"]),
            "{k:?}: {dry}"
        );
        assert_eq!(
            versions(&deleted),
            set(&["1.0.0", "1.0.4", "1.0.5", "1.0.6"]),
            "{k:?}: {dry}"
        );
        assert_eq!(kept["1.0.11"], "latest version", "{k:?}");
        assert_eq!(kept["1.0.10"], "among the 2 latest versions", "{k:?}");
        assert_eq!(kept["1.0.3"], "alias target (staging)", "{k:?}");
        assert_eq!(kept["1.0.2"], "production (tag)", "{k:?}");
        assert!(
            kept["1.0.1"].starts_with("high performing (score 0.99"),
            "{k:?}: {}",
            kept["1.0.1"]
        );
        assert!(
            archived["1.0.7"].starts_with("older than 90d (created "),
            "{k:?}"
        );
        assert!(
            deleted["1.0.0"].starts_with("older than 365d (created "),
            "{k:?}"
        );
        assert_eq!(dry["summary"]["programs"], 12, "{k:?}");
        for id in &ids {
            client
                .get(&format!("/programs/{id}"))
                .await
                .expect_status(k, "after the dry run", 200);
        }
        assert!(
            store.storage.last_cleanup_status().await.unwrap().is_none(),
            "{k:?}: a dry run writes no status"
        );

        // "What would next month's run do": 60 days on, 1.0.7 (370 days old) is due for deletion.
        let as_of = format_time(&(Utc::now() + Duration::days(60)));
        let later = cleanup(
            &client,
            k,
            json!({"dry_run": true, "policy": policy, "as_of": as_of}),
        )
        .await;
        assert!(
            versions(&listed(&later, "deleted")).contains("1.0.7"),
            "{k:?}: {later}"
        );
        // ...but a real run at a future time is refused, and changes nothing.
        client
            .post_json(
                "/maintenance/cleanup",
                &json!({"dry_run": false, "policy": policy, "as_of": as_of}),
            )
            .await
            .expect_error(k, "future as_of in a real run", 400, "invalid_request");

        // The real run does exactly what the dry run listed.
        let real = cleanup(&client, k, json!({"dry_run": false, "policy": policy})).await;
        assert_eq!(real["dry_run"], false, "{k:?}");
        for list in ["kept", "archived", "deleted"] {
            assert_eq!(
                real[list], dry[list],
                "{k:?}: {list} of the real run = the dry run's"
            );
        }
        assert_eq!(real["skipped"], json!([]), "{k:?}");
        let status = store
            .storage
            .last_cleanup_status()
            .await
            .unwrap()
            .expect("status item");
        assert_eq!(status["summary"]["archived"], 3, "{k:?}: {status}");
        assert_eq!(status["summary"]["deleted"], 4, "{k:?}: {status}");
        assert!(status["finished_at"].as_str().is_some(), "{k:?}");

        // Free text finds exactly the programs left (archived ones with their status), and the
        // deleted ones' word index entries are gone.
        let found = client.get("/search?q=miprov2&limit=100").await.expect(
            k,
            "free text after the run",
            200,
        );
        let found: Vec<(String, String)> = found["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r["id"].as_str().unwrap().to_owned(),
                    r["status"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        assert_eq!(found.len(), 8, "{k:?}: {found:?}");
        assert_eq!(
            found.iter().filter(|(_, s)| s == "archived").count(),
            3,
            "{k:?}: {found:?}"
        );
        for n in [0usize, 4, 5, 6] {
            assert!(
                !found.iter().any(|(id, _)| *id == ids[n]),
                "{k:?}: {found:?}"
            );
        }
        let mut start = None;
        loop {
            let page = store.storage.items().scan(start.take(), 500).await.unwrap();
            for i in page.items.iter().filter(|i| i.pk.starts_with("TXT#")) {
                for n in [0usize, 4, 5, 6] {
                    assert!(
                        !i.sk.ends_with(&ids[n]),
                        "{k:?}: entry {} {} left",
                        i.pk,
                        i.sk
                    );
                }
            }
            match page.next {
                Some(n) => start = Some(n),
                None => break,
            }
        }

        // Deleted: record, version claim, tag entry, head count; the signature's latest is intact.
        let v = |n: usize| &ids[n];
        for n in [0usize, 4, 5, 6] {
            client
                .get(&format!("/programs/{}", v(n)))
                .await
                .expect_error(k, "deleted program", 404, "not_found");
            client
                .get(&format!("/signatures/{SIG}/versions/1.0.{n}"))
                .await
                .expect_error(k, "deleted version", 404, "not_found");
        }
        let tag_items = store
            .storage
            .items()
            .query(&dspy_storage_core::backend::Query::new(
                dspy_storage_core::backend::Index::Table,
                keys::tag_pk(
                    &dspy_storage_core::domain::Project::default_project(),
                    "old",
                ),
            ))
            .await
            .unwrap();
        assert!(
            tag_items.items.is_empty(),
            "{k:?}: the tag entry of a deleted program is gone"
        );
        let listing = client
            .get(&format!("/signatures/{SIG}/versions"))
            .await
            .expect(k, "versions", 200);
        let listed_versions: Vec<&str> = listing["versions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["version"].as_str().unwrap())
            .collect();
        assert_eq!(
            listed_versions,
            ["1.0.1", "1.0.2", "1.0.3", "1.0.7", "1.0.8", "1.0.9", "1.0.10", "1.0.11"],
            "{k:?}"
        );
        let sigs = client.get("/signatures").await.expect(k, "signatures", 200);
        assert_eq!(sigs["signatures"][0]["versions"], 8, "{k:?}: head count");
        assert_eq!(sigs["signatures"][0]["latest_version"], "1.0.11", "{k:?}");
        assert_eq!(sigs["signatures"][0]["best_performance"], 0.99, "{k:?}");

        // Archived: the record says so, a load answers 409 archived.
        let archived_id = v(7);
        let meta = client
            .get(&format!("/programs/{archived_id}/metadata"))
            .await
            .expect(k, "metadata", 200);
        assert_eq!(meta["status"], "archived", "{k:?}");
        client
            .get(&format!("/programs/{archived_id}"))
            .await
            .expect_error(k, "load archived", 409, "archived");
        client
            .get(&format!("/signatures/{SIG}/versions/1.0.7"))
            .await
            .expect_error(k, "load archived version", 409, "archived");
        if k == Kind::Aws {
            let location = store.location.as_ref().unwrap();
            let s3 = s3_client().await;
            let rec = store
                .storage
                .get_record(&OPERATOR, &ProgramId::parse(archived_id).unwrap())
                .await
                .unwrap();
            let head = s3
                .head_object()
                .bucket(&location.bucket)
                .key(&rec.blob_key)
                .send()
                .await
                .unwrap();
            assert_eq!(
                head.storage_class().map(|c| c.as_str()),
                Some("GLACIER"),
                "{k:?}"
            );
        }

        // A second run changes nothing: every action was done.
        let again = cleanup(&client, k, json!({"dry_run": false, "policy": policy})).await;
        assert_eq!(again["archived"], json!([]), "{k:?}: {again}");
        assert_eq!(again["deleted"], json!([]), "{k:?}: {again}");
        assert!(
            listed(&again, "kept")["1.0.7"].starts_with("already archived"),
            "{k:?}"
        );

        // Restore, load again: byte-identical program.
        let restored = client
            .post_json(&format!("/programs/{archived_id}/restore"), &json!({}))
            .await
            .expect(k, "restore", 200);
        assert_eq!(restored["status"], "active", "{k:?}: {restored}");
        let loaded = client.get(&format!("/programs/{archived_id}")).await;
        loaded.expect_status(k, "load restored", 200);
        assert_eq!(loaded.raw_program(), program(7), "{k:?}");
        assert_eq!(loaded.json()["status"], "active", "{k:?}");
        if k == Kind::Aws {
            let location = store.location.as_ref().unwrap();
            let rec = store
                .storage
                .get_record(&OPERATOR, &ProgramId::parse(archived_id).unwrap())
                .await
                .unwrap();
            let head = s3_client()
                .await
                .head_object()
                .bucket(&location.bucket)
                .key(&rec.blob_key)
                .send()
                .await
                .unwrap();
            assert!(
                head.storage_class()
                    .is_none_or(|c| c.as_str() == "STANDARD"),
                "{k:?}: back in the standard class: {:?}",
                head.storage_class()
            );
        }
        // Restoring again is a no-op; the next run does not archive it again at once.
        client
            .post_json(&format!("/programs/{archived_id}/restore"), &json!({}))
            .await
            .expect(k, "restore again", 200);
        let after = cleanup(&client, k, json!({"dry_run": true, "policy": policy})).await;
        assert_eq!(
            listed(&after, "kept")["1.0.7"],
            "younger than 90d",
            "{k:?}: {after}"
        );

        // Archive and restore by hand; archiving twice is a no-op; unknown ids are 404.
        let latest = v(11);
        let a = client
            .post_json(&format!("/programs/{latest}/archive"), &json!({}))
            .await
            .expect(k, "archive", 200);
        assert_eq!(a["status"], "archived", "{k:?}");
        client
            .post_json(&format!("/programs/{latest}/archive"), &json!({}))
            .await
            .expect(k, "archive again", 200);
        client
            .get(&format!("/signatures/{SIG}/versions/latest"))
            .await
            .expect_error(k, "latest archived", 409, "archived");
        client
            .post_json(&format!("/programs/{latest}/restore"), &json!({}))
            .await
            .expect(k, "restore latest", 200);
        let l = client
            .get(&format!("/signatures/{SIG}/versions/latest"))
            .await;
        l.expect_status(k, "latest restored", 200);
        assert_eq!(l.raw_program(), program(11), "{k:?}");
        let unknown = ProgramId::new();
        for op in ["archive", "restore"] {
            client
                .post_json(&format!("/programs/{unknown}/{op}"), &json!({}))
                .await
                .expect_error(k, op, 404, "not_found");
        }
    }
}

async fn s3_client() -> aws_sdk_s3::Client {
    let sdk = dspy_storage_core::backend::aws::sdk_config().await;
    dspy_storage_core::backend::aws::clients(&sdk, None).1
}

#[tokio::test]
async fn bad_cleanup_requests_are_400_and_change_nothing() {
    for store in backends().await {
        let (k, client) = (store.kind, store.client());
        let ids = two_years(&client, k).await;
        for body in [
            json!({"dry_run": false, "policy": {"keep_latest": 1, "archive_after": "soon"}}),
            json!({"dry_run": false, "policy": {"delete_after": "0d"}}),
            json!({"dry_run": false, "policy": {"keep_latest": -1}}),
            json!({"dry_run": false, "policy": {"keep_everything": true}}),
            json!({"dry_run": "no"}),
            json!({"dry_run": false, "as_of": "yesterday"}),
            json!({"dry_run": false, "cursor": "not-a-cursor"}),
        ] {
            client
                .post_json("/maintenance/cleanup", &body)
                .await
                .expect_error(k, &format!("{body}"), 400, "invalid_request");
        }
        client
            .post_raw("/maintenance/cleanup", "{not json")
            .await
            .expect_error(k, "malformed", 400, "invalid_request");
        // An empty body is a dry run with the configured policy.
        let empty = client
            .post_raw("/maintenance/cleanup", "")
            .await
            .expect(k, "empty body", 200);
        assert_eq!(empty["dry_run"], true, "{k:?}");
        assert_eq!(empty["policy"]["keep_latest"], 5, "{k:?}");
        for id in &ids {
            client
                .get(&format!("/programs/{id}"))
                .await
                .expect_status(k, "unchanged", 200);
        }
        assert!(
            store.storage.last_cleanup_status().await.unwrap().is_none(),
            "{k:?}"
        );
    }
}

/// A blob store over a backend's that (a) holds restores open until released, as S3 does for
/// hours (LocalStack and the embedded store restore at once), and (b) reports listed blobs two hours
/// older than they are, so that fresh orphans are old enough to collect.
struct SlowArchive {
    inner: Arc<dyn BlobStore>,
    held: Mutex<BTreeSet<String>>,
    released: std::sync::atomic::AtomicBool,
}

#[async_trait]
impl BlobStore for SlowArchive {
    async fn put(&self, key: &str, bytes: Bytes, sha: &str) -> dspy_storage_core::Result<()> {
        self.inner.put(key, bytes, sha).await
    }
    async fn get(&self, key: &str) -> dspy_storage_core::Result<Bytes> {
        self.inner.get(key).await
    }
    async fn delete(&self, key: &str) -> dspy_storage_core::Result<()> {
        self.inner.delete(key).await
    }
    async fn copy(&self, from: &str, to: &str) -> dspy_storage_core::Result<()> {
        self.inner.copy(from, to).await
    }
    async fn list(
        &self,
        prefix: &str,
        start: Option<String>,
        limit: usize,
    ) -> dspy_storage_core::Result<(Vec<BlobMeta>, Option<String>)> {
        let (metas, next) = self.inner.list(prefix, start, limit).await?;
        let aged = metas
            .into_iter()
            .map(|m| BlobMeta {
                last_modified: m.last_modified.map(|t| t - Duration::hours(2)),
                ..m
            })
            .collect();
        Ok((aged, next))
    }
    async fn archive(&self, key: &str) -> dspy_storage_core::Result<()> {
        self.inner.archive(key).await
    }
    async fn tier(&self, key: &str) -> dspy_storage_core::Result<BlobTier> {
        let held = self.held.lock().unwrap().contains(key);
        if held {
            if !self.released.load(std::sync::atomic::Ordering::SeqCst) {
                return Ok(BlobTier::Restoring);
            }
            self.held.lock().unwrap().remove(key);
            self.inner.request_restore(key).await?;
        }
        self.inner.tier(key).await
    }
    async fn request_restore(&self, key: &str) -> dspy_storage_core::Result<()> {
        if self.inner.tier(key).await? != BlobTier::Standard {
            self.held.lock().unwrap().insert(key.to_owned());
        }
        Ok(())
    }
    async fn unarchive(&self, key: &str) -> dspy_storage_core::Result<()> {
        self.inner.unarchive(key).await
    }
}

fn slow_archive(store: &TestStore, config: StorageConfig) -> (Arc<Storage>, Arc<SlowArchive>) {
    let blobs = Arc::new(SlowArchive {
        inner: store.storage.blobs().clone(),
        held: Mutex::new(BTreeSet::new()),
        released: Default::default(),
    });
    let storage = Storage::new(
        store.storage.items().clone(),
        blobs.clone(),
        config,
        "slow archive",
    );
    (Arc::new(storage), blobs)
}

#[tokio::test]
async fn restoring_until_the_copy_is_readable_then_a_load_or_a_run_finishes_it() {
    for store in backends().await {
        let k = store.kind;
        let (storage, blobs) = slow_archive(&store, StorageConfig::default());
        let client = Client {
            router: dspy_storage_functions::app(AppState::new(storage.clone())),
        };
        let ids = two_years(&client, k).await;
        let (a, b) = (&ids[5], &ids[6]);
        for id in [a, b] {
            client
                .post_json(&format!("/programs/{id}/archive"), &json!({}))
                .await
                .expect(k, "archive", 200);
            let r = client
                .post_json(&format!("/programs/{id}/restore"), &json!({}))
                .await
                .expect(k, "restore", 202);
            assert_eq!(r["status"], "restoring", "{k:?}");
            let m = client
                .get(&format!("/programs/{id}/metadata"))
                .await
                .expect(k, "metadata", 200);
            assert_eq!(m["status"], "restoring", "{k:?}");
            client.get(&format!("/programs/{id}")).await.expect_error(
                k,
                "load while restoring",
                409,
                "archived",
            );
            client
                .post_json(&format!("/programs/{id}/restore"), &json!({}))
                .await
                .expect(k, "restore again", 202);
        }
        // A run while the archive still works: nothing finished, nothing re-archived.
        let keep_all = json!({"dry_run": false, "policy": {"keep_latest": 100}});
        let run = cleanup(&client, k, keep_all.clone()).await;
        assert_eq!(run["summary"]["restores_completed"], 0, "{k:?}: {run}");
        // The copy becomes readable: a load finishes `a`, the next run finishes `b`.
        blobs
            .released
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let loaded = client.get(&format!("/programs/{a}")).await;
        loaded.expect_status(k, "load after the restore completed", 200);
        assert_eq!(loaded.raw_program(), program(5), "{k:?}");
        assert_eq!(loaded.json()["status"], "active", "{k:?}");
        let run = cleanup(&client, k, keep_all).await;
        assert_eq!(run["summary"]["restores_completed"], 1, "{k:?}: {run}");
        let loaded = client.get(&format!("/programs/{b}")).await;
        loaded.expect_status(k, "load after the run", 200);
        assert_eq!(loaded.raw_program(), program(6), "{k:?}");
    }
}

#[tokio::test]
async fn garbage_orphan_blobs_and_expired_idempotency_records() {
    let config = StorageConfig {
        idempotency_ttl: std::time::Duration::from_secs(1),
        ..StorageConfig::default()
    };
    for store in backends_with(config.clone()).await {
        let k = store.kind;
        let (storage, _) = slow_archive(&store, config.clone());
        let client = Client {
            router: dspy_storage_functions::app(AppState::new(storage.clone())),
        };
        let body = format!(
            r#"{{"program": {}, "metadata": {{"signature": "gc.Sig"}}}}"#,
            program(1)
        );
        let stored = client
            .request(
                Method::POST,
                "/programs",
                &[
                    ("content-type", "application/json"),
                    ("idempotency-key", "gc-key-1"),
                ],
                body,
            )
            .await
            .expect(k, "store", 201);
        let id = stored["id"].as_str().unwrap().to_owned();
        // An orphan: a blob no record names (a store that failed after its blob write), and a
        // foreign file that is not a program blob (never touched).
        let orphan = format!("programs/2025/01/01/{}.json.zst", ProgramId::new());
        let foreign = "programs/README.txt".to_string();
        for key in [&orphan, &foreign] {
            let bytes = Bytes::from_static(b"orphan");
            storage
                .blobs()
                .put(key, bytes.clone(), &sha256_hex(&bytes))
                .await
                .unwrap();
        }
        tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
        let idem = keys::idempotency_pk("gc-key-1");
        assert!(storage
            .items()
            .get(&idem, keys::IDEM_SK)
            .await
            .unwrap()
            .is_some());

        let dry = cleanup(&client, k, json!({"dry_run": true})).await;
        assert_eq!(dry["summary"]["orphan_blobs_collected"], 1, "{k:?}: {dry}");
        assert_eq!(
            dry["summary"]["idempotency_records_collected"], 1,
            "{k:?}: {dry}"
        );
        assert!(
            storage.blobs().get(&orphan).await.is_ok(),
            "{k:?}: a dry run deletes nothing"
        );
        assert!(storage
            .items()
            .get(&idem, keys::IDEM_SK)
            .await
            .unwrap()
            .is_some());

        let real = cleanup(&client, k, json!({"dry_run": false})).await;
        assert_eq!(
            real["summary"]["orphan_blobs_collected"], 1,
            "{k:?}: {real}"
        );
        assert_eq!(
            real["summary"]["idempotency_records_collected"], 1,
            "{k:?}: {real}"
        );
        assert!(
            matches!(
                storage.blobs().get(&orphan).await,
                Err(dspy_storage_core::Error::NotFound(_))
            ),
            "{k:?}"
        );
        assert!(
            storage.blobs().get(&foreign).await.is_ok(),
            "{k:?}: foreign files stay"
        );
        assert!(
            storage
                .items()
                .get(&idem, keys::IDEM_SK)
                .await
                .unwrap()
                .is_none(),
            "{k:?}"
        );
        let status = storage.last_cleanup_status().await.unwrap().unwrap();
        assert_eq!(
            status["summary"]["orphan_blobs_collected"], 1,
            "{k:?}: {status}"
        );
        client.get(&format!("/programs/{id}")).await.expect_status(
            k,
            "the stored program stays",
            200,
        );

        // Blobs younger than an hour are never collected (the real store, not aged).
        let young = format!("programs/2025/01/02/{}.json.zst", ProgramId::new());
        let bytes = Bytes::from_static(b"in flight");
        store
            .storage
            .blobs()
            .put(&young, bytes.clone(), &sha256_hex(&bytes))
            .await
            .unwrap();
        let report = store
            .storage
            .cleanup(&OPERATOR, &CleanupOptions::new(Policy::default(), false))
            .await
            .unwrap();
        assert_eq!(report.summary.orphan_blobs_collected, 0, "{k:?}");
        assert!(store.storage.blobs().get(&young).await.is_ok(), "{k:?}");
    }
}

/// A run cut at any point (here: after every single item, by a deadline already past) is
/// completed by the following slices, and together they do exactly what one dry run planned.
/// A crash between an archive's blob move and its record write is completed by the next run.
#[tokio::test]
async fn interrupted_runs_are_completed_by_the_next() {
    for store in backends().await {
        let (k, client) = (store.kind, store.client());
        let ids = two_years(&client, k).await;
        // More signatures, so the scan has many items to be cut between.
        for s in 0..4 {
            let body = format!(
                r#"{{"program": {}, "metadata": {{"signature": "other.S{s}"}}}}"#,
                program(s)
            );
            client
                .post_raw("/programs", body)
                .await
                .expect(k, "store", 201);
        }
        let policy = Policy {
            keep_latest: 2,
            ..Policy::default()
        };
        let dry = store
            .storage
            .cleanup(&OPERATOR, &CleanupOptions::new(policy.clone(), true))
            .await
            .unwrap();

        // Crash after the blob of 1.0.8 moved but before its record: a load answers 409, never
        // wrong data.
        let rec = store
            .storage
            .get_record(&OPERATOR, &ProgramId::parse(&ids[8]).unwrap())
            .await
            .unwrap();
        store.storage.blobs().archive(&rec.blob_key).await.unwrap();
        client
            .get(&format!("/programs/{}", ids[8]))
            .await
            .expect_error(k, "half-archived", 409, "archived");

        let (mut archived, mut deleted, mut slices) = (Vec::new(), Vec::new(), 0);
        let mut cursor = None;
        loop {
            slices += 1;
            let opts = CleanupOptions {
                cursor: cursor.take(),
                deadline: Some(Instant::now()),
                ..CleanupOptions::new(policy.clone(), false)
            };
            let r = store.storage.cleanup(&OPERATOR, &opts).await.unwrap();
            assert!(r.skipped.is_empty(), "{k:?}: {:?}", r.skipped);
            archived.extend(r.archived);
            deleted.extend(r.deleted);
            match r.next_cursor {
                Some(c) => cursor = Some(c),
                None => {
                    assert!(r.complete);
                    break;
                }
            }
        }
        assert!(slices > 3, "{k:?}: cut into {slices} slices");
        let ids_of = |v: &[dspy_storage_core::retention::Decision]| -> BTreeSet<String> {
            v.iter().map(|d| d.id.to_string()).collect()
        };
        assert_eq!(ids_of(&archived), ids_of(&dry.archived), "{k:?}");
        assert_eq!(ids_of(&deleted), ids_of(&dry.deleted), "{k:?}");
        let m = client
            .get(&format!("/programs/{}/metadata", ids[8]))
            .await
            .expect(k, "metadata", 200);
        assert_eq!(
            m["status"], "archived",
            "{k:?}: the half-done archive was completed"
        );
        // A blob whose archive was cut short while the program is kept (1.0.10, among the 2
        // latest): the restore call brings it back.
        let rec = store
            .storage
            .get_record(&OPERATOR, &ProgramId::parse(&ids[10]).unwrap())
            .await
            .unwrap();
        store.storage.blobs().archive(&rec.blob_key).await.unwrap();
        client
            .get(&format!("/programs/{}", ids[10]))
            .await
            .expect_error(k, "half-archived, kept", 409, "archived");
        let r = client
            .post_json(&format!("/programs/{}/restore", ids[10]), &json!({}))
            .await
            .expect(k, "restore", 200);
        assert_eq!(r["status"], "active", "{k:?}");
        let l = client.get(&format!("/programs/{}", ids[10])).await;
        l.expect_status(k, "restored", 200);
        assert_eq!(l.raw_program(), program(10), "{k:?}");
        // Nothing left to do.
        let again = store
            .storage
            .cleanup(&OPERATOR, &CleanupOptions::new(policy, false))
            .await
            .unwrap();
        assert!(
            again.archived.is_empty() && again.deleted.is_empty(),
            "{k:?}"
        );
    }
}

fn event(name: &str) -> Value {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/events")
        .join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

#[tokio::test]
async fn the_cleanup_function_runs_scheduled_events_and_http_events() {
    let scheduled_event = event("cleanup-scheduled-event.json");
    assert!(is_scheduled_event(&scheduled_event));
    let http_event = event("cleanup-post-maintenance.json");
    assert!(!is_scheduled_event(&http_event));
    for store in backends().await {
        let k = store.kind;
        let client = store.client();
        let ids = two_years(&client, k).await;
        let state = AppState::new(store.storage.clone());
        let router = function_router(state.clone(), Function::Cleanup);
        let handler: dspy_storage_functions::lambda::ScheduledHandler =
            |s, e, d| Box::pin(jobs::cleanup_scheduled(s, e, d));

        // The HTTP event (a dry run with its own policy) through the function's router.
        let answer = handle_event(
            router.clone(),
            state.clone(),
            handler,
            LambdaEvent::new(http_event.clone(), Context::default()),
        )
        .await
        .unwrap();
        assert_eq!(answer["statusCode"], 200, "{k:?}: {answer}");
        let body: Value = serde_json::from_str(answer["body"].as_str().unwrap()).unwrap();
        assert_eq!(body["dry_run"], true, "{k:?}");
        assert_eq!(body["policy"]["keep_latest"], 1, "{k:?}");
        assert_eq!(
            body["archived"].as_array().unwrap().len(),
            4,
            "{k:?}: {body}"
        );
        assert!(
            store.storage.last_cleanup_status().await.unwrap().is_none(),
            "{k:?}"
        );

        // The scheduled event: no policy in it; the configured one (defaults here) runs for real.
        let mut context = Context::default();
        context.deadline = (Utc::now() + Duration::minutes(15)).timestamp_millis() as u64;
        let summary = handle_event(
            router.clone(),
            state.clone(),
            handler,
            LambdaEvent::new(scheduled_event.clone(), context),
        )
        .await
        .unwrap();
        assert_eq!(
            summary["event_id"], "53dc4d37-cffa-4f76-80c9-8b7d4a4d2eaa",
            "{k:?}"
        );
        assert_eq!(summary["complete"], true, "{k:?}");
        assert_eq!(summary["policy"]["keep_latest"], 5, "{k:?}");
        // Defaults: 1.0.0, 1.0.4, 1.0.5, 1.0.6 are past 365 days and unprotected.
        assert_eq!(summary["summary"]["deleted"], 4, "{k:?}: {summary}");
        assert_eq!(summary["summary"]["archived"], 0, "{k:?}: {summary}");
        let status = store
            .storage
            .last_cleanup_status()
            .await
            .unwrap()
            .expect("status");
        assert_eq!(status["summary"], summary["summary"], "{k:?}");
        client
            .get(&format!("/programs/{}", ids[0]))
            .await
            .expect_error(k, "deleted by the schedule", 404, "not_found");
        client
            .get(&format!("/programs/{}", ids[1]))
            .await
            .expect_status(k, "kept", 200);

        // Another function's router does not serve the cleanup route.
        let other = handle_event(
            function_router(state.clone(), Function::Load),
            state.clone(),
            handler,
            LambdaEvent::new(http_event.clone(), Context::default()),
        )
        .await
        .unwrap();
        assert_eq!(other["statusCode"], 404, "{k:?}");
        // Neither an HTTP nor a scheduled event: an error, not a panic.
        assert!(handle_event(
            router,
            state,
            handler,
            LambdaEvent::new(json!({"hello": 1}), Context::default())
        )
        .await
        .is_err());
    }
}

/// The AWS requests of a run, counted: one scan page, one index query (and one batch read of its
/// records) per signature page, and per
/// action a bounded number of calls (archive: record + head reads, HeadObject, CopyObject, one
/// transaction; delete: record + head reads, one transaction, DeleteObject), plus the blob
/// listing of the orphan collector and the status write. A dry run reads only.
#[tokio::test]
async fn request_counts_of_a_run() {
    let Some(store) = dspy_storage_tests::aws().await else {
        return;
    };
    let (k, client) = (store.kind, store.client());
    two_years(&client, k).await;
    let counter = store.counter.clone().unwrap();
    let policy = Policy {
        keep_latest: 2,
        ..Policy::default()
    };
    counter.reset();
    store
        .storage
        .cleanup(&OPERATOR, &CleanupOptions::new(policy.clone(), true))
        .await
        .unwrap();
    let dry = counter.snapshot();
    println!("dry run (12 programs, 1 signature): {dry:?}");
    counter.reset();
    let r = store
        .storage
        .cleanup(&OPERATOR, &CleanupOptions::new(policy, false))
        .await
        .unwrap();
    let real = counter.snapshot();
    println!("real run (3 archived, 4 deleted): {real:?}");
    assert_eq!((r.summary.archived, r.summary.deleted), (3, 4));
    let n = |m: &BTreeMap<String, u64>, op: &str| m.get(op).copied().unwrap_or(0);
    // Dry: reads only.
    assert_eq!(n(&dry, "DynamoDB.Scan"), 1);
    assert_eq!(n(&dry, "DynamoDB.Query"), 1);
    // The signature's page of the (keys-only) index, then its records in one batch read.
    assert_eq!(n(&dry, "DynamoDB.BatchGetItem"), 1);
    assert_eq!(n(&dry, "DynamoDB.TransactWriteItems"), 0);
    assert_eq!(n(&dry, "S3.ListObjectsV2"), 2);
    assert_eq!(
        dry.keys()
            .filter(|op| op.starts_with("S3.") && *op != "S3.ListObjectsV2")
            .count(),
        0
    );
    // Real: 3 archives + 4 deletes (and, after each, the removal of its word index entries) +
    // the status item.
    assert_eq!(n(&real, "DynamoDB.TransactWriteItems"), 3 + 4 + 4 + 1);
    assert_eq!(n(&real, "DynamoDB.GetItem"), 2 * 3 + 2 * 4);
    assert_eq!(n(&real, "S3.HeadObject"), 3);
    assert_eq!(n(&real, "S3.CopyObject"), 3);
    assert_eq!(n(&real, "S3.DeleteObject"), 4);
}

/// The scheduled run stops at its deadline, keeps its cursor in the status item, and the next
/// scheduled run resumes there until the pass is complete.
#[tokio::test]
async fn scheduled_runs_resume_from_the_status_item() {
    for store in backends().await {
        let (k, client) = (store.kind, store.client());
        let ids = two_years(&client, k).await;
        for s in 0..3 {
            let body = format!(
                r#"{{"program": {}, "metadata": {{"signature": "other.S{s}"}}}}"#,
                program(s)
            );
            client
                .post_raw("/programs", body)
                .await
                .expect(k, "store", 201);
        }
        let mut runs = 0;
        let mut deleted = 0;
        loop {
            runs += 1;
            // One item per run (the deadline has passed): a bound above the items the table
            // holds (records, claims, heads, tag and word index entries, counters).
            assert!(runs < 400, "{k:?}: never completes");
            let r = store
                .storage
                .scheduled_cleanup(&OPERATOR, Policy::default(), Some(Instant::now()))
                .await
                .unwrap();
            assert!(
                r.kept.is_empty() && r.deleted.is_empty(),
                "{k:?}: counts only"
            );
            deleted += r.summary.deleted;
            let status = store.storage.last_cleanup_status().await.unwrap().unwrap();
            assert_eq!(status["complete"], r.complete, "{k:?}");
            assert_eq!(
                status["next_cursor"].is_null(),
                r.complete,
                "{k:?}: {status}"
            );
            if r.complete {
                break;
            }
        }
        assert!(runs > 2, "{k:?}: {runs} runs");
        assert_eq!(deleted, 4, "{k:?}");
        client
            .get(&format!("/programs/{}", ids[0]))
            .await
            .expect_error(k, "deleted", 404, "not_found");
        // The next run starts a new pass from the beginning and finds nothing to do.
        let r = store
            .storage
            .scheduled_cleanup(&OPERATOR, Policy::default(), None)
            .await
            .unwrap();
        assert!(
            r.complete && r.summary.deleted == 0 && r.summary.programs == 11,
            "{k:?}: {:?}",
            r.summary
        );
    }
}

fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// Timing and peak memory of a scheduled-style run (counts only) over many programs:
/// `DSPY_BENCH_PROGRAMS` (default 2000) in signatures of 10 versions spanning two years.
/// `cargo test -p dspy-storage-tests --test it retention::bench -- --ignored --nocapture`
#[tokio::test]
#[ignore]
async fn bench_cleanup_scale() {
    let n: usize = std::env::var("DSPY_BENCH_PROGRAMS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    for store in backends().await {
        let k = store.kind;
        let now = Utc::now();
        let t0 = Instant::now();
        for i in 0..n {
            let (s, v) = (i / 10, i % 10);
            let created = now - Duration::days(730 - 73 * v as i64);
            let meta = json!({"signature": format!("bench.S{s}"), "version": format!("1.0.{v}"),
                              "created_at": format_time(&created), "performance": (v as f64) / 10.0});
            let program = serde_json::value::RawValue::from_string(program(i)).unwrap();
            store
                .storage
                .store(
                    &OPERATOR,
                    &program,
                    dspy_storage_core::domain::NewMetadata::parse(meta, now).unwrap(),
                    None,
                )
                .await
                .unwrap();
        }
        let load = t0.elapsed();
        let rss0 = peak_rss_kib();
        let quiet = |dry_run| CleanupOptions {
            list_decisions: false,
            ..CleanupOptions::new(Policy::default(), dry_run)
        };
        let t1 = Instant::now();
        let dry = store
            .storage
            .cleanup(&OPERATOR, &quiet(true))
            .await
            .unwrap();
        let dry_time = t1.elapsed();
        let t2 = Instant::now();
        let real = store
            .storage
            .cleanup(&OPERATOR, &quiet(false))
            .await
            .unwrap();
        let real_time = t2.elapsed();
        assert_eq!(dry.summary.deleted, real.summary.deleted);
        println!(
            "{k:?}: {n} programs stored in {load:.1?}; dry run {dry_time:.1?}, real run {real_time:.1?} \
             ({:?}); peak RSS {rss0} KiB before the runs, {} KiB after",
            real.summary,
            peak_rss_kib()
        );
        if let Some(c) = &store.counter {
            println!("{k:?}: requests (store + runs): {:?}", c.snapshot());
        }
    }
}
