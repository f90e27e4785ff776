//! The bytes of a stored program: compression and checksums ([`codec`]) and envelope encryption
//! with per-program data keys ([`envelope`]).

pub mod codec;
pub mod envelope;
