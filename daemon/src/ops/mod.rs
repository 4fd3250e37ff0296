//! What operators see and hook into: the HTTP endpoint (`/health`, `/status`, `/metrics`),
//! the counters behind it (the status snapshot is the engine's: `engine::status`), logging, `--on-change` hooks and systemd
//! readiness.

pub(crate) mod hooks;
pub mod http;
pub mod logging;
pub(crate) mod metrics;
pub(crate) mod notify;
