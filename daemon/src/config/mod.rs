//! Configuration: command-line flags (clap) over an optional TOML file (`--config PATH`).
//!
//! Precedence: a flag given on the command line wins over the file, the file wins over the
//! built-in default. Unknown keys in the file are an error. Every problem found is reported as
//! one [`ConfigError`] line naming it (all of them, in [`ConfigErrors`]); `main` prints them and
//! exits with code 2, `tandemd check` prints them without starting.
//!
//! Key file format (`--key-file`), one key per line, `#` starts a comment:
//!
//! ```text
//! # id:role:32 hex digits (16-byte AES-128 key), role `control` or `data`. Per role, the
//! # first line is the active (sending) key; a second one is still accepted (rotation).
//! 2:control:00112233445566778899aabbccddeeff
//! 2:data:8899aabbccddeeff0011223344556677
//! ```
//!
//! Control keys seal heartbeats and leaves, data keys everything that carries or steers
//! session data (`tandem_core::crypto::KeyRole`). A data node needs keys of both roles; a
//! witness holds control keys only and refuses to start with a data key (it could read and
//! forge every session). A line `id:32 hex digits` without a role (the format before the
//! split, and every key file written before it) is one key in both roles: data nodes keep
//! reading such files unchanged, a witness refuses them. A line of 32 hex digits without
//! `id:` is key id 0 in both roles, and so is a file of exactly 16 raw bytes that are not all
//! printable text (16 bytes of text are a cut-short text file and are refused). At most
//! [`MAX_KEYS`] keys per role. SIGHUP re-reads the file; a file that does not parse, or that
//! does not fit the node's role, keeps the old keys. Replace it atomically (write a new file, then `mv` it over the
//! old one) so a reload never sees half a file. A key file readable by group or others is
//! warned about at start and on reload; key bytes are wiped from memory when dropped. `tandemd keygen` writes
//! one, and rotates it ([`crate::cli::keygen`]).
//!
//! Panics: never; every input is checked.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Parser, ValueEnum};
use serde::Deserialize;
use tandem_core::{membership, ClusterId, Incarnation, KeyId, NodeId, Salt};
use zeroize::Zeroizing;

use crate::engine::cluster::{ClusterConfig, Key, KeySet, Profile};
use crate::engine::writes::ReplicationMode;
use crate::io::net::{is_loopback, LocalAddr, NetConfig, TransportKind};
use crate::vip::floating::FloatingConfig;
use crate::vip::{parse_cidr, VipSpec, DEFAULT_HOLD};

/// Default multicast group: administratively scoped (239.0.0.0/8, RFC 2365), never routed out.
pub(crate) const DEFAULT_GROUP: SocketAddrV4 =
    SocketAddrV4::new(Ipv4Addr::new(239, 255, 72, 77), 7377);
/// Default raw IP protocol number: 0xFD is reserved for experimentation (RFC 3692).
pub(crate) const DEFAULT_PROTOCOL: u8 = 0xFD;
pub(crate) const DEFAULT_HTTP: &str = "127.0.0.1:7380";
pub(crate) const DEFAULT_RESP: &str = "127.0.0.1:6380";
pub(crate) const DEFAULT_INTERFACE: &str = "lo";
/// Longest `--busy-poll`: past a millisecond, sleeping costs less than spinning.
pub(crate) const MAX_BUSY_POLL_US: u32 = 1000;
/// Keys of one role a key file may hold: the active one and one more still accepted during
/// rotation.
pub(crate) const MAX_KEYS: usize = 2;
/// Largest key file read; a key file is a few lines.
const MAX_KEY_FILE_BYTES: u64 = 4096;

/// One line naming what is wrong with the configuration (exit code 2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

fn err<T>(msg: impl Into<String>) -> Result<T, ConfigError> {
    Err(ConfigError(msg.into()))
}

/// Every problem a configuration has, in the order checked; never empty when returned as an
/// error.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl ConfigErrors {
    pub fn add(&mut self, msg: impl Into<String>) {
        self.0.push(ConfigError(msg.into()));
    }
}

impl fmt::Display for ConfigErrors {
    /// One problem per line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

impl From<ConfigError> for ConfigErrors {
    fn from(e: ConfigError) -> ConfigErrors {
        ConfigErrors(vec![e])
    }
}

/// How log lines are written to stderr.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One line of `name=value` fields per event (default).
    #[default]
    Text,
    /// One JSON object per line, for journald and log shippers.
    Json,
}

/// Command-line flags. Every option is optional here so that "not given" can fall back to the
/// file; defaults are applied in [`Config::resolve`].
///
/// The command name, version and about text are the top-level parser's
/// ([`crate::cli::Args`]), which flattens these flags into the daemon and `tandemd check`.
#[derive(Debug, Default, Parser)]
pub struct Cli {
    /// TOML config file; flags given on the command line override its values.
    #[arg(long, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// This node's id, 1..=65535, unique in the cluster (required).
    #[arg(long)]
    pub node_id: Option<u16>,
    /// Cluster id; nodes with another id on the same group are ignored [default: 1].
    #[arg(long)]
    pub cluster_id: Option<u32>,
    /// Interface name or address to send and join the group on [default: lo].
    #[arg(long)]
    pub interface: Option<String>,
    /// Multicast group and port; IPv6 in brackets, e.g. a link-scope [ff02::7a6e]:7377
    /// [default: 239.255.72.77:7377].
    #[arg(long, value_name = "ADDR:PORT")]
    pub group: Option<SocketAddr>,
    /// Transport [default: udp].
    #[arg(long, value_enum)]
    pub transport: Option<TransportKind>,
    /// Unicast peer (repeatable; `--transport unicast`); IPv6 as [ADDR]:PORT, all peers of
    /// one family.
    #[arg(long = "peer", value_name = "ADDR:PORT")]
    pub peers: Vec<SocketAddr>,
    /// Local address for `--transport unicast` [default: interface address, group port].
    #[arg(long, value_name = "ADDR:PORT")]
    pub listen: Option<SocketAddr>,
    /// IP protocol number for `--transport raw` [default: 253].
    #[arg(long)]
    pub protocol: Option<u8>,
    /// Detector timing profile [default: lan].
    #[arg(long, value_enum)]
    pub profile: Option<Profile>,
    /// Heartbeat interval, overriding the profile's: e.g. 10ms, 500us, 1s (500us..=60s).
    /// Detection takes interval x multiplier; each heartbeat costs CPU on every node.
    #[arg(long, value_name = "DURATION")]
    pub interval: Option<String>,
    /// Missed intervals before peers declare this node dead, overriding the profile's
    /// (2..=100).
    #[arg(long)]
    pub multiplier: Option<u8>,
    /// Leader election priority; higher wins [default: 100].
    #[arg(long)]
    pub priority: Option<u8>,
    /// Take leadership back from a lower-priority leader.
    #[arg(long)]
    pub preempt: bool,
    /// Run as a witness: votes for quorum, holds no sessions, never leads. Its key file holds
    /// control keys only (`tandemd keygen --witness FILE`): it refuses to start with a data key.
    #[arg(long)]
    pub witness: bool,
    /// Voting members, e.g. 1,2,3 [default: every member votes].
    #[arg(long, value_delimiter = ',')]
    pub voters: Vec<u16>,
    /// Key file, mode 0600: lines `id:control:32-hex-digit AES-128 key` and `id:data:...`
    /// (a line `id:hex` is one key in both roles); per role the first sends, a second is
    /// still accepted (rotation). A witness takes control keys only. `tandemd keygen` makes
    /// one; replace it by renaming a new file over it.
    #[arg(long, value_name = "PATH")]
    pub key_file: Option<PathBuf>,
    /// Run without authentication (logs a warning; needed off loopback without --key-file).
    #[arg(long)]
    pub insecure: bool,
    /// HTTP endpoint for /health, /status, /metrics [default: 127.0.0.1:7380].
    #[arg(long, value_name = "ADDR:PORT")]
    pub http: Option<SocketAddr>,
    /// RESP (Redis protocol) session API [default: 127.0.0.1:6380].
    #[arg(long, value_name = "ADDR:PORT")]
    pub resp: Option<SocketAddr>,
    /// Shell command run (sh -c) on every membership or role change and VIP move.
    #[arg(long, value_name = "CMD")]
    pub on_change: Option<String>,
    /// Log level or tracing filter (error, warn, info, debug, trace) [default: info].
    #[arg(long)]
    pub log_level: Option<String>,
    /// Log line format: text (`name=value` fields) or json (one object per line)
    /// [default: text].
    #[arg(long, value_enum)]
    pub log_format: Option<LogFormat>,
    /// Multicast TTL [default: 1: frames never leave the link].
    #[arg(long)]
    pub ttl: Option<u32>,
    /// This host runs no other node: the kernel does not copy this node's multicast frames
    /// back to its own host (about a tenth less CPU under write load). Another node on this
    /// host's network stack would then never hear this one.
    #[arg(long)]
    pub no_multicast_loop: bool,
    /// Maximum number of sessions held [default: 100000].
    #[arg(long)]
    pub max_sessions: Option<usize>,
    /// Maximum bytes of session keys and values held [default: 256 MiB].
    #[arg(long)]
    pub max_bytes: Option<u64>,
    /// Maximum size of one value [default: 512 KiB].
    #[arg(long)]
    pub max_value_bytes: Option<usize>,
    /// Most RESP clients at once; more get `-ERR max number of clients reached`. The soft
    /// RLIMIT_NOFILE is raised to fit; if the hard limit is lower, fewer [default: 10000].
    #[arg(long, value_name = "N")]
    pub max_clients: Option<usize>,
    /// Bytes of all RESP clients' input and output buffers together; past it the clients
    /// holding the most are closed [default: 64 MiB].
    #[arg(long, value_name = "BYTES")]
    pub max_client_memory: Option<usize>,
    /// Close a RESP client that completes no command (and reads no reply) for this many
    /// seconds; 0 = never [default: 0].
    #[arg(long, value_name = "SECONDS")]
    pub client_timeout: Option<u64>,
    /// After a turn with client or replication traffic, keep polling the sockets for this
    /// many microseconds before sleeping (0..=1000; 0 = sleep at once). Trades CPU for
    /// latency: a VM's wake-up from idle costs tens of microseconds per round trip
    /// [default: 0].
    #[arg(long, value_name = "MICROS")]
    pub busy_poll: Option<u32>,
    /// Without a password, RESP clients from other hosts are refused with Redis's DENIED
    /// error (Redis's protected mode) [default: yes].
    #[arg(long, value_name = "yes|no", value_parser = parse_yes_no)]
    pub protected_mode: Option<bool>,
    /// Password RESP clients must AUTH with (visible in the process list: prefer
    /// --requirepass-file).
    #[arg(long, conflicts_with = "requirepass_file")]
    pub requirepass: Option<String>,
    /// File whose first line is the RESP password (keep it mode 0600).
    #[arg(long, value_name = "PATH")]
    pub requirepass_file: Option<PathBuf>,
    /// Directory for this node's state (its last incarnation, so a restart never reuses one
    /// even if the clock stepped back) [default: $STATE_DIRECTORY, set by systemd].
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Synchronous replication: acknowledge after every live peer holds the write (default).
    #[arg(long, conflicts_with = "async_mode")]
    pub sync: bool,
    /// Asynchronous replication: acknowledge once stored locally.
    #[arg(long = "async")]
    pub async_mode: bool,
    /// Floating virtual IP kept on one live, healthy data node on --interface, preferably
    /// NODE (repeatable), e.g. 198.18.0.100/24@1 or fd00::100/64@1. Needs CAP_NET_ADMIN and
    /// CAP_NET_RAW.
    #[arg(long = "vip", value_name = "ADDR/PREFIX@NODE")]
    pub vips: Vec<String>,
    /// How long a node must be healthy before a VIP moves (back) to it [default: 1s].
    #[arg(long, value_name = "DURATION")]
    pub vip_hold: Option<String>,
}

/// The TOML file: the same names as the flags, with `_` for `-`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileConfig {
    pub node_id: Option<u16>,
    pub cluster_id: Option<u32>,
    pub interface: Option<String>,
    pub group: Option<SocketAddr>,
    pub transport: Option<TransportKind>,
    pub peers: Option<Vec<SocketAddr>>,
    pub listen: Option<SocketAddr>,
    pub protocol: Option<u8>,
    pub profile: Option<Profile>,
    pub interval: Option<String>,
    pub multiplier: Option<u8>,
    pub priority: Option<u8>,
    pub preempt: Option<bool>,
    pub witness: Option<bool>,
    pub voters: Option<Vec<u16>>,
    pub key_file: Option<PathBuf>,
    pub insecure: Option<bool>,
    pub http: Option<SocketAddr>,
    pub resp: Option<SocketAddr>,
    pub on_change: Option<String>,
    pub log_level: Option<String>,
    pub log_format: Option<LogFormat>,
    pub ttl: Option<u32>,
    pub multicast_loop: Option<bool>,
    pub max_sessions: Option<usize>,
    pub max_bytes: Option<u64>,
    pub max_value_bytes: Option<usize>,
    pub max_clients: Option<usize>,
    pub max_client_memory: Option<usize>,
    pub client_timeout: Option<u64>,
    pub busy_poll: Option<u32>,
    pub protected_mode: Option<bool>,
    pub requirepass: Option<String>,
    pub requirepass_file: Option<PathBuf>,
    pub state_dir: Option<PathBuf>,
    pub replication: Option<ReplicationMode>,
    pub vip: Option<Vec<FileVip>>,
    pub vip_hold: Option<String>,
}

/// One `[[vip]]` table: `address = "198.18.0.100/24"`, `prefer = 1`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileVip {
    pub address: String,
    pub prefer: u16,
}

/// Largest `--max-value-bytes`: a stored value (plus its one-byte type tag and, for hashes,
/// field framing) must fit the wire format's `MAX_VALUE_LEN`.
pub(crate) const MAX_REPLICATED_VALUE: usize = tandem_core::frame::MAX_VALUE_LEN as usize - 4096;

/// The resolved configuration the daemon runs with.
#[derive(Debug, Clone)]
pub struct Config {
    pub node_id: NodeId,
    pub cluster_id: ClusterId,
    pub interface: String,
    /// The interface's address of the cluster's family (the group's, or the peers'), and
    /// its index; resolved from a name if needed.
    pub interface_addr: LocalAddr,
    pub group: SocketAddr,
    pub transport: TransportKind,
    pub peers: Vec<SocketAddr>,
    pub listen: Option<SocketAddr>,
    pub protocol: u8,
    pub profile: Profile,
    /// `--interval` in microseconds, if given (else the profile's).
    pub interval_us: Option<u32>,
    /// `--multiplier`, if given (else the profile's).
    pub multiplier: Option<u8>,
    pub priority: u8,
    pub preempt: bool,
    pub witness: bool,
    pub voters: Vec<NodeId>,
    pub key_file: Option<PathBuf>,
    /// `None` only with `insecure`.
    pub keys: Option<KeySet>,
    pub insecure: bool,
    pub http: SocketAddr,
    pub resp: SocketAddr,
    pub on_change: Option<String>,
    pub log_level: String,
    pub log_format: LogFormat,
    pub ttl: u32,
    /// Multicast frames are looped back to this host (`--no-multicast-loop` turns it off).
    pub multicast_loop: bool,
    pub max_sessions: usize,
    pub max_bytes: u64,
    pub max_value_bytes: usize,
    /// `--max-clients`, before the descriptor limit is applied (see [`crate::io::descriptors`]).
    pub max_clients: usize,
    pub max_client_memory: usize,
    /// `--client-timeout` in seconds; 0 = never.
    pub client_timeout: u64,
    /// `--busy-poll` in microseconds; 0 = off.
    pub busy_poll_us: u32,
    /// `--protected-mode`: without a password, only loopback RESP clients are served.
    pub protected_mode: bool,
    pub requirepass: Option<String>,
    /// Where the incarnation floor is kept; `None`: not persisted (logged at start).
    pub state_dir: Option<PathBuf>,
    pub replication: ReplicationMode,
    /// Floating VIPs (`--vip`), empty when none.
    pub vips: Vec<VipSpec>,
    pub vip_hold: Duration,
}

impl Config {
    /// What the floating VIPs need.
    pub(crate) fn floating_config(&self) -> FloatingConfig {
        FloatingConfig {
            node_id: self.node_id,
            interface: self.interface.clone(),
            vips: self.vips.clone(),
            vip_hold: self.vip_hold,
            voters: self.voters.clone(),
        }
    }

    /// What the engine's [`Cluster`](crate::engine::cluster::Cluster) needs: this run's
    /// incarnation and salt with the configured identity, timing and keys.
    pub(crate) fn cluster_config(&self, incarnation: Incarnation, salt: Salt) -> ClusterConfig {
        ClusterConfig {
            salt,
            node_id: self.node_id,
            cluster_id: self.cluster_id,
            incarnation,
            profile: self.profile,
            interval_us: self.interval_us,
            multiplier: self.multiplier,
            priority: self.priority,
            preempt: self.preempt,
            witness: self.witness,
            voters: self.voters.clone(),
            keys: self.keys.clone(),
        }
    }

    /// The cluster socket's part of the configuration.
    pub(crate) fn net_config(&self) -> NetConfig {
        NetConfig {
            transport: self.transport,
            interface: self.interface_addr,
            group: self.group,
            peers: self.peers.clone(),
            listen: self.listen,
            protocol: self.protocol,
            ttl: self.ttl,
            multicast_loop: self.multicast_loop,
            // With 1 s heartbeats (wan) a heartbeat could wait up to a second for the next
            // turn, and wake-ups are rare anyway: split only the short-interval profiles.
            split_heartbeats: self.profile != Profile::Wan,
        }
    }

    /// Reads the file the flags name, if any, resolves and validates against this host's
    /// interfaces.
    pub fn load(cli: Cli) -> Result<Config, ConfigErrors> {
        let file = match &cli.config {
            Some(path) => read_file_config(path)?,
            None => FileConfig::default(),
        };
        Config::resolve(cli, file, &crate::io::net::interface_addr)
    }

    /// Merges flags over the file over defaults and validates. `lookup` turns an interface
    /// name or local address into its address of a family (IPv6 when the flag is true; a
    /// parameter so tests need no real interfaces; the daemon passes
    /// [`crate::io::net::interface_addr`]).
    pub(crate) fn resolve(
        cli: Cli,
        file: FileConfig,
        lookup: &dyn Fn(&str, bool) -> Option<LocalAddr>,
    ) -> Result<Config, ConfigErrors> {
        // Every check runs, so `tandemd check` can name every problem at once; a value that
        // failed its check is replaced by a placeholder that is never used (see the end).
        let mut problems = ConfigErrors::default();
        let node_id = match cli.node_id.or(file.node_id) {
            None => {
                problems.add("--node-id is required (1..=65535, unique in the cluster)");
                NodeId(0)
            }
            Some(0) => {
                problems.add("--node-id 0 is reserved; use 1..=65535");
                NodeId(0)
            }
            Some(n) => NodeId(n),
        };
        let interface = cli
            .interface
            .or(file.interface)
            .unwrap_or_else(|| DEFAULT_INTERFACE.to_string());
        let group = cli
            .group
            .or(file.group)
            .unwrap_or(SocketAddr::V4(DEFAULT_GROUP));
        let transport = cli
            .transport
            .or(file.transport)
            .unwrap_or(TransportKind::Udp);
        let peers = if cli.peers.is_empty() {
            file.peers.unwrap_or_default()
        } else {
            cli.peers
        };
        let listen = cli.listen.or(file.listen);
        // The cluster speaks one family: the group's, or with unicast the peers'.
        let v6 = match transport {
            TransportKind::Unicast => peers
                .first()
                .map(SocketAddr::is_ipv6)
                .or(listen.map(|l| l.is_ipv6()))
                .unwrap_or(false),
            _ => group.is_ipv6(),
        };
        let family = if v6 { "IPv6" } else { "IPv4" };
        let interface_addr = lookup(&interface, v6);
        if interface_addr.is_none() {
            problems.add(format!(
                "--interface {interface}: no such interface (or local address) with {family}"
            ));
        }
        if transport != TransportKind::Unicast && !group.ip().is_multicast() {
            problems.add(format!(
                "--group {group}: not a multicast address (use 224.0.0.0/4, e.g. 239.255.72.77:7377, or IPv6 ff00::/8, e.g. [ff02::7a6e]:7377)"
            ));
        }
        if transport == TransportKind::Unicast {
            for p in peers.iter().chain(listen.iter()) {
                if p.is_ipv6() != v6 {
                    problems.add(format!(
                        "--peer/--listen {p}: not {family} like the first; the cluster speaks one family"
                    ));
                }
            }
        }
        if transport == TransportKind::Unicast && peers.is_empty() {
            problems.add("--transport unicast needs at least one --peer ADDR:PORT");
        }
        if peers.len() > crate::engine::node::MAX_PEERS {
            problems.add(format!(
                "--peer given {} times; at most {}",
                peers.len(),
                crate::engine::node::MAX_PEERS
            ));
        }
        for p in &peers {
            if p.ip().is_unspecified() || p.ip().is_multicast() || p.port() == 0 {
                problems.add(format!("--peer {p}: not a unicast host address and port"));
            }
        }
        if group.port() == 0 {
            problems.add("--group: port 0 is not allowed");
        }
        let voters = if cli.voters.is_empty() {
            file.voters.unwrap_or_default()
        } else {
            cli.voters
        };
        check_voters(&voters, node_id, &mut problems);
        let ttl = cli.ttl.or(file.ttl).unwrap_or(1);
        if ttl == 0 || ttl > 255 {
            problems.add(format!("--ttl {ttl}: must be 1..=255"));
        }
        let insecure = cli.insecure || file.insecure.unwrap_or(false);
        let key_file = cli.key_file.or(file.key_file);
        let witness = cli.witness || file.witness.unwrap_or(false);
        let keys = match &key_file {
            Some(path) => load_keys(path)
                .and_then(|k| {
                    k.check_role(witness)
                        .map_err(|e| ConfigError(format!("--key-file {}: {e}", path.display())))?;
                    Ok(k)
                })
                .map_err(|e| problems.0.push(e))
                .ok(),
            None => None,
        };
        if key_file.is_none() && !insecure {
            let addr = interface_addr.map(|l| l.addr);
            if let Some(what) = off_loopback(&interface, addr, transport, listen, &peers) {
                problems.add(format!(
                    "{what} is not loopback: give --key-file PATH to authenticate frames, or --insecure to run without authentication"
                ));
            }
        }
        let replication = if cli.async_mode {
            ReplicationMode::Async
        } else if cli.sync {
            ReplicationMode::Sync
        } else {
            file.replication.unwrap_or(ReplicationMode::Sync)
        };
        let max_value_bytes = cli
            .max_value_bytes
            .or(file.max_value_bytes)
            .unwrap_or(512 * 1024);
        if max_value_bytes > MAX_REPLICATED_VALUE {
            problems.add(format!(
                "--max-value-bytes {max_value_bytes}: at most {MAX_REPLICATED_VALUE} (the largest value the wire format replicates)"
            ));
        }
        let max_bytes = cli
            .max_bytes
            .or(file.max_bytes)
            .unwrap_or(256 * 1024 * 1024);
        if max_value_bytes == 0 || max_value_bytes as u64 > max_bytes {
            problems.add(format!(
                "--max-value-bytes {max_value_bytes}: must be 1..=--max-bytes ({max_bytes})"
            ));
        }
        let max_clients = cli.max_clients.or(file.max_clients).unwrap_or(10_000);
        if max_clients == 0 {
            problems.add("--max-clients 0: must be at least 1");
        }
        let max_client_memory = cli
            .max_client_memory
            .or(file.max_client_memory)
            .unwrap_or(64 << 20);
        // Room for a few clients each holding the largest request (two values) and its reply.
        let min_client_memory = max_value_bytes.saturating_mul(8).max(4 << 20);
        if max_client_memory < min_client_memory {
            problems.add(format!(
                "--max-client-memory {max_client_memory}: at least {min_client_memory} (8 x --max-value-bytes, and 4 MiB)"
            ));
        }
        let busy_poll_us = cli.busy_poll.or(file.busy_poll).unwrap_or(0);
        if busy_poll_us > MAX_BUSY_POLL_US {
            problems.add(format!(
                "--busy-poll {busy_poll_us}: at most {MAX_BUSY_POLL_US} microseconds"
            ));
        }
        let client_timeout = cli.client_timeout.or(file.client_timeout).unwrap_or(0);
        if client_timeout > 365 * 24 * 3600 {
            problems.add(format!(
                "--client-timeout {client_timeout}: at most a year of seconds (0 = never)"
            ));
        }
        let log_level = cli
            .log_level
            .or(file.log_level)
            .unwrap_or_else(|| "info".to_string());
        if tracing_subscriber::EnvFilter::try_new(&log_level).is_err() {
            problems.add(format!(
                "--log-level {log_level}: not a level (error, warn, info, debug, trace) or filter"
            ));
        }
        let log_format = cli.log_format.or(file.log_format).unwrap_or_default();
        let http = cli
            .http
            .or(file.http)
            .unwrap_or_else(|| parse_default(DEFAULT_HTTP));
        let resp = cli
            .resp
            .or(file.resp)
            .unwrap_or_else(|| parse_default(DEFAULT_RESP));
        if http == resp {
            problems.add(format!("--http and --resp are both {http}"));
        }
        let interval_us = match cli.interval.as_deref().or(file.interval.as_deref()) {
            Some(text) => parse_interval(text).map_err(|e| problems.add(e)).ok(),
            None => None,
        };
        let multiplier = cli.multiplier.or(file.multiplier);
        if let Some(m) = multiplier {
            if !(2..=100).contains(&m) {
                problems.add(format!("--multiplier {m}: must be 2..=100"));
            }
        }
        let requirepass = match cli.requirepass_file.or(file.requirepass_file) {
            Some(path) => match read_password_file(&path) {
                Ok(pw) => Some(pw),
                Err(e) => {
                    problems.add(e);
                    None
                }
            },
            None => cli.requirepass.or(file.requirepass),
        };
        let (vips, vip_hold) = resolve_vips(
            &cli.vips,
            cli.vip_hold.or(file.vip_hold),
            file.vip.unwrap_or_default(),
            &interface,
            &mut problems,
        );
        if !vips.is_empty() && witness {
            problems.add("--vip on a --witness: a witness holds no sessions and never a VIP");
        }
        let Some(interface_addr) = interface_addr.filter(|_| problems.0.is_empty()) else {
            return Err(problems);
        };
        Ok(Config {
            node_id,
            cluster_id: ClusterId(cli.cluster_id.or(file.cluster_id).unwrap_or(1)),
            interface,
            interface_addr,
            group,
            transport,
            peers,
            listen,
            protocol: cli.protocol.or(file.protocol).unwrap_or(DEFAULT_PROTOCOL),
            profile: cli.profile.or(file.profile).unwrap_or(Profile::Lan),
            interval_us,
            multiplier,
            priority: cli.priority.or(file.priority).unwrap_or(100),
            preempt: cli.preempt || file.preempt.unwrap_or(false),
            witness,
            voters: voters.into_iter().map(NodeId).collect(),
            key_file,
            keys,
            insecure,
            http,
            resp,
            on_change: cli.on_change.or(file.on_change),
            log_level,
            log_format,
            ttl,
            multicast_loop: !cli.no_multicast_loop && file.multicast_loop.unwrap_or(true),
            max_sessions: cli.max_sessions.or(file.max_sessions).unwrap_or(100_000),
            max_bytes,
            max_value_bytes,
            max_clients,
            max_client_memory,
            client_timeout,
            protected_mode: cli.protected_mode.or(file.protected_mode).unwrap_or(true),
            busy_poll_us,
            requirepass,
            state_dir: cli.state_dir.or(file.state_dir).or_else(default_state_dir),
            replication,
            vips,
            vip_hold,
        })
    }
}

/// `yes`/`no` (as Redis spells its booleans), also `true`/`false`.
fn parse_yes_no(text: &str) -> Result<bool, String> {
    match text {
        "yes" | "true" => Ok(true),
        "no" | "false" => Ok(false),
        _ => Err(format!("{text}: expected yes or no")),
    }
}

/// The first line of `--requirepass-file` (a trailing newline is not part of the password).
fn read_password_file(path: &Path) -> Result<String, String> {
    use std::io::Read;
    let name = path.display();
    let mut text = String::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_KEY_FILE_BYTES + 1).read_to_string(&mut text))
        .map_err(|e| format!("--requirepass-file {name}: {e}"))?;
    let line = text.lines().next().unwrap_or("");
    if text.len() as u64 > MAX_KEY_FILE_BYTES || line.is_empty() {
        return Err(format!(
            "--requirepass-file {name}: the first line must hold the password (at most {MAX_KEY_FILE_BYTES} bytes)"
        ));
    }
    Ok(line.to_string())
}

/// `--vip` (or `[[vip]]`) and `--vip-hold`: valid IPv4 or IPv6 host addresses, each once, on an
/// interface given by name (addresses are added to it through netlink).
fn resolve_vips(
    flags: &[String],
    hold: Option<String>,
    file: Vec<FileVip>,
    interface: &str,
    problems: &mut ConfigErrors,
) -> (Vec<VipSpec>, Duration) {
    let mut vips = Vec::new();
    if flags.is_empty() {
        for v in &file {
            match parse_cidr(&v.address) {
                Some((addr, prefix)) => vips.push(VipSpec {
                    addr,
                    prefix,
                    prefer: NodeId(v.prefer),
                }),
                None => problems.add(format!("[[vip]] address {}: not ADDR/PREFIX", v.address)),
            }
        }
    } else {
        for f in flags {
            match f.parse::<VipSpec>() {
                Ok(v) => vips.push(v),
                Err(e) => problems.add(e),
            }
        }
    }
    for (i, v) in vips.iter().enumerate() {
        if let Err(e) = v.validate() {
            problems.add(e);
        }
        if vips[..i].iter().any(|o| o.addr == v.addr) {
            problems.add(format!("--vip {}: given twice", v.addr));
        }
    }
    if !vips.is_empty() && interface.parse::<std::net::IpAddr>().is_ok() {
        problems.add(format!(
            "--vip needs --interface to name an interface, not an address ({interface})"
        ));
    }
    let hold = match hold {
        Some(text) if text.trim() == "0" || text.trim() == "0s" || text.trim() == "0ms" => {
            Duration::ZERO
        }
        Some(text) => match parse_interval(&text) {
            Ok(us) => Duration::from_micros(u64::from(us)),
            Err(_) => {
                problems.add(format!(
                    "--vip-hold {text}: not a duration 0..=60s like 500ms or 2s"
                ));
                DEFAULT_HOLD
            }
        },
        None => DEFAULT_HOLD,
    };
    (vips, hold)
}

/// `--voters`: ids 1..=65535, each once, at most the core's voter table, this node among them.
fn check_voters(voters: &[u16], node_id: NodeId, problems: &mut ConfigErrors) {
    if voters.contains(&0) {
        problems.add("--voters: node id 0 is reserved");
    }
    if voters.len() > membership::MAX_VOTERS {
        problems.add(format!(
            "--voters names {} nodes; at most {}",
            voters.len(),
            membership::MAX_VOTERS
        ));
    }
    if let Some(v) = voters
        .iter()
        .enumerate()
        .find_map(|(i, v)| voters[..i].contains(v).then_some(v))
    {
        problems.add(format!("--voters: node {v} given twice"));
    }
    if !voters.is_empty() && node_id.0 != 0 && !voters.contains(&node_id.0) {
        problems.add(format!(
            "--voters does not name this node ({}): it would never lead nor count itself for quorum",
            node_id.0
        ));
    }
}

/// `--interval`: a whole number with `us`, `ms` or `s`, 500us..=60s, in microseconds.
pub(crate) fn parse_interval(text: &str) -> Result<u32, String> {
    let bad = || format!("--interval {text}: not a duration like 10ms, 500us or 1s");
    let t = text.trim();
    let (digits, scale) = if let Some(d) = t.strip_suffix("us") {
        (d, 1)
    } else if let Some(d) = t.strip_suffix("ms") {
        (d, 1_000)
    } else if let Some(d) = t.strip_suffix('s') {
        (d, 1_000_000)
    } else {
        return Err(bad());
    };
    let n: u64 = digits.trim().parse().map_err(|_| bad())?;
    match n.checked_mul(scale) {
        Some(us @ 500..=60_000_000) => Ok(us as u32),
        _ => Err(format!("--interval {text}: must be 500us..=60s")),
    }
}

fn parse_default(s: &str) -> SocketAddr {
    // The defaults are literal constants checked by the `defaults_parse` test.
    s.parse().unwrap_or(SocketAddr::from(([127, 0, 0, 1], 0)))
}

/// Reads and parses the TOML file.
pub(crate) fn read_file_config(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError(format!("--config {}: {e}", path.display())))?;
    parse_file_config(&text).map_err(|e| ConfigError(format!("--config {}: {e}", path.display())))
}

/// Parses TOML text; the error is squeezed onto one line.
pub(crate) fn parse_file_config(text: &str) -> Result<FileConfig, ConfigError> {
    toml::from_str(text).map_err(|e| {
        let one_line = e
            .message()
            .lines()
            .map(str::trim)
            .collect::<Vec<_>>()
            .join(" ");
        let at = e
            .span()
            .map(|s| {
                let before = text.get(..s.start).unwrap_or(text);
                let line = before.matches('\n').count() + 1;
                format!(" (line {line})")
            })
            .unwrap_or_default();
        ConfigError(format!("{one_line}{at}"))
    })
}

/// Reads a key file (see the module docs for the format).
/// `$STATE_DIRECTORY`, which systemd sets from the unit's `StateDirectory=`.
fn default_state_dir() -> Option<PathBuf> {
    std::env::var_os("STATE_DIRECTORY").map(PathBuf::from)
}

/// The first cluster address that is not loopback, named as the flag that set it; `None` when
/// every address the cluster socket sends to or receives on is loopback. Without a key, frames
/// are unauthenticated, so anything that reaches past this host needs an explicit `--insecure`.
fn off_loopback(
    interface: &str,
    interface_addr: Option<IpAddr>,
    transport: TransportKind,
    listen: Option<SocketAddr>,
    peers: &[SocketAddr],
) -> Option<String> {
    if interface_addr.is_some_and(|a| !is_loopback(a)) {
        return Some(format!("--interface {interface}"));
    }
    if transport != TransportKind::Unicast {
        return None;
    }
    // `--listen 0.0.0.0:P` or `[::]:P` (unspecified) receives from every interface.
    if let Some(l) = listen.filter(|l| !is_loopback(l.ip())) {
        return Some(format!("--listen {l}"));
    }
    peers
        .iter()
        .find(|p| !is_loopback(p.ip()))
        .map(|p| format!("--peer {p}"))
}

pub fn load_keys(path: &Path) -> Result<KeySet, ConfigError> {
    use std::io::Read;
    let name = path.display();
    let file =
        std::fs::File::open(path).map_err(|e| ConfigError(format!("--key-file {name}: {e}")))?;
    // Wiped when dropped, like the keys parsed from it.
    let mut raw = Zeroizing::new(Vec::new());
    file.take(MAX_KEY_FILE_BYTES + 1)
        .read_to_end(&mut raw)
        .map_err(|e| ConfigError(format!("--key-file {name}: {e}")))?;
    if raw.len() as u64 > MAX_KEY_FILE_BYTES {
        return err(format!(
            "--key-file {name}: larger than {MAX_KEY_FILE_BYTES} bytes"
        ));
    }
    parse_keys(&raw).map_err(|e| ConfigError(format!("--key-file {name}: {e}")))
}

/// The warning to log when the key file at `path` can be read by anyone but its owner.
pub fn key_file_mode_warning(path: &Path) -> Option<String> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path).ok()?.permissions().mode() & 0o777;
    (mode & 0o077 != 0).then(|| {
        format!(
            "--key-file {}: mode {mode:04o} lets group or others read the cluster key; chmod 600 it",
            path.display()
        )
    })
}

/// Parses key file contents (the format is in the module docs).
///
/// A file of exactly 16 bytes is a raw key only if it is not printable text: 16 bytes of
/// text are a text key file cut short (`1:00010203040506` from an interrupted write), and
/// reading them as key bytes would silently cut the node off from its cluster.
pub fn parse_keys(raw: &[u8]) -> Result<KeySet, ConfigError> {
    let printable = |b: &u8| matches!(b, b' '..=b'~' | b'\t' | b'\n' | b'\r');
    if raw.len() == 16 && !raw.iter().all(printable) {
        let mut bytes = [0u8; 16];
        bytes.copy_from_slice(raw);
        let key = Key {
            id: KeyId(0),
            bytes,
        };
        return Ok(KeySet {
            control: vec![key.clone()],
            data: vec![key],
        });
    }
    let text = std::str::from_utf8(raw)
        .map_err(|_| ConfigError("neither 16 raw bytes nor text lines `id:hex`".into()))?;
    let (mut control, mut data): (Vec<Key>, Vec<Key>) = (Vec::new(), Vec::new());
    for (n, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let (id, roles, hex) = match line.split_once(':') {
            Some((id, rest)) => {
                let id = id
                    .trim()
                    .parse::<u8>()
                    .map_err(|_| ConfigError(format!("line {}: key id must be 0..=255", n + 1)))?;
                let (roles, hex) = match rest.split_once(':') {
                    Some((role, hex)) => (
                        match role.trim() {
                            "control" => [true, false],
                            "data" => [false, true],
                            other => {
                                return err(format!(
                                    "line {}: role `{other}`: must be `control` or `data`",
                                    n + 1
                                ))
                            }
                        },
                        hex,
                    ),
                    None => ([true, true], rest),
                };
                (id, roles, hex.trim())
            }
            None => (0, [true, true], line),
        };
        let bytes = parse_hex16(hex).ok_or_else(|| {
            ConfigError(format!(
                "line {}: key must be 32 hex digits (16 bytes){}",
                n + 1,
                if raw.len() == 16 {
                    "; a 16-byte text file is not taken as a raw key"
                } else {
                    ""
                }
            ))
        })?;
        for (keys, role) in [(&mut control, "control"), (&mut data, "data")]
            .into_iter()
            .zip(roles)
            .filter_map(|(k, on)| on.then_some(k))
        {
            if keys.iter().any(|k| k.id.0 == id) {
                return err(format!("line {}: {role} key id {id} given twice", n + 1));
            }
            if keys.len() == MAX_KEYS {
                return err(format!("more than {MAX_KEYS} {role} keys"));
            }
            keys.push(Key {
                id: KeyId(id),
                bytes,
            });
        }
    }
    if control.is_empty() {
        return err(if data.is_empty() {
            "no key found"
        } else {
            "no control key (every node needs one, a witness only that)"
        });
    }
    Ok(KeySet { control, data })
}

fn is_hex_line(s: &str) -> bool {
    s.len() == 32 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

fn parse_hex16(s: &str) -> Option<[u8; 16]> {
    if !is_hex_line(s) {
        return None;
    }
    let mut out = [0u8; 16];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // In tests a failed unwrap is a failed test.
mod tests {
    use super::*;

    /// `lo` (1) has 127.0.0.1 and ::1, `eth0` (2) 198.18.0.1 and fd00:7a6e::1, `v4only0` (3)
    /// 198.18.1.1 alone.
    fn lookup(name: &str, v6: bool) -> Option<LocalAddr> {
        let (addr, index): (&str, u32) = match (name, v6) {
            ("lo" | "127.0.0.1", false) => ("127.0.0.1", 1),
            ("lo" | "::1", true) => ("::1", 1),
            ("eth0" | "198.18.0.1", false) => ("198.18.0.1", 2),
            ("eth0" | "fd00:7a6e::1", true) => ("fd00:7a6e::1", 2),
            ("v4only0" | "198.18.1.1", false) => ("198.18.1.1", 3),
            _ => return None,
        };
        Some(LocalAddr {
            addr: addr.parse().unwrap(),
            index,
        })
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn resolve(args: &[&str]) -> Result<Config, ConfigErrors> {
        resolve_with(args, "")
    }

    fn resolve_with(args: &[&str], toml: &str) -> Result<Config, ConfigErrors> {
        let mut argv = vec!["tandemd"];
        argv.extend_from_slice(args);
        let cli = Cli::try_parse_from(argv).map_err(|e| ConfigError(e.to_string()))?;
        Config::resolve(cli, parse_file_config(toml)?, &lookup)
    }

    #[test]
    fn busy_poll_is_off_by_default_and_bounded() {
        assert_eq!(resolve(&["--node-id", "1"]).unwrap().busy_poll_us, 0);
        let c = resolve(&["--node-id", "1", "--busy-poll", "50"]).unwrap();
        assert_eq!(c.busy_poll_us, 50);
        let e = resolve(&["--node-id", "1", "--busy-poll", "5000"]).unwrap_err();
        assert!(e.to_string().contains("--busy-poll 5000"), "{e}");
        let c = resolve_with(&["--node-id", "1"], "busy_poll = 20\n").unwrap();
        assert_eq!(c.busy_poll_us, 20);
    }

    #[test]
    fn protected_mode_is_on_unless_turned_off() {
        assert!(resolve(&["--node-id", "1"]).unwrap().protected_mode);
        let c = resolve(&["--node-id", "1", "--protected-mode", "no"]).unwrap();
        assert!(!c.protected_mode);
        assert!(resolve(&["--node-id", "1", "--protected-mode", "maybe"]).is_err());
        let c = resolve_with(&["--node-id", "1"], "protected_mode = false\n").unwrap();
        assert!(!c.protected_mode);
    }

    #[test]
    fn requirepass_file_keeps_the_password_off_the_command_line() {
        let path = std::env::temp_dir().join(format!("tandem-pw-{}", std::process::id()));
        std::fs::write(&path, "s3cret\n").unwrap();
        let p = path.to_string_lossy().into_owned();
        let c = resolve(&["--node-id", "1", "--requirepass-file", &p]).unwrap();
        assert_eq!(c.requirepass.as_deref(), Some("s3cret"));
        std::fs::write(&path, "\n").unwrap();
        let e = resolve(&["--node-id", "1", "--requirepass-file", &p]).unwrap_err();
        assert!(e.to_string().contains("first line"), "{e}");
        std::fs::remove_file(&path).unwrap();
        let e = resolve(&["--node-id", "1", "--requirepass-file", &p]).unwrap_err();
        assert!(e.to_string().contains("--requirepass-file"), "{e}");
        assert!(resolve(&[
            "--node-id",
            "1",
            "--requirepass",
            "a",
            "--requirepass-file",
            &p
        ])
        .is_err());
    }

    #[test]
    fn defaults_parse() {
        assert!(DEFAULT_HTTP.parse::<SocketAddr>().is_ok());
        assert!(DEFAULT_RESP.parse::<SocketAddr>().is_ok());
        let c = resolve(&["--node-id", "1"]).unwrap();
        assert_eq!(c.node_id, NodeId(1));
        assert_eq!(c.interface_addr.addr, ip("127.0.0.1"));
        assert_eq!(c.group, SocketAddr::V4(DEFAULT_GROUP));
        assert_eq!(c.transport, TransportKind::Udp);
        assert_eq!(c.ttl, 1);
        assert_eq!(c.http, DEFAULT_HTTP.parse().unwrap());
        assert_eq!(c.resp, DEFAULT_RESP.parse().unwrap());
        assert_eq!(c.profile, Profile::Lan);
        assert_eq!(c.replication, ReplicationMode::Sync);
        assert!(c.keys.is_none());
    }

    #[test]
    fn vips_from_flags_and_file() {
        let base = ["--node-id", "1", "--interface", "eth0", "--insecure"];
        let c = resolve(&base).unwrap();
        assert!(c.vips.is_empty());
        assert_eq!(c.vip_hold, DEFAULT_HOLD);
        let mut args = base.to_vec();
        args.extend(["--vip", "198.18.0.100/24@1", "--vip-hold", "250ms"]);
        let c = resolve(&args).unwrap();
        assert_eq!(c.vips, ["198.18.0.100/24@1".parse::<VipSpec>().unwrap()]);
        assert_eq!(c.vip_hold, Duration::from_millis(250));
        let toml = "vip_hold = \"0\"\n[[vip]]\naddress = \"198.18.0.101/24\"\nprefer = 2\n";
        let c = resolve_with(&base, toml).unwrap();
        assert_eq!(c.vips[0].to_string(), "198.18.0.101/24@2");
        assert_eq!(c.vip_hold, Duration::ZERO);
        // Problems: twice the same address, an address for --interface, a witness.
        let e = resolve(&[
            "--node-id",
            "1",
            "--interface",
            "198.18.0.1",
            "--insecure",
            "--witness",
            "--vip",
            "198.18.0.100/24@1",
            "--vip",
            "198.18.0.100/24@2",
        ])
        .unwrap_err()
        .to_string();
        assert!(e.contains("given twice"), "{e}");
        assert!(e.contains("to name an interface"), "{e}");
        assert!(e.contains("--witness"), "{e}");
    }

    #[test]
    fn node_id_required_and_nonzero() {
        assert!(resolve(&[])
            .unwrap_err()
            .to_string()
            .contains("--node-id is required"));
        assert!(resolve(&["--node-id", "0"])
            .unwrap_err()
            .to_string()
            .contains("reserved"));
    }

    #[test]
    fn non_loopback_needs_key_or_insecure() {
        let e = resolve(&["--node-id", "1", "--interface", "eth0"]).unwrap_err();
        assert!(
            e.to_string().contains("--key-file") && e.to_string().contains("--insecure"),
            "{e}"
        );
        let c = resolve(&["--node-id", "1", "--interface", "eth0", "--insecure"]).unwrap();
        assert_eq!(c.interface_addr.addr, ip("198.18.0.1"));
        let e = resolve(&["--node-id", "1", "--interface", "198.18.0.1"]).unwrap_err();
        assert!(e.to_string().contains("not loopback"));
        let c = resolve(&["--node-id", "1", "--interface", "127.0.0.1"]).unwrap();
        assert_eq!(c.interface_addr.addr, ip("127.0.0.1"));
    }

    #[test]
    fn keyless_unicast_off_loopback_needs_insecure() {
        let uni = ["--node-id", "1", "--transport", "unicast"];
        let with = |extra: &[&'static str]| {
            let mut a = uni.to_vec();
            a.extend_from_slice(extra);
            resolve(&a)
        };
        // Loopback listen and peers: fine without a key, as on the demo's `lo`.
        assert!(with(&["--listen", "127.0.0.1:7377", "--peer", "127.0.0.2:7377"]).is_ok());
        let e = with(&["--listen", "0.0.0.0:7377", "--peer", "127.0.0.2:7377"]).unwrap_err();
        assert!(
            e.to_string()
                .contains("--listen 0.0.0.0:7377 is not loopback"),
            "{e}"
        );
        let e = with(&["--peer", "127.0.0.2:7377", "--peer", "198.18.0.2:7377"]).unwrap_err();
        assert!(
            e.to_string()
                .contains("--peer 198.18.0.2:7377 is not loopback"),
            "{e}"
        );
        assert!(e.to_string().contains("--insecure"), "{e}");
        assert!(with(&[
            "--listen",
            "0.0.0.0:7377",
            "--peer",
            "198.18.0.2:7377",
            "--insecure"
        ])
        .is_ok());
    }

    #[test]
    fn ipv6_group_peers_and_listen() {
        let base = ["--node-id", "1", "--interface", "eth0", "--insecure"];
        let with = |extra: &[&'static str]| {
            let mut a = base.to_vec();
            a.extend_from_slice(extra);
            resolve(&a)
        };
        // A link-scope IPv6 group: the interface's IPv6 address and index.
        let c = with(&["--group", "[ff02::7a6e]:7377"]).unwrap();
        assert_eq!(c.group, "[ff02::7a6e]:7377".parse().unwrap());
        assert_eq!(c.interface_addr.addr, ip("fd00:7a6e::1"));
        assert_eq!(c.interface_addr.index, 2);
        for t in ["udp", "raw"] {
            assert!(with(&["--transport", t, "--group", "[ff02::7a6e]:7377"]).is_ok());
        }
        let e = with(&["--group", "[fd00::1]:7377"]).unwrap_err();
        assert!(e.to_string().contains("not a multicast address"), "{e}");
        // An interface without IPv6 cannot join an IPv6 group.
        let e = resolve(&[
            "--node-id",
            "1",
            "--interface",
            "v4only0",
            "--insecure",
            "--group",
            "[ff02::7a6e]:7377",
        ])
        .unwrap_err();
        assert!(e.to_string().contains("with IPv6"), "{e}");
        // Unicast to IPv6 peers: the family follows the peers.
        let c = with(&[
            "--transport",
            "unicast",
            "--peer",
            "[fd00:7a6e::2]:7377",
            "--listen",
            "[fd00:7a6e::1]:7377",
        ])
        .unwrap();
        assert_eq!(c.interface_addr.addr, ip("fd00:7a6e::1"));
        assert_eq!(c.peers, vec!["[fd00:7a6e::2]:7377".parse().unwrap()]);
        // One family only.
        let e = with(&[
            "--transport",
            "unicast",
            "--peer",
            "[fd00:7a6e::2]:7377",
            "--peer",
            "198.18.0.3:7377",
        ])
        .unwrap_err();
        assert!(e.to_string().contains("198.18.0.3:7377: not IPv6"), "{e}");
        let e = with(&[
            "--transport",
            "unicast",
            "--peer",
            "198.18.0.2:7377",
            "--listen",
            "[::]:7377",
        ])
        .unwrap_err();
        assert!(e.to_string().contains("[::]:7377: not IPv4"), "{e}");
        // The same in the file.
        let c = resolve_with(
            &["--node-id", "1", "--insecure"],
            "interface = \"eth0\"\ntransport = \"unicast\"\npeers = [\"[fd00:7a6e::2]:7377\"]\n",
        )
        .unwrap();
        assert!(c.peers[0].is_ipv6());
        // RESP and HTTP on IPv6 addresses.
        let c = with(&["--resp", "[::1]:6380", "--http", "[::]:7380"]).unwrap();
        assert_eq!(c.resp, "[::1]:6380".parse().unwrap());
        assert!(c.http.is_ipv6());
    }

    #[test]
    fn keyless_ipv6_off_loopback_needs_insecure() {
        // ::1 is loopback: a keyless cluster there is fine, as on 127.0.0.1.
        assert!(resolve(&[
            "--node-id",
            "1",
            "--transport",
            "unicast",
            "--listen",
            "[::1]:7377",
            "--peer",
            "[::1]:7378",
        ])
        .is_ok());
        // Everything else in IPv6 reaches past the host: ULA, global, unspecified, the
        // interface's IPv6 address (for an IPv6 group).
        for (args, what) in [
            (
                &["--transport", "unicast", "--peer", "[fd00:7a6e::2]:7377"][..],
                "--peer [fd00:7a6e::2]:7377",
            ),
            (
                &[
                    "--transport",
                    "unicast",
                    "--listen",
                    "[::1]:7377",
                    "--peer",
                    "[2001:db8::2]:7377",
                ][..],
                "--peer [2001:db8::2]:7377",
            ),
            (
                &[
                    "--transport",
                    "unicast",
                    "--listen",
                    "[::]:7377",
                    "--peer",
                    "[::1]:7378",
                ][..],
                "--listen [::]:7377",
            ),
        ] {
            let mut a = vec!["--node-id", "1"];
            a.extend_from_slice(args);
            let e = resolve(&a).unwrap_err().to_string();
            assert!(
                e.contains(&format!("{what} is not loopback")),
                "{args:?}: {e}"
            );
        }
        let e = resolve(&[
            "--node-id",
            "1",
            "--interface",
            "eth0",
            "--group",
            "[ff02::7a6e]:7377",
        ])
        .unwrap_err();
        assert!(
            e.to_string().contains("--interface eth0 is not loopback"),
            "{e}"
        );
    }

    #[test]
    fn unknown_interface_is_refused() {
        let e = resolve(&["--node-id", "1", "--interface", "nope0"]).unwrap_err();
        assert!(e.to_string().contains("nope0"), "{e}");
        let e = resolve(&["--node-id", "1", "--interface", "198.51.100.7"]).unwrap_err();
        assert!(e.to_string().contains("198.51.100.7"), "{e}");
    }

    #[test]
    fn interval_and_multiplier_override_the_profile() {
        assert_eq!(parse_interval("10ms"), Ok(10_000));
        assert_eq!(parse_interval("500us"), Ok(500));
        assert_eq!(parse_interval("2s"), Ok(2_000_000));
        for bad in [
            "10",
            "ms",
            "1.5ms",
            "-3ms",
            "499us",
            "61s",
            "99999999999999s",
        ] {
            assert!(parse_interval(bad).is_err(), "{bad}");
        }
        let c = resolve(&["--node-id", "1", "--profile", "fast", "--interval", "10ms"]).unwrap();
        assert_eq!(
            (c.profile, c.interval_us, c.multiplier),
            (Profile::Fast, Some(10_000), None)
        );
        let c = resolve_with(
            &["--multiplier", "4"],
            "node_id = 1\ninterval = \"5ms\"\nmultiplier = 3\n",
        )
        .unwrap();
        assert_eq!(
            (c.interval_us, c.multiplier),
            (Some(5_000), Some(4)),
            "flags override the file"
        );
        for m in ["1", "101"] {
            let e = resolve(&["--node-id", "1", "--multiplier", m]).unwrap_err();
            assert!(e.to_string().contains("--multiplier"), "{e}");
        }
        let e = resolve(&["--node-id", "1", "--interval", "fast"]).unwrap_err();
        assert!(e.to_string().contains("--interval fast"), "{e}");
    }

    #[test]
    fn client_limits() {
        let c = resolve(&["--node-id", "1"]).unwrap();
        assert_eq!(
            (c.max_clients, c.max_client_memory, c.client_timeout),
            (10_000, 64 << 20, 0)
        );
        let c = resolve_with(
            &["--node-id", "1", "--client-timeout", "7"],
            "max_clients = 50\nmax_client_memory = 8388608\nclient_timeout = 3\n",
        )
        .unwrap();
        assert_eq!(
            (c.max_clients, c.max_client_memory, c.client_timeout),
            (50, 8 << 20, 7)
        );
        assert!(resolve(&["--node-id", "1", "--max-clients", "0"]).is_err());
        let e = resolve(&["--node-id", "1", "--max-client-memory", "1000"]).unwrap_err();
        assert!(
            e.to_string().contains("--max-client-memory 1000: at least"),
            "{e}"
        );
    }

    #[test]
    fn flags_override_file() {
        let toml = "node_id = 3\nprofile = \"wan\"\nttl = 2\npeers = [\"198.18.0.2:7377\"]\n";
        let c = resolve_with(&["--profile", "fast"], toml).unwrap();
        assert_eq!(c.node_id, NodeId(3));
        assert_eq!(c.profile, Profile::Fast);
        assert_eq!(c.ttl, 2);
        assert_eq!(c.peers.len(), 1);
        let c = resolve_with(&["--node-id", "4"], toml).unwrap();
        assert_eq!(c.node_id, NodeId(4));
        assert_eq!(c.profile, Profile::Wan);
    }

    #[test]
    fn multicast_loop_is_on_unless_turned_off() {
        assert!(
            resolve_with(&["--node-id", "1"], "")
                .unwrap()
                .multicast_loop
        );
        let off = resolve_with(&["--node-id", "1", "--no-multicast-loop"], "").unwrap();
        assert!(!off.multicast_loop);
        let off = resolve_with(&["--node-id", "1"], "multicast_loop = false\n").unwrap();
        assert!(!off.multicast_loop);
    }

    #[test]
    fn unknown_file_key_is_an_error() {
        let e = resolve_with(&["--node-id", "1"], "nodeid = 3\n").unwrap_err();
        assert!(
            e.to_string().contains("nodeid") && !e.to_string().contains('\n'),
            "{e}"
        );
    }

    #[test]
    fn bad_values_are_refused() {
        assert!(resolve(&["--node-id", "1", "--ttl", "0"]).is_err());
        assert!(resolve(&["--node-id", "1", "--group", "10.0.0.1:7377"]).is_err());
        assert!(resolve(&["--node-id", "1", "--transport", "unicast"]).is_err());
        assert!(resolve(&["--node-id", "1", "--voters", "1,0"]).is_err());
        assert!(resolve(&["--node-id", "1", "--log-level", "loud[["]).is_err());
        assert!(resolve(&["--node-id", "1", "--sync", "--async"]).is_err());
        assert!(resolve(&["--node-id", "1", "--http", "127.0.0.1:6380"]).is_err());
        let c = resolve(&["--node-id", "1", "--voters", "1,2,3", "--async"]).unwrap();
        assert_eq!(c.voters, vec![NodeId(1), NodeId(2), NodeId(3)]);
        assert_eq!(c.replication, ReplicationMode::Async);
    }

    #[test]
    fn example_config_file_is_valid() {
        let text = include_str!("../../tandemd.example.toml");
        // The example's key file is not here: a flag overrides it with a real one.
        let key = std::env::temp_dir().join(format!("tandem-example-{}.key", std::process::id()));
        std::fs::write(&key, "3:00112233445566778899aabbccddeeff\n").unwrap();
        let c = resolve_with(&["--key-file", key.to_str().unwrap()], text);
        let _ = std::fs::remove_file(&key);
        let c = c.unwrap();
        assert_eq!(c.node_id, NodeId(1));
        assert_eq!(c.interface_addr.addr, ip("198.18.0.1"));
        assert_eq!(c.transport, TransportKind::Udp);
        assert_eq!(c.replication, ReplicationMode::Sync);
        assert_eq!(c.keys.unwrap().active().id, KeyId(3));
    }

    #[test]
    fn key_file_formats() {
        // Lines without a role: one key in both roles, in order.
        let ks = parse_keys(b"# rotation\n2:00112233445566778899aabbccddeeff\n1:ffeeddccbbaa99887766554433221100 # old\n").unwrap();
        assert_eq!(ks.control, ks.data);
        assert_eq!(ks.control.len(), 2);
        assert_eq!(ks.active().id, KeyId(2));
        assert_eq!(ks.active().bytes[1], 0x11);
        assert_eq!(ks.control[1].bytes[0], 0xff);
        let ks = parse_keys(b"00112233445566778899AABBCCDDEEFF\n").unwrap();
        assert_eq!(ks.active().id, KeyId(0));
        assert_eq!(ks.active().bytes[15], 0xff);
        assert_eq!(ks.data[0].id, KeyId(0));
        let ks = parse_keys(&[7u8; 16]).unwrap();
        assert_eq!(ks.active().bytes, [7u8; 16]);
        assert_eq!(ks.data[0].bytes, [7u8; 16]);
    }

    #[test]
    fn key_file_roles() {
        let split = b"3:control:00112233445566778899aabbccddeeff\n\
                      3:data:ffeeddccbbaa99887766554433221100\n\
                      2:control:000102030405060708090a0b0c0d0e0f\n\
                      2:data : 0f0e0d0c0b0a09080706050403020100 # old\n";
        let ks = parse_keys(split).unwrap();
        let ids = |keys: &[Key]| keys.iter().map(|k| k.id.0).collect::<Vec<_>>();
        assert_eq!((ids(&ks.control), ids(&ks.data)), (vec![3, 2], vec![3, 2]));
        assert_eq!((ks.active().bytes[0], ks.data[0].bytes[0]), (0x00, 0xff));
        assert_eq!(ks.data[1].bytes[0], 0x0f);
        // A role line and a line without a role may share an id in the other role only.
        let mixed = parse_keys(b"4:control:00112233445566778899aabbccddeeff\n4:data:ffeeddccbbaa99887766554433221100\n3:00112233445566778899aabbccddeeff\n").unwrap();
        assert_eq!(
            (ids(&mixed.control), ids(&mixed.data)),
            (vec![4, 3], vec![4, 3])
        );
        assert!(parse_keys(
            b"3:data:00112233445566778899aabbccddeeff\n3:00112233445566778899aabbccddeeff\n"
        )
        .is_err());
        // A witness's file: control keys only.
        let w = parse_keys(b"3:control:00112233445566778899aabbccddeeff\n").unwrap();
        assert!(w.data.is_empty());
        assert_eq!(w.check_role(true), Ok(()));
        let e = w.check_role(false).unwrap_err();
        assert!(e.contains("no data key"), "{e}");
        // A witness refuses a data key, and a one-key file (both roles), naming the way out.
        for refused in [
            &ks,
            &parse_keys(b"1:00112233445566778899aabbccddeeff\n").unwrap(),
        ] {
            let e = refused.check_role(true).unwrap_err();
            assert!(e.contains("tandemd keygen --witness"), "{e}");
            assert_eq!(refused.check_role(false), Ok(()));
        }
        // Bad roles, a data-only file, three keys of one role.
        let e = parse_keys(b"1:ctrl:00112233445566778899aabbccddeeff\n").unwrap_err();
        assert!(e.0.contains("`control` or `data`"), "{e}");
        let e = parse_keys(b"1:data:00112233445566778899aabbccddeeff\n").unwrap_err();
        assert!(e.0.contains("no control key"), "{e}");
        assert!(parse_keys(b"1:control:00112233445566778899aabbccddeeff\n2:control:00112233445566778899aabbccddeeff\n3:00112233445566778899aabbccddeeff\n").is_err());
    }

    #[test]
    fn a_witness_with_a_data_key_is_a_config_error() {
        let key = std::env::temp_dir().join(format!("tandem-witness-{}.key", std::process::id()));
        std::fs::write(&key, "1:00112233445566778899aabbccddeeff\n").unwrap();
        let path = key.to_str().unwrap();
        let witness = ["--node-id", "3", "--key-file", path, "--witness"];
        let e = resolve(&witness).unwrap_err().to_string();
        assert!(e.contains("must never hold the data key"), "{e}");
        std::fs::write(&key, "1:control:00112233445566778899aabbccddeeff\n").unwrap();
        let c = resolve(&witness).unwrap();
        assert!(c.keys.unwrap().data.is_empty());
        let e = resolve(&witness[..4]).unwrap_err().to_string();
        assert!(e.contains("no data key"), "{e}");
        let _ = std::fs::remove_file(&key);
    }

    proptest::proptest! {
        #[test]
        fn key_parser_never_panics(raw in proptest::collection::vec(proptest::num::u8::ANY, 0..200)) {
            if let Ok(ks) = parse_keys(&raw) {
                proptest::prop_assert!(!ks.control.is_empty() && ks.control.len() <= MAX_KEYS);
                proptest::prop_assert!(ks.data.len() <= MAX_KEYS);
            }
        }

        #[test]
        fn toml_errors_are_one_line(text in "[a-z_ =\"\\[\\]0-9\n]{0,80}") {
            if let Err(e) = parse_file_config(&text) {
                proptest::prop_assert!(!e.to_string().contains('\n'), "{}", e);
            }
        }
    }

    #[test]
    fn bad_key_files() {
        assert!(parse_keys(b"").is_err());
        assert!(parse_keys(b"1:0011\n").is_err());
        assert!(parse_keys(b"300:00112233445566778899aabbccddeeff\n").is_err());
        assert!(parse_keys(
            b"1:00112233445566778899aabbccddeeff\n1:00112233445566778899aabbccddeeff\n"
        )
        .is_err());
        assert!(parse_keys(b"1:00112233445566778899aabbccddeeff\n2:00112233445566778899aabbccddeeff\n3:00112233445566778899aabbccddeeff\n").is_err());
        assert!(parse_keys(&[0xffu8; 17]).is_err());
        assert!(!format!("{:?}", parse_keys(&[7u8; 16]).unwrap()).contains('7'));
    }

    #[test]
    fn sixteen_bytes_of_text_are_a_truncated_text_file_not_a_raw_key() {
        // What an interrupted write of `1:000102...0f` leaves behind.
        let e = parse_keys(b"1:00010203040506").unwrap_err();
        assert!(e.0.contains("not taken as a raw key"), "{e}");
        assert!(parse_keys(b"abcdefghijklmnop").is_err());
        assert!(parse_keys(b"0123456789abcde\n").is_err());
        // Raw bytes stay a raw key when they are not all printable.
        let mut raw = *b"abcdefghijklmnop";
        raw[7] = 0x01;
        assert_eq!(parse_keys(&raw).unwrap().active().bytes, raw);
    }

    #[test]
    fn group_or_world_readable_key_files_are_warned_about() {
        use std::os::unix::fs::PermissionsExt;
        let path = std::env::temp_dir().join(format!("tandem-keymode-{}", std::process::id()));
        std::fs::write(&path, "1:00112233445566778899aabbccddeeff\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(key_file_mode_warning(&path), None);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let w = key_file_mode_warning(&path).unwrap();
        assert!(w.contains("0644") && w.contains("chmod 600"), "{w}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        assert!(key_file_mode_warning(&path).is_some());
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn a_dropped_key_leaves_no_key_bytes_behind() {
        use zeroize::Zeroize;
        let mut k = parse_keys(b"1:00112233445566778899aabbccddeeff\n")
            .unwrap()
            .control[0]
            .clone();
        k.zeroize();
        assert_eq!(k.bytes, [0u8; 16]);
        assert_eq!(k.id, KeyId(1));
    }
}
