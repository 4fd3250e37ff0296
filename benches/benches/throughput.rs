//! Session API throughput: `redis-benchmark -t set,get` against tandemd (node 1 of a two-host
//! cluster, default sync mode, so every SET waits for node 2's ack) and against a local
//! `redis-server` in the same namespace, same run; prints requests/s and the ratio.
//! Goal: tandemd >= 80% of redis-server.
//!
//! Two shapes: 50 clients without pipelining (redis-benchmark's default) and 50 clients with
//! 16 pipelined requests each (`-P 16`). The machine's load drifts, so each shape runs
//! TANDEM_BENCH_ROUNDS times (default 5), alternating tandemd and redis-server; the medians
//! and their ratio are printed. TANDEM_BENCH_REQUESTS sets `-n` per run (default 50,000).
//!
//! Needs root (namespaces) and redis-tools/redis-server; prints SKIP otherwise. Bounded:
//! redis-benchmark runs a fixed request count; every wait has a limit.
//! Run: `cargo bench -p tandem-benches --bench throughput`.

use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tandem_tests::{in_netns, wait_for, Net, RESP_PORT};

const REDIS_PORT: u16 = 6390;

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("throughput: run with `cargo bench -p tandem-benches --bench throughput`");
        return;
    }
    if Command::new("redis-benchmark")
        .arg("--version")
        .output()
        .is_err()
    {
        println!("SKIP: redis-benchmark not installed (apt-get install redis-tools)");
        return;
    }
    let requests: u32 = std::env::var("TANDEM_BENCH_REQUESTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50_000)
        .clamp(1_000, 10_000_000);
    let rounds: usize = std::env::var("TANDEM_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5)
        .clamp(1, 50);
    let Some(mut net) = Net::new(2) else { return };
    // Authenticated and encrypted, as in production (AES-128-GCM).
    let key = net.key_file("cluster.key");
    let a = net.start(1, &["--key-file", &key]);
    let b = net.start(2, &["--key-file", &key]);
    net.wait_up(a);
    net.wait_up(b);
    let healthy = net.wait_member_state(a, 2, "alive", Duration::from_secs(10))
        && [a, b].iter().all(|&n| {
            wait_for(Duration::from_secs(15), Duration::from_millis(20), || {
                (net.get(n, "/health")?.0 == 200).then_some(())
            })
            .is_some()
        });
    if !healthy {
        println!("cluster never became healthy; abandoned\n{}", net.log(a));
        return;
    }
    let ns = net.ns(1).to_string();
    let Some(_redis) = RedisServer::start(&ns) else {
        println!("SKIP: redis-server did not start (apt-get install redis-server)");
        return;
    };
    for pipeline in [1u32, 16] {
        let (mut t, mut r) = (Vec::new(), Vec::new());
        for _ in 0..rounds {
            // Alternate targets so drift in the machine's load hits both alike.
            t.push(bench(&ns, RESP_PORT, requests, pipeline));
            r.push(bench(&ns, REDIS_PORT, requests, pipeline));
        }
        for cmd in ["SET", "GET"] {
            let (Some(tv), Some(rv)) = (median(&t, cmd), median(&r, cmd)) else {
                println!("{cmd} -P {pipeline}: redis-benchmark gave no figure (tandemd {t:?}, redis {r:?})");
                continue;
            };
            println!(
                "{cmd:<3} 50 clients -P {pipeline:<2}: tandemd {tv:>9.0} req/s, redis-server {rv:>9.0} req/s, ratio {:.0}% (goal >= 80%; medians of {rounds})",
                100.0 * tv / rv
            );
        }
    }
    tandem_tests::logs::warn_false_deaths(&[(1, net.log(a)), (2, net.log(b))]);
    if let Some(n) = net.metric(b, "tandem_sessions") {
        println!("(node 2 holds {n} sessions after the run)");
    }
}

/// Requests per second per command from `redis-benchmark --csv`, run inside `ns`.
#[derive(Debug, Default)]
struct Figures(Vec<(String, f64)>);

impl Figures {
    fn get(&self, cmd: &str) -> Option<f64> {
        self.0.iter().find(|(c, _)| c == cmd).map(|&(_, v)| v)
    }
}

/// Median requests/s of `cmd` over the runs that reported it.
fn median(runs: &[Figures], cmd: &str) -> Option<f64> {
    let mut v: Vec<f64> = runs.iter().filter_map(|f| f.get(cmd)).collect();
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied()
}

fn bench(ns: &str, port: u16, requests: u32, pipeline: u32) -> Figures {
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            ns,
            "redis-benchmark",
            "-h",
            "127.0.0.1",
            "-p",
        ])
        .arg(port.to_string())
        .args([
            "-t", "set,get", "-c", "50", "-d", "64", "-r", "10000", "--csv",
        ])
        .args(["-n", &requests.to_string(), "-P", &pipeline.to_string()])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output();
    let Ok(out) = out else {
        return Figures::default();
    };
    // Lines: "test","rps",...; e.g. "SET","98231.34","0.271",... (the header starts "test").
    let text = String::from_utf8_lossy(&out.stdout);
    Figures(
        text.lines()
            .filter_map(|l| {
                let mut f = l.split(',').map(|x| x.trim_matches('"'));
                let name = f.next()?.to_string();
                let rps = f.next()?.parse().ok()?;
                Some((name, rps))
            })
            .collect(),
    )
}

/// A `redis-server` in a namespace, killed on drop.
struct RedisServer(Child);

impl RedisServer {
    fn start(ns: &str) -> Option<RedisServer> {
        let child = Command::new("ip")
            .args(["netns", "exec", ns, "redis-server", "--port"])
            .arg(REDIS_PORT.to_string())
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        let server = RedisServer(child);
        let ns = ns.to_string();
        wait_for(Duration::from_secs(5), Duration::from_millis(20), || {
            in_netns(&ns, || {
                TcpStream::connect(SocketAddr::from(([127, 0, 0, 1], REDIS_PORT))).ok()
            })
            .map(|_| ())
        })
        .map(|()| server)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
