//! Benchmark (not a timed test): latency of indexed searches at 100 and at 10,000 programs on
//! every backend. Two stores per backend, one of 100 programs and one of 10,000, hold the same 20
//! programs of the result; the others are in other signatures (and another method). The stores
//! are queried alternately so that machine load affects both alike. Besides the latency, it
//! prints what each query read from the item store (queries, items) and checks it is the same at
//! both sizes: the work does not depend on the programs outside the result.
//!
//! Run: `cargo test -p dspy-storage-tests --test it bench_search:: -- --ignored --nocapture`
//!
//! Seeding: the first version of each signature is stored through the API; further versions are
//! real records (program item with its index keys, version claim, tag and word index entries,
//! signature head)
//! cloned from it with new ids, versions and times and written with `ItemStore::batch_put`,
//! sharing the first version's (verified) blob.

use dspy_storage_core::access::OPERATOR;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration as StdDuration, Instant};

use async_trait::async_trait;
use chrono::Duration;
use dspy_storage_core::backend::{Item, ItemStore, Page, PageKey, Query, WriteOp};
use dspy_storage_core::domain::{ProgramId, Project, Signature, Version};
use dspy_storage_core::model::record::ProgramRecord;
use dspy_storage_core::storage::Storage;
use dspy_storage_core::Result;
use dspy_storage_functions::AppState;
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
    let template = ts.storage.get_record(&OPERATOR, &id).await.unwrap();
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
        items.extend(dspy_storage_core::model::text::index_items(&r));
        items.push(r.version_claim().to_item(&project, &sig));
        last = Some(r);
    }
    let mut head = ts
        .storage
        .get_head(&OPERATOR, &project, &sig)
        .await
        .unwrap();
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

/// Counts what the search engine reads from the item store: queries and items returned.
struct Counting {
    inner: Arc<dyn ItemStore>,
    queries: AtomicU64,
    items: AtomicU64,
}

#[async_trait]
impl ItemStore for Counting {
    async fn get(&self, pk: &str, sk: &str) -> Result<Option<Item>> {
        self.items.fetch_add(1, Relaxed);
        self.inner.get(pk, sk).await
    }
    async fn get_many(&self, keys: &[(String, String)]) -> Result<Vec<Option<Item>>> {
        let found = self.inner.get_many(keys).await?;
        self.items
            .fetch_add(found.iter().flatten().count() as u64, Relaxed);
        Ok(found)
    }
    async fn transact(&self, ops: Vec<WriteOp>) -> Result<()> {
        self.inner.transact(ops).await
    }
    async fn query(&self, query: &Query) -> Result<Page<Item>> {
        let page = self.inner.query(query).await?;
        self.queries.fetch_add(1, Relaxed);
        self.items.fetch_add(page.items.len() as u64, Relaxed);
        Ok(page)
    }
    async fn batch_put(&self, items: Vec<Item>) -> Result<()> {
        self.inner.batch_put(items).await
    }
    async fn batch_put_once(&self, items: Vec<Item>) -> Result<Vec<Item>> {
        self.inner.batch_put_once(items).await
    }
    async fn scan(&self, start: Option<PageKey>, limit: usize) -> Result<Page<Item>> {
        panic!("a search scanned the table ({start:?}, {limit})")
    }
}

/// A client whose storage counts its item reads (and refuses scans).
fn counted(ts: &TestStore) -> (Client, Arc<Counting>) {
    let counting = Arc::new(Counting {
        inner: ts.storage.items().clone(),
        queries: AtomicU64::new(0),
        items: AtomicU64::new(0),
    });
    let storage = Storage::new(
        counting.clone(),
        ts.storage.blobs().clone(),
        ts.storage.config().clone(),
        "counted",
    );
    let client = Client {
        router: dspy_storage_functions::app(AppState::new(Arc::new(storage))),
    };
    (client, counting)
}

/// Seeds a store with the 20 programs of the result and `total - 20` others in other signatures.
async fn seed_store(ts: &TestStore, total: usize) {
    seed(ts, "Target", 20, "targeted", |i| (i % 17) as f64 / 20.0).await;
    let mut left = total - 20;
    let mut s = 0;
    while left > 0 {
        let n = left.min(100);
        seed(ts, &format!("Noise{s:03}"), n, "noise", |i| {
            (i % 100) as f64 / 100.0
        })
        .await;
        left -= n;
        s += 1;
    }
    let check: Value = ts
        .client()
        .post_json("/aggregate", &json!({"metrics": {"n": {"count": "id"}}}))
        .await
        .expect(ts.kind, "count", 200);
    assert_eq!(check["groups"][0]["n"].as_u64(), Some(total as u64));
}

const QUERIES: [(&str, &str, usize); 5] = [
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
    (
        "free text target (word index), limit 10",
        "/search?q=target&limit=10",
        10,
    ),
    (
        "free text prefix targ method:targeted, limit 10",
        "/search?q=targ+method%3Atargeted&limit=10",
        10,
    ),
];

const ROUNDS: usize = 100;

fn median(mut xs: Vec<StdDuration>) -> (StdDuration, StdDuration) {
    xs.sort();
    (xs[xs.len() / 2], xs[xs.len() * 95 / 100])
}

#[tokio::test]
#[ignore = "benchmark: run with --ignored --nocapture"]
async fn search_latency_does_not_grow_with_unrelated_programs() {
    let small_stores = backends().await;
    let large_stores = backends().await;
    for (small, large) in small_stores.iter().zip(&large_stores) {
        let k: Kind = small.kind;
        let t = Instant::now();
        seed_store(small, 100).await;
        seed_store(large, 10_000).await;
        println!("\n== {k:?} backend: one store of 100 programs, one of 10,000 (seeded in {:.1?}); {ROUNDS} rounds, the two stores alternating ==", t.elapsed());
        let (cs, ns) = counted(small);
        let (cl, nl) = counted(large);
        for (name, uri, n) in QUERIES {
            let mut times = [Vec::new(), Vec::new()];
            let mut reads = [(0, 0), (0, 0)];
            for round in 0..ROUNDS + 10 {
                for (i, (c, counter)) in [(&cs, &ns), (&cl, &nl)].into_iter().enumerate() {
                    counter.queries.store(0, Relaxed);
                    counter.items.store(0, Relaxed);
                    let t = Instant::now();
                    let v = c.get(uri).await.expect(k, uri, 200);
                    let elapsed = t.elapsed();
                    assert_eq!(v["results"].as_array().unwrap().len(), n, "{uri}");
                    reads[i] = (counter.queries.load(Relaxed), counter.items.load(Relaxed));
                    if round >= 10 {
                        times[i].push(elapsed); // the first 10 rounds warm up
                    }
                }
            }
            let [ts_, tl] = times;
            let ((m1, p1), (m2, p2)) = (median(ts_), median(tl));
            println!(
                "{name:<48}  100: median {m1:>8.2?} p95 {p1:>8.2?}  ({} query, {} items read)   10,000: median {m2:>8.2?} p95 {p2:>8.2?}  ({} query, {} items read)   ratio {:.2}",
                reads[0].0, reads[0].1, reads[1].0, reads[1].1,
                m2.as_secs_f64() / m1.as_secs_f64()
            );
            assert_eq!(
                reads[0], reads[1],
                "{k:?} {name}: the work must not depend on unrelated programs"
            );
        }
        if let (Some(a), Some(b)) = (&small.counter, &large.counter) {
            a.reset();
            b.reset();
        }
    }
}
