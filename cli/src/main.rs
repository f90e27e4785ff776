//! `dspy-storage`: the local server and commands over the storage core.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use clap::{Args, Parser, Subcommand, ValueEnum};
use dspy_storage_core::access::OPERATOR;
use dspy_storage_core::domain::{
    format_time, AliasName, NewMetadata, ProgramId, Project, Signature, Version,
};
use dspy_storage_core::open::{AwsConfig, AwsLocation, BackendSettings, Settings};
use dspy_storage_core::storage::Storage;
use dspy_storage_functions::app;
use dspy_storage_functions::env::Env;
use serde_json::{Map, Value};

mod backup;
mod maintenance;
mod metrics;
mod out;
mod search;

#[derive(Parser, Debug)]
#[command(
    name = "dspy-storage",
    version,
    about = "Storage for optimized DSPy programs"
)]
struct Cli {
    #[command(flatten)]
    backend: BackendArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
enum BackendKind {
    /// Local files and an embedded database under --data-dir (no cloud account).
    Embedded,
    /// S3 + DynamoDB through the standard AWS configuration.
    Aws,
}

/// Where programs are kept. Every flag also reads `DSPY_STORAGE_<FLAG>`.
#[derive(Args, Debug)]
struct BackendArgs {
    #[arg(
        long,
        global = true,
        env = "DSPY_STORAGE_BACKEND",
        value_enum,
        default_value = "embedded"
    )]
    backend: BackendKind,
    /// Data directory of the embedded backend.
    #[arg(
        long,
        global = true,
        env = "DSPY_STORAGE_DATA_DIR",
        default_value = "./dspy_storage"
    )]
    data_dir: PathBuf,
    /// DynamoDB table of the aws backend.
    #[arg(long, global = true, env = "DSPY_STORAGE_TABLE")]
    table: Option<String>,
    /// S3 bucket of the aws backend.
    #[arg(long, global = true, env = "DSPY_STORAGE_BUCKET")]
    bucket: Option<String>,
    /// Create the table and bucket when missing (aws backend; for development and tests).
    #[arg(long, global = true, env = "DSPY_STORAGE_CREATE")]
    create: bool,
    /// Compression of new blobs: zstd, gzip, lz4 or none.
    #[arg(
        long,
        global = true,
        env = "DSPY_STORAGE_COMPRESSION",
        default_value = "zstd"
    )]
    compression: String,
    /// AES-256-GCM key (32 bytes, hex or base64): encrypt new blobs and read encrypted ones.
    #[arg(
        long,
        global = true,
        env = "DSPY_STORAGE_ENCRYPTION_KEY",
        hide_env_values = true
    )]
    encryption_key: Option<String>,
    /// A file of AES-256-GCM keys, one per line: the first encrypts new blobs, the others still
    /// decrypt the blobs they sealed (key rotation).
    #[arg(long, global = true, env = "DSPY_STORAGE_ENCRYPTION_KEY_FILE")]
    encryption_key_file: Option<PathBuf>,
    /// Envelope encryption with data keys from this AWS KMS key (id, ARN or alias/…).
    #[arg(long, global = true, env = "DSPY_STORAGE_KMS_KEY_ID")]
    kms_key_id: Option<String>,
    /// How long a KMS data key is reused for new blobs (e.g. `5m`, the default).
    #[arg(long, global = true, env = "DSPY_STORAGE_KMS_DATA_KEY_TTL")]
    kms_data_key_ttl: Option<String>,
    /// Publish change events (ProgramStored, AliasMoved, …) to this EventBridge bus.
    #[arg(long, global = true, env = "DSPY_STORAGE_EVENT_BUS")]
    event_bus: Option<String>,
    /// Append change events as JSON lines to this file (when no bus is given).
    #[arg(long, global = true, env = "DSPY_STORAGE_EVENTS_FILE")]
    events_file: Option<PathBuf>,
    /// The file holding the secret cursors are signed with (default with the embedded backend:
    /// `<data-dir>/cursor-secret`, created with mode 0600 when missing).
    #[arg(long, global = true, env = "DSPY_STORAGE_CURSOR_SECRET_FILE")]
    cursor_secret_file: Option<PathBuf>,
    /// A Secrets Manager secret (ARN or name) holding the cursor secret, as the Lambda functions
    /// read it (wins over --cursor-secret-file).
    #[arg(long, global = true, env = "DSPY_STORAGE_CURSOR_SECRET_ARN")]
    cursor_secret_arn: Option<String>,
    /// S3 storage class of archived blobs (aws backend): GLACIER or DEEP_ARCHIVE.
    #[arg(
        long,
        global = true,
        env = "DSPY_STORAGE_ARCHIVE_CLASS",
        default_value = "GLACIER"
    )]
    archive_class: String,
    /// The process's one AWS configuration, loaded when an AWS client is first needed.
    #[arg(skip)]
    aws: AwsConfig,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the HTTP API locally (every route of every function).
    Serve {
        #[arg(long, env = "DSPY_STORAGE_ADDR", default_value = "127.0.0.1:8080")]
        addr: SocketAddr,
        /// Largest request body in bytes.
        #[arg(long, env = "DSPY_STORAGE_MAX_BODY_BYTES", default_value_t = dspy_storage_core::config::DEFAULT_MAX_BODY_BYTES)]
        max_body_bytes: usize,
        /// Turn access control on: a TOML file of `[[token]]` tables (`sha256` of the bearer
        /// token, `projects`, `role`). Without it every caller may do everything.
        #[arg(long, env = "DSPY_STORAGE_AUTH_FILE")]
        auth_file: Option<PathBuf>,
    },
    /// Store a program from a JSON file.
    Store {
        file: PathBuf,
        #[arg(long, env = "DSPY_STORAGE_SIGNATURE")]
        signature: String,
        #[arg(long, env = "DSPY_STORAGE_VERSION")]
        version: Option<String>,
        #[arg(long, env = "DSPY_STORAGE_PROJECT")]
        project: Option<String>,
        /// Extra metadata `key=value` (value parsed as JSON when it is JSON, else a string).
        #[arg(long = "meta", value_name = "KEY=VALUE")]
        meta: Vec<String>,
    },
    /// List a signature's versions (with their aliases).
    Versions {
        signature: String,
        #[arg(long, env = "DSPY_STORAGE_PROJECT")]
        project: Option<String>,
    },
    /// Manage aliases (production, staging, …).
    Alias {
        #[command(subcommand)]
        action: AliasAction,
    },
    /// Roll back: a new version whose program is identical to an earlier one.
    Rollback {
        signature: String,
        #[arg(long = "to")]
        to: String,
        #[arg(long, env = "DSPY_STORAGE_PROJECT")]
        project: Option<String>,
    },
    /// Load a program by id and print (or write) its JSON.
    Load {
        id: String,
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
    /// Diff two versions of a signature (each a semver or `latest`): per predictor for DSPy
    /// programs, as JSON-pointer changes otherwise.
    Diff {
        signature: String,
        from: String,
        to: String,
        #[arg(long, env = "DSPY_STORAGE_PROJECT")]
        project: Option<String>,
    },
    /// Search with the query language of `GET /search` (`signature:S performance>=0.8 tag:prod words`).
    Search(search::SearchArgs),
    /// Print a program's metadata record as JSON, or with --prompt its prompts as Markdown.
    Show {
        id: String,
        /// Render each predictor's instructions, fields and demos as Markdown.
        #[arg(long)]
        prompt: bool,
    },
    #[command(flatten)]
    Maintenance(maintenance::Command),
    #[command(flatten)]
    Perf(metrics::PerfCommand),
    /// Backups: create, list, show, restore.
    Backup {
        #[command(subcommand)]
        action: backup::BackupAction,
    },
    /// Write the whole store to one file (the backup format), e.g. to move it to another backend.
    Export(backup::ExportArgs),
    /// Restore a file written by `export` into the store.
    Import(backup::ImportArgs),
    /// Rotate the cursor secret file: a new secret signs cursors from now on, the previous one
    /// still opens cursors for 24 hours (servers pick the new secret up when they restart).
    RotateCursorSecret,
}

#[derive(Subcommand, Debug)]
enum AliasAction {
    /// Point an alias at a version (`--expect` makes it a compare-and-set).
    Set {
        signature: String,
        alias: String,
        version: String,
        #[arg(long)]
        expect: Option<String>,
        /// Move it although its policy's gate fails, recording this reason (the CLI is admin).
        #[arg(long = "override", value_name = "REASON")]
        override_reason: Option<String>,
        #[arg(long, env = "DSPY_STORAGE_PROJECT")]
        project: Option<String>,
    },
    /// An alias's promotion policy: protected, evaluation gate.
    Policy {
        #[command(subcommand)]
        action: PolicyAction,
    },
    /// An alias's history (moves, removals, refusals, overrides), newest first, as JSON lines.
    History {
        signature: String,
        alias: String,
        /// At most this many entries (default: all).
        #[arg(long)]
        limit: Option<usize>,
        #[arg(long, env = "DSPY_STORAGE_PROJECT")]
        project: Option<String>,
    },
    /// Print the version and id an alias points at.
    Get {
        signature: String,
        alias: String,
        #[arg(long, env = "DSPY_STORAGE_PROJECT")]
        project: Option<String>,
    },
    /// Remove an alias.
    Rm {
        signature: String,
        alias: String,
        #[arg(long, env = "DSPY_STORAGE_PROJECT")]
        project: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
enum PolicyAction {
    /// Set an alias's policy (every flag optional; `--json` gives the whole body instead).
    Set {
        signature: String,
        alias: String,
        /// Moving or removing the alias needs the admin role.
        #[arg(long)]
        protected: bool,
        /// The metric the gate judges (a gate needs it).
        #[arg(long)]
        metric: Option<String>,
        /// The mean of the target's records must be at least this.
        #[arg(long, allow_hyphen_values = true)]
        min: Option<f64>,
        /// At least this many records (default 1 with a gate).
        #[arg(long, allow_hyphen_values = true)]
        min_records: Option<i64>,
        /// Only records measured within this duration back from now (7d, 12h).
        #[arg(long)]
        window: Option<String>,
        /// Only records whose environment has KEY=VALUE (repeatable).
        #[arg(long = "env", value_name = "KEY=VALUE")]
        env: Vec<String>,
        /// The mean must be at least the current target's mean minus --tolerance.
        #[arg(long)]
        not_worse_than_current: bool,
        #[arg(long, allow_hyphen_values = true)]
        tolerance: Option<f64>,
        /// The policy as JSON (`{"protected": true, "require": {...}}`), instead of the flags.
        #[arg(long, conflicts_with_all = ["protected", "metric", "min", "min_records", "window", "env", "not_worse_than_current", "tolerance"])]
        json: Option<String>,
        #[arg(long, env = "DSPY_STORAGE_PROJECT")]
        project: Option<String>,
    },
    /// Print an alias's policy.
    Get {
        signature: String,
        alias: String,
        #[arg(long, env = "DSPY_STORAGE_PROJECT")]
        project: Option<String>,
    },
    /// Remove an alias's policy.
    Rm {
        signature: String,
        alias: String,
        #[arg(long, env = "DSPY_STORAGE_PROJECT")]
        project: Option<String>,
    },
}

/// The body of `alias policy set` from its flags.
#[allow(clippy::too_many_arguments)]
fn policy_body(
    protected: bool,
    metric: Option<String>,
    min: Option<f64>,
    min_records: Option<i64>,
    window: Option<String>,
    env: Vec<String>,
    not_worse_than_current: bool,
    tolerance: Option<f64>,
) -> Result<serde_json::Value, AnyError> {
    let mut body = serde_json::json!({ "protected": protected });
    let gate = metric.is_some()
        || min.is_some()
        || min_records.is_some()
        || window.is_some()
        || !env.is_empty()
        || not_worse_than_current
        || tolerance.is_some();
    if gate {
        let mut req = serde_json::Map::new();
        if let Some(m) = metric {
            req.insert("metric".into(), m.into());
        }
        if let Some(m) = min {
            req.insert("min".into(), m.into());
        }
        if let Some(n) = min_records {
            req.insert("min_records".into(), n.into());
        }
        if let Some(w) = window {
            req.insert("window".into(), w.into());
        }
        if !env.is_empty() {
            let mut e = serde_json::Map::new();
            for kv in env {
                let (k, v) = kv
                    .split_once('=')
                    .ok_or_else(|| format!("--env {kv:?}: expected KEY=VALUE"))?;
                e.insert(k.to_owned(), v.into());
            }
            req.insert("environment".into(), e.into());
        }
        if not_worse_than_current {
            req.insert("not_worse_than_current".into(), true.into());
        }
        if let Some(t) = tolerance {
            req.insert("tolerance".into(), t.into());
        }
        body["require"] = req.into();
    }
    Ok(body)
}

pub(crate) fn project_arg(p: &Option<String>) -> Result<Project, AnyError> {
    Ok(match p {
        Some(p) => Project::parse(p)?,
        None => Project::default_project(),
    })
}

pub(crate) fn print_json(v: &impl serde::Serialize) -> Result<(), AnyError> {
    out::line(&serde_json::to_string_pretty(v)?);
    Ok(())
}

pub(crate) type AnyError = Box<dyn std::error::Error + Send + Sync>;

impl BackendArgs {
    /// The flags as the one [`Settings`] every entry point opens a store from.
    fn settings(&self) -> Result<Settings, AnyError> {
        let backend = match self.backend {
            BackendKind::Embedded => BackendSettings::Embedded {
                data_dir: self.data_dir.clone(),
            },
            BackendKind::Aws => BackendSettings::Aws {
                location: AwsLocation {
                    table: self
                        .table
                        .clone()
                        .ok_or("--table (DSPY_STORAGE_TABLE) is required with --backend aws")?,
                    bucket: self
                        .bucket
                        .clone()
                        .ok_or("--bucket (DSPY_STORAGE_BUCKET) is required with --backend aws")?,
                },
                create: self.create,
            },
        };
        Ok(Settings {
            compression: Some(self.compression.clone()),
            encryption_key: self.encryption_key.clone(),
            encryption_key_file: self.encryption_key_file.clone(),
            archive_class: Some(self.archive_class.clone()),
            kms_key_id: self.kms_key_id.clone(),
            kms_data_key_ttl: self.kms_data_key_ttl.clone(),
            event_bus: self.event_bus.clone(),
            events_file: self.events_file.clone(),
            cursor_secret_arn: self.cursor_secret_arn.clone(),
            cursor_secret_file: self.cursor_secret_file.clone(),
            ..Settings::new(backend)
        })
    }

    /// The DynamoDB table named, with the aws backend.
    fn aws_table(&self) -> Option<String> {
        match self.backend {
            BackendKind::Aws => self.table.clone(),
            BackendKind::Embedded => None,
        }
    }

    /// Where the store is, for the line `serve` prints when it starts.
    fn describe(&self) -> String {
        match self.backend {
            BackendKind::Embedded => {
                let dir = std::path::absolute(&self.data_dir).unwrap_or(self.data_dir.clone());
                format!("backend: embedded, data in {}", dir.display())
            }
            BackendKind::Aws => {
                let endpoint = std::env::var("AWS_ENDPOINT_URL")
                    .map(|e| format!(" at {e}"))
                    .unwrap_or_default();
                format!(
                    "backend: aws{endpoint}, table {}, bucket {}",
                    self.table.as_deref().unwrap_or("?"),
                    self.bucket.as_deref().unwrap_or("?")
                )
            }
        }
    }

    async fn open(&self) -> Result<Storage, AnyError> {
        Ok(self.settings()?.open(&self.aws).await?)
    }
}

/// `KEY=VALUE` pairs (a value that parses as JSON is kept as JSON, else as a string); `what`
/// names the flag in the error.
pub(crate) fn key_values(list: &[String], what: &str) -> Result<Map<String, Value>, AnyError> {
    let mut map = Map::new();
    for p in list {
        let (k, v) = p
            .split_once('=')
            .ok_or_else(|| format!("{what} {p:?} is not KEY=VALUE"))?;
        map.insert(
            k.to_owned(),
            serde_json::from_str(v).unwrap_or_else(|_| Value::String(v.to_owned())),
        );
    }
    Ok(map)
}

async fn run(cli: Cli) -> Result<(), AnyError> {
    match cli.command {
        Command::Serve {
            addr,
            max_body_bytes,
            auth_file,
        } => {
            let access = match &auth_file {
                Some(path) => {
                    let table = dspy_storage_functions::auth::TokenTable::load(path)?;
                    tracing::info!(tokens = table.len(), file = %path.display(), "access control is on");
                    dspy_storage_functions::auth::AccessControl::Tokens(Arc::new(table))
                }
                None => {
                    tracing::warn!(
                        "ACCESS CONTROL IS OFF: this server trusts every caller with every project; keep it on localhost, or start it with --auth-file FILE"
                    );
                    eprintln!("WARNING: access control is OFF (no --auth-file): every caller may read, write and delete everything");
                    dspy_storage_functions::auth::AccessControl::Off
                }
            };
            let env = Env::around(cli.backend.settings()?, |name| std::env::var(name).ok())?;
            let mut state = env.state(&cli.backend.aws).await?.with_access(access);
            tracing::info!(backend = %state.storage.health().backend, "storage opened");
            state.max_body_bytes = max_body_bytes;
            let listener = tokio::net::TcpListener::bind(addr).await?;
            eprintln!(
                "dspy-storage listening on http://{}",
                listener.local_addr()?
            );
            eprintln!("  {}", cli.backend.describe());
            let sign_in = !state.access.is_off();
            eprintln!("  dashboard: http://{}/ui/", listener.local_addr()?);
            let router = dspy_storage_ui::router(app(state.clone()), sign_in).merge(app(state));
            axum::serve(listener, router)
                .with_graceful_shutdown(async {
                    let _ = tokio::signal::ctrl_c().await;
                })
                .await?;
        }
        Command::Store {
            file,
            signature,
            version,
            project,
            meta,
        } => {
            let text =
                std::fs::read_to_string(&file).map_err(|e| format!("{}: {e}", file.display()))?;
            let program = serde_json::value::RawValue::from_string(text)
                .map_err(|e| format!("{} is not valid JSON: {e}", file.display()))?;
            let mut map = key_values(&meta, "--meta")?;
            map.insert("signature".into(), Value::String(signature));
            if let Some(v) = version {
                map.insert("version".into(), Value::String(v));
            }
            if let Some(p) = project {
                map.insert("project".into(), Value::String(p));
            }
            let metadata = NewMetadata::parse(Value::Object(map), chrono::Utc::now())?;
            let storage = cli.backend.open().await?;
            let outcome = storage.store(&OPERATOR, &program, metadata, None).await?;
            print_json(&outcome.stored)?;
        }
        Command::Versions { signature, project } => {
            let (sig, project) = (Signature::parse(&signature)?, project_arg(&project)?);
            let storage = cli.backend.open().await?;
            let mut cursor: Option<String> = None;
            let mut rows = Vec::new();
            loop {
                let page = storage
                    .list_versions(&OPERATOR, &project, &sig, Some(1000), cursor.as_deref())
                    .await?;
                for c in &page.items {
                    let aliases = page
                        .aliases
                        .get(&c.version.to_string())
                        .cloned()
                        .unwrap_or_default();
                    rows.push(serde_json::json!({
                        "version": c.version, "id": c.id, "created_at": format_time(&c.created_at),
                        "performance": c.performance, "size": c.size, "aliases": aliases,
                    }));
                }
                match page.next_cursor {
                    Some(c) => cursor = Some(c),
                    None => break,
                }
            }
            print_json(&rows)?;
        }
        Command::Alias { action } => {
            let storage = cli.backend.open().await?;
            match action {
                AliasAction::Set {
                    signature,
                    alias,
                    version,
                    expect,
                    override_reason,
                    project,
                } => {
                    let (sig, project) = (Signature::parse(&signature)?, project_arg(&project)?);
                    let expected = expect.map(|v| Version::parse(&v)).transpose()?.map(Some);
                    let override_reason = override_reason
                        .map(|r| {
                            dspy_storage_core::model::policy::parse_override(
                                &serde_json::json!({ "reason": r }),
                            )
                        })
                        .transpose()?;
                    let moved = storage
                        .move_alias(
                            &OPERATOR,
                            &project,
                            &sig,
                            &AliasName::parse(&alias)?,
                            &Version::parse(&version)?,
                            expected,
                            override_reason,
                        )
                        .await?;
                    let mut out = serde_json::to_value(&moved.target)?;
                    if let Some(entry) = moved.entry {
                        out["history"] = serde_json::to_value(entry)?;
                    }
                    print_json(&out)?;
                }
                AliasAction::Policy { action } => match action {
                    PolicyAction::Set {
                        signature,
                        alias,
                        protected,
                        metric,
                        min,
                        min_records,
                        window,
                        env,
                        not_worse_than_current,
                        tolerance,
                        json,
                        project,
                    } => {
                        let (sig, project) =
                            (Signature::parse(&signature)?, project_arg(&project)?);
                        let body = match json {
                            Some(text) => serde_json::from_str(&text)
                                .map_err(|e| format!("--json is not JSON: {e}"))?,
                            None => policy_body(
                                protected,
                                metric,
                                min,
                                min_records,
                                window,
                                env,
                                not_worse_than_current,
                                tolerance,
                            )?,
                        };
                        let policy = dspy_storage_core::model::policy::parse_policy(&body)?;
                        let record = storage
                            .set_alias_policy(
                                &OPERATOR,
                                &project,
                                &sig,
                                &AliasName::parse(&alias)?,
                                policy,
                            )
                            .await?;
                        print_json(&record)?;
                    }
                    PolicyAction::Get {
                        signature,
                        alias,
                        project,
                    } => {
                        let (sig, project) =
                            (Signature::parse(&signature)?, project_arg(&project)?);
                        let record = storage
                            .get_alias_policy(&OPERATOR, &project, &sig, &AliasName::parse(&alias)?)
                            .await?;
                        print_json(&record)?;
                    }
                    PolicyAction::Rm {
                        signature,
                        alias,
                        project,
                    } => {
                        let (sig, project) =
                            (Signature::parse(&signature)?, project_arg(&project)?);
                        storage
                            .delete_alias_policy(
                                &OPERATOR,
                                &project,
                                &sig,
                                &AliasName::parse(&alias)?,
                            )
                            .await?;
                        eprintln!("policy of alias {alias} removed");
                    }
                },
                AliasAction::History {
                    signature,
                    alias,
                    limit,
                    project,
                } => {
                    let (sig, project) = (Signature::parse(&signature)?, project_arg(&project)?);
                    let alias = AliasName::parse(&alias)?;
                    let mut cursor: Option<String> = None;
                    let mut printed = 0usize;
                    'pages: loop {
                        let page = storage
                            .alias_history(
                                &OPERATOR,
                                &project,
                                &sig,
                                &alias,
                                Some(1000),
                                cursor.as_deref(),
                            )
                            .await?;
                        for entry in &page.items {
                            if limit.is_some_and(|l| printed >= l) {
                                break 'pages;
                            }
                            out::line(&serde_json::to_string(entry)?);
                            printed += 1;
                        }
                        match page.next_cursor {
                            Some(c) => cursor = Some(c),
                            None => break,
                        }
                    }
                }
                AliasAction::Get {
                    signature,
                    alias,
                    project,
                } => {
                    let (sig, project) = (Signature::parse(&signature)?, project_arg(&project)?);
                    let head = storage.get_head(&OPERATOR, &project, &sig).await?;
                    let target = head
                        .aliases
                        .get(AliasName::parse(&alias)?.as_str())
                        .ok_or_else(|| format!("signature {sig} has no alias {alias}"))?;
                    print_json(target)?;
                }
                AliasAction::Rm {
                    signature,
                    alias,
                    project,
                } => {
                    let (sig, project) = (Signature::parse(&signature)?, project_arg(&project)?);
                    storage
                        .delete_alias(&OPERATOR, &project, &sig, &AliasName::parse(&alias)?)
                        .await?;
                    eprintln!("alias {alias} removed");
                }
            }
        }
        Command::Rollback {
            signature,
            to,
            project,
        } => {
            let (sig, project) = (Signature::parse(&signature)?, project_arg(&project)?);
            let storage = cli.backend.open().await?;
            let stored = storage
                .rollback(&OPERATOR, &project, &sig, &Version::parse(&to)?)
                .await?;
            print_json(&stored)?;
        }
        Command::Load { id, output } => {
            let id = ProgramId::parse(&id)?;
            let storage = cli.backend.open().await?;
            let loaded = storage.get_program(&OPERATOR, &id).await?;
            match output {
                Some(path) => std::fs::write(&path, loaded.program.get())
                    .map_err(|e| format!("{}: {e}", path.display()))?,
                None => out::line(loaded.program.get()),
            }
        }
        Command::Diff {
            signature,
            from,
            to,
            project,
        } => {
            let (sig, project) = (Signature::parse(&signature)?, project_arg(&project)?);
            let from = dspy_storage_core::domain::VersionSelector::parse(&from)?;
            let to = dspy_storage_core::domain::VersionSelector::parse(&to)?;
            let storage = cli.backend.open().await?;
            print_json(
                &storage
                    .diff_versions(&OPERATOR, &project, &sig, &from, &to)
                    .await?,
            )?;
        }
        Command::Search(args) => {
            let project = args.project.as_deref().map(Project::parse).transpose()?;
            let storage = cli.backend.open().await?;
            search::run(&storage, args, project).await?;
        }
        Command::Show { id, prompt } => {
            let id = ProgramId::parse(&id)?;
            let storage = cli.backend.open().await?;
            if prompt {
                out::line(&storage.prompt(&OPERATOR, &id).await?);
            } else {
                print_json(&storage.get_record(&OPERATOR, &id).await?)?;
            }
        }
        Command::Maintenance(command) => maintenance::run(command, &cli.backend).await?,
        Command::Perf(cmd) => metrics::run(cmd, &cli.backend.open().await?).await?,
        Command::Backup { action } => {
            backup::run(cli.backend.open().await?, &cli.backend.aws, action).await?
        }
        Command::Export(args) => backup::export(cli.backend.open().await?, args).await?,
        Command::Import(args) => backup::import(cli.backend.open().await?, args).await?,
        Command::RotateCursorSecret => {
            if cli.backend.cursor_secret_arn.is_some() {
                return Err("the cursor secret is a Secrets Manager secret: rotate it there (aws secretsmanager put-secret-value or rotate-secret); AWSPREVIOUS stays valid for 24 hours".into());
            }
            let path = cli.backend.settings()?.cursor_secret_path().ok_or(
                "no cursor secret file: give --cursor-secret-file (the aws backend has none by default)",
            )?;
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            }
            dspy_storage_core::paging::CursorKeys::load_or_create(&path)?;
            dspy_storage_core::paging::CursorKeys::rotate_file(&path)?;
            eprintln!(
                "rotated {}: servers sign with the new secret once they restart; cursors signed with the previous one work for 24 hours",
                path.display()
            );
        }
    }
    Ok(())
}

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    if let Err(e) = run(Cli::parse()).await {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
    out::flush();
}
