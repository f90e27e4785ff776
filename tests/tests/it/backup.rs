//! Backup and restore on both backends and across them, through the HTTP API: round trips of
//! 1,000 programs with aliases, metric records and items of kinds the backup does not know
//! (every program byte-identical, every record equal), incremental blob copies, retention,
//! consistency under a missing blob, resuming a sliced backup, refusing a corrupted part or a
//! newer format before any write, an interrupted restore run again, restoring twice, merging
//! into a live store, and multipart uploads on both blob stores.

use dspy_storage_core::access::OPERATOR;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use dspy_storage_core::backend::{Item, MIN_MULTIPART_PART};
use dspy_storage_core::backend::{ItemStore, Page, PageKey, Query, WriteOp};
use dspy_storage_core::backup::{self, BackupLocation, BackupOptions, BackupRun, RestoreOptions};
use dspy_storage_core::model::keys::{self, EntityKind};
use dspy_storage_core::storage::Storage;
use dspy_storage_core::Error;
use dspy_storage_functions::AppState;
use dspy_storage_tests::{backends, embedded, Client, Kind, TestStore};
use serde_json::{json, Value};

/// A client whose backups live in `location` (another store's, to restore across stores).
fn client_with(store: &TestStore, location: Option<BackupLocation>) -> Client {
    let mut state = AppState::new(store.storage.clone());
    state.backup = location;
    Client {
        router: dspy_storage_functions::app(state),
    }
}

fn location_of(store: &TestStore) -> BackupLocation {
    BackupLocation::new(store.storage.blobs().clone())
}

/// Every item of a store but its job status and idempotency records, sorted by key.
async fn dump(storage: &Storage) -> Vec<Item> {
    let mut out = Vec::new();
    let mut start: Option<PageKey> = None;
    loop {
        let page = storage.items().scan(start.take(), 500).await.expect("scan");
        out.extend(page.items.into_iter().filter(|i| {
            // Counters are not carried but rebuilt by the restore: compared through the report.
            !matches!(
                keys::entity_kind(&i.pk, &i.sk),
                EntityKind::Status | EntityKind::Idempotency | EntityKind::Counter
            )
        }));
        match page.next {
            Some(n) => start = Some(n),
            None => break,
        }
    }
    out.sort_by(|a, b| (&a.pk, &a.sk).cmp(&(&b.pk, &b.sk)));
    out
}

fn program_ids(items: &[Item]) -> Vec<String> {
    items
        .iter()
        .filter(|i| keys::entity_kind(&i.pk, &i.sk) == EntityKind::Program)
        .map(|i| i.pk.trim_start_matches("PROG#").to_owned())
        .collect()
}

/// Asserts two stores hold equal records and byte-identical programs.
async fn assert_same(what: &str, a: &TestStore, b: &TestStore) {
    let (da, db) = (dump(&a.storage).await, dump(&b.storage).await);
    assert_eq!(da.len(), db.len(), "{what}: item counts");
    for (x, y) in da.iter().zip(&db) {
        assert_eq!(x, y, "{what}: item {}/{}", x.pk, x.sk);
    }
    let (ca, cb) = (a.client(), b.client());
    // The report's counters, rebuilt by the restore, count the same programs and bytes.
    let ra = ca.get("/report").await.expect(a.kind, what, 200);
    let rb = cb.get("/report").await.expect(b.kind, what, 200);
    for key in ["total_programs", "storage_size", "signatures"] {
        assert_eq!(ra[key], rb[key], "{what}: report {key}");
    }
    for id in program_ids(&da) {
        let pa = ca.get(&format!("/programs/{id}")).await;
        let pb = cb.get(&format!("/programs/{id}")).await;
        pa.expect_status(a.kind, what, 200);
        pb.expect_status(b.kind, what, 200);
        assert_eq!(pa.raw_program(), pb.raw_program(), "{what}: program {id}");
    }
}

/// Every program record has its version claim and tag entries; every signature head counts
/// exactly the claims under it, names the highest as latest, and its aliases point at claims of
/// the same program.
fn assert_whole(items: &[Item]) {
    use dspy_storage_core::model::record::{from_item, ProgramRecord, SignatureHead, VersionClaim};
    let has = |pk: &str, sk: &str| items.iter().any(|i| i.pk == pk && i.sk == sk);
    for item in items
        .iter()
        .filter(|i| keys::entity_kind(&i.pk, &i.sk) == EntityKind::Program)
    {
        let r: ProgramRecord = from_item(item).unwrap();
        assert!(
            has(&r.signature_pk(), &keys::version_sk(&r.version)),
            "program {} without its claim",
            r.id
        );
        for t in r.tag_items() {
            assert!(has(&t.pk, &t.sk), "program {} without tag {}", r.id, t.pk);
        }
    }
    for item in items
        .iter()
        .filter(|i| keys::entity_kind(&i.pk, &i.sk) == EntityKind::SignatureHead)
    {
        let h: SignatureHead = from_item(item).unwrap();
        let claims: Vec<VersionClaim> = items
            .iter()
            .filter(|i| {
                i.pk == item.pk && keys::entity_kind(&i.pk, &i.sk) == EntityKind::VersionClaim
            })
            .map(|i| from_item(i).unwrap())
            .collect();
        assert_eq!(
            h.versions,
            claims.len() as u64,
            "{}: version count",
            item.pk
        );
        let latest = claims
            .iter()
            .max_by(|a, b| a.version.cmp(&b.version))
            .unwrap();
        assert_eq!(h.latest_id, latest.id, "{}: latest", item.pk);
        for (name, a) in &h.aliases {
            assert!(
                claims
                    .iter()
                    .any(|c| c.id == a.id && c.version == a.version),
                "{}: alias {name} points at a missing program",
                item.pk
            );
        }
        for c in &claims {
            assert!(
                has(&keys::program_pk(&c.id), keys::PROG_SK),
                "{}: claim {} without its program",
                item.pk,
                c.version
            );
        }
    }
}

fn program_json(i: usize) -> String {
    // Keys deliberately out of order and spacing kept: the bytes must come back as sent.
    format!(
        r#"{{"predict": {{"signature": {{"instructions": "Answer question {i} briefly.", "fields": []}}, "demos": [{{"q": "{i}?",  "a": "{}"}}]}}, "lm": null}}"#,
        i * 7
    )
}

async fn store_program(c: &Client, k: Kind, sig: &str, i: usize) -> Value {
    let body = format!(
        r#"{{"program": {}, "metadata": {{"signature": "{sig}", "optimization_method": "miprov2", "performance": {{"accuracy": {}}}, "tags": ["t{}"], "custom": {i}}}}}"#,
        program_json(i),
        0.5 + (i % 50) as f64 / 100.0,
        i % 3
    );
    c.post_raw("/programs", body).await.expect(k, "store", 201)
}

/// Metric records and items of a kind the backup does not know, written as raw items (the
/// metrics feature writes them through the item store the same way).
async fn extra_items(storage: &Storage, ids: &[String]) {
    let mut items = Vec::new();
    for (n, id) in ids.iter().enumerate().take(200) {
        items.push(
            Item::new(
                format!("MET#{id}#2026-11"),
                format!("2026-11-25T10:00:{:02}.000Z#{n}", n % 60),
            )
            .with(
                "data",
                json!({"metrics": {"accuracy": 0.9, "latency": n}}).to_string(),
            ),
        );
    }
    items.push(Item::new("RUN#r1", "RUN").with("data", r#"{"method":"miprov2"}"#));
    items.push(
        Item::new("ZZFUTURE#kind", "x")
            .with("data", "{\"unknown\": true}")
            .with("GSI4PK", "FUTURE#x")
            .with("GSI4SK", "1"),
    );
    storage.items().batch_put(items).await.expect("extra items");
}

/// Stores `n` programs over 10 signatures with aliases, metrics, a run and an unknown item.
async fn populate(store: &TestStore, n: usize) -> Vec<String> {
    let (c, k) = (store.client(), store.kind);
    let mut ids = Vec::new();
    for i in 0..n {
        let v = store_program(&c, k, &format!("sig.S{}", i % 10), i).await;
        ids.push(v["id"].as_str().unwrap().to_owned());
    }
    for s in 0..10.min(n) {
        c.request(
            http::Method::PUT,
            &format!("/signatures/sig.S{s}/aliases/production"),
            &[("content-type", "application/json")],
            serde_json::to_vec(&json!({"version": "1.0.0"})).unwrap(),
        )
        .await
        .expect(k, "alias", 200);
    }
    extra_items(&store.storage, &ids).await;
    ids
}

async fn create_backup(c: &Client, k: Kind, name: &str) -> Value {
    c.post_json("/backups", &json!({"name": name}))
        .await
        .expect(k, "create backup", 201)
}

async fn restore(c: &Client, k: Kind, name: &str) -> Value {
    c.post_json(
        &format!("/backups/{name}/restore"),
        &json!({"verify_compatibility": true}),
    )
    .await
    .expect(k, "restore", 200)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn thousand_programs_round_trip_on_both_backends_and_across_them() {
    // embedded → embedded, embedded → AWS, AWS → AWS, AWS → embedded.
    let emb1 = embedded().await;
    populate(&emb1, 1000).await;
    let (c1, k1) = (emb1.client(), emb1.kind);
    let made = create_backup(&c1, k1, "full-1").await;
    assert_eq!(made["backup_name"], "full-1");
    assert_eq!(made["programs_count"], 1000);
    assert_eq!(made["metrics_count"], 200);
    assert!(made["size"].as_u64().unwrap() > 0);
    assert!(made["backup_id"].as_str().is_some());
    assert_eq!(made["counts"]["other"], 1, "{made}");
    assert_eq!(made["counts"]["optimization_runs"], 1, "{made}");
    assert_eq!(made["counts"]["signature_heads"], 10, "{made}");
    assert_eq!(made["counts"]["version_claims"], 1000, "{made}");
    assert_eq!(made["counts"]["blobs_copied"], 1000, "{made}");

    let emb2 = embedded().await;
    let r = restore(
        &client_with(&emb2, Some(location_of(&emb1))),
        emb2.kind,
        "full-1",
    )
    .await;
    assert_eq!(r["restored_programs"], 1000, "{r}");
    assert_eq!(r["restored_metrics"], 200, "{r}");
    assert!(r["restore_time"].as_f64().is_some(), "{r}");
    assert_same("embedded → embedded", &emb1, &emb2).await;

    let Some(aws1) = dspy_storage_tests::aws().await else {
        return;
    };
    let r = restore(
        &client_with(&aws1, Some(location_of(&emb1))),
        aws1.kind,
        "full-1",
    )
    .await;
    assert_eq!(r["restored_programs"], 1000, "{r}");
    assert_same("embedded → AWS", &emb1, &aws1).await;

    let made = create_backup(&aws1.client(), aws1.kind, "aws-1").await;
    assert_eq!(made["programs_count"], 1000, "{made}");
    let aws2 = dspy_storage_tests::aws().await.unwrap();
    restore(
        &client_with(&aws2, Some(location_of(&aws1))),
        aws2.kind,
        "aws-1",
    )
    .await;
    assert_same("AWS → AWS", &aws1, &aws2).await;

    let emb3 = embedded().await;
    restore(
        &client_with(&emb3, Some(location_of(&aws1))),
        emb3.kind,
        "aws-1",
    )
    .await;
    assert_same("AWS → embedded", &aws1, &emb3).await;
    assert_same("embedded → AWS → embedded", &emb1, &emb3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn routes_list_manifest_status_increments_and_retention() {
    for store in backends().await {
        let (c, k) = (store.client(), store.kind);
        populate(&store, 12).await;
        assert_eq!(
            c.get("/backups").await.expect(k, "empty list", 200)["backups"],
            json!([])
        );
        let a = create_backup(&c, k, "b-1").await;
        assert_eq!(a["counts"]["blobs_copied"], 12);
        // The last-run status the monitoring report reads.
        let status = store
            .storage
            .items()
            .get(keys::STATUS_PK, keys::BACKUP_STATUS_SK)
            .await
            .unwrap()
            .expect("status item");
        let data: Value = serde_json::from_str(status.data().unwrap()).unwrap();
        assert_eq!(data["name"], "b-1", "{k:?}");
        assert_eq!(data["programs"], 12, "{k:?}");
        assert!(data["finished_at"].as_str().is_some(), "{k:?}");

        // Incremental: only the new program's blob is copied; default name when none is given.
        store_program(&c, k, "sig.New", 999).await;
        let b = c
            .post_raw("/backups", "")
            .await
            .expect(k, "backup without a body", 201);
        assert_eq!(b["counts"]["blobs_copied"], 1, "{k:?} {b}");
        assert_eq!(b["programs_count"], 13);
        let b_name = b["backup_name"].as_str().unwrap().to_owned();
        assert!(b_name.starts_with("backup-"), "{b_name}");

        let list = c.get("/backups").await.expect(k, "list", 200);
        let names: Vec<&str> = list["backups"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["backup_name"].as_str().unwrap())
            .collect();
        assert_eq!(names, vec![b_name.as_str(), "b-1"], "{k:?}: newest first");
        let m = c
            .get(&format!("/backups/{b_name}"))
            .await
            .expect(k, "manifest", 200);
        assert_eq!(m["format_version"], 1);
        assert_eq!(m["counts"]["programs"], 13);
        assert!(m["parts"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["sha256"].as_str().is_some_and(|s| s.len() == 64)));
        assert!(m["tool_version"].as_str().is_some());

        c.get("/backups/nope")
            .await
            .expect_error(k, "unknown backup", 404, "not_found");
        c.get("/backups/..%2Fx")
            .await
            .expect_error(k, "bad name", 400, "invalid_request");
        c.post_json("/backups", &json!({"name": "b-1"}))
            .await
            .expect_error(k, "name taken", 409, "conflict");
        c.post_json("/backups", &json!({"name": "a b"}))
            .await
            .expect_error(k, "bad name", 400, "invalid_request");
        c.post_json("/backups", &json!({"nme": "x"}))
            .await
            .expect_error(k, "unknown field", 400, "invalid_request");

        // Each backup restores on its own (the second copied one blob, it still holds all 13).
        let fresh = if k == Kind::Aws {
            dspy_storage_tests::aws().await.unwrap()
        } else {
            embedded().await
        };
        let r = restore(&client_with(&fresh, Some(location_of(&store))), k, &b_name).await;
        assert_eq!(r["restored_programs"], 13);
        assert_same("second backup alone", &store, &fresh).await;

        // Retention: keep the newest 2 of 3; blobs only the removed one held are removed.
        let loc = location_of(&store);
        let opts = BackupOptions {
            name: Some("b-3".into()),
            retain: Some(2),
            ..Default::default()
        };
        // Delete a program so that only b-1 and b-2 hold its blob... it is held by b-2 (kept).
        match backup::create_backup(&OPERATOR, &store.storage, &loc, &opts)
            .await
            .unwrap()
        {
            BackupRun::Finished(m) => assert_eq!(m.counts.blobs_copied, 0),
            other => panic!("{other:?}"),
        }
        let names: Vec<String> = backup::list_backups(&OPERATOR, &loc)
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.backup_name)
            .collect();
        assert_eq!(names, vec!["b-3".to_owned(), b_name.clone()], "{k:?}");
        let (pool, _) = loc.store.list(&loc.blob_prefix, None, 1000).await.unwrap();
        assert_eq!(pool.len(), 13, "{k:?}: kept backups' blobs stay");
        let (old, _) = loc.store.list("backups/b-1/", None, 1000).await.unwrap();
        assert!(old.is_empty(), "{k:?}: b-1 removed");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_program_without_its_blob_is_left_out_and_heads_point_only_at_backed_up_programs() {
    for store in backends().await {
        let (c, k) = (store.client(), store.kind);
        let v1 = store_program(&c, k, "qa.Cons", 1).await;
        let v2 = store_program(&c, k, "qa.Cons", 2).await;
        c.request(
            http::Method::PUT,
            "/signatures/qa.Cons/aliases/production",
            &[("content-type", "application/json")],
            serde_json::to_vec(&json!({"version": "1.0.1"})).unwrap(),
        )
        .await
        .expect(k, "alias", 200);
        // The newest program's blob disappears (as if deleted while the backup ran).
        let rec = store
            .storage
            .get_record(
                &OPERATOR,
                &dspy_storage_core::domain::ProgramId::parse(v2["id"].as_str().unwrap()).unwrap(),
            )
            .await
            .unwrap();
        store.storage.blobs().delete(&rec.blob_key).await.unwrap();

        let made = create_backup(&c, k, "cons").await;
        assert_eq!(made["programs_count"], 1, "{k:?} {made}");
        assert_eq!(made["counts"]["skipped_programs"], 1);
        assert_eq!(made["counts"]["adjusted_heads"], 1);
        assert_eq!(made["skipped"][0]["id"], v2["id"]);

        let fresh = embedded().await;
        restore(
            &client_with(&fresh, Some(location_of(&store))),
            fresh.kind,
            "cons",
        )
        .await;
        let fc = fresh.client();
        let latest = fc
            .get("/signatures/qa.Cons/versions/latest")
            .await
            .expect(k, "latest", 200);
        assert_eq!(
            latest["id"], v1["id"],
            "{k:?}: latest is the backed-up program"
        );
        fc.get("/signatures/qa.Cons/aliases/production")
            .await
            .expect_error(k, "alias to a program not in the backup", 404, "not_found");
        let versions = fc
            .get("/signatures/qa.Cons/versions")
            .await
            .expect(k, "versions", 200);
        assert_eq!(versions["versions"].as_array().unwrap().len(), 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_sliced_backup_resumes_from_its_cursor() {
    for store in backends().await {
        let k = store.kind;
        populate(&store, 30).await;
        let loc = location_of(&store);
        let mut opts = BackupOptions {
            name: Some("sliced".into()),
            page_size: 7,
            part_max_records: 10,
            deadline: Some(std::time::Instant::now()),
            ..Default::default()
        };
        let mut slices = 0;
        let manifest = loop {
            slices += 1;
            assert!(slices < 100, "{k:?}: never finished");
            let run = backup::create_backup(&OPERATOR, &store.storage, &loc, &opts)
                .await
                .unwrap();
            // Later runs name no backup: the unfinished one is resumed, no other is begun.
            opts.name = None;
            match run {
                BackupRun::Finished(m) => break m,
                BackupRun::Suspended { name, .. } => {
                    assert_eq!(name, "sliced");
                    let listed = backup::list_backups(&OPERATOR, &loc).await.unwrap();
                    assert_eq!(listed[0].status, "in_progress", "{k:?}");
                }
            }
        };
        assert!(slices > 3, "{k:?}: {slices} slices");
        assert_eq!(manifest.counts.programs, 30);
        assert_eq!(manifest.name, "sliced");
        assert_eq!(
            backup::list_backups(&OPERATOR, &loc).await.unwrap().len(),
            1,
            "{k:?}"
        );
        let fresh = embedded().await;
        restore(
            &client_with(&fresh, Some(loc.clone())),
            fresh.kind,
            "sliced",
        )
        .await;
        assert_same("sliced backup", &store, &fresh).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn corrupted_parts_blobs_and_newer_formats_are_refused_before_any_write() {
    for store in backends().await {
        let (c, k) = (store.client(), store.kind);
        populate(&store, 5).await;
        create_backup(&c, k, "good").await;
        let loc = location_of(&store);
        let manifest = backup::get_manifest(&OPERATOR, &loc, "good").await.unwrap();

        // Copy it as three damaged backups.
        for (name, damage) in [("bad-part", 0), ("bad-blob", 1), ("future", 2)] {
            let (metas, _) = loc.store.list("backups/good/", None, 1000).await.unwrap();
            for m in metas {
                let to = m.key.replace("backups/good/", &format!("backups/{name}/"));
                loc.store.copy(&m.key, &to).await.unwrap();
            }
            let mut m2 = manifest.clone();
            m2.name = name.into();
            match damage {
                0 => {
                    // Flip bytes of the last part (heads): checksums fail.
                    let part = m2.parts.last().unwrap();
                    let key = format!("backups/{name}/{}", part.key);
                    let mut bytes = loc.store.get(&key).await.unwrap().to_vec();
                    let mid = bytes.len() / 2;
                    bytes[mid] ^= 0xff;
                    let sha = dspy_storage_core::blob::codec::sha256_hex(&bytes);
                    loc.store.put(&key, Bytes::from(bytes), &sha).await.unwrap();
                }
                1 => {
                    // Point at a pool with a damaged blob.
                    m2.blob_prefix = "damaged-pool/".into();
                    let (pool, _) = loc.store.list(&loc.blob_prefix, None, 1000).await.unwrap();
                    for (i, b) in pool.iter().enumerate() {
                        let mut bytes = loc.store.get(&b.key).await.unwrap().to_vec();
                        if i == pool.len() - 1 {
                            bytes.truncate(bytes.len() - 3);
                        }
                        let to = b.key.replace(&loc.blob_prefix, "damaged-pool/");
                        let sha = dspy_storage_core::blob::codec::sha256_hex(&bytes);
                        loc.store.put(&to, Bytes::from(bytes), &sha).await.unwrap();
                    }
                }
                _ => m2.format_version = 99,
            }
            let text = serde_json::to_vec(&m2).unwrap();
            let sha = dspy_storage_core::blob::codec::sha256_hex(&text);
            loc.store
                .put(
                    &format!("backups/{name}/manifest.json"),
                    Bytes::from(text),
                    &sha,
                )
                .await
                .unwrap();
        }

        let fresh = embedded().await;
        let fc = client_with(&fresh, Some(loc.clone()));
        let e = fc
            .post_json("/backups/bad-part/restore", &json!({}))
            .await
            .expect_error(k, "corrupted part", 422, "integrity_error");
        assert!(
            e["error"]["message"].as_str().unwrap().contains("SHA-256"),
            "{e}"
        );
        fc.post_json("/backups/bad-blob/restore", &json!({}))
            .await
            .expect_error(k, "corrupted blob", 422, "integrity_error");
        let e = fc
            .post_json(
                "/backups/future/restore",
                &json!({"verify_compatibility": true}),
            )
            .await
            .expect_error(k, "newer format", 409, "conflict");
        assert!(
            e["error"]["message"]
                .as_str()
                .unwrap()
                .contains("format version 99"),
            "{e}"
        );
        fc.post_json(
            "/backups/good/restore",
            &json!({"verify_compatibility": "yes"}),
        )
        .await
        .expect_error(k, "bad body", 400, "invalid_request");
        assert!(
            dump(&fresh.storage).await.is_empty(),
            "{k:?}: nothing written"
        );
        let (blobs, _) = fresh
            .storage
            .blobs()
            .list("programs/", None, 10)
            .await
            .unwrap();
        assert!(blobs.is_empty(), "{k:?}: no blob written");

        // The good one restores.
        restore(&fc, fresh.kind, "good").await;
        assert_same("good after refusals", &store, &fresh).await;
    }
}

/// An item store that fails every data write after a budget of writes (the `STATUS` items, a
/// job's lease, still go through: the outage cuts the restore's data, not its release).
struct Failing {
    inner: Arc<dyn ItemStore>,
    budget: AtomicI64,
}

impl Failing {
    fn spend(&self) -> dspy_storage_core::Result<()> {
        if self.budget.fetch_sub(1, Ordering::SeqCst) <= 0 {
            return Err(Error::Unavailable("injected failure".into()));
        }
        Ok(())
    }
}

#[async_trait]
impl ItemStore for Failing {
    async fn get(&self, pk: &str, sk: &str) -> dspy_storage_core::Result<Option<Item>> {
        self.inner.get(pk, sk).await
    }
    async fn transact(&self, ops: Vec<WriteOp>) -> dspy_storage_core::Result<()> {
        let status = ops.iter().all(|op| {
            let (pk, sk) = op.key();
            keys::entity_kind(pk, sk) == EntityKind::Status
        });
        if !status {
            self.spend()?;
        }
        self.inner.transact(ops).await
    }
    async fn query(&self, q: &Query) -> dspy_storage_core::Result<Page<Item>> {
        self.inner.query(q).await
    }
    async fn batch_put(&self, items: Vec<Item>) -> dspy_storage_core::Result<()> {
        self.spend()?;
        self.inner.batch_put(items).await
    }
    async fn batch_put_once(&self, items: Vec<Item>) -> dspy_storage_core::Result<Vec<Item>> {
        self.spend()?;
        self.inner.batch_put_once(items).await
    }
    async fn scan(
        &self,
        start: Option<PageKey>,
        limit: usize,
    ) -> dspy_storage_core::Result<Page<Item>> {
        self.inner.scan(start, limit).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_interrupted_restore_run_again_completes_and_restoring_twice_is_harmless() {
    for store in backends().await {
        let (c, k) = (store.client(), store.kind);
        populate(&store, 120).await;
        create_backup(&c, k, "r").await;
        let loc = location_of(&store);
        let target = if k == Kind::Aws {
            dspy_storage_tests::aws().await.unwrap()
        } else {
            embedded().await
        };
        // Cut after the metric records (7 writes) and part of the programs (one transaction per
        // signature), by a budget of data writes.
        let failing = Storage::new(
            Arc::new(Failing {
                inner: target.storage.items().clone(),
                budget: AtomicI64::new(12),
            }),
            target.storage.blobs().clone(),
            target.storage.config().clone(),
            "failing",
        );
        let err = backup::restore(&OPERATOR, &failing, &loc, "r", &RestoreOptions::default())
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Unavailable(_)), "{err:?}");
        let partial = dump(&target.storage).await;
        let programs = program_ids(&partial).len();
        assert!(
            programs > 0 && programs < 120,
            "{k:?}: cut among the programs ({programs} written)"
        );
        // Every program written is whole: claimed, tagged, counted by its head.
        assert_whole(&partial);

        let tc = client_with(&target, Some(loc.clone()));
        let r = restore(&tc, k, "r").await;
        assert!(r["already_present_programs"].as_u64().unwrap() > 0, "{r}");
        assert_eq!(
            r["restored_programs"].as_u64().unwrap()
                + r["already_present_programs"].as_u64().unwrap(),
            120
        );
        assert_same("interrupted, then completed", &store, &target).await;

        let again = restore(&tc, k, "r").await;
        assert_eq!(again["restored_programs"], 0, "{again}");
        assert_eq!(again["already_present_programs"], 120, "{again}");
        assert_eq!(again["restored_signature_heads"], 0, "{again}");
        assert_eq!(again["merged_signature_heads"], 0, "{again}");
        assert_same("restored twice", &store, &target).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn restoring_into_a_live_store_merges() {
    for store in backends().await {
        let (c, k) = (store.client(), store.kind);
        let a1 = store_program(&c, k, "qa.Merge", 1).await; // 1.0.0
        store_program(&c, k, "qa.Merge", 2).await; // 1.0.1
        c.request(
            http::Method::PUT,
            "/signatures/qa.Merge/aliases/production",
            &[("content-type", "application/json")],
            serde_json::to_vec(&json!({"version": "1.0.0"})).unwrap(),
        )
        .await
        .expect(k, "alias", 200);
        create_backup(&c, k, "m").await;

        // A live store that has the same signature with other programs.
        let live = embedded().await;
        let lc = client_with(&live, Some(location_of(&store)));
        let l1 = store_program(&lc, live.kind, "qa.Merge", 10).await; // 1.0.0, another program
        for v in 0..3 {
            store_program(&lc, live.kind, "qa.Merge", 20 + v).await; // 1.0.1 .. 1.0.3
        }
        let r = restore(&lc, live.kind, "m").await;
        assert_eq!(r["conflicts"], 2, "{k:?} {r}");
        assert_eq!(r["restored_programs"], 0, "{r}");
        assert_eq!(r["merged_signature_heads"], 0, "{r}: nothing to add");
        // The live versions are kept; the backup's conflicting programs are not restored.
        let got = lc
            .get("/signatures/qa.Merge/versions/1.0.0")
            .await
            .expect(k, "v", 200);
        assert_eq!(got["id"], l1["id"]);
        lc.get(&format!("/programs/{}", a1["id"].as_str().unwrap()))
            .await
            .expect_error(k, "conflicting program", 404, "not_found");

        // A signature the live store lacks comes in whole.
        store_program(&c, k, "qa.Other", 3).await;
        create_backup(&c, k, "m2").await;
        let r = restore(&lc, live.kind, "m2").await;
        assert_eq!(r["restored_programs"], 1, "{r}");
        assert_eq!(r["restored_signature_heads"], 1, "{r}");
        lc.get("/signatures/qa.Other/versions/latest")
            .await
            .expect(k, "restored signature", 200);
        let versions = lc
            .get("/signatures/qa.Merge/versions")
            .await
            .expect(k, "versions", 200);
        assert_eq!(versions["versions"].as_array().unwrap().len(), 4);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn multipart_uploads_on_both_blob_stores() {
    for store in backends().await {
        let k = store.kind;
        let blobs = store.storage.blobs();
        let part1: Vec<u8> = (0..MIN_MULTIPART_PART).map(|i| (i % 251) as u8).collect();
        let part2 = b"the last part may be small".to_vec();
        let mut up = blobs
            .start_multipart("backups/mp/parts/x.bin")
            .await
            .unwrap()
            .expect("multipart capability");
        up.write_part(Bytes::from(part1.clone())).await.unwrap();
        assert!(
            !blobs.exists("backups/mp/parts/x.bin").await.unwrap(),
            "{k:?}: invisible until complete"
        );
        up.write_part(Bytes::from(part2.clone())).await.unwrap();
        up.complete().await.unwrap();
        let got = blobs.get("backups/mp/parts/x.bin").await.unwrap();
        assert_eq!(got.len(), part1.len() + part2.len(), "{k:?}");
        assert_eq!(&got[..part1.len()], &part1[..]);
        assert_eq!(&got[part1.len()..], &part2[..]);

        let mut up = blobs
            .start_multipart("backups/mp/y.bin")
            .await
            .unwrap()
            .unwrap();
        up.write_part(Bytes::from(part1.clone())).await.unwrap();
        up.abort().await.unwrap();
        assert!(!blobs.exists("backups/mp/y.bin").await.unwrap(), "{k:?}");
        let (left, _) = blobs.list("backups/mp/", None, 10).await.unwrap();
        assert_eq!(left.len(), 1, "{k:?}: {left:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn large_parts_go_up_in_multipart_chunks() {
    for store in backends().await {
        let k = store.kind;
        // 4,000 records of random text make a part above the 5 MiB chunk once compressed.
        dspy_storage_tests::put_noise_items(&store, 4000, 2000).await;
        let loc = location_of(&store);
        let opts = BackupOptions {
            name: Some("big".into()),
            part_max_records: 10_000,
            chunk_bytes: MIN_MULTIPART_PART,
            ..Default::default()
        };
        let BackupRun::Finished(m) = backup::create_backup(&OPERATOR, &store.storage, &loc, &opts)
            .await
            .unwrap()
        else {
            panic!("not finished")
        };
        let part = m
            .parts
            .iter()
            .find(|p| p.kind == EntityKind::Metric)
            .unwrap();
        assert!(
            part.bytes > MIN_MULTIPART_PART as u64,
            "{k:?}: {}",
            part.bytes
        );
        assert_eq!(part.records, 4000);
        let fresh = embedded().await;
        let r = backup::restore(
            &OPERATOR,
            &fresh.storage,
            &loc,
            "big",
            &RestoreOptions::default(),
        )
        .await
        .unwrap();
        assert_eq!(r.restored_metrics, 4000);
        assert_eq!(
            dump(&fresh.storage).await,
            dump(&store.storage).await,
            "{k:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_scheduled_job_backs_up_with_its_retain_count() {
    let store = embedded().await;
    populate(&store, 3).await;
    let mut state = AppState::new(store.storage.clone());
    state.backup_retain = 1;
    for _ in 0..2 {
        let summary = dspy_storage_functions::jobs::backup_job(state.clone(), None).await;
        assert_eq!(summary["status"], "complete", "{summary}");
        assert_eq!(summary["counts"]["programs"], 3, "{summary}");
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let list = backup::list_backups(&OPERATOR, &location_of(&store))
        .await
        .unwrap();
    assert_eq!(list.len(), 1, "retain 1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_restores_at_once_write_each_program_once() {
    for store in backends().await {
        let (c, k) = (store.client(), store.kind);
        populate(&store, 60).await;
        create_backup(&c, k, "twice").await;
        let target = if k == Kind::Aws {
            dspy_storage_tests::aws().await.unwrap()
        } else {
            embedded().await
        };
        let tc = client_with(&target, Some(location_of(&store)));
        // One restore at a time (a lease): the other is refused while the first runs, or finds
        // everything present if it starts after.
        let run = || {
            let tc = tc.clone();
            tokio::spawn(async move {
                tc.post_json(
                    "/backups/twice/restore",
                    &json!({"verify_compatibility": true}),
                )
                .await
            })
        };
        let (a, b) = (run(), run());
        let (a, b) = (a.await.unwrap(), b.await.unwrap());
        let mut restored = 0;
        for answer in [&a, &b] {
            match answer.status.as_u16() {
                200 => restored += answer.json()["restored_programs"].as_u64().unwrap(),
                _ => {
                    let e = answer.assert_error(409, "conflict");
                    assert!(
                        e["error"]["message"]
                            .as_str()
                            .unwrap()
                            .contains("another restore is running"),
                        "{k:?}: {e}"
                    );
                }
            }
        }
        assert!(
            a.status == 200 || b.status == 200,
            "{k:?}: one of them restores"
        );
        println!("{k:?}: answers {} and {}", a.status, b.status);
        assert_eq!(restored, 60, "{k:?}: each program written once");
        assert_whole(&dump(&target.storage).await);
        assert_same("two restores at once", &store, &target).await;
    }
}

/// Backup and restore cost requests in proportion to what changed (AWS path, counted by the SDK
/// interceptor): what the blob pool holds is one listing (no request per blob), a head is
/// checked against the backup's own programs (no read per signature), an incremental backup of
/// an unchanged store costs at most 20 requests besides its scan pages, and a restore at most 5
/// requests per program (batch reads, one transaction per signature).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn backup_and_restore_cost_requests_in_proportion_to_change() {
    let (Some(source), Some(target)) = (
        dspy_storage_tests::aws().await,
        dspy_storage_tests::aws().await,
    ) else {
        eprintln!("backup request counts: no AWS endpoint configured; skipped");
        return;
    };
    const N: u64 = 60;
    populate(&source, N as usize).await;
    let loc = location_of(&source);
    let counter = source.counter.clone().expect("AWS counter");
    let target_counter = target.counter.clone().expect("AWS counter");
    let backup = |name: &str| {
        let opts = BackupOptions {
            name: Some(name.into()),
            ..Default::default()
        };
        let (storage, loc) = (source.storage.clone(), loc.clone());
        async move {
            match backup::create_backup(&OPERATOR, &storage, &loc, &opts)
                .await
                .expect("backup")
            {
                BackupRun::Finished(m) => m,
                other => panic!("not finished: {other:?}"),
            }
        }
    };

    counter.reset();
    let first = backup("first").await;
    println!("first backup: {:?}", counter.snapshot());
    assert_eq!(first.counts.programs, N);
    assert_eq!(first.counts.blobs_copied, N);
    assert_eq!(counter.count("S3.HeadObject"), 1, "only the backup's name");
    assert_eq!(counter.count("DynamoDB.Query"), 0, "no read per signature");
    // The pool listing, and the listing of backups that decides nothing is pruned.
    assert_eq!(counter.count("S3.ListObjectsV2"), 2);

    counter.reset();
    let second = backup("second").await;
    let snapshot = counter.snapshot();
    println!("incremental backup of an unchanged store: {snapshot:?}");
    assert_eq!(second.counts.programs, N);
    assert_eq!(second.counts.blobs_copied, 0, "nothing copied again");
    let scans = counter.count("DynamoDB.Scan");
    assert!(
        counter.total() - scans <= 20,
        "an unchanged store: {} requests besides {scans} scan pages: {snapshot:?}",
        counter.total() - scans
    );
    assert_eq!(counter.count("S3.HeadObject"), 1, "{snapshot:?}");
    assert_eq!(counter.count("DynamoDB.Query"), 0, "{snapshot:?}");
    let program_parts = second
        .parts
        .iter()
        .filter(|p| p.kind == EntityKind::Program)
        .count() as u64;
    // The checkpoint (absent) and the program parts (the backup's ids); no blob read.
    assert_eq!(
        counter.count("S3.GetObject"),
        1 + program_parts,
        "{snapshot:?}"
    );

    counter.reset();
    target_counter.reset();
    let report = backup::restore(
        &OPERATOR,
        &target.storage,
        &loc,
        "second",
        &RestoreOptions::default(),
    )
    .await
    .expect("restore");
    let (read, written) = (counter.snapshot(), target_counter.snapshot());
    println!("restore of {N} programs: backup store {read:?}, target {written:?}");
    assert_eq!(report.restored_programs, N);
    let total = counter.total() + target_counter.total();
    assert!(
        total <= 5 * N,
        "restore: {total} requests for {N} programs ({:.2} each)",
        total as f64 / N as f64
    );
    // Batch reads of what the target has (60 records, 60 claims, 10 heads: 2 reads of 100 keys)
    // and of the heads with aliases (1); no per-program item read, no range read.
    assert_eq!(
        target_counter.count("DynamoDB.BatchGetItem"),
        3,
        "{written:?}"
    );
    assert_eq!(target_counter.count("DynamoDB.Query"), 0, "{written:?}");
    assert!(target_counter.count("DynamoDB.GetItem") <= 1, "{written:?}");
    // One transaction per signature, and the lease's two.
    assert_eq!(
        target_counter.count("DynamoDB.TransactWriteItems"),
        10 + 2,
        "{written:?}"
    );
    assert_eq!(target_counter.count("S3.PutObject"), N, "{written:?}");
    assert_same("restored", &source, &target).await;
}

/// A backup made before metric blocks (its metric part holds one item per record) restores
/// after the change: the records are written as blocks (their ids, times and values kept), the
/// history reads back the same, and restoring it a second time adds nothing.
#[tokio::test]
async fn a_backup_of_per_record_metric_items_restores_as_blocks() {
    use chrono::{Duration, Utc};
    for store in backends().await {
        let k = store.kind;
        let old = dspy_storage_tests::before_metric_blocks(&store).await;
        let program = serde_json::value::RawValue::from_string(r#"{"p": 1}"#.to_owned()).unwrap();
        let meta = dspy_storage_core::domain::NewMetadata::parse(
            json!({"signature": "pre.Blocks"}),
            Utc::now(),
        )
        .unwrap();
        let stored = old
            .store(&OPERATOR, &program, meta, None)
            .await
            .unwrap()
            .stored;
        let now = Utc::now();
        let records: Vec<_> = (0..40)
            .map(|i| {
                (
                    now - Duration::days(45) + Duration::hours(25 * i),
                    json!({"accuracy": i as f64 / 40.0, "latency": 1.0 + i as f64}),
                )
            })
            .collect();
        let written =
            dspy_storage_tests::put_per_record_layout(&old, &stored.id, Utc::now(), &records).await;
        async fn history(
            s: &Storage,
            id: &dspy_storage_core::domain::ProgramId,
        ) -> Vec<dspy_storage_core::tracking::metrics::MetricRecord> {
            s.metric_history(&OPERATOR, id, None, None, Some(1000), None)
                .await
                .unwrap()
                .records
        }
        let before = history(&old, &stored.id).await;
        assert_eq!(before, written, "{k:?}: the per-record items read back");
        let loc = location_of(&store);
        let opts = BackupOptions {
            name: Some("pre-blocks".into()),
            ..Default::default()
        };
        let BackupRun::Finished(_) = backup::create_backup(&OPERATOR, &old, &loc, &opts)
            .await
            .unwrap()
        else {
            panic!("{k:?}: not finished")
        };
        let fresh = embedded().await;
        for round in 0..2 {
            let r = backup::restore(
                &OPERATOR,
                &fresh.storage,
                &loc,
                "pre-blocks",
                &RestoreOptions::default(),
            )
            .await
            .unwrap();
            assert!(r.restored_metrics > 0, "{k:?}");
            let after = history(&fresh.storage, &stored.id).await;
            assert_eq!(after, before, "{k:?}: restore {round}: the same history");
        }
        let items = dump(&fresh.storage).await;
        assert!(
            !items
                .iter()
                .any(dspy_storage_core::tracking::migrate::is_legacy_record),
            "{k:?}: restored as blocks"
        );
        let trend = fresh
            .storage
            .program_trends(&OPERATOR, &stored.id, Some(90))
            .await
            .unwrap();
        assert_eq!(trend.trends.records, 40, "{k:?}");
    }
}
