//! State-transfer figures (issue 11 item 4): B holds 100,000 sessions of 1 KiB, A restarts
//! (SIGTERM, start) 20 times on `--profile fast` and pulls them all from B each time. Per
//! restart: the transfer time (A's "pulling" to "complete" log lines), A's suspicions and
//! deaths of B, B's of A (from `/metrics`), and A's longest loop slice. Every restart checks
//! that A holds every session. Prints each restart and a summary.
//! Run: `cargo bench -p tandem-tests --bench transfer`; compare against another build with
//! `TANDEMD_BIN=/path/to/old/tandemd` (A/B: run both back to back).
//! TANDEM_BENCH_RESTARTS (default 20), TANDEM_BENCH_SESSIONS (default 100000); TANDEM_BENCH_TRACE
//! prints the suspicion and death lines of A's and B's logs after each restart.

use std::time::{Duration, Instant};

use tandem_tests::transfer::{false_alarms, fill, restart_a, socket_buffer_drops, start_pair};

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("transfer: run with `cargo bench -p tandem-tests --bench transfer`");
        return;
    }
    let restarts = env("TANDEM_BENCH_RESTARTS", 20);
    let sessions = env("TANDEM_BENCH_SESSIONS", 100_000);
    let bin = std::env::var("TANDEMD_BIN").unwrap_or_else(|_| "this tree's tandemd".into());
    let Some(mut c) = start_pair() else {
        println!("transfer: SKIP (no namespaces)");
        return;
    };
    let t = Instant::now();
    fill(&c, sessions);
    println!(
        "transfer ({bin}): {sessions} sessions of 1 KiB written in {:?}",
        t.elapsed()
    );
    let b = c.node(2);
    let metric = |c: &tandem_tests::scenario::Cluster, name| c.metric(2, name).unwrap_or(0);
    let (b_sus0, b_det0) = (
        metric(&c, "tandem_suspicions_total"),
        metric(&c, "tandem_detections_total"),
    );
    let b_lines0 = false_alarms(&c, b).len();
    let mut times = Vec::new();
    let (mut a_sus, mut a_det) = (0, 0);
    let (mut b_sus_last, mut b_det_last) = (b_sus0, b_det0);
    for round in 0..restarts {
        let r = restart_a(&mut c, sessions, 997);
        let (b_sus, b_det) = (
            metric(&c, "tandem_suspicions_total"),
            metric(&c, "tandem_detections_total"),
        );
        println!(
            "restart {round:2}: transfer {:>7.1} ms, healthy after {:>7.1} ms; A: {} suspicions, {} deaths of B, longest slice {}; B: {} suspicions, {} deaths of A",
            r.transfer.as_secs_f64() * 1e3,
            r.to_healthy.as_secs_f64() * 1e3,
            r.suspicions,
            r.detections,
            r.slice_max
                .map_or("n/a".into(), |s| format!("{:.1} ms", s * 1e3)),
            b_sus - b_sus_last,
            b_det - b_det_last,
        );
        println!(
            "            datagrams dropped on a full socket buffer so far: A's host {}, B's host {}",
            socket_buffer_drops(&c, 1),
            socket_buffer_drops(&c, 2)
        );
        (b_sus_last, b_det_last) = (b_sus, b_det);
        if std::env::var_os("TANDEM_BENCH_TRACE").is_some() {
            for l in false_alarms(&c, c.node(1)) {
                println!("            A: {l}");
            }
            for l in false_alarms(&c, c.node(2)) {
                println!("            B: {l}");
            }
        }
        a_sus += r.suspicions;
        a_det += r.detections;
        times.push(r.transfer);
    }
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let mean = times.iter().map(|&d| ms(d)).sum::<f64>() / times.len().max(1) as f64;
    println!(
        "transfer ({bin}): {restarts} restarts, transfer p50 {:.0} ms, mean {mean:.0} ms, max {:.0} ms; A suspected B {a_sus} times, declared it dead {a_det} times; B suspected A {} times, declared it dead {} times ({} log lines)",
        times.get(times.len() / 2).map_or(0.0, |&d| ms(d)),
        times.last().map_or(0.0, |&d| ms(d)),
        b_sus_last - b_sus0,
        b_det_last - b_det0,
        false_alarms(&c, b).len() - b_lines0,
    );
}
