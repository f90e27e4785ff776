//! The Markdown report: machine, date and command, then one table per section.

use std::fmt::Write as _;

use crate::cases::{Case, CaseResult};
use crate::env::{Backend, Mode};
use crate::mlflow::{MlflowResults, MlflowRuns};
use crate::stats::{num, Spread};

fn sh(cmd: &str, args: &[&str]) -> Option<String> {
    let out = std::process::Command::new(cmd).args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

/// Machine, date, command, build.
pub fn header(command: &str, profile: &str, load_start: &str, settings: &str) -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_owned())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_owned());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("MemTotal"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or("?".into(), |kb| format!("{:.1} GiB", kb / 1024.0 / 1024.0));
    let kernel = sh("uname", &["-srm"]).unwrap_or_else(|| std::env::consts::OS.into());
    let commit = sh(
        "git",
        &[
            "-C",
            env!("CARGO_MANIFEST_DIR"),
            "rev-parse",
            "--short",
            "HEAD",
        ],
    )
    .unwrap_or_else(|| "?".into());
    let dirty = sh(
        "git",
        &["-C", env!("CARGO_MANIFEST_DIR"), "status", "--porcelain"],
    )
    .is_some_and(|s| !s.is_empty());
    let mut s = String::new();
    let _ = writeln!(s, "# dspy-storage benchmarks\n");
    let _ = writeln!(
        s,
        "- date: {}",
        chrono::Utc::now().format("%Y-%m-%d %H:%M UTC")
    );
    let _ = writeln!(s, "- command: `{command}`");
    let _ = writeln!(
        s,
        "- build: `{profile}` profile, commit {commit}{}",
        if dirty { " (with local changes)" } else { "" }
    );
    let _ = writeln!(
        s,
        "- machine: {cpu}, {cores} cores, {mem}, {kernel}; load average at start {load_start}"
    );
    let _ = writeln!(s, "- settings: {settings}");
    s
}

/// One backend's rows of the main table.
pub struct Row<'a> {
    pub case: &'a Case,
    pub backend: Backend,
    pub mode: Mode,
    pub result: &'a CaseResult,
}

fn ratio(ours_ms: f64, theirs_ms: Option<f64>) -> String {
    match theirs_ms {
        Some(t) if t > 0.0 && ours_ms.is_finite() => format!("{}×", num(ours_ms / t)),
        _ => String::new(),
    }
}

/// The main table: latency (one client), throughput (concurrent clients), AWS requests and
/// consumed capacity, and the ratio to MLflow's median for comparable operations.
pub fn main_table(rows: &[Row], mlflow: &MlflowRuns, concurrency: usize) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "| operation | backend | mode | p50 ms (min / median / max) | p99 ms (min / median / max) | ops/s, {concurrency} clients (min / median / max) | AWS requests / op | DynamoDB CU / op | ours ÷ MLflow (p50) |"
    );
    let _ = writeln!(s, "|---|---|---|---|---|---|---|---|---|");
    for r in rows {
        let lead = format!(
            "| {} | {} | {} |",
            r.case.name,
            r.backend.name(),
            r.mode.name()
        );
        match r.result {
            CaseResult::Failed(e) => {
                let e: String = e
                    .replace('|', "/")
                    .replace('\n', " ")
                    .chars()
                    .take(160)
                    .collect();
                let _ = writeln!(s, "{lead} failed: {e} | | | | | |");
            }
            CaseResult::Measured(f) => {
                let p50 = Spread::of(&f.p50);
                let p99 = Spread::of(&f.p99);
                let tp = Spread::of(&f.throughput);
                let show = |x: Option<Spread>| x.map_or("–".into(), |x| x.show());
                let theirs = r
                    .case
                    .mlflow
                    .and_then(|m| mlflow.for_backend(r.backend).and_then(|ml| ml.figure(m)));
                let _ = writeln!(
                    s,
                    "{lead} {} | {} | {} | {} | {} | {} |",
                    show(p50),
                    show(p99),
                    show(tp),
                    f.requests_per_op.map_or(String::new(), num),
                    f.capacity_per_op.map_or(String::new(), num),
                    ratio(p50.map_or(f64::NAN, |p| p.median), theirs),
                );
            }
        }
    }
    s
}

/// Which AWS requests each operation makes (in-process rows of the AWS backend).
pub fn requests_table(rows: &[Row]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "| operation | requests / op | by API call (per op) | DynamoDB CU / op |\n|---|---:|---|---:|"
    );
    for r in rows
        .iter()
        .filter(|r| r.backend == Backend::Aws && r.mode == Mode::InProcess)
    {
        if let Some(f) = r.result.figures() {
            let by: Vec<String> = f
                .requests_by_op
                .iter()
                .map(|(k, v)| format!("{k} {}", num(*v)))
                .collect();
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} |",
                r.case.name,
                f.requests_per_op.map_or("–".into(), num),
                by.join(", "),
                f.capacity_per_op.map_or("–".into(), num),
            );
        }
    }
    s
}

/// The MLflow figures used for the ratios: one table per artifact store that ran.
pub fn mlflow_tables(runs: &MlflowRuns, cases: &[Case]) -> String {
    let mut s = String::new();
    for (title, run) in [
        (
            "local-file artifacts: the embedded rows' ratios",
            &runs.file,
        ),
        (
            "S3 artifacts on the local AWS: the AWS rows' ratios",
            &runs.s3,
        ),
    ] {
        if let Some(ml) = run {
            let _ = writeln!(s, "### {title}\n");
            s.push_str(&mlflow_table(ml, cases));
            s.push('\n');
        }
    }
    s
}

/// The MLflow figures of one run.
pub fn mlflow_table(ml: &MlflowResults, cases: &[Case]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "MLflow {} (SQLite backend store, {} artifacts, {} programs, {} repeats; ran {:.0} s). Medians over its repeats:\n",
        ml.version(),
        ml.json["args"]["artifacts"].as_str().unwrap_or("?"),
        ml.json["args"]["n"],
        ml.json["args"]["repeats"],
        ml.seconds,
    );
    let _ = writeln!(
        s,
        "| compared with our | MLflow figure | MLflow ms | note |\n|---|---|---:|---|"
    );
    for c in cases {
        if let Some(m) = c.mlflow {
            let what = match m {
                crate::cases::MlflowRef::Agg(k) => k.trim_end_matches("_median_ms").to_owned(),
                crate::cases::MlflowRef::PerThousandPoints(k) => {
                    format!("{} ÷ points × 1000", k.trim_end_matches("_median_ms"))
                }
                crate::cases::MlflowRef::Sum(ks) => ks
                    .iter()
                    .map(|k| k.trim_end_matches("_median_ms"))
                    .collect::<Vec<_>>()
                    .join(" + "),
            };
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} |",
                c.name,
                what.replace('|', "/"),
                ml.figure(m).map_or("–".into(), num),
                c.note
            );
        }
    }
    if let Some(ms) = ml.import_ms() {
        let _ = writeln!(
            s,
            "| Lambda init | `python -c 'import mlflow'` | {} | |",
            num(ms)
        );
    }
    if let Some(mb) = ml.peak_rss_mb() {
        let _ = writeln!(
            s,
            "| server peak RSS | MLflow client process peak RSS (MB) | {} | |",
            num(mb)
        );
    }
    s
}
