//! The round-trip contract of docs/DESIGN.md, counted on the AWS backend (DynamoDB + S3): store = one
//! object write + one transactional metadata write (and the one read of the signature head it
//! builds on); load by id = one item read + one object read; load by `latest` or by an exact
//! version = one more item read; list the versions of a signature = one query.
//!
//! Skipped (with a message) when no AWS endpoint is configured.

use dspy_storage_core::access::OPERATOR;
use std::collections::BTreeMap;
use std::time::Duration;

use chrono::Utc;
use dspy_storage_core::backend::aws::RequestCounter;
use dspy_storage_core::config::StorageConfig;
use dspy_storage_core::domain::{NewMetadata, Project, Signature, Version, VersionSelector};
use dspy_storage_core::storage::Idempotency;
use dspy_storage_tests::{aws_with, shared_program, SHARED_PROGRAMS};
use serde_json::{json, value::RawValue};

fn counts(pairs: &[(&str, u64)]) -> BTreeMap<String, u64> {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect()
}

fn meta(value: serde_json::Value) -> NewMetadata {
    NewMetadata::parse(value, Utc::now()).expect("valid metadata")
}

/// Prints what was counted since the last reset, checks it equals `expected`, and resets.
fn check(counter: &RequestCounter, what: &str, expected: &[(&str, u64)]) {
    let snapshot = counter.snapshot();
    println!("{what}: {snapshot:?}");
    assert_eq!(snapshot, counts(expected), "requests of {what}");
    counter.reset();
}

/// [`check`], and that the requests took `trips` sequential round trips (requests sent together
/// count once; see `RequestCounter::round_trips`).
fn check_trips(counter: &RequestCounter, what: &str, expected: &[(&str, u64)], trips: u64) {
    println!("{what}: {} round trips", counter.round_trips());
    assert_eq!(counter.round_trips(), trips, "round trips of {what}");
    check(counter, what, expected);
}

/// A fresh AWS store with the in-process caches off (the contract is about a cold process) and
/// its request counter, or `None` (skipped) without an AWS endpoint.
async fn cold_aws() -> Option<(dspy_storage_tests::TestStore, RequestCounter)> {
    let config = StorageConfig {
        program_cache_bytes: 0,
        resolve_cache_ttl: Duration::ZERO,
        ..StorageConfig::default()
    };
    let Some(ts) = aws_with(config).await else {
        eprintln!("request_counts: no AWS endpoint configured; skipped");
        return None;
    };
    let counter = ts.counter.clone().expect("the AWS fixture counts requests");
    Some((ts, counter))
}

#[tokio::test]
async fn request_counts_follow_the_contract() {
    // The in-process caches are off here (see the end for what a warm cache saves).
    let Some((ts, counter)) = cold_aws().await else {
        return;
    };
    let storage = ts.storage.clone();
    let project = Project::default_project();
    let signature = Signature::parse("Counted").unwrap();
    counter.reset();

    // The names the counter uses, seen on one plain read.
    storage
        .get_head(&OPERATOR, &project, &signature)
        .await
        .unwrap_err();
    println!("names, one GetItem: {:?}", counter.snapshot());
    check(&counter, "get_head (missing)", &[("DynamoDB.GetItem", 1)]);

    // Store: the first version of a signature, then a second one, then one with tags.
    let text = shared_program(SHARED_PROGRAMS[0]);
    let program = RawValue::from_string(text).unwrap();
    // The text index entries (one per word, up to 25 per BatchWriteItem) go out with the blob
    // upload and the head read: still two round trips. They are counted apart from the
    // transaction (see `consumed_capacity`).
    let store_counts = [
        ("DynamoDB.BatchWriteItem", 1),
        ("DynamoDB.GetItem", 1),
        ("DynamoDB.TransactWriteItems", 1),
        ("S3.PutObject", 1),
    ];
    let first = storage
        .store(
            &OPERATOR,
            &program,
            meta(json!({"signature": "Counted"})),
            None,
        )
        .await
        .unwrap();
    // The blob upload, the head read and the index entries go out together, then the transaction.
    check_trips(&counter, "store (first version)", &store_counts, 2);
    let second = storage
        .store(
            &OPERATOR,
            &program,
            meta(json!({"signature": "Counted", "performance": 0.9})),
            None,
        )
        .await
        .unwrap();
    assert_eq!(second.stored.version, Version::parse("1.0.1").unwrap());
    check_trips(&counter, "store (next version)", &store_counts, 2);
    storage
        .store(
            &OPERATOR,
            &program,
            meta(json!({
                "signature": "Counted",
                "version": "2.0.0",
                "optimization_method": "miprov2",
                "tags": ["a", "b", "c"],
            })),
            None,
        )
        .await
        .unwrap();
    check_trips(
        &counter,
        "store (explicit version, three tags)",
        &store_counts,
        2,
    );

    // Load by id: one item read, one object read.
    let loaded = storage
        .get_program(&OPERATOR, &first.stored.id)
        .await
        .unwrap();
    assert_eq!(loaded.program.get(), program.get());
    check_trips(
        &counter,
        "get_program by id",
        &[("DynamoDB.GetItem", 1), ("S3.GetObject", 1)],
        2,
    );
    storage
        .get_record(&OPERATOR, &first.stored.id)
        .await
        .unwrap();
    check(&counter, "get_record by id", &[("DynamoDB.GetItem", 1)]);

    // By version: one more item read (the head or the version claim), and no more round trips
    // than by id (the record and the blob are read together, the blob named by the head/claim).
    let by_version = [("DynamoDB.GetItem", 2), ("S3.GetObject", 1)];
    let latest = storage
        .get_version(&OPERATOR, &project, &signature, &VersionSelector::Latest)
        .await
        .unwrap();
    assert_eq!(latest.record.version, Version::parse("2.0.0").unwrap());
    check_trips(&counter, "get_version latest", &by_version, 2);
    let exact = storage
        .get_version(
            &OPERATOR,
            &project,
            &signature,
            &VersionSelector::Exact(Version::parse("1.0.1").unwrap()),
        )
        .await
        .unwrap();
    assert_eq!(exact.record.id, second.stored.id);
    check_trips(&counter, "get_version exact", &by_version, 2);

    // Listing the versions of a small signature: one query.
    let listing = storage
        .list_versions(&OPERATOR, &project, &signature, None, None)
        .await
        .unwrap();
    assert_eq!(listing.items.len(), 3);
    assert!(listing.next_cursor.is_none());
    check_trips(&counter, "list_versions", &[("DynamoDB.Query", 1)], 1);

    // Aliases: a move is one batch read (head and claim) and one transaction; a load by alias
    // is the head, then the record and the blob together.
    let alias = dspy_storage_core::domain::AliasName::parse("production").unwrap();
    let v101 = Version::parse("1.0.1").unwrap();
    storage
        .put_alias(&OPERATOR, &project, &signature, &alias, &v101, None)
        .await
        .unwrap();
    check_trips(
        &counter,
        "put_alias",
        &[
            ("DynamoDB.BatchGetItem", 1),
            ("DynamoDB.TransactWriteItems", 1),
        ],
        2,
    );
    storage
        .put_alias(
            &OPERATOR,
            &project,
            &signature,
            &alias,
            &Version::parse("2.0.0").unwrap(),
            Some(Some(v101.clone())),
        )
        .await
        .unwrap();
    check_trips(
        &counter,
        "put_alias (compare-and-set)",
        &[
            ("DynamoDB.BatchGetItem", 1),
            ("DynamoDB.TransactWriteItems", 1),
        ],
        2,
    );
    let by_alias = storage
        .get_alias(&OPERATOR, &project, &signature, &alias)
        .await
        .unwrap();
    assert_eq!(by_alias.record.version, Version::parse("2.0.0").unwrap());
    assert_eq!(by_alias.program.get(), program.get());
    check_trips(&counter, "get_alias", &by_version, 2);

    // For information: a store with an Idempotency-Key, and its replay (not part of the contract).
    let idem = || Idempotency::parse("count-key", "hash".to_owned()).unwrap();
    storage
        .store(
            &OPERATOR,
            &program,
            meta(json!({"signature": "Counted"})),
            Some(idem()),
        )
        .await
        .unwrap();
    println!(
        "store with an Idempotency-Key (informational): {:?}",
        counter.snapshot()
    );
    assert_eq!(counter.count("DynamoDB.TransactWriteItems"), 1);
    assert_eq!(counter.count("S3.PutObject"), 1);
    counter.reset();
    let replay = storage
        .store(
            &OPERATOR,
            &program,
            meta(json!({"signature": "Counted"})),
            Some(idem()),
        )
        .await
        .unwrap();
    assert!(replay.replayed);
    println!(
        "replayed store with an Idempotency-Key (informational): {:?}",
        counter.snapshot()
    );
    assert_eq!(
        counter.count("S3") + counter.count("DynamoDB.TransactWriteItems"),
        0,
        "a replay writes nothing"
    );
}

/// With the default in-process caches, repeated reads never cost MORE than the cold contract
/// (informational snapshots; the cold contract is asserted above).
#[tokio::test]
async fn warm_caches_never_add_requests() {
    let Some(ts) = aws_with(StorageConfig::default()).await else {
        eprintln!("request_counts: no AWS endpoint configured; skipped");
        return;
    };
    let counter = ts.counter.clone().expect("the AWS fixture counts requests");
    let storage = ts.storage.clone();
    let project = Project::default_project();
    let signature = Signature::parse("Warm").unwrap();
    let program = RawValue::from_string(shared_program(SHARED_PROGRAMS[1])).unwrap();
    let out = storage
        .store(
            &OPERATOR,
            &program,
            meta(json!({"signature": "Warm"})),
            None,
        )
        .await
        .unwrap();
    counter.reset();
    let within = |what: &str, limit: &[(&str, u64)]| {
        let snapshot = counter.snapshot();
        println!("{what} (default caches): {snapshot:?}");
        let limit = counts(limit);
        for (name, n) in &snapshot {
            assert!(
                *n <= limit.get(name).copied().unwrap_or(0),
                "{what}: {name} = {n}, over the contract {limit:?}"
            );
        }
        counter.reset();
    };
    for round in 0..2 {
        let loaded = storage
            .get_program(&OPERATOR, &out.stored.id)
            .await
            .unwrap();
        assert!(loaded.program.get() == program.get());
        within(
            &format!("get_program by id, round {round}"),
            &[("DynamoDB.GetItem", 1), ("S3.GetObject", 1)],
        );
        let latest = storage
            .get_version(&OPERATOR, &project, &signature, &VersionSelector::Latest)
            .await
            .unwrap();
        assert_eq!(latest.record.id, out.stored.id);
        within(
            &format!("get_version latest, round {round}"),
            &[("DynamoDB.GetItem", 2), ("S3.GetObject", 1)],
        );
    }
}

/// Deciding the scope costs no request: the core reads the program (or signature) anyway and
/// checks its project there. Through the router, on every `{id}` route and a signature route,
/// a caller restricted to one project, an unrestricted one and access control off cost the same;
/// another project's program costs its one record read and nothing more; a project outside the
/// caller's scope on a signature route costs nothing.
#[tokio::test]
async fn deciding_the_scope_costs_no_request() {
    let config = StorageConfig {
        program_cache_bytes: 0,
        resolve_cache_ttl: Duration::ZERO,
        ..StorageConfig::default()
    };
    let Some(ts) = aws_with(config).await else {
        eprintln!("request_counts: no AWS endpoint configured; skipped");
        return;
    };
    use dspy_storage_functions::auth::{AccessControl, TokenTable};
    let entry = |token: &str, projects: &str| {
        format!(
            "[[token]]\nname = \"{token}\"\nsha256 = \"{}\"\nprojects = {projects}\nrole = \"admin\"\n\n",
            dspy_storage_core::blob::codec::sha256_hex(token.as_bytes())
        )
    };
    let file = entry("restricted", r#"["a"]"#) + &entry("everything", r#"["*"]"#);
    let table = TokenTable::from_toml(&file).unwrap();
    let on = ts.client_with_access(AccessControl::Tokens(std::sync::Arc::new(table)));
    let off = ts.client();
    let counter = ts.counter.clone().unwrap();
    let mut ids = Vec::new();
    for p in ["a", "a", "b"] {
        let v = off
            .post_json(
                "/programs",
                &json!({"program": {"predict": {"demos": [], "signature": {"instructions": "x"}}}, "metadata": {"signature": "S", "project": p}}),
            )
            .await;
        ids.push(v.json()["id"].as_str().unwrap().to_owned());
    }
    let (a, a2, b) = (&ids[0], &ids[1], &ids[2]);
    let call = |client: &dspy_storage_tests::Client, token: Option<&str>, uri: String| {
        let client = client.clone();
        let auth = token.map(|t| format!("Bearer {t}"));
        async move {
            let headers: Vec<(&str, &str)> = auth
                .as_deref()
                .map(|a| vec![("authorization", a)])
                .unwrap_or_default();
            client
                .request(http::Method::GET, &uri, &headers, axum::body::Body::empty())
                .await
        }
    };
    // (route, status, AWS requests by operation)
    type Row = (String, u16, Vec<(&'static str, u64)>);
    let routes: Vec<Row> = vec![
        (
            format!("/programs/{a}"),
            200,
            vec![("DynamoDB.GetItem", 1), ("S3.GetObject", 1)],
        ),
        (
            format!("/programs/{a}/metadata"),
            200,
            vec![("DynamoDB.GetItem", 1)],
        ),
        (
            format!("/programs/{a}/prompt"),
            200,
            vec![("DynamoDB.GetItem", 1), ("S3.GetObject", 1)],
        ),
        (
            format!("/programs/{a}/compatibility?with={a2}"),
            200,
            vec![("DynamoDB.GetItem", 2)],
        ),
        (format!("/programs/{b}"), 404, vec![("DynamoDB.GetItem", 1)]),
        (
            format!("/programs/{b}/metadata"),
            404,
            vec![("DynamoDB.GetItem", 1)],
        ),
        (
            format!("/programs/{a}/compatibility?with={b}"),
            404,
            vec![("DynamoDB.GetItem", 2)],
        ),
        (
            "/signatures/S/versions?project=a".into(),
            200,
            vec![("DynamoDB.Query", 1)],
        ),
        ("/signatures/S/versions?project=b".into(), 404, vec![]),
        ("/search?q=project:b".into(), 404, vec![]),
    ];
    for (uri, status, expected) in &routes {
        for (who, client, token) in [
            ("restricted to a", &on, Some("restricted")),
            ("every project", &on, Some("everything")),
            ("access control off", &off, None),
        ] {
            let restricted = token == Some("restricted");
            // Unrestricted callers see b: its program reads, its listing is a query.
            let (status, expected): (u16, Vec<(&str, u64)>) = match (restricted, *status) {
                (false, 404) if uri.contains("project=b") => (200, vec![("DynamoDB.Query", 1)]),
                // A search reads the project's index (keys only), then the records it found.
                (false, 404) if uri.starts_with("/search") => (
                    200,
                    vec![("DynamoDB.BatchGetItem", 1), ("DynamoDB.Query", 1)],
                ),
                (false, 404) if uri.contains("compatibility") => (200, expected.clone()),
                (false, 404) => (
                    200,
                    if uri.ends_with("metadata") {
                        vec![("DynamoDB.GetItem", 1)]
                    } else {
                        vec![("DynamoDB.GetItem", 1), ("S3.GetObject", 1)]
                    },
                ),
                _ => (*status, expected.clone()),
            };
            counter.reset();
            let answer = call(client, token, uri.clone()).await;
            assert_eq!(
                answer.status.as_u16(),
                status,
                "{uri} ({who}): {:?}",
                answer.body
            );
            check(&counter, &format!("GET {uri} ({who})"), &expected);
        }
    }
}

/// The exact-bytes routes cost what their JSON siblings cost (they call the same loads): by id
/// one item read + one object read, by version/`latest`/alias one item read more; a `304` costs
/// the same reads (the record is read to know the current hash).
#[tokio::test]
async fn exact_bytes_routes_cost_what_the_loads_cost() {
    let Some((ts, counter)) = cold_aws().await else {
        return;
    };
    let c = ts.client();
    let program = RawValue::from_string(shared_program(SHARED_PROGRAMS[0])).unwrap();
    let out = ts
        .storage
        .store(
            &OPERATOR,
            &program,
            meta(json!({"signature": "Bytes"})),
            None,
        )
        .await
        .unwrap();
    let alias = dspy_storage_core::domain::AliasName::parse("production").unwrap();
    ts.storage
        .put_alias(
            &OPERATOR,
            &Project::default_project(),
            &Signature::parse("Bytes").unwrap(),
            &alias,
            &out.stored.version,
            None,
        )
        .await
        .unwrap();
    counter.reset();
    let id = out.stored.id;
    let etag = format!("\"{}\"", out.stored.sha256);
    for (uri, items) in [
        (format!("/programs/{id}/program"), 1),
        ("/signatures/Bytes/versions/latest/program".to_owned(), 2),
        ("/signatures/Bytes/versions/1.0.0/program".to_owned(), 2),
        ("/signatures/Bytes/aliases/production/program".to_owned(), 2),
    ] {
        let a = c.get(&uri).await;
        assert_eq!(a.status, 200, "{uri}");
        assert_eq!(&a.body[..], program.get().as_bytes(), "{uri}");
        check(
            &counter,
            &uri,
            &[("DynamoDB.GetItem", items), ("S3.GetObject", 1)],
        );
        let a = c
            .request(http::Method::GET, &uri, &[("if-none-match", &etag)], "")
            .await;
        assert_eq!(a.status, 304, "{uri}");
        check(
            &counter,
            &format!("{uri} (304)"),
            &[("DynamoDB.GetItem", items), ("S3.GetObject", 1)],
        );
    }
}

/// A metrics request: 1 GetItem (the program, for its project) + 1 TransactWriteItems (the
/// program checked, the request's blocks — one per month —, the claims of its record ids, a mark
/// per day touched and the report's counter), whatever the number of records up to the
/// transaction's limits: appending 1 record is 2 requests, 1,000 records over 30 days 2
/// requests (goal: ≤ 2 and ≤ 5); records with record ids go 80 a transaction (each has its
/// claim); a retry whose records are all claimed costs the same (its transaction is cancelled,
/// nothing written).
#[tokio::test]
async fn metric_appends_with_and_without_record_ids() {
    let Some((ts, counter)) = cold_aws().await else {
        return;
    };
    let program = RawValue::from_string(shared_program(SHARED_PROGRAMS[0])).unwrap();
    let out = ts
        .storage
        .store(
            &OPERATOR,
            &program,
            meta(json!({"signature": "Metered"})),
            None,
        )
        .await
        .unwrap();
    let id = out.stored.id;
    counter.reset();
    let record = |i: usize, rid: bool| {
        let mut r = json!({"metrics": {"accuracy": 0.5}, "timestamp": Utc::now().to_rfc3339()});
        if rid {
            r["record_id"] = json!(format!("rec-{i}"));
        }
        r
    };
    let single = [("DynamoDB.GetItem", 1), ("DynamoDB.TransactWriteItems", 1)];
    ts.storage
        .record_metrics(&OPERATOR, &id, &record(0, false))
        .await
        .unwrap();
    check_trips(&counter, "one record", &single, 2);
    let one = record(1, true);
    ts.storage
        .record_metrics(&OPERATOR, &id, &one)
        .await
        .unwrap();
    check_trips(&counter, "one record with a record id", &single, 2);
    let again = ts
        .storage
        .record_metrics(&OPERATOR, &id, &one)
        .await
        .unwrap();
    assert_eq!(again.already_recorded, 1);
    check_trips(&counter, "the same record retried", &single, 2);
    // 1,000 records spread over 30 days, as the benchmark sends them.
    let now = Utc::now();
    let spread: Vec<serde_json::Value> = (0..1000)
        .map(|j| {
            let back = chrono::Duration::seconds(30 * 86_400 - 30 * 86_400 * j / 1000);
            json!({"metrics": {"accuracy": 0.6 + 0.3 * ((j as f64 * 0.618).fract()), "latency": 0.8 + (j as f64 * 0.414).fract(), "cost": 0.002 + 0.002 * ((j as f64 * 0.732).fract())}, "timestamp": (now - back).to_rfc3339()})
        })
        .collect();
    let wrote = ts
        .storage
        .record_metrics(&OPERATOR, &id, &json!({"records": spread}))
        .await
        .unwrap();
    assert_eq!(wrote.recorded, 1000);
    check_trips(&counter, "1,000 records over 30 days", &single, 2);
    let batch =
        |rid: bool| json!({"records": (0..100).map(|i| record(100 + i, rid)).collect::<Vec<_>>()});
    ts.storage
        .record_metrics(&OPERATOR, &id, &batch(false))
        .await
        .unwrap();
    check(&counter, "100 records", &single);
    ts.storage
        .record_metrics(&OPERATOR, &id, &batch(true))
        .await
        .unwrap();
    check(
        &counter,
        "100 records with record ids (80 a transaction)",
        &[("DynamoDB.GetItem", 1), ("DynamoDB.TransactWriteItems", 2)],
    );
}

/// Reading a 10,000-record history (posted as the benchmark does: 10 × 1,000 records over the
/// last 90 days, backfilled before the program was stored) in one page: the program, then one
/// range read of its block partition — 2 requests (goal ≤ 3) — at ≤ 50 capacity units (see
/// `consumed_capacity` for the units of each).
#[tokio::test]
async fn reading_ten_thousand_metric_records() {
    let Some((ts, counter)) = cold_aws().await else {
        return;
    };
    let program = RawValue::from_string(shared_program(SHARED_PROGRAMS[0])).unwrap();
    let id = ts
        .storage
        .store(
            &OPERATOR,
            &program,
            meta(json!({"signature": "History"})),
            None,
        )
        .await
        .unwrap()
        .stored
        .id;
    dspy_storage_tests::post_bench_history(&ts.storage, &id, 10_000).await;
    counter.reset();
    let page = ts
        .storage
        .metric_history(&OPERATOR, &id, None, None, Some(10_000), None)
        .await
        .unwrap();
    assert_eq!(page.records.len(), 10_000);
    assert!(page.next_cursor.is_none());
    assert!(page
        .records
        .windows(2)
        .all(|w| w[0].timestamp <= w[1].timestamp));
    let cu = counter.capacity("DynamoDB");
    println!(
        "10,000-record history: {:?}, {cu} capacity units",
        counter.snapshot()
    );
    check_trips(
        &counter,
        "read 10,000 records",
        &[("DynamoDB.GetItem", 1), ("DynamoDB.Query", 1)],
        2,
    );
    assert!(cu <= 50.0, "10,000 records cost {cu} capacity units");
}
