//! The storage service: store, load and list programs over any pair of backends.
//!
//! Store: blob first, then the program record, its version claim, the signature head (latest,
//! counts) and its tag entries in ONE conditional transaction. A program is visible only when the
//! transaction committed, so a failure at any step leaves nothing visible; a blob whose
//! transaction failed is deleted (or, if that also fails, collected later as an orphan).

pub mod dspy;
mod load;
pub mod policy;
pub mod registry;
mod store;
pub mod text_index;

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{value::RawValue, Value};

use crate::backend::{BlobStore, ItemStore};
use crate::blob::codec::Codec;
use crate::config::StorageConfig;
use crate::domain::{ProgramId, Project, Signature, Version};
use crate::error::{Error, Result};
use crate::model::record::{ProgramRecord, VersionClaim};
use crate::paging::CursorKeys;

/// What a store answers (`201` body).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredProgram {
    pub id: ProgramId,
    pub signature: Signature,
    pub version: Version,
    pub project: Project,
    pub created_at: String,
    pub size: u64,
    pub sha256: String,
}

/// A request's idempotency key with the hash of the request it was first used for.
#[derive(Debug, Clone)]
pub struct Idempotency {
    pub key: String,
    pub request_sha256: String,
    /// `expires_at` of an expired record of this key, which the store replaces.
    expired_record: Option<String>,
}

impl Idempotency {
    pub fn parse(key: &str, request_sha256: String) -> Result<Self> {
        if key.is_empty() || key.len() > 255 || !key.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(Error::invalid(
                "Idempotency-Key",
                "Idempotency-Key must be 1-255 printable ASCII characters",
            ));
        }
        Ok(Idempotency {
            key: key.to_owned(),
            request_sha256,
            expired_record: None,
        })
    }
}

/// What the idempotency record of a key says.
enum IdempotentState {
    /// No record: the key is new.
    Unused,
    /// A record past its expiry (its `expires_at` attribute): replaced by this request.
    Expired(String),
    /// The first answer given to this request.
    Answered(StoredProgram),
}

/// The outcome of a store: the answer, and whether it replays an earlier identical request.
#[derive(Debug, Clone)]
pub struct StoreOutcome {
    pub stored: StoredProgram,
    pub replayed: bool,
}

/// A program read back: its record and its JSON, byte-for-byte as stored.
#[derive(Debug, Clone)]
pub struct LoadedProgram {
    pub record: ProgramRecord,
    pub program: Box<RawValue>,
}

/// One page of a listing with an opaque cursor for the next.
#[derive(Debug, Clone)]
pub struct Listing<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}

/// One page of a signature's versions.
#[derive(Debug, Clone)]
pub struct VersionListing {
    pub items: Vec<VersionClaim>,
    /// Alias names by the version they point at.
    pub aliases: std::collections::BTreeMap<String, Vec<String>>,
    pub next_cursor: Option<String>,
}

/// Facts about the running service for `/health`.
#[derive(Debug, Clone, Serialize)]
pub struct Health {
    pub status: &'static str,
    pub backend: String,
    pub version: &'static str,
}

pub struct Storage {
    pub(crate) items: Arc<dyn ItemStore>,
    pub(crate) blobs: Arc<dyn BlobStore>,
    pub(crate) codec: Codec,
    pub(crate) config: StorageConfig,
    pub(crate) backend: String,
    pub(crate) programs: crate::cache::ProgramCache,
    pub(crate) resolved: crate::cache::ResolveCache,
    /// Where change events go (none: not published).
    pub(crate) events: Option<Arc<dyn crate::events::EventPublisher>>,
    /// Loads counted in memory for the report (see [`crate::tracking::report`]).
    pub(crate) loads: crate::model::counters::LoadCounter,
    /// Envelope encryption with data keys from a key service (see [`crate::blob::envelope`]).
    pub(crate) data_keys: Option<Arc<dyn crate::blob::envelope::DataKeyProvider>>,
    /// The secrets every cursor is signed with (see [`crate::paging`]).
    pub(crate) cursors: CursorKeys,
    /// Whether metric records may still be in the per-record layout, as last read (see
    /// [`crate::tracking::migrate`]).
    pub(crate) metric_layout: crate::tracking::blocks::LayoutState,
    /// Convert per-record metric items on the first metric read (the embedded store).
    pub(crate) convert_metrics_on_read: bool,
    /// The text index is complete (see [`text_index`]): remembered once seen.
    pub(crate) text_ready: std::sync::atomic::AtomicBool,
    /// Build the text index at the first indexed search when it is not complete (embedded).
    pub(crate) reindex_on_open: bool,
    /// One reindex walk at a time in this process.
    pub(crate) reindex_lock: tokio::sync::Mutex<()>,
}

/// A program about to be committed (its blob already stored).
#[derive(Debug, Clone)]
pub(crate) struct Draft {
    pub id: ProgramId,
    pub project: Project,
    pub signature: Signature,
    /// Explicit version; `None` = the next patch after the latest.
    pub version: Option<Version>,
    pub created_at: DateTime<Utc>,
    pub metadata: serde_json::Map<String, Value>,
    pub primary_score: Option<f64>,
    pub optimization_method: Option<String>,
    pub tags: Vec<String>,
    pub blob_key: String,
    pub blob: crate::blob::codec::BlobInfo,
    /// Set for a rollback: the version whose program this one repeats.
    pub rollback_to: Option<Version>,
    /// The program's predictor layout (see [`crate::dspy::PredictorLayout`]).
    pub layout: Option<crate::dspy::PredictorLayout>,
}

impl std::fmt::Debug for Storage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Storage")
            .field("backend", &self.backend)
            .finish()
    }
}

impl Storage {
    pub fn new(
        items: Arc<dyn ItemStore>,
        blobs: Arc<dyn BlobStore>,
        config: StorageConfig,
        backend: impl Into<String>,
    ) -> Self {
        // Throttled calls are retried with backoff for every operation (see `backend::retry`).
        let items: Arc<dyn ItemStore> = Arc::new(crate::backend::retry::RetryingItems(items));
        let blobs: Arc<dyn BlobStore> = Arc::new(crate::backend::retry::RetryingBlobs(blobs));
        Storage {
            items,
            blobs,
            codec: config.codec(),
            programs: crate::cache::ProgramCache::new(config.program_cache_bytes),
            resolved: crate::cache::ResolveCache::new(config.resolve_cache_ttl),
            loads: Default::default(),
            config,
            backend: backend.into(),
            events: None,
            data_keys: None,
            cursors: CursorKeys::ephemeral(),
            metric_layout: Default::default(),
            convert_metrics_on_read: false,
            text_ready: Default::default(),
            reindex_on_open: false,
            reindex_lock: Default::default(),
        }
    }

    /// Converts metric records of the per-record layout into blocks on the first metric read
    /// (see [`crate::tracking::migrate`]): for a store that one process owns (embedded).
    pub fn with_metric_conversion_on_read(mut self) -> Self {
        self.convert_metrics_on_read = true;
        self
    }

    /// Signs and verifies cursors with `keys` (default: an ephemeral secret of this process, so
    /// cursors work only within it).
    pub fn with_cursor_keys(mut self, keys: CursorKeys) -> Self {
        self.cursors = keys;
        self
    }

    pub fn cursor_keys(&self) -> &CursorKeys {
        &self.cursors
    }

    /// Seals new blobs with data keys from `provider` (KMS) and reads envelope-encrypted blobs
    /// with it; blobs sealed with the static keyring stay readable.
    pub fn with_data_keys(
        mut self,
        provider: Arc<dyn crate::blob::envelope::DataKeyProvider>,
    ) -> Self {
        self.data_keys = Some(provider);
        self
    }

    /// Encodes a program for storage: envelope-encrypted when a key service is configured, else
    /// the codec's (static key or none).
    pub(crate) async fn encode_blob(
        &self,
        json: &[u8],
    ) -> Result<(Vec<u8>, crate::blob::codec::BlobInfo)> {
        match &self.data_keys {
            Some(keys) => {
                let key = keys.data_key().await?;
                self.codec.encode_with(json, &key)
            }
            None => self.codec.encode(json),
        }
    }

    /// Decodes a stored blob, unwrapping its data key when it is envelope-encrypted.
    pub(crate) async fn decode_blob(
        &self,
        stored: &[u8],
        info: &crate::blob::codec::BlobInfo,
    ) -> Result<Vec<u8>> {
        match (Codec::wrapped_key(info)?, &self.data_keys) {
            (Some(wrapped), Some(keys)) => {
                let key_id = info.key_id.as_deref().ok_or_else(|| {
                    Error::Integrity("an envelope-encrypted program names no key".into())
                })?;
                let key = keys.unwrap(key_id, &wrapped).await?;
                self.codec.decode_with(stored, info, &key)
            }
            _ => self.codec.decode(stored, info),
        }
    }

    /// Publishes change events (see [`crate::events`]) through `publisher`.
    pub fn with_events(mut self, publisher: Arc<dyn crate::events::EventPublisher>) -> Self {
        self.events = Some(publisher);
        self
    }

    /// Publishes events after a committed change (best effort; see [`crate::events::emit`]).
    pub(crate) async fn emit(&self, events: Vec<crate::events::Event>) {
        crate::events::emit(self.events.as_ref(), events).await
    }

    pub fn items(&self) -> &Arc<dyn ItemStore> {
        &self.items
    }
    pub fn blobs(&self) -> &Arc<dyn BlobStore> {
        &self.blobs
    }
    pub fn config(&self) -> &StorageConfig {
        &self.config
    }

    pub fn health(&self) -> Health {
        Health {
            status: "ok",
            backend: self.backend.clone(),
            version: env!("CARGO_PKG_VERSION"),
        }
    }
}

/// The answer for a signature without versions in a project — or in a project outside the
/// caller's scope.
pub(crate) fn no_versions(project: &Project, signature: &Signature) -> Error {
    Error::NotFound(format!(
        "signature {signature} has no versions in project {project}"
    ))
}

/// The answer for a missing version of a signature (or one outside the caller's scope).
pub(crate) fn no_version(project: &Project, signature: &Signature, version: &Version) -> Error {
    Error::NotFound(format!(
        "signature {signature} has no version {version} in project {project}"
    ))
}

pub(crate) fn max_score(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.max(y)),
        (x, None) => x,
        (None, y) => y,
    }
}
