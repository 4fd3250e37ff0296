//! The replicated session store: the [`Store`] plus everything that ties it to the core's
//! replication — local writes going out, peers' writes coming in (reassembled from chunks),
//! synchronous acknowledgement, and full state transfer in both directions.
//!
//! # Writes
//! A client command changes the store first, then its records go to the outbox
//! ([`Sink::submit`]). [`Sessions::flush`] moves the outbox into the core's replication ring
//! (stopping at back-pressure, resuming as acks free the ring). In synchronous mode (default)
//! the client's reply is held until the core reports every live data peer holds the write
//! ([`Node::committed`](tandem_core::node::Node::committed)); a peer declared dead stops counting, so writes never wait forever,
//! and `tandem_unreplicated` shows when no peer holds them. Asynchronous mode replies at once.
//! The outbox is bounded by the clients: in sync mode each connection has at most
//! `max_held_per_connection` commands and `max_held_bytes_per_connection` record bytes (or
//! one command) in flight (see [`crate::resp::server`]); in async mode the ring may overwrite
//! unacked chunks (a lagging peer then recovers by full sync), so the outbox drains at the
//! send rate.
//!
//! # Reads from peers
//! Stream entries arrive in each origin's order; a value larger than one datagram arrives as
//! consecutive chunks and is reassembled here (bounded by the wire's `MAX_VALUE_LEN`: a larger
//! one is refused and counted, never allocated; the store then refuses a value over
//! `max_value_bytes`). Entries merge into the store by the convergence rule of
//! [`crate::engine::value`], so stream entries and sync entries commute.
//!
//! # State transfer
//! A data node starts `syncing`: when it first sees a live data peer it pulls that peer's
//! full state, and `/health` is 503 until the transfer completes (writes made meanwhile
//! reach it through the stream). A node that sees no data peer within one detection span
//! after start is alone and synced. A transfer that fails restarts from another live peer;
//! if none is left the node serves what it holds (logged). When a peer's stream has a gap
//! older than its retransmit ring (`NeedsSync`), the node pulls that peer's state again.
//! Serving: the store is copied in key-hash order step by step (1024 records at a time) as
//! the core's flow control asks for chunks, so a large store never stalls the loop; the
//! core's [`SyncPacer`](tandem_core::replication::SyncPacer) paces them (50,000 chunks/s) so
//! a transfer never starves heartbeats on either end. Which chunks a record becomes and how
//! a peer's chunks join again ([`Reassembly`]) is the core's too; the bytes are kept here. The copy lives until the transfer ends and is freed off the loop.
//!
//! Panics: never on peer input.

use std::collections::{HashMap, VecDeque};

use tandem_core::frame::{EntryRepr, SyncChunkRepr, MAX_VALUE_LEN};
use tandem_core::node::Event as CoreEvent;
use tandem_core::replication::{
    self, chunk_at, chunk_offsets, is_whole, Part, Reassembly, SyncSend,
};
use tandem_core::{membership, Instant, NodeId};
use tracing::{debug, info, warn};

use crate::engine::node::CoreNode;
use crate::engine::store::{Replicate, Store, StoreError};
use crate::engine::writes::{ReplicationMode, ReplyTicket, WriteFailure, WriteSink};

/// Counters for `/metrics` and INFO.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SessionStats {
    /// Peer entries stored (newer than what we held).
    pub remote_applied: u64,
    /// Peer entries older than what we held (last-writer-wins kept ours).
    pub remote_stale: u64,
    /// Peer entries refused: over our memory bounds.
    pub remote_oom: u64,
    /// Peer entries refused: bad value encoding, or chunks out of order / over the bound.
    pub remote_malformed: u64,
    /// Local records handed to replication.
    pub writes_replicated: u64,
    /// Held replies released after every live peer acknowledged.
    pub writes_committed: u64,
    /// Held replies failed because quorum was lost.
    pub writes_failed: u64,
    pub syncs_started: u64,
    pub syncs_completed: u64,
    pub syncs_failed: u64,
    pub syncs_served: u64,
    pub sync_chunks_sent: u64,
}

/// Where this node stands on holding the cluster's full state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncState {
    /// Started; no data peer seen yet (alone after `alone_after`).
    Waiting { alone_after: Instant },
    /// Pulling the full state from `target`.
    Pulling { target: NodeId },
    /// Holds the full state (or is alone).
    Synced,
}

/// A value being reassembled from chunks: the core checks the order, the bytes are joined
/// here (bounded by `max_value_bytes`).
#[derive(Debug, Default)]
struct Partial {
    parts: Reassembly,
    value: Vec<u8>,
}

/// A store copy being served to one requester, copied step by step as the transfer asks
/// for chunks, so serving a large store never stalls the loop (copying 100,000 sessions at
/// once took ~270 ms). Each step copies into a segment of its own: no step reallocates or
/// moves what earlier steps copied (a vector of 100,000 records, reserved or grown, cost one
/// step 12 ms of page faults and copying at the start of a transfer: a false death on `fast`).
#[derive(Debug, Default)]
struct Snapshot {
    /// Copied records in key-hash order, one segment per step.
    segments: Vec<Segment>,
    /// Chunks planned so far: the index the next segment starts at.
    chunks: u64,
    /// Records copied so far.
    records: usize,
    /// Where the next copy step starts in the store's key-hash order.
    cursor: u64,
    /// The walk reached the end of the store.
    done: bool,
}

#[derive(Debug)]
struct Segment {
    /// Index of this segment's first chunk in the transfer.
    first: u64,
    records: Vec<Replicate>,
    /// Chunk (from `first` on) -> (record in this segment, byte offset).
    chunks: Vec<(u32, u32)>,
}

impl Snapshot {
    /// Copies the next [`SNAPSHOT_BATCH`] records of `store` and plans their chunks. A key
    /// present for the whole transfer is copied once; keys written after it started reach the
    /// requester through the replication stream (past `SyncDone.rseq`), so they need not be here.
    fn extend(&mut self, store: &Store, now_ms: u64) {
        if self.done {
            return;
        }
        let mut records = Vec::with_capacity(SNAPSHOT_BATCH);
        self.cursor = store.sync_chunk(self.cursor, SNAPSHOT_BATCH, now_ms, &mut records);
        self.done = self.cursor == 0;
        let mut chunks = Vec::with_capacity(records.len());
        for (i, r) in records.iter().enumerate() {
            for offset in chunk_offsets(r.value.len()) {
                // Record counts and value offsets fit u32: a segment holds about
                // SNAPSHOT_BATCH records and values are at most MAX_VALUE_LEN.
                chunks.push((i as u32, offset as u32));
            }
        }
        if records.is_empty() {
            return;
        }
        let first = self.chunks;
        self.chunks += chunks.len() as u64;
        self.records += records.len();
        self.segments.push(Segment {
            first,
            records,
            chunks,
        });
    }

    /// Chunk `index`: its record and byte offset, if copied already.
    fn chunk(&self, index: u64) -> Option<(&Replicate, u32)> {
        let seg = self
            .segments
            .partition_point(|s| s.first <= index)
            .checked_sub(1)?;
        let s = self.segments.get(seg)?;
        let &(rec, offset) = s.chunks.get(usize::try_from(index - s.first).ok()?)?;
        Some((s.records.get(rec as usize)?, offset))
    }
}

/// The replicated store of one data node.
pub struct Sessions {
    pub store: Store,
    mode: ReplicationMode,
    max_value: usize,
    witness: bool,
    outbox: VecDeque<(Replicate, Option<ReplyTicket>)>,
    /// Held replies with the rseq their last record got (in write order).
    pending: VecDeque<(ReplyTicket, u64)>,
    /// Held replies whose records are still in the outbox.
    next_write: u64,
    stream_partial: HashMap<NodeId, Partial>,
    sync_partial: HashMap<NodeId, Partial>,
    snapshots: HashMap<(NodeId, u32), Snapshot>,
    /// Segments of served snapshots, freed a few per turn ([`Sessions::on_tick`]).
    retired: Vec<Segment>,
    sync: SyncState,
    stats: SessionStats,
    /// Releases due after the last [`Sessions::flush`], for the RESP server.
    completed: Vec<(ReplyTicket, Result<(), WriteFailure>)>,
    /// When `completed` last gained an entry (a due deadline while it is not empty).
    completed_at: Instant,
    /// Completions of the last [`Sessions::take_completed`] not yet delivered to the RESP
    /// server ([`WriteSink::completions_left`]).
    delivering: usize,
}

/// Records per state-transfer copy step (bounds one loop turn's work while copying: 256
/// records of 1 KiB take about 100 µs, well within the loop's slice).
const SNAPSHOT_BATCH: usize = 256;
/// Longest a turn spends freeing served snapshots (about 4,000 records).
const RETIRE_SLICE: std::time::Duration = std::time::Duration::from_micros(200);

impl Sessions {
    pub fn new(
        store: Store,
        mode: ReplicationMode,
        witness: bool,
        now: Instant,
        detection_span: std::time::Duration,
    ) -> Sessions {
        // A hash's encoding adds framing per field to the bytes `max_value_bytes` bounds: the
        // store refuses what is too large once decoded, the wire bound holds here.
        let max_value = MAX_VALUE_LEN as usize;
        Sessions {
            store,
            mode,
            max_value,
            witness,
            outbox: VecDeque::new(),
            pending: VecDeque::new(),
            next_write: 0,
            stream_partial: HashMap::new(),
            sync_partial: HashMap::new(),
            snapshots: HashMap::new(),
            retired: Vec::new(),
            sync: if witness {
                SyncState::Synced
            } else {
                SyncState::Waiting {
                    alone_after: now + detection_span,
                }
            },
            stats: SessionStats::default(),
            completed: Vec::new(),
            completed_at: now,
            delivering: 0,
        }
    }

    pub fn synced(&self) -> bool {
        self.sync == SyncState::Synced
    }

    pub fn sync_state(&self) -> SyncState {
        self.sync
    }

    pub fn stats(&self) -> &SessionStats {
        &self.stats
    }

    /// Replies waiting for replication.
    pub fn held(&self) -> usize {
        self.pending.len() + self.outbox.iter().filter(|(_, w)| w.is_some()).count()
    }

    pub fn outbox_len(&self) -> usize {
        self.outbox.len()
    }

    /// The store and the sink the RESP server needs, borrowed together.
    pub fn split(&mut self, now_ms: u64, isolated: bool) -> (&mut Store, Sink<'_>) {
        (
            &mut self.store,
            Sink {
                now_ms,
                isolated,
                mode: self.mode,
                outbox: &mut self.outbox,
                next_write: &mut self.next_write,
                replicated: &mut self.stats.writes_replicated,
                delivering: &mut self.delivering,
            },
        )
    }

    // ---- entries from peers ----

    /// A stream entry (in order) from `from`.
    pub fn apply_stream(&mut self, from: NodeId, e: &EntryRepr<'_>, now_ms: u64) {
        if let Some(whole) = reassemble(
            &mut self.stream_partial,
            from,
            e,
            self.max_value,
            &mut self.stats,
        ) {
            self.apply_partial(&whole, now_ms);
        } else if is_whole(e) {
            self.apply(e, now_ms);
        }
    }

    /// A state-transfer entry from `from`. Whole entries may arrive between the parts of a
    /// large one: they apply at once without disturbing the partial value.
    pub fn apply_sync(&mut self, from: NodeId, e: &EntryRepr<'_>, now_ms: u64) {
        if is_whole(e) {
            self.apply(e, now_ms);
        } else if let Some(whole) = reassemble(
            &mut self.sync_partial,
            from,
            e,
            self.max_value,
            &mut self.stats,
        ) {
            self.apply_partial(&whole, now_ms);
        }
    }

    fn apply_partial(&mut self, p: &Partial, now_ms: u64) {
        if let Some(e) = p.parts.entry(&p.value) {
            self.apply(&e, now_ms);
        }
    }

    fn apply(&mut self, e: &EntryRepr<'_>, now_ms: u64) {
        match self.store.apply_remote(e, now_ms) {
            Ok(crate::engine::store::Applied::Stored) => self.stats.remote_applied += 1,
            Ok(crate::engine::store::Applied::Stale) => self.stats.remote_stale += 1,
            Err(StoreError::OutOfMemory | StoreError::ValueTooLarge) => {
                self.stats.remote_oom += 1;
                warn!(
                    origin = e.origin.0,
                    version = e.version,
                    "replicated session refused: over this node's memory bounds"
                );
            }
            Err(StoreError::Malformed) => {
                self.stats.remote_malformed += 1;
                warn!(
                    origin = e.origin.0,
                    "replicated session with a bad value encoding"
                );
            }
        }
    }

    // ---- core events ----

    /// Reacts to the core's events: starts, restarts and finishes state transfers.
    pub fn on_core_event(&mut self, node: &mut CoreNode, ev: CoreEvent, now: Instant) {
        if self.witness {
            return;
        }
        match ev {
            CoreEvent::Membership(
                membership::Event::MemberUp { node: peer, .. }
                | membership::Event::MemberRejoined { node: peer, .. },
            ) => {
                if matches!(self.sync, SyncState::Waiting { .. }) && is_data_peer(node, peer) {
                    self.start_sync(node, peer, now);
                }
            }
            CoreEvent::Membership(_) => {}
            CoreEvent::Replication(r) => self.on_replication_event(node, r, now),
        }
    }

    fn on_replication_event(&mut self, node: &mut CoreNode, ev: replication::Event, now: Instant) {
        use replication::Event as R;
        match ev {
            R::SyncComplete { target, chunks, .. } => {
                self.stats.syncs_completed += 1;
                self.sync_partial.remove(&target);
                info!(
                    from = target.0,
                    chunks,
                    sessions = self.store.len(),
                    "state transfer complete; synced"
                );
                self.set_synced(node);
            }
            R::SyncFailed { target, reason, .. } => {
                self.stats.syncs_failed += 1;
                self.sync_partial.remove(&target);
                warn!(from = target.0, ?reason, "state transfer failed");
                match pick_peer(node, Some(target)).or_else(|| pick_peer(node, None)) {
                    Some(p) => self.start_sync(node, p, now),
                    None => {
                        warn!("no live data peer left to sync from; serving what this node holds");
                        self.set_synced(node);
                    }
                }
            }
            R::NeedsSync { origin } => {
                if !matches!(self.sync, SyncState::Pulling { .. }) {
                    info!(
                        origin = origin.0,
                        "stream gap older than the peer's ring: full sync"
                    );
                    self.start_sync(node, origin, now);
                }
            }
            R::SyncServeStarted { to, sync_id } => {
                self.stats.syncs_served += 1;
                info!(
                    to = to.0,
                    sync_id,
                    sessions = self.store.len(),
                    "serving a state transfer"
                );
                // A restarted transfer with the same id starts a new copy.
                if let Some(old) = self.snapshots.insert((to, sync_id), Snapshot::default()) {
                    self.retired.extend(old.segments);
                }
            }
            R::SyncServeEnded { to, sync_id } => {
                debug!(to = to.0, sync_id, "state transfer served");
                if let Some(snap) = self.snapshots.remove(&(to, sync_id)) {
                    self.retired.extend(snap.segments);
                }
            }
        }
    }

    /// Called every loop turn: a node that waited one detection span without seeing a data
    /// peer is alone, hence synced.
    pub fn on_tick(&mut self, node: &mut CoreNode, now: Instant) {
        // Freeing a served copy of a large store at once (one free per record) takes
        // milliseconds: a bounded slice per turn instead. (Not another thread: the allocator
        // hands blocks freed there back to this thread to collect, in one go.)
        let start = std::time::Instant::now();
        while let Some(segment) = self.retired.pop() {
            drop(segment);
            if start.elapsed() >= RETIRE_SLICE {
                break;
            }
        }
        if let SyncState::Waiting { alone_after } = self.sync {
            if let Some(p) = pick_peer(node, None) {
                self.start_sync(node, p, now);
            } else if now >= alone_after {
                info!("no data peer seen after one detection span: alone, synced");
                self.set_synced(node);
            }
        }
    }

    /// The next instant `on_tick` has work, or, while completions wait for
    /// [`Sessions::take_completed`], the instant they became due (so the loop does not sleep
    /// on them).
    pub fn poll_timeout(&self) -> Option<Instant> {
        if !self.completed.is_empty() {
            return Some(self.completed_at);
        }
        match self.sync {
            SyncState::Waiting { alone_after } => Some(alone_after),
            _ => None,
        }
    }

    fn start_sync(&mut self, node: &mut CoreNode, target: NodeId, now: Instant) {
        self.stats.syncs_started += 1;
        let id = node.start_sync(now, target);
        info!(
            from = target.0,
            sync_id = id,
            "pulling the full session state"
        );
        self.sync = SyncState::Pulling { target };
        node.set_flags(tandem_core::frame::StateFlags(
            tandem_core::frame::StateFlags::SYNCING,
        ));
    }

    fn set_synced(&mut self, node: &mut CoreNode) {
        self.sync = SyncState::Synced;
        node.set_flags(tandem_core::frame::StateFlags::default());
    }

    // ---- outgoing ----

    /// Moves the outbox into the replication ring, then collects held replies that are now
    /// safe (every live data peer holds them) or must fail (quorum lost).
    pub fn flush(&mut self, node: &mut CoreNode, now: Instant) {
        let before = self.completed.len();
        while let Some((rec, held)) = self.outbox.front() {
            match node.write(now, &rec.entry()) {
                Ok(id) => {
                    if let Some(w) = *held {
                        self.pending.push_back((w, id.0));
                    }
                    self.outbox.pop_front();
                }
                Err(replication::Error::Backpressure) => break,
                Err(e) => {
                    // KeyTooLong/TooLarge cannot happen for records the store accepted (keys
                    // and values are bounded below the wire limits); PeerTableFull neither.
                    // Drop the record rather than wedge the outbox, and say so.
                    warn!(error = ?e, "a write could not be replicated");
                    if let Some(w) = *held {
                        self.completed.push((w, Ok(())));
                    }
                    self.outbox.pop_front();
                }
            }
        }
        let isolated = node.membership().isolated();
        let committed = node.committed();
        while let Some(&(w, rseq)) = self.pending.front() {
            if isolated {
                self.stats.writes_failed += 1;
                self.completed.push((w, Err(WriteFailure::Isolated)));
            } else if rseq <= committed {
                self.stats.writes_committed += 1;
                self.completed.push((w, Ok(())));
            } else {
                break;
            }
            self.pending.pop_front();
        }
        if self.completed.len() > before {
            self.completed_at = now;
        }
    }

    /// Held replies to release now (from the last [`Sessions::flush`]).
    pub fn take_completed(&mut self) -> Vec<(ReplyTicket, Result<(), WriteFailure>)> {
        self.delivering = self.completed.len();
        std::mem::take(&mut self.completed)
    }

    /// Builds the chunk a transfer asks for (the snapshot is taken now if its start event
    /// has not been seen yet).
    pub fn sync_chunk(&mut self, s: &SyncSend, now_ms: u64) -> SyncChunk<'_> {
        let snap = self.snapshots.entry((s.to, s.sync_id)).or_default();
        // Bounded: every step copies at least one record or ends the walk.
        while s.index >= snap.chunks && !snap.done {
            snap.extend(&self.store, now_ms);
        }
        let snap = &*snap;
        let Some((r, offset)) = snap.chunk(s.index) else {
            return SyncChunk::Exhausted(snap.chunks);
        };
        self.stats.sync_chunks_sent += 1;
        SyncChunk::Chunk(SyncChunkRepr {
            target: s.to,
            sync_id: s.sync_id,
            index: s.index,
            entry: EntryRepr {
                op: r.op,
                version: r.version,
                origin: r.origin,
                expires_at_ms: r.expires_at_ms,
                key: &r.key,
                total_len: r.value.len() as u32,
                offset,
                value: chunk_at(&r.value, offset as usize),
            },
        })
    }
}

/// What [`Sessions::sync_chunk`] found.
pub enum SyncChunk<'a> {
    Chunk(SyncChunkRepr<'a>),
    /// The snapshot ends before the asked index; it has this many chunks.
    Exhausted(u64),
}

/// The RESP server's view of replication for one event.
pub struct Sink<'a> {
    now_ms: u64,
    isolated: bool,
    mode: ReplicationMode,
    outbox: &'a mut VecDeque<(Replicate, Option<ReplyTicket>)>,
    next_write: &'a mut u64,
    replicated: &'a mut u64,
    delivering: &'a mut usize,
}

impl WriteSink for Sink<'_> {
    fn now_ms(&self) -> u64 {
        self.now_ms
    }

    fn isolated(&self) -> bool {
        self.isolated
    }

    fn completions_left(&mut self) -> usize {
        *self.delivering = self.delivering.saturating_sub(1);
        *self.delivering
    }

    fn submit(&mut self, records: Vec<Replicate>) -> Option<ReplyTicket> {
        let held = match self.mode {
            ReplicationMode::Sync => {
                *self.next_write += 1;
                Some(ReplyTicket(*self.next_write))
            }
            ReplicationMode::Async => None,
        };
        // A transaction's records travel as one batch entry, which the peer applies whole or
        // not at all; past the largest value the wire carries, as consecutive entries.
        let origin = records.first().map(|r| r.origin);
        let records = match origin.filter(|_| records.len() > 1) {
            Some(origin) => match crate::engine::store::batch(&records, origin) {
                Some(b) => vec![b],
                None => records,
            },
            None => records,
        };
        let n = records.len();
        for (i, r) in records.into_iter().enumerate() {
            *self.replicated += 1;
            // Only the command's last record carries the held reply: records replicate in
            // order, so when the last is committed all are.
            self.outbox
                .push_back((r, if i + 1 == n { held } else { None }));
        }
        held
    }
}

/// Adds a chunk to `from`'s partial value (the core checks its order and bound); returns the
/// value once whole. A whole entry returns `None` (the caller applies it directly) and
/// leaves the partial alone. Out-of-order or oversized chunks are counted and dropped.
fn reassemble(
    partials: &mut HashMap<NodeId, Partial>,
    from: NodeId,
    e: &EntryRepr<'_>,
    max_value: usize,
    stats: &mut SessionStats,
) -> Option<Partial> {
    if is_whole(e) {
        return None;
    }
    let p = partials.entry(from).or_default();
    match p.parts.accept(e, max_value) {
        Part::Whole => None,
        Part::Started => {
            // Grows with the chunks that arrived, never to the peer's announced length.
            p.value.clear();
            p.value.extend_from_slice(e.value);
            None
        }
        Part::Continued => {
            p.value.extend_from_slice(e.value);
            None
        }
        Part::Done => {
            p.value.extend_from_slice(e.value);
            partials.remove(&from)
        }
        Part::Orphan => {
            partials.remove(&from);
            None
        }
        Part::TooLarge => {
            stats.remote_malformed += 1;
            warn!(
                origin = e.origin.0,
                total = e.total_len,
                "replicated value over --max-value-bytes refused"
            );
            partials.remove(&from);
            None
        }
        Part::OutOfOrder => {
            stats.remote_malformed += 1;
            partials.remove(&from);
            None
        }
    }
}

fn is_data_peer(node: &CoreNode, peer: NodeId) -> bool {
    node.membership()
        .member(peer)
        .is_some_and(|m| m.role != tandem_core::frame::Role::Witness)
}

/// A live (alive) data peer, preferring one other than `avoid`.
fn pick_peer(node: &CoreNode, avoid: Option<NodeId>) -> Option<NodeId> {
    node.membership()
        .members()
        .filter(|m| {
            m.state == membership::MemberState::Alive
                && m.role != tandem_core::frame::Role::Witness
                && Some(m.node) != avoid
        })
        .map(|m| m.node)
        .next()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // In tests a failed unwrap is a failed test.
mod tests {
    use super::*;
    use tandem_core::frame::Op;
    use tandem_core::replication::MAX_CHUNK;

    fn entry<'a>(
        key: &'a [u8],
        value: &'a [u8],
        total: u32,
        offset: u32,
        version: u64,
    ) -> EntryRepr<'a> {
        EntryRepr {
            op: Op::Put,
            version,
            origin: NodeId(2),
            expires_at_ms: 0,
            key,
            total_len: total,
            offset,
            value,
        }
    }

    #[test]
    fn a_snapshot_copied_in_segments_plans_every_chunk_once_in_order() {
        let mut store = Store::new(NodeId(1), crate::engine::store::Limits::default());
        let mut want = HashMap::new();
        for i in 0..1000u32 {
            // Every seventh value spans three chunks.
            let len = if i % 7 == 0 { 2 * MAX_CHUNK + 5 } else { 40 };
            let key = format!("k{i}").into_bytes();
            store
                .set_string(
                    &key,
                    &vec![b'v'; len],
                    crate::engine::store::Expiry::Never,
                    1,
                )
                .expect("within limits");
            want.insert(key, len);
        }
        let mut snap = Snapshot::default();
        while !snap.done {
            snap.extend(&store, 1);
        }
        assert!(snap.segments.len() > 1, "one segment per step");
        assert_eq!(snap.records, 1000);
        let mut seen: HashMap<Vec<u8>, usize> = HashMap::new();
        for index in 0..snap.chunks {
            let (r, offset) = snap.chunk(index).expect("every planned chunk is there");
            let next = seen.entry(r.key.clone()).or_default();
            assert_eq!(offset as usize, *next, "chunks of a record in offset order");
            *next += MAX_CHUNK;
        }
        assert!(snap.chunk(snap.chunks).is_none());
        assert_eq!(seen.len(), 1000);
        for (key, len) in want {
            assert_eq!(seen[&key], len.div_ceil(MAX_CHUNK) * MAX_CHUNK, "{key:?}");
        }
    }

    #[test]
    fn chunks_reassemble_in_order_and_refuse_gaps_and_oversize() {
        let mut parts = HashMap::new();
        let mut stats = SessionStats::default();
        let from = NodeId(2);
        assert!(reassemble(
            &mut parts,
            from,
            &entry(b"k", b"ab", 4, 0, 1),
            100,
            &mut stats
        )
        .is_none());
        let whole = reassemble(
            &mut parts,
            from,
            &entry(b"k", b"cd", 4, 2, 1),
            100,
            &mut stats,
        )
        .unwrap();
        assert_eq!(whole.value, b"abcd");
        assert!(parts.is_empty());

        // A chunk at the wrong offset drops the partial.
        reassemble(
            &mut parts,
            from,
            &entry(b"k", b"ab", 6, 0, 2),
            100,
            &mut stats,
        );
        assert!(reassemble(
            &mut parts,
            from,
            &entry(b"k", b"ef", 6, 4, 2),
            100,
            &mut stats
        )
        .is_none());
        assert!(parts.is_empty());
        assert_eq!(stats.remote_malformed, 1);

        // Over the bound: refused before anything is kept.
        assert!(reassemble(
            &mut parts,
            from,
            &entry(b"k", b"ab", 1000, 0, 3),
            100,
            &mut stats
        )
        .is_none());
        assert!(parts.is_empty());
        assert_eq!(stats.remote_malformed, 2);

        // A whole entry is not the reassembler's business and leaves a partial alone.
        reassemble(
            &mut parts,
            from,
            &entry(b"k", b"ab", 4, 0, 4),
            100,
            &mut stats,
        );
        assert!(reassemble(
            &mut parts,
            from,
            &entry(b"x", b"v", 1, 0, 5),
            100,
            &mut stats
        )
        .is_none());
        assert_eq!(parts.len(), 1);
    }

    #[test]
    fn due_completions_keep_the_loop_awake_and_a_batch_counts_down() {
        let now = Instant::from_millis(1_000);
        let span = std::time::Duration::from_millis(200);
        let store = Store::new(NodeId(1), crate::engine::store::Limits::default());
        let mut s = Sessions::new(store, ReplicationMode::Sync, false, now, span);
        assert_eq!(s.poll_timeout(), Some(now + span), "waiting for a peer");
        // Completions found by a flush (e.g. after the RESP server ran pipelined writes) are
        // due at once: the loop must not sleep on them.
        let at = Instant::from_millis(1_005);
        s.completed.push((ReplyTicket(1), Ok(())));
        s.completed.push((ReplyTicket(2), Ok(())));
        s.completed
            .push((ReplyTicket(3), Err(WriteFailure::Isolated)));
        s.completed_at = at;
        assert_eq!(s.poll_timeout(), Some(at));
        let batch = s.take_completed();
        assert_eq!(batch.len(), 3);
        assert_eq!(s.poll_timeout(), Some(now + span));
        // The RESP server learns, at each completion, how many of the batch follow it.
        let left: Vec<usize> = (0..4)
            .map(|_| s.split(0, false).1.completions_left())
            .collect();
        assert_eq!(left, [2, 1, 0, 0]);
    }

    #[test]
    fn sink_batches_a_transaction_and_holds_only_its_last_record_in_sync_mode() {
        let mut outbox = VecDeque::new();
        let (mut next, mut replicated, mut delivering) = (0, 0, 0);
        let sized = |k: &[u8], len: usize| Replicate {
            op: Op::Put,
            key: k.to_vec(),
            version: 1,
            origin: NodeId(1),
            expires_at_ms: 0,
            value: vec![0; len],
        };
        let rec = |k: &[u8]| sized(k, 2);
        let mut sink = Sink {
            now_ms: 5,
            isolated: false,
            mode: ReplicationMode::Sync,
            outbox: &mut outbox,
            next_write: &mut next,
            replicated: &mut replicated,
            delivering: &mut delivering,
        };
        // Two records: one batch entry, holding the reply.
        assert_eq!(
            sink.submit(vec![rec(b"a"), rec(b"b")]),
            Some(ReplyTicket(1))
        );
        assert_eq!(sink.outbox.len(), 1);
        assert_eq!(sink.outbox[0].0.op, Op::Batch);
        assert_eq!(sink.outbox[0].1, Some(ReplyTicket(1)));
        // Too large for one value: consecutive records, the last holding the reply.
        let big = 600 * 1024;
        assert_eq!(
            sink.submit(vec![sized(b"c", big), sized(b"d", big)]),
            Some(ReplyTicket(2))
        );
        assert_eq!(outbox.len(), 3);
        assert_eq!((outbox[1].0.op, outbox[1].1), (Op::Put, None));
        assert_eq!(
            (outbox[2].0.op, outbox[2].1),
            (Op::Put, Some(ReplyTicket(2)))
        );
        assert_eq!(replicated, 3);
        outbox.clear();

        let mut async_sink = Sink {
            now_ms: 5,
            isolated: false,
            mode: ReplicationMode::Async,
            outbox: &mut outbox,
            next_write: &mut next,
            replicated: &mut replicated,
            delivering: &mut delivering,
        };
        assert_eq!(async_sink.submit(vec![rec(b"c")]), None);
        assert_eq!(outbox.len(), 1);
    }
}
