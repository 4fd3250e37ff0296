//! Synchronous replicated write latency: one client, sequential RESP SETs, per-request time.
//!
//! Three targets, each measured by a client inside the node's host namespace over loopback:
//! - `cluster`: node 1 of a two-host cluster (two namespaces on a bridge, default sync mode):
//!   every reply waits until node 2 acked the write over the veth pair;
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

    // Hosts 1 and 2: a two-node cluster, sync mode. Host 3: a node of another cluster, alone.
    let Some(mut net) = Net::new(3) else { return };
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
    if !wait_cluster(&net, a, b) || !wait_healthy(&net, s) {
        println!("nodes never became healthy; abandoned\n{}", net.log(a));
        return;
    }
    let ns1 = net.ns(1).to_string();
    let ns3 = net.ns(3).to_string();
    let redis = RedisServer::start(&ns1);
    if redis.is_none() {
        println!("redis-server: not installed or did not start; skipped");
    }
    let mut targets: Vec<(&str, &str, u16, Samples)> = vec![
        ("cluster (sync, 2 hosts)", &ns1, RESP_PORT, Ok(Vec::new())),
        ("standalone (no peer)", &ns3, RESP_PORT, Ok(Vec::new())),
    ];
    if redis.is_some() {
        targets.push(("redis-server (same host)", &ns1, REDIS_PORT, Ok(Vec::new())));
    }
    const ROUNDS: usize = 4;
    for _ in 0..ROUNDS {
        for (_, ns, port, acc) in targets.iter_mut() {
            if let Ok(all) = acc {
                match measure(ns, *port, sets / ROUNDS) {
                    Ok(more) => all.extend(more),
                    Err(e) => *acc = Err(e),
                }
            }
        }
    }
    for (what, _, _, lat) in targets {
        report(what, lat);
    }
    tandem_tests::logs::warn_false_deaths(&[(1, net.log(a)), (2, net.log(b))]);
    if let Some(replicated) = net.metric(b, "tandem_sessions") {
        println!("(node 2 holds {replicated} sessions: the cluster's writes replicated)");
    }
}

/// Waits (bounded) until both nodes see each other alive and both report healthy.
fn wait_cluster(net: &Net, a: usize, b: usize) -> bool {
    net.wait_up(a);
    net.wait_up(b);
    net.wait_member_state(a, 2, "alive", Duration::from_secs(10))
        && net.wait_member_state(b, 1, "alive", Duration::from_secs(10))
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
        for i in 0..1000 {
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
