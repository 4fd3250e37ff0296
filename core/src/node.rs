//! One tandem node: the wire format, membership and replication tied into one sans-IO state
//! machine that takes and gives sealed datagrams.
//!
//! # Driving it
//! - Received datagram: [`Node::handle_datagram`]. A [`Received::Update`] or
//!   [`Received::SyncEntry`] carries a session entry (borrowed from the datagram) that the
//!   caller applies to its store at once; then it drains [`Node::poll_delivery`] (entries a
//!   retransmission made deliverable from the reorder buffer).
//! - Local write: apply it to the store, then [`Node::write`]; in synchronous mode the reply
//!   waits until [`Node::committed`] reaches the returned id.
//! - After every input batch and when `now >= poll_timeout()`: [`Node::handle_timeout`],
//!   then [`Node::poll_transmit`] until `None` (send each datagram), [`Node::poll_sync_send`]
//!   (build the asked-for chunk from the store snapshot and seal it with
//!   [`Node::seal_sync_chunk`]), then drain [`Node::poll_event`] and arm the timer at
//!   [`Node::poll_timeout`].
//!
//! Membership changes are fed to replication inside the node: a data peer coming up is
//! `peer_up`, one going down or leaving is `peer_down`, heartbeats' high-water marks reach the
//! receive streams. A witness takes no part in replication: it ignores session frames and
//! never counts as a peer a write waits for.
//!
//! # Freshness on first contact
//! A recorded frame opens and passes the replay window of a node that never saw it (one
//! that just started), so a run (sender, incarnation, salt) this node has not heard from
//! before is unverified: nothing it sends counts (no alive, no leader, no data; the caller
//! gets [`Received::Unverified`]) until it answered a challenge. The first frame of an
//! unverified run queues a [`ChallengeRepr`] to it; the run's answer, sealed in that run and
//! echoing the challenge's seq, verifies it ([`crate::crypto::ReplayTable::verify`]); a
//! challenge to this node's run is answered, and the next heartbeat is sent at once so that
//! the challenger can count the node without waiting an interval. One round trip on join
//! (docs/PROTOCOL.md, "Freshness"). A member declared down or gone leaves the replay table
//! (with an incarnation floor): if it comes back it is challenged again.
//!
//! # Own frames
//! Multicast loops a node's frames back to it. A frame with this node's id, incarnation and
//! salt is dropped from the header alone, before any AEAD work. One with this node's id and
//! another incarnation or salt comes from another process claiming this node's id: it is
//! opened (so that a forger cannot raise the alarm), challenged like any other run (so that
//! a recording cannot raise it either) and once verified reported as a duplicate node id
//! ([`membership::Event::DuplicateNodeId`], [`membership::Stats::duplicates`]), never used.
//!
//! # Panics
//! Never on input: every datagram goes through the checked parse and open paths.

use heapless::Deque;

use crate::crypto::{Aead, KeyRole, Keys, Receiver, Run, Sealer};
use crate::frame::{Body, EntryRepr, Error, HeaderRepr, Role, SessionUpdateRepr, SyncChunkRepr};
use crate::id::{ClusterId, Incarnation, KeyId, NodeId, Salt};
use crate::membership::{self, MemberState, Membership};
use crate::replication::{self, Delivery, Dest, Replicator, Slot, SyncDelivery, SyncSend};
use crate::time::Instant;

/// Keys each of a node's keyrings (control, data) holds: the active one plus room for
/// rotation.
pub const KEYS: usize = 4;
/// Events buffered between two `poll_event` drains, by default (the `E` parameter of
/// [`Node`]).
pub const EVENT_QUEUE: usize = 128;

/// Everything a node needs to start.
#[derive(Clone, Debug)]
pub struct Config {
    pub cluster: ClusterId,
    /// Drawn at random at every start by the caller (see [`Sealer::new`]).
    pub salt: Salt,
    pub membership: membership::Config,
    pub replication: replication::Config,
}

/// What the caller should know about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    Membership(membership::Event),
    Replication(replication::Event),
}

/// What a received datagram gave the caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Received<'a> {
    /// Consumed inside the node (heartbeat, ack, request, ...), or not for this node; `from`
    /// is the authenticated sender (this node for an own frame dropped from its header): a
    /// unicast transport learns where `from` is from it.
    Handled { from: NodeId },
    /// Authentic, but of a run that has not answered a challenge yet: it counted for
    /// nothing (a challenge to it may have been queued). It may be a recording, so `from`
    /// is no evidence of where that node is.
    Unverified { from: NodeId },
    /// A replicated write of `from`'s stream, in order: apply it now. Chunks of one value
    /// arrive back to back (`entry.offset` grows until `offset + value.len() == total_len`).
    Update { from: NodeId, entry: EntryRepr<'a> },
    /// An entry of a full state transfer from `from`: apply it by last-writer-wins.
    SyncEntry { from: NodeId, entry: EntryRepr<'a> },
}

/// One datagram to send: `len` bytes at the start of the caller's buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transmit {
    pub len: usize,
    /// Every peer (the multicast group), or one node (unicast transports may send it alone).
    pub to: Dest,
}

/// Receive and send counters, drops by reason (for `/metrics`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Datagrams accepted (authentic, fresh, this cluster).
    pub received: u64,
    pub sent: u64,
    /// Own frames looped back by multicast.
    pub own: u64,
    pub truncated: u64,
    pub malformed: u64,
    pub unsupported_version: u64,
    pub unknown_kind: u64,
    pub other_cluster: u64,
    pub unknown_key: u64,
    pub auth: u64,
    pub replay: u64,
    pub stale_incarnation: u64,
    pub too_many_senders: u64,
    /// Authentic frames of a run that had not answered a challenge: not used.
    pub unverified: u64,
    /// Runs that answered a challenge.
    pub verified: u64,
    /// Challenges and answers sent.
    pub challenges_sent: u64,
    /// Session frames a witness ignored, or frames addressed to another node.
    pub not_for_us: u64,
    /// Data frames ([`KeyRole::Data`]) a witness could not open, having no key of their id:
    /// every session frame it hears, when its keys are control keys only. Not in
    /// `unknown_key`.
    pub no_data_key: u64,
    /// State-transfer chunks opened, whether for this node or not (none, when destinations
    /// are honoured, on a node that pulls no transfer).
    pub sync_chunks_received: u64,
    /// Frames that could not be sealed (a bug or an exhausted seq space): not sent.
    pub seal_errors: u64,
    pub events_dropped: u64,
    /// Data peers the replication table had no room for.
    pub peers_refused: u64,
    /// Authentic frames of another process with this node's id (a twin).
    pub twin: u64,
}

impl Stats {
    const ZERO: Stats = Stats {
        received: 0,
        sent: 0,
        own: 0,
        truncated: 0,
        malformed: 0,
        unsupported_version: 0,
        unknown_kind: 0,
        other_cluster: 0,
        unknown_key: 0,
        auth: 0,
        replay: 0,
        stale_incarnation: 0,
        too_many_senders: 0,
        unverified: 0,
        verified: 0,
        challenges_sent: 0,
        not_for_us: 0,
        no_data_key: 0,
        sync_chunks_received: 0,
        seal_errors: 0,
        events_dropped: 0,
        peers_refused: 0,
        twin: 0,
    };

    fn count(&mut self, e: Error) {
        let c = match e {
            Error::Truncated => &mut self.truncated,
            Error::Malformed | Error::BufferTooSmall => &mut self.malformed,
            Error::UnsupportedVersion => &mut self.unsupported_version,
            Error::UnknownKind => &mut self.unknown_kind,
            Error::OtherCluster => &mut self.other_cluster,
            Error::UnknownKey => &mut self.unknown_key,
            Error::Auth => &mut self.auth,
            Error::Replay => &mut self.replay,
            Error::StaleIncarnation => &mut self.stale_incarnation,
            Error::TooManySenders => &mut self.too_many_senders,
        };
        *c += 1;
    }
}

/// One node with room for `N` peers, keys of provider `A`, a retransmit ring `S`, an
/// optional reorder buffer `B` (both caller-provided slot storage, see
/// [`crate::replication`]) and `E` events between two `poll_event` drains (also the size of
/// its membership's queue; a caller that drains after every input, as a microcontroller
/// loop does, can pick a few more than `N`).
pub struct Node<A: Aead, S, const N: usize = 16, B = [Slot; 0], const E: usize = EVENT_QUEUE> {
    me: NodeId,
    incarnation: Incarnation,
    /// This run (header bytes 10..26 of every frame it sends).
    run: Run,
    salt: Salt,
    witness: bool,
    keys: Keys<A, KEYS>,
    sealer: Sealer,
    receiver: Receiver<N>,
    membership: Membership<N, E>,
    replication: Replicator<S, N, B>,
    events: Deque<Event, E>,
    leave_pending: bool,
    stats: Stats,
}

impl<A, S, const N: usize, B, const E: usize> Node<A, S, N, B, E>
where
    A: Aead,
    S: AsRef<[Slot]> + AsMut<[Slot]>,
    B: AsRef<[Slot]> + AsMut<[Slot]>,
{
    /// A node with a reorder buffer (`reorder` slots shared by all origins).
    pub fn with_reorder(
        config: Config,
        keys: Keys<A, KEYS>,
        ring: S,
        reorder: B,
        now: Instant,
    ) -> Self {
        let mut n = Node::zeroed(ring, reorder);
        n.keys = keys;
        n.restart(&config, now);
        n
    }

    /// A node that holds its storage and nothing else: no key, no configuration, every
    /// other byte zero. A `const fn`, so a `static` can hold it (a microcontroller's node
    /// lives there) and, with zeroed slots, costs no flash: it lands in `.bss`. Call
    /// [`Node::start`] before anything else; until then it sends and accepts nothing.
    pub const fn zeroed(ring: S, reorder: B) -> Self {
        Node {
            me: NodeId(0),
            incarnation: Incarnation(0),
            run: Run([0; 16]),
            salt: Salt([0; 6]),
            witness: false,
            keys: Keys::empty(),
            sealer: Sealer::new(ClusterId(0), NodeId(0), Incarnation(0), Salt([0; 6])),
            receiver: Receiver::new(ClusterId(0)),
            membership: Membership::zeroed(),
            replication: Replicator::zeroed(ring, reorder),
            events: Deque::new(),
            leave_pending: false,
            stats: Stats::ZERO,
        }
    }

    /// Starts the node in place with `config` and one cluster key (`id`, active) in both
    /// roles (see [`Keys::reset`]; a witness then gets its keys with [`Node::set_keys`]): what [`Node::with_reorder`] builds, without the node passing
    /// through the stack. Whatever the node held before is dropped (a restart needs a
    /// greater incarnation and a new salt).
    pub fn start(&mut self, config: &Config, id: KeyId, key: A::Key, now: Instant) {
        self.keys.reset(id, key);
        self.restart(config, now);
    }

    /// Everything [`Node::start`] does but the keys.
    fn restart(&mut self, config: &Config, now: Instant) {
        let me = config.membership.node_id;
        let incarnation = config.membership.incarnation;
        self.me = me;
        self.incarnation = incarnation;
        self.run = Run::new(config.cluster, me, incarnation, config.salt);
        self.salt = config.salt;
        self.witness = config.membership.witness;
        self.sealer = Sealer::new(config.cluster, me, incarnation, config.salt);
        self.receiver.reset(config.cluster);
        self.membership.start(&config.membership, now);
        self.replication.start(me, incarnation, config.replication);
        self.events.clear();
        self.leave_pending = false;
        self.stats = Stats::ZERO;
    }

    // ---- inputs ----

    /// A datagram arrived at `now`. It is opened in place (`datagram` holds the plaintext
    /// afterwards). Errors say why it was dropped (and are counted in [`Node::stats`]);
    /// a dropped datagram changed nothing.
    pub fn handle_datagram<'a>(
        &mut self,
        now: Instant,
        datagram: &'a mut [u8],
    ) -> Result<Received<'a>, Error> {
        if let Some(Ok(run)) = datagram.get(10..26).map(<[u8; 16]>::try_from) {
            if Run(run) == self.run {
                self.stats.own += 1;
                return Ok(Received::Handled { from: self.me });
            }
        }
        // The kind byte (header byte 5): it picks the key, so it tells why a key was missing.
        let kind = datagram.get(5).copied();
        let frame = match self.receiver.receive(datagram, &mut self.keys) {
            Ok(f) => f,
            Err(e) => {
                // A witness's keys are control keys only (the daemon refuses it a data key).
                if e == Error::UnknownKey
                    && self.witness
                    && kind.map(KeyRole::of) == Some(KeyRole::Data)
                {
                    self.stats.no_data_key += 1;
                } else {
                    self.stats.count(e);
                }
                return Err(e);
            }
        };
        self.stats.received += 1;
        let from = frame.header.sender;
        let inc = frame.header.incarnation;
        if !self.fresh(now, &frame.header, &frame.body) {
            self.stats.unverified += 1;
            return Ok(Received::Unverified { from });
        }
        let out = match frame.body {
            // Authentic, and not this run's: another process holds this node's id. Falls
            // through to the pump, so the report leaves with this datagram.
            _ if from == self.me => {
                self.stats.twin += 1;
                self.membership.report_duplicate(from, inc);
                Received::Handled { from }
            }
            Body::Heartbeat(hb) => {
                self.membership.handle_heartbeat(now, from, inc, &hb);
                if !self.witness && hb.role != Role::Witness {
                    self.replication.handle_hwm(now, from, inc, hb.repl_hwm);
                }
                Received::Handled { from }
            }
            Body::Leave(_) => {
                self.membership.handle_leave(now, from, inc);
                Received::Handled { from }
            }
            // Answered in fresh().
            Body::Challenge(_) => Received::Handled { from },
            _ if self.witness => {
                self.stats.not_for_us += 1;
                Received::Handled { from }
            }
            Body::SessionUpdate(u) => match self.replication.handle_update(now, from, inc, &u) {
                Delivery::Deliver => Received::Update {
                    from,
                    entry: u.entry,
                },
                _ => Received::Handled { from },
            },
            Body::Ack(a) => {
                self.replication.handle_ack(now, from, &a);
                Received::Handled { from }
            }
            Body::RetransmitRequest(r) => {
                self.replication.handle_retransmit_request(now, from, &r);
                Received::Handled { from }
            }
            Body::SyncRequest(r) => {
                if r.target == self.me {
                    self.replication.handle_sync_request(now, from, inc, &r);
                } else {
                    self.stats.not_for_us += 1;
                }
                Received::Handled { from }
            }
            Body::SyncChunk(c) => {
                self.stats.sync_chunks_received += 1;
                match self.replication.handle_sync_chunk(now, from, &c) {
                    SyncDelivery::Apply => Received::SyncEntry {
                        from,
                        entry: c.entry,
                    },
                    SyncDelivery::Ignore => Received::Handled { from },
                }
            }
            Body::SyncDone(d) => {
                self.replication.handle_sync_done(now, from, inc, &d);
                Received::Handled { from }
            }
        };
        self.pump(now);
        Ok(out)
    }

    /// Deadlines that passed by `now` (heartbeat due, peer suspect/dead, resend, sync stall).
    pub fn handle_timeout(&mut self, now: Instant) {
        self.membership.handle_timeout(now);
        if !self.witness {
            self.replication.handle_timeout(now);
        }
        self.pump(now);
    }

    /// The caller's loop woke up late (it was not running, e.g. its virtual machine was
    /// descheduled): see [`Membership::stalled`]. Call after the datagrams that arrived were
    /// handled, before [`Node::handle_timeout`].
    pub fn handle_stall(&mut self, now: Instant) {
        self.membership.stalled(now);
    }

    /// Replicates a local write (already applied to the caller's store). Errors: see
    /// [`replication::Error`]; on error nothing was queued. A witness holds no sessions: the
    /// daemon refuses client writes on it before this.
    pub fn write(
        &mut self,
        now: Instant,
        entry: &EntryRepr<'_>,
    ) -> Result<replication::WriteId, replication::Error> {
        self.replication.write(now, entry)
    }

    /// Starts pulling the full state from `target` (on start, rejoin or `NeedsSync`).
    pub fn start_sync(&mut self, now: Instant, target: NodeId) -> u32 {
        self.replication.start_sync(now, target)
    }

    pub fn cancel_sync(&mut self) {
        self.replication.cancel_sync()
    }

    /// The caller's snapshot for the transfer `(to, sync_id)` ends before chunk
    /// `total_chunks`: SyncDone goes out next.
    pub fn sync_exhausted(&mut self, to: NodeId, sync_id: u32, total_chunks: u64) {
        self.replication.sync_exhausted(to, sync_id, total_chunks)
    }

    /// Graceful shutdown: the next `poll_transmit` sends Leave; heartbeats stop.
    pub fn leave(&mut self, now: Instant) {
        let _ = self.membership.leave(now);
        self.leave_pending = true;
    }

    /// Sets state flags this node advertises (e.g. SYNCING while it pulls the state).
    pub fn set_flags(&mut self, flags: crate::frame::StateFlags) {
        self.membership.set_flags(flags)
    }

    /// Replaces the keys (rotation). Frames in flight under a dropped key are refused.
    pub fn set_keys(&mut self, keys: Keys<A, KEYS>) {
        self.keys = keys;
    }

    // ---- outputs ----

    /// The next datagram to send, sealed into `out` (at least
    /// [`crate::frame::MAX_DATAGRAM`] bytes). Leave first, then a due heartbeat, then
    /// replication (acks and requests before data).
    pub fn poll_transmit(&mut self, now: Instant, out: &mut [u8]) -> Option<Transmit> {
        if self.leave_pending {
            self.leave_pending = false;
            let body = Body::Leave(crate::frame::LeaveRepr { reason: 0 });
            return self.seal(&body, Dest::All, out);
        }
        self.membership.set_repl_hwm(self.replication.hwm());
        while let Some(c) = self.receiver.replay().poll_challenge() {
            let to = Dest::Node(c.target);
            if let Some(t) = self.seal(&Body::Challenge(c), to, out) {
                self.stats.challenges_sent += 1;
                return Some(t);
            }
        }
        if let Some(hb) = self.membership.poll_heartbeat(now) {
            if let Some(t) = self.seal(&Body::Heartbeat(hb), Dest::All, out) {
                return Some(t);
            }
        }
        if self.witness {
            return None;
        }
        // Bounded: every replication transmit is consumed; seal errors are counted and skipped.
        for _ in 0..64 {
            let t = self.replication.poll_transmit(now)?;
            let (to, body) = (t.to, t.body);
            match self.sealer.seal(&body, &mut self.keys, out) {
                Ok(len) => {
                    self.stats.sent += 1;
                    return Some(Transmit { len, to });
                }
                Err(_) => self.stats.seal_errors += 1,
            }
        }
        None
    }

    /// A chunk of this node's snapshot that a transfer it serves needs next.
    pub fn poll_sync_send(&mut self, now: Instant) -> Option<SyncSend> {
        if self.witness {
            return None;
        }
        self.replication.poll_sync_send(now)
    }

    /// Seals a SyncChunk the caller built for a [`SyncSend`].
    pub fn seal_sync_chunk(
        &mut self,
        chunk: &SyncChunkRepr<'_>,
        out: &mut [u8],
    ) -> Option<Transmit> {
        self.seal(&Body::SyncChunk(*chunk), Dest::Node(chunk.target), out)
    }

    /// Buffered stream entries a retransmission made deliverable: apply each in order.
    pub fn poll_delivery(&mut self) -> Option<(NodeId, SessionUpdateRepr<'_>)> {
        self.replication.poll_delivery()
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// The earliest instant something must happen; may be in the past ("work now").
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.leave_pending {
            return Some(Instant::ZERO);
        }
        let m = self.membership.poll_timeout();
        let r = if self.witness {
            None
        } else {
            self.replication.poll_timeout()
        };
        match (m, r) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    // ---- queries ----

    /// Highest write id every live data peer holds: a synchronous write with id <= this is
    /// safe to acknowledge. Suspect peers still count (a write waits for them until they are
    /// declared dead); dead, left and witness members do not.
    pub fn committed(&self) -> u64 {
        let live = self.membership.members().filter(|m| {
            matches!(m.state, MemberState::Alive | MemberState::Suspect)
                && m.role != Role::Witness
                && m.node != self.me
        });
        self.replication.committed(live.map(|m| m.node))
    }

    /// Live data peers (alive or suspect, not witnesses): 0 means writes are unreplicated.
    pub fn live_data_peers(&self) -> usize {
        self.membership
            .members()
            .filter(|m| {
                matches!(m.state, MemberState::Alive | MemberState::Suspect)
                    && m.role != Role::Witness
                    && m.node != self.me
            })
            .count()
    }

    pub fn node_id(&self) -> NodeId {
        self.me
    }

    pub fn incarnation(&self) -> Incarnation {
        self.incarnation
    }

    pub fn is_witness(&self) -> bool {
        self.witness
    }

    pub fn membership(&self) -> &Membership<N, E> {
        &self.membership
    }

    pub fn replication(&self) -> &Replicator<S, N, B> {
        &self.replication
    }

    pub fn keys(&self) -> &Keys<A, KEYS> {
        &self.keys
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    // ---- internals ----

    /// Freshness on first contact (module docs): answers a challenge to this run, takes an
    /// answer to one of ours, and says whether the frame's run is verified. A frame of an
    /// unverified run makes a challenge to it due.
    fn fresh(&mut self, now: Instant, h: &HeaderRepr, body: &Body<'_>) -> bool {
        let (from, inc, salt) = (h.sender, h.incarnation, h.salt);
        if let Body::Challenge(c) = body {
            let to_us = c.target == self.me
                && c.target_incarnation == self.incarnation
                && c.target_salt.to_u64() == self.salt.to_u64();
            let replay = self.receiver.replay();
            if to_us {
                match c.answers {
                    None => {
                        if replay.challenged(from, inc, salt) {
                            // The challenger counts our heartbeats once it has our answer.
                            self.membership.heartbeat_now(now);
                        }
                    }
                    Some(seq) => {
                        if replay.verify(from, inc, salt, seq, h.seq) {
                            self.stats.verified += 1;
                            return true;
                        }
                    }
                }
            }
        }
        let next_seq = self.sealer.next_seq();
        self.receiver.replay().fresh(from, inc, salt, next_seq)
    }

    fn seal(&mut self, body: &Body<'_>, to: Dest, out: &mut [u8]) -> Option<Transmit> {
        match self.sealer.seal(body, &mut self.keys, out) {
            Ok(len) => {
                self.stats.sent += 1;
                Some(Transmit { len, to })
            }
            Err(_) => {
                self.stats.seal_errors += 1;
                None
            }
        }
    }

    /// Moves membership events into replication's peer table and the caller's queue.
    fn pump(&mut self, now: Instant) {
        while let Some(ev) = self.membership.poll_event() {
            match ev {
                membership::Event::MemberUp { node, incarnation }
                | membership::Event::MemberRejoined { node, incarnation } => {
                    let data_peer = self
                        .membership
                        .member(node)
                        .is_some_and(|m| m.role != Role::Witness);
                    if !self.witness
                        && data_peer
                        && self.replication.peer_up(now, node, incarnation).is_err()
                    {
                        self.stats.peers_refused += 1;
                    }
                }
                membership::Event::MemberDown { node } | membership::Event::MemberLeft { node } => {
                    self.replication.peer_down(node);
                    // If it comes back, it answers a challenge first; a run that left is over.
                    let left = matches!(ev, membership::Event::MemberLeft { .. });
                    self.receiver.replay().evict(node, left);
                }
                _ => {}
            }
            self.push(Event::Membership(ev));
        }
        while let Some(ev) = self.replication.poll_event() {
            self.push(Event::Replication(ev));
        }
    }

    fn push(&mut self, ev: Event) {
        if self.events.push_back(ev).is_err() {
            self.stats.events_dropped += 1;
        }
    }
}

impl<A, S, const N: usize, const E: usize> Node<A, S, N, [Slot; 0], E>
where
    A: Aead,
    S: AsRef<[Slot]> + AsMut<[Slot]>,
{
    /// A node without a reorder buffer (a lost frame makes later ones wait for its resend).
    pub fn new(config: Config, keys: Keys<A, KEYS>, ring: S, now: Instant) -> Self {
        Self::with_reorder(config, keys, ring, [], now)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::crypto::Aes128Gcm;
    use crate::frame::{Op, MAX_DATAGRAM};
    use crate::id::KeyId;
    use std::boxed::Box;
    use std::vec::Vec as StdVec;

    type TestNode = Node<Aes128Gcm, [Slot; 64], 8>;

    const KEY: [u8; 16] = [0x42; 16];

    /// Node `id` of cluster 7, incarnation 1000 + id, fast profile.
    fn config(id: u16, salt: Salt) -> Config {
        let mut m = membership::Config::new(NodeId(id), Incarnation(1000 + u32::from(id)));
        m.profile = crate::detector::Profile::FAST;
        Config {
            cluster: ClusterId(7),
            salt,
            membership: m,
            replication: replication::Config::default(),
        }
    }

    fn node(id: u16, now: Instant, key: [u8; 16]) -> TestNode {
        let config = config(id, Salt([id as u8; 6]));
        Node::new(config, Keys::both(KeyId(1), key), [Slot::EMPTY; 64], now)
    }

    /// Datagrams one node sends now (all of them, bounded).
    fn drain(n: &mut TestNode, now: Instant) -> StdVec<StdVec<u8>> {
        n.handle_timeout(now);
        let mut out = StdVec::new();
        let mut buf = [0u8; MAX_DATAGRAM];
        for _ in 0..1000 {
            match n.poll_transmit(now, &mut buf) {
                Some(t) => out.push(buf[..t.len].to_vec()),
                None => break,
            }
        }
        out
    }

    /// Runs the pair for `ms` milliseconds of virtual time with lossless delivery; returns
    /// the entries each node was handed.
    fn run(a: &mut TestNode, b: &mut TestNode, start: Instant, ms: u64) -> [StdVec<StdVec<u8>>; 2] {
        let mut got = [StdVec::new(), StdVec::new()];
        for step in 0..ms * 4 {
            let now = Instant::from_micros(start.as_micros() + step * 250);
            let from_a = drain(a, now);
            let from_b = drain(b, now);
            for (dst, batch, slot) in [(&mut *b, from_a, 1), (&mut *a, from_b, 0)] {
                for mut d in batch {
                    if let Ok(Received::Update { entry, .. } | Received::SyncEntry { entry, .. }) =
                        dst.handle_datagram(now, &mut d)
                    {
                        got[slot].push(entry.key.to_vec());
                    }
                }
            }
        }
        got
    }

    fn events(n: &mut TestNode) -> StdVec<Event> {
        core::iter::from_fn(|| n.poll_event()).collect()
    }

    #[test]
    fn two_nodes_meet_replicate_and_leave() {
        let t0 = Instant::from_millis(1);
        let (mut a, mut b) = (node(1, t0, KEY), node(2, t0, KEY));
        run(&mut a, &mut b, t0, 30);
        let ev = events(&mut a);
        assert!(ev.contains(&Event::Membership(membership::Event::MemberUp {
            node: NodeId(2),
            incarnation: Incarnation(1002)
        })));
        events(&mut b);
        assert_eq!(a.live_data_peers(), 1);

        let now = Instant::from_millis(31);
        let entry = EntryRepr {
            op: Op::Put,
            version: 1,
            origin: NodeId(1),
            expires_at_ms: 0,
            key: b"session:1",
            total_len: 5,
            offset: 0,
            value: b"hello",
        };
        let id = a.write(now, &entry).unwrap();
        assert!(a.committed() < id.0, "not committed before the peer acked");
        let got = run(&mut a, &mut b, now, 5);
        assert_eq!(got[1], [b"session:1".to_vec()]);
        assert!(a.committed() >= id.0);

        let now = Instant::from_millis(40);
        a.leave(now);
        let got = drain(&mut a, now);
        for mut d in got {
            let _ = b.handle_datagram(now, &mut d);
        }
        assert!(
            events(&mut b).contains(&Event::Membership(membership::Event::MemberLeft {
                node: NodeId(1)
            }))
        );
        assert_eq!(b.live_data_peers(), 0);
    }

    /// A node built by `zeroed` is inert (sends nothing, refuses every datagram) until
    /// `start`; started in place, it behaves as one built by `new`, and `start` again
    /// (a restart) forgets everything it knew.
    #[test]
    fn zeroed_node_starts_in_place() {
        let t0 = Instant::from_millis(1);
        let mut a: Box<TestNode> = Box::new(Node::zeroed([Slot::EMPTY; 64], []));
        assert!(drain(&mut a, t0).is_empty());
        let mut b = node(2, t0, KEY);
        let mut hb = drain(&mut b, t0).remove(0);
        assert_eq!(a.handle_datagram(t0, &mut hb), Err(Error::OtherCluster));

        let config = config(1, Salt([1; 6]));
        a.start(&config, KeyId(1), KEY, t0);
        run(&mut a, &mut b, t0, 30);
        assert_eq!(a.live_data_peers(), 1);
        assert_eq!(b.live_data_peers(), 1);
        assert_eq!(a.node_id(), NodeId(1));

        let now = Instant::from_millis(31);
        a.start(&config, KeyId(1), KEY, now);
        assert_eq!(a.live_data_peers(), 0);
        assert_eq!(a.stats().received, 0);
    }

    #[test]
    fn own_echo_is_dropped_before_opening() {
        let t0 = Instant::from_millis(1);
        let mut a = node(1, t0, KEY);
        let mut d = drain(&mut a, t0).remove(0);
        assert_eq!(
            a.handle_datagram(t0, &mut d),
            Ok(Received::Handled { from: NodeId(1) })
        );
        assert_eq!(a.stats().own, 1);
        assert_eq!(a.stats().received, 0);
    }

    /// Twins: one node id and one incarnation, two salts (a cloned VM). Each sees the
    /// other's frames as another process claiming its id, not as its own echo, and takes
    /// nothing from them; a forged frame with the id but a bad tag raises nothing.
    #[test]
    fn a_twin_with_this_nodes_id_is_reported_not_taken_as_own() {
        let t0 = Instant::from_millis(1);
        let mut a = node(1, t0, KEY);
        let twin_config = config(1, Salt([0xee; 6]));
        let mut twin = Node::new(
            twin_config,
            Keys::both(KeyId(1), KEY),
            [Slot::EMPTY; 64],
            t0,
        );
        let mut forged = drain(&mut twin, t0).remove(0);
        let last = forged.len() - 1;
        forged[last] ^= 1;
        assert_eq!(a.handle_datagram(t0, &mut forged), Err(Error::Auth));
        assert_eq!(a.membership().stats().duplicates, 0);
        run(&mut a, &mut twin, t0, 30);
        assert_eq!(
            a.stats().own,
            0,
            "the twin's frames are not this node's echo"
        );
        assert!(a.membership().stats().duplicates > 0);
        assert!(a.stats().twin > 0);
        assert!(twin.membership().stats().duplicates > 0);
        assert_eq!(a.live_data_peers(), 0);
        let mut events = StdVec::new();
        while let Some(e) = a.poll_event() {
            events.push(e);
        }
        assert!(
            events.contains(&Event::Membership(membership::Event::DuplicateNodeId {
                node: NodeId(1),
                incarnation: Incarnation(1001),
            }))
        );
    }

    /// Freshness on first contact: a's recorded frames (heartbeats as leader, a write) handed
    /// to a fresh b while a is gone make nothing of a count on b: no member, no leader, no
    /// entry; b challenges (once per recorded frame at most) and nobody answers. With a
    /// live, the pair meets after one challenge round trip each way.
    #[test]
    fn a_recording_of_a_gone_run_never_counts_on_a_fresh_node() {
        let t0 = Instant::from_millis(1);
        let (mut a, mut b) = (node(1, t0, KEY), node(2, t0, KEY));
        run(&mut a, &mut b, t0, 30);
        assert_eq!(b.live_data_peers(), 1);
        let now = Instant::from_millis(31);
        let entry = EntryRepr {
            op: Op::Put,
            version: 1,
            origin: NodeId(1),
            expires_at_ms: 0,
            key: b"login",
            total_len: 5,
            offset: 0,
            value: b"alice",
        };
        a.write(now, &entry).unwrap();
        let mut recording = StdVec::new();
        for step in 0..40 {
            recording.extend(drain(
                &mut a,
                Instant::from_micros(now.as_micros() + step * 250),
            ));
        }
        assert!(recording.len() > 5);
        // a is gone; b restarts empty.
        let later = Instant::from_millis(50);
        let mut fresh = node(2, later, KEY);
        for mut d in recording.clone() {
            let got = fresh.handle_datagram(later, &mut d);
            assert!(
                matches!(got, Ok(Received::Unverified { from: NodeId(1) })),
                "{got:?}"
            );
        }
        assert_eq!(fresh.live_data_peers(), 0);
        assert!(fresh.membership().member(NodeId(1)).is_none());
        assert_ne!(fresh.membership().leader(), Some(NodeId(1)));
        assert_eq!(fresh.stats().unverified, recording.len() as u64);
        let sent = drain(&mut fresh, later);
        assert!(fresh.stats().challenges_sent >= 1, "{sent:?}");
        assert_eq!(fresh.stats().verified, 0);
        // Replayed again: refused by the window, still nothing counts.
        for mut d in recording {
            assert!(fresh.handle_datagram(later, &mut d).is_err());
        }
        // a restarted (a new run) meets the fresh b: one challenge round trip each way.
        let mut c = config(1, Salt([9; 6]));
        c.membership.incarnation = Incarnation(3001);
        let mut a2 = Node::new(c, Keys::both(KeyId(1), KEY), [Slot::EMPTY; 64], later);
        run(&mut a2, &mut fresh, later, 5);
        assert_eq!(fresh.live_data_peers(), 1);
        assert_eq!(a2.live_data_peers(), 1);
        assert_eq!(fresh.stats().verified, 1);
        assert_eq!(a2.stats().verified, 1);
    }

    #[test]
    fn wrong_key_never_joins_and_is_counted() {
        let t0 = Instant::from_millis(1);
        let (mut a, mut b) = (node(1, t0, KEY), node(2, t0, [0x17; 16]));
        run(&mut a, &mut b, t0, 30);
        assert_eq!(a.live_data_peers(), 0);
        assert!(a.stats().auth > 0);
        assert!(b.stats().auth > 0);
    }

    #[test]
    fn replayed_datagram_is_refused() {
        let t0 = Instant::from_millis(1);
        let (mut a, mut b) = (node(1, t0, KEY), node(2, t0, KEY));
        let d = drain(&mut a, t0).remove(0);
        let mut first = d.clone();
        assert!(b.handle_datagram(t0, &mut first).is_ok());
        let mut again = d;
        assert_eq!(b.handle_datagram(t0, &mut again), Err(Error::Replay));
        assert_eq!(b.stats().replay, 1);
    }

    #[test]
    fn dead_peer_stops_holding_writes_back() {
        let t0 = Instant::from_millis(1);
        let (mut a, mut b) = (node(1, t0, KEY), node(2, t0, KEY));
        run(&mut a, &mut b, t0, 30);
        let now = Instant::from_millis(31);
        let entry = EntryRepr {
            op: Op::Put,
            version: 1,
            origin: NodeId(1),
            expires_at_ms: 0,
            key: b"k",
            total_len: 1,
            offset: 0,
            value: b"v",
        };
        let id = a.write(now, &entry).unwrap();
        // b is gone: a only runs on its own until the detector declares b dead.
        for step in 0..100 {
            drain(&mut a, Instant::from_micros(now.as_micros() + step * 250));
        }
        assert_eq!(a.live_data_peers(), 0);
        assert!(a.committed() >= id.0);
    }

    /// Header seq of a sealed datagram (bytes 26..32).
    fn seq_of(d: &[u8]) -> u64 {
        d[26..32].iter().fold(0, |s, &b| s << 8 | u64::from(b))
    }

    /// A joining run is heard without a gap once it answered: the heartbeat it sends with its
    /// answer and every later one count on the challenger, which never suspects it. Modelled
    /// as tandemd delivers: heartbeats wait in the receiver's heartbeat socket until its next
    /// tick (every 2 ms), other frames arrive one step (250 us) later; b starts at 8 phases of
    /// a's tick. Only heartbeats sealed before the answer are refused (they may be
    /// recordings): at some phase b seals a regular heartbeat just before it answers, and a
    /// refuses it (tandemd's one `reason="replay"` drop per join).
    #[test]
    fn a_run_that_answered_is_heard_without_a_gap() {
        let t0 = Instant::from_millis(1);
        let mut refused_some = false;
        for phase in 0..8 {
            let start = t0.as_micros() + 10_000 + phase * 250;
            let mut a = node(1, t0, KEY);
            for step in 0..(40 + phase) {
                drain(&mut a, Instant::from_micros(t0.as_micros() + step * 250));
            }
            let mut b = node(2, Instant::from_micros(start), KEY);
            let (mut hb_to_a, mut hb_to_b): (StdVec<StdVec<u8>>, StdVec<StdVec<u8>>) =
                Default::default();
            let (mut to_a, mut to_b): (StdVec<StdVec<u8>>, StdVec<StdVec<u8>>) = Default::default();
            let (mut sent, mut counted, mut refused) =
                (StdVec::new(), StdVec::new(), StdVec::new());
            let (mut answer, mut alive_at) = (None, None);
            for step in 0..200 {
                let us = start + step * 250;
                let now = Instant::from_micros(us);
                for mut d in to_b.drain(..) {
                    let _ = b.handle_datagram(now, &mut d);
                }
                for mut d in to_a.drain(..) {
                    let (seq, verified) = (seq_of(&d), a.stats().verified);
                    let _ = a.handle_datagram(now, &mut d);
                    if a.stats().verified > verified {
                        answer = Some(seq);
                    }
                }
                if us % 2000 == 1000 {
                    for mut d in hb_to_b.drain(..) {
                        let _ = b.handle_datagram(now, &mut d);
                    }
                }
                if us % 2000 == 0 {
                    for mut d in hb_to_a.drain(..) {
                        let seq = seq_of(&d);
                        match a.handle_datagram(now, &mut d) {
                            Ok(Received::Handled { .. }) => counted.push(seq),
                            Ok(_) => {}
                            Err(e) => refused.push((seq, e)),
                        }
                    }
                }
                for d in drain(&mut a, now) {
                    match d[5] {
                        0x01 => hb_to_b.push(d),
                        _ => to_b.push(d),
                    }
                }
                for d in drain(&mut b, now) {
                    sent.push((seq_of(&d), d[5], us));
                    match d[5] {
                        0x01 => hb_to_a.push(d),
                        _ => to_a.push(d),
                    }
                }
                let state = a.membership().member(NodeId(2)).map(|m| m.state);
                if state == Some(MemberState::Alive) && alive_at.is_none() {
                    alive_at = Some(us);
                }
                if alive_at.is_some() {
                    assert_eq!(
                        state,
                        Some(MemberState::Alive),
                        "phase {phase}: suspected at {us}"
                    );
                }
            }
            let answer = answer.expect("b never verified on a");
            let alive_at = alive_at.expect("b never alive on a");
            assert!(
                alive_at - start <= 4_000,
                "phase {phase}: alive after {} us",
                alive_at - start
            );
            // b sent a heartbeat with its answer.
            let answered_at = sent.iter().find(|s| s.0 == answer).map(|s| s.2);
            let heartbeats = sent.iter().filter(|s| s.1 == 0x01);
            let first = heartbeats.clone().find(|s| s.0 > answer).map(|s| s.2);
            assert_eq!(first, answered_at, "phase {phase}: {sent:?}");
            // Every heartbeat b sealed after its answer counted on a, in order (the last one
            // may still wait in a's queue); only older ones were refused.
            let after: StdVec<u64> = heartbeats.map(|s| s.0).filter(|&s| s > answer).collect();
            assert!(after.len() >= 20, "phase {phase}: {sent:?}");
            assert_eq!(
                counted[..],
                after[..counted.len()],
                "phase {phase}: answer {answer}"
            );
            assert!(
                counted.len() + 1 >= after.len(),
                "phase {phase}: {counted:?} of {after:?}"
            );
            assert!(
                refused.iter().all(|&(s, _)| s < answer),
                "phase {phase}: {refused:?}"
            );
            refused_some |= !refused.is_empty();
        }
        assert!(
            refused_some,
            "no phase had a heartbeat sealed just before the answer"
        );
    }
}
