//! The counters kept beside the records (`STATS#<project>#<signature>` items: see
//! [`crate::tracking::report`] for what reads them): the counter updates that ride in the
//! store and delete transactions, and the attributes every counter item carries so the stats
//! index (GSI3) lists it.

use chrono::{DateTime, NaiveDate, Utc};

use crate::backend::{Index, WriteOp};
use crate::domain::{Project, Signature};
use crate::model::keys;
use crate::model::record::ProgramRecord;

/// Counter attribute of one day: `n_d<YYYY-MM-DD>`.
pub(crate) fn day_attr(d: NaiveDate) -> String {
    format!("n_d{d}")
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
    }
}
