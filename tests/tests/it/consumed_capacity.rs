//! The request counter also adds up the DynamoDB capacity units each answer reports (it asks for
//! `ReturnConsumedCapacity=TOTAL` on the item operations of its clients): what the benchmark
//! prints per operation. AWS backend only (the embedded backend has no counter).

use chrono::Utc;
use dspy_storage_core::access::OPERATOR;
use dspy_storage_core::config::StorageConfig;
use dspy_storage_core::domain::NewMetadata;
use dspy_storage_tests::aws_with;
use serde_json::{json, value::RawValue};

/// The AWS test store with the program and resolution caches off: every read reaches DynamoDB.
async fn cold_aws() -> Option<dspy_storage_tests::TestStore> {
    let config = StorageConfig {
        program_cache_bytes: 0,
        resolve_cache_ttl: std::time::Duration::ZERO,
        ..StorageConfig::default()
    };
    aws_with(config).await
}

#[tokio::test]
async fn counter_reports_consumed_capacity_per_operation() {
    let Some(store) = cold_aws().await else {
        return;
    };
    let counter = store.counter.clone().expect("the AWS fixture counts");
    let program = RawValue::from_string(r#"{"p": "x"}"#.to_owned()).unwrap();
    let meta = NewMetadata::parse(json!({"signature": "cap.Sig"}), Utc::now()).unwrap();
    let stored = store
        .storage
        .store(&OPERATOR, &program, meta, None)
        .await
        .unwrap();

    // A store writes in one transaction: write capacity, reported under its operation's name;
    // reading the signature head first costs a read. S3 reports no capacity.
    let write = counter.capacity("DynamoDB.TransactWriteItems");
    assert!(write >= 1.0, "{:?}", counter.capacity_snapshot());
    assert!(counter.capacity("DynamoDB.GetItem") > 0.0);
    assert_eq!(counter.capacity("S3"), 0.0);
    // The text index entries are a separate batch write beside the transaction: one unit per
    // entry (one per distinct word; "cap.Sig" has two: `cap`, `sig`), apart from the store's
    // transaction figure.
    let entries = counter.capacity("DynamoDB.BatchWriteItem");
    assert_eq!(entries, 2.0, "{:?}", counter.capacity_snapshot());
    assert_eq!(
        counter.capacity("DynamoDB"),
        write + counter.capacity("DynamoDB.GetItem") + entries
    );
    println!("store: {:?}", counter.capacity_snapshot());

    counter.reset();
    assert_eq!(counter.capacity("DynamoDB"), 0.0);
    let loaded = store
        .storage
        .get_program(&OPERATOR, &stored.stored.id)
        .await
        .unwrap();
    assert_eq!(loaded.program.get(), program.get());
    // One read of one small item: more than nothing, at most one unit.
    let read = counter.capacity("DynamoDB.GetItem");
    assert!(
        read > 0.0 && read <= 1.0,
        "{:?}",
        counter.capacity_snapshot()
    );
    assert_eq!(counter.count("DynamoDB.GetItem"), 1);
    println!("load by id: {:?}", counter.capacity_snapshot());
}

/// Metric records in blocks: what an append and a history read cost in capacity units. A
/// 10,000-record history as the benchmark posts it (three full-precision metrics over 90 days)
/// is ≤ 50 units (strongly consistent reads of about 70 KB of blocks); appends write the blocks
/// once (a 1,000-record block is a few KB).
#[tokio::test]
async fn metric_blocks_cost_few_capacity_units() {
    let Some(store) = cold_aws().await else {
        return;
    };
    let counter = store.counter.clone().expect("the AWS fixture counts");
    let program = RawValue::from_string(r#"{"p": "x"}"#.to_owned()).unwrap();
    let meta = NewMetadata::parse(json!({"signature": "cap.Metrics"}), Utc::now()).unwrap();
    let id = store
        .storage
        .store(&OPERATOR, &program, meta, None)
        .await
        .unwrap()
        .stored
        .id;
    counter.reset();
    store
        .storage
        .record_metrics(&OPERATOR, &id, &json!({"metrics": {"accuracy": 0.5}}))
        .await
        .unwrap();
    let one = counter.capacity("DynamoDB");
    println!("append 1 record: {:?}", counter.capacity_snapshot());
    counter.reset();
    let records = dspy_storage_tests::bench_records(1000, 0);
    store
        .storage
        .record_metrics(&OPERATOR, &id, &json!({ "records": records }))
        .await
        .unwrap();
    let thousand = counter.capacity("DynamoDB");
    println!("append 1,000 records: {:?}", counter.capacity_snapshot());
    dspy_storage_tests::post_bench_history(&store.storage, &id, 9_000).await;
    counter.reset();
    let page = store
        .storage
        .metric_history(&OPERATOR, &id, None, None, Some(10_000), None)
        .await
        .unwrap();
    assert_eq!(page.records.len(), 10_000);
    assert!(page.next_cursor.is_some());
    let read = counter.capacity("DynamoDB");
    println!(
        "read 10,000 of 10,001 records: {:?}",
        counter.capacity_snapshot()
    );
    // A transaction costs 2 write units per KB of each item it writes or checks.
    assert!(one <= 20.0, "append 1: {one}");
    assert!(thousand <= 200.0, "append 1,000: {thousand}");
    assert!(read <= 50.0, "read 10,000: {read}");
}
