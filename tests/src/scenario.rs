//! The set-up of the fault scenarios (issue 6) and the session tests (issue 5): data nodes
//! A (host 1) and B (host 2), optionally a witness W (host 3), and a load-balancer host
//! (last host) running HAProxy in front of the data nodes' RESP ports.
//!
//! Every node authenticates with a key file (the data nodes a control and a data key, the
//! witness the control key only), listens for RESP and HTTP on its own host
//! address (`198.18.0.i:6380`, `198.18.0.i:7380`) so that HAProxy reaches them, and uses the
//! `lan` profile unless told otherwise. Clients connect from the LB host, either through
//! HAProxy ([`Cluster::client`]) or straight to one node ([`Cluster::direct`]).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::haproxy::{Backend, Haproxy};
use crate::linkemu::LinkParams;
use crate::resp_client::{Reply, Resp};
use crate::{wait_for, Net, HTTP_PORT, RESP_PORT};

/// The control key (id 1) every scenario starts with; its data key is [`data_key`] of it.
pub const KEY1: [u8; 16] = *b"tandem-fault-k01";
/// The control key rotated to in the key-rotation scenario (id 2).
pub const KEY2: [u8; 16] = *b"tandem-fault-k02";
/// HAProxy's client port on the LB host.
pub const LB_PORT: u16 = 6379;

/// The data key that goes with control key `control` (its bitwise complement).
pub fn data_key(control: &[u8; 16]) -> [u8; 16] {
    control.map(|b| !b)
}

/// The key file lines of key `id`: control key `key` and its [`data_key`], or for a
/// `witness` the control key only.
pub fn key_lines(id: u8, key: &[u8; 16], witness: bool) -> String {
    let hex = |k: &[u8; 16]| k.iter().map(|b| format!("{b:02x}")).collect::<String>();
    let control = format!("{id}:control:{}\n", hex(key));
    if witness {
        control
    } else {
        format!("{control}{id}:data:{}\n", hex(&data_key(key)))
    }
}

/// What a scenario needs.
#[derive(Clone, Debug)]
pub struct Opts {
    /// A witness on host 3, and `--voters 1,2,3` everywhere.
    pub witness: bool,
    /// Start HAProxy on the LB host.
    pub haproxy: bool,
    /// Join the hosts with the link emulator instead of a bridge.
    pub emulated: Option<LinkParams>,
    /// Extra flags for every node (e.g. `--profile fast`, `--max-value-bytes ...`).
    pub extra: Vec<String>,
}

impl Default for Opts {
    fn default() -> Opts {
        Opts {
            witness: true,
            haproxy: true,
            emulated: None,
            extra: Vec::new(),
        }
    }
}

pub struct Cluster {
    pub opts: Opts,
    /// Host of the load balancer (and of the test's clients).
    pub lb_host: usize,
    /// Node index (in `net.nodes`) of the latest process started on each host, by host - 1.
    pub on_host: Vec<Option<usize>>,
    pub key_file: PathBuf,
    /// The witness's key file: control keys only.
    pub witness_key_file: PathBuf,
    // Declared before `net`: HAProxy stops before the namespaces go.
    pub lb: Option<Haproxy>,
    pub net: Net,
}

impl Cluster {
    /// Creates the hosts (A, B, [W], LB), starts the data nodes and the witness, and
    /// HAProxy; waits until every node is healthy. `None` when namespaces are unavailable.
    pub fn start(opts: Opts) -> Option<Cluster> {
        let hosts = if opts.witness { 4 } else { 3 };
        let net = match opts.emulated {
            Some(p) => Net::emulated(hosts, p)?,
            None => Net::new(hosts)?,
        };
        let key_file = std::env::temp_dir().join(format!("{}.key", net.prefix));
        let witness_key_file = std::env::temp_dir().join(format!("{}.witness.key", net.prefix));
        for (path, witness) in [(&key_file, false), (&witness_key_file, true)] {
            std::fs::write(path, key_lines(1, &KEY1, witness))
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        }
        let mut c = Cluster {
            lb_host: hosts,
            on_host: vec![None; hosts],
            key_file,
            witness_key_file,
            lb: None,
            net,
            opts,
        };
        c.start_node(1);
        c.start_node(2);
        if c.opts.witness {
            c.start_node(3);
        }
        if c.opts.haproxy {
            let backends = [1, 2].map(|h| Backend {
                name: Cluster::server_name(h).to_string(),
                resp: Cluster::resp_addr(h),
                http_port: HTTP_PORT,
            });
            let ns = c.net.ns(c.lb_host).to_string();
            let listen = SocketAddr::from((Net::addr(c.lb_host), LB_PORT));
            c.lb = Some(Haproxy::start(&ns, listen, &backends));
        }
        for h in [1, 2] {
            c.wait_healthy(h, Duration::from_secs(15));
        }
        if let Some(lb) = &c.lb {
            for h in [1, 2] {
                let name = Cluster::server_name(h);
                assert!(
                    lb.wait_status(name, "UP", Duration::from_secs(10)),
                    "haproxy never marked {name} UP: {:?}",
                    lb.server_status(name)
                );
            }
        }
        Some(c)
    }

    /// HAProxy's name for the data node on `host`.
    pub fn server_name(host: usize) -> &'static str {
        if host == 1 {
            "a"
        } else {
            "b"
        }
    }

    pub fn resp_addr(host: usize) -> SocketAddr {
        SocketAddr::from((Net::addr(host), RESP_PORT))
    }

    /// The flags of the node on `host` (its id is the host number).
    pub fn args(&self, host: usize) -> Vec<String> {
        let a = Net::addr(host);
        let key_file = if self.opts.witness && host == 3 {
            &self.witness_key_file
        } else {
            &self.key_file
        };
        let mut v: Vec<String> = vec![
            "--key-file".into(),
            key_file.to_string_lossy().into_owned(),
            "--http".into(),
            format!("{a}:{HTTP_PORT}"),
            "--resp".into(),
            format!("{a}:{RESP_PORT}"),
            // Clients come from the load-balancer host and the test hosts' network, which
            // is theirs alone: no password, so protected mode must be off.
            "--protected-mode".into(),
            "no".into(),
        ];
        if self.opts.witness {
            v.extend(["--voters".into(), "1,2,3".into()]);
            if host == 3 {
                v.push("--witness".into());
            }
        }
        v.extend(self.opts.extra.iter().cloned());
        v
    }

    /// Starts (or restarts) the node on `host`; returns its node index.
    pub fn start_node(&mut self, host: usize) -> usize {
        let args = self.args(host);
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let idx = self.net.start(host, &refs);
        self.on_host[host - 1] = Some(idx);
        idx
    }

    /// Node index of the process on `host`.
    pub fn node(&self, host: usize) -> usize {
        self.on_host[host - 1].unwrap_or_else(|| panic!("no node on host {host}"))
    }

    pub fn kill9(&mut self, host: usize) {
        let n = self.node(host);
        self.net.kill9(n);
    }

    /// `/health` of the node on `host`: (code, body).
    pub fn health(&self, host: usize) -> Option<(u16, String)> {
        self.net.get(self.node(host), "/health")
    }

    pub fn wait_healthy(&self, host: usize, limit: Duration) {
        let ok = wait_for(limit, Duration::from_millis(20), || {
            (self.health(host)?.0 == 200).then_some(())
        });
        assert!(
            ok.is_some(),
            "node on host {host} never healthy: {:?}\n{:?}\n{}",
            self.health(host),
            self.net.status(self.node(host)),
            self.net.log(self.node(host))
        );
    }

    /// Hosts running cluster members: A, B and the witness if any.
    pub fn member_hosts(&self) -> Vec<usize> {
        if self.opts.witness {
            vec![1, 2, 3]
        } else {
            vec![1, 2]
        }
    }

    /// Waits (bounded) until every member is alive in every member's view and all agree on
    /// one leader and view, twice in a row 100 ms apart: a baseline for "nothing changes".
    pub fn wait_settled(&self, limit: Duration) {
        let hosts = self.member_hosts();
        let snapshot = || -> Option<(u64, u64)> {
            let mut agreed: Option<(u64, u64)> = None;
            for &h in &hosts {
                let s = self.net.status(self.node(h))?;
                let members = s["members"].as_array()?;
                let all_alive =
                    members.len() == hosts.len() && members.iter().all(|m| m["state"] == "alive");
                let lv = (s["leader"].as_u64()?, s["view"].as_u64()?);
                if !all_alive || agreed.is_some_and(|a| a != lv) {
                    return None;
                }
                agreed = Some(lv);
            }
            agreed
        };
        let mut last = None;
        let ok = wait_for(limit, Duration::from_millis(100), || {
            let now = snapshot();
            let stable = now.is_some() && now == last;
            last = now;
            stable.then_some(())
        });
        assert!(
            ok.is_some(),
            "cluster never settled: {:?}",
            hosts
                .iter()
                .map(|&h| self.net.status(self.node(h)))
                .collect::<Vec<_>>()
        );
    }

    /// A metric of the node on `host`.
    pub fn metric(&self, host: usize, name: &str) -> Option<u64> {
        self.net.metric(self.node(host), name)
    }

    /// A client connected through HAProxy.
    pub fn client(&self) -> std::io::Result<Resp> {
        let lb = self.lb.as_ref().expect("no haproxy in this scenario");
        Resp::connect(self.net.ns(self.lb_host), lb.addr, Duration::from_secs(5))
    }

    /// A client connected straight to the node on `host`.
    pub fn direct(&self, host: usize) -> std::io::Result<Resp> {
        Resp::connect(
            self.net.ns(self.lb_host),
            Cluster::resp_addr(host),
            Duration::from_secs(5),
        )
    }

    /// A client on the node's own host (the web app next to its node), connected over
    /// loopback: its requests cross no emulated or lossy link.
    pub fn local(&self, host: usize) -> std::io::Result<Resp> {
        Resp::connect(
            self.net.ns(host),
            Cluster::resp_addr(host),
            Duration::from_secs(10),
        )
    }

    /// Every key and value the node on `host` holds (SCAN + MGET), sorted.
    pub fn dump(&self, host: usize) -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut c = self
            .direct(host)
            .unwrap_or_else(|e| panic!("connect to host {host}: {e}"));
        let mut keys = Vec::new();
        let mut cursor = b"0".to_vec();
        // Bounded: a scan of n keys takes about n / COUNT rounds.
        for _ in 0..100_000 {
            let r = c
                .cmd(&[b"SCAN", &cursor, b"COUNT", b"1000"])
                .unwrap_or_else(|e| panic!("SCAN: {e}"));
            let Reply::Array(Some(parts)) = r else {
                panic!("SCAN reply {r:?}")
            };
            let (Some(Reply::Bulk(Some(next))), Some(Reply::Array(Some(ks)))) =
                (parts.first(), parts.get(1))
            else {
                panic!("SCAN reply {parts:?}")
            };
            keys.extend(ks.iter().filter_map(|k| k.bytes().map(<[u8]>::to_vec)));
            cursor = next.clone();
            if cursor == b"0" {
                break;
            }
        }
        keys.sort();
        keys.dedup();
        let mut out = Vec::new();
        for chunk in keys.chunks(500) {
            let mut args: Vec<&[u8]> = vec![b"MGET"];
            args.extend(chunk.iter().map(Vec::as_slice));
            let r = c.cmd(&args).unwrap_or_else(|e| panic!("MGET: {e}"));
            let Reply::Array(Some(vals)) = r else {
                panic!("MGET reply {r:?}")
            };
            for (k, v) in chunk.iter().zip(vals) {
                if let Reply::Bulk(Some(v)) = v {
                    out.push((k.clone(), v));
                }
            }
        }
        out
    }

    /// Waits (bounded) until the data nodes hold identical data; returns it.
    pub fn wait_identical(&self, limit: Duration) -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut last = (Vec::new(), Vec::new());
        let same = wait_for(limit, Duration::from_millis(200), || {
            last = (self.dump(1), self.dump(2));
            (last.0 == last.1).then(|| last.0.clone())
        });
        same.unwrap_or_else(|| {
            panic!(
                "nodes never converged: A holds {} keys, B {}; first difference: {:?}",
                last.0.len(),
                last.1.len(),
                last.0
                    .iter()
                    .zip(&last.1)
                    .find(|(x, y)| x != y)
                    .map(|(x, y)| (
                        String::from_utf8_lossy(&x.0).into_owned(),
                        String::from_utf8_lossy(&y.0).into_owned()
                    ))
            )
        })
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.key_file);
        let _ = std::fs::remove_file(&self.witness_key_file);
    }
}
