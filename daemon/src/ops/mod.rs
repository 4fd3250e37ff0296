//! What operators see and hook into: the HTTP endpoint (`/health`, `/status`, `/metrics`),
//! the status snapshot and counters behind it, logging, `--on-change` hooks and systemd
//! readiness.

pub(crate) mod hooks;
pub mod http;
pub mod logging;
pub(crate) mod metrics;
pub(crate) mod notify;
pub mod status;
