//! Drives several `Replicator`s over a seeded lossy, reordering, duplicating network on a
//! virtual clock. Frames are passed as owned copies of the Reprs (no bytes needed).

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::time::Duration;

use tandem_core::frame::{
    AckRepr, Body, EntryRepr, Op, RetransmitRequestRepr, SessionUpdateRepr, SyncChunkRepr,
    SyncDoneRepr, SyncRequestRepr,
};
use tandem_core::replication::{
    Config, Delivery, Dest, Error, Event, Replicator, Slot, SyncDelivery, MAX_CHUNK,
};
use tandem_core::testing::Rng;
use tandem_core::{Incarnation, Instant, NodeId};

#[derive(Clone, Debug, PartialEq, Eq)]
struct OwnedEntry {
    op: Op,
    version: u64,
    origin: NodeId,
    expires_at_ms: u64,
    key: Vec<u8>,
    total_len: u32,
    offset: u32,
    value: Vec<u8>,
}

impl OwnedEntry {
    fn from_repr(e: &EntryRepr<'_>) -> Self {
        OwnedEntry {
            op: e.op,
            version: e.version,
            origin: e.origin,
            expires_at_ms: e.expires_at_ms,
            key: e.key.to_vec(),
            total_len: e.total_len,
            offset: e.offset,
            value: e.value.to_vec(),
        }
    }
    fn repr(&self) -> EntryRepr<'_> {
        EntryRepr {
            op: self.op,
            version: self.version,
            origin: self.origin,
            expires_at_ms: self.expires_at_ms,
            key: &self.key,
            total_len: self.total_len,
            offset: self.offset,
            value: &self.value,
        }
    }
}

#[derive(Clone, Debug)]
enum Msg {
    Update(u64, OwnedEntry),
    Ack(AckRepr),
    Nak(RetransmitRequestRepr),
    SyncRequest(SyncRequestRepr),
    SyncChunk(NodeId, u32, u64, OwnedEntry),
    SyncDone(SyncDoneRepr),
    /// The `repl_hwm` of a heartbeat.
    Hwm(u64),
}

impl Msg {
    fn from_body(body: &Body<'_>) -> Msg {
        match body {
            Body::SessionUpdate(u) => Msg::Update(u.rseq, OwnedEntry::from_repr(&u.entry)),
            Body::Ack(a) => Msg::Ack(*a),
            Body::RetransmitRequest(r) => Msg::Nak(*r),
            Body::SyncRequest(r) => Msg::SyncRequest(*r),
            Body::SyncDone(d) => Msg::SyncDone(*d),
            other => panic!("replicator emitted unexpected body {other:?}"),
        }
    }
}

struct Packet {
    from: usize,
    from_inc: Incarnation,
    to: usize,
    msg: Msg,
}

struct Net {
    rng: Rng,
    loss: u64,
    dup: u64,
    latency_us: u64,
    jitter_us: u64,
    /// Per mille of packets delayed past later ones (links are FIFO otherwise).
    reorder: u64,
    /// Last arrival time per (from, to) link, for FIFO order.
    link_last: HashMap<(usize, usize), u64>,
    /// (arrival time, tie-break) -> packet
    queue: BinaryHeap<Reverse<(u64, u64)>>,
    packets: HashMap<u64, Packet>,
    counter: u64,
    /// Nodes cut off from everyone.
    partitioned: Vec<bool>,
}

impl Net {
    fn send(&mut self, now: Instant, p: Packet) {
        if self.partitioned[p.from] || self.partitioned[p.to] || self.rng.per_mille(self.loss) {
            return;
        }
        let copies = if self.rng.per_mille(self.dup) { 2 } else { 1 };
        for _ in 0..copies {
            let jitter = self.rng.below(self.jitter_us + 1);
            let late = self.rng.per_mille(self.reorder);
            let link = self.link_last.entry((p.from, p.to)).or_insert(0);
            let mut at = (now.as_micros() + self.latency_us + jitter).max(*link);
            *link = at;
            if late {
                at += 2 * self.latency_us;
            }
            self.counter += 1;
            self.queue.push(Reverse((at, self.counter)));
            self.packets.insert(
                self.counter,
                Packet {
                    from: p.from,
                    from_inc: p.from_inc,
                    to: p.to,
                    msg: p.msg.clone(),
                },
            );
        }
    }
    fn next_at(&self) -> Option<u64> {
        self.queue.peek().map(|r| r.0 .0)
    }
    fn pop_due(&mut self, now: Instant) -> Option<Packet> {
        let Reverse((at, id)) = *self.queue.peek()?;
        if at > now.as_micros() {
            return None;
        }
        self.queue.pop();
        self.packets.remove(&id)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Value {
    version: u64,
    origin: NodeId,
    deleted: bool,
    value: Vec<u8>,
}

/// Caller-side reassembly of a chunked value.
#[derive(Default)]
struct Partial(Option<OwnedEntry>);

impl Partial {
    /// Returns the whole entry once its last chunk arrived.
    fn push(&mut self, e: OwnedEntry) -> Option<OwnedEntry> {
        if e.offset == 0 && e.value.len() == e.total_len as usize {
            // Whole: may come between the parts of another value (sync), leave those be.
            return Some(e);
        }
        if e.offset == 0 {
            self.0 = Some(OwnedEntry {
                offset: 0,
                ..e.clone()
            });
        } else {
            match self.0.as_mut() {
                Some(p)
                    if p.key == e.key
                        && p.version == e.version
                        && p.value.len() == e.offset as usize =>
                {
                    p.value.extend_from_slice(&e.value)
                }
                // A skip in the stream lost the beginning: drop the partial value.
                _ => {
                    self.0 = None;
                    return None;
                }
            }
        }
        let done = self.0.as_ref()?.value.len() == e.total_len as usize;
        if done {
            self.0.take()
        } else {
            None
        }
    }
}

type Ring = Box<[Slot]>;

struct Node {
    id: NodeId,
    inc: Incarnation,
    r: Replicator<Ring, 4, Ring>,
    store: BTreeMap<Vec<u8>, Value>,
    clock: u64,
    /// Per origin: rseqs delivered, in delivery order.
    delivered: HashMap<NodeId, Vec<u64>>,
    stream_partial: HashMap<NodeId, Partial>,
    sync_partial: Partial,
    snapshots: HashMap<(NodeId, u32), Vec<OwnedEntry>>,
    events: Vec<Event>,
    /// Writes refused with Backpressure, retried later.
    backlog: Vec<(Vec<u8>, Op, Vec<u8>)>,
    /// Ids of accepted writes.
    write_ids: Vec<u64>,
    /// Whether the test should start a sync on NeedsSync.
    auto_sync: bool,
}

impl Node {
    fn deliver(&mut self, origin: NodeId, rseq: u64, e: OwnedEntry) {
        self.delivered.entry(origin).or_default().push(rseq);
        if let Some(whole) = self.stream_partial.entry(origin).or_default().push(e) {
            self.apply(&whole);
        }
    }

    fn apply(&mut self, e: &OwnedEntry) {
        self.clock = self.clock.max(e.version);
        let newer = self
            .store
            .get(&e.key)
            .is_none_or(|v| (e.version, e.origin) > (v.version, v.origin));
        if newer {
            self.store.insert(
                e.key.clone(),
                Value {
                    version: e.version,
                    origin: e.origin,
                    deleted: e.op == Op::Delete,
                    value: e.value.clone(),
                },
            );
        }
    }

    fn snapshot(&self) -> Vec<OwnedEntry> {
        let mut pieces = Vec::new();
        for (k, v) in &self.store {
            let op = if v.deleted { Op::Delete } else { Op::Put };
            let mut offset = 0;
            loop {
                let end = (offset + MAX_CHUNK).min(v.value.len());
                pieces.push(OwnedEntry {
                    op,
                    version: v.version,
                    origin: v.origin,
                    expires_at_ms: 0,
                    key: k.clone(),
                    total_len: v.value.len() as u32,
                    offset: offset as u32,
                    value: v.value[offset..end].to_vec(),
                });
                offset = end;
                if offset >= v.value.len() {
                    break;
                }
            }
        }
        pieces
    }
}

struct Sim {
    nodes: Vec<Node>,
    net: Net,
    now: Instant,
    /// live[i][j]: node i's membership considers node j live.
    live: Vec<Vec<bool>>,
    next_heartbeat: u64,
}

const HEARTBEAT_US: u64 = 1_000;

impl Sim {
    /// `reorder`: reorder buffer slots per node (0 = none).
    fn new(
        n: usize,
        ring: usize,
        reorder: usize,
        config: Config,
        seed: u64,
        loss: u64,
        dup: u64,
    ) -> Sim {
        let mut nodes = Vec::new();
        for i in 0..n {
            let id = NodeId(i as u16 + 1);
            let inc = Incarnation(1_700_000_000);
            nodes.push(Node {
                id,
                inc,
                r: Replicator::with_reorder(
                    id,
                    inc,
                    config,
                    vec![Slot::EMPTY; ring].into_boxed_slice(),
                    vec![Slot::EMPTY; reorder].into_boxed_slice(),
                ),
                store: BTreeMap::new(),
                clock: 0,
                delivered: HashMap::new(),
                stream_partial: HashMap::new(),
                sync_partial: Partial::default(),
                snapshots: HashMap::new(),
                events: Vec::new(),
                backlog: Vec::new(),
                write_ids: Vec::new(),
                auto_sync: true,
            });
        }
        let mut sim = Sim {
            nodes,
            net: Net {
                rng: Rng::new(seed | 1),
                loss,
                dup,
                latency_us: 50,
                jitter_us: 20,
                reorder: 20,
                link_last: HashMap::new(),
                queue: BinaryHeap::new(),
                packets: HashMap::new(),
                counter: 0,
                partitioned: vec![false; n],
            },
            now: Instant::from_millis(1),
            live: vec![vec![true; n]; n],
            next_heartbeat: 0,
        };
        for i in 0..n {
            for j in 0..n {
                if i != j {
                    let (id, inc) = (sim.nodes[j].id, sim.nodes[j].inc);
                    sim.nodes[i]
                        .r
                        .peer_up(sim.now, id, inc)
                        .expect("peer table holds 3 nodes");
                }
            }
        }
        sim
    }

    fn index(&self, id: NodeId) -> usize {
        usize::from(id.0) - 1
    }

    fn live_peers(&self, i: usize) -> Vec<NodeId> {
        (0..self.nodes.len())
            .filter(|&j| j != i && self.live[i][j])
            .map(|j| self.nodes[j].id)
            .collect()
    }

    /// Node `i` takes a client write (Delete when `value` is None).
    fn write(&mut self, i: usize, key: &[u8], value: Option<&[u8]>) {
        let op = if value.is_some() { Op::Put } else { Op::Delete };
        self.nodes[i]
            .backlog
            .push((key.to_vec(), op, value.unwrap_or(&[]).to_vec()));
        self.drain_backlog(i);
    }

    fn drain_backlog(&mut self, i: usize) {
        let now = self.now;
        let node = &mut self.nodes[i];
        while let Some((key, op, value)) = node.backlog.first().cloned() {
            let version = node.clock + 1;
            let e = OwnedEntry {
                op,
                version,
                origin: node.id,
                expires_at_ms: 0,
                total_len: 0,
                offset: 0,
                key,
                value,
            };
            match node.r.write(now, &e.repr()) {
                Ok(id) => {
                    node.clock = version;
                    node.write_ids.push(id.0);
                    node.apply(&OwnedEntry {
                        total_len: e.value.len() as u32,
                        ..e
                    });
                    node.backlog.remove(0);
                }
                Err(Error::Backpressure) => break,
                Err(err) => panic!("write refused: {err:?}"),
            }
        }
    }

    /// Runs every output of node `i` until it has nothing more to say.
    fn pump(&mut self, i: usize) {
        let now = self.now;
        loop {
            let mut busy = false;
            while let Some(ev) = self.nodes[i].r.poll_event() {
                busy = true;
                self.nodes[i].events.push(ev);
                match ev {
                    Event::SyncServeStarted { to, sync_id } => {
                        let snap = self.nodes[i].snapshot();
                        self.nodes[i].snapshots.insert((to, sync_id), snap);
                    }
                    Event::SyncServeEnded { to, sync_id } => {
                        self.nodes[i].snapshots.remove(&(to, sync_id));
                    }
                    Event::NeedsSync { origin } => {
                        if self.nodes[i].auto_sync && self.nodes[i].r.syncing().is_none() {
                            self.nodes[i].r.start_sync(now, origin);
                        }
                    }
                    Event::SyncFailed { target, .. } => {
                        self.nodes[i].r.start_sync(now, target);
                    }
                    Event::SyncComplete { .. } => {}
                }
            }
            while let Some(t) = self.nodes[i].r.poll_transmit(now) {
                busy = true;
                let msg = Msg::from_body(&t.body);
                let to = t.to;
                let from_inc = self.nodes[i].inc;
                let dests: Vec<usize> = match to {
                    Dest::All => (0..self.nodes.len()).filter(|&j| j != i).collect(),
                    Dest::Node(id) => vec![self.index(id)],
                };
                for to in dests {
                    self.net.send(
                        now,
                        Packet {
                            from: i,
                            from_inc,
                            to,
                            msg: msg.clone(),
                        },
                    );
                }
            }
            while let Some(s) = self.nodes[i].r.poll_sync_send(now) {
                busy = true;
                let piece = self.nodes[i]
                    .snapshots
                    .get(&(s.to, s.sync_id))
                    .and_then(|snap| snap.get(s.index as usize).cloned());
                match piece {
                    Some(e) => {
                        let msg = Msg::SyncChunk(s.to, s.sync_id, s.index, e);
                        let from_inc = self.nodes[i].inc;
                        let to = self.index(s.to);
                        self.net.send(
                            now,
                            Packet {
                                from: i,
                                from_inc,
                                to,
                                msg,
                            },
                        );
                    }
                    None => {
                        let total = self.nodes[i]
                            .snapshots
                            .get(&(s.to, s.sync_id))
                            .map_or(0, |snap| snap.len() as u64);
                        self.nodes[i].r.sync_exhausted(s.to, s.sync_id, total);
                    }
                }
            }
            if !busy {
                break;
            }
        }
    }

    fn receive(&mut self, p: Packet) {
        let now = self.now;
        let from = self.nodes[p.from].id;
        let node = &mut self.nodes[p.to];
        match p.msg {
            Msg::Update(rseq, e) => {
                let d = node.r.handle_update(
                    now,
                    from,
                    p.from_inc,
                    &SessionUpdateRepr {
                        rseq,
                        entry: e.repr(),
                    },
                );
                if d == Delivery::Deliver {
                    node.deliver(from, rseq, e);
                    while let Some((origin, u)) = node.r.poll_delivery() {
                        let (rseq, e) = (u.rseq, OwnedEntry::from_repr(&u.entry));
                        node.deliver(origin, rseq, e);
                    }
                }
            }
            Msg::Ack(a) => node.r.handle_ack(now, from, &a),
            Msg::Nak(r) => node.r.handle_retransmit_request(now, from, &r),
            Msg::SyncRequest(r) => node.r.handle_sync_request(now, from, p.from_inc, &r),
            Msg::SyncChunk(target, sync_id, index, e) => {
                let chunk = SyncChunkRepr {
                    target,
                    sync_id,
                    index,
                    entry: e.repr(),
                };
                if node.r.handle_sync_chunk(now, from, &chunk) == SyncDelivery::Apply {
                    if let Some(whole) = node.sync_partial.push(e) {
                        node.apply(&whole);
                    }
                }
            }
            Msg::SyncDone(d) => node.r.handle_sync_done(now, from, p.from_inc, &d),
            Msg::Hwm(h) => node.r.handle_hwm(now, from, p.from_inc, h),
        }
    }

    /// One step: pump outputs, advance the clock to the next thing, process it.
    fn step(&mut self) {
        for i in 0..self.nodes.len() {
            self.drain_backlog(i);
            self.pump(i);
        }
        let mut next = self.next_heartbeat;
        if let Some(t) = self.net.next_at() {
            next = next.min(t);
        }
        for n in &self.nodes {
            if let Some(t) = n.r.poll_timeout() {
                next = next.min(t.as_micros());
            }
        }
        self.now = Instant::from_micros(next.max(self.now.as_micros()));
        while let Some(p) = self.net.pop_due(self.now) {
            self.receive(p);
        }
        for n in &mut self.nodes {
            if n.r.poll_timeout().is_some_and(|t| t <= self.now) {
                n.r.handle_timeout(self.now);
            }
        }
        if self.now.as_micros() >= self.next_heartbeat {
            self.next_heartbeat = self.now.as_micros() + HEARTBEAT_US;
            for i in 0..self.nodes.len() {
                for j in 0..self.nodes.len() {
                    if i != j {
                        let p = Packet {
                            from: i,
                            from_inc: self.nodes[i].inc,
                            to: j,
                            msg: Msg::Hwm(self.nodes[i].r.hwm()),
                        };
                        self.net.send(self.now, p);
                    }
                }
            }
        }
    }

    fn run_until(&mut self, limit: Instant, mut done: impl FnMut(&Sim) -> bool) {
        loop {
            for i in 0..self.nodes.len() {
                self.drain_backlog(i);
                self.pump(i);
            }
            if done(self) {
                break;
            }
            assert!(self.now < limit, "simulation did not converge by {limit:?}");
            self.step();
        }
    }

    /// Every write accepted, delivered and committed everywhere.
    fn quiescent(&self) -> bool {
        (0..self.nodes.len()).all(|i| {
            let n = &self.nodes[i];
            n.backlog.is_empty()
                && n.r.syncing().is_none()
                && n.r.committed(self.live_peers(i)) == n.r.written()
                && self
                    .nodes
                    .iter()
                    .enumerate()
                    .filter(|&(j, _)| j != i && self.live[j][i])
                    .all(|(_, m)| m.r.delivered(n.id) == n.r.written())
        })
    }

    fn assert_stores_equal(&self) {
        for n in &self.nodes[1..] {
            assert_eq!(n.store.len(), self.nodes[0].store.len());
            assert!(
                n.store == self.nodes[0].store,
                "stores of {:?} and {:?} differ",
                n.id,
                self.nodes[0].id
            );
        }
    }
}

fn random_value(rng: &mut Rng, max: usize) -> Vec<u8> {
    let len = rng.below(max as u64 + 1) as usize;
    (0..len).map(|_| rng.next_u64() as u8).collect()
}

/// Three nodes write concurrently over a lossy network; every write reaches every peer
/// exactly once, in order, and is committed.
fn stream_run(loss: u64, reorder: usize, seed: u64) {
    let mut sim = Sim::new(3, 256, reorder, Config::default(), seed, loss, 20);
    let mut rng = Rng::new(seed.wrapping_mul(7) | 1);
    let writes = 150;
    for k in 0..writes {
        for i in 0..3 {
            let key = format!("s{}", rng.below(40)).into_bytes();
            if rng.per_mille(100) {
                sim.write(i, &key, None);
            } else {
                let v = random_value(&mut rng, 3 * MAX_CHUNK);
                sim.write(i, &key, Some(&v));
            }
        }
        // A few steps between rounds so writes overlap with traffic.
        for _ in 0..(k % 5) {
            sim.step();
        }
    }
    let limit = sim.now + Duration::from_secs(30);
    sim.run_until(limit, Sim::quiescent);
    for n in &sim.nodes {
        for m in &sim.nodes {
            if n.id == m.id {
                continue;
            }
            let log = n.delivered.get(&m.id).cloned().unwrap_or_default();
            let expected: Vec<u64> = (1..=m.r.written()).collect();
            assert_eq!(
                log, expected,
                "{:?} delivered {:?}'s stream out of order or twice",
                n.id, m.id
            );
        }
        assert_eq!(n.write_ids.len(), writes);
        let last = *n.write_ids.last().expect("writes were made");
        let live = sim.live_peers(sim.index(n.id));
        assert!(n.r.committed(live) >= last);
    }
    sim.assert_stores_equal();
    let resent: u64 = sim.nodes.iter().map(|n| n.r.stats().retransmits).sum();
    eprintln!(
        "stream, loss {loss}/1000, reorder buffer {reorder}: {resent} chunks resent, {:?}",
        sim.nodes.iter().map(|n| n.r.stats()).collect::<Vec<_>>()
    );
    if loss > 0 {
        let resent: u64 = sim.nodes.iter().map(|n| n.r.stats().retransmits).sum();
        assert!(resent > 0, "loss {loss} but nothing was retransmitted");
    }
}

#[test]
fn stream_no_loss() {
    stream_run(0, 64, 1);
}

#[test]
fn stream_5_percent_loss() {
    stream_run(50, 64, 2);
}

#[test]
fn stream_20_percent_loss() {
    stream_run(200, 64, 3);
}

#[test]
fn stream_20_percent_loss_without_reorder_buffer() {
    stream_run(200, 0, 4);
}

#[test]
fn large_values_reassemble_5_percent_loss() {
    large_values(50, 11);
}

#[test]
fn large_values_reassemble_20_percent_loss() {
    large_values(200, 12);
}

fn large_values(loss: u64, seed: u64) {
    let mut sim = Sim::new(2, 300, 128, Config::default(), seed, loss, 10);
    let mut rng = Rng::new(99);
    let mut values = Vec::new();
    for k in 0..3 {
        let v: Vec<u8> = (0..256 * 1024).map(|_| rng.next_u64() as u8).collect();
        let key = format!("big{k}").into_bytes();
        sim.write(0, &key, Some(&v));
        values.push((key, v));
    }
    let start = sim.now;
    let limit = sim.now + Duration::from_secs(30);
    sim.run_until(limit, Sim::quiescent);
    eprintln!(
        "3 x 256 KiB at {loss}/1000 loss: replicated in {:?} virtual, {:?}",
        sim.now - start,
        sim.nodes[0].r.stats()
    );
    for (key, v) in &values {
        let got = &sim.nodes[1].store.get(key).expect("value replicated").value;
        assert_eq!(got.len(), v.len());
        assert!(got == v, "value {key:?} differs after reassembly");
    }
    sim.assert_stores_equal();
}

#[test]
fn ring_overflow_falls_back_to_sync() {
    let mut sim = Sim::new(3, 32, 16, Config::default(), 21, 50, 10);
    for k in 0..20 {
        sim.write(0, format!("k{k}").as_bytes(), Some(b"before"));
    }
    let limit = sim.now + Duration::from_secs(10);
    sim.run_until(limit, Sim::quiescent);
    // Node 3 drops off the network; the others declare it dead.
    sim.net.partitioned[2] = true;
    for i in 0..2 {
        sim.live[i][2] = false;
        sim.nodes[i].r.peer_down(NodeId(3));
    }
    for k in 0..300 {
        sim.write(
            0,
            format!("k{}", k % 100).as_bytes(),
            Some(format!("v{k}").as_bytes()),
        );
        sim.step();
    }
    let limit = sim.now + Duration::from_secs(10);
    sim.run_until(limit, |s| {
        s.nodes[0].backlog.is_empty() && s.nodes[1].r.delivered(NodeId(1)) == s.nodes[0].r.written()
    });
    // It comes back: its stream from node 1 is far older than node 1's ring.
    sim.net.partitioned[2] = false;
    for i in 0..2 {
        sim.live[i][2] = true;
        let inc = sim.nodes[2].inc;
        sim.nodes[i]
            .r
            .peer_up(sim.now, NodeId(3), inc)
            .expect("peer table holds 3 nodes");
    }
    let limit = sim.now + Duration::from_secs(10);
    sim.run_until(limit, |s| {
        s.quiescent()
            && s.nodes[2]
                .events
                .iter()
                .any(|e| matches!(e, Event::SyncComplete { .. }))
    });
    assert!(sim.nodes[2]
        .events
        .contains(&Event::NeedsSync { origin: NodeId(1) }));
    assert!(sim.nodes[0].r.stats().too_old_sent > 0);
    sim.assert_stores_equal();
}

fn big_sync(loss: u64, seed: u64) {
    let mut sim = Sim::new(2, 64, 32, Config::default(), seed, loss, 10);
    // Node 1 already holds 10,000 sessions; node 2 starts empty and pulls them.
    for k in 0..10_000u32 {
        let n = &mut sim.nodes[0];
        n.clock += 1;
        let e = OwnedEntry {
            op: Op::Put,
            version: n.clock,
            origin: NodeId(if k % 3 == 0 { 3 } else { 1 }),
            expires_at_ms: 0,
            key: format!("session:{k}").into_bytes(),
            total_len: 40,
            offset: 0,
            value: vec![k as u8; 40],
        };
        n.apply(&e);
    }
    let id = sim.start_sync_on(1, NodeId(1));
    let mut rng = Rng::new(seed ^ 0x55);
    // Writes on both nodes during the transfer, some to keys being transferred.
    let mut k = 0;
    while sim.nodes[1].r.syncing().is_some() {
        if k < 400 {
            let i = (k % 2) as usize;
            let key = format!("session:{}", rng.below(12_000)).into_bytes();
            let v = random_value(&mut rng, 100);
            sim.write(i, &key, Some(&v));
            k += 1;
        }
        sim.step();
        assert!(
            sim.now < Instant::from_millis(60_000),
            "sync did not finish"
        );
    }
    let synced_at = sim.now;
    let limit = sim.now + Duration::from_secs(30);
    sim.run_until(limit, Sim::quiescent);
    eprintln!("synced at {synced_at:?}");
    eprintln!(
        "virtual time {:?}, events {:?}, stats {:?} {:?}",
        sim.now,
        &sim.nodes[1].events,
        sim.nodes[0].r.stats(),
        sim.nodes[1].r.stats()
    );
    assert!(sim.nodes[1].events.iter().any(|e| matches!(
        e,
        Event::SyncComplete { target: NodeId(1), sync_id, .. } if *sync_id == id
    )));
    assert!(sim.nodes[1].store.len() >= 10_000);
    sim.assert_stores_equal();
}

impl Sim {
    fn start_sync_on(&mut self, i: usize, target: NodeId) -> u32 {
        self.nodes[i].r.start_sync(self.now, target)
    }
}

#[test]
fn sync_10k_entries_no_loss() {
    big_sync(0, 31);
}

#[test]
fn sync_10k_entries_20_percent_loss_with_writes() {
    big_sync(200, 32);
}
