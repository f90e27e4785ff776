//! The planner: which ONE index partition serves a search, in which order, and whether that
//! order is already the order asked for (then a page reads only as far as it needs).
//!
//! | condition present (first match wins) | source                                   | order           |
//! |--------------------------------------|------------------------------------------|-----------------|
//! | `signature` = S, sorted by performance | GSI2 `SIG#<project>#S`                 | score, id       |
//! | `signature` = S, otherwise           | GSI1 `SIG#<project>#S`                   | created, id     |
//! | `tag` = T                            | tag items `TAG#<project>#T` (+ a batch read of the records) | created, id |
//! | free text, or a text condition (below) | text index: one prefix read per word `TXT#<project>#<c>` / `<word>…`, and the overflow partition `TXT#<project>#+` (+ a batch read of the records) | sorted in core |
//! | `method` = M                         | GSI3 `METHOD#<project>#M`                | created, id     |
//! | none of these                        | GSI4 `PROJ#<project>` (every program)    | created, id     |
//!
//! An index source answers whole records (on DynamoDB the index holds only keys: each page of it
//! is followed by one batch read of the records it found, inside `ItemStore::query`).
//!
//! A *text condition* is one whose matches all have certain words (see [`crate::model::text`]):
//! `=` (or a one-value `in`) with a string, a wildcard's text before its first `*`, or a
//! `prefix`, on `signature`, `tag`, `description`, `environment`, `team` or a `meta.<key>` that
//! is free text (for `meta.` keys, not an operand a number or boolean could equal or start
//! with). A search reads the index only once it is complete
//! ([`crate::storage::text_index`]); until then it falls back to the next source in the table.
//!
//! On created-ordered sources, `created` bounds narrow the sort key range. Every condition is
//! then evaluated in core on each record read (the one the source implies too, which is free).
//! When the sort asked for is the source's order (`created_at` on a created-ordered source,
//! `performance` on GSI2) the plan *streams*: it reads pages until it has `limit + 1` matches,
//! and its cursor is the index position. Otherwise it reads the whole partition, sorts in core,
//! and its cursor is the last result's sort values (keyset pagination).

use super::{Cond, Field, Op, SortField, SortKey};
use crate::backend::{Index, SkRange};
use crate::domain::{Project, Signature};
use crate::model::{keys, text};

use super::parse::SearchRequest;

/// The index partition a search reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    SignatureByCreated(Signature),
    SignatureByScore(Signature),
    Method(String),
    Tag(String),
    /// The text index: programs having, for each of these words, a word it is a prefix of (and
    /// the project's overflow programs).
    Words(Vec<String>),
    Project,
}

impl Source {
    pub fn index(&self) -> Index {
        match self {
            Source::SignatureByCreated(_) => Index::Gsi1,
            Source::SignatureByScore(_) => Index::Gsi2,
            Source::Method(_) => Index::Gsi3,
            Source::Tag(_) | Source::Words(_) => Index::Table,
            Source::Project => Index::Gsi4,
        }
    }

    pub fn pk(&self, project: &Project) -> String {
        match self {
            Source::SignatureByCreated(s) | Source::SignatureByScore(s) => {
                keys::signature_pk(project, s)
            }
            Source::Method(m) => keys::method_pk(project, m),
            Source::Tag(t) => keys::tag_pk(project, t),
            Source::Words(_) => keys::text_overflow_pk(project),
            Source::Project => keys::project_pk(project),
        }
    }

    /// The sort field the source's items are ordered by (then by id).
    pub fn order(&self) -> Field {
        match self {
            Source::SignatureByScore(_) => Field::Performance,
            _ => Field::Created,
        }
    }

    /// Whether a record matched by this source necessarily satisfies `c`.
    fn implies(&self, c: &Cond) -> bool {
        if c.op != Op::Eq {
            return false;
        }
        let v = c.value.as_str();
        match (self, &c.field) {
            (Source::SignatureByCreated(s) | Source::SignatureByScore(s), Field::Signature) => {
                v == Some(s.as_str())
            }
            (Source::Method(m), Field::Method) => v == Some(m.as_str()),
            (Source::Tag(t), Field::Tag) => v == Some(t.as_str()),
            _ => false,
        }
    }
}

/// How a search is executed.
#[derive(Debug, Clone)]
pub struct Plan {
    pub project: Project,
    pub source: Source,
    pub sk: SkRange,
    /// The sort, defaulted (relevance with free text, newest first without).
    pub sort: Vec<SortKey>,
    /// The index order is the sort order: read only as far as the page needs.
    pub streaming: bool,
    /// Read forward (ascending sort key).
    pub forward: bool,
    /// Conditions the source does not already guarantee, checked on every record.
    pub residual: Vec<Cond>,
    pub text: Vec<String>,
    pub limit: usize,
    /// True when no condition remains beyond the source (or a project that matches it).
    pub exact: bool,
}

impl Plan {
    pub fn pk(&self) -> String {
        self.source.pk(&self.project)
    }
}

fn eq_str(conds: &[Cond], field: &Field) -> Option<String> {
    conds.iter().find_map(|c| match (&c.field, c.op, &c.value) {
        (f, Op::Eq, serde_json::Value::String(s)) if f == field => Some(s.clone()),
        (f, Op::In, serde_json::Value::Array(a)) if f == field && a.len() == 1 => {
            a[0].as_str().map(str::to_owned)
        }
        _ => None,
    })
}

/// The words a program must have for a condition to hold (empty: the condition is not a text
/// condition; see the module doc).
fn cond_words(c: &Cond) -> Vec<String> {
    let meta = match &c.field {
        Field::Signature | Field::Tag | Field::Description | Field::Environment | Field::Team => {
            false
        }
        Field::Meta(path) if !text::NOT_TEXT_KEYS.contains(&path[0].as_str()) => true,
        _ => return Vec::new(),
    };
    let operand = match (c.op, &c.value) {
        (Op::Eq | Op::Glob | Op::Prefix, serde_json::Value::String(s)) => s.as_str(),
        (Op::In, serde_json::Value::Array(a)) if a.len() == 1 => match a[0].as_str() {
            Some(s) => s,
            None => return Vec::new(),
        },
        _ => return Vec::new(),
    };
    let literal = match c.op {
        Op::Glob => operand.split('*').next().unwrap_or_default(),
        _ => operand,
    };
    if meta {
        // A number or a boolean equals a numeric or boolean string, and a wildcard matches
        // their text: those are not in the text index.
        let scalar = match c.op {
            Op::Eq | Op::In => {
                operand.trim().parse::<f64>().is_ok() || operand == "true" || operand == "false"
            }
            Op::Glob => {
                literal.chars().all(|ch| "0123456789.eE+-".contains(ch))
                    || "true".starts_with(literal)
                    || "false".starts_with(literal)
            }
            _ => false,
        };
        if scalar {
            return Vec::new();
        }
    }
    text::words(literal)
}

/// The words a search's matches all have (free text and text conditions), without a word that
/// is a prefix of another (its matches include the other's), at most [`MAX_INDEX_WORDS`].
pub fn index_words(req: &SearchRequest) -> Vec<String> {
    let mut all: Vec<String> = req.text.clone();
    for c in &req.conds {
        all.extend(cond_words(c));
    }
    all.sort();
    all.dedup();
    let mut keep: Vec<String> = all
        .iter()
        .filter(|w| !all.iter().any(|o| o != *w && o.starts_with(w.as_str())))
        .cloned()
        .collect();
    // At most a few index reads per search: the longest words (likely the rarest). The others
    // are still checked on every candidate's record.
    keep.sort_by(|a, b| b.chars().count().cmp(&a.chars().count()).then(a.cmp(b)));
    keep.truncate(MAX_INDEX_WORDS);
    keep.sort();
    keep
}

/// Most words whose index entries one search reads.
pub const MAX_INDEX_WORDS: usize = 8;

/// Plans a search (see the module doc), using the text index.
pub fn plan(req: &SearchRequest) -> Plan {
    plan_with(req, true)
}

/// Plans a search; `text_index`: whether the text index may serve it (it is complete).
pub fn plan_with(req: &SearchRequest, text_index: bool) -> Plan {
    let mut sort = req.sort.clone();
    if sort.is_empty() {
        sort.push(if req.text.is_empty() {
            SortKey {
                field: SortField::Field(Field::Created),
                desc: true,
            }
        } else {
            SortKey {
                field: SortField::Relevance,
                desc: true,
            }
        });
    }
    let by_score = sort.first().map(|k| &k.field) == Some(&SortField::Field(Field::Performance));
    let signature = eq_str(&req.conds, &Field::Signature).and_then(|s| Signature::parse(&s).ok());
    let source = if let Some(s) = signature {
        if by_score {
            Source::SignatureByScore(s)
        } else {
            Source::SignatureByCreated(s)
        }
    } else if let Some(t) = eq_str(&req.conds, &Field::Tag).filter(|t| !t.contains('#')) {
        Source::Tag(t)
    } else if let Some(words) = Some(index_words(req)).filter(|w| text_index && !w.is_empty()) {
        Source::Words(words)
    } else if let Some(m) = eq_str(&req.conds, &Field::Method).filter(|m| !m.contains('#')) {
        Source::Method(m)
    } else {
        Source::Project
    };
    let order = source.order();
    let streaming = !matches!(source, Source::Words(_))
        && sort.len() == 1
        && sort[0].field == SortField::Field(order.clone());
    let forward = if streaming { !sort[0].desc } else { true };
    let sk = if order == Field::Created {
        created_range(&req.conds)
    } else {
        SkRange::All
    };
    let residual: Vec<Cond> = req
        .conds
        .iter()
        .filter(|c| !source.implies(c))
        .cloned()
        .collect();
    let exact = req.text.is_empty()
        && residual.iter().all(|c| {
            c.field == Field::Project
                && c.op == Op::Eq
                && c.value.as_str() == Some(req.project.as_str())
        });
    Plan {
        project: req.project.clone(),
        source,
        sk,
        sort,
        streaming,
        forward,
        residual,
        text: req.text.clone(),
        limit: req.limit,
        exact,
    }
}

/// The tightest sort key range of a created-ordered index the `created` conditions allow (a
/// superset of the matches: every condition is still checked on each record).
fn created_range(conds: &[Cond]) -> SkRange {
    let mut low: Option<String> = None;
    let mut high: Option<String> = None;
    for c in conds.iter().filter(|c| c.field == Field::Created) {
        let Some(t) = c.value.as_str().filter(|t| {
            chrono::DateTime::parse_from_rfc3339(t).is_ok() && t.len() == 24 && t.ends_with('Z')
        }) else {
            continue;
        };
        // `<time>#<id>` sorts after `<time>`; '~' after every id character.
        let h = format!("{t}#~");
        match c.op {
            Op::Gt | Op::Gte if !matches!(low.as_deref(), Some(l) if t <= l) => {
                low = Some(t.to_owned());
            }
            Op::Lt | Op::Lte if !matches!(high.as_deref(), Some(x) if h.as_str() >= x) => {
                high = Some(h);
            }
            _ => {}
        }
    }
    match (low, high) {
        (None, None) => SkRange::All,
        (Some(l), None) => SkRange::Gte(l),
        (None, Some(h)) => SkRange::Lte(h),
        (Some(l), Some(h)) => SkRange::Between(l, h),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::query::parse::{parse_query, parse_structured};
    use chrono::Utc;
    use serde_json::json;

    fn q(s: &str, sort: Option<&str>) -> Plan {
        plan(&parse_query(s, None, sort, Some(10), None, Utc::now()).unwrap())
    }

    #[test]
    fn picks_the_index() {
        let p = q("signature:S", Some("-performance"));
        assert_eq!(
            p.source,
            Source::SignatureByScore(Signature::parse("S").unwrap())
        );
        assert!(p.streaming && !p.forward && p.exact);
        let p = q("signature:S", None);
        assert_eq!(
            p.source,
            Source::SignatureByCreated(Signature::parse("S").unwrap())
        );
        assert!(p.streaming && !p.forward && p.exact);
        let p = q("method:miprov2 tag:prod", Some("version"));
        assert_eq!(p.source, Source::Tag("prod".into()));
        assert!(!p.streaming && !p.exact);
        assert_eq!(
            q("method:miprov2", None).source,
            Source::Method("miprov2".into())
        );
        assert_eq!(q("tag:prod", None).source, Source::Tag("prod".into()));
        assert_eq!(q("performance>0.5", None).source, Source::Project);
        let words = |v: &[&str]| Source::Words(v.iter().map(|w| w.to_string()).collect());
        assert_eq!(q("performance>0.5 hello", None).source, words(&["hello"]));
        assert!(!q("hello", Some("created_at")).streaming);
        assert_eq!(q("signature:S*", None).source, words(&["s"]));
        assert_eq!(q("signature:*S", None).source, Source::Project);
        // Words that are a prefix of another add nothing; text conditions give words.
        assert_eq!(
            q("class classify meta.dataset:imdb-re* method:copro", None).source,
            words(&["classify", "imdb", "re"])
        );
        // A quoted phrase of many words reads the index of the longest few.
        let phrase: Vec<String> = (0..20u8)
            .map(|i| format!("{}{}", (b'a' + i) as char, "y".repeat(i as usize)))
            .collect();
        let Source::Words(read) = q(&format!("\"{}\"", phrase.join(" ")), None).source else {
            panic!("a word index plan")
        };
        assert_eq!(read.len(), MAX_INDEX_WORDS);
        assert!(read.iter().all(|w| w.len() > 12), "{read:?}");
        // Numbers and booleans in metadata are not free text; version is not either.
        assert_eq!(q("meta.n:100", None).source, Source::Project);
        assert_eq!(q("meta.n:1*", None).source, Source::Project);
        assert_eq!(q("meta.flag:true", None).source, Source::Project);
        assert_eq!(q("meta.version:x", None).source, Source::Project);
        assert_eq!(q("meta.owner:ana", None).source, words(&["ana"]));
        assert_eq!(q("tag!=x environment:prod", None).source, words(&["prod"]));
        // Without a complete index: the source it replaces.
        let req =
            parse_query("hello method:copro", None, None, Some(10), None, Utc::now()).unwrap();
        assert_eq!(
            plan_with(&req, false).source,
            Source::Method("copro".into())
        );
    }

    #[test]
    fn structured_and_language_plan_alike() {
        let a = q("signature:S performance>=0.8", Some("-performance"));
        let b = plan(
            &parse_structured(
                &json!({"signature": "S", "performance": {"gte": 0.8}, "sort": [{"performance": "desc"}]}),
                None,
            )
            .unwrap(),
        );
        assert_eq!(a.source, b.source);
        assert_eq!(a.residual, b.residual);
        assert_eq!(a.streaming, b.streaming);
    }

    #[test]
    fn created_bounds_narrow_the_range() {
        let p = q("created>=2026-01-01 created<2026-02-01", None);
        assert_eq!(
            p.sk,
            SkRange::Between(
                "2026-01-01T00:00:00.000Z".into(),
                "2026-02-01T00:00:00.000Z#~".into()
            )
        );
    }
}
