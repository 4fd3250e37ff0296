//! Session replication: per-sender streams, gap repair from a bounded ring, full state sync.
//!
//! Sans-IO like the rest of the core: `handle_*` take inputs (already opened frames, as
//! `Repr`s, with the sender and its incarnation from the header), `poll_transmit` /
//! `poll_sync_send` / `poll_event` / `poll_timeout` give outputs, `handle_timeout` fires
//! timers. Nothing here allocates; the ring is storage the caller provides.
//!
//! # Sender: this node's stream
//! [`Replicator::write`] splits a value into chunks of at most [`MAX_CHUNK`] bytes, gives each
//! the next replication sequence number (`rseq`, from 1 per incarnation), copies each into a
//! ring [`Slot`] (`rseq % ring.len()`) and queues it. [`Replicator::poll_transmit`] hands
//! queued chunks out as [`SessionUpdateRepr`]s borrowing the slot, addressed to every peer.
//! The returned [`WriteId`] is the rseq of the write's last chunk.
//!
//! - **Commit**: peers ack cumulatively ([`AckRepr`]); [`Replicator::committed`] returns the
//!   highest rseq every given live peer acked. A synchronous write is complete once
//!   `committed(live) >= id.0`; there is no commit event (the daemon re-checks its waiting
//!   writes after each ack or membership change, which costs a comparison per write).
//!   A peer that dies is simply left out of `live` by the caller, which unblocks writes.
//! - **Ring overwrite policy**: a write that needs more chunks than the ring has fails with
//!   [`Error::TooLarge`]. A write that would overwrite a chunk not yet sent, or (unless
//!   [`Config::overwrite_unacked`]) a chunk some live peer has not acked, fails with
//!   [`Error::Backpressure`] and changes nothing: the client gets a retryable error instead of
//!   a peer silently losing data. With `overwrite_unacked` (asynchronous mode) a lagging peer
//!   falls back to full sync instead.
//! - **Retransmission**: a [`RetransmitRequestRepr`] for a range still in the ring is resent
//!   to the requester, at most [`Config::retransmit_burst`] chunks per request (the requester
//!   asks again for the rest). A range older than the ring is answered with a **too-old
//!   reply**: `SyncDone { sync_id: 0, chunks: 0, rseq: R }` = "my ring no longer holds rseq
//!   `..=R`"; the receiver skips its stream to `R`, keeps receiving from `R + 1`, and emits
//!   [`Event::NeedsSync`] so the caller runs a full sync (ideally from that origin, which holds
//!   all its own writes).
//! - **Tail loss**: while a live peer has not acked everything sent, a probe timer runs (`rto`,
//!   doubling up to `max_rto`, reset by ack progress); when it fires the newest chunk is resent
//!   to all. A receiver that lost the tail then sees a gap and asks for it; one that only lost
//!   its ack re-acks. Heartbeats also carry [`Replicator::hwm`] (last rseq sent), which
//!   receivers feed to [`Replicator::handle_hwm`].
//!
//! # Receiver: one stream per origin
//! [`Replicator::handle_update`] returns a [`Delivery`]: apply the entry now (it is the next
//! in order), a duplicate, buffered (it came after a gap and waits in the optional reorder
//! buffer, [`Replicator::with_reorder`]), or a gap (dropped: no buffer room). After a
//! delivery the caller drains [`Replicator::poll_delivery`], which hands out buffered chunks
//! that became in order. A gap queues a `RetransmitRequest` for the hole after the delivered
//! prefix (up to the first buffered chunk, or the highest rseq known): a new hole is asked
//! for at once, the same range again only after [`Config::nak_interval`], so loss never
//! causes a request storm. Without a buffer a lost chunk costs the resend of what followed
//! it (go-back-N, bounded by the burst).
//!
//! A higher incarnation of an origin resets its stream (the new stream starts at rseq 1); a
//! lower one is ignored. The first contact with an origin expects rseq 1; if the origin's
//! ring no longer has it, the too-old reply above moves the stream forward. Acks are
//! coalesced: each origin with deliveries or duplicates since the last poll gets one
//! cumulative Ack.
//!
//! Chunks of one write have consecutive rseqs, so in-order delivery hands them to the caller
//! back to back (offset 0 first); the caller reassembles (`offset`, `total_len`) and drops a
//! partial value when a stream skips (too-old reply, sync anchor).
//!
//! # Full state sync (pull, chunked, flow-controlled, resumable)
//! - Requester: [`Replicator::start_sync`] sends `SyncRequest { cursor: 0 }` with a fresh
//!   `sync_id`. A chunk past the expected index means loss and triggers a resume; it is
//!   still applied ([`SyncDelivery::Apply`]) when it holds a whole entry and lies within 256
//!   indexes of the cursor (a bitmap remembers it, so the go-back-N resend costs bandwidth
//!   but no extra round trips). Parts of a multi-chunk value are applied only in index
//!   order, so the caller reassembles them as it does stream chunks, while whole entries may
//!   come in between.
//! - Every [`Config::sync_ack_every`] chunks the requester sends `SyncRequest { cursor:
//!   next }` as a cumulative ack. On a chunk out of order, a SyncDone before all chunks, or
//!   no progress for an RTO (backing off), it sends a resume: `cursor: next | CURSOR_RESUME`
//!   (top bit; chunk counts never reach 2^63), and the server goes back to `next`
//!   (go-back-N; a resume at most once per position and RTO, since the rest of the window
//!   is still arriving). `SyncDone { chunks }` with all chunks held gives
//!   [`Event::SyncComplete`] and a release (`cursor: CURSOR_RELEASE`).
//!   No progress for [`Config::sync_stall_timeout`], or an abort from the server, gives
//!   [`Event::SyncFailed`]; the caller may start again with another target.
//! - Server (at most [`MAX_SYNC_SERVE`] requesters at once, more are refused with
//!   `SyncDone { chunks: SYNC_ABORT, rseq: ABORT_BUSY }`): a new transfer gives
//!   [`Event::SyncServeStarted`], at which point the caller snapshots its store (the
//!   snapshot's chunk `i` must stay the same for the whole transfer). Then
//!   [`Replicator::poll_sync_send`] says "send chunk `index` of that snapshot to `to`"; when
//!   `index` is past the end the caller calls [`Replicator::sync_exhausted`] with the chunk
//!   count, and a `SyncDone` follows. Pacing: at most [`Config::sync_window`] chunks beyond
//!   the requester's cursor are handed out, so the transfer is ack-clocked.
//! - `SyncDone::rseq` is the server's stream position when the snapshot was taken; on
//!   completion the requester's stream for the server skips to it (the snapshot holds those
//!   writes).
//! - Writes made during a transfer reach the requester through the normal streams. The
//!   store applies every entry by last-writer-wins on `(version, origin)`, so sync chunks and
//!   stream updates commute: their order of arrival does not change the final state.
//!
//! # Driving it (the daemon's loop)
//! - Local write: apply to the store first, then [`Replicator::write`] (so a snapshot taken
//!   at `SyncServeStarted` holds every rseq written so far).
//! - Per opened frame, dispatch on the body; after `Delivery::Deliver` apply the entry, then
//!   drain [`Replicator::poll_delivery`]. After a batch: drain `poll_event`, `poll_transmit`
//!   (seal and send), `poll_sync_send` (build SyncChunks from the snapshot), then arm the
//!   timer at `poll_timeout` and call `handle_timeout` when it passes.
//! - Membership: `peer_up(node, incarnation)` when a data peer (not a witness) turns live,
//!   `peer_down` when it dies or leaves; re-check `committed(live)` after acks and
//!   membership changes. Heartbeats carry `hwm()`; received ones go to `handle_hwm`.
//! - Start or rejoin: `start_sync(some live peer)`, report `syncing` until
//!   `SyncComplete`; on `SyncFailed` start again (another target if the first is dead). On
//!   `NeedsSync { origin }`, sync from `origin` unless a sync is running.
//!
//! # Limits
//! Every table is fixed-size: `P` peers (sender acks, receiver streams, owed retransmits),
//! [`MAX_SYNC_SERVE`] transfers served, [`EVENT_QUEUE`] events (on overflow the oldest event
//! is dropped and counted in [`Stats::events_dropped`]). Nothing is sized by a peer's number.
//!
//! # Panics
//! Never on input from the network: indexes are checked, lengths bounded.

mod chunks;
mod pacer;
mod rx;
mod sync;
mod tx;

use core::time::Duration;

use heapless::{Deque, Vec};

pub use chunks::{chunk_at, chunk_count, chunk_offsets, is_whole, Part, Reassembly};
pub use pacer::{SyncPacer, SYNC_BURST_US, SYNC_CHUNK_US};
pub use sync::{ABORT_BUSY, ABORT_UNKNOWN, CURSOR_RELEASE, CURSOR_RESUME, SYNC_ABORT};
pub use tx::Slot;

use crate::frame::{
    AckRepr, Body, EntryRepr, RetransmitRequestRepr, SessionUpdateRepr, SyncChunkRepr,
    SyncDoneRepr, SyncRequestRepr,
};
use crate::id::{Incarnation, NodeId};
use crate::time::Instant;
use crate::vec::swap_remove;

/// Most value bytes in one SessionUpdate chunk.
///
/// Budget: 1400 datagram - 32 header - 16 tag = 1352 body bytes; SessionUpdate's fixed fields
/// (rseq 8, op 1, version 8, origin 2, expiry 8, key length 2, total length 4, offset 4, value
/// length 2 = 39, rounded to 40) and a key of up to 256 bytes leave 1056; a SyncChunk's fixed
/// fields (45) leave 1051. 1024 fits both with room to spare.
pub const MAX_CHUNK: usize = 0x400;
/// Full state transfers served at once.
pub const MAX_SYNC_SERVE: usize = 4;
/// Events held until polled.
pub const EVENT_QUEUE: usize = 32;

/// Tuning; the defaults suit a LAN with sub-millisecond round trips.
#[derive(Clone, Copy, Debug)]
pub struct Config {
    /// First retransmission timeout (tail probe, sync resume); doubles up to `max_rto`.
    pub rto: Duration,
    pub max_rto: Duration,
    /// Least time between two RetransmitRequests for one origin.
    pub nak_interval: Duration,
    /// Most chunks resent for one RetransmitRequest.
    pub retransmit_burst: u64,
    /// Let writes overwrite ring chunks a live peer has not acked (asynchronous mode); that
    /// peer then needs a full sync. Default false: such writes get [`Error::Backpressure`].
    pub overwrite_unacked: bool,
    /// Sync chunks handed out beyond the requester's cursor.
    pub sync_window: u64,
    /// The requester acks every this many sync chunks.
    pub sync_ack_every: u64,
    /// The requester gives up after this long without progress.
    pub sync_stall_timeout: Duration,
    /// The server drops a transfer after this long without a request.
    pub sync_serve_timeout: Duration,
}

impl Config {
    /// Every field zero: the placeholder of [`Replicator::zeroed`].
    const ZEROED: Config = Config {
        rto: Duration::ZERO,
        max_rto: Duration::ZERO,
        nak_interval: Duration::ZERO,
        retransmit_burst: 0,
        overwrite_unacked: false,
        sync_window: 0,
        sync_ack_every: 0,
        sync_stall_timeout: Duration::ZERO,
        sync_serve_timeout: Duration::ZERO,
    };
}

impl Default for Config {
    fn default() -> Self {
        Config::DEFAULT
    }
}

impl Config {
    /// [`Config::default`], for `const` contexts (a microcontroller's configuration in flash).
    pub const DEFAULT: Config = Config {
        rto: Duration::from_millis(5),
        max_rto: Duration::from_millis(200),
        nak_interval: Duration::from_millis(2),
        retransmit_burst: 64,
        overwrite_unacked: false,
        sync_window: 256,
        sync_ack_every: 64,
        sync_stall_timeout: Duration::from_secs(2),
        sync_serve_timeout: Duration::from_secs(5),
    };
}

/// Why a call was refused. Every variant: nothing changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Error {
    /// The key is longer than [`crate::frame::MAX_KEY_LEN`]. Nothing changed.
    KeyTooLong,
    /// The value needs more chunks than the ring holds (or more than 4 GiB). Nothing changed.
    TooLarge,
    /// The write would overwrite ring chunks not yet sent or not yet acked by a live peer.
    /// Nothing changed; retry after acks arrive (or after the lagging peer is declared dead).
    Backpressure,
    /// The peer table (capacity `P`) is full of live peers. Nothing changed.
    PeerTableFull,
}

/// Identifies a write: the rseq of its last chunk. Complete once `committed(live) >= .0`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct WriteId(pub u64);

/// What to do with a received SessionUpdate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Delivery {
    /// Next in order: apply the entry to the store now.
    Deliver,
    /// Already delivered: drop it (an ack is queued, the sender may have missed ours).
    Duplicate,
    /// Something before it is missing: kept in the reorder buffer, nothing to do now.
    Buffered,
    /// Something before it is missing and the reorder buffer is full or absent: drop it.
    /// A RetransmitRequest is queued (rate-limited).
    Gap,
    /// From an old incarnation, from ourselves, rseq 0, or the stream table is full: drop it.
    Ignored,
}

/// What to do with a received SyncChunk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncDelivery {
    /// Apply its entry: the next chunk of the transfer in progress, or a whole entry ahead
    /// of it (apply it directly, without disturbing a value being reassembled).
    Apply,
    /// Not for the transfer in progress, a duplicate, or out of order: drop it.
    Ignore,
}

/// Where a [`Transmit`] goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dest {
    /// Every peer (multicast).
    All,
    /// One node (unicast, or multicast that others ignore).
    Node(NodeId),
}

/// A frame body to seal and send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transmit<'a> {
    pub to: Dest,
    pub body: Body<'a>,
}

/// "Send chunk `index` of your snapshot for this transfer to `to`", or, if the snapshot has
/// no chunk `index`, call [`Replicator::sync_exhausted`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SyncSend {
    pub to: NodeId,
    pub sync_id: u32,
    pub index: u64,
}

/// Why a transfer this node requested failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncFailure {
    /// No progress for `sync_stall_timeout` (target dead or unreachable).
    Stalled,
    /// The target serves its maximum of requesters.
    Busy,
    /// The target no longer knows the transfer (it restarted or timed it out).
    Unknown,
}

/// Something the caller should know or act on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// The transfer from `target` is complete: the store holds its state.
    SyncComplete {
        target: NodeId,
        sync_id: u32,
        chunks: u64,
    },
    /// The transfer from `target` failed; start another (maybe with another target).
    SyncFailed {
        target: NodeId,
        sync_id: u32,
        reason: SyncFailure,
    },
    /// Part of `origin`'s stream left its ring before we got it: run a full sync (from
    /// `origin` if it is live).
    NeedsSync { origin: NodeId },
    /// A requester starts a transfer: snapshot the store now, for `poll_sync_send`.
    SyncServeStarted { to: NodeId, sync_id: u32 },
    /// A transfer served ended (completed, replaced or timed out): drop its snapshot.
    SyncServeEnded { to: NodeId, sync_id: u32 },
}

/// Counters for metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Chunks resent (requested or tail probes).
    pub retransmits: u64,
    pub retransmit_requests_sent: u64,
    /// Too-old replies sent (a peer needed a full sync).
    pub too_old_sent: u64,
    pub events_dropped: u64,
}

/// The replication engine of one node. `S` is the ring storage, `P` the peer capacity, `B`
/// the reorder buffer storage (none by default).
pub struct Replicator<S, const P: usize, B = [Slot; 0]> {
    node: NodeId,
    incarnation: Incarnation,
    config: Config,
    tx: tx::Tx<S, P>,
    rx: rx::Rx<P>,
    reorder: B,
    /// The transfer this node pulls ([`sync::Client::NONE`] when none).
    client: sync::Client,
    /// A completed transfer whose release is still to be sent.
    release: Option<(NodeId, u32)>,
    next_sync_id: u32,
    server: sync::Server,
    aborts: Vec<(NodeId, u32, u64), MAX_SYNC_SERVE>,
    events: Deque<Event, EVENT_QUEUE>,
    stats: Stats,
}

impl<S: AsRef<[Slot]> + AsMut<[Slot]>, const P: usize> Replicator<S, P> {
    /// `ring`: e.g. `[Slot::EMPTY; 64]` or `vec![Slot::EMPTY; n].into_boxed_slice()`. Its
    /// length bounds the largest write (`len * MAX_CHUNK` bytes) and how far back a
    /// retransmission can go. No reorder buffer: see [`Replicator::with_reorder`].
    pub fn new(node: NodeId, incarnation: Incarnation, config: Config, ring: S) -> Self {
        Replicator::with_reorder(node, incarnation, config, ring, [])
    }
}

impl<S, const P: usize, B> Replicator<S, P, B>
where
    S: AsRef<[Slot]> + AsMut<[Slot]>,
    B: AsRef<[Slot]> + AsMut<[Slot]>,
{
    /// Like [`Replicator::new`], with a reorder buffer shared by all incoming streams:
    /// chunks that arrive after a gap wait there (instead of being dropped and resent), and
    /// [`Replicator::poll_delivery`] hands them out once the gap is filled. Its length
    /// bounds how much one loss costs (e.g. 64-256 slots).
    pub fn with_reorder(
        node: NodeId,
        incarnation: Incarnation,
        config: Config,
        ring: S,
        reorder: B,
    ) -> Self {
        let mut r = Replicator::zeroed(ring, reorder);
        r.start(node, incarnation, config);
        r
    }

    /// Holds `ring` and `reorder` and nothing else; every other byte zero (so a `static`
    /// holding it and zeroed slot arrays costs no flash). Not usable until
    /// [`Replicator::start`].
    pub const fn zeroed(ring: S, reorder: B) -> Self {
        Replicator {
            node: NodeId(0),
            incarnation: Incarnation(0),
            tx: tx::Tx::zeroed(ring),
            config: Config::ZEROED,
            rx: rx::Rx::new(),
            reorder,
            client: sync::Client::NONE,
            release: None,
            next_sync_id: 0,
            server: sync::Server::new(),
            aborts: Vec::new(),
            events: Deque::new(),
            stats: Stats {
                retransmits: 0,
                retransmit_requests_sent: 0,
                too_old_sent: 0,
                events_dropped: 0,
            },
        }
    }

    /// [`Replicator::with_reorder`] in place, keeping the storage: an empty stream, no
    /// peers, no transfer, the ring and reorder slots emptied.
    pub fn start(&mut self, node: NodeId, incarnation: Incarnation, config: Config) {
        self.node = node;
        self.incarnation = incarnation;
        self.tx.reset(&config);
        self.config = config;
        self.rx.streams.clear();
        self.reorder.as_mut().iter_mut().for_each(|s| s.rseq = 0);
        self.client = sync::Client::NONE;
        self.release = None;
        // Distinct from a previous process's ids even if the server kept its transfer.
        self.next_sync_id = incarnation.0.max(1);
        self.server.sessions.clear();
        self.aborts.clear();
        self.events.clear();
        self.stats = Stats::default();
    }

    // ---- sender ------------------------------------------------------------------------

    /// Queues a write for replication. `entry.value` is the whole value; `total_len` and
    /// `offset` are ignored (set per chunk). See the module doc for the overwrite policy.
    pub fn write(&mut self, _now: Instant, entry: &EntryRepr<'_>) -> Result<WriteId, Error> {
        self.tx.write(entry, &self.config)
    }

    /// Last rseq handed out by `poll_transmit`: the heartbeat's `repl_hwm`.
    pub fn hwm(&self) -> u64 {
        self.tx.sent()
    }

    /// Last rseq assigned by `write`.
    pub fn written(&self) -> u64 {
        self.tx.written()
    }

    /// Highest rseq every node of `live_peers` has acked (`written()` if none is given).
    /// An iterator, so the caller need not collect its members first (stack and flash).
    pub fn committed(&self, live_peers: impl IntoIterator<Item = NodeId>) -> u64 {
        let mut c = self.tx.written();
        for n in live_peers {
            if n != self.node {
                c = c.min(self.tx.acked(n));
            }
        }
        c
    }

    /// The caller's membership says `node` (at `incarnation`) is a live data peer: it counts
    /// for tail probes and the overwrite policy. A higher incarnation resets its acks.
    pub fn peer_up(
        &mut self,
        now: Instant,
        node: NodeId,
        incarnation: Incarnation,
    ) -> Result<(), Error> {
        self.tx.peer_up(now, node, incarnation)
    }

    /// `node` is dead or left: it no longer holds writes back, owed resends are dropped.
    pub fn peer_down(&mut self, node: NodeId) {
        self.tx.peer_down(node);
    }

    pub fn handle_ack(&mut self, now: Instant, from: NodeId, ack: &AckRepr) {
        if ack.origin == self.node && ack.origin_incarnation == self.incarnation {
            self.tx.handle_ack(now, from, ack.rseq, &self.config);
        }
    }

    pub fn handle_retransmit_request(
        &mut self,
        _now: Instant,
        from: NodeId,
        req: &RetransmitRequestRepr,
    ) {
        if req.target == self.node && req.target_incarnation == self.incarnation {
            self.tx
                .handle_retransmit(from, req.from, req.to, &self.config);
        }
    }

    // ---- receiver ----------------------------------------------------------------------

    /// A SessionUpdate from `from` (header sender) at `from_incarnation`.
    pub fn handle_update(
        &mut self,
        _now: Instant,
        from: NodeId,
        from_incarnation: Incarnation,
        update: &SessionUpdateRepr<'_>,
    ) -> Delivery {
        if from == self.node {
            return Delivery::Ignored;
        }
        self.rx
            .handle_update(from, from_incarnation, update, self.reorder.as_mut())
    }

    /// The `repl_hwm` of a heartbeat from `from`: detects lost tails.
    pub fn handle_hwm(
        &mut self,
        _now: Instant,
        from: NodeId,
        from_incarnation: Incarnation,
        hwm: u64,
    ) {
        if from != self.node {
            self.rx.handle_hwm(from, from_incarnation, hwm);
        }
    }

    /// After a [`Delivery::Deliver`]: the buffered chunks that are now in order, one by one,
    /// with their origin. Apply each as if `handle_update` had returned `Deliver` for it.
    /// Drain it before `poll_transmit`.
    pub fn poll_delivery(&mut self) -> Option<(NodeId, SessionUpdateRepr<'_>)> {
        self.rx.poll_delivery(self.reorder.as_ref())
    }

    /// Last rseq of `origin`'s stream delivered in order (0 if none).
    pub fn delivered(&self, origin: NodeId) -> u64 {
        self.rx
            .streams
            .iter()
            .find(|s| s.origin == origin)
            .map_or(0, |s| s.delivered)
    }

    /// Forget `origin`'s stream (it left for good); a later frame starts it afresh.
    pub fn forget_origin(&mut self, origin: NodeId) {
        self.rx.forget(origin);
    }

    // ---- sync: requester ---------------------------------------------------------------

    /// Starts pulling the full state from `target`, replacing any transfer in progress.
    /// Returns the transfer's id.
    pub fn start_sync(&mut self, now: Instant, target: NodeId) -> u32 {
        if let Some(old) = self.client.active() {
            // Let the old target free its transfer now rather than at its timeout.
            self.release = Some((old.target, old.sync_id));
        }
        let sync_id = self.next_sync_id;
        self.next_sync_id = self.next_sync_id.wrapping_add(1).max(1);
        self.client = sync::Client::new(now, target, sync_id, &self.config);
        sync_id
    }

    /// Abandons the transfer in progress (no event).
    pub fn cancel_sync(&mut self) {
        self.client = sync::Client::NONE;
    }

    /// The target of the transfer in progress.
    pub fn syncing(&self) -> Option<NodeId> {
        self.client.active().map(|c| c.target)
    }

    pub fn handle_sync_chunk(
        &mut self,
        now: Instant,
        from: NodeId,
        chunk: &SyncChunkRepr<'_>,
    ) -> SyncDelivery {
        let Some(c) = self.client.active_mut() else {
            return SyncDelivery::Ignore;
        };
        if from != c.target || chunk.sync_id != c.sync_id || chunk.target != self.node {
            return SyncDelivery::Ignore;
        }
        let e = &chunk.entry;
        let whole = e.offset == 0 && e.value.len() == e.total_len as usize;
        if c.chunk(now, chunk.index, whole, &self.config) {
            SyncDelivery::Apply
        } else {
            SyncDelivery::Ignore
        }
    }

    /// A SyncDone: the end of our transfer, an abort, or (sync_id 0) a too-old reply.
    pub fn handle_sync_done(
        &mut self,
        _now: Instant,
        from: NodeId,
        from_incarnation: Incarnation,
        done: &SyncDoneRepr,
    ) {
        if done.target != self.node || from == self.node {
            return;
        }
        if done.sync_id == 0 {
            if self.rx.skip_to(from, from_incarnation, done.rseq) {
                self.push_event(Event::NeedsSync { origin: from });
            }
            return;
        }
        let Some(c) = self.client.active_mut() else {
            return;
        };
        if from != c.target || done.sync_id != c.sync_id {
            return;
        }
        let (target, sync_id) = (c.target, c.sync_id);
        if done.chunks == SYNC_ABORT {
            let reason = if done.rseq == ABORT_BUSY {
                SyncFailure::Busy
            } else {
                SyncFailure::Unknown
            };
            self.client = sync::Client::NONE;
            self.push_event(Event::SyncFailed {
                target,
                sync_id,
                reason,
            });
        } else if c.next == done.chunks {
            self.client = sync::Client::NONE;
            self.release = Some((target, sync_id));
            self.rx.skip_to(from, from_incarnation, done.rseq);
            self.push_event(Event::SyncComplete {
                target,
                sync_id,
                chunks: done.chunks,
            });
        } else if c.next < done.chunks {
            c.request_resume();
        }
    }

    // ---- sync: server ------------------------------------------------------------------

    pub fn handle_sync_request(
        &mut self,
        now: Instant,
        from: NodeId,
        from_incarnation: Incarnation,
        req: &SyncRequestRepr,
    ) {
        if req.target != self.node || from == self.node || req.sync_id == 0 {
            return;
        }
        let (outcome, replaced) = self.server.handle_request(
            now,
            from,
            from_incarnation,
            req,
            self.tx.written(),
            &self.config,
        );
        if let Some(s) = replaced {
            self.push_event(Event::SyncServeEnded {
                to: s.to,
                sync_id: s.sync_id,
            });
        }
        match outcome {
            sync::ServeOutcome::Started => self.push_event(Event::SyncServeStarted {
                to: from,
                sync_id: req.sync_id,
            }),
            sync::ServeOutcome::Released(s) => self.push_event(Event::SyncServeEnded {
                to: s.to,
                sync_id: s.sync_id,
            }),
            sync::ServeOutcome::Abort(reason) => {
                if !self
                    .aborts
                    .iter()
                    .any(|a| a.0 == from && a.1 == req.sync_id)
                {
                    // Full: the requester's timeout re-sends and gets its answer then.
                    let _ = self.aborts.push((from, req.sync_id, reason));
                }
            }
            sync::ServeOutcome::Updated | sync::ServeOutcome::Ignored => {}
        }
    }

    /// The next snapshot chunk to send, paced by the requesters' windows.
    pub fn poll_sync_send(&mut self, _now: Instant) -> Option<SyncSend> {
        self.server.poll_send(&self.config)
    }

    /// The snapshot of transfer (`to`, `sync_id`) has `total_chunks` chunks (the caller was
    /// asked for an index at or past it). A SyncDone follows once all were handed out.
    pub fn sync_exhausted(&mut self, to: NodeId, sync_id: u32, total_chunks: u64) {
        self.server.exhausted(to, sync_id, total_chunks);
    }

    // ---- outputs -----------------------------------------------------------------------

    /// Fires the timers due at `now` (tail probe, NAK retry, sync resume/stall, transfer
    /// expiry). Call when `poll_timeout()` has passed, then drain `poll_transmit`.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.tx.handle_timeout(now, &self.config);
        if let Some(c) = self.client.active_mut() {
            if let Some(reason) = c.handle_timeout(now, &self.config) {
                let (target, sync_id) = (c.target, c.sync_id);
                self.client = sync::Client::NONE;
                self.push_event(Event::SyncFailed {
                    target,
                    sync_id,
                    reason,
                });
            }
        }
        let mut ended: Vec<(NodeId, u32), MAX_SYNC_SERVE> = Vec::new();
        self.server.handle_timeout(now, |s| {
            let _ = ended.push((s.to, s.sync_id));
        });
        for (to, sync_id) in ended {
            self.push_event(Event::SyncServeEnded { to, sync_id });
        }
    }

    /// The earliest time `handle_timeout` has work, if any.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let t = self
            .tx
            .poll_timeout()
            .min(self.rx.poll_timeout())
            .min(
                self.client
                    .active()
                    .map_or(Instant::NEVER, |c| c.poll_timeout()),
            )
            .min(self.server.poll_timeout());
        (t != Instant::NEVER).then_some(t)
    }

    /// The next frame body to send. Control frames (acks, requests) come before data.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<Transmit<'_>> {
        if let Some(c) = self.client.active_mut().filter(|c| c.pending) {
            let cursor = c.sent(now);
            return Some(Transmit {
                to: Dest::Node(c.target),
                body: Body::SyncRequest(SyncRequestRepr {
                    target: c.target,
                    sync_id: c.sync_id,
                    cursor,
                }),
            });
        }
        if let Some((target, sync_id)) = self.release.take() {
            return Some(Transmit {
                to: Dest::Node(target),
                body: Body::SyncRequest(SyncRequestRepr {
                    target,
                    sync_id,
                    cursor: CURSOR_RELEASE,
                }),
            });
        }
        for s in self.rx.streams.iter_mut() {
            if s.ack_pending {
                s.ack_pending = false;
                return Some(Transmit {
                    to: Dest::Node(s.origin),
                    body: Body::Ack(AckRepr {
                        origin: s.origin,
                        origin_incarnation: s.incarnation,
                        rseq: s.delivered,
                    }),
                });
            }
        }
        if let Some((origin, incarnation, from, to)) =
            self.rx.poll_nak(now, self.reorder.as_ref(), &self.config)
        {
            self.stats.retransmit_requests_sent += 1;
            return Some(Transmit {
                to: Dest::Node(origin),
                body: Body::RetransmitRequest(RetransmitRequestRepr {
                    target: origin,
                    target_incarnation: incarnation,
                    from,
                    to,
                }),
            });
        }
        if let Some((to, sync_id, reason)) = self.aborts.pop() {
            return Some(Transmit {
                to: Dest::Node(to),
                body: Body::SyncDone(SyncDoneRepr {
                    target: to,
                    sync_id,
                    chunks: SYNC_ABORT,
                    rseq: reason,
                }),
            });
        }
        if let Some(s) = self.server.take_done() {
            return Some(Transmit {
                to: Dest::Node(s.to),
                body: Body::SyncDone(SyncDoneRepr {
                    target: s.to,
                    sync_id: s.sync_id,
                    chunks: s.chunks(),
                    rseq: s.hwm,
                }),
            });
        }
        let out = self.tx.poll(now)?;
        self.stats.retransmits = self.tx.retransmits;
        match out {
            tx::TxOut::TooOld { to, last_gone } => {
                self.stats.too_old_sent += 1;
                Some(Transmit {
                    to: Dest::Node(to),
                    body: Body::SyncDone(SyncDoneRepr {
                        target: to,
                        sync_id: 0,
                        chunks: 0,
                        rseq: last_gone,
                    }),
                })
            }
            tx::TxOut::Update { to, rseq } => {
                let update = self.tx.update(rseq)?;
                Some(Transmit {
                    to: to.map_or(Dest::All, Dest::Node),
                    body: Body::SessionUpdate(update),
                })
            }
        }
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    pub fn stats(&self) -> Stats {
        self.stats
    }

    fn push_event(&mut self, event: Event) {
        if self.events.is_full() {
            self.events.pop_front();
            self.stats.events_dropped += 1;
        }
        // Cannot fail: a slot was freed above if the queue was full.
        let _ = self.events.push_back(event);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // In tests a failed unwrap is a failed test.
mod tests {
    use super::*;
    use crate::frame::Op;

    const A: NodeId = NodeId(1);
    const B: NodeId = NodeId(2);
    const C: NodeId = NodeId(3);
    const INC: Incarnation = Incarnation(100);

    fn ms(n: u64) -> Instant {
        Instant::from_millis(n)
    }

    fn entry<'a>(key: &'a [u8], value: &'a [u8]) -> EntryRepr<'a> {
        EntryRepr {
            op: Op::Put,
            version: 7,
            origin: A,
            expires_at_ms: 0,
            key,
            total_len: 0,
            offset: 0,
            value,
        }
    }

    fn node(ring: usize) -> Replicator<std::vec::Vec<Slot>, 4> {
        Replicator::new(A, INC, Config::default(), std::vec![Slot::EMPTY; ring])
    }

    /// Drains `poll_transmit`, returning the rseqs of the updates sent.
    fn sent_updates<S: AsRef<[Slot]> + AsMut<[Slot]>>(
        r: &mut Replicator<S, 4>,
        now: Instant,
    ) -> std::vec::Vec<u64> {
        let mut out = std::vec::Vec::new();
        while let Some(t) = r.poll_transmit(now) {
            if let Body::SessionUpdate(u) = t.body {
                out.push(u.rseq);
            }
        }
        out
    }

    /// Drains `poll_transmit`; updates keep only their rseq (their bytes borrow the ring).
    fn drain<S: AsRef<[Slot]> + AsMut<[Slot]>, B: AsRef<[Slot]> + AsMut<[Slot]>>(
        r: &mut Replicator<S, 4, B>,
        now: Instant,
    ) -> std::vec::Vec<(Dest, Body<'static>)> {
        let mut out = std::vec::Vec::new();
        while let Some(t) = r.poll_transmit(now) {
            let body = match t.body {
                Body::SessionUpdate(u) => Body::SessionUpdate(update(u.rseq)),
                Body::SyncChunk(_) | Body::Heartbeat(_) | Body::Leave(_) | Body::Challenge(_) => {
                    panic!("unexpected")
                }
                Body::Ack(a) => Body::Ack(a),
                Body::RetransmitRequest(x) => Body::RetransmitRequest(x),
                Body::SyncRequest(x) => Body::SyncRequest(x),
                Body::SyncDone(x) => Body::SyncDone(x),
            };
            out.push((t.to, body));
        }
        out
    }

    fn bodies<S: AsRef<[Slot]> + AsMut<[Slot]>, B: AsRef<[Slot]> + AsMut<[Slot]>>(
        r: &mut Replicator<S, 4, B>,
        now: Instant,
    ) -> std::vec::Vec<Body<'static>> {
        drain(r, now).into_iter().map(|(_, b)| b).collect()
    }

    fn update(rseq: u64) -> SessionUpdateRepr<'static> {
        SessionUpdateRepr {
            rseq,
            entry: EntryRepr {
                op: Op::Put,
                version: rseq,
                origin: B,
                expires_at_ms: 0,
                key: b"k",
                total_len: 1,
                offset: 0,
                value: b"v",
            },
        }
    }

    #[test]
    fn write_splits_into_consecutive_chunks() {
        let mut r = node(8);
        let value: std::vec::Vec<u8> = (0..2500u32).map(|i| i as u8).collect();
        assert_eq!(r.write(ms(1), &entry(b"key", &value)), Ok(WriteId(3)));
        assert_eq!(r.hwm(), 0, "nothing sent yet");
        let mut got = std::vec::Vec::new();
        while let Some(t) = r.poll_transmit(ms(1)) {
            assert_eq!(t.to, Dest::All);
            let Body::SessionUpdate(u) = t.body else {
                panic!("unexpected {t:?}")
            };
            assert_eq!(u.entry.total_len, 2500);
            assert_eq!(u.entry.offset as usize, got.len());
            assert_eq!(u.entry.key, b"key");
            assert_eq!(u.rseq, got.len() as u64 / MAX_CHUNK as u64 + 1);
            got.extend_from_slice(u.entry.value);
        }
        assert_eq!(got, value);
        assert_eq!(r.hwm(), 3);
        // An empty value (a delete) is one empty chunk.
        assert_eq!(r.write(ms(1), &entry(b"key", b"")), Ok(WriteId(4)));
    }

    #[test]
    fn write_refusals_change_nothing() {
        let mut r = node(4);
        let long = [0u8; 300];
        assert_eq!(r.write(ms(1), &entry(&long, b"v")), Err(Error::KeyTooLong));
        let big = [0u8; 4 * MAX_CHUNK + 1];
        assert_eq!(r.write(ms(1), &entry(b"k", &big)), Err(Error::TooLarge));
        assert_eq!(r.written(), 0);
        // Four unsent chunks fill the ring: a fifth would overwrite an unsent one.
        for i in 1..=4 {
            assert_eq!(r.write(ms(1), &entry(b"k", b"v")), Ok(WriteId(i)));
        }
        assert_eq!(r.write(ms(1), &entry(b"k", b"v")), Err(Error::Backpressure));
        assert_eq!(r.written(), 4);
        // Sent but unacked by a live peer: still refused.
        r.peer_up(ms(1), B, INC).unwrap();
        assert_eq!(sent_updates(&mut r, ms(1)), [1, 2, 3, 4]);
        assert_eq!(r.write(ms(1), &entry(b"k", b"v")), Err(Error::Backpressure));
        let ack = AckRepr {
            origin: A,
            origin_incarnation: INC,
            rseq: 1,
        };
        r.handle_ack(ms(2), B, &ack);
        assert_eq!(r.write(ms(2), &entry(b"k", b"v")), Ok(WriteId(5)));
        assert_eq!(r.write(ms(2), &entry(b"k", b"v")), Err(Error::Backpressure));
        // Once B is dead it no longer holds writes back.
        r.peer_down(B);
        sent_updates(&mut r, ms(2));
        assert_eq!(r.write(ms(2), &entry(b"k", b"v")), Ok(WriteId(6)));
    }

    #[test]
    fn overwrite_unacked_mode_does_not_wait_for_peers() {
        let config = Config {
            overwrite_unacked: true,
            ..Config::default()
        };
        let mut r: Replicator<[Slot; 2], 4> = Replicator::new(A, INC, config, [Slot::EMPTY; 2]);
        r.peer_up(ms(1), B, INC).unwrap();
        for i in 1..=5 {
            assert_eq!(r.write(ms(1), &entry(b"k", b"v")), Ok(WriteId(i)));
            sent_updates(&mut r, ms(1));
        }
    }

    #[test]
    fn committed_is_the_minimum_over_live_peers() {
        let mut r = node(8);
        for _ in 0..5 {
            r.write(ms(1), &entry(b"k", b"v")).unwrap();
        }
        sent_updates(&mut r, ms(1));
        assert_eq!(r.committed([]), 5, "alone: everything is committed");
        assert_eq!(r.committed([B, C]), 0);
        let ack = |rseq| AckRepr {
            origin: A,
            origin_incarnation: INC,
            rseq,
        };
        r.handle_ack(ms(2), B, &ack(4));
        r.handle_ack(ms(2), C, &ack(2));
        r.handle_ack(ms(2), C, &ack(1)); // late, reordered: ignored
        assert_eq!(r.committed([B, C]), 2);
        assert_eq!(r.committed([B]), 4);
        // An ack for another incarnation of us, or beyond what was sent, does not count.
        r.handle_ack(
            ms(2),
            C,
            &AckRepr {
                origin: A,
                origin_incarnation: Incarnation(99),
                rseq: 5,
            },
        );
        r.handle_ack(ms(2), B, &ack(1000));
        assert_eq!(r.committed([B, C]), 2);
        assert_eq!(r.committed([B]), 5);
    }

    #[test]
    fn retransmits_are_bounded_and_old_ranges_get_a_too_old_reply() {
        let config = Config {
            retransmit_burst: 3,
            ..Config::default()
        };
        let mut r: Replicator<[Slot; 8], 4> = Replicator::new(A, INC, config, [Slot::EMPTY; 8]);
        for _ in 0..10 {
            r.write(ms(1), &entry(b"k", b"v")).unwrap();
            sent_updates(&mut r, ms(1));
        }
        let nak = |from, to| RetransmitRequestRepr {
            target: A,
            target_incarnation: INC,
            from,
            to,
        };
        r.handle_retransmit_request(ms(2), B, &nak(4, 1_000_000));
        let mut resent = std::vec::Vec::new();
        while let Some(t) = r.poll_transmit(ms(2)) {
            assert_eq!(t.to, Dest::Node(B));
            if let Body::SessionUpdate(u) = t.body {
                resent.push(u.rseq);
            }
        }
        assert_eq!(resent, [4, 5, 6]);
        // The ring holds 3..=10: rseq 2 is gone.
        r.handle_retransmit_request(ms(2), B, &nak(2, 5));
        let t = r.poll_transmit(ms(2)).unwrap();
        assert_eq!(
            t.body,
            Body::SyncDone(SyncDoneRepr {
                target: B,
                sync_id: 0,
                chunks: 0,
                rseq: 2
            })
        );
        assert_eq!(r.poll_transmit(ms(2)), None);
        assert_eq!(r.stats().too_old_sent, 1);
    }

    #[test]
    fn tail_probe_resends_the_newest_chunk_with_backoff() {
        let mut r = node(8);
        r.peer_up(ms(0), B, INC).unwrap();
        assert_eq!(r.poll_timeout(), None);
        r.write(ms(1), &entry(b"k", b"v")).unwrap();
        r.write(ms(1), &entry(b"k", b"w")).unwrap();
        sent_updates(&mut r, ms(1));
        let first = r.poll_timeout().unwrap();
        assert_eq!(first, ms(1) + Config::default().rto);
        r.handle_timeout(first);
        assert_eq!(sent_updates(&mut r, first), [2]);
        let second = r.poll_timeout().unwrap();
        assert_eq!(second - first, Config::default().rto * 2);
        let ack = AckRepr {
            origin: A,
            origin_incarnation: INC,
            rseq: 2,
        };
        r.handle_ack(second, B, &ack);
        assert_eq!(r.poll_timeout(), None, "all acked: no probe");
    }

    #[test]
    fn receiver_delivers_in_order_and_naks_gaps_once_per_interval() {
        let mut r = node(4);
        assert_eq!(
            r.handle_update(ms(1), B, INC, &update(1)),
            Delivery::Deliver
        );
        assert_eq!(
            r.handle_update(ms(1), B, INC, &update(2)),
            Delivery::Deliver
        );
        assert_eq!(
            r.handle_update(ms(1), B, INC, &update(2)),
            Delivery::Duplicate
        );
        assert_eq!(r.handle_update(ms(1), B, INC, &update(5)), Delivery::Gap);
        assert_eq!(r.handle_update(ms(1), B, INC, &update(6)), Delivery::Gap);
        // One ack for the batch, one NAK for the gap.
        assert_eq!(
            drain(&mut r, ms(1)),
            [
                (
                    Dest::Node(B),
                    Body::Ack(AckRepr {
                        origin: B,
                        origin_incarnation: INC,
                        rseq: 2
                    })
                ),
                (
                    Dest::Node(B),
                    Body::RetransmitRequest(RetransmitRequestRepr {
                        target: B,
                        target_incarnation: INC,
                        from: 3,
                        to: 6
                    })
                )
            ]
        );
        // More loss within the interval: no new request.
        assert_eq!(r.handle_update(ms(1), B, INC, &update(7)), Delivery::Gap);
        assert_eq!(r.poll_transmit(ms(1)), None);
        let retry = r.poll_timeout().unwrap();
        assert_eq!(retry, ms(1) + Config::default().nak_interval);
        r.handle_timeout(retry);
        assert!(matches!(
            r.poll_transmit(retry).map(|t| t.body),
            Some(Body::RetransmitRequest(RetransmitRequestRepr {
                from: 3,
                to: 7,
                ..
            }))
        ));
        assert_eq!(
            r.handle_update(retry, B, INC, &update(3)),
            Delivery::Deliver
        );
        assert_eq!(r.delivered(B), 3);
    }

    #[test]
    fn reorder_buffer_holds_chunks_after_a_gap() {
        let mut r: Replicator<[Slot; 2], 4, [Slot; 2]> = Replicator::with_reorder(
            A,
            INC,
            Config::default(),
            [Slot::EMPTY; 2],
            [Slot::EMPTY; 2],
        );
        assert_eq!(
            r.handle_update(ms(1), B, INC, &update(1)),
            Delivery::Deliver
        );
        assert_eq!(
            r.handle_update(ms(1), B, INC, &update(3)),
            Delivery::Buffered
        );
        assert_eq!(
            r.handle_update(ms(1), B, INC, &update(3)),
            Delivery::Duplicate
        );
        assert_eq!(
            r.handle_update(ms(1), B, INC, &update(4)),
            Delivery::Buffered
        );
        assert_eq!(
            r.handle_update(ms(1), B, INC, &update(6)),
            Delivery::Gap,
            "buffer full"
        );
        assert!(r.poll_delivery().is_none(), "2 is missing");
        // Only the hole before the first buffered chunk is asked for.
        assert!(
            bodies(&mut r, ms(1)).contains(&Body::RetransmitRequest(RetransmitRequestRepr {
                target: B,
                target_incarnation: INC,
                from: 2,
                to: 2
            }))
        );
        assert_eq!(
            r.handle_update(ms(1), B, INC, &update(2)),
            Delivery::Deliver
        );
        let (origin, u) = r.poll_delivery().unwrap();
        assert_eq!((origin, u.rseq, u.entry.value), (B, 3, &b"v"[..]));
        assert_eq!(r.poll_delivery().map(|(_, u)| u.rseq), Some(4));
        assert!(r.poll_delivery().is_none());
        assert_eq!(r.delivered(B), 4);
        // The next hole is new: asked for at once, despite the NAK interval.
        assert!(
            bodies(&mut r, ms(1)).contains(&Body::RetransmitRequest(RetransmitRequestRepr {
                target: B,
                target_incarnation: INC,
                from: 5,
                to: 6
            }))
        );
        // A restarted origin: chunks buffered from its old stream are never delivered.
        assert_eq!(
            r.handle_update(ms(2), B, INC, &update(7)),
            Delivery::Buffered
        );
        assert_eq!(
            r.handle_update(ms(2), B, Incarnation(101), &update(1)),
            Delivery::Deliver
        );
        assert!(r.poll_delivery().is_none());
        assert_eq!(
            r.handle_update(ms(2), B, Incarnation(101), &update(3)),
            Delivery::Buffered
        );
        assert_eq!(
            r.handle_update(ms(2), B, Incarnation(101), &update(4)),
            Delivery::Buffered
        );
    }

    #[test]
    fn incarnations_reset_or_are_ignored() {
        let mut r = node(4);
        assert_eq!(
            r.handle_update(ms(1), B, INC, &update(1)),
            Delivery::Deliver
        );
        assert_eq!(
            r.handle_update(ms(1), B, Incarnation(99), &update(2)),
            Delivery::Ignored
        );
        assert_eq!(
            r.handle_update(ms(1), B, Incarnation(101), &update(1)),
            Delivery::Deliver,
            "a restarted origin's stream starts again at 1"
        );
        assert_eq!(
            r.handle_update(ms(1), A, INC, &update(2)),
            Delivery::Ignored
        );
        assert_eq!(
            r.handle_update(ms(1), C, INC, &update(0)),
            Delivery::Ignored
        );
    }

    #[test]
    fn heartbeat_hwm_reveals_a_lost_tail() {
        let mut r = node(4);
        r.handle_update(ms(1), B, INC, &update(1));
        r.handle_hwm(ms(1), B, INC, 3);
        assert!(
            bodies(&mut r, ms(1)).contains(&Body::RetransmitRequest(RetransmitRequestRepr {
                target: B,
                target_incarnation: INC,
                from: 2,
                to: 3
            }))
        );
    }

    #[test]
    fn too_old_reply_skips_the_stream_and_asks_for_sync() {
        let mut r = node(4);
        r.handle_hwm(ms(1), B, INC, 50);
        let done = SyncDoneRepr {
            target: A,
            sync_id: 0,
            chunks: 0,
            rseq: 40,
        };
        r.handle_sync_done(ms(2), B, INC, &done);
        assert_eq!(r.poll_event(), Some(Event::NeedsSync { origin: B }));
        assert_eq!(r.delivered(B), 40);
        assert_eq!(
            r.handle_update(ms(2), B, INC, &update(41)),
            Delivery::Deliver
        );
        // A repeated reply does not move it back nor ask again.
        r.handle_sync_done(ms(2), B, INC, &done);
        assert_eq!(r.poll_event(), None);
    }

    fn request(sync_id: u32, cursor: u64) -> SyncRequestRepr {
        SyncRequestRepr {
            target: A,
            sync_id,
            cursor,
        }
    }

    #[test]
    fn sync_server_paces_by_window_and_finishes_with_done() {
        let config = Config {
            sync_window: 4,
            ..Config::default()
        };
        let mut r: Replicator<[Slot; 4], 4> = Replicator::new(A, INC, config, [Slot::EMPTY; 4]);
        r.write(ms(1), &entry(b"k", b"v")).unwrap();
        r.handle_sync_request(ms(1), B, INC, &request(9, 0));
        assert_eq!(
            r.poll_event(),
            Some(Event::SyncServeStarted { to: B, sync_id: 9 })
        );
        let idx: std::vec::Vec<u64> =
            core::iter::from_fn(|| r.poll_sync_send(ms(1)).map(|s| s.index)).collect();
        assert_eq!(idx, [0, 1, 2, 3], "window of 4");
        r.handle_sync_request(ms(2), B, INC, &request(9, 2));
        let idx: std::vec::Vec<u64> =
            core::iter::from_fn(|| r.poll_sync_send(ms(2)).map(|s| s.index)).collect();
        assert_eq!(idx, [4, 5]);
        // Chunk 3 was lost: resume from 3.
        r.handle_sync_request(ms(3), B, INC, &request(9, 3 | CURSOR_RESUME));
        assert_eq!(r.poll_sync_send(ms(3)).map(|s| s.index), Some(3));
        r.sync_exhausted(B, 9, 5);
        assert_eq!(r.poll_sync_send(ms(3)).map(|s| s.index), Some(4));
        assert_eq!(r.poll_sync_send(ms(3)), None);
        let done: std::vec::Vec<_> = bodies(&mut r, ms(3))
            .into_iter()
            .filter(|b| matches!(b, Body::SyncDone(_)))
            .collect();
        assert_eq!(
            done,
            [Body::SyncDone(SyncDoneRepr {
                target: B,
                sync_id: 9,
                chunks: 5,
                rseq: 1
            })]
        );
        r.handle_sync_request(ms(4), B, INC, &request(9, CURSOR_RELEASE));
        assert_eq!(
            r.poll_event(),
            Some(Event::SyncServeEnded { to: B, sync_id: 9 })
        );
    }

    #[test]
    fn sync_server_refuses_when_busy_or_unknown() {
        let mut r = node(4);
        for n in 2..=5 {
            r.handle_sync_request(ms(1), NodeId(n), INC, &request(1, 0));
        }
        r.handle_sync_request(ms(1), NodeId(6), INC, &request(1, 0));
        r.handle_sync_request(ms(1), NodeId(7), INC, &request(1, 10));
        let mut aborts = std::vec::Vec::new();
        while let Some(t) = r.poll_transmit(ms(1)) {
            if let Body::SyncDone(d) = t.body {
                assert_eq!(d.chunks, SYNC_ABORT);
                aborts.push((d.target, d.rseq));
            }
        }
        aborts.sort();
        assert_eq!(
            aborts,
            [(NodeId(6), ABORT_BUSY), (NodeId(7), ABORT_UNKNOWN)]
        );
        // A requester that went quiet is dropped after the serve timeout.
        let t = r.poll_timeout().unwrap();
        r.handle_timeout(t);
        let ended = core::iter::from_fn(|| r.poll_event())
            .filter(|e| matches!(e, Event::SyncServeEnded { .. }))
            .count();
        assert_eq!(ended, 4);
    }

    fn chunk(sync_id: u32, index: u64, offset: u32, total_len: u32) -> SyncChunkRepr<'static> {
        SyncChunkRepr {
            target: A,
            sync_id,
            index,
            entry: EntryRepr {
                op: Op::Put,
                version: 1,
                origin: B,
                expires_at_ms: 0,
                key: b"k",
                total_len,
                offset,
                value: b"v",
            },
        }
    }

    #[test]
    fn sync_requester_applies_in_order_and_whole_entries_ahead() {
        let mut r = node(4);
        let id = r.start_sync(ms(1), B);
        assert_eq!(
            r.poll_transmit(ms(1)).map(|t| t.body),
            Some(Body::SyncRequest(SyncRequestRepr {
                target: B,
                sync_id: id,
                cursor: 0
            }))
        );
        assert_eq!(
            r.handle_sync_chunk(ms(1), B, &chunk(id, 0, 0, 1)),
            SyncDelivery::Apply
        );
        // Index 1 lost. 2 is whole: applied; 3 is the middle of a value: dropped.
        assert_eq!(
            r.handle_sync_chunk(ms(1), B, &chunk(id, 2, 0, 1)),
            SyncDelivery::Apply
        );
        assert_eq!(
            r.handle_sync_chunk(ms(1), B, &chunk(id, 3, 1, 2)),
            SyncDelivery::Ignore
        );
        assert_eq!(
            r.poll_transmit(ms(1)).map(|t| t.body),
            Some(Body::SyncRequest(SyncRequestRepr {
                target: B,
                sync_id: id,
                cursor: 1 | CURSOR_RESUME
            }))
        );
        // Wrong transfer or sender: ignored.
        assert_eq!(
            r.handle_sync_chunk(ms(1), C, &chunk(id, 1, 0, 1)),
            SyncDelivery::Ignore
        );
        assert_eq!(
            r.handle_sync_chunk(ms(1), B, &chunk(id + 1, 1, 0, 1)),
            SyncDelivery::Ignore
        );
        assert_eq!(
            r.handle_sync_chunk(ms(2), B, &chunk(id, 1, 0, 1)),
            SyncDelivery::Apply
        );
        assert_eq!(
            r.handle_sync_chunk(ms(2), B, &chunk(id, 2, 0, 1)),
            SyncDelivery::Ignore
        );
        assert_eq!(
            r.handle_sync_chunk(ms(2), B, &chunk(id, 3, 1, 2)),
            SyncDelivery::Apply
        );
        let done = SyncDoneRepr {
            target: A,
            sync_id: id,
            chunks: 4,
            rseq: 17,
        };
        r.handle_sync_done(ms(2), B, INC, &done);
        assert_eq!(
            r.poll_event(),
            Some(Event::SyncComplete {
                target: B,
                sync_id: id,
                chunks: 4
            })
        );
        assert_eq!(r.syncing(), None);
        assert_eq!(r.delivered(B), 17, "the snapshot holds B's stream up to 17");
        let release = bodies(&mut r, ms(2)).into_iter().any(|b| {
            matches!(
                b,
                Body::SyncRequest(SyncRequestRepr {
                    cursor: CURSOR_RELEASE,
                    ..
                })
            )
        });
        assert!(release);
    }

    #[test]
    fn sync_requester_resumes_on_timeout_and_gives_up_when_stalled() {
        let mut r = node(4);
        let id = r.start_sync(ms(1), B);
        r.poll_transmit(ms(1));
        let t = r.poll_timeout().unwrap();
        assert_eq!(t, ms(1) + Config::default().rto);
        r.handle_timeout(t);
        assert_eq!(
            r.poll_transmit(t).map(|t| t.body),
            Some(Body::SyncRequest(SyncRequestRepr {
                target: B,
                sync_id: id,
                cursor: CURSOR_RESUME
            }))
        );
        let mut now = t;
        while r.syncing().is_some() {
            now = r.poll_timeout().unwrap();
            r.handle_timeout(now);
            while r.poll_transmit(now).is_some() {}
        }
        assert!(now >= ms(1) + Config::default().sync_stall_timeout);
        assert_eq!(
            r.poll_event(),
            Some(Event::SyncFailed {
                target: B,
                sync_id: id,
                reason: SyncFailure::Stalled
            })
        );
    }

    #[test]
    fn slot_is_constructible_on_the_heap_without_a_big_stack_array() {
        let ring = std::vec![Slot::EMPTY; 4096].into_boxed_slice();
        let mut r: Replicator<std::boxed::Box<[Slot]>, 4> =
            Replicator::new(A, INC, Config::default(), ring);
        let big = std::vec![1u8; 4096 * MAX_CHUNK];
        assert_eq!(r.write(ms(1), &entry(b"k", &big)), Ok(WriteId(4096)));
    }
}
