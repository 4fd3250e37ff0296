//! The daemon's replication glue without sockets: two or three `Engine`s exchange real
//! sealed datagrams over an in-memory link on a virtual clock (seeded loss), each datagram
//! to its destination, the way the event loop drives them. Checks synchronous acknowledgement, large values,
//! state transfer to a fresh node, and convergence of concurrent writes.

use std::time::Duration;

use tandem_core::replication::Dest;
use tandem_core::testing::Rng;
use tandem_core::Instant;
use tandemd::engine::store::Expiry;
use tandemd::engine::writes::{ReplyTicket, WriteSink};
use tandemd::engine::Engine;

struct Host {
    engine: Engine,
    up: bool,
}

const NOW_MS: u64 = 1_800_000_000_000;

fn host(id: u16, incarnation: u32, now: Instant) -> Host {
    Host {
        engine: tandemd::testing::engine(id, incarnation, now),
        up: true,
    }
}

/// One loop turn of every live host at `now`, delivering each datagram to every other live
/// host unless the loss draw drops it. Returns the held writes each host released.
fn turn(hosts: &mut [Host], now: Instant, loss_pct: u64, rng: &mut Rng) -> Vec<Vec<ReplyTicket>> {
    let mut released = vec![Vec::new(); hosts.len()];
    let mut wire: Vec<(usize, Dest, Vec<u8>)> = Vec::new();
    for (i, h) in hosts.iter_mut().enumerate() {
        if !h.up {
            continue;
        }
        h.engine.handle_timeout(now, NOW_MS);
        released[i].extend(
            std::iter::from_fn(|| h.engine.poll_completion()).map(|(w, r)| {
                assert_eq!(r, Ok(()), "no quorum rule here: writes never fail");
                w
            }),
        );
        h.engine.handle_writes(now);
        let mut buf = [0u8; 2048];
        for _ in 0..10_000 {
            let Some(d) = h.engine.poll_transmit(now, NOW_MS, &mut buf, true) else {
                break;
            };
            wire.push((i, d.to, buf[..d.len].to_vec()));
        }
    }
    for (from, to, d) in wire {
        for (j, h) in hosts.iter_mut().enumerate() {
            let for_it = match to {
                Dest::All => true,
                Dest::Node(n) => n == h.engine.node_id(),
            };
            if j == from || !for_it || !h.up || rng.next_u64() % 100 < loss_pct {
                continue;
            }
            let mut d = d.clone();
            h.engine.handle_datagram(now, NOW_MS, &mut d);
        }
    }
    released
}

/// Runs `ms` of virtual time in 100 us turns; returns every released write per host.
fn run(
    hosts: &mut [Host],
    t: &mut Instant,
    ms: u64,
    loss: u64,
    rng: &mut Rng,
) -> Vec<Vec<ReplyTicket>> {
    let mut all = vec![Vec::new(); hosts.len()];
    for _ in 0..ms * 10 {
        *t = *t + Duration::from_micros(100);
        for (i, r) in turn(hosts, *t, loss, rng).into_iter().enumerate() {
            all[i].extend(r);
        }
    }
    all
}

/// A client SET through host `h`: store first, then the sink (as the RESP server does).
fn set(h: &mut Host, key: &[u8], value: &[u8]) -> Option<ReplyTicket> {
    let (store, mut sink) = h.engine.client(NOW_MS);
    let rec = store
        .set_string(key, value, Expiry::Never, NOW_MS)
        .expect("fits");
    sink.submit(vec![rec])
}

/// The string `h` holds in `key`.
fn value(h: &mut Host, key: &[u8]) -> Option<Vec<u8>> {
    h.engine
        .client(NOW_MS)
        .0
        .get(key, NOW_MS)
        .and_then(|e| e.value.string().map(|v| v.into_owned()))
}

fn encoded(v: &[u8]) -> Vec<u8> {
    v.to_vec()
}

#[test]
fn sync_writes_are_released_only_after_the_peer_holds_them() {
    let mut t = Instant::from_millis(1);
    let mut rng = Rng::new(1);
    let mut hosts = vec![host(1, 10, t), host(2, 20, t)];
    run(&mut hosts, &mut t, 40, 0, &mut rng);
    assert!(hosts.iter().all(|h| h.engine.synced()));

    let big: Vec<u8> = (0..256 * 1024).map(|i| (i % 251) as u8).collect();
    let mut held = Vec::new();
    for i in 0..200u32 {
        let key = format!("s:{i}");
        held.push(set(&mut hosts[0], key.as_bytes(), &i.to_be_bytes()).expect("sync mode holds"));
    }
    held.push(set(&mut hosts[0], b"big", &big).expect("held"));
    // Nothing is released before the peer acked: the peer has not even received it yet.
    let early = turn(&mut hosts, t, 0, &mut rng);
    assert!(
        early[0].is_empty(),
        "released before replication: {:?}",
        early[0]
    );
    let released = run(&mut hosts, &mut t, 50, 0, &mut rng);
    assert_eq!(released[0], held, "every write released, in order");
    for i in 0..200u32 {
        let key = format!("s:{i}");
        assert_eq!(
            value(&mut hosts[1], key.as_bytes()),
            Some(encoded(&i.to_be_bytes()))
        );
    }
    assert_eq!(value(&mut hosts[1], b"big"), Some(encoded(&big)));
}

#[test]
fn writes_replicate_under_20_percent_loss() {
    let mut t = Instant::from_millis(1);
    let mut rng = Rng::new(0x5eed);
    let mut hosts = vec![host(1, 10, t), host(2, 20, t)];
    run(&mut hosts, &mut t, 40, 0, &mut rng);
    let mut held = Vec::new();
    for i in 0..300u32 {
        let key = format!("k{i}");
        let w = set(&mut hosts[(i % 2) as usize], key.as_bytes(), b"v").expect("held");
        held.push(((i % 2) as usize, w));
        run(&mut hosts, &mut t, 1, 20, &mut rng);
    }
    let released = run(&mut hosts, &mut t, 2000, 20, &mut rng);
    let _ = released;
    for i in 0..300u32 {
        let key = format!("k{i}");
        for h in hosts.iter_mut() {
            assert_eq!(value(h, key.as_bytes()), Some(encoded(b"v")), "k{i}");
        }
    }
    // Both stores hold the same entries.
    assert_eq!(hosts[0].engine.store().len(), hosts[1].engine.store().len());
}

#[test]
fn a_fresh_node_syncs_the_full_state_before_it_is_synced() {
    let mut t = Instant::from_millis(1);
    let mut rng = Rng::new(7);
    let mut hosts = vec![host(1, 10, t)];
    run(&mut hosts, &mut t, 20, 0, &mut rng);
    assert!(hosts[0].engine.synced(), "alone after one detection span");
    for i in 0..5000u32 {
        let key = format!("session:{i}");
        // No peer: the write is committed at once (unreplicated).
        set(&mut hosts[0], key.as_bytes(), &[b'x'; 100]);
    }
    run(&mut hosts, &mut t, 2, 0, &mut rng);
    hosts.push(host(2, 20, t));
    assert!(!hosts[1].engine.synced());
    let mut synced_at = None;
    for step in 0..2000 {
        run(&mut hosts, &mut t, 1, 5, &mut rng);
        if step % 50 == 0 {
            // Writes keep coming during the transfer.
            set(&mut hosts[0], format!("during:{step}").as_bytes(), b"w");
        }
        if hosts[1].engine.synced() {
            synced_at = Some(step);
            break;
        }
    }
    assert!(synced_at.is_some(), "never synced");
    run(&mut hosts, &mut t, 200, 0, &mut rng);
    assert_eq!(
        hosts[0].engine.store().len(),
        hosts[1].engine.store().len(),
        "same number of sessions"
    );
    for i in (0..5000u32).step_by(97) {
        let key = format!("session:{i}");
        assert_eq!(
            value(&mut hosts[1], key.as_bytes()),
            Some(encoded(&[b'x'; 100]))
        );
    }
}

#[test]
fn concurrent_writes_to_one_key_converge() {
    let mut t = Instant::from_millis(1);
    let mut rng = Rng::new(99);
    let mut hosts = vec![host(1, 10, t), host(2, 20, t)];
    run(&mut hosts, &mut t, 40, 0, &mut rng);
    for round in 0..50u32 {
        // Both nodes write the same keys in the same turn: true concurrency.
        for k in 0..5u32 {
            let key = format!("shared:{k}");
            set(
                &mut hosts[0],
                key.as_bytes(),
                format!("a{round}").as_bytes(),
            );
            set(
                &mut hosts[1],
                key.as_bytes(),
                format!("b{round}").as_bytes(),
            );
        }
        run(&mut hosts, &mut t, 1, 10, &mut rng);
    }
    run(&mut hosts, &mut t, 1000, 0, &mut rng);
    for k in 0..5u32 {
        let key = format!("shared:{k}");
        let a = value(&mut hosts[0], key.as_bytes());
        let b = value(&mut hosts[1], key.as_bytes());
        assert!(a.is_some());
        assert_eq!(a, b, "{key} diverged");
    }
}

/// A client HSET of one field through host `h`.
fn hset(h: &mut Host, key: &[u8], field: &[u8], value: &[u8]) -> Option<ReplyTicket> {
    let (store, mut sink) = h.engine.client(NOW_MS);
    let (_, rec) = store
        .hset(key, [(field, value)].into_iter(), NOW_MS)
        .expect("fits");
    sink.submit(vec![rec])
}

/// The fields `h` holds in hash `key`, sorted.
fn fields(h: &mut Host, key: &[u8]) -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = match h.engine.client(NOW_MS).0.get(key, NOW_MS) {
        Some(e) => e.value.hash_fields().map(|(f, _)| f.to_vec()).collect(),
        None => Vec::new(),
    };
    out.sort();
    out
}

/// The seed scenario: one user's requests land on both nodes at once and each saves a
/// different attribute of the same session. Every acknowledged field must survive.
#[test]
fn concurrent_hset_of_distinct_fields_keeps_every_field() {
    let mut t = Instant::from_millis(1);
    let mut rng = Rng::new(0x4a5e);
    let mut hosts = vec![host(1, 10, t), host(2, 20, t)];
    run(&mut hosts, &mut t, 40, 0, &mut rng);
    let mut want = Vec::new();
    for i in 0..200u32 {
        // Both nodes write the same hash in the same turn: true concurrency.
        for (n, h) in hosts.iter_mut().enumerate() {
            let field = format!("n{n}:f{i}");
            hset(h, b"session", field.as_bytes(), b"v");
            want.push(field.into_bytes());
        }
        run(&mut hosts, &mut t, 1, 10, &mut rng);
    }
    run(&mut hosts, &mut t, 1000, 0, &mut rng);
    want.sort();
    for h in hosts.iter_mut() {
        let got = fields(h, b"session");
        assert_eq!(got.len(), want.len(), "fields lost");
        assert_eq!(got, want);
    }
}

/// The same across a partition: both sides take writes alone, then heal and converge
/// keeping every field either side acknowledged.
#[test]
fn hset_across_a_partition_keeps_every_field() {
    let mut t = Instant::from_millis(1);
    let mut rng = Rng::new(0xbeef);
    let mut hosts = vec![host(1, 10, t), host(2, 20, t)];
    run(&mut hosts, &mut t, 40, 0, &mut rng);
    let mut want = Vec::new();
    for (n, h) in hosts.iter_mut().enumerate() {
        let field = format!("before{n}");
        hset(h, b"session", field.as_bytes(), b"v");
        want.push(field.into_bytes());
    }
    run(&mut hosts, &mut t, 20, 0, &mut rng);
    // Partition: every datagram lost, long enough for each side to declare the other dead.
    run(&mut hosts, &mut t, 100, 100, &mut rng);
    for i in 0..100u32 {
        for (n, h) in hosts.iter_mut().enumerate() {
            let field = format!("n{n}:f{i}");
            hset(h, b"session", field.as_bytes(), b"v");
            want.push(field.into_bytes());
        }
        run(&mut hosts, &mut t, 1, 100, &mut rng);
    }
    // Heal.
    run(&mut hosts, &mut t, 3000, 0, &mut rng);
    want.sort();
    for h in hosts.iter_mut() {
        assert_eq!(fields(h, b"session"), want);
    }
}

/// A client INCRBY through host `h`.
fn incrby(h: &mut Host, key: &[u8], by: i64) -> Option<ReplyTicket> {
    let (store, mut sink) = h.engine.client(NOW_MS);
    let (_, rec) = store.incr(key, by, NOW_MS).expect("an integer");
    sink.submit(vec![rec])
}

/// Counters converge exactly: increments on both nodes at once, under loss and across a
/// partition, add up to the sum of every acknowledged increment on both nodes.
#[test]
fn concurrent_increments_add_up_across_a_partition() {
    let mut t = Instant::from_millis(1);
    let mut rng = Rng::new(0xc0de);
    let mut hosts = vec![host(1, 10, t), host(2, 20, t)];
    run(&mut hosts, &mut t, 40, 0, &mut rng);
    let mut sum = 0i64;
    for i in 0..100i64 {
        for (n, h) in hosts.iter_mut().enumerate() {
            let by = if n == 0 { i } else { -3 };
            incrby(h, b"hits", by);
            sum += by;
        }
        run(&mut hosts, &mut t, 1, 10, &mut rng);
    }
    // Partition, then more increments on both sides.
    run(&mut hosts, &mut t, 100, 100, &mut rng);
    for _ in 0..50 {
        for h in hosts.iter_mut() {
            incrby(h, b"hits", 1);
            sum += 1;
        }
        run(&mut hosts, &mut t, 1, 100, &mut rng);
    }
    run(&mut hosts, &mut t, 3000, 0, &mut rng);
    for h in hosts.iter_mut() {
        assert_eq!(value(h, b"hits"), Some(sum.to_string().into_bytes()));
    }
}

/// A transaction through host `h`: SET of each key to `len` bytes, submitted as one write
/// (what EXEC does).
fn transaction(h: &mut Host, keys: &[&[u8]], len: usize) -> Option<ReplyTicket> {
    let (store, mut sink) = h.engine.client(NOW_MS);
    let records = keys
        .iter()
        .map(|k| {
            store
                .set_string(k, &vec![b'x'; len], Expiry::Never, NOW_MS)
                .expect("fits")
        })
        .collect();
    sink.submit(records)
}

/// How many of `keys` host `h` holds.
fn held(h: &mut Host, keys: &[&[u8]]) -> usize {
    keys.iter().filter(|k| value(h, k).is_some()).count()
}

/// EXEC's writes reach a peer whole or not at all: a transaction of 8 keys whose batch entry
/// spans about 24 datagrams, sent under 30% loss, is never seen in part by the peer, turn
/// after turn, until it holds all of it; and one cut off by its origin's death after a single
/// turn (most of its chunks delivered) leaves the peer holding none of it.
#[test]
fn a_transaction_reaches_the_peer_whole_or_not_at_all() {
    let keys: Vec<Vec<u8>> = (0..8).map(|i| format!("tx{i}").into_bytes()).collect();
    let keys: Vec<&[u8]> = keys.iter().map(Vec::as_slice).collect();
    for cut in [false, true] {
        let mut t = Instant::from_millis(1);
        let mut rng = Rng::new(if cut { 0x7a } else { 0x7b });
        let mut hosts = vec![host(1, 10, t), host(2, 20, t)];
        run(&mut hosts, &mut t, 40, 0, &mut rng);
        transaction(&mut hosts[0], &keys, 3000);
        let mut whole_at = None;
        for n in 0..20_000 {
            t = t + Duration::from_micros(100);
            turn(&mut hosts, t, 30, &mut rng);
            if cut && n == 0 {
                hosts[0].up = false;
            }
            let got = held(&mut hosts[1], &keys);
            assert!(
                got == 0 || got == keys.len(),
                "turn {n}: the peer holds {got} of 8"
            );
            if got == keys.len() {
                whole_at = Some(n);
                break;
            }
        }
        if cut {
            assert_eq!(whole_at, None, "a cut transaction is not applied");
            assert_eq!(held(&mut hosts[1], &keys), 0);
        } else {
            assert!(whole_at.is_some(), "the transaction never arrived");
        }
    }
}

/// A client HINCRBY through host `h`.
fn hincrby(h: &mut Host, key: &[u8], field: &[u8], by: i64) -> Option<ReplyTicket> {
    let (store, mut sink) = h.engine.client(NOW_MS);
    let (_, rec) = store.hincr(key, field, by, NOW_MS).expect("an integer");
    sink.submit(vec![rec])
}

/// A hash field's counter converges exactly as a key's does: HINCRBYs of one field on both
/// nodes at once, under loss and across a partition, add up, and a field HSET on one side
/// meanwhile survives next to it.
#[test]
fn concurrent_hincrby_adds_up_across_a_partition() {
    let mut t = Instant::from_millis(1);
    let mut rng = Rng::new(0xface);
    let mut hosts = vec![host(1, 10, t), host(2, 20, t)];
    run(&mut hosts, &mut t, 40, 0, &mut rng);
    hset(&mut hosts[0], b"limits", b"views", b"7");
    run(&mut hosts, &mut t, 20, 0, &mut rng);
    let mut sum = 7i64;
    for i in 0..100i64 {
        for (n, h) in hosts.iter_mut().enumerate() {
            let by = if n == 0 { i } else { -3 };
            hincrby(h, b"limits", b"views", by);
            sum += by;
        }
        run(&mut hosts, &mut t, 1, 10, &mut rng);
    }
    // Partition, then more increments on both sides (one of them of a field new to both).
    run(&mut hosts, &mut t, 100, 100, &mut rng);
    let mut fresh = 0i64;
    for _ in 0..50 {
        for h in hosts.iter_mut() {
            hincrby(h, b"limits", b"views", 1);
            hincrby(h, b"limits", b"new", 2);
            sum += 1;
            fresh += 2;
        }
        run(&mut hosts, &mut t, 1, 100, &mut rng);
    }
    hset(&mut hosts[1], b"limits", b"user", b"bob");
    run(&mut hosts, &mut t, 3000, 0, &mut rng);
    for h in hosts.iter_mut() {
        let field = |h: &mut Host, f: &[u8]| {
            h.engine
                .client(NOW_MS)
                .0
                .get(b"limits", NOW_MS)
                .and_then(|e| e.value.hash_field(f).map(<[u8]>::to_vec))
        };
        assert_eq!(field(h, b"views"), Some(sum.to_string().into_bytes()));
        assert_eq!(field(h, b"new"), Some(fresh.to_string().into_bytes()));
        assert_eq!(field(h, b"user"), Some(b"bob".to_vec()));
    }
}

/// A state transfer carries the per-field and per-node state: a node that joins late holds
/// the hash's fields (deleted ones stay deleted) and the counter's shares, and the writes both
/// nodes make afterwards still merge (nothing was flattened into a plain value).
#[test]
fn state_transfer_carries_fields_tombstones_and_counter_shares() {
    let mut t = Instant::from_millis(1);
    let mut rng = Rng::new(0x5a5a);
    let mut hosts = vec![host(1, 10, t)];
    run(&mut hosts, &mut t, 20, 0, &mut rng);
    for i in 0..20u32 {
        hset(&mut hosts[0], b"session", format!("f{i}").as_bytes(), b"v");
    }
    {
        let (store, mut sink) = hosts[0].engine.client(NOW_MS);
        let (_, rec) = store.hdel(b"session", [&b"f3"[..]].into_iter(), NOW_MS);
        sink.submit(rec.into_iter().collect());
    }
    incrby(&mut hosts[0], b"hits", 40);
    run(&mut hosts, &mut t, 2, 0, &mut rng);
    hosts.push(host(2, 20, t));
    for _ in 0..2000 {
        run(&mut hosts, &mut t, 1, 5, &mut rng);
        if hosts[1].engine.synced() {
            break;
        }
    }
    assert!(hosts[1].engine.synced(), "never synced");
    let mut before: Vec<Vec<u8>> = (0..20u32)
        .filter(|&i| i != 3)
        .map(|i| format!("f{i}").into_bytes())
        .collect();
    before.sort();
    assert_eq!(fields(&mut hosts[1], b"session"), before);
    assert_eq!(value(&mut hosts[1], b"hits"), Some(b"40".to_vec()));
    // Both write at once after the transfer.
    incrby(&mut hosts[0], b"hits", 1);
    incrby(&mut hosts[1], b"hits", 2);
    hset(&mut hosts[1], b"session", b"late", b"v");
    hset(&mut hosts[0], b"session", b"f3", b"back");
    run(&mut hosts, &mut t, 500, 5, &mut rng);
    let mut want: Vec<Vec<u8>> = (0..20u32).map(|i| format!("f{i}").into_bytes()).collect();
    want.push(b"late".to_vec());
    want.sort();
    for h in hosts.iter_mut() {
        assert_eq!(fields(h, b"session"), want);
        assert_eq!(value(h, b"hits"), Some(b"43".to_vec()));
    }
    // The deleted field came back through a later write only.
    let f3 = hosts[1]
        .engine
        .client(NOW_MS)
        .0
        .get(b"session", NOW_MS)
        .and_then(|e| e.value.hash_field(b"f3").map(<[u8]>::to_vec));
    assert_eq!(f3, Some(b"back".to_vec()));
}

/// Random interleavings over the real replication path: for several seeds, both nodes take
/// HSETs of distinct fields and increments in random order, under random loss (0-30% per
/// turn) with a random partition in between. Every acknowledged field and increment survives
/// and both stores end identical.
#[test]
fn random_interleavings_loss_and_partitions_keep_every_write() {
    for seed in 1..=6u64 {
        let mut t = Instant::from_millis(1);
        let mut rng = Rng::new(seed);
        let mut hosts = vec![host(1, 10, t), host(2, 20, t)];
        run(&mut hosts, &mut t, 40, 0, &mut rng);
        let mut want = Vec::new();
        let mut sum = 0i64;
        let mut counted = false;
        let cut = rng.next_u64() % 150;
        for i in 0..150u64 {
            let n = (rng.next_u64() % 2) as usize;
            if rng.next_u64() % 2 == 0 {
                let field = format!("s{seed}:n{n}:f{i}");
                hset(&mut hosts[n], b"session", field.as_bytes(), b"v");
                want.push(field.into_bytes());
            } else {
                let by = (rng.next_u64() % 21) as i64 - 10;
                incrby(&mut hosts[n], b"hits", by);
                sum += by;
                counted = true;
            }
            // A partition long enough for both sides to declare the other dead.
            let loss = if (cut..cut + 40).contains(&i) {
                100
            } else {
                rng.next_u64() % 31
            };
            run(&mut hosts, &mut t, 1 + rng.next_u64() % 3, loss, &mut rng);
        }
        run(&mut hosts, &mut t, 3000, 0, &mut rng);
        want.sort();
        for h in hosts.iter_mut() {
            assert_eq!(fields(h, b"session"), want, "seed {seed}");
            let hits = counted.then(|| sum.to_string().into_bytes());
            assert_eq!(value(h, b"hits"), hits, "seed {seed}");
        }
        let a = hosts[0].engine.store().record(b"hits", NOW_MS);
        let b = hosts[1].engine.store().record(b"hits", NOW_MS);
        assert_eq!(a, b, "seed {seed}: counters identical");
    }
}
