//! End-to-end tests of the `dspy-storage` binary: the local server (`serve`) over real HTTP, the
//! `store` and `load` commands, flags read from `DSPY_STORAGE_*`, and — when a LocalStack-
//! compatible endpoint is configured — the AWS backend.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_dspy-storage");

const PROGRAMS: [&str; 2] = [
    "dspy_react_optimized.json",
    "dspyrb_chain_of_thought_miprov2.json",
];

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures")
        .join(name)
}

fn read_fixture(name: &str) -> String {
    std::fs::read_to_string(fixture(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// A command of the binary with no `DSPY_STORAGE_*` setting inherited from the caller.
fn command() -> Command {
    let mut cmd = Command::new(BIN);
    for (key, _) in std::env::vars() {
        if key.starts_with("DSPY_STORAGE_") {
            cmd.env_remove(key);
        }
    }
    cmd.env("RUST_LOG", "warn");
    cmd
}

/// A running `dspy-storage serve`, killed when dropped (also when an assertion fails).
struct Server {
    child: Child,
    base: String,
    log: Arc<Mutex<Vec<String>>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    /// Starts `dspy-storage <global args> serve <serve args>` and waits until `/health` answers.
    async fn start(mut cmd: Command) -> Server {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn dspy-storage serve");
        let stderr = child.stderr.take().expect("stderr");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        {
            let log = log.clone();
            // Reads every line (so the pipe never fills) and reports the listening address.
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    if let Some(addr) = line.strip_prefix("dspy-storage listening on ") {
                        let _ = tx.send(addr.trim().to_owned());
                    }
                    log.lock().unwrap().push(line);
                }
            });
        }
        let mut server = Server {
            child,
            base: String::new(),
            log,
        };
        match rx.recv_timeout(Duration::from_secs(120)) {
            Ok(base) => server.base = base,
            Err(_) => panic!(
                "the server did not say where it listens (exit: {:?}); stderr:\n{}",
                server.child.try_wait(),
                server.log()
            ),
        }
        assert!(
            server.base.starts_with("http://127.0.0.1:") && !server.base.ends_with(":0"),
            "the real address is printed: {}",
            server.base
        );
        let client = reqwest::Client::new();
        for attempt in 0.. {
            match client.get(server.url("/health")).send().await {
                Ok(r) if r.status() == 200 => break,
                other if attempt > 100 => panic!(
                    "/health never answered 200: {other:?}; stderr:\n{}",
                    server.log()
                ),
                _ => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
        server
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }
}

struct Answer {
    status: u16,
    headers: reqwest::header::HeaderMap,
    text: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text))
    }

    fn expect(&self, what: &str, status: u16) -> Value {
        assert_eq!(self.status, status, "{what}: {}", self.text);
        self.json()
    }

    /// The raw JSON text of the `program` field.
    fn raw_program(&self) -> String {
        let map: std::collections::BTreeMap<String, Box<serde_json::value::RawValue>> =
            serde_json::from_str(&self.text).expect("JSON object");
        map["program"].get().to_owned()
    }
}

async fn send(req: reqwest::RequestBuilder) -> Answer {
    let r = req.send().await.expect("request");
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let text = r.text().await.expect("body");
    Answer {
        status,
        headers,
        text,
    }
}

async fn get(server: &Server, path: &str) -> Answer {
    send(reqwest::Client::new().get(server.url(path))).await
}

/// `POST /programs` with the program's text spliced in verbatim.
async fn post_program(server: &Server, program: &str, metadata: &Value) -> Answer {
    let body = format!(r#"{{"program": {program}, "metadata": {metadata}}}"#);
    send(
        reqwest::Client::new()
            .post(server.url("/programs"))
            .header("content-type", "application/json")
            .body(body),
    )
    .await
}

fn run(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null()).output().expect("run dspy-storage")
}

fn expect_success(what: &str, out: &Output) -> String {
    assert!(
        out.status.success(),
        "{what} failed ({}): stdout {} stderr {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).expect("UTF-8 stdout")
}

/// Asserts a command failed the way the CLI fails: exit code `code` (1: the command's error,
/// 2: clap refused the arguments), no panic, and `needle` in what it printed on stderr (the
/// message says what was wrong). Returns stderr.
fn expect_failure(what: &str, out: &Output, code: i32, needle: &str) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(
        out.status.code(),
        Some(code),
        "{what}: exit code (stdout {} stderr {stderr})",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(!stderr.contains("panicked"), "{what}: a panic: {stderr}");
    assert!(
        stderr.contains(needle),
        "{what}: the message names {needle:?}: {stderr}"
    );
    stderr
}

fn serve_embedded(data_dir: &Path) -> Command {
    let mut cmd = command();
    cmd.args(["serve", "--addr", "127.0.0.1:0", "--data-dir"])
        .arg(data_dir);
    cmd
}

/// Stores both real programs over HTTP and checks them back; returns their ids.
async fn round_trip_real_programs(server: &Server, what: &str) -> Vec<String> {
    let mut ids = Vec::new();
    for (i, name) in PROGRAMS.iter().enumerate() {
        let text = read_fixture(name);
        let signature = format!("CliProgram{i}");
        let meta = json!({"signature": signature, "version": "1.0.0",
                          "optimization_method": "miprov2", "performance": 0.88});
        let stored = post_program(server, &text, &meta)
            .await
            .expect(&format!("{what}: store {name}"), 201);
        assert_eq!(stored["version"], "1.0.0", "{what}");
        assert_eq!(stored["size"], text.len() as u64, "{what}: {name}");
        let id = stored["id"].as_str().expect("id").to_owned();

        let loaded = get(server, &format!("/programs/{id}")).await;
        let v = loaded.expect(&format!("{what}: load {name}"), 200);
        assert_eq!(
            loaded.raw_program(),
            text,
            "{what}: {name} is byte-identical"
        );
        assert_eq!(v["signature"], signature.as_str(), "{what}");
        assert!(
            loaded
                .headers
                .get("content-type")
                .is_some_and(|c| c.to_str().unwrap().starts_with("application/json")),
            "{what}: JSON content type"
        );
        let latest = get(server, &format!("/signatures/{signature}/versions/latest")).await;
        latest.expect(&format!("{what}: latest"), 200);
        assert_eq!(latest.raw_program(), text, "{what}: latest of {name}");

        // The version is taken now.
        let again = post_program(server, r#"{"other": 1}"#, &meta).await;
        let e = again.expect(&format!("{what}: store {name} again"), 409);
        assert_eq!(e["error"]["code"], "conflict", "{what}: {e}");
        let list = get(server, &format!("/signatures/{signature}/versions")).await;
        let list = list.expect(&format!("{what}: versions"), 200);
        assert_eq!(
            list["versions"].as_array().unwrap().len(),
            1,
            "{what}: {list}"
        );
        ids.push(id);
    }
    let e = get(server, "/programs/not-an-id")
        .await
        .expect("bad id", 404);
    assert_eq!(e["error"]["code"], "not_found", "{what}");
    ids
}

#[tokio::test]
async fn serve_stores_and_loads_real_programs_and_commands_share_the_data() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");

    // 1. The server stores and serves both programs, byte for byte.
    let ids = {
        let server = Server::start(serve_embedded(&data)).await;
        let health = get(&server, "/health").await.expect("health", 200);
        assert_eq!(health["status"], "ok");
        round_trip_real_programs(&server, "embedded serve").await
    }; // server killed here

    // 2. With the server stopped, `load -o` writes each program exactly as it was sent.
    for (id, name) in ids.iter().zip(PROGRAMS) {
        let out = dir.path().join(format!("loaded-{name}"));
        let o = run(command()
            .arg("--data-dir")
            .arg(&data)
            .args(["load", id, "-o"])
            .arg(&out));
        expect_success("load -o", &o);
        assert_eq!(
            std::fs::read(&out).unwrap(),
            std::fs::read(fixture(name)).unwrap(),
            "load -o {name} writes an identical file"
        );
        // Without -o it prints the program (and a newline).
        let o = run(command().arg("--data-dir").arg(&data).args(["load", id]));
        assert_eq!(
            expect_success("load", &o),
            format!("{}\n", read_fixture(name)),
            "load prints {name}"
        );
    }

    // 3. `store` from the command line; `load -o` gives the same file back.
    let file = fixture(PROGRAMS[1]);
    let o = run(command()
        .arg("--data-dir")
        .arg(&data)
        .arg("store")
        .arg(&file)
        .args(["--signature", "CliStored", "--version", "2.1.0"])
        .args(["--meta", "optimization_method=miprov2"])
        .args(["--meta", "performance={\"accuracy\": 0.91}"])
        .args(["--meta", "team=search"]));
    let stored: Value = serde_json::from_str(&expect_success("store", &o)).expect("JSON answer");
    assert_eq!(stored["signature"], "CliStored");
    assert_eq!(stored["version"], "2.1.0");
    let cli_id = stored["id"].as_str().unwrap().to_owned();
    let out = dir.path().join("cli-stored.json");
    let o = run(command()
        .arg("--data-dir")
        .arg(&data)
        .args(["load", &cli_id, "-o"])
        .arg(&out));
    expect_success("load -o", &o);
    assert_eq!(
        std::fs::read(&out).unwrap(),
        std::fs::read(&file).unwrap(),
        "store then load -o gives an identical file"
    );
    // The same version again fails with a message, and stores nothing.
    let o = run(command()
        .arg("--data-dir")
        .arg(&data)
        .arg("store")
        .arg(&file)
        .args(["--signature", "CliStored", "--version", "2.1.0"]));
    expect_failure("a taken version", &o, 1, "2.1.0");
    // Bad input fails cleanly.
    let o = run(command()
        .arg("--data-dir")
        .arg(&data)
        .args(["load", "not-an-id"]));
    expect_failure("load of a malformed id", &o, 1, "not-an-id");
    let o = run(command()
        .arg("--data-dir")
        .arg(&data)
        .args(["load", "0190a5c2-7b1e-7c3d-8e4f-123456789abc"]));
    expect_failure(
        "load of an unknown id",
        &o,
        1,
        "0190a5c2-7b1e-7c3d-8e4f-123456789abc",
    );
    let o = run(command()
        .arg("--data-dir")
        .arg(&data)
        .arg("store")
        .arg(&file)
        .args(["--signature", "Bad/Sig"]));
    expect_failure("an invalid signature", &o, 1, "contains '/'");
    let o = run(command()
        .arg("--data-dir")
        .arg(&data)
        .arg("store")
        .arg(dir.path().join("missing.json"))
        .args(["--signature", "CliStored"]));
    expect_failure("a missing file", &o, 1, "missing.json");

    // 4. A restarted server sees everything: the HTTP programs and the command-line one.
    let server = Server::start(serve_embedded(&data)).await;
    for (id, name) in ids.iter().zip(PROGRAMS) {
        let a = get(&server, &format!("/programs/{id}")).await;
        a.expect("after restart", 200);
        assert_eq!(a.raw_program(), read_fixture(name), "{name} after restart");
    }
    let a = get(&server, "/signatures/CliStored/versions").await;
    let list = a.expect("CliStored versions", 200);
    assert_eq!(list["versions"].as_array().unwrap().len(), 1, "{list}");
    assert_eq!(list["versions"][0]["id"], cli_id.as_str());
    assert_eq!(list["versions"][0]["performance"], 0.91);
    let a = get(&server, &format!("/programs/{cli_id}/metadata")).await;
    let meta = a.expect("metadata", 200);
    assert_eq!(meta["metadata"]["team"], "search");
    assert_eq!(meta["metadata"]["optimization_method"], "miprov2");
    assert_eq!(meta["metadata"]["performance"], json!({"accuracy": 0.91}));
    assert_eq!(meta["version"], "2.1.0");
}

#[tokio::test]
async fn flags_are_read_from_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("from-env");
    let mut cmd = command();
    cmd.arg("serve")
        .env("DSPY_STORAGE_DATA_DIR", &data)
        .env("DSPY_STORAGE_ADDR", "127.0.0.1:0")
        .env("DSPY_STORAGE_MAX_BODY_BYTES", "2000")
        .env("DSPY_STORAGE_COMPRESSION", "none");
    let id = {
        let server = Server::start(cmd).await;
        // It says where it listens (the line the harness read), the backend and the data dir.
        let want = format!("  backend: embedded, data in {}", data.display());
        let said = || server.log().lines().any(|l| l == want);
        for _ in 0..50 {
            if said() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(
            said(),
            "serve names its backend and data dir ({want:?}):\n{}",
            server.log()
        );
        let a = post_program(
            &server,
            r#"{"small": true}"#,
            &json!({"signature": "FromEnv"}),
        )
        .await;
        let id = a.expect("store", 201)["id"].as_str().unwrap().to_owned();
        // DSPY_STORAGE_MAX_BODY_BYTES=2000: a 3000-byte body is too large.
        let big = format!(r#"{{"x": "{}"}}"#, "y".repeat(3000));
        let a = post_program(&server, &big, &json!({"signature": "FromEnv"})).await;
        let e = a.expect("over the env limit", 413);
        assert_eq!(e["error"]["code"], "payload_too_large");
        id
    };
    // DSPY_STORAGE_DATA_DIR: the data went where the environment said.
    assert!(
        data.is_dir(),
        "the data dir from the environment was created"
    );
    let o = run(command()
        .env("DSPY_STORAGE_DATA_DIR", &data)
        .args(["load", &id]));
    assert_eq!(
        expect_success("load from env dir", &o),
        "{\"small\": true}\n"
    );
    // Another data dir from the environment does not have it; --data-dir wins over the environment.
    let empty = dir.path().join("empty");
    let o = run(command()
        .env("DSPY_STORAGE_DATA_DIR", &empty)
        .args(["load", &id]));
    expect_failure("another data dir does not have the program", &o, 1, &id);
    let o = run(command()
        .env("DSPY_STORAGE_DATA_DIR", &empty)
        .arg("--data-dir")
        .arg(&data)
        .args(["load", &id]));
    expect_success("--data-dir overrides the environment", &o);
    // Store command settings from the environment too.
    let o = run(command()
        .env("DSPY_STORAGE_DATA_DIR", &data)
        .env("DSPY_STORAGE_SIGNATURE", "FromEnv")
        .env("DSPY_STORAGE_VERSION", "7.0.0")
        .arg("store")
        .arg(fixture(PROGRAMS[0])));
    let v: Value = serde_json::from_str(&expect_success("store from env", &o)).unwrap();
    assert_eq!(v["signature"], "FromEnv");
    assert_eq!(v["version"], "7.0.0");
    // An invalid value from the environment is refused.
    let o = run(command()
        .env("DSPY_STORAGE_DATA_DIR", &data)
        .env("DSPY_STORAGE_BACKEND", "nosuch")
        .args(["load", &id]));
    expect_failure("DSPY_STORAGE_BACKEND=nosuch", &o, 2, "nosuch");
}

fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{prefix}-{}-{nanos}", std::process::id())
}

#[tokio::test]
async fn serve_on_the_aws_backend() {
    if !dspy_storage_core::testing::aws_test_enabled("serve --backend aws") {
        return;
    }
    let table = unique("dspy-cli");
    let bucket = unique("dspy-cli");
    let mut cmd = command();
    cmd.args(["serve", "--addr", "127.0.0.1:0", "--backend", "aws"])
        .args(["--table", &table, "--bucket", &bucket, "--create"]);
    let ids = {
        let server = Server::start(cmd).await;
        let health = get(&server, "/health").await.expect("health", 200);
        assert_eq!(health["status"], "ok");
        round_trip_real_programs(&server, "aws serve").await
    };
    // The commands on the same table and bucket (no --create: they exist now).
    let dir = tempfile::tempdir().unwrap();
    for (id, name) in ids.iter().zip(PROGRAMS) {
        let out = dir.path().join(name);
        let o = run(command()
            .args(["--backend", "aws", "--table", &table, "--bucket", &bucket])
            .args(["load", id, "-o"])
            .arg(&out));
        expect_success("aws load -o", &o);
        assert_eq!(
            std::fs::read(&out).unwrap(),
            std::fs::read(fixture(name)).unwrap(),
            "aws load -o {name}"
        );
    }
    let o = run(command()
        .env("DSPY_STORAGE_BACKEND", "aws")
        .env("DSPY_STORAGE_TABLE", &table)
        .env("DSPY_STORAGE_BUCKET", &bucket)
        .arg("store")
        .arg(fixture(PROGRAMS[0]))
        .args(["--signature", "CliProgram0"]));
    let v: Value = serde_json::from_str(&expect_success("aws store", &o)).unwrap();
    assert_eq!(v["version"], "1.0.1", "next patch after the served 1.0.0");
    // --backend aws without a table is refused with a message.
    let o = run(command().args(["--backend", "aws", "load", &ids[0]]));
    expect_failure("--backend aws without a table", &o, 1, "--table");
    // A table this build created has the keys-only indexes: migrating it changes nothing.
    let o = run(command()
        .args(["--backend", "aws", "--table", &table, "--bucket", &bucket])
        .arg("migrate-indexes"));
    let v: Value = serde_json::from_str(&expect_success("aws migrate-indexes", &o)).unwrap();
    assert_eq!(v["steps"], serde_json::json!([]), "{v}");
    let mut names: Vec<String> = serde_json::from_value(v["indexes"].clone()).unwrap();
    names.sort();
    assert_eq!(names, ["GSI1K", "GSI2K", "GSI3K", "GSI4K"], "{v}");
    // The embedded store has no such indexes.
    let o = run(command().args(["--backend", "embedded", "migrate-indexes"]));
    expect_failure("embedded migrate-indexes", &o, 1, "--backend aws");
}

/// The registry commands work on the embedded backend directly: versions, alias set/get/rm
/// (with compare-and-set), rollback, diff and show --prompt.
#[test]
fn registry_commands_on_the_embedded_backend() {
    let dir = tempfile::tempdir().expect("temp dir");
    let cli = |args: &[&str]| {
        let mut cmd = command();
        cmd.arg("--data-dir").arg(dir.path()).args(args);
        run(&mut cmd)
    };
    let react = fixture("dspy_react_optimized.json");
    let react = react.to_str().expect("UTF-8 path");
    let mut edited: Value =
        serde_json::from_str(&read_fixture("dspy_react_optimized.json")).unwrap();
    edited["react"]["signature"]["instructions"] = Value::String("Think, then act.".into());
    let edited_path = dir.path().join("edited.json");
    std::fs::write(&edited_path, serde_json::to_string(&edited).unwrap()).unwrap();
    let edited_path = edited_path.to_str().unwrap().to_owned();

    let store = |file: &str, version: &str| -> Value {
        let out = cli(&[
            "store",
            file,
            "--signature",
            "qa.React",
            "--version",
            version,
        ]);
        serde_json::from_str(&expect_success("store", &out)).expect("store prints JSON")
    };
    let first = store(react, "1.0.0");
    store(&edited_path, "1.1.0");

    let versions: Value =
        serde_json::from_str(&expect_success("versions", &cli(&["versions", "qa.React"]))).unwrap();
    let listed: Vec<&str> = versions
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["version"].as_str().unwrap())
        .collect();
    assert_eq!(listed, ["1.0.0", "1.1.0"]);

    expect_success(
        "alias set",
        &cli(&["alias", "set", "qa.React", "production", "1.0.0"]),
    );
    let out = cli(&[
        "alias",
        "set",
        "qa.React",
        "production",
        "1.1.0",
        "--expect",
        "1.1.0",
    ]);
    expect_failure("a compare-and-set from the wrong version", &out, 1, "1.1.0");
    expect_success(
        "alias set --expect",
        &cli(&[
            "alias",
            "set",
            "qa.React",
            "production",
            "1.1.0",
            "--expect",
            "1.0.0",
        ]),
    );
    let target: Value = serde_json::from_str(&expect_success(
        "alias get",
        &cli(&["alias", "get", "qa.React", "production"]),
    ))
    .unwrap();
    assert_eq!(target["version"], "1.1.0");
    let versions: Value =
        serde_json::from_str(&expect_success("versions", &cli(&["versions", "qa.React"]))).unwrap();
    assert_eq!(versions[1]["aliases"], serde_json::json!(["production"]));

    let rolled: Value = serde_json::from_str(&expect_success(
        "rollback",
        &cli(&["rollback", "qa.React", "--to", "1.0.0"]),
    ))
    .unwrap();
    assert_eq!(rolled["version"], "1.1.1");
    assert_eq!(
        rolled["sha256"], first["sha256"],
        "a rollback repeats the target byte for byte"
    );

    let diff: Value = serde_json::from_str(&expect_success(
        "diff",
        &cli(&["diff", "qa.React", "1.0.0", "1.1.0"]),
    ))
    .unwrap();
    assert!(
        diff.to_string().contains("Think, then act."),
        "diff shows the new instructions: {diff}"
    );

    let id = rolled["id"].as_str().unwrap();
    let prompt = expect_success("show --prompt", &cli(&["show", id, "--prompt"]));
    assert!(prompt.contains('#'), "Markdown headings: {prompt}");
    let original: Value = serde_json::from_str(&read_fixture("dspy_react_optimized.json")).unwrap();
    let instructions = original["react"]["signature"]["instructions"]
        .as_str()
        .unwrap();
    assert!(
        prompt.contains(instructions.lines().next().unwrap()),
        "prompt shows the instructions"
    );

    expect_success("alias rm", &cli(&["alias", "rm", "qa.React", "production"]));
    assert!(!cli(&["alias", "get", "qa.React", "production"])
        .status
        .success());
    assert!(!cli(&["rollback", "qa.React", "--to", "9.9.9"])
        .status
        .success());
}

/// `alias policy set|get|rm` and `alias history`: the CLI works as admin (a protected alias
/// moves), a gate refuses a version whose metrics do not meet it (exit 1, the failed requirement
/// on stderr), `--override` moves it with the reason recorded, and the history names `cli`.
#[test]
fn alias_policy_and_history_commands() {
    let dir = tempfile::tempdir().expect("temp dir");
    let cli = |args: &[&str]| {
        let mut cmd = command();
        cmd.arg("--data-dir").arg(dir.path()).args(args);
        run(&mut cmd)
    };
    let react = fixture("dspy_react_optimized.json");
    let react = react.to_str().expect("UTF-8 path");
    let mut ids = Vec::new();
    for v in ["1.0.0", "1.0.1"] {
        let out = cli(&["store", react, "--signature", "cli.Gate", "--version", v]);
        let stored: Value = serde_json::from_str(&expect_success("store", &out)).unwrap();
        ids.push(stored["id"].as_str().unwrap().to_owned());
    }
    for (id, value) in [(&ids[0], "0.95"), (&ids[1], "0.7")] {
        for _ in 0..2 {
            expect_success(
                "metrics record",
                &cli(&[
                    "metrics",
                    "record",
                    id,
                    "--metric",
                    &format!("accuracy={value}"),
                ]),
            );
        }
    }
    let set: Value = serde_json::from_str(&expect_success(
        "alias policy set",
        &cli(&[
            "alias",
            "policy",
            "set",
            "cli.Gate",
            "production",
            "--protected",
            "--metric",
            "accuracy",
            "--min",
            "0.9",
            "--min-records",
            "2",
            "--window",
            "7d",
        ]),
    ))
    .unwrap();
    assert_eq!(set["protected"], true);
    assert_eq!(set["require"]["min"], 0.9);
    assert_eq!(set["updated_by"], "cli");
    let bad = cli(&[
        "alias",
        "policy",
        "set",
        "cli.Gate",
        "production",
        "--metric",
        "a",
        "--min-records",
        "-1",
    ]);
    expect_failure("a negative min_records", &bad, 1, "min_records");
    let got: Value = serde_json::from_str(&expect_success(
        "alias policy get",
        &cli(&["alias", "policy", "get", "cli.Gate", "production"]),
    ))
    .unwrap();
    assert_eq!(got["rev"], set["rev"]);
    expect_success(
        "a version that meets the gate",
        &cli(&["alias", "set", "cli.Gate", "production", "1.0.0"]),
    );
    let refused = cli(&["alias", "set", "cli.Gate", "production", "1.0.1"]);
    expect_failure(
        "a version below the gate",
        &refused,
        1,
        "accuracy mean 0.700 over 2 records in the last 7d < min 0.9",
    );
    let moved: Value = serde_json::from_str(&expect_success(
        "alias set --override",
        &cli(&[
            "alias",
            "set",
            "cli.Gate",
            "production",
            "1.0.1",
            "--override",
            "rollback drill",
        ]),
    ))
    .unwrap();
    assert_eq!(moved["version"], "1.0.1");
    assert_eq!(moved["history"]["action"], "override");
    let history = expect_success(
        "alias history",
        &cli(&["alias", "history", "cli.Gate", "production"]),
    );
    let entries: Vec<Value> = history
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let actions: Vec<&str> = entries
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        ["override", "refused", "move", "policy_set"],
        "{history}"
    );
    assert!(entries.iter().all(|e| e["by"] == "cli"), "{history}");
    assert_eq!(entries[0]["override_reason"], "rollback drill");
    assert_eq!(entries[1]["gate"]["records"], 2);
    let first = expect_success(
        "alias history --limit 1",
        &cli(&["alias", "history", "cli.Gate", "production", "--limit", "1"]),
    );
    assert_eq!(first.lines().count(), 1);
    expect_success(
        "alias policy rm",
        &cli(&["alias", "policy", "rm", "cli.Gate", "production"]),
    );
    expect_failure(
        "no policy left",
        &cli(&["alias", "policy", "get", "cli.Gate", "production"]),
        1,
        "has no policy",
    );
}

#[test]
fn search_command_uses_the_query_language() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("p.json");
    std::fs::write(&file, read_fixture(PROGRAMS[0])).unwrap();
    let mut ids = Vec::new();
    for (perf, tag) in [("0.7", "exp"), ("0.9", "prod"), ("0.8", "prod")] {
        let out = run(command()
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .args(["store", "--signature", "Searched", "--meta"])
            .arg(format!("performance={perf}"))
            .arg("--meta")
            .arg(format!("tags=[\"{tag}\"]"))
            .arg(&file));
        let v: Value = serde_json::from_str(&expect_success("store", &out)).unwrap();
        ids.push(v["id"].as_str().unwrap().to_owned());
    }
    let search = |args: &[&str]| {
        run(command()
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .arg("search")
            .args(args))
    };
    let out = search(&["signature:Searched tag:prod", "--sort=-performance"]);
    let v: Value = serde_json::from_str(&expect_success("search", &out)).unwrap();
    let got: Vec<&str> = v["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert_eq!(got, vec![ids[1].as_str(), ids[2].as_str()]);
    let out = search(&["signature:Searched", "--limit", "1", "--all", "--brief"]);
    let text = expect_success("search --all --brief", &out);
    assert_eq!(text.lines().count(), 3, "{text}");
    assert!(text.contains("Searched v1.0.2"), "{text}");
    let out = search(&["performance>"]);
    expect_failure("a query syntax error", &out, 1, "position 12");
}

#[test]
fn cleanup_archive_and_restore_commands_on_the_embedded_backend() {
    let dir = tempfile::tempdir().expect("temp dir");
    let cli = |args: &[&str]| {
        let mut cmd = command();
        cmd.arg("--data-dir").arg(dir.path()).args(args);
        run(&mut cmd)
    };
    let react = fixture("dspy_react_optimized.json");
    let react = react.to_str().expect("UTF-8 path");
    let now = chrono::Utc::now();
    let mut ids = Vec::new();
    for (version, days) in [("1.0.0", 400), ("1.0.1", 200), ("1.0.2", 1)] {
        let created = (now - chrono::Duration::days(days)).to_rfc3339();
        let out = cli(&[
            "store",
            react,
            "--signature",
            "qa.Old",
            "--version",
            version,
            "--meta",
            &format!("created_at={created}"),
        ]);
        let stored: Value = serde_json::from_str(&expect_success("store", &out)).unwrap();
        ids.push(stored["id"].as_str().unwrap().to_owned());
    }
    let versions_of = |report: &Value, list: &str| -> Vec<String> {
        report[list]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["version"].as_str().unwrap().to_owned())
            .collect()
    };
    let dry: Value = serde_json::from_str(&expect_success(
        "cleanup --dry-run",
        &cli(&["cleanup", "--dry-run", "--keep-latest", "1"]),
    ))
    .unwrap();
    assert_eq!(dry["dry_run"], true);
    assert_eq!(versions_of(&dry, "deleted"), ["1.0.0"]);
    assert_eq!(versions_of(&dry, "archived"), ["1.0.1"]);
    expect_success("load after the dry run", &cli(&["load", &ids[0]]));

    let real: Value = serde_json::from_str(&expect_success(
        "cleanup",
        &cli(&["cleanup", "--keep-latest", "1"]),
    ))
    .unwrap();
    for list in ["kept", "archived", "deleted"] {
        assert_eq!(real[list], dry[list], "{list}");
    }
    let out = cli(&["load", &ids[1]]);
    expect_failure("an archived program", &out, 1, "cold storage");
    expect_failure(
        "a deleted program",
        &cli(&["load", &ids[0]]),
        1,
        "no program with id",
    );

    let restored: Value =
        serde_json::from_str(&expect_success("restore", &cli(&["restore", &ids[1]]))).unwrap();
    assert_eq!(restored["status"], "active");
    let loaded = expect_success("load restored", &cli(&["load", &ids[1]]));
    assert_eq!(
        loaded.trim_end(),
        read_fixture("dspy_react_optimized.json").trim_end()
    );

    let archived: Value =
        serde_json::from_str(&expect_success("archive", &cli(&["archive", &ids[2]]))).unwrap();
    assert_eq!(archived["status"], "archived");
    let out = cli(&["cleanup", "--dry-run", "--as-of", "not a time"]);
    expect_failure("cleanup --as-of not a time", &out, 1, "--as-of");
}

#[tokio::test]
async fn serve_with_an_auth_file_checks_tokens_roles_and_projects() {
    let dir = tempfile::tempdir().unwrap();
    let auth = dir.path().join("auth.toml");
    // sha256("cli-writer-token"), sha256("cli-reader-token")
    std::fs::write(
        &auth,
        r#"
[[token]]
name = "writer"
sha256 = "dce9d67d2628d93ee6ce3df1bb598e0e6b46407ddc3cdbc896b3e3a389a1f4d1"
projects = ["team-a"]
role = "writer"

[[token]]
sha256 = "6c5eaea129b5483676b0ffdef6c5b679ffbdc0e2131bb5f14038b482cf8c0f51"
projects = ["*"]
role = "reader"
"#,
    )
    .unwrap();
    let mut cmd = serve_embedded(&dir.path().join("data"));
    cmd.arg("--auth-file").arg(&auth);
    let server = Server::start(cmd).await;
    let body = |project: &str| {
        format!(
            r#"{{"program": {{"x": 1}}, "metadata": {{"signature": "Auth", "project": "{project}"}}}}"#
        )
    };
    let post = |token: Option<&'static str>, project: &str| {
        let mut req = reqwest::Client::new()
            .post(server.url("/programs"))
            .header("content-type", "application/json")
            .body(body(project));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        send(req)
    };
    assert_eq!(
        post(None, "team-a").await.expect("no token", 401)["error"]["code"],
        "unauthenticated"
    );
    post(Some("wrong"), "team-a")
        .await
        .expect("unknown token", 401);
    let stored = post(Some("cli-writer-token"), "team-a")
        .await
        .expect("writer in its project", 201);
    post(Some("cli-writer-token"), "team-b")
        .await
        .expect("writer elsewhere", 404);
    assert_eq!(
        post(Some("cli-reader-token"), "team-a")
            .await
            .expect("reader writes", 403)["error"]["code"],
        "forbidden"
    );
    let id = stored["id"].as_str().unwrap();
    let read = send(
        reqwest::Client::new()
            .get(server.url(&format!("/programs/{id}")))
            .bearer_auth("cli-reader-token"),
    )
    .await;
    read.expect("reader reads", 200);
    get(&server, "/health")
        .await
        .expect("health is public", 200);
    let log = server.log();
    assert!(!log.contains("ACCESS CONTROL IS OFF"), "{log}");
    for secret in [
        "cli-writer-token",
        "cli-reader-token",
        "dce9d67d2628d93ee6ce3df1bb598e0e6b46407ddc3cdbc896b3e3a389a1f4d1",
    ] {
        assert!(!log.contains(secret), "a secret in the server log: {log}");
    }
    drop(server);

    // Without --auth-file: open, and it says so loudly.
    let server = Server::start(serve_embedded(&dir.path().join("data"))).await;
    get(&server, &format!("/programs/{id}"))
        .await
        .expect("access control off", 200);
    assert!(
        server.log().contains("access control is OFF"),
        "{}",
        server.log()
    );
}

/// Runs the CLI with stdout a pipe whose reader reads `keep` bytes and closes it (`| head -c
/// keep`); the command must end quietly: status 0, no panic, nothing about the pipe on stderr.
fn closed_pipe(dir: &Path, args: &[&str], keep: usize) -> (Vec<u8>, String) {
    use std::io::Read;
    let mut cmd = command();
    cmd.arg("--data-dir")
        .arg(dir)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn dspy-storage");
    let mut stdout = child.stdout.take().expect("stdout");
    let mut head = vec![0u8; keep];
    stdout.read_exact(&mut head).expect("the first bytes");
    drop(stdout); // the reader is gone
    let out = child.wait_with_output().expect("wait");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "{args:?} | head -c {keep}: exit {} with stderr {stderr}",
        out.status
    );
    for bad in ["panicked", "Broken pipe", "broken pipe", "failed printing"] {
        assert!(
            !stderr.contains(bad),
            "{args:?} | head -c {keep}: stderr {stderr}"
        );
    }
    (head, stderr)
}

#[test]
fn a_closed_stdout_pipe_ends_every_command_quietly() {
    let dir = tempfile::tempdir().expect("temp dir");
    let cli = |args: &[&str]| {
        let mut cmd = command();
        cmd.arg("--data-dir").arg(dir.path()).args(args);
        expect_success(&format!("{args:?}"), &run(&mut cmd))
    };
    // A program over 64 KiB (more than a pipe holds), with predictors for the prompt command.
    let big = json!({"predict": {"demos": [], "signature": {"instructions": "x".repeat(200_000), "fields": []}}});
    let path = dir.path().join("big.json");
    std::fs::write(&path, big.to_string()).unwrap();
    let stored: Value = serde_json::from_str(&cli(&[
        "store",
        path.to_str().unwrap(),
        "--signature",
        "pipe.Big",
    ]))
    .unwrap();
    let id = stored["id"].as_str().unwrap().to_owned();
    cli(&["store", path.to_str().unwrap(), "--signature", "pipe.Big"]);
    for i in 0..50 {
        cli(&[
            "metrics",
            "record",
            &id,
            "--metric",
            &format!("accuracy=0.{i:02}"),
        ]);
    }
    let (head, _) = closed_pipe(dir.path(), &["load", &id], 10);
    assert_eq!(head, br#"{"predict""#, "the program's first bytes");
    // Every command that prints, its reader gone after one byte (their output may fit in the
    // pipe; a reader that closes at once is the race-free case of the same thing).
    let commands: Vec<Vec<&str>> = vec![
        vec!["load", &id],
        vec!["show", &id],
        vec!["show", &id, "--prompt"],
        vec!["versions", "pipe.Big"],
        vec!["alias", "set", "pipe.Big", "production", "1.0.0"],
        vec!["alias", "get", "pipe.Big", "production"],
        vec!["diff", "pipe.Big", "1.0.0", "1.0.1"],
        vec!["search", "signature:pipe.Big"],
        vec!["search", "signature:pipe.Big", "--brief"],
        vec!["metrics", "history", &id],
        vec!["metrics", "record", &id, "--metric", "accuracy=0.5"],
        vec!["trend", &id],
        vec!["trend", "pipe.Big", "--signature"],
        vec!["report"],
        vec!["cleanup", "--dry-run"],
        vec!["backup", "create", "--name", "pipe"],
        vec!["backup", "list"],
        vec!["backup", "show", "pipe"],
    ];
    for args in &commands {
        closed_pipe(dir.path(), args, 1);
    }
    // And a reader that is gone before the command writes anything (race-free: every write
    // fails), for every command that changes nothing.
    let read_only = commands.iter().filter(|a| {
        !matches!(
            a.get(..2),
            Some(["alias", "set"] | ["metrics", "record"] | ["backup", "create"])
        )
    });
    for args in read_only {
        let mut cmd = command();
        cmd.arg("--data-dir")
            .arg(dir.path())
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && !stderr.contains("panicked"),
            "{args:?}: {} {stderr}",
            out.status
        );
    }
}
