//! Alias promotion policies and the alias history (see [`crate::model::policy`] for what is kept):
//! setting, reading and removing a policy (admin), listing an alias's history, and evaluating a
//! policy's gate from the metric history (index reads only: each judged program's record and
//! one range read of its metric blocks). The moves themselves, which enforce the policies, are
//! in [`crate::storage::registry`].

use crate::access::Principal;
use crate::backend::{attr, Condition, Index, Query, WriteOp};
use crate::domain::{AliasName, ProgramId, Project, Signature, Version};
use crate::error::{Error, Result};
use crate::model::keys;
use crate::model::policy::{
    AliasPolicy, GateEvaluation, HistoryAction, HistoryEntry, PolicyRecord, Requirement,
    HISTORY_KEPT, MAX_ROLLBACK_CHAIN,
};
use crate::model::record::{from_item, AliasTarget, VersionClaim};
use crate::paging::{decode_cursor, encode_cursor};
use crate::storage::{no_versions, Listing, Storage};
use crate::tracking::metrics::Window;

fn no_policy(signature: &Signature, alias: &AliasName) -> Error {
    Error::NotFound(format!("alias {alias} of {signature} has no policy"))
}

/// The condition a change of an alias puts on its policy: still at the revision it was judged
/// by, or still absent.
pub(crate) fn policy_condition(
    project: &Project,
    signature: &Signature,
    alias: &str,
    policy: Option<&PolicyRecord>,
) -> WriteOp {
    WriteOp::Check {
        pk: keys::alias_policies_pk(project, signature),
        sk: alias.to_owned(),
        condition: match policy {
            Some(p) => Condition::AttrEquals(attr::REV.into(), p.rev.clone()),
            None => Condition::NotExists,
        },
    }
}

/// A number as a refusal message shows it: three decimals, more when three would round it onto
/// the bound it failed against.
fn shown(x: f64, bound: f64) -> String {
    let short = format!("{x:.3}");
    if short
        .parse::<f64>()
        .is_ok_and(|s| (s >= bound) != (x >= bound))
    {
        let long = format!("{x:.6}");
        long.trim_end_matches('0').to_owned()
    } else {
        short
    }
}

/// What a gate measured on one version (and the versions a rollback copies).
struct Measured {
    programs: Vec<ProgramId>,
    records: u64,
    sum: f64,
}

impl Measured {
    fn mean(&self) -> Option<f64> {
        (self.records > 0).then(|| self.sum / self.records as f64)
    }
}

impl Storage {
    pub(crate) async fn read_policy(
        &self,
        project: &Project,
        signature: &Signature,
        alias: &str,
    ) -> Result<Option<PolicyRecord>> {
        self.items
            .get(&keys::alias_policies_pk(project, signature), alias)
            .await?
            .as_ref()
            .map(from_item)
            .transpose()
    }

    /// `GET …/aliases/{alias}/policy`.
    pub async fn get_alias_policy(
        &self,
        who: &Principal,
        project: &Project,
        signature: &Signature,
        alias: &AliasName,
    ) -> Result<PolicyRecord> {
        who.see(project, || no_policy(signature, alias))?;
        self.read_policy(project, signature, alias.as_str())
            .await?
            .ok_or_else(|| no_policy(signature, alias))
    }

    /// `PUT …/aliases/{alias}/policy` (admin): the policy and a `policy_set` history entry in one
    /// transaction; the policy gets a new revision, so a move judged by the old one cannot
    /// commit. Setting the policy in force again writes nothing.
    pub async fn set_alias_policy(
        &self,
        who: &Principal,
        project: &Project,
        signature: &Signature,
        alias: &AliasName,
        policy: AliasPolicy,
    ) -> Result<PolicyRecord> {
        who.see(project, || no_versions(project, signature))?;
        who.admin("setting an alias policy")?;
        self.retry_conflicts("policy update", || async {
            let current = self.read_policy(project, signature, alias.as_str()).await?;
            if let Some(c) = current.as_ref().filter(|c| c.policy == policy) {
                return Ok(c.clone());
            }
            let record = PolicyRecord {
                project: project.clone(),
                signature: signature.clone(),
                alias: alias.to_string(),
                policy: policy.clone(),
                rev: uuid::Uuid::now_v7().to_string(),
                updated_at: crate::domain::now(),
                updated_by: who.id.clone(),
            };
            let mut entry = HistoryEntry::new(alias, HistoryAction::PolicySet, &who.id);
            entry.at = record.updated_at;
            entry.policy = Some(policy.clone());
            entry.policy_rev = Some(record.rev.clone());
            let condition = match &current {
                Some(c) => Condition::AttrEquals(attr::REV.into(), c.rev.clone()),
                None => Condition::NotExists,
            };
            self.items
                .transact(vec![
                    WriteOp::put(record.to_item(), condition),
                    WriteOp::put(entry.to_item(project, signature), Condition::NotExists),
                ])
                .await?;
            Ok(record)
        })
        .await
    }

    /// `DELETE …/aliases/{alias}/policy` (admin): `NotFound` when the alias has none.
    pub async fn delete_alias_policy(
        &self,
        who: &Principal,
        project: &Project,
        signature: &Signature,
        alias: &AliasName,
    ) -> Result<()> {
        who.see(project, || no_policy(signature, alias))?;
        who.admin("removing an alias policy")?;
        self.retry_conflicts("policy removal", || async {
            let current = self
                .read_policy(project, signature, alias.as_str())
                .await?
                .ok_or_else(|| no_policy(signature, alias))?;
            let mut entry = HistoryEntry::new(alias, HistoryAction::PolicyRemoved, &who.id);
            entry.policy_rev = Some(current.rev.clone());
            self.items
                .transact(vec![
                    WriteOp::delete(
                        keys::alias_policies_pk(project, signature),
                        alias.as_str(),
                        Condition::AttrEquals(attr::REV.into(), current.rev.clone()),
                    ),
                    WriteOp::put(entry.to_item(project, signature), Condition::NotExists),
                ])
                .await
        })
        .await
    }

    /// `GET …/aliases/{alias}/history`: newest first, one range read per page.
    pub async fn alias_history(
        &self,
        who: &Principal,
        project: &Project,
        signature: &Signature,
        alias: &AliasName,
        limit: Option<usize>,
        cursor: Option<&str>,
    ) -> Result<Listing<HistoryEntry>> {
        who.see(project, || no_versions(project, signature))?;
        let pk = keys::alias_history_pk(project, signature, alias.as_str());
        let start = cursor
            .map(|c| decode_cursor(&self.cursors, who, c, Index::Table, &pk))
            .transpose()?;
        let q = Query::new(Index::Table, pk.clone())
            .forward(false)
            .limit(crate::paging::page_limit(limit)?)
            .start(start);
        let page = self.items.query(&q).await?;
        Ok(Listing {
            items: page.items.iter().map(from_item).collect::<Result<_>>()?,
            next_cursor: page
                .next
                .map(|k| encode_cursor(&self.cursors, who, Index::Table, &pk, &k)),
        })
    }

    /// Writes one history entry on its own (a refusal), conditioned on its key being new: the
    /// server's retry of a write whose answer was lost finds it written.
    pub(crate) async fn record_history(
        &self,
        project: &Project,
        signature: &Signature,
        entry: &HistoryEntry,
    ) -> Result<()> {
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let op = WriteOp::put(entry.to_item(project, signature), Condition::NotExists);
            match self.items.transact(vec![op]).await {
                Ok(()) => return Ok(()),
                Err(Error::ConditionFailed { .. }) if attempt > 1 => return Ok(()),
                Err(Error::Unavailable(_)) if attempt < self.config.max_write_attempts => {
                    crate::retry::backoff(attempt).await
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Deletes the entries of one alias's history past the newest [`HISTORY_KEPT`] (cleanup;
    /// counted only in a dry run). Returns how many were (or would be) deleted.
    pub(crate) async fn prune_alias_history(&self, pk: &str, dry_run: bool) -> Result<u64> {
        let mut start = None;
        let mut seen = 0usize;
        let mut old: Vec<String> = Vec::new();
        loop {
            let q = Query::new(Index::Table, pk.to_owned())
                .forward(false)
                .limit(1000)
                .start(start.take());
            let page = self.items.query(&q).await?;
            for item in page.items {
                seen += 1;
                if seen > HISTORY_KEPT {
                    old.push(item.sk);
                }
            }
            match page.next {
                Some(n) => start = Some(n),
                None => break,
            }
        }
        if !dry_run {
            for chunk in old.chunks(100) {
                let ops = chunk
                    .iter()
                    .map(|sk| WriteOp::delete(pk.to_owned(), sk.clone(), Condition::None))
                    .collect();
                self.items.transact(ops).await?;
            }
        }
        Ok(old.len() as u64)
    }

    /// Judges a move of an alias to `target` by a policy's requirement: the records of the
    /// target (and of the version(s) a rollback version copies) that carry the metric, in the
    /// window, matching the environment; with `not_worse_than_current`, the current target's
    /// records measured the same way.
    pub(crate) async fn evaluate_gate(
        &self,
        project: &Project,
        signature: &Signature,
        req: &Requirement,
        target: &VersionClaim,
        current: Option<&AliasTarget>,
    ) -> Result<GateEvaluation> {
        let now = crate::domain::now();
        let window = Window {
            from: match &req.window {
                Some(w) => {
                    let d = crate::config::parse_duration("require.window", w)?;
                    now - chrono::Duration::from_std(d)
                        .map_err(|e| Error::Internal(format!("window {w}: {e}")))?
                }
                None => crate::tracking::metrics::earliest(),
            },
            to: now + crate::tracking::metrics::SKEW,
        };
        let mine = self
            .measure(project, signature, req, target.id, window)
            .await?;
        let mut eval = GateEvaluation {
            passed: true,
            metric: req.metric.clone(),
            records: mine.records,
            mean: mine.mean(),
            programs: mine.programs.clone(),
            current_version: None,
            current_mean: None,
            current_records: None,
            failed: None,
        };
        let scope = describe_scope(req);
        if mine.records < req.min_records {
            eval.failed = Some(format!(
                "{} has {} record{}{scope} < min_records {}",
                req.metric,
                mine.records,
                if mine.records == 1 { "" } else { "s" },
                req.min_records
            ));
        } else if let Some(min) = req.min {
            match mine.mean() {
                None => {
                    eval.failed = Some(format!(
                        "{} has no records{scope}: no mean to compare with min {min}",
                        req.metric
                    ))
                }
                Some(mean) if mean < min => {
                    eval.failed = Some(format!(
                        "{} mean {} over {} records{scope} < min {min}",
                        req.metric,
                        shown(mean, min),
                        mine.records
                    ))
                }
                Some(_) => {}
            }
        }
        if eval.failed.is_none() && req.not_worse_than_current {
            if let Some(cur) = current {
                let theirs = self
                    .measure(project, signature, req, cur.id, window)
                    .await?;
                eval.current_version = Some(cur.version.clone());
                eval.current_records = Some(theirs.records);
                eval.current_mean = theirs.mean();
                if let (Some(mean), Some(cm)) = (mine.mean(), theirs.mean()) {
                    let bound = cm - req.tolerance;
                    if mean < bound {
                        eval.failed = Some(format!(
                            "{} mean {} over {} records{scope} < current {}'s mean {} - tolerance {} = {}",
                            req.metric,
                            shown(mean, bound),
                            mine.records,
                            cur.version,
                            shown(cm, f64::INFINITY),
                            req.tolerance,
                            shown(bound, f64::INFINITY),
                        ));
                    }
                } else if mine.mean().is_none() && theirs.mean().is_some() {
                    eval.failed = Some(format!(
                        "{} has no records{scope}: not comparable with current {}'s mean {}",
                        req.metric,
                        cur.version,
                        shown(theirs.mean().unwrap_or_default(), f64::INFINITY)
                    ));
                }
            }
        }
        eval.passed = eval.failed.is_none();
        Ok(eval)
    }

    /// The records of `id` (and of the versions a rollback copies, followed back at most
    /// [`MAX_ROLLBACK_CHAIN`] times) that carry the metric, in the window, matching the
    /// environment.
    async fn measure(
        &self,
        project: &Project,
        signature: &Signature,
        req: &Requirement,
        id: ProgramId,
        window: Window,
    ) -> Result<Measured> {
        let mut out = Measured {
            programs: Vec::new(),
            records: 0,
            sum: 0.0,
        };
        let mut next = Some(id);
        while let Some(id) = next.take() {
            let record = match self.record(&id).await {
                Ok(r) => r,
                // A copied version deleted since: its records went with it.
                Err(Error::NotFound(_)) => break,
                Err(e) => return Err(e),
            };
            out.programs.push(id);
            let (mut n, mut sum) = (0u64, 0.0f64);
            self.read_metrics(&record, window, |r| {
                let matches = req
                    .environment
                    .as_ref()
                    .is_none_or(|env| env.iter().all(|(k, v)| r.environment.get(k) == Some(v)));
                if let (true, Some(x)) = (matches, r.metrics.get(&req.metric)) {
                    n += 1;
                    sum += x;
                }
            })
            .await?;
            out.records += n;
            out.sum += sum;
            if out.programs.len() > MAX_ROLLBACK_CHAIN {
                break;
            }
            // A rollback version has the content of the version it copies: its records count.
            if let Some(to) = record
                .metadata
                .get("rollback_to")
                .and_then(|v| v.as_str())
                .and_then(|v| Version::parse(v).ok())
            {
                let claim = self
                    .items
                    .get(
                        &keys::signature_pk(project, signature),
                        &keys::version_sk(&to),
                    )
                    .await?;
                if let Some(c) = claim {
                    let c: VersionClaim = from_item(&c)?;
                    if !out.programs.contains(&c.id) {
                        next = Some(c.id);
                    }
                }
            }
        }
        Ok(out)
    }
}

/// ` in the last 7d with environment name=eval` (empty without window or environment).
fn describe_scope(req: &Requirement) -> String {
    let mut s = String::new();
    if let Some(w) = &req.window {
        s.push_str(&format!(" in the last {w}"));
    }
    if let Some(env) = req.environment.as_ref().filter(|e| !e.is_empty()) {
        let pairs: Vec<String> = env
            .iter()
            .map(|(k, v)| match v {
                serde_json::Value::String(s) => format!("{k}={s}"),
                other => format!("{k}={other}"),
            })
            .collect();
        s.push_str(&format!(" with environment {}", pairs.join(", ")));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_show_enough_digits_to_fail() {
        assert_eq!(shown(0.874, 0.9), "0.874");
        // 0.8996 rounds to 0.900 at three decimals, which would not look below 0.9.
        assert_eq!(shown(0.8996, 0.9), "0.8996");
    }
}
