//! MLflow side by side: runs `bench/mlflow/bench_mlflow.py` (MLflow Model Registry + tracking on
//! SQLite, local-file or S3 artifacts on LocalStack) on this machine in the same run, from its own venv
//! under `${DSPY_STORAGE_CACHE:-$HOME/.cache/dspy-storage}/mlflow-venv`, and reads its JSON.

use std::path::PathBuf;
use std::process::{Command, Stdio};

use serde_json::Value;

use crate::cases::MlflowRef;
use crate::procs::workspace_root;
use crate::BenchResult;

pub fn venv() -> PathBuf {
    let cache = std::env::var_os("DSPY_STORAGE_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/tmp".into()))
                .join(".cache/dspy-storage")
        });
    cache.join("mlflow-venv")
}

fn python() -> PathBuf {
    venv().join("bin/python")
}

pub fn installed() -> bool {
    python().is_file()
        && Command::new(python())
            .args(["-c", "import mlflow"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
}

/// Creates the venv and installs MLflow (+ boto3 for the S3 mode) from PyPI.
pub fn install() -> BenchResult<()> {
    let venv = venv();
    eprintln!("installing MLflow into {} (once; large)", venv.display());
    if let Some(parent) = venv.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let ok = Command::new("python3")
        .args(["-m", "venv"])
        .arg(&venv)
        .status()?
        .success()
        && Command::new(venv.join("bin/pip"))
            .args([
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "mlflow",
                "boto3",
            ])
            .status()?
            .success();
    if ok {
        Ok(())
    } else {
        Err("creating the MLflow venv failed".into())
    }
}

/// How the MLflow benchmark is run.
pub struct MlflowPlan {
    pub programs: usize,
    pub repeats: usize,
    pub loads: usize,
    pub queries: usize,
    pub alias_ops: usize,
    pub metric_repeats: usize,
    /// Starts of `python -c 'import mlflow'` timed.
    pub cold_repeats: usize,
    /// `file` or `s3` (S3 on the LocalStack of `AWS_ENDPOINT_URL`, which must be set).
    pub artifacts: String,
}

/// The MLflow runs of one benchmark: local-file artifacts (compared with the embedded rows) and
/// S3 artifacts on the local AWS (compared with the AWS rows).
#[derive(Default)]
pub struct MlflowRuns {
    pub file: Option<MlflowResults>,
    pub s3: Option<MlflowResults>,
}

impl MlflowRuns {
    pub fn insert(&mut self, artifacts: &str, results: MlflowResults) {
        match artifacts {
            "s3" => self.s3 = Some(results),
            _ => self.file = Some(results),
        }
    }

    /// The run a backend's rows compare with: S3 artifacts for the AWS backend, files for the
    /// embedded one (the other when only one ran).
    pub fn for_backend(&self, backend: crate::env::Backend) -> Option<&MlflowResults> {
        match backend {
            crate::env::Backend::Aws => self.s3.as_ref().or(self.file.as_ref()),
            crate::env::Backend::Embedded => self.file.as_ref().or(self.s3.as_ref()),
        }
    }

    /// Any run (for the figures that do not depend on the artifact store: `import mlflow`, RSS).
    pub fn any(&self) -> Option<&MlflowResults> {
        self.file.as_ref().or(self.s3.as_ref())
    }
}

/// The script's results JSON.
pub struct MlflowResults {
    pub json: Value,
    pub seconds: f64,
}

impl MlflowResults {
    /// The median (ms) of one aggregate figure.
    fn agg(&self, key: &str) -> Option<f64> {
        self.json["aggregate"][key]["median"].as_f64()
    }

    /// The MLflow figure (ms) a case compares with.
    pub fn figure(&self, r: MlflowRef) -> Option<f64> {
        match r {
            MlflowRef::Agg(k) => self.agg(k),
            MlflowRef::PerThousandPoints(k) => {
                let points = self.json["args"]["metric_points"].as_f64()?;
                let key = k.replace("{points}", &format!("{points}"));
                self.agg(&key).map(|ms| ms * 1000.0 / points)
            }
            MlflowRef::Sum(keys) => keys.iter().map(|k| self.agg(k)).sum(),
        }
    }

    /// `python -c 'import mlflow'` median, ms.
    pub fn import_ms(&self) -> Option<f64> {
        self.json["cold_start_ms"]["python -c 'import mlflow'"]["median"].as_f64()
    }

    pub fn peak_rss_mb(&self) -> Option<f64> {
        self.agg("peak_rss_mb")
    }

    pub fn version(&self) -> String {
        self.json["versions"]["mlflow"]
            .as_str()
            .unwrap_or("?")
            .to_owned()
    }
}

/// Runs the MLflow benchmark; the script's progress goes to stderr.
pub fn run(plan: &MlflowPlan) -> BenchResult<MlflowResults> {
    let work = tempfile::Builder::new().prefix("mlflow-bench-").tempdir()?;
    let out = work.path().join("results.json");
    let script = workspace_root().join("bench/mlflow/bench_mlflow.py");
    if plan.artifacts == "s3" && !crate::env::aws_configured() {
        return Err("--mlflow-artifacts s3 needs AWS_ENDPOINT_URL (a LocalStack: bash scripts/local-aws.sh start && eval \"$(bash scripts/local-aws.sh env)\")".into());
    }
    let started = std::time::Instant::now();
    let status = Command::new(python())
        .arg(&script)
        .args(["--n", &plan.programs.to_string()])
        .args(["--artifacts", &plan.artifacts])
        .args(["--repeats", &plan.repeats.to_string()])
        .args(["--loads", &plan.loads.to_string()])
        .args(["--queries", &plan.queries.to_string()])
        .args(["--alias-ops", &plan.alias_ops.to_string()])
        .args(["--metric-repeats", &plan.metric_repeats.to_string()])
        .args(["--cold-repeats", &plan.cold_repeats.to_string()])
        .arg("--workdir")
        .arg(work.path())
        .arg("--out")
        .arg(&out)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .status();
    if !status?.success() {
        return Err("bench_mlflow.py failed".into());
    }
    let json: Value = serde_json::from_slice(&std::fs::read(&out)?)?;
    Ok(MlflowResults {
        json,
        seconds: started.elapsed().as_secs_f64(),
    })
}
