//! tandemd as a library: the daemon's components, so benches and tests can drive them.
pub mod clock;
pub mod cluster;
pub mod config;
pub mod event_loop;
pub mod hooks;
pub mod http;
pub mod incarnation;
pub mod metrics;
pub mod net;
pub mod notify;
pub mod status;
