//! Failure detection latency and idle cost of real tandemd processes in network namespaces.
//!
//! Detection: per profile, a survivor runs on host 1; TANDEM_BENCH_RUNS times (default 30) a
//! victim starts on host 2, joins, and is killed with SIGKILL. Latency = from just before the
//! kill (wall clock) to the timestamp of the survivor's `event="member_dead"` log line (wall
//! clock, microseconds). Prints p50, p99 and max per profile (goal for `fast`: p99 <= 12 ms).
//!
//! Idle cost: CPU time of one node of a two-node `fast` cluster over 10 s, from
//! /proc/<pid>/schedstat (ns) or /proc/<pid>/stat (clock ticks). Goal: <= 0.35% of a core.
//!
//! Needs root (namespaces); prints SKIP otherwise. Bounded: every wait has a limit; a profile
//! whose victim never joins is abandoned with a message.
//! Run: `cargo bench -p tandem-benches --bench failover` (TANDEM_BENCH_PROFILES=fast,lan,wan).

use std::time::{Duration, SystemTime};

use tandem_tests::logs::{dead_lines, parse_rfc3339_us, unix_us};
use tandem_tests::{wait_for, Net};

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
    for profile in profiles.split(',') {
        detection(profile, runs);
    }
    idle_cpu();
}

fn detection(profile: &str, runs: usize) {
    let Some(mut net) = Net::new(2) else { return };
    let args = ["--insecure", "--profile", profile];
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
    let a = net.start(1, &["--insecure", "--profile", "fast"]);
    let _b = net.start(2, &["--insecure", "--profile", "fast"]);
    net.wait_up(a);
    std::thread::sleep(Duration::from_millis(500));
    let pid = net.nodes[a].pid();
    let counters = |net: &Net| {
        (
            net.metric(a, "tandem_frames_sent_total"),
            net.metric(a, "tandem_loop_iterations_total"),
        )
    };
    let ((s0, i0), t0, c0) = (counters(&net), std::time::Instant::now(), cpu_ns(pid));
    let dead0 = dead_lines(&net.log(a)).len();
    std::thread::sleep(Duration::from_secs(10));
    let (wall, c1, (s1, i1)) = (t0.elapsed(), cpu_ns(pid), counters(&net));
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
                "idle cpu (fast profile, node 1 of 2, {secs:.1} s): {:.3}% of a core (goal <= 0.35%); heartbeats sent {}, loop turns {}, {:.1} us CPU per heartbeat; peers declared dead meanwhile: {false_dead}",
                100.0 * cpu,
                per_s(s0, s1),
                per_s(i0, i1),
                (c1 - c0) as f64 / 1000.0 / sent.max(1) as f64,
            )
        }
        _ => println!("idle cpu: /proc/{pid} unreadable"),
    }
}

/// CPU time of `pid` in ns: schedstat when the kernel has it, else utime+stime ticks.
fn cpu_ns(pid: i32) -> Option<u64> {
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
