//! Daily sums of a program's metrics, cached so that a trend costs one query per month instead of
//! reading every record — and never serves a stale day.
//!
//! Each day a program has records for has an item `MET#<id>#<YYYY-MM>` / `DAY#<date>` with:
//! * `n_w`, `n_done` (`w`, `done` below): metric writes touching that day that started / finished.
//!   A block append adds 1 to both in the transaction that writes its blocks (atomic: nothing is
//!   in flight between them). The per-record layout's writers added 1 to `w` BEFORE writing
//!   their records and 1 to `done` after; the rule below serves both.
//! * `cached_w`, `data`: the day's `{"records", "m": {metric: [sum, count]}}` as computed from the
//!   raw records by a reader that saw `w = done = cached_w` before reading them.
//!
//! A reader uses `data` only while `w = done = cached_w`: any write to that day since (even one
//! in flight, even one that crashed between its two counters) makes it read the day's records
//! again. So a trend is always exactly what the records say. A day without an item has no
//! records (every record write creates it). Costs: a metrics request adds one update per day
//! touched to its one transaction; a trend reads the `DAY#` items (one query per month of the
//! window) plus, in one pass, the records of the span of days changed since they were cached,
//! and writes those days' sums back in one transaction.

use std::collections::{BTreeMap, BTreeSet};

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

use crate::backend::{attr, Item, Query, SkRange, WriteOp};
use crate::domain::ProgramId;
use crate::error::Result;
use crate::model::keys;
use crate::model::record::ProgramRecord;
use crate::storage::Storage;
use crate::tracking::metrics::Window;
use crate::tracking::record::{month_of, MetricRecord};
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
    /// The marks of an append on the days it touches: 1 added to both `w` and `done` of each,
    /// in the append's own transaction (its records and the marks commit together, so no write
    /// is ever in flight between them; a cached day whose `cached_w` is behind is read again).
    pub(crate) fn day_marks(id: &ProgramId, days: &BTreeSet<NaiveDate>) -> Vec<WriteOp> {
        days.iter()
            .map(|d| WriteOp::Add {
                pk: day_pk(id, d),
                sk: keys::metric_day_sk(d),
                add: vec![("n_w".to_owned(), 1), ("n_done".to_owned(), 1)],
                set: Vec::new(),
                remove: Vec::new(),
            })
            .collect()
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
        for month in crate::tracking::record::months_between(&window.from, &window.to) {
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
        // The days without valid sums are read in one pass over their span.
        let stale: Vec<NaiveDate> = states
            .iter()
            .filter(|(_, s)| s.cached.is_none())
            .map(|(d, _)| *d)
            .collect();
        let mut fresh: BTreeMap<NaiveDate, DaySums> =
            stale.iter().map(|d| (*d, DaySums::default())).collect();
        if let (Some(lo), Some(hi)) = (stale.first(), stale.last()) {
            let from = lo.and_hms_opt(0, 0, 0).expect("midnight").and_utc();
            let to = hi.and_hms_opt(0, 0, 0).expect("midnight").and_utc()
                + chrono::Duration::days(1)
                - chrono::Duration::milliseconds(1);
            self.read_metrics(program, Window { from, to }, |r| {
                if let Some(sums) = fresh.get_mut(&r.timestamp.date_naive()) {
                    sums.add(&r);
                }
            })
            .await?;
        }
        for (date, state) in &states {
            if let Some(sums) = &state.cached {
                acc.add_day(*date, &sums.m, sums.records);
                total += sums.records;
                continue;
            }
            let sums = fresh.remove(date).unwrap_or_default();
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
                    remove: Vec::new(),
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
