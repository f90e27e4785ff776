//! Retention: the pure planner ([`policy`]: a signature's versions and a policy → one decision
//! per program, with its reason) and what applies it ([`cleanup`]: the cleanup run, orphan
//! collection; [`archive`]: archive and restore of one program's blob).

pub mod archive;
pub mod cleanup;
pub mod policy;

pub use policy::*;
