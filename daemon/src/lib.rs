//! tandemd as a library: the daemon's components, so tests, benches, examples and fuzz
//! targets can drive them directly.
pub mod cli;
pub mod config;
pub mod engine;
pub mod event_loop;
pub mod io;
pub mod ops;
pub mod resp;
#[cfg(feature = "testing")]
pub mod testing;
pub(crate) mod vip;
