//! The storage service: store, load and list programs over any pair of backends.
//!
//! Store: blob first, then the program record, its version claim, the signature head (latest,
//! counts) and its tag entries in ONE conditional transaction. A program is visible only when the
//! transaction committed, so a failure at any step leaves nothing visible; a blob whose
//! transaction failed is deleted (or, if that also fails, collected later as an orphan).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use rand::Rng;
use serde::{Deserialize, Serialize};
use serde_json::{value::RawValue, Value};

use crate::access::{no_program, Principal};
use crate::backend::{BlobStore, Condition, Index, ItemStore, PageKey, Query, SkRange, WriteOp};
use crate::codec::Codec;
use crate::config::StorageConfig;
use crate::cursor::{CursorKeys, Kind};
use crate::domain::{
    format_time, NewMetadata, ProgramId, ProgramStatus, Project, Signature, Version,
    VersionSelector,
};
use crate::error::{Error, Result};
use crate::keys;
use crate::record::{from_item, IdempotencyRecord, ProgramRecord, SignatureHead, VersionClaim};

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
    /// Loads counted in memory for the report (see [`crate::report`]).
    pub(crate) loads: crate::report::LoadCounter,
    /// Envelope encryption with data keys from a key service (see [`crate::envelope`]).
    pub(crate) data_keys: Option<Arc<dyn crate::envelope::DataKeyProvider>>,
    /// The secrets every cursor is signed with (see [`crate::cursor`]).
    pub(crate) cursors: CursorKeys,
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
    pub blob: crate::codec::BlobInfo,
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

pub(crate) const MAX_PAGE: usize = 1000;

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
        }
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
    pub fn with_data_keys(mut self, provider: Arc<dyn crate::envelope::DataKeyProvider>) -> Self {
        self.data_keys = Some(provider);
        self
    }

    /// Encodes a program for storage: envelope-encrypted when a key service is configured, else
    /// the codec's (static key or none).
    pub(crate) async fn encode_blob(
        &self,
        json: &[u8],
    ) -> Result<(Vec<u8>, crate::codec::BlobInfo)> {
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
        info: &crate::codec::BlobInfo,
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

    // ----- store -------------------------------------------------------------------------------

    /// Stores a program. `program` is the program's JSON text exactly as received; it goes into
    /// `metadata.project`, which `who` must see.
    pub async fn store(
        &self,
        who: &Principal,
        program: &RawValue,
        metadata: NewMetadata,
        idempotency: Option<Idempotency>,
    ) -> Result<StoreOutcome> {
        who.see_project(&metadata.project)?;
        let now = crate::domain::now();
        let mut idempotency = idempotency;
        if let Some(idem) = &mut idempotency {
            match self.idempotent_answer(idem, now).await? {
                IdempotentState::Answered(stored) => {
                    return Ok(StoreOutcome {
                        stored,
                        replayed: true,
                    })
                }
                IdempotentState::Expired(expires_at) => idem.expired_record = Some(expires_at),
                IdempotentState::Unused => {}
            }
        }

        let json = program.get().as_bytes();
        let (stored_bytes, blob) = self.encode_blob(json).await?;
        let id = ProgramId::new();
        let created_at = metadata.created_at.unwrap_or(now);
        let blob_key = keys::blob_key(&created_at, &id, blob.compression.extension());
        self.blobs
            .put(&blob_key, Bytes::from(stored_bytes), &blob.stored_sha256)
            .await?;

        let draft = Draft {
            id,
            project: metadata.project,
            signature: metadata.signature,
            version: metadata.version,
            created_at,
            metadata: metadata.map,
            primary_score: metadata.primary_score,
            optimization_method: metadata.optimization_method,
            tags: metadata.tags,
            blob_key: blob_key.clone(),
            blob,
            rollback_to: None,
            layout: Some(crate::dspy::PredictorLayout::of_json_text(program.get())),
        };
        let result = self
            .commit_new_program(draft, now, idempotency.as_ref())
            .await;
        match result {
            Ok(stored) => Ok(StoreOutcome {
                stored,
                replayed: false,
            }),
            Err(err) => {
                // A transient error may hide a commit that happened (a timeout): then the program
                // is stored, and its blob must stay.
                match self.committed_despite(&err, &id).await {
                    Some(Ok(stored)) => {
                        return Ok(StoreOutcome {
                            stored,
                            replayed: false,
                        })
                    }
                    Some(Err(())) => return Err(err),
                    None => {}
                }
                // Nothing refers to the blob: remove it (cleanup collects it if this fails too).
                if let Err(e) = self.blobs.delete(&blob_key).await {
                    tracing::warn!(blob_key, error = %e, "could not remove the blob of a failed store");
                }
                match (err, &idempotency) {
                    // A concurrent request with the same key won: answer as it did.
                    (Error::ConditionFailed { .. }, Some(idem)) => {
                        match self.idempotent_answer(idem, now).await? {
                            IdempotentState::Answered(stored) => Ok(StoreOutcome {
                                stored,
                                replayed: true,
                            }),
                            _ => Err(Error::Unavailable("store did not complete; retry".into())),
                        }
                    }
                    (err, _) => Err(err),
                }
            }
        }
    }

    /// After a failed commit of program `id`: `None` when the failure is definite (nothing was
    /// written: the caller may remove the new blob); `Some(Ok)` when the error was transient but
    /// the program record exists (the commit happened; its answer); `Some(Err)` when that cannot
    /// be told (the blob must stay; cleanup collects it if it is an orphan).
    pub(crate) async fn committed_despite(
        &self,
        err: &Error,
        id: &ProgramId,
    ) -> Option<std::result::Result<StoredProgram, ()>> {
        if !err.is_transient() {
            return None;
        }
        match self.record(id).await {
            Ok(record) => Some(Ok(StoredProgram {
                id: record.id,
                signature: record.signature.clone(),
                version: record.version.clone(),
                project: record.project.clone(),
                created_at: format_time(&record.created_at),
                size: record.blob.size,
                sha256: record.blob.sha256.clone(),
            })),
            Err(Error::NotFound(_)) => None,
            Err(e) => {
                tracing::warn!(program_id = %id, error = %e, "cannot tell whether a failed commit happened; keeping its blob");
                Some(Err(()))
            }
        }
    }

    async fn idempotent_answer(
        &self,
        idem: &Idempotency,
        now: DateTime<Utc>,
    ) -> Result<IdempotentState> {
        let Some(item) = self
            .items
            .get(&keys::idempotency_pk(&idem.key), keys::IDEM_SK)
            .await?
        else {
            return Ok(IdempotentState::Unused);
        };
        let rec: IdempotencyRecord = from_item(&item)?;
        if rec.expires_at < now {
            return Ok(IdempotentState::Expired(
                item.get("expires_at").unwrap_or_default().to_owned(),
            ));
        }
        if rec.request_sha256 != idem.request_sha256 {
            return Err(Error::Precondition(
                "this Idempotency-Key was already used for a different request".into(),
            ));
        }
        serde_json::from_value(rec.response)
            .map(IdempotentState::Answered)
            .map_err(|e| Error::Internal(format!("idempotency record unreadable: {e}")))
    }

    /// Commits a new program whose blob is already stored: program record, version claim,
    /// signature head and tag entries in one conditional transaction, retried while the head
    /// moves under us. The version is the draft's or, when it has none, the next patch after the
    /// latest.
    pub(crate) async fn commit_new_program(
        &self,
        draft: Draft,
        now: DateTime<Utc>,
        idempotency: Option<&Idempotency>,
    ) -> Result<StoredProgram> {
        let sig_pk = keys::signature_pk(&draft.project, &draft.signature);
        let mut attempt = 0u32;
        // Set when a transaction failed in a way that may hide a commit (a timeout).
        let mut maybe_committed = false;
        loop {
            attempt += 1;
            let head: Option<SignatureHead> = match self.items.get(&sig_pk, keys::HEAD_SK).await {
                Ok(item) => item.as_ref().map(from_item).transpose()?,
                Err(e) if e.is_transient() && attempt < self.config.max_write_attempts => {
                    backoff(attempt).await;
                    continue;
                }
                Err(e) => return Err(e),
            };
            let version = match (&draft.version, &head) {
                (Some(v), _) => v.clone(),
                (None, Some(h)) => h.latest_version.next_patch(),
                (None, None) => Version::FIRST,
            };
            let mut map = draft.metadata.clone();
            map.insert(
                "signature".into(),
                Value::String(draft.signature.to_string()),
            );
            map.insert("version".into(), Value::String(version.to_string()));
            map.insert("project".into(), Value::String(draft.project.to_string()));
            if let Some(to) = &draft.rollback_to {
                if let Some(h) = &head {
                    map.insert(
                        "rollback_from".into(),
                        Value::String(h.latest_version.to_string()),
                    );
                }
                map.insert("rollback_to".into(), Value::String(to.to_string()));
                map.insert(
                    "rollback_timestamp".into(),
                    Value::String(format_time(&now)),
                );
            }
            let (id, created_at, blob) = (draft.id, draft.created_at, &draft.blob);
            let record = ProgramRecord {
                id,
                project: draft.project.clone(),
                signature: draft.signature.clone(),
                version: version.clone(),
                created_at,
                updated_at: now,
                metadata: map,
                primary_score: draft.primary_score,
                optimization_method: draft.optimization_method.clone(),
                tags: draft.tags.clone(),
                blob_key: draft.blob_key.clone(),
                blob: blob.clone(),
                status: ProgramStatus::Active,
                previous_version: head.as_ref().map(|h| h.latest_version.clone()),
                layout: draft.layout.clone(),
                restored_at: None,
            };
            let stored = StoredProgram {
                id,
                signature: record.signature.clone(),
                version: version.clone(),
                project: record.project.clone(),
                created_at: format_time(&created_at),
                size: blob.size,
                sha256: blob.sha256.clone(),
            };
            let new_head = match &head {
                None => SignatureHead {
                    project: record.project.clone(),
                    signature: record.signature.clone(),
                    latest_version: version.clone(),
                    latest_id: id,
                    versions: 1,
                    best_performance: record.primary_score,
                    updated_at: now,
                    aliases: Default::default(),
                    rev: 1,
                },
                Some(h) => {
                    let mut n = h.clone();
                    if version > h.latest_version {
                        n.latest_version = version.clone();
                        n.latest_id = id;
                    }
                    n.versions += 1;
                    n.best_performance = max_score(h.best_performance, record.primary_score);
                    n.updated_at = now;
                    n.rev = h.rev + 1;
                    n
                }
            };
            let head_condition = match &head {
                None => Condition::NotExists,
                Some(h) => crate::registry::rev_of(h),
            };
            let mut ops = vec![
                WriteOp::put(record.to_item(), Condition::NotExists),
                WriteOp::put(
                    record
                        .version_claim()
                        .to_item(&record.project, &record.signature),
                    Condition::NotExists,
                ),
                WriteOp::put(new_head.to_item(), head_condition),
            ];
            const IDEM_OP: usize = 3;
            if let Some(idem) = idempotency {
                let rec = IdempotencyRecord {
                    key: idem.key.clone(),
                    request_sha256: idem.request_sha256.clone(),
                    response: serde_json::to_value(&stored).expect("serializable"),
                    created_at: now,
                    expires_at: now
                        + chrono::Duration::from_std(self.config.idempotency_ttl)
                            .unwrap_or_default(),
                };
                // An expired record of the same key (seen by `store`) is replaced; a live one,
                // written meanwhile by a concurrent request, makes the write fail.
                let cond = match &idem.expired_record {
                    Some(expires_at) => {
                        Condition::AttrEquals("expires_at".into(), expires_at.clone())
                    }
                    None => Condition::NotExists,
                };
                ops.push(WriteOp::put(rec.to_item(), cond));
            }
            ops.extend(
                record
                    .tag_items()
                    .into_iter()
                    .map(|i| WriteOp::put(i, Condition::None)),
            );
            ops.push(crate::report::store_counter_op(&record, &now));

            match self.items.transact(ops).await {
                Ok(()) => {
                    self.resolved.invalidate(&sig_pk);
                    let mut detail = serde_json::to_value(&stored)
                        .map_err(|e| Error::Internal(e.to_string()))?;
                    if let Some(from) = &draft.rollback_to {
                        detail["rollback_to"] = Value::String(from.to_string());
                    }
                    self.emit(vec![crate::events::Event::new(
                        crate::events::EventType::ProgramStored,
                        detail,
                    )])
                    .await;
                    return Ok(stored);
                }
                Err(Error::ConditionFailed { ops }) => {
                    // Our own earlier attempt may have committed: the record of our (fresh) id
                    // exists only then.
                    if maybe_committed && ops.contains(&0) {
                        if let Ok(rec) = self.record(&id).await {
                            self.resolved.invalidate(&sig_pk);
                            return Ok(StoredProgram {
                                version: rec.version,
                                ..stored
                            });
                        }
                    }
                    if idempotency.is_some() && ops.contains(&IDEM_OP) {
                        return Err(Error::ConditionFailed { ops });
                    }
                    if ops.contains(&1) && draft.version.is_some() {
                        return Err(Error::AlreadyExists(format!(
                            "signature {} already has version {version} in project {}",
                            draft.signature, draft.project
                        )));
                    }
                    if attempt >= self.config.max_write_attempts {
                        return Err(Error::Unavailable(format!(
                            "signature {} is changing too fast; store gave up after {attempt} attempts",
                            draft.signature
                        )));
                    }
                    backoff(attempt).await;
                }
                Err(e) if e.is_transient() && attempt < self.config.max_write_attempts => {
                    maybe_committed = true;
                    backoff(attempt).await
                }
                Err(e) => return Err(e),
            }
        }
    }

    // ----- load --------------------------------------------------------------------------------

    /// Reads a program's record (no blob), if `who` may see its project: one item read.
    pub async fn get_record(&self, who: &Principal, id: &ProgramId) -> Result<ProgramRecord> {
        let record = self.record(id).await?;
        who.see_record(&record)?;
        Ok(record)
    }

    /// Reads a program's record, whoever asks (the callers decide the scope).
    pub(crate) async fn record(&self, id: &ProgramId) -> Result<ProgramRecord> {
        match self.items.get(&keys::program_pk(id), keys::PROG_SK).await? {
            Some(item) => from_item(&item),
            None => Err(no_program(id)),
        }
    }

    /// Reads a program, if `who` may see its project: one item read, one blob read, verified.
    pub async fn get_program(&self, who: &Principal, id: &ProgramId) -> Result<LoadedProgram> {
        let record = self.get_record(who, id).await?;
        self.loaded(record).await
    }

    /// Reads a program whoever asks (its signature's project was checked by the caller).
    pub(crate) async fn program(&self, id: &ProgramId) -> Result<LoadedProgram> {
        let record = self.record(id).await?;
        self.loaded(record).await
    }

    async fn loaded(&self, record: ProgramRecord) -> Result<LoadedProgram> {
        let loaded = self.load_blob(record).await?;
        self.count_load(&loaded.record);
        Ok(loaded)
    }

    pub(crate) async fn load_blob(&self, record: ProgramRecord) -> Result<LoadedProgram> {
        let record = match record.status {
            ProgramStatus::Active => record,
            // A restore under way: finished here when its copy is ready (maintenance.rs).
            ProgramStatus::Restoring => self.load_restoring(record).await?,
            ProgramStatus::Archived => {
                return Err(Error::Archived(format!(
                    "program {} is in cold storage; restore it first",
                    record.id
                )))
            }
        };
        if let Some(program) = self.programs.get(&record.id, &record.blob.sha256) {
            return Ok(LoadedProgram { record, program });
        }
        let stored = match self.blobs.get(&record.blob_key).await {
            Ok(b) => b,
            Err(Error::NotFound(_)) => {
                return Err(Error::Integrity(format!(
                    "the stored program {} is missing from the blob store",
                    record.id
                )))
            }
            Err(e) => return Err(e),
        };
        let json = self.decode_blob(&stored, &record.blob).await?;
        let text = String::from_utf8(json)
            .map_err(|_| Error::Integrity("stored program is not UTF-8".into()))?;
        let program = RawValue::from_string(text)
            .map_err(|e| Error::Integrity(format!("stored program is not valid JSON: {e}")))?;
        self.programs
            .insert(record.id, &record.blob.sha256, &program);
        Ok(LoadedProgram { record, program })
    }

    /// The head of a signature (latest version, counts, aliases), if `who` may see `project`.
    pub async fn get_head(
        &self,
        who: &Principal,
        project: &Project,
        signature: &Signature,
    ) -> Result<SignatureHead> {
        who.see(project, || no_versions(project, signature))?;
        self.head(project, signature).await
    }

    /// The head of a signature, whoever asks.
    pub(crate) async fn head(
        &self,
        project: &Project,
        signature: &Signature,
    ) -> Result<SignatureHead> {
        match self
            .items
            .get(&keys::signature_pk(project, signature), keys::HEAD_SK)
            .await?
        {
            Some(item) => from_item(&item),
            None => Err(no_versions(project, signature)),
        }
    }

    /// Resolves `latest` or an exact version to a program id (one item read), if `who` may see
    /// `project`.
    pub async fn resolve_version(
        &self,
        who: &Principal,
        project: &Project,
        signature: &Signature,
        selector: &VersionSelector,
    ) -> Result<ProgramId> {
        who.see(project, || no_selected(project, signature, selector))?;
        self.resolve(project, signature, selector).await
    }

    async fn resolve(
        &self,
        project: &Project,
        signature: &Signature,
        selector: &VersionSelector,
    ) -> Result<ProgramId> {
        match selector {
            VersionSelector::Latest => {
                let pk = keys::signature_pk(project, signature);
                if let Some(id) = self.resolved.get(&pk, "latest") {
                    return Ok(id);
                }
                let generation = self.resolved.generation();
                let id = self.head(project, signature).await?.latest_id;
                self.resolved.insert(&pk, "latest", id, generation);
                Ok(id)
            }
            VersionSelector::Exact(v) => {
                let item = self
                    .items
                    .get(
                        &keys::signature_pk(project, signature),
                        &keys::version_sk(v),
                    )
                    .await?
                    .ok_or_else(|| no_version(project, signature, v))?;
                Ok(from_item::<VersionClaim>(&item)?.id)
            }
        }
    }

    /// Reads a version of a signature (`latest` or exact): at most one more item read than by id.
    /// A cached resolution that has gone stale (the program was deleted elsewhere) is resolved
    /// again rather than answered with 404.
    pub async fn get_version(
        &self,
        who: &Principal,
        project: &Project,
        signature: &Signature,
        selector: &VersionSelector,
    ) -> Result<LoadedProgram> {
        who.see(project, || no_selected(project, signature, selector))?;
        let id = self.resolve(project, signature, selector).await?;
        match self.program(&id).await {
            Err(Error::NotFound(_)) if *selector == VersionSelector::Latest => {
                self.resolved
                    .invalidate(&keys::signature_pk(project, signature));
                let id = self.resolve(project, signature, selector).await?;
                self.program(&id).await
            }
            other => other,
        }
    }

    /// Lists a signature's versions in semantic-version order with the aliases pointing at each:
    /// ONE range read per page (the first page's read includes the head, which sorts before the
    /// version claims; later pages read the head separately).
    pub async fn list_versions(
        &self,
        who: &Principal,
        project: &Project,
        signature: &Signature,
        limit: Option<usize>,
        cursor: Option<&str>,
    ) -> Result<VersionListing> {
        who.see(project, || no_versions(project, signature))?;
        let pk = keys::signature_pk(project, signature);
        let limit = page_limit(limit)?;
        let start = cursor
            .map(|c| decode_cursor(&self.cursors, who, c, Index::Table, &pk))
            .transpose()?;
        let query = match &start {
            None => Query::new(Index::Table, pk.clone()).limit(limit + 1),
            Some(_) => Query::new(Index::Table, pk.clone())
                .sk(SkRange::BeginsWith(keys::VER_PREFIX.into()))
                .limit(limit)
                .start(start),
        };
        let page = self.items.query(&query).await?;
        let mut head: Option<SignatureHead> = None;
        let mut items = Vec::with_capacity(page.items.len());
        for item in &page.items {
            if item.sk == keys::HEAD_SK {
                head = Some(from_item(item)?);
            } else if item.sk.starts_with(keys::VER_PREFIX) {
                items.push(from_item::<VersionClaim>(item)?);
            }
        }
        if items.is_empty() && cursor.is_none() {
            return Err(no_versions(project, signature));
        }
        if cursor.is_some() {
            head = match self.head(project, signature).await {
                Ok(h) => Some(h),
                Err(Error::NotFound(_)) => None,
                Err(e) => return Err(e),
            };
        }
        Ok(VersionListing {
            items,
            aliases: crate::registry::aliases_by_version(head.as_ref()),
            next_cursor: page
                .next
                .map(|k| encode_cursor(&self.cursors, who, Index::Table, &pk, &k)),
        })
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

fn no_selected(project: &Project, signature: &Signature, selector: &VersionSelector) -> Error {
    match selector {
        VersionSelector::Latest => no_versions(project, signature),
        VersionSelector::Exact(v) => no_version(project, signature, v),
    }
}

pub(crate) fn max_score(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.max(y)),
        (x, None) => x,
        (None, y) => y,
    }
}

pub(crate) fn page_limit(limit: Option<usize>) -> Result<usize> {
    match limit {
        None => Ok(100),
        Some(0) => Err(Error::invalid("limit", "limit must be at least 1")),
        Some(n) if n > MAX_PAGE => Err(Error::invalid(
            "limit",
            format!("limit must be at most {MAX_PAGE}"),
        )),
        Some(n) => Ok(n),
    }
}

/// Runs `op` until it succeeds or fails otherwise than transiently (throttled or unavailable),
/// at most `max_attempts` times, with [`backoff`] between attempts.
pub(crate) async fn retry_transient<T, F, Fut>(max_attempts: u32, mut op: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    let mut n = 0u32;
    loop {
        n += 1;
        match op().await {
            Err(e) if e.is_transient() && n < max_attempts => backoff(n).await,
            other => return other,
        }
    }
}

/// Exponential backoff with full jitter, capped at 200 ms.
pub(crate) async fn backoff(attempt: u32) {
    let cap = 5u64.saturating_mul(1 << attempt.min(6)).min(200);
    let ms = rand::thread_rng().gen_range(1..=cap);
    tokio::time::sleep(Duration::from_millis(ms)).await;
}

#[derive(Serialize, Deserialize)]
struct CursorBody {
    /// Index the cursor belongs to.
    i: String,
    /// Partition the cursor belongs to.
    p: String,
    /// Last key read.
    k: PageKey,
}

/// Where a listing of one index partition stopped, as a cursor for `who` (signed: see
/// [`crate::cursor`]).
pub fn encode_cursor(
    keys: &CursorKeys,
    who: &Principal,
    index: Index,
    pk: &str,
    key: &PageKey,
) -> String {
    let body = CursorBody {
        i: index.name().into(),
        p: pk.into(),
        k: key.clone(),
    };
    crate::cursor::seal(keys, Kind::Listing, who, &body)
}

/// Opens a listing cursor presented by `who`, refusing one that was not made for this listing
/// (`400`).
pub fn decode_cursor(
    keys: &CursorKeys,
    who: &Principal,
    cursor: &str,
    index: Index,
    pk: &str,
) -> Result<PageKey> {
    let other = || Error::invalid("cursor", "the cursor belongs to another listing");
    let body: CursorBody = crate::cursor::open(keys, Kind::Listing, who, cursor)?;
    if body.i != index.name() || body.p != pk {
        return Err(other());
    }
    let mut expected = vec![crate::backend::attr::PK, crate::backend::attr::SK];
    if index != Index::Table {
        expected.extend([index.pk_attr(), index.sk_attr()]);
    }
    let names: Vec<&str> = body.k.keys().map(String::as_str).collect();
    let mut expected_sorted = expected.clone();
    expected_sorted.sort_unstable();
    if names != expected_sorted {
        return Err(other());
    }
    let key_pk = if index == Index::Table {
        crate::backend::attr::PK
    } else {
        index.pk_attr()
    };
    if body.k.get(key_pk).map(String::as_str) != Some(pk) {
        return Err(other());
    }
    Ok(body.k)
}
