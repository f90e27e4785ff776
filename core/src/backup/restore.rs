//! Restore: verify everything, then write each program whole (record, claim, tags, counters and
//! head in one transaction), so no cut leaves a partial program or a dangling pointer.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::time::Instant;

use bytes::Bytes;
use serde::Serialize;

use super::format::{self, BlobRef, Line, Manifest, PartInfo};
use super::{manifest_of, BackupLocation, Job, Lease, Progress, ProgressFn, FORMAT_VERSION};
use crate::backend::{attr, Condition, Index, Item, Query, SkRange, WriteOp};
use crate::blob::codec::Codec;
use crate::domain::ProgramId;
use crate::error::{Error, Result};
use crate::model::keys::{self, EntityKind};
use crate::model::policy::{HistoryAction, HistoryEntry};
use crate::model::record::rev_of;
use crate::model::record::{from_item, ProgramRecord, SignatureHead, VersionClaim};
use crate::storage::{max_score, Storage};

/// How a restore runs.
#[derive(Clone)]
pub struct RestoreOptions {
    /// Refuse a manifest whose format version this build cannot read (default on).
    pub verify_compatibility: bool,
    pub progress: Option<ProgressFn>,
}

impl Default for RestoreOptions {
    fn default() -> Self {
        RestoreOptions {
            verify_compatibility: true,
            progress: None,
        }
    }
}

/// What a restore did. Counts are of records written by this run: restoring the same backup
/// again reports `restored_programs: 0` and `already_present_programs` for all of them.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RestoreReport {
    pub backup_name: String,
    pub restored_programs: u64,
    pub already_present_programs: u64,
    pub restored_metrics: u64,
    pub restored_version_claims: u64,
    pub restored_signature_heads: u64,
    /// Heads of signatures that also exist in the target, merged (live aliases win).
    pub merged_signature_heads: u64,
    pub restored_tags: u64,
    pub restored_optimization_runs: u64,
    pub restored_other: u64,
    /// Alias policies the target had none of for their alias (a live policy is never replaced).
    pub restored_alias_policies: u64,
    /// Alias history entries written (an entry the target has is written again unchanged).
    pub restored_alias_history: u64,
    /// Protected aliases the restore set (each recorded in the alias's history as `restore`).
    pub restored_protected_aliases: u64,
    /// Versions the target already has for another program: the target's is kept and the
    /// backup's program is not restored.
    pub conflicts: u64,
    /// Seconds.
    pub restore_time: f64,
}

const BATCH: usize = 25;
const PROGRAM_BATCH: usize = 500;

struct Restorer<'a> {
    storage: &'a Storage,
    location: &'a BackupLocation,
    manifest: &'a Manifest,
    lease: &'a mut Lease,
    /// The target's encryption with each program's own compression: same-config restores
    /// reproduce every record byte-for-byte.
    report: RestoreReport,
    /// The backup's signature heads (item and record), read by the verification: each head is
    /// written with the programs it covers.
    heads: HashMap<String, (Item, SignatureHead)>,
    /// Ids of the backup's programs.
    program_ids: HashSet<ProgramId>,
    /// Heads this run created, and live heads it changed (each counted once).
    created_heads: HashSet<String>,
    merged_heads: HashSet<String>,
    progress: Option<ProgressFn>,
    total: u64,
    done: u64,
    /// The principal running the restore (recorded in the history of each alias it sets).
    by: String,
    /// Aliases the target's policies protect (`APOL#…` key, alias), read with the batch reads
    /// the restore makes anyway (after the backup's policies were restored).
    protected: HashSet<(String, String)>,
}

/// Restores a backup into `storage` (empty or live). Everything is verified before the first
/// write; see the module documentation for the order and the merge rules.
pub async fn restore(
    who: &crate::access::Principal,
    storage: &Storage,
    location: &BackupLocation,
    name: &str,
    options: &RestoreOptions,
) -> Result<RestoreReport> {
    who.whole_store("a restore")?;
    let started = Instant::now();
    let manifest = manifest_of(location, name).await?;
    if options.verify_compatibility {
        manifest.check_compatible()?;
    } else if manifest.format_version != FORMAT_VERSION {
        tracing::warn!(
            format_version = manifest.format_version,
            "restoring a backup of another format version without verify_compatibility"
        );
    }
    // One restore at a time: two at once would race on the same programs' blobs (each
    // re-encoded with its own data key when the target encrypts).
    let mut lease = Lease::acquire(storage, Job::Restore).await?;
    let result = run(storage, location, &manifest, options, &mut lease, &who.id).await;
    lease.release(storage).await;
    let mut report = result?;
    report.restore_time = started.elapsed().as_secs_f64();
    storage
        .emit(vec![crate::events::Event::new(
            crate::events::EventType::BackupRestored,
            serde_json::to_value(&report).expect("serializable"),
        )])
        .await;
    Ok(report)
}

async fn run(
    storage: &Storage,
    location: &BackupLocation,
    manifest: &Manifest,
    options: &RestoreOptions,
    lease: &mut Lease,
    by: &str,
) -> Result<RestoreReport> {
    let total: u64 = manifest.parts.iter().map(|p| p.records).sum();
    let mut r = Restorer {
        storage,
        location,
        manifest,
        lease,
        report: RestoreReport {
            backup_name: manifest.name.clone(),
            ..Default::default()
        },
        heads: HashMap::new(),
        program_ids: HashSet::new(),
        created_heads: HashSet::new(),
        merged_heads: HashSet::new(),
        progress: options.progress.clone(),
        total,
        done: 0,
        by: by.to_owned(),
        protected: HashSet::new(),
    };
    r.verify().await?;
    r.done = 0;
    // Items that nothing shows without their program (metric records, runs, other kinds) come
    // first; then the programs, each with its claim, tags and head in one transaction; then the
    // backup's aliases over programs the target already had.
    let (first, rest): (Vec<&PartInfo>, Vec<&PartInfo>) = manifest.parts.iter().partition(|p| {
        matches!(
            p.kind,
            EntityKind::Metric
                | EntityKind::OptimizationRun
                | EntityKind::Other
                | EntityKind::AliasPolicy
                | EntityKind::AliasHistory
        )
    });
    for part in first.into_iter().chain(rest) {
        r.write_part(part).await?;
    }
    r.aliases().await?;
    Ok(r.report)
}

impl Restorer<'_> {
    fn folder(&self) -> String {
        self.location.folder(&self.manifest.name)
    }

    fn tick(&mut self, phase: &'static str) {
        self.done += 1;
        if let Some(p) = &self.progress {
            if self.done.is_multiple_of(50) || self.done == self.total {
                p(Progress {
                    phase,
                    done: self.done,
                    total: Some(self.total),
                });
            }
        }
    }

    async fn pool_blob(&self, blob: &BlobRef) -> Result<Vec<u8>> {
        let key = format::pool_key(&self.manifest.blob_prefix, &blob.sha256);
        let bytes = match self.location.store.get(&key).await {
            Ok(b) => b,
            Err(Error::NotFound(_)) => {
                return Err(Error::Integrity(format!(
                    "backup blob {} is missing",
                    blob.sha256
                )))
            }
            Err(e) => return Err(e),
        };
        format::pool_decode(&bytes, blob)
    }

    /// Every part's checksum, every line, every program blob's checksum.
    async fn verify(&mut self) -> Result<()> {
        let folder = self.folder();
        for part in &self.manifest.parts {
            let bytes = format::read_part(self.location.store.as_ref(), &folder, part).await?;
            let mut n = 0u64;
            for line in format::lines(part, bytes)? {
                let line = line?;
                n += 1;
                let kind = keys::entity_kind(&line.item.pk, &line.item.sk);
                if kind != part.kind && part.kind != EntityKind::Other {
                    return Err(Error::Integrity(format!(
                        "backup part {} holds an item of another kind ({}/{})",
                        part.key, line.item.pk, line.item.sk
                    )));
                }
                if part.kind == EntityKind::Program {
                    let blob = line.blob.as_ref().ok_or_else(|| {
                        Error::Integrity(format!("program {} has no blob", line.item.pk))
                    })?;
                    let record: ProgramRecord = from_item(&line.item)
                        .map_err(|e| Error::Integrity(format!("backup record: {e}")))?;
                    if record.blob.sha256 != blob.sha256 || record.blob.size != blob.size {
                        return Err(Error::Integrity(format!(
                            "program {} does not match its blob reference",
                            record.id
                        )));
                    }
                    self.pool_blob(blob).await?;
                    self.program_ids.insert(record.id);
                }
                if kind == EntityKind::SignatureHead {
                    let head: SignatureHead = from_item(&line.item)
                        .map_err(|e| Error::Integrity(format!("backup head: {e}")))?;
                    self.heads.insert(line.item.pk.clone(), (line.item, head));
                }
                self.tick("verify");
                self.lease.renew(self.storage).await?;
            }
            if n != part.records {
                return Err(Error::Integrity(format!(
                    "backup part {} has {n} records, the manifest says {}",
                    part.key, part.records
                )));
            }
        }
        Ok(())
    }

    async fn write_part(&mut self, part: &PartInfo) -> Result<()> {
        if matches!(
            part.kind,
            EntityKind::VersionClaim | EntityKind::Tag | EntityKind::SignatureHead
        ) {
            // Written with their programs (claims and tags derived from each record, heads from
            // the preloaded backup heads), never on their own.
            for _ in 0..part.records {
                self.tick("restore");
            }
            return Ok(());
        }
        let folder = self.folder();
        let bytes = format::read_part(self.location.store.as_ref(), &folder, part).await?;
        // Programs are grouped by signature within a batch: a larger one means fewer, fuller
        // transactions (the records are small; blobs are not kept).
        let size = if part.kind == EntityKind::Program {
            PROGRAM_BATCH
        } else {
            BATCH
        };
        let mut batch: Vec<Line> = Vec::with_capacity(size);
        for line in format::lines(part, bytes)? {
            let line = line?;
            if matches!(
                keys::entity_kind(&line.item.pk, &line.item.sk),
                EntityKind::Status
                    | EntityKind::Idempotency
                    | EntityKind::Counter
                    | EntityKind::TextIndex
            ) {
                continue;
            }
            batch.push(line);
            if batch.len() == size {
                self.write_batch(part.kind, std::mem::take(&mut batch))
                    .await?;
            }
        }
        if !batch.is_empty() {
            self.write_batch(part.kind, batch).await?;
        }
        Ok(())
    }

    async fn write_batch(&mut self, kind: EntityKind, lines: Vec<Line>) -> Result<()> {
        self.lease.renew(self.storage).await?;
        let n = lines.len();
        match kind {
            EntityKind::Program => self.programs(lines).await?,
            EntityKind::AliasPolicy => {
                // A live policy wins: the backup's is written only where the target has none.
                for line in lines {
                    let op = WriteOp::put(line.item, Condition::NotExists);
                    match self.storage.items().transact(vec![op]).await {
                        Ok(()) => self.report.restored_alias_policies += 1,
                        Err(Error::ConditionFailed { .. }) => {}
                        Err(e) => return Err(e),
                    }
                }
            }
            EntityKind::Metric
            | EntityKind::OptimizationRun
            | EntityKind::Other
            | EntityKind::AliasHistory => {
                let count = lines.len() as u64;
                match kind {
                    EntityKind::Metric => self.report.restored_metrics += count,
                    EntityKind::OptimizationRun => self.report.restored_optimization_runs += count,
                    EntityKind::AliasHistory => self.report.restored_alias_history += count,
                    _ => self.report.restored_other += count,
                }
                let items: Vec<_> = lines.into_iter().map(|l| l.item).collect();
                // Metric records of the per-record layout (a backup from before blocks) are
                // written as blocks (named after their records: restoring twice writes the same).
                let items = if kind == EntityKind::Metric {
                    crate::tracking::migrate::convert(items)?.0
                } else {
                    items
                };
                self.storage.items().batch_put(items).await?;
            }
            EntityKind::VersionClaim
            | EntityKind::Tag
            | EntityKind::SignatureHead
            | EntityKind::Idempotency
            | EntityKind::Status
            | EntityKind::Counter
            | EntityKind::TextIndex => {}
        }
        for _ in 0..n {
            self.tick("restore");
        }
        Ok(())
    }

    /// Programs absent from the target: blob (re-encoded for the target), then, per signature,
    /// one transaction with the records, their version claims and tag entries, the report's
    /// counters and the signature head.
    async fn programs(&mut self, lines: Vec<Line>) -> Result<()> {
        let items = self.storage.items().clone();
        // What the target already has of these programs (record, version claim) and each
        // signature's head: batch reads of 100 keys, not reads one by one.
        let mut wanted: BTreeSet<(String, String)> = BTreeSet::new();
        let mut parsed = Vec::with_capacity(lines.len());
        for line in lines {
            let record: ProgramRecord = from_item(&line.item)?;
            let sig_pk = record.signature_pk();
            wanted.insert((line.item.pk.clone(), keys::PROG_SK.to_owned()));
            wanted.insert((sig_pk.clone(), keys::version_sk(&record.version)));
            wanted.insert((sig_pk.clone(), keys::HEAD_SK.to_owned()));
            // The policies of the aliases the backup's head may set (in the same batch reads).
            if let Some((_, backup_head)) = self.heads.get(&sig_pk) {
                for name in backup_head.aliases.keys() {
                    wanted.insert((
                        keys::alias_policies_pk(&record.project, &record.signature),
                        name.clone(),
                    ));
                }
            }
            parsed.push((line, record));
        }
        let wanted: Vec<(String, String)> = wanted.into_iter().collect();
        let mut found: HashMap<(String, String), Item> = HashMap::new();
        for batch in wanted.chunks(100) {
            for (key, item) in batch.iter().zip(items.get_many(batch).await?) {
                if let Some(item) = item {
                    found.insert(key.clone(), item);
                }
            }
        }
        self.note_policies(found.values())?;
        let mut heads: HashMap<String, Option<SignatureHead>> = HashMap::new();
        for (pk, sk) in &wanted {
            if sk == keys::HEAD_SK {
                let head = found
                    .get(&(pk.clone(), sk.clone()))
                    .map(from_item::<SignatureHead>)
                    .transpose()?;
                heads.insert(pk.clone(), head);
            }
        }
        let mut by_signature: BTreeMap<String, Vec<Pending>> = BTreeMap::new();
        for (line, mut record) in parsed {
            let mut item = line.item;
            if found.contains_key(&(item.pk.clone(), keys::PROG_SK.to_owned())) {
                self.report.already_present_programs += 1;
                continue;
            }
            // A version the target already has for another program: keep the target's.
            if let Some(claim) =
                found.get(&(record.signature_pk(), keys::version_sk(&record.version)))
            {
                if from_item::<VersionClaim>(claim)?.id != record.id {
                    self.report.conflicts += 1;
                    continue;
                }
            }
            let blob = line.blob.expect("verified");
            let json = self.pool_blob(&blob).await?;
            let codec = Codec {
                compression: record.blob.compression,
                keyring: self.storage.codec.keyring.clone(),
                encrypt: self.storage.codec.encrypt,
            };
            let (stored, info) = codec.encode(&json)?;
            if info != record.blob {
                let mut data: serde_json::Map<String, serde_json::Value> =
                    serde_json::from_str(item.data().unwrap_or("{}"))
                        .map_err(|e| Error::Internal(format!("record: {e}")))?;
                data.insert(
                    "blob".into(),
                    serde_json::to_value(&info).expect("serializable"),
                );
                item.attrs.insert(
                    attr::DATA.into(),
                    serde_json::Value::Object(data).to_string(),
                );
                record.blob = info.clone();
            }
            self.storage
                .blobs()
                .put(&record.blob_key, Bytes::from(stored), &info.stored_sha256)
                .await?;
            by_signature
                .entry(record.signature_pk())
                .or_default()
                .push(Pending { item, record });
        }
        for (pk, pending) in by_signature {
            // The head read above serves the signature's first transaction.
            let mut head = heads.remove(&pk);
            // Chunks that fit one transaction (records, claims, tags, one counter, one head).
            // Room for one history entry per protected alias the backup's head may set (only
            // protected aliases get an entry: see `alias_entries`).
            let reserved = 2 + self
                .heads
                .get(&pk)
                .map_or(0, |(_, h)| self.protected_aliases(h).count());
            let mut chunk: Vec<Pending> = Vec::new();
            let mut size = reserved;
            for p in pending {
                let n = 2 + p.record.tags.len();
                if !chunk.is_empty() && size + n > MAX_TRANSACTION_OPS {
                    self.commit(&pk, std::mem::take(&mut chunk), head.take())
                        .await?;
                    size = reserved;
                }
                size += n;
                chunk.push(p);
            }
            if !chunk.is_empty() {
                self.commit(&pk, chunk, head.take()).await?;
            }
        }
        Ok(())
    }

    /// Writes programs of one signature in one transaction (after their text index entries):
    /// each record with its version claim and tag entries (a program is never visible by id
    /// without being listed, nor listed without its record), the counters they add, and the
    /// head moved over them. A record that
    /// appeared meanwhile is left alone; a version taken meanwhile by another program is a
    /// conflict; a head changed meanwhile is read again.
    /// `head`: the signature's head as just read, for the first attempt (later ones read it).
    async fn commit(
        &mut self,
        pk: &str,
        mut chunk: Vec<Pending>,
        mut head: Option<Option<SignatureHead>>,
    ) -> Result<()> {
        let items = self.storage.items().clone();
        // The text index entries first (derived from the records; a program must never be
        // listed without them). Entries of a program that then turns out present are the same.
        let entries: Vec<Item> = chunk
            .iter()
            .flat_map(|p| crate::model::text::index_items(&p.record))
            .collect();
        crate::backend::put_all(items.as_ref(), entries).await?;
        for attempt in 1..=100u32 {
            if chunk.is_empty() {
                return Ok(());
            }
            let live = match head.take() {
                Some(live) => live,
                None => match items.get(pk, keys::HEAD_SK).await? {
                    Some(item) => Some(from_item::<SignatureHead>(&item)?),
                    None => None,
                },
            };
            let (head_item, head_condition) = self.next_head(pk, live.as_ref(), &chunk).await?;
            let mut ops = Vec::new();
            // Which program each op belongs to, and whether it is its record or its claim.
            let mut owner: Vec<Option<(usize, bool)>> = Vec::new();
            for (i, p) in chunk.iter().enumerate() {
                ops.push(WriteOp::put(p.item.clone(), Condition::NotExists));
                owner.push(Some((i, true)));
                ops.push(WriteOp::put(
                    p.record
                        .version_claim()
                        .to_item(&p.record.project, &p.record.signature),
                    Condition::NotExists,
                ));
                owner.push(Some((i, false)));
                for tag in p.record.tag_items() {
                    ops.push(WriteOp::put(tag, Condition::None));
                    owner.push(None);
                }
            }
            ops.extend(counter_ops(&chunk));
            let set = self.alias_entries(live.as_ref(), &from_item(&head_item)?);
            let aliases_set = set.len() as u64;
            ops.extend(set);
            ops.push(WriteOp::put(head_item, head_condition));
            owner.resize(ops.len(), None);
            match items.transact(ops).await {
                Ok(()) => {
                    let n = chunk.len() as u64;
                    self.report.restored_protected_aliases += aliases_set;
                    self.report.restored_programs += n;
                    self.report.restored_version_claims += n;
                    self.report.restored_tags += chunk
                        .iter()
                        .map(|p| p.record.tags.len() as u64)
                        .sum::<u64>();
                    if live.is_none() {
                        self.report.restored_signature_heads += 1;
                        self.created_heads.insert(pk.to_owned());
                    } else if !self.created_heads.contains(pk)
                        && self.merged_heads.insert(pk.to_owned())
                    {
                        self.report.merged_signature_heads += 1;
                    }
                    self.storage.resolved.invalidate(pk);
                    return Ok(());
                }
                Err(Error::ConditionFailed { ops }) => {
                    // Programs whose record or claim is now taken drop out; otherwise the
                    // head moved: read it again.
                    let mut gone: Vec<(usize, bool)> = ops
                        .iter()
                        .filter_map(|&o| owner.get(o).copied().flatten())
                        .collect();
                    if gone.is_empty() {
                        gone = self.taken(&chunk).await?;
                    }
                    if gone.is_empty() {
                        crate::retry::backoff(attempt).await;
                        continue;
                    }
                    // A program whose record is there is already present (not a conflict).
                    gone.sort_unstable_by_key(|&(i, record)| (i, !record));
                    gone.dedup_by_key(|g| g.0);
                    for &(i, record) in gone.iter().rev() {
                        chunk.remove(i);
                        if record {
                            self.report.already_present_programs += 1;
                        } else {
                            self.report.conflicts += 1;
                        }
                    }
                }
                // A lost answer: the conditions tell on the next attempt.
                Err(Error::Unavailable(_)) => crate::retry::backoff(attempt).await,
                Err(e) => return Err(e),
            }
        }
        Err(Error::Unavailable(format!(
            "signature head {pk} kept changing; restore gave up"
        )))
    }

    /// Programs of the chunk whose record (true) or version (false) the target now has.
    async fn taken(&self, chunk: &[Pending]) -> Result<Vec<(usize, bool)>> {
        let items = self.storage.items();
        let mut out = Vec::new();
        for (i, p) in chunk.iter().enumerate() {
            if items.get(&p.item.pk, keys::PROG_SK).await?.is_some() {
                out.push((i, true));
            } else if items
                .get(
                    &p.record.signature_pk(),
                    &keys::version_sk(&p.record.version),
                )
                .await?
                .is_some()
            {
                out.push((i, false));
            }
        }
        Ok(out)
    }

    /// The head after `chunk` is written over `live`: latest, count and best score moved, and
    /// the backup's aliases that point at the chunk's programs added where the target has no
    /// alias of that name. When the signature's versions then are exactly the backup's, the
    /// head is the backup's (with the target's aliases kept), so a restore into an empty store
    /// reproduces it byte for byte.
    async fn next_head(
        &self,
        pk: &str,
        live: Option<&SignatureHead>,
        chunk: &[Pending],
    ) -> Result<(Item, Condition)> {
        let first = &chunk[0].record;
        let backup = self.heads.get(pk);
        let condition = match live {
            None => Condition::NotExists,
            Some(l) => rev_of(l),
        };
        let mut head = match live {
            Some(l) => {
                let mut h = l.clone();
                h.rev = l.rev + 1;
                h
            }
            None => SignatureHead {
                project: first.project.clone(),
                signature: first.signature.clone(),
                latest_version: first.version.clone(),
                latest_id: first.id,
                latest_blob: Some(first.blob_pointer()),
                versions: 0,
                best_performance: None,
                updated_at: first.created_at,
                aliases: BTreeMap::new(),
                rev: 1,
            },
        };
        for p in chunk {
            let r = &p.record;
            if head.versions == 0 || r.version > head.latest_version {
                head.latest_version = r.version.clone();
                head.latest_id = r.id;
                head.latest_blob = Some(r.blob_pointer());
            }
            head.versions += 1;
            head.best_performance = max_score(head.best_performance, r.primary_score);
            head.updated_at = head.updated_at.max(r.created_at);
        }
        let Some((backup_item, backup)) = backup else {
            return Ok((head.to_item(), condition));
        };
        head.updated_at = head.updated_at.max(backup.updated_at);
        for (name, target) in &backup.aliases {
            if !head.aliases.contains_key(name)
                && chunk
                    .iter()
                    .any(|p| p.record.id == target.id && p.record.version == target.version)
            {
                head.aliases.insert(name.clone(), target.clone());
            }
        }
        // With no head, the target has no version of the signature: nothing to read.
        if head.versions == backup.versions
            && (live.is_none() || self.only_backup_versions(pk, chunk).await?)
        {
            let mut whole = backup.clone();
            for (name, target) in live.map(|l| &l.aliases).into_iter().flatten() {
                whole.aliases.insert(name.clone(), target.clone());
            }
            whole.rev = backup.rev.max(head.rev);
            if whole == *backup {
                return Ok((backup_item.clone(), condition));
            }
            return Ok((whole.to_item(), condition));
        }
        Ok((head.to_item(), condition))
    }

    /// Remembers which of these items are policies that protect their alias.
    fn note_policies<'i>(&mut self, items: impl Iterator<Item = &'i Item>) -> Result<()> {
        for item in items.filter(|i| i.pk.starts_with("APOL#")) {
            let p: crate::model::policy::PolicyRecord = from_item(item)?;
            if p.policy.protected {
                self.protected.insert((item.pk.clone(), item.sk.clone()));
            }
        }
        Ok(())
    }

    /// The aliases of `head` that a policy of the target protects.
    fn protected_aliases<'h>(
        &'h self,
        head: &'h SignatureHead,
    ) -> impl Iterator<Item = (&'h String, &'h crate::model::record::AliasTarget)> + 'h {
        let policies_pk = keys::alias_policies_pk(&head.project, &head.signature);
        head.aliases.iter().filter(move |(name, _)| {
            self.protected
                .contains(&(policies_pk.clone(), (*name).clone()))
        })
    }

    /// One `restore` history entry per protected alias (its policy in the target says so) that
    /// `new` has and `live` has not (a restore never moves an alias the target has): written in
    /// the transaction that sets them.
    fn alias_entries(&self, live: Option<&SignatureHead>, new: &SignatureHead) -> Vec<WriteOp> {
        self.protected_aliases(new)
            .filter(|(name, _)| live.is_none_or(|l| !l.aliases.contains_key(*name)))
            .filter_map(|(name, target)| {
                let alias = crate::domain::AliasName::parse(name).ok()?;
                let mut entry = HistoryEntry::new(&alias, HistoryAction::Restore, &self.by);
                entry.to_version = Some(target.version.clone());
                entry.to_id = Some(target.id);
                entry.backup = Some(self.manifest.name.clone());
                Some(WriteOp::put(
                    entry.to_item(&new.project, &new.signature),
                    Condition::NotExists,
                ))
            })
            .collect()
    }

    /// Whether every version the target has of `pk` (read by range) is a program of the backup.
    async fn only_backup_versions(&self, pk: &str, chunk: &[Pending]) -> Result<bool> {
        let mut start = None;
        loop {
            let page = self
                .storage
                .items()
                .query(
                    &Query::new(Index::Table, pk.to_owned())
                        .sk(SkRange::BeginsWith(keys::VER_PREFIX.into()))
                        .limit(500)
                        .start(start.take()),
                )
                .await?;
            for item in page.items {
                let claim: VersionClaim = from_item(&item)?;
                if !self.program_ids.contains(&claim.id)
                    || chunk.iter().any(|p| p.record.id == claim.id)
                {
                    return Ok(false);
                }
            }
            match page.next {
                Some(n) => start = Some(n),
                None => return Ok(true),
            }
        }
    }

    /// After the programs: the backup's aliases the target lacks, where the target has the
    /// alias's version as the same program (an alias the target has is never moved).
    async fn aliases(&mut self) -> Result<()> {
        let heads: Vec<(String, SignatureHead)> = self
            .heads
            .iter()
            .filter(|(_, (_, h))| !h.aliases.is_empty())
            .map(|(pk, (_, h))| (pk.clone(), h.clone()))
            .collect();
        let items = self.storage.items().clone();
        // The live heads, read in batches of 100 for the first attempt.
        let mut first: HashMap<String, Option<Item>> = HashMap::new();
        // With them, the policies of the backup's aliases (whether the target protects them).
        let head_keys: Vec<(String, String)> = heads
            .iter()
            .flat_map(|(pk, h)| {
                std::iter::once((pk.clone(), keys::HEAD_SK.to_owned())).chain(h.aliases.keys().map(
                    |name| {
                        (
                            keys::alias_policies_pk(&h.project, &h.signature),
                            name.clone(),
                        )
                    },
                ))
            })
            .collect();
        let mut policies = Vec::new();
        for batch in head_keys.chunks(100) {
            for (key, item) in batch.iter().zip(items.get_many(batch).await?) {
                if key.1 == keys::HEAD_SK {
                    first.insert(key.0.clone(), item);
                } else if let Some(item) = item {
                    policies.push(item);
                }
            }
        }
        self.note_policies(policies.iter())?;
        for (pk, ours) in heads {
            for attempt in 1..=100u32 {
                let live_item = match first.remove(&pk) {
                    Some(item) => item,
                    None => items.get(&pk, keys::HEAD_SK).await?,
                };
                let Some(live_item) = live_item else {
                    break;
                };
                let live: SignatureHead = from_item(&live_item)?;
                let mut merged = live.clone();
                for (name, target) in &ours.aliases {
                    if live.aliases.contains_key(name) {
                        continue;
                    }
                    if let Some(claim) = items.get(&pk, &keys::version_sk(&target.version)).await? {
                        if from_item::<VersionClaim>(&claim)?.id == target.id {
                            merged.aliases.insert(name.clone(), target.clone());
                        }
                    }
                }
                if merged == live {
                    break;
                }
                merged.rev = live.rev + 1;
                merged.updated_at = live.updated_at.max(ours.updated_at);
                let mut ops = self.alias_entries(Some(&live), &merged);
                let aliases_set = ops.len() as u64;
                ops.push(WriteOp::put(merged.to_item(), rev_of(&live)));
                match items.transact(ops).await {
                    Ok(()) => {
                        self.report.restored_protected_aliases += aliases_set;
                        if !self.created_heads.contains(&pk) && self.merged_heads.insert(pk.clone())
                        {
                            self.report.merged_signature_heads += 1;
                        }
                        self.storage.resolved.invalidate(&pk);
                        break;
                    }
                    Err(Error::ConditionFailed { .. }) => crate::retry::backoff(attempt).await,
                    Err(Error::Unavailable(_)) => crate::retry::backoff(attempt).await,
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(())
    }
}

/// A program to write: its record item (as backed up, blob info updated when re-encoded) and
/// the record.
struct Pending {
    item: Item,
    record: ProgramRecord,
}

/// DynamoDB's limit on the actions of one transaction.
const MAX_TRANSACTION_OPS: usize = 100;

/// The counter additions a chunk's programs make, summed per signature (dated by each
/// program's creation): one op per counter item, as a transaction allows.
fn counter_ops(chunk: &[Pending]) -> Vec<WriteOp> {
    let mut counters: BTreeMap<String, WriteOp> = BTreeMap::new();
    for p in chunk {
        let record = &p.record;
        let op = crate::model::counters::store_counter_op(record, &record.created_at);
        let key = keys::stats_pk(&record.project, &record.signature);
        match (counters.get_mut(&key), op) {
            (Some(WriteOp::Add { add: total, .. }), WriteOp::Add { add, .. }) => {
                for (name, n) in add {
                    match total.iter_mut().find(|(t, _)| *t == name) {
                        Some((_, m)) => *m += n,
                        None => total.push((name, n)),
                    }
                }
            }
            (_, op) => {
                counters.insert(key, op);
            }
        }
    }
    counters.into_values().collect()
}
