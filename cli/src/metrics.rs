//! CLI commands of performance tracking: `metrics record|history`, `trend ID`, `report`.

use dspy_storage_core::access::OPERATOR;
use std::path::PathBuf;

use clap::Subcommand;
use dspy_storage_core::domain::{ProgramId, Signature};
use dspy_storage_core::storage::Storage;
use dspy_storage_core::tracking::chart;
use serde_json::{Map, Value};

use crate::{key_values, print_json, project_arg, AnyError};

#[derive(Subcommand, Debug)]
pub enum PerfCommand {
    /// Record metrics of a program, or read its history.
    Metrics {
        #[command(subcommand)]
        action: MetricsAction,
    },
    /// Trends of a program's metrics (`--signature`: of a signature across its versions).
    Trend {
        /// A program id, or a signature with --signature.
        id: String,
        #[arg(long)]
        signature: bool,
        #[arg(long, env = "DSPY_STORAGE_PROJECT")]
        project: Option<String>,
        #[arg(long, default_value_t = 90)]
        days: i64,
        /// Also write the chart (SVG) to this file.
        #[arg(long)]
        svg: Option<PathBuf>,
    },
    /// The monitoring report (totals, activity, top signatures, trends, storage health).
    Report,
}

#[derive(Subcommand, Debug)]
pub enum MetricsAction {
    /// Record one record (`--metric name=value` …) or a JSON file (one record or
    /// `{"records": [...]}`, up to 1000).
    Record {
        id: String,
        #[arg(long = "metric", value_name = "NAME=VALUE")]
        metrics: Vec<String>,
        /// RFC 3339 time of the measurement (default: now).
        #[arg(long)]
        timestamp: Option<String>,
        /// Environment facts `key=value` (dspy_version, host, git_commit, …).
        #[arg(long = "env", value_name = "KEY=VALUE")]
        env: Vec<String>,
        #[arg(long, conflicts_with_all = ["metrics", "timestamp", "env"])]
        file: Option<PathBuf>,
    },
    /// Print a program's records, oldest first (every page unless --limit).
    History {
        id: String,
        #[arg(long)]
        from: Option<String>,
        #[arg(long)]
        to: Option<String>,
        #[arg(long)]
        limit: Option<usize>,
    },
}

pub async fn run(cmd: PerfCommand, storage: &Storage) -> Result<(), AnyError> {
    match cmd {
        PerfCommand::Metrics { action } => match action {
            MetricsAction::Record {
                id,
                metrics,
                timestamp,
                env,
                file,
            } => {
                let id = ProgramId::parse(&id)?;
                let body: Value = match file {
                    Some(f) => serde_json::from_str(
                        &std::fs::read_to_string(&f)
                            .map_err(|e| format!("{}: {e}", f.display()))?,
                    )?,
                    None => {
                        let mut rec = Map::new();
                        rec.insert(
                            "metrics".into(),
                            Value::Object(key_values(&metrics, "--metric")?),
                        );
                        if let Some(t) = timestamp {
                            rec.insert("timestamp".into(), Value::String(t));
                        }
                        if !env.is_empty() {
                            rec.insert(
                                "environment".into(),
                                Value::Object(key_values(&env, "--env")?),
                            );
                        }
                        Value::Object(rec)
                    }
                };
                print_json(&storage.record_metrics(&OPERATOR, &id, &body).await?)?;
            }
            MetricsAction::History {
                id,
                from,
                to,
                limit,
            } => {
                let id = ProgramId::parse(&id)?;
                let mut cursor: Option<String> = None;
                let mut records = Vec::new();
                loop {
                    let page = storage
                        .metric_history(
                            &OPERATOR,
                            &id,
                            from.as_deref(),
                            to.as_deref(),
                            Some(limit.unwrap_or(1000).min(1000)),
                            cursor.as_deref(),
                        )
                        .await?;
                    records.extend(page.records);
                    match page.next_cursor {
                        Some(c) if limit.is_none_or(|l| records.len() < l) => cursor = Some(c),
                        _ => break,
                    }
                }
                if let Some(l) = limit {
                    records.truncate(l);
                }
                print_json(&records)?;
            }
        },
        PerfCommand::Trend {
            id,
            signature,
            project,
            days,
            svg,
        } => {
            let (answer, title) = if signature {
                let project = project_arg(&project)?;
                let sig = Signature::parse(&id)?;
                let t = storage
                    .signature_trends(&OPERATOR, &project, &sig, Some(days))
                    .await?;
                (t, format!("{sig} — all versions"))
            } else {
                let id = ProgramId::parse(&id)?;
                let record = storage.get_record(&OPERATOR, &id).await?;
                let t = storage
                    .program_trends_of(&OPERATOR, &record, Some(days))
                    .await?;
                (
                    t,
                    format!("{} {} — program {id}", record.signature, record.version),
                )
            };
            if let Some(path) = svg {
                let subtitle = format!(
                    "last {} day(s), {} record(s)",
                    answer.window.days, answer.trends.records
                );
                std::fs::write(&path, chart::render(&title, &subtitle, &answer.trends))
                    .map_err(|e| format!("{}: {e}", path.display()))?;
                eprintln!("chart written to {}", path.display());
            }
            print_json(&answer)?;
        }
        PerfCommand::Report => print_json(&storage.report(&OPERATOR).await?)?,
    }
    Ok(())
}
