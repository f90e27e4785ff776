//! End to end through the binary: `backup create|list|show|restore`, `export FILE` and
//! `import FILE` — a laptop store (embedded) moved to AWS and back when an AWS endpoint is
//! configured, every program byte-identical.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_dspy-storage");

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures")
        .join(name)
}

fn command(args: &[&str]) -> Command {
    let mut cmd = Command::new(BIN);
    for (key, _) in std::env::vars() {
        if key.starts_with("DSPY_STORAGE_") {
            cmd.env_remove(key);
        }
    }
    cmd.env("RUST_LOG", "warn").args(args).stdin(Stdio::null());
    cmd
}

fn ok(what: &str, out: Output) -> Value {
    assert!(
        out.status.success(),
        "{what} failed: stdout {} stderr {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
}

fn embedded(dir: &Path, args: &[&str]) -> Value {
    let mut full = vec!["--data-dir", dir.to_str().unwrap()];
    full.extend_from_slice(args);
    ok(&format!("{args:?}"), command(&full).output().unwrap())
}

fn load(dir: &Path, id: &str) -> Vec<u8> {
    command(&["--data-dir", dir.to_str().unwrap(), "load", id])
        .output()
        .unwrap()
        .stdout
}

#[test]
fn backup_export_and_import_through_the_cli() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    let mut ids = Vec::new();
    for name in [
        "dspy_react_optimized.json",
        "dspyrb_chain_of_thought_miprov2.json",
    ] {
        let stored = embedded(
            &a,
            &[
                "store",
                fixture(name).to_str().unwrap(),
                "--signature",
                "qa.Cli",
            ],
        );
        ids.push(stored["id"].as_str().unwrap().to_owned());
    }
    embedded(&a, &["alias", "set", "qa.Cli", "production", "1.0.0"]);

    let made = embedded(&a, &["backup", "create", "--name", "cli-1"]);
    assert_eq!(made["programs_count"], 2, "{made}");
    let list = embedded(&a, &["backup", "list"]);
    assert_eq!(list[0]["backup_name"], "cli-1");
    let manifest = embedded(&a, &["backup", "show", "cli-1"]);
    assert_eq!(manifest["format_version"], 1);

    let file = tmp.path().join("store.tar");
    let exported = embedded(&a, &["export", file.to_str().unwrap()]);
    assert_eq!(exported["programs_count"], 2, "{exported}");
    let imported = embedded(&b, &["import", file.to_str().unwrap()]);
    assert_eq!(imported["restored_programs"], 2, "{imported}");
    for id in &ids {
        assert_eq!(load(&a, id), load(&b, id), "program {id}");
    }
    let alias = embedded(&b, &["alias", "get", "qa.Cli", "production"]);
    assert_eq!(alias["id"], ids[0].as_str());
    // Importing again is harmless.
    let again = embedded(&b, &["import", file.to_str().unwrap()]);
    assert_eq!(again["restored_programs"], 0, "{again}");

    // A file that is not an export is refused with a message.
    std::fs::write(tmp.path().join("junk.tar"), b"junk").unwrap();
    let out = command(&[
        "--data-dir",
        b.to_str().unwrap(),
        "import",
        tmp.path().join("junk.tar").to_str().unwrap(),
    ])
    .output()
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "a junk import fails: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(
        stderr.contains("junk.tar") || stderr.contains("export"),
        "the message says what is wrong: {stderr}"
    );

    // Laptop → AWS → laptop.
    if !dspy_storage_core::testing::aws_test_enabled("the AWS leg of export/import") {
        return;
    }
    let name = format!(
        "cli-backup-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis()
    );
    let aws_args = |extra: &[&str]| -> Value {
        let mut full = vec![
            "--backend",
            "aws",
            "--table",
            &name,
            "--bucket",
            &name,
            "--create",
        ];
        full.extend_from_slice(extra);
        ok(&format!("aws {extra:?}"), command(&full).output().unwrap())
    };
    let r = aws_args(&["import", file.to_str().unwrap()]);
    assert_eq!(r["restored_programs"], 2, "{r}");
    let back = tmp.path().join("back.tar");
    aws_args(&["export", back.to_str().unwrap()]);
    let c = tmp.path().join("c");
    embedded(&c, &["import", back.to_str().unwrap()]);
    for id in &ids {
        assert_eq!(load(&a, id), load(&c, id), "program {id} after AWS");
    }
}
