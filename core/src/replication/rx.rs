//! Receiver side: one in-order stream per origin peer, an optional reorder buffer shared by
//! all streams, gap detection and rate-limited NAKs.

use heapless::Vec;

use super::{Config, Delivery, Slot};
use crate::frame::SessionUpdateRepr;
use crate::id::{Incarnation, NodeId};
use crate::time::Instant;

#[derive(Clone, Copy, Debug)]
pub(super) struct RxStream {
    pub(super) origin: NodeId,
    pub(super) incarnation: Incarnation,
    /// Last rseq delivered in order (0 = nothing yet of this incarnation).
    pub(super) delivered: u64,
    /// Highest rseq known to exist (from updates or heartbeats).
    highest: u64,
    /// Earliest time a RetransmitRequest may repeat a range already asked for.
    nak_at: Instant,
    /// End of the last range asked for: a hole starting after it is new and asked at once.
    nak_to: u64,
    pub(super) ack_pending: bool,
}

impl RxStream {
    fn has_gap(&self) -> bool {
        self.highest > self.delivered
    }

    /// Whether `slot` holds a chunk of this stream still to be delivered.
    fn holds(&self, slot: &Slot) -> bool {
        slot.stream == self.origin
            && slot.stream_incarnation == self.incarnation
            && slot.rseq > self.delivered
    }
}

/// Whether a reorder slot holds a chunk some stream still needs.
fn occupied(streams: &[RxStream], slot: &Slot) -> bool {
    slot.rseq != 0 && streams.iter().any(|s| s.holds(slot))
}

pub(super) struct Rx<const P: usize> {
    pub(super) streams: Vec<RxStream, P>,
}

impl<const P: usize> Rx<P> {
    pub(super) const fn new() -> Self {
        Rx {
            streams: Vec::new(),
        }
    }

    /// The stream of `origin` at `incarnation`, created or reset as needed.
    /// None: stale incarnation, or the table is full.
    pub(super) fn stream(
        &mut self,
        origin: NodeId,
        incarnation: Incarnation,
    ) -> Option<&mut RxStream> {
        let fresh = RxStream {
            origin,
            incarnation,
            delivered: 0,
            highest: 0,
            nak_at: Instant::ZERO,
            nak_to: 0,
            ack_pending: false,
        };
        match self.streams.iter().position(|s| s.origin == origin) {
            Some(i) => {
                let s = self.streams.get_mut(i)?;
                if incarnation < s.incarnation {
                    return None;
                }
                if incarnation > s.incarnation {
                    // The origin restarted: its new stream starts again at rseq 1. Buffered
                    // chunks of the old one no longer match and count as free.
                    *s = fresh;
                }
                Some(s)
            }
            None => {
                self.streams.push(fresh).ok()?;
                self.streams.last_mut()
            }
        }
    }

    pub(super) fn handle_update(
        &mut self,
        from: NodeId,
        incarnation: Incarnation,
        update: &SessionUpdateRepr<'_>,
        buffer: &mut [Slot],
    ) -> Delivery {
        let rseq = update.rseq;
        let Some(s) = self.stream(from, incarnation) else {
            return Delivery::Ignored;
        };
        if rseq == 0 {
            return Delivery::Ignored;
        }
        s.highest = s.highest.max(rseq);
        if rseq <= s.delivered {
            s.ack_pending = true;
            return Delivery::Duplicate;
        }
        if rseq == s.delivered + 1 {
            s.delivered = rseq;
            s.ack_pending = true;
            return Delivery::Deliver;
        }
        let s = *s;
        let streams = &self.streams;
        if buffer
            .iter()
            .any(|b| b.rseq == rseq && occupied(streams, b) && s.holds(b))
        {
            return Delivery::Duplicate;
        }
        let Some(slot) = buffer.iter_mut().find(|b| !occupied(streams, b)) else {
            return Delivery::Gap;
        };
        if !slot.store(update) {
            // Larger than a chunk can be: not from a sane sender; drop it.
            return Delivery::Gap;
        }
        slot.stream = from;
        slot.stream_incarnation = incarnation;
        Delivery::Buffered
    }

    /// The next buffered chunk that became deliverable, if any.
    pub(super) fn poll_delivery<'b>(
        &mut self,
        buffer: &'b [Slot],
    ) -> Option<(NodeId, SessionUpdateRepr<'b>)> {
        for s in self.streams.iter_mut() {
            // A stream without a gap has nothing buffered (buffering a chunk raises `highest`
            // above `delivered`): skip the scan of the whole buffer, the common case.
            if !s.has_gap() {
                continue;
            }
            if let Some(slot) = buffer
                .iter()
                .find(|b| s.holds(b) && b.rseq == s.delivered + 1)
            {
                // Delivered now, so the slot counts as free from here on.
                s.delivered = slot.rseq;
                s.ack_pending = true;
                return Some((s.origin, slot.update()));
            }
        }
        None
    }

    pub(super) fn handle_hwm(&mut self, from: NodeId, incarnation: Incarnation, hwm: u64) {
        if let Some(s) = self.stream(from, incarnation) {
            s.highest = s.highest.max(hwm);
        }
    }

    /// Moves the stream of `from` forward to `rseq` (after a sync, or when the origin's ring
    /// no longer holds what we miss). Returns whether it moved.
    pub(super) fn skip_to(&mut self, from: NodeId, incarnation: Incarnation, rseq: u64) -> bool {
        let Some(s) = self.stream(from, incarnation) else {
            return false;
        };
        s.ack_pending = true;
        if rseq <= s.delivered {
            return false;
        }
        s.delivered = rseq;
        s.highest = s.highest.max(rseq);
        true
    }

    /// A RetransmitRequest due now, as (origin, incarnation, from, to): the hole right after
    /// the delivered prefix, up to the first buffered chunk. A new hole is asked for at once;
    /// the same range again only after `nak_interval`, so loss never causes a storm.
    pub(super) fn poll_nak(
        &mut self,
        now: Instant,
        buffer: &[Slot],
        config: &Config,
    ) -> Option<(NodeId, Incarnation, u64, u64)> {
        for s in self.streams.iter_mut() {
            if !s.has_gap() {
                continue;
            }
            let first_held = buffer
                .iter()
                .filter(|b| s.holds(b))
                .map(|b| b.rseq)
                .min()
                .unwrap_or(u64::MAX);
            let from = s.delivered + 1;
            let to = s.highest.min(first_held - 1);
            if from > to || (now < s.nak_at && from <= s.nak_to) {
                continue;
            }
            // At least 1 us: a zero interval must not let a drain loop repeat it forever.
            s.nak_at = now
                + config
                    .nak_interval
                    .max(core::time::Duration::from_micros(1));
            s.nak_to = to;
            return Some((s.origin, s.incarnation, from, to));
        }
        None
    }

    pub(super) fn poll_timeout(&self) -> Instant {
        self.streams
            .iter()
            .filter(|s| s.has_gap())
            .map(|s| s.nak_at)
            .min()
            .unwrap_or(Instant::NEVER)
    }

    pub(super) fn forget(&mut self, origin: NodeId) {
        // One stream per origin; heapless's retain costs flash.
        if let Some(i) = self.streams.iter().position(|s| s.origin == origin) {
            super::swap_remove(&mut self.streams, i);
        }
    }
}
