//! Performance tracking through HTTP on every backend of `backends()` (embedded always, AWS when
//! an endpoint is configured): metric records (single and batch, bad input), history paging by
//! time range, trend math against hand-computed values (records lacking a metric, single-point
//! series, gaps of days), signature trends, SVG charts (parsed), optimization runs (API and
//! DSPy.rb import), batch writes with injected unprocessed items, counters and the report.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Duration, Utc};
use dspy_storage_core::access::OPERATOR;
use dspy_storage_core::backend::{Item, ItemStore, Page, PageKey, Query, WriteOp};
use dspy_storage_core::config::StorageConfig;
use dspy_storage_core::storage::Storage;
use dspy_storage_functions::AppState;
use dspy_storage_tests::{backends, shared_program, Client, Kind, TestStore};
use http::Method;
use serde_json::{json, Value};

fn t(v: DateTime<Utc>) -> String {
    v.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Midnight UTC `days_ago` days before today.
fn day(days_ago: i64) -> DateTime<Utc> {
    (Utc::now().date_naive() - Duration::days(days_ago))
        .and_hms_opt(0, 0, 0)
        .unwrap()
        .and_utc()
}

fn close(k: Kind, what: &str, got: &Value, want: f64) {
    let g = got
        .as_f64()
        .unwrap_or_else(|| panic!("{k:?}: {what} is not a number: {got}"));
    assert!((g - want).abs() < 1e-9, "{k:?}: {what}: {g} != {want}");
}

async fn store(c: &Client, k: Kind, signature: &str, created_days_ago: i64) -> String {
    let body = json!({
        "program": {"predict": {"demos": [], "signature": {"instructions": format!("Answer {signature}.")}}},
        "metadata": {"signature": signature, "created_at": t(Utc::now() - Duration::days(created_days_ago))}
    });
    let v = c
        .post_json("/programs", &body)
        .await
        .expect(k, "store", 201);
    v["id"].as_str().unwrap().to_owned()
}

// ----- records, history, trends --------------------------------------------------------------

#[tokio::test]
async fn records_history_and_trends() {
    for ts in backends().await {
        let (k, c) = (ts.kind, ts.client());
        let id = store(&c, k, "qa.Answer", 40).await;
        let d = day(30);
        let h = |days: i64, hour: i64| t(d + Duration::days(days) + Duration::hours(hour));
        let env = json!({"dspy_version": "3.0.0", "python": "3.11.9", "host": "ci-1", "git_commit": "abc123"});
        let batch = json!({"records": [
            {"metrics": {"accuracy": 0.60, "latency": 2.0}, "timestamp": h(0, 10), "environment": env},
            {"metrics": {"accuracy": 0.80}, "timestamp": h(0, 11)},
            {"metrics": {"latency": 4.0}, "timestamp": h(0, 12)},
            {"metrics": {"accuracy": 0.72, "latency": 2.0}, "timestamp": h(1, 10)},
        ]});
        let v = c
            .post_json(&format!("/programs/{id}/metrics"), &batch)
            .await
            .expect(k, "batch", 201);
        assert_eq!(v["recorded"], 4, "{k:?}: {v}");
        // One record; a gap of three days.
        let one = json!({"metrics": {"accuracy": 0.80, "latency": 1.0, "cost": 0.003}, "timestamp": h(4, 10)});
        c.post_json(&format!("/programs/{id}/metrics"), &one)
            .await
            .expect(k, "single", 201);

        // Bad input: 4xx in the error shape, nothing written.
        let bad = [
            json!({"metrics": {"accuracy": "high"}}),
            json!({"metrics": {}}),
            json!({"metrics": {"bad name": 1}}),
            json!({"metrics": {"a": 1}, "timestamp": t(Utc::now() + Duration::days(1))}),
            json!({"metrics": {"a": 1}, "timestamp": t(Utc::now() + Duration::hours(1))}),
            json!({"metrics": {"a": 1}, "timestamp": "1999-12-31T23:59:59.999Z"}),
            json!({"metrics": {"a": 1}, "timestamp": "yesterday"}),
            json!({"metrics": {"a": 1}, "extra": 1}),
            json!({"metrics": {"a": 1}, "environment": "x"}),
            json!({"records": []}),
            json!({"records": [{"metrics": {"a": 1}}, {"metrics": {"a": null}}]}),
            json!({"records": vec![json!({"metrics": {"a": 1}}); 1001]}),
            json!([1]),
        ];
        for b in &bad {
            c.post_json(&format!("/programs/{id}/metrics"), b)
                .await
                .expect_error(
                    k,
                    &format!(
                        "bad record {}",
                        &b.to_string()[..b.to_string().len().min(80)]
                    ),
                    400,
                    "invalid_request",
                );
        }
        c.post_raw(&format!("/programs/{id}/metrics"), "{nope")
            .await
            .expect_error(k, "bad JSON", 400, "invalid_request");
        let missing = uuid::Uuid::now_v7();
        c.post_json(&format!("/programs/{missing}/metrics"), &one)
            .await
            .expect_error(k, "unknown program", 404, "not_found");

        // History: oldest first, paged, every record once, environment and receive time kept.
        let mut seen = Vec::new();
        let mut uri = format!("/programs/{id}/metrics?limit=2");
        let mut pages = 0;
        loop {
            let v = c.get(&uri).await.expect(k, "history page", 200);
            pages += 1;
            for r in v["records"].as_array().unwrap() {
                seen.push(r.clone());
            }
            match v["next_cursor"].as_str() {
                Some(cur) => uri = format!("/programs/{id}/metrics?limit=2&cursor={cur}"),
                None => break,
            }
        }
        assert_eq!(seen.len(), 5, "{k:?}: history {seen:?}");
        assert!(pages >= 3, "{k:?}: pages {pages}");
        let times: Vec<&str> = seen
            .iter()
            .map(|r| r["timestamp"].as_str().unwrap())
            .collect();
        let mut sorted = times.clone();
        sorted.sort();
        assert_eq!(times, sorted, "{k:?}: oldest first");
        assert_eq!(seen[0]["environment"], env, "{k:?}");
        assert!(seen[0]["received_at"].is_string(), "{k:?}");
        assert_eq!(seen[0]["program_id"], id.as_str(), "{k:?}");
        // A time range.
        let v = c
            .get(&format!(
                "/programs/{id}/metrics?from={}&to={}",
                t(d + Duration::days(1)),
                t(d + Duration::days(2))
            ))
            .await
            .expect(k, "range", 200);
        assert_eq!(v["records"].as_array().unwrap().len(), 1, "{k:?}: {v}");
        close(
            k,
            "range record",
            &v["records"][0]["metrics"]["accuracy"],
            0.72,
        );
        // Bad history parameters.
        for q in [
            "limit=0",
            "limit=10001",
            "from=x",
            "cursor=zzz",
            "from=2026-02-01T00:00:00Z&to=2026-01-01T00:00:00Z",
        ] {
            c.get(&format!("/programs/{id}/metrics?{q}"))
                .await
                .expect_error(k, q, 400, "invalid_request");
        }
        let other = store(&c, k, "qa.Other", 1).await;
        let first = c
            .get(&format!("/programs/{id}/metrics?limit=1"))
            .await
            .json();
        let cur = first["next_cursor"].as_str().unwrap();
        c.get(&format!("/programs/{other}/metrics?cursor={cur}"))
            .await
            .expect_error(k, "cursor of another program", 400, "invalid_request");

        // Trends, hand-computed:
        // accuracy: day 0 (0.60 + 0.80) / 2 = 0.70 (the latency-only record does not count),
        //           day 1 0.72, day 4 0.80 → slope 1.98 / 78 per day, improving.
        // latency:  day 0 (2.0 + 4.0) / 2 = 3.0, day 1 2.0, day 4 1.0 → slope −36/78, improving.
        // cost:     one point → no slope, stable.
        let v = c
            .get(&format!("/programs/{id}/trends?days=90"))
            .await
            .expect(k, "trends", 200);
        let m = &v["metrics"];
        close(
            k,
            "accuracy day 0",
            &m["accuracy"]["points"][0]["value"],
            0.70,
        );
        assert_eq!(m["accuracy"]["points"][0]["count"], 2, "{k:?}");
        close(
            k,
            "accuracy slope",
            &m["accuracy"]["slope_per_day"],
            1.98 / 78.0,
        );
        close(
            k,
            "accuracy change_30d",
            &m["accuracy"]["change_30d"],
            30.0 * 1.98 / 78.0,
        );
        close(k, "accuracy current", &m["accuracy"]["current"], 0.80);
        assert_eq!(m["accuracy"]["trend"], "improving", "{k:?}");
        close(k, "latency day 0", &m["latency"]["points"][0]["value"], 3.0);
        close(
            k,
            "latency slope",
            &m["latency"]["slope_per_day"],
            -36.0 / 78.0,
        );
        assert_eq!(m["latency"]["trend"], "improving", "{k:?}");
        assert_eq!(m["cost"]["slope_per_day"], Value::Null, "{k:?}");
        assert_eq!(m["cost"]["trend"], "stable", "{k:?}");
        let daily = v["daily"].as_array().unwrap();
        assert_eq!(daily.len(), 3, "{k:?}: {daily:?}");
        assert_eq!(daily[0]["date"], d.date_naive().to_string(), "{k:?}");
        close(k, "daily accuracy", &daily[0]["accuracy"], 0.70);
        assert!(
            daily[1].get("cost").is_none(),
            "{k:?}: a day lists only its metrics"
        );
        assert_eq!(v["records"], 5, "{k:?}");
        // A window without records; bad windows.
        let v = c
            .get(&format!("/programs/{id}/trends?days=7"))
            .await
            .expect(k, "7 days", 200);
        assert_eq!(v["metrics"], json!({}), "{k:?}");
        for q in ["days=0", "days=x", "days=100000"] {
            c.get(&format!("/programs/{id}/trends?{q}"))
                .await
                .expect_error(k, q, 400, "invalid_request");
        }
        c.get(&format!("/programs/{missing}/trends"))
            .await
            .expect_error(k, "unknown program trends", 404, "not_found");

        // Signature trends merge versions: a second version records accuracy 1.0 on day 4.
        let v2 = store(&c, k, "qa.Answer", 35).await;
        c.post_json(
            &format!("/programs/{v2}/metrics"),
            &json!({"metrics": {"accuracy": 1.0}, "timestamp": h(4, 12)}),
        )
        .await
        .expect(k, "v2 record", 201);
        let v =
            c.get("/signatures/qa.Answer/trends?days=90")
                .await
                .expect(k, "signature trends", 200);
        assert_eq!(v["programs"].as_array().unwrap().len(), 2, "{k:?}: {v}");
        close(k, "merged day 4", &v["metrics"]["accuracy"]["current"], 0.9);
        assert_eq!(v["records"], 6, "{k:?}");
        // Cached daily sums never go stale: the same answer twice, then a backfilled record on
        // day 0 and a write "in flight" on day 1 (its start counted, its end not) are seen.
        let uri = format!("/programs/{id}/trends?days=90");
        let again = c.get(&uri).await.expect(k, "trends again", 200);
        if let Some(counter) = &ts.counter {
            counter.reset();
        }
        let first = c.get(&uri).await.expect(k, "trends cached", 200);
        if let Some(counter) = &ts.counter {
            // A cached trend: the program, then one query of day items per month of the window
            // (90 days: 4 months at most), no record read and nothing written.
            let q = counter.count("DynamoDB.Query");
            println!("cached 90-day trend: {:?}", counter.snapshot());
            assert!(q <= 4, "{k:?}: {q} queries");
            assert_eq!(counter.count("DynamoDB.TransactWriteItems"), 0, "{k:?}");
        }
        assert_eq!(
            first["metrics"], again["metrics"],
            "{k:?}: cached = computed"
        );
        assert_eq!(first["daily"], again["daily"], "{k:?}");
        c.post_json(
            &format!("/programs/{id}/metrics"),
            &json!({"metrics": {"accuracy": 1.0}, "timestamp": h(0, 13)}),
        )
        .await
        .expect(k, "backfill", 201);
        let pid = dspy_storage_core::domain::ProgramId::parse(&id).unwrap();
        let day1 = (d + Duration::days(1)).date_naive();
        let month = dspy_storage_core::tracking::metrics::month_of(&(d + Duration::days(1)));
        ts.storage
            .items()
            .transact(vec![WriteOp::Add {
                pk: dspy_storage_core::model::keys::metric_pk(&pid, &month),
                sk: dspy_storage_core::model::keys::metric_day_sk(&day1),
                add: vec![("n_w".into(), 1)],
                set: vec![],
                remove: Vec::new(),
            }])
            .await
            .unwrap();
        let v = c.get(&uri).await.expect(k, "trends after backfill", 200);
        // Day 0: (0.60 + 0.80 + 1.0) / 3 = 0.8.
        close(
            k,
            "backfilled day 0",
            &v["metrics"]["accuracy"]["points"][0]["value"],
            0.8,
        );
        assert_eq!(v["metrics"]["accuracy"]["points"][0]["count"], 3, "{k:?}");
        close(
            k,
            "day 1 read again",
            &v["metrics"]["accuracy"]["points"][1]["value"],
            0.72,
        );
        assert_eq!(v["records"], 6, "{k:?}");
        let v2 = c
            .get(&uri)
            .await
            .expect(k, "trends cached after backfill", 200);
        assert_eq!(v2["daily"], v["daily"], "{k:?}");
        c.get("/signatures/Nope/trends").await.expect_error(
            k,
            "unknown signature",
            404,
            "not_found",
        );
        c.get("/signatures/bad%20sig/trends").await.expect_error(
            k,
            "bad signature",
            400,
            "invalid_request",
        );
    }
}

// ----- charts --------------------------------------------------------------------------------

fn parse_svg(k: Kind, body: &[u8]) -> String {
    let text = String::from_utf8(body.to_vec()).expect("utf-8");
    roxmltree::Document::parse(&text).unwrap_or_else(|e| panic!("{k:?}: SVG does not parse: {e}"));
    text
}

#[tokio::test]
async fn charts_are_real_line_charts() {
    for ts in backends().await {
        let (k, c) = (ts.kind, ts.client());
        let id = store(&c, k, "chart.Sig", 20).await;
        let records: Vec<Value> = (0..10)
            .map(|i| {
                json!({"metrics": {"accuracy": 0.7 + 0.02 * i as f64, "latency": 2.0 - 0.1 * i as f64},
                       "timestamp": t(day(12 - i) + Duration::hours(9))})
            })
            .collect();
        c.post_json(
            &format!("/programs/{id}/metrics"),
            &json!({"records": records}),
        )
        .await
        .expect(k, "records", 201);
        for uri in [
            format!("/programs/{id}/trends.svg?days=30"),
            "/signatures/chart.Sig/trends.svg?days=30".to_owned(),
        ] {
            let a = c.get(&uri).await;
            a.expect_status(k, &uri, 200);
            assert!(
                a.headers["content-type"]
                    .to_str()
                    .unwrap()
                    .starts_with("image/svg+xml"),
                "{k:?}"
            );
            let text = parse_svg(k, &a.body);
            let doc = roxmltree::Document::parse(&text).unwrap();
            let root = doc.root_element();
            assert_eq!(root.tag_name().name(), "svg");
            let by_class = |class: &str| -> Vec<roxmltree::Node> {
                doc.descendants()
                    .filter(|n| n.attribute("class") == Some(class))
                    .collect()
            };
            let title = by_class("title");
            assert_eq!(title.len(), 1, "{k:?}: one title");
            assert!(title[0].text().unwrap().contains("chart.Sig"), "{k:?}");
            let series = by_class("series");
            assert_eq!(series.len(), 2, "{k:?}: one line per metric");
            for s in &series {
                let pts = s.attribute("points").unwrap().split_whitespace().count();
                assert_eq!(pts, 10, "{k:?}: ten daily points");
            }
            let legend: Vec<_> = by_class("legend-item");
            let names: Vec<_> = legend
                .iter()
                .map(|n| n.attribute("data-metric").unwrap())
                .collect();
            assert_eq!(names, ["accuracy", "latency"], "{k:?}");
            let x_ticks: Vec<String> = by_class("x-tick")
                .iter()
                .map(|n| n.text().unwrap().to_owned())
                .collect();
            assert!(x_ticks.len() >= 3, "{k:?}: date ticks {x_ticks:?}");
            assert!(
                x_ticks
                    .iter()
                    .all(|d| chrono::NaiveDate::parse_from_str(d, "%Y-%m-%d").is_ok()),
                "{k:?}: {x_ticks:?}"
            );
            let y_ticks: Vec<f64> = by_class("y-tick")
                .iter()
                .map(|n| n.text().unwrap().parse().unwrap())
                .collect();
            assert!(y_ticks.len() >= 6, "{k:?}: value ticks {y_ticks:?}");
            // The accuracy axis covers its values (0.70 – 0.88).
            assert!(
                y_ticks.iter().any(|v| *v <= 0.7) && y_ticks.iter().any(|v| *v >= 0.88),
                "{k:?}: {y_ticks:?}"
            );
        }
        // An empty window still answers a chart.
        let a = c.get(&format!("/programs/{id}/trends.svg?days=1")).await;
        a.expect_status(k, "empty chart", 200);
        parse_svg(k, &a.body);
        if std::env::var("DSPY_CHART_OUT").is_ok() && k == Kind::Embedded {
            let a = c.get(&format!("/programs/{id}/trends.svg?days=30")).await;
            std::fs::write(std::env::var("DSPY_CHART_OUT").unwrap(), &a.body).unwrap();
        }
    }
}

// ----- optimization runs ---------------------------------------------------------------------

#[tokio::test]
async fn optimization_runs() {
    for ts in backends().await {
        let (k, c) = (ts.kind, ts.client());
        let p1 = store(&c, k, "runs.Sig", 1).await;
        let p2 = store(&c, k, "runs.Sig", 1).await;
        let body = json!({
            "signature": "runs.Sig", "method": "miprov2",
            "parameters": {"num_candidates": 8, "auto": "light"},
            "trials": [{"params": {"t": 1}, "score": 0.5}, {"params": {"t": 2}, "score": 0.8}],
            "best_score": 0.8, "trainset": {"size": 120, "sha256": "a".repeat(64)},
            "duration_s": 93.5, "started_at": "2026-11-01T10:00:00Z", "finished_at": "2026-11-01T10:01:33.500Z",
            "program_ids": [p1, p2]
        });
        let v = c
            .post_json("/optimization-runs", &body)
            .await
            .expect(k, "run", 201);
        let run_id = v["id"].as_str().unwrap().to_owned();
        let run = c
            .get(&format!("/optimization-runs/{run_id}"))
            .await
            .expect(k, "get run", 200);
        assert_eq!(run["method"], "miprov2", "{k:?}");
        assert_eq!(run["trials"].as_array().unwrap().len(), 2, "{k:?}");
        assert_eq!(run["program_ids"], json!([p1, p2]), "{k:?}");
        assert_eq!(run["trainset"]["size"], 120, "{k:?}");
        for p in [&p1, &p2] {
            let m = c
                .get(&format!("/programs/{p}/metadata"))
                .await
                .expect(k, "linked", 200);
            assert_eq!(
                m["metadata"]["optimization_run_id"],
                run_id.as_str(),
                "{k:?}"
            );
        }
        let other = json!({"signature": "runs.Sig", "method": "bootstrap", "trials": [{"params": {}, "score": 0.6}]});
        let v = c
            .post_json("/optimization-runs", &other)
            .await
            .expect(k, "run 2", 201);
        assert_eq!(v["run"]["best_score"], 0.6, "{k:?}: best of the trials");
        let all = c
            .get("/optimization-runs?signature=runs.Sig")
            .await
            .expect(k, "list", 200);
        assert_eq!(all["runs"].as_array().unwrap().len(), 2, "{k:?}");
        assert_eq!(all["runs"][0]["method"], "bootstrap", "{k:?}: newest first");
        let m = c
            .get("/optimization-runs?signature=runs.Sig&method=miprov2")
            .await
            .expect(k, "by both", 200);
        assert_eq!(m["runs"].as_array().unwrap().len(), 1, "{k:?}");
        let m = c
            .get("/optimization-runs?method=bootstrap")
            .await
            .expect(k, "by method", 200);
        assert_eq!(m["runs"].as_array().unwrap().len(), 1, "{k:?}");
        let m = c.get("/optimization-runs").await.expect(k, "all", 200);
        assert_eq!(m["runs"].as_array().unwrap().len(), 2, "{k:?}");

        // Bad input.
        let missing = uuid::Uuid::now_v7().to_string();
        let bad = [
            json!({"method": "x"}),
            json!({"signature": "runs.Sig"}),
            json!({"signature": "runs.Sig", "method": "a#b"}),
            json!({"signature": "runs.Sig", "method": "m", "program_ids": [missing]}),
            json!({"signature": "runs.Sig", "method": "m", "program_ids": ["nope"]}),
            json!({"signature": "runs.Sig", "method": "m", "started_at": "2026-11-02T00:00:00Z", "finished_at": "2026-11-01T00:00:00Z"}),
            json!({"signature": "runs.Sig", "method": "m", "trainset": {"sha256": "xyz"}}),
            json!({"signature": "runs.Sig", "method": "m", "unknown": 1}),
            json!({"signature": "runs.Sig", "method": "m", "duration_s": -1}),
        ];
        for b in &bad {
            c.post_json("/optimization-runs", b).await.expect_error(
                k,
                &format!("bad run {b}"),
                400,
                "invalid_request",
            );
        }
        c.get(&format!("/optimization-runs/{missing}"))
            .await
            .expect_error(k, "missing run", 404, "not_found");
        c.get("/optimization-runs/nope")
            .await
            .expect_error(k, "bad run id", 404, "not_found");
        c.get("/optimization-runs?method=a%23b").await.expect_error(
            k,
            "bad method",
            400,
            "invalid_request",
        );

        // Import from a DSPy.rb saved-program envelope.
        let text = shared_program("dspyrb_chain_of_thought_miprov2.json");
        let body = format!(
            r#"{{"program": {text}, "metadata": {{"signature": "ManageExtractionConversation"}}}}"#
        );
        let v = c
            .post_raw("/programs?import_optimization=true", body)
            .await
            .expect(k, "import", 201);
        let pid = v["id"].as_str().unwrap().to_owned();
        let run_id = v["optimization_run_id"].as_str().unwrap().to_owned();
        let run =
            c.get(&format!("/optimization-runs/{run_id}"))
                .await
                .expect(k, "imported run", 200);
        assert_eq!(run["method"], "MIPROv2", "{k:?}");
        assert_eq!(run["source"], "dspy.rb", "{k:?}");
        let scores: Vec<f64> = run["trials"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["score"].as_f64().unwrap())
            .collect();
        assert_eq!(scores, [0.5, 1.0, 1.0, 1.0], "{k:?}");
        assert_eq!(run["best_score"], 1.0, "{k:?}");
        assert_eq!(run["trainset"]["size"], 10, "{k:?}");
        assert_eq!(run["duration_s"], 33.23, "{k:?}");
        assert_eq!(run["finished_at"], "2025-08-18T13:44:42Z", "{k:?}");
        assert_eq!(run["program_ids"], json!([pid]), "{k:?}");
        let got = c.get(&format!("/programs/{pid}")).await;
        got.expect_status(k, "imported program", 200);
        assert_eq!(
            got.raw_program(),
            text.trim(),
            "{k:?}: byte-identical program"
        );
        assert_eq!(
            got.json()["metadata"]["optimization_run_id"],
            run_id.as_str(),
            "{k:?}"
        );
        // A failed import (the version is taken) leaves no run behind.
        let body = format!(
            r#"{{"program": {text}, "metadata": {{"signature": "ManageExtractionConversation", "version": "1.0.0"}}}}"#
        );
        c.post_raw("/programs?import_optimization=true", body)
            .await
            .expect_error(k, "import of a taken version", 409, "conflict");
        let runs = c
            .get("/optimization-runs?signature=ManageExtractionConversation")
            .await
            .expect(k, "runs of the imported signature", 200);
        assert_eq!(runs["runs"].as_array().unwrap().len(), 1, "{k:?}: {runs}");
        // A program that is not an envelope: 400, nothing stored.
        let before = c.get("/signatures/plain.Sig/versions").await;
        before.expect_status(k, "no versions yet", 404);
        c.post_json(
            "/programs?import_optimization=true",
            &json!({"program": {"x": 1}, "metadata": {"signature": "plain.Sig"}}),
        )
        .await
        .expect_error(k, "import of a non-envelope", 400, "invalid_request");
        c.get("/signatures/plain.Sig/versions")
            .await
            .expect_status(k, "still nothing", 404);
    }
}

// ----- batch writes with injected unprocessed items ------------------------------------------

/// An item store that counts batch writes and transactions, and throttles every transaction
/// when `never` is set (a throttle that outlasts the retries).
struct Unreliable {
    inner: Arc<dyn ItemStore>,
    calls: AtomicUsize,
    transactions: AtomicUsize,
    never: bool,
}

#[async_trait]
impl ItemStore for Unreliable {
    async fn get(&self, pk: &str, sk: &str) -> dspy_storage_core::Result<Option<Item>> {
        self.inner.get(pk, sk).await
    }
    async fn transact(&self, ops: Vec<WriteOp>) -> dspy_storage_core::Result<()> {
        self.transactions.fetch_add(1, Ordering::SeqCst);
        if self.never {
            return Err(dspy_storage_core::Error::Throttled("busy".into()));
        }
        self.inner.transact(ops).await
    }
    async fn query(&self, query: &Query) -> dspy_storage_core::Result<Page<Item>> {
        self.inner.query(query).await
    }
    async fn batch_put(&self, items: Vec<Item>) -> dspy_storage_core::Result<()> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.inner.batch_put(items).await
    }
    async fn batch_put_once(&self, items: Vec<Item>) -> dspy_storage_core::Result<Vec<Item>> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.inner.batch_put_once(items).await
    }
    async fn scan(
        &self,
        start: Option<PageKey>,
        limit: usize,
    ) -> dspy_storage_core::Result<Page<Item>> {
        self.inner.scan(start, limit).await
    }
}

fn unreliable(ts: &TestStore, never: bool) -> (Arc<Unreliable>, Client) {
    let items = Arc::new(Unreliable {
        inner: ts.storage.items().clone(),
        calls: AtomicUsize::new(0),
        transactions: AtomicUsize::new(0),
        never,
    });
    let storage = Storage::new(
        items.clone(),
        ts.storage.blobs().clone(),
        StorageConfig::default(),
        "unreliable",
    );
    let router = dspy_storage_functions::app(AppState::new(Arc::new(storage)));
    (items, Client { router })
}

/// A batch of 1,000 records is one transaction of blocks (no batch write, so no unprocessed
/// item to lose), every record read back once; a store that throttles every transaction makes
/// a retryable `429` and writes nothing.
#[tokio::test]
async fn batch_writes_lose_nothing() {
    for ts in backends().await {
        let k = ts.kind;
        let id = store(&ts.client(), k, "batch.Sig", 2).await;
        let (items, c) = unreliable(&ts, false);
        let base = Utc::now() - Duration::days(1);
        let records: Vec<Value> = (0..1000)
            .map(|i| json!({"metrics": {"accuracy": i as f64 / 1000.0}, "timestamp": t(base + Duration::seconds(i))}))
            .collect();
        let v = c
            .post_json(
                &format!("/programs/{id}/metrics"),
                &json!({"records": records}),
            )
            .await
            .expect(k, "batch of 1000", 201);
        assert_eq!(v["recorded"], 1000, "{k:?}");
        assert_eq!(
            items.calls.load(Ordering::SeqCst),
            0,
            "{k:?}: no batch write"
        );
        assert_eq!(
            items.transactions.load(Ordering::SeqCst),
            1,
            "{k:?}: one transaction"
        );
        // Every record is there, once, with its value.
        let mut got = Vec::new();
        let mut uri = format!("/programs/{id}/metrics?limit=300");
        loop {
            let v = c.get(&uri).await.expect(k, "history", 200);
            got.extend(
                v["records"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|r| r["metrics"]["accuracy"].as_f64().unwrap()),
            );
            match v["next_cursor"].as_str() {
                Some(cur) => uri = format!("/programs/{id}/metrics?limit=300&cursor={cur}"),
                None => break,
            }
        }
        let want: Vec<f64> = (0..1000).map(|i| i as f64 / 1000.0).collect();
        assert_eq!(got, want, "{k:?}: all 1000 records, oldest first");

        // A store that throttles every transaction: a retryable error, nothing written.
        let (_, never) = unreliable(&ts, true);
        let a = never
            .post_json(
                &format!("/programs/{id}/metrics"),
                &json!({"metrics": {"accuracy": 0.1}}),
            )
            .await;
        a.expect_error(k, "never processed", 429, "throttled");
        let v = c
            .get(&format!("/programs/{id}/metrics?limit=10000"))
            .await
            .expect(k, "history", 200);
        assert_eq!(v["records"].as_array().unwrap().len(), 1000, "{k:?}");
    }
}

// ----- counters and the report ---------------------------------------------------------------

#[tokio::test]
async fn report_from_counters() {
    for ts in backends().await {
        let (k, c) = (ts.kind, ts.client());
        // Concurrent stores of different signatures never conflict on a counter item.
        if let Some(counter) = &ts.counter {
            counter.reset();
        }
        let mut tasks = Vec::new();
        for i in 0..8 {
            let c = c.clone();
            tasks.push(tokio::spawn(async move {
                store(&c, k, &format!("conc.S{i}"), 0).await
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        if let Some(counter) = &ts.counter {
            assert_eq!(
                counter.count("DynamoDB.TransactWriteItems"),
                8,
                "{k:?}: no retried store"
            );
        }
        let a = store(&c, k, "rep.A", 3).await;
        let _a2 = store(&c, k, "rep.A", 3).await;
        let a3 = store(&c, k, "rep.A", 3).await;
        c.request(
            Method::DELETE,
            &format!("/programs/{a3}"),
            &[],
            axum::body::Body::empty(),
        )
        .await
        .expect_status(k, "delete", 204);
        for _ in 0..3 {
            c.get(&format!("/programs/{a}"))
                .await
                .expect_status(k, "load", 200);
        }
        c.post_json(
            &format!("/programs/{a}/metrics"),
            &json!({"records": [{"metrics": {"accuracy": 0.8}}, {"metrics": {"accuracy": 0.9}}]}),
        )
        .await
        .expect(k, "metrics", 201);
        // Maintenance status written by the cleanup and backup functions.
        let finished = t(Utc::now() - Duration::hours(2));
        ts.storage
            .items()
            .transact(vec![
                WriteOp::put(
                    Item::new("STATUS", "LAST#backup").with(
                        "data",
                        json!({"finished_at": finished, "name": "daily-1"}).to_string(),
                    ),
                    dspy_storage_core::backend::Condition::None,
                ),
                WriteOp::put(
                    Item::new("STATUS", "LAST#cleanup").with(
                        "data",
                        json!({"finished_at": finished, "summary": {"orphan_blobs_collected": 3}})
                            .to_string(),
                    ),
                    dspy_storage_core::backend::Condition::None,
                ),
            ])
            .await
            .unwrap();

        let r = c.get("/report").await.expect(k, "report", 200);
        assert_eq!(r["total_programs"], 10, "{k:?}: {r}");
        // Sizes of the programs still stored.
        let mut size = 0;
        let sigs = c.get("/signatures").await.expect(k, "signatures", 200);
        for s in sigs["signatures"].as_array().unwrap() {
            let vs = c
                .get(&format!(
                    "/signatures/{}/versions",
                    s["signature"].as_str().unwrap()
                ))
                .await
                .expect(k, "versions", 200);
            size += vs["versions"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v["size"].as_i64().unwrap())
                .sum::<i64>();
        }
        assert_eq!(r["storage_size"], size, "{k:?}");
        assert_eq!(
            r["recent_activity"]["programs_stored"], 11,
            "{k:?}: stores, deletes not subtracted"
        );
        assert_eq!(r["recent_activity"]["metric_records"], 2, "{k:?}");
        assert_eq!(
            r["recent_activity"]["by_day"].as_array().unwrap().len(),
            7,
            "{k:?}"
        );
        let top = &r["top_signatures"]["by_programs"][0];
        assert_eq!(top["signature"], "rep.A", "{k:?}");
        assert_eq!(top["programs"], 2, "{k:?}");
        let by_loads = &r["top_signatures"]["by_loads"][0];
        assert_eq!(by_loads["signature"], "rep.A", "{k:?}");
        assert_eq!(by_loads["loads"], 3, "{k:?}");
        let trends = r["performance_trends"].as_array().unwrap();
        let rep = trends
            .iter()
            .find(|t| t["signature"] == "rep.A")
            .expect("rep.A trend");
        close(
            k,
            "report trend",
            &rep["metrics"]["accuracy"]["current"],
            0.85,
        );
        let health = &r["storage_health"];
        assert_eq!(health["orphan_blobs"], 3, "{k:?}: the last cleanup's count");
        assert_eq!(health["last_backup"]["status"]["name"], "daily-1", "{k:?}");
        let age = health["last_backup"]["age_seconds"].as_i64().unwrap();
        assert!((7190..7300).contains(&age), "{k:?}: backup age {age}");
        assert_eq!(health["integrity_check"]["sampled"], 5, "{k:?}");
        assert_eq!(health["integrity_check"]["failed"], 0, "{k:?}");
        // Loads are flushed: a second report sees the same count, not double.
        let r2 = c.get("/report").await.expect(k, "report again", 200);
        assert_eq!(r2["top_signatures"]["by_loads"][0]["loads"], 3, "{k:?}");
        // A counter item copied with a plain put (as a restore does) stays addable.
        let items = ts.storage.items();
        let stats = items
            .get("STATS#default#rep.A", "STATS")
            .await
            .unwrap()
            .expect("counter item");
        assert_eq!(stats.get("n_programs"), Some("2"), "{k:?}: {stats:?}");
        items.batch_put(vec![stats]).await.unwrap();
        store(&c, k, "rep.A", 0).await;
        let r3 = c
            .get("/report")
            .await
            .expect(k, "report after a restore-like put", 200);
        assert_eq!(r3["total_programs"], 11, "{k:?}");
    }
}

#[tokio::test]
async fn report_of_an_empty_store() {
    for ts in backends().await {
        let (k, c) = (ts.kind, ts.client());
        let r = c.get("/report").await.expect(k, "report", 200);
        assert_eq!(r["total_programs"], 0, "{k:?}");
        assert_eq!(r["storage_health"]["last_backup"], Value::Null, "{k:?}");
        assert_eq!(r["storage_health"]["last_cleanup"], Value::Null, "{k:?}");
        assert_eq!(r["storage_health"]["orphan_blobs"], Value::Null, "{k:?}");
    }
}

// ----- backfilled history ----------------------------------------------------------------------

/// Records from before the program was stored (history moved from DSPy.rb's files or MLflow,
/// offline evaluations) are accepted from 2000-01-01 to now + the clock skew: 80 records over the
/// last 40 days, posted to a program stored a minute ago, are stored, read back oldest first
/// (paged, and by time range), counted by the trends, and survive a backup and restore.
#[tokio::test]
async fn backfilled_history_is_stored_read_and_counted() {
    for ts in backends().await {
        let (k, c) = (ts.kind, ts.client());
        let id = store(&c, k, "qa.Backfill", 0).await;
        let now = Utc::now();
        // Two records a day, for each of the last 40 days (the newest an hour ago), shuffled.
        let mut records: Vec<Value> = (0..80)
            .map(|i| {
                let at = now - Duration::hours(1) - Duration::hours(12 * i);
                json!({"metrics": {"accuracy": 0.5 + (80 - i) as f64 / 200.0}, "timestamp": t(at)})
            })
            .collect();
        records.reverse();
        records.swap(3, 70);
        let v = c
            .post_json(
                &format!("/programs/{id}/metrics"),
                &json!({"records": records}),
            )
            .await
            .expect(k, "80 backfilled records", 201);
        assert_eq!(v["recorded"], 80, "{k:?}: {v}");
        // Oldest first, every record once, over pages and months.
        let mut seen: Vec<String> = Vec::new();
        let mut uri = format!("/programs/{id}/metrics?limit=30");
        loop {
            let page = c.get(&uri).await.expect(k, "history page", 200);
            for r in page["records"].as_array().unwrap() {
                seen.push(r["timestamp"].as_str().unwrap().to_owned());
            }
            match page["next_cursor"].as_str() {
                Some(cur) => uri = format!("/programs/{id}/metrics?limit=30&cursor={cur}"),
                None => break,
            }
        }
        assert_eq!(seen.len(), 80, "{k:?}: {seen:?}");
        let mut sorted = seen.clone();
        sorted.sort();
        assert_eq!(seen, sorted, "{k:?}: oldest first");
        let from = t(now - Duration::days(20));
        let v = c
            .get(&format!("/programs/{id}/metrics?limit=1000&from={from}"))
            .await
            .expect(k, "history from 20 days ago", 200);
        let n = v["records"].as_array().unwrap().len();
        assert!(
            (39..=41).contains(&n),
            "{k:?}: {n} records in the last 20 days"
        );
        // The trends count them (90 days: all of them; 30 days: the last month's).
        let v = c
            .get(&format!("/programs/{id}/trends?days=90"))
            .await
            .expect(k, "trends", 200);
        assert_eq!(v["records"], 80, "{k:?}: {v}");
        assert_eq!(v["metrics"]["accuracy"]["trend"], "improving", "{k:?}");
        assert!(
            v["metrics"]["accuracy"]["points"].as_array().unwrap().len() >= 40,
            "{k:?}"
        );
        let v = c
            .get("/signatures/qa.Backfill/trends?days=90")
            .await
            .expect(k, "signature trends", 200);
        assert_eq!(v["records"], 80, "{k:?}");
        // Still refused: the future (an hour ahead) and before 2000, naming the field.
        for (body, field) in [
            (
                json!({"metrics": {"a": 1}, "timestamp": t(now + Duration::hours(1))}),
                "timestamp",
            ),
            (
                json!({"records": [{"metrics": {"a": 1}}, {"metrics": {"a": 1}, "timestamp": "1999-12-31T23:59:59Z"}]}),
                "records[1].timestamp",
            ),
        ] {
            let v = c
                .post_json(&format!("/programs/{id}/metrics"), &body)
                .await
                .expect_error(k, &format!("refused {body}"), 400, "invalid_request");
            assert_eq!(v["error"]["field"], field, "{k:?}: {v}");
        }
        let v = c
            .get(&format!("/programs/{id}/trends?days=90"))
            .await
            .expect(k, "trends after refusals", 200);
        assert_eq!(
            v["records"], 80,
            "{k:?}: nothing of a refused request was written"
        );
        // A backup restored into an empty store has the same history.
        c.post_json("/backups", &json!({"name": "backfill"}))
            .await
            .expect(k, "backup", 201);
        let fresh = if k == Kind::Aws {
            dspy_storage_tests::aws().await.expect("AWS")
        } else {
            dspy_storage_tests::embedded().await
        };
        let mut state = AppState::new(fresh.storage.clone());
        state.backup = Some(dspy_storage_core::backup::BackupLocation::new(
            ts.storage.blobs().clone(),
        ));
        let restored = Client {
            router: dspy_storage_functions::app(state),
        };
        restored
            .post_json("/backups/backfill/restore", &json!({}))
            .await
            .expect(k, "restore", 200);
        let a = c
            .get(&format!("/programs/{id}/metrics?limit=1000"))
            .await
            .expect(k, "history", 200);
        let b = restored
            .get(&format!("/programs/{id}/metrics?limit=1000"))
            .await
            .expect(k, "restored history", 200);
        assert_eq!(a["records"], b["records"], "{k:?}: restored history");
        assert_eq!(b["records"].as_array().unwrap().len(), 80, "{k:?}");
        let v = restored
            .get(&format!("/programs/{id}/trends?days=90"))
            .await
            .expect(k, "restored trends", 200);
        assert_eq!(v["records"], 80, "{k:?}");
    }
}

// ----- idempotent appends (client record ids) -------------------------------------------------

/// Every record of the program's history, oldest first (all pages).
async fn all_history(c: &Client, k: Kind, id: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut uri = format!("/programs/{id}/metrics?limit=3");
    loop {
        let v = c.get(&uri).await.expect(k, "history", 200);
        out.extend(v["records"].as_array().unwrap().iter().cloned());
        match v["next_cursor"].as_str() {
            Some(cur) => uri = format!("/programs/{id}/metrics?limit=3&cursor={cur}"),
            None => return out,
        }
    }
}

/// A record carrying a `record_id` is stored once per program: a retried append (single or
/// batch, whatever timestamp the server gave it the first time) writes nothing again and answers
/// `201` with the same ids; a record id twice in one batch is one record; bad record ids are a
/// `400` naming the field; history, trends and the report count each record once; a backup
/// restored into a fresh store keeps the record ids and their guarantee.
#[tokio::test]
async fn record_ids_make_appends_idempotent() {
    for ts in backends().await {
        let (k, c) = (ts.kind, ts.client());
        let id = store(&c, k, "rid.Sig", 0).await;
        let uri = format!("/programs/{id}/metrics");
        // No timestamp: the server assigns the receive time, differently on the retry.
        let one = json!({"metrics": {"accuracy": 0.5}, "record_id": "r-1"});
        let first = c.post_json(&uri, &one).await.expect(k, "single", 201);
        assert_eq!(first["recorded"], 1, "{k:?}: {first}");
        assert_eq!(first["already_recorded"], 0, "{k:?}: {first}");
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        let again = c
            .post_json(&uri, &one)
            .await
            .expect(k, "single retried", 201);
        assert_eq!(again["ids"], first["ids"], "{k:?}: the same record");
        assert_eq!(again["already_recorded"], 1, "{k:?}: {again}");

        let ts_of = |s: i64| t(Utc::now() - Duration::seconds(60 - s));
        let batch = json!({"records": [
            {"metrics": {"accuracy": 0.6}, "record_id": "r-2", "timestamp": ts_of(1)},
            {"metrics": {"accuracy": 0.7}, "record_id": "r-3", "timestamp": ts_of(2)},
            {"metrics": {"accuracy": 0.1}, "timestamp": ts_of(3)},
            {"metrics": {"accuracy": 0.8}, "record_id": "r_4", "timestamp": ts_of(4)},
            {"metrics": {"accuracy": 0.6}, "record_id": "r-2", "timestamp": ts_of(5)},
        ]});
        let b1 = c.post_json(&uri, &batch).await.expect(k, "batch", 201);
        assert_eq!(b1["recorded"], 5, "{k:?}: {b1}");
        assert_eq!(
            b1["already_recorded"], 1,
            "{k:?}: r-2 twice is one record: {b1}"
        );
        assert_eq!(b1["ids"][0], b1["ids"][4], "{k:?}: r-2 names one record");
        let b2 = c
            .post_json(&uri, &batch)
            .await
            .expect(k, "batch retried", 201);
        for i in [0, 1, 3, 4] {
            assert_eq!(
                b2["ids"][i], b1["ids"][i],
                "{k:?}: record {i} is the same record"
            );
        }
        // The record without an id has no guarantee: written again (what the client asked for).
        assert_eq!(b2["already_recorded"], 4, "{k:?}: {b2}");
        assert_ne!(
            b2["ids"][2], b1["ids"][2],
            "{k:?}: a record without an id is new"
        );
        // A retry that overlaps: one claimed already, one new.
        let mixed = json!({"records": [
            {"metrics": {"accuracy": 0.7}, "record_id": "r-3", "timestamp": ts_of(2)},
            {"metrics": {"accuracy": 0.9}, "record_id": "r-5", "timestamp": ts_of(6)},
        ]});
        let m = c
            .post_json(&uri, &mixed)
            .await
            .expect(k, "overlapping", 201);
        assert_eq!(m["already_recorded"], 1, "{k:?}: {m}");
        assert_eq!(
            m["ids"][0], b1["ids"][1],
            "{k:?}: r-3 is the record stored before"
        );

        // Bad record ids: 400 naming the field, nothing written.
        let before = all_history(&c, k, &id).await;
        for (body, field) in [
            (json!({"metrics": {"a": 1}, "record_id": ""}), "record_id"),
            (
                json!({"metrics": {"a": 1}, "record_id": "x".repeat(65)}),
                "record_id",
            ),
            (
                json!({"metrics": {"a": 1}, "record_id": "a b"}),
                "record_id",
            ),
            (
                json!({"metrics": {"a": 1}, "record_id": "caf\u{e9}"}),
                "record_id",
            ),
            (
                json!({"metrics": {"a": 1}, "record_id": "a/b"}),
                "record_id",
            ),
            (json!({"metrics": {"a": 1}, "record_id": 7}), "record_id"),
            (json!({"metrics": {"a": 1}, "record_id": null}), "record_id"),
            (
                json!({"records": [{"metrics": {"a": 1}, "record_id": "ok-1"}, {"metrics": {"a": 1}, "record_id": "no.dots"}]}),
                "records[1].record_id",
            ),
        ] {
            let e = c.post_json(&uri, &body).await.expect_error(
                k,
                &format!("record id in {body}"),
                400,
                "invalid_request",
            );
            assert_eq!(e["error"]["field"], field, "{k:?}: {e}");
        }
        let longest = json!({"metrics": {"accuracy": 0.4}, "record_id": "Z".repeat(64)});
        c.post_json(&uri, &longest)
            .await
            .expect(k, "64-character record id", 201);
        let after = all_history(&c, k, &id).await;
        assert_eq!(
            after.len(),
            before.len() + 1,
            "{k:?}: the bad ones wrote nothing"
        );

        // History: each record id once, carried in the record; the id-less record twice.
        let rids: Vec<Option<&str>> = after.iter().map(|r| r["record_id"].as_str()).collect();
        let mut named: Vec<&str> = rids.iter().flatten().copied().collect();
        named.sort_unstable();
        let sixty_four = "Z".repeat(64);
        assert_eq!(
            named,
            [sixty_four.as_str(), "r-1", "r-2", "r-3", "r-5", "r_4"],
            "{k:?}: {rids:?}"
        );
        assert_eq!(rids.iter().filter(|r| r.is_none()).count(), 2, "{k:?}");
        assert_eq!(after.len(), 8, "{k:?}");
        let trends = c
            .get(&format!("/programs/{id}/trends?days=7"))
            .await
            .expect(k, "trends", 200);
        assert_eq!(
            trends["records"], 8,
            "{k:?}: trends count each record once: {trends}"
        );
        let report = c.get("/report").await.expect(k, "report", 200);
        assert_eq!(
            report["recent_activity"]["metric_records"], 8,
            "{k:?}: the report's counter counts records written, not attempts: {}",
            report["recent_activity"]
        );

        // Backup and restore keep the record ids and the claims behind them.
        let loc = dspy_storage_core::backup::BackupLocation::new(ts.storage.blobs().clone());
        let opts = dspy_storage_core::backup::BackupOptions {
            name: Some("rid".into()),
            ..Default::default()
        };
        dspy_storage_core::backup::create_backup(&OPERATOR, &ts.storage, &loc, &opts)
            .await
            .unwrap();
        let fresh = dspy_storage_tests::embedded().await;
        dspy_storage_core::backup::restore(
            &OPERATOR,
            &fresh.storage,
            &loc,
            "rid",
            &dspy_storage_core::backup::RestoreOptions::default(),
        )
        .await
        .unwrap();
        let fc = fresh.client();
        let restored = all_history(&fc, k, &id).await;
        assert_eq!(
            restored, after,
            "{k:?}: restored history, record ids included"
        );
        let r = fc
            .post_json(&uri, &batch)
            .await
            .expect(k, "retry after restore", 201);
        assert_eq!(
            r["already_recorded"], 4,
            "{k:?}: the claims were restored: {r}"
        );
        assert_eq!(r["ids"][0], b1["ids"][0], "{k:?}");
    }
}

// ----- metric blocks ---------------------------------------------------------------------------

/// Eight appenders posting to one program at once (single records, batches, record ids, the
/// same timestamps) lose no record: every record is read back once, in time order, and the
/// trend counts them all.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn eight_concurrent_appenders_lose_nothing() {
    for ts in backends().await {
        let (k, c) = (ts.kind, ts.client());
        let id = store(&c, k, "conc.Metrics", 0).await;
        let base = Utc::now() - Duration::hours(30);
        let mut tasks = Vec::new();
        for w in 0..8usize {
            let (c, id) = (c.clone(), id.clone());
            tasks.push(tokio::spawn(async move {
                let uri = format!("/programs/{id}/metrics");
                for round in 0..6usize {
                    let n = if round % 2 == 0 { 1 } else { 25 };
                    let records: Vec<Value> = (0..n)
                        .map(|i| {
                            let mut r = json!({
                                "metrics": {"accuracy": (w * 1000 + round * 100 + i) as f64},
                                // Writers share timestamps (the hour of round and record).
                                "timestamp": t(base + Duration::minutes((round * 60 + i * 7) as i64)),
                            });
                            if w % 2 == 1 {
                                r["record_id"] = json!(format!("w{w}-{round}-{i}"));
                            }
                            r
                        })
                        .collect();
                    let a = c
                        .post_json(&uri, &json!({ "records": records }))
                        .await;
                    assert_eq!(a.status, 201, "{k:?}: writer {w}: {}", String::from_utf8_lossy(&a.body));
                }
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
        let all = all_history_paged(&c, k, &id, 37).await;
        let want: usize = 8 * 3 * (1 + 25);
        assert_eq!(all.len(), want, "{k:?}: every record once");
        let mut values: Vec<i64> = all
            .iter()
            .map(|r| r["metrics"]["accuracy"].as_f64().unwrap() as i64)
            .collect();
        let times: Vec<&str> = all
            .iter()
            .map(|r| r["timestamp"].as_str().unwrap())
            .collect();
        assert!(times.windows(2).all(|w| w[0] <= w[1]), "{k:?}: time order");
        values.sort_unstable();
        values.dedup();
        assert_eq!(values.len(), want, "{k:?}: no record twice");
        let v = c
            .get(&format!("/programs/{id}/trends?days=3"))
            .await
            .expect(k, "trends", 200);
        assert_eq!(v["records"], want, "{k:?}");
    }
}

/// Every record of a history with pages of `limit`, checking that every page but the last is
/// full and no record comes twice.
async fn all_history_paged(c: &Client, k: Kind, id: &str, limit: usize) -> Vec<Value> {
    let mut out: Vec<Value> = Vec::new();
    let mut uri = format!("/programs/{id}/metrics?limit={limit}");
    loop {
        let v = c.get(&uri).await.expect(k, "history", 200);
        let page = v["records"].as_array().unwrap();
        match v["next_cursor"].as_str() {
            Some(cur) => {
                assert_eq!(page.len(), limit, "{k:?}: a page before the last is full");
                uri = format!("/programs/{id}/metrics?limit={limit}&cursor={cur}");
            }
            None => {
                out.extend(page.iter().cloned());
                let mut ids: Vec<&str> = out.iter().map(|r| r["id"].as_str().unwrap()).collect();
                ids.sort_unstable();
                let n = ids.len();
                ids.dedup();
                assert_eq!(ids.len(), n, "{k:?}: an id twice");
                return out;
            }
        }
        out.extend(page.iter().cloned());
    }
}

/// An append whose transaction's answer is lost (it committed) is sent again by the server,
/// which finds its blocks written: `201`, every record once (no record id needed). A backfilled
/// batch lands in time order among the records already there.
#[tokio::test]
async fn a_lost_answer_never_duplicates_and_backfills_land_in_order() {
    use dspy_storage_tests::faults::{faulty_storage, Fault, FaultPlan};
    for ts in backends().await {
        let k = ts.kind;
        let id = store(&ts.client(), k, "lost.Answer", 0).await;
        let plan = FaultPlan::default();
        let c = Client {
            router: dspy_storage_functions::app(AppState::new(Arc::new(faulty_storage(
                &ts, &plan,
            )))),
        };
        let uri = format!("/programs/{id}/metrics");
        let now = Utc::now();
        let recent: Vec<Value> = (0..10)
            .map(|i| json!({"metrics": {"accuracy": 100.0 + i as f64}, "timestamp": t(now - Duration::hours(10 - i))}))
            .collect();
        // Calls: the program's GetItem, then the transaction (the 2nd call): its answer is lost.
        plan.arm(2, Fault::Timeout);
        let a = c.post_json(&uri, &json!({"records": recent})).await;
        assert_eq!(a.status, 201, "{k:?}: {}", String::from_utf8_lossy(&a.body));
        assert_eq!(plan.fired().len(), 1, "{k:?}: the fault fired");
        plan.reset();
        // Backfilled records (before the program was stored, over two months).
        let old: Vec<Value> = (0..10)
            .map(|i| json!({"metrics": {"accuracy": i as f64}, "timestamp": t(now - Duration::days(50 - 3 * i))}))
            .collect();
        c.post_json(&uri, &json!({"records": old}))
            .await
            .expect(k, "backfill", 201);
        let all = all_history_paged(&c, k, &id, 4).await;
        let values: Vec<f64> = all
            .iter()
            .map(|r| r["metrics"]["accuracy"].as_f64().unwrap())
            .collect();
        let want: Vec<f64> = (0..10)
            .map(|i| i as f64)
            .chain((0..10).map(|i| 100.0 + i as f64))
            .collect();
        assert_eq!(values, want, "{k:?}: once each, in time order");
    }
}

/// A batch too large for one item (1,000 records with 3 KB environments that do not compress)
/// is split into blocks under DynamoDB's 400 KB item limit, and into transactions under its
/// 4 MB limit; every record reads back.
#[tokio::test]
async fn large_batches_split_into_blocks_under_the_item_limit() {
    for ts in backends().await {
        let (k, c) = (ts.kind, ts.client());
        let id = store(&c, k, "split.Sig", 0).await;
        let base = Utc::now() - Duration::hours(2);
        let records: Vec<Value> = (0..1000)
            .map(|i| {
                json!({
                    "metrics": {"accuracy": i as f64},
                    "timestamp": t(base + Duration::seconds(i)),
                    "environment": {"noise": noise(i as u64, 3000)},
                })
            })
            .collect();
        let body = json!({ "records": records });
        let a = c
            .request(
                Method::POST,
                &format!("/programs/{id}/metrics"),
                &[("content-type", "application/json")],
                axum::body::Body::from(body.to_string()),
            )
            .await
            .expect(k, "large batch", 201);
        assert_eq!(a["recorded"], 1000, "{k:?}");
        let pid = dspy_storage_core::domain::ProgramId::parse(&id).unwrap();
        let blocks = ts
            .storage
            .items()
            .query(
                &Query::new(
                    dspy_storage_core::backend::Index::Table,
                    dspy_storage_core::model::keys::metric_blocks_pk(&pid),
                )
                .limit(1000),
            )
            .await
            .unwrap()
            .items;
        assert!(blocks.len() >= 8, "{k:?}: {} blocks", blocks.len());
        for b in &blocks {
            let bytes = b.get("b_records").unwrap().len() * 3 / 4;
            assert!(bytes < 300_000, "{k:?}: a block of {bytes} bytes");
        }
        let all = all_history_paged(&c, k, &id, 1000).await;
        let values: Vec<f64> = all
            .iter()
            .map(|r| r["metrics"]["accuracy"].as_f64().unwrap())
            .collect();
        assert_eq!(
            values,
            (0..1000).map(|i| i as f64).collect::<Vec<_>>(),
            "{k:?}"
        );
    }
}

/// Text that does not compress: `len` characters of a xorshift stream.
fn noise(seed: u64, len: usize) -> String {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            char::from(b'!' + (x % 90) as u8)
        })
        .collect()
}

/// A store written by a build before metric blocks (one item per record) keeps its history:
/// read beside new blocks in one time order, paged, counted by trends; then converted —
/// `migrate_metrics` slice by slice (resumable) on either backend, or by the embedded store on
/// its first metric read — with the same records, ids included.
#[tokio::test]
async fn per_record_items_stay_readable_and_convert() {
    for ts in backends().await {
        let k = ts.kind;
        let old = Arc::new(dspy_storage_tests::before_metric_blocks(&ts).await);
        let c = Client {
            router: dspy_storage_functions::app(AppState::new(old.clone())),
        };
        let id = store(&c, k, "old.Layout", 0).await;
        let pid = dspy_storage_core::domain::ProgramId::parse(&id).unwrap();
        let now = Utc::now();
        let created = old.get_record(&OPERATOR, &pid).await.unwrap().created_at;
        // 30 old records: backfilled 40 days back (month index), and of the last hours.
        let legacy: Vec<(DateTime<Utc>, Value)> = (0..30)
            .map(|i| {
                let at = if i < 15 {
                    now - Duration::days(40) + Duration::hours(i)
                } else {
                    now - Duration::hours(40 - i)
                };
                (at, json!({"accuracy": i as f64}))
            })
            .collect();
        let written = dspy_storage_tests::put_per_record_layout(&old, &pid, created, &legacy).await;
        // New records between them, in blocks.
        let new: Vec<Value> = (0..10)
            .map(|i| json!({"metrics": {"accuracy": 100.0 + i as f64}, "timestamp": t(now - Duration::days(20) + Duration::hours(i))}))
            .collect();
        c.post_json(&format!("/programs/{id}/metrics"), &json!({"records": new}))
            .await
            .expect(k, "append", 201);
        let want: Vec<f64> = (0..15)
            .map(|i| i as f64)
            .chain((0..10).map(|i| 100.0 + i as f64))
            .chain((15..30).map(|i| i as f64))
            .collect();
        let values = |all: &[Value]| -> Vec<f64> {
            all.iter()
                .map(|r| r["metrics"]["accuracy"].as_f64().unwrap())
                .collect()
        };
        let before = all_history_paged(&c, k, &id, 7).await;
        assert_eq!(values(&before), want, "{k:?}: both layouts, in time order");
        for r in &written {
            assert!(
                before.iter().any(|b| b["id"] == r.id.to_string()),
                "{k:?}: old id {} kept",
                r.id
            );
        }
        let trend = c
            .get(&format!("/programs/{id}/trends?days=90"))
            .await
            .expect(k, "trends", 200);
        assert_eq!(trend["records"], 40, "{k:?}: {}", trend["daily"]);
        let converted = if k == Kind::Embedded {
            // A store that converts on its first metric read (as `open::embedded` makes).
            let fresh = Storage::new(
                ts.storage.items().clone(),
                ts.storage.blobs().clone(),
                StorageConfig::default(),
                "embedded again",
            )
            .with_metric_conversion_on_read();
            Client {
                router: dspy_storage_functions::app(AppState::new(Arc::new(fresh))),
            }
        } else {
            // Slice by slice, resuming from each slice's cursor.
            let mut start = None;
            let mut slices = 0;
            let mut converted = 0;
            loop {
                let r = old.migrate_metrics(start, 1).await.unwrap();
                slices += 1;
                converted += r.records_converted;
                if r.complete {
                    break;
                }
                start = r.next;
            }
            assert_eq!(converted, 30, "{k:?}: {slices} slices");
            c.clone()
        };
        let after = all_history_paged(&converted, k, &id, 7).await;
        assert_eq!(
            after, before,
            "{k:?}: the same history after the conversion"
        );
        let raw = dspy_storage_tests::RawState::of(&ts.storage).await;
        assert!(
            !raw.items.iter().any(|((pk, sk), attrs)| {
                let mut item = Item::new(pk.clone(), sk.clone());
                item.attrs = attrs.clone();
                dspy_storage_core::tracking::migrate::is_legacy_record(&item)
            }),
            "{k:?}: no per-record item left"
        );
        let trend = converted
            .get(&format!("/programs/{id}/trends?days=90"))
            .await
            .expect(k, "trends after", 200);
        assert_eq!(trend["records"], 40, "{k:?}");
        // Running the conversion again finds nothing to do.
        let again = old.migrate_metrics(None, 1000).await.unwrap();
        assert!(again.complete && again.records_converted == 0, "{k:?}");
    }
}

/// The daily cleanup converts what is left of the per-record layout with its spare time, then
/// marks the store; once marked, it does nothing (and asks nothing) again.
#[tokio::test]
async fn the_daily_cleanup_converts_per_record_items() {
    for ts in backends().await {
        let k = ts.kind;
        let old = Arc::new(dspy_storage_tests::before_metric_blocks(&ts).await);
        let c = Client {
            router: dspy_storage_functions::app(AppState::new(old.clone())),
        };
        let id = store(&c, k, "daily.Convert", 0).await;
        let pid = dspy_storage_core::domain::ProgramId::parse(&id).unwrap();
        let now = Utc::now();
        let legacy: Vec<(DateTime<Utc>, Value)> = (0..12)
            .map(|i| (now - Duration::hours(30 - i), json!({"accuracy": i as f64})))
            .collect();
        dspy_storage_tests::put_per_record_layout(&old, &pid, now, &legacy).await;
        let before = all_history_paged(&c, k, &id, 5).await;
        assert_eq!(before.len(), 12, "{k:?}");
        let state = AppState::new(old.clone());
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        let summary = dspy_storage_functions::jobs::cleanup_scheduled(
            state.clone(),
            json!({"id": "e"}),
            Some(deadline),
        )
        .await
        .unwrap();
        let conversion = &summary["metric_conversion"];
        assert_eq!(conversion["complete"], true, "{k:?}: {summary}");
        assert_eq!(conversion["records_converted"], 12, "{k:?}: {summary}");
        assert_eq!(all_history_paged(&c, k, &id, 5).await, before, "{k:?}");
        let again = dspy_storage_functions::jobs::cleanup_scheduled(
            state,
            json!({"id": "e2"}),
            Some(deadline),
        )
        .await
        .unwrap();
        assert!(again["metric_conversion"].is_null(), "{k:?}: {again}");
    }
}

/// The per-day counters of a signature do not pile up: a store removes the day attributes just
/// older than the ones kept (`DAY_COUNTERS_KEPT`), so the counter item (written by every store)
/// stays small, and the report's recent days are untouched.
#[tokio::test]
async fn counter_items_drop_day_counters_older_than_they_keep() {
    use dspy_storage_core::model::counters::DAY_COUNTERS_KEPT;
    for ts in backends().await {
        let (k, c) = (ts.kind, ts.client());
        store(&c, k, "days.Sig", 0).await;
        let pk = dspy_storage_core::model::keys::stats_pk(
            &dspy_storage_core::domain::Project::default_project(),
            &dspy_storage_core::domain::Signature::parse("days.Sig").unwrap(),
        );
        let today = Utc::now().date_naive();
        let day = |back: i64| format!("n_d{}", today - Duration::days(back));
        // As an older build left it: one attribute for each day of the last two months.
        ts.storage
            .items()
            .transact(vec![WriteOp::Add {
                pk: pk.clone(),
                sk: "STATS".into(),
                add: (1..60).map(|back| (day(back), 1)).collect(),
                set: vec![],
                remove: vec![],
            }])
            .await
            .unwrap();
        store(&c, k, "days.Sig", 0).await;
        let item = ts.storage.items().get(&pk, "STATS").await.unwrap().unwrap();
        for back in 0..60 {
            let kept = !(DAY_COUNTERS_KEPT..DAY_COUNTERS_KEPT + 31).contains(&back);
            assert_eq!(
                item.get(&day(back)).is_some(),
                kept,
                "{k:?}: day {back} back: {item:?}"
            );
        }
        assert_eq!(item.get(&day(0)), Some("2"), "{k:?}");
        assert_eq!(item.get("n_programs"), Some("2"), "{k:?}");
        // The report still counts the recent days.
        let report = c.get("/report").await.expect(k, "report", 200);
        assert_eq!(
            report["recent_activity"]["programs_stored"],
            json!(2 + 6),
            "{k:?}: {}",
            report["recent_activity"]
        );
    }
}
