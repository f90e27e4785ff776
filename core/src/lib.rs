//! dspy-storage core: the storage engine for optimized DSPy programs.
//!
//! Knows nothing of HTTP or Lambda. The [`service::Storage`] type is the API the functions, the
//! CLI and the tests use; it runs over any pair of [`backend::ItemStore`] and
//! [`backend::BlobStore`].

pub mod backend;
pub mod backup;
pub mod cache;
pub mod codec;
pub mod config;
pub mod domain;
pub mod dspy;
pub mod error;
pub mod keys;
pub mod open;
pub mod record;
pub mod registry;
pub mod service;
pub mod service_dspy;

pub use error::{Error, Result};
