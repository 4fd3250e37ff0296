//! tandemd as a library: the daemon's components, so tests, benches, examples and fuzz
//! targets can drive them directly.
pub mod cipher;
pub mod cli;
pub mod clock;
pub mod cluster;
pub mod commands;
pub mod config;
pub mod descriptors;
pub mod event_loop;
pub mod floating;
pub mod hooks;
pub mod http;
pub mod ifaddr;
pub mod incarnation;
pub mod logging;
pub mod memory;
pub mod metrics;
pub mod net;
pub mod notify;
pub mod resp;
pub mod resp_server;
pub mod scripts;
pub mod sessions;
pub mod status;
pub mod store;
pub mod value;
pub mod vip;
