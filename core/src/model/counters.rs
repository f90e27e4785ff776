//! The counters kept beside the records (`STATS#<project>#<signature>` items: see
//! [`crate::tracking::report`] for what reads them): the counter updates that ride in the
//! store and delete transactions, and the attributes every counter item carries so the stats
//! index (GSI3) lists it.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use chrono::{DateTime, NaiveDate, Utc};

use crate::backend::{Index, ItemStore, WriteOp};
use crate::domain::{Project, Signature};
use crate::model::keys;
use crate::model::record::ProgramRecord;

/// Counter attribute of one day: `n_d<YYYY-MM-DD>`.
pub(crate) fn day_attr(d: NaiveDate) -> String {
    format!("n_d{d}")
}

/// Days a counter item keeps its per-day attributes for (today and the days before): the
/// report shows fewer (`crate::tracking::report::RECENT_DAYS`).
pub const DAY_COUNTERS_KEPT: i64 = 14;

/// How many days before those a write removes (one `REMOVE` each; a missing attribute is
/// ignored).
const DAYS_PRUNED_PER_WRITE: i64 = 31;

/// The per-day attributes a counter write on `today` removes: the days just before the kept
/// ones. Every counter item is written on each store (or metrics request) of its signature, so
/// one written at least once a month keeps at most [`DAY_COUNTERS_KEPT`] + 31 day attributes,
/// instead of one more for every day it was ever written on (an item over 1 KB costs every
/// store 2 more write units per KB); a longer pause leaves at most the 14 it kept.
pub(crate) fn stale_day_attrs(today: NaiveDate) -> Vec<String> {
    (DAY_COUNTERS_KEPT..DAY_COUNTERS_KEPT + DAYS_PRUNED_PER_WRITE)
        .map(|back| day_attr(today - chrono::Duration::days(back)))
        .collect()
}

pub(crate) fn counter_set(
    project: &Project,
    signature: &Signature,
    kind: &str,
) -> Vec<(String, String)> {
    vec![
        (Index::Gsi3.pk_attr().into(), keys::STATS_INDEX_PK.into()),
        (
            Index::Gsi3.sk_attr().into(),
            keys::stats_index_sk(project, signature, kind),
        ),
        ("project".into(), project.to_string()),
        ("signature".into(), signature.to_string()),
        ("kind".into(), kind.into()),
    ]
}

/// The counter update of a store: rides in the store transaction.
pub(crate) fn store_counter_op(record: &ProgramRecord, now: &DateTime<Utc>) -> WriteOp {
    WriteOp::Add {
        pk: keys::stats_pk(&record.project, &record.signature),
        sk: keys::STATS_SK.into(),
        add: vec![
            ("n_programs".into(), 1),
            ("n_bytes".into(), record.blob.size as i64),
            (day_attr(now.date_naive()), 1),
        ],
        set: counter_set(&record.project, &record.signature, keys::STATS_SK),
        remove: stale_day_attrs(now.date_naive()),
    }
}

/// The counter update of a delete: rides in the delete transaction.
pub(crate) fn delete_counter_op(record: &ProgramRecord) -> WriteOp {
    WriteOp::Add {
        pk: keys::stats_pk(&record.project, &record.signature),
        sk: keys::STATS_SK.into(),
        add: vec![
            ("n_programs".into(), -1),
            ("n_bytes".into(), -(record.blob.size as i64)),
        ],
        set: counter_set(&record.project, &record.signature, keys::STATS_SK),
        remove: Vec::new(),
    }
}

/// How long loads are counted in memory before the next load writes them.
pub const LOAD_FLUSH_INTERVAL: std::time::Duration = std::time::Duration::from_secs(60);

/// Loads counted in memory, written in batches (see [`crate::tracking::report`]).
#[derive(Debug)]
pub struct LoadCounter {
    pending: Mutex<HashMap<(Project, Signature), i64>>,
    last_flush: Mutex<Instant>,
}

impl Default for LoadCounter {
    fn default() -> Self {
        LoadCounter {
            pending: Mutex::new(HashMap::new()),
            last_flush: Mutex::new(Instant::now()),
        }
    }
}

impl LoadCounter {
    /// Counts one load; returns the counts to write when a flush is due.
    pub(crate) fn count(
        &self,
        project: &Project,
        signature: &Signature,
    ) -> Option<HashMap<(Project, Signature), i64>> {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        *pending
            .entry((project.clone(), signature.clone()))
            .or_insert(0) += 1;
        let mut last = self.last_flush.lock().unwrap_or_else(|e| e.into_inner());
        if last.elapsed() >= LOAD_FLUSH_INTERVAL {
            *last = Instant::now();
            Some(std::mem::take(&mut *pending))
        } else {
            None
        }
    }

    pub(crate) fn take(&self) -> HashMap<(Project, Signature), i64> {
        *self.last_flush.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
        std::mem::take(&mut *self.pending.lock().unwrap_or_else(|e| e.into_inner()))
    }

    pub(crate) fn put_back(&self, counts: HashMap<(Project, Signature), i64>) {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        for (k, n) in counts {
            *pending.entry(k).or_insert(0) += n;
        }
    }
}

/// Writes load counts: one single-item `ADD` per signature. Returns the counts not written.
pub(crate) async fn write_loads(
    items: &dyn ItemStore,
    counts: HashMap<(Project, Signature), i64>,
) -> HashMap<(Project, Signature), i64> {
    let mut failed = HashMap::new();
    for ((project, signature), n) in counts {
        let op = WriteOp::Add {
            pk: keys::stats_pk(&project, &signature),
            sk: keys::LOADS_SK.into(),
            add: vec![("n_loads".into(), n)],
            set: counter_set(&project, &signature, keys::LOADS_SK),
            remove: Vec::new(),
        };
        if let Err(e) = items.transact(vec![op]).await {
            tracing::warn!(%signature, error = %e, "could not write load counts; kept for the next flush");
            failed.insert((project, signature), n);
        }
    }
    failed
}
