//! One backend under benchmark: the store opened in this process (twice: with the default caches
//! and with every cache off), the HTTP app over each served on 127.0.0.1:0, and a client.

use std::sync::Arc;

use axum::body::Body;
use axum::Router;
use dspy_storage_core::backend::aws::RequestCounter;
use dspy_storage_core::config::StorageConfig;
use dspy_storage_core::domain::ProgramId;
use dspy_storage_core::open::{self, AwsLocation};
use dspy_storage_core::storage::Storage;
use dspy_storage_functions::{app, AppState};
use http_body_util::BodyExt;
use serde_json::Value;

use crate::data::Seeded;
use crate::BenchResult;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Embedded,
    Aws,
}

impl Backend {
    pub fn name(self) -> &'static str {
        match self {
            Backend::Embedded => "embedded",
            Backend::Aws => "aws (local)",
        }
    }
}

/// How a case reaches the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Calls into the core in this process (or, for routes whose core API is not on this build,
    /// the axum router in this process: no socket).
    InProcess,
    /// HTTP over loopback to the app served in this process (`dspy-storage serve`'s router).
    Http,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::InProcess => "in-process",
            Mode::Http => "HTTP",
        }
    }
}

/// An HTTP answer: status and body.
pub struct Answer {
    pub status: u16,
    pub body: Vec<u8>,
}

impl Answer {
    pub fn json(&self) -> BenchResult<Value> {
        Ok(serde_json::from_slice(&self.body)?)
    }
    /// `Ok` for a 2xx answer, else an error carrying the status and body.
    pub fn ok(self, what: &str) -> BenchResult<Self> {
        if (200..300).contains(&self.status) {
            Ok(self)
        } else {
            Err(format!(
                "{what}: {} {}",
                self.status,
                String::from_utf8_lossy(&self.body)
                    .chars()
                    .take(300)
                    .collect::<String>()
            )
            .into())
        }
    }
}

pub struct BackendEnv {
    /// The store with the default configuration (program and resolution caches on).
    pub storage: Arc<Storage>,
    /// The same data with every cache off.
    pub cold: Arc<Storage>,
    pub counter: Option<RequestCounter>,
    router: Router,
    cold_router: Router,
    base: String,
    cold_base: String,
    http: reqwest::Client,
    pub seeded: Seeded,
    _dir: Option<tempfile::TempDir>,
    history: tokio::sync::OnceCell<ProgramId>,
    backup: tokio::sync::OnceCell<String>,
    backup_source: tokio::sync::OnceCell<BackupSource>,
    backend: Backend,
    /// What [`Self::open`] seeded (the backup source is seeded the same way).
    shape: (usize, usize, usize),
    /// The empty store the next restore goes into (see [`BackendEnv::prepare_restore_target`]).
    restore_target: tokio::sync::Mutex<Option<RestoreTarget>>,
}

/// The store the backup and restore cases back up: seeded as the main store is, plus
/// [`HISTORY_RECORDS`] metric records on one program, and written to by nothing else. Its size is
/// therefore the same whatever cases ran before (the main store grows with every append case: a
/// backup of it measured what the earlier cases had left, hundreds of thousands of records).
pub struct BackupSource {
    pub storage: Arc<Storage>,
    pub router: Router,
    pub base: String,
    _dir: Option<tempfile::TempDir>,
}

/// A fresh, empty store whose backups are the backup source's, served in-process and over HTTP.
pub struct RestoreTarget {
    pub router: Router,
    pub base: String,
    _storage: Arc<Storage>,
    _dir: Option<tempfile::TempDir>,
}

/// Records in the history the history and trend cases read.
pub const HISTORY_RECORDS: usize = 10_000;

/// The configuration with the program cache and the resolution cache off.
pub fn uncached() -> StorageConfig {
    StorageConfig {
        program_cache_bytes: 0,
        resolve_cache_ttl: std::time::Duration::ZERO,
        ..StorageConfig::default()
    }
}

/// Whether a local AWS endpoint is configured (`eval "$(bash scripts/local-aws.sh env)"`).
pub fn aws_configured() -> bool {
    std::env::var("AWS_ENDPOINT_URL").is_ok_and(|s| !s.trim().is_empty())
}

pub fn unique_name(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::now_v7().simple())
}

async fn serve(router: Router) -> BenchResult<String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    Ok(format!("http://{addr}"))
}

/// A fresh, empty store: with its caches, and the same data without them.
pub struct Fresh {
    pub storage: Arc<Storage>,
    pub cold: Arc<Storage>,
    pub counter: Option<RequestCounter>,
    /// The temporary data directory of an embedded store (removed when dropped).
    pub dir: Option<tempfile::TempDir>,
}

/// Opens a fresh, empty store of `backend` (a temporary directory; a new table and bucket),
/// counting its AWS requests with `counter` when given (a new counter otherwise).
pub async fn open_fresh(backend: Backend, counter: Option<RequestCounter>) -> BenchResult<Fresh> {
    let (storage, counter, dir) = match backend {
        Backend::Embedded => {
            let dir = tempfile::Builder::new().prefix("dspy-bench-").tempdir()?;
            let storage = open::embedded(dir.path(), StorageConfig::default())?;
            // Migrated on open, as `dspy-storage serve` does (a new store's word index is
            // complete at once: no search below builds it).
            storage.text_index_ready().await?;
            (storage, None, Some(dir))
        }
        Backend::Aws => {
            let name = unique_name("dspy-bench");
            let location = AwsLocation {
                table: name.clone(),
                bucket: name,
            };
            let counter = counter.unwrap_or_default();
            let storage = open::aws(
                &dspy_storage_core::backend::aws::sdk_config().await,
                &location,
                StorageConfig::default(),
                true,
                Some(counter.clone()),
            )
            .await?;
            counter.reset();
            (storage, Some(counter), None)
        }
    };
    let storage = Arc::new(storage);
    let cold = Arc::new(Storage::new(
        storage.items().clone(),
        storage.blobs().clone(),
        uncached(),
        match backend {
            Backend::Embedded => "embedded (caches off)",
            Backend::Aws => "aws (caches off)",
        },
    ));
    Ok(Fresh {
        storage,
        cold,
        counter,
        dir,
    })
}

impl BackendEnv {
    /// A fresh store of `backend`, seeded with `programs` programs over `signatures` signatures,
    /// with both apps served over HTTP.
    pub async fn open(
        backend: Backend,
        programs: usize,
        signatures: usize,
        workers: usize,
    ) -> BenchResult<Self> {
        let Fresh {
            storage,
            cold,
            counter,
            dir,
        } = open_fresh(backend, None).await?;
        let seeded = crate::data::seed(&storage, "bench", programs, signatures, workers).await?;
        let router = app(AppState::new(storage.clone()));
        let cold_router = app(AppState::new(cold.clone()));
        let base = serve(router.clone()).await?;
        let cold_base = serve(cold_router.clone()).await?;
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(64)
            .build()?;
        Ok(BackendEnv {
            storage,
            cold,
            counter,
            router,
            cold_router,
            base,
            cold_base,
            http,
            seeded,
            _dir: dir,
            history: Default::default(),
            backup: Default::default(),
            backup_source: Default::default(),
            backend,
            shape: (programs, signatures, workers),
            restore_target: Default::default(),
        })
    }

    /// The backup source (seeded on first use, outside any timed region: the backup case's setup
    /// asks for it), its AWS requests counted with the main store's.
    pub async fn backup_source(&self) -> BenchResult<&BackupSource> {
        self.backup_source
            .get_or_try_init(|| async move {
                let (programs, signatures, workers) = self.shape;
                let Fresh { storage, dir, .. } =
                    open_fresh(self.backend, self.counter.clone()).await?;
                let seeded =
                    crate::data::seed(&storage, "bench", programs, signatures, workers).await?;
                let router = app(AppState::new(storage.clone()));
                let base = serve(router.clone()).await?;
                let source = BackupSource {
                    storage,
                    router,
                    base,
                    _dir: dir,
                };
                let path = format!("/programs/{}/metrics", seeded.ids[0]);
                for chunk in crate::cases::metric_records(HISTORY_RECORDS, 90, 0).chunks(1000) {
                    let body = serde_json::json!({ "records": chunk });
                    self.send(
                        Mode::InProcess,
                        &source.router,
                        &source.base,
                        http::Method::POST,
                        &path,
                        Some(&body),
                    )
                    .await?
                    .ok("seeding the backup source's metric history")?;
                }
                BenchResult::Ok(source)
            })
            .await
    }

    /// Sends a request to the backup source's app.
    pub async fn call_backup_source(
        &self,
        mode: Mode,
        method: http::Method,
        path: &str,
        body: Option<&Value>,
    ) -> BenchResult<Answer> {
        let source = self.backup_source().await?;
        self.send(mode, &source.router, &source.base, method, path, body)
            .await
    }

    /// Makes a backup of the backup source (once) and a fresh, empty store to restore it into,
    /// its AWS requests counted with the main store's: the restore case times a restore into an
    /// empty store, with neither the backup nor the new store in the timed region.
    pub async fn prepare_restore_target(&self) -> BenchResult<()> {
        self.backup_name().await?;
        let source = self.backup_source().await?;
        let Fresh { storage, dir, .. } = open_fresh(self.backend, self.counter.clone()).await?;
        let mut state = AppState::new(storage.clone());
        state.backup = Some(dspy_storage_core::backup::BackupLocation::new(
            source.storage.blobs().clone(),
        ));
        let router = app(state);
        let base = serve(router.clone()).await?;
        *self.restore_target.lock().await = Some(RestoreTarget {
            router,
            base,
            _storage: storage,
            _dir: dir,
        });
        Ok(())
    }

    /// Restores the backup source's backup into the store [`Self::prepare_restore_target`] made.
    pub async fn restore_into_target(&self, mode: Mode) -> BenchResult<Answer> {
        let name = self.backup_name().await?;
        let target = self
            .restore_target
            .lock()
            .await
            .take()
            .ok_or("no restore target prepared")?;
        let path = format!("/backups/{name}/restore");
        let body = serde_json::json!({ "verify_compatibility": true });
        self.send(
            mode,
            &target.router,
            &target.base,
            http::Method::POST,
            &path,
            Some(&body),
        )
        .await
    }

    /// The program holding [`HISTORY_RECORDS`] metric records over the last 90 days (posted on
    /// first use, 1,000 per request); `None` when the metrics route is not on this build.
    pub async fn history_program(&self) -> BenchResult<ProgramId> {
        let id = self.seeded.ids[0];
        self.history
            .get_or_try_init(|| async move {
                let all = crate::cases::metric_records(HISTORY_RECORDS, 90, 0);
                for chunk in all.chunks(1000) {
                    let body = serde_json::json!({ "records": chunk });
                    let path = format!("/programs/{id}/metrics");
                    let a = self
                        .call(
                            Mode::InProcess,
                            false,
                            http::Method::POST,
                            &path,
                            Some(&body),
                        )
                        .await?;
                    a.ok("seeding the metric history")?;
                }
                BenchResult::Ok(id)
            })
            .await
            .copied()
    }

    /// The name of a backup of the backup source (made on first use).
    pub async fn backup_name(&self) -> BenchResult<String> {
        self.backup
            .get_or_try_init(|| async move {
                let name = format!("bench-restore-{}", uuid::Uuid::now_v7().simple());
                let body = serde_json::json!({ "name": name });
                let a = self
                    .call_backup_source(
                        Mode::InProcess,
                        http::Method::POST,
                        "/backups",
                        Some(&body),
                    )
                    .await?;
                let v = a.ok("making a backup to restore")?.json()?;
                BenchResult::Ok(
                    v["backup_name"]
                        .as_str()
                        .unwrap_or(name.as_str())
                        .to_owned(),
                )
            })
            .await
            .cloned()
    }

    /// One API call: through the router in-process, or over HTTP. `cold` picks the store with
    /// the caches off.
    pub async fn call(
        &self,
        mode: Mode,
        cold: bool,
        method: http::Method,
        path: &str,
        body: Option<&Value>,
    ) -> BenchResult<Answer> {
        let (router, base) = if cold {
            (&self.cold_router, &self.cold_base)
        } else {
            (&self.router, &self.base)
        };
        self.send(mode, router, base, method, path, body).await
    }

    /// One request to `router` in-process, or over HTTP to the server at `base` serving it.
    async fn send(
        &self,
        mode: Mode,
        router: &Router,
        base: &str,
        method: http::Method,
        path: &str,
        body: Option<&Value>,
    ) -> BenchResult<Answer> {
        match mode {
            Mode::InProcess => {
                let mut req = http::Request::builder().method(method).uri(path);
                let body = match body {
                    Some(b) => {
                        req = req.header("content-type", "application/json");
                        Body::from(serde_json::to_vec(b)?)
                    }
                    None => Body::empty(),
                };
                let res = tower::ServiceExt::oneshot(router.clone(), req.body(body)?).await?;
                let status = res.status().as_u16();
                let body = res.into_body().collect().await?.to_bytes().to_vec();
                Ok(Answer { status, body })
            }
            Mode::Http => {
                let mut req = self.http.request(method, format!("{base}{path}"));
                if let Some(b) = body {
                    req = req.json(b);
                }
                let res = req.send().await?;
                let status = res.status().as_u16();
                let body = res.bytes().await?.to_vec();
                Ok(Answer { status, body })
            }
        }
    }

    /// Requests and consumed capacity so far (AWS only); reset by [`Self::reset_counts`].
    pub fn counts(&self) -> Option<(u64, f64, std::collections::BTreeMap<String, u64>)> {
        self.counter
            .as_ref()
            .map(|c| (c.total(), c.capacity("DynamoDB"), c.snapshot()))
    }

    pub fn reset_counts(&self) {
        if let Some(c) = &self.counter {
            c.reset();
        }
    }
}
