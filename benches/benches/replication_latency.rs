//! Synchronous replicated write latency: one client, sequential RESP SETs, per-request time.
//!
//! Four targets, each measured by a client inside the node's host namespace over loopback:
//! - `cluster`: node 1 of a two-host cluster (two namespaces on a bridge, default sync mode):
//!   every reply waits until node 2 acked the write over the veth pair;
//! - `cluster, --busy-poll`: the same on a second pair (hosts 4 and 5, another cluster id)
//!   whose nodes poll without sleeping for TANDEM_BENCH_BUSY_POLL microseconds (default 50)
//!   after traffic: how much of the round trip is the VM's wake-up from idle, and what the
//!   spinning costs in CPU per request (both nodes);
//! - `standalone`: one node with no peer (the RESP + store path alone), on a third host with
//!   another cluster id;
//! - `redis`: a local `redis-server` in host 1's namespace (scale).
//!
//! Each target gets TANDEM_BENCH_SETS sequential SETs (default 20,000, 32-byte values over
//! 1,000 keys) after 1,000 warm-up SETs, in 4 rounds alternating between the targets so that
//! drift in the shared machine's load hits all alike; prints p50, p90, p99, p99.9 and max.
//! Goals for the cluster: p50 <= 100 us, p99 <= 500 us.
//!
//! Needs root (namespaces); prints SKIP otherwise. Bounded: every wait has a limit and every
//! socket a read timeout. Run: `cargo bench -p tandem-benches --bench replication_latency`.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tandem_tests::{in_netns, wait_for, Net, RESP_PORT};

/// Per-request latencies (ns), or why the run stopped.
type Samples = Result<Vec<u64>, String>;

/// SETs before each round's measured ones.
const WARM_UP: usize = 1000;

/// Port of the baseline redis-server inside a host namespace.
const REDIS_PORT: u16 = 6390;

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("replication_latency: run with `cargo bench -p tandem-benches --bench replication_latency`");
        return;
    }
    let sets: usize = std::env::var("TANDEM_BENCH_SETS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000)
        .clamp(100, 1_000_000);

    let busy_poll: u32 = std::env::var("TANDEM_BENCH_BUSY_POLL")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50)
        .clamp(1, 1000);
    // Hosts 1 and 2: a two-node cluster, sync mode. Host 3: a node of another cluster, alone.
    // Hosts 4 and 5: a third cluster, the pair of 1 and 2 with --busy-poll.
    let Some(mut net) = Net::new(5) else { return };
    // As in production: authenticated and encrypted (AES-128-GCM), one node per host.
    let key = net.key_file("cluster.key");
    let a = net.start(1, &["--key-file", &key, "--no-multicast-loop"]);
    let b = net.start(2, &["--key-file", &key, "--no-multicast-loop"]);
    let other = net.key_file("standalone.key");
    let s = net.start(
        3,
        &[
            "--key-file",
            &other,
            "--cluster-id",
            "2",
            "--no-multicast-loop",
        ],
    );
    let spin_key = net.key_file("spin.key");
    let spin = busy_poll.to_string();
    let spin_args = [
        "--key-file",
        &spin_key,
        "--cluster-id",
        "3",
        "--no-multicast-loop",
        "--busy-poll",
        &spin,
    ];
    let (c, d) = (net.start(4, &spin_args), net.start(5, &spin_args));
    if !wait_cluster(&net, a, b) || !wait_healthy(&net, s) || !wait_cluster(&net, c, d) {
        println!("nodes never became healthy; abandoned\n{}", net.log(a));
        return;
    }
    let ns1 = net.ns(1).to_string();
    let ns3 = net.ns(3).to_string();
    let ns4 = net.ns(4).to_string();
    let pids =
        |nodes: &[usize]| -> Vec<i32> { nodes.iter().map(|&n| net.nodes[n].pid()).collect() };
    let spin_name = format!("cluster, --busy-poll {busy_poll}");
    let redis = RedisServer::start(&ns1);
    if redis.is_none() {
        println!("redis-server: not installed or did not start; skipped");
    }
    let mut targets: Vec<Target> = vec![
        Target::new("cluster (sync, 2 hosts)", &ns1, RESP_PORT, pids(&[a, b])),
        Target::new(&spin_name, &ns4, RESP_PORT, pids(&[c, d])),
        Target::new("standalone (no peer)", &ns3, RESP_PORT, pids(&[s])),
    ];
    if let Some(r) = &redis {
        targets.push(Target::new(
            "redis-server (same host)",
            &ns1,
            REDIS_PORT,
            vec![r.0.id() as i32],
        ));
    }
    const ROUNDS: usize = 4;
    for _ in 0..ROUNDS {
        for t in targets.iter_mut() {
            t.round(sets / ROUNDS);
        }
    }
    for t in targets {
        let per_request = t.cpu_per_request();
        report(t.name, t.lat);
        if let Some(us) = per_request {
            println!("  CPU per request (all of its processes): {us:.1} us");
        }
    }
    for (n, name) in [(c, "busy-poll node 1"), (d, "busy-poll node 2")] {
        let spun = net.get(n, "/metrics").and_then(|(_, body)| {
            body.lines()
                .find_map(|l| l.strip_prefix("tandem_loop_busy_poll_seconds_total "))
                .and_then(|v| v.trim().parse::<f64>().ok())
        });
        let hits = net.metric(n, "tandem_loop_busy_poll_hits_total");
        if let (Some(spun), Some(hits)) = (spun, hits) {
            println!("  {name}: {spun:.3} s spent busy-polling, {hits} windows caught an event");
        }
    }
    tandem_tests::logs::warn_false_deaths(&[(1, net.log(a)), (2, net.log(b))]);
    if let Some(replicated) = net.metric(b, "tandem_sessions") {
        println!("(node 2 holds {replicated} sessions: the cluster's writes replicated)");
    }
}

/// One thing measured: where its client connects, the processes whose CPU it costs, and
/// what it gave so far.
struct Target<'a> {
    name: &'a str,
    ns: &'a str,
    port: u16,
    pids: Vec<i32>,
    lat: Samples,
    cpu_ns: u64,
    /// SETs sent, warm-ups included (the CPU figure covers them too).
    requests: usize,
}

impl<'a> Target<'a> {
    fn new(name: &'a str, ns: &'a str, port: u16, pids: Vec<i32>) -> Target<'a> {
        Target {
            name,
            ns,
            port,
            pids,
            lat: Ok(Vec::new()),
            cpu_ns: 0,
            requests: 0,
        }
    }

    /// One round of `sets` SETs (after the warm-up), with the CPU its processes used.
    fn round(&mut self, sets: usize) {
        let Ok(all) = &mut self.lat else { return };
        let cpu = |pids: &[i32]| {
            pids.iter()
                .filter_map(|&p| tandem_tests::cpu_ns(p))
                .sum::<u64>()
        };
        let before = cpu(&self.pids);
        match measure(self.ns, self.port, sets) {
            Ok(more) => all.extend(more),
            Err(e) => self.lat = Err(e),
        }
        self.cpu_ns += cpu(&self.pids).saturating_sub(before);
        self.requests += WARM_UP + sets;
    }

    /// Microseconds of CPU per SET.
    fn cpu_per_request(&self) -> Option<f64> {
        self.lat.as_ref().ok()?;
        (self.requests > 0).then(|| self.cpu_ns as f64 / 1000.0 / self.requests as f64)
    }
}

/// Waits (bounded) until both nodes see each other alive and both report healthy. Node
/// ids are host numbers.
fn wait_cluster(net: &Net, a: usize, b: usize) -> bool {
    net.wait_up(a);
    net.wait_up(b);
    let id = |n: usize| net.nodes[n].host as u64;
    net.wait_member_state(a, id(b), "alive", Duration::from_secs(10))
        && net.wait_member_state(b, id(a), "alive", Duration::from_secs(10))
        && wait_healthy(net, a)
        && wait_healthy(net, b)
}

fn wait_healthy(net: &Net, node: usize) -> bool {
    wait_for(Duration::from_secs(15), Duration::from_millis(20), || {
        (net.get(node, "/health")?.0 == 200).then_some(())
    })
    .is_some()
}

/// Per-request latencies (ns) of `sets` sequential SETs on 127.0.0.1:`port` inside `ns`,
/// or the error that stopped the run.
fn measure(ns: &str, port: u16, sets: usize) -> Samples {
    in_netns(ns, move || {
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
            .map_err(|e| format!("connect {addr}: {e}"))?;
        s.set_nodelay(true).map_err(|e| e.to_string())?;
        s.set_read_timeout(Some(Duration::from_secs(2)))
            .map_err(|e| e.to_string())?;
        let value = [b'v'; 32];
        let mut req = Vec::with_capacity(128);
        let mut set = |s: &mut TcpStream, i: usize| -> Result<u64, String> {
            req.clear();
            let key = format!("lat:{:04}", i % 1000);
            write!(req, "*3\r\n$3\r\nSET\r\n${}\r\n{key}\r\n$32\r\n", key.len())
                .map_err(|e| e.to_string())?;
            req.extend_from_slice(&value);
            req.extend_from_slice(b"\r\n");
            let t = Instant::now();
            s.write_all(&req).map_err(|e| e.to_string())?;
            let mut reply = [0u8; 5];
            s.read_exact(&mut reply)
                .map_err(|e| format!("SET {i}: {e}"))?;
            let dt = t.elapsed().as_nanos() as u64;
            if &reply != b"+OK\r\n" {
                return Err(format!("SET {i}: {:?}", String::from_utf8_lossy(&reply)));
            }
            Ok(dt)
        };
        for i in 0..WARM_UP {
            set(&mut s, i)?;
        }
        (0..sets).map(|i| set(&mut s, i)).collect()
    })
}

fn report(what: &str, lat: Samples) {
    let mut lat = match lat {
        Ok(l) if !l.is_empty() => l,
        Ok(_) => return println!("{what}: no samples"),
        Err(e) => return println!("{what}: failed: {e}"),
    };
    lat.sort_unstable();
    let pct = |p: f64| lat[((lat.len() as f64 - 1.0) * p).round() as usize] as f64 / 1000.0;
    let mean = lat.iter().sum::<u64>() as f64 / lat.len() as f64 / 1000.0;
    println!(
        "{what}: {} SETs: p50 {:.1} us, p90 {:.1} us, p99 {:.1} us, p99.9 {:.1} us, max {:.1} us, mean {mean:.1} us",
        lat.len(),
        pct(0.5),
        pct(0.9),
        pct(0.99),
        pct(0.999),
        pct(1.0),
    );
}

/// A `redis-server` in a namespace, killed on drop.
struct RedisServer(Child);

impl RedisServer {
    fn start(ns: &str) -> Option<RedisServer> {
        let child = Command::new("ip")
            .args(["netns", "exec", ns, "redis-server", "--port"])
            .arg(REDIS_PORT.to_string())
            .args([
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--daemonize",
                "no",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        let server = RedisServer(child);
        let ns = ns.to_string();
        let up = wait_for(Duration::from_secs(5), Duration::from_millis(20), || {
            let ns = ns.clone();
            in_netns(&ns, || {
                TcpStream::connect(SocketAddr::from(([127, 0, 0, 1], REDIS_PORT))).ok()
            })
            .map(|_| ())
        });
        up.map(|()| server)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
