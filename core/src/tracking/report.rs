//! Counters kept on write, trends of programs and signatures, and the monitoring report.
//!
//! Counters (see [`crate::model::keys`]) are per signature, so they never add a conflict: the store
//! transaction already writes the signature's head, so two stores that could conflict on a
//! signature's counter item already serialize on its head, and stores of different signatures
//! touch different counter items.
//! * `STATS#<project>#<sig>` / `STATS`: `n_programs` and `n_bytes` — an atomic `ADD` inside the store
//!   transaction (+1, +size) and inside the delete transaction (−1, −size) — and `n_d<YYYY-MM-DD>`,
//!   the programs stored that day.
//! * `…` / `METRICS`: `n_records` and `n_d<YYYY-MM-DD>`, added by each metrics request in its closing
//!   transaction (one `ADD` per request, not per record; see [`crate::tracking::rollup`]).
//! * The same update removes the day attributes just older than the last
//!   [`crate::model::counters::DAY_COUNTERS_KEPT`] days (`stale_day_attrs`), so these items, written
//!   by every store, stay small (each KB costs a store 2 write units) instead of growing a day at
//!   a time.
//! * `…` / `LOADS`: `n_loads`. A load costs NO extra request: each process counts loads in memory
//!   and writes them as one `ADD` per signature when the report is asked for, or in the
//!   background on the first load after [`LOAD_FLUSH_INTERVAL`]. Loads counted by a process that
//!   stops before its next flush are lost: load counts are a lower bound.
//!
//! The report reads every counter item with one GSI3 query per page (`STATS` partition: three
//! small items per signature): its cost grows with the number of signatures, never with the
//! number of programs or metric records.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};
use rand::seq::SliceRandom;
use serde::Serialize;
use serde_json::{json, Value};

use crate::access::Principal;
use crate::backend::{Index, Item, Query, SkRange, WriteOp};
use crate::domain::{format_time, ProgramId, ProgramStatus, Project, Signature};
use crate::error::{Error, Result};
use crate::model::counters::{
    counter_set, day_attr, stale_day_attrs, write_loads, DAY_COUNTERS_KEPT,
};
use crate::model::keys;
use crate::model::record::{from_item, ProgramRecord};
use crate::storage::no_versions;
use crate::storage::Storage;
use crate::tracking::metrics::Window;
use crate::tracking::trend::{DailyAccumulator, Trends};

/// Loads are written at most this often per process (besides every report).
pub use crate::model::counters::LOAD_FLUSH_INTERVAL;
/// Blobs checked by the report's integrity spot check.
pub const INTEGRITY_SAMPLE: usize = 5;
/// Signatures whose trends the report shows.
pub const REPORT_TREND_SIGNATURES: usize = 5;
/// Days of the report's activity and trends.
pub const RECENT_DAYS: i64 = 7;
// The counters keep the per-day attributes of the days the report shows.
const _: () = assert!(RECENT_DAYS <= DAY_COUNTERS_KEPT);
/// Most days a trend may span.
pub const MAX_TREND_DAYS: i64 = 3650;
/// Most programs a signature trend reads.
pub const MAX_SIGNATURE_PROGRAMS: usize = 1000;

fn num(item: &Item, name: &str) -> i64 {
    item.get(name).and_then(|v| v.parse().ok()).unwrap_or(0)
}

/// One signature's counters.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SignatureCounters {
    pub project: String,
    pub signature: String,
    pub programs: i64,
    pub bytes: i64,
    pub loads: i64,
    pub metric_records: i64,
    #[serde(skip)]
    stored_by_day: BTreeMap<String, i64>,
    #[serde(skip)]
    records_by_day: BTreeMap<String, i64>,
}

/// Ages and contents of the maintenance status items.
fn status_view(item: Option<Item>, now: &DateTime<Utc>) -> Value {
    let Some(item) = item else { return Value::Null };
    let data: Value = item
        .data()
        .and_then(|d| serde_json::from_str(d).ok())
        .unwrap_or(Value::Null);
    let age = data
        .get("finished_at")
        .and_then(Value::as_str)
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .map(|t| (*now - t.with_timezone(&Utc)).num_seconds());
    json!({"status": data, "age_seconds": age})
}

/// The integrity spot check of one program's blob.
#[derive(Debug, Clone, Serialize)]
pub struct BlobCheck {
    pub id: ProgramId,
    pub signature: String,
    pub ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A trend read: the trends and what was read.
#[derive(Debug, Clone, Serialize)]
pub struct TrendAnswer {
    pub window: TrendWindow,
    #[serde(flatten)]
    pub trends: Trends,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub programs: Vec<Value>,
}

#[derive(Debug, Clone, Serialize)]
pub struct TrendWindow {
    pub days: i64,
    pub from: String,
    pub to: String,
}

/// The window of `?days=N`: from the start of the UTC day N−1 days ago until now.
pub fn trend_window(days: Option<i64>) -> Result<(i64, Window)> {
    let days = days.unwrap_or(90);
    if !(1..=MAX_TREND_DAYS).contains(&days) {
        return Err(Error::invalid(
            "days",
            format!("days must be 1-{MAX_TREND_DAYS}"),
        ));
    }
    let now = crate::domain::now();
    let first_day = now.date_naive() - Duration::days(days - 1);
    let from = first_day.and_hms_opt(0, 0, 0).expect("midnight").and_utc();
    Ok((
        days,
        Window {
            from,
            to: now + crate::tracking::metrics::SKEW,
        },
    ))
}

impl Storage {
    /// Counts a load of a program (no request; see the module doc).
    pub(crate) fn count_load(&self, record: &ProgramRecord) {
        if let Some(due) = self.loads.count(&record.project, &record.signature) {
            let items = self.items.clone();
            tokio::spawn(async move {
                let failed = write_loads(items.as_ref(), due).await;
                if !failed.is_empty() {
                    tracing::warn!(signatures = failed.len(), "load counts not written");
                }
            });
        }
    }

    /// Writes this process's pending load counts now.
    pub async fn flush_load_counts(&self) {
        let counts = self.loads.take();
        let failed = write_loads(self.items.as_ref(), counts).await;
        self.loads.put_back(failed);
    }

    /// The counter update of a metrics request (records received today, per signature); it
    /// rides in the request's closing transaction (see [`crate::tracking::rollup`]).
    pub(crate) fn metric_counter_op(program: &ProgramRecord, records: usize) -> WriteOp {
        let today = crate::domain::now().date_naive();
        WriteOp::Add {
            pk: keys::stats_pk(&program.project, &program.signature),
            sk: keys::METRICS_SK.into(),
            add: vec![
                ("n_records".to_owned(), records as i64),
                (day_attr(today), records as i64),
            ],
            set: counter_set(&program.project, &program.signature, keys::METRICS_SK),
            remove: stale_day_attrs(today),
        }
    }

    /// Every signature's counters: one GSI3 query per page of the `STATS` partition.
    pub(crate) async fn signature_counters(&self) -> Result<Vec<SignatureCounters>> {
        let mut by_sig: BTreeMap<(String, String), SignatureCounters> = BTreeMap::new();
        let mut start = None;
        loop {
            let page = self
                .items
                .query(
                    &Query::new(Index::Gsi3, keys::STATS_INDEX_PK)
                        .limit(1000)
                        .start(start),
                )
                .await?;
            for item in &page.items {
                let (Some(p), Some(s)) = (item.get("project"), item.get("signature")) else {
                    continue;
                };
                let c = by_sig
                    .entry((p.to_owned(), s.to_owned()))
                    .or_insert_with(|| SignatureCounters {
                        project: p.to_owned(),
                        signature: s.to_owned(),
                        ..SignatureCounters::default()
                    });
                let days = || {
                    item.attrs
                        .iter()
                        .filter(|(k, _)| k.starts_with("n_d") && k.len() == 13)
                        .map(|(k, v)| (k[3..].to_owned(), v.parse().unwrap_or(0)))
                        .collect::<BTreeMap<String, i64>>()
                };
                match item.sk.as_str() {
                    keys::STATS_SK => {
                        c.programs = num(item, "n_programs");
                        c.bytes = num(item, "n_bytes");
                        c.stored_by_day = days();
                    }
                    keys::LOADS_SK => c.loads = num(item, "n_loads"),
                    keys::METRICS_SK => {
                        c.metric_records = num(item, "n_records");
                        c.records_by_day = days();
                    }
                    _ => {}
                }
            }
            match page.next {
                Some(n) => start = Some(n),
                None => break,
            }
        }
        Ok(by_sig.into_values().collect())
    }

    /// Trends of one program `who` may see over the last `days` days.
    pub async fn program_trends(
        &self,
        who: &Principal,
        id: &ProgramId,
        days: Option<i64>,
    ) -> Result<TrendAnswer> {
        let (days, window) = trend_window(days)?;
        let program = self.get_record(who, id).await?;
        self.trends_over(&program, days, window).await
    }

    /// [`Self::program_trends`] of a program whose record is in hand (read with
    /// [`Self::get_record`]; checked against `who` again, which costs no request).
    pub async fn program_trends_of(
        &self,
        who: &Principal,
        program: &ProgramRecord,
        days: Option<i64>,
    ) -> Result<TrendAnswer> {
        who.see_record(program)?;
        let (days, window) = trend_window(days)?;
        self.trends_over(program, days, window).await
    }

    async fn trends_over(
        &self,
        program: &ProgramRecord,
        days: i64,
        window: Window,
    ) -> Result<TrendAnswer> {
        let mut acc = DailyAccumulator::default();
        self.accumulate_days(program, window, &mut acc).await?;
        Ok(TrendAnswer {
            window: window_view(days, &window),
            trends: acc.finish(),
            programs: Vec::new(),
        })
    }

    /// Trends across a signature's versions (in a project `who` may see): every version's
    /// records merged by day. Reads the signature's programs (one GSI1 query per page), then each
    /// one's records in the window.
    pub async fn signature_trends(
        &self,
        who: &Principal,
        project: &Project,
        signature: &Signature,
        days: Option<i64>,
    ) -> Result<TrendAnswer> {
        who.see(project, || no_versions(project, signature))?;
        self.signature_trends_in(project, signature, days).await
    }

    async fn signature_trends_in(
        &self,
        project: &Project,
        signature: &Signature,
        days: Option<i64>,
    ) -> Result<TrendAnswer> {
        let (days, window) = trend_window(days)?;
        let programs = self.signature_programs(project, signature).await?;
        if programs.is_empty() {
            return Err(no_versions(project, signature));
        }
        let mut acc = DailyAccumulator::default();
        let mut views = Vec::new();
        for p in &programs {
            let n = self.accumulate_days(p, window, &mut acc).await?;
            views.push(json!({"id": p.id, "version": p.version, "records": n}));
        }
        Ok(TrendAnswer {
            window: window_view(days, &window),
            trends: acc.finish(),
            programs: views,
        })
    }

    async fn signature_programs(
        &self,
        project: &Project,
        signature: &Signature,
    ) -> Result<Vec<ProgramRecord>> {
        let pk = keys::signature_pk(project, signature);
        let mut out = Vec::new();
        let mut start = None;
        loop {
            let page = self
                .items
                .query(
                    &Query::new(Index::Gsi1, pk.clone())
                        .sk(SkRange::All)
                        .limit(1000)
                        .start(start),
                )
                .await?;
            for item in &page.items {
                out.push(from_item::<ProgramRecord>(item)?);
            }
            match page.next {
                Some(n) if out.len() < MAX_SIGNATURE_PROGRAMS => start = Some(n),
                _ => break,
            }
        }
        Ok(out)
    }

    /// Reads and verifies a program's blob without the program cache.
    async fn check_blob(&self, id: &ProgramId) -> Result<()> {
        let record = self.record(id).await?;
        if record.status != ProgramStatus::Active {
            return Ok(());
        }
        let stored = self.blobs.get(&record.blob_key).await?;
        self.decode_blob(&stored, &record.blob).await.map(|_| ())
    }

    /// The monitoring report (see the module doc for what it costs) over the projects `who` may
    /// see: every count, list, trend and integrity sample covers those projects only. Storage
    /// health (orphans, last backup and cleanup) is store-wide and shown to every caller.
    pub async fn report(&self, who: &Principal) -> Result<Value> {
        self.flush_load_counts().await;
        let now = crate::domain::now();
        let mut counters = self.signature_counters().await?;
        counters.retain(|c| who.may_see(&c.project));
        let total_programs: i64 = counters.iter().map(|c| c.programs).sum();
        let storage_size: i64 = counters.iter().map(|c| c.bytes).sum();

        let days: Vec<String> = (0..RECENT_DAYS)
            .rev()
            .map(|i| (now.date_naive() - Duration::days(i)).to_string())
            .collect();
        let by_day: Vec<Value> = days
            .iter()
            .map(|d| {
                let stored: i64 = counters
                    .iter()
                    .map(|c| c.stored_by_day.get(d).copied().unwrap_or(0))
                    .sum();
                let records: i64 = counters
                    .iter()
                    .map(|c| c.records_by_day.get(d).copied().unwrap_or(0))
                    .sum();
                json!({"date": d, "programs_stored": stored, "metric_records": records})
            })
            .collect();
        let sum_of = |key: &str| {
            by_day
                .iter()
                .map(|v| v[key].as_i64().unwrap_or(0))
                .sum::<i64>()
        };
        let recent_activity = json!({
            "days": RECENT_DAYS,
            "programs_stored": sum_of("programs_stored"),
            "metric_records": sum_of("metric_records"),
            "by_day": by_day,
        });

        let live: Vec<&SignatureCounters> = counters.iter().filter(|c| c.programs > 0).collect();
        let mut by_programs = live.clone();
        by_programs.sort_by(|a, b| b.programs.cmp(&a.programs).then(b.bytes.cmp(&a.bytes)));
        let mut by_loads = live.clone();
        by_loads.sort_by(|a, b| b.loads.cmp(&a.loads).then(b.programs.cmp(&a.programs)));
        let top = |v: &[&SignatureCounters]| -> Vec<SignatureCounters> {
            v.iter().take(10).map(|c| (*c).clone()).collect()
        };

        let mut performance_trends = Vec::new();
        for c in by_programs.iter().take(REPORT_TREND_SIGNATURES) {
            let (Ok(p), Ok(s)) = (Project::parse(&c.project), Signature::parse(&c.signature))
            else {
                continue;
            };
            match self.signature_trends_in(&p, &s, Some(30)).await {
                Ok(t) => {
                    let metrics: BTreeMap<&String, Value> = t
                        .trends
                        .metrics
                        .iter()
                        .map(|(name, m)| {
                            (name, json!({"current": m.current, "trend": m.trend, "slope_per_day": m.slope_per_day, "change_30d": m.change_30d}))
                        })
                        .collect();
                    performance_trends.push(json!({"project": c.project, "signature": c.signature, "days": 30, "records": t.trends.records, "metrics": metrics}));
                }
                Err(Error::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }

        // Integrity spot check: the latest version of up to INTEGRITY_SAMPLE random signatures.
        let mut sample: Vec<&SignatureCounters> = live.clone();
        sample.shuffle(&mut rand::thread_rng());
        let mut checks = Vec::new();
        for c in sample.into_iter().take(INTEGRITY_SAMPLE) {
            let (Ok(p), Ok(s)) = (Project::parse(&c.project), Signature::parse(&c.signature))
            else {
                continue;
            };
            let Ok(head) = self.head(&p, &s).await else {
                continue;
            };
            let result = self.check_blob(&head.latest_id).await;
            checks.push(BlobCheck {
                id: head.latest_id,
                signature: c.signature.clone(),
                ok: result.is_ok(),
                error: result.err().map(|e| e.to_string()),
            });
        }
        let cleanup = self
            .items
            .get(keys::STATUS_PK, keys::CLEANUP_STATUS_SK)
            .await?;
        let backup = self
            .items
            .get(keys::STATUS_PK, keys::BACKUP_STATUS_SK)
            .await?;
        let orphan_blobs = cleanup
            .as_ref()
            .and_then(|i| i.data())
            .and_then(|d| serde_json::from_str::<Value>(d).ok())
            .and_then(|v| {
                let s = v.get("summary")?;
                // What the last cleanup run found (and, unless a dry run, collected).
                s.get("orphan_blobs_collected").cloned()
            })
            .unwrap_or(Value::Null);
        let failed = checks.iter().filter(|c| !c.ok).count();
        Ok(json!({
            "generated_at": format_time(&now),
            "total_programs": total_programs,
            "storage_size": storage_size,
            "signatures": live.len(),
            "recent_activity": recent_activity,
            "top_signatures": {"by_programs": top(&by_programs), "by_loads": top(&by_loads)},
            "performance_trends": performance_trends,
            "storage_health": {
                "orphan_blobs": orphan_blobs,
                "last_backup": status_view(backup, &now),
                "last_cleanup": status_view(cleanup, &now),
                "integrity_check": {"sampled": checks.len(), "failed": failed, "checks": checks},
            },
        }))
    }
}

fn window_view(days: i64, w: &Window) -> TrendWindow {
    TrendWindow {
        days,
        from: format_time(&w.from),
        to: format_time(&w.to),
    }
}
