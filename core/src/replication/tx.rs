//! Sender side: this node's replication stream, its retransmit ring and per-peer acks.

use core::time::Duration;

use heapless::Vec;

use super::{Config, Error, WriteId, MAX_CHUNK};
use crate::frame::{EntryRepr, Op, SessionUpdateRepr, MAX_KEY_LEN};
use crate::id::{Incarnation, NodeId};
use crate::time::Instant;

/// One ring slot: a compact copy of one SessionUpdate chunk (metadata, key, chunk bytes).
///
/// About 1.3 KiB. Build large rings on the heap without a big stack temporary:
/// `vec![Slot::EMPTY; n].into_boxed_slice()`.
#[derive(Clone, Copy, Debug)]
pub struct Slot {
    /// 0 = empty (rseqs start at 1).
    pub(super) rseq: u64,
    /// In a reorder buffer: the stream (origin node, incarnation) the chunk belongs to.
    pub(super) stream: NodeId,
    pub(super) stream_incarnation: Incarnation,
    version: u64,
    expires_at_ms: u64,
    total_len: u32,
    offset: u32,
    origin: NodeId,
    op: Op,
    key_len: u16,
    len: u16,
    key: [u8; MAX_KEY_LEN],
    data: [u8; MAX_CHUNK],
}

impl Slot {
    pub const EMPTY: Slot = Slot {
        rseq: 0,
        stream: NodeId(0),
        stream_incarnation: Incarnation(0),
        version: 0,
        expires_at_ms: 0,
        total_len: 0,
        offset: 0,
        origin: NodeId(0),
        op: Op::Put,
        key_len: 0,
        len: 0,
        key: [0; MAX_KEY_LEN],
        data: [0; MAX_CHUNK],
    };

    /// Copies a received chunk in; false (and unchanged) if it does not fit a slot.
    pub(super) fn store(&mut self, u: &SessionUpdateRepr<'_>) -> bool {
        let e = &u.entry;
        let (Some(key), Some(data)) = (
            self.key.get_mut(..e.key.len()),
            self.data.get_mut(..e.value.len()),
        ) else {
            return false;
        };
        key.copy_from_slice(e.key);
        data.copy_from_slice(e.value);
        self.key_len = e.key.len() as u16;
        self.len = e.value.len() as u16;
        self.rseq = u.rseq;
        self.op = e.op;
        self.version = e.version;
        self.origin = e.origin;
        self.expires_at_ms = e.expires_at_ms;
        self.total_len = e.total_len;
        self.offset = e.offset;
        true
    }

    /// The stored chunk as the body to seal and send.
    pub(super) fn update(&self) -> SessionUpdateRepr<'_> {
        SessionUpdateRepr {
            rseq: self.rseq,
            entry: EntryRepr {
                op: self.op,
                version: self.version,
                origin: self.origin,
                expires_at_ms: self.expires_at_ms,
                // Lengths were checked against the array sizes when stored.
                key: self.key.get(..usize::from(self.key_len)).unwrap_or(&[]),
                total_len: self.total_len,
                offset: self.offset,
                value: self.data.get(..usize::from(self.len)).unwrap_or(&[]),
            },
        }
    }
}

impl Default for Slot {
    fn default() -> Self {
        Slot::EMPTY
    }
}

/// What this node knows about one peer's position in its stream.
#[derive(Clone, Copy, Debug)]
struct PeerTx {
    node: NodeId,
    incarnation: Incarnation,
    /// Declared live by the caller: counts for overwrite protection and tail probes.
    live: bool,
    /// Highest rseq the peer acked (cumulative).
    acked: u64,
}

/// A retransmission owed to one requester.
#[derive(Clone, Copy, Debug)]
enum Owed {
    /// Resend `next..=end`, one chunk per `poll`.
    Range { next: u64, end: u64 },
    /// The requested range left the ring: tell the requester to skip and sync.
    TooOld,
}

/// An [`Owed`] and its requester as stored: `next == 0` is `TooOld` (rseqs start at 1), so
/// no enum tag: 24 bytes instead of 32 (RAM per member on a microcontroller).
#[derive(Clone, Copy, Debug)]
struct Owing {
    to: NodeId,
    next: u64,
    end: u64,
}

impl Owing {
    fn new(to: NodeId, owed: Owed) -> Owing {
        let mut o = Owing {
            to,
            next: 0,
            end: 0,
        };
        o.set(owed);
        o
    }

    fn owed(&self) -> Owed {
        match self.next {
            0 => Owed::TooOld,
            next => Owed::Range {
                next,
                end: self.end,
            },
        }
    }

    fn set(&mut self, owed: Owed) {
        (self.next, self.end) = match owed {
            Owed::TooOld => (0, 0),
            // `next >= 1`: a request for rseq 0 is refused before it is owed.
            Owed::Range { next, end } => (next, end),
        };
    }
}

pub(super) enum TxOut {
    /// Send ring slot `rseq` to `to` (None = every peer).
    Update { to: Option<NodeId>, rseq: u64 },
    /// Tell `to` that everything up to `oldest_missing` is gone from the ring.
    TooOld { to: NodeId, last_gone: u64 },
}

pub(super) struct Tx<S, const P: usize> {
    ring: S,
    /// Last rseq assigned by `write`.
    written: u64,
    /// Last rseq handed out by `poll` (the heartbeat's `repl_hwm`).
    sent: u64,
    peers: Vec<PeerTx, P>,
    owed: Vec<Owing, P>,
    probe_at: Instant,
    probe_pending: bool,
    rto: Duration,
    pub(super) retransmits: u64,
}

impl<S: AsRef<[Slot]> + AsMut<[Slot]>, const P: usize> Tx<S, P> {
    /// Holds `ring`; not usable until [`Tx::reset`].
    pub(super) const fn zeroed(ring: S) -> Self {
        Tx {
            ring,
            written: 0,
            sent: 0,
            peers: Vec::new(),
            owed: Vec::new(),
            probe_at: Instant::ZERO,
            probe_pending: false,
            rto: Duration::ZERO,
            retransmits: 0,
        }
    }

    /// A new stream over the same ring, whose slots are emptied.
    pub(super) fn reset(&mut self, config: &Config) {
        self.ring.as_mut().iter_mut().for_each(|s| s.rseq = 0);
        self.written = 0;
        self.sent = 0;
        self.peers.clear();
        self.owed.clear();
        self.probe_at = Instant::NEVER;
        self.probe_pending = false;
        self.rto = config.rto;
        self.retransmits = 0;
    }

    pub(super) fn written(&self) -> u64 {
        self.written
    }

    pub(super) fn sent(&self) -> u64 {
        self.sent
    }

    fn len(&self) -> u64 {
        self.ring.as_ref().len() as u64
    }

    /// Oldest rseq the ring still holds (`written + 1` when empty).
    fn oldest(&self) -> u64 {
        self.written
            .saturating_sub(self.len())
            .saturating_add(1)
            .max(1)
    }

    fn slot(&self, rseq: u64) -> Option<&Slot> {
        let len = self.len();
        if len == 0 {
            return None;
        }
        let slot = self.ring.as_ref().get(usize::try_from(rseq % len).ok()?)?;
        (slot.rseq == rseq && rseq != 0).then_some(slot)
    }

    pub(super) fn update(&self, rseq: u64) -> Option<SessionUpdateRepr<'_>> {
        self.slot(rseq).map(Slot::update)
    }

    fn min_live_acked(&self) -> Option<u64> {
        self.peers.iter().filter(|p| p.live).map(|p| p.acked).min()
    }

    pub(super) fn write(
        &mut self,
        entry: &EntryRepr<'_>,
        config: &Config,
    ) -> Result<WriteId, Error> {
        if entry.key.len() > MAX_KEY_LEN {
            return Err(Error::KeyTooLong);
        }
        let total_len = u32::try_from(entry.value.len()).map_err(|_| Error::TooLarge)?;
        let chunks = (entry.value.len().div_ceil(MAX_CHUNK)).max(1) as u64;
        if chunks > self.len() {
            return Err(Error::TooLarge);
        }
        // Slots this write overwrites hold rseqs up to `last_evicted`.
        let last_evicted = (self.written + chunks).saturating_sub(self.len());
        if last_evicted > self.sent {
            return Err(Error::Backpressure);
        }
        if !config.overwrite_unacked && self.min_live_acked().is_some_and(|a| a < last_evicted) {
            return Err(Error::Backpressure);
        }
        let len = self.len();
        let mut pieces = entry.value.chunks(MAX_CHUNK);
        for i in 0..chunks {
            let rseq = self.written + 1 + i;
            let piece = pieces.next().unwrap_or(&[]);
            // `len > 0` (chunks <= len) and `rseq % len < len`: the index is in bounds.
            let Some(slot) = usize::try_from(rseq % len)
                .ok()
                .and_then(|idx| self.ring.as_mut().get_mut(idx))
            else {
                return Err(Error::TooLarge);
            };
            slot.rseq = rseq;
            slot.op = entry.op;
            slot.version = entry.version;
            slot.origin = entry.origin;
            slot.expires_at_ms = entry.expires_at_ms;
            slot.total_len = total_len;
            slot.offset = (i as usize * MAX_CHUNK) as u32;
            slot.key_len = entry.key.len() as u16;
            slot.key[..entry.key.len()].copy_from_slice(entry.key);
            slot.len = piece.len() as u16;
            slot.data[..piece.len()].copy_from_slice(piece);
        }
        self.written += chunks;
        Ok(WriteId(self.written))
    }

    fn peer_mut(&mut self, node: NodeId) -> Option<&mut PeerTx> {
        if let Some(i) = self.peers.iter().position(|p| p.node == node) {
            return self.peers.get_mut(i);
        }
        if let Some(i) = self.peers.iter().position(|p| !p.live) {
            // Reuse the slot of a peer that is down: its acks no longer matter.
            if self.peers.is_full() {
                super::swap_remove(&mut self.peers, i);
            }
        }
        self.peers
            .push(PeerTx {
                node,
                incarnation: Incarnation(0),
                live: false,
                acked: 0,
            })
            .ok()?;
        self.peers.last_mut()
    }

    pub(super) fn peer_up(
        &mut self,
        now: Instant,
        node: NodeId,
        incarnation: Incarnation,
    ) -> Result<(), Error> {
        let sent = self.sent;
        let p = self.peer_mut(node).ok_or(Error::PeerTableFull)?;
        p.live = true;
        if incarnation > p.incarnation {
            if p.incarnation != Incarnation(0) {
                // A new process of the peer holds nothing of this stream yet. (Unknown
                // incarnation 0: acks that came before `peer_up` are from this process.)
                p.acked = 0;
            }
            p.incarnation = incarnation;
        }
        if p.acked < sent {
            self.arm_probe(now);
        }
        Ok(())
    }

    pub(super) fn peer_down(&mut self, node: NodeId) {
        if let Some(p) = self.peers.iter_mut().find(|p| p.node == node) {
            p.live = false;
        }
        // One entry per requester; heapless's retain costs flash.
        if let Some(i) = self.owed.iter().position(|o| o.to == node) {
            super::swap_remove(&mut self.owed, i);
        }
    }

    pub(super) fn handle_ack(&mut self, now: Instant, from: NodeId, rseq: u64, config: &Config) {
        let sent = self.sent;
        let Some(p) = self.peer_mut(from) else { return };
        let rseq = rseq.min(sent);
        if rseq <= p.acked {
            return;
        }
        p.acked = rseq;
        self.rto = config.rto;
        match self.min_live_acked() {
            Some(a) if a < self.sent => self.probe_at = now + self.rto,
            _ => self.probe_at = Instant::NEVER,
        }
    }

    pub(super) fn acked(&self, node: NodeId) -> u64 {
        self.peers
            .iter()
            .find(|p| p.node == node)
            .map_or(0, |p| p.acked)
    }

    pub(super) fn handle_retransmit(
        &mut self,
        from: NodeId,
        first: u64,
        last: u64,
        config: &Config,
    ) {
        let last = last.min(self.sent);
        if first == 0 || first > last {
            return;
        }
        let owed = if first < self.oldest() {
            Owed::TooOld
        } else {
            let end = last.min(first.saturating_add(config.retransmit_burst.max(1) - 1));
            Owed::Range { next: first, end }
        };
        if let Some(o) = self.owed.iter_mut().find(|o| o.to == from) {
            // The newest request carries the requester's freshest knowledge.
            o.set(owed);
        } else {
            // Table full: drop it; the requester asks again after its NAK interval.
            let _ = self.owed.push(Owing::new(from, owed));
        }
    }

    fn arm_probe(&mut self, now: Instant) {
        if self.probe_at == Instant::NEVER {
            self.probe_at = now + self.rto;
        }
    }

    pub(super) fn handle_timeout(&mut self, now: Instant, config: &Config) {
        if now < self.probe_at {
            return;
        }
        if self.min_live_acked().is_some_and(|a| a < self.sent) {
            self.probe_pending = true;
            self.rto = self.rto.saturating_mul(2).min(config.max_rto);
            self.probe_at = now + self.rto;
        } else {
            self.probe_at = Instant::NEVER;
        }
    }

    pub(super) fn poll_timeout(&self) -> Instant {
        self.probe_at
    }

    pub(super) fn poll(&mut self, now: Instant) -> Option<TxOut> {
        while let Some(&o) = self.owed.first() {
            let to = o.to;
            match o.owed() {
                Owed::TooOld => {
                    super::swap_remove(&mut self.owed, 0);
                    return Some(TxOut::TooOld {
                        to,
                        last_gone: self.oldest() - 1,
                    });
                }
                Owed::Range { next, end } => {
                    if next >= end {
                        super::swap_remove(&mut self.owed, 0);
                    } else if let Some(o) = self.owed.first_mut() {
                        o.set(Owed::Range {
                            next: next + 1,
                            end,
                        });
                    }
                    if next > end {
                        continue;
                    }
                    if self.slot(next).is_none() {
                        // Overwritten since the request (overwrite_unacked mode).
                        if let Some(o) = self.owed.iter_mut().find(|o| o.to == to) {
                            o.set(Owed::TooOld);
                        } else {
                            let _ = self.owed.push(Owing::new(to, Owed::TooOld));
                        }
                        continue;
                    }
                    self.retransmits += 1;
                    return Some(TxOut::Update {
                        to: Some(to),
                        rseq: next,
                    });
                }
            }
        }
        if self.probe_pending {
            self.probe_pending = false;
            if self.slot(self.sent).is_some() {
                self.retransmits += 1;
                return Some(TxOut::Update {
                    to: None,
                    rseq: self.sent,
                });
            }
        }
        if self.sent < self.written {
            self.sent += 1;
            if self.min_live_acked().is_some_and(|a| a < self.sent) {
                self.arm_probe(now);
            }
            return Some(TxOut::Update {
                to: None,
                rseq: self.sent,
            });
        }
        None
    }
}
