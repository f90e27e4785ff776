//! Metric records of a program: record one or a batch, read the history by time range.
//!
//! Records are stored in blocks (see [`crate::tracking::blocks`]): one item per append request
//! and calendar month, in ONE partition per program (`MET#<program id>#B`), sorted by the
//! block's first record. An append is one transaction (the program checked, the blocks put, the
//! days it touches marked, the report's counter added); a history read is one range read of the
//! partition per 1 MB of blocks, from the first block that may hold the page's first record.
//!
//! A record may carry a client-generated `record_id` (1–64 characters of `A-Za-z0-9_-`): the
//! program keeps each record id once. Its claim `MET#<program id>#RID` / `<record_id>` is put in
//! the transaction that writes the record's block (conditioned on the claim not existing), so a
//! retried append — same ids, whatever timestamps the server assigned the first time — writes
//! nothing twice and answers as the first did: the record's `id` is derived from the program and
//! the record id. A record without one gets an id derived from its block (see
//! [`crate::tracking::blocks::derived_uuid`]). A transaction whose answer was lost is sent again
//! as it was: its blocks' conditional puts tell whether the first try committed.
//!
//! Records of the per-record layout (one item per record at `MET#<program id>#<YYYY-MM>` /
//! `<timestamp>#<uuid>`, before blocks) are read beside the blocks until the store's layout item
//! says none is left (see [`crate::tracking::migrate`]).

use std::collections::BTreeMap;

use chrono::{DateTime, Datelike, Duration, NaiveDate, TimeZone, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

pub use crate::tracking::record::{claimed_uuid, month_of, months_between, MetricRecord};

use crate::access::Principal;
use crate::backend::{attr, Condition, Item, Query, SkRange, WriteOp};
use crate::domain::{format_time, parse_time, ProgramId};
use crate::error::{Error, Result};
use crate::model::keys;
use crate::model::record::{from_item, ProgramRecord};
use crate::paging::Kind;
use crate::storage::Storage;
use crate::tracking::blocks;

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
/// Largest page of history (records are small: a 10,000-record page is one read of blocks).
pub const MAX_HISTORY_PAGE: usize = 10_000;
/// A history page stops before its answer would exceed about this many bytes (records with
/// large environments), well under a Lambda answer's 6 MB.
pub const MAX_HISTORY_BYTES: usize = 4 << 20;
/// Records per page of an internal read (trends).
const READ_PAGE: usize = 10_000;
/// Items asked for per query of a block partition (DynamoDB also stops each page at 1 MB).
const BLOCKS_PER_QUERY: usize = 1000;
/// Longest client record id.
pub const MAX_RECORD_ID: usize = 64;
/// Operations of one transaction (DynamoDB's limit).
const MAX_TX_OPS: usize = 100;
/// Records with a record id per transaction (each has its claim in it).
pub const MAX_CLAIMED_PER_TX: usize = 80;
/// Approximate (uncompressed) bytes of records per transaction: DynamoDB takes 4 MB a
/// transaction; compressed blocks are smaller than this.
pub const MAX_TX_BYTES: usize = 3 << 20;
/// Tries of one append transaction (its outcome unknown, or records found claimed).
const APPEND_ATTEMPTS: u32 = 8;

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
    /// Position of the last record returned: `<timestamp>#<id>`.
    s: String,
    /// Sort key of the block the next page starts reading at (absent in cursors from before
    /// blocks: the next page starts at the month of `s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    b: Option<String>,
    /// Whether the next page starts after `b` rather than at it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    x: bool,
}

/// Where a history page starts: after the position of the last record returned, reading
/// blocks from `start`.
#[derive(Debug, Clone)]
struct HistoryPosition {
    pos: Pos,
    start: Option<BlockStart>,
}

/// The validated time window of a history read.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
}

/// A position in a program's history: the time and id of a record (records are ordered by both).
type Pos = (DateTime<Utc>, uuid::Uuid);

fn pos_of(r: &MetricRecord) -> Pos {
    (r.timestamp, r.id)
}

/// What one read of blocks found (see [`Storage::read_blocks`]).
struct BlockRead {
    /// Records after the start position and in the window, by position, every one of them
    /// before `frontier`.
    records: Vec<MetricRecord>,
    /// `None`: every block of the range was read. Otherwise the unread blocks start at or after
    /// this time (so every record before it is known).
    frontier: Option<DateTime<Utc>>,
    /// Each block read, in sort key order, with the last position it holds in the window.
    blocks: Vec<(String, Option<Pos>)>,
}

/// Where the next page starts reading blocks: a block sort key, inclusive or not.
#[derive(Debug, Clone, PartialEq, Eq)]
struct BlockStart {
    sk: String,
    exclusive: bool,
}

/// One page of a history read.
struct HistoryPage {
    records: Vec<MetricRecord>,
    more: bool,
    next_start: Option<BlockStart>,
}

/// The approximate JSON size of a record in an answer (a history page stops near
/// [`MAX_HISTORY_BYTES`]).
fn answer_bytes(r: &MetricRecord) -> usize {
    let env = if r.environment.is_empty() {
        2
    } else {
        serde_json::to_string(&r.environment).map_or(0, |s| s.len())
    };
    200 + env
        + r.record_id.as_ref().map_or(0, |s| s.len() + 16)
        + r.metrics.keys().map(|k| k.len() + 28).sum::<usize>()
}

impl Storage {
    /// Records metrics for a program `who` may see: `body` is one record or `{"records":
    /// [...]}`, each timestamped from [`EARLIEST`] to now (+ [`SKEW`]) — history from before the
    /// program was stored included. All records are validated before anything is written.
    ///
    /// Requests: one item read (the program, for its project) and one transaction: the program
    /// checked, the request's blocks put (conditioned on not existing), the claims of its record
    /// ids, the days it touches marked (see [`crate::tracking::rollup`]) and the report's counter.
    /// A request whose writes exceed one transaction (100 operations, [`MAX_TX_BYTES`]) is
    /// written in several, each whole; records with a record id go at most
    /// [`MAX_CLAIMED_PER_TX`] a transaction (each has its claim).
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
        let mut fresh: Vec<(usize, MetricRecord)> = Vec::new();
        let mut repeated = 0usize;
        for (i, r) in records.iter().enumerate() {
            match &r.record_id {
                Some(rid) if !seen.insert(rid.as_str()) => repeated += 1,
                _ => fresh.push((i, r.clone())),
            }
        }
        let mut ids: Vec<uuid::Uuid> = records.iter().map(|r| r.id).collect();
        let mut already = repeated;
        let groups = plan_groups(fresh);
        for group in groups {
            let (found, written) = self
                .append_group(&program, &uuid::Uuid::now_v7().to_string(), group)
                .await?;
            already += found;
            for (i, id) in written {
                ids[i] = id;
            }
        }
        Ok(Recorded {
            program_id: program.id,
            recorded: records.len(),
            ids,
            already_recorded: already,
        })
    }

    /// Writes one group of records (see [`plan_groups`]) in one transaction; returns how many
    /// were recorded already (their record id claimed) and the ids of the others, by request
    /// index. A transaction whose outcome is unknown (a lost answer) is sent again as it was:
    /// when its blocks exist, the first one committed. A transaction cancelled on claims is sent
    /// again without the records found claimed.
    async fn append_group(
        &self,
        program: &ProgramRecord,
        nonce: &str,
        group: Vec<(usize, MetricRecord)>,
    ) -> Result<(usize, Vec<(usize, uuid::Uuid)>)> {
        let id = &program.id;
        let mut pending = group;
        let mut already = 0usize;
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            if pending.is_empty() {
                return Ok((already, Vec::new()));
            }
            let (origin, records): (Vec<usize>, Vec<MetricRecord>) =
                pending.iter().cloned().unzip();
            let encoded = blocks::encode(id, nonce, records, blocks::Ids::Derived)?;
            let mut written = Vec::with_capacity(origin.len());
            for b in &encoded {
                for (r, at) in b.records.iter().zip(&b.origin) {
                    written.push((origin[*at], r.id));
                }
            }
            let mut ops = vec![WriteOp::Check {
                pk: keys::program_pk(id),
                sk: keys::PROG_SK.into(),
                condition: Condition::Exists,
            }];
            let first_block = ops.len();
            ops.extend(
                encoded
                    .iter()
                    .map(|b| WriteOp::put(b.item.clone(), Condition::NotExists)),
            );
            let first_claim = ops.len();
            let claimed: Vec<usize> = pending
                .iter()
                .enumerate()
                .filter(|(_, (_, r))| r.record_id.is_some())
                .map(|(i, _)| i)
                .collect();
            let claim_pk = keys::metric_record_ids_pk(id);
            for &i in &claimed {
                let r = &pending[i].1;
                ops.push(WriteOp::put(
                    Item::new(claim_pk.clone(), r.record_id.clone().unwrap_or_default())
                        .with(attr::DATA, r.id.to_string()),
                    Condition::NotExists,
                ));
            }
            let days: std::collections::BTreeSet<NaiveDate> = pending
                .iter()
                .map(|(_, r)| r.timestamp.date_naive())
                .collect();
            ops.extend(Self::day_marks(id, &days));
            ops.push(Self::metric_counter_op(program, pending.len()));
            let failed = match self.items.transact(ops).await {
                Ok(()) => return Ok((already, written)),
                Err(Error::ConditionFailed { ops }) => ops,
                // The outcome is unknown: send it again (its blocks tell whether it committed).
                Err(Error::Unavailable(e)) if attempt < APPEND_ATTEMPTS => {
                    tracing::debug!(error = %e, "metric append outcome unknown; sending it again");
                    continue;
                }
                Err(e) => return Err(e),
            };
            if failed.contains(&0) {
                return Err(crate::access::no_program(id));
            }
            if failed
                .iter()
                .any(|&op| (first_block..first_claim).contains(&op))
            {
                // Our own earlier try (its answer lost) wrote these blocks: done.
                return Ok((already, written));
            }
            let mut taken: std::collections::BTreeSet<usize> = failed
                .iter()
                .filter(|&&op| op >= first_claim && op < first_claim + claimed.len())
                .map(|&op| claimed[op - first_claim])
                .collect();
            if taken.is_empty() && !claimed.is_empty() {
                // The store could not tell which condition failed: read the claims.
                let keys: Vec<(String, String)> = claimed
                    .iter()
                    .map(|&i| {
                        (
                            claim_pk.clone(),
                            pending[i].1.record_id.clone().unwrap_or_default(),
                        )
                    })
                    .collect();
                for (k, found) in claimed.iter().zip(self.items.get_many(&keys).await?) {
                    if found.is_some() {
                        taken.insert(*k);
                    }
                }
            }
            if taken.is_empty() || attempt >= APPEND_ATTEMPTS {
                return Err(Error::Unavailable(format!(
                    "{} metric record(s) could not be written; retry them",
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
    /// program), then one range read of its block partition (more only past DynamoDB's 1 MB
    /// pages); records still in the per-record layout (see [`crate::tracking::migrate`]) add
    /// their month index and month partitions. A page holds at most `limit` records (≤
    /// [`MAX_HISTORY_PAGE`]) and stops near [`MAX_HISTORY_BYTES`] of answer.
    pub async fn metric_history(
        &self,
        who: &Principal,
        id: &ProgramId,
        from: Option<&str>,
        to: Option<&str>,
        limit: Option<usize>,
        cursor: Option<&str>,
    ) -> Result<History> {
        let limit = history_limit(limit)?;
        let program = self.get_record(who, id).await?;
        let after = cursor
            .map(|c| decode_history_cursor(self, who, c, id))
            .transpose()?;
        let window = Self::metric_window(from, to)?;
        let page = self
            .history_page(&program, window, after.as_ref(), limit, true)
            .await?;
        let next_cursor = match (page.more, page.records.last()) {
            (true, Some(r)) => Some(encode_history_cursor(
                self,
                who,
                id,
                &keys::metric_sk(&r.timestamp, &r.id),
                page.next_start.as_ref(),
            )),
            _ => None,
        };
        Ok(History {
            records: page.records,
            next_cursor,
        })
    }

    /// One page of records after `after` in `window`: blocks, merged with the per-record layout
    /// while the store may hold records in it. `bounded`: stop near [`MAX_HISTORY_BYTES`].
    async fn history_page(
        &self,
        program: &ProgramRecord,
        window: Window,
        after: Option<&HistoryPosition>,
        limit: usize,
        bounded: bool,
    ) -> Result<HistoryPage> {
        let pos = after.map(|a| a.pos);
        // First: a store that converts on read converts before its blocks are read.
        let legacy = self.legacy_metrics().await?;
        let blocks = self.read_blocks(&program.id, window, after, limit).await?;
        let legacy = if legacy {
            let months = self.history_months(program, window).await?;
            let mut got = Vec::new();
            let (_, more) = self
                .read_metrics_in(&program.id, months, window, pos, Some(limit + 1), |r| {
                    got.push(r)
                })
                .await?;
            Some((got, more))
        } else {
            None
        };
        // Every record known on both sides is before both sides' unknowns.
        let mut merged: BTreeMap<Pos, MetricRecord> = BTreeMap::new();
        let legacy_last = match &legacy {
            Some((got, true)) => got.last().map(pos_of),
            _ => None,
        };
        let known = |p: &Pos| {
            blocks.frontier.is_none_or(|f| p.0 < f) && legacy_last.is_none_or(|l| *p <= l)
        };
        for r in blocks
            .records
            .into_iter()
            .chain(legacy.into_iter().flat_map(|(got, _)| got))
        {
            let p = pos_of(&r);
            if known(&p) && pos.is_none_or(|a| p > a) {
                merged.entry(p).or_insert(r);
            }
        }
        let unknown_after = blocks.frontier.is_some() || legacy_last.is_some();
        let mut records = Vec::with_capacity(limit.min(merged.len()));
        let mut bytes = 0usize;
        let mut cut = false;
        for r in merged.into_values() {
            bytes += answer_bytes(&r);
            if records.len() == limit
                || (bounded && bytes > MAX_HISTORY_BYTES && !records.is_empty())
            {
                cut = true;
                break;
            }
            records.push(r);
        }
        let more = cut || unknown_after;
        let next_start = match records.last().map(pos_of) {
            Some(last) if more => {
                // The first block holding a record after this page; or past every block read.
                let open = blocks
                    .blocks
                    .iter()
                    .find(|(_, lp)| lp.is_some_and(|lp| lp > last));
                match (open, blocks.blocks.last()) {
                    (Some((sk, _)), _) => Some(BlockStart {
                        sk: sk.clone(),
                        exclusive: false,
                    }),
                    (None, Some((sk, _))) => Some(BlockStart {
                        sk: sk.clone(),
                        exclusive: true,
                    }),
                    (None, None) => after.and_then(|a| a.start.clone()),
                }
            }
            _ => None,
        };
        Ok(HistoryPage {
            records,
            more,
            next_start,
        })
    }

    /// Reads blocks of a program from `after` (or the window's start) in sort key order until
    /// more than `limit` records are known, or every block of the window is read. Blocks hold
    /// one month each and sort by their first record, so the blocks that may hold records at or
    /// after a time start at the first instant of its month (or at the block a cursor names).
    async fn read_blocks(
        &self,
        id: &ProgramId,
        window: Window,
        after: Option<&HistoryPosition>,
        limit: usize,
    ) -> Result<BlockRead> {
        let pk = keys::metric_blocks_pk(id);
        let pos = after.map(|a| a.pos);
        let from = pos.map_or(window.from, |p| p.0.max(window.from));
        let (lo, exclusive) = match after.and_then(|a| a.start.clone()) {
            Some(s) => (s.sk, s.exclusive),
            None => (format_time(&month_start(&from)), false),
        };
        let hi = format!("{}~", format_time(&window.to));
        let mut out = BlockRead {
            records: Vec::new(),
            frontier: None,
            blocks: Vec::new(),
        };
        if lo > hi {
            return Ok(out);
        }
        let mut found: BTreeMap<Pos, MetricRecord> = BTreeMap::new();
        let mut start = exclusive.then(|| {
            let mut k = crate::backend::PageKey::new();
            k.insert(attr::PK.into(), pk.clone());
            k.insert(attr::SK.into(), lo.clone());
            k
        });
        loop {
            let q = Query::new(crate::backend::Index::Table, pk.clone())
                .sk(SkRange::Between(lo.clone(), hi.clone()))
                .limit(BLOCKS_PER_QUERY)
                .start(start.take());
            let page = self.items.query(&q).await?;
            for item in &page.items {
                if !blocks::is_block(item) {
                    continue;
                }
                let mut last = None;
                for r in blocks::decode(id, item)? {
                    if r.timestamp < window.from || r.timestamp > window.to {
                        continue;
                    }
                    let p = pos_of(&r);
                    last = last.max(Some(p));
                    if pos.is_none_or(|a| p > a) {
                        found.insert(p, r);
                    }
                }
                out.blocks.push((item.sk.clone(), last));
            }
            match page.next {
                None => break,
                Some(n) => {
                    // Unread blocks start at or after the last block read.
                    let f = page
                        .items
                        .last()
                        .and_then(|i| i.sk.split('#').next())
                        .and_then(|t| parse_time("sk", t).ok())
                        .unwrap_or(from);
                    let known = found.range(..(f, uuid::Uuid::nil())).count();
                    if known > limit {
                        out.frontier = Some(f);
                        break;
                    }
                    start = Some(n);
                }
            }
        }
        out.records = match out.frontier {
            Some(f) => found
                .range(..(f, uuid::Uuid::nil()))
                .map(|(_, r)| r.clone())
                .collect(),
            None => found.into_values().collect(),
        };
        Ok(out)
    }

    /// Whether the store may hold metric records in the per-record layout: until the layout
    /// item says every record is in blocks (see [`crate::tracking::migrate`]). Read at most
    /// once a minute while it may; never again once it says so.
    pub(crate) async fn legacy_metrics(&self) -> Result<bool> {
        if let Some(legacy) = self.metric_layout.known() {
            return Ok(legacy);
        }
        let item = self
            .items
            .get(keys::STATUS_PK, keys::METRIC_LAYOUT_SK)
            .await?;
        let legacy = item.is_none();
        if legacy && self.convert_metrics_on_read {
            self.migrate_all_metrics().await?;
            return Ok(false);
        }
        self.metric_layout.set(legacy);
        Ok(legacy)
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
        // The program's own month holds records backfilled to before it was stored, too (the
        // index lists only earlier months).
        let own = month_start(&stored).max(window.from);
        if own <= window.to {
            months.extend(months_between(&own, &window.to));
        }
        months.sort();
        months.dedup();
        Ok(months)
    }

    /// Hands every record of a program in `window` to `sink`, oldest first, page by page
    /// ([`READ_PAGE`] records; memory does not grow with the records read). Returns how many
    /// were read.
    pub(crate) async fn read_metrics(
        &self,
        program: &ProgramRecord,
        window: Window,
        mut sink: impl FnMut(MetricRecord) + Send,
    ) -> Result<usize> {
        let mut after: Option<HistoryPosition> = None;
        let mut read = 0usize;
        loop {
            let page = self
                .history_page(program, window, after.as_ref(), READ_PAGE, false)
                .await?;
            let last = page.records.last().map(pos_of);
            read += page.records.len();
            page.records.into_iter().for_each(&mut sink);
            match (page.more, last) {
                (true, Some(pos)) => {
                    after = Some(HistoryPosition {
                        pos,
                        start: page.next_start,
                    })
                }
                _ => return Ok(read),
            }
        }
    }

    /// Reads records of the per-record layout in a window after the position `after` (if any),
    /// oldest first, at most `limit` (all when `None`), from the month partitions `months`,
    /// handing each to `sink`. Returns how many were read and whether more may follow.
    async fn read_metrics_in(
        &self,
        id: &ProgramId,
        months: Vec<String>,
        window: Window,
        after: Option<Pos>,
        limit: Option<usize>,
        mut sink: impl FnMut(MetricRecord) + Send,
    ) -> Result<(usize, bool)> {
        let after_sk = after.map(|(t, u)| keys::metric_sk(&t, &u));
        let start_time = after.map_or(window.from, |(t, _)| t.max(window.from));
        // Every sort key of a time starts with that time; '~' sorts after its '#<uuid>' suffix.
        let lo_sk = match &after_sk {
            Some(a) if after.is_some_and(|(t, _)| t >= window.from) => a.clone(),
            _ => format_time(&window.from),
        };
        let hi_sk = format!("{}~", format_time(&window.to));
        let mut read = 0usize;
        let first = month_of(&start_time);
        let months: Vec<String> = months.into_iter().filter(|m| *m >= first).collect();
        for month in &months {
            let pk = keys::metric_pk(id, month);
            // Sort keys of records (digits first) before the day items (`DAY#`).
            let lo = if *month == first {
                lo_sk.clone()
            } else {
                month.clone()
            };
            let mut start = None;
            loop {
                let want = limit.map_or(MAX_HISTORY_PAGE, |l| (l - read).min(MAX_HISTORY_PAGE));
                let q = Query::new(crate::backend::Index::Table, pk.clone())
                    .sk(SkRange::Between(lo.clone(), hi_sk.clone()))
                    .limit(want + 1)
                    .start(start.take());
                let page = self.items.query(&q).await?;
                for item in &page.items {
                    if Some(&item.sk) == after_sk.as_ref() || blocks::is_block(item) {
                        continue;
                    }
                    sink(from_item::<MetricRecord>(item)?);
                    read += 1;
                    if limit.is_some_and(|l| read >= l) {
                        return Ok((read, true));
                    }
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

/// The first instant of `t`'s month.
fn month_start(t: &DateTime<Utc>) -> DateTime<Utc> {
    Utc.from_utc_datetime(
        &NaiveDate::from_ymd_opt(t.year(), t.month(), 1)
            .expect("valid date")
            .and_hms_opt(0, 0, 0)
            .expect("valid time"),
    )
}

/// A history page's size: `limit`, 100 when not given; `400` outside `1..=MAX_HISTORY_PAGE`.
fn history_limit(limit: Option<usize>) -> Result<usize> {
    match limit {
        None => Ok(100),
        Some(0) => Err(Error::invalid("limit", "limit must be at least 1")),
        Some(n) if n > MAX_HISTORY_PAGE => Err(Error::invalid(
            "limit",
            format!("limit must be at most {MAX_HISTORY_PAGE}"),
        )),
        Some(n) => Ok(n),
    }
}

/// Splits a request's records into groups of one transaction each: records sorted by time,
/// a group closed before it would need more than 100 operations (the program check, the
/// counter, a block per month, a mark per day, a claim per record id), more than
/// [`MAX_CLAIMED_PER_TX`] record ids or more than [`MAX_TX_BYTES`] of records before
/// compression.
fn plan_groups(mut records: Vec<(usize, MetricRecord)>) -> Vec<Vec<(usize, MetricRecord)>> {
    records.sort_by_key(|(_, r)| r.timestamp);
    let mut groups = Vec::new();
    let mut group: Vec<(usize, MetricRecord)> = Vec::new();
    let (mut months, mut days) = (
        std::collections::BTreeSet::new(),
        std::collections::BTreeSet::new(),
    );
    let mut claims = 0usize;
    let mut bytes = 0usize;
    for (i, r) in records {
        let size = answer_bytes(&r);
        let new_month = !months.contains(&month_of(&r.timestamp));
        let new_day = !days.contains(&r.timestamp.date_naive());
        let claim = usize::from(r.record_id.is_some());
        // Blocks may split (size): leave room for a few more.
        let ops = 2
            + 4
            + months.len()
            + usize::from(new_month)
            + days.len()
            + usize::from(new_day)
            + claims
            + claim;
        if !group.is_empty()
            && (ops > MAX_TX_OPS
                || bytes + size > MAX_TX_BYTES
                || claims + claim > MAX_CLAIMED_PER_TX)
        {
            groups.push(std::mem::take(&mut group));
            months.clear();
            days.clear();
            claims = 0;
            bytes = 0;
        }
        bytes += size;
        months.insert(month_of(&r.timestamp));
        days.insert(r.timestamp.date_naive());
        claims += claim;
        group.push((i, r));
    }
    if !group.is_empty() {
        groups.push(group);
    }
    groups
}

fn encode_history_cursor(
    storage: &Storage,
    who: &Principal,
    id: &ProgramId,
    sk: &str,
    start: Option<&BlockStart>,
) -> String {
    let body = HistoryCursor {
        p: id.to_string(),
        s: sk.to_owned(),
        b: start.map(|s| s.sk.clone()),
        x: start.is_some_and(|s| s.exclusive),
    };
    crate::paging::seal(&storage.cursors, Kind::History, who, &body)
}

fn decode_history_cursor(
    storage: &Storage,
    who: &Principal,
    cursor: &str,
    id: &ProgramId,
) -> Result<HistoryPosition> {
    let body: HistoryCursor = crate::paging::open(&storage.cursors, Kind::History, who, cursor)?;
    if body.p != id.to_string() {
        return Err(Error::invalid(
            "cursor",
            "the cursor belongs to another program's history",
        ));
    }
    let malformed = || Error::invalid("cursor", "the cursor is malformed");
    let (time, rid) = body.s.split_once('#').ok_or_else(malformed)?;
    let time = parse_time("cursor", time).map_err(|_| malformed())?;
    let rid = uuid::Uuid::parse_str(rid).map_err(|_| malformed())?;
    let start = match body.b {
        Some(sk) => {
            let t = sk.split('#').next().unwrap_or_default();
            parse_time("cursor", t).map_err(|_| malformed())?;
            Some(BlockStart {
                sk,
                exclusive: body.x,
            })
        }
        None => None,
    };
    Ok(HistoryPosition {
        pos: (time, rid),
        start,
    })
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
        let u = uuid::Uuid::now_v7();
        let sk = keys::metric_sk(&t("2026-03-05T00:00:00Z"), &u);
        let start = BlockStart {
            sk: keys::metric_block_sk(&t("2026-03-01T00:00:00Z"), "n.0"),
            exclusive: true,
        };
        let c = encode_history_cursor(&s, who, &a, &sk, Some(&start));
        let opened = decode_history_cursor(&s, who, &c, &a).unwrap();
        assert_eq!(opened.pos, (t("2026-03-05T00:00:00Z"), u));
        assert_eq!(opened.start, Some(start));
        assert!(decode_history_cursor(&s, who, &c, &b).is_err());
        assert!(decode_history_cursor(&s, who, "nope", &a).is_err());
    }
}
