//! The two forms of a search and what they compile to: a [`SearchRequest`] (conditions, free-text
//! words, sort, page).
//!
//! ## The query language (`GET /search?q=`)
//!
//! ```text
//! query    = ws* [ term { ws+ term } ] ws*
//! term     = name op value          a condition
//!          | word                   free text
//! name     = ( letter | digit | "_" | "." | "-" )+      signature, version, method, performance,
//!                                   tag, environment, project, team, description, status, id,
//!                                   created, updated, meta.<key>[.<key>…]
//! op       = ":" | "!=" | ">=" | "<=" | ">" | "<"
//! value    = quoted | bare
//! word     = quoted | bare
//! quoted   = '"' { any char but '"' and '\' | '\' any char } '"'
//! bare     = ( any char but whitespace and '"' )+
//! ```
//!
//! `name:value` is equality, or a wildcard match when the value holds `*`; `name!=value` is its
//! negation. `created:` takes `today`, `yesterday`, `last_week`, `last_month` or a duration
//! (`7d`, `12h`, `30m`, `2w`, `45s`); `created`/`updated` comparisons take an RFC 3339 time, a
//! date `YYYY-MM-DD` or a duration (that long before now). `performance` comparisons take a
//! number, `version` comparisons a (possibly partial) semantic version. All terms are ANDed.

use chrono::{DateTime, Duration, NaiveDate, Timelike, Utc};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::{loose_version, Cond, Field, Op, SortKey};
use crate::domain::{format_time, Project};
use crate::error::{Error, Result};

/// A search, from either form.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchRequest {
    pub project: Project,
    pub conds: Vec<Cond>,
    /// Free-text words (lowercase runs of letters and digits, see [`crate::model::text::words`]).
    pub text: Vec<String>,
    /// As asked; empty = the default (relevance with free text, newest first without).
    pub sort: Vec<SortKey>,
    pub limit: usize,
    pub cursor: Option<String>,
    /// Hash of the query without page size and cursor: a cursor is only valid for it.
    pub fingerprint: String,
}

pub const DEFAULT_LIMIT: usize = 20;
pub const MAX_LIMIT: usize = crate::paging::MAX_PAGE;

fn limit_of(limit: Option<usize>) -> Result<usize> {
    crate::paging::page_limit(Some(limit.unwrap_or(DEFAULT_LIMIT)))
}

fn fingerprint(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update([0u8]);
    }
    hex::encode(&h.finalize()[..8])
}

/// A duration like `90d`, `12h`, `30m`, `2w`, `45s` (the one parser: [`crate::config::parse_duration`]);
/// `None` when it is not one (the caller names the field in its error).
pub fn parse_duration(s: &str) -> Option<Duration> {
    crate::config::parse_duration("duration", s)
        .ok()
        .and_then(|d| Duration::from_std(d).ok())
}

fn midnight(t: DateTime<Utc>) -> DateTime<Utc> {
    t.date_naive()
        .and_hms_opt(0, 0, 0)
        .expect("midnight exists")
        .and_utc()
}

/// `created:<keyword|duration>` as a half-open range `[from, to)` (`to` = `None`: up to now).
fn created_range(word: &str, now: DateTime<Utc>) -> Option<(DateTime<Utc>, Option<DateTime<Utc>>)> {
    Some(match word {
        "today" => (midnight(now), None),
        "yesterday" => (midnight(now) - Duration::days(1), Some(midnight(now))),
        "last_week" => (now - Duration::days(7), None),
        "last_month" => (now - Duration::days(30), None),
        other => (now - parse_duration(other)?, None),
    })
}

/// A time operand: RFC 3339, a date (`YYYY-MM-DD`, midnight UTC) or a duration before `now`.
fn time_operand(s: &str, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.with_timezone(&Utc));
    }
    if let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        return Some(d.and_hms_opt(0, 0, 0)?.and_utc());
    }
    parse_duration(s).map(|d| now - d)
}

fn time_value(t: DateTime<Utc>) -> Value {
    Value::String(format_time(
        &t.with_nanosecond(t.nanosecond() / 1_000_000 * 1_000_000)
            .unwrap_or(t),
    ))
}

const FIELD_NAMES: &str = "signature, version, method, performance, tag, environment, project, \
                           team, description, status, id, created, updated or meta.<key>";

/// A syntax error at a character position of the query.
fn syntax(pos: usize, message: impl std::fmt::Display) -> Error {
    Error::invalid(
        "q",
        format!("query syntax error at position {pos}: {message}"),
    )
}

struct Lexer<'a> {
    chars: Vec<(usize, char)>,
    i: usize,
    src: &'a str,
}

impl Lexer<'_> {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.i).map(|c| c.1)
    }
    fn peek2(&self) -> Option<char> {
        self.chars.get(self.i + 1).map(|c| c.1)
    }
    /// Character position (not byte) of the cursor.
    fn pos(&self) -> usize {
        self.i
    }
    fn skip_ws(&mut self) {
        while self.peek().is_some_and(char::is_whitespace) {
            self.i += 1;
        }
    }
    fn quoted(&mut self) -> Result<String> {
        let start = self.pos();
        self.i += 1; // the opening quote
        let mut out = String::new();
        loop {
            match self.peek() {
                None => {
                    return Err(syntax(
                        self.pos(),
                        format!("expected a closing '\"' for the quote opened at position {start}"),
                    ))
                }
                Some('"') => {
                    self.i += 1;
                    break;
                }
                Some('\\') => {
                    self.i += 1;
                    match self.peek() {
                        Some(c) => {
                            out.push(c);
                            self.i += 1;
                        }
                        None => return Err(syntax(self.pos(), "expected a character after '\\'")),
                    }
                }
                Some(c) => {
                    out.push(c);
                    self.i += 1;
                }
            }
        }
        if let Some(c) = self.peek().filter(|c| !c.is_whitespace()) {
            return Err(syntax(
                self.pos(),
                format!("expected a space after the closing quote, found {c:?}"),
            ));
        }
        Ok(out)
    }
    fn bare(&mut self) -> Result<String> {
        let mut out = String::new();
        while let Some(c) = self.peek() {
            if c.is_whitespace() {
                break;
            }
            if c == '"' {
                return Err(syntax(
                    self.pos(),
                    "expected a space or the end of the query, found '\"' inside a word (quote the whole value)",
                ));
            }
            out.push(c);
            self.i += 1;
        }
        Ok(out)
    }
    fn slice(&self, from: usize, to: usize) -> &str {
        let b = |i: usize| self.chars.get(i).map(|c| c.0).unwrap_or(self.src.len());
        &self.src[b(from)..b(to)]
    }
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')
}

/// Parses the query language into conditions and free-text words (see the module doc).
pub fn parse_terms(q: &str, now: DateTime<Utc>) -> Result<(Vec<Cond>, Vec<String>)> {
    if q.chars().count() > 2000 {
        return Err(Error::invalid(
            "q",
            "the query is longer than 2000 characters",
        ));
    }
    let mut lx = Lexer {
        chars: q.char_indices().collect(),
        i: 0,
        src: q,
    };
    let (mut conds, mut text) = (Vec::new(), Vec::new());
    loop {
        lx.skip_ws();
        let Some(c) = lx.peek() else { break };
        if c == '"' {
            let word = lx.quoted()?;
            text.extend(words(&word));
            continue;
        }
        if matches!(c, ':' | '<' | '>' | '!') && !(c == '!' && lx.peek2() != Some('=')) {
            return Err(syntax(
                lx.pos(),
                format!("expected a field name before {c:?}"),
            ));
        }
        let start = lx.pos();
        while lx.peek().is_some_and(is_name_char) {
            lx.i += 1;
        }
        let name_end = lx.pos();
        let op = match (lx.peek(), lx.peek2()) {
            (Some(':'), _) => Some((Op::Eq, 1)),
            (Some('!'), Some('=')) => Some((Op::Ne, 2)),
            (Some('>'), Some('=')) => Some((Op::Gte, 2)),
            (Some('<'), Some('=')) => Some((Op::Lte, 2)),
            (Some('>'), _) => Some((Op::Gt, 1)),
            (Some('<'), _) => Some((Op::Lt, 1)),
            _ => None,
        };
        let Some((op, op_len)) = op.filter(|_| name_end > start) else {
            // Free text: the whole bare word.
            lx.i = start;
            let word = lx.bare()?;
            text.extend(words(&word));
            continue;
        };
        let name = lx.slice(start, name_end).to_owned();
        let field = Field::from_name(&name).ok_or_else(|| {
            syntax(
                start,
                format!("unknown field {name:?}; expected one of {FIELD_NAMES}"),
            )
        })?;
        lx.i += op_len;
        let value_pos = lx.pos();
        let value = match lx.peek() {
            Some('"') => lx.quoted()?,
            Some(c) if !c.is_whitespace() => lx.bare()?,
            _ => {
                return Err(syntax(
                    value_pos,
                    format!("expected a value after {:?}", lx.slice(start, value_pos)),
                ))
            }
        };
        conds.extend(condition(field, op, &value, value_pos, now)?);
    }
    Ok((conds, text))
}

/// Free-text words: lowercase runs of letters and digits (the text index's tokenizer,
/// [`crate::model::text::words`]).
fn words(s: &str) -> Vec<String> {
    crate::model::text::words(s)
}

/// The condition(s) of one `name op value` term of the query language.
fn condition(
    field: Field,
    op: Op,
    value: &str,
    pos: usize,
    now: DateTime<Utc>,
) -> Result<Vec<Cond>> {
    let s = |v: &str| Value::String(v.to_owned());
    Ok(match (&field, op) {
        (Field::Created | Field::Updated, Op::Eq) => {
            let (from, to) = created_range(value, now).ok_or_else(|| {
                syntax(
                    pos,
                    format!("expected today, yesterday, last_week, last_month or a duration like 7d, found {value:?}"),
                )
            })?;
            let mut out = vec![Cond::new(field.clone(), Op::Gte, time_value(from))];
            if let Some(to) = to {
                out.push(Cond::new(field, Op::Lt, time_value(to)));
            }
            out
        }
        (Field::Created | Field::Updated, _) => {
            let t = time_operand(value, now).ok_or_else(|| {
                syntax(
                    pos,
                    format!("expected an RFC 3339 time, a date YYYY-MM-DD or a duration like 7d, found {value:?}"),
                )
            })?;
            vec![Cond::new(field, op, time_value(t))]
        }
        (_, Op::Eq | Op::Ne) if value.contains('*') => vec![Cond::new(
            field,
            if op == Op::Eq { Op::Glob } else { Op::NotGlob },
            s(value),
        )],
        (Field::Performance, _) => {
            let n = value
                .parse::<f64>()
                .ok()
                .filter(|x| x.is_finite())
                .and_then(serde_json::Number::from_f64)
                .ok_or_else(|| syntax(pos, format!("expected a number, found {value:?}")))?;
            vec![Cond::new(field, op, Value::Number(n))]
        }
        (Field::Version, Op::Gt | Op::Gte | Op::Lt | Op::Lte) => {
            if loose_version(value).is_none() {
                return Err(syntax(
                    pos,
                    format!("expected a semantic version like 1.2.0, found {value:?}"),
                ));
            }
            vec![Cond::new(field, op, s(value))]
        }
        _ => vec![Cond::new(field, op, s(value))],
    })
}

/// Parses `sort=` of `GET /search`: comma-separated keys, each `name`, `name:asc|desc` or
/// `-name` (descending).
pub fn parse_sort_param(s: &str) -> Result<Vec<SortKey>> {
    s.split(',')
        .filter(|p| !p.trim().is_empty())
        .map(|part| {
            let part = part.trim();
            let (name, desc) = if let Some(n) = part.strip_prefix('-') {
                (n, true)
            } else if let Some((n, d)) = part.split_once(':') {
                (n, direction(d)?)
            } else {
                (part, false)
            };
            SortKey::parse(name, desc)
        })
        .collect()
}

fn direction(d: &str) -> Result<bool> {
    match d {
        "asc" => Ok(false),
        "desc" => Ok(true),
        other => Err(Error::invalid(
            "sort",
            format!("sort direction must be asc or desc, not {other:?}"),
        )),
    }
}

/// A search in the query language (`GET /search`). `project` is the request's `?project=`, if
/// any (see [`search_project`]).
pub fn parse_query(
    q: &str,
    project: Option<Project>,
    sort: Option<&str>,
    limit: Option<usize>,
    cursor: Option<&str>,
    now: DateTime<Utc>,
) -> Result<SearchRequest> {
    let (conds, text) = parse_terms(q, now)?;
    let sort_keys = sort.map(parse_sort_param).transpose()?.unwrap_or_default();
    let project = search_project(&conds, project, "q")?;
    Ok(SearchRequest {
        fingerprint: fingerprint(&["q", project.as_str(), q.trim(), sort.unwrap_or("")]),
        project,
        conds,
        text,
        sort: sort_keys,
        limit: limit_of(limit)?,
        cursor: cursor.map(str::to_owned),
    })
}

/// The ONE project a search (and an aggregation, a time series) runs in. Every input naming a
/// project must name the same one: the request's `?project=` (`explicit`) and each `project`
/// condition — an equality (`project:P`, quoted or not, as often as it is repeated; `"project":
/// "P"`, `{"eq": "P"}`) or an `in` list of that one name. Two different names, a wildcard, `!=`
/// or any other operator on `project` are a `400` on `field` saying so; naming none is the
/// default project. Whether the caller may see the project is the search's to decide.
pub fn search_project(conds: &[Cond], explicit: Option<Project>, field: &str) -> Result<Project> {
    let one = "a search runs in exactly one project";
    let mut named: Option<String> = explicit.map(|p| p.to_string());
    for c in conds.iter().filter(|c| c.field == Field::Project) {
        let names: Vec<&Value> = match c.op {
            Op::Eq => vec![&c.value],
            Op::In => c
                .value
                .as_array()
                .map(|l| l.iter().collect())
                .unwrap_or_default(),
            Op::Glob | Op::NotGlob => {
                return Err(Error::invalid(
                    field,
                    format!("{one}: project takes one exact name, not a wildcard pattern"),
                ))
            }
            Op::Ne => {
                return Err(Error::invalid(
                    field,
                    format!("{one}: project takes one exact name; != on project is not allowed"),
                ))
            }
            _ => {
                return Err(Error::invalid(
                    field,
                    format!("{one}: project takes one exact name, not a comparison or a prefix"),
                ))
            }
        };
        if names.is_empty() {
            return Err(Error::invalid(field, format!("{one}: name it")));
        }
        for v in names {
            let name = v.as_str().unwrap_or_default();
            match &named {
                Some(prev) if prev != name => {
                    return Err(Error::invalid(
                        field,
                        format!("{one}: the request names project {prev:?} and project {name:?}"),
                    ))
                }
                _ => named = Some(name.to_owned()),
            }
        }
    }
    match named {
        Some(p) => Project::parse(&p).map_err(|e| Error::invalid(field, e.to_string())),
        None => Ok(Project::default_project()),
    }
}

const OPERATORS: &str = "eq, ne, gt, gte, lt, lte, in, prefix";

fn op_of(name: &str) -> Option<Op> {
    Some(match name {
        "eq" => Op::Eq,
        "ne" => Op::Ne,
        "gt" => Op::Gt,
        "gte" => Op::Gte,
        "lt" => Op::Lt,
        "lte" => Op::Lte,
        "in" => Op::In,
        "prefix" => Op::Prefix,
        _ => return None,
    })
}

/// The conditions of one field's value in the structured form: a scalar (equality), an array
/// (`in`), or an object of operators (all must hold).
fn field_conditions(field: &Field, v: &Value, at: &str, out: &mut Vec<Cond>) -> Result<()> {
    match v {
        Value::Array(list) => {
            for x in list {
                check_operand(field, Op::In, x, at)?;
            }
            out.push(Cond::new(field.clone(), Op::In, v.clone()));
        }
        Value::Object(ops) => {
            if ops.is_empty() {
                return Err(Error::invalid(
                    at,
                    format!("{at} has no operator; use one of {OPERATORS}"),
                ));
            }
            for (name, operand) in ops {
                let op = op_of(name).ok_or_else(|| {
                    Error::invalid(
                        at,
                        format!("unknown operator {name:?} in {at}; expected one of {OPERATORS}"),
                    )
                })?;
                let at_op = format!("{at}.{name}");
                match (op, operand) {
                    (Op::In, Value::Array(list)) => {
                        for x in list {
                            check_operand(field, Op::In, x, &at_op)?;
                        }
                    }
                    (Op::In, _) => {
                        return Err(Error::invalid(at_op, "the in operator takes an array"))
                    }
                    (Op::Prefix, Value::String(_)) => {}
                    (Op::Prefix, _) => {
                        return Err(Error::invalid(at_op, "the prefix operator takes a string"))
                    }
                    _ => check_operand(field, op, operand, &at_op)?,
                }
                out.push(Cond::new(field.clone(), op, operand.clone()));
            }
        }
        Value::Null => return Err(Error::invalid(at, format!("{at} must not be null"))),
        scalar => {
            check_operand(field, Op::Eq, scalar, at)?;
            out.push(Cond::new(field.clone(), Op::Eq, scalar.clone()));
        }
    }
    Ok(())
}

fn check_operand(field: &Field, op: Op, v: &Value, at: &str) -> Result<()> {
    let ordered = matches!(op, Op::Gt | Op::Gte | Op::Lt | Op::Lte);
    let ok = match field {
        Field::Performance => v.is_number(),
        Field::Created | Field::Updated => v
            .as_str()
            .is_some_and(|s| DateTime::parse_from_rfc3339(s).is_ok()),
        Field::Version if ordered => v.as_str().and_then(loose_version).is_some(),
        Field::Meta(_) => !v.is_object() && !v.is_array() && !v.is_null(),
        _ => v.is_string(),
    };
    if ok {
        return Ok(());
    }
    let want = match field {
        Field::Performance => "a number",
        Field::Created | Field::Updated => "an RFC 3339 time",
        Field::Version if ordered => "a semantic version",
        Field::Meta(_) => "a string, number or boolean",
        _ => "a string",
    };
    Err(Error::invalid(at, format!("{at} must be {want}")))
}

fn metadata_conditions(
    path: &mut Vec<String>,
    map: &Map<String, Value>,
    out: &mut Vec<Cond>,
) -> Result<()> {
    for (key, v) in map {
        if key.is_empty() {
            return Err(Error::invalid(
                "metadata",
                "metadata keys must not be empty",
            ));
        }
        path.push(key.clone());
        let at = format!("metadata.{}", path.join("."));
        let is_ops = |o: &Map<String, Value>| !o.is_empty() && o.keys().all(|k| op_of(k).is_some());
        match v {
            Value::Object(o) if is_ops(o) => {
                field_conditions(&Field::Meta(path.clone()), v, &at, out)?
            }
            Value::Object(o) if o.keys().any(|k| op_of(k).is_some()) => {
                return Err(Error::invalid(
                    at.clone(),
                    format!("{at} mixes operators and nested keys"),
                ))
            }
            Value::Object(o) if !o.is_empty() => metadata_conditions(path, o, out)?,
            _ => field_conditions(&Field::Meta(path.clone()), v, &at, out)?,
        }
        path.pop();
    }
    Ok(())
}

/// The filter part of a structured body (everything but `sort`, `limit`, `cursor`): conditions,
/// free-text words (`text`) and the project (see [`search_project`]; `explicit` is the request's
/// `?project=`). Unknown keys are a 400.
pub fn parse_filters(
    body: &Map<String, Value>,
    explicit: Option<Project>,
    extra_keys: &[&str],
) -> Result<(Project, Vec<Cond>, Vec<String>)> {
    let (mut conds, mut text) = (Vec::new(), Vec::new());
    for (key, v) in body {
        match key.as_str() {
            "metadata" => match v {
                Value::Object(m) => metadata_conditions(&mut Vec::new(), m, &mut conds)?,
                _ => {
                    return Err(Error::invalid(
                        "metadata",
                        "metadata must be an object of conditions",
                    ))
                }
            },
            "text" => match v {
                Value::String(s) => text.extend(words(s)),
                _ => return Err(Error::invalid("text", "text must be a string")),
            },
            k if extra_keys.contains(&k) => {}
            k => {
                let field = Field::from_name(k)
                    .filter(|f| !matches!(f, Field::Meta(_)))
                    .ok_or_else(|| {
                        Error::invalid(
                            k,
                            format!("unknown search key {k:?}; conditions on other metadata go under \"metadata\""),
                        )
                    })?;
                field_conditions(&field, v, k, &mut conds)?;
            }
        }
    }
    let project = search_project(&conds, explicit, "project")?;
    Ok((project, conds, text))
}

/// Parses a `sort` array: `[{"performance": "desc"}, {"created_at": "asc"}]` (a bare string is
/// ascending).
pub fn parse_sort_json(v: &Value) -> Result<Vec<SortKey>> {
    let bad = || {
        Error::invalid(
            "sort",
            "sort must be an array of {\"<field>\": \"asc\"|\"desc\"} objects",
        )
    };
    let list = match v {
        Value::Null => return Ok(Vec::new()),
        Value::Array(a) => a,
        _ => return Err(bad()),
    };
    let mut out = Vec::new();
    for entry in list {
        match entry {
            Value::String(name) => out.push(SortKey::parse(name, false)?),
            Value::Object(o) if o.len() == 1 => {
                let (name, dir) = o.iter().next().expect("one entry");
                let dir = dir.as_str().ok_or_else(bad)?;
                out.push(SortKey::parse(name, direction(dir)?)?);
            }
            _ => return Err(bad()),
        }
    }
    Ok(out)
}

/// A structured search (`POST /search`); `explicit` is the request's `?project=`, if any.
pub fn parse_structured(body: &Value, explicit: Option<Project>) -> Result<SearchRequest> {
    let map = body
        .as_object()
        .ok_or_else(|| Error::invalid_request("the search body must be a JSON object"))?;
    let (project, conds, text) = parse_filters(map, explicit, &["sort", "limit", "cursor"])?;
    let sort = parse_sort_json(map.get("sort").unwrap_or(&Value::Null))?;
    let limit = match map.get("limit") {
        None | Some(Value::Null) => None,
        Some(v) => Some(
            v.as_u64()
                .ok_or_else(|| Error::invalid("limit", "limit must be a positive integer"))?
                as usize,
        ),
    };
    let cursor = match map.get("cursor") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => return Err(Error::invalid("cursor", "cursor must be a string or null")),
    };
    let mut canonical = map.clone();
    canonical.remove("limit");
    canonical.remove("cursor");
    let canonical = crate::dspy::canonical_json(&Value::Object(canonical));
    Ok(SearchRequest {
        fingerprint: fingerprint(&["json", project.as_str(), &canonical]),
        project,
        conds,
        text,
        sort,
        limit: limit_of(limit)?,
        cursor,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-25T16:30:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    fn err(q: &str) -> String {
        parse_terms(q, now()).unwrap_err().to_string()
    }

    #[test]
    fn parses_every_term_kind() {
        let (conds, text) = parse_terms(
            r#"signature:Classify version:1.* performance>=0.8 meta.examples_count<100 tag!=old "Hello World" spam created:today method:"mipro v2""#,
            now(),
        )
        .unwrap();
        assert_eq!(text, vec!["hello", "world", "spam"]);
        assert_eq!(
            conds[0],
            Cond::new(Field::Signature, Op::Eq, json!("Classify"))
        );
        assert_eq!(conds[1], Cond::new(Field::Version, Op::Glob, json!("1.*")));
        assert_eq!(conds[2], Cond::new(Field::Performance, Op::Gte, json!(0.8)));
        assert_eq!(
            conds[3],
            Cond::new(
                Field::Meta(vec!["examples_count".into()]),
                Op::Lt,
                json!("100")
            )
        );
        assert_eq!(conds[4], Cond::new(Field::Tag, Op::Ne, json!("old")));
        assert_eq!(
            conds[5],
            Cond::new(Field::Created, Op::Gte, json!("2026-11-25T00:00:00.000Z"))
        );
        assert_eq!(
            conds[6],
            Cond::new(Field::Method, Op::Eq, json!("mipro v2"))
        );
    }

    #[test]
    fn created_keywords_are_ranges() {
        let (c, _) = parse_terms("created:yesterday", now()).unwrap();
        assert_eq!(c[0].value, json!("2026-11-24T00:00:00.000Z"));
        assert_eq!(
            c[1],
            Cond::new(Field::Created, Op::Lt, json!("2026-11-25T00:00:00.000Z"))
        );
        let (c, _) = parse_terms("created:last_week", now()).unwrap();
        assert_eq!(c[0].value, json!("2026-11-18T16:30:00.000Z"));
        let (c, _) = parse_terms("created:12h", now()).unwrap();
        assert_eq!(c[0].value, json!("2026-11-25T04:30:00.000Z"));
        let (c, _) = parse_terms("created>=2026-01-01", now()).unwrap();
        assert_eq!(
            c[0],
            Cond::new(Field::Created, Op::Gte, json!("2026-01-01T00:00:00.000Z"))
        );
    }

    #[test]
    fn syntax_errors_say_where_and_what() {
        assert!(err("performance>").contains("position 12: expected a value"));
        assert!(err("signature:A performance>abc").contains("position 24: expected a number"));
        assert!(err("colour:red").contains("position 0: unknown field \"colour\""));
        assert!(err("x \"open").contains("expected a closing '\"'"));
        assert!(err(":x").contains("position 0: expected a field name"));
        assert!(err("created:someday").contains("expected today, yesterday"));
        assert!(err("version>=one").contains("expected a semantic version"));
        assert!(err("a\"b").contains("position 1"));
    }

    #[test]
    fn empty_and_free_text() {
        assert_eq!(parse_terms("   ", now()).unwrap(), (vec![], vec![]));
        let (c, t) = parse_terms("sentiment-analysis http", now()).unwrap();
        assert!(c.is_empty());
        // Words are runs of letters and digits (the text index's words).
        assert_eq!(t, vec!["sentiment", "analysis", "http"]);
        let (_, t) = parse_terms("\"Qa.Answer\" -- é", now()).unwrap();
        assert_eq!(t, vec!["qa", "answer", "é"]);
    }

    #[test]
    fn structured_form() {
        let body = json!({
            "signature": "ClassifyText",
            "performance": {"gte": 0.85},
            "optimization_method": ["miprov2", "simple"],
            "metadata": {"examples_count": {"gte": 100}, "run": {"seed": 3}},
            "version": {"ne": "1.0.0"},
            "sort": [{"performance": "desc"}, {"created_at": "desc"}],
            "limit": 10,
            "cursor": null
        });
        let r = parse_structured(&body, None).unwrap();
        assert_eq!(r.conds.len(), 6);
        assert_eq!(r.sort.len(), 2);
        assert_eq!(r.limit, 10);
        assert!(r.conds.contains(&Cond::new(
            Field::Meta(vec!["run".into(), "seed".into()]),
            Op::Eq,
            json!(3)
        )));
        for bad in [
            json!({"performance": {"gte": "x"}}),
            json!({"performance": {"near": 1}}),
            json!({"colour": "red"}),
            json!({"created_at": {"gte": "yesterday"}}),
            json!({"metadata": {"a": {"gte": 1, "b": 2}}}),
            json!({"sort": [{"performance": "up"}]}),
            json!({"limit": 0}),
            json!([1]),
        ] {
            assert!(parse_structured(&bad, None).is_err(), "{bad}");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90d"), Some(Duration::days(90)));
        assert_eq!(parse_duration("30m"), Some(Duration::minutes(30)));
        assert_eq!(parse_duration("d"), None);
        assert_eq!(parse_duration("5y"), None);
    }
}
