//! The integration tests of dspy-storage: ONE test binary (`it`), one module per area, so that
//! the workspace links the AWS SDKs into one test executable instead of one per file.
//!
//! All modules run in one process, concurrently: a test must not set environment variables or
//! install process-wide state (a global tracing subscriber, a fixed port or path) for itself
//! alone. Select one area with its module path, e.g.
//! `cargo test -p dspy-storage-tests --test it conformance::`, or a benchmark with
//! `cargo test -p dspy-storage-tests --test it bench_search:: -- --ignored --nocapture`.

mod access;
mod api;
mod backup;
mod bench_backup;
mod bench_search;
mod bench_trends;
mod conformance;
mod consumed_capacity;
mod cursors;
mod dashboard;
mod dspy;
mod encryption;
mod events;
mod faults;
mod fuzz;
mod hostile;
mod indexes;
mod lambda;
mod policy;
mod registry;
mod request_counts;
mod retention;
mod search;
mod trends;
