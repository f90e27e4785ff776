//! `dspy-storage-bench`: how fast, how cheap and how it scales, side by side with MLflow.
//!
//!     cargo run -p dspy-storage-bench -- --quick            # < 5 min smoke (CI), prints the table
//!     cargo run --profile perf -p dspy-storage-bench        # full run, writes bench/RESULTS.md
//!
//! Prints figures, asserts no times. The AWS backend runs when a local AWS is configured
//! (`eval "$(bash scripts/local-aws.sh env)"`). See README "Benchmarks".

mod cases;
mod dashboard;
mod data;
mod env;
mod mlflow;
mod procs;
mod report;
mod stats;

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Instant;

use clap::Parser;
use serde_json::json;

use cases::{CaseResult, Plan};
use env::{Backend, BackendEnv, Mode};
use report::Row;
use stats::{num, Spread};

pub type BenchError = Box<dyn std::error::Error + Send + Sync>;
pub type BenchResult<T> = Result<T, BenchError>;

#[derive(Parser, Debug)]
#[command(
    name = "dspy-storage-bench",
    about = "Benchmarks of dspy-storage, side by side with MLflow"
)]
struct Args {
    /// Small sizes, a few repeats: under 5 minutes (CI smoke). MLflow only if its venv exists.
    #[arg(long)]
    quick: bool,
    /// Run MLflow (installing its venv when missing) even in --quick.
    #[arg(long, conflicts_with = "no_mlflow")]
    mlflow: bool,
    /// Never run MLflow.
    #[arg(long)]
    no_mlflow: bool,
    /// MLflow artifact store: file, s3 (LocalStack's S3 at AWS_ENDPOINT_URL, which must be set),
    /// or auto: file for the embedded rows' ratios and, when the AWS backend runs, a second
    /// MLflow run on s3 for the AWS rows' ratios.
    #[arg(long, default_value = "auto")]
    mlflow_artifacts: String,
    /// Backends: embedded, aws (aws needs a local AWS endpoint; skipped without one).
    #[arg(long, value_delimiter = ',', default_value = "embedded,aws")]
    backends: Vec<String>,
    /// Programs seeded before the cases run (default 100 quick, 500 full).
    #[arg(long)]
    programs: Option<usize>,
    /// Operations per repeat of a case (default 30 quick, 200 full).
    #[arg(long)]
    iters: Option<usize>,
    /// Repeats of each measurement (default 3 quick, 5 full).
    #[arg(long)]
    repeats: Option<usize>,
    /// Concurrent clients of the throughput runs (default 4 quick, 8 full).
    #[arg(long)]
    concurrency: Option<usize>,
    /// Scaling sizes, programs or records (default 100,1000 quick; 100,10000,100000 full).
    #[arg(long, value_delimiter = ',')]
    scale: Option<Vec<usize>>,
    /// Largest scaling size on the AWS backend (seeding DynamoDB Local is slow).
    #[arg(long)]
    aws_scale_max: Option<usize>,
    /// Program counts of the backup/restore peak-RSS runs (default 1000 quick; 1000,10000 full).
    #[arg(long, value_delimiter = ',')]
    backup_sizes: Option<Vec<usize>>,
    /// Only cases whose name contains this text.
    #[arg(long)]
    only: Option<String>,
    /// Skip the scaling section.
    #[arg(long)]
    skip_scale: bool,
    /// Skip the dashboard section (page render times at scale, embedded).
    #[arg(long)]
    skip_dashboard: bool,
    /// Skip the process section (Lambda binaries, server and backup peak RSS).
    #[arg(long)]
    skip_procs: bool,
    /// Write the report here (default: bench/RESULTS.md in the full mode, nowhere in --quick).
    #[arg(long)]
    out: Option<std::path::PathBuf>,
}

struct Settings {
    programs: usize,
    signatures: usize,
    plan: Plan,
    scale: Vec<usize>,
    aws_scale_max: usize,
    backup_sizes: Vec<usize>,
    rss_programs: usize,
    lambda_repeats: usize,
}

impl Settings {
    fn from(a: &Args) -> Settings {
        let q = a.quick;
        Settings {
            programs: a.programs.unwrap_or(if q { 100 } else { 500 }).max(2),
            signatures: 20,
            plan: Plan {
                iters: a.iters.unwrap_or(if q { 30 } else { 200 }),
                repeats: a.repeats.unwrap_or(if q { 3 } else { 5 }).max(1),
                concurrency: a.concurrency.unwrap_or(if q { 4 } else { 8 }).max(1),
            },
            scale: a.scale.clone().unwrap_or(if q {
                vec![100, 1000]
            } else {
                vec![100, 10_000, 100_000]
            }),
            aws_scale_max: a.aws_scale_max.unwrap_or(if q { 100 } else { 10_000 }),
            backup_sizes: a.backup_sizes.clone().unwrap_or(if q {
                vec![1000]
            } else {
                vec![1000, 10_000]
            }),
            rss_programs: if q { 200 } else { 1000 },
            lambda_repeats: if q { 3 } else { 5 },
        }
    }

    fn describe(&self) -> String {
        format!(
            "{} programs (~8 KB DSPy state files) over {} signatures; {} ops × {} repeats per case (1 client for latency, {} clients for throughput); scaling at {:?} (AWS up to {})",
            self.programs,
            self.signatures,
            self.plan.iters,
            self.plan.repeats,
            self.plan.concurrency,
            self.scale,
            self.aws_scale_max
        )
    }
}

fn progress(msg: impl AsRef<str>) {
    eprintln!(
        "[bench {}] {}",
        chrono::Utc::now().format("%H:%M:%S"),
        msg.as_ref()
    );
}

fn main() -> BenchResult<()> {
    let args = Args::parse();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run(args))
}

async fn run(args: Args) -> BenchResult<()> {
    let started = Instant::now();
    let settings = Settings::from(&args);
    let command = std::iter::once("dspy-storage-bench".to_owned())
        .chain(std::env::args().skip(1))
        .collect::<Vec<_>>()
        .join(" ");
    let load_start = report::loadavg();
    let profile = procs::profile();
    if profile == "debug" && !args.quick {
        progress("note: an unoptimized (debug) build; use `cargo run --profile perf -p dspy-storage-bench` for figures worth quoting");
    }

    let mut backends = Vec::new();
    for b in &args.backends {
        match b.trim() {
            "embedded" => backends.push(Backend::Embedded),
            "aws" if env::aws_configured() => backends.push(Backend::Aws),
            "aws" => progress("AWS backend skipped: no local AWS endpoint (eval \"$(bash scripts/local-aws.sh env)\")"),
            other => return Err(format!("unknown backend {other:?}").into()),
        }
    }

    // MLflow first: it is the slow, separate process; its figures feed the ratios.
    let run_mlflow = !args.no_mlflow && (args.mlflow || !args.quick || mlflow::installed());
    let mut mlflow_note = String::new();
    let artifact_modes: Vec<&str> = match args.mlflow_artifacts.as_str() {
        "auto" if backends.contains(&Backend::Aws) => vec!["file", "s3"],
        "auto" => vec!["file"],
        "file" => vec!["file"],
        "s3" => vec!["s3"],
        other => return Err(format!("unknown --mlflow-artifacts {other:?}").into()),
    };
    let mut mlflow_results = mlflow::MlflowRuns::default();
    if run_mlflow && which_python() {
        if !mlflow::installed() {
            if let Err(e) = mlflow::install() {
                mlflow_note = format!("MLflow skipped: {e}");
            }
        }
        if mlflow::installed() {
            for artifacts in artifact_modes {
                progress(format!(
                    "MLflow benchmark (bench/mlflow/bench_mlflow.py), {artifacts} artifacts"
                ));
                let plan = if args.quick {
                    // Small: `import mlflow` alone takes seconds on a loaded machine.
                    mlflow::MlflowPlan {
                        // The same program count as ours, so the two sides of a row compare.
                        programs: settings.programs,
                        repeats: 1,
                        loads: 30,
                        queries: 5,
                        alias_ops: 5,
                        metric_repeats: 1,
                        cold_repeats: 1,
                        artifacts: artifacts.to_owned(),
                    }
                } else {
                    mlflow::MlflowPlan {
                        programs: settings.programs,
                        repeats: 3,
                        loads: settings.plan.iters,
                        queries: 50,
                        alias_ops: 50,
                        metric_repeats: 2,
                        cold_repeats: 3,
                        artifacts: artifacts.to_owned(),
                    }
                };
                match mlflow::run(&plan) {
                    Ok(r) => mlflow_results.insert(artifacts, r),
                    Err(e) => {
                        mlflow_note.push_str(&format!("MLflow run ({artifacts}) failed: {e}. "));
                    }
                }
            }
        }
    } else {
        mlflow_note = if args.no_mlflow {
            "MLflow skipped (--no-mlflow).".into()
        } else if !which_python() {
            "MLflow skipped: no python3 on this machine.".into()
        } else {
            format!(
                "MLflow skipped in --quick: no venv at {} (run with --mlflow to install it).",
                mlflow::venv().display()
            )
        };
    }
    if !mlflow_note.is_empty() {
        progress(&mlflow_note);
    }

    // ----- the operations, per backend and mode ------------------------------------------------
    let all_cases = cases::all();
    let selected: Vec<&cases::Case> = all_cases
        .iter()
        .filter(|c| args.only.as_deref().is_none_or(|o| c.name.contains(o)))
        .collect();
    let mut results: Vec<(usize, Backend, Mode, CaseResult)> = Vec::new();
    let mut seed_notes = Vec::new();
    for &backend in &backends {
        progress(format!(
            "{}: seeding {} programs",
            backend.name(),
            settings.programs
        ));
        let env = Arc::new(
            BackendEnv::open(
                backend,
                settings.programs,
                settings.signatures,
                settings.plan.concurrency,
            )
            .await?,
        );
        seed_notes.push(format!(
            "{}: seeded {} programs in {:.1} s ({} programs/s, {} writers)",
            backend.name(),
            settings.programs,
            env.seeded.seconds,
            num(settings.programs as f64 / env.seeded.seconds),
            settings.plan.concurrency
        ));
        cases::prepare(&env).await?;
        let mut next_i = 0u64;
        for (idx, case) in all_cases.iter().enumerate() {
            if !selected.iter().any(|c| std::ptr::eq(*c, case)) {
                continue;
            }
            for &mode in case.modes {
                // --quick: a whole-store operation (backup, restore) once, in-process only.
                let mut plan = settings.plan;
                if args.quick && case.weight == cases::Weight::Single {
                    if mode != Mode::InProcess {
                        continue;
                    }
                    plan.repeats = 1;
                }
                let r = cases::run(&env, case, mode, plan, &mut next_i).await;
                progress(format!(
                    "{} | {} | {}: {}",
                    backend.name(),
                    mode.name(),
                    case.name,
                    match &r {
                        CaseResult::Measured(f) => format!(
                            "p50 {} ms",
                            Spread::of(&f.p50).map_or("–".into(), |s| num(s.median))
                        ),
                        CaseResult::Failed(e) => format!("FAILED {e}"),
                    }
                ));
                results.push((idx, backend, mode, r));
            }
        }
    }
    let rows: Vec<Row> = results
        .iter()
        .map(|(idx, backend, mode, result)| Row {
            case: &all_cases[*idx],
            backend: *backend,
            mode: *mode,
            result,
        })
        .collect();
    let self_peak = procs::vm_kib(std::process::id(), "VmHWM").map(procs::mib);

    // ----- scaling -----------------------------------------------------------------------------
    let scaling = if args.skip_scale {
        String::new()
    } else {
        scaling(&settings, &backends).await?
    };

    // ----- dashboard ---------------------------------------------------------------------------
    let dashboard_section = if args.skip_dashboard {
        String::new()
    } else {
        dashboard::section(args.quick).await?
    };

    // ----- processes ---------------------------------------------------------------------------
    let procs_section = if args.skip_procs {
        String::new()
    } else {
        processes(&settings, &backends, mlflow_results.any()).await
    };

    // ----- the report --------------------------------------------------------------------------
    let mut md = report::header(&command, &profile, &load_start, &settings.describe());
    let _ = writeln!(
        md,
        "- load average at end {}; total run {:.0} s",
        report::loadavg(),
        started.elapsed().as_secs_f64()
    );
    for n in &seed_notes {
        let _ = writeln!(md, "- {n}");
    }
    let _ = writeln!(
        md,
        "\nLatency: one client, `repeats` runs of `ops` calls each; the three numbers are the min, median and max over the repeats of that run's p50 (or p99). Throughput: the same calls from concurrent clients. \"in-process\" calls the core (`Storage`) directly — or the axum router in-process for routes whose core API is on another branch; \"HTTP\" goes over loopback to the app `dspy-storage serve` runs, served in this process. \"caches off\" is the same data through a `Storage` whose program and resolution caches are off (the default config has both on). AWS requests are counted by the SDK interceptor; capacity units are those DynamoDB Local reports with `ReturnConsumedCapacity=INDEXES` (their total; DynamoDB Local under-reports the table part of a transaction of several items, see consumed_capacity). The MLflow ratio divides our median p50 by MLflow's median for the comparable operation (below 1 = we are faster); MLflow runs in-process against SQLite, single client, with local-file artifacts for the embedded rows and S3 artifacts on the same local AWS for the AWS rows (see the MLflow section).\n"
    );
    let _ = writeln!(md, "## Operations\n");
    md.push_str(&report::main_table(
        &rows,
        &mlflow_results,
        settings.plan.concurrency,
    ));
    if backends.contains(&Backend::Aws) {
        let _ = writeln!(
            md,
            "\n## AWS requests and consumed capacity per operation (local AWS)\n"
        );
        md.push_str(&report::requests_table(&rows));
    }
    let _ = writeln!(md, "\n## MLflow\n");
    if mlflow_results.any().is_none() {
        let _ = writeln!(md, "{mlflow_note}");
    } else {
        md.push_str(&report::mlflow_tables(&mlflow_results, &all_cases));
        if !mlflow_note.is_empty() {
            let _ = writeln!(md, "\n{mlflow_note}");
        }
    }
    if !scaling.is_empty() {
        let _ = writeln!(md, "\n## Scaling\n");
        md.push_str(&scaling);
    }
    if !dashboard_section.is_empty() {
        let _ = writeln!(md, "\n## Dashboard pages (server-side render)\n");
        md.push_str(&dashboard_section);
    }
    if !procs_section.is_empty() {
        md.push_str(&procs_section);
    }
    if let Some(mb) = self_peak {
        let _ = writeln!(
            md,
            "\nPeak RSS of this harness process after the in-process and HTTP cases (`/proc/self/status` VmHWM; stores, servers and clients all in one process): {} MiB.",
            num(mb)
        );
    }

    println!("{md}");
    let out = args
        .out
        .clone()
        .or_else(|| (!args.quick).then(|| procs::workspace_root().join("bench/RESULTS.md")));
    if let Some(path) = out {
        // Keep the hand-written analysis below the marker of an earlier report.
        const MARKER: &str = "<!-- analysis: kept across runs -->";
        let kept = std::fs::read_to_string(&path)
            .ok()
            .and_then(|old| old.find(MARKER).map(|i| old[i..].to_owned()))
            .unwrap_or_else(|| format!("{MARKER}\n"));
        std::fs::write(&path, format!("{md}\n{kept}"))?;
        progress(format!("wrote {}", path.display()));
    }
    progress(format!("done in {:.0} s", started.elapsed().as_secs_f64()));
    Ok(())
}

fn which_python() -> bool {
    std::process::Command::new("python3")
        .arg("--version")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Latency of the indexed reads at growing sizes: search, list versions and load latest at N
/// programs; history at N metric records.
async fn scaling(settings: &Settings, backends: &[Backend]) -> BenchResult<String> {
    const OPS: [&str; 6] = [
        "search (query string, top 10)",
        "search (free text, 10 matches)",
        "search (structured, sorted top 10)",
        "list versions",
        "load latest, caches off",
        "load by id, caches off",
    ];
    let all = cases::all();
    let plan = Plan {
        iters: (settings.plan.iters / 2).max(10),
        repeats: settings.plan.repeats,
        concurrency: 1,
    };
    // (operation, backend) -> size -> cell
    type Cells = Vec<(String, Backend, Vec<(usize, String)>)>;
    let mut cells: Cells = Vec::new();
    let mut cell = |op: &str, b: Backend, n: usize, text: String| match cells
        .iter_mut()
        .find(|(o, bb, _)| o == op && *bb == b)
    {
        Some((_, _, v)) => v.push((n, text)),
        None => cells.push((op.to_owned(), b, vec![(n, text)])),
    };
    let mut sizes_seen = Vec::new();
    for &backend in backends {
        for &n in &settings.scale {
            if backend == Backend::Aws && n > settings.aws_scale_max {
                continue;
            }
            if !sizes_seen.contains(&n) {
                sizes_seen.push(n);
            }
            progress(format!("scaling: {} at {n} programs", backend.name()));
            let env = Arc::new(
                BackendEnv::open(
                    backend,
                    n.max(2),
                    settings.signatures,
                    settings.plan.concurrency.max(4),
                )
                .await?,
            );
            cell(
                "store (seeding, programs/s)",
                backend,
                n,
                num(n as f64 / env.seeded.seconds),
            );
            cases::prepare(&env).await?;
            let mut next_i = 0;
            for op in OPS {
                let case = all.iter().find(|c| c.name == op).expect("case exists");
                let text = match cases::run(&env, case, Mode::InProcess, plan, &mut next_i).await {
                    CaseResult::Measured(f) => {
                        let p50 = Spread::of(&f.p50).map_or(f64::NAN, |s| s.median);
                        let p99 = Spread::of(&f.p99).map_or(f64::NAN, |s| s.median);
                        format!("{} ({})", num(p50), num(p99))
                    }
                    CaseResult::Failed(e) => {
                        format!("failed: {}", e.chars().take(60).collect::<String>())
                    }
                };
                cell(op, backend, n, text);
            }
            // History of n records on one program.
            let text = history_at(&env, n).await;
            cell("history (all N records, paged)", backend, n, text);
        }
    }
    let mut s = String::new();
    let _ = writeln!(
        s,
        "In-process, one client: p50 ms (p99 ms), medians over {} repeats of {} calls (history: {} repeats of one full read). N = programs in the store (over {} signatures) or, for history, metric records of one program.\n",
        plan.repeats, plan.iters, plan.repeats, settings.signatures
    );
    let _ = write!(s, "| operation | backend |");
    for n in &sizes_seen {
        let _ = write!(s, " N = {n} |");
    }
    let _ = write!(s, "\n|---|---|");
    for _ in &sizes_seen {
        let _ = write!(s, "---|");
    }
    let _ = writeln!(s);
    for (op, b, v) in &cells {
        let _ = write!(s, "| {op} | {} |", b.name());
        for n in &sizes_seen {
            let t = v
                .iter()
                .find(|(m, _)| m == n)
                .map_or("–", |(_, t)| t.as_str());
            let _ = write!(s, " {t} |");
        }
        let _ = writeln!(s);
    }
    Ok(s)
}

/// Posts `n` metric records to one program (1,000 per request) and times reading them all back.
async fn history_at(env: &BackendEnv, n: usize) -> String {
    let id = env.seeded.ids[env.seeded.ids.len() - 1];
    let path = format!("/programs/{id}/metrics");
    let records = cases::metric_records(n, 90, 0);
    for chunk in records.chunks(1000) {
        let body = json!({ "records": chunk });
        match env
            .call(
                Mode::InProcess,
                false,
                http::Method::POST,
                &path,
                Some(&body),
            )
            .await
        {
            Ok(a) => {
                if let Err(e) = a.ok("seeding records") {
                    return format!(
                        "failed: {}",
                        e.to_string().chars().take(60).collect::<String>()
                    );
                }
            }
            Err(e) => return format!("failed: {e}"),
        }
    }
    let mut times = Vec::new();
    for _ in 0..3 {
        let t = Instant::now();
        match cases::read_history(env, Mode::InProcess, &id.to_string()).await {
            Ok(got) if got >= n => times.push(t.elapsed().as_secs_f64() * 1e3),
            Ok(got) => return format!("failed: read {got} of {n}"),
            Err(e) => return format!("failed: {e}"),
        }
    }
    let s = Spread::of(&times).expect("three runs");
    format!("{} (max {})", num(s.median), num(s.max))
}

/// Lambda binaries (size, init time) and peak RSS of the server under load and of backup/restore.
async fn processes(
    settings: &Settings,
    backends: &[Backend],
    ml: Option<&mlflow::MlflowResults>,
) -> String {
    let mut s = String::new();
    let missing = procs::ensure_binaries();
    let have = |n: &str| !missing.iter().any(|m| m == n);

    // Lambda binaries.
    let _ = writeln!(
        s,
        "\n## Lambda binaries\n\nSize: `target/lambda/<fn>/bootstrap` (arm64 release, `bash scripts/build-lambdas.sh`). Init: the host `{}` build of each function spawned with the Lambda environment against a local Runtime API, timed from spawn to its first `GET /2018-06-01/runtime/invocation/next` (min / median / max of {} starts).\n",
        procs::profile(),
        settings.lambda_repeats
    );
    let import_ms = ml.and_then(|m| m.import_ms());
    let _ = writeln!(
        s,
        "| function | arm64 bootstrap | init ms (min / median / max) | init ÷ `import mlflow` |\n|---|---:|---|---:|"
    );
    for f in procs::FUNCTIONS {
        let size = match procs::lambda_size(f) {
            Some((b, true)) => format!("{:.1} MiB", b as f64 / 1048576.0),
            Some((b, false)) => format!("{:.1} MiB (not arm64)", b as f64 / 1048576.0),
            None => "not built".into(),
        };
        let init = if have(f) {
            let mut t = Vec::new();
            let mut err = None;
            for _ in 0..settings.lambda_repeats {
                match procs::lambda_init(f).await {
                    Ok(d) => t.push(d.as_secs_f64() * 1e3),
                    Err(e) => err = Some(e.to_string()),
                }
            }
            match (Spread::of(&t), err) {
                (Some(sp), _) => Some(sp),
                (None, e) => {
                    let _ = writeln!(s, "| {f} | {size} | failed: {} | |", e.unwrap_or_default());
                    continue;
                }
            }
        } else {
            None
        };
        let _ = writeln!(
            s,
            "| {f} | {size} | {} | {} |",
            init.map_or("not built".into(), |i| i.show()),
            match (init, import_ms) {
                (Some(i), Some(m)) if m > 0.0 => format!("{}×", num(i.median / m)),
                _ => String::new(),
            }
        );
    }

    // Peak RSS.
    let _ = writeln!(
        s,
        "\n## Peak RSS\n\n`dspy-storage serve` run as a child process (the `{}` build); `VmHWM` from `/proc/<pid>/status`.\n",
        procs::profile()
    );
    let _ = writeln!(
        s,
        "| process | backend | work | peak RSS MiB | ÷ MLflow |\n|---|---|---|---:|---:|"
    );
    let ml_rss = ml.and_then(|m| m.peak_rss_mb());
    let vs = |mib: Option<f64>| match (mib, ml_rss) {
        (Some(a), Some(b)) if b > 0.0 => format!("{}×", num(a * 1.048576 / b)),
        _ => String::new(),
    };
    if !have(procs::CLI) {
        let _ = writeln!(s, "| server | | | not built | |");
        return s;
    }
    for &backend in backends {
        match server_under_load(backend, settings).await {
            Ok(rows) => {
                for (work, mib) in rows {
                    let _ = writeln!(
                        s,
                        "| dspy-storage serve | {} | {work} | {} | {} |",
                        backend.name(),
                        mib.map_or("?".into(), num),
                        vs(mib)
                    );
                }
            }
            Err(e) => {
                let _ = writeln!(
                    s,
                    "| dspy-storage serve | {} | under load | failed: {e} | |",
                    backend.name()
                );
            }
        }
    }
    for &n in &settings.backup_sizes {
        match backup_rss(n, settings).await {
            Ok(rows) => {
                for (work, fig) in rows {
                    let _ = writeln!(s, "| dspy-storage serve | embedded | {work} | {fig} | |");
                }
            }
            Err(e) => {
                let _ = writeln!(s, "| dspy-storage serve | embedded | backup/restore of {n} programs | failed: {e} | |");
            }
        }
    }
    if let Some(mb) = ml_rss {
        let _ = writeln!(
            s,
            "\nMLflow's client process peaked at {} MB (its whole benchmark, in-process).",
            num(mb)
        );
    }
    s
}

fn server_args(backend: Backend, dir: &std::path::Path) -> Vec<String> {
    match backend {
        Backend::Embedded => vec![
            "--backend".into(),
            "embedded".into(),
            "--data-dir".into(),
            dir.display().to_string(),
        ],
        Backend::Aws => {
            let name = env::unique_name("dspy-bench-rss");
            vec![
                "--backend".into(),
                "aws".into(),
                "--table".into(),
                name.clone(),
                "--bucket".into(),
                name,
                "--create".into(),
            ]
        }
    }
}

/// The server's RSS idle, after storing programs over HTTP and after a read load.
async fn server_under_load(
    backend: Backend,
    settings: &Settings,
) -> BenchResult<Vec<(String, Option<f64>)>> {
    progress(format!("peak RSS: {} server under load", backend.name()));
    let dir = tempfile::Builder::new()
        .prefix("dspy-bench-rss-")
        .tempdir()?;
    let server = procs::Server::start(&server_args(backend, dir.path())).await?;
    let mut rows = vec![("idle after start".to_owned(), server.rss_mib())];
    let client = reqwest::Client::new();
    let c = settings.plan.concurrency as u64;
    let n = settings.rss_programs as u64;
    let ids = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for w in 0..c {
        let (client, base, ids) = (client.clone(), server.base.clone(), ids.clone());
        tasks.push(tokio::spawn(async move {
            let mut j = w;
            while j < n {
                let body = data::store_body(&format!("rss.Sig{}", j % 20), j);
                let r = client
                    .post(format!("{base}/programs"))
                    .json(&body)
                    .send()
                    .await?;
                if !r.status().is_success() {
                    return Err(format!("store answered {}", r.status()).into());
                }
                let v: serde_json::Value = r.json().await?;
                ids.lock()
                    .unwrap()
                    .push(v["id"].as_str().unwrap_or_default().to_owned());
                j += c;
            }
            BenchResult::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    rows.push((
        format!("stored {n} programs, {c} clients"),
        server.peak_mib(),
    ));
    let ids = Arc::new(ids.lock().unwrap().clone());
    let reads = (settings.plan.iters * 10) as u64;
    let mut tasks = Vec::new();
    for w in 0..c {
        let (client, base, ids) = (client.clone(), server.base.clone(), ids.clone());
        tasks.push(tokio::spawn(async move {
            let mut j = w;
            while j < reads {
                let url = match j % 3 {
                    0 => format!("{base}/programs/{}", ids[(j as usize * 7919) % ids.len()]),
                    1 => format!("{base}/signatures/rss.Sig{}/versions/latest", j % 20),
                    _ => format!("{base}/signatures/rss.Sig{}/versions", j % 20),
                };
                let r = client.get(url).send().await?;
                if !r.status().is_success() {
                    return Err(format!("read answered {}", r.status()).into());
                }
                r.bytes().await?;
                j += c;
            }
            BenchResult::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    rows.push((
        format!("then {reads} reads (by id, latest, versions), {c} clients"),
        server.peak_mib(),
    ));
    Ok(rows)
}

/// Peak RSS of a server process doing one backup of `n` programs, and of a fresh one restoring it.
async fn backup_rss(n: usize, settings: &Settings) -> BenchResult<Vec<(String, String)>> {
    progress(format!(
        "peak RSS: backup/restore at {n} programs (seeding)"
    ));
    let dir = tempfile::Builder::new()
        .prefix("dspy-bench-backup-")
        .tempdir()?;
    {
        let storage = Arc::new(dspy_storage_core::open::embedded(
            dir.path(),
            Default::default(),
        )?);
        storage.text_index_ready().await?;
        data::seed(&storage, "backup", n, 50, settings.plan.concurrency).await?;
    }
    let args = server_args(Backend::Embedded, dir.path());
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(1800))
        .build()?;
    let mut rows = Vec::new();
    let name = format!("bench-rss-{n}");
    {
        let server = procs::Server::start(&args).await?;
        let idle = server.peak_mib();
        let t = Instant::now();
        let r = client
            .post(format!("{}/backups", server.base))
            .json(&json!({ "name": name }))
            .send()
            .await?;
        let status = r.status().as_u16();
        let secs = t.elapsed().as_secs_f64();
        let body: serde_json::Value = r.json().await.unwrap_or_default();
        if !(200..300).contains(&status) {
            rows.push((
                format!("backup of {n} programs"),
                format!("failed: {status} {body}"),
            ));
            return Ok(rows);
        }
        rows.push((
            format!(
                "backup of {n} programs ({secs:.1} s; idle peak {})",
                idle.map_or("?".into(), num)
            ),
            server.peak_mib().map_or("?".into(), num),
        ));
    }
    let server = procs::Server::start(&args).await?;
    let idle = server.peak_mib();
    let t = Instant::now();
    let r = client
        .post(format!("{}/backups/{name}/restore", server.base))
        .json(&json!({ "verify_compatibility": true }))
        .send()
        .await?;
    let status = r.status().as_u16();
    let secs = t.elapsed().as_secs_f64();
    if !(200..300).contains(&status) {
        let body = r.text().await.unwrap_or_default();
        rows.push((
            format!("restore of {n} programs (into the same store)"),
            format!(
                "failed: {status} {}",
                body.chars().take(160).collect::<String>()
            ),
        ));
    } else {
        rows.push((
            format!(
                "restore of {n} programs into the same store ({secs:.1} s; idle peak {})",
                idle.map_or("?".into(), num)
            ),
            server.peak_mib().map_or("?".into(), num),
        ));
    }
    Ok(rows)
}
