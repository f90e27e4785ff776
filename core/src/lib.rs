//! dspy-storage core: the storage engine for optimized DSPy programs.
//!
//! Knows nothing of HTTP or Lambda. The [`Storage`] service is the API the functions, the CLI
//! and the tests use; it runs over any pair of [`backend::ItemStore`] and
//! [`backend::BlobStore`]. Data flows one way: a caller → a [`Storage`] operation → backend
//! primitives; every helper lives below its users (`bash scripts/check-modules.sh` checks it).
//!
//! Modules, lowest first:
//! * [`error`], [`domain`] (validated newtypes), [`config`], [`access`] (principals and scopes),
//!   [`retry`] (the one backoff/retry policy), [`paging`] (page limits and the one cursor codec);
//! * [`model`] (keys, records, counters of the single-table design), [`blob`] (codec,
//!   envelope encryption), [`backend`] (the two capability traits, the retry decorator, the
//!   embedded and AWS backends, the conformance suite), [`events`], [`cache`], [`dspy`] (pure
//!   functions over a program's JSON);
//! * [`storage`] (store, load, list, the registry), [`tracking`] (metrics, rollups, trends,
//!   report, optimization runs, charts), [`query`] (search), [`retention`] (policy, cleanup,
//!   archive), [`backup`];
//! * [`open`]: settings → a [`Storage`] on either backend.

pub mod access;
pub mod backend;
pub mod backup;
pub mod blob;
pub mod cache;
pub mod config;
pub mod domain;
pub mod dspy;
pub mod error;
pub mod events;
pub mod model;
pub mod open;
pub mod paging;
pub mod query;
pub mod retention;
pub mod retry;
pub mod storage;
#[doc(hidden)]
pub mod testing;
pub mod tracking;

pub use access::Principal;
pub use error::{Error, Result};
pub use storage::Storage;
