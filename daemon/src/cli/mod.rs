//! The `tandemd` command line: with no subcommand it runs the daemon (`tandemd --node-id 1
//! ...`); the subcommands are the operator's tools: `keygen`, `check` (or `-t`), `status`.

pub mod check;
pub mod keygen;
pub mod status_view;

use clap::{Parser, Subcommand};

use crate::config::Cli;

/// What `--help` adds after the flags: the key file format and where the tools are.
const AFTER_HELP: &str = "\
Key file (--key-file, mode 0600, the same file on every node): one key per line,
`id:32 hex digits` (a 16-byte AES-128 key, id 0..=255), `#` starts a comment. The first
key sends, a second one is still accepted (rotation). SIGHUP re-reads it.
  tandemd keygen --id 1          print a fresh key file
  tandemd keygen --rotate FILE   new key first, old key second (see `tandemd keygen --help`)
Check a configuration before a restart: tandemd check --config /etc/tandem/tandemd.toml
One node at a glance:                     tandemd status [--http 127.0.0.1:7380] [--watch]";

#[derive(Debug, Parser)]
#[command(
    name = "tandemd",
    version,
    about = "tandem cluster daemon: heartbeats, membership, replicated sessions",
    args_conflicts_with_subcommands = true,
    after_help = AFTER_HELP
)]
pub struct Args {
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Check the configuration (flags, --config file, key file) and exit, as `tandemd check`
    /// does: "configuration ok" (exit 0) or every problem, one per line (exit 2).
    #[arg(short = 't', long = "test-config")]
    pub test_config: bool,
    #[command(flatten)]
    pub daemon: Cli,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print a fresh key file from the OS random generator, or rotate one in place.
    Keygen(keygen::KeygenArgs),
    /// Check a configuration without starting: prints "configuration ok" (exit 0) or every
    /// problem, one per line (exit 2). Takes the daemon's flags.
    Check(Box<Cli>),
    /// One node's /status for a person: members, leader, role, health, sync, backlog.
    Status(status_view::StatusArgs),
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // In tests a failed unwrap is a failed test.
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn parse(args: &[&str]) -> Result<Args, clap::Error> {
        Args::try_parse_from(std::iter::once("tandemd").chain(args.iter().copied()))
    }

    #[test]
    fn command_line_is_consistent() {
        Args::command().debug_assert();
    }

    #[test]
    fn no_subcommand_runs_the_daemon_with_its_flags() {
        let a = parse(&[
            "--node-id",
            "1",
            "--http",
            "127.0.0.1:7380",
            "--profile",
            "fast",
        ])
        .unwrap();
        assert!(a.command.is_none() && !a.test_config);
        assert_eq!(a.daemon.node_id, Some(1));
    }

    #[test]
    fn subcommands_and_dash_t() {
        let a = parse(&["-t", "--config", "/etc/tandem/tandemd.toml"]).unwrap();
        assert!(a.test_config);
        assert!(a.daemon.config.is_some());
        let a = parse(&["check", "--config", "x.toml", "--node-id", "2"]).unwrap();
        match a.command {
            Some(Command::Check(cli)) => assert_eq!(cli.node_id, Some(2)),
            other => panic!("{other:?}"),
        }
        let a = parse(&["keygen", "--id", "7"]).unwrap();
        assert!(matches!(a.command, Some(Command::Keygen(k)) if k.id == Some(7)));
        let a = parse(&["status", "--http", "127.0.0.1:7381", "--json"]).unwrap();
        assert!(matches!(a.command, Some(Command::Status(s)) if s.json));
        // Daemon flags belong after `check`, not before a subcommand.
        assert!(parse(&["--node-id", "1", "keygen"]).is_err());
    }
}
