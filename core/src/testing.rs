//! Support for the project's tests (not part of the storage API): the gate of every test that
//! needs a local AWS, shared by the core's own tests and every test crate of the workspace.

/// The one gate of every test that needs a local AWS (LocalStack): true when `AWS_ENDPOINT_URL`
/// is set. Without it the test is skipped with a message naming `what` — unless
/// `DSPY_STORAGE_REQUIRE_AWS=1` (set by `scripts/test.sh`), where a missing endpoint is a failure.
/// When `DSPY_STORAGE_AWS_TEST_LOG` names a file, each test that goes ahead appends one line
/// (test binary, test thread, `what`) to it, so the test command can say how many AWS tests ran.
pub fn aws_test_enabled(what: &str) -> bool {
    if !std::env::var("AWS_ENDPOINT_URL").is_ok_and(|s| !s.trim().is_empty()) {
        assert!(
            std::env::var("DSPY_STORAGE_REQUIRE_AWS").as_deref() != Ok("1"),
            "DSPY_STORAGE_REQUIRE_AWS=1 but AWS_ENDPOINT_URL is not set ({what})"
        );
        report_skip(what);
        return false;
    }
    if let Some(path) = std::env::var_os("DSPY_STORAGE_AWS_TEST_LOG") {
        use std::io::Write;
        let binary = std::env::current_exe()
            .ok()
            .and_then(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
            .unwrap_or_default();
        // Test binaries carry a hash suffix (`conformance-1a2b…`); the name is what counts.
        let binary = match binary.rsplit_once('-') {
            Some((name, hash)) if hash.chars().all(|c| c.is_ascii_hexdigit()) => name.to_owned(),
            _ => binary,
        };
        let thread = std::thread::current();
        let line = format!("{binary}\t{}\t{what}\n", thread.name().unwrap_or("main"));
        // One write of one short line to a file opened for appending: lines from parallel tests
        // do not interleave.
        let written = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .and_then(|mut f| f.write_all(line.as_bytes()));
        if let Err(e) = written {
            eprintln!(
                "could not record the AWS test in {}: {e}",
                path.to_string_lossy()
            );
        }
    }
    true
}

/// Tests that skipped the AWS backend in this process.
static SKIPPED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Says, where the test harness cannot hide it, that a test skipped the AWS backend: one line per
/// skip naming the test and what it skipped, and at the process's exit one line with the count.
/// (`eprintln!` inside a test is captured by libtest and shown only when the test fails; a
/// direct write to the stderr handle is not captured.)
fn report_skip(what: &str) {
    use std::sync::atomic::Ordering;
    let thread = std::thread::current();
    let test = thread.name().unwrap_or("main");
    report(&format!(
        "SKIPPED the AWS backend in {test} ({what}): AWS_ENDPOINT_URL is not set \
         (a LocalStack: eval \"$(bash scripts/local-aws.sh env)\"; DSPY_STORAGE_REQUIRE_AWS=1 \
         makes this a failure)"
    ));
    if SKIPPED.fetch_add(1, Ordering::SeqCst) == 0 {
        // SAFETY: registers a plain `extern "C"` function with no captured state; it only reads
        // an atomic and writes to stderr.
        unsafe {
            libc::atexit(print_skip_count);
        }
    }
}

extern "C" fn print_skip_count() {
    let n = SKIPPED.load(std::sync::atomic::Ordering::SeqCst);
    let binary = std::env::current_exe()
        .ok()
        .and_then(|p| p.file_name().map(|s| s.to_string_lossy().into_owned()))
        .unwrap_or_default();
    report(&format!(
        "SKIPPED the AWS backend in {n} test(s) of {binary}: they ran on the embedded backend only"
    ));
}

/// Writes one line of a test's report to the stderr handle directly, where libtest does not
/// capture it (`eprintln!` inside a test is shown only when the test fails): `cargo test` and
/// the test command show it.
pub fn report(line: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "{line}");
}
