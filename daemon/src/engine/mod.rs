//! The one seam between the event loop and the protocol: an [`Engine`] owns the core node
//! (through [`Cluster`]) and the replicated session store ([`Sessions`]), and is driven like
//! the core (`tandem_core::node`, "Driving it"), with both clocks passed in: `now` (the
//! loop's monotonic [`Instant`]) and `wall_ms` (unix milliseconds, for session expiry).
//!
//! | input                                  | output                                        |
//! |----------------------------------------|-----------------------------------------------|
//! | [`Engine::handle_datagram`]            | [`Engine::poll_transmit`] (datagram, [`Dest`]) |
//! | [`Engine::handle_timeout`]             | [`Engine::poll_event`] (hooks)                |
//! | [`Engine::client`] + [`Engine::handle_writes`] | [`Engine::poll_completion`] (held replies) |
//! | [`Engine::leave`], [`Engine::reload_keys`] | [`Engine::poll_timeout`], [`Engine::status`], [`Engine::cluster_metrics`] |
//!
//! Call [`Engine::handle_timeout`] after every batch of input (it also moves the core's
//! events into the store's state transfers and local writes into replication), then drain
//! `poll_transmit`, `poll_event` and `poll_completion`, and wait until `poll_timeout`. The
//! event loop does the I/O around it; tests drive several engines over a simulated network.
//!
//! The Engine routes between its two parts, so neither calls the other: a datagram's session
//! entries go from the [`Cluster`] to the [`Sessions`], a state-transfer chunk is asked for by
//! the cluster's pacer, built by the sessions' snapshot and sealed by the cluster, and the
//! core's events reach the sessions through [`Engine::handle_timeout`]. The engine folder is
//! the daemon's bottom layer: it imports nothing of the folders above it
//! (`scripts/module-cycles.py`).
//!
//! Panics: never on input.

pub(crate) mod cipher;
pub mod cluster;
pub(crate) mod counters;
pub(crate) mod node;
pub(crate) mod sessions;
pub mod status;
pub mod store;
pub mod value;
pub mod writes;

use std::collections::VecDeque;
use std::time::Duration;

use tandem_core::datagram::EntrySource;
use tandem_core::membership::Membership;
use tandem_core::replication::Dest;
use tandem_core::{Instant, NodeId};

use crate::engine::cluster::{Cluster, ClusterConfig, ClusterEvent, KeySet, ReloadError};
use crate::engine::node::MAX_PEERS;
use crate::engine::sessions::{Sessions, Sink, SyncChunk, SyncState};
use crate::engine::status::{Backlog, StatusSnapshot, SyncPhase, SyncProgress};
use crate::engine::store::{Limits, Store};
use crate::engine::writes::{ReplicationMode, ReplyTicket, WriteFailure};

/// One datagram of [`Engine::poll_transmit`]: `len` bytes at the start of the caller's
/// buffer, for `to`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Outgoing {
    pub len: usize,
    pub to: Dest,
    /// A state-transfer chunk (bulk: the loop bounds how many go per batch).
    pub chunk: bool,
}

/// A write whose replication finished: release its held reply.
pub(crate) type Completion = (ReplyTicket, Result<(), WriteFailure>);

/// A node's protocol state: the core node and the session store (see the module docs).
pub struct Engine {
    cluster: Cluster,
    sessions: Sessions,
    /// Completions taken from the store, not yet polled.
    completions: VecDeque<Completion>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("cluster", &self.cluster)
            .finish_non_exhaustive()
    }
}

impl Engine {
    /// A node of `cfg` holding sessions within `limits`, started at `now`.
    pub fn new(cfg: ClusterConfig, limits: Limits, mode: ReplicationMode, now: Instant) -> Engine {
        let witness = cfg.witness;
        let node_id = cfg.node_id;
        let cluster = Cluster::new(cfg, now);
        let sessions = Sessions::new(
            Store::new(node_id, limits),
            mode,
            witness,
            now,
            cluster.detection_span(),
        );
        Engine {
            cluster,
            sessions,
            completions: VecDeque::new(),
        }
    }

    // ---- inputs ----

    /// One received datagram (`data` is opened in place), `arrival` its receive time. Returns
    /// the peer the core authenticated it from (a unicast socket learns its address).
    pub fn handle_datagram(
        &mut self,
        arrival: Instant,
        wall_ms: u64,
        data: &mut [u8],
    ) -> Option<NodeId> {
        let sessions = &mut self.sessions;
        self.cluster
            .handle_datagram(arrival, data, |src, from, e| match src {
                EntrySource::Stream => sessions.apply_stream(from, e, wall_ms),
                EntrySource::Sync => sessions.apply_sync(from, e, wall_ms),
            })
    }

    /// The loop woke up late: see [`Cluster::handle_stall`]. Before `handle_timeout`.
    pub(crate) fn handle_stall(&mut self, now: Instant) {
        self.cluster.handle_stall(now);
    }

    /// Fires what is due by `now`, then moves the core's events into state transfers and
    /// queued local writes into replication. Cheap when nothing is due: call after every
    /// input batch.
    pub fn handle_timeout(&mut self, now: Instant, _wall_ms: u64) {
        if self.cluster.poll_timeout().is_some_and(|t| t <= now) {
            self.cluster.handle_timeout(now);
        }
        // Bounded by the cluster's core event queue.
        while let Some(ev) = self.cluster.poll_core_event() {
            self.sessions
                .on_core_event(self.cluster.node_mut(), ev, now);
        }
        self.sessions.on_tick(self.cluster.node_mut(), now);
        self.handle_writes(now);
    }

    /// Moves client writes (queued through [`Engine::client`]) into replication, up to the
    /// core's back-pressure.
    pub fn handle_writes(&mut self, now: Instant) {
        self.sessions.flush(self.cluster.node_mut(), now);
    }

    /// The store and the write sink for one client command at `wall_ms`.
    pub fn client(&mut self, wall_ms: u64) -> (&mut Store, Sink<'_>) {
        let isolated = self.cluster.node().membership().isolated();
        self.sessions.split(wall_ms, isolated)
    }

    /// Graceful leave: the next `poll_transmit` gives the Leave; nothing follows it.
    pub fn leave(&mut self, now: Instant) {
        self.cluster.leave(now);
    }

    pub fn reload_keys(&mut self, keys: &KeySet) -> Result<(), ReloadError> {
        self.cluster.reload_keys(keys)
    }

    /// Sizes the store's key map for its `max_sessions` at once (see [`Store::presize`]).
    pub(crate) fn presize_store(&mut self) {
        self.sessions.store.presize();
    }

    /// Frees expired sessions, at most `budget`; the wall time of the next expiry.
    pub fn sweep(&mut self, wall_ms: u64, budget: usize) -> Option<u64> {
        self.sessions.store.sweep(wall_ms, budget)
    }

    // ---- outputs ----

    /// The next datagram into `buf` (at least [`crate::io::net::SLOT_BYTES`]), with where it
    /// goes; with `sync`, a state-transfer chunk once nothing else is due (the loop leaves
    /// them out of its heartbeat path).
    pub fn poll_transmit(
        &mut self,
        now: Instant,
        wall_ms: u64,
        buf: &mut [u8],
        sync: bool,
    ) -> Option<Outgoing> {
        if let Some((len, to)) = self.cluster.poll_transmit(now, buf) {
            return Some(Outgoing {
                len,
                to,
                chunk: false,
            });
        }
        if !sync {
            return None;
        }
        let (len, to) = self.poll_sync_chunk(now, wall_ms, buf)?;
        Some(Outgoing {
            len,
            to,
            chunk: true,
        })
    }

    /// The next state-transfer chunk the core asks for, built from the store's snapshot and
    /// sealed into `buf`.
    fn poll_sync_chunk(
        &mut self,
        now: Instant,
        wall_ms: u64,
        buf: &mut [u8],
    ) -> Option<(usize, Dest)> {
        // Bounded: each turn either seals a chunk or ends one exhausted transfer.
        for _ in 0..16 {
            let s = self.cluster.poll_sync_send(now)?;
            match self.sessions.sync_chunk(&s, wall_ms) {
                SyncChunk::Chunk(c) => return self.cluster.seal_sync_chunk(&c, buf),
                SyncChunk::Exhausted(total) => self.cluster.sync_exhausted(&s, total),
            }
        }
        None
    }

    /// A membership or role change (each runs the `--on-change` hook).
    pub fn poll_event(&mut self) -> Option<ClusterEvent> {
        self.cluster.poll_event()
    }

    /// A write whose replication finished (or failed): release its held reply. Drain it
    /// whole: the store counts the completions still to deliver.
    pub fn poll_completion(&mut self) -> Option<Completion> {
        if self.completions.is_empty() {
            self.completions.extend(self.sessions.take_completed());
        }
        self.completions.pop_front()
    }

    /// The earliest instant something is due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        [self.cluster.poll_timeout(), self.sessions.poll_timeout()]
            .into_iter()
            .flatten()
            .min()
    }

    // ---- read-only views ----

    pub fn node_id(&self) -> NodeId {
        self.cluster.node_id()
    }

    /// Announced and heard a peer, or alone after one detection period: time for READY=1.
    pub fn joined(&self, now: Instant) -> bool {
        self.cluster.joined(now)
    }

    pub fn detection_span(&self) -> Duration {
        self.cluster.detection_span()
    }

    pub fn membership(&self) -> &Membership<MAX_PEERS, { tandem_core::node::EVENT_QUEUE }> {
        self.cluster.node().membership()
    }

    /// Holds the cluster's full session state (or is alone).
    pub fn synced(&self) -> bool {
        self.sessions.synced()
    }

    pub fn store(&self) -> &Store {
        &self.sessions.store
    }

    /// `/status`: membership, role, sync progress and replication backlog.
    pub fn status(&self, now: Instant) -> StatusSnapshot {
        let mut s = self.cluster.status(now);
        s.synced = self.sessions.synced();
        s.sync = SyncProgress {
            phase: match self.sessions.sync_state() {
                SyncState::Waiting { .. } => SyncPhase::Waiting,
                SyncState::Pulling { target } => SyncPhase::Pulling(target),
                SyncState::Synced => SyncPhase::Synced,
            },
            sessions: self.sessions.store.len() as u64,
        };
        let node = self.cluster.node();
        s.backlog = Backlog {
            peers: node.live_data_peers() as u64,
            written: node.replication().written(),
            committed: node.committed(),
            writes_held: self.sessions.held() as u64,
            outbox: self.sessions.outbox_len() as u64,
        };
        s
    }

    /// The cluster path's counters (frames, drops, detections).
    pub fn cluster_metrics(&self) -> crate::engine::counters::ClusterMetrics {
        self.cluster.metrics()
    }

    /// The replicated session store, for `/metrics` ([`crate::ops::metrics`]).
    pub(crate) fn sessions(&self) -> &Sessions {
        &self.sessions
    }

    /// The core node, read-only, for `/metrics`.
    pub(crate) fn node(&self) -> &crate::engine::node::CoreNode {
        self.cluster.node()
    }
}
