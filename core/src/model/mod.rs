//! The item-store data model: every key of the single-table design ([`keys`]), the records kept
//! under those keys and how each maps to an item ([`record`]), and the counters written beside
//! them ([`counters`]), the free-text index entries derived from program records ([`text`]), and alias policies and
//! history ([`policy`]).

pub mod counters;
pub mod keys;
pub mod policy;
pub mod record;
pub mod text;
