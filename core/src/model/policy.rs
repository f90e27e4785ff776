//! Promotion policies of aliases and the alias history: what is kept, how a policy is read from
//! a request (every bad field is a `400` naming it), and the items they are stored in (keys from
//! [`crate::model::keys`]).
//!
//! * A **policy** (`APOL#<project>#<sig>` / `<alias>`): `protected` (moving or removing the alias
//!   needs the admin role) and `require` (an evaluation gate on the target's metric history).
//!   Every change gives it a new revision (`rev`, a UUID, never reused): a move's transaction is
//!   conditioned on the revision it evaluated (or on no policy), so a move never commits against
//!   a policy it was not judged by.
//! * A **history entry** (`AHIST#<project>#<sig>#<alias>` / `<time>#<uuid>`): every move, removal,
//!   refusal, override and policy change of one alias, newest first by its sort key.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::backend::{attr, Item};
use crate::domain::{AliasName, ProgramId, Project, Signature, Version};
use crate::error::{Error, Result};
use crate::model::keys;

/// Entries kept per alias: older ones are pruned by cleanup.
pub const HISTORY_KEPT: usize = 1000;
/// At most this many keys in `require.environment`.
pub const MAX_ENVIRONMENT_KEYS: usize = 16;
/// An override's reason: 1-500 characters.
pub const MAX_REASON_CHARS: usize = 500;
/// How many rollback copies a gate follows back to the version whose records it reads.
pub const MAX_ROLLBACK_CHAIN: usize = 8;

/// The gate of a policy: the target version's metric records must support the move.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Requirement {
    /// The metric whose records are judged.
    pub metric: String,
    /// The mean of the records must be at least this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    /// At least this many records must carry the metric (default 1).
    pub min_records: u64,
    /// Only records measured within this duration back from now (`7d`); all when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<String>,
    /// Only records whose environment has every one of these keys with that value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<Map<String, Value>>,
    /// The mean must also be at least the current target's mean minus `tolerance`.
    #[serde(default)]
    pub not_worse_than_current: bool,
    #[serde(default)]
    pub tolerance: f64,
}

/// A promotion policy as kept and answered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AliasPolicy {
    pub protected: bool,
    #[serde(default)]
    pub require: Option<Requirement>,
}

/// The stored policy of one alias.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PolicyRecord {
    pub project: Project,
    pub signature: Signature,
    pub alias: String,
    #[serde(flatten)]
    pub policy: AliasPolicy,
    /// A new UUID at every change.
    pub rev: String,
    pub updated_at: DateTime<Utc>,
    /// The principal that set it.
    pub updated_by: String,
}

impl PolicyRecord {
    pub fn to_item(&self) -> Item {
        Item::new(
            keys::alias_policies_pk(&self.project, &self.signature),
            self.alias.clone(),
        )
        .with(
            attr::DATA,
            serde_json::to_string(self).expect("policies serialize"),
        )
        .with(attr::REV, self.rev.clone())
    }
}

fn field(name: &str) -> String {
    format!("require.{name}")
}

fn number(v: &Value, name: &str) -> Result<f64> {
    v.as_f64().filter(|x| x.is_finite()).ok_or_else(|| {
        Error::invalid(
            field(name),
            format!("require.{name} must be a finite number, not {v}"),
        )
    })
}

/// Reads a policy from a request body: `{"protected"?: bool, "require"?: {...}}`. Unknown keys,
/// wrong types, a negative `min_records`, an invalid metric name, a malformed window or a
/// requirement without a metric are `400`s naming the field.
pub fn parse_policy(body: &Value) -> Result<AliasPolicy> {
    let obj = body
        .as_object()
        .ok_or_else(|| Error::invalid_request("the policy must be a JSON object"))?;
    let mut protected = false;
    let mut require = None;
    for (k, v) in obj {
        match k.as_str() {
            "protected" => {
                protected = v.as_bool().ok_or_else(|| {
                    Error::invalid(
                        "protected",
                        format!("protected must be true or false, not {v}"),
                    )
                })?
            }
            "require" if v.is_null() => {}
            "require" => require = Some(parse_requirement(v)?),
            other => {
                return Err(Error::invalid(
                    other,
                    format!("unknown policy field {other:?} (expected protected, require)"),
                ))
            }
        }
    }
    Ok(AliasPolicy { protected, require })
}

fn parse_requirement(v: &Value) -> Result<Requirement> {
    let obj = v
        .as_object()
        .ok_or_else(|| Error::invalid("require", "require must be an object"))?;
    let mut metric = None;
    let mut req = Requirement {
        metric: String::new(),
        min: None,
        min_records: 1,
        window: None,
        environment: None,
        not_worse_than_current: false,
        tolerance: 0.0,
    };
    let mut tolerance_given = false;
    for (k, v) in obj {
        match k.as_str() {
            "metric" => {
                let name = v.as_str().ok_or_else(|| {
                    Error::invalid(field("metric"), "require.metric must be a string")
                })?;
                crate::tracking::metrics::validate_metric_name(name, &field("metric"))?;
                metric = Some(name.to_owned());
            }
            "min" => req.min = Some(number(v, "min")?),
            "min_records" => {
                req.min_records = v.as_u64().filter(|n| *n <= 1_000_000).ok_or_else(|| {
                    Error::invalid(
                        field("min_records"),
                        format!("require.min_records must be a whole number from 0 to 1000000, not {v}"),
                    )
                })?
            }
            "window" => {
                let text = v.as_str().ok_or_else(|| {
                    Error::invalid(field("window"), "require.window must be a duration string like 7d")
                })?;
                let d = crate::config::parse_duration(&field("window"), text)?;
                if d.is_zero() {
                    return Err(Error::invalid(field("window"), "require.window must be longer than 0s"));
                }
                req.window = Some(text.trim().to_owned());
            }
            "environment" => {
                let env = v.as_object().ok_or_else(|| {
                    Error::invalid(field("environment"), "require.environment must be an object")
                })?;
                if env.len() > MAX_ENVIRONMENT_KEYS {
                    return Err(Error::invalid(
                        field("environment"),
                        format!("require.environment has at most {MAX_ENVIRONMENT_KEYS} keys"),
                    ));
                }
                for (key, value) in env {
                    if key.is_empty() || key.chars().count() > 128 || key.chars().any(char::is_control) {
                        return Err(Error::invalid(
                            field("environment"),
                            format!("environment key {key:?} must be 1-128 printable characters"),
                        ));
                    }
                    if !(value.is_string() || value.is_number() || value.is_boolean()) {
                        return Err(Error::invalid(
                            format!("require.environment.{key}"),
                            format!("require.environment.{key} must be a string, number or boolean"),
                        ));
                    }
                }
                req.environment = Some(env.clone());
            }
            "not_worse_than_current" => {
                req.not_worse_than_current = v.as_bool().ok_or_else(|| {
                    Error::invalid(
                        field("not_worse_than_current"),
                        "require.not_worse_than_current must be true or false",
                    )
                })?
            }
            "tolerance" => {
                let t = number(v, "tolerance")?;
                if t < 0.0 {
                    return Err(Error::invalid(field("tolerance"), "require.tolerance must not be negative"));
                }
                req.tolerance = t;
                tolerance_given = true;
            }
            other => {
                return Err(Error::invalid(
                    format!("require.{other}"),
                    format!(
                        "unknown requirement {other:?} (expected metric, min, min_records, window, environment, not_worse_than_current, tolerance)"
                    ),
                ))
            }
        }
    }
    req.metric = metric.ok_or_else(|| {
        Error::invalid(
            field("metric"),
            "require.metric is required: the metric the gate judges",
        )
    })?;
    if tolerance_given && !req.not_worse_than_current {
        return Err(Error::invalid(
            field("tolerance"),
            "require.tolerance applies to not_worse_than_current, which is not set",
        ));
    }
    Ok(req)
}

/// An admin's override of a failed gate: `{"reason": "..."}`.
pub fn parse_override(v: &Value) -> Result<String> {
    let reason = v
        .as_object()
        .filter(|o| o.len() == 1)
        .and_then(|o| o.get("reason"))
        .and_then(Value::as_str)
        .ok_or_else(|| Error::invalid("override", "override must be {\"reason\": \"...\"}"))?;
    let n = reason.trim().chars().count();
    if n == 0 || n > MAX_REASON_CHARS || reason.chars().any(|c| c.is_control() && c != '\n') {
        return Err(Error::invalid(
            "override.reason",
            format!("override.reason must be 1-{MAX_REASON_CHARS} printable characters"),
        ));
    }
    Ok(reason.trim().to_owned())
}

/// What a gate measured and decided.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GateEvaluation {
    pub passed: bool,
    pub metric: String,
    /// Records of the target carrying the metric (in the window, matching the environment).
    pub records: u64,
    /// Their mean (`null` without records).
    pub mean: Option<f64>,
    /// The programs whose records were read: the target, and for a rollback version the
    /// version(s) it copies.
    pub programs: Vec<ProgramId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_version: Option<Version>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_mean: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_records: Option<u64>,
    /// The first requirement that failed, with the measured value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed: Option<String>,
}

/// What happened to an alias.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HistoryAction {
    /// The alias was set or moved.
    Move,
    /// An admin moved it although its gate failed (`override_reason` says why).
    Override,
    /// The gate refused the move; the alias did not change.
    Refused,
    /// The alias was removed.
    Remove,
    /// A forced delete of its target removed it.
    DeleteTarget,
    /// A backup restore set it.
    Restore,
    /// Its policy was set or changed.
    PolicySet,
    /// Its policy was removed.
    PolicyRemoved,
}

/// One entry of an alias's history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryEntry {
    pub at: DateTime<Utc>,
    pub action: HistoryAction,
    pub alias: String,
    pub from_version: Option<Version>,
    pub to_version: Option<Version>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to_id: Option<ProgramId>,
    /// The principal's id (a token's name, a JWT subject, `cli`): never a secret.
    pub by: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gate: Option<GateEvaluation>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub override_reason: Option<String>,
    /// The policy in force (its revision), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_rev: Option<String>,
    /// The policy set (policy changes only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<AliasPolicy>,
    /// The backup a restore set the alias from (restores only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<String>,
    /// Unique id of the entry (its sort key's suffix).
    pub id: uuid::Uuid,
}

impl HistoryEntry {
    pub fn new(alias: &AliasName, action: HistoryAction, by: &str) -> HistoryEntry {
        HistoryEntry {
            at: crate::domain::now(),
            action,
            alias: alias.to_string(),
            from_version: None,
            to_version: None,
            to_id: None,
            by: by.to_owned(),
            gate: None,
            override_reason: None,
            policy_rev: None,
            policy: None,
            backup: None,
            id: uuid::Uuid::now_v7(),
        }
    }

    pub fn to_item(&self, project: &Project, signature: &Signature) -> Item {
        Item::new(
            keys::alias_history_pk(project, signature, &self.alias),
            keys::alias_history_sk(&self.at, &self.id),
        )
        .with(
            attr::DATA,
            serde_json::to_string(self).expect("history entries serialize"),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn policies_parse_and_bad_ones_name_their_field() {
        let p = parse_policy(
            &json!({"protected": true, "require": {"metric": "accuracy", "min": 0.9,
            "min_records": 20, "window": "7d", "environment": {"name": "eval"},
            "not_worse_than_current": true, "tolerance": 0.01}}),
        )
        .unwrap();
        assert!(p.protected);
        let r = p.require.unwrap();
        assert_eq!(
            (r.metric.as_str(), r.min, r.min_records),
            ("accuracy", Some(0.9), 20)
        );
        assert_eq!(
            parse_policy(&json!({})).unwrap(),
            AliasPolicy {
                protected: false,
                require: None
            }
        );
        assert_eq!(
            parse_policy(&json!({"require": {"metric": "f1"}}))
                .unwrap()
                .require
                .unwrap()
                .min_records,
            1
        );
        for (body, field) in [
            (
                json!({"require": {"metric": "a", "min_records": -1}}),
                "require.min_records",
            ),
            (
                json!({"require": {"metric": "a", "min_records": 1.5}}),
                "require.min_records",
            ),
            (
                json!({"require": {"metric": "bad name!"}}),
                "require.metric",
            ),
            (
                json!({"require": {"metric": "a", "window": "7 days"}}),
                "require.window",
            ),
            (
                json!({"require": {"metric": "a", "window": "0d"}}),
                "require.window",
            ),
            (json!({"require": {"min": 0.5}}), "require.metric"),
            (
                json!({"require": {"metric": "a", "tolerance": 0.1}}),
                "require.tolerance",
            ),
            (
                json!({"require": {"metric": "a", "not_worse_than_current": true, "tolerance": -1}}),
                "require.tolerance",
            ),
            (
                json!({"require": {"metric": "a", "environment": {"k": {"x": 1}}}}),
                "require.environment.k",
            ),
            (
                json!({"require": {"metric": "a", "maximum": 1}}),
                "require.maximum",
            ),
            (json!({"protected": "yes"}), "protected"),
            (json!({"protect": true}), "protect"),
        ] {
            match parse_policy(&body) {
                Err(Error::InvalidInput { field: Some(f), .. }) => assert_eq!(f, field, "{body}"),
                other => panic!("{body}: {other:?}"),
            }
        }
        assert!(parse_policy(&json!([1])).is_err());
    }

    #[test]
    fn overrides_need_a_reason() {
        assert_eq!(
            parse_override(&json!({"reason": " hotfix "})).unwrap(),
            "hotfix"
        );
        for bad in [
            json!({}),
            json!({"reason": ""}),
            json!({"reason": 1}),
            json!("x"),
            json!({"reason": "x", "by": "y"}),
            json!({"reason": "x".repeat(501)}),
        ] {
            assert!(parse_override(&bad).is_err(), "{bad}");
        }
    }
}
