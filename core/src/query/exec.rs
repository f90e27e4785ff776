//! Executing searches, aggregations and time series over the item store: one index partition
//! per request, or the text index's entries of the search's words (see [`super::plan`]);
//! conditions and sorting in core, opaque validated cursors.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Duration, Timelike, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::parse::{parse_duration, parse_filters, SearchRequest};
use super::plan::{plan, plan_with, Plan, Source};
use super::{compare_sort, relevance, sort_values, summary, Cond, Field, Op, SortVal};
use crate::access::Principal;
use futures::{StreamExt, TryStreamExt};

use crate::backend::{page_key_of, Index, Item, PageKey, Query, SkRange};
use crate::domain::{format_time, ProgramId, ProgramStatus, Project};
use crate::error::{Error, Result};
use crate::model::keys;
use crate::model::record::{from_item, ProgramRecord};
use crate::model::text;
use crate::paging::{CursorKeys, Kind};
use crate::storage::Storage;

/// One search result.
#[derive(Debug, Clone, Serialize)]
pub struct SearchHit {
    pub id: String,
    pub signature: String,
    pub version: String,
    pub project: String,
    /// The primary score.
    pub performance: Option<f64>,
    pub created_at: String,
    pub updated_at: String,
    pub status: ProgramStatus,
    pub metadata: Map<String, Value>,
    pub relevance_score: f64,
    pub summary: String,
}

impl SearchHit {
    pub fn of(r: &ProgramRecord, relevance_score: f64) -> SearchHit {
        SearchHit {
            id: r.id.to_string(),
            signature: r.signature.to_string(),
            version: r.version.to_string(),
            project: r.project.to_string(),
            performance: r.primary_score,
            created_at: format_time(&r.created_at),
            updated_at: format_time(&r.updated_at),
            status: r.status,
            metadata: r.metadata.clone(),
            relevance_score: (relevance_score * 1e6).round() / 1e6,
            summary: summary(r),
        }
    }
}

/// One page of search results.
#[derive(Debug, Clone, Serialize)]
pub struct SearchPage {
    pub results: Vec<SearchHit>,
    pub next_cursor: Option<String>,
}

/// What a search cursor holds (sealed by [`crate::paging`]).
#[derive(Debug, Serialize, Deserialize)]
struct Cursor {
    /// The search's fingerprint.
    f: String,
    /// Streaming: the index position of the last result.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    k: Option<PageKey>,
    /// Sorted in core: the last result's sort values (then its id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    a: Option<Vec<SortVal>>,
}

fn encode_cursor(keys: &CursorKeys, who: &Principal, c: &Cursor) -> String {
    crate::paging::seal(keys, Kind::Search, who, c)
}

fn another_search() -> Error {
    Error::invalid("cursor", "the cursor belongs to another search")
}

/// Opens a search cursor presented by `who` and checks it continues this search and plan.
fn decode_cursor(
    keys: &CursorKeys,
    who: &Principal,
    s: &str,
    fingerprint: &str,
    plan: &Plan,
) -> Result<Cursor> {
    let c: Cursor = crate::paging::open(keys, Kind::Search, who, s)?;
    if c.f != fingerprint {
        return Err(another_search());
    }
    if plan.streaming {
        let k = c.k.as_ref().ok_or_else(another_search)?;
        if !crate::paging::is_page_key_of(k, plan.source.index(), Some(&plan.pk())) {
            return Err(another_search());
        }
    } else {
        let a = c.a.as_ref().ok_or_else(another_search)?;
        if a.len() != plan.sort.len() + 1 {
            return Err(another_search());
        }
    }
    Ok(c)
}

fn new_cursor(fingerprint: &str) -> Cursor {
    Cursor {
        f: fingerprint.to_owned(),
        k: None,
        a: None,
    }
}

/// Largest page of an index read that filters in core.
const SCAN_PAGE: usize = 1000;

/// Record reads in flight while a search reads its candidates' records (batches of 100).
const RECORD_BATCHES_IN_FLIGHT: usize = 4;

impl Storage {
    /// The plan of a search: the text index serves it only once it is complete (see
    /// [`crate::storage::text_index`]).
    async fn plan_of(&self, req: &SearchRequest) -> Result<Plan> {
        let p = plan(req);
        if matches!(p.source, Source::Words(_)) && !self.text_index_ready().await? {
            return Ok(plan_with(req, false));
        }
        Ok(p)
    }

    /// The records of `ids` (batch reads of 100, a few in flight), in the order of `ids`;
    /// programs that are gone are left out.
    async fn records_by_id(&self, ids: &[ProgramId]) -> Result<Vec<ProgramRecord>> {
        let batches: Vec<Vec<(String, String)>> = ids
            .chunks(100)
            .map(|c| {
                c.iter()
                    .map(|id| (keys::program_pk(id), keys::PROG_SK.to_owned()))
                    .collect()
            })
            .collect();
        let pages: Vec<Vec<Option<Item>>> = futures::stream::iter(batches)
            .map(|keys| async move { self.items.get_many(&keys).await })
            .buffered(RECORD_BATCHES_IN_FLIGHT)
            .try_collect()
            .await?;
        pages
            .into_iter()
            .flatten()
            .flatten()
            .map(|item| from_item::<ProgramRecord>(&item))
            .collect()
    }

    /// The program records index items stand for, in their order: the items themselves, or
    /// for tag entries the programs they name (`None` for a program that is gone), read in
    /// one batch.
    async fn records_of(
        &self,
        source: &Source,
        items: &[Item],
    ) -> Result<Vec<Option<ProgramRecord>>> {
        if let Source::Tag(_) = source {
            let ids: Vec<Option<ProgramId>> = items
                .iter()
                .map(|i| i.get("id").map(ProgramId::parse).transpose())
                .collect::<Result<_>>()?;
            let wanted: Vec<ProgramId> = ids.iter().flatten().copied().collect();
            let mut found: std::collections::HashMap<ProgramId, ProgramRecord> = self
                .records_by_id(&wanted)
                .await?
                .into_iter()
                .map(|r| (r.id, r))
                .collect();
            return Ok(ids
                .into_iter()
                .map(|id| id.and_then(|id| found.remove(&id)))
                .collect());
        }
        items.iter().map(|i| from_item(i).map(Some)).collect()
    }

    /// The ids of the programs with an entry in a partition of the text index (paged reads).
    async fn text_entry_ids(&self, pk: String, sk: SkRange) -> Result<BTreeSet<ProgramId>> {
        let mut out = BTreeSet::new();
        let mut start = None;
        loop {
            let q = Query::new(Index::Table, pk.clone())
                .sk(sk.clone())
                .limit(SCAN_PAGE)
                .start(start.take());
            let page = self.items.query(&q).await?;
            out.extend(page.items.iter().filter_map(text::entry_program));
            match page.next {
                Some(n) => start = Some(n),
                None => return Ok(out),
            }
        }
    }

    /// The candidates of a text index search: the programs having a word starting with each of
    /// `words` (one prefix read per word, all in flight together), and the project's overflow
    /// programs. Every candidate's record is then checked against the whole search.
    async fn text_candidates(&self, project: &Project, words: &[String]) -> Result<Vec<ProgramId>> {
        let reads = words.iter().map(|w| {
            let (pk, prefix) = text::prefix_range(project, w);
            self.text_entry_ids(pk, SkRange::BeginsWith(prefix))
        });
        let (sets, overflow) = futures::join!(
            futures::future::try_join_all(reads),
            self.text_entry_ids(keys::text_overflow_pk(project), SkRange::All)
        );
        let mut sets = sets?.into_iter();
        let mut ids = sets.next().unwrap_or_default();
        for s in sets {
            ids.retain(|id| s.contains(id));
        }
        ids.extend(overflow?);
        Ok(ids.into_iter().collect())
    }

    /// Whether a record is a result of the plan, and its relevance if so.
    fn evaluate(plan: &Plan, r: &ProgramRecord) -> Option<f64> {
        if r.project != plan.project || !plan.residual.iter().all(|c| c.matches(r)) {
            return None;
        }
        relevance(r, &plan.text)
    }

    /// Every record of the plan's partition that matches, with its relevance (paged reads of
    /// one index partition; never a table scan).
    pub(crate) async fn collect_matches(&self, plan: &Plan) -> Result<Vec<(ProgramRecord, f64)>> {
        let mut out = Vec::new();
        if let Source::Words(words) = &plan.source {
            let ids = self.text_candidates(&plan.project, words).await?;
            for r in self.records_by_id(&ids).await? {
                if let Some(rel) = Self::evaluate(plan, &r) {
                    out.push((r, rel));
                }
            }
            return Ok(out);
        }
        let mut start = None;
        loop {
            let q = Query::new(plan.source.index(), plan.pk())
                .sk(plan.sk.clone())
                .forward(plan.forward)
                .limit(SCAN_PAGE)
                .start(start.take());
            let page = self.items.query(&q).await?;
            for r in self
                .records_of(&plan.source, &page.items)
                .await?
                .into_iter()
                .flatten()
            {
                if let Some(rel) = Self::evaluate(plan, &r) {
                    out.push((r, rel));
                }
            }
            match page.next {
                Some(n) => start = Some(n),
                None => return Ok(out),
            }
        }
    }

    /// Runs a search in the one project of `req` (a project `who` may not see is `NotFound`):
    /// one page of results and the cursor of the next.
    pub async fn search(&self, who: &Principal, req: &SearchRequest) -> Result<SearchPage> {
        who.see_project(&req.project)?;
        let plan = self.plan_of(req).await?;
        let cursor = req
            .cursor
            .as_deref()
            .map(|c| decode_cursor(&self.cursors, who, c, &req.fingerprint, &plan))
            .transpose()?;
        let limit = plan.limit;
        if plan.streaming {
            let index = plan.source.index();
            let page_size = if plan.exact {
                limit + 1
            } else {
                (limit + 1).clamp(200, SCAN_PAGE)
            };
            let mut start = cursor.and_then(|c| c.k);
            let mut hits: Vec<(ProgramRecord, f64, PageKey)> = Vec::new();
            'pages: loop {
                let q = Query::new(index, plan.pk())
                    .sk(plan.sk.clone())
                    .forward(plan.forward)
                    .limit(page_size)
                    .start(start.take());
                let page = self.items.query(&q).await?;
                // Tag entries name their records: read them in batches about the size of what
                // the page still needs.
                for items in page.items.chunks((limit + 1).min(100)) {
                    let records = self.records_of(&plan.source, items).await?;
                    for (item, r) in items.iter().zip(records) {
                        let Some(r) = r else {
                            continue;
                        };
                        if let Some(rel) = Self::evaluate(&plan, &r) {
                            hits.push((r, rel, page_key_of(item, index)));
                            if hits.len() > limit {
                                break 'pages;
                            }
                        }
                    }
                }
                match page.next {
                    Some(n) => start = Some(n),
                    None => break,
                }
            }
            let next_cursor = if hits.len() > limit {
                hits.truncate(limit);
                let mut c = new_cursor(&req.fingerprint);
                c.k = hits.last().map(|h| h.2.clone());
                Some(encode_cursor(&self.cursors, who, &c))
            } else {
                None
            };
            return Ok(SearchPage {
                results: hits
                    .iter()
                    .map(|(r, rel, _)| SearchHit::of(r, *rel))
                    .collect(),
                next_cursor,
            });
        }
        let after = cursor.and_then(|c| c.a);
        let mut rows: Vec<(Vec<SortVal>, ProgramRecord, f64)> = self
            .collect_matches(&plan)
            .await?
            .into_iter()
            .map(|(r, rel)| (sort_values(&plan.sort, &r, rel), r, rel))
            .filter(|(key, _, _)| match &after {
                Some(a) => compare_sort(&plan.sort, key, a) == std::cmp::Ordering::Greater,
                None => true,
            })
            .collect();
        rows.sort_by(|a, b| compare_sort(&plan.sort, &a.0, &b.0));
        let next_cursor = if rows.len() > limit {
            rows.truncate(limit);
            let mut c = new_cursor(&req.fingerprint);
            c.a = rows.last().map(|r| r.0.clone());
            Some(encode_cursor(&self.cursors, who, &c))
        } else {
            None
        };
        Ok(SearchPage {
            results: rows
                .iter()
                .map(|(_, r, rel)| SearchHit::of(r, *rel))
                .collect(),
            next_cursor,
        })
    }

    /// Aggregates metrics over the programs matching a filter (in its one project, which `who`
    /// must see), grouped by a field.
    pub async fn aggregate(
        &self,
        who: &Principal,
        req: &AggregateRequest,
    ) -> Result<AggregateResult> {
        who.see_project(&req.filter.project)?;
        let plan = self.plan_of(&req.search()).await?;
        let matches = self.collect_matches(&plan).await?;
        let mut groups: Vec<(SortVal, Vec<&ProgramRecord>)> = Vec::new();
        let mut index: BTreeMap<String, usize> = BTreeMap::new();
        for (r, _) in &matches {
            let keys: Vec<SortVal> = match &req.group_by {
                None => vec![SortVal::Missing],
                Some(Field::Tag) if !r.tags.is_empty() => {
                    r.tags.iter().map(|t| SortVal::Str(t.clone())).collect()
                }
                Some(Field::Version) => vec![SortVal::Str(r.version.to_string())],
                Some(f) => vec![f
                    .values(r)
                    .first()
                    .map(SortVal::of)
                    .unwrap_or(SortVal::Missing)],
            };
            for key in keys {
                let id = serde_json::to_string(&key).expect("serializes");
                let i = *index.entry(id).or_insert_with(|| {
                    groups.push((key, Vec::new()));
                    groups.len() - 1
                });
                groups[i].1.push(r);
            }
        }
        groups.sort_by(|a, b| a.0.total_cmp(&b.0));
        let out = groups
            .into_iter()
            .map(|(key, records)| {
                let mut g = Map::new();
                g.insert("key".into(), key.to_json());
                for m in &req.metrics {
                    g.insert(m.name.clone(), m.compute(&records));
                }
                Value::Object(g)
            })
            .collect();
        Ok(AggregateResult { groups: out })
    }

    /// A metric bucketed by creation time, empty buckets included (in the filter's one project,
    /// which `who` must see).
    pub async fn time_series(
        &self,
        who: &Principal,
        req: &TimeSeriesRequest,
    ) -> Result<TimeSeries> {
        who.see_project(&req.filter.project)?;
        let now = Utc::now();
        let from = req.interval.floor(now - req.range);
        let step = req.interval.length();
        let buckets = ((now - from).num_seconds() / step.num_seconds() + 1) as usize;
        if buckets > MAX_BUCKETS {
            return Err(Error::invalid(
                "time_range",
                format!("{buckets} buckets is more than {MAX_BUCKETS}; use a longer interval"),
            ));
        }
        let mut search = req.filter.clone();
        search.conds.push(Cond::new(
            Field::Created,
            Op::Gte,
            Value::String(format_time(&from)),
        ));
        let plan = self.plan_of(&search).await?;
        let mut sums = vec![(0.0f64, 0u64); buckets];
        for (r, _) in self.collect_matches(&plan).await? {
            let i = ((r.created_at - from).num_seconds() / step.num_seconds()) as usize;
            let Some(v) = numeric(&req.metric, &r) else {
                continue;
            };
            if let Some(b) = sums.get_mut(i) {
                b.0 += v;
                b.1 += 1;
            }
        }
        let points = sums
            .into_iter()
            .enumerate()
            .map(|(i, (sum, count))| TimePoint {
                t: format_time(&(from + step * i as i32)),
                value: (count > 0).then(|| sum / count as f64),
                count,
            })
            .collect();
        Ok(TimeSeries {
            metric: req.metric.name(),
            interval: req.interval.name(),
            points,
        })
    }
}

const MAX_BUCKETS: usize = 10_000;

/// The number a metric field has in a record (`performance` is the primary score).
fn numeric(field: &Field, r: &ProgramRecord) -> Option<f64> {
    match field {
        Field::Performance => r.primary_score,
        f => f.values(r).first().and_then(Value::as_f64),
    }
}

/// An aggregation function.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AggFn {
    Count,
    Sum,
    Avg,
    Min,
    Max,
    P50,
    P95,
}

/// One named metric of an aggregation: `{"avg_performance": {"avg": "performance"}}`.
#[derive(Debug, Clone, PartialEq)]
pub struct Metric {
    pub name: String,
    pub func: AggFn,
    /// `None` for `count` of `id` / `*` (every program).
    pub field: Option<Field>,
}

/// Percentile with linear interpolation between closest ranks (`p` in [0, 1]) of sorted values.
pub fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = p * (sorted.len() - 1) as f64;
    let (lo, hi) = (rank.floor() as usize, rank.ceil() as usize);
    Some(sorted[lo] + (sorted[hi] - sorted[lo]) * (rank - lo as f64))
}

impl Metric {
    fn compute(&self, records: &[&ProgramRecord]) -> Value {
        if self.func == AggFn::Count {
            let n = match &self.field {
                None => records.len(),
                Some(f) => records.iter().filter(|r| !f.values(r).is_empty()).count(),
            };
            return Value::from(n as u64);
        }
        let field = self.field.as_ref().expect("non-count metrics name a field");
        let mut xs: Vec<f64> = records.iter().filter_map(|r| numeric(field, r)).collect();
        xs.sort_by(f64::total_cmp);
        let x = match self.func {
            AggFn::Sum => Some(xs.iter().sum()),
            AggFn::Avg => (!xs.is_empty()).then(|| xs.iter().sum::<f64>() / xs.len() as f64),
            AggFn::Min => xs.first().copied(),
            AggFn::Max => xs.last().copied(),
            AggFn::P50 => percentile(&xs, 0.5),
            AggFn::P95 => percentile(&xs, 0.95),
            AggFn::Count => unreachable!(),
        };
        x.and_then(serde_json::Number::from_f64)
            .map(Value::Number)
            .unwrap_or(Value::Null)
    }
}

/// `POST /aggregate`.
#[derive(Debug, Clone)]
pub struct AggregateRequest {
    pub filter: SearchRequest,
    pub group_by: Option<Field>,
    pub metrics: Vec<Metric>,
}

#[derive(Debug, Clone, Serialize)]
pub struct AggregateResult {
    pub groups: Vec<Value>,
}

fn filter_request(project: Project, conds: Vec<Cond>, text: Vec<String>) -> SearchRequest {
    SearchRequest {
        project,
        conds,
        text,
        sort: Vec::new(),
        limit: 1,
        cursor: None,
        fingerprint: String::new(),
    }
}

/// The filter of an aggregate or time-series body: `filters` (as a search body) plus the
/// top-level `signature` and `project` (which must agree with the same keys of `filters` when
/// both are given); `explicit` is the request's `?project=`.
fn body_filter(map: &Map<String, Value>, explicit: Option<Project>) -> Result<SearchRequest> {
    let mut filters = match map.get("filters") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(f)) => f.clone(),
        Some(_) => return Err(Error::invalid("filters", "filters must be an object")),
    };
    for key in ["signature", "project"] {
        if let Some(v) = map.get(key) {
            match filters.get(key) {
                Some(f) if f != v => {
                    return Err(Error::invalid(
                        key,
                        format!("{key} and filters.{key} disagree; name it once"),
                    ))
                }
                _ => {
                    filters.insert(key.to_owned(), v.clone());
                }
            }
        }
    }
    let (project, conds, text) = parse_filters(&filters, explicit, &[])?;
    Ok(filter_request(project, conds, text))
}

fn deny_unknown(map: &Map<String, Value>, known: &[&str]) -> Result<()> {
    for k in map.keys() {
        if !known.contains(&k.as_str()) {
            return Err(Error::invalid(
                k.clone(),
                format!("unknown key {k:?}; expected {}", known.join(", ")),
            ));
        }
    }
    Ok(())
}

impl AggregateRequest {
    /// `explicit`: the request's `?project=`, if any.
    pub fn parse(body: &Value, explicit: Option<Project>) -> Result<Self> {
        let map = body
            .as_object()
            .ok_or_else(|| Error::invalid_request("the body must be a JSON object"))?;
        deny_unknown(
            map,
            &["signature", "project", "filters", "group_by", "metrics"],
        )?;
        let filter = body_filter(map, explicit)?;
        let group_by = match map.get("group_by") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(
                Field::from_key(s)
                    .ok_or_else(|| Error::invalid("group_by", format!("cannot group by {s:?}")))?,
            ),
            Some(_) => return Err(Error::invalid("group_by", "group_by must be a field name")),
        };
        let metrics_map = match map.get("metrics") {
            Some(Value::Object(m)) if !m.is_empty() => m,
            _ => return Err(Error::invalid(
                "metrics",
                "metrics must be an object like {\"avg_performance\": {\"avg\": \"performance\"}}",
            )),
        };
        let mut metrics = Vec::new();
        for (name, spec) in metrics_map {
            let at = format!("metrics.{name}");
            let (func, target) = match spec.as_object() {
                Some(o) if o.len() == 1 => o.iter().next().expect("one entry"),
                _ => {
                    return Err(Error::invalid(
                        at,
                        "each metric is {\"<function>\": \"<field>\"}",
                    ))
                }
            };
            let func = match func.as_str() {
                "count" => AggFn::Count,
                "sum" => AggFn::Sum,
                "avg" => AggFn::Avg,
                "min" => AggFn::Min,
                "max" => AggFn::Max,
                "p50" => AggFn::P50,
                "p95" => AggFn::P95,
                other => {
                    return Err(Error::invalid(
                        at,
                        format!("unknown function {other:?}; expected count, sum, avg, min, max, p50 or p95"),
                    ))
                }
            };
            let target = target
                .as_str()
                .ok_or_else(|| Error::invalid(at.clone(), "the metric's field must be a string"))?;
            let field =
                match (func, target) {
                    (AggFn::Count, "id" | "*") => None,
                    (_, t) => Some(Field::from_key(t).ok_or_else(|| {
                        Error::invalid(at.clone(), format!("unknown field {t:?}"))
                    })?),
                };
            metrics.push(Metric {
                name: name.clone(),
                func,
                field,
            });
        }
        Ok(AggregateRequest {
            filter,
            group_by,
            metrics,
        })
    }

    fn search(&self) -> SearchRequest {
        self.filter.clone()
    }
}

/// A time-series bucket width.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interval {
    Hour,
    Day,
    /// Weeks start on Monday 00:00 UTC.
    Week,
}

impl Interval {
    fn length(self) -> Duration {
        match self {
            Interval::Hour => Duration::hours(1),
            Interval::Day => Duration::days(1),
            Interval::Week => Duration::weeks(1),
        }
    }
    fn name(self) -> &'static str {
        match self {
            Interval::Hour => "hour",
            Interval::Day => "day",
            Interval::Week => "week",
        }
    }
    /// The start of the bucket holding `t`.
    pub fn floor(self, t: DateTime<Utc>) -> DateTime<Utc> {
        use chrono::Datelike;
        let hour = t
            .with_minute(0)
            .and_then(|t| t.with_second(0))
            .and_then(|t| t.with_nanosecond(0))
            .expect("valid time");
        match self {
            Interval::Hour => hour,
            Interval::Day => hour.with_hour(0).expect("midnight"),
            Interval::Week => {
                hour.with_hour(0).expect("midnight")
                    - Duration::days(t.weekday().num_days_from_monday() as i64)
            }
        }
    }
}

/// `POST /time-series`.
#[derive(Debug, Clone)]
pub struct TimeSeriesRequest {
    pub filter: SearchRequest,
    pub metric: Field,
    pub interval: Interval,
    pub range: Duration,
}

impl TimeSeriesRequest {
    /// `explicit`: the request's `?project=`, if any.
    pub fn parse(body: &Value, explicit: Option<Project>) -> Result<Self> {
        let map = body
            .as_object()
            .ok_or_else(|| Error::invalid_request("the body must be a JSON object"))?;
        deny_unknown(
            map,
            &[
                "signature",
                "project",
                "filters",
                "metric",
                "interval",
                "time_range",
            ],
        )?;
        let filter = body_filter(map, explicit)?;
        let metric = match map.get("metric") {
            None | Some(Value::Null) => Field::Performance,
            Some(Value::String(s)) => Field::from_key(s)
                .ok_or_else(|| Error::invalid("metric", format!("unknown metric {s:?}")))?,
            Some(_) => return Err(Error::invalid("metric", "metric must be a field name")),
        };
        let interval = match map.get("interval").and_then(Value::as_str) {
            None if map.get("interval").is_none() => Interval::Day,
            Some("hour") => Interval::Hour,
            Some("day") => Interval::Day,
            Some("week") => Interval::Week,
            _ => {
                return Err(Error::invalid(
                    "interval",
                    "interval must be hour, day or week",
                ))
            }
        };
        let range = match map.get("time_range") {
            None | Some(Value::Null) => Duration::days(30),
            Some(Value::String(s)) => parse_duration(s)
                .filter(|d| *d > Duration::zero())
                .ok_or_else(|| {
                    Error::invalid(
                        "time_range",
                        "time_range must be a duration like 30d, 12h or 2w",
                    )
                })?,
            Some(_) => {
                return Err(Error::invalid(
                    "time_range",
                    "time_range must be a duration like 30d, 12h or 2w",
                ))
            }
        };
        Ok(TimeSeriesRequest {
            filter,
            metric,
            interval,
            range,
        })
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct TimePoint {
    pub t: String,
    /// Average of the metric in the bucket; `null` when no program in it has the metric.
    pub value: Option<f64>,
    /// Programs in the bucket that carry the metric.
    pub count: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct TimeSeries {
    pub metric: String,
    pub interval: &'static str,
    pub points: Vec<TimePoint>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_are_checked_for_their_search() {
        let req = crate::query::parse_query(
            "signature:S",
            None,
            Some("version"),
            Some(5),
            None,
            Utc::now(),
        )
        .unwrap();
        let p = plan(&req);
        assert!(!p.streaming);
        let keys = CursorKeys::ephemeral();
        let who = &*crate::access::OPERATOR;
        let mut c = new_cursor(&req.fingerprint);
        c.a = Some(vec![SortVal::Str("x".into()), SortVal::Str("id".into())]);
        let good = encode_cursor(&keys, who, &c);
        assert!(decode_cursor(&keys, who, &good, &req.fingerprint, &p).is_ok());
        let e = decode_cursor(&keys, who, &good, "other", &p).unwrap_err();
        assert!(e.to_string().contains("another search"), "{e}");
        c.a = Some(vec![SortVal::Missing]);
        assert!(decode_cursor(
            &keys,
            who,
            &encode_cursor(&keys, who, &c),
            &req.fingerprint,
            &p
        )
        .is_err());
        let (payload, _) = good.rsplit_once('.').unwrap();
        let forged = format!("{payload}.0123456789abcdef");
        let e = decode_cursor(&keys, who, &forged, &req.fingerprint, &p).unwrap_err();
        assert!(e.to_string().contains("altered"), "{e}");
    }

    #[test]
    fn a_search_runs_in_one_project() {
        let now = Utc::now();
        let q = |q: &str, p: Option<&str>| {
            crate::query::parse_query(
                q,
                p.map(|p| Project::parse(p).unwrap()),
                None,
                None,
                None,
                now,
            )
        };
        assert_eq!(q("project:a", None).unwrap().project.as_str(), "a");
        assert_eq!(
            q("project:\"a\" project:a x", Some("a"))
                .unwrap()
                .project
                .as_str(),
            "a"
        );
        assert_eq!(q("x", None).unwrap().project.as_str(), "default");
        for (bad, p) in [
            ("project:a project:b", None),
            ("project:a", Some("b")),
            ("project:a*", None),
            ("project!=a", None),
            ("project>a", None),
        ] {
            let e = q(bad, p).unwrap_err().to_string();
            assert!(e.contains("exactly one project"), "{bad}: {e}");
        }
        let s = |b: serde_json::Value| crate::query::parse_structured(&b, None);
        assert_eq!(
            s(serde_json::json!({"project": ["a"]}))
                .unwrap()
                .project
                .as_str(),
            "a"
        );
        assert!(s(serde_json::json!({"project": ["a", "b"]})).is_err());
        assert!(s(serde_json::json!({"project": {"prefix": "a"}})).is_err());
        assert!(AggregateRequest::parse(
            &serde_json::json!({"project": "a", "filters": {"project": "b"}, "metrics": {"n": {"count": "id"}}}),
            None
        )
        .is_err());
    }

    #[test]
    fn percentiles_interpolate() {
        let xs = [1.0, 2.0, 3.0, 4.0];
        assert_eq!(percentile(&xs, 0.5), Some(2.5));
        assert_eq!(percentile(&xs, 0.0), Some(1.0));
        assert!((percentile(&xs, 0.95).unwrap() - 3.85).abs() < 1e-12);
        assert_eq!(percentile(&[], 0.5), None);
    }

    #[test]
    fn interval_floors() {
        let t = DateTime::parse_from_rfc3339("2026-11-25T16:42:10Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(
            format_time(&Interval::Hour.floor(t)),
            "2026-11-25T16:00:00.000Z"
        );
        assert_eq!(
            format_time(&Interval::Day.floor(t)),
            "2026-11-25T00:00:00.000Z"
        );
        // 2026-11-25 is a Wednesday.
        assert_eq!(
            format_time(&Interval::Week.floor(t)),
            "2026-11-23T00:00:00.000Z"
        );
    }
}
