//! The request counter also adds up the DynamoDB capacity units each answer reports (it asks for
//! `ReturnConsumedCapacity=INDEXES` on the item operations of its clients): what the benchmark
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

/// DynamoDB's size of an item (its billing size): the UTF-8 length of every attribute name plus
/// its value — strings their bytes, numbers (`n_` attributes) about one byte per two digits plus
/// one, binary (`b_` attributes) their bytes.
fn item_size(item: &dspy_storage_core::backend::Item) -> usize {
    use base64::Engine;
    let value = |k: &str, v: &str| -> usize {
        if k.starts_with("n_") && v.parse::<i64>().is_ok() {
            v.trim_start_matches('-').len().div_ceil(2) + 1
        } else if k.starts_with("b_") {
            base64::engine::general_purpose::STANDARD
                .decode(v)
                .map(|b| b.len())
                .unwrap_or(v.len())
        } else {
            v.len()
        }
    };
    "PK".len()
        + item.pk.len()
        + "SK".len()
        + item.sk.len()
        + item
            .attrs
            .iter()
            .map(|(k, v)| k.len() + value(k, v))
            .sum::<usize>()
}

/// Write capacity of one item in a transaction, by AWS's documented rules: 2 units per KB
/// (rounded up) of the larger of the item's old and new images.
fn transactional_units(before: usize, after: usize) -> f64 {
    2.0 * before.max(after).div_ceil(1024) as f64
}

/// What a store of a real ~8 KB DSPy program with typical metadata costs in write capacity, item
/// by item and index by index, on a signature that already has versions (the steady state).
///
/// The index part is what DynamoDB Local reports (`ReturnConsumedCapacity=INDEXES`), and agrees
/// with AWS's rules: in a transaction a new index entry costs 2 units per KB, an entry whose key
/// moved 4 (delete + put), an entry whose keys and projected attributes did not change nothing.
/// The table part is computed here from the items written, because DynamoDB Local reports too
/// little for a transaction of several items (it does not add up one figure per item).
#[tokio::test]
async fn a_store_costs_its_items_and_small_index_entries() {
    let config = StorageConfig {
        program_cache_bytes: 0,
        resolve_cache_ttl: std::time::Duration::ZERO,
        ..StorageConfig::default()
    };
    let Some(store) = aws_with(config).await else {
        return;
    };
    let counter = store.counter.clone().expect("the AWS fixture counts");
    let text = dspy_storage_tests::shared_program("dspy_react_optimized.json");
    assert!(text.len() > 8000, "an ~8 KB program");
    let program = RawValue::from_string(text).unwrap();
    let meta = |n: u32, method: Option<&str>| {
        let mut m = json!({
            "signature": "qa.ReAct",
            "performance": {"score": 0.8 + f64::from(n) / 100.0},
            "examples_count": 200,
            "tags": ["production", "qa"],
            "team": "search",
            "environment": "staging",
            "description": "ReAct agent over the wiki corpus, optimized with MIPROv2",
            "dataset": "hotpotqa-dev",
        });
        if let Some(method) = method {
            m["optimization_method"] = json!(method);
        }
        NewMetadata::parse(m, Utc::now()).unwrap()
    };
    let sizes = |items: &[dspy_storage_core::backend::Item]| {
        items
            .iter()
            .filter(|i| !i.pk.starts_with("TXT#"))
            .map(|i| ((i.pk.clone(), i.sk.clone()), item_size(i)))
            .collect::<std::collections::BTreeMap<_, _>>()
    };
    // The first version makes the head and the counters.
    store
        .storage
        .store(&OPERATOR, &program, meta(0, Some("MIPROv2")), None)
        .await
        .unwrap();
    for (n, method) in [(1, Some("MIPROv2")), (2, None)] {
        let before = sizes(&dspy_storage_tests::all_items(&store.storage).await);
        counter.reset();
        let stored = store
            .storage
            .store(&OPERATOR, &program, meta(n, method), None)
            .await
            .unwrap()
            .stored;
        // Requests: the blob upload, the head read and the word entries together, then the
        // transaction; the word entries are their own batch write, counted apart.
        assert_eq!(counter.round_trips(), 2);
        assert_eq!(
            counter.total() - counter.count("DynamoDB.BatchWriteItem"),
            3,
            "{:?}",
            counter.snapshot()
        );
        let after = sizes(&dspy_storage_tests::all_items(&store.storage).await);
        let size = |key: &(String, String)| {
            (
                before.get(key).copied().unwrap_or(0),
                after.get(key).copied().unwrap_or(0),
            )
        };
        let mut table = std::collections::BTreeMap::new();
        for (key, _) in after.iter() {
            let (b, a) = size(key);
            let kind = if key.0.starts_with("PROG#") {
                "record"
            } else if key.1.starts_with("VER#") {
                "version claim"
            } else if key.1 == "HEAD" {
                "head"
            } else if key.0.starts_with("STATS#") {
                "counters"
            } else if key.0.starts_with("TAG#") {
                "tag entries"
            } else {
                continue;
            };
            let written = key.0.ends_with(&stored.id.to_string())
                || key.1.ends_with(&stored.id.to_string())
                || matches!(kind, "head" | "counters")
                || (kind == "version claim" && key.1.ends_with(&format!("{n}~")));
            if written {
                *table.entry(kind).or_insert(0.0) += transactional_units(b, a);
            }
        }
        let indexes = counter.capacity_breakdown("DynamoDB.TransactWriteItems");
        let index_total: f64 = indexes
            .iter()
            .filter(|(k, _)| k.as_str() != "table")
            .map(|(_, v)| v)
            .sum();
        let tags = table.get("tag entries").copied().unwrap_or(0.0);
        let counted: f64 = table.values().sum::<f64>() - tags + index_total;
        println!(
            "store {n} (method {method:?}): {counted} units for record, claim, head, counters and \
             index entries; items {table:?}; indexes as reported {indexes:?}; tag entries {tags} \
             apart; word entries (BatchWriteItem) {} apart",
            counter.capacity("DynamoDB.BatchWriteItem")
        );
        // Items: the record (~2 KB: metadata, predictor layout, blob facts, index keys) and
        // three small items, each billed twice; two tag entries.
        assert_eq!(table["record"], 4.0, "{table:?}");
        assert_eq!(table["version claim"], 2.0, "{table:?}");
        assert_eq!(table["head"], 2.0, "{table:?}");
        assert_eq!(table["counters"], 2.0, "{table:?}");
        assert_eq!(tags, 4.0, "{table:?}");
        // Index entries: the record's (by signature and time, by score, by project, and by
        // method when it has one) are new, 2 each; the head's by-update entry moves (4); the
        // head's by-name entry and the counters' entry do not change (nothing).
        let mut expected = std::collections::BTreeMap::from([
            ("GSI1K".to_owned(), 2.0),
            ("GSI2K".to_owned(), 2.0),
            ("GSI3K".to_owned(), if method.is_some() { 6.0 } else { 4.0 }),
            ("GSI4K".to_owned(), 2.0),
        ]);
        if let Some(t) = indexes.get("table") {
            expected.insert("table".to_owned(), *t);
        }
        assert_eq!(indexes, expected);
        assert_eq!(counted, if method.is_some() { 22.0 } else { 20.0 });
    }
}
