//! What the CLI writes to stdout goes through here, so a reader that stops early (`dspy-storage
//! trend ID | head`, `load ID | head -c 10`) ends the command quietly instead of a panic: a
//! write that fails with `BrokenPipe` exits the process with status 0, as the reader asked for
//! no more. (SIGPIPE stays ignored, as Rust sets it: `serve` must live on when a client closes
//! its socket.)

use std::io::Write;

fn exit_on(e: std::io::Error) -> ! {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        std::process::exit(0);
    }
    eprintln!("error: cannot write to stdout: {e}");
    std::process::exit(1);
}

/// Writes `text` and a newline to stdout.
pub fn line(text: &str) {
    let mut out = std::io::stdout().lock();
    if let Err(e) = out
        .write_all(text.as_bytes())
        .and_then(|()| out.write_all(b"\n"))
    {
        exit_on(e);
    }
}

/// Flushes stdout (at the end of a command).
pub fn flush() {
    if let Err(e) = std::io::stdout().flush() {
        exit_on(e);
    }
}
