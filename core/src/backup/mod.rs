//! Backup and restore, written once over [`ItemStore`](crate::backend::ItemStore) and
//! [`BlobStore`]: consistent, incremental, verified, streaming (see [`format`] for the layout).
//!
//! **Backup** reads the table with a paged scan, twice:
//! 1. programs, metric records, optimization runs and every item of a kind it does not know
//!    ([`EntityKind::Other`]) — each program with its JSON copied into the content-addressed
//!    blob pool unless an earlier backup holds it (incremental). A program whose blob cannot be
//!    read (deleted meanwhile, archived, corrupted) is left out and listed in `skipped`: a
//!    program is in a backup with its blob and metadata or not at all.
//! 2. signature heads (latest, aliases) with their version claims (read by one range query per
//!    signature), and tag entries — each kept only when it points at a program of pass 1. A head
//!    whose latest or aliases point elsewhere (a program stored or deleted while the backup ran)
//!    is rewritten from the claims in the backup.
//!
//! Idempotency records (a cache that expires) and `STATUS` items (this deployment's job status)
//! are not backed up. Memory: one scan page, one open part writer per kind (a zstd stream and at
//! most one multipart chunk), and in pass 2 the sorted ids of the programs in the backup (16
//! bytes per program). Past a deadline the backup stops at a page boundary, writes a checkpoint
//! with the scan cursor and returns [`BackupRun::Suspended`]; the next run resumes it.
//!
//! **Restore** verifies first — the manifest's format version, every part's SHA-256 and every
//! line, every program blob's SHA-256 — and only then writes: metric records, runs and other
//! items (nothing shows them without their program), then the programs. Each program's blob is
//! written first; then, per signature, ONE transaction writes the records (only if absent), the
//! version claims and tag entries derived from them (only if the version is free), the report's
//! counters and the signature head moved over them (latest, count, best score, and the
//! backup's aliases that point at them). A restore cut anywhere therefore leaves every program
//! whole: visible by id, listed, counted and `latest` where it should be, or not there at all.
//! When a signature's versions end up exactly the backup's, its head is the backup's (live
//! aliases kept), so a restore into an empty store reproduces every item byte for byte. Last,
//! the backup's aliases the target lacks are added where the target has their version as the
//! same program. Running a restore again completes it; restoring twice changes nothing the
//! second time. One restore runs at a time (a lease, as for backups). Memory: the backup's heads and program ids (16 bytes each) are kept while it
//! runs.

pub mod format;
mod restore;

use crate::access::Principal;
use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::backend::{BlobStore, Condition, Index, Item, PageKey, Query, SkRange, WriteOp};
use crate::error::{Error, Result};
use crate::model::keys::{self, EntityKind};
use crate::model::record::{from_item, ProgramRecord, SignatureHead, VersionClaim};
use crate::storage::Storage;

pub use format::{Counts, Manifest, PartInfo, Skipped, FORMAT_VERSION};
pub use restore::{restore, RestoreOptions, RestoreReport};

use format::{BlobRef, Line, PartWriter};

/// Default number of complete backups kept.
pub const DEFAULT_RETAIN: usize = 30;

/// Where backups are kept: a blob store (the backup bucket, or the program bucket / the data
/// directory) with the backups under `prefix` and the shared program blob pool under
/// `blob_prefix`.
#[derive(Clone)]
pub struct BackupLocation {
    pub store: Arc<dyn BlobStore>,
    pub prefix: String,
    pub blob_prefix: String,
}

impl std::fmt::Debug for BackupLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackupLocation")
            .field("prefix", &self.prefix)
            .field("blob_prefix", &self.blob_prefix)
            .finish()
    }
}

impl BackupLocation {
    /// `backups/<name>/…` and `backup-blobs/…` in this store.
    pub fn new(store: Arc<dyn BlobStore>) -> Self {
        BackupLocation {
            store,
            prefix: "backups/".into(),
            blob_prefix: "backup-blobs/".into(),
        }
    }

    /// The same layout in an S3 bucket of its own (`DSPY_STORAGE_BACKUP_BUCKET`,
    /// `--backup-bucket`), with the environment's AWS configuration.
    pub async fn s3_bucket(bucket: &str) -> Self {
        use crate::backend::aws::{load_sdk_config, s3_client, S3BlobStore};
        let s3 = s3_client(&load_sdk_config().await, None);
        Self::new(Arc::new(S3BlobStore::new(s3, bucket)))
    }

    /// The same layout in a local directory (export / import).
    pub fn directory(path: &Path) -> Result<Self> {
        Ok(Self::new(Arc::new(
            crate::backend::embedded::FileBlobStore::open(path)?,
        )))
    }

    pub fn folder(&self, name: &str) -> String {
        format!("{}{name}/", self.prefix)
    }
}

/// Progress of a long operation: `phase` ("programs", "signatures", "verify", "restore", …),
/// items done, and the total when known.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    pub phase: &'static str,
    pub done: u64,
    pub total: Option<u64>,
}

pub type ProgressFn = Arc<dyn Fn(Progress) + Send + Sync>;

/// How a backup runs.
#[derive(Clone)]
pub struct BackupOptions {
    /// Name of a new backup (default `backup-<UTC time>`), or of an unfinished one to resume.
    /// Without a name an unfinished backup is resumed when there is one.
    pub name: Option<String>,
    /// Complete backups kept after a successful one (`None`: none removed).
    pub retain: Option<usize>,
    /// Items per scan page.
    pub page_size: usize,
    /// Records per part before a new part starts.
    pub part_max_records: u64,
    /// Compressed bytes buffered before a multipart chunk is sent (at least 5 MiB).
    pub chunk_bytes: usize,
    /// Stop at the first page boundary after this instant and leave a checkpoint.
    pub deadline: Option<Instant>,
    /// Write the `STATUS`/`LAST#backup` item (off for exports).
    pub record_status: bool,
    pub progress: Option<ProgressFn>,
}

impl Default for BackupOptions {
    fn default() -> Self {
        BackupOptions {
            name: None,
            retain: Some(DEFAULT_RETAIN),
            page_size: 200,
            part_max_records: 2000,
            chunk_bytes: 8 << 20,
            deadline: None,
            record_status: true,
            progress: None,
        }
    }
}

/// What a backup run did.
#[derive(Debug, Clone)]
pub enum BackupRun {
    Finished(Box<Manifest>),
    /// Stopped at the deadline; run again (same name, or no name) to resume.
    Suspended {
        name: String,
        pass: u8,
    },
}

/// A backup in a listing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BackupEntry {
    pub backup_name: String,
    pub backup_id: String,
    /// `complete` or `in_progress`.
    pub status: String,
    pub created_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<DateTime<Utc>>,
    pub size: u64,
    pub programs_count: u64,
    pub metrics_count: u64,
    pub format_version: u32,
}

/// The state of a backup between slices (`checkpoint.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Checkpoint {
    format_version: u32,
    backup_id: String,
    name: String,
    created_at: DateTime<Utc>,
    source: String,
    /// 1: programs and verbatim kinds; 2: heads, claims, tags.
    pass: u8,
    cursor: Option<PageKey>,
    parts: Vec<PartInfo>,
    counts: Counts,
    size: u64,
    skipped: Vec<Skipped>,
    next_seq: u32,
}

const MAX_SKIPPED_LISTED: usize = 100;
const LEASE_SECS: i64 = 20 * 60;

/// The order parts are restored in: programs before what points at them, heads last.
fn restore_rank(kind: EntityKind) -> u8 {
    match kind {
        EntityKind::Program => 0,
        EntityKind::VersionClaim => 1,
        EntityKind::Tag => 2,
        EntityKind::Metric => 3,
        EntityKind::OptimizationRun => 4,
        EntityKind::Other => 5,
        EntityKind::SignatureHead => 6,
        EntityKind::Idempotency | EntityKind::Status | EntityKind::Counter => 7,
    }
}

fn uuid_of(text: &str) -> Option<u128> {
    uuid::Uuid::parse_str(text).ok().map(|u| u.as_u128())
}

async fn put_json<T: Serialize>(store: &dyn BlobStore, key: &str, value: &T) -> Result<()> {
    let bytes = serde_json::to_vec_pretty(value).expect("serializable");
    let sha = crate::blob::codec::sha256_hex(&bytes);
    store.put(key, Bytes::from(bytes), &sha).await
}

async fn get_json<T: serde::de::DeserializeOwned>(
    store: &dyn BlobStore,
    key: &str,
) -> Result<Option<T>> {
    match store.get(key).await {
        Ok(b) => serde_json::from_slice(&b)
            .map(Some)
            .map_err(|e| Error::Integrity(format!("{key} is unreadable: {e}"))),
        Err(Error::NotFound(_)) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Reads a backup's manifest (`NotFound` when there is no complete backup of that name).
pub async fn get_manifest(
    who: &Principal,
    location: &BackupLocation,
    name: &str,
) -> Result<Manifest> {
    who.whole_store("reading a backup")?;
    manifest_of(location, name).await
}

pub(crate) async fn manifest_of(location: &BackupLocation, name: &str) -> Result<Manifest> {
    format::validate_name(name)?;
    get_json(
        location.store.as_ref(),
        &format!("{}manifest.json", location.folder(name)),
    )
    .await?
    .ok_or_else(|| Error::NotFound(format!("no backup named {name}")))
}

/// Every backup, newest first (complete ones and unfinished ones).
pub async fn list_backups(who: &Principal, location: &BackupLocation) -> Result<Vec<BackupEntry>> {
    who.whole_store("listing backups")?;
    backups_in(location).await
}

async fn backups_in(location: &BackupLocation) -> Result<Vec<BackupEntry>> {
    let mut complete = Vec::new();
    let mut unfinished = Vec::new();
    let mut start = None;
    loop {
        let (metas, next) = location
            .store
            .list(&location.prefix, start.take(), 1000)
            .await?;
        for meta in metas {
            let rest = &meta.key[location.prefix.len().min(meta.key.len())..];
            if let Some(name) = rest.strip_suffix("/manifest.json") {
                complete.push(name.to_owned());
            } else if let Some(name) = rest.strip_suffix("/checkpoint.json") {
                unfinished.push(name.to_owned());
            }
        }
        match next {
            Some(n) => start = Some(n),
            None => break,
        }
    }
    let mut out = Vec::new();
    for name in &complete {
        let m = manifest_of(location, name).await?;
        out.push(BackupEntry {
            backup_name: m.name,
            backup_id: m.backup_id,
            status: "complete".into(),
            created_at: m.created_at,
            finished_at: Some(m.finished_at),
            size: m.size,
            programs_count: m.counts.programs,
            metrics_count: m.counts.metrics,
            format_version: m.format_version,
        });
    }
    for name in unfinished.iter().filter(|n| !complete.contains(n)) {
        let key = format!("{}checkpoint.json", location.folder(name));
        if let Some(c) = get_json::<Checkpoint>(location.store.as_ref(), &key).await? {
            out.push(BackupEntry {
                backup_name: c.name,
                backup_id: c.backup_id,
                status: "in_progress".into(),
                created_at: c.created_at,
                finished_at: None,
                size: c.size,
                programs_count: c.counts.programs,
                metrics_count: c.counts.metrics,
                format_version: c.format_version,
            });
        }
    }
    out.sort_by(|a, b| {
        b.created_at
            .cmp(&a.created_at)
            .then(b.backup_name.cmp(&a.backup_name))
    });
    Ok(out)
}

/// What a lease is for: one backup at a time, one restore at a time.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Job {
    Backup,
    Restore,
}

impl Job {
    fn sk(self) -> &'static str {
        match self {
            Job::Backup => keys::BACKUP_LOCK_SK,
            Job::Restore => keys::RESTORE_LOCK_SK,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Job::Backup => "backup",
            Job::Restore => "restore",
        }
    }
}

/// One job of a kind at a time: a lease item `STATUS`/`LOCK#<job>` taken with a conditional
/// write, renewed while the job runs, released when it ends.
pub(crate) struct Lease {
    job: Job,
    owner: String,
    expires: i64,
}

impl Lease {
    pub(crate) async fn acquire(storage: &Storage, job: Job) -> Result<Lease> {
        let items = storage.items();
        let now = Utc::now().timestamp();
        let what = job.name();
        let current = items.get(keys::STATUS_PK, job.sk()).await?;
        let condition = match &current {
            None => Condition::NotExists,
            Some(item) => {
                let exp = item.get("expires_at").unwrap_or("0");
                if exp.parse::<i64>().unwrap_or(0) > now {
                    return Err(Error::Precondition(format!(
                        "another {what} is running (its lease expires at {})",
                        DateTime::from_timestamp(exp.parse().unwrap_or(0), 0)
                            .map(|t| crate::domain::format_time(&t))
                            .unwrap_or_default()
                    )));
                }
                Condition::AttrEquals("expires_at".into(), exp.to_owned())
            }
        };
        let lease = Lease {
            job,
            owner: uuid::Uuid::now_v7().to_string(),
            expires: now + LEASE_SECS,
        };
        match items
            .transact(vec![WriteOp::put(lease.item(), condition)])
            .await
        {
            Ok(()) => Ok(lease),
            Err(Error::ConditionFailed { .. }) => Err(Error::Precondition(format!(
                "another {what} is running (it took the lease first)"
            ))),
            Err(e) => {
                // The write may have happened all the same (a timeout): if the lease is ours,
                // give it back, so that it does not refuse every job until it expires.
                if let Ok(Some(item)) = items.get(keys::STATUS_PK, job.sk()).await {
                    if item.get("owner") == Some(lease.owner.as_str()) {
                        lease.release(storage).await;
                    }
                }
                Err(e)
            }
        }
    }

    fn item(&self) -> Item {
        Item::new(keys::STATUS_PK, self.job.sk())
            .with("owner", self.owner.clone())
            .with("expires_at", self.expires.to_string())
    }

    /// Extends the lease when less than half of it is left.
    pub(crate) async fn renew(&mut self, storage: &Storage) -> Result<()> {
        let now = Utc::now().timestamp();
        if self.expires - now > LEASE_SECS / 2 {
            return Ok(());
        }
        self.expires = now + LEASE_SECS;
        let what = self.job.name();
        storage
            .items()
            .transact(vec![WriteOp::put(
                self.item(),
                Condition::AttrEquals("owner".into(), self.owner.clone()),
            )])
            .await
            .map_err(|e| match e {
                Error::ConditionFailed { .. } => {
                    Error::Precondition(format!("the {what} lost its lease to another {what}"))
                }
                e => e,
            })
    }

    /// Gives the lease back, retrying a failed release (a lease left behind would refuse every
    /// job until it expires). A lease no longer ours (`ConditionFailed`) is left alone.
    pub(crate) async fn release(self, storage: &Storage) {
        let what = self.job.name();
        let op = WriteOp::delete(
            keys::STATUS_PK,
            self.job.sk(),
            Condition::AttrEquals("owner".into(), self.owner),
        );
        for attempt in 1..=5u32 {
            match storage.items().transact(vec![op.clone()]).await {
                Ok(()) | Err(Error::ConditionFailed { .. }) => return,
                Err(e) if attempt < 5 => {
                    tracing::debug!(error = %e, attempt, what, "releasing a lease; retrying");
                    crate::retry::backoff(attempt).await
                }
                Err(e) => {
                    tracing::warn!(error = %e, what, "could not release a lease; it expires by itself")
                }
            }
        }
    }
}

/// Runs (or resumes) a backup of `storage` into `location`.
pub async fn create_backup(
    who: &Principal,
    storage: &Storage,
    location: &BackupLocation,
    options: &BackupOptions,
) -> Result<BackupRun> {
    who.whole_store("a backup")?;
    if let Some(name) = &options.name {
        format::validate_name(name)?;
    }
    let lease = Lease::acquire(storage, Job::Backup).await?;
    let mut lease = lease;
    let result = run_backup(storage, location, options, &mut lease).await;
    lease.release(storage).await;
    let run = result?;
    if let BackupRun::Finished(manifest) = &run {
        if options.record_status {
            record_status(storage, manifest).await?;
        }
        if let Some(retain) = options.retain {
            prune(location, retain.max(1)).await?;
        }
    }
    Ok(run)
}

/// Writes the backup's last-run status (`STATUS`/`LAST#backup`), read by the monitoring report.
async fn record_status(storage: &Storage, manifest: &Manifest) -> Result<()> {
    let data = json!({
        "finished_at": crate::domain::format_time(&manifest.finished_at),
        "started_at": crate::domain::format_time(&manifest.created_at),
        "name": manifest.name,
        "backup_id": manifest.backup_id,
        "status": "ok",
        "programs": manifest.counts.programs,
        "metrics": manifest.counts.metrics,
        "blobs_copied": manifest.counts.blobs_copied,
        "skipped_programs": manifest.counts.skipped_programs,
        "size": manifest.size,
        "duration_s": (manifest.finished_at - manifest.created_at).num_milliseconds() as f64 / 1000.0,
    });
    storage
        .items()
        .batch_put(vec![Item::new(keys::STATUS_PK, keys::BACKUP_STATUS_SK)
            .with(crate::backend::attr::DATA, data.to_string())])
        .await?;
    storage
        .emit(vec![crate::events::Event::new(
            crate::events::EventType::BackupCompleted,
            data,
        )])
        .await;
    Ok(())
}

/// The name of an unfinished backup, if any (the oldest).
async fn unfinished_backup(location: &BackupLocation) -> Result<Option<String>> {
    Ok(backups_in(location)
        .await?
        .into_iter()
        .rev()
        .find(|e| e.status == "in_progress")
        .map(|e| e.backup_name))
}

struct Run<'a> {
    storage: &'a Storage,
    location: &'a BackupLocation,
    options: &'a BackupOptions,
    folder: String,
    state: Checkpoint,
    writers: BTreeMap<EntityKind, PartWriter>,
    /// Pass 2: ids of the programs in the backup, sorted.
    ids: Vec<u128>,
    done: u64,
}

async fn run_backup(
    storage: &Storage,
    location: &BackupLocation,
    options: &BackupOptions,
    lease: &mut Lease,
) -> Result<BackupRun> {
    let name = match &options.name {
        Some(n) => n.clone(),
        None => match unfinished_backup(location).await? {
            Some(n) => n,
            None => format!("backup-{}", Utc::now().format("%Y%m%dT%H%M%S%3fZ")),
        },
    };
    let folder = location.folder(&name);
    let store = location.store.as_ref();
    if store.exists(&format!("{folder}manifest.json")).await? {
        return Err(Error::AlreadyExists(format!(
            "a backup named {name} already exists"
        )));
    }
    let checkpoint_key = format!("{folder}checkpoint.json");
    let state = match get_json::<Checkpoint>(store, &checkpoint_key).await? {
        Some(c) => c,
        None => {
            // Written at once: a backup that fails before its first slice ends is resumed (not
            // left behind unlisted) by the next run.
            let c = Checkpoint {
                format_version: FORMAT_VERSION,
                backup_id: uuid::Uuid::now_v7().to_string(),
                name: name.clone(),
                created_at: crate::domain::now(),
                source: storage.health().backend,
                pass: 1,
                cursor: None,
                parts: vec![],
                counts: Counts::default(),
                size: 0,
                skipped: vec![],
                next_seq: 1,
            };
            put_json(store, &checkpoint_key, &c).await?;
            c
        }
    };
    let mut run = Run {
        storage,
        location,
        options,
        folder,
        state,
        writers: BTreeMap::new(),
        ids: Vec::new(),
        done: 0,
    };
    let result = run.execute(lease).await;
    if result.is_err() {
        for (_, w) in std::mem::take(&mut run.writers) {
            w.abort().await;
        }
    }
    result
}

impl Run<'_> {
    async fn execute(&mut self, lease: &mut Lease) -> Result<BackupRun> {
        if self.state.pass == 2 {
            self.load_ids().await?;
        }
        loop {
            let page = self
                .storage
                .items()
                .scan(self.state.cursor.clone(), self.options.page_size)
                .await?;
            for item in page.items {
                self.item(item).await?;
            }
            self.roll_full_parts().await?;
            self.state.cursor = page.next;
            if let Some(p) = &self.options.progress {
                p(Progress {
                    phase: if self.state.pass == 1 {
                        "programs"
                    } else {
                        "signatures"
                    },
                    done: self.done,
                    total: None,
                });
            }
            if self.state.cursor.is_none() {
                self.finish_parts().await?;
                if self.state.pass == 1 {
                    self.state.pass = 2;
                    self.done = 0;
                    self.load_ids().await?;
                    continue;
                }
                return self
                    .finish()
                    .await
                    .map(|m| BackupRun::Finished(Box::new(m)));
            }
            lease.renew(self.storage).await?;
            if self.options.deadline.is_some_and(|d| Instant::now() >= d) {
                self.finish_parts().await?;
                put_json(
                    self.location.store.as_ref(),
                    &format!("{}checkpoint.json", self.folder),
                    &self.state,
                )
                .await?;
                return Ok(BackupRun::Suspended {
                    name: self.state.name.clone(),
                    pass: self.state.pass,
                });
            }
        }
    }

    /// Rebuilds the sorted ids of the programs in the backup from its program parts.
    async fn load_ids(&mut self) -> Result<()> {
        let mut ids = Vec::with_capacity(self.state.counts.programs as usize);
        for part in self
            .state
            .parts
            .iter()
            .filter(|p| p.kind == EntityKind::Program)
        {
            let bytes = format::read_part(self.location.store.as_ref(), &self.folder, part).await?;
            for line in format::lines(part, bytes)? {
                let line = line?;
                if let Some(id) = line.item.pk.strip_prefix("PROG#").and_then(uuid_of) {
                    ids.push(id);
                }
            }
        }
        ids.sort_unstable();
        ids.dedup();
        self.ids = ids;
        Ok(())
    }

    fn has(&self, id: &str) -> bool {
        uuid_of(id).is_some_and(|u| self.ids.binary_search(&u).is_ok())
    }

    async fn item(&mut self, item: Item) -> Result<()> {
        let kind = keys::entity_kind(&item.pk, &item.sk);
        match (self.state.pass, kind) {
            (1, EntityKind::Program) => self.program(item).await,
            (1, EntityKind::Metric | EntityKind::OptimizationRun | EntityKind::Other) => {
                self.write(kind, Line { item, blob: None }).await
            }
            (2, EntityKind::SignatureHead) => self.head(item).await,
            (2, EntityKind::Tag) => {
                if item.get("id").is_some_and(|id| self.has(id)) {
                    self.write(kind, Line { item, blob: None }).await?;
                }
                Ok(())
            }
            // Claims are read with their head; idempotency and status items are not backed up.
            _ => Ok(()),
        }
    }

    async fn write(&mut self, kind: EntityKind, line: Line) -> Result<()> {
        if !self.writers.contains_key(&kind) {
            let w = PartWriter::new(
                kind,
                &self.folder,
                self.state.next_seq,
                self.options.chunk_bytes,
            )?;
            self.state.next_seq += 1;
            self.writers.insert(kind, w);
        }
        let w = self.writers.get_mut(&kind).expect("inserted");
        w.write(self.location.store.as_ref(), &line).await?;
        self.state.counts.add(kind, 1);
        self.done += 1;
        Ok(())
    }

    fn skip(&mut self, id: &str, reason: String) {
        self.state.counts.skipped_programs += 1;
        tracing::warn!(id, reason, "program left out of the backup");
        if self.state.skipped.len() < MAX_SKIPPED_LISTED {
            self.state.skipped.push(Skipped {
                id: id.to_owned(),
                reason,
            });
        }
    }

    async fn program(&mut self, item: Item) -> Result<()> {
        let id = item.pk.trim_start_matches("PROG#").to_owned();
        let record: ProgramRecord = match from_item(&item) {
            Ok(r) => r,
            Err(e) => {
                self.skip(&id, format!("unreadable record: {e}"));
                return Ok(());
            }
        };
        let blob = BlobRef {
            sha256: record.blob.sha256.clone(),
            size: record.blob.size,
        };
        let pool = format::pool_key(&self.location.blob_prefix, &blob.sha256);
        let backup_store = self.location.store.as_ref();
        if !backup_store.exists(&pool).await? {
            let stored = match self.storage.blobs().get(&record.blob_key).await {
                Ok(b) => b,
                Err(Error::NotFound(_)) => {
                    let still = self
                        .storage
                        .items()
                        .get(&item.pk, keys::PROG_SK)
                        .await?
                        .is_some();
                    let reason = if still {
                        "its blob is missing from the blob store"
                    } else {
                        "deleted while the backup ran"
                    };
                    self.skip(&id, reason.into());
                    return Ok(());
                }
                Err(Error::Archived(_)) => {
                    self.skip(&id, "archived: its blob is in cold storage".into());
                    return Ok(());
                }
                Err(e) => return Err(e),
            };
            let json = match self.storage.codec.decode(&stored, &record.blob) {
                Ok(j) => j,
                Err(Error::Integrity(m)) => {
                    self.skip(&id, format!("integrity: {m}"));
                    return Ok(());
                }
                Err(e) => return Err(e),
            };
            let encoded = format::pool_encode(&json)?;
            let sha = crate::blob::codec::sha256_hex(&encoded);
            self.state.size += encoded.len() as u64;
            backup_store.put(&pool, Bytes::from(encoded), &sha).await?;
            self.state.counts.blobs_copied += 1;
        }
        self.write(
            EntityKind::Program,
            Line {
                item,
                blob: Some(blob),
            },
        )
        .await
    }

    /// A signature head with its version claims, each kept only if its program is in the
    /// backup; the head is rewritten when its latest, aliases or count disagree with them.
    async fn head(&mut self, item: Item) -> Result<()> {
        let mut head: SignatureHead = match from_item(&item) {
            Ok(h) => h,
            Err(_) => {
                return self
                    .write(EntityKind::Other, Line { item, blob: None })
                    .await
            }
        };
        let mut count = 0u64;
        let mut latest: Option<VersionClaim> = None;
        let mut best: Option<f64> = None;
        let mut start = None;
        loop {
            let page = self
                .storage
                .items()
                .query(
                    &Query::new(Index::Table, item.pk.clone())
                        .sk(SkRange::BeginsWith(keys::VER_PREFIX.into()))
                        .limit(500)
                        .start(start.take()),
                )
                .await?;
            for claim_item in page.items {
                let claim: VersionClaim = from_item(&claim_item)?;
                if !self.has(&claim.id.to_string()) {
                    continue;
                }
                count += 1;
                best = crate::storage::max_score(best, claim.performance);
                if latest.as_ref().is_none_or(|l| claim.version > l.version) {
                    latest = Some(claim.clone());
                }
                self.write(
                    EntityKind::VersionClaim,
                    Line {
                        item: claim_item,
                        blob: None,
                    },
                )
                .await?;
            }
            match page.next {
                Some(n) => start = Some(n),
                None => break,
            }
        }
        let Some(latest) = latest else {
            self.state.counts.adjusted_heads += 1;
            return Ok(());
        };
        let consistent = head.latest_id == latest.id
            && head.latest_version == latest.version
            && head.versions == count
            && head.aliases.values().all(|a| self.has(&a.id.to_string()));
        if consistent {
            return self
                .write(EntityKind::SignatureHead, Line { item, blob: None })
                .await;
        }
        head.latest_id = latest.id;
        head.latest_version = latest.version;
        head.versions = count;
        head.best_performance = best;
        let ids: Vec<u128> = self.ids.clone();
        head.aliases.retain(|_, a| {
            uuid_of(&a.id.to_string()).is_some_and(|u| ids.binary_search(&u).is_ok())
        });
        self.state.counts.adjusted_heads += 1;
        self.write(
            EntityKind::SignatureHead,
            Line {
                item: head.to_item(),
                blob: None,
            },
        )
        .await
    }

    async fn roll_full_parts(&mut self) -> Result<()> {
        let full: Vec<EntityKind> = self
            .writers
            .iter()
            .filter(|(_, w)| w.records() >= self.options.part_max_records)
            .map(|(k, _)| *k)
            .collect();
        for kind in full {
            let w = self.writers.remove(&kind).expect("present");
            self.finish_writer(w).await?;
        }
        Ok(())
    }

    async fn finish_parts(&mut self) -> Result<()> {
        for (_, w) in std::mem::take(&mut self.writers) {
            self.finish_writer(w).await?;
        }
        Ok(())
    }

    async fn finish_writer(&mut self, w: PartWriter) -> Result<()> {
        let info = w.finish(self.location.store.as_ref()).await?;
        self.state.size += info.bytes;
        self.state.parts.push(info);
        Ok(())
    }

    async fn finish(&mut self) -> Result<Manifest> {
        let mut parts = self.state.parts.clone();
        parts.sort_by_key(|p| (restore_rank(p.kind), p.key.clone()));
        let manifest = Manifest {
            format_version: FORMAT_VERSION,
            backup_id: self.state.backup_id.clone(),
            name: self.state.name.clone(),
            created_at: self.state.created_at,
            finished_at: crate::domain::now(),
            tool_version: env!("CARGO_PKG_VERSION").into(),
            source: self.state.source.clone(),
            counts: self.state.counts.clone(),
            size: self.state.size,
            blob_prefix: self.location.blob_prefix.clone(),
            parts,
            skipped: self.state.skipped.clone(),
        };
        let store = self.location.store.as_ref();
        put_json(store, &format!("{}manifest.json", self.folder), &manifest).await?;
        store
            .delete(&format!("{}checkpoint.json", self.folder))
            .await?;
        Ok(manifest)
    }
}

/// Keeps the newest `retain` complete backups: older ones are removed (manifest first, so a
/// half-removed backup is never taken for a complete one), then every pool blob that no
/// remaining backup (complete or in progress) references.
pub(crate) async fn prune(location: &BackupLocation, retain: usize) -> Result<Vec<String>> {
    let all = backups_in(location).await?;
    let complete: Vec<&BackupEntry> = all.iter().filter(|e| e.status == "complete").collect();
    let removed: Vec<String> = complete
        .iter()
        .skip(retain)
        .map(|e| e.backup_name.clone())
        .collect();
    if removed.is_empty() {
        return Ok(removed);
    }
    let store = location.store.as_ref();
    for name in &removed {
        let folder = location.folder(name);
        store.delete(&format!("{folder}manifest.json")).await?;
        let mut start = None;
        loop {
            let (metas, next) = store.list(&folder, start.take(), 1000).await?;
            for m in metas {
                store.delete(&m.key).await?;
            }
            match next {
                Some(n) => start = Some(n),
                None => break,
            }
        }
    }
    // Blobs still referenced: by the kept complete backups and by unfinished ones.
    let mut referenced: HashSet<String> = HashSet::new();
    for entry in all.iter().filter(|e| !removed.contains(&e.backup_name)) {
        let folder = location.folder(&entry.backup_name);
        let parts = if entry.status == "complete" {
            manifest_of(location, &entry.backup_name).await?.parts
        } else {
            match get_json::<Checkpoint>(store, &format!("{folder}checkpoint.json")).await? {
                Some(c) => c.parts,
                None => continue,
            }
        };
        for part in parts.iter().filter(|p| p.kind == EntityKind::Program) {
            let bytes = format::read_part(store, &folder, part).await?;
            for line in format::lines(part, bytes)? {
                if let Some(b) = line?.blob {
                    referenced.insert(b.sha256);
                }
            }
        }
    }
    let mut start = None;
    loop {
        let (metas, next) = store
            .list(&location.blob_prefix, start.take(), 1000)
            .await?;
        for m in metas {
            let sha = m.key[location.blob_prefix.len()..].trim_end_matches(".json.zst");
            if !referenced.contains(sha) {
                store.delete(&m.key).await?;
            }
        }
        match next {
            Some(n) => start = Some(n),
            None => break,
        }
    }
    Ok(removed)
}
