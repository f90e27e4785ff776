//! Search and querying through HTTP on every backend of `backends()`: the query language and the
//! structured form, cursors, aggregation, time series, similar programs; a property test against
//! a brute-force filter + sort; and the request count of an indexed query on AWS.

use std::cmp::Ordering;
use std::collections::BTreeSet;

use chrono::{DateTime, Duration, Utc};
use dspy_storage_core::domain::{format_time, Version};
use dspy_storage_tests::{aws, backends, Client, Kind, TestStore};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::{json, Value};

fn enc(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

async fn store(c: &Client, k: Kind, program: Value, metadata: Value) -> Value {
    c.post_json(
        "/programs",
        &json!({"program": program, "metadata": metadata}),
    )
    .await
    .expect(k, "store", 201)
}

/// On AWS: no request of the test was a table scan.
fn assert_no_scan(ts: &TestStore) {
    if let Some(counter) = &ts.counter {
        assert_eq!(
            counter.count("DynamoDB.Scan"),
            0,
            "{:?}",
            counter.snapshot()
        );
    }
}

async fn search_q(c: &Client, k: Kind, q: &str, extra: &str) -> Value {
    c.get(&format!("/search?q={}{extra}", enc(q)))
        .await
        .expect(k, &format!("GET /search {q}"), 200)
}

fn ids(v: &Value) -> Vec<String> {
    v["results"]
        .as_array()
        .unwrap_or_else(|| panic!("results in {v}"))
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_owned())
        .collect()
}

fn set(v: &[String]) -> BTreeSet<String> {
    v.iter().cloned().collect()
}

fn ago(d: Duration) -> String {
    format_time(&(Utc::now() - d))
}

fn dspy_program(instructions: &str) -> Value {
    json!({
        "classify": {
            "traces": [], "train": [], "demos": [],
            "signature": {"instructions": instructions, "fields": [
                {"prefix": "Text:", "description": "input"},
                {"prefix": "Label:", "description": "output"}
            ]},
            "lm": null
        },
        "metadata": {"dependency_versions": {"python": "3.11", "dspy": "2.6.0"}}
    })
}

#[tokio::test]
async fn query_language_and_structured_search() {
    for ts in backends().await {
        let (c, k) = (ts.client(), ts.kind);
        let a1 = store(&c, k, json!({"p": 1}), json!({"signature": "ClassifyText", "version": "1.0.0",
            "performance": 0.80, "optimization_method": "miprov2", "tags": ["prod"],
            "environment": "production", "examples_count": 50, "description": "Sentiment classifier",
            "created_at": ago(Duration::days(3))})).await;
        let a2 = store(
            &c,
            k,
            json!({"p": 2}),
            json!({"signature": "ClassifyText", "version": "1.1.0",
            "performance": {"accuracy": 0.91, "f1": 0.5}, "optimization_method": "miprov2",
            "tags": ["exp"], "examples_count": 150, "team": "nlp", "dataset": "imdb-reviews"}),
        )
        .await;
        let a3 = store(
            &c,
            k,
            json!({"p": 3}),
            json!({"signature": "ClassifyText", "version": "2.0.0",
            "performance": 0.87, "optimization_method": "bootstrap", "examples_count": 300,
            "environment": "staging"}),
        )
        .await;
        let b1 = store(
            &c,
            k,
            json!({"p": 4}),
            json!({"signature": "Summarize", "performance": 0.70,
            "tags": ["prod", "long-form"], "description": "Summaries of classify outputs",
            "created_at": ago(Duration::days(40))}),
        )
        .await;
        let other = store(
            &c,
            k,
            json!({"p": 5}),
            json!({"signature": "ClassifyText", "project": "elsewhere",
            "performance": 0.99}),
        )
        .await;
        let id = |v: &Value| v["id"].as_str().unwrap().to_owned();
        let (a1, a2, a3, b1) = (id(&a1), id(&a2), id(&a3), id(&b1));

        // Equality, sorted by performance, through the signature's score index.
        let r = search_q(&c, k, "signature:ClassifyText", "&sort=-performance").await;
        assert_eq!(ids(&r), vec![a2.clone(), a3.clone(), a1.clone()], "{k:?}");
        assert!(r["next_cursor"].is_null());
        let first = &r["results"][0];
        assert_eq!(first["performance"], json!(0.91));
        assert_eq!(first["signature"], "ClassifyText");
        assert_eq!(first["version"], "1.1.0");
        assert_eq!(first["status"], "active");
        assert_eq!(first["metadata"]["dataset"], "imdb-reviews");
        assert_eq!(first["relevance_score"], json!(1.0));
        assert!(first["summary"]
            .as_str()
            .unwrap()
            .starts_with("ClassifyText v1.1.0 · miprov2 · performance 0.910"));
        // Wildcards, comparisons, meta keys, tags, environment, team, method.
        let q = |s: &'static str| search_q(&c, k, s, "&sort=version");
        assert_eq!(
            ids(&q("version:1.*").await),
            vec![a1.clone(), b1.clone(), a2.clone()]
        );
        assert_eq!(
            set(&ids(&q("performance>=0.85").await)),
            set(&[a2.clone(), a3.clone()])
        );
        assert_eq!(ids(&q("performance<0.8").await), vec![b1.clone()]);
        let r = q("meta.examples_count>100 meta.examples_count<=300").await;
        assert_eq!(ids(&r), vec![a2.clone(), a3.clone()], "{r:#}");
        assert_eq!(
            set(&ids(&q("tag:prod").await)),
            set(&[a1.clone(), b1.clone()])
        );
        assert_eq!(
            ids(&q("tag:prod signature:ClassifyText").await),
            vec![a1.clone()]
        );
        assert_eq!(ids(&q("environment:staging").await), vec![a3.clone()]);
        assert_eq!(
            set(&ids(&q("environment!=staging").await)),
            set(&[a1.clone(), a2.clone(), b1.clone()])
        );
        assert_eq!(ids(&q("team:nlp").await), vec![a2.clone()]);
        assert_eq!(ids(&q("method:bootstrap").await), vec![a3.clone()]);
        assert_eq!(ids(&q("method:mipro*").await), vec![a1.clone(), a2.clone()]);
        assert_eq!(ids(&q("version>=1.1 version<2").await), vec![a2.clone()]);
        assert_eq!(ids(&q("meta.dataset:imdb*").await), vec![a2.clone()]);
        // Created: today excludes the backdated ones; last_week excludes the 40-day-old one.
        assert_eq!(
            set(&ids(&q("created:today").await)),
            set(&[a2.clone(), a3.clone()])
        );
        assert_eq!(
            set(&ids(&q("created:last_week").await)),
            set(&[a1.clone(), a2.clone(), a3.clone()])
        );
        assert_eq!(
            ids(&q("created:last_month signature:Summarize").await),
            Vec::<String>::new()
        );
        assert_eq!(set(&ids(&q("created:90d").await)).len(), 4);
        // The other project is separate.
        let r = search_q(&c, k, "signature:ClassifyText", "&project=elsewhere").await;
        assert_eq!(ids(&r), vec![id(&other)]);
        assert_eq!(
            ids(&search_q(&c, k, "project:elsewhere", "").await),
            vec![id(&other)]
        );

        // Free text: signature beats description; all words must match; summary is one line.
        let r = search_q(&c, k, "classify", "").await;
        let got = ids(&r);
        assert_eq!(
            set(&got),
            set(&[a1.clone(), a2.clone(), a3.clone(), b1.clone()]),
            "{k:?}"
        );
        assert_eq!(got[3], b1, "the description match ranks last: {r}");
        let scores: Vec<f64> = r["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x["relevance_score"].as_f64().unwrap())
            .collect();
        assert!(scores.windows(2).all(|w| w[0] >= w[1]), "{scores:?}");
        assert!(scores.iter().all(|s| *s > 0.0 && *s <= 1.0));
        assert!(scores[3] < scores[0]);
        assert_eq!(
            ids(&search_q(&c, k, "sentiment classifier", "").await),
            vec![a1.clone()]
        );
        assert_eq!(
            ids(&search_q(&c, k, "\"imdb-reviews\"", "").await),
            vec![a2.clone()]
        );
        assert_eq!(
            ids(&search_q(&c, k, "long-form", "").await),
            vec![b1.clone()]
        );
        assert!(ids(&search_q(&c, k, "classify nothing-like-this", "").await).is_empty());
        for r in search_q(&c, k, "", "").await["results"].as_array().unwrap() {
            assert!(!r["summary"].as_str().unwrap().contains('\n'));
        }

        // The structured form answers the same as the language.
        let s = c.post_json("/search", &json!({
            "signature": "ClassifyText", "performance": {"gte": 0.85},
            "optimization_method": ["miprov2", "bootstrap"],
            "metadata": {"examples_count": {"gte": 100}}, "version": {"ne": "1.0.0"},
            "sort": [{"performance": "desc"}, {"created_at": "desc"}], "limit": 10, "cursor": null
        })).await.expect(k, "POST /search", 200);
        assert_eq!(ids(&s), vec![a2.clone(), a3.clone()]);
        let l = search_q(
            &c,
            k,
            "signature:ClassifyText performance>=0.85 meta.examples_count>=100 version!=1.0.0",
            "&sort=performance:desc,created_at:desc",
        )
        .await;
        assert_eq!(ids(&l), ids(&s));
        let s = c
            .post_json(
                "/search",
                &json!({"version": {"prefix": "1."}, "tags": {"in": ["exp", "prod"]},
            "sort": ["version"]}),
            )
            .await
            .expect(k, "POST /search prefix", 200);
        assert_eq!(ids(&s), vec![a1.clone(), b1.clone(), a2.clone()]);
        let s = c
            .post_json(
                "/search",
                &json!({"text": "classify", "metadata": {"performance": {"f1": {"lt": 0.6}}}}),
            )
            .await
            .expect(k, "POST /search nested metadata", 200);
        assert_eq!(ids(&s), vec![a2.clone()]);
        let s = c.post_json("/search", &json!({"created_at": {"lt": ago(Duration::days(1))}, "sort": [{"created_at": "asc"}]}))
            .await.expect(k, "POST /search created", 200);
        assert_eq!(ids(&s), vec![b1.clone(), a1.clone()]);

        // Deleted programs never appear.
        c.request(
            http::Method::DELETE,
            &format!("/programs/{a3}"),
            &[],
            axum::body::Body::empty(),
        )
        .await
        .expect_status(k, "delete", 204);
        assert_eq!(
            ids(&search_q(&c, k, "signature:ClassifyText", "&sort=-performance").await),
            vec![a2.clone(), a1.clone()]
        );
        assert!(ids(&search_q(&c, k, "environment:staging", "").await).is_empty());
        assert_no_scan(&ts);
    }
}

#[tokio::test]
async fn bad_queries_and_cursors_are_400() {
    for ts in backends().await {
        let (c, k) = (ts.client(), ts.kind);
        for i in 0..5 {
            store(
                &c,
                k,
                json!({"i": i}),
                json!({"signature": "Paged", "performance": i as f64 / 10.0, "tags": ["t"]}),
            )
            .await;
        }
        for (q, needle) in [
            ("performance>", "position 12: expected a value"),
            (
                "signature:Paged performance>=high",
                "position 29: expected a number",
            ),
            ("colour:red", "position 0: unknown field"),
            ("\"unclosed", "expected a closing"),
            (
                "created:someday",
                "expected today, yesterday, last_week, last_month",
            ),
        ] {
            let e = c.get(&format!("/search?q={}", enc(q))).await.expect_error(
                k,
                q,
                400,
                "invalid_request",
            );
            let m = e["error"]["message"].as_str().unwrap();
            assert!(m.contains(needle), "{q}: {m}");
        }
        for body in [
            json!({"performance": {"near": 1}}),
            json!({"colour": 1}),
            json!({"sort": "x"}),
            json!({"limit": 0}),
            json!({"limit": 5000}),
        ] {
            c.post_json("/search", &body).await.expect_error(
                k,
                &body.to_string(),
                400,
                "invalid_request",
            );
        }
        c.post_raw("/search", "{not json").await.expect_error(
            k,
            "bad JSON",
            400,
            "invalid_request",
        );
        c.get("/search?q=x&bogus=1")
            .await
            .expect_error(k, "unknown param", 400, "invalid_request");

        for (path, sort) in [
            ("signature:Paged", "-performance"),
            ("signature:Paged", "version"),
            ("tag:t", ""),
        ] {
            let extra = if sort.is_empty() {
                String::new()
            } else {
                format!("&sort={sort}")
            };
            let first = search_q(&c, k, path, &format!("{extra}&limit=2")).await;
            let cursor = first["next_cursor"].as_str().unwrap().to_owned();
            // The same cursor continues the same search (the page size may change).
            let next = search_q(
                &c,
                k,
                path,
                &format!("{extra}&limit=3&cursor={}", enc(&cursor)),
            )
            .await;
            assert_eq!(ids(&next).len(), 3, "{k:?} {path}");
            // Another search, a forged or a tampered cursor: 400.
            let e = c
                .get(&format!(
                    "/search?q={}&cursor={}",
                    enc("signature:Other"),
                    enc(&cursor)
                ))
                .await;
            e.expect_error(k, "cursor of another search", 400, "invalid_request");
            let mut tampered = cursor.clone().into_bytes();
            tampered[3] = if tampered[3] == b'A' { b'B' } else { b'A' };
            let tampered = String::from_utf8(tampered).unwrap();
            for bad in [tampered.as_str(), "garbage", "eyJ9.0000000000000000", ""] {
                let e = c
                    .get(&format!(
                        "/search?q={}{extra}&cursor={}",
                        enc(path),
                        enc(bad)
                    ))
                    .await;
                if bad.is_empty() {
                    continue; // an empty cursor parameter is a first page
                }
                let v = e.expect_error(k, "forged cursor", 400, "invalid_request");
                assert_eq!(v["error"]["field"], "cursor");
            }
        }
    }
}

#[tokio::test]
async fn aggregate_and_time_series() {
    for ts in backends().await {
        let (c, k) = (ts.client(), ts.kind);
        let data = [
            ("miprov2", 0.9, 100, 1),
            ("miprov2", 0.7, 200, 1),
            ("miprov2", 0.8, 300, 3),
            ("bootstrap", 0.5, 50, 0),
            ("bootstrap", 0.6, 60, 3),
        ];
        for (m, p, n, days) in data {
            store(&c, k, json!({}), json!({"signature": "Agg", "optimization_method": m, "performance": p,
                "examples_count": n, "created_at": ago(Duration::days(days) + Duration::minutes(5))})).await;
        }
        store(
            &c,
            k,
            json!({}),
            json!({"signature": "NotAgg", "optimization_method": "miprov2", "performance": 0.1}),
        )
        .await;
        let r = c.post_json("/aggregate", &json!({"signature": "Agg", "group_by": "optimization_method",
            "metrics": {"avg_performance": {"avg": "performance"}, "max_performance": {"max": "performance"},
                        "count": {"count": "id"}, "p50": {"p50": "examples_count"}, "p95": {"p95": "performance"},
                        "sum": {"sum": "examples_count"}, "min": {"min": "performance"}}}))
            .await.expect(k, "aggregate", 200);
        let groups = r["groups"].as_array().unwrap();
        assert_eq!(groups.len(), 2, "{r}");
        let (b, m) = (&groups[0], &groups[1]);
        assert_eq!(b["key"], "bootstrap");
        assert_eq!(b["count"], 2);
        assert!((b["avg_performance"].as_f64().unwrap() - 0.55).abs() < 1e-9);
        assert_eq!(b["sum"], json!(110.0));
        assert_eq!(m["key"], "miprov2");
        assert_eq!(m["count"], 3);
        assert_eq!(m["max_performance"], json!(0.9));
        assert_eq!(m["min"], json!(0.7));
        assert_eq!(m["p50"], json!(200.0));
        assert!((m["p95"].as_f64().unwrap() - 0.89).abs() < 1e-9, "{m}");
        // Filters as a search; grouping by a custom metadata key.
        let r = c
            .post_json(
                "/aggregate",
                &json!({"filters": {"performance": {"gte": 0.6}}, "group_by": "examples_count",
            "metrics": {"n": {"count": "id"}}}),
            )
            .await
            .expect(k, "aggregate filtered", 200);
        assert_eq!(r["groups"].as_array().unwrap().len(), 4, "{r}");
        for bad in [
            json!({"metrics": {}}),
            json!({"metrics": {"x": {"median": "performance"}}}),
            json!({"metrics": {"x": {"avg": "performance"}}, "bogus": 1}),
        ] {
            c.post_json("/aggregate", &bad).await.expect_error(
                k,
                "bad aggregate",
                400,
                "invalid_request",
            );
        }

        let r = c.post_json("/time-series", &json!({"signature": "Agg", "metric": "performance", "interval": "day", "time_range": "7d"}))
            .await.expect(k, "time series", 200);
        let points = r["points"].as_array().unwrap();
        assert_eq!(points.len(), 8, "{r}");
        let total: u64 = points.iter().map(|p| p["count"].as_u64().unwrap()).sum();
        assert_eq!(total, 5);
        let empty = points.iter().filter(|p| p["count"] == 0).count();
        assert_eq!(empty, 5, "three days have programs: {r}");
        for p in points.iter().filter(|p| p["count"] == 0) {
            assert!(p["value"].is_null());
        }
        let day1 = points
            .iter()
            .find(|p| p["count"] == 2 && (p["value"].as_f64().unwrap() - 0.8).abs() < 1e-9);
        assert!(day1.is_some(), "the day with 0.9 and 0.7 averages 0.8: {r}");
        let r = c
            .post_json(
                "/time-series",
                &json!({"signature": "Agg", "interval": "hour", "time_range": "2d"}),
            )
            .await
            .expect(k, "hourly", 200);
        assert_eq!(r["points"].as_array().unwrap().len(), 49);
        let r = c.post_json("/time-series", &json!({"signature": "Agg", "interval": "week", "time_range": "3w", "metric": "examples_count"}))
            .await.expect(k, "weekly", 200);
        let pts = r["points"].as_array().unwrap();
        assert!(pts.len() == 4 || pts.len() == 3, "{r}");
        assert_eq!(
            pts.iter()
                .map(|p| p["count"].as_u64().unwrap())
                .sum::<u64>(),
            5
        );
        for bad in [
            json!({"interval": "month"}),
            json!({"time_range": "forever"}),
            json!({"interval": "hour", "time_range": "5000d"}),
        ] {
            c.post_json("/time-series", &bad).await.expect_error(
                k,
                "bad time series",
                400,
                "invalid_request",
            );
        }
        assert_no_scan(&ts);
    }
}

#[tokio::test]
async fn similar_programs() {
    for ts in backends().await {
        let (c, k) = (ts.client(), ts.kind);
        let base = json!({"signature": "Classify", "performance": 0.90, "optimization_method": "miprov2", "examples_count": 100});
        let target = store(
            &c,
            k,
            dspy_program("Classify the sentiment of the text."),
            base.clone(),
        )
        .await;
        let twin = store(&c, k, dspy_program("Classify the sentiment of the text."),
            json!({"signature": "Classify", "performance": 0.89, "optimization_method": "miprov2", "examples_count": 100})).await;
        let cousin = store(&c, k, dspy_program("Classify the sentiment of the given text carefully."),
            json!({"signature": "Classify", "performance": 0.80, "optimization_method": "miprov2", "examples_count": 80})).await;
        let stranger = store(
            &c,
            k,
            dspy_program("Write a poem."),
            json!({"signature": "Poet", "performance": 0.2, "optimization_method": "copro"}),
        )
        .await;
        let id = |v: &Value| v["id"].as_str().unwrap().to_owned();
        let r = c
            .get(&format!(
                "/programs/{}/similar?threshold=0.5&limit=10",
                id(&target)
            ))
            .await
            .expect(k, "similar", 200);
        let got = ids(&r);
        assert_eq!(got, vec![id(&twin), id(&cousin)], "{r}");
        let sims: Vec<f64> = r["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x["similarity"].as_f64().unwrap())
            .collect();
        assert!(
            sims[0] > sims[1] && sims[0] <= 1.0 && sims[1] >= 0.5,
            "{sims:?}"
        );
        assert_eq!(r["results"][0]["components"]["instructions"], json!(1.0));
        assert!(!got.contains(&id(&target)) && !got.contains(&id(&stranger)));
        let all = c
            .get(&format!("/programs/{}/similar?threshold=0", id(&target)))
            .await
            .expect(k, "similar all", 200);
        assert_eq!(ids(&all).len(), 3);
        assert!(all["results"]
            .as_array()
            .unwrap()
            .iter()
            .all(|x| (0.0..=1.0).contains(&x["similarity"].as_f64().unwrap())));
        c.get(&format!("/programs/{}/similar?threshold=2", id(&target)))
            .await
            .expect_error(k, "threshold", 400, "invalid_request");
        c.get("/programs/0191e2a4-0000-7000-8000-000000000000/similar")
            .await
            .expect_error(k, "unknown", 404, "not_found");
        assert_no_scan(&ts);
    }
}

// ----- property test: results equal a brute-force filter + sort -----------------------------

#[derive(Debug, Clone)]
struct GenProgram {
    sig: usize,
    perf: Option<u8>,
    perf_object: bool,
    method: Option<usize>,
    tags: Vec<usize>,
    env: Option<usize>,
    examples: Option<u16>,
    word: Option<usize>,
    hours_ago: u16,
}

const SIGS: [&str; 3] = ["Alpha", "Beta", "Gamma"];
const METHODS: [&str; 3] = ["miprov2", "bootstrap", "copro"];
const TAGS: [&str; 3] = ["prod", "exp", "old"];
const ENVS: [&str; 2] = ["production", "staging"];
const WORDS: [&str; 3] = ["zebra", "quokka", "lynx"];
/// Free-text words searched: whole words, prefixes, other cases, inner parts (which match only
/// where a word starts with them), words of several fields.
const QUERY_WORDS: [&str; 12] = [
    "zebra", "quokka", "lynx", "Zeb", "QUOK", "ebra", "pro", "alpha", "gam", "mipro", "a", "stag",
];
const TAG_PREFIXES: [&str; 3] = ["pr", "ex", "o"];

#[derive(Debug, Clone)]
enum GenCond {
    Sig(usize),
    SigIn(usize, usize),
    Perf(usize, u8),
    Method(usize),
    MethodNe(usize),
    Tag(usize),
    Env(usize),
    Examples(usize, u16),
    VersionPrefix(u8),
    CreatedWithin(u16),
    /// A free-text word of [`QUERY_WORDS`].
    Word(usize),
    /// `tag:<p>*` / `{"tags": {"prefix": p}}` with a prefix of [`TAG_PREFIXES`].
    TagPrefix(usize),
}

const OPS: [(&str, &str); 4] = [("gt", ">"), ("gte", ">="), ("lt", "<"), ("lte", "<=")];

#[derive(Debug, Clone)]
struct GenQuery {
    conds: Vec<GenCond>,
    sort: usize,
    limit: usize,
}

/// The sorts tried: (structured sort, `sort=` parameter).
fn sorts() -> Vec<(Value, &'static str)> {
    vec![
        (json!(null), ""),
        (json!([{"performance": "desc"}]), "-performance"),
        (json!([{"performance": "asc"}]), "performance"),
        (json!([{"created_at": "asc"}]), "created_at:asc"),
        (json!([{"version": "asc"}]), "version"),
        (
            json!([{"metadata.examples_count": "desc"}, {"created_at": "asc"}]),
            "-meta.examples_count,created_at",
        ),
        (
            json!([{"signature": "asc"}, {"performance": "desc"}]),
            "signature,-performance",
        ),
    ]
}

fn program_strategy() -> impl Strategy<Value = GenProgram> {
    (
        (
            0..3usize,
            proptest::option::of(0..=100u8),
            any::<bool>(),
            proptest::option::of(0..3usize),
        ),
        (
            proptest::collection::btree_set(0..3usize, 0..3),
            proptest::option::of(0..2usize),
        ),
        (
            proptest::option::of(0..500u16),
            proptest::option::of(0..3usize),
            0..200u16,
        ),
    )
        .prop_map(
            |((sig, perf, perf_object, method), (tags, env), (examples, word, hours_ago))| {
                GenProgram {
                    sig,
                    perf,
                    perf_object,
                    method,
                    tags: tags.into_iter().collect(),
                    env,
                    examples,
                    word,
                    hours_ago,
                }
            },
        )
}

fn cond_strategy() -> impl Strategy<Value = GenCond> {
    prop_oneof![
        (0..3usize).prop_map(GenCond::Sig),
        (0..3usize, 0..3usize).prop_map(|(a, b)| GenCond::SigIn(a, b)),
        (0..4usize, 0..=100u8).prop_map(|(o, x)| GenCond::Perf(o, x)),
        (0..3usize).prop_map(GenCond::Method),
        (0..3usize).prop_map(GenCond::MethodNe),
        (0..3usize).prop_map(GenCond::Tag),
        (0..2usize).prop_map(GenCond::Env),
        (0..4usize, 0..500u16).prop_map(|(o, x)| GenCond::Examples(o, x)),
        (0..4u8).prop_map(GenCond::VersionPrefix),
        (1..200u16).prop_map(GenCond::CreatedWithin),
        (0..QUERY_WORDS.len()).prop_map(GenCond::Word),
        (0..TAG_PREFIXES.len()).prop_map(GenCond::TagPrefix),
    ]
}

fn query_strategy() -> impl Strategy<Value = GenQuery> {
    (
        proptest::collection::vec(cond_strategy(), 0..3),
        0..7usize,
        1..6usize,
    )
        .prop_map(|(conds, sort, limit)| GenQuery { conds, sort, limit })
}

/// What the test knows of a stored program.
#[derive(Debug, Clone)]
struct Known {
    id: String,
    version: Version,
    created_at: String,
    g: GenProgram,
}

impl Known {
    fn perf(&self) -> Option<f64> {
        self.g.perf.map(|p| p as f64 / 100.0)
    }
}

fn op_holds(op: usize, o: Ordering) -> bool {
    match op {
        0 => o == Ordering::Greater,
        1 => o != Ordering::Less,
        2 => o == Ordering::Less,
        _ => o != Ordering::Greater,
    }
}

fn oracle_matches(k: &Known, c: &GenCond, now: DateTime<Utc>) -> bool {
    let g = &k.g;
    match c {
        GenCond::Sig(s) => g.sig == *s,
        GenCond::SigIn(a, b) => g.sig == *a || g.sig == *b,
        GenCond::Perf(op, x) => k
            .perf()
            .is_some_and(|p| op_holds(*op, p.partial_cmp(&(*x as f64 / 100.0)).unwrap())),
        GenCond::Method(m) => g.method == Some(*m),
        GenCond::MethodNe(m) => g.method != Some(*m),
        GenCond::Tag(t) => g.tags.contains(t),
        GenCond::Env(e) => g.env == Some(*e),
        GenCond::Examples(op, x) => g.examples.is_some_and(|n| op_holds(*op, n.cmp(x))),
        GenCond::VersionPrefix(p) => k.version.to_string().starts_with(&format!("1.0.{p}")),
        GenCond::CreatedWithin(h) => k.created_at >= created_bound(now, *h),
        GenCond::Word(w) => {
            let q = QUERY_WORDS[*w].to_lowercase();
            oracle_words(k).iter().any(|word| word.starts_with(&q))
        }
        GenCond::TagPrefix(p) => g
            .tags
            .iter()
            .any(|t| TAGS[*t].starts_with(TAG_PREFIXES[*p])),
    }
}

/// The words a program is found by, the plain way: its signature, method, tags, environment
/// and description, lowercased, cut at every character that is not a letter or digit.
fn oracle_words(k: &Known) -> Vec<String> {
    let g = &k.g;
    let mut text = vec![SIGS[g.sig].to_owned()];
    text.extend(g.method.map(|m| METHODS[m].to_owned()));
    text.extend(g.tags.iter().map(|t| TAGS[*t].to_owned()));
    text.extend(g.env.map(|e| ENVS[e].to_owned()));
    text.extend(g.word.map(|w| format!("a {} program", WORDS[w])));
    text.iter()
        .flat_map(|t| {
            t.to_lowercase()
                .split(|c: char| !c.is_alphanumeric())
                .filter(|w| !w.is_empty())
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .collect()
}

fn created_bound(now: DateTime<Utc>, hours: u16) -> String {
    format_time(&(now - Duration::hours(hours as i64) - Duration::minutes(30)))
}

/// Adds a condition to a structured body; its query-language term (`None` when the language has
/// none, an `in` list); `Err` when the body cannot hold it beside the others.
fn cond_json(
    c: &GenCond,
    now: DateTime<Utc>,
    body: &mut serde_json::Map<String, Value>,
) -> Result<Option<String>, ()> {
    let mut put = |k: &str, v: Value| {
        // Two conditions on one key: merge operator objects, else the query is not expressible.
        match (body.get_mut(k), v) {
            (None, v) => {
                body.insert(k.to_owned(), v);
                true
            }
            (Some(Value::Object(a)), Value::Object(b)) if b.keys().all(|x| !a.contains_key(x)) => {
                a.extend(b);
                true
            }
            _ => false,
        }
    };
    let (ok, q) = match c {
        GenCond::Sig(s) => (
            put("signature", json!(SIGS[*s])),
            Some(format!("signature:{}", SIGS[*s])),
        ),
        GenCond::SigIn(a, b) => (put("signature", json!([SIGS[*a], SIGS[*b]])), None),
        GenCond::Perf(o, x) => {
            let v = *x as f64 / 100.0;
            (
                put("performance", json!({OPS[*o].0: v})),
                Some(format!("performance{}{v}", OPS[*o].1)),
            )
        }
        GenCond::Method(m) => (
            put("optimization_method", json!(METHODS[*m])),
            Some(format!("method:{}", METHODS[*m])),
        ),
        GenCond::MethodNe(m) => (
            put("optimization_method", json!({"ne": METHODS[*m]})),
            Some(format!("method!={}", METHODS[*m])),
        ),
        GenCond::Tag(t) => (
            put("tags", json!(TAGS[*t])),
            Some(format!("tag:{}", TAGS[*t])),
        ),
        GenCond::Env(e) => (
            put("environment", json!(ENVS[*e])),
            Some(format!("environment:{}", ENVS[*e])),
        ),
        GenCond::Examples(o, x) => {
            let m = body.entry("metadata").or_insert_with(|| json!({}));
            let ok = m.get("examples_count").is_none();
            if ok {
                m["examples_count"] = json!({OPS[*o].0: x});
            }
            (ok, Some(format!("meta.examples_count{}{x}", OPS[*o].1)))
        }
        GenCond::VersionPrefix(p) => (
            put("version", json!({"prefix": format!("1.0.{p}")})),
            Some(format!("version:1.0.{p}*")),
        ),
        GenCond::CreatedWithin(h) => {
            let t = created_bound(now, *h);
            (
                put("created_at", json!({"gte": t})),
                Some(format!("created>={t}")),
            )
        }
        GenCond::Word(w) => {
            let prev = body
                .get("text")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned();
            body.insert(
                "text".into(),
                json!(format!("{prev} {}", QUERY_WORDS[*w]).trim()),
            );
            (true, Some(QUERY_WORDS[*w].to_owned()))
        }
        GenCond::TagPrefix(p) => (
            put("tags", json!({"prefix": TAG_PREFIXES[*p]})),
            Some(format!("tag:{}*", TAG_PREFIXES[*p])),
        ),
    };
    if ok {
        Ok(q)
    } else {
        Err(())
    }
}

fn oracle_cmp(sort: usize, a: &Known, b: &Known) -> Ordering {
    let perf = |k: &Known| k.perf().map(|p| (1, p)).unwrap_or((0, 0.0));
    let ex = |k: &Known| k.g.examples.map(|n| (1, n)).unwrap_or((0, 0));
    let by_id = |desc: bool| {
        if desc {
            b.id.cmp(&a.id)
        } else {
            a.id.cmp(&b.id)
        }
    };
    let pc = |x: &Known, y: &Known| perf(x).partial_cmp(&perf(y)).unwrap();
    match sort {
        0 => b.created_at.cmp(&a.created_at).then(by_id(true)),
        1 => pc(b, a).then(by_id(true)),
        2 => pc(a, b).then(by_id(false)),
        3 => a.created_at.cmp(&b.created_at).then(by_id(false)),
        4 => a.version.cmp(&b.version).then(by_id(false)),
        5 => ex(b)
            .cmp(&ex(a))
            .then(a.created_at.cmp(&b.created_at))
            .then(by_id(true)),
        _ => SIGS[a.g.sig]
            .cmp(SIGS[b.g.sig])
            .then(pc(b, a))
            .then(by_id(false)),
    }
}

async fn walk_post(c: &Client, k: Kind, mut body: Value, limit: usize) -> Vec<String> {
    let mut out = Vec::new();
    body["limit"] = json!(limit);
    for _ in 0..100 {
        let r = c
            .post_json("/search", &body)
            .await
            .expect(k, &format!("POST /search {body}"), 200);
        let page = ids(&r);
        assert!(page.len() <= limit);
        out.extend(page);
        match r["next_cursor"].as_str() {
            Some(cur) => body["cursor"] = json!(cur),
            None => return out,
        }
    }
    panic!("pagination does not end");
}

async fn walk_get(
    c: &Client,
    k: Kind,
    q: &str,
    project: &str,
    sort: &str,
    limit: usize,
) -> Vec<String> {
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..100 {
        let mut uri = format!("/search?q={}&project={project}&limit={limit}", enc(q));
        if !sort.is_empty() {
            uri.push_str(&format!("&sort={}", enc(sort)));
        }
        if let Some(cur) = &cursor {
            uri.push_str(&format!("&cursor={}", enc(cur)));
        }
        let r = c.get(&uri).await.expect(k, &uri, 200);
        out.extend(ids(&r));
        match r["next_cursor"].as_str() {
            Some(cur) => cursor = Some(cur.to_owned()),
            None => return out,
        }
    }
    panic!("pagination does not end");
}

async fn check_case(ts: &TestStore, case: usize, programs: &[GenProgram], queries: &[GenQuery]) {
    let (c, k) = (ts.client(), ts.kind);
    let project = format!("prop{case}-{}", uuid::Uuid::now_v7().simple());
    let now = Utc::now();
    let mut known = Vec::new();
    for g in programs {
        let mut meta = json!({"signature": SIGS[g.sig], "project": project,
            "created_at": format_time(&(now - Duration::hours(g.hours_ago as i64)))});
        if let Some(p) = g.perf {
            let p = p as f64 / 100.0;
            meta["performance"] = if g.perf_object {
                json!({"accuracy": p, "latency": 3})
            } else {
                json!(p)
            };
        }
        if let Some(m) = g.method {
            meta["optimization_method"] = json!(METHODS[m]);
        }
        if !g.tags.is_empty() {
            meta["tags"] = json!(g.tags.iter().map(|t| TAGS[*t]).collect::<Vec<_>>());
        }
        if let Some(e) = g.env {
            meta["environment"] = json!(ENVS[e]);
        }
        if let Some(n) = g.examples {
            meta["examples_count"] = json!(n);
        }
        if let Some(w) = g.word {
            meta["description"] = json!(format!("a {} program", WORDS[w]));
        }
        let r = store(&c, k, json!({}), meta).await;
        known.push(Known {
            id: r["id"].as_str().unwrap().to_owned(),
            version: Version::parse(r["version"].as_str().unwrap()).unwrap(),
            created_at: r["created_at"].as_str().unwrap().to_owned(),
            g: g.clone(),
        });
    }
    let sorts = sorts();
    for q in queries {
        let mut body = serde_json::Map::new();
        body.insert("project".into(), json!(project));
        let mut text = Vec::new();
        let mut expressible = true;
        for cond in &q.conds {
            match cond_json(cond, now, &mut body) {
                Err(()) => expressible = false,
                Ok(Some(s)) => text.push(s),
                Ok(None) => {}
            }
        }
        if !expressible {
            continue;
        }
        let in_language = q.conds.iter().all(|c| !matches!(c, GenCond::SigIn(..)));
        // Free text without a sort sorts by relevance, which the oracle does not model.
        let sort = if q.sort == 0 && q.conds.iter().any(|c| matches!(c, GenCond::Word(_))) {
            3
        } else {
            q.sort
        };
        body.insert("sort".into(), sorts[sort].0.clone());
        let mut expected: Vec<&Known> = known
            .iter()
            .filter(|kp| q.conds.iter().all(|c| oracle_matches(kp, c, now)))
            .collect();
        expected.sort_by(|a, b| oracle_cmp(sort, a, b));
        let expected: Vec<String> = expected.iter().map(|x| x.id.clone()).collect();
        let got = walk_post(&c, k, Value::Object(body.clone()), q.limit).await;
        assert_eq!(
            got,
            expected,
            "{k:?}: POST {} (limit {})",
            Value::Object(body),
            q.limit
        );
        if in_language {
            let qs = text.join(" ");
            let got = walk_get(&c, k, &qs, &project, sorts[sort].1, q.limit).await;
            assert_eq!(
                got, expected,
                "{k:?}: GET q={qs} sort={} (limit {})",
                sorts[sort].1, q.limit
            );
        }
    }
}

#[test]
fn search_equals_brute_force_on_generated_data() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let stores = rt.block_on(backends());
    let cases: u32 = std::env::var("SEARCH_PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(12);
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    let counter = std::sync::atomic::AtomicUsize::new(0);
    let strategy = (
        proptest::collection::vec(program_strategy(), 0..22),
        proptest::collection::vec(query_strategy(), 1..8),
    );
    runner
        .run(&strategy, |(programs, queries)| {
            let case = counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            for ts in &stores {
                rt.block_on(check_case(ts, case, &programs, &queries));
                assert_no_scan(ts);
            }
            Ok(())
        })
        .unwrap();
}

// ----- request counts ------------------------------------------------------------------------

#[tokio::test]
async fn indexed_search_is_one_index_query_and_one_record_read_and_no_blob_read() {
    let Some(ts) = aws().await else {
        eprintln!("search request counts: no AWS endpoint configured; skipped");
        return;
    };
    let (c, k) = (ts.client(), ts.kind);
    let counter = ts.counter.clone().unwrap();
    for i in 0..25 {
        store(
            &c,
            k,
            json!({"i": i}),
            json!({"signature": "Counted", "performance": (i % 10) as f64 / 10.0, "tags": ["t"]}),
        )
        .await;
        store(
            &c,
            k,
            json!({"i": i}),
            json!({"signature": "Noise", "performance": 0.95}),
        )
        .await;
    }
    counter.reset();
    let r = search_q(&c, k, "signature:Counted", "&sort=-performance&limit=10").await;
    let snapshot = counter.snapshot();
    println!("signature:Counted sort=-performance limit=10: {snapshot:?}");
    assert_eq!(ids(&r).len(), 10);
    assert_eq!(r["results"][0]["performance"], json!(0.9));
    // The index holds keys only: one query of it, then one batch read of the records it found.
    assert_eq!(snapshot.get("DynamoDB.Query"), Some(&1));
    assert_eq!(snapshot.get("DynamoDB.BatchGetItem"), Some(&1));
    assert_eq!(
        snapshot.values().sum::<u64>(),
        2,
        "one index query, one batch read and nothing else: {snapshot:?}"
    );
    // The next page: the same again.
    counter.reset();
    let cur = r["next_cursor"].as_str().unwrap();
    let r2 = search_q(
        &c,
        k,
        "signature:Counted",
        &format!("&sort=-performance&limit=10&cursor={}", enc(cur)),
    )
    .await;
    assert_eq!(ids(&r2).len(), 10);
    assert_eq!(
        counter.snapshot().values().sum::<u64>(),
        2,
        "{:?}",
        counter.snapshot()
    );
    // Newest first through the creation index, and the structured form: one query and one
    // batch read each.
    counter.reset();
    c.post_json(
        "/search",
        &json!({"signature": "Counted", "sort": [{"performance": "desc"}], "limit": 10}),
    )
    .await
    .expect(k, "POST", 200);
    assert_eq!(
        counter.snapshot().values().sum::<u64>(),
        2,
        "{:?}",
        counter.snapshot()
    );
    counter.reset();
    c.get("/search?q=signature%3ACounted&limit=10")
        .await
        .expect(k, "GET newest", 200);
    assert_eq!(
        counter.snapshot().values().sum::<u64>(),
        2,
        "{:?}",
        counter.snapshot()
    );
    // A filter the index does not serve reads one page of the index, still no blob and no scan.
    counter.reset();
    c.get("/search?q=signature%3ACounted+performance%3E%3D0.5&limit=5")
        .await
        .expect(k, "GET filtered", 200);
    let s = counter.snapshot();
    println!("signature:Counted performance>=0.5 limit=5: {s:?}");
    assert_eq!(s.get("DynamoDB.Query"), Some(&1));
    assert!(
        s.keys()
            .all(|k| k == "DynamoDB.Query" || k == "DynamoDB.BatchGetItem"),
        "{s:?}"
    );
}

#[tokio::test]
async fn patched_metadata_is_searched_at_once() {
    for ts in backends().await {
        let (c, k) = (ts.client(), ts.kind);
        let v = store(
            &c,
            k,
            json!({}),
            json!({"signature": "Patched", "tags": ["old"]}),
        )
        .await;
        let id = v["id"].as_str().unwrap().to_owned();
        assert_eq!(ids(&search_q(&c, k, "tag:old", "").await), vec![id.clone()]);
        c.request(
            http::Method::PATCH,
            &format!("/programs/{id}/metadata"),
            &[("content-type", "application/json")],
            serde_json::to_vec(&json!({"tags": {"add": ["new"], "remove": ["old"]},
                "description": "now with zebras", "set": {"owner": "ana"}}))
            .unwrap(),
        )
        .await
        .expect(k, "patch", 200);
        assert!(
            ids(&search_q(&c, k, "tag:old", "").await).is_empty(),
            "{k:?}"
        );
        assert_eq!(ids(&search_q(&c, k, "tag:new", "").await), vec![id.clone()]);
        assert_eq!(
            ids(&search_q(&c, k, "zebras meta.owner:ana", "").await),
            vec![id.clone()]
        );
        assert_no_scan(&ts);
    }
}

// ----- the free-text index ---------------------------------------------------------------------

/// Every item of a store whose keys say it is a text index entry.
async fn text_entries(storage: &dspy_storage_core::storage::Storage) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut start = None;
    loop {
        let page = storage.items().scan(start.take(), 500).await.unwrap();
        out.extend(
            page.items
                .iter()
                .filter(|i| i.pk.starts_with("TXT#"))
                .map(|i| (i.pk.clone(), i.sk.clone())),
        );
        match page.next {
            Some(n) => start = Some(n),
            None => return out,
        }
    }
}

fn status_of(v: &Value, id: &str) -> String {
    v["results"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == id)
        .map(|r| r["status"].as_str().unwrap().to_owned())
        .unwrap_or_default()
}

#[tokio::test]
async fn text_index_follows_patches_rollbacks_archives_and_deletes() {
    for ts in backends().await {
        let (c, k) = (ts.client(), ts.kind);
        let id = |v: &Value| v["id"].as_str().unwrap().to_owned();
        let p1 = id(&store(
            &c,
            k,
            json!({"v": 1}),
            json!({"signature": "Life.Cycle", "description": "Orchid keeper", "tags": ["garden"]}),
        )
        .await);
        assert_eq!(ids(&search_q(&c, k, "orchid", "").await), vec![p1.clone()]);
        // Prefixes of words, any case; not the inside of a word.
        assert_eq!(
            ids(&search_q(&c, k, "ORCH kee", "").await),
            vec![p1.clone()]
        );
        assert_eq!(ids(&search_q(&c, k, "cycle", "").await), vec![p1.clone()]);
        assert!(ids(&search_q(&c, k, "rchid", "").await).is_empty(), "{k:?}");
        assert_eq!(
            ids(&search_q(&c, k, "tag:gard*", "").await),
            vec![p1.clone()]
        );
        assert_eq!(
            ids(&search_q(&c, k, "description:\"Orchid keeper\"", "").await),
            vec![p1.clone()]
        );
        // A patch: the new words are found at once, the old ones no longer match.
        c.request(
            http::Method::PATCH,
            &format!("/programs/{p1}/metadata"),
            &[("content-type", "application/json")],
            serde_json::to_vec(&json!({"description": "Cactus keeper"})).unwrap(),
        )
        .await
        .expect(k, "patch", 200);
        assert!(
            ids(&search_q(&c, k, "orchid", "").await).is_empty(),
            "{k:?}"
        );
        assert_eq!(ids(&search_q(&c, k, "cactus", "").await), vec![p1.clone()]);
        // A rollback is a new program with the same words.
        let p2 = id(&c
            .post_json(
                "/signatures/Life.Cycle/rollback",
                &json!({"to_version": "1.0.0"}),
            )
            .await
            .expect(k, "rollback", 201));
        assert_eq!(
            set(&ids(&search_q(&c, k, "cactus", "").await)),
            set(&[p1.clone(), p2.clone()])
        );
        // Archived programs are still found, with their status.
        c.post_json(&format!("/programs/{p1}/archive"), &json!({}))
            .await
            .expect(k, "archive", 200);
        let r = search_q(&c, k, "cactus", "").await;
        assert_eq!(status_of(&r, &p1), "archived", "{r}");
        // Deleted programs are gone, and so are their entries.
        let before = text_entries(&ts.storage).await;
        assert!(before.iter().any(|(_, sk)| sk.ends_with(&p2)));
        c.request(
            http::Method::DELETE,
            &format!("/programs/{p2}"),
            &[],
            axum::body::Body::empty(),
        )
        .await
        .expect_status(k, "delete", 204);
        assert_eq!(ids(&search_q(&c, k, "cactus", "").await), vec![p1.clone()]);
        let after = text_entries(&ts.storage).await;
        assert!(!after.iter().any(|(_, sk)| sk.ends_with(&p2)), "{after:?}");
        // More words than the cap: one overflow entry, and still found by every word.
        let many: Vec<String> = (0..100).map(|i| format!("w{i:03}")).collect();
        let p3 = id(&store(
            &c,
            k,
            json!({}),
            json!({"signature": "Wordy", "description": many.join(" ")}),
        )
        .await);
        let mine: Vec<_> = text_entries(&ts.storage)
            .await
            .into_iter()
            .filter(|(_, sk)| sk.ends_with(&p3))
            .collect();
        assert_eq!(mine.len(), 1, "{mine:?}");
        assert!(mine[0].0.ends_with("#+"), "{mine:?}");
        assert_eq!(ids(&search_q(&c, k, "w057", "").await), vec![p3.clone()]);
        assert_eq!(
            ids(&search_q(&c, k, "wordy w09", "").await),
            vec![p3.clone()]
        );
        assert!(ids(&search_q(&c, k, "w057 cactus", "").await).is_empty());
        // (This test scans to look at the entries; the searches themselves never do.)
    }
}

/// Removes every text index item and the index's state: the store as a build from before the
/// index left it.
async fn forget_the_text_index(storage: &dspy_storage_core::storage::Storage) {
    use dspy_storage_core::backend::{Condition, WriteOp};
    let mut keys = text_entries(storage).await;
    keys.push(("STATUS".into(), "TEXTINDEX".into()));
    for chunk in keys.chunks(100) {
        storage
            .items()
            .transact(
                chunk
                    .iter()
                    .map(|(pk, sk)| WriteOp::delete(pk.clone(), sk.clone(), Condition::None))
                    .collect(),
            )
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn programs_stored_before_the_text_index_are_found_and_reindexed() {
    use dspy_storage_core::access::OPERATOR;
    for ts in backends().await {
        let (c, k) = (ts.client(), ts.kind);
        let mut old = Vec::new();
        for i in 0..3 {
            let v = store(
                &c,
                k,
                json!({"i": i}),
                json!({"signature": format!("Old.S{i}"), "description": "an heirloom program"}),
            )
            .await;
            old.push(v["id"].as_str().unwrap().to_owned());
        }
        forget_the_text_index(&ts.storage).await;
        assert!(text_entries(&ts.storage).await.is_empty());
        match k {
            Kind::Embedded => {
                // The embedded backend migrates when it is opened.
                let dir = ts.data_dir.as_ref().unwrap().path();
                let s = dspy_storage_core::open::embedded(dir, Default::default()).unwrap();
                assert!(s.text_index_ready().await.unwrap());
                assert_eq!(
                    text_entries(&s).await.len(),
                    text_entries(&ts.storage).await.len()
                );
                let s = TestStore {
                    kind: k,
                    storage: std::sync::Arc::new(s),
                    counter: None,
                    location: None,
                    data_dir: None,
                };
                assert_eq!(
                    set(&ids(&search_q(&s.client(), k, "heirloom", "").await)),
                    set(&old)
                );
            }
            Kind::Aws => {
                // Another process of the new build, on the old table: searches read the
                // project's programs until the index is complete, then the index.
                let counter = dspy_storage_core::backend::aws::RequestCounter::default();
                let s = dspy_storage_core::open::aws(
                    &dspy_storage_core::backend::aws::sdk_config().await,
                    ts.location.as_ref().unwrap(),
                    Default::default(),
                    false,
                    Some(counter.clone()),
                )
                .await
                .unwrap();
                let s = TestStore {
                    kind: k,
                    storage: std::sync::Arc::new(s),
                    counter: Some(counter.clone()),
                    location: ts.location.clone(),
                    data_dir: None,
                };
                let c2 = s.client();
                counter.reset();
                assert_eq!(
                    set(&ids(&search_q(&c2, k, "heirloom", "").await)),
                    set(&old)
                );
                let before = counter.snapshot();
                println!("free text before the reindex: {before:?}");
                // The index state, then one page of the project's (keys-only) index and one
                // batch read of the records it found.
                assert_eq!(before.get("DynamoDB.GetItem"), Some(&1), "{before:?}");
                assert_eq!(before.get("DynamoDB.Query"), Some(&1), "{before:?}");
                assert_eq!(before.get("DynamoDB.BatchGetItem"), Some(&1), "{before:?}");
                // The cleanup run builds it (resumable; `dspy-storage reindex` runs the same).
                let r = c2
                    .post_json("/maintenance/cleanup", &json!({"dry_run": false}))
                    .await
                    .expect(k, "cleanup", 200);
                assert_eq!(r["summary"]["text_index_programs"], 3, "{r}");
                assert_eq!(
                    s.storage
                        .reindex_text(&OPERATOR, None, false)
                        .await
                        .unwrap()
                        .programs_indexed,
                    0
                );
                counter.reset();
                assert_eq!(
                    set(&ids(&search_q(&c2, k, "heirloom", "").await)),
                    set(&old)
                );
                let after = counter.snapshot();
                println!("free text after the reindex: {after:?}");
                assert_eq!(after.get("DynamoDB.BatchGetItem"), Some(&1), "{after:?}");
                assert_eq!(after.get("DynamoDB.GetItem"), None, "{after:?}");
                // A restart walks everything again.
                let r = s.storage.reindex_text(&OPERATOR, None, true).await.unwrap();
                assert!(r.complete && r.programs_indexed == 3, "{r:?}");
            }
        }
    }
}

/// Stores `n` programs of project `project` that no search below matches, 8 at a time.
async fn store_noise(ts: &TestStore, project: &str, from: usize, n: usize) {
    use futures::StreamExt;
    futures::stream::iter(from..from + n)
        .map(|i| async move {
            let c = ts.client();
            store(
                &c,
                ts.kind,
                json!({"i": i}),
                json!({"signature": format!("Hay.S{}", i % 20), "project": project,
                    "description": "just hay, bales of it", "tags": ["blunt"], "owner": "bob",
                    "examples_count": i}),
            )
            .await;
        })
        .buffer_unordered(8)
        .collect::<Vec<_>>()
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn free_text_reads_grow_with_the_matches_not_with_the_project() {
    let Some(ts) = aws().await else {
        eprintln!("free text request counts: no AWS endpoint configured; skipped");
        return;
    };
    let (c, k) = (ts.client(), ts.kind);
    let counter = ts.counter.clone().unwrap();
    let project = "haystack";
    let mut needles = Vec::new();
    for i in 0..5 {
        let v = store(
            &c,
            k,
            json!({"needle": i}),
            json!({"signature": "Needle.Finder", "project": project,
                "description": "a needle in the haystack", "tags": ["sharp-end"], "owner": "ana"}),
        )
        .await;
        needles.push(v["id"].as_str().unwrap().to_owned());
    }
    let queries = [
        "needle",
        "NEEDL",
        "needle haystack",
        "tag:sharp*",
        "meta.owner:ana",
        "needle created:last_week",
        "zzz",
    ];
    let measure = |label: String| {
        let (c, counter) = (c.clone(), counter.clone());
        async move {
            let mut out = Vec::new();
            for q in queries {
                counter.reset();
                let r = search_q(&c, k, q, &format!("&project={project}&limit=20")).await;
                let found = ids(&r);
                let snapshot = counter.snapshot();
                let cu = counter.capacity("DynamoDB");
                println!(
                    "{label}: {q:?} → {} results, {snapshot:?}, {cu} CU",
                    found.len()
                );
                out.push((found.len(), snapshot, cu));
            }
            out
        }
    };
    store_noise(&ts, project, 0, 45).await;
    let small = measure("50 programs".into()).await;
    // The project as the previous build read it (its partition), for the report.
    let old_small = project_partition_cu(&ts, project).await;
    store_noise(&ts, project, 45, 450).await;
    let large = measure("500 programs".into()).await;
    let old_large = project_partition_cu(&ts, project).await;
    println!(
        "reading the project's partition instead (the previous plan): {old_small} CU at 50, {old_large} CU at 500"
    );
    assert!(old_large > old_small * 5.0, "{old_small} → {old_large}");
    for (q, (a, b)) in queries.iter().zip(small.iter().zip(&large)) {
        let expected = if *q == "zzz" { 0 } else { 5 };
        assert_eq!(a.0, expected, "{q}");
        assert_eq!(b.0, expected, "{q}");
        assert_eq!(a.1, b.1, "{q}: the same requests at 50 and 500 programs");
        assert!(
            b.2 <= a.2 * 1.2 + 0.01,
            "{q}: {} CU at 500 programs, {} at 50",
            b.2,
            a.2
        );
        // The word prefix reads, the overflow partition, one batch read of the records.
        assert_eq!(
            a.1.get("DynamoDB.BatchGetItem"),
            (expected > 0).then_some(&1),
            "{q}"
        );
        assert!(
            a.1.keys()
                .all(|k| k == "DynamoDB.Query" || k == "DynamoDB.BatchGetItem"),
            "{q}"
        );
    }
    assert_no_scan(&ts);
}

/// The capacity of reading a project's whole partition (GSI4), as searches did before the
/// text index.
async fn project_partition_cu(ts: &TestStore, project: &str) -> f64 {
    use dspy_storage_core::backend::{Index, Query};
    let counter = ts.counter.clone().unwrap();
    counter.reset();
    let mut start = None;
    loop {
        let q = Query::new(Index::Gsi4, format!("PROJ#{project}"))
            .limit(1000)
            .start(start.take());
        let page = ts.storage.items().query(&q).await.unwrap();
        match page.next {
            Some(n) => start = Some(n),
            None => break,
        }
    }
    counter.capacity("DynamoDB")
}
