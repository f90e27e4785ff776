//! The benchmark cases: one small function per operation, in one table, each runnable in-process
//! and over HTTP.

use dspy_storage_core::access::OPERATOR;
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use dspy_storage_core::domain::{AliasName, Project, Signature, Version, VersionSelector};
use http::Method;
use serde_json::{json, Value};

use crate::env::{BackendEnv, Mode};
use crate::stats::{percentile, sorted};
use crate::BenchResult;

pub type Fut<'a> = Pin<Box<dyn Future<Output = BenchResult<()>> + Send + 'a>>;
/// One operation: `i` numbers the call (picks the program, signature, …).
pub type Op = for<'a> fn(&'a BackendEnv, Mode, u64) -> Fut<'a>;

/// How many times a case runs per repeat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Weight {
    /// `iters` operations.
    Normal,
    /// `iters / 10` operations (at least 3): operations moving thousands of records.
    Heavy,
    /// One operation per repeat, no concurrent run (backup, restore).
    Single,
}

/// Which MLflow figure (milliseconds, median over its repeats) a case compares with.
#[derive(Debug, Clone, Copy)]
pub enum MlflowRef {
    /// `aggregate.<key>.median`.
    Agg(&'static str),
    /// `aggregate.<key>.median` scaled to 1,000 metric points (MLflow logs `--metric-points`).
    PerThousandPoints(&'static str),
    /// The sum of several `aggregate.<key>.median`.
    Sum(&'static [&'static str]),
}

pub struct Case {
    pub name: &'static str,
    pub modes: &'static [Mode],
    pub weight: Weight,
    pub mlflow: Option<MlflowRef>,
    /// What the MLflow figure is, when it is not the same work.
    pub note: &'static str,
    pub op: Op,
    /// Run before each timed operation, outside the timed region (e.g. a fresh store to
    /// restore into).
    pub setup: Option<Op>,
}

const BOTH: &[Mode] = &[Mode::InProcess, Mode::Http];
const HTTP_ONLY: &[Mode] = &[Mode::Http];

/// Every case, in table order.
pub fn all() -> Vec<Case> {
    use MlflowRef::*;
    let c = |name, modes, weight, mlflow, note, op: Op| Case {
        name,
        modes,
        weight,
        mlflow,
        note,
        op,
        setup: None,
    };
    vec![
        c(
            "store",
            BOTH,
            Weight::Normal,
            Some(Agg("store_per_program_median_ms")),
            "",
            store,
        ),
        c(
            "load by id",
            BOTH,
            Weight::Normal,
            None,
            "warm: the program from our in-memory cache (MLflow has none; compare the cold row)",
            load_by_id,
        ),
        c(
            "load by id, caches off",
            BOTH,
            Weight::Normal,
            Some(Agg("load_median_ms")),
            "",
            load_by_id_cold,
        ),
        c("load latest", BOTH, Weight::Normal, None, "", load_latest),
        c(
            "load latest, caches off",
            BOTH,
            Weight::Normal,
            None,
            "",
            load_latest_cold,
        ),
        c(
            "load by alias",
            BOTH,
            Weight::Normal,
            Some(Agg("alias.get_model_version_by_alias_median_ms")),
            "warm: the program from our in-memory cache; MLflow reads the version record only",
            load_by_alias,
        ),
        c(
            "load by alias, caches off",
            BOTH,
            Weight::Normal,
            Some(Agg("alias.get_model_version_by_alias_median_ms")),
            "MLflow reads the version record only; we also return the program",
            load_by_alias_cold,
        ),
        c(
            "set alias",
            BOTH,
            Weight::Normal,
            Some(Agg("alias.set_registered_model_alias_median_ms")),
            "",
            set_alias,
        ),
        c(
            "list versions",
            BOTH,
            Weight::Normal,
            Some(Agg(
                "search.search_model_versions(name) = version listing_median_ms",
            )),
            "",
            list_versions,
        ),
        c("diff 1.0.0..latest", BOTH, Weight::Normal, None, "", diff),
        c("health", HTTP_ONLY, Weight::Normal, None, "", health),
        c(
            "search (query string, top 10)",
            BOTH,
            Weight::Normal,
            Some(Agg(
                "search.search_runs(metrics.performance>0.9 ORDER BY, max 10)_median_ms",
            )),
            "",
            search_query,
        ),
        c(
            "search (free text, 10 matches)",
            BOTH,
            Weight::Normal,
            None,
            "a word of the metadata that 10 programs have, whatever the store's size",
            search_free_text,
        ),
        c(
            "search (structured, sorted top 10)",
            BOTH,
            Weight::Normal,
            Some(Agg(
                "search.search_runs(params.sig & tags.method & metric>0.7, max 10)_median_ms",
            )),
            "",
            search_structured,
        ),
        c(
            "metric append (1 record)",
            BOTH,
            Weight::Normal,
            None,
            "",
            metric_append,
        ),
        c(
            "metric append (1,000-record batch)",
            BOTH,
            Weight::Heavy,
            Some(PerThousandPoints(
                "metric_history.log_batch x{points} (chunks of 1000)_median_ms",
            )),
            "MLflow: log_batch of 1,000 points",
            metric_batch,
        ),
        c(
            "history (10,000 records, paged)",
            BOTH,
            Weight::Heavy,
            Some(Agg("metric_history.get_metric_history_median_ms")),
            "",
            history,
        ),
        c(
            "trend (90 days over 10,000 records)",
            BOTH,
            Weight::Heavy,
            Some(Sum(&[
                "metric_history.get_metric_history_median_ms",
                "metric_history.daily avg + linear trend (python)_median_ms",
            ])),
            "MLflow: read the history and compute daily averages and the slope in Python",
            trend,
        ),
        Case {
            setup: Some(backup_setup),
            ..c(
                "backup",
                BOTH,
                Weight::Single,
                None,
                "of a store of its own (the seeded programs and one 10,000-record history), made outside the timed region",
                backup,
            )
        },
        Case {
            setup: Some(restore_setup),
            ..c(
                "restore",
                BOTH,
                Weight::Single,
                None,
                "into an empty store; the backup and the new store are made outside the timed region",
                restore,
            )
        },
    ]
}

// ----- the operations ---------------------------------------------------------------------------

fn project() -> Project {
    Project::default_project()
}

fn sig(env: &BackendEnv, i: u64) -> Signature {
    Signature::parse(env.seeded.signature(i)).expect("valid signature")
}

/// A `/...` path or body call that must succeed.
async fn api(
    env: &BackendEnv,
    mode: Mode,
    cold: bool,
    method: Method,
    path: &str,
    body: Option<&Value>,
) -> BenchResult<()> {
    let answer = env.call(mode, cold, method.clone(), path, body).await?;
    answer.ok(&format!("{method} {path}"))?;
    Ok(())
}

fn store(env: &BackendEnv, mode: Mode, i: u64) -> Fut<'_> {
    Box::pin(async move {
        // One signature per concurrent client slot, so clients do not contend on one head.
        let signature = format!("bench.Store{}", i % 16);
        let seed = 1_000_000 + i;
        match mode {
            Mode::InProcess => {
                crate::data::store(&env.storage, &signature, seed).await?;
                Ok(())
            }
            Mode::Http => {
                let body = crate::data::store_body(&signature, seed);
                api(env, mode, false, Method::POST, "/programs", Some(&body)).await
            }
        }
    })
}

async fn load_id(env: &BackendEnv, mode: Mode, i: u64, cold: bool) -> BenchResult<()> {
    let id = env.seeded.id(i);
    match mode {
        Mode::InProcess => {
            let s = if cold { &env.cold } else { &env.storage };
            let p = s.get_program(&OPERATOR, &id).await?;
            // What the route does with it: serialize the answer.
            std::hint::black_box(serde_json::to_vec(&p.program)?);
            Ok(())
        }
        Mode::Http => {
            api(
                env,
                mode,
                cold,
                Method::GET,
                &format!("/programs/{id}"),
                None,
            )
            .await
        }
    }
}

fn load_by_id(env: &BackendEnv, mode: Mode, i: u64) -> Fut<'_> {
    Box::pin(load_id(env, mode, i, false))
}

fn load_by_id_cold(env: &BackendEnv, mode: Mode, i: u64) -> Fut<'_> {
    Box::pin(load_id(env, mode, i, true))
}

async fn latest(env: &BackendEnv, mode: Mode, i: u64, cold: bool) -> BenchResult<()> {
    let signature = sig(env, i);
    match mode {
        Mode::InProcess => {
            let s = if cold { &env.cold } else { &env.storage };
            let p = s
                .get_version(&OPERATOR, &project(), &signature, &VersionSelector::Latest)
                .await?;
            std::hint::black_box(serde_json::to_vec(&p.program)?);
            Ok(())
        }
        Mode::Http => {
            let path = format!("/signatures/{signature}/versions/latest");
            api(env, mode, cold, Method::GET, &path, None).await
        }
    }
}

fn load_latest(env: &BackendEnv, mode: Mode, i: u64) -> Fut<'_> {
    Box::pin(latest(env, mode, i, false))
}

fn load_latest_cold(env: &BackendEnv, mode: Mode, i: u64) -> Fut<'_> {
    Box::pin(latest(env, mode, i, true))
}

/// The alias every seeded signature has (set by [`prepare`]).
const ALIAS: &str = "production";

async fn alias(env: &BackendEnv, mode: Mode, i: u64, cold: bool) -> BenchResult<()> {
    let signature = sig(env, i);
    match mode {
        Mode::InProcess => {
            let s = if cold { &env.cold } else { &env.storage };
            let alias = AliasName::parse(ALIAS)?;
            let p = s
                .get_alias(&OPERATOR, &project(), &signature, &alias)
                .await?;
            std::hint::black_box(serde_json::to_vec(&p.program)?);
            Ok(())
        }
        Mode::Http => {
            let path = format!("/signatures/{signature}/aliases/{ALIAS}");
            api(env, mode, cold, Method::GET, &path, None).await
        }
    }
}

fn load_by_alias(env: &BackendEnv, mode: Mode, i: u64) -> Fut<'_> {
    Box::pin(alias(env, mode, i, false))
}

fn load_by_alias_cold(env: &BackendEnv, mode: Mode, i: u64) -> Fut<'_> {
    Box::pin(alias(env, mode, i, true))
}

fn set_alias(env: &BackendEnv, mode: Mode, i: u64) -> Fut<'_> {
    Box::pin(async move {
        let signature = sig(env, i);
        // Alternate between the first two versions (every seeded signature has both).
        let version = if (i / 7).is_multiple_of(2) {
            "1.0.0"
        } else {
            "1.0.1"
        };
        match mode {
            Mode::InProcess => {
                let alias = AliasName::parse("staging")?;
                env.storage
                    .put_alias(
                        &OPERATOR,
                        &project(),
                        &signature,
                        &alias,
                        &Version::parse(version)?,
                        None,
                    )
                    .await?;
                Ok(())
            }
            Mode::Http => {
                let path = format!("/signatures/{signature}/aliases/staging");
                let body = json!({ "version": version });
                api(env, mode, false, Method::PUT, &path, Some(&body)).await
            }
        }
    })
}

fn list_versions(env: &BackendEnv, mode: Mode, i: u64) -> Fut<'_> {
    Box::pin(async move {
        let signature = sig(env, i);
        match mode {
            Mode::InProcess => {
                let l = env
                    .storage
                    .list_versions(&OPERATOR, &project(), &signature, None, None)
                    .await?;
                std::hint::black_box(l.items.len());
                Ok(())
            }
            Mode::Http => {
                let path = format!("/signatures/{signature}/versions");
                api(env, mode, false, Method::GET, &path, None).await
            }
        }
    })
}

fn diff(env: &BackendEnv, mode: Mode, i: u64) -> Fut<'_> {
    Box::pin(async move {
        let signature = sig(env, i);
        match mode {
            Mode::InProcess => {
                let d = env
                    .storage
                    .diff_versions(
                        &OPERATOR,
                        &project(),
                        &signature,
                        &VersionSelector::Exact(Version::parse("1.0.0")?),
                        &VersionSelector::Latest,
                    )
                    .await?;
                std::hint::black_box(serde_json::to_vec(&d)?);
                Ok(())
            }
            Mode::Http => {
                let path = format!("/signatures/{signature}/diff?from=1.0.0&to=latest");
                api(env, mode, false, Method::GET, &path, None).await
            }
        }
    })
}

fn health(env: &BackendEnv, mode: Mode, _i: u64) -> Fut<'_> {
    Box::pin(api(env, mode, false, Method::GET, "/health", None))
}

// ----- search, performance tracking, backup --------------------------------------------------

fn search_query(env: &BackendEnv, mode: Mode, i: u64) -> Fut<'_> {
    Box::pin(async move {
        let path = if i.is_multiple_of(2) {
            "/search?q=performance%3E0.9&limit=10".to_owned()
        } else {
            format!(
                "/search?q=signature%3A{}%20method%3Amiprov2&limit=10",
                env.seeded.signature(i)
            )
        };
        api(env, mode, false, Method::GET, &path, None).await
    })
}

/// A free-text word ten programs have (their shard's dataset word), whatever the store's size:
/// the word index reads those ten, not the project.
fn search_free_text(env: &BackendEnv, mode: Mode, i: u64) -> Fut<'_> {
    Box::pin(async move {
        let shards = (env.seeded.ids.len() as u64 / 10).max(1);
        let word = crate::data::shard_word(i.wrapping_mul(7919) % shards);
        let path = format!("/search?q={word}&limit=10");
        api(env, mode, false, Method::GET, &path, None).await
    })
}

fn search_structured(env: &BackendEnv, mode: Mode, i: u64) -> Fut<'_> {
    Box::pin(async move {
        let method = crate::data::METHODS[(i % 4) as usize];
        let body = json!({
            "signature": env.seeded.signature(i),
            "optimization_method": [method],
            "performance": {"gte": 0.7},
            "sort": [{"performance": "desc"}],
            "limit": 10,
        });
        api(env, mode, false, Method::POST, "/search", Some(&body)).await
    })
}

fn metric_record(j: u64, at: chrono::DateTime<chrono::Utc>) -> Value {
    let x = j as f64;
    json!({
        "metrics": {
            "accuracy": 0.6 + 0.3 * ((x * 0.618).fract()),
            "latency": 0.8 + ((x * 0.414).fract()),
            "cost": 0.002 + 0.002 * ((x * 0.732).fract()),
        },
        "timestamp": dspy_storage_core::domain::format_time(&at),
    })
}

/// A program other than the one holding the seeded history.
fn metric_target(env: &BackendEnv, i: u64) -> dspy_storage_core::domain::ProgramId {
    let ids = &env.seeded.ids;
    ids[1 + (i.wrapping_mul(7919) % (ids.len() as u64 - 1)) as usize]
}

fn metric_append(env: &BackendEnv, mode: Mode, i: u64) -> Fut<'_> {
    Box::pin(async move {
        let id = metric_target(env, i);
        let mut body = metric_record(i, chrono::Utc::now());
        body.as_object_mut().unwrap().remove("timestamp");
        let path = format!("/programs/{id}/metrics");
        api(env, mode, false, Method::POST, &path, Some(&body)).await
    })
}

/// `n` records spread evenly over the last `days` days, oldest first.
pub fn metric_records(n: usize, days: i64, offset: u64) -> Vec<Value> {
    let now = chrono::Utc::now();
    let span = chrono::Duration::days(days).num_seconds();
    (0..n)
        .map(|j| {
            let back = span - span * j as i64 / n as i64;
            metric_record(offset + j as u64, now - chrono::Duration::seconds(back))
        })
        .collect()
}

fn metric_batch(env: &BackendEnv, mode: Mode, i: u64) -> Fut<'_> {
    Box::pin(async move {
        let id = metric_target(env, i);
        let body = json!({ "records": metric_records(1000, 30, i * 1000) });
        let path = format!("/programs/{id}/metrics");
        api(env, mode, false, Method::POST, &path, Some(&body)).await
    })
}

/// Reads a program's whole history page by page (10,000 per page: the history route's largest
/// page, so a 10,000-record history is one request). Returns the number of records read.
pub async fn read_history(env: &BackendEnv, mode: Mode, id: &str) -> BenchResult<usize> {
    let mut cursor: Option<String> = None;
    let mut n = 0;
    loop {
        let mut path = format!("/programs/{id}/metrics?limit=10000");
        if let Some(c) = &cursor {
            path.push_str(&format!("&cursor={c}"));
        }
        let a = env.call(mode, false, Method::GET, &path, None).await?;
        let page = a.ok(&path)?.json()?;
        n += page["records"].as_array().map_or(0, Vec::len);
        match page["next_cursor"].as_str() {
            Some(c) if !c.is_empty() => cursor = Some(c.to_owned()),
            _ => return Ok(n),
        }
    }
}

fn history(env: &BackendEnv, mode: Mode, _i: u64) -> Fut<'_> {
    Box::pin(async move {
        let id = env.history_program().await?;
        match read_history(env, mode, &id.to_string()).await? {
            n if n < crate::env::HISTORY_RECORDS => Err(format!(
                "history returned {n} of {} records",
                crate::env::HISTORY_RECORDS
            )
            .into()),
            _ => Ok(()),
        }
    })
}

fn trend(env: &BackendEnv, mode: Mode, _i: u64) -> Fut<'_> {
    Box::pin(async move {
        let id = env.history_program().await?;
        let path = format!("/programs/{id}/trends?days=90");
        api(env, mode, false, Method::GET, &path, None).await
    })
}

fn backup(env: &BackendEnv, mode: Mode, i: u64) -> Fut<'_> {
    Box::pin(async move {
        let body =
            json!({ "name": format!("bench-{}-{i}", mode.name().to_lowercase().replace('-', "")) });
        env.call_backup_source(mode, Method::POST, "/backups", Some(&body))
            .await?
            .ok("POST /backups")?;
        Ok(())
    })
}

fn backup_setup(env: &BackendEnv, _mode: Mode, _i: u64) -> Fut<'_> {
    Box::pin(async move { env.backup_source().await.map(|_| ()) })
}

fn restore_setup(env: &BackendEnv, _mode: Mode, _i: u64) -> Fut<'_> {
    Box::pin(async move { env.prepare_restore_target().await })
}

fn restore(env: &BackendEnv, mode: Mode, _i: u64) -> Fut<'_> {
    Box::pin(async move {
        let answer = env.restore_into_target(mode).await?;
        let v = answer
            .ok("POST /backups/{name}/restore into an empty store")?
            .json()?;
        if v["restored_programs"].as_u64().unwrap_or(0) == 0 {
            return Err(format!("the restore into an empty store restored nothing: {v}").into());
        }
        Ok(())
    })
}

/// Gives every seeded signature its `production` alias (on 1.0.0) and warms the program cache.
/// Before the cases run.
pub async fn prepare(env: &BackendEnv) -> BenchResult<()> {
    let alias = AliasName::parse(ALIAS)?;
    for s in &env.seeded.signatures {
        env.storage
            .put_alias(
                &OPERATOR,
                &project(),
                &Signature::parse(s)?,
                &alias,
                &Version::parse("1.0.0")?,
                None,
            )
            .await?;
    }
    // Every program read once, so the default store's program cache is warm (the steady state
    // of a long-running server); the "caches off" cases read through a store without caches.
    for id in &env.seeded.ids {
        env.storage.get_program(&OPERATOR, id).await?;
    }
    Ok(())
}

// ----- running a case ---------------------------------------------------------------------------

/// How much work a measurement does.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    pub iters: usize,
    pub repeats: usize,
    pub concurrency: usize,
}

/// Figures of one case on one backend in one mode.
#[derive(Debug, Clone, Default)]
pub struct Figures {
    /// Median and 99th percentile latency (ms) of each repeat, one client.
    pub p50: Vec<f64>,
    pub p99: Vec<f64>,
    /// Operations per second of each repeat, `concurrency` clients (empty for single cases).
    pub throughput: Vec<f64>,
    /// AWS requests per operation (AWS backend), by operation and in all.
    pub requests_per_op: Option<f64>,
    pub requests_by_op: BTreeMap<String, f64>,
    /// DynamoDB capacity units per operation as DynamoDB Local reports them.
    pub capacity_per_op: Option<f64>,
}

pub enum CaseResult {
    Measured(Figures),
    Failed(String),
}

impl CaseResult {
    pub fn figures(&self) -> Option<&Figures> {
        match self {
            CaseResult::Measured(f) => Some(f),
            _ => None,
        }
    }
}

fn ops_for(weight: Weight, iters: usize) -> usize {
    match weight {
        Weight::Normal => iters.max(1),
        Weight::Heavy => (iters / 10).max(3),
        Weight::Single => 1,
    }
}

/// Runs one case: a warm-up call, then `repeats` sequential runs (latency, request counts) and
/// `repeats` runs with `concurrency` clients (throughput).
pub async fn run(
    env: &Arc<BackendEnv>,
    case: &Case,
    mode: Mode,
    plan: Plan,
    next_i: &mut u64,
) -> CaseResult {
    match run_inner(env, case, mode, plan, next_i).await {
        Ok(r) => r,
        Err(e) => CaseResult::Failed(e.to_string()),
    }
}

async fn run_inner(
    env: &Arc<BackendEnv>,
    case: &Case,
    mode: Mode,
    plan: Plan,
    next_i: &mut u64,
) -> BenchResult<CaseResult> {
    let op = case.op;
    let mut take = |n: usize| {
        let start = *next_i;
        *next_i += n as u64;
        start
    };
    if case.weight != Weight::Single {
        op(env, mode, take(1)).await?;
    }
    let ops = ops_for(case.weight, plan.iters);
    let mut f = Figures::default();
    let (mut requests, mut capacity) = (0u64, 0f64);
    let mut by_op: BTreeMap<String, u64> = BTreeMap::new();
    for _ in 0..plan.repeats {
        env.reset_counts();
        let mut lat = Vec::with_capacity(ops);
        let base = take(ops);
        for k in 0..ops as u64 {
            if let Some(setup) = case.setup {
                // Its requests are not the operation's: a setup runs only for one-operation
                // repeats (whole-store cases), so dropping the counts so far drops only its own.
                assert_eq!(ops, 1, "a case with a setup runs one operation per repeat");
                setup(env, mode, base + k).await?;
                env.reset_counts();
            }
            let t = Instant::now();
            op(env, mode, base + k).await?;
            lat.push(t.elapsed().as_secs_f64() * 1e3);
        }
        if let Some((n, cu, snapshot)) = env.counts() {
            requests += n;
            capacity += cu;
            for (k, v) in snapshot {
                *by_op.entry(k).or_default() += v;
            }
        }
        let lat = sorted(lat);
        f.p50.push(percentile(&lat, 50.0));
        f.p99.push(percentile(&lat, 99.0));
    }
    if env.counter.is_some() {
        let total_ops = (ops * plan.repeats) as f64;
        f.requests_per_op = Some(requests as f64 / total_ops);
        f.capacity_per_op = Some(capacity / total_ops);
        f.requests_by_op = by_op
            .into_iter()
            .map(|(k, v)| (k, v as f64 / total_ops))
            .collect();
    }
    if case.weight == Weight::Single || plan.concurrency <= 1 {
        return Ok(CaseResult::Measured(f));
    }
    for _ in 0..plan.repeats {
        let base = take(ops);
        let started = Instant::now();
        let mut tasks = Vec::new();
        for w in 0..plan.concurrency as u64 {
            let env = env.clone();
            tasks.push(tokio::spawn(async move {
                let mut k = w;
                while k < ops as u64 {
                    op(&env, mode, base + k).await?;
                    k += plan.concurrency as u64;
                }
                BenchResult::Ok(())
            }));
        }
        for t in tasks {
            t.await??;
        }
        f.throughput
            .push(ops as f64 / started.elapsed().as_secs_f64());
    }
    env.reset_counts();
    Ok(CaseResult::Measured(f))
}
