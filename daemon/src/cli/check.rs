//! `tandemd check` (and `tandemd -t`): everything the daemon would refuse at start, without
//! starting it, so a configuration can be checked before a restart (keepalived `-t`, nginx
//! `-t`). Nothing is bound: the running daemon's ports may be in use.
//!
//! Problems (exit 2) are what [`Config::load`] refuses (flags, the TOML file, the key file,
//! interface, addresses, ports, voters, VIPs) plus addresses that are not on this host and
//! VIPs without the capabilities they need. Warnings
//! (exit 0) are legal but likely mistakes, such as a key file others can read.

use std::net::{IpAddr, SocketAddr, TcpListener, UdpSocket};
use std::os::unix::fs::PermissionsExt;

use crate::config::{key_file_mode_warning, Cli, Config, ConfigErrors};

/// What `tandemd check` found.
#[derive(Debug, Default)]
pub struct Report {
    pub problems: ConfigErrors,
    pub warnings: Vec<String>,
}

impl Report {
    pub fn ok(&self) -> bool {
        self.problems.0.is_empty()
    }
}

/// Checks the configuration the flags (and their `--config` file) describe on this host.
pub fn check(cli: Cli) -> Report {
    let mut report = Report::default();
    match Config::load(cli) {
        Ok(cfg) => {
            host_addresses(&cfg, &mut report.problems);
            if !cfg.vips.is_empty() {
                if let Some(missing) = crate::vip::ifaddr::missing_capabilities() {
                    report.problems.add(format!(
                        "--vip needs CAP_NET_ADMIN and CAP_NET_RAW; missing {missing}"
                    ));
                }
            }
            report.warnings = warnings(&cfg);
        }
        Err(problems) => report.problems = problems,
    }
    report
}

/// Every listening address must be one of this host's (or the unspecified address).
fn host_addresses(cfg: &Config, problems: &mut ConfigErrors) {
    for (flag, addr) in [("--http", cfg.http), ("--resp", cfg.resp)] {
        if !is_local(addr.ip(), false) {
            problems.add(format!(
                "{flag} {addr}: {} is not an address of this host",
                addr.ip()
            ));
        }
    }
    if let Some(listen) = cfg.listen {
        if !is_local(listen.ip(), true) {
            problems.add(format!(
                "--listen {listen}: {} is not an address of this host",
                listen.ip()
            ));
        }
    }
}

/// Binding port 0 on `ip` tests the address without taking a port anyone uses.
fn is_local(ip: IpAddr, udp: bool) -> bool {
    let probe = SocketAddr::new(ip, 0);
    if udp {
        UdpSocket::bind(probe).is_ok()
    } else {
        TcpListener::bind(probe).is_ok()
    }
}

fn warnings(cfg: &Config) -> Vec<String> {
    let mut w = Vec::new();
    if let Some(warning) = cfg.key_file.as_deref().and_then(key_file_mode_warning) {
        w.push(warning);
    }
    if cfg.insecure {
        w.push("--insecure: cluster frames are not authenticated".to_string());
    }
    if !cfg.vips.is_empty() && cfg.voters.is_empty() {
        w.push(
            "--vip without --voters: a partition leaves a VIP on both sides (as with VRRP); a witness and --voters prevent it".to_string(),
        );
    }
    if cfg.voters.len() == 2 {
        w.push(
            "--voters names two nodes: when either dies the other has no majority and stops serving; add a witness as a third voter, or give no voters".to_string(),
        );
    }
    for (flag, addr) in [("--http", cfg.http), ("--resp", cfg.resp)] {
        if addr.port() == 0 {
            w.push(format!(
                "{flag} {addr}: port 0 takes a random port; clients cannot find it"
            ));
        }
    }
    if let Some(cmd) = &cfg.on_change {
        if let Some(prog) = cmd.split_whitespace().next().filter(|p| p.starts_with('/')) {
            let runnable = std::fs::metadata(prog)
                .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
                .unwrap_or(false);
            if !runnable {
                w.push(format!("--on-change: {prog} is not an executable file"));
            }
        }
    }
    w
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // In tests a failed unwrap is a failed test.
mod tests {
    use super::*;
    use clap::Parser;

    fn check_args(args: &[&str]) -> Report {
        let cli =
            Cli::try_parse_from(std::iter::once("tandemd").chain(args.iter().copied())).unwrap();
        check(cli)
    }

    fn tmp(name: &str, text: &str, mode: u32) -> String {
        let p = std::env::temp_dir().join(format!("tandem-check-{}-{name}", std::process::id()));
        std::fs::write(&p, text).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        p.to_string_lossy().into_owned()
    }

    #[test]
    fn a_good_loopback_config_is_ok() {
        let r = check_args(&["--node-id", "1", "--http", "127.0.0.1:7380"]);
        assert!(r.ok(), "{}", r.problems);
        assert!(r.warnings.is_empty(), "{:?}", r.warnings);
    }

    #[test]
    fn every_problem_is_reported_once_per_line() {
        let toml = tmp(
            "many.toml",
            "interface = \"nope0\"\nttl = 0\nvoters = [2, 2]\nmultiplier = 1\n",
            0o644,
        );
        let r = check_args(&[
            "--config",
            &toml,
            "--http",
            "127.0.0.1:7000",
            "--resp",
            "127.0.0.1:7000",
            "--key-file",
            "/nonexistent/tandem.key",
        ]);
        let _ = std::fs::remove_file(&toml);
        let lines: Vec<String> = r.problems.0.iter().map(|p| p.0.clone()).collect();
        for expected in [
            "--node-id is required",
            "--interface nope0",
            "--ttl 0",
            "node 2 given twice",
            "--multiplier 1",
            "--http and --resp are both",
            "--key-file /nonexistent/tandem.key",
        ] {
            assert!(
                lines.iter().filter(|l| l.contains(expected)).count() == 1,
                "{expected}: {lines:#?}"
            );
        }
        assert!(lines.iter().all(|l| !l.contains('\n')));
    }

    #[test]
    fn addresses_not_on_this_host_are_problems() {
        // 192.0.2.0/24 is TEST-NET-1: never configured on a host.
        let r = check_args(&["--node-id", "1", "--http", "192.0.2.1:7380"]);
        assert_eq!(r.problems.0.len(), 1, "{}", r.problems);
        assert!(r.problems.0[0].0.contains("not an address of this host"));
        let r = check_args(&["--node-id", "1", "--resp", "0.0.0.0:6380"]);
        assert!(r.ok(), "{}", r.problems);
    }

    #[test]
    fn a_readable_key_file_and_two_voters_warn() {
        let key = tmp("loose.key", "1:00112233445566778899aabbccddeeff\n", 0o644);
        let r = check_args(&["--node-id", "1", "--key-file", &key, "--voters", "1,2"]);
        assert!(r.ok(), "{}", r.problems);
        assert!(
            r.warnings.iter().any(|w| w.contains("mode 0644")),
            "{:?}",
            r.warnings
        );
        assert!(
            r.warnings.iter().any(|w| w.contains("witness")),
            "{:?}",
            r.warnings
        );
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        let r = check_args(&["--node-id", "1", "--key-file", &key]);
        let _ = std::fs::remove_file(&key);
        assert!(r.ok() && r.warnings.is_empty(), "{:?}", r.warnings);
    }

    #[test]
    fn voters_must_name_this_node_once() {
        let r = check_args(&["--node-id", "1", "--voters", "2,3,4"]);
        assert!(
            r.problems.to_string().contains("does not name this node"),
            "{}",
            r.problems
        );
    }

    #[test]
    fn vips_without_voters_warn_of_partitions() {
        let r = check_args(&["--node-id", "1", "--vip", "198.18.0.100/24@1"]);
        assert!(
            r.warnings.iter().any(|w| w.contains("both sides")),
            "{:?}",
            r.warnings
        );
        let r = check_args(&[
            "--node-id",
            "1",
            "--vip",
            "198.18.0.100/24@1",
            "--voters",
            "1,2,3",
        ]);
        assert!(!r.warnings.iter().any(|w| w.contains("both sides")));
        let r = check_args(&["--node-id", "1", "--vip", "198.18.0.100/40@1"]);
        assert!(!r.ok());
    }
}
