//! Converting metric records of the per-record layout (one item per record at
//! `MET#<program id>#<YYYY-MM>` / `<timestamp>#<uuid>`, written before blocks) into blocks.
//!
//! Until every record is converted, history reads also read the per-record layout (its month
//! index and month partitions: what a read cost before blocks). The status item
//! `STATUS` / `LAYOUT#metric-blocks` says that none is left; a new store writes it when it is
//! created (the embedded store when it opens with no per-record item, an AWS table when
//! `create` makes it), and [`Storage::migrate_metrics`] writes it when its scan completes.
//!
//! [`Storage::migrate_metrics`] (`dspy-storage migrate-metrics`) scans the table a page at a
//! time: the records of each program and month found in a page become blocks (their ids, record
//! ids, times, environments and receive times kept), up to 90 records a transaction that puts
//! their blocks and deletes their items together, so a record is in one layout at a time. It is
//! resumable: it answers a cursor after each slice, and running it again from anywhere (or from
//! the start) converts only what is left. Blocks are named after the records they hold (the same
//! records make the same blocks). History reads keep one record per id and time anyway, so a
//! record present in both layouts (an older backup restored over converted records) reads once.
//! The embedded store converts on its first metric read; a restore converts the per-record items
//! of an older backup as it writes them.
//!
//! Run it once every process writing to the store runs a build with blocks (an older build
//! still writes records in the per-record layout; run it again after the last one stops).

use std::collections::BTreeMap;

use serde::Serialize;

use crate::backend::{attr, Item, PageKey, WriteOp};
use crate::domain::ProgramId;
use crate::error::{Error, Result};
use crate::model::keys;
use crate::model::record::from_item;
use crate::storage::Storage;
use crate::tracking::blocks;
use crate::tracking::record::{month_of, MetricRecord};

/// Items scanned per page.
const SCAN_PAGE: usize = 500;
/// Records converted per transaction (their block, at most a few, and one delete each).
const CONVERT_CHUNK: usize = 90;

/// Whether an item is a metric record of the per-record layout.
pub fn is_legacy_record(item: &Item) -> bool {
    // `MET#<id>#<YYYY-MM>` (not the record ids, month index or blocks of a program).
    let month = item.pk.rsplit('#').next().unwrap_or_default();
    item.pk.starts_with("MET#")
        && month.len() == 7
        && month.as_bytes()[4] == b'-'
        && item.sk.starts_with(|c: char| c.is_ascii_digit())
        && item.get(attr::DATA).is_some()
        && !blocks::is_block(item)
}

/// The blocks holding `records` (of the per-record layout; any programs and months): for each
/// program and month, blocks named after their records' ids (the same records make the same
/// blocks, whoever converts them).
pub fn blocks_of(records: Vec<MetricRecord>) -> Result<Vec<Item>> {
    let mut groups: BTreeMap<(ProgramId, String), Vec<MetricRecord>> = BTreeMap::new();
    for r in records {
        groups
            .entry((r.program_id, month_of(&r.timestamp)))
            .or_default()
            .push(r);
    }
    let mut out = Vec::new();
    for ((program, _), mut group) in groups {
        group.sort_by_key(|r| (r.timestamp, r.id));
        let nonce = {
            use sha2::Digest;
            let mut h = sha2::Sha256::new();
            for r in &group {
                h.update(r.id.as_bytes());
            }
            let mut bytes = [0u8; 16];
            bytes.copy_from_slice(&h.finalize()[..16]);
            uuid::Builder::from_custom_bytes(bytes)
                .into_uuid()
                .to_string()
        };
        out.extend(
            blocks::encode(&program, &nonce, group, blocks::Ids::Kept)?
                .into_iter()
                .map(|b| b.item),
        );
    }
    Ok(out)
}

/// An item's key: (partition key, sort key).
pub type Key = (String, String);

/// Converts `items`: per-record metric items become blocks; the others are left as they are.
/// Returns the items to write and the keys of the per-record items converted.
pub fn convert(items: Vec<Item>) -> Result<(Vec<Item>, Vec<Key>)> {
    let mut keep = Vec::with_capacity(items.len());
    let mut keys = Vec::new();
    let mut records = Vec::new();
    for item in items {
        // An item that does not read as a record is not one: kept as it is.
        match is_legacy_record(&item)
            .then(|| from_item::<MetricRecord>(&item).ok())
            .flatten()
        {
            Some(r) => {
                keys.push((item.pk, item.sk));
                records.push(r);
            }
            None => keep.push(item),
        }
    }
    keep.extend(blocks_of(records)?);
    Ok((keep, keys))
}

/// What one slice of [`Storage::migrate_metrics`] did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct MigrationReport {
    pub items_scanned: u64,
    pub records_converted: u64,
    pub blocks_written: u64,
    /// Every item is scanned and the layout item written: nothing is left to convert.
    pub complete: bool,
    /// Where the next slice starts (`None` when complete).
    pub next: Option<PageKey>,
}

impl Storage {
    /// Converts the per-record metric items of up to `pages` scan pages from `start` (see the
    /// module doc). Maintenance only (a scan). Returns where to go on.
    pub async fn migrate_metrics(
        &self,
        start: Option<PageKey>,
        pages: usize,
    ) -> Result<MigrationReport> {
        let mut report = MigrationReport::default();
        let mut start = start;
        for _ in 0..pages.max(1) {
            let page = self.items.scan(start.take(), SCAN_PAGE).await?;
            report.items_scanned += page.items.len() as u64;
            let legacy: Vec<Item> = page.items.into_iter().filter(is_legacy_record).collect();
            // Per program and month, up to CONVERT_CHUNK records a transaction: their blocks
            // put and their items deleted together (a record is in one layout at a time).
            let mut groups: BTreeMap<String, Vec<Item>> = BTreeMap::new();
            for item in legacy {
                groups.entry(item.pk.clone()).or_default().push(item);
            }
            for group in groups.into_values() {
                for chunk in group.chunks(CONVERT_CHUNK) {
                    let (items, converted) = convert(chunk.to_vec())?;
                    if converted.is_empty() {
                        continue;
                    }
                    // (Items that do not read as records stay where they are.)
                    let blocks: Vec<Item> = items.into_iter().filter(blocks::is_block).collect();
                    report.records_converted += converted.len() as u64;
                    report.blocks_written += blocks.len() as u64;
                    let ops = blocks
                        .into_iter()
                        .map(|b| WriteOp::put(b, crate::backend::Condition::None))
                        .chain(converted.iter().map(|(pk, sk)| {
                            WriteOp::delete(pk, sk, crate::backend::Condition::None)
                        }))
                        .collect();
                    self.items.transact(ops).await?;
                }
            }
            match page.next {
                Some(n) => start = Some(n),
                None => {
                    self.mark_metrics_converted().await?;
                    report.complete = true;
                    return Ok(report);
                }
            }
        }
        report.next = start;
        Ok(report)
    }

    /// Writes the layout item: every metric record of this store is in blocks.
    pub async fn mark_metrics_converted(&self) -> Result<()> {
        let item = Item::new(keys::STATUS_PK, keys::METRIC_LAYOUT_SK).with(
            attr::DATA,
            serde_json::json!({"converted_at": crate::domain::format_time(&crate::domain::now())})
                .to_string(),
        );
        self.items
            .transact(vec![WriteOp::put(item, crate::backend::Condition::None)])
            .await?;
        self.metric_layout.set(false);
        Ok(())
    }

    /// The daily cleanup's share of the conversion: nothing (and, once known, no request) when
    /// every record is in blocks; otherwise slices of the scan until `deadline`, resuming where
    /// the last run stopped (`STATUS` / `LAYOUT#metric-blocks-progress`). A fresh deployment's
    /// table is found empty of per-record items by its first run and marked.
    pub async fn convert_metrics_scheduled(
        &self,
        deadline: Option<std::time::Instant>,
    ) -> Result<Option<MigrationReport>> {
        if !self.legacy_metrics().await? {
            return Ok(None);
        }
        let progress = self
            .items
            .get(keys::STATUS_PK, keys::METRIC_LAYOUT_PROGRESS_SK)
            .await?;
        let mut start = progress
            .as_ref()
            .and_then(|i| i.data())
            .and_then(|d| serde_json::from_str::<PageKey>(d).ok());
        let mut total = MigrationReport::default();
        loop {
            let r = self.migrate_metrics(start.take(), 4).await?;
            total.items_scanned += r.items_scanned;
            total.records_converted += r.records_converted;
            total.blocks_written += r.blocks_written;
            if r.complete {
                total.complete = true;
                if progress.is_some() {
                    self.items
                        .transact(vec![WriteOp::delete(
                            keys::STATUS_PK,
                            keys::METRIC_LAYOUT_PROGRESS_SK,
                            crate::backend::Condition::None,
                        )])
                        .await?;
                }
                return Ok(Some(total));
            }
            start = r.next;
            if deadline.is_some_and(|d| std::time::Instant::now() >= d) {
                break;
            }
        }
        total.next = start.clone();
        let at = serde_json::to_string(&start).map_err(|e| Error::Internal(e.to_string()))?;
        self.items
            .transact(vec![WriteOp::put(
                Item::new(keys::STATUS_PK, keys::METRIC_LAYOUT_PROGRESS_SK).with(attr::DATA, at),
                crate::backend::Condition::None,
            )])
            .await?;
        Ok(Some(total))
    }

    /// Converts every per-record metric item now (the embedded store, on its first metric
    /// read): the whole scan in one go.
    pub(crate) async fn migrate_all_metrics(&self) -> Result<()> {
        let mut start = None;
        loop {
            let r = self.migrate_metrics(start, 100).await?;
            if r.complete {
                return Ok(());
            }
            start = Some(r.next.ok_or_else(|| {
                Error::Internal("a metric conversion slice ended without a cursor".into())
            })?);
        }
    }
}
