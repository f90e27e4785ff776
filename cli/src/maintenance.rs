//! `dspy-storage cleanup [--dry-run]`, `archive ID`, `restore ID`, `reindex`: the retention,
//! archive and maintenance operations of the cleanup function, run directly over the core;
//! `migrate-metrics`: metric records of the per-record layout converted into blocks;
//! `migrate-indexes`: a DynamoDB table created before the keys-only indexes moved onto them.

use clap::Subcommand;
use dspy_storage_core::access::OPERATOR;
use dspy_storage_core::domain::{parse_time, ProgramId};
use dspy_storage_core::retention::cleanup::CleanupOptions;
use dspy_storage_core::retention::{Policy, PolicyInput};

use crate::{print_json, AnyError, BackendArgs};

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Apply the retention policy: archive and delete old, unprotected versions; collect orphan
    /// blobs and expired idempotency records. Prints what was kept, archived and deleted.
    Cleanup {
        /// Only print the plan; change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Versions always kept per signature (default 5, or DSPY_STORAGE_KEEP_LATEST).
        #[arg(long)]
        keep_latest: Option<u64>,
        /// Keep versions at or above their signature's 95th percentile of score (default true).
        #[arg(long)]
        keep_high_performing: Option<bool>,
        /// Keep versions with environment or tag `production` (default true).
        #[arg(long)]
        keep_production: Option<bool>,
        /// Archive unprotected versions older than this (default 90d).
        #[arg(long)]
        archive_after: Option<String>,
        /// Delete unprotected versions older than this (default 365d).
        #[arg(long)]
        delete_after: Option<String>,
        /// Archive unprotected versions scoring below this, whatever their age.
        #[arg(long)]
        archive_below_performance: Option<f64>,
        /// Evaluate the policy at this RFC 3339 time (a future time needs --dry-run).
        #[arg(long)]
        as_of: Option<String>,
    },
    /// Move a program's blob to cold storage.
    Archive { id: String },
    /// Bring an archived program back (status `restoring` until the archive has retrieved it).
    Restore { id: String },
    /// Convert metric records written before metric blocks (one item per record) into blocks,
    /// scanning the table; resumable. Prints one JSON line per slice of 20 scan pages, whose
    /// `next` resumes it. Run it once every process writing to the store has the new build.
    MigrateMetrics {
        /// Continue from the `next` of an earlier run (its JSON object).
        #[arg(long)]
        resume: Option<String>,
        /// Stop after this many scan pages of 500 items (default: to the end of the table).
        #[arg(long)]
        max_pages: Option<usize>,
    },
    /// Move a DynamoDB table created before the keys-only indexes onto them (aws backend): adds
    /// GSI1K..GSI4K one at a time, each filled from the existing items by DynamoDB (nothing is
    /// rewritten; it waits for each), then deletes the old GSI1..GSI4. Resumable: run it again
    /// after an interruption; a no-op on a migrated table. Queries read each new index once it
    /// is ACTIVE and the old one until then. Prints the steps taken as JSON.
    MigrateIndexes {
        /// Only add the new indexes; keep the old ones (for processes of an older build still
        /// reading them). Run again without it to delete them.
        #[arg(long)]
        keep_old: bool,
    },
    /// Build the free-text index for programs stored before it existed: a resumable walk of the
    /// table (it continues where an earlier run stopped; a no-op once complete). Searches use
    /// the index once it is complete; until then they read the project's programs.
    Reindex {
        /// Walk the whole table again even when the index is complete.
        #[arg(long)]
        restart: bool,
        /// Stop after this long (e.g. `10m`); run it again to continue.
        #[arg(long)]
        time_limit: Option<String>,
    },
}

pub async fn run(command: Command, backend: &BackendArgs) -> Result<(), AnyError> {
    match command {
        Command::Cleanup {
            dry_run,
            keep_latest,
            keep_high_performing,
            keep_production,
            archive_after,
            delete_after,
            archive_below_performance,
            as_of,
        } => {
            let configured = Policy::from_env(|name| std::env::var(name).ok())?;
            let policy = PolicyInput {
                keep_latest,
                keep_high_performing,
                keep_production,
                archive_after,
                delete_after,
                archive_below_performance,
            }
            .resolve(&configured)?;
            let now = dspy_storage_core::domain::now();
            let as_of = as_of
                .map(|t| parse_time("--as-of", &t))
                .transpose()?
                .unwrap_or(now);
            if !dry_run && as_of > now + chrono::Duration::minutes(1) {
                return Err("--as-of in the future needs --dry-run".into());
            }
            let storage = backend.open().await?;
            let opts = CleanupOptions {
                as_of,
                ..CleanupOptions::new(policy, dry_run)
            };
            print_json(&storage.cleanup(&OPERATOR, &opts).await?)?;
        }
        Command::Archive { id } => {
            let id = ProgramId::parse(&id)?;
            let storage = backend.open().await?;
            print_json(&storage.archive_program(&OPERATOR, &id).await?)?;
        }
        Command::Restore { id } => {
            let id = ProgramId::parse(&id)?;
            let storage = backend.open().await?;
            print_json(&storage.restore_program(&OPERATOR, &id).await?)?;
        }
        Command::MigrateMetrics { resume, max_pages } => {
            let storage = backend.open().await?;
            let mut start = resume
                .map(|r| serde_json::from_str::<dspy_storage_core::backend::PageKey>(&r))
                .transpose()
                .map_err(|e| format!("--resume must be the `next` object of a run: {e}"))?;
            let mut pages = 0usize;
            loop {
                let slice = max_pages.map_or(20, |m| (m - pages).min(20));
                let report = storage.migrate_metrics(start, slice).await?;
                pages += slice;
                println!("{}", serde_json::to_string(&report)?);
                match report.next {
                    Some(next) if max_pages.is_none_or(|m| pages < m) => start = Some(next),
                    _ => break,
                }
            }
        }
        Command::MigrateIndexes { keep_old } => {
            let table = backend
                .aws_table()
                .ok_or("migrate-indexes needs --backend aws and --table (DSPY_STORAGE_TABLE)")?;
            let sdk = dspy_storage_core::open::AwsConfig::new();
            let store = dspy_storage_core::open::aws_table(sdk.get().await, &table);
            let steps = store.migrate_indexes(keep_old).await?;
            print_json(&serde_json::json!({
                "table": table,
                "steps": steps,
                "indexes": store.index_names().await?,
            }))?;
        }
        Command::Reindex {
            restart,
            time_limit,
        } => {
            let deadline = time_limit
                .map(|t| dspy_storage_core::config::parse_duration("--time-limit", &t))
                .transpose()?
                .map(|d| std::time::Instant::now() + d);
            let storage = backend.open().await?;
            let report = storage.reindex_text(&OPERATOR, deadline, restart).await?;
            print_json(&report)?;
        }
    }
    Ok(())
}
