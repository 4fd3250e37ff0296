//! Heartbeat ingest: how many datagrams per second tandemd's receive path takes, against a
//! bare recvmmsg loop that does no work (the kernel's rate), measured in the same run.
//!
//! A sender thread blasts 64-byte frames over loopback UDP with sendmmsg (32 per call) for
//! the whole run. The receiver alternates phases: `raw` (recvmmsg, count, nothing else) and
//! `tandemd` (the daemon's `ClusterSocket::recv_batch` with kernel timestamps + one
//! `Cluster::handle_datagram` per frame). Both spin on a non-blocking socket, so neither
//! measures epoll wake-ups. Each phase runs PHASE; the best of ROUNDS per side is reported
//! with the ratio (goal: tandemd >= 80% of raw). Bounded: about 2 * ROUNDS * PHASE.
//!
//! Run: `cargo bench -p tandem-benches --bench ingest`.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant as StdInstant};

use tandem_core::{ClusterId, Incarnation, Instant, NodeId};
use tandemd::clock::Clock;
use tandemd::cluster::{Cluster, ClusterConfig};
use tandemd::config::{Profile, TransportKind};
use tandemd::net::{recv_batch_fd, ClusterSocket, NetConfig, RecvBatch, SendBatch};

const PHASE: Duration = Duration::from_millis(1500);
const ROUNDS: usize = 2;
const FRAME_BYTES: usize = 64;
const PORT_RX: u16 = 47_901;
const PORT_TX: u16 = 47_902;

fn unicast(listen: u16, peer: Option<u16>) -> NetConfig {
    let lo = |p| SocketAddrV4::new(Ipv4Addr::LOCALHOST, p);
    NetConfig {
        transport: TransportKind::Unicast,
        interface_addr: Ipv4Addr::LOCALHOST,
        group: lo(listen),
        peers: peer.map(lo).into_iter().collect(),
        listen: Some(lo(listen)),
        protocol: 0xFD,
        ttl: 1,
    }
}

fn main() {
    // `cargo test --all-targets` runs bench binaries without `--bench`: do nothing then.
    if !std::env::args().any(|a| a == "--bench") {
        println!("ingest: run with `cargo bench -p tandem-benches --bench ingest`");
        return;
    }
    let rx = ClusterSocket::open(&unicast(PORT_RX, None)).unwrap_or_else(|e| panic!("rx: {e}"));
    let tx =
        ClusterSocket::open(&unicast(PORT_TX, Some(PORT_RX))).unwrap_or_else(|e| panic!("tx: {e}"));
    let stop = Arc::new(AtomicBool::new(false));
    let sender = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut batch = SendBatch::new();
            let mut sent = 0u64;
            // Bounded by `stop`, which main sets after the last phase (a few seconds).
            while !stop.load(Ordering::Relaxed) {
                while let Some(slot) = batch.slot() {
                    slot[..8].copy_from_slice(&sent.to_be_bytes());
                    batch.commit(FRAME_BYTES);
                }
                sent += tx.send_batch(&mut batch).unwrap_or(0) as u64;
            }
            sent
        })
    };
    let clock = Clock::new();
    let mut cluster = Cluster::new(
        ClusterConfig {
            node_id: NodeId(1),
            cluster_id: ClusterId(1),
            incarnation: Incarnation(1),
            profile: Profile::Fast,
            priority: 100,
            preempt: false,
            witness: false,
            voters: vec![],
            keys: None,
        },
        Instant::ZERO,
    );
    let mut sessions = tandemd::sessions::Sessions::new(
        tandemd::store::Store::new(NodeId(1), tandemd::store::Limits::default()),
        tandemd::config::ReplicationMode::Sync,
        false,
        Instant::ZERO,
        Duration::from_millis(10),
    );
    let mut batch = RecvBatch::new();
    let fd = rx.as_raw_fd();
    let mut best_raw = 0f64;
    let mut best_tandemd = 0f64;
    for round in 0..ROUNDS {
        // Raw: recvmmsg and count.
        let (n, secs) =
            run_phase(|| recv_batch_fd(fd, &mut batch, &clock, Instant::ZERO, false).unwrap_or(0));
        let raw = n as f64 / secs;
        // tandemd: the daemon's receive path, every datagram handed to the cluster.
        let (n, secs) = run_phase(|| {
            let now = clock.now();
            let got = rx.recv_batch(&mut batch, &clock, now).unwrap_or(0);
            for i in 0..got {
                if let Some(d) = batch.datagram(i) {
                    if !d.truncated {
                        cluster.handle_datagram(d.arrival, d.data, &mut sessions, 0);
                    }
                }
            }
            got
        });
        let td = n as f64 / secs;
        println!("round {round}: raw recvmmsg {raw:>10.0} pkt/s   tandemd {td:>10.0} pkt/s");
        best_raw = best_raw.max(raw);
        best_tandemd = best_tandemd.max(td);
    }
    stop.store(true, Ordering::Relaxed);
    let sent = sender.join().unwrap_or(0);
    println!(
        "ingest ({FRAME_BYTES}-byte frames, loopback UDP, batch {}): raw recvmmsg {best_raw:.0} pkt/s, tandemd {best_tandemd:.0} pkt/s, ratio {:.1}% (goal >= 80%); sender sent {sent}; cluster counted {}",
        tandemd::net::BATCH,
        100.0 * best_tandemd / best_raw.max(1.0),
        cluster.metrics().frames_received
    );
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
