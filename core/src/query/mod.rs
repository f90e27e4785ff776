//! Search and querying: the query language and the structured form ([`parse`]), the planner that
//! turns either into one index read plus conditions evaluated here ([`plan`]), and the execution
//! of searches, aggregations, time series and similar-program lookups ([`exec`]).
//!
//! Everything here is written once over the [`crate::backend::ItemStore`] trait: a backend only
//! answers the index range reads the planner asks for. Conditions, free-text relevance, sorting
//! and cursors are evaluated in this module the same way for every backend.

use std::cmp::Ordering;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::domain::{format_time, Version};
use crate::model::record::ProgramRecord;

pub mod exec;
pub mod parse;
pub mod plan;
pub mod similar;

pub use exec::{
    AggregateRequest, AggregateResult, SearchHit, SearchPage, TimeSeries, TimeSeriesRequest,
};
pub use parse::{parse_duration, parse_query, parse_structured, SearchRequest};
pub use similar::SimilarHit;

/// A version operand: a full semantic version, or `1` / `1.2` read as `1.0.0` / `1.2.0`.
pub fn loose_version(s: &str) -> Option<Version> {
    if let Ok(v) = Version::parse(s) {
        return Some(v);
    }
    let parts: Vec<&str> = s.split('.').collect();
    if parts.is_empty() || parts.len() > 2 || parts.iter().any(|p| p.parse::<u64>().is_err()) {
        return None;
    }
    let mut full = parts.join(".");
    for _ in parts.len()..3 {
        full.push_str(".0");
    }
    Version::parse(&full).ok()
}

/// A field a condition or a sort can name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Field {
    Id,
    Signature,
    Version,
    /// `optimization_method`.
    Method,
    /// The primary score (see [`crate::domain::primary_score`]).
    Performance,
    Tag,
    Environment,
    Project,
    Team,
    Description,
    Status,
    Created,
    Updated,
    /// A metadata key, possibly nested (`meta.a.b` → `["a", "b"]`).
    Meta(Vec<String>),
}

impl Field {
    /// The field named `name` in either query form (`method` and `optimization_method`, `created`
    /// and `created_at`, `tag` and `tags`, `meta.<key>` and `metadata.<key>`). `None` when unknown.
    pub fn from_name(name: &str) -> Option<Field> {
        Some(match name {
            "id" => Field::Id,
            "signature" => Field::Signature,
            "version" => Field::Version,
            "method" | "optimization_method" => Field::Method,
            "performance" => Field::Performance,
            "tag" | "tags" => Field::Tag,
            "environment" => Field::Environment,
            "project" => Field::Project,
            "team" => Field::Team,
            "description" => Field::Description,
            "status" => Field::Status,
            "created" | "created_at" => Field::Created,
            "updated" | "updated_at" => Field::Updated,
            other => {
                let rest = other
                    .strip_prefix("meta.")
                    .or_else(|| other.strip_prefix("metadata."))?;
                let path: Vec<String> = rest.split('.').map(str::to_owned).collect();
                if path.iter().any(String::is_empty) {
                    return None;
                }
                Field::Meta(path)
            }
        })
    }

    /// A field of a metadata key path (`group_by`, metric names): the well-known names map to
    /// their fields, anything else is a metadata key.
    pub fn from_key(name: &str) -> Option<Field> {
        Field::from_name(name).or_else(|| {
            let path: Vec<String> = name.split('.').map(str::to_owned).collect();
            (!path.iter().any(String::is_empty)).then_some(Field::Meta(path))
        })
    }

    pub fn name(&self) -> String {
        match self {
            Field::Id => "id".into(),
            Field::Signature => "signature".into(),
            Field::Version => "version".into(),
            Field::Method => "optimization_method".into(),
            Field::Performance => "performance".into(),
            Field::Tag => "tags".into(),
            Field::Environment => "environment".into(),
            Field::Project => "project".into(),
            Field::Team => "team".into(),
            Field::Description => "description".into(),
            Field::Status => "status".into(),
            Field::Created => "created_at".into(),
            Field::Updated => "updated_at".into(),
            Field::Meta(p) => format!("metadata.{}", p.join(".")),
        }
    }

    /// The values of this field in a record (several for tags and metadata arrays; none when
    /// the record lacks it).
    pub fn values(&self, r: &ProgramRecord) -> Vec<Value> {
        let s = |x: &str| vec![Value::String(x.to_owned())];
        let meta_str = |k: &str| match r.metadata.get(k) {
            Some(Value::String(v)) => s(v),
            _ => Vec::new(),
        };
        match self {
            Field::Id => s(&r.id.to_string()),
            Field::Signature => s(r.signature.as_str()),
            Field::Version => s(&r.version.to_string()),
            Field::Method => r.optimization_method.as_deref().map(s).unwrap_or_default(),
            Field::Performance => r
                .primary_score
                .and_then(serde_json::Number::from_f64)
                .map(|n| vec![Value::Number(n)])
                .unwrap_or_default(),
            Field::Tag => r.tags.iter().map(|t| Value::String(t.clone())).collect(),
            Field::Environment => meta_str("environment"),
            Field::Team => meta_str("team"),
            Field::Description => meta_str("description"),
            Field::Project => s(r.project.as_str()),
            Field::Status => vec![serde_json::to_value(r.status).expect("status serializes")],
            Field::Created => s(&format_time(&r.created_at)),
            Field::Updated => s(&format_time(&r.updated_at)),
            Field::Meta(path) => {
                let mut cur = r.metadata.get(&path[0]);
                for k in &path[1..] {
                    cur = cur.and_then(|v| v.get(k));
                }
                match cur {
                    None | Some(Value::Null) => Vec::new(),
                    Some(Value::Array(a)) => a.clone(),
                    Some(v) => vec![v.clone()],
                }
            }
        }
    }

    /// The single value of this field used for sorting and grouping (the first tag for tags).
    pub fn sort_value(&self, r: &ProgramRecord) -> SortVal {
        match self {
            Field::Version => SortVal::Str(r.version.sort_key()),
            Field::Performance => r
                .primary_score
                .map(SortVal::Num)
                .unwrap_or(SortVal::Missing),
            _ => self
                .values(r)
                .first()
                .map(SortVal::of)
                .unwrap_or(SortVal::Missing),
        }
    }
}

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Op {
    Eq,
    Ne,
    Gt,
    Gte,
    Lt,
    Lte,
    /// Any of a list of values.
    In,
    /// A string that starts with the operand.
    Prefix,
    /// `*` wildcards (`version:1.*`).
    Glob,
    /// Does not match the wildcard pattern (`field!=a*`).
    NotGlob,
}

/// One condition: `field op value`. For [`Op::In`] the value is an array.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cond {
    pub field: Field,
    pub op: Op,
    pub value: Value,
}

impl Cond {
    pub fn new(field: Field, op: Op, value: Value) -> Self {
        Cond { field, op, value }
    }

    /// Whether a record satisfies the condition. A record without the field satisfies only the
    /// negative operators (`ne`, not-glob).
    pub fn matches(&self, r: &ProgramRecord) -> bool {
        let values = self.field.values(r);
        let eq = |operand: &Value| {
            values
                .iter()
                .any(|v| compare(&self.field, v, operand) == Some(Ordering::Equal))
        };
        match self.op {
            Op::Eq => eq(&self.value),
            Op::Ne => !eq(&self.value),
            Op::In => self
                .value
                .as_array()
                .is_some_and(|list| list.iter().any(eq)),
            Op::Gt | Op::Gte | Op::Lt | Op::Lte => {
                values
                    .iter()
                    .any(|v| match compare(&self.field, v, &self.value) {
                        Some(o) => match self.op {
                            Op::Gt => o == Ordering::Greater,
                            Op::Gte => o != Ordering::Less,
                            Op::Lt => o == Ordering::Less,
                            _ => o != Ordering::Greater,
                        },
                        None => false,
                    })
            }
            Op::Prefix => match self.value.as_str() {
                Some(p) => values
                    .iter()
                    .any(|v| v.as_str().is_some_and(|s| s.starts_with(p))),
                None => false,
            },
            Op::Glob | Op::NotGlob => {
                let pattern = self.value.as_str().unwrap_or_default();
                let hit = values
                    .iter()
                    .any(|v| text_of(v).is_some_and(|s| glob_match(pattern, &s)));
                hit == (self.op == Op::Glob)
            }
        }
    }
}

fn text_of(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// Compares a record's value with an operand, coercing the operand the way a user typing the
/// query language means it: versions compare as semantic versions, times as times, numbers as
/// numbers (a numeric string operand is a number), booleans as booleans. `None` when they are
/// not comparable (a condition on them is false).
pub fn compare(field: &Field, value: &Value, operand: &Value) -> Option<Ordering> {
    match field {
        Field::Version => {
            let a = Version::parse(value.as_str()?).ok()?;
            let b = loose_version(operand.as_str()?)?;
            return Some(a.cmp(&b));
        }
        Field::Created | Field::Updated => {
            let a = DateTime::parse_from_rfc3339(value.as_str()?).ok()?;
            let b = DateTime::parse_from_rfc3339(operand.as_str()?).ok()?;
            return Some(a.with_timezone(&Utc).cmp(&b.with_timezone(&Utc)));
        }
        _ => {}
    }
    match (value, operand) {
        (Value::Number(a), _) => {
            let b = match operand {
                Value::Number(b) => b.as_f64()?,
                Value::String(s) => s.trim().parse::<f64>().ok().filter(|x| x.is_finite())?,
                _ => return None,
            };
            a.as_f64()?.partial_cmp(&b)
        }
        (Value::String(a), Value::String(b)) => Some(a.as_str().cmp(b.as_str())),
        (Value::Bool(a), _) => {
            let b = match operand {
                Value::Bool(b) => *b,
                Value::String(s) if s == "true" => true,
                Value::String(s) if s == "false" => false,
                _ => return None,
            };
            Some(a.cmp(&b))
        }
        (a, b) => (a == b).then_some(Ordering::Equal),
    }
}

/// `*` matches any run of characters (possibly empty); everything else matches itself.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while ti < t.len() {
        if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if pi < p.len() && p[pi] == t[ti] {
            pi += 1;
            ti += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

/// A value in a sort order: missing values sort lowest (first ascending, last descending), then
/// numbers, then strings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "t", content = "v")]
pub enum SortVal {
    Missing,
    Num(f64),
    Str(String),
}

impl SortVal {
    pub fn of(v: &Value) -> SortVal {
        match v {
            Value::Null => SortVal::Missing,
            Value::Number(n) => n.as_f64().map(SortVal::Num).unwrap_or(SortVal::Missing),
            Value::Bool(b) => SortVal::Num(if *b { 1.0 } else { 0.0 }),
            Value::String(s) => SortVal::Str(s.clone()),
            other => SortVal::Str(other.to_string()),
        }
    }

    fn rank(&self) -> u8 {
        match self {
            SortVal::Missing => 0,
            SortVal::Num(_) => 1,
            SortVal::Str(_) => 2,
        }
    }

    pub fn total_cmp(&self, other: &SortVal) -> Ordering {
        match (self, other) {
            (SortVal::Num(a), SortVal::Num(b)) => a.total_cmp(b),
            (SortVal::Str(a), SortVal::Str(b)) => a.cmp(b),
            (a, b) => a.rank().cmp(&b.rank()),
        }
    }

    /// The value as JSON (for group keys).
    pub fn to_json(&self) -> Value {
        match self {
            SortVal::Missing => Value::Null,
            SortVal::Num(x) => serde_json::Number::from_f64(*x)
                .map(Value::Number)
                .unwrap_or(Value::Null),
            SortVal::Str(s) => Value::String(s.clone()),
        }
    }
}

/// What a sort key orders by.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SortField {
    Field(Field),
    Relevance,
}

/// One key of a sort: field and direction.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SortKey {
    pub field: SortField,
    pub desc: bool,
}

impl SortKey {
    pub fn parse(name: &str, desc: bool) -> crate::Result<SortKey> {
        let field = match name {
            "relevance" | "relevance_score" => SortField::Relevance,
            other => SortField::Field(Field::from_key(other).ok_or_else(|| {
                crate::Error::invalid("sort", format!("cannot sort by {other:?}"))
            })?),
        };
        Ok(SortKey { field, desc })
    }
}

/// The full sort values of a result: one per sort key, then the id.
pub fn sort_values(keys: &[SortKey], r: &ProgramRecord, relevance: f64) -> Vec<SortVal> {
    let mut out: Vec<SortVal> = keys
        .iter()
        .map(|k| match &k.field {
            SortField::Relevance => SortVal::Num(relevance),
            SortField::Field(f) => f.sort_value(r),
        })
        .collect();
    out.push(SortVal::Str(r.id.to_string()));
    out
}

/// Compares two results' sort values under `keys`. The id breaks ties, in the direction of the
/// first key (the order the indexes keep: `<created>#<id>`, `<score>#<id>`).
pub fn compare_sort(keys: &[SortKey], a: &[SortVal], b: &[SortVal]) -> Ordering {
    for (i, k) in keys.iter().enumerate() {
        let o = a[i].total_cmp(&b[i]);
        let o = if k.desc { o.reverse() } else { o };
        if o != Ordering::Equal {
            return o;
        }
    }
    let n = keys.len();
    let o = a[n].total_cmp(&b[n]);
    if keys.first().is_some_and(|k| k.desc) {
        o.reverse()
    } else {
        o
    }
}

/// Free-text relevance (the matching rule and the score: [`crate::model::text::relevance`]).
pub use crate::model::text::relevance;

/// A one-line summary of a program: `Signature v1.2.0 · miprov2 · performance 0.910 · tags a, b ·
/// description` (absent parts left out, the description cut at 80 characters).
pub fn summary(r: &ProgramRecord) -> String {
    let mut parts = vec![format!("{} v{}", r.signature, r.version)];
    if let Some(m) = &r.optimization_method {
        parts.push(m.clone());
    }
    if let Some(p) = r.primary_score {
        parts.push(format!("performance {p:.3}"));
    }
    if !r.tags.is_empty() {
        parts.push(format!("tags {}", r.tags.join(", ")));
    }
    if let Some(d) = r.metadata.get("description").and_then(Value::as_str) {
        let line = d.lines().next().unwrap_or_default();
        let cut: String = line.chars().take(80).collect();
        parts.push(if cut.len() < line.len() {
            format!("{cut}…")
        } else {
            cut
        });
    }
    parts.join(" · ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob_match("1.*", "1.2.3"));
        assert!(glob_match("*", ""));
        assert!(glob_match("a*c*e", "abcde"));
        assert!(!glob_match("a*c", "abd"));
        assert!(glob_match("*.0", "1.0.0"));
        assert!(!glob_match("1.*", "2.1.0"));
    }

    #[test]
    fn sort_values_order_missing_numbers_strings() {
        let m = SortVal::Missing;
        let n = SortVal::Num(0.5);
        let s = SortVal::Str("a".into());
        assert_eq!(m.total_cmp(&n), Ordering::Less);
        assert_eq!(n.total_cmp(&s), Ordering::Less);
        assert_eq!(SortVal::Num(-1.0).total_cmp(&n), Ordering::Less);
    }

    #[test]
    fn comparisons_coerce_the_operand() {
        let num = Value::from(100);
        assert_eq!(
            compare(&Field::Meta(vec!["n".into()]), &num, &Value::from("99")),
            Some(Ordering::Greater)
        );
        assert_eq!(
            compare(&Field::Version, &Value::from("1.10.0"), &Value::from("1.9")),
            Some(Ordering::Greater)
        );
        assert_eq!(
            compare(&Field::Signature, &Value::from("a"), &Value::from(1)),
            None
        );
    }
}
