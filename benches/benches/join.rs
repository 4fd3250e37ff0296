//! Join time on virtual time: two whole nodes (`tandemd::testing::Sim`, fast profile, 50-150 µs
//! one-way delay, no loss); node B is killed and restarted, and from its start this measures
//! how long until B shows A alive, A shows B alive, B is synced, and a write made on A after
//! the restart is on B. Virtual time, so the figures are the protocol's round trips and
//! timers, not this machine's load; `TANDEM_JOIN_SEEDS` (default 200) runs.
//!
//! `cargo bench -p tandem-benches --bench join`

use std::time::Duration;

use tandem_core::membership::MemberState;
use tandem_core::{Instant, NodeId};
use tandemd::testing::{NetParams, Sim};

fn alive(sim: &Sim, on: usize, of: u16) -> bool {
    sim.hosts[on]
        .engine
        .membership()
        .member(NodeId(of))
        .is_some_and(|m| m.state == MemberState::Alive)
}

/// Microseconds from `t0` until `done` holds (checked every 10 µs of virtual time), at most 1 s.
fn until(sim: &mut Sim, t0: Instant, mut done: impl FnMut(&mut Sim) -> bool) -> Option<u64> {
    while sim.now.as_micros() - t0.as_micros() < 1_000_000 {
        if done(sim) {
            return Some(sim.now.as_micros() - t0.as_micros());
        }
        let next = sim.now.saturating_add_micros(10);
        sim.run_until(next);
    }
    None
}

/// One event to wait for.
type Check = Box<dyn FnMut(&mut Sim) -> bool>;

fn percentile(v: &mut [u64], p: f64) -> u64 {
    v.sort_unstable();
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v.get(i).copied().unwrap_or(0)
}

fn main() {
    let seeds: u64 = std::env::var("TANDEM_JOIN_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(200);
    let names = [
        "B shows A alive",
        "A shows B alive",
        "B synced",
        "A's write on B",
    ];
    let mut figures: [Vec<u64>; 4] = Default::default();
    for seed in 0..seeds {
        let mut sim = Sim::new(seed, 2, NetParams::default());
        let met = sim.run_until_true(Duration::from_secs(2), |s| {
            alive(s, 0, 2) && alive(s, 1, 1) && s.hosts[1].engine.synced()
        });
        assert!(met, "seed {seed}: never met");
        sim.kill(1);
        sim.run_until_true(Duration::from_secs(1), |s| !alive(s, 0, 2));
        sim.restart(1);
        let t0 = sim.now;
        let mut n = 0u32;
        let mut checks: [Check; 4] = [
            Box::new(|s| alive(s, 1, 1)),
            Box::new(|s| alive(s, 0, 2)),
            Box::new(|s| s.hosts[1].engine.synced()),
            Box::new(move |s| {
                // A writes a new key every 10 µs; done once B holds the first one.
                s.set(0, format!("k{n}").as_bytes(), b"v");
                n += 1;
                s.get(1, b"k0").is_some()
            }),
        ];
        for (i, check) in checks.iter_mut().enumerate() {
            let t =
                until(&mut sim, t0, check).unwrap_or_else(|| panic!("seed {seed}: {}", names[i]));
            figures[i].push(t);
        }
    }
    println!("join after a restart, {seeds} seeds, virtual time (µs from B's start)");
    println!("| event | p50 | p90 | p99 | max |");
    println!("|---|---|---|---|---|");
    for (name, v) in names.iter().zip(figures.iter_mut()) {
        let (p50, p90, p99, max) = (
            percentile(v, 0.5),
            percentile(v, 0.9),
            percentile(v, 0.99),
            percentile(v, 1.0),
        );
        println!("| {name} | {p50} | {p90} | {p99} | {max} |");
    }
}
