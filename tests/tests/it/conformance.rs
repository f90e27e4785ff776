//! One conformance suite, run against every backend: the embedded one always, the AWS one
//! (DynamoDB + S3) when an endpoint is configured. Each test asserts the same behaviour on each
//! backend and names the backend in every failure message.
//!
//! Covered: the `Storage` service on top of the backend primitives (round trips, versions, cursors,
//! idempotency, integrity, encryption, compression, concurrency). The primitives themselves
//! (`ItemStore`, `BlobStore`) have their own suite in the core, `backend::conformance`, which both
//! backends run.

use dspy_storage_core::access::OPERATOR;
use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;

use base64::Engine;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use dspy_storage_core::backend::{BlobStore, Index, PageKey};
use dspy_storage_core::blob::codec::{sha256_hex, Compression};
use dspy_storage_core::config::StorageConfig;
use dspy_storage_core::domain::{
    NewMetadata, ProgramId, Project, Signature, Version, VersionSelector,
};
use dspy_storage_core::model::keys;
use dspy_storage_core::model::record::VersionClaim;
use dspy_storage_core::open;
use dspy_storage_core::paging::encode_cursor;
use dspy_storage_core::storage::{Idempotency, Storage, StoreOutcome};
use dspy_storage_core::{Error, Result};
use dspy_storage_tests::{
    backends, backends_with, shared_program, Kind, TestStore, SHARED_PROGRAMS,
};
use serde_json::{json, value::RawValue, Value};

// ----- helpers -----------------------------------------------------------------------------------

async fn put_blob(blobs: &dyn BlobStore, key: &str, bytes: &[u8]) {
    blobs
        .put(key, Bytes::copy_from_slice(bytes), &sha256_hex(bytes))
        .await
        .unwrap_or_else(|e| panic!("put {key}: {e:?}"));
}

fn who(ts: &TestStore) -> String {
    format!("[{:?}]", ts.kind)
}

fn raw(text: &str) -> Box<RawValue> {
    RawValue::from_string(text.to_owned()).expect("valid JSON")
}

fn meta(value: Value) -> NewMetadata {
    NewMetadata::parse(value, Utc::now()).expect("valid metadata")
}

fn sig(name: &str) -> Signature {
    Signature::parse(name).expect("valid signature")
}

fn ver(v: &str) -> Version {
    Version::parse(v).expect("valid version")
}

fn default_project() -> Project {
    Project::default_project()
}

async fn store(
    storage: &Storage,
    program: &str,
    metadata: Value,
    idempotency: Option<Idempotency>,
) -> Result<StoreOutcome> {
    storage
        .store(&OPERATOR, &raw(program), meta(metadata), idempotency)
        .await
}

/// Stores a small program, expecting success; returns the answer.
async fn store_ok(ts: &TestStore, program: &str, metadata: Value) -> StoreOutcome {
    store(&ts.storage, program, metadata.clone(), None)
        .await
        .unwrap_or_else(|e| panic!("{} store of {metadata} failed: {e:?}", who(ts)))
}

fn expect_err<T: std::fmt::Debug>(
    ctx: &str,
    result: Result<T>,
    matches: impl Fn(&Error) -> bool,
    what: &str,
) {
    match result {
        Err(e) if matches(&e) => {}
        other => panic!("{ctx}: expected {what}, got {other:?}"),
    }
}

/// Every blob under `programs/`, following the listing's pages.
async fn program_blobs(storage: &Storage) -> Vec<String> {
    let mut keys = Vec::new();
    let mut start = None;
    for _ in 0..1000 {
        let (page, next) = storage
            .blobs()
            .list("programs/", start, 1000)
            .await
            .expect("list blobs");
        keys.extend(page.into_iter().map(|m| m.key));
        match next {
            Some(n) => start = Some(n),
            None => return keys,
        }
    }
    panic!("blob listing did not end");
}

/// Every version of a signature, following `next_cursor`; also returns the page sizes.
async fn all_versions(
    storage: &Storage,
    project: &Project,
    signature: &Signature,
    limit: Option<usize>,
) -> Result<(Vec<VersionClaim>, Vec<usize>)> {
    let mut out = Vec::new();
    let mut pages = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..1000 {
        let page = storage
            .list_versions(&OPERATOR, project, signature, limit, cursor.as_deref())
            .await?;
        pages.push(page.items.len());
        out.extend(page.items);
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => return Ok((out, pages)),
        }
    }
    panic!("version listing did not end");
}

fn version_strings(claims: &[VersionClaim]) -> Vec<String> {
    claims.iter().map(|c| c.version.to_string()).collect()
}

/// Opens a second `Storage` over the same data (same directory, or same table and bucket) with
/// another configuration.
async fn reopen(ts: &TestStore, config: StorageConfig) -> Storage {
    match ts.kind {
        Kind::Embedded => open::embedded(
            ts.data_dir.as_ref().expect("embedded data dir").path(),
            config,
        )
        .expect("reopen embedded"),
        Kind::Aws => open::aws(
            &dspy_storage_core::backend::aws::sdk_config().await,
            ts.location.as_ref().expect("AWS location"),
            config,
            false,
            None,
        )
        .await
        .expect("reopen AWS"),
    }
}

/// Runs one async closure per backend, in turn.
async fn for_each<F, Fut>(stores: Vec<TestStore>, f: F)
where
    F: Fn(TestStore) -> Fut,
    Fut: Future<Output = ()>,
{
    assert!(!stores.is_empty(), "no backend to test");
    for ts in stores {
        f(ts).await;
    }
}

fn small_program(n: usize) -> String {
    format!(r#"{{"z_last_key_first": {n}, "a": [1, 2, {{"b": "text {n}"}}], "m": null}}"#)
}

// ----- ItemStore -----------------------------------------------------------------------------------
// ----- Storage ---------------------------------------------------------------------------------------

#[tokio::test]
async fn storage_round_trips_real_programs() {
    for_each(backends().await, |ts| async move {
        let w = who(&ts);
        for (n, name) in SHARED_PROGRAMS.iter().enumerate() {
            let text = shared_program(name);
            let program = raw(&text);
            let expected = program.get().to_owned();
            assert_eq!(expected, text.trim(), "fixture {name} is used as is");
            let signature = format!("Real{n}.predict");
            let metadata = json!({
                "signature": signature,
                "optimization_method": "miprov2",
                "performance": {"score": 0.87, "accuracy": 0.9},
                "tags": ["prod", "real"],
                "zeta_custom": {"nested": [3, 2, 1]},
                "alpha_custom": "kept",
            });
            let out = ts
                .storage
                .store(&OPERATOR, &program, meta(metadata.clone()), None)
                .await
                .unwrap_or_else(|e| panic!("{w} store {name}: {e:?}"));
            assert!(!out.replayed, "{w}");
            let stored = &out.stored;
            assert_eq!(stored.version.to_string(), "1.0.0", "{w} {name}");
            assert_eq!(stored.signature.as_str(), signature, "{w}");
            assert_eq!(stored.project, default_project(), "{w}");
            assert_eq!(stored.size, expected.len() as u64, "{w} size");
            assert_eq!(stored.sha256, sha256_hex(expected.as_bytes()), "{w} sha256");

            let loaded = ts
                .storage
                .get_program(&OPERATOR, &stored.id)
                .await
                .unwrap_or_else(|e| panic!("{w} load {name}: {e:?}"));
            assert!(
                loaded.program.get() == expected,
                "{w} {name}: the loaded program is not byte-identical"
            );
            assert_eq!(
                sha256_hex(loaded.program.get().as_bytes()),
                stored.sha256,
                "{w}"
            );
            let r = &loaded.record;
            assert_eq!(r.id, stored.id, "{w}");
            assert_eq!(r.blob.sha256, stored.sha256, "{w}");
            assert_eq!(r.blob.size, stored.size, "{w}");
            assert_eq!(r.primary_score, Some(0.87), "{w}");
            assert_eq!(r.optimization_method.as_deref(), Some("miprov2"), "{w}");
            assert_eq!(r.tags, vec!["prod".to_owned(), "real".to_owned()], "{w}");
            assert_eq!(r.previous_version, None, "{w}");
            assert_eq!(r.metadata["zeta_custom"], metadata["zeta_custom"], "{w}");
            assert_eq!(r.metadata["alpha_custom"], "kept", "{w}");
            assert_eq!(r.metadata["version"], "1.0.0", "{w} resolved version");
            assert_eq!(r.metadata["project"], "default", "{w} resolved project");
            // Custom metadata keys keep the client's order.
            let order: Vec<&str> = r.metadata.keys().map(String::as_str).collect();
            let zeta = order.iter().position(|k| *k == "zeta_custom").unwrap();
            let alpha = order.iter().position(|k| *k == "alpha_custom").unwrap();
            assert!(zeta < alpha, "{w} metadata key order {order:?}");
            assert_eq!(
                stored.created_at,
                dspy_storage_core::domain::format_time(&r.created_at),
                "{w}"
            );
            assert_eq!(
                ts.storage.get_record(&OPERATOR, &stored.id).await.unwrap(),
                *r,
                "{w}"
            );

            for selector in [
                VersionSelector::Latest,
                VersionSelector::Exact(ver("1.0.0")),
            ] {
                let by_version = ts
                    .storage
                    .get_version(&OPERATOR, &default_project(), &sig(&signature), &selector)
                    .await
                    .unwrap_or_else(|e| panic!("{w} {selector:?}: {e:?}"));
                assert_eq!(by_version.record.id, stored.id, "{w} {selector:?}");
                assert!(
                    by_version.program.get() == expected,
                    "{w} {selector:?} bytes"
                );
            }
        }
        assert_eq!(
            program_blobs(&ts.storage).await.len(),
            2,
            "{w} one blob per program"
        );
    })
    .await;
}

#[tokio::test]
async fn storage_explicit_version_taken_leaves_nothing() {
    for_each(backends().await, |ts| async move {
        let w = who(&ts);
        let (project, signature) = (default_project(), sig("Taken"));
        let first = store_ok(
            &ts,
            &small_program(1),
            json!({"signature": "Taken", "version": "1.2.0"}),
        )
        .await;
        assert_eq!(first.stored.version, ver("1.2.0"), "{w}");
        assert_eq!(program_blobs(&ts.storage).await.len(), 1, "{w}");

        for attempt in 0..2 {
            expect_err(
                &format!("{w} storing a taken version (attempt {attempt})"),
                store(
                    &ts.storage,
                    &small_program(2),
                    json!({"signature": "Taken", "version": "1.2.0", "tags": ["t"]}),
                    None,
                )
                .await,
                |e| matches!(e, Error::AlreadyExists(_)),
                "AlreadyExists",
            );
        }
        let blobs = program_blobs(&ts.storage).await;
        assert_eq!(
            blobs,
            vec![first_blob_key(&ts, &first).await],
            "{w} no blob left behind"
        );

        let loaded = ts
            .storage
            .get_version(
                &OPERATOR,
                &project,
                &signature,
                &VersionSelector::Exact(ver("1.2.0")),
            )
            .await
            .unwrap();
        assert_eq!(loaded.record.id, first.stored.id, "{w} the first one stays");
        assert_eq!(loaded.program.get(), small_program(1), "{w}");
        let head = ts
            .storage
            .get_head(&OPERATOR, &project, &signature)
            .await
            .unwrap();
        assert_eq!(head.versions, 1, "{w} head counts");
        assert_eq!(head.latest_id, first.stored.id, "{w}");
        let (versions, _) = all_versions(&ts.storage, &project, &signature, None)
            .await
            .unwrap();
        assert_eq!(version_strings(&versions), vec!["1.2.0"], "{w}");

        // The same version in another signature or project is free; an auto version follows.
        store_ok(
            &ts,
            &small_program(3),
            json!({"signature": "Taken2", "version": "1.2.0"}),
        )
        .await;
        store_ok(
            &ts,
            &small_program(4),
            json!({"signature": "Taken", "version": "1.2.0", "project": "other"}),
        )
        .await;
        let next = store_ok(&ts, &small_program(5), json!({"signature": "Taken"})).await;
        assert_eq!(next.stored.version, ver("1.2.1"), "{w} auto after explicit");
        assert_eq!(program_blobs(&ts.storage).await.len(), 4, "{w}");
    })
    .await;
}

async fn first_blob_key(ts: &TestStore, out: &StoreOutcome) -> String {
    ts.storage
        .get_record(&OPERATOR, &out.stored.id)
        .await
        .unwrap()
        .blob_key
}

#[tokio::test]
async fn storage_auto_versions_and_previous_version() {
    for_each(backends().await, |ts| async move {
        let w = who(&ts);
        let (project, signature) = (default_project(), sig("Auto"));
        let mut ids = Vec::new();
        for (i, want) in ["1.0.0", "1.0.1", "1.0.2"].iter().enumerate() {
            let out = store_ok(
                &ts,
                &small_program(i),
                json!({"signature": "Auto", "performance": i as f64 / 10.0}),
            )
            .await;
            assert_eq!(
                out.stored.version.to_string(),
                *want,
                "{w} auto version {i}"
            );
            ids.push(out.stored.id);
        }
        let prev: Vec<Option<String>> = {
            let mut v = Vec::new();
            for id in &ids {
                let r = ts.storage.get_record(&OPERATOR, id).await.unwrap();
                v.push(r.previous_version.map(|p| p.to_string()));
            }
            v
        };
        assert_eq!(
            prev,
            vec![None, Some("1.0.0".to_owned()), Some("1.0.1".to_owned())],
            "{w} previous_version"
        );
        let head = ts
            .storage
            .get_head(&OPERATOR, &project, &signature)
            .await
            .unwrap();
        assert_eq!(head.latest_version, ver("1.0.2"), "{w}");
        assert_eq!(head.latest_id, ids[2], "{w}");
        assert_eq!(head.versions, 3, "{w}");
        assert_eq!(head.best_performance, Some(0.2), "{w}");
        for (i, v) in ["1.0.0", "1.0.1", "1.0.2"].iter().enumerate() {
            let id = ts
                .storage
                .resolve_version(
                    &OPERATOR,
                    &project,
                    &signature,
                    &VersionSelector::Exact(ver(v)),
                )
                .await
                .unwrap();
            assert_eq!(id, ids[i], "{w} resolve {v}");
        }
        let latest = ts
            .storage
            .get_version(&OPERATOR, &project, &signature, &VersionSelector::Latest)
            .await
            .unwrap();
        assert_eq!(latest.program.get(), small_program(2), "{w} latest program");
        let (versions, _) = all_versions(&ts.storage, &project, &signature, None)
            .await
            .unwrap();
        let claim_ids: Vec<ProgramId> = versions.iter().map(|c| c.id).collect();
        assert_eq!(claim_ids, ids, "{w} claims point at the programs");
    })
    .await;
}

#[tokio::test]
async fn storage_projects_are_independent() {
    for_each(backends().await, |ts| async move {
        let w = who(&ts);
        let s = sig("Shared");
        let (alpha, beta) = (
            Project::parse("alpha").unwrap(),
            Project::parse("beta").unwrap(),
        );
        store_ok(
            &ts,
            &small_program(1),
            json!({"signature": "Shared", "project": "alpha"}),
        )
        .await;
        store_ok(
            &ts,
            &small_program(2),
            json!({"signature": "Shared", "project": "alpha"}),
        )
        .await;
        let b = store_ok(
            &ts,
            &small_program(3),
            json!({"signature": "Shared", "project": "beta"}),
        )
        .await;
        assert_eq!(
            b.stored.version,
            ver("1.0.0"),
            "{w} beta has its own history"
        );
        assert_eq!(b.stored.project, beta, "{w}");
        let (va, _) = all_versions(&ts.storage, &alpha, &s, None).await.unwrap();
        let (vb, _) = all_versions(&ts.storage, &beta, &s, None).await.unwrap();
        assert_eq!(version_strings(&va), vec!["1.0.0", "1.0.1"], "{w}");
        assert_eq!(version_strings(&vb), vec!["1.0.0"], "{w}");
        let lb = ts
            .storage
            .get_version(&OPERATOR, &beta, &s, &VersionSelector::Latest)
            .await
            .unwrap();
        assert_eq!(lb.program.get(), small_program(3), "{w}");
        expect_err(
            &format!("{w} the default project has no such signature"),
            ts.storage.get_head(&OPERATOR, &default_project(), &s).await,
            |e| matches!(e, Error::NotFound(_)),
            "NotFound",
        );
    })
    .await;
}

#[tokio::test]
async fn storage_prerelease_ordering_and_latest() {
    for_each(backends().await, |ts| async move {
        let w = who(&ts);
        let (project, signature) = (default_project(), sig("Pre"));
        let mut ids = BTreeMap::new();
        for (i, v) in ["2.0.0", "1.10.0", "1.9.0", "2.0.0-rc.1", "1.0.0"]
            .iter()
            .enumerate()
        {
            let out = store_ok(
                &ts,
                &small_program(i),
                json!({"signature": "Pre", "version": v}),
            )
            .await;
            assert_eq!(out.stored.version.to_string(), *v, "{w}");
            ids.insert(v.to_string(), (out.stored.id, i));
        }
        let (versions, _) = all_versions(&ts.storage, &project, &signature, None)
            .await
            .unwrap();
        assert_eq!(
            version_strings(&versions),
            vec!["1.0.0", "1.9.0", "1.10.0", "2.0.0-rc.1", "2.0.0"],
            "{w} semantic-version order"
        );
        for c in &versions {
            assert_eq!(
                c.id,
                ids[&c.version.to_string()].0,
                "{w} claim of {}",
                c.version
            );
        }
        // latest is the highest version (stored first), not the newest (1.0.0).
        let head = ts
            .storage
            .get_head(&OPERATOR, &project, &signature)
            .await
            .unwrap();
        assert_eq!(head.latest_version, ver("2.0.0"), "{w} latest");
        assert_eq!(head.latest_id, ids["2.0.0"].0, "{w}");
        assert_eq!(head.versions, 5, "{w}");
        let latest = ts
            .storage
            .get_version(&OPERATOR, &project, &signature, &VersionSelector::Latest)
            .await
            .unwrap();
        assert_eq!(latest.record.version, ver("2.0.0"), "{w}");
        assert_eq!(latest.program.get(), small_program(ids["2.0.0"].1), "{w}");
        let rc = ts
            .storage
            .get_version(
                &OPERATOR,
                &project,
                &signature,
                &VersionSelector::Exact(ver("2.0.0-rc.1")),
            )
            .await
            .unwrap();
        assert_eq!(rc.program.get(), small_program(3), "{w}");
        // previous_version is the latest at the time of each store.
        assert_eq!(rc.record.previous_version, Some(ver("2.0.0")), "{w}");
        // The next auto version follows the highest one.
        let next = store_ok(&ts, &small_program(9), json!({"signature": "Pre"})).await;
        assert_eq!(next.stored.version, ver("2.0.1"), "{w} auto after 2.0.0");
    })
    .await;
}

#[tokio::test]
async fn storage_list_versions_paging() {
    for_each(backends().await, |ts| async move {
        let w = who(&ts);
        let (project, signature) = (default_project(), sig("Paged"));
        let mut want = Vec::new();
        for i in 0..7 {
            let out = store_ok(&ts, &small_program(i), json!({"signature": "Paged"})).await;
            want.push(out.stored.version.to_string());
        }
        let first = ts
            .storage
            .list_versions(&OPERATOR, &project, &signature, None, None)
            .await
            .unwrap();
        assert_eq!(version_strings(&first.items), want, "{w} default page");
        assert!(first.next_cursor.is_none(), "{w} one page holds 7 versions");
        for limit in [1usize, 2, 3, 6, 7, 8] {
            let (got, pages) = all_versions(&ts.storage, &project, &signature, Some(limit))
                .await
                .unwrap_or_else(|e| panic!("{w} limit {limit}: {e:?}"));
            assert_eq!(
                version_strings(&got),
                want,
                "{w} limit {limit}: every version once"
            );
            assert!(
                pages.iter().all(|n| *n <= limit),
                "{w} limit {limit}: {pages:?}"
            );
            if limit < 7 {
                assert!(pages.len() >= 7usize.div_ceil(limit), "{w} {pages:?}");
            }
        }
        for bad in [0usize, 1001] {
            expect_err(
                &format!("{w} limit {bad}"),
                ts.storage
                    .list_versions(&OPERATOR, &project, &signature, Some(bad), None)
                    .await,
                |e| matches!(e, Error::InvalidInput { .. }),
                "InvalidInput",
            );
        }
    })
    .await;
}

#[tokio::test]
async fn storage_forged_cursors_are_refused() {
    for_each(backends().await, |ts| async move {
        let w = who(&ts);
        let project = default_project();
        for i in 0..3 {
            store_ok(&ts, &small_program(i), json!({"signature": "Mine"})).await;
            store_ok(&ts, &small_program(i), json!({"signature": "Theirs"})).await;
        }
        let (mine, theirs) = (sig("Mine"), sig("Theirs"));
        let page = ts
            .storage
            .list_versions(&OPERATOR, &project, &mine, Some(1), None)
            .await
            .unwrap();
        let good = page.next_cursor.expect("a next cursor");
        let rest = ts
            .storage
            .list_versions(&OPERATOR, &project, &mine, Some(10), Some(&good))
            .await
            .unwrap_or_else(|e| panic!("{w} own cursor: {e:?}"));
        assert_eq!(version_strings(&rest.items), vec!["1.0.1", "1.0.2"], "{w}");

        let theirs_cursor = ts
            .storage
            .list_versions(&OPERATOR, &project, &theirs, Some(1), None)
            .await
            .unwrap()
            .next_cursor
            .expect("a next cursor");
        let b64 = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
        let random: Vec<u8> = (0..4)
            .flat_map(|_| *uuid::Uuid::now_v7().as_bytes())
            .collect();
        let mine_pk = keys::signature_pk(&project, &mine);
        let theirs_pk = keys::signature_pk(&project, &theirs);
        let key = |pk: &str| -> PageKey {
            [
                ("PK", pk),
                (
                    "SK",
                    "VER#00000000000000000001.00000000000000000000.00000000000000000000~",
                ),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect()
        };
        let mut extra = key(&mine_pk);
        extra.insert("GSI1PK".into(), "x".into());
        let forged: Vec<(&str, String)> = vec![
            ("random base64", b64(&random)),
            ("not base64", "%%% not a cursor %%%".into()),
            ("empty", String::new()),
            ("JSON of another shape", b64(br#"{"foo":"bar"}"#)),
            ("another signature's cursor", theirs_cursor.clone()),
            (
                "own partition, key of another signature",
                encode_cursor(
                    ts.storage.cursor_keys(),
                    &OPERATOR,
                    Index::Table,
                    &mine_pk,
                    &key(&theirs_pk),
                ),
            ),
            (
                "another partition with its own key",
                encode_cursor(
                    ts.storage.cursor_keys(),
                    &OPERATOR,
                    Index::Table,
                    &theirs_pk,
                    &key(&theirs_pk),
                ),
            ),
            (
                "another index",
                encode_cursor(
                    ts.storage.cursor_keys(),
                    &OPERATOR,
                    Index::Gsi1,
                    &mine_pk,
                    &key(&mine_pk),
                ),
            ),
            (
                "extra key attributes",
                encode_cursor(
                    ts.storage.cursor_keys(),
                    &OPERATOR,
                    Index::Table,
                    &mine_pk,
                    &extra,
                ),
            ),
            ("oversized", b64(&vec![b'a'; 5000])),
        ];
        for (what, cursor) in forged {
            let result = ts
                .storage
                .list_versions(&OPERATOR, &project, &mine, Some(10), Some(&cursor))
                .await;
            match result {
                Err(Error::InvalidInput { .. }) => {}
                other => panic!("{w} {what}: expected InvalidInput, got {other:?}"),
            }
        }
        // The other listing's own cursor works there, so it was refused only here.
        let rest_theirs = ts
            .storage
            .list_versions(&OPERATOR, &project, &theirs, Some(10), Some(&theirs_cursor))
            .await
            .unwrap();
        assert_eq!(
            version_strings(&rest_theirs.items),
            vec!["1.0.1", "1.0.2"],
            "{w}"
        );
    })
    .await;
}

#[tokio::test]
async fn storage_unknown_signature_version_and_id() {
    for_each(backends().await, |ts| async move {
        let w = who(&ts);
        let project = default_project();
        let known = store_ok(&ts, &small_program(1), json!({"signature": "Known"})).await;
        let unknown = sig("Unknown");
        let nf = |e: &Error| matches!(e, Error::NotFound(_));
        expect_err(
            &format!("{w} list_versions of an unknown signature"),
            ts.storage
                .list_versions(&OPERATOR, &project, &unknown, None, None)
                .await,
            nf,
            "NotFound",
        );
        expect_err(
            &format!("{w} head of an unknown signature"),
            ts.storage.get_head(&OPERATOR, &project, &unknown).await,
            nf,
            "NotFound",
        );
        for selector in [
            VersionSelector::Latest,
            VersionSelector::Exact(ver("1.0.0")),
        ] {
            expect_err(
                &format!("{w} {selector:?} of an unknown signature"),
                ts.storage
                    .get_version(&OPERATOR, &project, &unknown, &selector)
                    .await,
                nf,
                "NotFound",
            );
        }
        expect_err(
            &format!("{w} unknown version of a known signature"),
            ts.storage
                .get_version(
                    &OPERATOR,
                    &project,
                    &sig("Known"),
                    &VersionSelector::Exact(ver("9.9.9")),
                )
                .await,
            nf,
            "NotFound",
        );
        expect_err(
            &format!("{w} known signature in another project"),
            ts.storage
                .get_version(
                    &OPERATOR,
                    &Project::parse("elsewhere").unwrap(),
                    &sig("Known"),
                    &VersionSelector::Latest,
                )
                .await,
            nf,
            "NotFound",
        );
        let missing = ProgramId::new();
        expect_err(
            &format!("{w} unknown program id"),
            ts.storage.get_program(&OPERATOR, &missing).await,
            nf,
            "NotFound",
        );
        expect_err(
            &format!("{w} unknown program id (record)"),
            ts.storage.get_record(&OPERATOR, &missing).await,
            nf,
            "NotFound",
        );
        assert!(
            ts.storage
                .get_program(&OPERATOR, &known.stored.id)
                .await
                .is_ok(),
            "{w}"
        );
    })
    .await;
}

#[tokio::test]
async fn storage_created_at_import() {
    for_each(backends().await, |ts| async move {
        let w = who(&ts);
        let past = "2021-03-04T05:06:07Z";
        let before = Utc::now();
        let out = store_ok(
            &ts,
            &small_program(1),
            json!({"signature": "Imported", "created_at": past}),
        )
        .await;
        let t: DateTime<Utc> = past.parse().unwrap();
        assert_eq!(out.stored.created_at, "2021-03-04T05:06:07.000Z", "{w}");
        let r = ts
            .storage
            .get_record(&OPERATOR, &out.stored.id)
            .await
            .unwrap();
        assert_eq!(r.created_at, t, "{w} created_at kept");
        assert!(
            r.updated_at >= before - chrono::Duration::seconds(5),
            "{w} updated_at is now"
        );
        assert!(
            r.blob_key.starts_with("programs/2021/03/04/"),
            "{w} blob key dated by created_at: {}",
            r.blob_key
        );
        assert!(
            r.blob_key.contains(&out.stored.id.to_string()),
            "{w} {}",
            r.blob_key
        );
        let (dated, _) = ts
            .storage
            .blobs()
            .list("programs/2021/03/04/", None, 100)
            .await
            .unwrap();
        assert_eq!(dated.len(), 1, "{w}");
        assert_eq!(dated[0].key, r.blob_key, "{w}");
        let (versions, _) = all_versions(&ts.storage, &default_project(), &sig("Imported"), None)
            .await
            .unwrap();
        assert_eq!(versions[0].created_at, t, "{w} claim carries created_at");
        assert_eq!(
            ts.storage
                .get_program(&OPERATOR, &out.stored.id)
                .await
                .unwrap()
                .program
                .get(),
            small_program(1),
            "{w}"
        );

        // Without created_at: now, and the blob is dated by it.
        let now_out = store_ok(&ts, &small_program(2), json!({"signature": "Imported"})).await;
        let r2 = ts
            .storage
            .get_record(&OPERATOR, &now_out.stored.id)
            .await
            .unwrap();
        assert!(
            r2.created_at >= before - chrono::Duration::seconds(5)
                && r2.created_at <= Utc::now() + chrono::Duration::seconds(5),
            "{w} created_at defaults to now: {}",
            r2.created_at
        );
        let prefix = format!("programs/{}/", r2.created_at.format("%Y/%m/%d"));
        assert!(
            r2.blob_key.starts_with(&prefix),
            "{w} {} vs {prefix}",
            r2.blob_key
        );

        // A future created_at is refused before anything is written.
        let future = (Utc::now() + chrono::Duration::days(2)).to_rfc3339();
        expect_err(
            &format!("{w} future created_at"),
            NewMetadata::parse(
                json!({"signature": "Imported", "created_at": future}),
                Utc::now(),
            ),
            |e| matches!(e, Error::InvalidInput { .. }),
            "InvalidInput",
        );
    })
    .await;
}

#[tokio::test]
async fn storage_idempotency() {
    for_each(backends().await, |ts| async move {
        let w = who(&ts);
        let (project, signature) = (default_project(), sig("Idem"));
        let idem = |key: &str, hash: &str| Idempotency::parse(key, hash.to_owned()).unwrap();
        let m = json!({"signature": "Idem"});
        let first = store(
            &ts.storage,
            &small_program(1),
            m.clone(),
            Some(idem("key-1", "hash-a")),
        )
        .await
        .unwrap_or_else(|e| panic!("{w} first store: {e:?}"));
        assert!(!first.replayed, "{w}");
        for _ in 0..2 {
            let again = store(
                &ts.storage,
                &small_program(1),
                m.clone(),
                Some(idem("key-1", "hash-a")),
            )
            .await
            .unwrap_or_else(|e| panic!("{w} replay: {e:?}"));
            assert!(again.replayed, "{w} replayed");
            assert_eq!(again.stored, first.stored, "{w} same answer, same id");
        }
        let (versions, _) = all_versions(&ts.storage, &project, &signature, None)
            .await
            .unwrap();
        assert_eq!(
            version_strings(&versions),
            vec!["1.0.0"],
            "{w} no new version"
        );
        assert_eq!(program_blobs(&ts.storage).await.len(), 1, "{w} no new blob");

        expect_err(
            &format!("{w} same key, another request"),
            store(
                &ts.storage,
                &small_program(2),
                m.clone(),
                Some(idem("key-1", "hash-b")),
            )
            .await,
            |e| matches!(e, Error::Precondition(_)),
            "Precondition",
        );
        let (versions, _) = all_versions(&ts.storage, &project, &signature, None)
            .await
            .unwrap();
        assert_eq!(
            versions.len(),
            1,
            "{w} nothing stored for the refused request"
        );
        assert_eq!(program_blobs(&ts.storage).await.len(), 1, "{w}");
        let head = ts
            .storage
            .get_head(&OPERATOR, &project, &signature)
            .await
            .unwrap();
        assert_eq!(head.versions, 1, "{w}");

        // Another key stores anew; without a key, every store is new.
        let second = store(
            &ts.storage,
            &small_program(1),
            m.clone(),
            Some(idem("key-2", "hash-a")),
        )
        .await
        .unwrap();
        assert!(!second.replayed, "{w}");
        assert_ne!(second.stored.id, first.stored.id, "{w}");
        assert_eq!(second.stored.version, ver("1.0.1"), "{w}");
        let third = store(&ts.storage, &small_program(1), m.clone(), None)
            .await
            .unwrap();
        assert_eq!(third.stored.version, ver("1.0.2"), "{w}");
        // The first key still replays its own first answer.
        let replay = store(
            &ts.storage,
            &small_program(1),
            m.clone(),
            Some(idem("key-1", "hash-a")),
        )
        .await
        .unwrap();
        assert!(replay.replayed, "{w}");
        assert_eq!(replay.stored, first.stored, "{w}");
        assert_eq!(program_blobs(&ts.storage).await.len(), 3, "{w}");

        expect_err(
            "an empty Idempotency-Key",
            Idempotency::parse("", "h".into()),
            |e| matches!(e, Error::InvalidInput { .. }),
            "InvalidInput",
        );
    })
    .await;
}

#[tokio::test]
async fn storage_corrupted_blob_is_an_integrity_error() {
    for compression in [Compression::Zstd, Compression::None] {
        // The in-process program cache off: every load must read and verify the stored bytes.
        let config = StorageConfig {
            compression,
            program_cache_bytes: 0,
            ..StorageConfig::default()
        };
        for_each(backends_with(config).await, |ts| async move {
            let w = format!("{} {compression:?}", who(&ts));
            let program = r#"{"a": 1, "b": "some text"}"#;
            let out = store_ok(&ts, program, json!({"signature": "Corrupt"})).await;
            let id = out.stored.id;
            let record = ts.storage.get_record(&OPERATOR, &id).await.unwrap();
            let key = record.blob_key.clone();
            let blobs = ts.storage.blobs().as_ref();
            let original = blobs.get(&key).await.unwrap();
            let is_integrity = |e: &Error| matches!(e, Error::Integrity(_));

            // Garbage; valid JSON of the same length; one flipped byte.
            let same_len = r#"{"a": 2, "b": "some text"}"#;
            assert_eq!(same_len.len(), program.len());
            let mut flipped = original.to_vec();
            let last = flipped.len() - 1;
            flipped[last] ^= 0x01;
            let corruptions: Vec<(&str, Vec<u8>)> = vec![
                ("garbage", b"\x00\xffnot a program at all".to_vec()),
                ("other valid JSON", same_len.as_bytes().to_vec()),
                ("one flipped byte", flipped),
                ("empty", Vec::new()),
            ];
            for (what, bytes) in corruptions {
                put_blob(blobs, &key, &bytes).await;
                expect_err(
                    &format!("{w} {what}: get_program"),
                    ts.storage.get_program(&OPERATOR, &id).await,
                    is_integrity,
                    "Integrity",
                );
                expect_err(
                    &format!("{w} {what}: get_version latest"),
                    ts.storage
                        .get_version(
                            &OPERATOR,
                            &default_project(),
                            &sig("Corrupt"),
                            &VersionSelector::Latest,
                        )
                        .await,
                    is_integrity,
                    "Integrity",
                );
            }
            // The original bytes read fine again: it was the bytes that were refused.
            put_blob(blobs, &key, &original).await;
            assert_eq!(
                ts.storage
                    .get_program(&OPERATOR, &id)
                    .await
                    .unwrap()
                    .program
                    .get(),
                program,
                "{w}"
            );
            // A missing blob is an integrity error too, not a missing program.
            blobs.delete(&key).await.unwrap();
            expect_err(
                &format!("{w} missing blob"),
                ts.storage.get_program(&OPERATOR, &id).await,
                is_integrity,
                "Integrity",
            );
        })
        .await;
    }
}

#[tokio::test]
async fn storage_encryption_round_trip_and_wrong_key() {
    let key = "11".repeat(32);
    let encrypted = |compression| {
        StorageConfig {
            compression,
            ..StorageConfig::default()
        }
        .with_encryption_key(&key)
        .expect("key parses")
    };
    for compression in [Compression::Zstd, Compression::None] {
        for_each(
            backends_with(encrypted(compression)).await,
            |ts| async move {
                let w = format!("{} {compression:?}", who(&ts));
                let text = shared_program(SHARED_PROGRAMS[0]);
                let program = raw(&text);
                let out = ts
                    .storage
                    .store(
                        &OPERATOR,
                        &program,
                        meta(json!({"signature": "Sealed"})),
                        None,
                    )
                    .await
                    .unwrap_or_else(|e| panic!("{w} encrypted store: {e:?}"));
                let id = out.stored.id;
                assert_eq!(
                    out.stored.sha256,
                    sha256_hex(program.get().as_bytes()),
                    "{w}"
                );
                let loaded = ts.storage.get_program(&OPERATOR, &id).await.unwrap();
                assert!(loaded.program.get() == program.get(), "{w} round trip");
                let record = loaded.record;
                assert!(record.blob.key_id.is_some(), "{w} key id recorded");
                let stored = ts.storage.blobs().get(&record.blob_key).await.unwrap();
                assert!(stored.starts_with(b"DSE1"), "{w} sealed format");
                let needle = b"That Darn Cat";
                assert!(text.as_bytes().windows(needle.len()).any(|x| x == needle));
                assert!(
                    !stored.windows(needle.len()).any(|x| x == needle),
                    "{w} plaintext visible in the stored bytes"
                );

                let is_integrity = |e: &Error| matches!(e, Error::Integrity(_));
                let other_key = reopen(
                    &ts,
                    StorageConfig::default()
                        .with_encryption_key(&"22".repeat(32))
                        .unwrap(),
                )
                .await;
                expect_err(
                    &format!("{w} read with another key"),
                    other_key.get_program(&OPERATOR, &id).await,
                    is_integrity,
                    "Integrity",
                );
                // Same key id, other key material: decryption itself must fail.
                let mut forged = StorageConfig::default();
                let forged_id = forged.keyring.add(record.blob.key_id.clone(), [0x22; 32]);
                forged.keyring.set_current(&forged_id).unwrap();
                forged.encrypt = true;
                expect_err(
                    &format!("{w} read with a forged key of the same id"),
                    reopen(&ts, forged).await.get_program(&OPERATOR, &id).await,
                    is_integrity,
                    "Integrity",
                );
                let plain = reopen(&ts, StorageConfig::default()).await;
                expect_err(
                    &format!("{w} read without a key"),
                    plain.get_program(&OPERATOR, &id).await,
                    is_integrity,
                    "Integrity",
                );
                // The metadata stays readable without the key.
                assert_eq!(
                    plain.get_record(&OPERATOR, &id).await.unwrap().id,
                    id,
                    "{w}"
                );

                // The same key in a new instance reads it; an unencrypted program stored without a
                // key is read by the encrypting instance as well.
                let same = reopen(&ts, encrypted(Compression::Gzip)).await;
                assert!(
                    same.get_program(&OPERATOR, &id)
                        .await
                        .unwrap()
                        .program
                        .get()
                        == program.get(),
                    "{w}"
                );
                let clear = plain
                    .store(
                        &OPERATOR,
                        &raw(&small_program(7)),
                        meta(json!({"signature": "Clear"})),
                        None,
                    )
                    .await
                    .unwrap();
                let clear_loaded = ts
                    .storage
                    .get_program(&OPERATOR, &clear.stored.id)
                    .await
                    .unwrap();
                assert_eq!(clear_loaded.program.get(), small_program(7), "{w}");
                assert_eq!(clear_loaded.record.blob.key_id, None, "{w}");
            },
        )
        .await;
    }
}

#[tokio::test]
async fn storage_every_compression_round_trips() {
    let all = [
        Compression::Zstd,
        Compression::Gzip,
        Compression::Lz4,
        Compression::None,
    ];
    for compression in all {
        let config = StorageConfig {
            compression,
            ..StorageConfig::default()
        };
        for_each(backends_with(config).await, |ts| async move {
            let w = format!("{} {compression:?}", who(&ts));
            let mut ids = Vec::new();
            for name in SHARED_PROGRAMS {
                let text = shared_program(name);
                let program = raw(&text);
                let out = ts
                    .storage
                    .store(
                        &OPERATOR,
                        &program,
                        meta(json!({"signature": "Packed"})),
                        None,
                    )
                    .await
                    .unwrap_or_else(|e| panic!("{w} store {name}: {e:?}"));
                let loaded = ts
                    .storage
                    .get_program(&OPERATOR, &out.stored.id)
                    .await
                    .unwrap();
                assert!(
                    loaded.program.get() == program.get(),
                    "{w} {name} round trip"
                );
                let r = &loaded.record;
                assert_eq!(r.blob.compression, compression, "{w}");
                let ext = compression.extension();
                let suffix = if ext.is_empty() {
                    ".json".to_owned()
                } else {
                    format!(".json.{ext}")
                };
                assert!(
                    r.blob_key.ends_with(&suffix),
                    "{w} {} / {suffix}",
                    r.blob_key
                );
                let stored = ts.storage.blobs().get(&r.blob_key).await.unwrap();
                assert_eq!(stored.len() as u64, r.blob.stored_size, "{w}");
                assert_eq!(sha256_hex(&stored), r.blob.stored_sha256, "{w}");
                if compression == Compression::None {
                    assert!(stored == program.get().as_bytes(), "{w} stored as is");
                } else {
                    assert!(
                        stored.len() < program.get().len(),
                        "{w} {name}: {} compressed bytes for {}",
                        stored.len(),
                        program.get().len()
                    );
                }
                ids.push((out.stored.id, program.get().to_owned()));
            }
            // Each blob records its own codec: an instance set to another compression reads it.
            let other = if compression == Compression::Gzip {
                Compression::Lz4
            } else {
                Compression::Gzip
            };
            let reader = reopen(
                &ts,
                StorageConfig {
                    compression: other,
                    ..StorageConfig::default()
                },
            )
            .await;
            for (id, text) in ids {
                assert!(
                    reader
                        .get_program(&OPERATOR, &id)
                        .await
                        .unwrap()
                        .program
                        .get()
                        == text,
                    "{w}"
                );
            }
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn storage_concurrent_auto_versions() {
    for_each(backends().await, |ts| async move {
        let w = who(&ts);
        let (project, signature) = (default_project(), sig("Busy"));
        let handles: Vec<_> = (0..20)
            .map(|i| {
                let storage = ts.storage.clone();
                tokio::spawn(async move {
                    let out = storage
                        .store(
                            &OPERATOR,
                            &raw(&small_program(i)),
                            meta(json!({"signature": "Busy"})),
                            None,
                        )
                        .await;
                    (i, out)
                })
            })
            .collect();
        let mut by_version = BTreeMap::new();
        for h in handles {
            let (i, out) = h.await.expect("task");
            let out = out.unwrap_or_else(|e| panic!("{w} concurrent store {i}: {e:?}"));
            assert!(!out.replayed, "{w}");
            let previous = by_version.insert(out.stored.version.clone(), (i, out.stored.id));
            assert!(
                previous.is_none(),
                "{w} version {} given twice",
                out.stored.version
            );
        }
        let want: Vec<Version> = (0..20).map(|p| ver(&format!("1.0.{p}"))).collect();
        assert_eq!(
            by_version.keys().cloned().collect::<Vec<_>>(),
            want,
            "{w} 1.0.0..1.0.19"
        );
        let ids: BTreeSet<ProgramId> = by_version.values().map(|(_, id)| *id).collect();
        assert_eq!(ids.len(), 20, "{w} distinct ids");

        let head = ts
            .storage
            .get_head(&OPERATOR, &project, &signature)
            .await
            .unwrap();
        assert_eq!(head.latest_version, ver("1.0.19"), "{w} latest");
        assert_eq!(head.latest_id, by_version[&ver("1.0.19")].1, "{w}");
        assert_eq!(head.versions, 20, "{w} count");
        let (claims, _) = all_versions(&ts.storage, &project, &signature, Some(7))
            .await
            .unwrap();
        assert_eq!(
            claims.iter().map(|c| c.version.clone()).collect::<Vec<_>>(),
            want,
            "{w}"
        );
        for c in &claims {
            let (i, id) = by_version[&c.version];
            assert_eq!(c.id, id, "{w} claim of {}", c.version);
            let loaded = ts.storage.get_program(&OPERATOR, &id).await.unwrap();
            assert_eq!(
                loaded.program.get(),
                small_program(i),
                "{w} content of {}",
                c.version
            );
            let prev = loaded.record.previous_version.map(|v| v.to_string());
            let want_prev = c
                .version
                .semver()
                .patch
                .checked_sub(1)
                .map(|p| format!("1.0.{p}"));
            assert_eq!(prev, want_prev, "{w} previous_version of {}", c.version);
        }
        assert_eq!(
            program_blobs(&ts.storage).await.len(),
            20,
            "{w} no orphan blobs"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn storage_concurrent_same_explicit_version() {
    for_each(backends().await, |ts| async move {
        let w = who(&ts);
        let (project, signature) = (default_project(), sig("Race"));
        let handles: Vec<_> = (0..20)
            .map(|i| {
                let storage = ts.storage.clone();
                tokio::spawn(async move {
                    let out = storage
                        .store(
                            &OPERATOR,
                            &raw(&small_program(i)),
                            meta(json!({"signature": "Race", "version": "3.1.4"})),
                            None,
                        )
                        .await;
                    (i, out)
                })
            })
            .collect();
        let mut winners = Vec::new();
        let mut losers = 0;
        for h in handles {
            let (i, out) = h.await.expect("task");
            match out {
                Ok(o) => winners.push((i, o.stored.id)),
                Err(Error::AlreadyExists(_)) => losers += 1,
                Err(e) => panic!("{w} store {i}: expected Ok or AlreadyExists, got {e:?}"),
            }
        }
        assert_eq!(winners.len(), 1, "{w} exactly one winner: {winners:?}");
        assert_eq!(losers, 19, "{w} the rest AlreadyExists");
        let (i, id) = winners[0];
        let head = ts
            .storage
            .get_head(&OPERATOR, &project, &signature)
            .await
            .unwrap();
        assert_eq!(head.versions, 1, "{w}");
        assert_eq!(head.latest_id, id, "{w}");
        let latest = ts
            .storage
            .get_version(
                &OPERATOR,
                &project,
                &signature,
                &VersionSelector::Exact(ver("3.1.4")),
            )
            .await
            .unwrap();
        assert_eq!(latest.record.id, id, "{w}");
        assert_eq!(
            latest.program.get(),
            small_program(i),
            "{w} the winner's program"
        );
        let (claims, _) = all_versions(&ts.storage, &project, &signature, None)
            .await
            .unwrap();
        assert_eq!(version_strings(&claims), vec!["3.1.4"], "{w}");
        assert_eq!(
            program_blobs(&ts.storage).await.len(),
            1,
            "{w} losers left no blob"
        );
    })
    .await;
}
