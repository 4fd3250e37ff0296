//! tandemd as a library: the daemon's components, so tests, benches, examples and fuzz
//! targets can drive them directly.
//!
//! [`event_loop`] does the I/O and calls into the [`engine`], which owns the core node and
//! the session store; [`resp`] is the session API, [`ops`] what operators see (HTTP,
//! status, metrics, logs, hooks), `vip` the floating VIPs, [`config`] what the operator
//! gives, [`io`] the operating system's side (sockets, clock, descriptors), [`cli`] the
//! operator's tools. The folders are layered, bottom up: engine, io, vip, config, resp, ops,
//! then cli and the event loop; a folder imports only folders below it, and no two modules
//! import each other, directly or through others (`scripts/module-cycles.py`, run in CI).
pub mod cli;
pub mod config;
pub mod engine;
pub mod event_loop;
pub mod io;
pub mod ops;
pub mod resp;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub(crate) mod vip;
