//! Daily sums of a program's metrics, cached so that a trend costs one query per month instead of
//! reading every record — and never serves a stale day.
//!
//! Each day a program has records for has an item `MET#<id>#<YYYY-MM>` / `DAY#<date>` with:
//! * `n_w`, `n_done` (`w`, `done` below): metric writes touching that day that started / finished. A metrics request adds
//!   1 to `w` of every day it touches BEFORE writing its records, and 1 to `done` after (whether
//!   the batch write succeeded or not: what was written is what a reader sees).
//! * `cached_w`, `data`: the day's `{"records", "m": {metric: [sum, count]}}` as computed from the
//!   raw records by a reader that saw `w = done = cached_w` before reading them.
//!
//! A reader uses `data` only while `w = done = cached_w`: any write to that day since (even one
//! in flight, even one that crashed between its two counters) makes it read the day's records
//! again. So a trend is always exactly what the records say. A day without an item has no
//! records (every record write creates it first). Costs: a metrics request adds two single
//! transactions (days touched ≤ 100 each); a trend reads the `DAY#` items (one query per month of
//! the window) plus the records of the days changed since they were cached, and writes those
//! days' sums back in one transaction.

use std::collections::{BTreeMap, BTreeSet};

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

use crate::backend::{attr, Item, Query, SkRange, WriteOp};
use crate::domain::ProgramId;
use crate::error::Result;
use crate::model::keys;
use crate::model::record::ProgramRecord;
use crate::storage::Storage;
use crate::tracking::metrics::{month_of, MetricRecord, Window};
use crate::tracking::trend::DailyAccumulator;

const MAX_OPS: usize = 100;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct DaySums {
    records: u64,
    m: BTreeMap<String, (f64, u64)>,
}

impl DaySums {
    fn add(&mut self, r: &MetricRecord) {
        self.records += 1;
        for (name, v) in &r.metrics {
            let e = self.m.entry(name.clone()).or_insert((0.0, 0));
            e.0 += v;
            e.1 += 1;
        }
    }
}

fn day_pk(id: &ProgramId, date: &NaiveDate) -> String {
    let t = date.and_hms_opt(0, 0, 0).expect("midnight").and_utc();
    keys::metric_pk(id, &month_of(&t))
}

fn num(item: &Item, name: &str) -> i64 {
    item.get(name).and_then(|v| v.parse().ok()).unwrap_or(0)
}

/// What a day item says.
struct DayState {
    /// `w` when `w = done` (no write in flight), else `None`.
    settled: Option<i64>,
    cached: Option<DaySums>,
}

impl DayState {
    fn of(item: &Item) -> Self {
        let (w, done) = (num(item, "n_w"), num(item, "n_done"));
        let settled = (w == done).then_some(w);
        let cached = match (
            settled,
            item.get("cached_w").and_then(|v| v.parse::<i64>().ok()),
        ) {
            (Some(w), Some(c)) if w == c => item.data().and_then(|d| serde_json::from_str(d).ok()),
            _ => None,
        };
        DayState { settled, cached }
    }
}

impl Storage {
    /// Adds 1 to counter `name` (`w` or `done`) of each day, in transactions of ≤ 100 writes
    /// (`extra` rides in the first ones).
    pub(crate) async fn mark_days(
        &self,
        id: &ProgramId,
        days: &BTreeSet<NaiveDate>,
        name: &str,
        extra: Vec<WriteOp>,
    ) -> Result<()> {
        let mut ops: Vec<WriteOp> = Vec::new();
        let mut batches = Vec::new();
        for op in extra {
            if ops.len() == MAX_OPS {
                batches.push(std::mem::take(&mut ops));
            }
            ops.push(op);
        }
        for d in days {
            if ops.len() == MAX_OPS {
                batches.push(std::mem::take(&mut ops));
            }
            ops.push(WriteOp::Add {
                pk: day_pk(id, d),
                sk: keys::metric_day_sk(d),
                add: vec![(name.to_owned(), 1)],
                set: Vec::new(),
            });
        }
        if !ops.is_empty() {
            batches.push(ops);
        }
        for ops in batches {
            self.items.transact(ops).await?;
        }
        Ok(())
    }

    /// Adds a program's records in `window` (whole UTC days) to `acc`, from the cached day sums
    /// where they are valid and from the records elsewhere; caches the days it had to read.
    /// Returns the records counted.
    pub(crate) async fn accumulate_days(
        &self,
        program: &ProgramRecord,
        window: Window,
        acc: &mut DailyAccumulator,
    ) -> Result<u64> {
        let (first, last) = (window.from.date_naive(), window.to.date_naive());
        let mut states: BTreeMap<NaiveDate, DayState> = BTreeMap::new();
        for month in crate::tracking::metrics::months_between(&window.from, &window.to) {
            let pk = keys::metric_pk(&program.id, &month);
            let mut start = None;
            loop {
                let q = Query::new(crate::backend::Index::Table, pk.clone())
                    .sk(SkRange::BeginsWith(keys::DAY_PREFIX.into()))
                    .limit(100)
                    .start(start);
                let page = self.items.query(&q).await?;
                for item in &page.items {
                    let Some(date) = item
                        .sk
                        .strip_prefix(keys::DAY_PREFIX)
                        .and_then(|d| d.parse::<NaiveDate>().ok())
                    else {
                        continue;
                    };
                    if (first..=last).contains(&date) {
                        states.insert(date, DayState::of(item));
                    }
                }
                match page.next {
                    Some(n) => start = Some(n),
                    None => break,
                }
            }
        }
        let mut total = 0;
        let mut cache_ops = Vec::new();
        for (date, state) in &states {
            if let Some(sums) = &state.cached {
                acc.add_day(*date, &sums.m, sums.records);
                total += sums.records;
                continue;
            }
            let from = date.and_hms_opt(0, 0, 0).expect("midnight").and_utc();
            let to = from + chrono::Duration::days(1) - chrono::Duration::milliseconds(1);
            let mut sums = DaySums::default();
            self.read_metrics(&program.id, Window { from, to }, None, None, |r| {
                sums.add(&r)
            })
            .await?;
            acc.add_day(*date, &sums.m, sums.records);
            total += sums.records;
            if let Some(w) = state.settled {
                cache_ops.push(WriteOp::Add {
                    pk: day_pk(&program.id, date),
                    sk: keys::metric_day_sk(date),
                    add: Vec::new(),
                    set: vec![
                        ("cached_w".into(), w.to_string()),
                        (
                            attr::DATA.into(),
                            serde_json::to_string(&sums).expect("serializable"),
                        ),
                    ],
                });
            }
        }
        for ops in cache_ops.chunks(MAX_OPS) {
            // Best effort: a failed cache write only means the next trend reads the day again.
            if let Err(e) = self.items.transact(ops.to_vec()).await {
                tracing::warn!(program = %program.id, error = %e, "could not cache daily sums");
            }
        }
        Ok(total)
    }
}
