//! Backup and restore time and peak memory at 1,000 and 10,000 programs (ignored by default):
//!
//! ```sh
//! cargo test -p dspy-storage-tests --test it bench_backup:: -- --ignored --nocapture
//! # BENCH_SIZES=1000,10000,20000; with the AWS emulators configured and BENCH_AWS=1 the AWS
//! # backend too (BENCH_AWS_SIZES, default BENCH_SIZES)
//! ```
//!
//! Peak memory is the process's `VmHWM` (/proc/self/status), reset before each measured phase
//! by writing `5` to /proc/self/clear_refs, so each figure is that phase's own peak resident
//! set (the store's population is not counted).

use dspy_storage_core::access::OPERATOR;
use std::time::Instant;

use dspy_storage_core::backup::{self, BackupLocation, BackupOptions, BackupRun, RestoreOptions};
use dspy_storage_core::domain::NewMetadata;
use dspy_storage_tests::{aws, embedded, TestStore};
use serde_json::json;

fn status_kb(field: &str) -> u64 {
    let text = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    text.lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

fn reset_peak() {
    // Resets VmHWM to the current RSS (Linux ≥ 4.0).
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

async fn populate(store: &TestStore, n: usize) {
    let storage = &store.storage;
    let mut handles = Vec::new();
    let per = n / 4;
    for w in 0..4 {
        let storage = storage.clone();
        handles.push(tokio::spawn(async move {
            for i in w * per..(w + 1) * per {
                let program = serde_json::value::RawValue::from_string(format!(
                    r#"{{"predict": {{"signature": {{"instructions": "Classify item {i} carefully and briefly.", "fields": [{{"name": "text"}}, {{"name": "label"}}]}}, "demos": [{{"text": "example {i}", "label": "{}"}}]}}}}"#,
                    i % 5
                ))
                .unwrap();
                let meta = NewMetadata::parse(
                    json!({"signature": format!("bench.S{}", i % 100), "performance": {"accuracy": (i % 100) as f64 / 100.0},
                           "optimization_method": "miprov2", "tags": ["bench"]}),
                    chrono::Utc::now(),
                )
                .unwrap();
                storage.store(&OPERATOR, &program, meta, None).await.unwrap();
            }
        }));
    }
    for h in handles {
        h.await.unwrap();
    }
}

async fn bench(label: &str, source: TestStore, target: TestStore, n: usize) {
    let t = Instant::now();
    populate(&source, n).await;
    let populate_s = t.elapsed().as_secs_f64();
    let loc = BackupLocation::new(source.storage.blobs().clone());

    reset_peak();
    let base = status_kb("VmRSS:");
    let t = Instant::now();
    let run = backup::create_backup(
        &OPERATOR,
        &source.storage,
        &loc,
        &BackupOptions {
            name: Some("bench".into()),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let backup_s = t.elapsed().as_secs_f64();
    let backup_peak = status_kb("VmHWM:");
    let BackupRun::Finished(m) = run else {
        panic!("not finished")
    };
    assert_eq!(m.counts.programs, n as u64);

    reset_peak();
    let restore_base = status_kb("VmRSS:");
    let t = Instant::now();
    let report = backup::restore(
        &OPERATOR,
        &target.storage,
        &loc,
        "bench",
        &RestoreOptions::default(),
    )
    .await
    .unwrap();
    let restore_s = t.elapsed().as_secs_f64();
    let restore_peak = status_kb("VmHWM:");
    assert_eq!(report.restored_programs, n as u64);
    println!(
        "BENCH {label:<9} programs={n:>6} populate={populate_s:>7.1}s backup={backup_s:>7.2}s \
         (rss before {base} kB, peak {backup_peak} kB, +{} kB) restore={restore_s:>7.2}s \
         (rss before {restore_base} kB, peak {restore_peak} kB, +{} kB) backup_size={} B parts={}",
        backup_peak.saturating_sub(base),
        restore_peak.saturating_sub(restore_base),
        m.size,
        m.parts.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "benchmark: run with --ignored --nocapture"]
async fn bench_backup_and_restore() {
    let sizes: Vec<usize> = std::env::var("BENCH_SIZES")
        .ok()
        .map(|s| s.split(',').filter_map(|x| x.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![1000, 10_000]);
    for &n in &sizes {
        bench("embedded", embedded().await, embedded().await, n).await;
    }
    if std::env::var("BENCH_AWS").is_ok_and(|v| v == "1") {
        let sizes: Vec<usize> = std::env::var("BENCH_AWS_SIZES")
            .ok()
            .map(|s| s.split(',').filter_map(|x| x.trim().parse().ok()).collect())
            .unwrap_or(sizes);
        for &n in &sizes {
            let (Some(a), Some(b)) = (aws().await, aws().await) else {
                return;
            };
            bench("aws", a, b, n).await;
        }
    }
}

/// AWS requests per operation of a backup, an incremental backup and a restore of 100 programs
/// over 100 signatures (AWS emulators only).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "benchmark: run with --ignored --nocapture"]
async fn bench_backup_request_counts() {
    let (Some(source), Some(target)) = (aws().await, aws().await) else {
        return;
    };
    populate(&source, 100).await;
    let loc = BackupLocation::new(source.storage.blobs().clone());
    let counter = source.counter.clone().unwrap();
    for name in ["first", "incremental"] {
        counter.reset();
        let opts = BackupOptions {
            name: Some(name.into()),
            ..Default::default()
        };
        backup::create_backup(&OPERATOR, &source.storage, &loc, &opts)
            .await
            .unwrap();
        println!("COUNTS backup {name}: {:?}", counter.snapshot());
    }
    counter.reset();
    let tc = target.counter.clone().unwrap();
    tc.reset();
    backup::restore(
        &OPERATOR,
        &target.storage,
        &loc,
        "first",
        &RestoreOptions::default(),
    )
    .await
    .unwrap();
    println!(
        "COUNTS restore: backup store {:?} target {:?}",
        counter.snapshot(),
        tc.snapshot()
    );
}
