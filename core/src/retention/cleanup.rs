//! Retention cleanup, cold archive and restore, and garbage collection — applied over the two
//! backend capabilities. The plan comes from the pure [`crate::retention::policy`] planner; this module
//! reads the store page by page, plans ONE signature at a time (memory is bounded by the largest
//! signature, not by the number of programs) and applies exactly the plan.
//!
//! * **Run**: a scan of the table (maintenance only), page by page. A `HEAD` item is a signature:
//!   its program records are read from GSI1 (page by page), planned, and each decision applied.
//!   An `IDEM` item past its expiry is deleted. When the scan is through, blobs without a record
//!   older than an hour are deleted, and (real runs) the last-run status item is written.
//! * **Slices**: with a deadline, the run stops after the item it was on and answers a cursor
//!   (`next_cursor`); the next call with that cursor goes on from there. The scheduled run keeps
//!   the cursor in its status item and resumes from it the next day.
//! * **Idempotent, interruptible**: every action is guarded by the state it was planned on (the
//!   record's revision, the head's revision) and is a no-op when already done, and every run
//!   plans from the current state, so a run cut at any point is completed by the next.
//! * **Text index**: until the free-text index is complete (stores from before it), a real run
//!   first continues building it ([`Storage::reindex_text`], resumable, within the deadline).
//! * **Delete** = the registry's delete path (record, version claim, head counts/latest/best, tag
//!   entries in one transaction, then the blob) with retention's guard.

use std::collections::BTreeMap;
use std::time::Instant;

use chrono::{DateTime, Duration, Utc};
use futures::StreamExt;
use serde::Serialize;
use serde_json::{json, Value};

use crate::access::Principal;
use crate::backend::{attr, page_key_of, Condition, Index, Item, PageKey, Query, WriteOp};
use crate::domain::{format_time, ProgramId, ProgramStatus};
use crate::error::{Error, Result};
use crate::events::{Event, EventType};
use crate::model::keys;
use crate::model::record::{from_item, rev_of, ProgramRecord, SignatureHead};
use crate::paging::Kind;
use crate::retention::policy::{plan_signature, Action, Candidate, Decision, Policy};
use crate::storage::Storage;

/// Items read per scan page.
const SCAN_PAGE: usize = 100;
/// Program records read per index page of one signature.
const SIGNATURE_PAGE: usize = 200;
/// Blob keys listed per page by the orphan collector.
const BLOB_PAGE: usize = 1000;
/// Record look-ups in flight while collecting orphan blobs.
const GC_CONCURRENCY: usize = 16;
/// A blob without a record is collected once it is older than this (a store in flight writes
/// its blob before its record).
pub const ORPHAN_MIN_AGE: Duration = Duration::hours(1);

/// What to run.
#[derive(Debug, Clone)]
pub struct CleanupOptions {
    pub policy: Policy,
    /// The time the policy is evaluated at (ages are `as_of - created_at`).
    pub as_of: DateTime<Utc>,
    /// Plan only: nothing changes.
    pub dry_run: bool,
    /// Where an earlier slice stopped (the `next_cursor` it answered).
    pub cursor: Option<String>,
    /// Where an earlier run stopped, as kept in the status item (the scheduled run; `cursor`
    /// wins when both are given).
    pub resume: Option<PageKey>,
    /// Stop (and answer a cursor) once this instant has passed.
    pub deadline: Option<Instant>,
    /// Keep every decision in the report (the HTTP answer). Off: counts only (scheduled runs).
    pub list_decisions: bool,
}

impl CleanupOptions {
    pub fn new(policy: Policy, dry_run: bool) -> Self {
        CleanupOptions {
            policy,
            as_of: crate::domain::now(),
            dry_run,
            cursor: None,
            resume: None,
            deadline: None,
            list_decisions: true,
        }
    }
}

/// Counts of a run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CleanupSummary {
    pub signatures: u64,
    pub programs: u64,
    pub kept: u64,
    pub archived: u64,
    pub deleted: u64,
    /// Planned actions not applied because the program changed meanwhile (or the action failed).
    pub skipped: u64,
    /// Restores found complete and finished (blob back to standard, status active).
    pub restores_completed: u64,
    /// Blobs without a record, older than an hour (counted in a dry run, deleted in a real one).
    pub orphan_blobs_collected: u64,
    /// Expired idempotency records (counted in a dry run, deleted in a real one).
    pub idempotency_records_collected: u64,
    /// Programs a real run gave their free-text index entries while the index was not complete
    /// yet (programs stored before it existed; see [`crate::storage::text_index`]).
    pub text_index_programs: u64,
    /// Alias history entries past the newest 1,000 of their alias (counted in a dry run,
    /// deleted in a real one).
    pub alias_history_pruned: u64,
}

/// A planned action that was not applied.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Skipped {
    #[serde(flatten)]
    pub decision: Decision,
    pub action: Action,
    pub error: String,
}

/// What a run did (or, dry, would do).
#[derive(Debug, Clone, Serialize)]
pub struct CleanupReport {
    pub dry_run: bool,
    pub as_of: String,
    pub policy: Value,
    pub kept: Vec<Decision>,
    pub archived: Vec<Decision>,
    pub deleted: Vec<Decision>,
    pub skipped: Vec<Skipped>,
    pub summary: CleanupSummary,
    /// False when the run stopped at its deadline; `next_cursor` then continues it.
    pub complete: bool,
    pub next_cursor: Option<String>,
    /// Where the run stopped (what `next_cursor` holds), for the status item.
    #[serde(skip)]
    pub resume_key: Option<PageKey>,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct ScanCursor {
    scan: PageKey,
}

/// Where a cleanup slice stopped, as a cursor for `who` (signed: see [`crate::paging`]).
fn encode_scan_cursor(storage: &Storage, who: &Principal, key: &PageKey) -> String {
    crate::paging::seal(
        &storage.cursors,
        Kind::Cleanup,
        who,
        &ScanCursor { scan: key.clone() },
    )
}

fn decode_scan_cursor(storage: &Storage, who: &Principal, cursor: &str) -> Result<PageKey> {
    let c: ScanCursor = crate::paging::open(&storage.cursors, Kind::Cleanup, who, cursor)?;
    check_scan_key(&c.scan)?;
    Ok(c.scan)
}

fn check_scan_key(key: &PageKey) -> Result<()> {
    if !crate::paging::is_page_key_of(key, Index::Table, None) {
        return Err(Error::invalid(
            "cursor",
            "the cursor belongs to another listing",
        ));
    }
    Ok(())
}

/// The program id in a blob key (`…/<id>.json[.ext]`), if it is one of ours.
fn id_of_blob_key(key: &str) -> Option<ProgramId> {
    let name = key.rsplit('/').next()?;
    let stem = name.split('.').next()?;
    ProgramId::parse(stem).ok()
}

impl Storage {
    // ----- cleanup run -------------------------------------------------------------------------

    /// Runs (or dry-runs) the retention policy over every signature, then collects garbage: a
    /// whole-store operation (`who` must see every project).
    pub async fn cleanup(&self, who: &Principal, opts: &CleanupOptions) -> Result<CleanupReport> {
        who.whole_store("cleanup")?;
        let now = crate::domain::now();
        let mut report = CleanupReport {
            dry_run: opts.dry_run,
            as_of: format_time(&opts.as_of),
            policy: opts.policy.to_json(),
            kept: vec![],
            archived: vec![],
            deleted: vec![],
            skipped: vec![],
            summary: CleanupSummary::default(),
            complete: false,
            next_cursor: None,
            resume_key: None,
        };
        let mut start = match (&opts.cursor, &opts.resume) {
            (Some(c), _) => Some(decode_scan_cursor(self, who, c)?),
            (None, Some(k)) => {
                check_scan_key(k)?;
                Some(k.clone())
            }
            (None, None) => None,
        };
        if !opts.dry_run && !self.text_ready.load(std::sync::atomic::Ordering::Relaxed) {
            // Until the text index is complete, each real run continues building it (within
            // its deadline; the next run resumes).
            let text = self.reindex_text(who, opts.deadline, false).await?;
            report.summary.text_index_programs = text.programs_indexed;
        }
        // Entries of each alias history met by this run's scan (oldest first within one):
        // reading its 1,001st means the alias has more than it keeps, and only then is its
        // history read newest first and pruned (one more query, for such aliases only).
        let mut histories: std::collections::HashMap<String, usize> = Default::default();
        'scan: loop {
            let page = self.items.scan(start.clone(), SCAN_PAGE).await?;
            for item in &page.items {
                match keys::entity_kind(&item.pk, &item.sk) {
                    keys::EntityKind::SignatureHead => {
                        let head: SignatureHead = from_item(item)?;
                        if !opts.dry_run {
                            self.index_head_by_update(item, &head).await?;
                        }
                        self.clean_signature(who, &head, opts, &mut report).await?;
                    }
                    keys::EntityKind::Idempotency => {
                        self.collect_idempotency(item, now, opts.dry_run, &mut report)
                            .await?;
                    }
                    keys::EntityKind::AliasHistory => {
                        let seen = histories.entry(item.pk.clone()).or_default();
                        *seen += 1;
                        if *seen == crate::model::policy::HISTORY_KEPT + 1 {
                            report.summary.alias_history_pruned +=
                                self.prune_alias_history(&item.pk, opts.dry_run).await?;
                        }
                    }
                    _ => {}
                }
                if opts.deadline.is_some_and(|d| Instant::now() >= d) {
                    let key = page_key_of(item, Index::Table);
                    report.next_cursor = Some(encode_scan_cursor(self, who, &key));
                    report.resume_key = Some(key);
                    break 'scan;
                }
            }
            match page.next {
                Some(k) => start = Some(k),
                None => {
                    report.complete = true;
                    break;
                }
            }
        }
        if report.complete {
            self.collect_orphan_blobs(now, opts.dry_run, &mut report.summary)
                .await?;
        }
        if !opts.dry_run {
            self.write_cleanup_status(&report).await?;
        }
        Ok(report)
    }

    /// A head written before heads were indexed by last update (GSI3, `GET
    /// /signatures?sort=updated`) is written again with its index keys, conditioned on its
    /// revision (a head that moved meanwhile was re-indexed by that move). The real cleanup run
    /// is this migration's resumable walk: daily on AWS, `dspy-storage cleanup --apply` locally.
    async fn index_head_by_update(&self, item: &Item, head: &SignatureHead) -> Result<()> {
        if item.get(Index::Gsi3.pk_attr()).is_some() {
            return Ok(());
        }
        match self
            .items
            .transact(vec![WriteOp::put(head.to_item(), rev_of(head))])
            .await
        {
            Ok(()) => {
                tracing::info!(project = %head.project, signature = %head.signature, "signature head indexed by last update");
                Ok(())
            }
            // It moved meanwhile: the move wrote it with its index keys.
            Err(Error::ConditionFailed { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Plans one signature and applies the plan.
    async fn clean_signature(
        &self,
        who: &Principal,
        head: &SignatureHead,
        opts: &CleanupOptions,
        report: &mut CleanupReport,
    ) -> Result<()> {
        let sig_pk = keys::signature_pk(&head.project, &head.signature);
        let mut candidates = Vec::new();
        let mut revisions: BTreeMap<ProgramId, DateTime<Utc>> = BTreeMap::new();
        let mut restoring = Vec::new();
        let mut start = None;
        loop {
            let q = Query::new(Index::Gsi1, sig_pk.clone())
                .limit(SIGNATURE_PAGE)
                .start(start.take());
            let page = self.items.query(&q).await?;
            for item in &page.items {
                let rec: ProgramRecord = from_item(item)?;
                candidates.push(Candidate::of(&rec));
                revisions.insert(rec.id, rec.updated_at);
                if rec.status == ProgramStatus::Restoring {
                    restoring.push(rec.id);
                }
            }
            match page.next {
                Some(k) => start = Some(k),
                None => break,
            }
        }
        if candidates.is_empty() {
            return Ok(());
        }
        let aliases: BTreeMap<String, ProgramId> = head
            .aliases
            .iter()
            .map(|(n, t)| (n.clone(), t.id))
            .collect();
        let plan = plan_signature(
            &head.signature,
            &candidates,
            Some(head.latest_id),
            &aliases,
            &opts.policy,
            opts.as_of,
        );
        report.summary.signatures += 1;
        report.summary.programs += plan.len() as u64;
        let mut deleted = Vec::new();
        for decision in plan {
            let applied = if opts.dry_run || decision.action == Action::Keep {
                Ok(())
            } else {
                let planned = revisions.get(&decision.id).copied();
                match decision.action {
                    Action::Archive => self
                        .archive_guarded(who, &decision.id, planned)
                        .await
                        .map(|_| ()),
                    Action::Delete => {
                        self.delete_program_guarded(who, &decision.id, false, planned)
                            .await
                    }
                    Action::Keep => Ok(()),
                }
            };
            match applied {
                Ok(()) => {
                    let (count, list) = match decision.action {
                        Action::Keep => (&mut report.summary.kept, &mut report.kept),
                        Action::Archive => (&mut report.summary.archived, &mut report.archived),
                        Action::Delete => {
                            deleted.push(decision.id);
                            (&mut report.summary.deleted, &mut report.deleted)
                        }
                    };
                    *count += 1;
                    if opts.list_decisions {
                        list.push(decision);
                    }
                }
                Err(e) => {
                    tracing::warn!(id = %decision.id, action = ?decision.action, error = %e, "cleanup action skipped");
                    report.summary.skipped += 1;
                    if opts.list_decisions {
                        report.skipped.push(Skipped {
                            action: decision.action,
                            error: e.to_string(),
                            decision,
                        });
                    }
                }
            }
        }
        if !opts.dry_run {
            for id in restoring.iter().filter(|id| !deleted.contains(id)) {
                let done = async {
                    let rec = self.record(id).await?;
                    if rec.status != ProgramStatus::Restoring {
                        return Ok(false);
                    }
                    Ok::<_, Error>(self.finish_restore(rec).await?.status == ProgramStatus::Active)
                }
                .await;
                match done {
                    Ok(true) => report.summary.restores_completed += 1,
                    Ok(false) => {}
                    Err(e) => tracing::warn!(%id, error = %e, "could not finish a restore"),
                }
            }
        }
        Ok(())
    }

    async fn collect_idempotency(
        &self,
        item: &Item,
        now: DateTime<Utc>,
        dry_run: bool,
        report: &mut CleanupReport,
    ) -> Result<()> {
        let Some(expires) = item.get("expires_at") else {
            return Ok(());
        };
        let expired = expires.parse::<i64>().is_ok_and(|t| t < now.timestamp());
        if !expired {
            return Ok(());
        }
        if !dry_run {
            let op = WriteOp::delete(
                item.pk.clone(),
                item.sk.clone(),
                Condition::AttrEquals("expires_at".into(), expires.to_owned()),
            );
            match self.items.transact(vec![op.clone()]).await {
                Ok(()) => {}
                // Replaced by a new request with the same key meanwhile: not garbage.
                Err(Error::ConditionFailed { .. }) => return Ok(()),
                Err(e) => return Err(e),
            }
        }
        report.summary.idempotency_records_collected += 1;
        Ok(())
    }

    /// Deletes blobs without a program record that are older than [`ORPHAN_MIN_AGE`] (a failed
    /// store's blob, the blob of a delete cut short). Only keys holding a program id are
    /// considered; one record look-up per candidate, [`GC_CONCURRENCY`] at a time.
    async fn collect_orphan_blobs(
        &self,
        now: DateTime<Utc>,
        dry_run: bool,
        summary: &mut CleanupSummary,
    ) -> Result<()> {
        let cutoff = now - ORPHAN_MIN_AGE;
        let archive_prefix = format!("{}/{}", crate::backend::ARCHIVE_DIR, keys::BLOB_PREFIX);
        for prefix in [keys::BLOB_PREFIX, archive_prefix.as_str()] {
            let mut start: Option<String> = None;
            loop {
                let (metas, next) = self.blobs.list(prefix, start.clone(), BLOB_PAGE).await?;
                let candidates: Vec<(String, ProgramId)> = metas
                    .iter()
                    .filter(|m| m.last_modified.is_some_and(|t| t < cutoff))
                    .filter_map(|m| id_of_blob_key(&m.key).map(|id| (m.key.clone(), id)))
                    .collect();
                let checked: Vec<(String, Result<bool>)> = futures::stream::iter(candidates)
                    .map(|(key, id)| async move {
                        let pk = keys::program_pk(&id);
                        let found = self
                            .items
                            .get(&pk, keys::PROG_SK)
                            .await
                            .map(|i| i.is_some());
                        (key, found)
                    })
                    .buffer_unordered(GC_CONCURRENCY)
                    .collect()
                    .await;
                for (key, found) in checked {
                    if found? {
                        continue;
                    }
                    if !dry_run {
                        self.blobs.delete(&key).await?;
                    }
                    tracing::info!(key, dry_run, "orphan blob collected");
                    summary.orphan_blobs_collected += 1;
                }
                match next {
                    Some(k) => start = Some(k),
                    None => break,
                }
            }
        }
        Ok(())
    }

    async fn write_cleanup_status(&self, report: &CleanupReport) -> Result<()> {
        let data = json!({
            "finished_at": format_time(&crate::domain::now()),
            "as_of": report.as_of,
            "policy": report.policy,
            "complete": report.complete,
            "next_cursor": report.next_cursor,
            "resume_key": report.resume_key,
            "summary": report.summary,
        });
        let item =
            Item::new(keys::STATUS_PK, keys::CLEANUP_STATUS_SK).with(attr::DATA, data.to_string());
        {
            self.items
                .transact(vec![WriteOp::put(item.clone(), Condition::None)])
        }
        .await?;
        self.emit(vec![Event::new(
            EventType::CleanupCompleted,
            json!({
                "as_of": report.as_of,
                "complete": report.complete,
                "summary": report.summary,
            }),
        )])
        .await;
        Ok(())
    }

    /// The last cleanup run's status item (`STATUS` / `LAST#cleanup`), if any.
    pub async fn last_cleanup_status(&self) -> Result<Option<Value>> {
        match self
            .items
            .get(keys::STATUS_PK, keys::CLEANUP_STATUS_SK)
            .await?
        {
            Some(item) => from_item(&item).map(Some),
            None => Ok(None),
        }
    }

    /// The scheduled run: the configured policy, counts only, resuming where the last run
    /// stopped at its deadline (the status item's `resume_key`: a position kept in the store, not
    /// a cursor handed to a client, so it does not expire).
    pub async fn scheduled_cleanup(
        &self,
        who: &Principal,
        policy: Policy,
        deadline: Option<Instant>,
    ) -> Result<CleanupReport> {
        who.whole_store("cleanup")?;
        let resume = self
            .last_cleanup_status()
            .await?
            .and_then(|s| s.get("resume_key").cloned())
            .and_then(|k| serde_json::from_value::<PageKey>(k).ok());
        let opts = CleanupOptions {
            resume,
            deadline,
            list_decisions: false,
            ..CleanupOptions::new(policy, false)
        };
        match self.cleanup(who, &opts).await {
            // A position that is not one (state rewritten by hand): start over.
            Err(Error::InvalidInput { .. }) if opts.resume.is_some() => {
                self.cleanup(
                    who,
                    &CleanupOptions {
                        resume: None,
                        ..opts
                    },
                )
                .await
            }
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::OPERATOR;
    use crate::domain::{AliasName, NewMetadata, Project, Signature, Version};
    use proptest::prelude::*;

    type Row = (i64, Option<f64>, bool, bool);

    fn rows() -> impl Strategy<Value = Vec<Vec<Row>>> {
        let row = (
            0i64..900,
            prop::option::of(0.0f64..1.0),
            prop::bool::weighted(0.1),
            prop::bool::weighted(0.1),
        );
        prop::collection::vec(prop::collection::vec(row, 1..10), 1..3)
    }

    fn policy() -> impl Strategy<Value = Policy> {
        (
            0usize..4,
            any::<bool>(),
            any::<bool>(),
            1i64..400,
            1i64..800,
            prop::option::of(0.0f64..1.0),
        )
            .prop_map(|(k, hp, prod, a, d, low)| Policy {
                keep_latest: k,
                keep_high_performing: hp,
                keep_production: prod,
                archive_after: Duration::days(a),
                delete_after: Duration::days(d),
                archive_below_performance: low,
            })
    }

    /// Stores the rows (one signature per inner vector, versions `1.0.<i>`), points alias
    /// `staging` of each signature at the version `alias_pick` selects.
    async fn dataset(storage: &Storage, sigs: &[Vec<Row>], alias_pick: usize) {
        let now = crate::domain::now();
        for (s, versions) in sigs.iter().enumerate() {
            let sig = format!("prop.S{s}");
            for (i, (age, score, env, tag)) in versions.iter().enumerate() {
                let mut meta = json!({
                    "signature": sig, "version": format!("1.0.{i}"),
                    "created_at": format_time(&(now - Duration::days(*age))),
                });
                if let Some(x) = score {
                    meta["performance"] = json!(x);
                }
                if *env {
                    meta["environment"] = json!("production");
                }
                if *tag {
                    meta["tags"] = json!(["production"]);
                }
                let program =
                    serde_json::value::RawValue::from_string(format!("{{\"n\": {i}}}")).unwrap();
                storage
                    .store(
                        &OPERATOR,
                        &program,
                        NewMetadata::parse(meta, now).unwrap(),
                        None,
                    )
                    .await
                    .unwrap();
            }
            let pick = alias_pick % (versions.len() + 1);
            if pick < versions.len() {
                storage
                    .put_alias(
                        &OPERATOR,
                        &Project::default_project(),
                        &Signature::parse(&sig).unwrap(),
                        &AliasName::parse("staging").unwrap(),
                        &Version::parse(&format!("1.0.{pick}")).unwrap(),
                        None,
                    )
                    .await
                    .unwrap();
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]

        /// Over a real (embedded) store: the real run applies exactly the dry run's plan, nothing
        /// a rule protects is archived or deleted (it stays active and loadable), every archived
        /// program is archived and every deleted one is gone.
        #[test]
        fn the_real_run_is_the_dry_run(sigs in rows(), policy in policy(), alias_pick in 0usize..12) {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async {
                let dir = tempfile::tempdir().unwrap();
                let storage = crate::open::embedded(dir.path(), Default::default()).unwrap();
                dataset(&storage, &sigs, alias_pick).await;
                let as_of = crate::domain::now();
                let opts = |dry_run| CleanupOptions { as_of, ..CleanupOptions::new(policy.clone(), dry_run) };
                let dry = storage.cleanup(&OPERATOR, &opts(true)).await.unwrap();
                let real = storage.cleanup(&OPERATOR, &opts(false)).await.unwrap();
                assert_eq!(dry.kept, real.kept);
                assert_eq!(dry.archived, real.archived);
                assert_eq!(dry.deleted, real.deleted);
                assert!(real.skipped.is_empty(), "{:?}", real.skipped);
                let total: usize = sigs.iter().map(Vec::len).sum();
                assert_eq!(real.kept.len() + real.archived.len() + real.deleted.len(), total);
                for d in &real.kept {
                    if d.protected {
                        let rec = storage.get_record(&OPERATOR, &d.id).await.unwrap();
                        assert_eq!(rec.status, ProgramStatus::Active, "{d:?}");
                        storage.get_program(&OPERATOR, &d.id).await.unwrap();
                    }
                }
                for d in &real.archived {
                    assert!(!d.protected);
                    let rec = storage.get_record(&OPERATOR, &d.id).await.unwrap();
                    assert_eq!(rec.status, ProgramStatus::Archived, "{d:?}");
                    assert!(matches!(storage.get_program(&OPERATOR, &d.id).await, Err(Error::Archived(_))));
                }
                for d in &real.deleted {
                    assert!(!d.protected);
                    assert!(matches!(storage.get_record(&OPERATOR, &d.id).await, Err(Error::NotFound(_))));
                }
                // Every signature still loads its latest version.
                for s in 0..sigs.len() {
                    let sig = Signature::parse(&format!("prop.S{s}")).unwrap();
                    storage
                        .get_version(&OPERATOR, &Project::default_project(), &sig, &crate::domain::VersionSelector::Latest)
                        .await
                        .unwrap();
                }
                // A second run has nothing left to do.
                let again = storage.cleanup(&OPERATOR, &opts(false)).await.unwrap();
                assert!(again.archived.is_empty() && again.deleted.is_empty());
            });
        }
    }

    #[test]
    fn blob_keys_name_their_program() {
        let id = "0191e2a4-0000-7000-8000-000000000000";
        assert_eq!(
            id_of_blob_key(&format!("programs/2026/03/04/{id}.json.zst")).map(|i| i.to_string()),
            Some(id.to_owned())
        );
        assert_eq!(
            id_of_blob_key(&format!("archive/programs/2026/03/04/{id}.json"))
                .map(|i| i.to_string()),
            Some(id.to_owned())
        );
        assert_eq!(id_of_blob_key("programs/2026/notes.txt"), None);
    }

    #[test]
    fn scan_cursors_round_trip() {
        let mut k = PageKey::new();
        k.insert("PK".into(), "SIG#default#A".into());
        k.insert("SK".into(), "HEAD".into());
        let dir = tempfile::tempdir().unwrap();
        let s = crate::open::embedded(dir.path(), Default::default()).unwrap();
        let who = &*OPERATOR;
        let c = encode_scan_cursor(&s, who, &k);
        assert_eq!(decode_scan_cursor(&s, who, &c).unwrap(), k);
        assert!(decode_scan_cursor(&s, who, "nope").is_err());
        let other = crate::access::Principal::new(
            "someone",
            crate::access::Scope::All,
            crate::access::Role::Admin,
        );
        let e = decode_scan_cursor(&s, &other, &c).unwrap_err().to_string();
        assert!(e.contains("another caller"), "{e}");
        let mut extra = k.clone();
        extra.insert("GSI1PK".into(), "x".into());
        assert!(decode_scan_cursor(&s, who, &encode_scan_cursor(&s, who, &extra)).is_err());
    }
}
