//! Failure detection latency and idle cost of real tandemd processes in network namespaces.
//!
//! Detection: per profile (keyed, as in production), a survivor runs on host 1; TANDEM_BENCH_RUNS times (default 30) a
//! victim starts on host 2, joins, and is killed with SIGKILL. Latency = from just before the
//! kill (wall clock) to the timestamp of the survivor's `event="member_dead"` log line (wall
//! clock, microseconds). Prints p50, p99 and max per profile (goal for `fast`: p99 <= 12 ms).
//!
//! Idle cost: CPU time of one node of a two-node `fast` cluster over 10 s, from
//! /proc/<pid>/schedstat (ns) or /proc/<pid>/stat (clock ticks). Goal: <= 0.35% of a core.
//! Baseline in the same run, on the same two hosts: the floor of any user-space heartbeat
//! loop at the same rate, a thread per host that sleeps to the next 2 ms tick, drains its
//! socket and sends one 80-byte multicast datagram, nothing else (its thread CPU time).
//!
//! Needs root (namespaces); prints SKIP otherwise. Bounded: every wait has a limit; a profile
//! whose victim never joins is abandoned with a message.
//! Run: `cargo bench -p tandem-benches --bench failover` (TANDEM_BENCH_PROFILES=fast,lan,wan; empty: idle cost only).

use std::net::Ipv4Addr;
use std::time::{Duration, SystemTime};

use tandem_tests::logs::{dead_lines, parse_rfc3339_us, unix_us};
use tandem_tests::{cpu_ns, wait_for, Net};

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("failover: run with `cargo bench -p tandem-benches --bench failover`");
        return;
    }
    // Self-check of the log timestamp parser (a wrong parse would make every figure wrong).
    assert_eq!(
        parse_rfc3339_us("2026-11-26T04:10:27.000788Z"),
        Some(1_795_666_227_000_788)
    );
    let runs: usize = std::env::var("TANDEM_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30);
    let profiles = std::env::var("TANDEM_BENCH_PROFILES").unwrap_or_else(|_| "fast,lan,wan".into());
    for profile in profiles.split(',').filter(|p| !p.is_empty()) {
        detection(profile, runs);
    }
    idle_cpu();
}

fn detection(profile: &str, runs: usize) {
    let Some(mut net) = Net::new(2) else { return };
    // Keyed, as in production: the per-frame AEAD, the per-run keys and the first-contact
    // challenge are part of what detection costs (issue 17).
    let key = net.key_file("cluster.key");
    let args = ["--key-file", key.as_str(), "--profile", profile];
    let survivor = net.start(1, &args);
    net.wait_up(survivor);
    let limit = if profile == "wan" {
        Duration::from_secs(30)
    } else {
        Duration::from_secs(10)
    };
    let mut lat_us: Vec<i128> = Vec::with_capacity(runs);
    for run in 0..runs {
        let victim = net.start(2, &args);
        if !net.wait_member_state(survivor, 2, "alive", Duration::from_secs(10)) {
            println!(
                "detect {profile}: run {run}: victim never joined; abandoned (is the core wired?)"
            );
            return;
        }
        let seen_before = dead_lines(&net.log(survivor)).len();
        let t_kill = unix_us(SystemTime::now());
        net.kill9(victim);
        let found = wait_for(limit, Duration::from_millis(1), || {
            dead_lines(&net.log(survivor)).get(seen_before).copied()
        });
        match found {
            Some(t_dead) => lat_us.push(t_dead - t_kill),
            None => {
                println!("detect {profile}: run {run}: no member_dead within {limit:?}; abandoned");
                return;
            }
        }
    }
    lat_us.sort_unstable();
    let pct = |p: f64| lat_us[((lat_us.len() as f64 - 1.0) * p).round() as usize] as f64 / 1000.0;
    let mean = lat_us.iter().sum::<i128>() as f64 / lat_us.len() as f64 / 1000.0;
    println!(
        "detect {profile:<4}: {} kill -9 runs: min {:.2} ms, p50 {:.2} ms, mean {mean:.2} ms, p99 {:.2} ms, max {:.2} ms (bound interval x multiplier = {}; goal fast p99 <= 12 ms)",
        lat_us.len(),
        pct(0.0),
        pct(0.5),
        pct(0.99),
        pct(1.0),
        match profile {
            "fast" => "10 ms",
            "lan" => "200 ms",
            "wan" => "5 s",
            _ => "?",
        }
    );
}

fn idle_cpu() {
    let Some(mut net) = Net::new(2) else { return };
    let fast = ["--insecure", "--profile", "fast"];
    idle_node(&mut net, "fast profile", &fast);
    idle_node(&mut net, "lan profile, the default", &["--insecure"]);
    idle_floor(&net);
}

/// CPU of node 1 of a pair started with `args` over 10 s; stops both afterwards.
fn idle_node(net: &mut Net, label: &str, args: &[&str]) {
    let a = net.start(1, args);
    let b = net.start(2, args);
    net.wait_up(a);
    std::thread::sleep(Duration::from_millis(500));
    let pid = net.nodes[a].pid();
    let counters = |net: &Net| {
        (
            net.metric(a, "tandem_frames_sent_total"),
            net.metric(a, "tandem_loop_iterations_total"),
        )
    };
    let ((s0, i0), t0, c0) = (counters(net), std::time::Instant::now(), cpu_ns(pid));
    let dead0 = dead_lines(&net.log(a)).len();
    std::thread::sleep(Duration::from_secs(10));
    let (wall, c1, (s1, i1)) = (t0.elapsed(), cpu_ns(pid), counters(net));
    let secs = wall.as_secs_f64();
    let per_s = |a: Option<u64>, b: Option<u64>| match (a, b) {
        (Some(a), Some(b)) => format!("{:.0}/s", b.saturating_sub(a) as f64 / secs),
        _ => "?".into(),
    };
    let false_dead = dead_lines(&net.log(a)).len() - dead0;
    match (c0, c1) {
        (Some(c0), Some(c1)) => {
            let cpu = (c1 - c0) as f64 / wall.as_nanos() as f64;
            let sent = s1.zip(s0).map_or(0, |(b, a)| b.saturating_sub(a));
            println!(
                "idle cpu ({label}, node 1 of 2, {secs:.1} s): {:.3}% of a core (goal <= 0.35%); heartbeats sent {}, loop turns {}, {:.1} us CPU per heartbeat; peers declared dead meanwhile: {false_dead}",
                100.0 * cpu,
                per_s(s0, s1),
                per_s(i0, i1),
                (c1 - c0) as f64 / 1000.0 / sent.max(1) as f64,
            )
        }
        _ => println!("idle cpu: /proc/{pid} unreadable"),
    }
    net.sigterm(a);
    net.sigterm(b);
}

/// The bare loop at the fast profile's rate on the same two hosts (no node running).
fn idle_floor(net: &Net) {
    let hosts: Vec<(String, Ipv4Addr)> = (1..=2)
        .map(|h| (net.ns(h).to_string(), Net::addr(h)))
        .collect();
    let floors: Vec<_> = hosts
        .into_iter()
        .map(|(ns, addr)| {
            std::thread::spawn(move || {
                tandem_tests::in_netns(&ns, move || floor_loop(addr, Duration::from_secs(10)))
            })
        })
        .collect();
    for (h, f) in floors.into_iter().enumerate() {
        match f.join().ok().flatten() {
            Some(FloorRun { cpu_ns, wall, sent, received }) => println!(
                "floor, host {} (sleep to the next 2 ms tick + drain + one 80-byte multicast send, {:.1} s): {:.3}% of a core; sent {sent}, received {received}, {:.1} us CPU per tick",
                h + 1,
                wall.as_secs_f64(),
                100.0 * cpu_ns as f64 / wall.as_nanos() as f64,
                cpu_ns as f64 / 1000.0 / sent.max(1) as f64,
            ),
            None => println!("floor, host {}: could not run (socket or /proc)", h + 1),
        }
    }
}

struct FloorRun {
    cpu_ns: u64,
    wall: Duration,
    sent: u64,
    received: u64,
}

/// The least a user-space heartbeat loop can do per 2 ms tick: wake, drain, send. Bounded:
/// runs for `length`, one send per tick.
fn floor_loop(addr: Ipv4Addr, length: Duration) -> Option<FloorRun> {
    use socket2::{Domain, Protocol, SockAddr, Socket, Type};
    let group = Ipv4Addr::new(239, 255, 72, 78);
    let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP)).ok()?;
    s.set_reuse_address(true).ok()?;
    s.bind(&SockAddr::from(std::net::SocketAddrV4::new(
        Ipv4Addr::UNSPECIFIED,
        7399,
    )))
    .ok()?;
    s.join_multicast_v4(&group, &addr).ok()?;
    s.set_multicast_if_v4(&addr).ok()?;
    s.set_multicast_ttl_v4(1).ok()?;
    // tandemd drops its own looped frames in the kernel (socket filter); the floor just
    // does not get them.
    s.set_multicast_loop_v4(false).ok()?;
    s.set_nonblocking(true).ok()?;
    let to = SockAddr::from(std::net::SocketAddrV4::new(group, 7399));
    let thread_cpu = || -> Option<u64> {
        std::fs::read_to_string("/proc/thread-self/schedstat")
            .ok()?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    };
    let payload = [0x5au8; 80];
    let mut buf = [std::mem::MaybeUninit::<u8>::uninit(); 2048];
    let (start, cpu0) = (std::time::Instant::now(), thread_cpu()?);
    let (mut sent, mut received) = (0u64, 0u64);
    let mut next = start;
    while start.elapsed() < length {
        next += Duration::from_millis(2);
        std::thread::sleep(next.saturating_duration_since(std::time::Instant::now()));
        // Bounded: the peer sends one datagram per tick.
        for _ in 0..64 {
            if s.recv(&mut buf).is_err() {
                break;
            }
            received += 1;
        }
        if s.send_to(&payload, &to).is_ok() {
            sent += 1;
        }
    }
    let cpu_ns = thread_cpu()?.saturating_sub(cpu0);
    Some(FloorRun {
        cpu_ns,
        wall: start.elapsed(),
        sent,
        received,
    })
}
