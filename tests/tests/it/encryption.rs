//! Client-side encryption, through the HTTP API on both backends: static local keys with
//! rotation (a key file: the first key seals, the others still open), and envelope encryption
//! with KMS data keys (LocalStack's KMS; skipped without AWS_ENDPOINT_URL). Old blobs stay readable
//! after a rotation; a wrong or missing key is `422 integrity_error`, never garbage.

use dspy_storage_core::access::OPERATOR;
use std::sync::Arc;

use dspy_storage_core::blob::envelope::{kms_provider, DataKeyCache, DataKeyProvider};
use dspy_storage_core::config::StorageConfig;
use dspy_storage_core::domain::ProgramId;
use dspy_storage_core::storage::Storage;
use dspy_storage_functions::{app, AppState};
use dspy_storage_tests::{aws_configured, backends, Client, Kind, TestStore};
use serde_json::json;

const KEY_A: &str = "1111111111111111111111111111111111111111111111111111111111111111";
const KEY_B: &str = "2222222222222222222222222222222222222222222222222222222222222222";

/// A new process over the same backend data: new config, no caches.
fn process(
    store: &TestStore,
    config: StorageConfig,
    keys: Option<Arc<dyn DataKeyProvider>>,
) -> Client {
    let config = StorageConfig {
        program_cache_bytes: 0,
        resolve_cache_ttl: std::time::Duration::ZERO,
        ..config
    };
    let mut storage = Storage::new(
        store.storage.items().clone(),
        store.storage.blobs().clone(),
        config,
        "process",
    );
    if let Some(k) = keys {
        storage = storage.with_data_keys(k);
    }
    Client {
        router: app(AppState::new(Arc::new(storage))),
    }
}

fn key_file(keys: &[&str]) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keys.txt");
    std::fs::write(&path, format!("# newest first\n{}\n", keys.join("\n"))).unwrap();
    (dir, path)
}

const SECRET: &str = "the instructions are secret";

async fn store_program(c: &Client, k: Kind, version: &str) -> String {
    let s = c
        .post_json(
            "/programs",
            &json!({"program": {"predict": {"signature": {"instructions": SECRET}}}, "metadata": {"signature": "E", "version": version}}),
        )
        .await
        .expect(k, "store", 201);
    s["id"].as_str().unwrap().to_owned()
}

async fn raw_blob(
    store: &TestStore,
    id: &str,
) -> (Vec<u8>, dspy_storage_core::blob::codec::BlobInfo) {
    let rec = store
        .storage
        .get_record(&OPERATOR, &ProgramId::parse(id).unwrap())
        .await
        .unwrap();
    (
        store
            .storage
            .blobs()
            .get(&rec.blob_key)
            .await
            .unwrap()
            .to_vec(),
        rec.blob,
    )
}

#[tokio::test]
async fn local_keys_rotate_and_a_wrong_or_missing_key_is_a_422() {
    for store in backends().await {
        let k = store.kind;
        let a_only = StorageConfig::default().with_encryption_key(KEY_A).unwrap();
        let old = store_with(&store, a_only.clone());
        let p1 = store_program(&old, k, "1.0.0").await;
        let (bytes, info) = raw_blob(&store, &p1).await;
        assert!(
            info.key_id
                .as_deref()
                .is_some_and(|i| i.starts_with("local-")),
            "{k:?}: {info:?}"
        );
        assert!(
            !String::from_utf8_lossy(&bytes).contains(SECRET),
            "{k:?}: the blob is not plaintext"
        );

        // Rotation: B first, A kept for the old blobs.
        let (_d, rotated) = key_file(&[KEY_B, KEY_A]);
        let new = store_with(
            &store,
            StorageConfig::default().with_key_file(&rotated).unwrap(),
        );
        let p2 = store_program(&new, k, "1.0.1").await;
        assert_ne!(
            raw_blob(&store, &p2).await.1.key_id,
            info.key_id,
            "{k:?}: new blobs use the new key"
        );
        for id in [&p1, &p2] {
            let got = new
                .get(&format!("/programs/{id}"))
                .await
                .expect(k, "rotated reads", 200);
            assert_eq!(
                got["program"]["predict"]["signature"]["instructions"],
                SECRET
            );
        }

        // Only the new key: the old blob is a 422, the new one reads.
        let (_d2, b_only) = key_file(&[KEY_B]);
        let b = store_with(
            &store,
            StorageConfig::default().with_key_file(&b_only).unwrap(),
        );
        b.get(&format!("/programs/{p1}")).await.expect_error(
            k,
            "old blob, key gone",
            422,
            "integrity_error",
        );
        b.get(&format!("/programs/{p2}"))
            .await
            .expect(k, "new blob", 200);
        // No key at all, and a forged key under the right id: 422.
        let none = store_with(&store, StorageConfig::default());
        none.get(&format!("/programs/{p1}")).await.expect_error(
            k,
            "no key",
            422,
            "integrity_error",
        );
        let mut forged = StorageConfig::default();
        forged.keyring.add(info.key_id.clone(), [9u8; 32]);
        let forged = store_with(&store, forged);
        forged.get(&format!("/programs/{p1}")).await.expect_error(
            k,
            "forged key",
            422,
            "integrity_error",
        );
        // Metadata never needs the key.
        none.get(&format!("/programs/{p1}/metadata"))
            .await
            .expect(k, "metadata", 200);
    }
}

fn store_with(store: &TestStore, config: StorageConfig) -> Client {
    process(store, config, None)
}

async fn kms_key(description: &str) -> String {
    let sdk = dspy_storage_core::backend::aws::sdk_config().await;
    let kms = aws_sdk_kms::Client::new(&sdk);
    let key = kms
        .create_key()
        .description(description)
        .send()
        .await
        .expect("create a KMS key");
    key.key_metadata().unwrap().arn().unwrap().to_owned()
}

#[tokio::test]
async fn kms_envelope_encryption_survives_new_processes_and_key_rotation() {
    if !aws_configured() {
        return;
    }
    for store in backends().await {
        let k = store.kind;
        let key1 = kms_key("dspy-storage test key 1").await;
        let key2 = kms_key("dspy-storage test key 2").await;
        let with = |key: &str| {
            let key = key.to_owned();
            async move {
                let sdk = dspy_storage_core::backend::aws::sdk_config().await;
                Some(kms_provider(&sdk, &key, DataKeyCache::default()))
            }
        };
        let first = process(&store, StorageConfig::default(), with(&key1).await);
        let p1 = store_program(&first, k, "1.0.0").await;
        let (bytes, info) = raw_blob(&store, &p1).await;
        assert_eq!(
            info.key_id.as_deref(),
            Some(key1.as_str()),
            "{k:?}: the blob names its master key"
        );
        assert!(
            info.wrapped_key.is_some(),
            "{k:?}: the wrapped data key is in the record"
        );
        assert!(
            !String::from_utf8_lossy(&bytes).contains(SECRET),
            "{k:?}: not plaintext"
        );

        // A new process (cold caches) reads it; after rotating to key 2, old and new blobs read.
        let rotated = process(&store, StorageConfig::default(), with(&key2).await);
        rotated
            .get(&format!("/programs/{p1}"))
            .await
            .expect(k, "old blob after rotation", 200);
        let p2 = store_program(&rotated, k, "1.0.1").await;
        assert_eq!(
            raw_blob(&store, &p2).await.1.key_id.as_deref(),
            Some(key2.as_str())
        );
        let latest = process(&store, StorageConfig::default(), with(&key1).await)
            .get("/signatures/E/versions/latest")
            .await
            .expect(k, "latest", 200);
        assert_eq!(
            latest["program"]["predict"]["signature"]["instructions"],
            SECRET
        );

        // No key service: 422. A damaged wrapped key: KMS refuses it, 422.
        process(&store, StorageConfig::default(), None)
            .get(&format!("/programs/{p1}"))
            .await
            .expect_error(k, "no key service", 422, "integrity_error");
        let id = ProgramId::parse(&p1).unwrap();
        let mut rec = store.storage.get_record(&OPERATOR, &id).await.unwrap();
        rec.blob.wrapped_key = Some("AAAA".into());
        store
            .storage
            .items()
            .transact(vec![dspy_storage_core::backend::WriteOp::put(
                rec.to_item(),
                dspy_storage_core::backend::Condition::None,
            )])
            .await
            .unwrap();
        process(&store, StorageConfig::default(), with(&key1).await)
            .get(&format!("/programs/{p1}"))
            .await
            .expect_error(k, "damaged wrapped key", 422, "integrity_error");
    }
}
