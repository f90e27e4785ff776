//! dspy-storage core: the storage engine for optimized DSPy programs.
//!
//! Knows nothing of HTTP or Lambda. The [`service::Storage`] type is the API the functions, the
//! CLI and the tests use; it runs over any pair of [`backend::ItemStore`] and
//! [`backend::BlobStore`].

pub mod access;
pub mod backend;
pub mod backup;
pub mod cache;
pub mod chart;
pub mod codec;
pub mod config;
pub mod cursor;
pub mod domain;
pub mod dspy;
pub mod envelope;
pub mod error;
pub mod events;
pub mod keys;
pub mod maintenance;
pub mod metrics;
pub mod open;
pub mod query;
pub mod record;
pub mod registry;
pub mod report;
pub mod retention;
pub mod rollup;
pub mod runs;
pub mod service;
pub mod service_dspy;
#[doc(hidden)]
pub mod testing;
pub mod trend;

pub use error::{Error, Result};
