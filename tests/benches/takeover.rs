//! Failover figures behind a real HAProxy (issue 6, "Figures"): per profile, at least 50
//! kill -9 runs of data node A in the A, B, witness set-up of the fault suite. Per run:
//! - (a) detection: from just before the kill (wall clock) to the timestamp of B's
//!   `event="member_dead"` log line (wall clock, microseconds);
//! - (b) takeover: from just before the kill to the first successful read, through HAProxy,
//!   of a session written on A (synchronously, so B holds it) just before the kill. The
//!   client retries at once on any error, on a fresh connection each time;
//! - (c) first write: from just before the kill to the first write acknowledged through
//!   HAProxy (synchronous mode: B holds it until A is declared dead, so (c) >= (a)).
//!
//! Prints p50, p99 and max per profile. Needs root; prints SKIP otherwise. Bounded: every
//! wait has a limit, a run that exceeds it ends the profile with a message.
//! Run: `cargo bench -p tandem-tests --bench takeover`
//! (TANDEM_BENCH_RUNS, default 50; TANDEM_BENCH_PROFILES, default fast,lan).

use std::time::{Duration, Instant, SystemTime};

use tandem_tests::logs::{dead_lines, parse_rfc3339_us, unix_us};
use tandem_tests::scenario::{Cluster, Opts};
use tandem_tests::wait_for;

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("takeover: run with `cargo bench -p tandem-tests --bench takeover`");
        return;
    }
    assert_eq!(
        parse_rfc3339_us("2026-11-26T04:10:27.000788Z"),
        Some(1_795_666_227_000_788)
    );
    let runs: usize = std::env::var("TANDEM_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50);
    let profiles = std::env::var("TANDEM_BENCH_PROFILES").unwrap_or_else(|_| "fast,lan".into());
    for profile in profiles.split(',') {
        takeover(profile, runs);
    }
}

fn takeover(profile: &str, runs: usize) {
    let opts = Opts {
        extra: vec!["--profile".into(), profile.into()],
        ..Opts::default()
    };
    let Some(mut c) = Cluster::start(opts) else {
        println!("takeover {profile}: SKIP (no namespaces)");
        return;
    };
    let (mut detect, mut read, mut write) = (Vec::new(), Vec::new(), Vec::new());
    for run in 0..runs {
        let key = format!("takeover:{run}");
        let value = format!("written on A, run {run}");
        let mut a = c.direct(1).expect("connect to A");
        let rep = a.set(&key, value.as_bytes()).expect("SET on A");
        assert!(rep.is_ok(), "{rep:?}");
        let seen_before = dead_lines(&c.net.log(c.node(2))).len();
        let t_kill = unix_us(SystemTime::now());
        let start = Instant::now();
        c.kill9(1);
        // (b): through HAProxy, fresh connection per attempt, no pause between attempts.
        let got = wait_for(Duration::from_secs(10), Duration::ZERO, || {
            let mut r = c.client().ok()?;
            let v = r.get(&key).ok()?;
            (v.bytes() == Some(value.as_bytes())).then(|| start.elapsed())
        });
        let Some(t_read) = got else {
            println!("takeover {profile}: run {run}: no read through HAProxy within 10 s; stopped");
            break;
        };
        read.push(t_read.as_micros() as i128);
        let wrote = wait_for(Duration::from_secs(10), Duration::ZERO, || {
            let mut r = c.client().ok()?;
            let v = r.set(&format!("{key}:after"), b"x").ok()?;
            v.is_ok().then(|| start.elapsed())
        });
        let Some(t_write) = wrote else {
            println!(
                "takeover {profile}: run {run}: no write through HAProxy within 10 s; stopped"
            );
            break;
        };
        write.push(t_write.as_micros() as i128);
        let dead = wait_for(Duration::from_secs(10), Duration::from_millis(1), || {
            dead_lines(&c.net.log(c.node(2))).get(seen_before).copied()
        });
        let Some(t_dead) = dead else {
            println!("takeover {profile}: run {run}: B never logged member_dead; stopped");
            break;
        };
        detect.push(t_dead - t_kill);
        // Bring A back and wait until HAProxy uses it again, for the next run.
        c.start_node(1);
        c.wait_healthy(1, Duration::from_secs(20));
        let lb = c.lb.as_ref().expect("haproxy");
        if !lb.wait_status("a", "UP", Duration::from_secs(10)) {
            println!("takeover {profile}: run {run}: HAProxy never marked A UP again; stopped");
            break;
        }
    }
    report(profile, "(a) kill -> B marks A dead", &mut detect);
    report(
        profile,
        "(b) kill -> first read of A's session via HAProxy",
        &mut read,
    );
    report(
        profile,
        "(c) kill -> first acknowledged write via HAProxy",
        &mut write,
    );
}

fn report(profile: &str, what: &str, us: &mut [i128]) {
    if us.is_empty() {
        return;
    }
    us.sort_unstable();
    let pct = |p: f64| us[((us.len() as f64 - 1.0) * p).round() as usize] as f64 / 1000.0;
    println!(
        "takeover {profile}: {what}: {} runs: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        us.len(),
        pct(0.5),
        pct(0.99),
        pct(1.0)
    );
}
