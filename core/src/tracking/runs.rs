//! Optimization history: one record per optimizer run (method, parameters, per-trial scores, best
//! score, trainset, duration, start/finish) with the programs it produced. A run is listed by
//! signature (GSI1), by method (GSI3) or by project (GSI4), newest first; each program it names
//! gets `optimization_run_id` in its metadata.
//!
//! A DSPy.rb `ProgramStorage` envelope (`program_data` + `optimization_result`) stored with
//! `?import_optimization=true` creates its run from `optimization_result` in the same request.

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::access::{no_project, Principal};
use crate::backend::{attr, Index, Item, Query, WriteOp};
use crate::domain::{format_time, parse_time, ProgramId, Project, Signature};
use crate::error::{Error, Result};
use crate::model::keys;
use crate::model::record::from_item;
use crate::paging::{decode_cursor, encode_cursor, page_limit};
use crate::storage::registry::MetadataPatch;
use crate::storage::{Listing, Storage};

/// Largest run record (DynamoDB items are at most 400 KB).
pub const MAX_RUN_BYTES: usize = 350 * 1024;
/// Most programs one run may name.
pub const MAX_RUN_PROGRAMS: usize = 100;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Trial {
    #[serde(default)]
    pub params: Value,
    pub score: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Trainset {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
}

/// An optimizer run as stored and answered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OptimizationRun {
    pub id: uuid::Uuid,
    pub project: Project,
    pub signature: Signature,
    pub method: String,
    pub parameters: Map<String, Value>,
    pub trials: Vec<Trial>,
    pub best_score: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trainset: Option<Trainset>,
    pub duration_s: Option<f64>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub program_ids: Vec<ProgramId>,
    pub created_at: DateTime<Utc>,
    /// Where the run came from: `api` or `dspy.rb` (imported from a saved-program envelope).
    pub source: String,
}

/// The body of `POST /optimization-runs`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewRun {
    pub signature: String,
    pub method: String,
    #[serde(default)]
    pub project: Option<String>,
    #[serde(default)]
    pub parameters: Option<Map<String, Value>>,
    #[serde(default)]
    pub trials: Vec<Trial>,
    #[serde(default)]
    pub best_score: Option<f64>,
    #[serde(default)]
    pub trainset: Option<Trainset>,
    #[serde(default)]
    pub duration_s: Option<f64>,
    #[serde(default)]
    pub started_at: Option<String>,
    #[serde(default)]
    pub finished_at: Option<String>,
    #[serde(default)]
    pub program_ids: Vec<String>,
}

fn finite(field: &str, v: Option<f64>) -> Result<Option<f64>> {
    match v {
        Some(x) if !x.is_finite() => Err(Error::invalid(
            field,
            format!("{field} must be a finite number"),
        )),
        other => Ok(other),
    }
}

impl OptimizationRun {
    fn to_item(&self) -> Item {
        let created = format!("{}#{}", format_time(&self.created_at), self.id);
        Item::new(keys::run_pk(&self.id), keys::RUN_SK)
            .with(
                attr::DATA,
                serde_json::to_string(self).expect("serializable"),
            )
            .with(
                Index::Gsi1.pk_attr(),
                keys::run_signature_pk(&self.project, &self.signature),
            )
            .with(Index::Gsi1.sk_attr(), created.clone())
            .with(
                Index::Gsi3.pk_attr(),
                keys::run_method_pk(&self.project, &self.method),
            )
            .with(Index::Gsi3.sk_attr(), created.clone())
            .with(Index::Gsi4.pk_attr(), keys::runs_pk(&self.project))
            .with(Index::Gsi4.sk_attr(), created)
    }

    /// Validates a request into a run (program ids are checked against the store separately).
    pub fn from_request(new: NewRun, now: DateTime<Utc>) -> Result<Self> {
        let signature = Signature::parse(&new.signature)?;
        let project = match &new.project {
            Some(p) => Project::parse(p)?,
            None => Project::default_project(),
        };
        validate_method(&new.method)?;
        for (i, t) in new.trials.iter().enumerate() {
            finite(&format!("trials[{i}].score"), t.score)?;
        }
        let best_score = finite("best_score", new.best_score)?.or_else(|| {
            new.trials
                .iter()
                .filter_map(|t| t.score)
                .fold(None, |m: Option<f64>, s| Some(m.map_or(s, |m| m.max(s))))
        });
        let duration_s = finite("duration_s", new.duration_s)?;
        if duration_s.is_some_and(|d| d < 0.0) {
            return Err(Error::invalid(
                "duration_s",
                "duration_s must not be negative",
            ));
        }
        if let Some(sha) = new.trainset.as_ref().and_then(|t| t.sha256.as_ref()) {
            if sha.len() != 64 || !sha.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(Error::invalid(
                    "trainset.sha256",
                    "trainset.sha256 must be 64 hex digits",
                ));
            }
        }
        let started_at = new
            .started_at
            .as_deref()
            .map(|s| parse_time("started_at", s))
            .transpose()?;
        let finished_at = new
            .finished_at
            .as_deref()
            .map(|s| parse_time("finished_at", s))
            .transpose()?;
        if let (Some(s), Some(f)) = (started_at, finished_at) {
            if f < s {
                return Err(Error::invalid(
                    "finished_at",
                    "finished_at is before started_at",
                ));
            }
        }
        if new.program_ids.len() > MAX_RUN_PROGRAMS {
            return Err(Error::invalid(
                "program_ids",
                format!("at most {MAX_RUN_PROGRAMS} program ids"),
            ));
        }
        let mut program_ids = Vec::new();
        for (i, p) in new.program_ids.iter().enumerate() {
            let id = ProgramId::parse(p).map_err(|_| {
                Error::invalid(
                    format!("program_ids[{i}]"),
                    format!("{p:?} is not a program id"),
                )
            })?;
            if !program_ids.contains(&id) {
                program_ids.push(id);
            }
        }
        let run = OptimizationRun {
            id: uuid::Uuid::now_v7(),
            project,
            signature,
            method: new.method,
            parameters: new.parameters.unwrap_or_default(),
            trials: new.trials,
            best_score,
            trainset: new.trainset,
            duration_s,
            started_at,
            finished_at,
            program_ids,
            created_at: now,
            source: "api".into(),
        };
        run.check_size()?;
        Ok(run)
    }

    fn check_size(&self) -> Result<()> {
        let size = serde_json::to_string(self).map(|s| s.len()).unwrap_or(0);
        if size > MAX_RUN_BYTES {
            return Err(Error::PayloadTooLarge(format!(
                "the run is {size} bytes; a run record holds at most {MAX_RUN_BYTES}"
            )));
        }
        Ok(())
    }

    /// A run from a DSPy.rb saved-program envelope's `optimization_result`; `None` when the
    /// program is not such an envelope.
    pub fn from_dspyrb(
        program: &Value,
        project: &Project,
        signature: &Signature,
        now: DateTime<Utc>,
    ) -> Result<Option<Self>> {
        let Some(result) = program.get("optimization_result").filter(|v| v.is_object()) else {
            return Ok(None);
        };
        let env_meta = program.get("metadata").cloned().unwrap_or(Value::Null);
        let res_meta = result.get("metadata").cloned().unwrap_or(Value::Null);
        let method = res_meta
            .get("optimizer")
            .or_else(|| env_meta.get("optimizer"))
            .and_then(Value::as_str)
            .unwrap_or("unknown")
            .to_owned();
        validate_method(&method)?;
        let history = result.get("history").cloned().unwrap_or(Value::Null);
        let trials: Vec<Trial> = history
            .get("score_history")
            .and_then(Value::as_array)
            .map(|scores| {
                scores
                    .iter()
                    .enumerate()
                    .map(|(i, s)| Trial {
                        params: json!({"trial": i + 1}),
                        score: s.as_f64().filter(|x| x.is_finite()),
                    })
                    .collect()
            })
            .unwrap_or_default();
        let mut parameters = Map::new();
        if let Value::Object(m) = &res_meta {
            for (k, v) in m {
                if k != "best_instruction" {
                    parameters.insert(k.clone(), v.clone());
                }
            }
        }
        if let Value::Object(h) = &history {
            for (k, v) in h {
                if k != "score_history" {
                    parameters.insert(k.clone(), v.clone());
                }
            }
        }
        if let Some(n) = result.get("best_score_name") {
            parameters.insert("best_score_name".into(), n.clone());
        }
        let duration_s = env_meta
            .get("duration_seconds")
            .and_then(Value::as_f64)
            .filter(|d| d.is_finite() && *d >= 0.0);
        let finished_at = res_meta
            .get("optimization_timestamp")
            .or_else(|| env_meta.get("optimization_timestamp"))
            .and_then(Value::as_str)
            .and_then(|s| parse_time("optimization_timestamp", s).ok());
        let started_at = match (finished_at, duration_s) {
            (Some(f), Some(d)) => Some(f - Duration::milliseconds((d * 1000.0) as i64)),
            _ => None,
        };
        let best_score = result
            .get("best_score_value")
            .and_then(Value::as_f64)
            .filter(|x| x.is_finite())
            .or_else(|| trials.iter().filter_map(|t| t.score).reduce(f64::max));
        let run = OptimizationRun {
            id: uuid::Uuid::now_v7(),
            project: project.clone(),
            signature: signature.clone(),
            method,
            parameters,
            trials,
            best_score,
            trainset: env_meta
                .get("dataset_size")
                .and_then(Value::as_u64)
                .map(|n| Trainset {
                    size: Some(n),
                    sha256: None,
                }),
            duration_s,
            started_at,
            finished_at,
            program_ids: Vec::new(),
            created_at: now,
            source: "dspy.rb".into(),
        };
        run.check_size()?;
        Ok(Some(run))
    }
}

fn validate_method(method: &str) -> Result<()> {
    if method.is_empty()
        || method.len() > 128
        || method.contains('#')
        || method.chars().any(char::is_control)
    {
        return Err(Error::invalid(
            "method",
            "method must be 1-128 characters without '#'",
        ));
    }
    Ok(())
}

/// Filters of `GET /optimization-runs`.
#[derive(Debug, Clone, Default)]
pub struct RunFilter {
    pub project: Option<Project>,
    pub signature: Option<Signature>,
    pub method: Option<String>,
    pub limit: Option<usize>,
    pub cursor: Option<String>,
}

impl Storage {
    /// Records a run in a project `who` may see: checks every program it names exists in the
    /// run's project and signature (a program `who` may not see is as unknown as a missing one),
    /// writes the run, then links each program (`optimization_run_id` in its metadata).
    pub async fn create_run(
        &self,
        who: &Principal,
        run: OptimizationRun,
    ) -> Result<OptimizationRun> {
        who.see_project(&run.project)?;
        for (i, id) in run.program_ids.iter().enumerate() {
            let rec = match self.get_record(who, id).await {
                Ok(r) => r,
                Err(Error::NotFound(_)) => {
                    return Err(Error::invalid(
                        format!("program_ids[{i}]"),
                        format!("no program with id {id}"),
                    ))
                }
                Err(e) => return Err(e),
            };
            if rec.project != run.project || rec.signature != run.signature {
                return Err(Error::invalid(
                    format!("program_ids[{i}]"),
                    format!(
                        "program {id} belongs to signature {} in project {}, not this run's",
                        rec.signature, rec.project
                    ),
                ));
            }
        }
        self.put_run(&run).await?;
        for id in &run.program_ids {
            self.link_program_to_run(who, id, &run.id).await?;
        }
        Ok(run)
    }

    async fn link_program_to_run(
        &self,
        who: &Principal,
        program: &ProgramId,
        run: &uuid::Uuid,
    ) -> Result<()> {
        let mut set = Map::new();
        set.insert("optimization_run_id".into(), Value::String(run.to_string()));
        self.update_metadata(
            who,
            program,
            MetadataPatch {
                set: Some(set),
                ..MetadataPatch::default()
            },
        )
        .await
        .map(|_| ())
    }

    /// Adds a program to an imported run (after the program was stored with the run's id).
    pub(crate) async fn add_program_to_run(
        &self,
        run: &OptimizationRun,
        program: ProgramId,
    ) -> Result<OptimizationRun> {
        let mut run = run.clone();
        run.program_ids.push(program);
        self.items
            .transact(vec![WriteOp::put(
                run.to_item(),
                crate::backend::Condition::Exists,
            )])
            .await?;
        Ok(run)
    }

    /// Writes a run without programs (the import path, before the program is stored).
    pub(crate) async fn put_run(&self, run: &OptimizationRun) -> Result<()> {
        self.items
            .transact(vec![WriteOp::put(
                run.to_item(),
                crate::backend::Condition::NotExists,
            )])
            .await
    }

    /// A run by id, if `who` may see its project (another project's run is as unknown as a
    /// missing one).
    pub async fn get_run(&self, who: &Principal, id: &str) -> Result<OptimizationRun> {
        let not_found = || Error::NotFound(format!("no optimization run with id {id:?}"));
        let uuid = uuid::Uuid::parse_str(id).map_err(|_| not_found())?;
        let run: OptimizationRun = match self.items.get(&keys::run_pk(&uuid), keys::RUN_SK).await? {
            Some(item) => from_item(&item)?,
            None => return Err(not_found()),
        };
        who.see(&run.project, not_found)?;
        Ok(run)
    }

    /// Lists runs newest first: by signature (and method, filtered), by method, or every run of
    /// the project — one index query per page.
    pub async fn list_runs(
        &self,
        who: &Principal,
        filter: RunFilter,
    ) -> Result<Listing<OptimizationRun>> {
        let project = filter.project.unwrap_or_else(Project::default_project);
        who.see(&project, || no_project(&project))?;
        if let Some(m) = &filter.method {
            validate_method(m)?;
        }
        let (index, pk) = match (&filter.signature, &filter.method) {
            (Some(sig), _) => (Index::Gsi1, keys::run_signature_pk(&project, sig)),
            (None, Some(m)) => (Index::Gsi3, keys::run_method_pk(&project, m)),
            (None, None) => (Index::Gsi4, keys::runs_pk(&project)),
        };
        let limit = page_limit(filter.limit)?;
        let start = filter
            .cursor
            .as_deref()
            .map(|c| decode_cursor(&self.cursors, who, c, index, &pk))
            .transpose()?;
        let page = self
            .items
            .query(
                &Query::new(index, pk.clone())
                    .forward(false)
                    .limit(limit)
                    .start(start),
            )
            .await?;
        let mut items = Vec::with_capacity(page.items.len());
        for item in &page.items {
            let run: OptimizationRun = from_item(item)?;
            if filter.method.as_ref().is_none_or(|m| *m == run.method) {
                items.push(run);
            }
        }
        Ok(Listing {
            items,
            next_cursor: page
                .next
                .map(|k| encode_cursor(&self.cursors, who, index, &pk, &k)),
        })
    }
}

impl Storage {
    /// Stores a DSPy.rb saved-program envelope and creates its optimization run from
    /// `optimization_result` in the same request: the run is written first (so the program's
    /// `optimization_run_id` never names a missing run), then the program, then the run's
    /// program list. A program that is not such an envelope is a `400`.
    pub async fn store_importing_run(
        &self,
        who: &Principal,
        program: &serde_json::value::RawValue,
        mut metadata: crate::domain::NewMetadata,
        idempotency: Option<crate::storage::Idempotency>,
    ) -> Result<(crate::storage::StoreOutcome, OptimizationRun)> {
        who.see_project(&metadata.project)?;
        let value: Value = serde_json::from_str(program.get())
            .map_err(|e| Error::invalid("program", format!("program is not valid JSON: {e}")))?;
        let run = OptimizationRun::from_dspyrb(
            &value,
            &metadata.project,
            &metadata.signature,
            crate::domain::now(),
        )?
        .ok_or_else(|| {
            Error::invalid(
                "program",
                "import_optimization=true needs a DSPy.rb saved program with an optimization_result",
            )
        })?;
        if metadata.map.contains_key("optimization_run_id") {
            return Err(Error::invalid(
                "metadata.optimization_run_id",
                "metadata.optimization_run_id is set by import_optimization=true; leave it out",
            ));
        }
        metadata.map.insert(
            "optimization_run_id".into(),
            Value::String(run.id.to_string()),
        );
        if metadata.optimization_method.is_none() {
            metadata.optimization_method = Some(run.method.clone());
            metadata.map.insert(
                "optimization_method".into(),
                Value::String(run.method.clone()),
            );
        }
        self.put_run(&run).await?;
        let outcome = match self.store(who, program, metadata, idempotency).await {
            Ok(o) => o,
            Err(e) => {
                // No program refers to the run: remove it (best effort).
                let del = WriteOp::delete(
                    keys::run_pk(&run.id),
                    keys::RUN_SK,
                    crate::backend::Condition::None,
                );
                if let Err(d) = self.items.transact(vec![del]).await {
                    tracing::warn!(run = %run.id, error = %d, "could not remove the run of a failed import");
                }
                return Err(e);
            }
        };
        if outcome.replayed {
            // The first request made the run; this one's is not referenced by any program.
            return Ok((outcome, run));
        }
        let run = self.add_program_to_run(&run, outcome.stored.id).await?;
        Ok((outcome, run))
    }
}
