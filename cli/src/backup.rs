//! `dspy-storage backup create|list|show|restore`, `export FILE`, `import FILE`: the backup engine
//! of the core with progress bars. `export` writes a backup (the same format) into one tar file,
//! `import` restores such a file, so a laptop store (embedded) moves to AWS and back.

use dspy_storage_core::access::OPERATOR;
use dspy_storage_core::open::AwsConfig;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Subcommand};
use dspy_storage_core::backup::{
    self, BackupLocation, BackupOptions, BackupRun, Progress, ProgressFn, RestoreOptions,
};
use dspy_storage_core::storage::Storage;
use indicatif::{ProgressBar, ProgressStyle};

use crate::AnyError;

/// Where backups are kept.
#[derive(Args, Debug, Clone)]
pub struct BackupPlace {
    /// S3 bucket of the backups (aws backend; default: the program bucket, under `backups/`).
    #[arg(long, global = true, env = "DSPY_STORAGE_BACKUP_BUCKET")]
    backup_bucket: Option<String>,
}

#[derive(Subcommand, Debug)]
pub enum BackupAction {
    /// Back up the store (or resume an unfinished backup).
    Create {
        /// Name of the backup (default `backup-<UTC time>`).
        #[arg(long)]
        name: Option<String>,
        /// Complete backups kept; older ones (and blobs only they hold) are removed.
        #[arg(long, env = "DSPY_STORAGE_BACKUP_RETAIN", default_value_t = backup::DEFAULT_RETAIN)]
        retain: usize,
        #[command(flatten)]
        place: BackupPlace,
    },
    /// List backups, newest first.
    List {
        #[command(flatten)]
        place: BackupPlace,
    },
    /// Print a backup's manifest.
    Show {
        name: String,
        #[command(flatten)]
        place: BackupPlace,
    },
    /// Restore a backup into the store (empty, or merging into a live one).
    Restore {
        name: String,
        /// Restore even a manifest whose format version this build does not know.
        #[arg(long)]
        no_verify_compatibility: bool,
        #[command(flatten)]
        place: BackupPlace,
    },
}

#[derive(Args, Debug)]
pub struct ExportArgs {
    /// The file to write (a tar archive of one backup).
    pub file: PathBuf,
}

#[derive(Args, Debug)]
pub struct ImportArgs {
    /// A file written by `export`.
    pub file: PathBuf,
    /// Import even a backup whose format version this build does not know.
    #[arg(long)]
    pub no_verify_compatibility: bool,
}

async fn location(storage: &Storage, aws: &AwsConfig, place: &BackupPlace) -> BackupLocation {
    match &place.backup_bucket {
        Some(bucket) if !bucket.trim().is_empty() => {
            BackupLocation::s3_bucket(aws.get().await, bucket.trim())
        }
        _ => BackupLocation::new(storage.blobs().clone()),
    }
}

/// A progress bar fed by the engine's progress callback (a counter while the total is unknown).
fn bar(what: &str) -> (ProgressBar, ProgressFn) {
    let pb = ProgressBar::new_spinner();
    pb.set_style(
        ProgressStyle::with_template("{spinner} {prefix} {msg}: {pos} records [{elapsed}]")
            .expect("template"),
    );
    pb.set_prefix(what.to_owned());
    pb.enable_steady_tick(Duration::from_millis(120));
    let bar = pb.clone();
    let with_total = ProgressStyle::with_template(
        "{prefix} {msg:>8} [{bar:40}] {pos}/{len} records ({per_sec}, eta {eta})",
    )
    .expect("template")
    .progress_chars("=> ");
    let styled = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let f: ProgressFn = Arc::new(move |p: Progress| {
        if let Some(total) = p.total {
            if !styled.swap(true, std::sync::atomic::Ordering::Relaxed) {
                bar.set_style(with_total.clone());
            }
            bar.set_length(total);
        }
        bar.set_message(p.phase);
        bar.set_position(p.done);
    });
    (pb, f)
}

async fn run_create(
    storage: &Storage,
    loc: &BackupLocation,
    mut options: BackupOptions,
) -> Result<backup::Manifest, AnyError> {
    let (pb, progress) = bar("backup");
    options.progress = Some(progress);
    let result = backup::create_backup(&OPERATOR, storage, loc, &options).await;
    pb.finish_and_clear();
    match result? {
        BackupRun::Finished(m) => Ok(*m),
        BackupRun::Suspended { name, .. } => {
            Err(format!("backup {name} stopped before it finished; run it again to resume").into())
        }
    }
}

async fn run_restore(
    storage: &Storage,
    loc: &BackupLocation,
    name: &str,
    verify_compatibility: bool,
) -> Result<backup::RestoreReport, AnyError> {
    let (pb, progress) = bar("restore");
    let options = RestoreOptions {
        verify_compatibility,
        progress: Some(progress),
    };
    let result = backup::restore(&OPERATOR, storage, loc, name, &options).await;
    pb.finish_and_clear();
    Ok(result?)
}

pub async fn run(storage: Storage, aws: &AwsConfig, action: BackupAction) -> Result<(), AnyError> {
    match action {
        BackupAction::Create {
            name,
            retain,
            place,
        } => {
            let loc = location(&storage, aws, &place).await;
            let options = BackupOptions {
                name,
                retain: Some(retain.max(1)),
                ..Default::default()
            };
            let m = run_create(&storage, &loc, options).await?;
            crate::print_json(&serde_json::json!({
                "backup_id": m.backup_id, "backup_name": m.name, "size": m.size,
                "programs_count": m.counts.programs, "metrics_count": m.counts.metrics,
                "counts": m.counts, "skipped": m.skipped,
                "duration_s": (m.finished_at - m.created_at).num_milliseconds() as f64 / 1000.0,
            }))
        }
        BackupAction::List { place } => {
            let loc = location(&storage, aws, &place).await;
            crate::print_json(&backup::list_backups(&OPERATOR, &loc).await?)
        }
        BackupAction::Show { name, place } => {
            let loc = location(&storage, aws, &place).await;
            crate::print_json(&backup::get_manifest(&OPERATOR, &loc, &name).await?)
        }
        BackupAction::Restore {
            name,
            no_verify_compatibility,
            place,
        } => {
            let loc = location(&storage, aws, &place).await;
            let report = run_restore(&storage, &loc, &name, !no_verify_compatibility).await?;
            crate::print_json(&report)
        }
    }
}

/// The name of the backup inside an export file.
const EXPORT_NAME: &str = "export";

fn temp_dir_near(file: &Path) -> Result<tempfile::TempDir, AnyError> {
    let dir = file
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    Ok(tempfile::Builder::new()
        .prefix(".dspy-storage-")
        .tempdir_in(dir)?)
}

/// `export FILE`: a backup of the whole store into one tar file (written atomically).
pub async fn export(storage: Storage, args: ExportArgs) -> Result<(), AnyError> {
    let work = temp_dir_near(&args.file)?;
    let loc = BackupLocation::directory(work.path())?;
    let options = BackupOptions {
        name: Some(EXPORT_NAME.into()),
        retain: None,
        record_status: false,
        ..Default::default()
    };
    let m = run_create(&storage, &loc, options).await?;
    let file = args.file.clone();
    let root = work.path().to_owned();
    tokio::task::spawn_blocking(move || -> Result<(), AnyError> {
        let tmp = file.with_extension("partial");
        let out = std::fs::File::create(&tmp).map_err(|e| format!("{}: {e}", tmp.display()))?;
        let mut tar = tar::Builder::new(std::io::BufWriter::new(out));
        tar.follow_symlinks(false);
        for top in ["backups", "backup-blobs"] {
            if root.join(top).exists() {
                tar.append_dir_all(top, root.join(top))?;
            }
        }
        let out = tar.into_inner()?;
        out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
        std::fs::rename(&tmp, &file)?;
        Ok(())
    })
    .await??;
    let bytes = std::fs::metadata(&args.file)?.len();
    crate::print_json(&serde_json::json!({
        "file": args.file, "bytes": bytes, "programs_count": m.counts.programs,
        "metrics_count": m.counts.metrics, "counts": m.counts, "skipped": m.skipped,
    }))
}

/// `import FILE`: restores a file written by `export` (verified before anything is written).
pub async fn import(storage: Storage, args: ImportArgs) -> Result<(), AnyError> {
    let work = temp_dir_near(&args.file)?;
    let (file, root) = (args.file.clone(), work.path().to_owned());
    tokio::task::spawn_blocking(move || -> Result<(), AnyError> {
        let f = std::fs::File::open(&file).map_err(|e| format!("{}: {e}", file.display()))?;
        let mut archive = tar::Archive::new(std::io::BufReader::new(f));
        // `unpack` refuses entries that would leave the directory.
        archive
            .unpack(&root)
            .map_err(|e| format!("{} is not an export file: {e}", file.display()))?;
        Ok(())
    })
    .await??;
    let loc = BackupLocation::directory(work.path())?;
    let complete: Vec<_> = backup::list_backups(&OPERATOR, &loc)
        .await?
        .into_iter()
        .filter(|e| e.status == "complete")
        .collect();
    let [entry] = complete.as_slice() else {
        return Err(format!(
            "{} holds {} complete backups; an export holds exactly one",
            args.file.display(),
            complete.len()
        )
        .into());
    };
    let report = run_restore(
        &storage,
        &loc,
        &entry.backup_name,
        !args.no_verify_compatibility,
    )
    .await?;
    crate::print_json(&report)
}
