//! One metric record as answered, and the ids and months every layout of records shares (the
//! per-record items of [`crate::tracking::metrics`] and the blocks of [`crate::tracking::blocks`]).

use std::collections::BTreeMap;

use chrono::{DateTime, Datelike, NaiveDate, TimeZone, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::backend::{attr, Item};
use crate::domain::ProgramId;
use crate::model::keys;

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
pub fn claimed_uuid(program: &ProgramId, record_id: &str) -> uuid::Uuid {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(format!("metric record\n{program}\n{record_id}"));
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_custom_bytes(bytes).into_uuid()
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
