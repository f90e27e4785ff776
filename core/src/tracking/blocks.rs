//! Metric blocks: many metric records in one item.
//!
//! A program's records live in ONE partition, `MET#<program id>#B`, as blocks: the records one
//! append request wrote for one calendar month (UTC), packed column by column into JSON and
//! compressed with zstd, in the binary attribute [`PAYLOAD`] (DynamoDB `B`, see
//! [`crate::backend::attr::BINARY_PREFIX`]). The sort key is the block's first timestamp and a
//! name unique to the request, `<first timestamp>#<uuid>.<n>` ([`crate::model::keys::metric_block_sk`]:
//! a UUID v7 per transaction of the request, or for converted records one derived from their ids),
//! so blocks sort by their first record and a history read is a range read of that one partition.
//!
//! Payload (before compression), every column in the order of the records (sorted by time):
//! ```text
//! {"v": 1,
//!  "t": [first ms since the epoch, then the difference to the previous record, …],
//!  "r": received_at (ms),            "ra": [received_at − r, …]   (only when they differ)
//!  "m": {"<metric>": [value or null, …], …},
//!  "rid": [record_id or null, …],    (only when a record has one)
//!  "id": ["<uuid>", …],              (only for records converted from the per-record layout)
//!  "e": [distinct environments], "ei": [index into e, …]  (absent: every environment is {};
//!                                                           "ei" absent: every record has e[0])}
//! ```
//! A record's `id` is not stored: a record with a `record_id` has the id derived from the
//! program and the record id (as before blocks), any other the id derived from the program,
//! the block's sort key and its position in the block. Only records converted from the
//! per-record layout (ids that were answered already) carry their ids.

use std::collections::BTreeMap;

use base64::Engine;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::backend::Item;
use crate::domain::ProgramId;
use crate::error::{Error, Result};
use crate::model::keys;
use crate::tracking::record::{claimed_uuid, month_of, MetricRecord};

/// The attribute holding a block's compressed payload (base64 in an [`Item`], binary in DynamoDB).
pub const PAYLOAD: &str = "b_records";
/// The attribute holding a block's record count (a number, readable without decoding).
pub const COUNT: &str = "n_records";
/// The attribute holding a block's last timestamp (RFC 3339, ms).
pub const LAST: &str = "last";
/// Largest compressed payload of one block: well under DynamoDB's 400 KB item limit (the keys
/// and the other attributes take the rest). A larger group of records is split.
pub const MAX_PAYLOAD_BYTES: usize = 256 * 1024;
/// zstd level of block payloads (blocks are written once and read many times).
const LEVEL: i32 = 9;

#[derive(Debug, Default, Serialize, Deserialize)]
struct Payload {
    v: u32,
    t: Vec<i64>,
    r: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ra: Option<Vec<i64>>,
    m: BTreeMap<String, Vec<Option<f64>>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    rid: Option<Vec<Option<String>>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    id: Option<Vec<uuid::Uuid>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    e: Vec<Map<String, Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ei: Option<Vec<u32>>,
}

/// The id of the `index`-th record of the block at `sk` (records without a `record_id`).
pub fn derived_uuid(program: &ProgramId, sk: &str, index: usize) -> uuid::Uuid {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(format!("metric block record\n{program}\n{sk}\n{index}"));
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_custom_bytes(bytes).into_uuid()
}

/// How the ids of a block's records are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ids {
    /// Derived (new records): the records' `id`s are replaced by the derived ones.
    Derived,
    /// Stored as they are (records converted from the per-record layout).
    Kept,
}

/// One encoded block, ready to be written.
#[derive(Debug, Clone)]
pub struct EncodedBlock {
    pub item: Item,
    /// The records as they will read back (ids assigned), in block order.
    pub records: Vec<MetricRecord>,
    /// For each record, its index in the records given to [`encode`].
    pub origin: Vec<usize>,
}

/// Encodes `records` (all of one program and one month, sorted by time) as one block at `sk`.
/// With [`Ids::Derived`] the records' ids become the derived ones (a record with a
/// `record_id` keeps its id, which is derived from it).
fn encode_one(
    program: &ProgramId,
    sk: String,
    mut records: Vec<MetricRecord>,
    ids: Ids,
) -> Result<(Vec<u8>, EncodedBlock)> {
    let mut p = Payload {
        v: 1,
        ..Payload::default()
    };
    let n = records.len();
    let mut prev = 0i64;
    for r in &records {
        let ms = r.timestamp.timestamp_millis();
        p.t.push(ms - prev);
        prev = ms;
    }
    p.r = records
        .first()
        .map_or(0, |r| r.received_at.timestamp_millis());
    if records
        .iter()
        .any(|r| r.received_at.timestamp_millis() != p.r)
    {
        p.ra = Some(
            records
                .iter()
                .map(|r| r.received_at.timestamp_millis() - p.r)
                .collect(),
        );
    }
    for (i, r) in records.iter().enumerate() {
        for (name, v) in &r.metrics {
            p.m.entry(name.clone()).or_insert_with(|| vec![None; n])[i] = Some(*v);
        }
    }
    if records.iter().any(|r| r.record_id.is_some()) {
        p.rid = Some(records.iter().map(|r| r.record_id.clone()).collect());
    }
    if records.iter().any(|r| !r.environment.is_empty()) {
        let mut index: Vec<u32> = Vec::with_capacity(n);
        for r in &records {
            let at = match p.e.iter().position(|e| *e == r.environment) {
                Some(at) => at,
                None => {
                    p.e.push(r.environment.clone());
                    p.e.len() - 1
                }
            };
            index.push(at as u32);
        }
        if index.iter().any(|i| *i != 0) {
            p.ei = Some(index);
        }
    }
    match ids {
        Ids::Kept => p.id = Some(records.iter().map(|r| r.id).collect()),
        Ids::Derived => {
            for (i, r) in records.iter_mut().enumerate() {
                r.id = match &r.record_id {
                    Some(rid) => claimed_uuid(program, rid),
                    None => derived_uuid(program, &sk, i),
                };
            }
        }
    }
    let json = serde_json::to_vec(&p).map_err(|e| Error::Internal(format!("block: {e}")))?;
    let bytes =
        zstd::bulk::compress(&json, LEVEL).map_err(|e| Error::Internal(format!("zstd: {e}")))?;
    let last = records.last().map(|r| r.timestamp).unwrap_or_default();
    let item = Item::new(keys::metric_blocks_pk(program), sk)
        .with(
            PAYLOAD,
            base64::engine::general_purpose::STANDARD.encode(&bytes),
        )
        .with(COUNT, n.to_string())
        .with(LAST, crate::domain::format_time(&last));
    Ok((
        bytes,
        EncodedBlock {
            item,
            records,
            origin: Vec::new(),
        },
    ))
}

/// Encodes records of one program as blocks: one or more per calendar month (split so that no
/// payload exceeds [`MAX_PAYLOAD_BYTES`]), named `<first ts>#<nonce>.<n>`. Records are sorted by
/// time (records of one time keep their order).
pub fn encode(
    program: &ProgramId,
    nonce: &str,
    records: Vec<MetricRecord>,
    ids: Ids,
) -> Result<Vec<EncodedBlock>> {
    let mut records: Vec<(usize, MetricRecord)> = records.into_iter().enumerate().collect();
    records.sort_by_key(|(_, r)| r.timestamp);
    let mut by_month: BTreeMap<String, Vec<(usize, MetricRecord)>> = BTreeMap::new();
    for (i, r) in records {
        by_month
            .entry(month_of(&r.timestamp))
            .or_default()
            .push((i, r));
    }
    let mut out = Vec::new();
    for group in by_month.into_values() {
        let mut pending = vec![group];
        while let Some(group) = pending.pop() {
            let Some((_, first)) = group.first() else {
                continue;
            };
            let sk = keys::metric_block_sk(&first.timestamp, &format!("{nonce}.{}", out.len()));
            let len = group.len();
            let (origin, records): (Vec<usize>, Vec<MetricRecord>) = group.iter().cloned().unzip();
            let (bytes, mut block) = encode_one(program, sk, records, ids)?;
            if bytes.len() > MAX_PAYLOAD_BYTES && len > 1 {
                // Too large: split in halves (the earlier half is encoded first).
                let mut first_half = group;
                let second = first_half.split_off(len / 2);
                pending.push(second);
                pending.push(first_half);
                continue;
            }
            if bytes.len() > MAX_PAYLOAD_BYTES {
                return Err(Error::Internal(
                    "one metric record does not fit a block".into(),
                ));
            }
            block.origin = origin;
            out.push(block);
        }
    }
    Ok(out)
}

/// Whether metric records may still be in the per-record layout, as a process last read it: a
/// store that says none is left is never asked again; one that may hold some is asked again
/// after [`LayoutState::RECHECK`] (a conversion may have finished meanwhile).
#[derive(Debug, Default)]
pub struct LayoutState(std::sync::Mutex<Option<(bool, std::time::Instant)>>);

impl LayoutState {
    pub const RECHECK: std::time::Duration = std::time::Duration::from_secs(60);

    /// `Some(legacy)` while the last answer holds.
    pub fn known(&self) -> Option<bool> {
        let state = self.0.lock().unwrap_or_else(|e| e.into_inner());
        match *state {
            Some((false, _)) => Some(false),
            Some((true, at)) if at.elapsed() < Self::RECHECK => Some(true),
            _ => None,
        }
    }

    pub fn set(&self, legacy: bool) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) =
            Some((legacy, std::time::Instant::now()));
    }
}

/// Whether an item of a metric partition is a block (blocks carry [`PAYLOAD`]).
pub fn is_block(item: &Item) -> bool {
    item.get(PAYLOAD).is_some()
}

/// The records of a block item, in block order (by time).
pub fn decode(program: &ProgramId, item: &Item) -> Result<Vec<MetricRecord>> {
    let bad = |why: String| Error::Integrity(format!("metric block {}: {why}", item.sk));
    let text = item.get(PAYLOAD).ok_or_else(|| bad("no payload".into()))?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text)
        .map_err(|e| bad(e.to_string()))?;
    let json =
        zstd::stream::decode_all(std::io::Cursor::new(bytes)).map_err(|e| bad(e.to_string()))?;
    let p: Payload = serde_json::from_slice(&json).map_err(|e| bad(e.to_string()))?;
    if p.v != 1 {
        return Err(bad(format!(
            "payload version {} is unknown to this build",
            p.v
        )));
    }
    let n = p.t.len();
    let column_ok = |len: usize| len == n;
    if !p.m.values().all(|c| column_ok(c.len()))
        || !p.ra.as_ref().is_none_or(|c| column_ok(c.len()))
        || !p.rid.as_ref().is_none_or(|c| column_ok(c.len()))
        || !p.id.as_ref().is_none_or(|c| column_ok(c.len()))
        || !p.ei.as_ref().is_none_or(|c| column_ok(c.len()))
    {
        return Err(bad("columns of different lengths".into()));
    }
    let time = |ms: i64| {
        DateTime::<Utc>::from_timestamp_millis(ms).ok_or_else(|| bad(format!("time {ms}")))
    };
    let mut out = Vec::with_capacity(n);
    let mut ms = 0i64;
    for i in 0..n {
        ms += p.t[i];
        let record_id = p.rid.as_ref().and_then(|c| c[i].clone());
        let id = match (&p.id, &record_id) {
            (Some(ids), _) => ids[i],
            (None, Some(rid)) => claimed_uuid(program, rid),
            (None, None) => derived_uuid(program, &item.sk, i),
        };
        let environment = if p.e.is_empty() {
            Map::new()
        } else {
            let at = p.ei.as_ref().map_or(0, |c| c[i] as usize);
            p.e.get(at)
                .cloned()
                .ok_or_else(|| bad(format!("environment {at}")))?
        };
        out.push(MetricRecord {
            id,
            record_id,
            program_id: *program,
            timestamp: time(ms)?,
            metrics: p
                .m
                .iter()
                .filter_map(|(name, c)| c[i].map(|v| (name.clone(), v)))
                .collect(),
            environment,
            received_at: time(p.r + p.ra.as_ref().map_or(0, |c| c[i]))?,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn record(program: &ProgramId, i: i64, env: Value, rid: Option<&str>) -> MetricRecord {
        let t0 = DateTime::parse_from_rfc3339("2026-03-30T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let x = i as f64;
        MetricRecord {
            id: uuid::Uuid::now_v7(),
            record_id: rid.map(str::to_owned),
            program_id: *program,
            timestamp: t0 + chrono::Duration::seconds(777 * i),
            metrics: [
                ("accuracy".to_owned(), 0.6 + 0.3 * (x * 0.618).fract()),
                ("latency".to_owned(), 0.8 + (x * 0.414).fract()),
                ("cost".to_owned(), 0.002 + 0.002 * (x * 0.732).fract()),
            ]
            .into_iter()
            .filter(|(n, _)| i % 7 != 0 || n != "cost")
            .collect(),
            environment: env.as_object().cloned().unwrap_or_default(),
            received_at: t0 + chrono::Duration::days(40),
        }
    }

    #[test]
    fn blocks_read_back_what_was_written_split_by_month() {
        let p = ProgramId::new();
        let records: Vec<MetricRecord> = (0..1000)
            .rev()
            .map(|i| {
                let env = if i % 3 == 0 {
                    json!({"host": "a"})
                } else {
                    json!({})
                };
                record(&p, i, env, (i % 5 == 0).then_some(&*format!("r{i}")))
            })
            .collect();
        let blocks = encode(&p, "abc", records.clone(), Ids::Derived).unwrap();
        // 1,000 records 777 s apart from March 30: March and April.
        assert_eq!(blocks.len(), 2);
        let mut back = Vec::new();
        for b in &blocks {
            assert!(b.item.sk.ends_with(&format!("#abc.{}", back.len().min(1))));
            let decoded = decode(&p, &b.item).unwrap();
            assert_eq!(decoded.len(), b.records.len());
            for (a, w) in decoded.iter().zip(&b.records) {
                assert_eq!(a, w);
            }
            back.extend(decoded);
        }
        let mut want = records;
        want.sort_by_key(|r| r.timestamp);
        assert_eq!(back.len(), want.len());
        for (a, b) in back.iter().zip(&want) {
            assert_eq!(
                (
                    &a.timestamp,
                    &a.metrics,
                    &a.environment,
                    &a.record_id,
                    &a.received_at
                ),
                (
                    &b.timestamp,
                    &b.metrics,
                    &b.environment,
                    &b.record_id,
                    &b.received_at
                )
            );
            if let Some(rid) = &a.record_id {
                assert_eq!(a.id, claimed_uuid(&p, rid));
            }
        }
        // Kept ids read back as they were.
        let kept = encode(&p, "k", want.clone(), Ids::Kept).unwrap();
        let ids: Vec<_> = kept
            .iter()
            .flat_map(|b| decode(&p, &b.item).unwrap())
            .map(|r| r.id)
            .collect();
        assert_eq!(ids, want.iter().map(|r| r.id).collect::<Vec<_>>());
    }

    #[test]
    fn blocks_are_compact_and_split_below_the_item_limit() {
        let p = ProgramId::new();
        let records: Vec<MetricRecord> =
            (0..1000).map(|i| record(&p, i, json!({}), None)).collect();
        let blocks = encode(&p, "n", records, Ids::Derived).unwrap();
        let bytes: usize = blocks
            .iter()
            .map(|b| b.item.get(PAYLOAD).unwrap().len() * 3 / 4)
            .sum();
        assert!(bytes < 16 * 1000, "{bytes} bytes for 1,000 records");
        // Random environments of 4 KiB each do not compress: split into blocks under the limit.
        let big: Vec<MetricRecord> = (0..200)
            .map(|i| {
                use sha2::Digest;
                let noise: String = (0..60)
                    .map(|j| hex::encode(sha2::Sha256::digest(format!("{i} {j}"))))
                    .collect();
                record(&p, i, json!({"noise": noise}), None)
            })
            .collect();
        let blocks = encode(&p, "big", big, Ids::Derived).unwrap();
        assert!(blocks.len() > 1);
        let mut n = 0;
        for b in &blocks {
            assert!(b.item.get(PAYLOAD).unwrap().len() * 3 / 4 <= MAX_PAYLOAD_BYTES);
            n += decode(&p, &b.item).unwrap().len();
        }
        assert_eq!(n, 200);
    }
}
