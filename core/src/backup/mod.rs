//! Backup and restore, written once over [`ItemStore`](crate::backend::ItemStore) and
//! [`BlobStore`]: consistent, incremental, verified, streaming (see [`format`] for the layout).
//!
//! **Backup** reads the table with a paged scan, twice:
//! 1. programs, metric records, optimization runs and every item of a kind it does not know
//!    ([`EntityKind::Other`]) — each program with its JSON copied into the content-addressed
//!    blob pool unless an earlier backup holds it (incremental). A program whose blob cannot be
//!    read (deleted meanwhile, archived, corrupted) is left out and listed in `skipped`: a
//!    program is in a backup with its blob and metadata or not at all.
//! 2. signature heads (latest, aliases), version claims and tag entries — each kept only when it
//!    points at a program of pass 1. A head is checked against the backup's programs of its
//!    signature (count, highest version, best score: summarised from the program parts, no read
//!    per signature); one whose latest, count or aliases disagree (a program stored or deleted
//!    while the backup ran) is rewritten from them.
//!
//! What the blob pool holds comes from one listing of it per run (not a request per blob).
//!
//! Idempotency records (a cache that expires) and `STATUS` items (this deployment's job status)
//! are not backed up. Memory: one scan page, one open part writer per kind (a zstd stream and at
//! most one multipart chunk), the pool's inventory (32 bytes per pooled blob), and in pass 2 the
//! sorted ids of the programs in the backup (16 bytes per program) and a summary per signature.
//! Past a deadline the backup stops at a page boundary, writes a checkpoint
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

mod create;
pub mod format;
mod lease;
mod restore;

use crate::access::Principal;
use std::collections::HashSet;
use std::sync::Arc;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::backend::{BlobStore, PageKey};
use crate::error::{Error, Result};
use crate::model::keys::EntityKind;

pub use create::{create_backup, BackupOptions, BackupRun};
pub use format::{Counts, Manifest, PartInfo, Skipped, FORMAT_VERSION};
pub(crate) use lease::{Job, Lease};
pub use restore::{restore, RestoreOptions, RestoreReport};

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
    /// `--backup-bucket`), with a client built from `sdk`.
    pub fn s3_bucket(sdk: &aws_config::SdkConfig, bucket: &str) -> Self {
        use crate::backend::aws::{s3_client, S3BlobStore};
        let s3 = s3_client(sdk, None);
        Self::new(Arc::new(S3BlobStore::new(s3, bucket)))
    }

    /// The same layout in a local directory (export / import; cargo feature `embedded`).
    #[cfg(feature = "embedded")]
    pub fn directory(path: &std::path::Path) -> Result<Self> {
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

/// The names of the complete backups (those with a manifest) and of the unfinished ones (a
/// checkpoint and no manifest), from listings alone: one request per 1,000 keys of the backups'
/// folders, no manifest read.
pub(crate) async fn backup_names(location: &BackupLocation) -> Result<(Vec<String>, Vec<String>)> {
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
    unfinished.retain(|n| !complete.contains(n));
    Ok((complete, unfinished))
}

async fn backups_in(location: &BackupLocation) -> Result<Vec<BackupEntry>> {
    let (complete, unfinished) = backup_names(location).await?;
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

/// Keeps the newest `retain` complete backups: older ones are removed (manifest first, so a
/// half-removed backup is never taken for a complete one), then every pool blob that no
/// remaining backup (complete or in progress) references.
pub(crate) async fn prune(location: &BackupLocation, retain: usize) -> Result<Vec<String>> {
    // Nothing to remove: known from the listing alone (no manifest read).
    if backup_names(location).await?.0.len() <= retain {
        return Ok(Vec::new());
    }
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
