//! Validated domain types. Raw strings from requests are parsed into these before they reach the
//! store, so nothing unvalidated ever becomes part of a key or a path.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::{Error, Result};

fn check_chars(
    field: &str,
    value: &str,
    max: usize,
    allowed: impl Fn(char) -> bool,
    what: &str,
) -> Result<()> {
    if value.is_empty() || value.chars().count() > max {
        return Err(Error::invalid(
            field,
            format!("{field} must be 1-{max} characters of {what}"),
        ));
    }
    if let Some(c) = value.chars().find(|c| !allowed(*c)) {
        return Err(Error::invalid(
            field,
            format!("{field} contains {c:?}; only {what} are allowed"),
        ));
    }
    Ok(())
}

/// Names that could read as `.`, `..` or a hidden file are refused wherever a name might one day
/// become part of a path (exports, backups, local files).
fn no_leading_dot(field: &str, value: &str) -> Result<()> {
    if value.starts_with('.') {
        return Err(Error::invalid(
            field,
            format!("{field} must not start with '.'"),
        ));
    }
    Ok(())
}

/// A DSPy signature name: 1-128 characters of `A-Za-z0-9_.:-`, not starting with `.`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct Signature(String);

impl Signature {
    pub fn parse(s: &str) -> Result<Self> {
        check_chars(
            "signature",
            s,
            128,
            |c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':' | '-'),
            "A-Za-z0-9_.:-",
        )?;
        no_leading_dot("signature", s)?;
        Ok(Signature(s.to_owned()))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for Signature {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Signature::parse(&s).map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A project: the scope every record belongs to. 1-64 characters of `A-Za-z0-9_.-`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct Project(String);

impl Project {
    pub const DEFAULT: &'static str = "default";

    pub fn parse(s: &str) -> Result<Self> {
        check_chars(
            "project",
            s,
            64,
            |c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'),
            "A-Za-z0-9_.-",
        )?;
        no_leading_dot("project", s)?;
        Ok(Project(s.to_owned()))
    }
    pub fn default_project() -> Self {
        Project(Self::DEFAULT.to_owned())
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for Project {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Project::parse(&s).map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for Project {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A semantic version (the `semver` crate) with a sortable string key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Version(semver::Version);

impl Version {
    pub const FIRST: Version = Version(semver::Version::new(1, 0, 0));

    pub fn parse(s: &str) -> Result<Self> {
        if s.len() > 128 {
            return Err(Error::invalid(
                "version",
                "version is longer than 128 characters",
            ));
        }
        semver::Version::parse(s)
            .map(Version)
            .map_err(|e| Error::invalid("version", format!("{s:?} is not a semantic version: {e}")))
    }

    pub fn semver(&self) -> &semver::Version {
        &self.0
    }

    /// The next patch release: `1.2.3` → `1.2.4`; a pre-release `2.0.0-rc.1` → its release `2.0.0`.
    pub fn next_patch(&self) -> Version {
        let v = &self.0;
        if v.pre.is_empty() {
            Version(semver::Version::new(v.major, v.minor, v.patch + 1))
        } else {
            Version(semver::Version::new(v.major, v.minor, v.patch))
        }
    }

    /// A string whose byte order is semver precedence: numbers zero-padded to 20 digits, a
    /// pre-release before its release, pre-release identifiers compared as the spec says (numeric
    /// ones numerically and before alphanumeric ones, a shorter list first). Build metadata has no
    /// precedence and is not part of the key.
    pub fn sort_key(&self) -> String {
        let v = &self.0;
        let mut key = format!("{:020}.{:020}.{:020}", v.major, v.minor, v.patch);
        if v.pre.is_empty() {
            // '~' sorts after '!' so a release follows all of its pre-releases.
            key.push('~');
        } else {
            for ident in v.pre.as_str().split('.') {
                // '!' sorts before every identifier character, so a shorter list sorts first.
                key.push('!');
                match ident.parse::<u64>() {
                    Ok(n) if !ident.is_empty() && ident.bytes().all(|b| b.is_ascii_digit()) => {
                        key.push_str(&format!("0{n:020}"));
                    }
                    _ => {
                        key.push('1');
                        key.push_str(ident);
                    }
                }
            }
        }
        key
    }
}

impl PartialOrd for Version {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Version {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0
            .cmp_precedence(&other.0)
            .then_with(|| self.0.build.cmp(&other.0.build))
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl Serialize for Version {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Version {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Version::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// `latest` or an exact version, as version routes accept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VersionSelector {
    Latest,
    Exact(Version),
}

impl VersionSelector {
    pub fn parse(s: &str) -> Result<Self> {
        if s == "latest" {
            Ok(VersionSelector::Latest)
        } else {
            Version::parse(s).map(VersionSelector::Exact)
        }
    }
}

/// An alias name: `[a-z0-9_-]{1,64}` (e.g. `production`, `staging`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct AliasName(String);

impl AliasName {
    pub fn parse(s: &str) -> Result<Self> {
        check_chars(
            "alias",
            s,
            64,
            |c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '-'),
            "a-z0-9_-",
        )?;
        Ok(AliasName(s.to_owned()))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for AliasName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A program id: a UUID v7 (time-ordered).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ProgramId(uuid::Uuid);

impl ProgramId {
    pub fn new() -> Self {
        ProgramId(uuid::Uuid::now_v7())
    }
    /// Parses the hyphenated form only: ids are never guessed from other spellings.
    pub fn parse(s: &str) -> Result<Self> {
        if s.len() != 36 {
            return Err(Error::invalid(
                "id",
                format!("{s:?} is not a program id (a UUID)"),
            ));
        }
        uuid::Uuid::parse_str(s)
            .map(ProgramId)
            .map_err(|_| Error::invalid("id", format!("{s:?} is not a program id (a UUID)")))
    }
}

impl Default for ProgramId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for ProgramId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

impl FromStr for ProgramId {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        ProgramId::parse(s)
    }
}

/// A tag: 1-64 characters, no control characters.
pub fn validate_tag(tag: &str) -> Result<()> {
    if tag.is_empty() || tag.chars().count() > 64 || tag.chars().any(|c| c.is_control() || c == '#')
    {
        return Err(Error::invalid(
            "metadata.tags",
            format!("tag {tag:?} must be 1-64 characters without control characters or '#'"),
        ));
    }
    Ok(())
}

/// The current time at millisecond precision, the precision every stored time is written with
/// (so a time read back compares equal to the one written).
pub fn now() -> DateTime<Utc> {
    use chrono::Timelike;
    let t = Utc::now();
    t.with_nanosecond(t.nanosecond() / 1_000_000 * 1_000_000)
        .unwrap_or(t)
}

/// RFC 3339 UTC with second precision and a `Z`, as every time in the API is written.
pub fn format_time(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Parses an RFC 3339 time given in a request.
pub fn parse_time(field: &str, s: &str) -> Result<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| Error::invalid(field, format!("{field} must be an RFC 3339 time: {e}")))
}

/// Lifecycle state of a program's blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProgramStatus {
    Active,
    Archived,
    Restoring,
}

/// Limits applied to metadata on store.
pub const MAX_TAGS: usize = 50;
pub const MAX_METADATA_KEYS: usize = 200;
pub const MAX_STRING_LEN: usize = 4096;
/// Largest metadata object, serialized (the record must fit a DynamoDB item of 400 KB with room
/// for the rest).
pub const MAX_METADATA_BYTES: usize = 64 * 1024;

/// Refuses a metadata object over [`MAX_METADATA_BYTES`] when serialized.
pub fn check_metadata_size(map: &Map<String, Value>) -> Result<()> {
    let len = serde_json::to_vec(map)
        .map(|v| v.len())
        .unwrap_or(usize::MAX);
    if len > MAX_METADATA_BYTES {
        return Err(Error::invalid(
            "metadata",
            format!("metadata is {len} bytes serialized; at most {MAX_METADATA_BYTES} are allowed"),
        ));
    }
    Ok(())
}

/// The metadata of a store request, validated: the well-known keys of the API with their types
/// checked, every other key kept verbatim (in order).
#[derive(Debug, Clone)]
pub struct NewMetadata {
    pub signature: Signature,
    pub version: Option<Version>,
    pub project: Project,
    pub created_at: Option<DateTime<Utc>>,
    pub primary_score: Option<f64>,
    pub optimization_method: Option<String>,
    pub tags: Vec<String>,
    /// The full metadata object as sent (well-known keys included).
    pub map: Map<String, Value>,
}

fn opt_str<'a>(map: &'a Map<String, Value>, key: &str) -> Result<Option<&'a str>> {
    match map.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => {
            if s.chars().count() > MAX_STRING_LEN {
                return Err(Error::invalid(
                    format!("metadata.{key}"),
                    format!("metadata.{key} is longer than {MAX_STRING_LEN} characters"),
                ));
            }
            Ok(Some(s))
        }
        Some(_) => Err(Error::invalid(
            format!("metadata.{key}"),
            format!("metadata.{key} must be a string"),
        )),
    }
}

fn check_number(key: &str, v: &Value) -> Result<f64> {
    match v.as_f64() {
        Some(n) if n.is_finite() => Ok(n),
        _ => Err(Error::invalid(
            format!("metadata.{key}"),
            format!("metadata.{key} must be a finite number"),
        )),
    }
}

/// The primary score of a `performance` value: the number itself, or an object's `score`, else its
/// `accuracy`.
pub fn primary_score(performance: Option<&Value>) -> Option<f64> {
    match performance? {
        Value::Number(n) => n.as_f64(),
        Value::Object(o) => o
            .get("score")
            .or_else(|| o.get("accuracy"))
            .and_then(Value::as_f64),
        _ => None,
    }
}

/// Names the field of an input error as a key of the request's `metadata`.
fn in_metadata(key: &str, e: Error) -> Error {
    match e {
        Error::InvalidInput { message, .. } => Error::InvalidInput {
            field: Some(format!("metadata.{key}")),
            message,
        },
        other => other,
    }
}

impl NewMetadata {
    /// Validates a request's `metadata` object. `now` bounds `created_at` (no future times).
    pub fn parse(value: Value, now: DateTime<Utc>) -> Result<Self> {
        let map = match value {
            Value::Object(m) => m,
            Value::Null => return Err(Error::invalid("metadata", "metadata is required")),
            _ => return Err(Error::invalid("metadata", "metadata must be an object")),
        };
        if map.len() > MAX_METADATA_KEYS {
            return Err(Error::invalid(
                "metadata",
                format!(
                    "metadata has {} keys; at most {MAX_METADATA_KEYS} are allowed",
                    map.len()
                ),
            ));
        }
        check_metadata_size(&map)?;
        for k in map.keys() {
            if k.is_empty() || k.chars().count() > 128 || k.chars().any(char::is_control) {
                return Err(Error::invalid(
                    "metadata",
                    format!("metadata key {k:?} must be 1-128 printable characters"),
                ));
            }
        }
        let signature = match opt_str(&map, "signature")? {
            Some(s) => Signature::parse(s).map_err(|e| in_metadata("signature", e))?,
            None => {
                return Err(Error::invalid(
                    "metadata.signature",
                    "metadata.signature is required",
                ))
            }
        };
        let version = opt_str(&map, "version")?
            .map(Version::parse)
            .transpose()
            .map_err(|e| in_metadata("version", e))?;
        let project = opt_str(&map, "project")?
            .map(Project::parse)
            .transpose()
            .map_err(|e| in_metadata("project", e))?
            .unwrap_or_else(Project::default_project);
        let created_at = match opt_str(&map, "created_at")? {
            Some(s) => {
                let t = parse_time("metadata.created_at", s)?;
                if t > now + chrono::Duration::seconds(5) {
                    return Err(Error::invalid(
                        "metadata.created_at",
                        "metadata.created_at is in the future",
                    ));
                }
                Some(t)
            }
            None => None,
        };
        let optimization_method = opt_str(&map, "optimization_method")?.map(str::to_owned);
        if let Some(m) = &optimization_method {
            if m.is_empty() || m.len() > 128 || m.contains('#') {
                return Err(Error::invalid(
                    "metadata.optimization_method",
                    "metadata.optimization_method must be 1-128 characters without '#'",
                ));
            }
        }
        for key in [
            "environment",
            "team",
            "description",
            "parent_id",
            "optimization_run_id",
        ] {
            opt_str(&map, key)?;
        }
        if let Some(p) = map.get("parent_id").and_then(Value::as_str) {
            ProgramId::parse(p).map_err(|_| {
                Error::invalid(
                    "metadata.parent_id",
                    "metadata.parent_id must be a program id",
                )
            })?;
        }
        for key in ["examples_count", "optimization_time"] {
            if let Some(v) = map.get(key).filter(|v| !v.is_null()) {
                let n = check_number(key, v)?;
                if n < 0.0 {
                    return Err(Error::invalid(
                        format!("metadata.{key}"),
                        format!("metadata.{key} must not be negative"),
                    ));
                }
            }
        }
        let primary = match map.get("performance") {
            None | Some(Value::Null) => None,
            Some(v @ Value::Number(_)) => Some(check_number("performance", v)?),
            Some(Value::Object(o)) => {
                for (k, v) in o {
                    check_number(&format!("performance.{k}"), v)?;
                }
                primary_score(map.get("performance"))
            }
            Some(_) => {
                return Err(Error::invalid(
                    "metadata.performance",
                    "metadata.performance must be a number or an object of named numbers",
                ))
            }
        };
        let tags = match map.get("tags") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(items)) => {
                if items.len() > MAX_TAGS {
                    return Err(Error::invalid(
                        "metadata.tags",
                        format!("at most {MAX_TAGS} tags are allowed"),
                    ));
                }
                let mut tags: Vec<String> = Vec::with_capacity(items.len());
                for item in items {
                    let tag = item.as_str().ok_or_else(|| {
                        Error::invalid("metadata.tags", "metadata.tags must be an array of strings")
                    })?;
                    validate_tag(tag)?;
                    if !tags.iter().any(|t| t == tag) {
                        tags.push(tag.to_owned());
                    }
                }
                tags
            }
            Some(_) => {
                return Err(Error::invalid(
                    "metadata.tags",
                    "metadata.tags must be an array of strings",
                ))
            }
        };
        Ok(NewMetadata {
            signature,
            version,
            project,
            created_at,
            primary_score: primary,
            optimization_method,
            tags,
            map,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Version {
        Version::parse(s).unwrap()
    }

    #[test]
    fn sort_key_orders_as_semver_precedence() {
        let ordered = [
            "0.9.9",
            "1.0.0-alpha",
            "1.0.0-alpha.1",
            "1.0.0-alpha.beta",
            "1.0.0-beta",
            "1.0.0-beta.2",
            "1.0.0-beta.11",
            "1.0.0-rc.1",
            "1.0.0",
            "1.9.0",
            "1.10.0",
            "2.0.0-rc.1",
            "2.0.0",
            "10.0.0",
        ];
        for w in ordered.windows(2) {
            assert!(v(w[0]) < v(w[1]), "{} < {}", w[0], w[1]);
            assert!(
                v(w[0]).sort_key() < v(w[1]).sort_key(),
                "key {} < {}",
                w[0],
                w[1]
            );
        }
    }

    #[test]
    fn next_patch() {
        assert_eq!(v("1.2.3").next_patch().to_string(), "1.2.4");
        assert_eq!(v("2.0.0-rc.1").next_patch().to_string(), "2.0.0");
    }

    #[test]
    fn signature_rules() {
        assert!(Signature::parse("qa.Answer:v2_x-y").is_ok());
        assert!(Signature::parse("a/b").is_err());
        assert!(Signature::parse("").is_err());
        assert!(Signature::parse(&"a".repeat(129)).is_err());
        assert!(Signature::parse(&"a".repeat(128)).is_ok());
        assert!(Signature::parse("café").is_err());
        assert!(Signature::parse("..").is_err());
        assert!(Signature::parse(".hidden").is_err());
        assert!(Project::parse("..").is_err());
        assert!(Project::parse("a..b").is_ok());
    }

    #[test]
    fn primary_score_rules() {
        use serde_json::json;
        assert_eq!(primary_score(Some(&json!(0.5))), Some(0.5));
        assert_eq!(
            primary_score(Some(&json!({"accuracy": 0.7, "score": 0.9}))),
            Some(0.9)
        );
        assert_eq!(primary_score(Some(&json!({"accuracy": 0.7}))), Some(0.7));
        assert_eq!(primary_score(Some(&json!({"f1": 0.7}))), None);
    }

    #[test]
    fn metadata_validation() {
        use serde_json::json;
        let now = Utc::now();
        assert!(NewMetadata::parse(json!({"signature": "A", "version": "x"}), now).is_err());
        assert!(NewMetadata::parse(json!({"version": "1.0.0"}), now).is_err());
        assert!(NewMetadata::parse(json!({"signature": "A", "performance": "high"}), now).is_err());
        assert!(NewMetadata::parse(json!({"signature": "A", "tags": [1]}), now).is_err());
        assert!(NewMetadata::parse(
            json!({"signature": "A", "created_at": "2999-01-01T00:00:00Z"}),
            now
        )
        .is_err());
        let m = NewMetadata::parse(
            json!({"signature": "A", "performance": {"accuracy": 0.8}, "tags": ["x", "x", "y"], "zeta": 1, "alpha": 2}),
            now,
        )
        .unwrap();
        assert_eq!(m.primary_score, Some(0.8));
        assert_eq!(m.tags, vec!["x", "y"]);
        assert_eq!(m.project.as_str(), "default");
        let keys: Vec<_> = m.map.keys().cloned().collect();
        assert_eq!(keys[3..], ["zeta".to_string(), "alpha".to_string()]);
    }
}
