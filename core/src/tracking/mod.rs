//! Performance tracking: metric records and their history ([`metrics`]), stored in compressed
//! blocks ([`blocks`]; records of the per-record layout converted by [`migrate`]), the per-day rollups
//! written beside them ([`rollup`]), trends and time series ([`trend`]), counters and the
//! monitoring report ([`report`]), optimization runs ([`runs`]) and the SVG charts ([`chart`]).

pub mod blocks;
pub mod chart;
pub mod metrics;
pub mod migrate;
pub mod record;
pub mod report;
pub mod rollup;
pub mod runs;
pub mod trend;
