//! Benchmark (not a timed test): latency of indexed searches at 100 and at 10,000 programs on
//! every backend. The result set is the same 20 programs each time; the other programs are in
//! other signatures, so an indexed query must not slow down as they are added.
//!
//! Run: `cargo test -p dspy-storage-tests --test bench_search -- --ignored --nocapture`
//!
//! Seeding: the first version of each signature is stored through the API; further versions are
//! real records (program item with its index keys, version claim, tag entries, signature head)
//! cloned from it with new ids, versions and times and written with `ItemStore::batch_put`,
//! sharing the first version's (verified) blob.

use std::time::{Duration as StdDuration, Instant};

use chrono::Duration;
use dspy_storage_core::backend::Item;
use dspy_storage_core::domain::{ProgramId, Project, Signature, Version};
use dspy_storage_core::record::ProgramRecord;
use dspy_storage_tests::{backends, Client, Kind, TestStore};
use serde_json::{json, Value};

/// Stores `count` programs of `signature`: the first through the API, the rest by batch_put.
async fn seed(
    ts: &TestStore,
    signature: &str,
    count: usize,
    method: &str,
    perf: impl Fn(usize) -> f64,
) {
    let c = ts.client();
    let first = c
        .post_json(
            "/programs",
            &json!({"program": {"signature": signature, "demos": []},
                    "metadata": {"signature": signature, "performance": perf(0),
                                 "optimization_method": method, "tags": ["bench"]}}),
        )
        .await
        .expect(ts.kind, "seed store", 201);
    if count == 1 {
        return;
    }
    let id = ProgramId::parse(first["id"].as_str().unwrap()).unwrap();
    let template = ts.storage.get_record(&id).await.unwrap();
    let project = Project::default_project();
    let sig = Signature::parse(signature).unwrap();
    let mut items: Vec<Item> = Vec::new();
    let mut last: Option<ProgramRecord> = None;
    for i in 1..count {
        let mut r = template.clone();
        r.id = ProgramId::new();
        r.version = Version::parse(&format!("1.0.{i}")).unwrap();
        r.created_at = template.created_at - Duration::seconds(i as i64);
        r.updated_at = r.created_at;
        r.primary_score = Some(perf(i));
        r.metadata
            .insert("version".into(), json!(r.version.to_string()));
        r.metadata.insert("performance".into(), json!(perf(i)));
        r.previous_version = None;
        items.push(r.to_item());
        items.extend(r.tag_items());
        items.push(r.version_claim().to_item(&project, &sig));
        last = Some(r);
    }
    let mut head = ts.storage.get_head(&project, &sig).await.unwrap();
    let last = last.unwrap();
    head.versions = count as u64;
    head.latest_version = last.version.clone();
    head.latest_id = last.id;
    head.rev += 1;
    items.push(head.to_item());
    for chunk in items.chunks(1000) {
        ts.storage.items().batch_put(chunk.to_vec()).await.unwrap();
    }
}

struct Figures {
    median: StdDuration,
    p95: StdDuration,
    requests: Option<u64>,
}

async fn measure(ts: &TestStore, c: &Client, uri: &str, expect: usize) -> Figures {
    for _ in 0..20 {
        c.get(uri).await.expect(ts.kind, uri, 200);
    }
    let mut times = Vec::new();
    let mut requests = None;
    for _ in 0..60 {
        if let Some(counter) = &ts.counter {
            counter.reset();
        }
        let t = Instant::now();
        let v = c.get(uri).await.expect(ts.kind, uri, 200);
        times.push(t.elapsed());
        assert_eq!(v["results"].as_array().unwrap().len(), expect, "{uri}");
        if let Some(counter) = &ts.counter {
            requests = Some(counter.snapshot().values().sum());
        }
    }
    times.sort();
    Figures {
        median: times[times.len() / 2],
        p95: times[times.len() * 95 / 100],
        requests,
    }
}

const QUERIES: [(&str, &str, usize); 3] = [
    (
        "signature:Target sorted by performance, limit 10",
        "/search?q=signature%3ATarget&sort=-performance&limit=10",
        10,
    ),
    (
        "signature:Target newest first, limit 10",
        "/search?q=signature%3ATarget&limit=10",
        10,
    ),
    (
        "method:targeted (GSI3), limit 10",
        "/search?q=method%3Atargeted&limit=10",
        10,
    ),
];

#[tokio::test]
#[ignore = "benchmark: run with --ignored --nocapture"]
async fn search_latency_does_not_grow_with_unrelated_programs() {
    for ts in backends().await {
        let c = ts.client();
        let k: Kind = ts.kind;
        // 20 programs in the result's partition, 80 others: 100 programs.
        seed(&ts, "Target", 20, "targeted", |i| (i % 17) as f64 / 20.0).await;
        for s in 0..4 {
            seed(&ts, &format!("Noise{s:02}"), 20, "noise", |i| {
                i as f64 / 100.0
            })
            .await;
        }
        let small: Vec<Figures> = {
            let mut v = Vec::new();
            for (_, uri, n) in QUERIES {
                v.push(measure(&ts, &c, uri, n).await);
            }
            v
        };
        // 9,900 more programs in 99 other signatures: 10,000 programs.
        let t = Instant::now();
        for s in 4..103 {
            seed(&ts, &format!("Noise{s:02}"), 100, "noise", |i| {
                (i % 100) as f64 / 100.0
            })
            .await;
        }
        let seeded = t.elapsed();
        let check: Value = c
            .post_json("/aggregate", &json!({"metrics": {"n": {"count": "id"}}}))
            .await
            .expect(k, "count", 200);
        let total = check["groups"][0]["n"].as_u64().unwrap();
        let mut large = Vec::new();
        for (_, uri, n) in QUERIES {
            large.push(measure(&ts, &c, uri, n).await);
        }
        println!(
            "\n== {k:?} backend: {total} programs after seeding (9,900 seeded in {seeded:.1?}) =="
        );
        for (i, (name, _, _)) in QUERIES.iter().enumerate() {
            let (a, b) = (&small[i], &large[i]);
            println!(
                "{name:<50}    100 programs: median {:>8.2?} p95 {:>8.2?}{}    10,000 programs: median {:>8.2?} p95 {:>8.2?}{}    ratio {:.2}",
                a.median,
                a.p95,
                a.requests.map(|r| format!(" ({r} request)")).unwrap_or_default(),
                b.median,
                b.p95,
                b.requests.map(|r| format!(" ({r} request)")).unwrap_or_default(),
                b.median.as_secs_f64() / a.median.as_secs_f64()
            );
        }
        assert_eq!(total, 10_000);
    }
}
