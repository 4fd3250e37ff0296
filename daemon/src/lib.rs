//! tandemd as a library: the daemon's components, so tests, examples and fuzz targets can
//! drive them directly.
pub mod commands;
pub mod resp;
pub mod resp_server;
pub mod store;
