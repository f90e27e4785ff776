//! The hostile-input corpus, on both backends, through the HTTP API: malformed JSON, wrong types,
//! boundary sizes, unicode, injection-looking strings, forged cursors, huge numbers, NaN, path
//! tricks — each row a request with the 4xx and error code it must get, and the store must be
//! exactly as before (a snapshot of every item and blob is compared after each row).
//!
//! The corpus is a table ([`corpus`]): generic rows are multiplied over the routes (so the routes
//! of features merged later are covered by the guard's checks already), specific rows name one
//! route. Add rows for a new route's own validation next to the others.

use axum::body::Body;
use dspy_storage_tests::{backends, Client, Kind};
use http::Method;
use serde_json::{json, Value};

#[derive(Clone)]
enum B {
    None,
    Text(String),
    Bytes(Vec<u8>),
}

#[derive(Clone)]
struct Row {
    method: Method,
    /// `{id}` / `{id2}` become the setup's program ids.
    uri: String,
    headers: Vec<(&'static str, String)>,
    body: B,
    status: u16,
    code: &'static str,
    /// What the row tests, which the error must name (in its `field` or its message): so a row
    /// refused for another reason (an unknown key before the check it is about) fails.
    names: Option<&'static str>,
}

fn r(method: Method, uri: impl Into<String>, body: B, status: u16, code: &'static str) -> Row {
    Row {
        method,
        uri: uri.into(),
        headers: vec![],
        body,
        status,
        code,
        names: None,
    }
}

/// A `400` row whose error must name `names`.
fn named(method: Method, uri: &str, body: Value, names: &'static str) -> Row {
    Row {
        names: Some(names),
        ..r(method, uri, json_body(body), BAD.0, BAD.1)
    }
}

fn json_body(v: Value) -> B {
    B::Text(v.to_string())
}

fn text(s: impl Into<String>) -> B {
    B::Text(s.into())
}

const BAD: (u16, &str) = (400, "invalid_request");

/// How many rows the corpus has (see the test).
const HOSTILE_ROWS: usize = 669;

/// Every route that takes a JSON body, with a valid-looking URI (for the generic body rows).
fn body_routes() -> Vec<(Method, &'static str)> {
    use Method as M;
    vec![
        (M::POST, "/programs"),
        (M::PATCH, "/programs/{id}/metadata"),
        (M::PUT, "/signatures/S/aliases/staging"),
        (M::PUT, "/signatures/S/aliases/production/policy"),
        (M::POST, "/signatures/S/rollback"),
        // Routes of the other features: the guard checks their bodies already.
        (M::POST, "/programs/{id}/metrics"),
        (M::POST, "/optimization-runs"),
        (M::POST, "/search"),
        (M::POST, "/aggregate"),
        (M::POST, "/time-series"),
        (M::POST, "/maintenance/cleanup"),
        (M::POST, "/backups"),
        (M::POST, "/backups/nightly/restore"),
    ]
}

/// Bodies no JSON route may accept, whatever the route (checked before any handler).
fn malformed_bodies() -> Vec<(&'static str, B)> {
    let deep = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
    let deep_obj = |n: usize| format!("{}1{}", "{\"a\":".repeat(n), "}".repeat(n));
    vec![
        ("truncated object", text("{")),
        ("not JSON", text("program=1&metadata=2")),
        (
            "duplicate keys",
            text(
                r#"{"metadata": {"signature": "S", "project": "a", "project": "b"}, "program": 1}"#,
            ),
        ),
        (
            "duplicate top-level keys",
            text(r#"{"program": 1, "program": 2}"#),
        ),
        ("NaN", text(r#"{"program": NaN}"#)),
        ("Infinity", text(r#"{"program": Infinity}"#)),
        ("number out of range", text(r#"{"program": 1e400}"#)),
        ("trailing garbage", text(r#"{"program": 1} {"program": 2}"#)),
        ("65 nested arrays", text(deep(65))),
        ("100000 nested arrays", text(deep(100_000))),
        ("65 nested objects", text(deep_obj(65))),
        (
            "invalid UTF-8",
            B::Bytes(b"{\"program\": \"\xff\xfe\"}".to_vec()),
        ),
        ("byte order mark", text("\u{feff}{\"program\": 1}")),
        ("comment", text(r#"{/* c */ "program": 1}"#)),
        ("single quotes", text("{'program': 1}")),
        ("lone surrogate", text(r#"{"program": "\ud800"}"#)),
        ("unterminated string", text(r#"{"program": "abc}"#)),
        (
            "control character in a string",
            text("{\"program\": \"a\u{1}b\"}"),
        ),
    ]
}

/// Query strings no route may accept.
fn malformed_queries() -> Vec<(&'static str, String)> {
    let many: Vec<String> = (0..33).map(|i| format!("p{i}=1")).collect();
    vec![
        ("a parameter twice", "project=a&project=b".into()),
        ("bad percent escape", "project=%ZZ".into()),
        ("percent-encoded NUL", "project=a%00b".into()),
        ("invalid UTF-8", "project=%C3%28".into()),
        ("33 parameters", many.join("&")),
        ("a 5000-byte query", format!("x={}", "a".repeat(5000))),
        ("an empty parameter name", "=x".into()),
        ("a newline", "project=a%0Ab".into()),
    ]
}

fn corpus() -> Vec<Row> {
    use Method as M;
    let mut rows = Vec::new();
    // --- generic: malformed bodies on every JSON route ------------------------------------------
    for (method, uri) in body_routes() {
        for (_, body) in malformed_bodies() {
            let mut row = r(method.clone(), uri, body, BAD.0, BAD.1);
            row.headers
                .push(("content-type", "application/json".into()));
            rows.push(row);
        }
    }
    // --- generic: malformed queries on every route ------------------------------------------------
    let all: Vec<(Method, &str)> = vec![
        (M::GET, "/programs/{id}"),
        (M::GET, "/programs/{id}/metadata"),
        (M::DELETE, "/programs/{id}"),
        (M::GET, "/projects"),
        (M::GET, "/signatures"),
        (M::GET, "/signatures/S/versions"),
        (M::GET, "/signatures/S/versions/latest"),
        (M::GET, "/signatures/S/aliases/production"),
        (M::DELETE, "/signatures/S/aliases/production"),
        (M::GET, "/signatures/S/aliases/production/policy"),
        (M::GET, "/signatures/S/aliases/production/history"),
        (M::GET, "/signatures/S/diff"),
        (M::GET, "/programs/{id}/prompt"),
        (M::GET, "/programs/{id}/compatibility"),
        (M::GET, "/search"),
        (M::GET, "/programs/{id}/metrics"),
        (M::GET, "/report"),
        (M::GET, "/backups"),
    ];
    for (method, uri) in &all {
        for (_, q) in malformed_queries() {
            rows.push(r(
                method.clone(),
                format!("{uri}?{q}"),
                B::None,
                BAD.0,
                BAD.1,
            ));
        }
    }
    // --- GET /signatures: an order the indexes do not serve -------------------------------------
    for sort in ["size", "", "NAME", "updated%00"] {
        rows.push(r(
            M::GET,
            format!("/signatures?sort={sort}"),
            B::None,
            BAD.0,
            BAD.1,
        ));
    }
    // --- POST /programs: the body's fields ----------------------------------------------------
    let store = |metadata: Value| json_body(json!({"program": {"p": 1}, "metadata": metadata}));
    let m = |extra: Value| {
        let mut base = json!({"signature": "S"});
        for (k, v) in extra.as_object().unwrap() {
            base[k] = v.clone();
        }
        store(base)
    };
    let many_keys: serde_json::Map<String, Value> =
        (0..201).map(|i| (format!("k{i}"), json!(i))).collect();
    let store_rows: Vec<B> = vec![
        text(""),
        text("[]"),
        text("null"),
        text("42"),
        text("\"program\""),
        json_body(json!({})),
        json_body(json!({"program": 1})),
        json_body(json!({"metadata": {"signature": "S"}})),
        json_body(json!({"program": 1, "metadata": "S"})),
        json_body(json!({"program": 1, "metadata": [1]})),
        json_body(json!({"program": 1, "metadata": {"signature": "S"}, "bogus": 1})),
        store(json!({})),
        m(json!({"signature": ""})),
        m(json!({"signature": "a".repeat(129)})),
        m(json!({"signature": "qa/Answer"})),
        m(json!({"signature": "../../etc/passwd"})),
        m(json!({"signature": "café"})),
        m(json!({"signature": "Ｓ"})),
        m(json!({"signature": "S' OR '1'='1"})),
        m(json!({"signature": "${jndi:ldap://x/a}"})),
        m(json!({"signature": "S\u{0}"})),
        m(json!({"signature": "a b"})),
        m(json!({"signature": 42})),
        m(json!({"signature": ["S"]})),
        m(json!({"signature": null})),
        m(json!({"version": "x"})),
        m(json!({"version": "1.0"})),
        m(json!({"version": "01.0.0"})),
        m(json!({"version": "1.0.0-"})),
        m(json!({"version": format!("1.0.0-{}", "a".repeat(200))})),
        m(json!({"version": 1})),
        m(json!({"version": "99999999999999999999999.0.0"})),
        m(json!({"project": ""})),
        m(json!({"project": "a/b"})),
        m(json!({"project": ".."})),
        m(json!({"project": "../../x"})),
        m(json!({"project": "p".repeat(65)})),
        m(json!({"project": "default; DROP TABLE programs"})),
        m(json!({"project": "проект"})),
        m(json!({"project": 7})),
        m(json!({"tags": "x"})),
        m(json!({"tags": [1]})),
        m(json!({"tags": [null]})),
        m(json!({"tags": (0..51).map(|i| format!("t{i}")).collect::<Vec<_>>()})),
        m(json!({"tags": ["t".repeat(65)]})),
        m(json!({"tags": ["a#b"]})),
        m(json!({"tags": ["line\nbreak"]})),
        m(json!({"tags": [""]})),
        m(json!({"performance": "high"})),
        m(json!({"performance": [0.9]})),
        m(json!({"performance": true})),
        m(json!({"performance": {"accuracy": "0.9"}})),
        m(json!({"performance": {"accuracy": null}})),
        m(json!({"examples_count": -1})),
        m(json!({"examples_count": "100"})),
        m(json!({"optimization_time": -0.5})),
        m(json!({"created_at": "yesterday"})),
        m(json!({"created_at": "2999-01-01T00:00:00Z"})),
        m(json!({"created_at": 1700000000})),
        m(json!({"parent_id": "not-a-uuid"})),
        m(json!({"parent_id": "../../etc"})),
        m(json!({"description": "d".repeat(4097)})),
        m(json!({"environment": 1})),
        m(json!({"team": {"a": 1}})),
        m(json!({"optimization_method": ""})),
        m(json!({"optimization_method": "a#b"})),
        m(json!({"optimization_method": "m".repeat(129)})),
        m(json!({"optimization_run_id": 5})),
        m(json!({"": 1})),
        m(json!({"k".repeat(129): 1})),
        m(json!({"bad\u{7}key": 1})),
        m(json!({"blob": "x".repeat(70 * 1024)})),
        m(json!({"nested": {"deep": vec!["y".repeat(1000); 80]}})),
        m(Value::Object(many_keys)),
    ];
    for body in store_rows {
        rows.push(r(M::POST, "/programs", body, BAD.0, BAD.1));
    }
    for key in ["", &"k".repeat(256), "naïve-key", "key with space"] {
        let mut row = r(M::POST, "/programs", m(json!({})), BAD.0, BAD.1);
        row.headers.push(("idempotency-key", key.to_owned()));
        rows.push(row);
    }
    // --- PATCH /programs/{id}/metadata ---------------------------------------------------------
    let set_many: serde_json::Map<String, Value> =
        (0..201).map(|i| (format!("s{i}"), json!(i))).collect();
    for body in [
        text(""),
        text("[]"),
        json_body(json!({"tags": "x"})),
        json_body(json!({"tags": {"add": [1]}})),
        json_body(json!({"tags": {"add": ["a#b"]}})),
        json_body(json!({"tags": {"add": (0..51).map(|i| format!("t{i}")).collect::<Vec<_>>()}})),
        json_body(json!({"tags": {"bogus": []}})),
        json_body(json!({"environment": 1})),
        json_body(json!({"description": "d".repeat(4097)})),
        json_body(json!({"set": {"signature": "X"}})),
        json_body(json!({"set": {"project": "other"}})),
        json_body(json!({"set": {"version": "9.9.9"}})),
        json_body(json!({"set": {"": 1}})),
        json_body(json!({"set": "x"})),
        json_body(json!({"set": Value::Object(set_many)})),
        json_body(json!({"set": {"big": "x".repeat(70 * 1024)}})),
        json_body(json!({"expected_updated_at": "yesterday"})),
        json_body(json!({"bogus": 1})),
    ] {
        rows.push(r(M::PATCH, "/programs/{id}/metadata", body, BAD.0, BAD.1));
    }
    // --- aliases and rollback -------------------------------------------------------------------
    for body in [
        json_body(json!({})),
        json_body(json!({"version": "latest"})),
        json_body(json!({"version": 1})),
        json_body(json!({"version": "1.0"})),
        json_body(json!({"version": "1.0.0", "expected_version": "bad"})),
        json_body(json!({"version": "1.0.0", "expected_version": 1})),
        json_body(json!({"version": "1.0.0", "bogus": 1})),
    ] {
        rows.push(r(
            M::PUT,
            "/signatures/S/aliases/staging",
            body,
            BAD.0,
            BAD.1,
        ));
    }
    // --- alias policies, overrides and history: bad policies are a 400 naming the field ----------
    let policy = "/signatures/S/aliases/production/policy";
    let req = |extra: Value| {
        let mut base = json!({"metric": "accuracy"});
        for (k, v) in extra.as_object().unwrap() {
            base[k] = v.clone();
        }
        json!({"require": base})
    };
    for (body, names) in [
        (req(json!({"min_records": -1})), "require.min_records"),
        (req(json!({"min_records": 2.5})), "require.min_records"),
        (req(json!({"min_records": "20"})), "require.min_records"),
        (req(json!({"min_records": 1e12})), "require.min_records"),
        (req(json!({"metric": "acc uracy"})), "require.metric"),
        (req(json!({"metric": ""})), "require.metric"),
        (req(json!({"metric": "a".repeat(65)})), "require.metric"),
        (
            req(json!({"metric": "accuracy; DROP TABLE"})),
            "require.metric",
        ),
        (req(json!({"metric": 1})), "require.metric"),
        (json!({"require": {"min": 0.9}}), "require.metric"),
        (req(json!({"window": "7 days"})), "require.window"),
        (req(json!({"window": "-7d"})), "require.window"),
        (req(json!({"window": "7y"})), "require.window"),
        (req(json!({"window": "0s"})), "require.window"),
        (req(json!({"window": "99999999999d"})), "require.window"),
        (req(json!({"window": 7})), "require.window"),
        (req(json!({"min": "0.9"})), "require.min"),
        (req(json!({"min": null})), "require.min"),
        (req(json!({"tolerance": 0.1})), "require.tolerance"),
        (
            req(json!({"not_worse_than_current": true, "tolerance": -0.1})),
            "require.tolerance",
        ),
        (
            req(json!({"not_worse_than_current": "yes"})),
            "require.not_worse_than_current",
        ),
        (req(json!({"environment": "eval"})), "require.environment"),
        (
            req(json!({"environment": {"name": ["eval"]}})),
            "require.environment.name",
        ),
        (req(json!({"maximum": 1.0})), "require.maximum"),
        (json!({"require": "accuracy"}), "require"),
        (json!({"protected": "true"}), "protected"),
        (json!({"protected": true, "owner": "x"}), "owner"),
    ] {
        rows.push(named(M::PUT, policy, body, names));
    }
    rows.push(r(M::PUT, policy, json_body(json!([])), BAD.0, BAD.1));
    rows.push(r(
        M::PUT,
        "/signatures/S/aliases/PROD/policy",
        json_body(json!({"protected": true})),
        BAD.0,
        BAD.1,
    ));
    for (body, names) in [
        (json!({"version": "1.0.1", "override": {}}), "override"),
        (
            json!({"version": "1.0.1", "override": {"reason": ""}}),
            "override.reason",
        ),
        (
            json!({"version": "1.0.1", "override": {"reason": "   "}}),
            "override.reason",
        ),
        (
            json!({"version": "1.0.1", "override": {"reason": "x".repeat(501)}}),
            "override.reason",
        ),
        (
            json!({"version": "1.0.1", "override": {"reason": 1}}),
            "override",
        ),
        (
            json!({"version": "1.0.1", "override": "because"}),
            "override",
        ),
        (
            json!({"version": "1.0.1", "override": {"reason": "x", "by": "admin"}}),
            "override",
        ),
    ] {
        rows.push(named(
            M::PUT,
            "/signatures/S/aliases/production",
            body,
            names,
        ));
    }
    for q in ["limit=0", "limit=x", "limit=100000", "cursor=forged"] {
        rows.push(r(
            M::GET,
            format!("/signatures/S/aliases/production/history?{q}"),
            B::None,
            BAD.0,
            BAD.1,
        ));
    }
    for alias in [
        "PROD",
        "a.b",
        &"a".repeat(65),
        "pr%C3%B6d",
        "a%20b",
        "%E2%80%8Bzw",
    ] {
        rows.push(r(
            M::PUT,
            format!("/signatures/S/aliases/{alias}"),
            json_body(json!({"version": "1.0.0"})),
            BAD.0,
            BAD.1,
        ));
        rows.push(r(
            M::GET,
            format!("/signatures/S/aliases/{alias}"),
            B::None,
            BAD.0,
            BAD.1,
        ));
    }
    for body in [
        json_body(json!({})),
        json_body(json!({"to_version": "x"})),
        json_body(json!({"to_version": null})),
        json_body(json!({"to_version": 1})),
        json_body(json!({"to_version": "latest"})),
        json_body(json!({"to_version": "1.0.0", "extra": true})),
    ] {
        rows.push(r(M::POST, "/signatures/S/rollback", body, BAD.0, BAD.1));
    }
    // --- path and query parameters -------------------------------------------------------------
    let nf = (404, "not_found");
    for id in [
        "not-a-uuid",
        "..%2F..%2Fetc%2Fpasswd",
        "00000000-0000-0000-0000-00000000000g",
        "%7Bid%7D",
        "' OR 1=1 --",
    ] {
        let id = id.replace(' ', "%20");
        rows.push(r(M::GET, format!("/programs/{id}"), B::None, nf.0, nf.1));
        rows.push(r(M::DELETE, format!("/programs/{id}"), B::None, nf.0, nf.1));
    }
    rows.push(r(M::GET, "/programs/a%00b", B::None, BAD.0, BAD.1));
    for sig in [
        "..%2F..%2Fetc",
        "a%20b",
        &"s".repeat(129),
        "caf%C3%A9",
        "%2E%2E",
        "S%27%20OR%20%271",
    ] {
        rows.push(r(
            M::GET,
            format!("/signatures/{sig}/versions"),
            B::None,
            BAD.0,
            BAD.1,
        ));
        rows.push(r(
            M::POST,
            format!("/signatures/{sig}/rollback"),
            json_body(json!({"to_version": "1.0.0"})),
            BAD.0,
            BAD.1,
        ));
    }
    let forged = |v: Value| {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
    };
    for q in [
        "limit=0".to_owned(),
        "limit=-1".into(),
        "limit=abc".into(),
        "limit=1001".into(),
        "limit=99999999999999999999999".into(),
        "limit=1e3".into(),
        "limit=".into(),
        "limit=NaN".into(),
        "cursor=garbage!".into(),
        "cursor=".into(),
        format!("cursor={}", forged(json!({}))),
        format!(
            "cursor={}",
            forged(
                json!({"i": "table", "p": "SIG#other#S", "k": {"PK": "SIG#other#S", "SK": "VER#1"}})
            )
        ),
        format!(
            "cursor={}",
            forged(
                json!({"i": "GSI4", "p": "SIG#default#S", "k": {"PK": "SIG#default#S", "SK": "VER#1"}})
            )
        ),
        format!(
            "cursor={}",
            forged(
                json!({"i": "table", "p": "SIG#default#S", "k": {"PK": "SIG#default#OTHER", "SK": "x"}})
            )
        ),
        format!(
            "cursor={}",
            forged(
                json!({"i": "table", "p": "SIG#default#S", "k": {"PK": "SIG#default#S", "SK": "x", "GSI1PK": "y"}})
            )
        ),
        format!("cursor={}", "A".repeat(2040)),
        "project=a%2Fb".into(),
        "project=".into(),
        "project=..".into(),
    ] {
        rows.push(r(
            M::GET,
            format!("/signatures/S/versions?{q}"),
            B::None,
            BAD.0,
            BAD.1,
        ));
    }
    for q in ["limit=0", "cursor=xyz", "project=%2E%2E%2F"] {
        rows.push(r(M::GET, format!("/signatures?{q}"), B::None, BAD.0, BAD.1));
    }
    for v in ["1.0", "latestx", "%2E%2E", "1.0.0%2F..", "v1.0.0"] {
        rows.push(r(
            M::GET,
            format!("/signatures/S/versions/{v}"),
            B::None,
            BAD.0,
            BAD.1,
        ));
    }
    for q in [
        "",
        "from=1.0.0",
        "to=1.0.0",
        "from=x&to=latest",
        "from=latest&to=1.0",
        "from=1.0.0&to=1.0.0&project=a%2Fb",
    ] {
        rows.push(r(
            M::GET,
            format!("/signatures/S/diff?{q}"),
            B::None,
            BAD.0,
            BAD.1,
        ));
    }
    for q in ["", "with=not-an-id", "with=..%2Fx"] {
        rows.push(r(
            M::GET,
            format!("/programs/{{id}}/compatibility?{q}"),
            B::None,
            BAD.0,
            BAD.1,
        ));
    }
    for q in ["force=maybe", "force=", "force=TRUE%00"] {
        rows.push(r(
            M::DELETE,
            format!("/programs/{{id}}?{q}"),
            B::None,
            BAD.0,
            BAD.1,
        ));
    }
    // The search query's limits hold on GET /search already (the query parser is the search
    // feature's: its syntax errors get rows of their own after the merge).
    rows.push(r(
        M::GET,
        format!("/search?q={}", "a".repeat(1025)),
        B::None,
        BAD.0,
        BAD.1,
    ));
    rows.push(r(
        M::GET,
        format!("/search?q={}", vec!["t"; 33].join("+")),
        B::None,
        BAD.0,
        BAD.1,
    ));
    // --- the features' own validation: search, aggregation, metrics, runs, retention --------------
    for q in [
        "performance>",
        "performance>=abc",
        "created:sometime",
        "nosuchfield:1",
        "signature:",
        "\"unterminated",
        "version:1.*&sort=performance:sideways",
        "x&limit=0",
        "x&limit=100000",
        "x&cursor=Zm9yZ2Vk",
        "x&cursor=%00%01",
    ] {
        // The query itself percent-encoded; what follows its first `&` are further parameters.
        let (query, rest) = q.split_once('&').map_or((q, ""), |(a, b)| (a, b));
        let encoded: String = query
            .bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect();
        let sep = if rest.is_empty() { "" } else { "&" };
        rows.push(r(
            M::GET,
            format!("/search?q={encoded}{sep}{rest}"),
            B::None,
            BAD.0,
            BAD.1,
        ));
    }
    // Each body is the route's own, valid but for the one thing the row tests, which the error
    // must name.
    for (body, names) in [
        (json!({"performance": {"gte": "high"}}), "performance"),
        (json!({"performance": {"between": [1, 2]}}), "between"),
        (json!({"nosuch": {"eq": 1}}), "nosuch"),
        (json!({"sort": [{"performance": "sideways"}]}), "sideways"),
        (json!({"limit": -1}), "limit"),
        (json!({"limit": 1e300}), "limit"),
        (json!({"limit": 0}), "limit"),
        (json!({"cursor": "forged-cursor"}), "cursor"),
        (json!({"signature": {"in": "not-a-list"}}), "in"),
        (
            json!({"created_at": {"gte": "yesterday-ish"}}),
            "created_at",
        ),
    ] {
        rows.push(named(M::POST, "/search", body, names));
    }
    for (body, names) in [
        (json!({"group_by": "optimization_method"}), "metrics"),
        (
            json!({"group_by": "optimization_method", "metrics": {"x": {"nosuch_statistic": "performance"}}}),
            "nosuch_statistic",
        ),
        (
            json!({"group_by": 7, "metrics": {"n": {"count": "id"}}}),
            "group_by",
        ),
        (
            json!({"metrics": {"n": {"count": "id"}}, "filters": {"performance": {"gte": "x"}}}),
            "performance",
        ),
    ] {
        rows.push(named(M::POST, "/aggregate", body, names));
    }
    let series = |extra: Value| {
        let mut base = json!({"signature": "S", "metric": "performance", "interval": "day", "time_range": "30d"});
        for (k, v) in extra.as_object().unwrap() {
            base[k] = v.clone();
        }
        base
    };
    for (body, names) in [
        (series(json!({"interval": "fortnight"})), "interval"),
        (series(json!({"time_range": "yesterday-ish"})), "time_range"),
        (
            series(json!({"interval": "hour", "time_range": "3650d"})),
            "time_range",
        ),
        (series(json!({"metric": ""})), "metric"),
    ] {
        rows.push(named(M::POST, "/time-series", body, names));
    }
    let too_many: Vec<Value> = (0..1001)
        .map(|_| json!({"metrics": {"accuracy": 0.5}}))
        .collect();
    for (body, names) in [
        (json!({}), "metrics"),
        (json!({"metrics": {}}), "metrics"),
        (json!({"metrics": {"accuracy": "high"}}), "accuracy"),
        (
            json!({"metrics": {"accuracy": 0.5}, "timestamp": "not a time"}),
            "timestamp",
        ),
        (
            json!({"metrics": {"accuracy": 0.5}, "timestamp": "1999-12-31T23:59:59Z"}),
            "timestamp",
        ),
        (json!({"records": too_many}), "1000"),
        (json!({"records": "none"}), "records"),
        (
            json!({"records": [{"metrics": {"accuracy": 0.5}, "record_id": "a b"}]}),
            "record_id",
        ),
    ] {
        rows.push(named(M::POST, "/programs/{id}/metrics", body, names));
    }
    rows.push(Row {
        names: Some("invalid JSON"),
        ..r(
            M::POST,
            "/programs/{id}/metrics",
            text(r#"{"metrics": {"accuracy": NaN}}"#),
            BAD.0,
            BAD.1,
        )
    });
    for q in [
        "from=not-a-time",
        "limit=0",
        "cursor=forged",
        "days=-3",
        "days=abc",
    ] {
        let path = if q.starts_with("days") {
            "trends"
        } else {
            "metrics"
        };
        rows.push(r(
            M::GET,
            format!("/programs/{{id}}/{path}?{q}"),
            B::None,
            BAD.0,
            BAD.1,
        ));
    }
    let run = |change: Value| {
        let mut base = json!({
            "signature": "S", "method": "miprov2", "parameters": {"num_trials": 3},
            "trials": [{"params": {}, "score": 0.5}], "best_score": 0.5, "duration_s": 1.5,
            "started_at": "2026-01-01T00:00:00Z", "finished_at": "2026-01-01T00:01:00Z",
            "program_ids": [],
        });
        for (k, v) in change.as_object().unwrap() {
            if v.is_null() {
                base.as_object_mut().unwrap().remove(k);
            } else {
                base[k] = v.clone();
            }
        }
        base
    };
    for (body, names) in [
        (run(json!({"method": null})), "method"),
        (run(json!({"signature": null})), "signature"),
        (run(json!({"trials": "high"})), "trials"),
        (run(json!({"program_ids": ["not-an-id"]})), "program_ids"),
        (run(json!({"duration_s": -1})), "duration_s"),
        (run(json!({"started_at": "soon"})), "started_at"),
    ] {
        rows.push(named(M::POST, "/optimization-runs", body, names));
    }
    for (body, names) in [
        (json!({"dry_run": "yes"}), "dry_run"),
        (json!({"policy": {"keep_latest": -1}}), "keep_latest"),
        (
            json!({"policy": {"archive_after": "soon"}}),
            "archive_after",
        ),
        (json!({"policy": {"delete_after": "-5d"}}), "delete_after"),
        (json!({"as_of": "tomorrow"}), "as_of"),
        (
            json!({"dry_run": false, "as_of": "2999-01-01T00:00:00Z"}),
            "as_of",
        ),
        (json!({"cursor": "forged"}), "cursor"),
    ] {
        rows.push(named(M::POST, "/maintenance/cleanup", body, names));
    }
    // --- sizes, methods, routes -------------------------------------------------------------------
    let limit = dspy_storage_core::config::DEFAULT_MAX_BODY_BYTES;
    let big = format!(
        "{{\"program\": \"{}\", \"metadata\": {{\"signature\": \"S\"}}}}",
        "x".repeat(limit)
    );
    rows.push(r(M::POST, "/programs", text(big), 413, "payload_too_large"));
    let mut lying = r(M::POST, "/programs", m(json!({})), 413, "payload_too_large");
    lying
        .headers
        .push(("content-length", (limit + 1).to_string()));
    rows.push(lying);
    rows.push(r(M::PUT, "/programs", B::None, 405, "invalid_request"));
    rows.push(r(
        M::POST,
        "/programs/{id}",
        B::None,
        405,
        "invalid_request",
    ));
    rows.push(r(M::GET, "/nowhere", B::None, 404, "not_found"));
    rows.push(r(
        M::GET,
        "/programs/{id}/..%2F..%2Fmetadata",
        B::None,
        404,
        "not_found",
    ));
    rows
}

async fn send(client: &Client, row: &Row, ids: &[String]) -> dspy_storage_tests::Answer {
    let uri = row.uri.replace("{id}", &ids[0]).replace("{id2}", &ids[1]);
    let mut headers: Vec<(&str, &str)> =
        row.headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
    if !headers.iter().any(|(k, _)| *k == "content-type") && !matches!(row.body, B::None) {
        headers.push(("content-type", "application/json"));
    }
    let body = match &row.body {
        B::None => Body::empty(),
        B::Text(t) => Body::from(t.clone()),
        B::Bytes(b) => Body::from(b.clone()),
    };
    client
        .request(row.method.clone(), &uri, &headers, body)
        .await
}

#[tokio::test]
async fn every_hostile_request_is_a_clear_4xx_and_changes_nothing() {
    let rows = corpus();
    println!("hostile corpus: {} requests", rows.len());
    // The exact count: a row lost by an edit of the table shows here.
    assert_eq!(
        rows.len(),
        HOSTILE_ROWS,
        "the corpus has {} rows",
        rows.len()
    );
    for store in backends().await {
        let k: Kind = store.kind;
        let client = store.client();
        let mut ids = Vec::new();
        for (v, instructions) in [("1.0.0", "one"), ("1.0.1", "two")] {
            let s = client
                .post_json(
                    "/programs",
                    &json!({"program": {"predict": {"demos": [], "signature": {"instructions": instructions}}},
                            "metadata": {"signature": "S", "version": v}}),
                )
                .await
                .expect(k, "setup", 201);
            ids.push(s["id"].as_str().unwrap().to_owned());
        }
        client
            .request(
                Method::PUT,
                "/signatures/S/aliases/production",
                &[("content-type", "application/json")],
                json!({"version": "1.0.0"}).to_string(),
            )
            .await
            .expect(k, "setup alias", 200);
        let mut before = store.snapshot().await;
        let mut checked = std::collections::BTreeMap::<String, usize>::new();
        for (i, row) in rows.iter().enumerate() {
            let a = send(&client, row, &ids).await;
            let body = match &row.body {
                B::Text(t) => t.chars().take(120).collect::<String>(),
                _ => String::new(),
            };
            let what = format!(
                "row {i}: {} {} {body}",
                row.method,
                row.uri.chars().take(120).collect::<String>()
            );
            let e = a.expect_error(k, &what, row.status, row.code);
            if let Some(names) = row.names {
                let field = e["error"]["field"].as_str().unwrap_or("");
                let message = e["error"]["message"].as_str().unwrap_or("");
                assert!(
                    field.contains(names) || message.contains(names),
                    "{k:?}: {what}: the error names {names:?} (what the row tests), not: {e}"
                );
                *checked
                    .entry(row.uri.split('?').next().unwrap().to_owned())
                    .or_insert(0) += 1;
            }
            // Embedded: after every row. AWS: every 10th row and every write (a snapshot reads
            // the whole table and bucket), and after the last row below.
            if k == Kind::Embedded || i % 10 == 0 || row.method != Method::GET {
                let now = store.snapshot().await;
                assert!(now == before, "{k:?}: {what}: the store changed");
                before = now;
            }
        }
        assert!(
            store.snapshot().await == before,
            "{k:?}: the store changed during the last rows"
        );
        let named: usize = checked.values().sum();
        dspy_storage_tests::report(&format!(
            "{k:?} hostile corpus: {} rows, each a 4xx in the error shape with the store unchanged; {named} rows whose error names what they test: {checked:?}",
            rows.len()
        ));
    }
}
