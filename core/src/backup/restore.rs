//! Restore: verify everything, then write in an order that never exposes a dangling pointer.

use std::collections::{BTreeMap, HashSet};
use std::time::Instant;

use bytes::Bytes;
use serde::Serialize;

use super::format::{self, BlobRef, Line, Manifest, PartInfo};
use super::{get_manifest, uuid_of, BackupLocation, Progress, ProgressFn, FORMAT_VERSION};
use crate::backend::{attr, Condition, Index, Item, Query, SkRange, WriteOp};
use crate::codec::Codec;
use crate::error::{Error, Result};
use crate::keys::{self, EntityKind};
use crate::record::{from_item, ProgramRecord, SignatureHead, VersionClaim};
use crate::service::Storage;

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
    /// Versions the target already has for another program: the target's is kept and the
    /// backup's program is not restored.
    pub conflicts: u64,
    /// Seconds.
    pub restore_time: f64,
}

const BATCH: usize = 25;

struct Restorer<'a> {
    storage: &'a Storage,
    location: &'a BackupLocation,
    manifest: &'a Manifest,
    /// The target's encryption with each program's own compression: same-config restores
    /// reproduce every record byte-for-byte.
    report: RestoreReport,
    /// Programs not restored because the target has their version for another program.
    conflicted: HashSet<u128>,
    progress: Option<ProgressFn>,
    total: u64,
    done: u64,
}

/// Restores a backup into `storage` (empty or live). Everything is verified before the first
/// write; see the module documentation for the order and the merge rules.
pub async fn restore(
    storage: &Storage,
    location: &BackupLocation,
    name: &str,
    options: &RestoreOptions,
) -> Result<RestoreReport> {
    let started = Instant::now();
    let manifest = get_manifest(location, name).await?;
    if options.verify_compatibility {
        manifest.check_compatible()?;
    } else if manifest.format_version != FORMAT_VERSION {
        tracing::warn!(
            format_version = manifest.format_version,
            "restoring a backup of another format version without verify_compatibility"
        );
    }
    let total: u64 = manifest.parts.iter().map(|p| p.records).sum();
    let mut r = Restorer {
        storage,
        location,
        manifest: &manifest,
        report: RestoreReport {
            backup_name: manifest.name.clone(),
            ..Default::default()
        },
        conflicted: HashSet::new(),
        progress: options.progress.clone(),
        total,
        done: 0,
    };
    r.verify().await?;
    r.done = 0;
    for part in &manifest.parts {
        r.write_part(part).await?;
    }
    r.report.restore_time = started.elapsed().as_secs_f64();
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
                }
                self.tick("verify");
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
        let folder = self.folder();
        let bytes = format::read_part(self.location.store.as_ref(), &folder, part).await?;
        let mut batch: Vec<Line> = Vec::with_capacity(BATCH);
        for line in format::lines(part, bytes)? {
            let line = line?;
            if matches!(
                keys::entity_kind(&line.item.pk, &line.item.sk),
                EntityKind::Status | EntityKind::Idempotency | EntityKind::Counter
            ) {
                continue;
            }
            batch.push(line);
            if batch.len() == BATCH {
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
        let n = lines.len();
        match kind {
            EntityKind::Program => self.programs(lines).await?,
            EntityKind::VersionClaim => self.claims(lines).await?,
            EntityKind::SignatureHead => {
                for line in lines {
                    self.head(line.item).await?;
                }
            }
            EntityKind::Tag => {
                let items: Vec<Item> = lines
                    .into_iter()
                    .map(|l| l.item)
                    .filter(|i| {
                        !i.get("id")
                            .and_then(uuid_of)
                            .is_some_and(|u| self.conflicted.contains(&u))
                    })
                    .collect();
                self.report.restored_tags += items.len() as u64;
                self.storage.items().batch_put(items).await?;
            }
            EntityKind::Metric | EntityKind::OptimizationRun | EntityKind::Other => {
                let count = lines.len() as u64;
                match kind {
                    EntityKind::Metric => self.report.restored_metrics += count,
                    EntityKind::OptimizationRun => self.report.restored_optimization_runs += count,
                    _ => self.report.restored_other += count,
                }
                self.storage
                    .items()
                    .batch_put(lines.into_iter().map(|l| l.item).collect())
                    .await?;
            }
            EntityKind::Idempotency | EntityKind::Status | EntityKind::Counter => {}
        }
        for _ in 0..n {
            self.tick("restore");
        }
        Ok(())
    }

    /// Programs absent from the target: blob (re-encoded for the target), then the record.
    async fn programs(&mut self, lines: Vec<Line>) -> Result<()> {
        let items = self.storage.items();
        let mut records = Vec::with_capacity(lines.len());
        for line in lines {
            let mut item = line.item;
            if items.get(&item.pk, keys::PROG_SK).await?.is_some() {
                self.report.already_present_programs += 1;
                continue;
            }
            let record: ProgramRecord = from_item(&item)?;
            // A version the target already has for another program: keep the target's.
            if let Some(claim) = items
                .get(&record.signature_pk(), &keys::version_sk(&record.version))
                .await?
            {
                if from_item::<VersionClaim>(&claim)?.id != record.id {
                    self.conflicted.insert(record.id_u128());
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
            }
            self.storage
                .blobs()
                .put(&record.blob_key, Bytes::from(stored), &info.stored_sha256)
                .await?;
            records.push(item);
        }
        self.write_programs(records).await
    }

    /// Writes restored program records together with the report's counters (one transaction per
    /// chunk: a program is never counted without its record, nor written without being counted).
    /// A record that appeared meanwhile is left alone.
    async fn write_programs(&mut self, records: Vec<Item>) -> Result<()> {
        // One counter update per signature and transaction (an item once per transaction).
        const CHUNK: usize = 40;
        for chunk in records.chunks(CHUNK) {
            let ops = counted_puts(chunk)?;
            match self.storage.items().transact(ops).await {
                Ok(()) => self.report.restored_programs += chunk.len() as u64,
                Err(Error::ConditionFailed { .. }) => {
                    for item in chunk {
                        match self
                            .storage
                            .items()
                            .transact(counted_puts(std::slice::from_ref(item))?)
                            .await
                        {
                            Ok(()) => self.report.restored_programs += 1,
                            Err(Error::ConditionFailed { .. }) => {
                                self.report.already_present_programs += 1
                            }
                            Err(e) => return Err(e),
                        }
                    }
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Version claims, each only if the version is free (a claim of the same program is fine).
    async fn claims(&mut self, lines: Vec<Line>) -> Result<()> {
        let mut pending: Vec<Item> = lines.into_iter().map(|l| l.item).collect();
        while !pending.is_empty() {
            let ops = pending
                .iter()
                .map(|i| WriteOp::put(i.clone(), Condition::NotExists))
                .collect();
            match self.storage.items().transact(ops).await {
                Ok(()) => {
                    self.report.restored_version_claims += pending.len() as u64;
                    return Ok(());
                }
                Err(Error::ConditionFailed { ops }) if !ops.is_empty() => {
                    let mut rest = Vec::new();
                    for (i, item) in pending.into_iter().enumerate() {
                        if !ops.contains(&i) {
                            rest.push(item);
                            continue;
                        }
                        let ours: VersionClaim = from_item(&item)?;
                        if let Some(live) = self.storage.items().get(&item.pk, &item.sk).await? {
                            if from_item::<VersionClaim>(&live)?.id != ours.id {
                                self.report.conflicts += 1;
                                self.conflicted.insert(ours.id_u128());
                            }
                        } else {
                            rest.push(item);
                        }
                    }
                    pending = rest;
                }
                Err(e) if e.is_transient() => crate::service::backoff(1).await,
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// A signature head: the backup's when the target has none, else the two merged.
    async fn head(&mut self, item: Item) -> Result<()> {
        let ours: SignatureHead = from_item(&item)?;
        let items = self.storage.items();
        for attempt in 1..=100u32 {
            let live = items.get(&item.pk, keys::HEAD_SK).await?;
            let (new_item, condition) = match &live {
                None => (item.clone(), Condition::NotExists),
                Some(l) if l.data() == item.data() => return Ok(()),
                Some(l) => {
                    let live_head: SignatureHead = from_item(l)?;
                    let merged = self.merge(&live_head, &ours).await?;
                    if merged == live_head {
                        return Ok(());
                    }
                    (
                        merged.to_item(),
                        Condition::AttrEquals(attr::REV.into(), live_head.rev.to_string()),
                    )
                }
            };
            match items
                .transact(vec![WriteOp::put(new_item, condition)])
                .await
            {
                Ok(()) => {
                    if live.is_none() {
                        self.report.restored_signature_heads += 1;
                    } else {
                        self.report.merged_signature_heads += 1;
                    }
                    self.storage.resolved.invalidate(&item.pk);
                    return Ok(());
                }
                Err(Error::ConditionFailed { .. }) => crate::service::backoff(attempt).await,
                Err(e) if e.is_transient() => crate::service::backoff(attempt).await,
                Err(e) => return Err(e),
            }
        }
        Err(Error::Unavailable(format!(
            "signature head {} kept changing; restore gave up",
            item.pk
        )))
    }

    /// The merged head from the target's claims: latest = highest version, count, best score;
    /// the target's aliases, plus the backup's that the target lacks when their version is the
    /// same program in the target.
    async fn merge(&self, live: &SignatureHead, ours: &SignatureHead) -> Result<SignatureHead> {
        let pk = keys::signature_pk(&live.project, &live.signature);
        let wanted: BTreeMap<String, (String, crate::domain::ProgramId)> = ours
            .aliases
            .iter()
            .filter(|(name, _)| !live.aliases.contains_key(*name))
            .map(|(name, a)| (keys::version_sk(&a.version), (name.clone(), a.id)))
            .collect();
        let mut merged = live.clone();
        let mut count = 0u64;
        let mut best: Option<f64> = None;
        let mut latest: Option<VersionClaim> = None;
        let mut start = None;
        loop {
            let page = self
                .storage
                .items()
                .query(
                    &Query::new(Index::Table, pk.clone())
                        .sk(SkRange::BeginsWith(keys::VER_PREFIX.into()))
                        .limit(500)
                        .start(start.take()),
                )
                .await?;
            for item in page.items {
                let claim: VersionClaim = from_item(&item)?;
                count += 1;
                best = match (best, claim.performance) {
                    (Some(a), Some(b)) => Some(a.max(b)),
                    (a, b) => a.or(b),
                };
                if let Some((name, id)) = wanted.get(&item.sk) {
                    if *id == claim.id {
                        merged
                            .aliases
                            .insert(name.clone(), ours.aliases[name].clone());
                    }
                }
                if latest.as_ref().is_none_or(|l| claim.version > l.version) {
                    latest = Some(claim);
                }
            }
            match page.next {
                Some(n) => start = Some(n),
                None => break,
            }
        }
        if let Some(l) = latest {
            merged.latest_id = l.id;
            merged.latest_version = l.version;
        }
        merged.versions = count;
        merged.best_performance = best;
        let unchanged = merged == *live;
        if !unchanged {
            merged.rev = live.rev + 1;
            merged.updated_at = live.updated_at.max(ours.updated_at);
        }
        Ok(merged)
    }
}

trait IdU128 {
    fn id_u128(&self) -> u128;
}

impl IdU128 for ProgramRecord {
    fn id_u128(&self) -> u128 {
        uuid_of(&self.id.to_string()).unwrap_or_default()
    }
}

impl IdU128 for VersionClaim {
    fn id_u128(&self) -> u128 {
        uuid_of(&self.id.to_string()).unwrap_or_default()
    }
}

/// Puts of program records (each only if absent) plus the counter additions they make, summed
/// per signature (dated by each program's creation).
fn counted_puts(records: &[Item]) -> Result<Vec<WriteOp>> {
    let mut ops = Vec::with_capacity(records.len() * 2);
    let mut counters: std::collections::BTreeMap<String, WriteOp> =
        std::collections::BTreeMap::new();
    for item in records {
        let record: ProgramRecord = from_item(item)?;
        let op = crate::report::store_counter_op(&record, &record.created_at);
        match (
            counters.get_mut(&keys::stats_pk(&record.project, &record.signature)),
            op,
        ) {
            (Some(WriteOp::Add { add: total, .. }), WriteOp::Add { add, .. }) => {
                for (name, n) in add {
                    match total.iter_mut().find(|(t, _)| *t == name) {
                        Some((_, m)) => *m += n,
                        None => total.push((name, n)),
                    }
                }
            }
            (_, op) => {
                counters.insert(keys::stats_pk(&record.project, &record.signature), op);
            }
        }
        ops.push(WriteOp::put(item.clone(), Condition::NotExists));
    }
    ops.extend(counters.into_values());
    Ok(ops)
}
