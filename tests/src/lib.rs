//! Shared fixtures of the integration tests: a fresh store per test on each backend (a temporary
//! data dir for the embedded one; a uniquely named table and bucket for the AWS one), the HTTP
//! app over it, and a small client that calls the router in-process.
//!
//! AWS tests need a LocalStack endpoint in `AWS_ENDPOINT_URL` (`scripts/local-aws.sh` starts
//! one). Without it they are skipped with a
//! message — unless `DSPY_STORAGE_REQUIRE_AWS=1` (set by `scripts/test.sh`), where that is a failure.

pub mod faults;

use std::sync::Arc;

use axum::body::Body;
use axum::Router;
use dspy_storage_core::backend::aws::RequestCounter;
use dspy_storage_core::config::StorageConfig;
use dspy_storage_core::open::{self, AwsLocation};
use dspy_storage_core::storage::Storage;
use dspy_storage_functions::AppState;
use http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::Value;

/// Which backend a fixture runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Embedded,
    Aws,
}

/// A fresh, empty store for one test.
pub struct TestStore {
    pub kind: Kind,
    pub storage: Arc<Storage>,
    /// Counts AWS requests (AWS backend only).
    pub counter: Option<RequestCounter>,
    pub location: Option<AwsLocation>,
    pub data_dir: Option<tempfile::TempDir>,
}

impl TestStore {
    pub fn app(&self) -> Router {
        dspy_storage_functions::app(AppState::new(self.storage.clone()))
    }

    pub fn client(&self) -> Client {
        Client { router: self.app() }
    }

    /// A client of the app with access control `access` (see `dspy_storage_functions::auth`).
    pub fn client_with_access(
        &self,
        access: dspy_storage_functions::auth::AccessControl,
    ) -> Client {
        Client {
            router: dspy_storage_functions::app(
                AppState::new(self.storage.clone()).with_access(access),
            ),
        }
    }

    /// Everything the store holds, in a comparable form: every item (all pages of a scan) and
    /// every blob's key and bytes. Two equal snapshots mean nothing changed.
    pub async fn snapshot(&self) -> Snapshot {
        let mut items = all_items(&self.storage).await;
        items.sort_by(|a, b| (&a.pk, &a.sk).cmp(&(&b.pk, &b.sk)));
        let mut blobs = Vec::new();
        for meta in all_blobs(&self.storage).await {
            let bytes = self.storage.blobs().get(&meta.key).await.ok();
            blobs.push((meta.key, bytes));
        }
        blobs.sort();
        Snapshot { items, blobs }
    }
}

/// Every item of a store (all pages of a scan), in scan order.
pub async fn all_items(storage: &Storage) -> Vec<dspy_storage_core::backend::Item> {
    let mut items = Vec::new();
    let mut start = None;
    loop {
        let page = storage
            .items()
            .scan(start, 500)
            .await
            .expect("scan the item store");
        items.extend(page.items);
        match page.next {
            Some(n) => start = Some(n),
            None => return items,
        }
    }
}

/// Every blob of a store (all pages of a listing): key, size, time.
pub async fn all_blobs(storage: &Storage) -> Vec<dspy_storage_core::backend::BlobMeta> {
    let mut blobs = Vec::new();
    let mut start = None;
    loop {
        let (page, next) = storage
            .blobs()
            .list("", start, 1000)
            .await
            .expect("list the blob store");
        blobs.extend(page);
        match next {
            Some(n) => start = Some(n),
            None => return blobs,
        }
    }
}

/// The whole content of a store (see [`TestStore::snapshot`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub items: Vec<dspy_storage_core::backend::Item>,
    pub blobs: Vec<(String, Option<bytes::Bytes>)>,
}

/// Whether the AWS backend is tested here: `AWS_ENDPOINT_URL` names a LocalStack (the one gate,
/// [`dspy_storage_core::testing::aws_test_enabled`]; a failure when `DSPY_STORAGE_REQUIRE_AWS=1`).
pub fn aws_configured() -> bool {
    dspy_storage_core::testing::aws_test_enabled("the AWS backend")
}

/// A unique lowercase name usable as a DynamoDB table and an S3 bucket.
pub fn unique_name(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::now_v7().simple())
}

pub async fn embedded_with(config: StorageConfig) -> TestStore {
    let dir = tempfile::tempdir().expect("temp dir");
    let storage = open::embedded(dir.path(), config).expect("embedded store opens");
    // As `dspy-storage serve` opens it: migrated on open (a new store's text index is complete
    // at once, so every entry a test finds was written by the operation under test).
    storage
        .text_index_ready()
        .await
        .expect("embedded store migrates");
    TestStore {
        kind: Kind::Embedded,
        storage: Arc::new(storage),
        counter: None,
        location: None,
        data_dir: Some(dir),
    }
}

pub async fn embedded() -> TestStore {
    embedded_with(StorageConfig::default()).await
}

/// A fresh AWS store (new table and bucket), or `None` when no endpoint is configured.
pub async fn aws_with(config: StorageConfig) -> Option<TestStore> {
    if !aws_configured() {
        return None;
    }
    let location = AwsLocation {
        table: unique_name("dspy-test"),
        bucket: unique_name("dspy-test"),
    };
    let counter = RequestCounter::default();
    let storage = open::aws(
        &dspy_storage_core::backend::aws::sdk_config().await,
        &location,
        config,
        true,
        Some(counter.clone()),
    )
    .await
    .expect("AWS store with a new table and bucket");
    counter.reset();
    Some(TestStore {
        kind: Kind::Aws,
        storage: Arc::new(storage),
        counter: Some(counter),
        location: Some(location),
        data_dir: None,
    })
}

pub async fn aws() -> Option<TestStore> {
    aws_with(StorageConfig::default()).await
}

/// One fresh store per available backend: embedded always, AWS when configured.
pub async fn backends_with(config: StorageConfig) -> Vec<TestStore> {
    let mut out = vec![embedded_with(config.clone()).await];
    out.extend(aws_with(config).await);
    out
}

/// A fresh store of `kind` (an AWS one must be configured: it panics otherwise).
pub async fn store_of(kind: Kind) -> TestStore {
    match kind {
        Kind::Embedded => embedded().await,
        Kind::Aws => aws().await.expect("an AWS store (AWS_ENDPOINT_URL)"),
    }
}

pub async fn backends() -> Vec<TestStore> {
    backends_with(StorageConfig::default()).await
}

/// An answer of the API.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: http::HeaderMap,
    pub body: bytes::Bytes,
}

impl Answer {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "answer is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// Asserts the status, naming the backend and the step.
    pub fn expect_status(&self, k: Kind, what: &str, status: u16) {
        assert_eq!(
            self.status.as_u16(),
            status,
            "{k:?}: {what}: expected {status}, got {}: {}",
            self.status,
            String::from_utf8_lossy(&self.body)
        );
    }

    /// Asserts the status, naming the backend and the step, and returns the JSON body (`null`
    /// when the body is empty).
    pub fn expect(&self, k: Kind, what: &str, status: u16) -> Value {
        self.expect_status(k, what, status);
        if self.body.is_empty() {
            Value::Null
        } else {
            self.json()
        }
    }

    /// Asserts an error answer (status, code, the error shape), naming the backend and the step.
    pub fn expect_error(&self, k: Kind, what: &str, status: u16, code: &str) -> Value {
        assert_eq!(
            self.status.as_u16(),
            status,
            "{k:?}: {what}: expected {status} {code}, got {}: {}",
            self.status,
            String::from_utf8_lossy(&self.body)
        );
        self.assert_error(status, code)
    }

    /// The raw JSON text of the answer's `program` field, exactly as the server wrote it.
    pub fn raw_program(&self) -> String {
        let map: std::collections::BTreeMap<String, Box<serde_json::value::RawValue>> =
            serde_json::from_slice(&self.body)
                .unwrap_or_else(|e| panic!("answer is not a JSON object ({e})"));
        map.get("program")
            .unwrap_or_else(|| panic!("no \"program\" in the answer"))
            .get()
            .to_owned()
    }

    /// Collects a router's response.
    pub async fn from_response(response: http::Response<Body>) -> Answer {
        let status = response.status();
        let headers = response.headers().clone();
        let body = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        Answer {
            status,
            headers,
            body,
        }
    }

    /// Asserts the API's error shape with this status and code.
    pub fn assert_error(&self, status: u16, code: &str) -> Value {
        assert_eq!(
            self.status.as_u16(),
            status,
            "expected {status} {code}, got {}: {}",
            self.status,
            String::from_utf8_lossy(&self.body)
        );
        let v = self.json();
        assert_eq!(v["error"]["code"], code, "error code in {v}");
        assert!(
            v["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "message in {v}"
        );
        v
    }
}

/// Calls a router in-process, as the local server and Lambda do.
#[derive(Clone)]
pub struct Client {
    pub router: Router,
}

impl Client {
    pub async fn request(
        &self,
        method: Method,
        uri: &str,
        headers: &[(&str, &str)],
        body: impl Into<Body>,
    ) -> Answer {
        use tower::ServiceExt;
        let mut req = Request::builder().method(method).uri(uri);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let response = self
            .router
            .clone()
            .oneshot(req.body(body.into()).expect("request"))
            .await
            .expect("infallible");
        Answer::from_response(response).await
    }

    pub async fn get(&self, uri: &str) -> Answer {
        self.request(Method::GET, uri, &[], Body::empty()).await
    }

    pub async fn post_json(&self, uri: &str, body: &Value) -> Answer {
        self.request(
            Method::POST,
            uri,
            &[("content-type", "application/json")],
            serde_json::to_vec(body).unwrap(),
        )
        .await
    }

    pub async fn post_raw(&self, uri: &str, body: impl Into<Body>) -> Answer {
        self.request(
            Method::POST,
            uri,
            &[("content-type", "application/json")],
            body,
        )
        .await
    }
}

/// The real saved DSPy and DSPy.rb programs of `tests/fixtures/`, as text (keys in their original order).
pub fn shared_program(name: &str) -> String {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures");
    std::fs::read_to_string(dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

pub const SHARED_PROGRAMS: [&str; 2] = [
    "dspy_react_optimized.json",
    "dspyrb_chain_of_thought_miprov2.json",
];

/// What a store holds below the API, for comparing two runs of one operation: every item by key
/// and every blob's key and size (bytes are not read: a program's content is its record's
/// SHA-256, which is an item attribute). Taken from the backends directly (no fault layer).
/// Word index entries (`TXT#…`) are not compared: they are checked instead — every program
/// record must have all its entries (`model::text::index_items`; a program must never be missing
/// from a search) — and left out. What else they may hold is harmless by design: entries of a
/// store that failed, of a delete whose best-effort removal failed, or of words a metadata change
/// dropped, which no search shows (every candidate's record is checked; README "The word index").
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RawState {
    pub items:
        std::collections::BTreeMap<(String, String), std::collections::BTreeMap<String, String>>,
    pub blobs: std::collections::BTreeMap<String, u64>,
}

impl RawState {
    pub async fn of(storage: &Storage) -> RawState {
        let items = all_items(storage).await;
        let blobs = all_blobs(storage).await;
        let entries: std::collections::BTreeSet<(String, String)> = items
            .iter()
            .filter(|i| i.pk.starts_with("TXT#"))
            .map(|i| (i.pk.clone(), i.sk.clone()))
            .collect();
        for item in items
            .iter()
            .filter(|i| i.pk.starts_with("PROG#") && i.sk == "PROG")
        {
            let record: dspy_storage_core::model::record::ProgramRecord =
                dspy_storage_core::model::record::from_item(item).expect("program record");
            for e in dspy_storage_core::model::text::index_items(&record) {
                assert!(
                    entries.contains(&(e.pk.clone(), e.sk.clone())),
                    "program {} has no word index entry {} / {}",
                    record.id,
                    e.pk,
                    e.sk
                );
            }
        }
        RawState {
            items: items
                .into_iter()
                .filter(|i| !i.pk.starts_with("TXT#"))
                .map(|i| ((i.pk, i.sk), i.attrs))
                .collect(),
            // The embedded store's own database files live beside its blobs.
            blobs: blobs
                .into_iter()
                .filter(|m| !m.key.starts_with("metadata.db"))
                .map(|m| (m.key, m.size))
                .collect(),
        }
    }

    /// What changed from `before` to `self`, one sorted line per item or blob added (`+`),
    /// removed (`-`) or changed (`~`), normalised by [`normalize`] so that two runs of the same
    /// operation on two signatures compare equal. Items `skip` names (by sort key) are left out.
    pub fn delta(
        &self,
        before: &RawState,
        sig: &str,
        ids: &[String],
        skip: &[&str],
    ) -> Vec<String> {
        let n = |s: &str| normalize(s, sig, ids);
        // Binary attributes (compressed metric blocks) differ in bytes between two runs that
        // hold the same records (receive times): compared by what reads them back.
        let show = |attrs: &std::collections::BTreeMap<String, String>| {
            attrs
                .iter()
                .map(|(k, v)| {
                    if k.starts_with("b_") {
                        format!("{k}=<bytes>")
                    } else {
                        format!("{k}={}", n(v))
                    }
                })
                .collect::<Vec<_>>()
                .join(" ")
        };
        let mut out = Vec::new();
        for ((pk, sk), attrs) in &self.items {
            if skip.contains(&sk.as_str()) {
                continue;
            }
            match before.items.get(&(pk.clone(), sk.clone())) {
                None => out.push(format!("+item {} {} {}", n(pk), n(sk), show(attrs))),
                Some(old) if old != attrs => out.push(format!(
                    "~item {} {} {} => {}",
                    n(pk),
                    n(sk),
                    show(old),
                    show(attrs)
                )),
                Some(_) => {}
            }
        }
        for (pk, sk) in before.items.keys() {
            if !skip.contains(&sk.as_str()) && !self.items.contains_key(&(pk.clone(), sk.clone())) {
                out.push(format!("-item {} {}", n(pk), n(sk)));
            }
        }
        for (key, size) in &self.blobs {
            match before.blobs.get(key) {
                None => out.push(format!("+blob {} {size}", n(key))),
                Some(old) if old != size => out.push(format!("~blob {} {old} => {size}", n(key))),
                Some(_) => {}
            }
        }
        for key in before.blobs.keys() {
            if !self.blobs.contains_key(key) {
                out.push(format!("-blob {}", n(key)));
            }
        }
        out.sort();
        out
    }
}

/// Makes a key or attribute comparable across two runs: the signature becomes `{sig}`, the ids
/// of `ids` `{id1}`, `{id2}`, …, any other UUID `{uuid}`, RFC 3339 times `{time}`, dates in blob
/// keys (`YYYY/MM/DD`) and months (`YYYY-MM`) `{date}`, 64-hex-digit hashes `{sha}` (a request's
/// hash holds its signature), and epoch seconds (`expires`, TTLs) `{epoch}`.
pub fn normalize(s: &str, sig: &str, ids: &[String]) -> String {
    let mut s = s.to_owned();
    for (i, id) in ids.iter().enumerate() {
        s = s.replace(id.as_str(), &format!("{{id{}}}", i + 1));
        s = s.replace(&id.replace('-', ""), &format!("{{id{}}}", i + 1));
    }
    // The signature may be a prefix of another iteration's; ids were replaced first.
    s = s.replace(sig, "{sig}");
    let b = s.as_bytes();
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    let is_hex = |c: u8| c.is_ascii_hexdigit();
    let digits = |from: usize, n: usize| {
        from + n <= b.len() && b[from..from + n].iter().all(u8::is_ascii_digit)
    };
    while i < b.len() {
        // A UUID, hyphenated.
        if i + 36 <= b.len()
            && (0..36).all(|j| match j {
                8 | 13 | 18 | 23 => b[i + j] == b'-',
                _ => is_hex(b[i + j]),
            })
        {
            out.push_str("{uuid}");
            i += 36;
            continue;
        }
        // A run of hex digits: 64 (a SHA-256) or 32 (a simple UUID).
        if is_hex(b[i]) && (i == 0 || !b[i - 1].is_ascii_alphanumeric()) {
            let mut j = i;
            while j < b.len() && is_hex(b[j]) {
                j += 1;
            }
            let at_end = j == b.len() || !b[j].is_ascii_alphanumeric();
            if at_end
                && (j - i == 64 || (j - i == 32 && b[i..j].iter().any(|c| c.is_ascii_alphabetic())))
            {
                out.push_str(if j - i == 64 { "{sha}" } else { "{uuid}" });
                i = j;
                continue;
            }
        }
        // YYYY-MM-DDTHH:MM:SS[.fff][Z|+00:00], YYYY-MM-DD, YYYY-MM, YYYY/MM/DD.
        if digits(i, 4)
            && i + 7 <= b.len()
            && (b[i + 4] == b'-' || b[i + 4] == b'/')
            && digits(i + 5, 2)
        {
            let sep = b[i + 4];
            let mut j = i + 7;
            if j + 3 <= b.len() && b[j] == sep && digits(j + 1, 2) {
                j += 3;
                if j < b.len() && b[j] == b'T' {
                    j += 1;
                    while j < b.len()
                        && (b[j].is_ascii_digit()
                            || matches!(b[j], b':' | b'.' | b'Z' | b'+' | b'-'))
                    {
                        j += 1;
                    }
                    out.push_str("{time}");
                    i = j;
                    continue;
                }
            }
            out.push_str("{date}");
            i = j;
            continue;
        }
        // Epoch seconds (10 digits, 2001-2286).
        if digits(i, 10) && (i == 0 || !b[i - 1].is_ascii_digit()) && !digits(i + 10, 1) {
            out.push_str("{epoch}");
            i += 10;
            continue;
        }
        let c = s[i..].chars().next().unwrap();
        out.push(c);
        i += c.len_utf8();
    }
    out
}

/// Prints a test's summary line where libtest does not capture it: faults fired and survived
/// per row, hostile rows per check (see [`dspy_storage_core::testing::report`]).
pub use dspy_storage_core::testing::report;

/// `n` metric items of `len` random letters and digits each (a fixed xorshift sequence, so runs
/// repeat), spread over 7 program partitions: data that does not compress, to push a backup part
/// over the multipart threshold. Written below the API with `batch_put`.
pub async fn put_noise_items(store: &TestStore, n: u32, len: usize) {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut items = Vec::new();
    for i in 0..n {
        let noise: String = (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"[(x % 62) as usize]
                    as char
            })
            .collect();
        items.push(
            dspy_storage_core::backend::Item::new(format!("MET#p{}", i % 7), format!("{i:08}"))
                .with("data", serde_json::json!({ "noise": noise }).to_string()),
        );
    }
    for chunk in items.chunks(100) {
        store
            .storage
            .items()
            .batch_put(chunk.to_vec())
            .await
            .expect("batch put");
    }
}

/// Records as the benchmark posts them (`bench/src/cases.rs`): `n` records spread evenly over
/// the last 90 days, oldest first, three metrics of full precision, posted 1,000 a request.
pub fn bench_records(n: usize, offset: u64) -> Vec<Value> {
    let now = chrono::Utc::now();
    let span = 90 * 86_400i64;
    (0..n)
        .map(|j| {
            let back = span - span * j as i64 / n as i64;
            let x = (offset + j as u64) as f64;
            serde_json::json!({
                "metrics": {
                    "accuracy": 0.6 + 0.3 * ((x * 0.618).fract()),
                    "latency": 0.8 + ((x * 0.414).fract()),
                    "cost": 0.002 + 0.002 * ((x * 0.732).fract()),
                },
                "timestamp": dspy_storage_core::domain::format_time(
                    &(now - chrono::Duration::seconds(back))
                ),
            })
        })
        .collect()
}

/// Posts [`bench_records`] to a program, 1,000 a request.
pub async fn post_bench_history(
    storage: &Storage,
    id: &dspy_storage_core::domain::ProgramId,
    n: usize,
) {
    let all = bench_records(n, 0);
    for chunk in all.chunks(1000) {
        storage
            .record_metrics(
                &dspy_storage_core::access::OPERATOR,
                id,
                &serde_json::json!({ "records": chunk }),
            )
            .await
            .expect("metric records posted");
    }
}

/// Writes metric records the way builds before metric blocks did: one item per record at
/// `MET#<id>#<YYYY-MM>` / `<timestamp>#<uuid>`, a `DAY#` item per day (write counters
/// settled), and the month index for months before the program's. `records`:
/// (timestamp, metrics). Returns the records as they must read back.
pub async fn put_per_record_layout(
    storage: &Storage,
    program: &dspy_storage_core::domain::ProgramId,
    created: chrono::DateTime<chrono::Utc>,
    records: &[(chrono::DateTime<chrono::Utc>, Value)],
) -> Vec<dspy_storage_core::tracking::metrics::MetricRecord> {
    use dspy_storage_core::backend::{Item, WriteOp};
    use dspy_storage_core::model::keys;
    use dspy_storage_core::tracking::metrics::{month_of, MetricRecord};
    let mut items = Vec::new();
    let mut out = Vec::new();
    let mut days = std::collections::BTreeMap::new();
    let mut early = std::collections::BTreeMap::new();
    // Stored times have millisecond precision.
    let ms = |t: chrono::DateTime<chrono::Utc>| {
        chrono::DateTime::from_timestamp_millis(t.timestamp_millis()).unwrap()
    };
    for (t, metrics) in records {
        let t = &ms(*t);
        let r = MetricRecord {
            id: uuid::Uuid::now_v7(),
            record_id: None,
            program_id: *program,
            timestamp: *t,
            metrics: serde_json::from_value(metrics.clone()).unwrap(),
            environment: serde_json::Map::new(),
            received_at: ms(chrono::Utc::now()),
        };
        items.push(
            Item::new(
                keys::metric_pk(program, &month_of(t)),
                keys::metric_sk(t, &r.id),
            )
            .with("data", serde_json::to_string(&r).unwrap()),
        );
        *days.entry(t.date_naive()).or_insert(0i64) += 1;
        if month_of(t) < month_of(&created) {
            *early.entry(month_of(t)).or_insert(0i64) += 1;
        }
        out.push(r);
    }
    storage.items().batch_put(items).await.unwrap();
    let mut ops = Vec::new();
    for d in days.keys() {
        let t = d.and_hms_opt(0, 0, 0).unwrap().and_utc();
        ops.push(WriteOp::Add {
            pk: keys::metric_pk(program, &month_of(&t)),
            sk: keys::metric_day_sk(d),
            add: vec![("n_w".into(), 1), ("n_done".into(), 1)],
            set: vec![],
            remove: Vec::new(),
        });
    }
    for (m, n) in early {
        ops.push(WriteOp::Add {
            pk: keys::metric_months_pk(program),
            sk: m,
            add: vec![("n_records".into(), n)],
            set: vec![],
            remove: Vec::new(),
        });
    }
    for chunk in ops.chunks(100) {
        storage.items().transact(chunk.to_vec()).await.unwrap();
    }
    out.sort_by_key(|r| (r.timestamp, r.id));
    out
}

/// A store over the same backends as `ts` that has not learned its metric layout and does not
/// convert per-record items on read: a store as a build before metric blocks left it (with
/// the layout item removed).
pub async fn before_metric_blocks(ts: &TestStore) -> Storage {
    use dspy_storage_core::backend::{Condition, WriteOp};
    ts.storage
        .items()
        .transact(vec![WriteOp::delete(
            dspy_storage_core::model::keys::STATUS_PK,
            dspy_storage_core::model::keys::METRIC_LAYOUT_SK,
            Condition::None,
        )])
        .await
        .unwrap();
    Storage::new(
        ts.storage.items().clone(),
        ts.storage.blobs().clone(),
        dspy_storage_core::config::StorageConfig::default(),
        "before metric blocks",
    )
}
