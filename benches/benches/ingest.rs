//! Heartbeat ingest: how many sealed heartbeats per second tandemd's receive path takes,
//! against a bare recvmmsg loop that does no work (the kernel's rate), measured in the same run.
//!
//! Frames are real heartbeats, sealed one by one (AES-128-GCM, increasing seq, the receiver's
//! cluster id and key, sender node != receiver), sent over loopback UDP with sendmmsg (32 per
//! call). The receiver (node 1) has two ways to take them: `raw` (recvmmsg, count, nothing
//! else) and `tandemd` (the daemon's `ClusterSocket::recv_batch` with kernel timestamps, then
//! `Engine::handle_datagram` per frame: open, replay check, parse, detector, membership).
//! Both spin on a non-blocking socket, so neither measures epoll wake-ups.
//!
//! Two measurements:
//! - `drain` (the headline figure): the sender fills the receive queue with FILL frames, then
//!   one side drains it, timed; raw and tandemd alternate cycle by cycle for DRAIN_TIME, so
//!   both see the same machine. Only the receiving side runs while timed: this is the
//!   receiver's own rate. (On loopback the sender pays for the whole delivery path in its
//!   sendmmsg call, so a streaming sender is slower than a bare receiver.)
//! - `stream`: a sender thread blasts for the whole phase while the receiver alternates raw
//!   and tandemd phases of PHASE, ROUNDS times (best of each). Usually sender-bound: it shows
//!   that tandemd keeps up with a full-speed sender.
//!
//! The cluster's `frames_accepted` must match what the tandemd side handed it, or the figure
//! would be measuring drops; the bench prints both and fails if they differ by over 1%.
//! Bounded: about 2 * ROUNDS * PHASE + DRAIN_TIME.
//!
//! Run: `cargo bench -p tandem-benches --bench ingest`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant as StdInstant};

use tandem_core::crypto::{Receiver, Sealer};
use tandem_core::frame::{Body, ChallengeRepr, HeartbeatRepr, Role, StateFlags};
use tandem_core::{ClusterId, Incarnation, Instant, NodeId};
use tandemd::config::parse_keys;
use tandemd::engine::cluster::{keys as node_keys, ClusterConfig, Profile};
use tandemd::engine::Engine;
use tandemd::io::clock::Clock;
use tandemd::io::net::{
    recv_batch_fd, ClusterSocket, LocalAddr, NetConfig, RecvBatch, SendBatch, TransportKind,
};

const PHASE: Duration = Duration::from_millis(1500);
const ROUNDS: usize = 2;
const FILL: usize = 1024;
const DRAIN_TIME: Duration = Duration::from_secs(4);
const PORT_RX: u16 = 47_901;
const PORT_TX: u16 = 47_902;
const CLUSTER: ClusterId = ClusterId(0x7a4d);
/// A key file's text (a 16-byte printable raw key is refused since issue 17).
const KEY: &[u8] = b"1:696e676573742d62656e63682d6b6579";

fn unicast(listen: u16, peer: Option<u16>) -> NetConfig {
    let lo = |p| SocketAddr::from((Ipv4Addr::LOCALHOST, p));
    NetConfig {
        transport: TransportKind::Unicast,
        interface: LocalAddr {
            addr: IpAddr::V4(Ipv4Addr::LOCALHOST),
            index: 1,
        },
        group: lo(listen),
        peers: peer.map(lo).into_iter().collect(),
        listen: Some(lo(listen)),
        protocol: 0xFD,
        ttl: 1,
        multicast_loop: true, // unicast: unused
        split_heartbeats: false,
    }
}

fn main() {
    // `cargo test --all-targets` runs bench binaries without `--bench`: do nothing then.
    if !std::env::args().any(|a| a == "--bench") {
        println!("ingest: run with `cargo bench -p tandem-benches --bench ingest`");
        return;
    }
    let keys = parse_keys(KEY).unwrap_or_else(|e| panic!("key: {e:?}"));
    let rx = ClusterSocket::open(&unicast(PORT_RX, None)).unwrap_or_else(|e| panic!("rx: {e}"));
    let tx = Arc::new(
        ClusterSocket::open(&unicast(PORT_TX, Some(PORT_RX))).unwrap_or_else(|e| panic!("tx: {e}")),
    );
    let clock = Clock::new();
    let mut engine = Engine::new(
        ClusterConfig {
            node_id: NodeId(1),
            cluster_id: CLUSTER,
            incarnation: Incarnation(1),
            profile: Profile::Fast,
            interval_us: None,
            multiplier: None,
            priority: 100,
            preempt: false,
            witness: false,
            voters: vec![],
            keys: Some(keys.clone()),
            salt: tandem_core::Salt([1; 6]),
        },
        tandemd::engine::store::Limits::default(),
        tandemd::engine::writes::ReplicationMode::Sync,
        clock.now(),
    );
    let stop = Arc::new(AtomicBool::new(false));
    let sender = {
        let stop = stop.clone();
        let tx = tx.clone();
        let mut ring = node_keys(Some(&keys));
        let mut sealer = Sealer::new(
            CLUSTER,
            NodeId(2),
            Incarnation(7),
            tandem_core::Salt([0x5a; 6]),
        );
        verify(&mut engine, &mut sealer, &mut ring, &clock);
        std::thread::spawn(move || {
            let hb = heartbeat();
            let mut batch = SendBatch::new();
            let (mut sent, mut sealed) = (0u64, 0u64);
            let mut len = 0;
            // Bounded by `stop`, which main sets after the last phase (a few seconds).
            while !stop.load(Ordering::Relaxed) {
                while let Some(slot) = batch.slot() {
                    // Each frame sealed anew: a fresh seq, as a real sender would send.
                    len = sealer
                        .seal(&hb, &mut ring, slot)
                        .unwrap_or_else(|e| panic!("seal: {e:?}"));
                    sealed += 1;
                    batch.commit(len);
                }
                sent += tx.send_batch(&mut batch).unwrap_or(0) as u64;
            }
            (sent, sealed, len)
        })
    };
    let mut batch = RecvBatch::new();
    let fd = rx.as_raw_fd();
    let (mut best_raw, mut best_tandemd) = (0f64, 0f64);
    let mut handed = 0u64;
    println!("stream (sender thread running, {ROUNDS} rounds of {PHASE:?} per side):");
    for round in 0..ROUNDS {
        // Raw: recvmmsg and count.
        let (n, secs) =
            run_phase(|| recv_batch_fd(fd, &mut batch, &clock, Instant::ZERO, false).unwrap_or(0));
        let raw = n as f64 / secs;
        // tandemd: the daemon's receive path, every datagram handed to the cluster.
        let (n, secs) =
            run_phase(|| tandemd_batch(&rx, &mut batch, &clock, &mut engine, &mut handed));
        let td = n as f64 / secs;
        println!(
            "  round {round}: raw recvmmsg {raw:>9.0} pkt/s   tandemd {td:>9.0} pkt/s   ({:.1}%)",
            100.0 * td / raw.max(1.0)
        );
        best_raw = best_raw.max(raw);
        best_tandemd = best_tandemd.max(td);
    }
    stop.store(true, Ordering::Relaxed);
    let (sent, sealed, frame_len) = sender.join().unwrap_or((0, 0, 0));
    println!(
        "  stream best: raw {best_raw:.0} pkt/s, tandemd {best_tandemd:.0} pkt/s, ratio {:.1}%; sender sealed {sealed}, kernel took {sent}",
        100.0 * best_tandemd / best_raw.max(1.0),
    );

    // Drain: fill the queue, then time one side emptying it; alternate sides every cycle.
    let mut sealer = Sealer::new(
        CLUSTER,
        NodeId(3),
        Incarnation(7),
        tandem_core::Salt([0x5a; 6]),
    );
    let mut ring = node_keys(Some(&keys));
    verify(&mut engine, &mut sealer, &mut ring, &clock);
    let mut send = SendBatch::new();
    let mut fill = || {
        let mut sent = 0;
        for _ in 0..FILL / tandemd::io::net::BATCH {
            while let Some(slot) = send.slot() {
                let len = sealer
                    .seal(&heartbeat(), &mut ring, slot)
                    .unwrap_or_else(|e| panic!("seal: {e:?}"));
                send.commit(len);
            }
            sent += tx.send_batch(&mut send).unwrap_or(0);
        }
        sent
    };
    // What the stream phase left queued is not part of any cycle. Bounded: the sender stopped.
    while recv_batch_fd(fd, &mut batch, &clock, Instant::ZERO, false).unwrap_or(0) > 0 {}
    let mut totals = [(0u64, 0u64, Duration::ZERO); 2]; // (sent, received, time) raw, tandemd
    let start = StdInstant::now();
    let mut cycles = 0u64;
    while start.elapsed() < DRAIN_TIME {
        for (side, total) in totals.iter_mut().enumerate() {
            let sent = fill();
            let t0 = StdInstant::now();
            let mut got = 0u64;
            // Bounded: the queue holds at most FILL frames and nothing else sends now.
            loop {
                let n = if side == 0 {
                    recv_batch_fd(fd, &mut batch, &clock, Instant::ZERO, false).unwrap_or(0)
                } else {
                    tandemd_batch(&rx, &mut batch, &clock, &mut engine, &mut handed)
                };
                if n == 0 {
                    break;
                }
                got += n as u64;
            }
            total.2 += t0.elapsed();
            total.0 += sent as u64;
            total.1 += got;
        }
        cycles += 1;
    }
    let rate = |t: &(u64, u64, Duration)| t.1 as f64 / t.2.as_secs_f64().max(1e-9);
    let (raw, td) = (rate(&totals[0]), rate(&totals[1]));
    println!(
        "drain ({cycles} cycles of {FILL} frames per side): raw sent {} got {}, tandemd sent {} got {}",
        totals[0].0, totals[0].1, totals[1].0, totals[1].1
    );
    let m = engine.cluster_metrics();
    println!(
        "ingest (sealed heartbeats, {frame_len} bytes, AES-128-GCM, loopback UDP, batch {}): raw recvmmsg {raw:.0} pkt/s, tandemd {td:.0} pkt/s, ratio {:.1}% (goal >= 80%)",
        tandemd::io::net::BATCH,
        100.0 * td / raw.max(1.0),
    );
    println!(
        "  tandemd side handed the cluster {handed} frames: frames_received {}, frames_accepted {} ({:.2}%), members {}",
        m.frames_received,
        m.frames_accepted,
        100.0 * m.frames_accepted as f64 / handed.max(1) as f64,
        engine.status(clock.now()).members.len(),
    );
    // The rate means nothing if the cluster refused the frames (wrong key, replay, cluster).
    assert!(
        handed > 0 && m.frames_accepted * 100 >= handed * 99,
        "the cluster accepted {} of {handed} frames: the bench would measure drops",
        m.frames_accepted
    );
}

/// A follower's heartbeat on the fast profile.
/// Has `engine` verify `sealer`'s run (freshness on first contact, issue 17): one heartbeat,
/// then the answer to the challenge the engine sends back. Out of band, before any timing.
fn verify<K: tandem_core::crypto::KeySource>(
    engine: &mut Engine,
    sealer: &mut Sealer,
    ring: &mut K,
    clock: &Clock,
) {
    let (now, wall) = (clock.now(), tandemd::io::clock::unix_ms());
    let mut buf = [0u8; 1500];
    let n = sealer.seal(&heartbeat(), ring, &mut buf).unwrap_or(0);
    engine.handle_datagram(now, wall, &mut buf[..n]);
    let mut rx: Receiver<4> = Receiver::new(CLUSTER);
    // Bounded: the engine has a heartbeat and a challenge to send, a few frames.
    for _ in 0..16 {
        let Some(d) = engine.poll_transmit(now, wall, &mut buf, false) else {
            break;
        };
        let mut answer = None;
        for frame in tandem_core::datagram::Frames::new(&mut buf[..d.len]) {
            if let Ok(f) = rx.receive(frame, ring) {
                if let Body::Challenge(c) = f.body {
                    if c.answers.is_none() && c.target == sealer.run().sender() {
                        answer = Some(ChallengeRepr {
                            target: f.header.sender,
                            target_incarnation: f.header.incarnation,
                            target_salt: f.header.salt,
                            answers: Some(f.header.seq),
                        });
                    }
                }
            }
        }
        if let Some(a) = answer {
            let mut out = [0u8; 256];
            let n = sealer
                .seal(&Body::Challenge(a), ring, &mut out)
                .unwrap_or(0);
            engine.handle_datagram(now, wall, &mut out[..n]);
            return;
        }
    }
    panic!("the engine sent no challenge");
}

fn heartbeat() -> Body<'static> {
    Body::Heartbeat(HeartbeatRepr {
        interval_us: 2_000,
        multiplier: 5,
        role: Role::Follower,
        priority: 100,
        state: StateFlags(0),
        leader: None,
        view: 0,
        repl_hwm: 0,
    })
}

/// Spins `recv` for PHASE, returns datagrams received and seconds elapsed.
fn run_phase(mut recv: impl FnMut() -> usize) -> (u64, f64) {
    // Drain what queued up while the other phase ran, so it is not counted here.
    let drain_end = StdInstant::now() + Duration::from_millis(50);
    while StdInstant::now() < drain_end && recv() > 0 {}
    let start = StdInstant::now();
    let mut n = 0u64;
    while start.elapsed() < PHASE {
        n += recv() as u64;
    }
    (n, start.elapsed().as_secs_f64())
}

/// The daemon's receive path for one batch: recvmmsg with kernel timestamps, then every
/// datagram to the cluster (counted in `handed`). Returns the datagrams received.
fn tandemd_batch(
    rx: &ClusterSocket,
    batch: &mut RecvBatch,
    clock: &Clock,
    engine: &mut Engine,
    handed: &mut u64,
) -> usize {
    let now = clock.now();
    let now_ms = tandemd::io::clock::unix_ms();
    let got = rx.recv_batch(batch, clock, now).unwrap_or(0);
    for i in 0..got {
        if let Some(d) = batch.datagram(i) {
            if !d.truncated {
                *handed += 1;
                engine.handle_datagram(d.arrival, now_ms, d.data);
            }
        }
    }
    got
}
