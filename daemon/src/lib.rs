//! tandemd as a library: the daemon's components, so benches and tests can drive them.
pub mod clock;
pub mod config;
pub mod net;
