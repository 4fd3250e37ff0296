//! Failure detector costs: one heartbeat update, `poll_timeout`, `handle_timeout`, with 2, 16
//! and 64 peers, for both policies; plus a whole `Membership::handle_heartbeat` for scale.
//!
//! Allocation: `tandem-core` is `no_std` without the `alloc` crate, so none of this can
//! allocate.
//!
//! Run: `cargo bench -p tandem-benches --bench detector`

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput};
use tandem_core::detector::{Adaptive, Detector, Policy};
use tandem_core::frame::{HeartbeatRepr, Role, StateFlags};
use tandem_core::membership::{Config, Membership};
use tandem_core::{Incarnation, Instant, NodeId};

const PEERS: [usize; 3] = [2, 16, 64];
const IV: u32 = 20_000;

fn policies() -> [(&'static str, Policy); 2] {
    [
        ("fixed", Policy::Fixed),
        ("adaptive", Policy::Adaptive(Adaptive::from_phi(8.0, 1_000))),
    ]
}

/// A detector with `peers` live peers whose heartbeats arrive evenly spread over an interval,
/// as they do in a running cluster; returns it and the time of the last arrival.
fn primed(policy: Policy, peers: usize) -> (Detector<64>, u64) {
    let mut d = Detector::<64>::new(policy, 50);
    let mut t = 1_000_000u64;
    for _round in 0..20 {
        for s in 0..peers {
            t += IV as u64 / peers as u64;
            d.heartbeat(s, Instant::from_micros(t), IV, 10);
        }
    }
    (d, t)
}

fn heartbeat(c: &mut Criterion) {
    let mut g = c.benchmark_group("detector/heartbeat");
    g.throughput(Throughput::Elements(1));
    for (name, policy) in policies() {
        for peers in PEERS {
            g.bench_with_input(BenchmarkId::new(name, peers), &peers, |b, &peers| {
                let (mut d, mut t) = primed(policy, peers);
                let step = IV as u64 / peers as u64;
                let mut s = 0;
                b.iter(|| {
                    // Round-robin arrivals: each one moves that peer's deadline to the back.
                    t += step;
                    s = if s + 1 == peers { 0 } else { s + 1 };
                    black_box(d.heartbeat(black_box(s), Instant::from_micros(t), IV, 10))
                });
            });
        }
    }
    g.finish();
}

fn poll_timeout(c: &mut Criterion) {
    let mut g = c.benchmark_group("detector/poll_timeout");
    for peers in PEERS {
        let (d, _) = primed(Policy::Fixed, peers);
        g.bench_with_input(BenchmarkId::from_parameter(peers), &peers, |b, _| {
            b.iter(|| black_box(&d).poll_timeout())
        });
    }
    g.finish();
}

fn handle_timeout(c: &mut Criterion) {
    let mut g = c.benchmark_group("detector/handle_timeout");
    for peers in PEERS {
        let (d, t) = primed(Policy::Fixed, peers);
        // The common wake-up: nothing has expired yet.
        g.throughput(Throughput::Elements(1));
        g.bench_with_input(BenchmarkId::new("none_due", peers), &peers, |b, _| {
            let mut d = d.clone();
            let now = Instant::from_micros(t);
            b.iter(|| black_box(d.handle_timeout(black_box(now))))
        });
        // Every peer went silent: cost per expired peer (Alive -> Suspect), heap re-keyed.
        g.throughput(Throughput::Elements(peers as u64));
        g.bench_with_input(BenchmarkId::new("all_suspect", peers), &peers, |b, _| {
            let now = Instant::from_micros(t + 150_000);
            b.iter_batched_ref(
                || d.clone(),
                |d| {
                    let mut n = 0;
                    while let Some(e) = d.handle_timeout(now) {
                        black_box(e);
                        n += 1;
                    }
                    n
                },
                BatchSize::SmallInput,
            )
        });
    }
    g.finish();
}

fn membership_heartbeat(c: &mut Criterion) {
    let mut g = c.benchmark_group("membership/handle_heartbeat");
    g.throughput(Throughput::Elements(1));
    let hb = HeartbeatRepr {
        interval_us: IV,
        multiplier: 10,
        role: Role::Follower,
        priority: 100,
        state: StateFlags::default(),
        leader: Some(NodeId(1)),
        view: 3,
        repl_hwm: 0,
    };
    let peers = 15usize;
    let mut m = Membership::<16>::new(Config::new(NodeId(1), Incarnation(1)), Instant::ZERO);
    let mut t = 1_000_000u64;
    for s in 0..peers {
        m.handle_heartbeat(
            Instant::from_micros(t),
            NodeId(s as u16 + 2),
            Incarnation(1),
            &hb,
        );
    }
    m.handle_timeout(Instant::from_micros(t));
    while m.poll_event().is_some() {}
    g.bench_function(BenchmarkId::from_parameter(peers), |b| {
        let mut s = 0;
        b.iter(|| {
            t += IV as u64 / peers as u64;
            s = if s + 1 == peers { 0 } else { s + 1 };
            let now = Instant::from_micros(t);
            m.handle_heartbeat(now, NodeId(s as u16 + 2), Incarnation(1), black_box(&hb));
        });
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = heartbeat, poll_timeout, handle_timeout, membership_heartbeat
}
criterion_main!(benches);
