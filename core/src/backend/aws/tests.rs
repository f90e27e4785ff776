//! Integration tests against a LocalStack endpoint. They run only when `AWS_ENDPOINT_URL` is set
//! (a failure instead of a skip with `DSPY_STORAGE_REQUIRE_AWS=1`); each creates its own uniquely named
//! table and bucket and deletes them at the end (also when an assertion fails).

use std::collections::BTreeSet;
use std::future::Future;

use bytes::Bytes;
use sha2::{Digest, Sha256};

use super::*;
use crate::backend::{
    BlobStore, Condition, Index, Item, ItemStore, PageKey, Query, SkRange, WriteOp,
};

#[derive(Clone)]
struct Env {
    items: DynamoItemStore,
    blobs: S3BlobStore,
    counter: RequestCounter,
}

fn enabled() -> bool {
    crate::testing::aws_test_enabled("the S3 + DynamoDB backend")
}

/// Runs `body` with a fresh table and bucket, then deletes both, then re-raises a panic.
async fn with_env<F, Fut>(body: F)
where
    F: FnOnce(Env) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    if !enabled() {
        return;
    }
    let sdk = sdk_config().await;
    let counter = RequestCounter::default();
    let (ddb, s3) = clients(&sdk, Some(counter.clone()));
    let suffix = uuid::Uuid::now_v7().simple().to_string();
    let env = Env {
        items: DynamoItemStore::new(ddb, format!("dspy-test-{suffix}")),
        blobs: S3BlobStore::new(s3, format!("dspy-test-{suffix}")),
        counter,
    };
    env.items.create_table().await.expect("create table");
    env.blobs.create_bucket().await.expect("create bucket");
    let outcome = tokio::spawn(body(env.clone())).await;
    let dropped_table = env.items.delete_table().await;
    let dropped_bucket = env.blobs.delete_bucket_and_contents().await;
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
    dropped_table.expect("delete table");
    dropped_bucket.expect("delete bucket");
}

fn sha_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

#[tokio::test]
async fn items_round_trip() {
    with_env(|env| async move {
        let s = &env.items;
        assert!(s.get("P", "S").await.unwrap().is_none());
        let item = Item::new("PROG#1", "PROG")
            .with("data", r#"{"a":1}"#)
            .with("GSI1PK", "SIG#p#s")
            .with("empty", "");
        s.transact(vec![WriteOp::put(item.clone(), Condition::NotExists)])
            .await
            .unwrap();
        assert_eq!(s.get("PROG#1", "PROG").await.unwrap(), Some(item.clone()));
        // Empty transaction, and one with only an unconditional check: no request.
        env.counter.reset();
        s.transact(vec![]).await.unwrap();
        s.transact(vec![WriteOp::Check {
            pk: "x".into(),
            sk: "y".into(),
            condition: Condition::None,
        }])
        .await
        .unwrap();
        assert_eq!(env.counter.total(), 0);
        // Compare-and-set on an attribute, then delete with Exists.
        let updated = item.clone().with("rev", "2");
        s.transact(vec![WriteOp::put(
            updated.clone(),
            Condition::AttrEquals("data".into(), r#"{"a":1}"#.into()),
        )])
        .await
        .unwrap();
        assert_eq!(s.get("PROG#1", "PROG").await.unwrap(), Some(updated));
        s.transact(vec![WriteOp::delete("PROG#1", "PROG", Condition::Exists)])
            .await
            .unwrap();
        assert!(s.get("PROG#1", "PROG").await.unwrap().is_none());
        match s
            .transact(vec![WriteOp::delete("PROG#1", "PROG", Condition::Exists)])
            .await
        {
            Err(Error::ConditionFailed { ops }) => assert_eq!(ops, vec![0]),
            other => panic!("expected ConditionFailed, got {other:?}"),
        }
    })
    .await;
}

#[tokio::test]
async fn failed_transaction_reports_op_index_and_changes_nothing() {
    with_env(|env| async move {
        let s = &env.items;
        let existing = Item::new("SIG#p#s", "HEAD").with("rev", "1");
        s.transact(vec![WriteOp::put(existing.clone(), Condition::None)])
            .await
            .unwrap();
        env.counter.reset();
        let ops = vec![
            WriteOp::put(
                Item::new("PROG#2", "PROG").with("data", "{}"),
                Condition::NotExists,
            ),
            // Skipped (DynamoDB refuses a check without condition): indexes must not shift.
            WriteOp::Check {
                pk: "other".into(),
                sk: "x".into(),
                condition: Condition::None,
            },
            WriteOp::put(
                Item::new("SIG#p#s", "VER#1").with("id", "2"),
                Condition::NotExists,
            ),
            WriteOp::put(
                existing.clone().with("rev", "2"),
                Condition::AttrEquals("rev".into(), "0".into()),
            ),
        ];
        match s.transact(ops).await {
            Err(Error::ConditionFailed { ops }) => assert_eq!(ops, vec![3]),
            other => panic!("expected ConditionFailed, got {other:?}"),
        }
        assert_eq!(env.counter.count("DynamoDB.TransactWriteItems"), 1);
        assert_eq!(env.counter.total(), 1, "{:?}", env.counter.snapshot());
        assert!(s.get("PROG#2", "PROG").await.unwrap().is_none());
        assert!(s.get("SIG#p#s", "VER#1").await.unwrap().is_none());
        assert_eq!(s.get("SIG#p#s", "HEAD").await.unwrap(), Some(existing));

        // Two failing conditions are both reported.
        let ops = vec![
            WriteOp::put(Item::new("SIG#p#s", "HEAD"), Condition::NotExists),
            WriteOp::put(Item::new("new", "x"), Condition::None),
            WriteOp::Check {
                pk: "missing".into(),
                sk: "x".into(),
                condition: Condition::Exists,
            },
        ];
        match s.transact(ops).await {
            Err(Error::ConditionFailed { ops }) => assert_eq!(ops, vec![0, 2]),
            other => panic!("expected ConditionFailed, got {other:?}"),
        }
        assert!(s.get("new", "x").await.unwrap().is_none());
    })
    .await;
}

#[tokio::test]
async fn transact_counts_one_request() {
    with_env(|env| async move {
        env.counter.reset();
        env.items
            .transact(vec![
                WriteOp::put(Item::new("A", "1"), Condition::NotExists),
                WriteOp::put(Item::new("B", "1"), Condition::NotExists),
                WriteOp::put(Item::new("C", "1"), Condition::None),
            ])
            .await
            .unwrap();
        let snapshot = env.counter.snapshot();
        assert_eq!(
            env.counter.count("DynamoDB.TransactWriteItems"),
            1,
            "{snapshot:?}"
        );
        assert_eq!(env.counter.total(), 1, "{snapshot:?}");
        env.counter.reset();
        env.items.get("A", "1").await.unwrap();
        env.blobs
            .put("k", Bytes::from_static(b"x"), &sha_hex(b"x"))
            .await
            .unwrap();
        let snapshot = env.counter.snapshot();
        assert_eq!(snapshot.get("DynamoDB.GetItem"), Some(&1), "{snapshot:?}");
        assert_eq!(snapshot.get("S3.PutObject"), Some(&1), "{snapshot:?}");
        assert_eq!(env.counter.count("S3"), 1);
        assert_eq!(env.counter.count("DynamoDB"), 1);
    })
    .await;
}

/// Reads every page of a query, checking no item comes twice.
async fn all_pages(s: &DynamoItemStore, q: Query) -> (Vec<String>, usize) {
    let mut out = Vec::new();
    let mut seen = BTreeSet::new();
    let mut start: Option<PageKey> = None;
    let mut pages = 0;
    loop {
        let page = s.query(&q.clone().start(start.take())).await.unwrap();
        pages += 1;
        assert!(page.items.len() <= q.limit);
        for item in page.items {
            let sk = match q.index {
                Index::Table => item.sk.clone(),
                index => item.get(index.sk_attr()).unwrap().to_owned(),
            };
            assert!(
                seen.insert((item.pk.clone(), item.sk.clone())),
                "{sk} twice"
            );
            out.push(sk);
        }
        match page.next {
            Some(next) => start = Some(next),
            None => break,
        }
        assert!(pages < 100, "paging does not end");
    }
    (out, pages)
}

#[tokio::test]
async fn gsi_queries_and_paging() {
    with_env(|env| async move {
        let s = &env.items;
        let mut items = Vec::new();
        for i in 0..12 {
            items.push(
                Item::new(format!("PROG#{i:02}"), "PROG")
                    .with("GSI1PK", "SIG#p#s")
                    .with("GSI1SK", format!("2026-01-{:02}#{i:02}", i + 1)),
            );
        }
        // Another partition and an item outside the index (sparse).
        items.push(
            Item::new("PROG#x", "PROG")
                .with("GSI1PK", "SIG#p#other")
                .with("GSI1SK", "2026-01-05#x"),
        );
        items.push(Item::new("PROG#y", "PROG"));
        s.batch_put(items).await.unwrap();

        let all: Vec<String> = (0..12)
            .map(|i| format!("2026-01-{:02}#{i:02}", i + 1))
            .collect();
        let q = Query::new(Index::Gsi1, "SIG#p#s");
        // Whole partition, both directions, paged by 5 (GSI reads are eventually consistent:
        // LocalStack's DynamoDB Local applies them at once).
        let (got, pages) = all_pages(s, q.clone().limit(5)).await;
        assert_eq!(got, all);
        assert!(pages >= 3);
        let (got, _) = all_pages(s, q.clone().limit(5).forward(false)).await;
        let mut rev = all.clone();
        rev.reverse();
        assert_eq!(got, rev);
        // begins_with
        let (got, _) = all_pages(
            s,
            q.clone()
                .sk(SkRange::BeginsWith("2026-01-1".into()))
                .limit(2),
        )
        .await;
        assert_eq!(got, all[9..12].to_vec());
        // between (inclusive), both directions
        let between = SkRange::Between("2026-01-03".into(), "2026-01-07~".into());
        let (got, _) = all_pages(s, q.clone().sk(between.clone()).limit(2)).await;
        assert_eq!(got, all[2..7].to_vec());
        let (got, _) = all_pages(s, q.clone().sk(between).limit(2).forward(false)).await;
        let mut rev = all[2..7].to_vec();
        rev.reverse();
        assert_eq!(got, rev);
        // >= and <=
        let (got, _) = all_pages(s, q.clone().sk(SkRange::Gte(all[10].clone())).limit(1)).await;
        assert_eq!(got, all[10..].to_vec());
        let (got, _) =
            all_pages(s, q.clone().sk(SkRange::Lte(all[1].clone())).forward(false)).await;
        assert_eq!(got, vec![all[1].clone(), all[0].clone()]);
        // next is None on a page that ends the partition
        let page = s.query(&q.clone().limit(100)).await.unwrap();
        assert_eq!(page.items.len(), 12);
        assert!(page.next.is_none());

        // Table query: a partition with several sort keys.
        let head = (0..4)
            .map(|v| Item::new("SIG#p#s", format!("VER#{v}")))
            .collect();
        s.batch_put(head).await.unwrap();
        let tq = Query::new(Index::Table, "SIG#p#s").sk(SkRange::BeginsWith("VER#".into()));
        let (got, _) = all_pages(s, tq.limit(3).forward(false)).await;
        assert_eq!(got, vec!["VER#3", "VER#2", "VER#1", "VER#0"]);
    })
    .await;
}

#[tokio::test]
async fn batch_put_sixty_items_and_scan() {
    with_env(|env| async move {
        let s = &env.items;
        let mut items: Vec<Item> = (0..60)
            .map(|i| Item::new(format!("MET#{i:03}"), "m").with("data", format!("{i}")))
            .collect();
        // A repeated key: the later write wins (and must not break the batch).
        items.push(Item::new("MET#000", "m").with("data", "last"));
        env.counter.reset();
        s.batch_put(items).await.unwrap();
        let batches = env.counter.count("DynamoDB.BatchWriteItem");
        assert!(batches >= 3, "{:?}", env.counter.snapshot());

        let mut seen = BTreeSet::new();
        let mut start = None;
        loop {
            let page = s.scan(start.take(), 7).await.unwrap();
            assert!(page.items.len() <= 7);
            for item in page.items {
                if item.pk == "MET#000" {
                    assert_eq!(item.data(), Some("last"));
                }
                assert!(seen.insert(item.pk.clone()), "{} twice", item.pk);
            }
            match page.next {
                Some(next) => start = Some(next),
                None => break,
            }
        }
        assert_eq!(seen.len(), 60);
        s.batch_put(vec![]).await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn blobs_round_trip() {
    with_env(|env| async move {
        let b = &env.blobs;
        let body = Bytes::from(r#"{"program": "x"}"#);
        b.put("programs/2026/01/02/a.json", body.clone(), &sha_hex(&body))
            .await
            .unwrap();
        assert_eq!(b.get("programs/2026/01/02/a.json").await.unwrap(), body);
        // Overwrite, then copy to a key with special characters and back.
        let body2 = Bytes::from_static(b"second");
        b.put(
            "programs/2026/01/02/a.json",
            body2.clone(),
            &sha_hex(&body2),
        )
        .await
        .unwrap();
        let odd = "backups/b 1/ü+x#?&=.json";
        b.copy("programs/2026/01/02/a.json", odd).await.unwrap();
        assert_eq!(b.get(odd).await.unwrap(), body2);
        b.copy(odd, "backups/plain.json").await.unwrap();
        assert_eq!(b.get("backups/plain.json").await.unwrap(), body2);
        // A wrong checksum is refused by S3 on arrival (`BadDigest` → `Integrity`), and nothing is
        // stored: what AWS does, and what LocalStack does.
        match b
            .put("bad", Bytes::from_static(b"abc"), &sha_hex(b"abd"))
            .await
        {
            Err(Error::Integrity(_)) => {
                assert!(matches!(b.get("bad").await, Err(Error::NotFound(_))));
            }
            other => panic!("expected Integrity, got {other:?}"),
        }
        // Listing with paging.
        for i in 0..5 {
            let v = format!("{i}");
            b.put(
                &format!("list/{i}"),
                Bytes::from(v.clone()),
                &sha_hex(v.as_bytes()),
            )
            .await
            .unwrap();
        }
        let mut keys = Vec::new();
        let mut start = None;
        loop {
            let (page, next) = b.list("list/", start.take(), 2).await.unwrap();
            assert!(page.len() <= 2);
            for m in &page {
                assert_eq!(m.size, 1);
                assert!(m.last_modified.is_some());
            }
            keys.extend(page.into_iter().map(|m| m.key));
            match next {
                Some(n) => start = Some(n),
                None => break,
            }
        }
        assert_eq!(keys, vec!["list/0", "list/1", "list/2", "list/3", "list/4"]);
        // Delete, delete again, missing → NotFound.
        b.delete(odd).await.unwrap();
        b.delete(odd).await.unwrap();
        assert!(matches!(b.get(odd).await, Err(Error::NotFound(_))));
        assert!(matches!(b.copy("nope", "x").await, Err(Error::NotFound(_))));
    })
    .await;
}

#[tokio::test]
async fn archived_blob_maps_to_archived() {
    with_env(|env| async move {
        let b = &env.blobs;
        b.client()
            .put_object()
            .bucket(b.bucket())
            .key("cold.json")
            .storage_class(aws_sdk_s3::types::StorageClass::Glacier)
            .body(Bytes::from_static(b"cold").into())
            .send()
            .await
            .unwrap();
        match b.get("cold.json").await {
            Err(Error::Archived(_)) => {}
            other => panic!("expected Archived, got {other:?}"),
        }
        match b.get("missing.json").await {
            Err(Error::NotFound(_)) => {}
            other => panic!("expected NotFound, got {other:?}"),
        }
    })
    .await;
}

#[tokio::test]
async fn create_is_idempotent_and_errors_map() {
    with_env(|env| async move {
        env.items.create_table().await.unwrap();
        env.blobs.create_bucket().await.unwrap();
        // A table that does not exist: a service error mapped to Unavailable, not a panic.
        let other = DynamoItemStore::new(env.items.client().clone(), "dspy-test-missing-table");
        match other.get("a", "b").await {
            Err(Error::Unavailable(msg)) => {
                assert!(msg.contains("ResourceNotFoundException"), "{msg}")
            }
            other => panic!("expected Unavailable, got {other:?}"),
        }
    })
    .await;
}

/// Records the checksum headers of every request sent.
#[derive(Debug, Clone, Default)]
struct HeaderProbe(std::sync::Arc<std::sync::Mutex<Vec<(String, String)>>>);

impl aws_smithy_runtime_api::client::interceptors::Intercept for HeaderProbe {
    fn name(&self) -> &'static str {
        "HeaderProbe"
    }

    fn read_before_transmit(
        &self,
        context: &aws_smithy_runtime_api::client::interceptors::context::BeforeTransmitInterceptorContextRef<'_>,
        _rc: &aws_smithy_runtime_api::client::runtime_components::RuntimeComponents,
        _cfg: &mut aws_smithy_types::config_bag::ConfigBag,
    ) -> Result<(), aws_smithy_runtime_api::box_error::BoxError> {
        let mut seen = self.0.lock().unwrap();
        for (name, value) in context.request().headers() {
            if name.starts_with("x-amz-checksum-") || name == "x-amz-sdk-checksum-algorithm" {
                seen.push((name.to_owned(), value.to_owned()));
            }
        }
        Ok(())
    }
}

#[tokio::test]
async fn put_sends_the_given_sha256() {
    with_env(|env| async move {
        let probe = HeaderProbe::default();
        let conf = env
            .blobs
            .client()
            .config()
            .to_builder()
            .interceptor(probe.clone())
            .build();
        let b = S3BlobStore::new(aws_sdk_s3::Client::from_conf(conf), env.blobs.bucket());
        let body = Bytes::from_static(b"hello");
        b.put("h", body.clone(), &sha_hex(&body)).await.unwrap();
        let expected = base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            Sha256::digest(&body),
        );
        let seen = probe.0.lock().unwrap().clone();
        assert_eq!(seen, vec![("x-amz-checksum-sha256".to_owned(), expected)]);
    })
    .await;
}
