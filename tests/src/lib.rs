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
        let mut items = Vec::new();
        let mut start = None;
        loop {
            let page = self
                .storage
                .items()
                .scan(start, 500)
                .await
                .expect("scan the item store");
            items.extend(page.items);
            match page.next {
                Some(n) => start = Some(n),
                None => break,
            }
        }
        items.sort_by(|a, b| (&a.pk, &a.sk).cmp(&(&b.pk, &b.sk)));
        let mut blobs = Vec::new();
        let mut start = None;
        loop {
            let (page, next) = self
                .storage
                .blobs()
                .list("", start, 500)
                .await
                .expect("list the blob store");
            for meta in page {
                let bytes = self.storage.blobs().get(&meta.key).await.ok();
                blobs.push((meta.key, bytes));
            }
            match next {
                Some(n) => start = Some(n),
                None => break,
            }
        }
        blobs.sort();
        Snapshot { items, blobs }
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
