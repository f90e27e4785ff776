//! Benchmark (ignored by default): history and trend latency for 1,000 and 100,000 metric records
//! of ONE program, on every backend of `backends()`, seeded through the API with batches of
//! 1,000 records (one transaction of blocks each), spread over the last 90 days.
//!
//! `cargo test -p dspy-storage-tests --test it bench_trends:: -- --ignored --nocapture`

use std::time::Instant;

use chrono::{Duration, Utc};
use dspy_storage_tests::{backends, Client, Kind};
use serde_json::{json, Value};

async fn seed(c: &Client, k: Kind, id: &str, n: usize) -> f64 {
    let start = Utc::now() - Duration::days(90);
    let step_ms = 90 * 86_400_000 / n as i64;
    let t0 = Instant::now();
    for chunk in 0..n.div_ceil(1000) {
        let records: Vec<Value> = (chunk * 1000..((chunk + 1) * 1000).min(n))
            .map(|i| {
                let ts = start + Duration::milliseconds(step_ms * i as i64);
                json!({
                    "metrics": {"accuracy": 0.7 + 0.2 * (i as f64 / n as f64) + 0.01 * ((i % 7) as f64),
                                "latency": 1.5 - (i as f64 / n as f64), "cost": 0.002},
                    "timestamp": ts.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                    "environment": {"dspy_version": "3.0.0", "host": "bench"}
                })
            })
            .collect();
        c.post_json(
            &format!("/programs/{id}/metrics"),
            &json!({"records": records}),
        )
        .await
        .expect(k, "seed batch", 201);
    }
    t0.elapsed().as_secs_f64()
}

async fn timed(c: &Client, k: Kind, uri: &str) -> (f64, Value) {
    let t0 = Instant::now();
    let a = c.get(uri).await;
    let ms = t0.elapsed().as_secs_f64() * 1000.0;
    a.expect_status(k, uri, 200);
    let v = if uri.contains(".svg") {
        json!({"records": a.body.len()})
    } else {
        a.json()
    };
    (ms, v)
}

#[tokio::test]
#[ignore]
async fn bench_history_and_trends() {
    for ts in backends().await {
        let (k, c) = (ts.kind, ts.client());
        for n in [1_000usize, 100_000] {
            let body = json!({
                "program": {"predict": {"demos": []}},
                "metadata": {"signature": format!("bench.N{n}"),
                             "created_at": (Utc::now() - Duration::days(100)).to_rfc3339()}
            });
            let id = c
                .post_json("/programs", &body)
                .await
                .expect(k, "store", 201)["id"]
                .as_str()
                .unwrap()
                .to_owned();
            let seed_s = seed(&c, k, &id, n).await;
            println!(
                "BENCH {k:?} n={n}: seeded in {seed_s:.1} s ({:.0} records/s)",
                n as f64 / seed_s
            );
            let counter = ts.counter.clone();
            let run = |label: &str, ms: f64, v: &Value| {
                let reqs = counter
                    .as_ref()
                    .map(|c| {
                        let s = format!(
                            ", {} Query + {} GetItem",
                            c.count("DynamoDB.Query"),
                            c.count("DynamoDB.GetItem")
                        );
                        c.reset();
                        s
                    })
                    .unwrap_or_default();
                let records = v["records"]
                    .as_array()
                    .map(|a| a.len() as u64)
                    .or_else(|| v["records"].as_u64())
                    .unwrap_or(0);
                println!("BENCH {k:?} n={n}: {label:<38} {ms:>9.1} ms, {records} records{reqs}");
            };
            if let Some(c) = &counter {
                c.reset();
            }
            let (ms, v) = timed(&c, k, &format!("/programs/{id}/metrics?limit=100")).await;
            run("history first page (limit=100)", ms, &v);
            let cur = v["next_cursor"].as_str().unwrap_or_default().to_owned();
            let (ms, v) = timed(
                &c,
                k,
                &format!("/programs/{id}/metrics?limit=1000&cursor={cur}"),
            )
            .await;
            run("history next page (limit=1000)", ms, &v);
            let from = (Utc::now() - Duration::days(45))
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
            let (ms, v) = timed(
                &c,
                k,
                &format!("/programs/{id}/metrics?limit=100&from={from}"),
            )
            .await;
            run("history from 45 days ago (limit=100)", ms, &v);
            for days in [7, 30, 90] {
                let uri = format!("/programs/{id}/trends?days={days}");
                let (ms, v) = timed(&c, k, &uri).await;
                run(&format!("trends days={days} (cold)"), ms, &v);
                let (ms, v) = timed(&c, k, &uri).await;
                run(&format!("trends days={days} (cached)"), ms, &v);
            }
            // One more record (today): only today is read again.
            c.post_json(
                &format!("/programs/{id}/metrics"),
                &json!({"metrics": {"accuracy": 0.9}}),
            )
            .await
            .expect(k, "one more", 201);
            if let Some(c) = &counter {
                println!("BENCH {k:?} n={n}: POST one record: {:?}", c.snapshot());
                c.reset();
            }
            let (ms, v) = timed(&c, k, &format!("/programs/{id}/trends?days=90")).await;
            run("trends days=90 after a new record", ms, &v);
            let (ms, v) = timed(&c, k, &format!("/programs/{id}/trends.svg?days=90")).await;
            println!(
                "BENCH {k:?} n={n}: chart days=90: {ms:.1} ms, {} bytes of SVG",
                v["records"]
            );
        }
    }
}
