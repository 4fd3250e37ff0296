//! Multi-host harness: each host is a Linux network namespace, real `tandemd` processes.
//!
//! Topology of one [`Net`]: a bridge namespace `tdm-<pid>-<n>-br` holding bridge `br0`, and
//! hosts `tdm-<pid>-<n>-h<i>`, each with `eth0` = a veth whose peer `v<i>` is a port of `br0`.
//! Host `i` (1-based) has `198.18.0.<i>/24` (RFC 2544 benchmarking range) and
//! `fd00:7a6e::<i>/64` (a unique local address, added without duplicate address detection so
//! it is usable at once), `lo` up, and a multicast route on `eth0`. Nothing touches the root namespace: the veth pairs are created
//! inside the bridge namespace and their peers moved straight into the hosts.
//!
//! Teardown is in `Drop` (runs on panic too): every `tandemd` is killed, the namespaces are
//! deleted. At start, namespaces left by an aborted run (a `tdm-<pid>-` prefix whose process
//! is gone) are deleted too.
//!
//! Talking to a node: its HTTP endpoint listens on `127.0.0.1:7380` inside its namespace; the
//! harness reaches it from a short-lived thread that has joined that namespace with `setns`
//! (the only `unsafe` here, see [`in_netns`]).
//!
//! Without root (or without network namespaces) [`Net::new`] prints why and returns `None` so
//! tests skip; with `CI=true` it panics instead, since CI must run them.
//!
//! Every wait is bounded in count and time ([`wait_for`]).
#![allow(unsafe_code)]

use std::fs::File;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub use serde_json::Value;

/// The HTTP address every node uses inside its own namespace.
pub const HTTP_PORT: u16 = 7380;
pub const RESP_PORT: u16 = 6380;

pub mod faults;
pub mod haproxy;
pub mod hostile;
pub mod libs;
pub mod linkemu;
pub mod logs;
pub mod probe;
pub mod resp_client;
pub mod scenario;
pub mod transfer;

static NEXT_NET: AtomicUsize = AtomicUsize::new(0);

/// Runs `cmd` and panics with its stderr if it fails (set-up must not half-work silently).
pub fn sh(args: &[&str]) -> String {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn sh_quiet(args: &[&str]) -> bool {
    Command::new(args[0])
        .args(&args[1..])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Whether this runs under CI (`CI=true`), where every prerequisite must be present.
pub fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Calls `f` every `step` until it returns `Some`, at most `limit` long.
pub fn wait_for<T>(limit: Duration, step: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if start.elapsed() >= limit {
            return None;
        }
        std::thread::sleep(step);
    }
}

/// Runs `f` on a fresh thread that has entered network namespace `ns`; sockets `f` opens
/// live in that namespace.
pub fn in_netns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = format!("/run/netns/{ns}");
    let file = File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    std::thread::spawn(move || {
        // SAFETY: setns on an fd we own for the call's duration; it only changes this
        // thread's network namespace, and this thread ends when `f` returns.
        let r = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(r, 0, "setns: {}", std::io::Error::last_os_error());
        f()
    })
    .join()
    .unwrap_or_else(|_| panic!("thread in netns panicked"))
}

/// `GET path` on `addr` inside `ns`: (status code, body), or `None` if unreachable.
pub fn http_get(ns: &str, addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let req = format!("GET {path} HTTP/1.1\r\nHost: tandem\r\nConnection: close\r\n\r\n");
    in_netns(ns, move || {
        let (code, _, body) = http_exchange(addr, &req, Duration::from_secs(2))?;
        Some((code, body))
    })
}

/// Sends the whole HTTP/1.1 request `req` (which asks `Connection: close`) to `addr` from
/// the calling thread's namespace and reads the answer until the server closes or `limit`
/// passes between reads: (status code, head, body), or `None` if unreachable or cut short.
pub fn http_exchange(
    addr: SocketAddr,
    req: &str,
    limit: Duration,
) -> Option<(u16, String, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(500)).ok()?;
    s.set_read_timeout(Some(limit)).ok()?;
    s.write_all(req.as_bytes()).ok()?;
    let mut buf = Vec::new();
    // Bounded: a reply is far smaller; read_to_end stops at close or the timeout.
    s.take(1 << 20).read_to_end(&mut buf).ok()?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let code = text.get(9..12)?.parse().ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    Some((code, head.to_string(), body.to_string()))
}

/// The `tandemd` binary of this profile, built once per test process; `TANDEMD_BIN` names
/// another one (a bench comparing against an older build).
pub fn tandemd_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(bin) = std::env::var_os("TANDEMD_BIN") {
            return PathBuf::from(bin);
        }
        let root = workspace_root();
        let target = target_dir();
        let release = !cfg!(debug_assertions);
        let bin = target
            .join(if release { "release" } else { "debug" })
            .join("tandemd");
        // Always ask cargo: it is a no-op when the binary is fresh, and a stale daemon would
        // make every test lie.
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut c = Command::new(cargo);
        c.args(["build", "-q", "-p", "tandemd"]).current_dir(&root);
        if release {
            c.arg("--release");
        }
        let ok = c.status().is_ok_and(|s| s.success());
        assert!(
            ok || bin.exists(),
            "could not build tandemd into {}",
            bin.display()
        );
        bin
    })
    .clone()
}

/// The workspace's root directory (the parent of this crate's).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// Cargo's target directory: `CARGO_TARGET_DIR`, else `target/` in the workspace.
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"))
}

/// Deletes namespaces `tdm-<pid>-*` whose pid is no longer running (an aborted earlier run).
pub fn clean_stale() {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        let Some(rest) = name.strip_prefix("tdm-") else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if pid == std::process::id() || Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        delete_ns(name);
    }
}

fn delete_ns(name: &str) {
    if let Ok(out) = Command::new("ip").args(["netns", "pids", name]).output() {
        for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
            sh_quiet(&["kill", "-9", pid]);
        }
    }
    sh_quiet(&["ip", "netns", "del", name]);
}

/// Whether this process may create namespaces; the reason if not.
fn can_create_namespaces() -> Result<(), String> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Err("not root".into());
    }
    // Unique per call: tests of one process probe concurrently.
    let probe = format!(
        "tdm-{}-probe{}",
        std::process::id(),
        NEXT_NET.fetch_add(1, Ordering::Relaxed)
    );
    let out = Command::new("ip")
        .args(["netns", "add", &probe])
        .output()
        .map_err(|e| format!("ip: {e}"))?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
    }
    sh_quiet(&["ip", "netns", "del", &probe]);
    Ok(())
}

/// Resident memory of process `pid` in bytes (`VmRSS`), or `None` if it is gone.
pub fn rss_bytes(pid: i32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb * 1024)
}

/// Raises this process's soft descriptor limit to `want` (at most the hard limit) and
/// returns the limit in force: tests that open thousands of client sockets need it.
pub fn raise_own_nofile(want: u64) -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a live, correctly typed struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 0;
        }
        if lim.rlim_cur < want {
            let raised = libc::rlimit {
                rlim_cur: want.min(lim.rlim_max),
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                return raised.rlim_cur;
            }
        }
    }
    lim.rlim_cur
}

/// CPU time of `pid` in ns: schedstat when the kernel has it, else utime+stime ticks.
pub fn cpu_ns(pid: i32) -> Option<u64> {
    if let Ok(s) = std::fs::read_to_string(format!("/proc/{pid}/schedstat")) {
        if let Some(ns) = s.split_whitespace().next().and_then(|v| v.parse().ok()) {
            return Some(ns);
        }
    }
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    Some(ticks * 10_000_000) // USER_HZ = 100 on Linux
}

/// A running `tandemd` in a host.
pub struct Node {
    pub host: usize,
    pub ns: String,
    pub child: Child,
    pub log: PathBuf,
    pub http: SocketAddr,
    pub exited: Option<ExitStatus>,
}

impl Node {
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }
}

/// A set of hosts on one bridge. See the module docs.
pub struct Net {
    pub prefix: String,
    /// The switch namespace: bridge `br0`, or the emulated wire's ports (see [`linkemu`]).
    pub bridge: String,
    pub hosts: Vec<String>,
    pub nodes: Vec<Node>,
    /// The link emulator when the hosts are joined by an emulated wire.
    pub emu: Option<linkemu::LinkEmu>,
    logs: PathBuf,
}

impl Net {
    /// Creates `hosts` hosts, or returns `None` (after printing why) when namespaces cannot
    /// be created here. Panics instead under `CI=true`.
    pub fn new(hosts: usize) -> Option<Net> {
        Net::build(hosts, None)
    }

    /// Like [`Net::new`], but the hosts are joined by the userspace link emulator of
    /// [`linkemu`] (delay, jitter, loss, partitions) instead of a kernel bridge.
    pub fn emulated(hosts: usize, params: linkemu::LinkParams) -> Option<Net> {
        Net::build(hosts, Some(params))
    }

    fn build(hosts: usize, emulated: Option<linkemu::LinkParams>) -> Option<Net> {
        if let Err(why) = can_create_namespaces() {
            assert!(
                !ci(),
                "CI=true but network namespaces are unavailable: {why}"
            );
            eprintln!("SKIP: network namespace tests need root ({why})");
            return None;
        }
        clean_stale();
        let n = NEXT_NET.fetch_add(1, Ordering::Relaxed);
        let prefix = format!("tdm-{}-{n}", std::process::id());
        let logs = std::env::temp_dir().join(&prefix);
        let _ = std::fs::create_dir_all(&logs);
        let mut net = Net {
            bridge: format!("{prefix}-br"),
            prefix,
            hosts: Vec::new(),
            nodes: Vec::new(),
            emu: None,
            logs,
        };
        // From here on, Drop cleans up whatever was created, even if a step panics.
        let br = net.bridge.clone();
        sh(&["ip", "netns", "add", &br]);
        sh(&["ip", "-n", &br, "link", "set", "lo", "up"]);
        if emulated.is_none() {
            sh(&[
                "ip",
                "-n",
                &br,
                "link",
                "add",
                "br0",
                "type",
                "bridge",
                "mcast_snooping",
                "0",
            ]);
            sh(&["ip", "-n", &br, "link", "set", "br0", "up"]);
        }
        for i in 1..=hosts {
            let ns = format!("{}-h{i}", net.prefix);
            sh(&["ip", "netns", "add", &ns]);
            net.hosts.push(ns.clone());
            let v = format!("v{i}");
            sh(&[
                "ip", "-n", &br, "link", "add", &v, "type", "veth", "peer", "name", "eth0",
                "netns", &ns,
            ]);
            if emulated.is_some() {
                // Full-size, fully checksummed frames: the emulator re-sends them from a
                // packet socket, which carries no offload metadata.
                for (n, dev) in [(&br, &v), (&ns, &"eth0".to_string())] {
                    sh(&[
                        "ip", "netns", "exec", n, "ethtool", "-K", dev, "tx", "off", "rx", "off",
                        "tso", "off", "gso", "off", "gro", "off",
                    ]);
                }
            } else {
                sh(&["ip", "-n", &br, "link", "set", &v, "master", "br0"]);
            }
            sh(&["ip", "-n", &br, "link", "set", &v, "up"]);
            sh(&["ip", "-n", &ns, "link", "set", "lo", "up"]);
            let v4 = format!("{}/24", Net::addr(i));
            let v6 = format!("{}/64", Net::addr6(i));
            for extra in [&[v4.as_str()][..], &[v6.as_str(), "nodad"][..]] {
                let mut cmd = vec!["ip", "-n", &ns, "addr", "add", "dev", "eth0"];
                cmd.extend_from_slice(extra);
                sh(&cmd);
            }
            sh(&["ip", "-n", &ns, "link", "set", "eth0", "up"]);
            sh(&[
                "ip",
                "-n",
                &ns,
                "route",
                "add",
                "224.0.0.0/4",
                "dev",
                "eth0",
            ]);
        }
        if let Some(params) = emulated {
            let ports: Vec<String> = (1..=hosts).map(|i| format!("v{i}")).collect();
            net.emu = Some(linkemu::LinkEmu::start(&br, &ports, params));
        }
        Some(net)
    }

    /// Address of host `i` (1-based).
    pub fn addr(i: usize) -> Ipv4Addr {
        Ipv4Addr::new(198, 18, 0, i as u8)
    }

    /// IPv6 address of host `i` (1-based): in the ULA range fd00::/8, on the veths only.
    pub fn addr6(i: usize) -> Ipv6Addr {
        Ipv6Addr::new(0xfd00, 0x7a6e, 0, 0, 0, 0, 0, i as u16)
    }

    /// The MAC address of host `host`'s eth0 (`02:..`), as `ip link` prints it.
    pub fn mac(&self, host: usize) -> String {
        let out = sh(&[
            "ip",
            "-n",
            self.ns(host),
            "-o",
            "link",
            "show",
            "dev",
            "eth0",
        ]);
        let mut w = out.split_whitespace();
        w.find(|x| *x == "link/ether");
        w.next().unwrap_or_default().to_string()
    }

    /// Namespace of host `i` (1-based).
    pub fn ns(&self, host: usize) -> &str {
        &self.hosts[host - 1]
    }

    /// Whether host `host`'s eth0 carries the address `cidr` (`198.18.0.100/24`,
    /// `fd00:7a6e::100/64`).
    pub fn holds_address(&self, host: usize, cidr: &str) -> bool {
        self.addresses(host).iter().any(|w| w == cidr)
    }

    /// The words of `ip -o addr show dev eth0` on host `host` (its addresses as
    /// `ADDR/PREFIX` among them): one `ip` call for several checks at the same moment.
    pub fn addresses(&self, host: usize) -> Vec<String> {
        sh(&[
            "ip",
            "-n",
            self.ns(host),
            "-o",
            "addr",
            "show",
            "dev",
            "eth0",
        ])
        .split_whitespace()
        .map(str::to_string)
        .collect()
    }

    /// A key file `name` (mode 0600) with one fresh random AES-128 key, in this net's scratch
    /// directory (removed with it): `--key-file` for nodes that run as in production. One
    /// file per cluster: a key is never shared between clusters (docs/PROTOCOL.md).
    pub fn key_file(&self, name: &str) -> String {
        use std::os::unix::fs::OpenOptionsExt;
        let mut key = [0u8; 16];
        File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(&mut key))
            .unwrap_or_else(|e| panic!("/dev/urandom: {e}"));
        let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
        let path = self.logs.join(name);
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&path)
            .and_then(|mut f| f.write_all(format!("1:{hex}\n").as_bytes()))
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        path.to_string_lossy().into_owned()
    }

    /// Starts `tandemd` on host `host` (1-based) with `--node-id host`, `--interface eth0` and
    /// `args`; returns the node index. The node's stderr goes to a log file.
    pub fn start(&mut self, host: usize, args: &[&str]) -> usize {
        self.start_env(host, args, &[])
    }

    /// [`Net::start`] with extra environment variables for the daemon.
    pub fn start_env(&mut self, host: usize, args: &[&str], env: &[(&str, &str)]) -> usize {
        self.start_on(host, "eth0", args, env)
    }

    /// [`Net::start_env`] with the cluster interface `interface` instead of `eth0`.
    pub fn start_on(
        &mut self,
        host: usize,
        interface: &str,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> usize {
        self.start_with(host, interface, args, env, None, host)
    }

    /// [`Net::start_env`] with `--node-id id` instead of the host number (twins: two hosts
    /// with one id).
    pub fn start_as(
        &mut self,
        host: usize,
        id: usize,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> usize {
        self.start_with(host, "eth0", args, env, None, id)
    }

    /// [`Net::start`] with the daemon's `RLIMIT_NOFILE` set to `(soft, hard)`, as
    /// `ulimit -n` or systemd's `LimitNOFILE` would.
    pub fn start_nofile(&mut self, host: usize, args: &[&str], nofile: (u64, u64)) -> usize {
        self.start_with(host, "eth0", args, &[], Some(nofile), host)
    }

    fn start_with(
        &mut self,
        host: usize,
        interface: &str,
        args: &[&str],
        env: &[(&str, &str)],
        nofile: Option<(u64, u64)>,
        node_id: usize,
    ) -> usize {
        let ns = self.ns(host).to_string();
        let idx = self.nodes.len();
        let log = self.logs.join(format!("node{idx}-h{host}.log"));
        let err = File::create(&log).unwrap_or_else(|e| panic!("{}: {e}", log.display()));
        let id = node_id.to_string();
        let mut full: Vec<&str> = vec!["--node-id", &id, "--interface", interface];
        full.extend_from_slice(args);
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &ns])
            .arg(tandemd_bin())
            .args(&full)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(err);
        if let Some((soft, hard)) = nofile {
            use std::os::unix::process::CommandExt;
            let lim = libc::rlimit {
                rlim_cur: soft,
                rlim_max: hard,
            };
            // SAFETY: runs in the forked child before exec; setrlimit is async-signal-safe
            // and `lim` is a plain value copied into the closure. `ip` execs tandemd, which
            // inherits the limit.
            unsafe {
                cmd.pre_exec(move || {
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) == 0 {
                        Ok(())
                    } else {
                        Err(std::io::Error::last_os_error())
                    }
                });
            }
        }
        let child = cmd.spawn().unwrap_or_else(|e| panic!("spawn tandemd: {e}"));
        // The HTTP address the node was told, reachable from inside its namespace
        // (0.0.0.0 is reached through loopback).
        let http = args
            .windows(2)
            .find(|w| w[0] == "--http")
            .and_then(|w| w[1].parse::<SocketAddr>().ok())
            .map(|a| {
                if a.ip().is_unspecified() {
                    SocketAddr::from(([127, 0, 0, 1], a.port()))
                } else {
                    a
                }
            })
            .unwrap_or(SocketAddr::from(([127, 0, 0, 1], HTTP_PORT)));
        self.nodes.push(Node {
            host,
            ns,
            child,
            log,
            http,
            exited: None,
        });
        idx
    }

    /// Runs `tandemd args` in host `host` to completion (bounded: 10 s) and returns its exit
    /// code and stderr; for config checks.
    pub fn run_to_exit(&self, host: usize, args: &[&str]) -> (Option<i32>, String) {
        let (code, _, err) = self.run(host, args);
        (code, err)
    }

    /// Runs `tandemd args` in host `host` to completion (bounded: 10 s): exit code, stdout,
    /// stderr. For the operator subcommands (`status`, `check`, `keygen`).
    pub fn run(&self, host: usize, args: &[&str]) -> (Option<i32>, String, String) {
        run_bounded(
            Command::new("ip")
                .args(["netns", "exec", self.ns(host)])
                .arg(tandemd_bin())
                .args(args),
        )
    }

    /// `GET path` on node `node`.
    pub fn get(&self, node: usize, path: &str) -> Option<(u16, String)> {
        let n = &self.nodes[node];
        http_get(&n.ns, n.http, path)
    }

    /// `/status` of node `node` as JSON, or `None` if unreachable or not JSON.
    pub fn status(&self, node: usize) -> Option<Value> {
        let (code, body) = self.get(node, "/status")?;
        if code != 200 {
            return None;
        }
        serde_json::from_str(&body).ok()
    }

    /// Waits (bounded) until node `node` answers /status.
    pub fn wait_up(&self, node: usize) -> Value {
        wait_for(Duration::from_secs(10), Duration::from_millis(20), || {
            self.status(node)
        })
        .unwrap_or_else(|| panic!("node {node} never answered /status\n{}", self.log(node)))
    }

    /// State of member `member_id` in node `node`'s /status (`alive`, `dead`, ...).
    pub fn member_state(&self, node: usize, member_id: u64) -> Option<String> {
        let s = self.status(node)?;
        s["members"]
            .as_array()?
            .iter()
            .find(|m| m["node_id"].as_u64() == Some(member_id))
            .and_then(|m| m["state"].as_str().map(str::to_string))
    }

    /// Waits at most `limit` until node `node` sees member `member_id` in `state`.
    pub fn wait_member_state(
        &self,
        node: usize,
        member_id: u64,
        state: &str,
        limit: Duration,
    ) -> bool {
        wait_for(limit, Duration::from_millis(5), || {
            (self.member_state(node, member_id).as_deref() == Some(state)).then_some(())
        })
        .is_some()
    }

    /// The value of a Prometheus sample line `name` (with labels, e.g.
    /// `tandem_frames_dropped_total{reason="auth"}`) in node `node`'s /metrics.
    pub fn metric(&self, node: usize, name: &str) -> Option<u64> {
        let (code, body) = self.get(node, "/metrics")?;
        if code != 200 {
            return None;
        }
        body.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
    }

    pub fn kill9(&mut self, node: usize) {
        let n = &mut self.nodes[node];
        let _ = n.child.kill();
        n.exited = n.child.wait().ok();
    }

    /// Sends SIGTERM and waits (bounded: 5 s) for the exit status.
    pub fn sigterm(&mut self, node: usize) -> Option<ExitStatus> {
        self.signal(node, libc::SIGTERM);
        let n = &mut self.nodes[node];
        let st = wait_for(Duration::from_secs(5), Duration::from_millis(2), || {
            n.child.try_wait().ok().flatten()
        });
        n.exited = st;
        st
    }

    pub fn signal(&self, node: usize, sig: i32) {
        // SAFETY: kill(2) with a pid we spawned and have not reaped (no pid reuse yet).
        unsafe {
            libc::kill(self.nodes[node].pid(), sig);
        }
    }

    /// Whether node `node`'s process is still running.
    pub fn running(&mut self, node: usize) -> bool {
        let n = &mut self.nodes[node];
        if n.exited.is_some() {
            return false;
        }
        match n.child.try_wait() {
            Ok(Some(st)) => {
                n.exited = Some(st);
                false
            }
            _ => true,
        }
    }

    /// The node's log so far (for failure messages).
    pub fn log(&self, node: usize) -> String {
        std::fs::read_to_string(&self.nodes[node].log).unwrap_or_default()
    }

    /// Takes host `host`'s link down (`up = false`) or up again.
    pub fn link(&self, host: usize, up: bool) {
        let v = format!("v{host}");
        sh(&[
            "ip",
            "-n",
            &self.bridge,
            "link",
            "set",
            &v,
            if up { "up" } else { "down" },
        ]);
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        // Stop the emulator thread first: it holds sockets in the switch namespace.
        self.emu = None;
        let panicking = std::thread::panicking();
        for (i, n) in self.nodes.iter_mut().enumerate() {
            let _ = n.child.kill();
            let _ = n.child.wait();
            if panicking {
                let log = std::fs::read_to_string(&n.log).unwrap_or_default();
                eprintln!("--- node {i} (host {}) log ---\n{log}", n.host);
            }
        }
        for ns in self.hosts.iter().chain(std::iter::once(&self.bridge)) {
            delete_ns(ns);
        }
        let _ = std::fs::remove_dir_all(&self.logs);
    }
}

/// Runs `cmd` to completion (bounded: 10 s, then killed): exit code, stdout, stderr. Output
/// is read while it runs, so a chatty command cannot block on a full pipe.
pub fn run_bounded(cmd: &mut Command) -> (Option<i32>, String, String) {
    run_bounded_for(cmd, Duration::from_secs(10))
}

/// [`run_bounded`] with the limit `limit` instead of 10 s.
pub fn run_bounded_for(cmd: &mut Command, limit: Duration) -> (Option<i32>, String, String) {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    let drain = |r: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            if let Some(mut r) = r {
                let _ = r.read_to_string(&mut text);
            }
            text
        })
    };
    let out = drain(
        child
            .stdout
            .take()
            .map(|o| Box::new(o) as Box<dyn Read + Send>),
    );
    let err = drain(
        child
            .stderr
            .take()
            .map(|e| Box::new(e) as Box<dyn Read + Send>),
    );
    let status = wait_for(limit, Duration::from_millis(10), || {
        child.try_wait().ok().flatten()
    });
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    (
        status.and_then(|s| s.code()),
        out.join().unwrap_or_default(),
        err.join().unwrap_or_default(),
    )
}

/// Names of existing namespaces with `prefix`.
pub fn namespaces_with_prefix(prefix: &str) -> Vec<String> {
    let out = Command::new("ip").args(["netns", "list"]).output();
    let Ok(out) = out else { return Vec::new() };
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(prefix))
        .map(str::to_string)
        .collect()
}

/// Receives IPv4 packets of IP protocol `proto` inside `ns` for `limit` (bounded) and returns
/// `(ttl, destination)` of each, at most `max`. Used to check what goes on the wire.
pub fn capture_ttls(ns: &str, proto: i32, limit: Duration, max: usize) -> Vec<(u8, Ipv4Addr)> {
    in_netns(ns, move || {
        // SAFETY: plain socket(2) call; the fd is closed below.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, proto) };
        assert!(fd >= 0, "raw socket: {}", std::io::Error::last_os_error());
        let tv = libc::timeval {
            tv_sec: 0,
            tv_usec: 50_000,
        };
        // SAFETY: `tv` is a live timeval and its exact size is passed.
        unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&tv as *const libc::timeval).cast(),
                std::mem::size_of::<libc::timeval>() as libc::socklen_t,
            );
        }
        let mut seen = Vec::new();
        let start = Instant::now();
        let mut buf = [0u8; 2048];
        while start.elapsed() < limit && seen.len() < max {
            // SAFETY: `buf` is writable for its full length.
            let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n >= 20 {
                seen.push((buf[8], Ipv4Addr::new(buf[16], buf[17], buf[18], buf[19])));
            }
        }
        // SAFETY: `fd` is ours and not used after this.
        unsafe { libc::close(fd) };
        seen
    })
}
