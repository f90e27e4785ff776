//! The versioned registry on top of the store: signatures, aliases with compare-and-set,
//! rollback, delete and metadata updates. Every change to a signature's versions or aliases is a
//! conditional write on its head's revision, so concurrent writers serialize and never both win.

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use std::sync::atomic::{AtomicBool, Ordering};

use crate::access::Principal;
use crate::backend::{attr, Condition, Index, Query, SkRange, WriteOp};
use crate::domain::{
    format_time, validate_tag, AliasName, ProgramId, Project, Signature, Version,
    MAX_METADATA_KEYS, MAX_STRING_LEN, MAX_TAGS,
};
use crate::error::{Error, Result};
use crate::events::{Event, EventType};
use crate::model::keys;
use crate::model::policy::{HistoryAction, HistoryEntry, PolicyRecord};
use crate::model::record::rev_of;
use crate::model::record::{
    from_item, AliasTarget, BlobPointer, ProgramRecord, SignatureHead, VersionClaim,
};
use crate::paging::{decode_cursor, encode_cursor};
use crate::retry::backoff;
use crate::storage::policy::policy_condition;
use crate::storage::{
    no_version, no_versions, Draft, Listing, LoadedProgram, Storage, StoredProgram,
};

/// A signature in a project listing.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SignatureSummary {
    pub signature: Signature,
    pub versions: u64,
    pub latest_version: Version,
    pub best_performance: Option<f64>,
    pub updated_at: String,
    /// Alias name → the version it points at.
    pub aliases: std::collections::BTreeMap<String, Version>,
}

/// What a move did: the alias's target, and the history entry it wrote (`None` when the alias
/// already pointed there and nothing was written).
#[derive(Debug, Clone)]
pub struct AliasMove {
    pub target: AliasTarget,
    pub entry: Option<HistoryEntry>,
}

/// One attempt of a move: done, or refused by the gate (the refusal is recorded after the
/// attempts, once).
enum MoveStep {
    Done(AliasMove),
    Refused(HistoryEntry),
}

/// The order of a signature listing: both are index orders (GSI4 by name, GSI3 by last update).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SignatureOrder {
    /// By name, ascending.
    #[default]
    Name,
    /// Most recently updated first (the head's `updated_at`: a store, a rollback or a delete
    /// updates it).
    Updated,
}

impl SignatureOrder {
    pub fn parse(raw: &str) -> Result<Self> {
        match raw {
            "name" => Ok(SignatureOrder::Name),
            "updated" => Ok(SignatureOrder::Updated),
            other => Err(Error::invalid(
                "sort",
                format!("sort must be `name` or `updated`, not {other:?}"),
            )),
        }
    }
}

/// `PATCH /programs/{id}/metadata`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetadataPatch {
    #[serde(default)]
    pub tags: Option<TagsPatch>,
    /// A string sets it, `null` removes it.
    #[serde(default, deserialize_with = "double_option")]
    pub environment: Option<Option<String>>,
    #[serde(default, deserialize_with = "double_option")]
    pub description: Option<Option<String>>,
    /// Custom keys to set (`null` removes the key).
    #[serde(default)]
    pub set: Option<Map<String, Value>>,
    #[serde(default)]
    pub expected_updated_at: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TagsPatch {
    #[serde(default)]
    pub add: Vec<String>,
    #[serde(default)]
    pub remove: Vec<String>,
}

fn double_option<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> std::result::Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

/// Keys `set` may not touch: identity, content and the keys with their own operations.
const PROTECTED_KEYS: [&str; 11] = [
    "signature",
    "version",
    "project",
    "created_at",
    "performance",
    "optimization_method",
    "tags",
    "environment",
    "description",
    "parent_id",
    "previous_version",
];

/// Whether a commit of one operation ended without its answer (`Unavailable`: it may have
/// happened). The operation's next attempt ([`Storage::retry_conflicts`] sends it) reads this to
/// tell its own earlier write from someone else's.
#[derive(Default)]
struct LostAnswer(AtomicBool);

impl LostAnswer {
    /// Runs a commit, remembering when its answer was lost.
    async fn commit(&self, write: impl std::future::Future<Output = Result<()>>) -> Result<()> {
        let written = write.await;
        if matches!(written, Err(Error::Unavailable(_))) {
            self.0.store(true, Ordering::SeqCst);
        }
        written
    }

    fn seen(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

impl Storage {
    pub(crate) async fn read_head(
        &self,
        project: &Project,
        signature: &Signature,
    ) -> Result<Option<SignatureHead>> {
        self.items
            .get(&keys::signature_pk(project, signature), keys::HEAD_SK)
            .await?
            .as_ref()
            .map(from_item)
            .transpose()
    }

    async fn read_claim(
        &self,
        project: &Project,
        signature: &Signature,
        version: &Version,
    ) -> Result<VersionClaim> {
        let item = self
            .items
            .get(
                &keys::signature_pk(project, signature),
                &keys::version_sk(version),
            )
            .await?
            .ok_or_else(|| no_version(project, signature, version))?;
        from_item(&item)
    }

    /// Runs `attempt` until it commits, retrying with backoff while a conditional write lost
    /// to a concurrent writer (the head or record moved under it) or its answer was lost.
    pub(crate) async fn retry_conflicts<T, F, Fut>(&self, what: &str, mut attempt: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        let mut n = 0u32;
        loop {
            n += 1;
            match attempt().await {
                Ok(v) => return Ok(v),
                // A lost compare-and-set, or a lost answer (the conditions tell on the next
                // attempt). Throttling was retried by the backend decorator already.
                Err(Error::ConditionFailed { .. } | Error::Unavailable(_))
                    if n < self.config.max_write_attempts =>
                {
                    backoff(n).await
                }
                Err(Error::ConditionFailed { .. }) => {
                    return Err(Error::Unavailable(format!(
                        "{what} gave up after {n} attempts; retry"
                    )))
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// `GET /signatures`: the signatures of a project, one index range read per page.
    pub async fn list_signatures(
        &self,
        who: &Principal,
        project: &Project,
        order: SignatureOrder,
        limit: Option<usize>,
        cursor: Option<&str>,
    ) -> Result<Listing<SignatureSummary>> {
        who.see_project(project)?;
        let (index, pk) = match order {
            SignatureOrder::Name => (Index::Gsi4, keys::project_signatures_pk(project)),
            SignatureOrder::Updated => {
                (Index::Gsi3, keys::project_signatures_by_update_pk(project))
            }
        };
        let start = cursor
            .map(|c| decode_cursor(&self.cursors, who, c, index, &pk))
            .transpose()?;
        let query = Query::new(index, pk.clone())
            .forward(order == SignatureOrder::Name)
            .limit(crate::paging::page_limit(limit)?)
            .start(start);
        let page = self.items.query(&query).await?;
        let items = page
            .items
            .iter()
            .map(|i| {
                let h: SignatureHead = from_item(i)?;
                Ok(SignatureSummary {
                    signature: h.signature,
                    versions: h.versions,
                    latest_version: h.latest_version,
                    best_performance: h.best_performance,
                    updated_at: format_time(&h.updated_at),
                    aliases: h
                        .aliases
                        .into_iter()
                        .map(|(name, t)| (name, t.version))
                        .collect(),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Listing {
            items,
            next_cursor: page
                .next
                .map(|k| encode_cursor(&self.cursors, who, index, &pk, &k)),
        })
    }

    /// `GET /projects`: the projects `who` may see. A caller restricted to some projects gets
    /// exactly those; an unrestricted one every project that holds a signature, read from the
    /// counters' index partition (GSI3 `STATS`, sort key `<project>#<sig>#<kind>`) by skipping
    /// from one project to the next: one single-item index read per project, none per program.
    pub async fn list_projects(&self, who: &Principal) -> Result<Vec<Project>> {
        if let crate::access::Scope::Only(set) = &who.scope {
            return set.iter().map(|p| Project::parse(p)).collect();
        }
        let mut projects = Vec::new();
        let mut after: Option<String> = None;
        loop {
            // `project` is one of GSI3's own attributes: the index alone answers.
            let mut q = Query::new(Index::Gsi3, keys::STATS_INDEX_PK)
                .limit(1)
                .keys_only();
            if let Some(p) = &after {
                // Every key of project `p` starts with `p#`; `p$` (`$` follows `#`) is past them all.
                q = q.sk(SkRange::Gte(format!("{p}$")));
            }
            let page = self.items.query(&q).await?;
            let Some(item) = page.items.first() else {
                break;
            };
            let Some(name) = item.get("project") else {
                return Err(Error::Internal(format!(
                    "counter item {}/{} has no project",
                    item.pk, item.sk
                )));
            };
            projects.push(Project::parse(name)?);
            after = Some(name.to_owned());
        }
        Ok(projects)
    }

    /// Points an alias at an existing version. With `expected`, a compare-and-set: it fails with
    /// `Precondition` unless the alias currently points at that version (`None` inside = the
    /// alias must not exist yet). The alias's policy applies (see [`Self::move_alias`]).
    pub async fn put_alias(
        &self,
        who: &Principal,
        project: &Project,
        signature: &Signature,
        alias: &AliasName,
        version: &Version,
        expected: Option<Option<Version>>,
    ) -> Result<AliasTarget> {
        self.move_alias(who, project, signature, alias, version, expected, None)
            .await
            .map(|m| m.target)
    }

    /// [`Self::put_alias`] with the alias's promotion policy: a protected alias needs the admin
    /// role; a gate (`require`) is judged from the target's metric history in this request, and
    /// a failed gate refuses the move ([`Error::PolicyViolation`], recorded in the alias history)
    /// unless an admin gives an `override_reason` (recorded). Reads: the head, the version's
    /// claim and the policy in ONE batch read (plus the judged programs' records and metric
    /// blocks when there is a gate); then one transaction: the claim's check, the head, the
    /// policy's revision (or its absence) as judged, and the history entry.
    #[allow(clippy::too_many_arguments)]
    pub async fn move_alias(
        &self,
        who: &Principal,
        project: &Project,
        signature: &Signature,
        alias: &AliasName,
        version: &Version,
        expected: Option<Option<Version>>,
        override_reason: Option<String>,
    ) -> Result<AliasMove> {
        who.see(project, || no_version(project, signature, version))?;
        if override_reason.is_some() {
            who.admin("overriding an alias policy")?;
        }
        let sig_pk = keys::signature_pk(project, signature);
        let policy_pk = keys::alias_policies_pk(project, signature);
        let lost = LostAnswer::default();
        let step = self
            .retry_conflicts("alias update", || async {
                // The head, the version's claim and the policy in one batch read.
                let keys = [
                    (sig_pk.clone(), keys::HEAD_SK.to_owned()),
                    (sig_pk.clone(), keys::version_sk(version)),
                    (policy_pk.clone(), alias.to_string()),
                ];
                let mut found = self.items.get_many(&keys).await?.into_iter();
                let head: Option<SignatureHead> =
                    found.next().flatten().as_ref().map(from_item).transpose()?;
                let claim: VersionClaim = found
                    .next()
                    .flatten()
                    .as_ref()
                    .map(from_item)
                    .transpose()?
                    .ok_or_else(|| no_version(project, signature, version))?;
                let policy: Option<PolicyRecord> =
                    found.next().flatten().as_ref().map(from_item).transpose()?;
                let head = head.ok_or_else(|| no_versions(project, signature))?;
                let existing = head.aliases.get(alias.as_str());
                let current = existing.map(|t| t.version.clone());
                // Already there: nothing to write. Either nothing changes (an unconditional move,
                // or one whose expectation holds), or our earlier attempt committed and its
                // answer was lost.
                if let Some(done) = existing.filter(|t| t.version == *version && t.id == claim.id) {
                    let expectation_holds = expected.as_ref().is_none_or(|e| *e == current);
                    if expectation_holds || lost.seen() {
                        return Ok(MoveStep::Done(AliasMove {
                            target: done.clone(),
                            entry: None,
                        }));
                    }
                }
                if let Some(expected) = &expected {
                    if *expected != current {
                        return Err(Error::Precondition(format!(
                            "alias {alias} points at {}, not {} (it moved meanwhile)",
                            current.map_or("nothing".into(), |v| v.to_string()),
                            expected
                                .as_ref()
                                .map_or("nothing".into(), |v| v.to_string()),
                        )));
                    }
                }
                if policy.as_ref().is_some_and(|p| p.policy.protected) {
                    who.admin(&format!(
                        "moving the protected alias {alias} of {signature}"
                    ))?;
                }
                let now = crate::domain::now();
                let mut entry = HistoryEntry::new(alias, HistoryAction::Move, &who.id);
                entry.at = now;
                entry.from_version = current.clone();
                entry.to_version = Some(version.clone());
                entry.to_id = Some(claim.id);
                entry.policy_rev = policy.as_ref().map(|p| p.rev.clone());
                entry.override_reason = override_reason.clone();
                if let Some(req) = policy.as_ref().and_then(|p| p.policy.require.as_ref()) {
                    let gate = self
                        .evaluate_gate(project, signature, req, &claim, existing)
                        .await?;
                    if !gate.passed {
                        if override_reason.is_none() {
                            entry.action = HistoryAction::Refused;
                            entry.gate = Some(gate);
                            return Ok(MoveStep::Refused(entry));
                        }
                        entry.action = HistoryAction::Override;
                    }
                    entry.gate = Some(gate);
                }
                let target = AliasTarget {
                    version: version.clone(),
                    id: claim.id,
                    updated_at: now,
                    blob: claim.blob.clone(),
                };
                let mut new_head = head.clone();
                new_head.aliases.insert(alias.to_string(), target.clone());
                new_head.rev += 1;
                let ops = vec![
                    // The version must still exist (and be the same program) when the alias moves.
                    WriteOp::Check {
                        pk: sig_pk.clone(),
                        sk: keys::version_sk(version),
                        condition: Condition::AttrEquals("id".into(), claim.id.to_string()),
                    },
                    WriteOp::put(new_head.to_item(), rev_of(&head)),
                    // The policy must still be the one judged by (or still absent).
                    policy_condition(project, signature, alias.as_str(), policy.as_ref()),
                    WriteOp::put(entry.to_item(project, signature), Condition::NotExists),
                ];
                match lost.commit(self.items.transact(ops)).await {
                    Ok(()) => Ok(MoveStep::Done(AliasMove {
                        target,
                        entry: Some(entry),
                    })),
                    Err(Error::ConditionFailed { ops }) if ops.contains(&0) => {
                        Err(Error::Precondition(format!(
                            "version {version} of {signature} no longer exists"
                        )))
                    }
                    Err(e) => Err(e),
                }
            })
            .await;
        self.resolved.invalidate(&sig_pk);
        let moved = match step? {
            MoveStep::Done(m) => m,
            MoveStep::Refused(entry) => {
                self.record_history(project, signature, &entry).await?;
                let failed = entry
                    .gate
                    .as_ref()
                    .and_then(|g| g.failed.clone())
                    .unwrap_or_default();
                return Err(Error::PolicyViolation(format!(
                    "the policy of alias {alias} refused {version}: {failed}"
                )));
            }
        };
        if let Some(entry) = &moved.entry {
            self.emit(vec![Event::new(
                EventType::AliasMoved,
                json!({
                    "project": project.to_string(),
                    "signature": signature.to_string(),
                    "alias": alias.to_string(),
                    "version": moved.target.version.to_string(),
                    "program_id": moved.target.id.to_string(),
                    "from_version": entry.from_version.as_ref().map(|v| v.to_string()),
                    "by": entry.by,
                    "action": entry.action,
                    "gate": entry.gate,
                    "override_reason": entry.override_reason,
                    "history_id": entry.id.to_string(),
                }),
            )])
            .await;
        }
        Ok(moved)
    }

    /// Resolves an alias to its program id: one item read (cached for the resolve TTL), if `who`
    /// may see `project`.
    pub async fn resolve_alias(
        &self,
        who: &Principal,
        project: &Project,
        signature: &Signature,
        alias: &AliasName,
    ) -> Result<ProgramId> {
        who.see(project, || no_versions(project, signature))?;
        self.resolve_alias_in(project, signature, alias).await
    }

    async fn resolve_alias_in(
        &self,
        project: &Project,
        signature: &Signature,
        alias: &AliasName,
    ) -> Result<ProgramId> {
        Ok(self.resolve_alias_at(project, signature, alias).await?.0)
    }

    /// [`Self::resolve_alias_in`], with the target's blob pointer (none from the cache).
    async fn resolve_alias_at(
        &self,
        project: &Project,
        signature: &Signature,
        alias: &AliasName,
    ) -> Result<(ProgramId, Option<BlobPointer>)> {
        let pk = keys::signature_pk(project, signature);
        let selector = format!("alias:{alias}");
        if let Some(id) = self.resolved.get(&pk, &selector) {
            return Ok((id, None));
        }
        let generation = self.resolved.generation();
        let mut head = self.head(project, signature).await?;
        let target = head.aliases.remove(alias.as_str()).ok_or_else(|| {
            Error::NotFound(format!("signature {signature} has no alias {alias}"))
        })?;
        self.resolved.insert(&pk, &selector, target.id, generation);
        Ok((target.id, target.blob))
    }

    /// Loads the program an alias points at: one more item read than by id, in two round trips
    /// (the head, then the record and the blob together).
    pub async fn get_alias(
        &self,
        who: &Principal,
        project: &Project,
        signature: &Signature,
        alias: &AliasName,
    ) -> Result<LoadedProgram> {
        who.see(project, || no_versions(project, signature))?;
        let (id, pointer) = self.resolve_alias_at(project, signature, alias).await?;
        match self.program_at(&id, pointer.as_ref()).await {
            Err(Error::NotFound(_)) => {
                self.resolved
                    .invalidate(&keys::signature_pk(project, signature));
                let (id, pointer) = self.resolve_alias_at(project, signature, alias).await?;
                self.program_at(&id, pointer.as_ref()).await
            }
            other => other,
        }
    }

    /// Removes an alias (`NotFound` when it does not exist). A protected alias needs the admin
    /// role. Reads the head and the policy in one batch read; one transaction writes the head,
    /// checks the policy's revision and writes the history entry.
    pub async fn delete_alias(
        &self,
        who: &Principal,
        project: &Project,
        signature: &Signature,
        alias: &AliasName,
    ) -> Result<()> {
        who.see(project, || no_versions(project, signature))?;
        let sig_pk = keys::signature_pk(project, signature);
        let keys = [
            (sig_pk.clone(), keys::HEAD_SK.to_owned()),
            (
                keys::alias_policies_pk(project, signature),
                alias.to_string(),
            ),
        ];
        let lost = LostAnswer::default();
        let result = self
            .retry_conflicts("alias removal", || async {
                let mut found = self.items.get_many(&keys).await?.into_iter();
                let head: SignatureHead = found
                    .next()
                    .flatten()
                    .as_ref()
                    .map(from_item)
                    .transpose()?
                    .ok_or_else(|| no_versions(project, signature))?;
                let policy: Option<PolicyRecord> =
                    found.next().flatten().as_ref().map(from_item).transpose()?;
                let Some(existing) = head.aliases.get(alias.as_str()) else {
                    // After a lost answer, the alias being gone is this request's own removal
                    // (`204`), not a missing alias (`404`).
                    if lost.seen() {
                        return Ok(None);
                    }
                    return Err(Error::NotFound(format!(
                        "signature {signature} has no alias {alias}"
                    )));
                };
                if policy.as_ref().is_some_and(|p| p.policy.protected) {
                    who.admin(&format!(
                        "removing the protected alias {alias} of {signature}"
                    ))?;
                }
                let mut entry = HistoryEntry::new(alias, HistoryAction::Remove, &who.id);
                entry.from_version = Some(existing.version.clone());
                entry.policy_rev = policy.as_ref().map(|p| p.rev.clone());
                let mut new_head = head.clone();
                new_head.aliases.remove(alias.as_str());
                new_head.rev += 1;
                lost.commit(self.items.transact(vec![
                    WriteOp::put(new_head.to_item(), rev_of(&head)),
                    policy_condition(project, signature, alias.as_str(), policy.as_ref()),
                    WriteOp::put(entry.to_item(project, signature), Condition::NotExists),
                ]))
                .await?;
                Ok(Some(entry))
            })
            .await;
        self.resolved.invalidate(&sig_pk);
        let entry = result?;
        let mut detail = json!({
            "project": project.to_string(),
            "signature": signature.to_string(),
            "alias": alias.to_string(),
        });
        if let Some(e) = entry {
            detail["from_version"] = json!(e.from_version.map(|v| v.to_string()));
            detail["by"] = json!(e.by);
            detail["history_id"] = json!(e.id.to_string());
        }
        self.emit(vec![Event::new(EventType::AliasRemoved, detail)])
            .await;
        Ok(())
    }

    /// Rolls back: a NEW version (the next patch after the current latest) whose program is
    /// byte-identical to `to`'s (its blob is copied server-side), with `rollback_from`,
    /// `rollback_to` and `rollback_timestamp`. It becomes latest.
    pub async fn rollback(
        &self,
        who: &Principal,
        project: &Project,
        signature: &Signature,
        to: &Version,
    ) -> Result<StoredProgram> {
        who.see(project, || no_version(project, signature, to))?;
        let claim = self.read_claim(project, signature, to).await?;
        let target = self.record(&claim.id).await?;
        if target.status != crate::domain::ProgramStatus::Active {
            return Err(Error::Archived(format!(
                "version {to} is in cold storage; restore it before rolling back to it"
            )));
        }
        let now = crate::domain::now();
        let id = ProgramId::new();
        let blob_key = keys::blob_key(&now, &id, target.blob.compression.extension());
        self.blobs.copy(&target.blob_key, &blob_key).await?;
        let mut metadata = target.metadata.clone();
        for k in [
            "rollback_from",
            "rollback_to",
            "rollback_timestamp",
            "created_at",
        ] {
            metadata.remove(k);
        }
        let draft = Draft {
            id,
            project: project.clone(),
            signature: signature.clone(),
            version: None,
            created_at: now,
            metadata,
            primary_score: target.primary_score,
            optimization_method: target.optimization_method.clone(),
            tags: target.tags.clone(),
            blob_key: blob_key.clone(),
            blob: target.blob.clone(),
            rollback_to: Some(to.clone()),
            layout: target.layout.clone(),
        };
        // The new version's text index entries, before its record (see `text_index`).
        let entries = crate::model::text::index_items_of(
            project,
            &id,
            signature.as_str(),
            &draft.tags,
            &draft.metadata,
        );
        let committed = match self.put_text_entries(entries.clone()).await {
            Ok(()) => self.commit_new_program(draft, now, None, None).await,
            Err(e) => Err(e),
        };
        match committed {
            Ok(stored) => Ok(stored),
            Err(e) => {
                match self.committed_despite(&e, &id).await {
                    Some(Ok(stored)) => return Ok(stored),
                    Some(Err(())) => return Err(e),
                    None => {}
                }
                if let Err(d) = self.blobs.delete(&blob_key).await {
                    tracing::warn!(blob_key, error = %d, "could not remove the blob of a failed rollback");
                }
                self.remove_text_entries(entries).await;
                Err(e)
            }
        }
    }

    /// Deletes a program: record, version claim, tag entries and (if it is the latest) the
    /// head's latest, in one conditional transaction; then its text index entries and its blob. An alias target is refused
    /// unless `force`, which removes the aliases too. No alias ever dangles.
    pub async fn delete_program(&self, who: &Principal, id: &ProgramId, force: bool) -> Result<()> {
        self.delete_program_guarded(who, id, force, None).await
    }

    /// [`Self::delete_program`] with retention's guard: with `planned`, the record must still
    /// have that `updated_at` and must not be the signature's latest version (checked against
    /// the head the transaction is conditioned on).
    pub(crate) async fn delete_program_guarded(
        &self,
        who: &Principal,
        id: &ProgramId,
        force: bool,
        planned: Option<DateTime<Utc>>,
    ) -> Result<()> {
        let record = self.get_record(who, id).await?;
        if planned.is_some_and(|p| p != record.updated_at) {
            return Err(Error::Precondition(format!(
                "program {id} changed since the plan was made"
            )));
        }
        let (project, signature) = (&record.project, &record.signature);
        let sig_pk = record.signature_pk();
        let result = self
            .retry_conflicts("delete", || async {
                let head = self.read_head(project, signature).await?;
                let mut ops = vec![
                    WriteOp::delete(
                        keys::program_pk(id),
                        keys::PROG_SK,
                        Condition::AttrEquals(attr::REV.into(), format_time(&record.updated_at)),
                    ),
                    WriteOp::delete(
                        sig_pk.clone(),
                        keys::version_sk(&record.version),
                        Condition::AttrEquals("id".into(), id.to_string()),
                    ),
                ];
                if let Some(head) = head {
                    if planned.is_some() && head.latest_id == *id {
                        return Err(Error::Precondition(format!(
                            "program {id} is the latest version of {signature}"
                        )));
                    }
                    let pointing: Vec<String> =
                        head.aliases.iter().filter(|(_, t)| t.id == *id).map(|(n, _)| n.clone()).collect();
                    if !pointing.is_empty() && !force {
                        return Err(Error::Precondition(format!(
                            "alias(es) {} point at this program; move them or delete with ?force=true",
                            pointing.join(", ")
                        )));
                    }
                    if !pointing.is_empty() {
                        // The aliases go with their target: a protected one needs the admin
                        // role, each policy must still be the one read, and each removal is
                        // recorded in its alias's history.
                        let policy_pk = keys::alias_policies_pk(project, signature);
                        let policy_keys: Vec<(String, String)> = pointing
                            .iter()
                            .map(|n| (policy_pk.clone(), n.clone()))
                            .collect();
                        let policies = self.items.get_many(&policy_keys).await?;
                        for (name, item) in pointing.iter().zip(policies) {
                            let policy: Option<PolicyRecord> =
                                item.as_ref().map(from_item).transpose()?;
                            let alias = AliasName::parse(name)?;
                            if policy.as_ref().is_some_and(|p| p.policy.protected) {
                                who.admin(&format!(
                                    "deleting the target of the protected alias {alias} of {signature}"
                                ))?;
                            }
                            let mut entry =
                                HistoryEntry::new(&alias, HistoryAction::DeleteTarget, &who.id);
                            entry.from_version = Some(record.version.clone());
                            entry.policy_rev = policy.as_ref().map(|p| p.rev.clone());
                            ops.push(policy_condition(project, signature, name, policy.as_ref()));
                            ops.push(WriteOp::put(
                                entry.to_item(project, signature),
                                Condition::NotExists,
                            ));
                        }
                    }
                    let mut new_head = head.clone();
                    for name in &pointing {
                        new_head.aliases.remove(name);
                    }
                    new_head.versions = head.versions.saturating_sub(1);
                    new_head.rev += 1;
                    new_head.updated_at = crate::domain::now();
                    if new_head.versions == 0 {
                        ops.push(WriteOp::delete(sig_pk.clone(), keys::HEAD_SK, rev_of(&head)));
                    } else {
                        if head.latest_id == *id {
                            let next = self.highest_other_version(&sig_pk, id).await?;
                            new_head.latest_version = next.version;
                            new_head.latest_id = next.id;
                            new_head.latest_blob = next.blob;
                        }
                        if record.primary_score.is_some() && record.primary_score == head.best_performance {
                            new_head.best_performance = self.best_other_score(&sig_pk, id).await?;
                        }
                        ops.push(WriteOp::put(new_head.to_item(), rev_of(&head)));
                    }
                }
                for tag in record.tag_items() {
                    ops.push(WriteOp::delete(tag.pk, tag.sk, Condition::None));
                }
                ops.push(crate::model::counters::delete_counter_op(&record));
                match self.items.transact(ops).await {
                    Ok(()) => Ok(()),
                    Err(Error::ConditionFailed { ops }) if ops.contains(&0) || ops.contains(&1) => {
                        // Gone already: an earlier attempt of ours that timed out but committed
                        // (or a concurrent delete) did the work.
                        if let Err(Error::NotFound(_)) = self.record(id).await {
                            return Ok(());
                        }
                        Err(Error::Precondition(format!("program {id} changed or was deleted meanwhile")))
                    }
                    Err(e) => Err(e),
                }
            })
            .await;
        self.resolved.invalidate(&sig_pk);
        self.programs.remove(id);
        result?;
        // The record is gone: its text index entries go after it (best effort).
        self.remove_text_entries(crate::model::text::index_items(&record))
            .await;
        if let Err(e) = self.blobs.delete(&record.blob_key).await {
            // The record is gone; the orphan blob is collected by cleanup.
            tracing::warn!(blob_key = record.blob_key, error = %e, "could not delete the blob of a deleted program");
        }
        self.emit(vec![Event::new(
            EventType::ProgramDeleted,
            json!({
                "project": project.to_string(),
                "signature": signature.to_string(),
                "version": record.version.to_string(),
                "program_id": id.to_string(),
            }),
        )])
        .await;
        Ok(())
    }

    async fn highest_other_version(&self, sig_pk: &str, id: &ProgramId) -> Result<VersionClaim> {
        let q = Query::new(Index::Table, sig_pk)
            .sk(SkRange::BeginsWith(keys::VER_PREFIX.into()))
            .forward(false)
            .limit(2);
        let page = self.items.query(&q).await?;
        for item in &page.items {
            let c: VersionClaim = from_item(item)?;
            if c.id != *id {
                return Ok(c);
            }
        }
        Err(Error::Internal(
            "the head counts versions that do not exist".into(),
        ))
    }

    async fn best_other_score(&self, sig_pk: &str, id: &ProgramId) -> Result<Option<f64>> {
        let q = Query::new(Index::Gsi2, sig_pk).forward(false).limit(2);
        let page = self.items.query(&q).await?;
        for item in &page.items {
            let r: ProgramRecord = from_item(item)?;
            if r.id != *id {
                return Ok(r.primary_score);
            }
        }
        Ok(None)
    }

    /// Merges a metadata patch: tags, environment, description and custom keys — never
    /// signature, version, project or content. With `expected_updated_at` it is a compare-and-set.
    pub async fn update_metadata(
        &self,
        who: &Principal,
        id: &ProgramId,
        patch: MetadataPatch,
    ) -> Result<ProgramRecord> {
        let expected = patch
            .expected_updated_at
            .as_deref()
            .map(|t| crate::domain::parse_time("expected_updated_at", t))
            .transpose()?;
        validate_patch(&patch)?;
        let updated = self
            .retry_conflicts("metadata update", || async {
                let record = self.get_record(who, id).await?;
                if let Some(exp) = expected {
                    if format_time(&exp) != format_time(&record.updated_at) {
                        return Err(Error::Precondition(format!(
                            "program {id} was updated at {}, not {} (it changed meanwhile)",
                            format_time(&record.updated_at),
                            format_time(&exp)
                        )));
                    }
                }
                let updated = apply_patch(&record, &patch)?;
                // Entries of new words before the record has them (see `text_index`).
                let (old_words, new_words) = (
                    crate::model::text::index_items(&record),
                    crate::model::text::index_items(&updated),
                );
                self.put_text_entries(
                    new_words
                        .iter()
                        .filter(|n| !old_words.iter().any(|o| o.pk == n.pk && o.sk == n.sk))
                        .cloned()
                        .collect(),
                )
                .await?;
                let old_tags: Vec<_> = record.tag_items();
                let new_tags: Vec<_> = updated.tag_items();
                let mut ops = vec![WriteOp::put(
                    updated.to_item(),
                    Condition::AttrEquals(attr::REV.into(), format_time(&record.updated_at)),
                )];
                for t in &old_tags {
                    if !new_tags.iter().any(|n| n.pk == t.pk) {
                        ops.push(WriteOp::delete(t.pk.clone(), t.sk.clone(), Condition::None));
                    }
                }
                for t in new_tags {
                    if !old_tags.iter().any(|o| o.pk == t.pk) {
                        ops.push(WriteOp::put(t, Condition::None));
                    }
                }
                if updated.tags != record.tags {
                    // The version claim lists the tags (the signature's version listing shows
                    // them); the record's condition above makes this put atomic with it.
                    ops.push(WriteOp::put(
                        updated
                            .version_claim()
                            .to_item(&updated.project, &updated.signature),
                        Condition::None,
                    ));
                }
                match self.items.transact(ops).await {
                    // Entries of words the record no longer has stay: removing them could race
                    // with a later change that adds the word back (its entry would go), and a
                    // left-over entry only costs a search one record read.
                    Ok(()) => Ok(updated),
                    Err(Error::ConditionFailed { .. }) if expected.is_some() => Err(
                        Error::Precondition(format!("program {id} changed meanwhile")),
                    ),
                    Err(e) => Err(e),
                }
            })
            .await?;
        self.emit(vec![Event::new(
            EventType::MetadataUpdated,
            json!({
                "project": updated.project.to_string(),
                "signature": updated.signature.to_string(),
                "version": updated.version.to_string(),
                "program_id": id.to_string(),
                "updated_at": format_time(&updated.updated_at),
            }),
        )])
        .await;
        Ok(updated)
    }
}

fn validate_patch(patch: &MetadataPatch) -> Result<()> {
    if let Some(t) = &patch.tags {
        if t.add.len() > MAX_TAGS || t.remove.len() > MAX_TAGS {
            return Err(Error::invalid(
                "tags",
                format!("at most {MAX_TAGS} tags per change"),
            ));
        }
        for tag in t.add.iter().chain(&t.remove) {
            validate_tag(tag)?;
        }
    }
    for (key, v) in [
        ("environment", &patch.environment),
        ("description", &patch.description),
    ] {
        if let Some(Some(s)) = v {
            if s.chars().count() > MAX_STRING_LEN {
                return Err(Error::invalid(
                    key,
                    format!("{key} is longer than {MAX_STRING_LEN} characters"),
                ));
            }
        }
    }
    if let Some(set) = &patch.set {
        for key in set.keys() {
            if PROTECTED_KEYS.contains(&key.as_str()) {
                return Err(Error::invalid(
                    format!("set.{key}"),
                    format!("{key} cannot be changed with set (signature, version, project and content never change)"),
                ));
            }
            if key.is_empty() || key.chars().count() > 128 || key.chars().any(char::is_control) {
                return Err(Error::invalid(
                    "set",
                    format!("metadata key {key:?} must be 1-128 printable characters"),
                ));
            }
        }
    }
    Ok(())
}

fn apply_patch(record: &ProgramRecord, patch: &MetadataPatch) -> Result<ProgramRecord> {
    let mut r = record.clone();
    if let Some(t) = &patch.tags {
        r.tags.retain(|x| !t.remove.contains(x));
        for tag in &t.add {
            if !r.tags.contains(tag) {
                r.tags.push(tag.clone());
            }
        }
        if r.tags.len() > MAX_TAGS {
            return Err(Error::invalid(
                "tags",
                format!("a program has at most {MAX_TAGS} tags"),
            ));
        }
        r.metadata
            .insert("tags".into(), Value::from(r.tags.clone()));
    }
    for (key, v) in [
        ("environment", &patch.environment),
        ("description", &patch.description),
    ] {
        match v {
            Some(Some(s)) => {
                r.metadata.insert(key.into(), Value::String(s.clone()));
            }
            Some(None) => {
                r.metadata.remove(key);
            }
            None => {}
        }
    }
    if let Some(set) = &patch.set {
        for (k, v) in set {
            if v.is_null() {
                r.metadata.remove(k);
            } else {
                r.metadata.insert(k.clone(), v.clone());
            }
        }
    }
    if r.metadata.len() > MAX_METADATA_KEYS {
        return Err(Error::invalid(
            "set",
            format!("a program has at most {MAX_METADATA_KEYS} metadata keys"),
        ));
    }
    crate::domain::check_metadata_size(&r.metadata)?;
    let now = crate::domain::now();
    r.updated_at = next_time(record.updated_at, now);
    Ok(r)
}

/// A time strictly after `prev` at millisecond precision (the precision of stored times).
pub(crate) fn next_time(prev: DateTime<Utc>, now: DateTime<Utc>) -> DateTime<Utc> {
    let min = prev + chrono::Duration::milliseconds(1);
    if now >= min {
        now
    } else {
        min
    }
}
