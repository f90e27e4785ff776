//! Keys-only indexes on AWS: a table created before them (old indexes `GSI1`..`GSI4`, every
//! attribute copied) keeps answering every index read the same, before, during and after
//! `migrate_indexes` (`dspy-storage migrate-indexes`), and the migration is resumable (a second
//! run changes nothing). AWS backend only (the embedded backend's indexes are SQL indexes).

use std::sync::Arc;

use dspy_storage_core::config::StorageConfig;
use dspy_storage_core::open::{self, AwsLocation};
use dspy_storage_tests::{unique_name, Kind, TestStore};
use serde_json::{json, Value};

/// A store over a table as the build before keys-only indexes created it.
async fn legacy_store() -> Option<(TestStore, dspy_storage_core::backend::aws::DynamoItemStore)> {
    if !dspy_storage_tests::aws_configured() {
        return None;
    }
    let sdk = dspy_storage_core::backend::aws::sdk_config().await;
    let location = AwsLocation {
        table: unique_name("dspy-legacy"),
        bucket: unique_name("dspy-legacy"),
    };
    let table = open::aws_table(&sdk, &location.table);
    table.create_legacy_table().await.unwrap();
    let counter = dspy_storage_core::backend::aws::RequestCounter::default();
    // The table exists: opening with `create` makes the bucket and leaves the table alone.
    let storage = open::aws(
        &sdk,
        &location,
        StorageConfig::default(),
        true,
        Some(counter.clone()),
    )
    .await
    .unwrap();
    storage.mark_text_index_complete().await.unwrap();
    Some((
        TestStore {
            kind: Kind::Aws,
            storage: Arc::new(storage),
            counter: Some(counter),
            location: Some(location),
            data_dir: None,
        },
        table,
    ))
}

/// Every index read the API makes, with its answer (ids, versions and order; times left out
/// where a listing shows them only as a sort key).
async fn index_reads(ts: &TestStore) -> Vec<(String, Value)> {
    let c = ts.client();
    let mut out = Vec::new();
    for uri in [
        // GSI1: a signature's programs by creation.
        "/search?q=signature:qa.One&sort=created_at",
        // GSI2: by score.
        "/search?q=signature:qa.One&sort=-performance&limit=2",
        // GSI3: by method; GSI4: the project's programs.
        "/search?q=method:MIPROv2",
        "/search?q=performance%3E0.1",
        // Heads by name (GSI4) and by last update (GSI3); projects (GSI3, keys only).
        "/signatures?sort=name",
        "/signatures?sort=updated",
        "/projects",
    ] {
        let answer = c.get(uri).await;
        let v = answer.expect(Kind::Aws, uri, 200);
        let v = match v.get("results") {
            Some(results) => Value::Array(
                results
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|r| json!([r["id"], r["version"], r["performance"]]))
                    .collect(),
            ),
            None => match v.get("signatures") {
                Some(sigs) => Value::Array(
                    sigs.as_array()
                        .unwrap()
                        .iter()
                        .map(|s| json!([s["signature"], s["versions"], s["latest_version"]]))
                        .collect(),
                ),
                None => v,
            },
        };
        out.push((uri.to_owned(), v));
    }
    out
}

#[tokio::test]
async fn a_table_with_the_old_indexes_reads_the_same_before_during_and_after_migration() {
    let Some((ts, table)) = legacy_store().await else {
        return;
    };
    let c = ts.client();
    let counter = ts.counter.clone().unwrap();
    for (sig, method, score) in [
        ("qa.Two", "MIPROv2", 0.6),
        ("qa.One", "MIPROv2", 0.5),
        ("qa.One", "BootstrapFewShot", 0.9),
        ("qa.One", "MIPROv2", 0.7),
    ] {
        counter.reset();
        c.post_json(
            "/programs",
            &json!({"program": {"p": sig}, "metadata": {"signature": sig, "optimization_method": method, "performance": score, "tags": ["t"]}}),
        )
        .await
        .expect(Kind::Aws, "store", 201);
    }
    // What the last store (a third version) wrote into the old indexes (every attribute copied).
    let old_cost = counter.capacity_breakdown("DynamoDB.TransactWriteItems");
    let before = index_reads(&ts).await;
    // Not empty: every read found programs (the old indexes answer).
    assert_eq!(before[0].1.as_array().unwrap().len(), 3, "{before:?}");
    assert_eq!(before[1].1[0][2], json!(0.9), "{before:?}");
    assert_eq!(before[2].1.as_array().unwrap().len(), 3, "{before:?}");
    assert_eq!(before[3].1.as_array().unwrap().len(), 4, "{before:?}");
    assert_eq!(before[4].1.as_array().unwrap().len(), 2, "{before:?}");
    assert_eq!(before[6].1, json!({"projects": ["default"]}), "{before:?}");

    // Step one: the new indexes next to the old ones.
    let steps = table.migrate_indexes(true).await.unwrap();
    assert_eq!(
        steps,
        [
            "created GSI1K",
            "created GSI2K",
            "created GSI3K",
            "created GSI4K"
        ]
    );
    let mut names = table.index_names().await.unwrap();
    names.sort();
    assert_eq!(
        names,
        ["GSI1", "GSI1K", "GSI2", "GSI2K", "GSI3", "GSI3K", "GSI4", "GSI4K"]
    );
    assert_eq!(index_reads(&ts).await, before);
    // Resumable: a second run of the same step has nothing left to do.
    assert!(table.migrate_indexes(true).await.unwrap().is_empty());

    // Step two: the old indexes go; a store written now is read through the new ones.
    let steps = table.migrate_indexes(false).await.unwrap();
    assert_eq!(
        steps,
        [
            "deleted GSI1",
            "deleted GSI2",
            "deleted GSI3",
            "deleted GSI4"
        ]
    );
    let mut names = table.index_names().await.unwrap();
    names.sort();
    assert_eq!(names, ["GSI1K", "GSI2K", "GSI3K", "GSI4K"]);
    assert_eq!(index_reads(&ts).await, before);
    assert!(table.migrate_indexes(false).await.unwrap().is_empty());

    // The same kind of store (a later version, with a method) into the new indexes: small
    // entries, the unchanged ones not rewritten.
    counter.reset();
    c.post_json(
        "/programs",
        &json!({"program": {"p": "qa.Two"}, "metadata": {"signature": "qa.Two", "optimization_method": "MIPROv2", "performance": 0.65, "tags": ["t"]}}),
    )
    .await
    .expect(Kind::Aws, "store", 201);
    let new_cost = counter.capacity_breakdown("DynamoDB.TransactWriteItems");
    let indexes = |m: &std::collections::BTreeMap<String, f64>| -> f64 {
        m.iter()
            .filter(|(k, _)| k.as_str() != "table")
            .map(|(_, v)| v)
            .sum()
    };
    println!("index capacity of a store: old indexes {old_cost:?}, new {new_cost:?}");
    assert!(
        indexes(&new_cost) < indexes(&old_cost),
        "old {old_cost:?}, new {new_cost:?}"
    );
    assert!(new_cost.keys().all(|k| k == "table" || k.ends_with('K')));

    // The new indexes hold keys only: a search reads them, then the records.
    counter.reset();
    c.get("/search?q=signature:qa.Two")
        .await
        .expect(Kind::Aws, "search", 200);
    assert_eq!(
        counter.count("DynamoDB.Query"),
        1,
        "{:?}",
        counter.snapshot()
    );
    assert_eq!(
        counter.count("DynamoDB.BatchGetItem"),
        1,
        "{:?}",
        counter.snapshot()
    );
    let _ = table.delete_table().await;
}
