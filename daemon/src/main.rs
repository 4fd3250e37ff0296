//! tandemd: the tandem cluster daemon, and the operator's tools (`keygen`, `check`, `status`).
//!
//! Exit codes: 0 clean stop (SIGTERM/SIGINT, after sending Leave), 1 runtime failure (a socket
//! or the event loop failed; `status`: the node could not be read), 2 configuration error (one
//! line per problem on stderr; clap's own usage errors exit 2 too).

use std::process::ExitCode;

use clap::Parser;
use tandemd::cli::{check, keygen, status_view, Args, Command};
use tandemd::config::{self, Cli, Config, ConfigErrors};
use tandemd::event_loop::{Daemon, DaemonError};
use tracing::{error, warn};

/// Every write allocates and frees small buffers (the value, the replication record); glibc's
/// allocator was a fifth of a replica's time under pipelined writes.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let args = Args::parse();
    match args.command {
        None if args.test_config => run_check(args.daemon),
        None => run_daemon(args.daemon),
        Some(Command::Check(cli)) => run_check(*cli),
        Some(Command::Keygen(k)) => match keygen::run(&k) {
            Ok(out) => {
                print!("{out}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("tandemd keygen: {e}");
                ExitCode::from(2)
            }
        },
        Some(Command::Status(s)) => match status_view::run(&s) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("tandemd status: {e}");
                ExitCode::from(1)
            }
        },
    }
}

fn run_daemon(cli: Cli) -> ExitCode {
    let cfg = match Config::load(cli) {
        Ok(c) => c,
        Err(problems) => return config_errors(&problems),
    };
    tandemd::ops::logging::init(&cfg.log_level, cfg.log_format);
    if cfg.insecure {
        warn!("--insecure: cluster frames are NOT authenticated; anyone on the link can join or forge membership");
    } else if cfg.keys.is_none() {
        warn!("no --key-file: cluster frames are not authenticated (allowed on loopback only)");
    }
    if let Some(w) = cfg
        .key_file
        .as_deref()
        .and_then(config::key_file_mode_warning)
    {
        warn!("{w}");
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

/// `tandemd check` / `-t`: "configuration ok" on stdout, or every problem on stderr (exit 2).
fn run_check(cli: Cli) -> ExitCode {
    let report = check::check(cli);
    for w in &report.warnings {
        eprintln!("tandemd: warning: {w}");
    }
    if !report.ok() {
        return config_errors(&report.problems);
    }
    println!("configuration ok");
    ExitCode::SUCCESS
}

fn config_errors(problems: &ConfigErrors) -> ExitCode {
    for p in &problems.0 {
        eprintln!("tandemd: config error: {p}");
    }
    ExitCode::from(2)
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
