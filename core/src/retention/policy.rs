//! Retention planning: a PURE function of a signature's versions (with their metadata), its head
//! (latest version, aliases), a policy and an as-of time → one decision per program with the
//! reason. No I/O here; [`crate::retention::cleanup`] reads the store page by page, calls
//! [`plan_signature`] for one signature at a time and applies exactly what it returned.
//!
//! Rules, in the order they are tried (the first that matches gives the decision and reason):
//!
//! 1. the signature's **latest** version is kept;
//! 2. every **alias target** is kept;
//! 3. `keep_production`: environment `production`, tag `production` (alias `production` is rule 2);
//! 4. `keep_latest` N: the N highest versions (semver order) are kept;
//! 5. `keep_high_performing`: a primary score at or above the signature's 95th percentile is kept.
//!    The percentile is nearest-rank over the versions that have a score: sort ascending, take
//!    the value at rank `ceil(0.95 · n)` (1-based). With fewer than 20 scored versions that is the
//!    best score, so the best version is always kept.
//! 6. age ≥ `delete_after` (age from `created_at`) → **delete**;
//! 7. age ≥ `archive_after` (age from the later of `created_at` and the last restore, so a program
//!    restored by hand is not archived again by the next run) → **archive**;
//! 8. `archive_below_performance` T: a primary score below T → **archive** early, whatever its age;
//! 9. otherwise kept (too young).
//!
//! A program already archived whose decision is "archive" is reported as kept ("already
//! archived"): nothing happens to it. Nothing a rule 1–5 keeps is ever archived or deleted.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::domain::{format_time, ProgramId, ProgramStatus, Signature, Version};
use crate::error::{Error, Result};

/// The retention policy.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    /// Versions always kept per signature (the highest by semver).
    pub keep_latest: usize,
    /// Keep versions at or above the signature's 95th percentile of primary score.
    pub keep_high_performing: bool,
    /// Keep versions with environment `production` or tag `production`.
    pub keep_production: bool,
    /// Archive unprotected versions older than this.
    pub archive_after: Duration,
    /// Delete unprotected versions older than this.
    pub delete_after: Duration,
    /// Archive unprotected versions whose primary score is below this, whatever their age.
    pub archive_below_performance: Option<f64>,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            keep_latest: 5,
            keep_high_performing: true,
            keep_production: true,
            archive_after: Duration::days(90),
            delete_after: Duration::days(365),
            archive_below_performance: None,
        }
    }
}

/// The policy as a request gives it: every field optional (defaults from [`Policy::default`]),
/// durations as `90d` / `12h` strings.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyInput {
    pub keep_latest: Option<u64>,
    pub keep_high_performing: Option<bool>,
    pub keep_production: Option<bool>,
    pub archive_after: Option<String>,
    pub delete_after: Option<String>,
    pub archive_below_performance: Option<f64>,
}

fn duration(field: &str, text: &str) -> Result<Duration> {
    let d = crate::config::parse_duration(field, text)?;
    if d.is_zero() {
        return Err(Error::invalid(
            field,
            format!("{field} must be longer than 0"),
        ));
    }
    Duration::from_std(d).map_err(|_| Error::invalid(field, format!("{field} is too long")))
}

/// `90d`, `36h`, `30m` or `45s`: the largest unit that divides the duration.
pub fn format_duration(d: &Duration) -> String {
    let s = d.num_seconds();
    for (unit, n) in [("d", 86_400), ("h", 3600), ("m", 60)] {
        if s != 0 && s % n == 0 {
            return format!("{}{unit}", s / n);
        }
    }
    format!("{s}s")
}

impl PolicyInput {
    /// Validates the input over the defaults.
    pub fn resolve(&self, defaults: &Policy) -> Result<Policy> {
        let mut p = defaults.clone();
        if let Some(n) = self.keep_latest {
            if n > 10_000 {
                return Err(Error::invalid(
                    "policy.keep_latest",
                    "policy.keep_latest must be at most 10000",
                ));
            }
            p.keep_latest = n as usize;
        }
        if let Some(b) = self.keep_high_performing {
            p.keep_high_performing = b;
        }
        if let Some(b) = self.keep_production {
            p.keep_production = b;
        }
        if let Some(t) = &self.archive_after {
            p.archive_after = duration("policy.archive_after", t)?;
        }
        if let Some(t) = &self.delete_after {
            p.delete_after = duration("policy.delete_after", t)?;
        }
        if let Some(x) = self.archive_below_performance {
            if !x.is_finite() {
                return Err(Error::invalid(
                    "policy.archive_below_performance",
                    "policy.archive_below_performance must be a finite number",
                ));
            }
            p.archive_below_performance = Some(x);
        }
        Ok(p)
    }
}

impl Policy {
    /// The policy of the environment (the cleanup function's configuration), over the defaults:
    /// `DSPY_STORAGE_KEEP_LATEST`, `DSPY_STORAGE_ARCHIVE_AFTER_DAYS`,
    /// `DSPY_STORAGE_DELETE_AFTER_DAYS`, `DSPY_STORAGE_KEEP_HIGH_PERFORMING` (true|false),
    /// `DSPY_STORAGE_KEEP_PRODUCTION` (true|false), `DSPY_STORAGE_ARCHIVE_BELOW_PERFORMANCE`.
    /// `var` looks a variable up (`std::env::var(..).ok()` in production).
    pub fn from_env(var: impl Fn(&str) -> Option<String>) -> Result<Policy> {
        let get = |name: &str| {
            var(name)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        let num = |name: &str| -> Result<Option<u64>> {
            get(name)
                .map(|v| {
                    v.parse::<u64>().map_err(|_| {
                        Error::invalid(name, format!("{name} must be a whole number, not {v:?}"))
                    })
                })
                .transpose()
        };
        let boolean = |name: &str| -> Result<Option<bool>> {
            get(name)
                .map(|v| match v.as_str() {
                    "true" | "1" => Ok(true),
                    "false" | "0" => Ok(false),
                    _ => Err(Error::invalid(
                        name,
                        format!("{name} must be true or false"),
                    )),
                })
                .transpose()
        };
        let input = PolicyInput {
            keep_latest: num("DSPY_STORAGE_KEEP_LATEST")?,
            keep_high_performing: boolean("DSPY_STORAGE_KEEP_HIGH_PERFORMING")?,
            keep_production: boolean("DSPY_STORAGE_KEEP_PRODUCTION")?,
            archive_after: num("DSPY_STORAGE_ARCHIVE_AFTER_DAYS")?.map(|d| format!("{d}d")),
            delete_after: num("DSPY_STORAGE_DELETE_AFTER_DAYS")?.map(|d| format!("{d}d")),
            archive_below_performance: get("DSPY_STORAGE_ARCHIVE_BELOW_PERFORMANCE")
                .map(|v| {
                    v.parse::<f64>().map_err(|_| {
                        Error::invalid(
                            "DSPY_STORAGE_ARCHIVE_BELOW_PERFORMANCE",
                            "DSPY_STORAGE_ARCHIVE_BELOW_PERFORMANCE must be a number",
                        )
                    })
                })
                .transpose()?,
        };
        input.resolve(&Policy::default())
    }

    /// The policy as JSON (durations as strings), echoed in cleanup answers.
    pub fn to_json(&self) -> Value {
        serde_json::json!({
            "keep_latest": self.keep_latest,
            "keep_high_performing": self.keep_high_performing,
            "keep_production": self.keep_production,
            "archive_after": format_duration(&self.archive_after),
            "delete_after": format_duration(&self.delete_after),
            "archive_below_performance": self.archive_below_performance,
        })
    }
}

/// What the planner needs to know about one program.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    pub id: ProgramId,
    pub version: Version,
    pub created_at: DateTime<Utc>,
    /// When the program was last brought back from the archive.
    pub restored_at: Option<DateTime<Utc>>,
    pub score: Option<f64>,
    pub environment: Option<String>,
    pub tags: Vec<String>,
    pub status: ProgramStatus,
}

impl Candidate {
    pub fn of(record: &crate::model::record::ProgramRecord) -> Self {
        Candidate {
            id: record.id,
            version: record.version.clone(),
            created_at: record.created_at,
            restored_at: record.restored_at,
            score: record.primary_score,
            environment: record.environment().map(str::to_owned),
            tags: record.tags.clone(),
            status: record.status,
        }
    }
}

/// What happens to a program.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Keep,
    Archive,
    Delete,
}

/// One program's decision with its reason.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Decision {
    pub id: ProgramId,
    pub signature: Signature,
    pub version: Version,
    pub reason: String,
    #[serde(skip)]
    pub action: Action,
    #[serde(skip)]
    pub protected: bool,
}

/// The 95th percentile of the scores, nearest-rank: the value at rank `ceil(0.95 n)` of the
/// scores in ascending order. `None` when no version has a score.
pub fn p95_nearest_rank(scores: &[f64]) -> Option<f64> {
    let mut s: Vec<f64> = scores.iter().copied().filter(|x| x.is_finite()).collect();
    if s.is_empty() {
        return None;
    }
    s.sort_by(|a, b| a.total_cmp(b));
    let rank = (0.95 * s.len() as f64).ceil() as usize;
    Some(s[rank.clamp(1, s.len()) - 1])
}

fn fmt_score(x: f64) -> String {
    let s = format!("{x:.4}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    s.to_owned()
}

/// Plans one signature. `versions` are all of its programs (any order); `latest` is the head's
/// latest program; `aliases` maps alias names to the programs they point at. Returns one
/// decision per version, in the order given.
pub fn plan_signature(
    signature: &Signature,
    versions: &[Candidate],
    latest: Option<ProgramId>,
    aliases: &BTreeMap<String, ProgramId>,
    policy: &Policy,
    as_of: DateTime<Utc>,
) -> Vec<Decision> {
    // Rank by version, highest first, for keep_latest.
    let mut by_version: Vec<&Candidate> = versions.iter().collect();
    by_version.sort_by(|a, b| b.version.cmp(&a.version));
    let newest: Vec<ProgramId> = by_version
        .iter()
        .take(policy.keep_latest)
        .map(|c| c.id)
        .collect();
    // Fall back to the highest version when the head names none we know.
    let latest = latest.or_else(|| by_version.first().map(|c| c.id));
    let scores: Vec<f64> = versions.iter().filter_map(|c| c.score).collect();
    let p95 = if policy.keep_high_performing {
        p95_nearest_rank(&scores)
    } else {
        None
    };

    versions
        .iter()
        .map(|c| {
            let decide = |action: Action, protected: bool, reason: String| Decision {
                id: c.id,
                signature: signature.clone(),
                version: c.version.clone(),
                reason,
                action,
                protected,
            };
            let keep = |reason: String| decide(Action::Keep, true, reason);
            if Some(c.id) == latest {
                return keep("latest version".into());
            }
            let pointing: Vec<&str> = aliases
                .iter()
                .filter(|(_, id)| **id == c.id)
                .map(|(n, _)| n.as_str())
                .collect();
            if !pointing.is_empty() {
                return keep(format!("alias target ({})", pointing.join(", ")));
            }
            if policy.keep_production {
                if c.environment.as_deref() == Some("production") {
                    return keep("production (environment)".into());
                }
                if c.tags.iter().any(|t| t == "production") {
                    return keep("production (tag)".into());
                }
            }
            if newest.contains(&c.id) {
                return keep(format!("among the {} latest versions", policy.keep_latest));
            }
            if let (Some(p), Some(s)) = (p95, c.score) {
                if s >= p {
                    return keep(format!(
                        "high performing (score {} >= p95 {})",
                        fmt_score(s),
                        fmt_score(p)
                    ));
                }
            }
            let age = as_of - c.created_at;
            if age >= policy.delete_after {
                return decide(
                    Action::Delete,
                    false,
                    format!(
                        "older than {} (created {})",
                        format_duration(&policy.delete_after),
                        format_time(&c.created_at)
                    ),
                );
            }
            let archive = |reason: String| {
                if c.status == ProgramStatus::Active {
                    decide(Action::Archive, false, reason)
                } else {
                    decide(Action::Keep, false, format!("already archived ({reason})"))
                }
            };
            let clock = c.restored_at.map_or(c.created_at, |r| r.max(c.created_at));
            if as_of - clock >= policy.archive_after {
                let since = if clock > c.created_at {
                    format!("restored {}", format_time(&clock))
                } else {
                    format!("created {}", format_time(&clock))
                };
                return archive(format!(
                    "older than {} ({since})",
                    format_duration(&policy.archive_after)
                ));
            }
            if let (Some(t), Some(s)) = (policy.archive_below_performance, c.score) {
                if s < t {
                    return archive(format!(
                        "low performing (score {} < {})",
                        fmt_score(s),
                        fmt_score(t)
                    ));
                }
            }
            decide(
                Action::Keep,
                false,
                format!("younger than {}", format_duration(&policy.archive_after)),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn t(days_ago: i64) -> DateTime<Utc> {
        as_of() - Duration::days(days_ago)
    }
    fn as_of() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-25T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }
    fn id(n: u32) -> ProgramId {
        ProgramId::parse(&format!("00000000-0000-7000-8000-{n:012}")).unwrap()
    }
    fn sig() -> Signature {
        Signature::parse("qa.Answer").unwrap()
    }
    /// Version 1.0.n, created `days_ago`, with a score.
    fn c(n: u32, days_ago: i64, score: Option<f64>) -> Candidate {
        Candidate {
            id: id(n),
            version: Version::parse(&format!("1.0.{n}")).unwrap(),
            created_at: t(days_ago),
            restored_at: None,
            score,
            environment: None,
            tags: vec![],
            status: ProgramStatus::Active,
        }
    }
    fn plan(vs: &[Candidate], policy: &Policy, aliases: &[(&str, u32)]) -> Vec<(Action, String)> {
        let aliases = aliases
            .iter()
            .map(|(n, i)| (n.to_string(), id(*i)))
            .collect();
        let latest = vs
            .iter()
            .max_by(|a, b| a.version.cmp(&b.version))
            .map(|c| c.id);
        plan_signature(&sig(), vs, latest, &aliases, policy, as_of())
            .into_iter()
            .map(|d| (d.action, d.reason))
            .collect()
    }
    fn no_keep() -> Policy {
        Policy {
            keep_latest: 0,
            keep_high_performing: false,
            keep_production: false,
            ..Policy::default()
        }
    }

    #[test]
    fn percentile_nearest_rank() {
        assert_eq!(p95_nearest_rank(&[]), None);
        assert_eq!(p95_nearest_rank(&[0.4]), Some(0.4));
        // n = 20: rank ceil(19) = 19 → the 19th smallest.
        let xs: Vec<f64> = (1..=20).map(f64::from).collect();
        assert_eq!(p95_nearest_rank(&xs), Some(19.0));
        // n = 21: rank ceil(19.95) = 20.
        let xs: Vec<f64> = (1..=21).map(f64::from).collect();
        assert_eq!(p95_nearest_rank(&xs), Some(20.0));
        // n = 5: rank 5 → the best.
        assert_eq!(p95_nearest_rank(&[0.5, 0.1, 0.9, 0.3, 0.7]), Some(0.9));
    }

    #[test]
    fn durations_format() {
        assert_eq!(format_duration(&Duration::days(90)), "90d");
        assert_eq!(format_duration(&Duration::hours(36)), "36h");
        assert_eq!(format_duration(&Duration::seconds(61)), "61s");
    }

    /// Each rule alone, table-driven: (candidates, policy, aliases) → expected action of 1.0.1.
    #[test]
    fn every_rule() {
        let old = 400; // past delete_after
        let mid = 100; // past archive_after only
        let young = 10;
        let newest = c(9, 0, None); // the latest version of every case
        let prod_env = Candidate {
            environment: Some("production".into()),
            ..c(1, old, None)
        };
        let prod_tag = Candidate {
            tags: vec!["x".into(), "production".into()],
            ..c(1, old, None)
        };
        let restored = Candidate {
            restored_at: Some(t(5)),
            ..c(1, mid, None)
        };
        let archived = Candidate {
            status: ProgramStatus::Archived,
            ..c(1, mid, None)
        };
        let archived_old = Candidate {
            status: ProgramStatus::Archived,
            ..c(1, old, None)
        };
        let keep2 = Policy {
            keep_latest: 2,
            ..no_keep()
        };
        let hp = Policy {
            keep_high_performing: true,
            ..no_keep()
        };
        let prod = Policy {
            keep_production: true,
            ..no_keep()
        };
        let low = Policy {
            archive_below_performance: Some(0.5),
            ..no_keep()
        };
        type Case<'a> = (
            &'a str,
            Vec<Candidate>,
            Policy,
            Vec<(&'a str, u32)>,
            Action,
            &'a str,
        );
        let cases: Vec<Case> = vec![
            (
                "too young",
                vec![c(1, young, None)],
                no_keep(),
                vec![],
                Action::Keep,
                "younger than 90d",
            ),
            (
                "archive age",
                vec![c(1, mid, None)],
                no_keep(),
                vec![],
                Action::Archive,
                "older than 90d",
            ),
            (
                "delete age",
                vec![c(1, old, None)],
                no_keep(),
                vec![],
                Action::Delete,
                "older than 365d",
            ),
            (
                "alias",
                vec![c(1, old, None)],
                no_keep(),
                vec![("staging", 1)],
                Action::Keep,
                "alias target (staging)",
            ),
            (
                "alias production",
                vec![c(1, old, None)],
                no_keep(),
                vec![("production", 1)],
                Action::Keep,
                "alias target (production)",
            ),
            (
                "production env",
                vec![prod_env.clone()],
                prod.clone(),
                vec![],
                Action::Keep,
                "production (environment)",
            ),
            (
                "production env, rule off",
                vec![prod_env],
                no_keep(),
                vec![],
                Action::Delete,
                "older",
            ),
            (
                "production tag",
                vec![prod_tag],
                prod,
                vec![],
                Action::Keep,
                "production (tag)",
            ),
            (
                "keep latest 2: 1.0.1 is 3rd",
                vec![c(1, old, None), c(2, old, None)],
                keep2.clone(),
                vec![],
                Action::Delete,
                "older",
            ),
            (
                "keep latest 2: 1.0.1 is 2nd",
                vec![c(1, old, None)],
                keep2,
                vec![],
                Action::Keep,
                "among the 2 latest versions",
            ),
            (
                "high performing",
                vec![
                    c(1, old, Some(0.99)),
                    c(2, old, Some(0.5)),
                    c(3, old, Some(0.6)),
                ],
                hp.clone(),
                vec![],
                Action::Keep,
                "high performing (score 0.99 >= p95 0.99)",
            ),
            (
                "not high performing",
                vec![c(1, old, Some(0.5)), c(2, old, Some(0.99))],
                hp,
                vec![],
                Action::Delete,
                "older",
            ),
            (
                "low performer early",
                vec![c(1, young, Some(0.3))],
                low.clone(),
                vec![],
                Action::Archive,
                "low performing (score 0.3 < 0.5)",
            ),
            (
                "good performer young",
                vec![c(1, young, Some(0.7))],
                low.clone(),
                vec![],
                Action::Keep,
                "younger",
            ),
            (
                "no score young",
                vec![c(1, young, None)],
                low,
                vec![],
                Action::Keep,
                "younger",
            ),
            (
                "restored recently",
                vec![restored],
                no_keep(),
                vec![],
                Action::Keep,
                "younger than 90d",
            ),
            (
                "already archived",
                vec![archived],
                no_keep(),
                vec![],
                Action::Keep,
                "already archived (older than 90d",
            ),
            (
                "archived, delete age",
                vec![archived_old],
                no_keep(),
                vec![],
                Action::Delete,
                "older than 365d",
            ),
        ];
        for (name, mut vs, policy, aliases, action, reason) in cases {
            vs.push(newest.clone());
            let out = plan(&vs, &policy, &aliases);
            let (got, why) = &out[0];
            assert_eq!(*got, action, "{name}: {why}");
            assert!(
                why.starts_with(reason),
                "{name}: {why:?} should start with {reason:?}"
            );
            // The latest is always kept.
            assert_eq!(
                out.last().unwrap(),
                &(Action::Keep, "latest version".to_string()),
                "{name}"
            );
        }
    }

    /// The rules together on one signature with the default policy.
    #[test]
    fn rules_interplay_with_defaults() {
        let mut vs: Vec<Candidate> = (1..=12)
            .map(|n| c(n, 800 - 60 * n as i64, Some(0.5 + n as f64 / 100.0)))
            .collect();
        vs[0].score = Some(0.99); // 1.0.1: the best, very old
        vs[1].environment = Some("production".into()); // 1.0.2
        let out = plan(&vs, &Policy::default(), &[("staging", 3)]);
        let actions: Vec<Action> = out.iter().map(|(a, _)| *a).collect();
        use Action::*;
        // Ages: 1.0.n is 800 - 60n days old: 740, 680, ..., 80.
        assert_eq!(
            actions,
            vec![
                Keep,   // 1.0.1 high performing
                Keep,   // 1.0.2 production
                Keep,   // 1.0.3 alias
                Delete, // 1.0.4 560 days
                Delete, // 1.0.5 500
                Delete, // 1.0.6 440
                Delete, // 1.0.7 380
                Keep,   // 1.0.8..1.0.12: the 5 latest
                Keep, Keep, Keep, Keep,
            ],
            "{out:#?}"
        );
        // With keep_latest 2, 1.0.8 (320 d), 1.0.9 (260 d), 1.0.10 (200 d) are archived.
        let p = Policy {
            keep_latest: 2,
            ..Policy::default()
        };
        let out = plan(&vs, &p, &[("staging", 3)]);
        let actions: Vec<Action> = out.iter().map(|(a, _)| *a).collect();
        assert_eq!(
            &actions[7..],
            &[Archive, Archive, Archive, Keep, Keep],
            "{out:#?}"
        );
    }

    fn arb_candidates() -> impl Strategy<Value = Vec<Candidate>> {
        prop::collection::vec(
            (
                0i64..900,
                prop::option::of(0.0f64..1.0),
                prop::bool::weighted(0.1),
                prop::bool::weighted(0.1),
                prop::bool::weighted(0.2),
            ),
            1..40,
        )
        .prop_map(|rows| {
            rows.into_iter()
                .enumerate()
                .map(
                    |(i, (age, score, prod_env, prod_tag, archived))| Candidate {
                        environment: prod_env.then(|| "production".to_string()),
                        tags: if prod_tag {
                            vec!["production".into()]
                        } else {
                            vec![]
                        },
                        status: if archived {
                            ProgramStatus::Archived
                        } else {
                            ProgramStatus::Active
                        },
                        ..c(i as u32 + 1, age, score)
                    },
                )
                .collect()
        })
    }

    fn arb_policy() -> impl Strategy<Value = Policy> {
        (
            0usize..8,
            any::<bool>(),
            any::<bool>(),
            1i64..500,
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

    proptest! {
        /// Nothing a keep rule protects is ever archived or deleted; the latest and every alias
        /// target are always kept; already-archived programs are never archived again.
        #[test]
        fn protected_programs_are_never_touched(
            vs in arb_candidates(),
            policy in arb_policy(),
            alias_picks in prop::collection::vec(0usize..40, 0..3),
        ) {
            let aliases: BTreeMap<String, ProgramId> = alias_picks
                .iter()
                .enumerate()
                .filter_map(|(i, p)| vs.get(*p).map(|c| (format!("a{i}"), c.id)))
                .collect();
            let latest = vs.iter().max_by(|a, b| a.version.cmp(&b.version)).unwrap().id;
            let out = plan_signature(&sig(), &vs, Some(latest), &aliases, &policy, as_of());
            prop_assert_eq!(out.len(), vs.len());
            let mut by_version: Vec<&Candidate> = vs.iter().collect();
            by_version.sort_by(|a, b| b.version.cmp(&a.version));
            let newest: Vec<ProgramId> = by_version.iter().take(policy.keep_latest).map(|c| c.id).collect();
            let scores: Vec<f64> = vs.iter().filter_map(|c| c.score).collect();
            let p95 = p95_nearest_rank(&scores);
            for (cand, d) in vs.iter().zip(&out) {
                let kept_by_rule = cand.id == latest
                    || aliases.values().any(|i| *i == cand.id)
                    || (policy.keep_production
                        && (cand.environment.as_deref() == Some("production")
                            || cand.tags.iter().any(|t| t == "production")))
                    || newest.contains(&cand.id)
                    || (policy.keep_high_performing
                        && matches!((cand.score, p95), (Some(s), Some(p)) if s >= p));
                if kept_by_rule {
                    prop_assert_eq!(d.action, Action::Keep, "{:?}", d);
                    prop_assert!(d.protected);
                }
                if d.action == Action::Archive {
                    prop_assert_eq!(cand.status, ProgramStatus::Active);
                }
                if d.action != Action::Keep {
                    prop_assert!(!d.protected);
                }
            }
            // Planning is deterministic (a dry run and the real run see the same plan).
            let again = plan_signature(&sig(), &vs, Some(latest), &aliases, &policy, as_of());
            prop_assert_eq!(out, again);
        }
    }

    #[test]
    fn policy_input_and_env() {
        let p = PolicyInput {
            keep_latest: Some(3),
            archive_after: Some("30d".into()),
            ..Default::default()
        }
        .resolve(&Policy::default())
        .unwrap();
        assert_eq!(p.keep_latest, 3);
        assert_eq!(p.archive_after, Duration::days(30));
        assert_eq!(p.delete_after, Duration::days(365));
        assert!(PolicyInput {
            archive_after: Some("0d".into()),
            ..Default::default()
        }
        .resolve(&Policy::default())
        .is_err());
        let env = |name: &str| match name {
            "DSPY_STORAGE_KEEP_LATEST" => Some("7".to_string()),
            "DSPY_STORAGE_DELETE_AFTER_DAYS" => Some("730".to_string()),
            "DSPY_STORAGE_KEEP_PRODUCTION" => Some("false".to_string()),
            _ => None,
        };
        let p = Policy::from_env(env).unwrap();
        assert_eq!(p.keep_latest, 7);
        assert_eq!(p.delete_after, Duration::days(730));
        assert!(!p.keep_production);
        assert_eq!(p.archive_after, Duration::days(90));
        assert!(Policy::from_env(|_| Some("x".into())).is_err());
        assert_eq!(p.to_json()["delete_after"], "730d");
    }
}
