//! Performance tracking: metric records and their history ([`metrics`]), the per-day rollups
//! written beside them ([`rollup`]), trends and time series ([`trend`]), counters and the
//! monitoring report ([`report`]), optimization runs ([`runs`]) and the SVG charts ([`chart`]).

pub mod chart;
pub mod metrics;
pub mod report;
pub mod rollup;
pub mod runs;
pub mod trend;
