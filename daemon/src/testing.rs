//! Whole nodes on virtual time (feature `testing`): N [`Engine`]s over a simulated network
//! with seeded loss, delay (and so reordering) and partitions, all drawn from one
//! [`Rng`]. The clock jumps to the next deadline or arrival, so seconds of cluster life take
//! milliseconds, and a run replays exactly from its seed.
//!
//! Datagrams honour their destination: one for a node reaches that node alone, one for all
//! every other node (as on multicast). Each node's wall clock is `WALL0 + virtual ms`.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Duration;

use tandem_core::replication::Dest;
pub use tandem_core::testing::Rng;
use tandem_core::{ClusterId, Incarnation, Instant, NodeId};

use crate::engine::cluster::ClusterConfig;
use crate::engine::cluster::Profile;
use crate::engine::store::{Expiry, Limits};
use crate::engine::writes::{ReplicationMode, ReplyTicket, WriteSink};
use crate::engine::Engine;

/// Unix milliseconds at virtual time zero.
pub(crate) const WALL0: u64 = 1_800_000_000_000;

/// How the simulated network misbehaves.
#[derive(Clone, Copy, Debug)]
pub struct NetParams {
    /// Datagrams lost, per mille.
    pub loss_per_mille: u64,
    /// One-way delay, drawn per datagram from this range (µs): a spread reorders.
    pub delay_us: (u64, u64),
}

impl Default for NetParams {
    fn default() -> NetParams {
        NetParams {
            loss_per_mille: 0,
            delay_us: (50, 150),
        }
    }
}

/// A data node `id` of the simulated cluster (fast profile, one key, synchronous replication,
/// default limits) started at `now`.
pub fn engine(id: u16, incarnation: u32, now: Instant) -> Engine {
    engine_with(id, incarnation, now, Limits::default())
}

/// [`engine`] with the store's `limits`.
pub fn engine_with(id: u16, incarnation: u32, now: Instant, limits: Limits) -> Engine {
    Engine::new(
        ClusterConfig {
            node_id: NodeId(id),
            cluster_id: ClusterId(3),
            incarnation: Incarnation(incarnation),
            profile: Profile::Fast,
            interval_us: None,
            multiplier: None,
            priority: 100,
            preempt: false,
            witness: false,
            voters: vec![],
            keys: crate::config::parse_keys(&[7u8; 16]).ok(),
            salt: tandem_core::Salt([id as u8; 6]),
        },
        limits,
        ReplicationMode::Sync,
        now,
    )
}

/// One simulated host.
pub struct Host {
    pub engine: Engine,
    pub up: bool,
    /// Writes whose replies were released (in order), with their result.
    pub released: Vec<(ReplyTicket, bool)>,
    /// Partition group: datagrams cross only within a group.
    pub group: u8,
}

/// A datagram in flight.
#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct InFlight {
    at: Instant,
    seq: u64,
    to: usize,
    bytes: Vec<u8>,
}

/// N nodes and the network between them.
pub struct Sim {
    pub hosts: Vec<Host>,
    pub net: NetParams,
    pub rng: Rng,
    pub now: Instant,
    seed: u64,
    wire: BinaryHeap<Reverse<InFlight>>,
    seq: u64,
    restarts: u32,
    /// Datagrams delivered, dropped by loss, and cut by a partition.
    pub delivered: u64,
    pub lost: u64,
    pub cut: u64,
    /// When `Some`, every datagram sent is recorded with its sender's index (an attacker's
    /// capture, for [`Sim::inject`]).
    pub tape: Option<Vec<(usize, Vec<u8>)>>,
    /// The store limits of nodes started from now on.
    pub limits: Limits,
}

impl Sim {
    /// `n` data nodes (ids 1..=n, fast profile, one key, synchronous replication).
    pub fn new(seed: u64, n: usize, net: NetParams) -> Sim {
        let now = Instant::from_millis(1);
        let mut sim = Sim {
            hosts: Vec::new(),
            net,
            rng: Rng::new(seed),
            now,
            seed,
            wire: BinaryHeap::new(),
            seq: 0,
            restarts: 0,
            delivered: 0,
            lost: 0,
            cut: 0,
            tape: None,
            limits: Limits::default(),
        };
        for i in 0..n {
            let engine = sim.engine(i);
            sim.hosts.push(Host {
                engine,
                up: true,
                released: Vec::new(),
                group: 0,
            });
        }
        sim
    }

    pub fn seed(&self) -> u64 {
        self.seed
    }

    fn engine(&mut self, i: usize) -> Engine {
        // A restarted node takes a higher incarnation, as the daemon does.
        let incarnation = 1000 + (i as u32) * 100 + self.restarts;
        engine_with(i as u16 + 1, incarnation, self.now, self.limits)
    }

    fn wall_ms(&self) -> u64 {
        WALL0 + self.now.as_micros() / 1000
    }

    /// Runs until virtual time `until`, jumping from event to event. Bounded: every step
    /// moves the clock forward by at least 1 µs.
    pub fn run_until(&mut self, until: Instant) {
        while self.now < until {
            self.turn();
            let next = self
                .hosts
                .iter()
                .filter(|h| h.up)
                .filter_map(|h| h.engine.poll_timeout())
                .chain(self.wire.peek().map(|Reverse(d)| d.at))
                .min()
                .unwrap_or(until);
            self.now = next.max(self.now + Duration::from_micros(1)).min(until);
        }
        self.turn();
    }

    pub fn run_for(&mut self, d: Duration) {
        let until = self.now + d;
        self.run_until(until);
    }

    /// Runs until `done` holds (checked after each step) or `limit` passes; whether it held.
    pub fn run_until_true(
        &mut self,
        limit: Duration,
        mut done: impl FnMut(&mut Sim) -> bool,
    ) -> bool {
        let until = self.now + limit;
        while self.now < until {
            if done(self) {
                return true;
            }
            let step = (self.now + Duration::from_millis(1)).min(until);
            self.run_until(step);
        }
        done(self)
    }

    /// One turn at `now`: deliver what arrived, then every live node fires its deadlines,
    /// releases replies and sends.
    fn turn(&mut self) {
        let wall = self.wall_ms();
        while self.wire.peek().is_some_and(|Reverse(d)| d.at <= self.now) {
            let Some(Reverse(mut d)) = self.wire.pop() else {
                break;
            };
            if let Some(h) = self.hosts.get_mut(d.to).filter(|h| h.up) {
                h.engine.handle_datagram(d.at, wall, &mut d.bytes);
            }
        }
        let mut buf = [0u8; crate::io::net::SLOT_BYTES];
        for i in 0..self.hosts.len() {
            let now = self.now;
            let h = &mut self.hosts[i];
            if !h.up {
                continue;
            }
            h.engine.handle_timeout(now, wall);
            // Expiry and tombstone ageing, as the event loop's sweep timer does.
            h.engine.sweep(wall, 64);
            while let Some((id, r)) = h.engine.poll_completion() {
                h.released.push((id, r.is_ok()));
            }
            h.engine.handle_writes(now);
            // Bounded: a node sends at most this many datagrams per turn.
            for _ in 0..10_000 {
                let Some(d) = self.hosts[i]
                    .engine
                    .poll_transmit(now, wall, &mut buf, true)
                else {
                    break;
                };
                let bytes = buf.get(..d.len).unwrap_or(&[]).to_vec();
                self.send(i, d.to, bytes);
            }
            while self.hosts[i].engine.poll_event().is_some() {}
        }
    }

    /// Delivers `bytes` to node `to` now, from nowhere (a replay of a recorded datagram).
    pub fn inject(&mut self, to: usize, bytes: Vec<u8>) {
        self.seq += 1;
        self.wire.push(Reverse(InFlight {
            at: self.now,
            seq: self.seq,
            to,
            bytes,
        }));
    }

    fn send(&mut self, from: usize, to: Dest, bytes: Vec<u8>) {
        if let Some(tape) = &mut self.tape {
            tape.push((from, bytes.clone()));
        }
        for j in 0..self.hosts.len() {
            let for_it = match to {
                Dest::All => j != from,
                Dest::Node(n) => usize::from(n.0) == j + 1,
            };
            if !for_it {
                continue;
            }
            if self.hosts[from].group != self.hosts[j].group {
                self.cut += 1;
                continue;
            }
            if self.rng.per_mille(self.net.loss_per_mille) {
                self.lost += 1;
                continue;
            }
            let (lo, hi) = self.net.delay_us;
            let at = self.now + Duration::from_micros(self.rng.range(lo, hi));
            self.seq += 1;
            self.delivered += 1;
            self.wire.push(Reverse(InFlight {
                at,
                seq: self.seq,
                to: j,
                bytes: bytes.clone(),
            }));
        }
    }

    /// A client SET on node `i` (0-based): the store first, then replication. Returns the
    /// held reply's id (synchronous mode), released once every live peer holds the write.
    pub fn set(&mut self, i: usize, key: &[u8], value: &[u8]) -> Option<ReplyTicket> {
        let wall = self.wall_ms();
        let (store, mut sink) = self.hosts[i].engine.client(wall);
        let rec = store.set_string(key, value, Expiry::Never, wall).ok()?;
        sink.submit(vec![rec])
    }

    /// A client DEL on node `i` (0-based), as [`Sim::set`].
    pub fn del(&mut self, i: usize, key: &[u8]) -> Option<ReplyTicket> {
        let wall = self.wall_ms();
        let (store, mut sink) = self.hosts[i].engine.client(wall);
        let rec = store.delete(key, wall)?;
        sink.submit(vec![rec])
    }

    /// The string value node `i` holds for `key`.
    pub fn get(&mut self, i: usize, key: &[u8]) -> Option<Vec<u8>> {
        let wall = self.wall_ms();
        let (store, _) = self.hosts[i].engine.client(wall);
        store
            .get(key, wall)
            .and_then(|e| e.value.string().map(|v| v.into_owned()))
    }

    /// kill -9 of node `i`: it stops; what it had in flight still arrives.
    pub fn kill(&mut self, i: usize) {
        self.hosts[i].up = false;
    }

    /// Node `i` starts again, empty, with a new incarnation.
    pub fn restart(&mut self, i: usize) {
        self.restarts += 1;
        let engine = self.engine(i);
        let h = &mut self.hosts[i];
        h.engine = engine;
        h.up = true;
        h.released.clear();
    }

    /// Puts each node in its group (index = node - 1); datagrams cross only within one.
    pub fn partition(&mut self, groups: &[u8]) {
        for (h, g) in self.hosts.iter_mut().zip(groups) {
            h.group = *g;
        }
    }

    pub fn heal(&mut self) {
        for h in &mut self.hosts {
            h.group = 0;
        }
    }

    /// Every live key of node `i` with its encoded value, sorted (the state-transfer walk;
    /// tombstones left out).
    pub fn dump(&self, i: usize) -> Vec<(Vec<u8>, Vec<u8>)> {
        let wall = self.wall_ms();
        let store = self.hosts[i].engine.store();
        let mut records = Vec::new();
        let mut cursor = 0;
        // Bounded: each step walks at least one hash bucket; 0 ends the walk.
        loop {
            cursor = store.sync_chunk(cursor, 1024, wall, &mut records);
            if cursor == 0 {
                break;
            }
        }
        let mut out: Vec<_> = records
            .into_iter()
            .filter(|r| r.op == tandem_core::frame::Op::Put)
            .map(|r| (r.key, r.value))
            .collect();
        out.sort();
        out
    }
}
