//! Session API throughput: `redis-benchmark -t set,get` against tandemd (node 1 of a two-host
//! cluster, default sync mode, so every SET waits for node 2's ack) and against a local
//! `redis-server` in the same namespace, same run; prints requests/s and the ratio.
//! Goal: tandemd >= 80% of redis-server.
//!
//! Two shapes: 50 clients without pipelining (redis-benchmark's default) and 50 clients with
//! 16 pipelined requests each (`-P 16`). The machine's load drifts, so each shape runs
//! TANDEM_BENCH_ROUNDS times (default 5), alternating tandemd and redis-server; the medians
//! and their ratio are printed. TANDEM_BENCH_REQUESTS sets `-n` per run (default 50,000).
//! Each line also gives the CPU time per request of the servers (medians, from /proc): node 1
//! and node 2 of the cluster, and redis-server. With everything on one 2-core machine, the
//! client, node 1 and node 2 share two cores where the client and redis-server have one each,
//! so these show where the ratio goes.
//!
//! Needs root (namespaces) and redis-tools/redis-server; prints SKIP otherwise. Bounded:
//! redis-benchmark runs a fixed request count; every wait has a limit.
//! Run: `cargo bench -p tandem-benches --bench throughput`.

use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tandem_tests::{cpu_ns, in_netns, wait_for, Net, RESP_PORT};

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
    // As in production: authenticated and encrypted (AES-128-GCM), one node per host.
    let key = net.key_file("cluster.key");
    let a = net.start(1, &["--key-file", &key, "--no-multicast-loop"]);
    let b = net.start(2, &["--key-file", &key, "--no-multicast-loop"]);
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
    let Some(redis) = RedisServer::start(&ns) else {
        println!("SKIP: redis-server did not start (apt-get install redis-server)");
        return;
    };
    let (node1, node2, server) = (net.nodes[a].pid(), net.nodes[b].pid(), redis.pid());
    for pipeline in [1u32, 16] {
        for cmd in ["SET", "GET"] {
            let (mut t, mut r) = (Vec::new(), Vec::new());
            for _ in 0..rounds {
                // Alternate targets so drift in the machine's load hits both alike.
                let run = Run {
                    ns: &ns,
                    cmd,
                    requests,
                    pipeline,
                };
                t.push(run.measure(RESP_PORT, &[node1, node2]));
                r.push(run.measure(REDIS_PORT, &[server]));
            }
            let (Some(tv), Some(rv)) = (median(&t, |f| f.rps), median(&r, |f| f.rps)) else {
                println!("{cmd} -P {pipeline}: redis-benchmark gave no figure (tandemd {t:?}, redis {r:?})");
                continue;
            };
            let us = |runs: &[Figures], i: usize| {
                median(runs, |f| f.cpu_us.get(i).copied().flatten()).unwrap_or(f64::NAN)
            };
            println!(
                "{cmd:<3} 50 clients -P {pipeline:<2}: tandemd {tv:>9.0} req/s, redis-server {rv:>9.0} req/s, ratio {:.0}% (goal >= 80%; medians of {rounds}); CPU per request: node 1 {:.2} us + node 2 {:.2} us, redis-server {:.2} us",
                100.0 * tv / rv,
                us(&t, 0),
                us(&t, 1),
                us(&r, 0),
            );
        }
    }
    tandem_tests::logs::warn_false_deaths(&[(1, net.log(a)), (2, net.log(b))]);
    if let Some(n) = net.metric(b, "tandem_sessions") {
        println!("(node 2 holds {n} sessions after the run)");
    }
}

/// One redis-benchmark run: requests/s, and CPU microseconds per request of each watched
/// server process (`None` where /proc could not be read).
#[derive(Debug, Default)]
struct Figures {
    rps: Option<f64>,
    cpu_us: Vec<Option<f64>>,
}

/// Median of `pick` over the runs that have it.
fn median(runs: &[Figures], pick: impl Fn(&Figures) -> Option<f64>) -> Option<f64> {
    let mut v: Vec<f64> = runs.iter().filter_map(pick).collect();
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied()
}

/// One shape of load: `redis-benchmark -t cmd -P pipeline -n requests`, run inside `ns`.
struct Run<'a> {
    ns: &'a str,
    cmd: &'a str,
    requests: u32,
    pipeline: u32,
}

impl Run<'_> {
    /// Runs against `port`, charging the CPU time `servers` used meanwhile to the requests.
    fn measure(&self, port: u16, servers: &[i32]) -> Figures {
        let before: Vec<Option<u64>> = servers.iter().map(|&p| cpu_ns(p)).collect();
        let rps = self.redis_benchmark(port);
        let cpu_us = servers
            .iter()
            .zip(before)
            .map(|(&p, b)| {
                let used = cpu_ns(p)?.checked_sub(b?)?;
                Some(used as f64 / 1000.0 / f64::from(self.requests))
            })
            .collect();
        Figures { rps, cpu_us }
    }

    /// Requests per second from `redis-benchmark --csv`.
    fn redis_benchmark(&self, port: u16) -> Option<f64> {
        let out = Command::new("ip")
            .args([
                "netns",
                "exec",
                self.ns,
                "redis-benchmark",
                "-h",
                "127.0.0.1",
                "-p",
            ])
            .arg(port.to_string())
            .args([
                "-t",
                &self.cmd.to_lowercase(),
                "-c",
                "50",
                "-d",
                "64",
                "-r",
                "10000",
                "--csv",
            ])
            .args([
                "-n",
                &self.requests.to_string(),
                "-P",
                &self.pipeline.to_string(),
            ])
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()
            .ok()?;
        // Lines: "test","rps",...; e.g. "SET","98231.34","0.271",... (the header starts "test").
        String::from_utf8_lossy(&out.stdout).lines().find_map(|l| {
            let mut f = l.split(',').map(|x| x.trim_matches('"'));
            (f.next()? == self.cmd).then_some(())?;
            f.next()?.parse().ok()
        })
    }
}

/// A `redis-server` in a namespace, killed on drop.
struct RedisServer(Child);

impl RedisServer {
    fn pid(&self) -> i32 {
        self.0.id() as i32
    }

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
