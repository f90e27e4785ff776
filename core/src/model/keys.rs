//! Every key of the single-table design, built in one place (see docs/DESIGN.md's data model).
//!
//! | item          | PK                         | SK                       | indexes |
//! |---------------|----------------------------|--------------------------|---------|
//! | program       | `PROG#<id>`                | `PROG`                   | GSI1 `SIG#<project>#<sig>` / `<created>#<id>`; GSI2 `SIG#…` / `<score key>#<id>`; GSI3 `METHOD#<project>#<method>` / `<created>#<id>`; GSI4 `PROJ#<project>` / `<created>#<id>` |
//! | version claim | `SIG#<project>#<sig>`      | `VER#<sortable semver>`  | |
//! | signature head (latest, aliases, counts) | `SIG#<project>#<sig>` | `HEAD` | GSI4 `PROJSIG#<project>` / `<sig>`; GSI3 `PROJSIGUPD#<project>` / `<updated>#<sig>` |
//! | tag entry     | `TAG#<project>#<tag>`      | `<created>#<id>`         | |
//! | text index entry (one per distinct word of a program, see [`crate::model::text`]) | `TXT#<project>#<first char of the word>` | `<word>#<id>` | |
//! | text index overflow (a program with more words than the cap) | `TXT#<project>#+` | `<id>` | |
//! | text index state (reindex progress) | `STATUS` | `TEXTINDEX` | |
//! | idempotency   | `IDEM#<key>`               | `IDEM`                   | |
//! | metric block (the records one append wrote for one month, compressed) | `MET#<program id>#B` | `<first timestamp>#<uuid>.<n>` | | (one partition per program: a history read is one range read; `b_records` the zstd payload, `n_records`, `last`; see `crate::tracking::blocks`)
//! | metric record, per-record layout (before blocks; read until converted) | `MET#<program id>#<YYYY-MM>` | `<timestamp>#<uuid v7>` | | (converted into blocks by `dspy-storage migrate-metrics`, by the embedded store on open and by a restore)
//! | metric month index (per-record layout: months before the program's own with backfilled records) | `MET#<program id>#months` | `<YYYY-MM>` | | (`n_records`: records of that month)
//! | metric record id (a client's `record_id`, claimed once per program) | `MET#<program id>#RID` | `<record_id>` | | (written in the same transaction as the block holding its record, conditioned on not existing: a retried append stores nothing twice)
//! | metric day (write counters and cached daily sums) | `MET#<program id>#<YYYY-MM>` | `DAY#<YYYY-MM-DD>` | | (`n_w`/`n_done` count metric writes started/finished — a block append adds to both in its transaction —, `cached_w` + `data` a day's sums valid while `n_w = n_done = cached_w`)
//! | optimization run | `RUN#<run id>`          | `RUN`                    | GSI1 `RUNSIG#<project>#<sig>` / `<started>#<id>`; GSI3 `RUNMETHOD#<project>#<method>` / `<started>#<id>`; GSI4 `RUNS#<project>` / `<started>#<id>` |
//! | signature counters (programs, bytes, stores per day) | `STATS#<project>#<sig>` | `STATS` | GSI3 `STATS` / `<project>#<sig>#STATS` |
//! | signature load counter | `STATS#<project>#<sig>` | `LOADS`          | GSI3 `STATS` / `<project>#<sig>#LOADS` |
//! | signature metric-record counter (records, per day) | `STATS#<project>#<sig>` | `METRICS` | GSI3 `STATS` / `<project>#<sig>#METRICS` |
//! | last maintenance run | `STATUS`               | `LAST#cleanup`, `LAST#backup` | |
//! | metric layout (every metric record is in blocks; where the scheduled conversion resumes) | `STATUS` | `LAYOUT#metric-blocks`, `LAYOUT#metric-blocks-progress` | |
//! | backup / restore lease | `STATUS`          | `LOCK#backup`, `LOCK#restore` | |
//! | alias policy (protected, evaluation gate; see [`crate::model::policy`]) | `APOL#<project>#<sig>` | `<alias>` | | (`rev` a UUID new at every change: a move's transaction is conditioned on it)
//! | alias history entry (moves, removals, refusals, overrides, policy changes) | `AHIST#<project>#<sig>#<alias>` | `<time>#<uuid v7>` | | (newest first by a reverse range read; the last 1,000 per alias kept, older ones pruned by cleanup)
//!
//! Entity prefixes (the first `#`-separated part of PK): `PROG`, `SIG`, `TAG`, `TXT`, `IDEM`, `MET`,
//! `RUN`, `STATS`, `STATUS`, `APOL`, `AHIST`.
//!
//! [`entity_kind`] classifies any item by its keys (backup and restore carry every kind,
//! including ones it does not know, verbatim).
//!
//! Numbers inside sort keys are zero-padded so that string order is numeric order.
//!
//! GSI1..GSI4 above are the logical indexes ([`crate::backend::Index`]); on DynamoDB they are
//! `GSI1K`..`GSI4K` and hold only keys (and GSI3K the counters' `project`): a query reads the
//! items it found (docs/DESIGN.md, "Index projections").

use chrono::{DateTime, Utc};

use crate::domain::{ProgramId, Project, Signature, Version};

pub const PROG_SK: &str = "PROG";
pub const HEAD_SK: &str = "HEAD";
pub const VER_PREFIX: &str = "VER#";
pub const IDEM_SK: &str = "IDEM";
/// Prefix of program blobs.
pub const BLOB_PREFIX: &str = "programs/";

pub const RUN_SK: &str = "RUN";
pub const STATS_SK: &str = "STATS";
pub const LOADS_SK: &str = "LOADS";
pub const METRICS_SK: &str = "METRICS";
/// GSI3 partition holding every counter item (one entry per signature and counter kind).
pub const STATS_INDEX_PK: &str = "STATS";
/// Status items written by maintenance functions: `data` = `{"finished_at", ...}`.
pub const STATUS_PK: &str = "STATUS";
pub const CLEANUP_STATUS_SK: &str = "LAST#cleanup";
pub const BACKUP_STATUS_SK: &str = "LAST#backup";
/// The text index's state: whether every program has its entries (see [`crate::model::text`]).
pub const TEXT_INDEX_STATUS_SK: &str = "TEXTINDEX";

/// Partition of a project's text index entries of words starting with `first`.
pub fn text_pk(project: &Project, first: char) -> String {
    format!("TXT#{project}#{first}")
}

/// Sort key of a text index entry: the word, then the program.
pub fn text_sk(word: &str, id: &ProgramId) -> String {
    format!("{word}#{id}")
}

/// Partition of a project's programs with more words than the text index's cap.
pub fn text_overflow_pk(project: &Project) -> String {
    format!("TXT#{project}#+")
}

/// Partition of a signature's alias policies (one item per alias with a policy, sort key the
/// alias name).
pub fn alias_policies_pk(project: &Project, signature: &Signature) -> String {
    format!("APOL#{project}#{signature}")
}

/// Partition of one alias's history.
pub fn alias_history_pk(project: &Project, signature: &Signature, alias: &str) -> String {
    format!("AHIST#{project}#{signature}#{alias}")
}

/// Sort key of an alias history entry: its time (fixed millisecond RFC 3339), then its id.
pub fn alias_history_sk(at: &DateTime<Utc>, id: &uuid::Uuid) -> String {
    format!("{}#{}", crate::domain::format_time(at), id.hyphenated())
}

/// Partition of a program's metric records of one month (`month` = `YYYY-MM`).
pub fn metric_pk(id: &ProgramId, month: &str) -> String {
    format!("MET#{id}#{month}")
}

/// Sort key of a metric record: its time (fixed millisecond RFC 3339) and a unique id.
pub fn metric_sk(timestamp: &DateTime<Utc>, record_id: &uuid::Uuid) -> String {
    format!(
        "{}#{}",
        crate::domain::format_time(timestamp),
        record_id.hyphenated()
    )
}

/// Partition of a program's metric blocks (see [`crate::tracking::blocks`]): every block of
/// records the program has, whatever its month.
pub fn metric_blocks_pk(id: &ProgramId) -> String {
    format!("MET#{id}#B")
}

/// Sort key of a metric block: its first record's time (fixed millisecond RFC 3339, so blocks
/// sort by their first record) and a name unique to the request that wrote it.
pub fn metric_block_sk(first: &DateTime<Utc>, name: &str) -> String {
    format!("{}#{name}", crate::domain::format_time(first))
}

/// The status item saying that every metric record of this store is in blocks (a new store, or
/// one whose per-record items were all converted): history reads then skip the per-record layout.
pub const METRIC_LAYOUT_SK: &str = "LAYOUT#metric-blocks";
/// The status item holding where the scheduled conversion of per-record metric items resumes.
pub const METRIC_LAYOUT_PROGRESS_SK: &str = "LAYOUT#metric-blocks-progress";

/// Partition of a program's month index: one item per month BEFORE the program's own month that
/// holds records (backfilled history), sort key `YYYY-MM`, `n_records` its record count. A history
/// read reaching back before the program lists the months to read here instead of trying every
/// month since 2000.
pub fn metric_months_pk(id: &ProgramId) -> String {
    format!("MET#{id}#months")
}

/// Partition of a program's claimed metric record ids (never a month: `RID` is no `YYYY-MM`).
pub fn metric_record_ids_pk(id: &ProgramId) -> String {
    format!("MET#{id}#RID")
}

pub const DAY_PREFIX: &str = "DAY#";

/// Sort key of a program's metric day item (in the month partition of that day).
pub fn metric_day_sk(date: &chrono::NaiveDate) -> String {
    format!("{DAY_PREFIX}{date}")
}

pub fn run_pk(id: &uuid::Uuid) -> String {
    format!("RUN#{}", id.hyphenated())
}

pub fn run_signature_pk(project: &Project, signature: &Signature) -> String {
    format!("RUNSIG#{project}#{signature}")
}

pub fn run_method_pk(project: &Project, method: &str) -> String {
    format!("RUNMETHOD#{project}#{method}")
}

pub fn runs_pk(project: &Project) -> String {
    format!("RUNS#{project}")
}

/// Partition of a signature's counter items.
pub fn stats_pk(project: &Project, signature: &Signature) -> String {
    format!("STATS#{project}#{signature}")
}

/// GSI3 sort key of a counter item: `<project>#<sig>#<kind>`.
pub fn stats_index_sk(project: &Project, signature: &Signature, kind: &str) -> String {
    format!("{project}#{signature}#{kind}")
}

/// Sort key of the lease a running backup holds (one backup at a time).
pub const BACKUP_LOCK_SK: &str = "LOCK#backup";
/// Sort key of the lease a running restore holds (one restore at a time).
pub const RESTORE_LOCK_SK: &str = "LOCK#restore";

/// What an item is, from its keys alone.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum EntityKind {
    /// `PROG#<id>` / `PROG`
    Program,
    /// `SIG#…` / `VER#…`
    VersionClaim,
    /// `SIG#…` / `HEAD`: latest version and aliases
    SignatureHead,
    /// `TAG#…` / `<created>#<id>`
    Tag,
    /// `MET#…`: metric records (performance tracking)
    Metric,
    /// `RUN#…`: optimization runs
    OptimizationRun,
    /// `TXT#…`: free-text index entries (derived from program records: not backed up; a
    /// restore writes them for each program it restores)
    TextIndex,
    /// `IDEM#…`: a cached answer to an idempotent request (expires; not backed up)
    Idempotency,
    /// `STATUS` / …: last-run status and leases of this deployment (not backed up or restored)
    Status,
    /// `APOL#…`: alias promotion policies (restored where the target has none for that alias)
    AliasPolicy,
    /// `AHIST#…`: alias history entries (restored as they are: each has its own key)
    AliasHistory,
    /// `STATS#…`: the report's counters (not backed up: a restore adds each program it writes to
    /// them, so merging into a live store keeps them right)
    Counter,
    /// Anything else: backed up and restored verbatim. A kind this build does not know, named in
    /// a newer backup's manifest, reads as `Other` (restored verbatim).
    #[serde(other)]
    Other,
}

impl EntityKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EntityKind::Program => "programs",
            EntityKind::VersionClaim => "version_claims",
            EntityKind::SignatureHead => "signature_heads",
            EntityKind::Tag => "tags",
            EntityKind::Metric => "metrics",
            EntityKind::OptimizationRun => "optimization_runs",
            EntityKind::Idempotency => "idempotency",
            EntityKind::Status => "status",
            EntityKind::Counter => "counters",
            EntityKind::TextIndex => "text_index",
            EntityKind::AliasPolicy => "alias_policies",
            EntityKind::AliasHistory => "alias_history",
            EntityKind::Other => "other",
        }
    }
}

/// Classifies an item by its keys. New entity kinds are added here (and are `Other`, kept
/// verbatim by backups, until they are).
pub fn entity_kind(pk: &str, sk: &str) -> EntityKind {
    if pk == STATUS_PK {
        EntityKind::Status
    } else if pk.starts_with("PROG#") && sk == PROG_SK {
        EntityKind::Program
    } else if pk.starts_with("SIG#") && sk == HEAD_SK {
        EntityKind::SignatureHead
    } else if pk.starts_with("SIG#") && sk.starts_with(VER_PREFIX) {
        EntityKind::VersionClaim
    } else if pk.starts_with("TAG#") {
        EntityKind::Tag
    } else if pk.starts_with("MET#") {
        EntityKind::Metric
    } else if pk.starts_with("RUN#") {
        EntityKind::OptimizationRun
    } else if pk.starts_with("TXT#") {
        EntityKind::TextIndex
    } else if pk.starts_with("STATS#") {
        EntityKind::Counter
    } else if pk.starts_with("APOL#") {
        EntityKind::AliasPolicy
    } else if pk.starts_with("AHIST#") {
        EntityKind::AliasHistory
    } else if pk.starts_with("IDEM#") && sk == IDEM_SK {
        EntityKind::Idempotency
    } else {
        EntityKind::Other
    }
}

pub fn program_pk(id: &ProgramId) -> String {
    format!("PROG#{id}")
}

pub fn signature_pk(project: &Project, signature: &Signature) -> String {
    format!("SIG#{project}#{signature}")
}

pub fn version_sk(version: &Version) -> String {
    format!("{VER_PREFIX}{}", version.sort_key())
}

pub fn method_pk(project: &Project, method: &str) -> String {
    format!("METHOD#{project}#{method}")
}

pub fn project_pk(project: &Project) -> String {
    format!("PROJ#{project}")
}

pub fn project_signatures_pk(project: &Project) -> String {
    format!("PROJSIG#{project}")
}

/// GSI3 partition of a project's signature heads by last update (the dashboard's "recently
/// updated" order; `GET /signatures?sort=updated`).
pub fn project_signatures_by_update_pk(project: &Project) -> String {
    format!("PROJSIGUPD#{project}")
}

/// GSI3 sort key of a signature head: its last update (fixed-width RFC 3339), then its name.
pub fn signature_updated_sk(updated_at: &DateTime<Utc>, signature: &Signature) -> String {
    format!("{}#{signature}", crate::domain::format_time(updated_at))
}

pub fn tag_pk(project: &Project, tag: &str) -> String {
    format!("TAG#{project}#{tag}")
}

pub fn idempotency_pk(key: &str) -> String {
    format!("IDEM#{key}")
}

/// Sort key by creation: RFC 3339 with fixed millisecond precision sorts chronologically.
pub fn created_sk(created_at: &DateTime<Utc>, id: &ProgramId) -> String {
    format!("{}#{id}", crate::domain::format_time(created_at))
}

/// Sort key by primary score: programs without a score first in ascending order (last when
/// descending), then by score. The score is mapped to a fixed-width string whose order is the
/// order of the numbers (the IEEE-754 bit trick).
pub fn score_sk(score: Option<f64>, id: &ProgramId) -> String {
    match score {
        None => format!("0#{id}"),
        Some(s) => format!("1{}#{id}", sortable_f64(s)),
    }
}

/// A 16-hex-digit string whose byte order matches the numeric order of finite floats.
pub fn sortable_f64(x: f64) -> String {
    let bits = x.to_bits();
    let key = if x.is_sign_negative() {
        !bits
    } else {
        bits | (1u64 << 63)
    };
    format!("{key:016x}")
}

/// Blob key of a program: `programs/YYYY/MM/DD/<id>.json[.ext]`, dated by creation.
pub fn blob_key(created_at: &DateTime<Utc>, id: &ProgramId, extension: &str) -> String {
    let mut key = format!("programs/{}/{id}.json", created_at.format("%Y/%m/%d"));
    if !extension.is_empty() {
        key.push('.');
        key.push_str(extension);
    }
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sortable_floats_keep_order() {
        let xs = [
            -1e9, -2.5, -0.0001, 0.0, 1e-9, 0.5, 0.85, 0.9, 1.0, 2.0, 1e12,
        ];
        for w in xs.windows(2) {
            assert!(
                sortable_f64(w[0]) < sortable_f64(w[1]),
                "{} < {}",
                w[0],
                w[1]
            );
        }
    }

    #[test]
    fn entity_kinds() {
        let id = ProgramId::parse("0191e2a4-0000-7000-8000-000000000000").unwrap();
        assert_eq!(entity_kind(&program_pk(&id), PROG_SK), EntityKind::Program);
        assert_eq!(
            entity_kind("SIG#default#qa", HEAD_SK),
            EntityKind::SignatureHead
        );
        assert_eq!(
            entity_kind("SIG#default#qa", "VER#0001.0000"),
            EntityKind::VersionClaim
        );
        assert_eq!(entity_kind("TAG#default#x", "2026#id"), EntityKind::Tag);
        assert_eq!(entity_kind("MET#id#2026-11", "t#u"), EntityKind::Metric);
        assert_eq!(entity_kind("TXT#default#q", "qa#id"), EntityKind::TextIndex);
        assert_eq!(entity_kind("RUN#id", "RUN"), EntityKind::OptimizationRun);
        assert_eq!(entity_kind("IDEM#k", IDEM_SK), EntityKind::Idempotency);
        assert_eq!(
            entity_kind("APOL#default#qa", "production"),
            EntityKind::AliasPolicy
        );
        assert_eq!(
            entity_kind("AHIST#default#qa#production", "t#u"),
            EntityKind::AliasHistory
        );
        assert_eq!(entity_kind(STATUS_PK, BACKUP_STATUS_SK), EntityKind::Status);
        assert_eq!(entity_kind("COUNTER#x", "y"), EntityKind::Other);
        assert_eq!(entity_kind("SIG#default#qa", "ODD"), EntityKind::Other);
        // A kind named by a newer backup reads as Other (restored verbatim).
        let k: EntityKind = serde_json::from_str("\"counters\"").unwrap();
        assert_eq!(k, EntityKind::Other);
        assert_eq!(
            serde_json::to_string(&EntityKind::VersionClaim).unwrap(),
            "\"version_claim\""
        );
    }

    #[test]
    fn blob_keys_are_dated() {
        let t = DateTime::parse_from_rfc3339("2026-03-04T05:06:07Z")
            .unwrap()
            .with_timezone(&Utc);
        let id = ProgramId::parse("0191e2a4-0000-7000-8000-000000000000").unwrap();
        assert_eq!(
            blob_key(&t, &id, "zst"),
            "programs/2026/03/04/0191e2a4-0000-7000-8000-000000000000.json.zst"
        );
    }
}
