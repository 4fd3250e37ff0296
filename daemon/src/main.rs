//! tandemd: the tandem cluster daemon.
//!
//! Exit codes: 0 clean stop (SIGTERM/SIGINT, after sending Leave), 1 runtime failure (a socket
//! or the event loop failed), 2 configuration error (one line on stderr naming the problem;
//! clap's own usage errors exit 2 too).

use std::io::IsTerminal;
use std::process::ExitCode;

use tandemd::config::Config;
use tandemd::event_loop::{Daemon, DaemonError};
use tracing::{error, warn};

/// Every write allocates and frees small buffers (the value, the replication record); glibc's
/// allocator was a fifth of a replica's time under pipelined writes.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cfg = match Config::from_args() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("tandemd: config error: {e}");
            return ExitCode::from(2);
        }
    };
    init_logging(&cfg.log_level);
    if cfg.insecure {
        warn!("--insecure: cluster frames are NOT authenticated; anyone on the link can join or forge membership");
    } else if cfg.keys.is_none() {
        warn!("no --key-file: cluster frames are not authenticated (allowed on loopback only)");
    }
    let mut daemon = match Daemon::new(cfg) {
        Ok(d) => d,
        Err(e) => return fail(e),
    };
    match daemon.run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(e),
    }
}

fn fail(e: DaemonError) -> ExitCode {
    match e {
        DaemonError::Config(msg) => {
            eprintln!("tandemd: config error: {msg}");
            ExitCode::from(2)
        }
        DaemonError::Runtime(msg) => {
            error!("fatal: {msg}");
            ExitCode::from(1)
        }
    }
}

/// Logs to stderr; no colours unless stderr is a terminal, no timestamps under systemd
/// (the journal stamps each line itself).
fn init_logging(level: &str) {
    // Validated by Config::resolve; a fallback keeps logging on regardless.
    let filter = tracing_subscriber::EnvFilter::try_new(level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false);
    if std::env::var_os("JOURNAL_STREAM").is_some() {
        builder.without_time().init();
    } else {
        builder.init();
    }
}
