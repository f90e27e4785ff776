//! Figures about processes: the Lambda binaries (arm64 size, init time of the host build against
//! a local Runtime API) and the peak RSS (`VmHWM`) of `dspy-storage serve` under load and during
//! backup and restore.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::BenchResult;

pub const FUNCTIONS: [&str; 6] = ["store", "load", "query", "trend", "cleanup", "backup"];
pub const CLI: &str = "dspy-storage";

/// The workspace root (this crate's parent directory).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("bench/ has a parent")
        .to_owned()
}

/// The directory of this binary: `target/<profile>`, where the other binaries of the same
/// build are.
pub fn exe_dir() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(Path::to_owned))
        .unwrap_or_else(|| workspace_root().join("target/debug"))
}

/// The cargo profile this binary was built with (`debug` = dev).
pub fn profile() -> String {
    exe_dir()
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "debug".into())
}

pub fn sibling(name: &str) -> PathBuf {
    exe_dir().join(name)
}

/// Builds the function binaries and the CLI with this binary's profile when some are missing
/// and cargo is at hand (`cargo run` sets `CARGO`). Returns what is still missing.
pub fn ensure_binaries() -> Vec<String> {
    let missing = || -> Vec<String> {
        FUNCTIONS
            .iter()
            .copied()
            .chain([CLI])
            .filter(|n| !sibling(n).is_file())
            .map(str::to_owned)
            .collect()
    };
    let now_missing = missing();
    if now_missing.is_empty() {
        return now_missing;
    }
    let Ok(cargo) = std::env::var("CARGO") else {
        return now_missing;
    };
    let profile = match profile().as_str() {
        "debug" => "dev".to_owned(),
        p => p.to_owned(),
    };
    eprintln!(
        "building {} ({profile} profile) for the process figures",
        now_missing.join(", ")
    );
    let status = Command::new(cargo)
        .current_dir(workspace_root())
        .args(["build", "--profile", &profile])
        .args([
            "-p",
            "dspy-storage-functions",
            "-p",
            "dspy-storage-cli",
            "--bins",
        ])
        .status();
    if let Err(e) = status {
        eprintln!("cargo build failed to start: {e}");
    }
    missing()
}

/// A `/proc/<pid>/status` figure in KiB (`VmHWM`: peak resident set; `VmRSS`: now).
pub fn vm_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|l| {
        let rest = l.strip_prefix(field)?.strip_prefix(':')?;
        rest.trim().trim_end_matches("kB").trim().parse().ok()
    })
}

pub fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

// ----- Lambda binaries ---------------------------------------------------------------------------

/// The size of `target/lambda/<fn>/bootstrap` and whether it is an arm64 ELF.
pub fn lambda_size(function: &str) -> Option<(u64, bool)> {
    let path = workspace_root()
        .join("target/lambda")
        .join(function)
        .join("bootstrap");
    let bytes = std::fs::read(&path).ok()?;
    let arm64 = bytes.len() > 20 && &bytes[..4] == b"\x7fELF" && bytes[18] == 183;
    Some((bytes.len() as u64, arm64))
}

/// A local Lambda Runtime API that only notes when the function first asks for an event
/// (`GET /2018-06-01/runtime/invocation/next`) and never hands one out.
async fn runtime_api() -> BenchResult<(String, Arc<Mutex<Option<Instant>>>)> {
    use axum::routing::get;
    let first: Arc<Mutex<Option<Instant>>> = Arc::default();
    let f = first.clone();
    let app = axum::Router::new().route(
        "/2018-06-01/runtime/invocation/next",
        get(move || {
            let f = f.clone();
            async move {
                f.lock().unwrap().get_or_insert_with(Instant::now);
                std::future::pending::<()>().await;
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok((addr.to_string(), first))
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Init time of one function binary: process spawn to its first `next` request, with the Lambda
/// environment (table and bucket names only: the functions make no AWS call before `next`).
pub async fn lambda_init(function: &str) -> BenchResult<Duration> {
    let (addr, first) = runtime_api().await?;
    let mut cmd = Command::new(sibling(function));
    cmd.env("AWS_LAMBDA_RUNTIME_API", &addr)
        .env(
            "AWS_LAMBDA_FUNCTION_NAME",
            format!("dspy-storage-{function}"),
        )
        .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256")
        .env(
            "AWS_LAMBDA_LOG_GROUP_NAME",
            format!("/dspy-storage/bench/{function}"),
        )
        .env("AWS_LAMBDA_LOG_STREAM_NAME", "bench")
        .env("DSPY_STORAGE_TABLE", "dspy-bench-init")
        .env("DSPY_STORAGE_BUCKET", "dspy-bench-init")
        .env("RUST_LOG", "warn")
        .env_remove("DSPY_STORAGE_EVENT_BUS")
        .env_remove("DSPY_STORAGE_EVENTS_FILE")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if std::env::var("AWS_REGION").is_err() && std::env::var("AWS_DEFAULT_REGION").is_err() {
        cmd.env("AWS_REGION", "us-east-1");
    }
    let spawned = Instant::now();
    let mut child = Killed(cmd.spawn()?);
    let deadline = spawned + Duration::from_secs(30);
    loop {
        if let Some(t) = *first.lock().unwrap() {
            return Ok(t - spawned);
        }
        if let Some(status) = child.0.try_wait()? {
            return Err(format!("{function} exited before asking for an event: {status}").into());
        }
        if Instant::now() > deadline {
            return Err(format!("{function} did not ask for an event within 30 s").into());
        }
        tokio::time::sleep(Duration::from_micros(500)).await;
    }
}

// ----- the local server as a child process -------------------------------------------------------

/// `dspy-storage serve` running as a child process (killed on drop).
pub struct Server {
    child: Killed,
    pub base: String,
}

impl Server {
    /// Starts the CLI server with `backend_args` (e.g. `--backend embedded --data-dir X`) and
    /// waits until `/health` answers.
    pub async fn start(backend_args: &[String]) -> BenchResult<Server> {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0")?;
            l.local_addr()?.port()
        };
        let addr = format!("127.0.0.1:{port}");
        let child = Command::new(sibling(CLI))
            .args(backend_args)
            .args(["serve", "--addr", &addr])
            .env("RUST_LOG", "warn")
            .env_remove("DSPY_STORAGE_EVENT_BUS")
            .env_remove("DSPY_STORAGE_EVENTS_FILE")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let mut child = Killed(child);
        let base = format!("http://{addr}");
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(r) = client.get(format!("{base}/health")).send().await {
                if r.status().is_success() {
                    return Ok(Server { child, base });
                }
            }
            if let Some(status) = child.0.try_wait()? {
                return Err(format!("dspy-storage serve exited: {status}").into());
            }
            if Instant::now() > deadline {
                return Err("dspy-storage serve did not answer /health within 60 s".into());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.0.id()
    }

    /// Peak resident set so far, MiB.
    pub fn peak_mib(&self) -> Option<f64> {
        vm_kib(self.pid(), "VmHWM").map(mib)
    }

    pub fn rss_mib(&self) -> Option<f64> {
        vm_kib(self.pid(), "VmRSS").map(mib)
    }
}
