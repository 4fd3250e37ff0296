//! Receiver side: one in-order stream per origin peer, gap detection and rate-limited NAKs.

use heapless::Vec;

use super::{Config, Delivery};
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
    /// Earliest time the next RetransmitRequest may go out (rate limit).
    nak_at: Instant,
    pub(super) nak_pending: bool,
    pub(super) ack_pending: bool,
}

impl RxStream {
    fn has_gap(&self) -> bool {
        self.highest > self.delivered
    }

    /// The range to ask for: everything missing, the sender clips it to its burst.
    pub(super) fn nak_range(&self) -> (u64, u64) {
        (self.delivered + 1, self.highest)
    }

    fn maybe_nak(&mut self, now: Instant, config: &Config) {
        if self.has_gap() && now >= self.nak_at {
            self.nak_pending = true;
            self.nak_at = now + config.nak_interval;
        }
    }
}

pub(super) struct Rx<const P: usize> {
    pub(super) streams: Vec<RxStream, P>,
}

impl<const P: usize> Rx<P> {
    pub(super) fn new() -> Self {
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
            nak_pending: false,
            ack_pending: false,
        };
        match self.streams.iter().position(|s| s.origin == origin) {
            Some(i) => {
                let s = self.streams.get_mut(i)?;
                if incarnation < s.incarnation {
                    return None;
                }
                if incarnation > s.incarnation {
                    // The origin restarted: its new stream starts again at rseq 1.
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
        now: Instant,
        from: NodeId,
        incarnation: Incarnation,
        rseq: u64,
        config: &Config,
    ) -> Delivery {
        let Some(s) = self.stream(from, incarnation) else {
            return Delivery::Ignored;
        };
        if rseq == 0 {
            return Delivery::Ignored;
        }
        s.highest = s.highest.max(rseq);
        if rseq <= s.delivered {
            s.ack_pending = true;
            Delivery::Duplicate
        } else if rseq == s.delivered + 1 {
            s.delivered = rseq;
            s.ack_pending = true;
            if !s.has_gap() {
                s.nak_pending = false;
            }
            Delivery::Deliver
        } else {
            s.maybe_nak(now, config);
            Delivery::Gap
        }
    }

    pub(super) fn handle_hwm(
        &mut self,
        now: Instant,
        from: NodeId,
        incarnation: Incarnation,
        hwm: u64,
        config: &Config,
    ) {
        if let Some(s) = self.stream(from, incarnation) {
            s.highest = s.highest.max(hwm);
            s.maybe_nak(now, config);
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
        if !s.has_gap() {
            s.nak_pending = false;
        }
        true
    }

    pub(super) fn handle_timeout(&mut self, now: Instant, config: &Config) {
        for s in self.streams.iter_mut() {
            s.maybe_nak(now, config);
        }
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
        self.streams.retain(|s| s.origin != origin);
    }
}
