//! Integration tests against a LocalStack endpoint. They run only when `AWS_ENDPOINT_URL` is set
//! (a failure instead of a skip with `DSPY_STORAGE_REQUIRE_AWS=1`); each creates its own uniquely named
//! table and bucket and deletes them at the end (also when an assertion fails).

use std::future::Future;

use bytes::Bytes;
use sha2::{Digest, Sha256};

use super::*;
use crate::backend::{BlobStore, Condition, Item, ItemStore, WriteOp};

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

/// The backend conformance suite (every `ItemStore` and `BlobStore` primitive) on DynamoDB + S3.
#[tokio::test]
async fn the_conformance_suite() {
    with_env(|env| async move {
        let be = crate::backend::conformance::Backend {
            label: "[Aws]",
            items: &env.items,
            blobs: &env.blobs,
            instant_restore: false,
        };
        crate::backend::conformance::run(&be).await;
    })
    .await;
}

/// An empty transaction, and one with only an unconditional check, send no request.
#[tokio::test]
async fn empty_transactions_send_no_request() {
    with_env(|env| async move {
        let s = &env.items;
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

/// What is S3's own beyond the conformance suite: copy sources with characters that need escaping,
/// and a wrong checksum refused on arrival (`BadDigest` → `Integrity`).
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
