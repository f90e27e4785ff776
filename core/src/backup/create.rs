//! A backup run: the two scan passes, the part writers, checkpoints between slices, the
//! manifest (see the module doc of [`super`]).

use crate::access::Principal;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Instant;

use bytes::Bytes;
use chrono::Utc;
use serde_json::json;

use crate::backend::Item;
use crate::domain::{ProgramId, Version};
use crate::error::{Error, Result};
use crate::model::keys::{self, EntityKind};
use crate::model::record::{from_item, BlobPointer, ProgramRecord, SignatureHead};
use crate::storage::Storage;

use super::format;
use super::format::{BlobRef, Counts, Line, Manifest, PartWriter, Skipped, FORMAT_VERSION};
use super::lease::{Job, Lease};
use super::{
    backup_names, get_json, prune, put_json, BackupLocation, Checkpoint, Progress, ProgressFn,
    DEFAULT_RETAIN,
};

const MAX_SKIPPED_LISTED: usize = 100;

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

/// The order parts are restored in: programs before what points at them, heads last.
fn restore_rank(kind: EntityKind) -> u8 {
    match kind {
        EntityKind::Program => 0,
        EntityKind::VersionClaim => 1,
        EntityKind::Tag => 2,
        EntityKind::Metric => 3,
        EntityKind::OptimizationRun => 4,
        EntityKind::Other | EntityKind::AliasPolicy | EntityKind::AliasHistory => 5,
        EntityKind::SignatureHead => 6,
        EntityKind::Idempotency
        | EntityKind::Status
        | EntityKind::Counter
        | EntityKind::TextIndex => 7,
    }
}

fn uuid_of(text: &str) -> Option<u128> {
    uuid::Uuid::parse_str(text).ok().map(|u| u.as_u128())
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

/// The name of an unfinished backup, if any (the oldest): one listing, and a checkpoint read
/// per unfinished backup only.
async fn unfinished_backup(location: &BackupLocation) -> Result<Option<String>> {
    let (_, unfinished) = backup_names(location).await?;
    let mut oldest: Option<(chrono::DateTime<Utc>, String)> = None;
    for name in unfinished {
        let key = format!("{}checkpoint.json", location.folder(&name));
        if let Some(c) = get_json::<Checkpoint>(location.store.as_ref(), &key).await? {
            if oldest.as_ref().is_none_or(|(t, _)| c.created_at < *t) {
                oldest = Some((c.created_at, name));
            }
        }
    }
    Ok(oldest.map(|(_, name)| name))
}

struct Run<'a> {
    storage: &'a Storage,
    location: &'a BackupLocation,
    options: &'a BackupOptions,
    folder: String,
    state: Checkpoint,
    writers: BTreeMap<EntityKind, PartWriter>,
    /// Pass 1: the SHA-256 of every blob in the pool (listed once per run, 1,000 keys a
    /// request, 32 bytes each), instead of asking for each program's blob.
    pool: Option<HashSet<[u8; 32]>>,
    /// Pass 2: ids of the programs in the backup, sorted.
    ids: Vec<u128>,
    /// Pass 2: per signature (its `SIG#` key), what the backup holds of it: the head is checked
    /// against this, with no read per signature.
    signatures: HashMap<String, Held>,
    done: u64,
}

/// What a backup holds of one signature: its programs' count, highest version and best score.
#[derive(Debug, Default)]
struct Held {
    count: u64,
    latest: Option<(Version, ProgramId, BlobPointer)>,
    best: Option<f64>,
}

impl Held {
    fn add(&mut self, record: &ProgramRecord) {
        self.count += 1;
        self.best = crate::storage::max_score(self.best, record.primary_score);
        if self
            .latest
            .as_ref()
            .is_none_or(|(v, _, _)| record.version > *v)
        {
            self.latest = Some((record.version.clone(), record.id, record.blob_pointer()));
        }
    }
}

/// The SHA-256 a pool key names (`<prefix><hex>.json.zst`).
fn pool_sha(blob_prefix: &str, key: &str) -> Option<[u8; 32]> {
    let hex_text = key.strip_prefix(blob_prefix)?.strip_suffix(".json.zst")?;
    let mut sha = [0u8; 32];
    hex::decode_to_slice(hex_text, &mut sha).ok()?;
    Some(sha)
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
        pool: None,
        ids: Vec::new(),
        signatures: HashMap::new(),
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

    /// Lists the blob pool once (`pool`): a program whose blob is there is not copied again.
    async fn load_pool(&mut self) -> Result<()> {
        let prefix = &self.location.blob_prefix;
        let mut pool = HashSet::new();
        let mut start = None;
        loop {
            let (metas, next) = self.location.store.list(prefix, start.take(), 1000).await?;
            pool.extend(metas.iter().filter_map(|m| pool_sha(prefix, &m.key)));
            match next {
                Some(n) => start = Some(n),
                None => break,
            }
        }
        self.pool = Some(pool);
        Ok(())
    }

    /// Rebuilds the sorted ids of the programs in the backup, and what it holds of each
    /// signature, from its program parts.
    async fn load_ids(&mut self) -> Result<()> {
        let mut ids = Vec::with_capacity(self.state.counts.programs as usize);
        let mut signatures: HashMap<String, Held> = HashMap::new();
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
                    let record: ProgramRecord = from_item(&line.item)?;
                    signatures
                        .entry(record.signature_pk())
                        .or_default()
                        .add(&record);
                }
            }
        }
        ids.sort_unstable();
        ids.dedup();
        self.ids = ids;
        self.signatures = signatures;
        Ok(())
    }

    fn has(&self, id: &str) -> bool {
        uuid_of(id).is_some_and(|u| self.ids.binary_search(&u).is_ok())
    }

    async fn item(&mut self, item: Item) -> Result<()> {
        let kind = keys::entity_kind(&item.pk, &item.sk);
        match (self.state.pass, kind) {
            (1, EntityKind::Program) => self.program(item).await,
            (
                1,
                EntityKind::Metric
                | EntityKind::OptimizationRun
                | EntityKind::Other
                | EntityKind::AliasPolicy
                | EntityKind::AliasHistory,
            ) => self.write(kind, Line { item, blob: None }).await,
            (2, EntityKind::SignatureHead) => self.head(item).await,
            (2, EntityKind::VersionClaim) => {
                if item.get("id").is_some_and(|id| self.has(id)) {
                    self.write(kind, Line { item, blob: None }).await?;
                }
                Ok(())
            }
            (2, EntityKind::Tag) => {
                if item.get("id").is_some_and(|id| self.has(id)) {
                    self.write(kind, Line { item, blob: None }).await?;
                }
                Ok(())
            }
            // Idempotency, status, counter and text index items are not backed up.
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
        if self.pool.is_none() {
            self.load_pool().await?;
        }
        let mut sha = [0u8; 32];
        let pooled = hex::decode_to_slice(&blob.sha256, &mut sha).is_ok()
            && self.pool.as_ref().is_some_and(|p| p.contains(&sha));
        let backup_store = self.location.store.as_ref();
        if !pooled {
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
            if let (Some(p), Some(s)) = (
                self.pool.as_mut(),
                pool_sha(&self.location.blob_prefix, &pool),
            ) {
                p.insert(s);
            }
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

    /// A signature head, checked against what the backup holds of its signature (no read): it
    /// is kept as it is when its latest, count and aliases agree with the programs in the
    /// backup, and rewritten from them otherwise (a program stored, deleted or left out while
    /// the backup ran). A signature with no program in the backup has no head there.
    async fn head(&mut self, item: Item) -> Result<()> {
        let mut head: SignatureHead = match from_item(&item) {
            Ok(h) => h,
            Err(_) => {
                return self
                    .write(EntityKind::Other, Line { item, blob: None })
                    .await
            }
        };
        let Some((count, best, (version, id, blob))) = self
            .signatures
            .get(&item.pk)
            .and_then(|h| h.latest.clone().map(|l| (h.count, h.best, l)))
        else {
            self.state.counts.adjusted_heads += 1;
            return Ok(());
        };
        let consistent = head.latest_id == id
            && head.latest_version == version
            && head.versions == count
            && head.aliases.values().all(|a| self.has(&a.id.to_string()));
        if consistent {
            return self
                .write(EntityKind::SignatureHead, Line { item, blob: None })
                .await;
        }
        head.latest_id = id;
        head.latest_version = version;
        head.latest_blob = Some(blob);
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
