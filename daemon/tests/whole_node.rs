//! Whole nodes on virtual time (`tandemd::testing`): Engines over a simulated network with
//! seeded loss, delay, reordering and partitions. Each test runs many seeds; a failure names
//! its seed, and `TANDEM_SEED=N` replays exactly that run (`TANDEM_SEEDS=N` sets how many).
// A failed unwrap in a test is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use tandem_core::membership::MemberState;
use tandem_core::NodeId;
use tandemd::testing::{NetParams, Rng, Sim};

/// The seeds a test runs: `TANDEM_SEED` alone, else `TANDEM_SEEDS` (or `default`) of them.
fn seeds(default: u64) -> Vec<u64> {
    if let Some(s) = std::env::var("TANDEM_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        return vec![s];
    }
    let n = std::env::var("TANDEM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default);
    (0..n).collect()
}

/// Runs `f` for every seed; a panic is reported with the seed that replays it.
fn for_seeds(test: &str, default: u64, f: impl Fn(u64) + std::panic::RefUnwindSafe) {
    for seed in seeds(default) {
        if let Err(e) = std::panic::catch_unwind(|| f(seed)) {
            let msg = e
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            panic!("seed {seed} failed: {msg}\nreplay: TANDEM_SEED={seed} cargo test --release -p tandemd --test whole_node {test}");
        }
    }
}

/// A network drawn from the seed: up to 5% loss, up to 2 ms of delay spread.
fn net(seed: u64) -> NetParams {
    let mut r = Rng::new(seed ^ 0x6e65_7400);
    let lo = r.range(20, 200);
    NetParams {
        loss_per_mille: r.below(51),
        delay_us: (lo, lo + r.below(2000)),
    }
}

fn state(sim: &Sim, on: usize, of: u16) -> Option<MemberState> {
    sim.hosts[on]
        .engine
        .membership()
        .member(NodeId(of))
        .map(|m| m.state)
}

/// Joins every node and waits until each is synced.
fn settle(sim: &mut Sim) {
    let joined = sim.run_until_true(Duration::from_secs(2), |s| {
        s.hosts.iter().all(|h| h.engine.synced())
            && (0..s.hosts.len()).all(|i| {
                (0..s.hosts.len())
                    .filter(|&j| j != i)
                    .all(|j| state(s, i, j as u16 + 1) == Some(MemberState::Alive))
            })
    });
    assert!(joined, "never joined and synced");
}

/// Writes `n` sessions on node `on` and waits until every reply was released; returns them.
fn write_acked(sim: &mut Sim, on: usize, n: u32, tag: &str) -> Vec<(Vec<u8>, Vec<u8>)> {
    write_sized(sim, on, n, tag, 3000)
}

/// [`write_acked`] with values of 1..=`max_len` bytes.
fn write_sized(
    sim: &mut Sim,
    on: usize,
    n: u32,
    tag: &str,
    max_len: u64,
) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut kv = Vec::new();
    let before = sim.hosts[on].released.len();
    for i in 0..n {
        let key = format!("{tag}:{i}").into_bytes();
        let len = sim.rng.range(1, max_len) as usize;
        let value: Vec<u8> = (0..len).map(|_| sim.rng.next_u64() as u8).collect();
        sim.set(on, &key, &value)
            .expect("sync mode holds the reply");
        kv.push((key, value));
        if sim.rng.per_mille(300) {
            let pause = Duration::from_micros(sim.rng.range(1, 500));
            sim.run_for(pause);
        }
    }
    let all = sim.run_until_true(Duration::from_secs(3), |s| {
        s.hosts[on].released.len() >= before + n as usize
    });
    assert!(
        all,
        "writes never released: {} of {n}",
        sim.hosts[on].released.len() - before
    );
    assert!(
        sim.hosts[on].released[before..].iter().all(|&(_, ok)| ok),
        "a write failed"
    );
    kv
}

/// The seed lesson: sessions written on A, A dies mid-stream, B already holds every
/// acknowledged one, declares A dead and keeps taking writes.
#[test]
fn sessions_written_on_a_survive_a_dying_and_b_serves_them() {
    for_seeds("sessions_written_on_a", 1000, |seed| {
        let mut sim = Sim::new(seed, 2, net(seed));
        settle(&mut sim);
        let acked = write_acked(&mut sim, 0, 20, "s");
        // More writes in flight when A dies: not acknowledged, so nothing is promised.
        for i in 0..5u32 {
            sim.set(0, format!("late:{i}").as_bytes(), b"x");
        }
        let pause = Duration::from_micros(sim.rng.range(0, 300));
        sim.run_for(pause);
        sim.kill(0);
        for (k, v) in &acked {
            assert_eq!(
                sim.get(1, k),
                Some(v.clone()),
                "B lost {:?}",
                String::from_utf8_lossy(k)
            );
        }
        let dead = sim.run_until_true(Duration::from_millis(200), |s| {
            state(s, 1, 1) == Some(MemberState::Dead)
        });
        assert!(dead, "B never declared A dead");
        let w = write_acked(&mut sim, 1, 3, "after");
        assert_eq!(sim.get(1, &w[0].0), Some(w[0].1.clone()));
    });
}

/// A node restarts empty and pulls the full state while writes keep coming; afterwards both
/// hold the same sessions. More writes than A's retransmit ring holds (4096 chunks): only a
/// state transfer can bring them.
#[test]
fn a_restarted_node_resyncs_under_writes() {
    for_seeds("a_restarted_node_resyncs", 40, |seed| {
        let mut sim = Sim::new(seed, 2, net(seed));
        settle(&mut sim);
        write_sized(&mut sim, 0, 5000, "before", 100);
        sim.kill(1);
        sim.run_for(Duration::from_millis(30));
        sim.restart(1);
        let mut n = 0;
        let synced = sim.run_until_true(Duration::from_secs(5), |s| {
            // A write on A every simulated millisecond during the transfer.
            s.set(0, format!("during:{n}").as_bytes(), b"w");
            n += 1;
            s.hosts[1].engine.synced()
        });
        assert!(synced, "B never synced");
        assert!(n > 0);
        let same = sim.run_until_true(Duration::from_secs(2), |s| s.dump(0) == s.dump(1));
        assert!(
            same,
            "A and B differ after the transfer: {} vs {} sessions",
            sim.dump(0).len(),
            sim.dump(1).len()
        );
        assert!(sim.dump(1).len() >= 5000);
    });
}

/// Three nodes split 1 | 2+3; both sides write (some keys on both); once healed, every node
/// holds the same sessions (last writer wins), and the minority never lost a majority write.
#[test]
fn a_partition_heals_into_one_state() {
    for_seeds("a_partition_heals", 200, |seed| {
        let mut sim = Sim::new(seed, 3, net(seed));
        settle(&mut sim);
        write_acked(&mut sim, 0, 20, "common");
        sim.partition(&[1, 2, 2]);
        // Each side notices the other is gone, then writes.
        let split = sim.run_until_true(Duration::from_millis(300), |s| {
            state(s, 0, 2) == Some(MemberState::Dead) && state(s, 1, 1) == Some(MemberState::Dead)
        });
        assert!(split, "the partition was never detected");
        write_acked(&mut sim, 0, 10, "both");
        write_acked(&mut sim, 1, 10, "both");
        write_acked(&mut sim, 2, 10, "majority");
        sim.heal();
        let one = sim.run_until_true(Duration::from_secs(5), |s| {
            let a = s.dump(0);
            a == s.dump(1) && a == s.dump(2)
        });
        assert!(
            one,
            "no single state after healing: {} / {} / {} sessions",
            sim.dump(0).len(),
            sim.dump(1).len(),
            sim.dump(2).len()
        );
        assert_eq!(sim.dump(0).len(), 20 + 10 + 10);
    });
}

/// Waits until node `on` released every held write; whether it did.
fn released(sim: &mut Sim, on: usize, ids: &[tandemd::engine::writes::ReplyTicket]) -> bool {
    sim.run_until_true(Duration::from_secs(2), |s| {
        ids.iter()
            .all(|id| s.hosts[on].released.iter().any(|(r, ok)| r == id && *ok))
    })
}

/// Issue 17, freshness on first contact: an attacker records the datagrams of a login (a
/// SET on A, replicated to B), the user logs out (DEL), the tombstone ages out, B restarts
/// empty and the attacker replays the recording to it, before and during its join. The
/// logged-out session never comes back, on either node, after the state transfer.
#[test]
fn a_replayed_update_never_brings_back_a_deleted_session() {
    for_seeds("a_replayed_update_never", 100, |seed| {
        let mut sim = Sim::new(seed, 2, net(seed));
        sim.limits.tombstone_ttl_ms = 200;
        sim.restart(0);
        sim.restart(1);
        settle(&mut sim);
        sim.tape = Some(Vec::new());
        let set = sim.set(0, b"login", b"alice").expect("held");
        assert!(released(&mut sim, 0, &[set]), "SET never released");
        let tape: Vec<Vec<u8>> = (sim.tape.take().unwrap().into_iter())
            .filter(|(from, _)| *from == 0)
            .map(|(_, d)| d)
            .collect();
        let del = sim.del(0, b"login").expect("held");
        assert!(released(&mut sim, 0, &[del]), "DEL never released");
        assert_eq!(sim.get(1, b"login"), None);
        sim.run_for(Duration::from_millis(400));
        assert_eq!(sim.hosts[0].engine.store().tombstones(), 0, "aged out");
        sim.kill(1);
        sim.run_for(Duration::from_millis(30));
        sim.restart(1);
        for d in &tape {
            sim.inject(1, d.clone());
        }
        let pause = Duration::from_micros(sim.rng.range(0, 2000));
        sim.run_for(pause);
        for d in &tape {
            sim.inject(1, d.clone());
        }
        let synced = sim.run_until_true(Duration::from_secs(2), |s| {
            s.hosts[1].engine.synced() && state(s, 1, 1) == Some(MemberState::Alive)
        });
        assert!(synced, "B never joined and synced");
        for d in &tape {
            sim.inject(1, d.clone());
        }
        sim.run_for(Duration::from_millis(100));
        assert_eq!(sim.get(1, b"login"), None, "the session came back on B");
        assert_eq!(sim.get(0, b"login"), None, "the session came back on A");
    });
}

/// Issue 17: A (the leader) dies; B restarts and an attacker replays A's recorded heartbeats
/// to it. B never shows A alive or leader, and its writes are released (nothing waits for A).
#[test]
fn replayed_heartbeats_never_make_a_dead_node_alive_or_leader() {
    for_seeds("replayed_heartbeats_never", 100, |seed| {
        let mut sim = Sim::new(seed, 2, net(seed));
        settle(&mut sim);
        let leaders = sim.run_until_true(Duration::from_millis(500), |s| {
            let l = s.hosts[0].engine.membership().leader();
            l.is_some() && l == s.hosts[1].engine.membership().leader()
        });
        let leader = sim.hosts[0].engine.membership().leader();
        assert!(
            leaders,
            "no one leader: {leader:?} / {:?}",
            sim.hosts[1].engine.membership().leader()
        );
        let leader = leader.unwrap();
        let (a, b) = if leader == NodeId(1) { (0, 1) } else { (1, 0) };
        sim.tape = Some(Vec::new());
        sim.run_for(Duration::from_millis(50));
        let tape: Vec<Vec<u8>> = (sim.tape.take().unwrap().into_iter())
            .filter(|(from, _)| *from == a)
            .map(|(_, d)| d)
            .collect();
        assert!(tape.len() > 10, "recorded {} datagrams of A", tape.len());
        sim.kill(a);
        sim.kill(b);
        sim.run_for(Duration::from_millis(30));
        sim.restart(b);
        let mut held = Vec::new();
        for (i, d) in tape.iter().enumerate() {
            sim.inject(b, d.clone());
            sim.run_for(Duration::from_millis(1));
            let m = sim.hosts[b].engine.membership();
            let shown = m.member(leader).map(|m| m.state);
            assert_eq!(shown, None, "A shown after replayed datagram {i}");
            assert_ne!(m.leader(), Some(leader), "A shown as leader");
            if i % 10 == 0 {
                held.push(sim.set(b, format!("w:{i}").as_bytes(), b"v"));
            }
        }
        let held: Vec<_> = held.into_iter().flatten().collect();
        assert!(released(&mut sim, b, &held), "B's writes hung");
    });
}
