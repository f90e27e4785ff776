//! The item-store data model: every key of the single-table design ([`keys`]), the records kept
//! under those keys and how each maps to an item ([`record`]), and the counters written beside
//! them ([`counters`]), and the free-text index entries derived from program records ([`text`]).

pub mod counters;
pub mod keys;
pub mod record;
pub mod text;
