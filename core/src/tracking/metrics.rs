//! Metric records of a program: record one or a batch, read the history by time range.
//!
//! A record lives at `MET#<program id>#<YYYY-MM>` / `<timestamp>#<uuid>` (see [`crate::model::keys`]): one
//! partition per program and month, so a busy program's writes spread over partitions, and a
//! history read is one range query per page per month touched: its cost grows with the records
//! returned (and the months spanned), never with the length of the whole history.
//!
//! A record may carry a client-generated `record_id` (1–64 characters of `A-Za-z0-9_-`): the
//! program keeps each record id once. Such a record is written in one transaction with its claim
//! `MET#<program id>#RID` / `<record_id>` (conditioned on the claim not existing), so a retried
//! append — same ids, whatever timestamps the server assigned the first time — writes nothing
//! twice and answers as the first did: the record's `id` is derived from the program and the
//! record id. The claim is keyed by the record id alone, not by where the record lives, so a
//! layout that keeps records elsewhere (blocks of records) keeps the guarantee by writing the
//! claims in the transaction that appends to the block.
//!
//! Each request first marks the days it touches (see [`crate::tracking::rollup`]), then writes its
//! records, then marks those days done. Batches are written with [`ItemStore::batch_put_once`] in chunks of 25; every item the store
//! leaves unprocessed is retried with exponential backoff (full jitter) until written or the
//! attempts run out, which is an error (`503`) naming how many records were not written.

use std::collections::BTreeMap;

use chrono::{DateTime, Datelike, Duration, NaiveDate, TimeZone, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::access::Principal;
use crate::backend::{attr, Condition, Item, Query, SkRange, WriteOp};
use crate::domain::{format_time, parse_time, ProgramId};
use crate::error::{Error, Result};
use crate::model::keys;
use crate::model::record::{from_item, ProgramRecord};
use crate::paging::Kind;
use crate::storage::Storage;

/// Most records in one request.
pub const MAX_BATCH: usize = 1000;
/// Most metrics in one record.
pub const MAX_METRICS: usize = 64;
/// Largest environment object (serialized).
pub const MAX_ENVIRONMENT_BYTES: usize = 4096;
pub use crate::backend::{BATCH_ATTEMPTS, BATCH_CHUNK};
/// Clock skew tolerated between a client's timestamps and the server's.
pub const SKEW: Duration = Duration::minutes(5);
/// The earliest timestamp a record may carry (backfilled history from before the program was
/// stored is welcome; a time before this is a mistake).
pub const EARLIEST: &str = "2000-01-01T00:00:00Z";

/// [`EARLIEST`] as a time.
pub fn earliest() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(EARLIEST)
        .expect("a valid time")
        .with_timezone(&Utc)
}
/// Largest page of history.
pub const MAX_HISTORY_PAGE: usize = crate::paging::MAX_PAGE;
/// Longest client record id.
pub const MAX_RECORD_ID: usize = 64;
/// Records with a record id per transaction (each is two writes: the claim and the record).
const CLAIMED_CHUNK: usize = 50;
/// Attempts of one chunk of claimed records (each attempt leaves out the records found claimed).
const CLAIMED_ATTEMPTS: u32 = 8;

/// One metric record as stored and answered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricRecord {
    pub id: uuid::Uuid,
    /// The client's id of the record (kept once per program), when it sent one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record_id: Option<String>,
    pub program_id: ProgramId,
    /// When the metrics were measured (the client's `timestamp`, default the receive time).
    #[serde(with = "time_millis")]
    pub timestamp: DateTime<Utc>,
    pub metrics: BTreeMap<String, f64>,
    /// What the client sent about where it ran (dspy version, language, host, git commit, …).
    #[serde(default)]
    pub environment: Map<String, Value>,
    /// When the server received the record.
    #[serde(with = "time_millis")]
    pub received_at: DateTime<Utc>,
}

mod time_millis {
    use chrono::{DateTime, Utc};
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&crate::domain::format_time(t))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        let s = String::deserialize(d)?;
        DateTime::parse_from_rfc3339(&s)
            .map(|t| t.with_timezone(&Utc))
            .map_err(serde::de::Error::custom)
    }
}

impl MetricRecord {
    pub fn to_item(&self) -> Item {
        Item::new(
            keys::metric_pk(&self.program_id, &month_of(&self.timestamp)),
            keys::metric_sk(&self.timestamp, &self.id),
        )
        .with(
            attr::DATA,
            serde_json::to_string(self).expect("records serialize"),
        )
    }
}

/// The stored id of a record with a client record id: derived from the program and the record
/// id, so that every attempt of one append names the same records.
fn claimed_uuid(program: &ProgramId, record_id: &str) -> uuid::Uuid {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(format!("metric record\n{program}\n{record_id}"));
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_custom_bytes(bytes).into_uuid()
}

/// A client record id: 1-64 characters of `A-Za-z0-9_-`.
fn parse_record_id(value: &Value, field: &str) -> Result<String> {
    let ok = |s: &str| {
        !s.is_empty()
            && s.len() <= MAX_RECORD_ID
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-'))
    };
    match value {
        Value::String(s) if ok(s) => Ok(s.clone()),
        _ => Err(Error::invalid(
            field,
            format!("{field} must be a string of 1-{MAX_RECORD_ID} characters of A-Za-z0-9_-"),
        )),
    }
}

/// `YYYY-MM` of a time: the month partition it belongs to.
pub fn month_of(t: &DateTime<Utc>) -> String {
    format!("{:04}-{:02}", t.year(), t.month())
}

/// The first instant of the month after `t`'s.
fn next_month_start(t: &DateTime<Utc>) -> DateTime<Utc> {
    let (y, m) = if t.month() == 12 {
        (t.year() + 1, 1)
    } else {
        (t.year(), t.month() + 1)
    };
    Utc.from_utc_datetime(
        &NaiveDate::from_ymd_opt(y, m, 1)
            .expect("valid date")
            .and_hms_opt(0, 0, 0)
            .expect("valid time"),
    )
}

/// The month partitions covering `[from, to]`, oldest first.
pub fn months_between(from: &DateTime<Utc>, to: &DateTime<Utc>) -> Vec<String> {
    let mut out = Vec::new();
    let mut t = *from;
    while t <= *to {
        out.push(month_of(&t));
        t = next_month_start(&t);
    }
    out
}

/// A metric name: 1-64 characters of `A-Za-z0-9_.:-`.
pub fn validate_metric_name(name: &str, field: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':' | '-'));
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(
            field,
            format!("metric name {name:?} must be 1-64 characters of A-Za-z0-9_.:-"),
        ))
    }
}

/// Parses one record of a request (`{"metrics", "timestamp"?, "environment"?}`); `field` names
/// it in errors (`records[3]`).
fn parse_record(
    value: &Value,
    field: &str,
    program: &ProgramRecord,
    now: DateTime<Utc>,
) -> Result<MetricRecord> {
    let earliest = earliest();
    let obj = value.as_object().ok_or_else(|| {
        Error::invalid(field, format!("{field} must be an object with \"metrics\""))
    })?;
    let sub = |name: &str| {
        if field.is_empty() {
            name.to_owned()
        } else {
            format!("{field}.{name}")
        }
    };
    for k in obj.keys() {
        if !matches!(
            k.as_str(),
            "metrics" | "timestamp" | "environment" | "record_id"
        ) {
            return Err(Error::invalid(
                sub(k),
                format!(
                    "unknown field {k:?}; a record has metrics, timestamp, environment and record_id"
                ),
            ));
        }
    }
    let record_id = obj
        .get("record_id")
        .map(|v| parse_record_id(v, &sub("record_id")))
        .transpose()?;
    let mfield = sub("metrics");
    let metrics_obj = match obj.get("metrics") {
        Some(Value::Object(m)) => m,
        Some(_) => {
            return Err(Error::invalid(
                &mfield,
                format!("{mfield} must be an object of named numbers"),
            ))
        }
        None => return Err(Error::invalid(&mfield, format!("{mfield} is required"))),
    };
    if metrics_obj.is_empty() || metrics_obj.len() > MAX_METRICS {
        return Err(Error::invalid(
            &mfield,
            format!("{mfield} must have 1-{MAX_METRICS} metrics"),
        ));
    }
    let mut metrics = BTreeMap::new();
    for (name, v) in metrics_obj {
        validate_metric_name(name, &mfield)?;
        match v.as_f64() {
            Some(x) if x.is_finite() => {
                metrics.insert(name.clone(), x);
            }
            _ => {
                return Err(Error::invalid(
                    format!("{mfield}.{name}"),
                    format!("{mfield}.{name} must be a finite number"),
                ))
            }
        }
    }
    let tfield = sub("timestamp");
    let timestamp = match obj.get("timestamp") {
        None | Some(Value::Null) => now,
        Some(Value::String(s)) => parse_time(&tfield, s)?,
        Some(_) => {
            return Err(Error::invalid(
                &tfield,
                format!("{tfield} must be an RFC 3339 time"),
            ))
        }
    };
    // Stored times have millisecond precision.
    let timestamp = DateTime::from_timestamp_millis(timestamp.timestamp_millis()).unwrap_or(now);
    if timestamp > now + SKEW {
        return Err(Error::invalid(
            &tfield,
            format!(
                "{tfield} is in the future (more than {} minutes after the server's clock, {})",
                SKEW.num_minutes(),
                format_time(&now)
            ),
        ));
    }
    if timestamp < earliest {
        return Err(Error::invalid(
            &tfield,
            format!("{tfield} is before {EARLIEST}, the earliest time a record may carry"),
        ));
    }
    let efield = sub("environment");
    let environment = match obj.get("environment") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(m)) => {
            let size = serde_json::to_string(m).map(|s| s.len()).unwrap_or(0);
            if size > MAX_ENVIRONMENT_BYTES {
                return Err(Error::invalid(
                    &efield,
                    format!("{efield} is over {MAX_ENVIRONMENT_BYTES} bytes"),
                ));
            }
            m.clone()
        }
        Some(_) => {
            return Err(Error::invalid(
                &efield,
                format!("{efield} must be an object"),
            ))
        }
    };
    Ok(MetricRecord {
        id: record_id
            .as_deref()
            .map_or_else(uuid::Uuid::now_v7, |r| claimed_uuid(&program.id, r)),
        record_id,
        program_id: program.id,
        timestamp,
        metrics,
        environment,
        received_at: now,
    })
}

/// What `POST /programs/{id}/metrics` answers.
#[derive(Debug, Clone, Serialize)]
pub struct Recorded {
    pub program_id: ProgramId,
    /// Records of the request, all stored now (those already stored included).
    pub recorded: usize,
    pub ids: Vec<uuid::Uuid>,
    /// Records whose `record_id` the program already had (an earlier attempt, or twice in this
    /// request): not written again.
    pub already_recorded: usize,
}

/// A page of history.
#[derive(Debug, Clone, Serialize)]
pub struct History {
    pub records: Vec<MetricRecord>,
    pub next_cursor: Option<String>,
}

#[derive(Serialize, Deserialize)]
struct HistoryCursor {
    /// The program the cursor belongs to.
    p: String,
    /// Sort key of the last record returned.
    s: String,
}

/// The validated time window of a history read.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
}

impl Storage {
    /// Records metrics for a program `who` may see: `body` is one record or `{"records":
    /// [...]}`, each timestamped from [`EARLIEST`] to now (+ [`SKEW`]) — history from before the
    /// program was stored included. All records are validated before anything is written.
    pub async fn record_metrics(
        &self,
        who: &Principal,
        id: &ProgramId,
        body: &Value,
    ) -> Result<Recorded> {
        let program = self.get_record(who, id).await?;
        let now = crate::domain::now();
        let records: Vec<MetricRecord> = match body {
            Value::Object(o) if o.contains_key("records") => {
                if o.len() != 1 {
                    return Err(Error::invalid_request("a batch body has only \"records\""));
                }
                let list = o["records"].as_array().ok_or_else(|| {
                    Error::invalid("records", "records must be an array of records")
                })?;
                if list.is_empty() || list.len() > MAX_BATCH {
                    return Err(Error::invalid(
                        "records",
                        format!("records must hold 1-{MAX_BATCH} records"),
                    ));
                }
                list.iter()
                    .enumerate()
                    .map(|(i, v)| parse_record(v, &format!("records[{i}]"), &program, now))
                    .collect::<Result<_>>()?
            }
            Value::Object(_) => vec![parse_record(body, "", &program, now)?],
            _ => return Err(Error::invalid_request("the body must be a JSON object")),
        };
        // A record id twice in one request is one record (the first).
        let mut seen = std::collections::BTreeSet::new();
        let (mut plain, mut claimed) = (Vec::new(), Vec::new());
        let mut repeated = 0usize;
        for r in &records {
            match &r.record_id {
                None => plain.push(r.to_item()),
                Some(rid) if seen.insert(rid.as_str()) => claimed.push(r),
                Some(_) => repeated += 1,
            }
        }
        // Days touched: marked before the records are written and after (see `crate::tracking::rollup`).
        let days: std::collections::BTreeSet<NaiveDate> =
            records.iter().map(|r| r.timestamp.date_naive()).collect();
        // Months before the program's are listed in its month index (see `history_months`;
        // a retried record id counts again there: the index only says which months to read).
        let mut early: BTreeMap<String, i64> = BTreeMap::new();
        let created_month = month_of(&program.created_at);
        for r in &records {
            let m = month_of(&r.timestamp);
            if m < created_month {
                *early.entry(m).or_default() += 1;
            }
        }
        let index_ops = early
            .into_iter()
            .map(|(m, n)| WriteOp::Add {
                pk: keys::metric_months_pk(id),
                sk: m,
                add: vec![("n_records".into(), n)],
                set: Vec::new(),
            })
            .collect();
        self.mark_days(id, &days, "n_w", index_ops).await?;
        let written = async {
            let already = self.put_claimed(id, &claimed).await?;
            self.put_all(plain).await?;
            Ok::<_, Error>(already)
        }
        .await;
        let already = written.as_ref().map_or(0, |a| *a) + repeated;
        let counter = written
            .is_ok()
            .then(|| Self::metric_counter_op(&program, records.len() - already))
            .into_iter()
            .collect();
        let closed = self.mark_days(id, &days, "n_done", counter).await;
        written?;
        closed?;
        Ok(Recorded {
            program_id: program.id,
            recorded: records.len(),
            ids: records.iter().map(|r| r.id).collect(),
            already_recorded: already,
        })
    }

    /// Writes records that carry a record id, each in one transaction with its claim (the
    /// claim conditioned on not existing), [`CLAIMED_CHUNK`] records a transaction. A record
    /// whose claim exists is left out of the retried transaction. Returns how many were claimed
    /// already.
    async fn put_claimed(&self, id: &ProgramId, records: &[&MetricRecord]) -> Result<usize> {
        let claim_pk = keys::metric_record_ids_pk(id);
        let claim = |r: &MetricRecord| {
            let rid = r.record_id.as_deref().unwrap_or_default();
            WriteOp::put(
                Item::new(claim_pk.clone(), rid).with(attr::DATA, r.id.to_string()),
                Condition::NotExists,
            )
        };
        let mut already = 0usize;
        for chunk in records.chunks(CLAIMED_CHUNK) {
            let mut pending: Vec<&MetricRecord> = chunk.to_vec();
            let mut attempt = 0u32;
            while !pending.is_empty() {
                attempt += 1;
                let ops: Vec<WriteOp> = pending
                    .iter()
                    .flat_map(|r| [claim(r), WriteOp::put(r.to_item(), Condition::None)])
                    .collect();
                let taken: std::collections::BTreeSet<usize> = match self.items.transact(ops).await
                {
                    Ok(()) => break,
                    Err(Error::ConditionFailed { ops }) if !ops.is_empty() => {
                        ops.iter().map(|op| op / 2).collect()
                    }
                    Err(Error::ConditionFailed { .. }) => {
                        // The backend could not tell which claims exist: read them.
                        let mut taken = std::collections::BTreeSet::new();
                        for (i, r) in pending.iter().enumerate() {
                            let rid = r.record_id.as_deref().unwrap_or_default();
                            if self.items.get(&claim_pk, rid).await?.is_some() {
                                taken.insert(i);
                            }
                        }
                        taken
                    }
                    Err(e) => return Err(e),
                };
                if taken.is_empty() || attempt >= CLAIMED_ATTEMPTS {
                    return Err(Error::Unavailable(format!(
                        "{} metric record(s) with record ids could not be written; retry them",
                        pending.len()
                    )));
                }
                already += taken.len();
                pending = pending
                    .into_iter()
                    .enumerate()
                    .filter(|(i, _)| !taken.contains(i))
                    .map(|(_, r)| r)
                    .collect();
            }
        }
        Ok(already)
    }

    /// Writes items in chunks of 25, retrying every unprocessed item with backoff (see
    /// [`crate::backend::put_all`]).
    pub async fn put_all(&self, items: Vec<Item>) -> Result<()> {
        crate::backend::put_all(self.items.as_ref(), items).await
    }

    /// Parses the `from`/`to` of a history read, bounded by [`EARLIEST`] and now.
    pub fn metric_window(from: Option<&str>, to: Option<&str>) -> Result<Window> {
        let now = crate::domain::now();
        let from = from.map(|s| parse_time("from", s)).transpose()?;
        let to = to.map(|s| parse_time("to", s)).transpose()?;
        if let (Some(f), Some(t)) = (from, to) {
            if f > t {
                return Err(Error::invalid("from", "from must not be after to"));
            }
        }
        let floor = earliest();
        Ok(Window {
            from: from.map_or(floor, |f| f.max(floor)),
            to: to.map_or(now + SKEW, |t| t.min(now + SKEW)),
        })
    }

    /// One page of the history of a program `who` may see, oldest first: one item read (the
    /// program), one query of its month index when the window reaches before the program's month
    /// (backfilled records), then one range query per month partition touched.
    pub async fn metric_history(
        &self,
        who: &Principal,
        id: &ProgramId,
        from: Option<&str>,
        to: Option<&str>,
        limit: Option<usize>,
        cursor: Option<&str>,
    ) -> Result<History> {
        let limit = crate::paging::page_limit(limit)?;
        let program = self.get_record(who, id).await?;
        let after = cursor
            .map(|c| decode_history_cursor(self, who, c, id))
            .transpose()?;
        let window = Self::metric_window(from, to)?;
        let months = self.history_months(&program, window).await?;
        let mut records = Vec::with_capacity(limit.min(MAX_HISTORY_PAGE));
        let (_, more) = self
            .read_metrics_in(id, months, window, after.as_deref(), Some(limit), |r| {
                records.push(r)
            })
            .await?;
        let next_cursor = if more {
            records.last().map(|r| {
                encode_history_cursor(self, who, id, &keys::metric_sk(&r.timestamp, &r.id))
            })
        } else {
            None
        };
        Ok(History {
            records,
            next_cursor,
        })
    }

    /// The month partitions of a history window that may hold records: every month from the
    /// program's (less the clock skew) to the window's end, and before it only the months its
    /// month index lists (records backfilled from before the program was stored; one query, made
    /// only when the window reaches back that far).
    async fn history_months(&self, program: &ProgramRecord, window: Window) -> Result<Vec<String>> {
        let stored = program.created_at - SKEW;
        let mut months: Vec<String> = Vec::new();
        if window.from < stored {
            let (lo, hi) = (month_of(&window.from), month_of(&stored.min(window.to)));
            let mut start = None;
            loop {
                let q = Query::new(
                    crate::backend::Index::Table,
                    keys::metric_months_pk(&program.id),
                )
                .sk(SkRange::Between(lo.clone(), hi.clone()))
                .limit(1000)
                .start(start.take());
                let page = self.items.query(&q).await?;
                months.extend(page.items.into_iter().map(|i| i.sk));
                match page.next {
                    Some(n) => start = Some(n),
                    None => break,
                }
            }
        }
        if stored.max(window.from) <= window.to {
            months.extend(months_between(&stored.max(window.from), &window.to));
        }
        months.sort();
        months.dedup();
        Ok(months)
    }

    /// Reads a program's records in a window (after the sort key `after`, if any), oldest first,
    /// at most `limit` (all when `None`), handing each to `sink` page by page (memory does not
    /// grow with the records read). Returns how many were read and whether more may follow.
    pub(crate) async fn read_metrics(
        &self,
        id: &ProgramId,
        window: Window,
        after: Option<&str>,
        limit: Option<usize>,
        sink: impl FnMut(MetricRecord) + Send,
    ) -> Result<(usize, bool)> {
        let months = months_between(&window.from, &window.to);
        self.read_metrics_in(id, months, window, after, limit, sink)
            .await
    }

    /// [`Self::read_metrics`] over the month partitions `months` (oldest first) only.
    async fn read_metrics_in(
        &self,
        id: &ProgramId,
        months: Vec<String>,
        window: Window,
        after: Option<&str>,
        limit: Option<usize>,
        mut sink: impl FnMut(MetricRecord) + Send,
    ) -> Result<(usize, bool)> {
        let lo_sk = format_time(&window.from);
        // Every sort key of a time starts with that time; '~' sorts after its '#<uuid>' suffix.
        let hi_sk = format!("{}~", format_time(&window.to));
        let start_time = match after {
            Some(a) => {
                let t = parse_time("cursor", a.split('#').next().unwrap_or_default())?;
                t.max(window.from)
            }
            None => window.from,
        };
        let mut read = 0usize;
        let first = month_of(&start_time);
        let months: Vec<String> = months.into_iter().filter(|m| *m >= first).collect();
        for (mi, month) in months.iter().enumerate() {
            let pk = keys::metric_pk(id, month);
            let mut start = after
                .filter(|a| month_of_sk(a) == Some(month.as_str()))
                .map(|a| {
                    let mut k = crate::backend::PageKey::new();
                    k.insert(attr::PK.into(), pk.clone());
                    k.insert(attr::SK.into(), a.to_owned());
                    k
                });
            loop {
                let want = limit.map_or(MAX_HISTORY_PAGE, |l| (l - read).min(MAX_HISTORY_PAGE));
                let q = Query::new(crate::backend::Index::Table, pk.clone())
                    .sk(SkRange::Between(lo_sk.clone(), hi_sk.clone()))
                    .limit(want)
                    .start(start.take());
                let page = self.items.query(&q).await?;
                for item in &page.items {
                    sink(from_item::<MetricRecord>(item)?);
                    read += 1;
                }
                if limit.is_some_and(|l| read >= l) {
                    let more = page.next.is_some() || mi + 1 < months.len();
                    return Ok((read, more));
                }
                match page.next {
                    Some(n) => start = Some(n),
                    None => break,
                }
            }
        }
        Ok((read, false))
    }
}

/// The month of a metric sort key (`2026-11-25T…#uuid` → `2026-11`).
fn month_of_sk(sk: &str) -> Option<&str> {
    sk.get(0..7)
}

fn encode_history_cursor(storage: &Storage, who: &Principal, id: &ProgramId, sk: &str) -> String {
    let body = HistoryCursor {
        p: id.to_string(),
        s: sk.to_owned(),
    };
    crate::paging::seal(&storage.cursors, Kind::History, who, &body)
}

fn decode_history_cursor(
    storage: &Storage,
    who: &Principal,
    cursor: &str,
    id: &ProgramId,
) -> Result<String> {
    let body: HistoryCursor = crate::paging::open(&storage.cursors, Kind::History, who, cursor)?;
    if body.p != id.to_string() {
        return Err(Error::invalid(
            "cursor",
            "the cursor belongs to another program's history",
        ));
    }
    let malformed = || Error::invalid("cursor", "the cursor is malformed");
    let (time, rid) = body.s.split_once('#').ok_or_else(malformed)?;
    parse_time("cursor", time).map_err(|_| malformed())?;
    uuid::Uuid::parse_str(rid).map_err(|_| malformed())?;
    Ok(body.s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        parse_time("t", s).unwrap()
    }

    #[test]
    fn months_cover_the_range() {
        assert_eq!(
            months_between(&t("2025-11-30T23:00:00Z"), &t("2026-02-01T00:00:00Z")),
            vec!["2025-11", "2025-12", "2026-01", "2026-02"]
        );
        assert_eq!(
            months_between(&t("2026-03-05T00:00:00Z"), &t("2026-03-06T00:00:00Z")),
            vec!["2026-03"]
        );
    }

    #[test]
    fn cursors_belong_to_their_program() {
        let dir = tempfile::tempdir().unwrap();
        let s = crate::open::embedded(dir.path(), Default::default()).unwrap();
        let who = &*crate::access::OPERATOR;
        let a = ProgramId::new();
        let b = ProgramId::new();
        let sk = keys::metric_sk(&t("2026-03-05T00:00:00Z"), &uuid::Uuid::now_v7());
        let c = encode_history_cursor(&s, who, &a, &sk);
        assert_eq!(decode_history_cursor(&s, who, &c, &a).unwrap(), sk);
        assert!(decode_history_cursor(&s, who, &c, &b).is_err());
        assert!(decode_history_cursor(&s, who, "nope", &a).is_err());
    }
}
