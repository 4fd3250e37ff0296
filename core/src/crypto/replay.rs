//! Replay protection: a sliding window of header seqs per (sender, incarnation).
//!
//! A window remembers the highest seq accepted and a 128-bit bitmap of the seqs just below
//! it. A seq already seen, or more than [`WINDOW`] - 1 below the highest, is refused
//! ([`Error::Replay`]); a lower incarnation than the tracked one is refused
//! ([`Error::StaleIncarnation`]); a higher one starts a fresh window (the node restarted).
//! Run the check only after the frame's tag verified, or forged frames could move it.
//!
//! Panics: never.

use crate::frame::Error;
use crate::id::{Incarnation, NodeId};

/// Width of the window in seqs.
pub const WINDOW: u64 = 128;

/// The replay state of one sender.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReplayWindow {
    incarnation: Incarnation,
    /// Highest seq accepted in this incarnation.
    highest: u64,
    /// Bit i set: seq `highest - i` was accepted.
    seen: u128,
}

impl ReplayWindow {
    /// A window that has accepted exactly `seq` of `incarnation`.
    pub fn new(incarnation: Incarnation, seq: u64) -> ReplayWindow {
        ReplayWindow {
            incarnation,
            highest: seq,
            seen: 1,
        }
    }

    pub fn incarnation(&self) -> Incarnation {
        self.incarnation
    }

    /// Highest seq accepted in the current incarnation.
    pub fn highest(&self) -> u64 {
        self.highest
    }

    /// Whether `seq` of `incarnation` would be accepted. Changes nothing.
    pub fn check(&self, incarnation: Incarnation, seq: u64) -> Result<(), Error> {
        if incarnation < self.incarnation {
            return Err(Error::StaleIncarnation);
        }
        if incarnation > self.incarnation || seq > self.highest {
            return Ok(());
        }
        let age = self.highest - seq;
        if age >= WINDOW || self.seen & (1 << age) != 0 {
            return Err(Error::Replay);
        }
        Ok(())
    }

    /// Checks and records `seq`; on error nothing changed.
    pub fn accept(&mut self, incarnation: Incarnation, seq: u64) -> Result<(), Error> {
        self.check(incarnation, seq)?;
        if incarnation > self.incarnation {
            *self = ReplayWindow::new(incarnation, seq);
        } else if seq > self.highest {
            let shift = seq - self.highest;
            self.seen = if shift >= WINDOW {
                0
            } else {
                self.seen << shift
            };
            self.seen |= 1;
            self.highest = seq;
        } else {
            // check() guaranteed highest - seq < WINDOW.
            self.seen |= 1 << (self.highest - seq);
        }
        Ok(())
    }
}

/// Replay windows of up to `N` senders (heapless, linear scan: N is a cluster size).
#[derive(Clone, Debug, Default)]
pub struct ReplayTable<const N: usize> {
    windows: heapless::Vec<(NodeId, ReplayWindow), N>,
}

impl<const N: usize> ReplayTable<N> {
    pub const fn new() -> ReplayTable<N> {
        ReplayTable {
            windows: heapless::Vec::new(),
        }
    }

    /// Checks and records `seq` of `sender`'s `incarnation`. A new sender takes a free slot;
    /// if none is left, [`Error::TooManySenders`]. On error nothing changed.
    pub fn accept(
        &mut self,
        sender: NodeId,
        incarnation: Incarnation,
        seq: u64,
    ) -> Result<(), Error> {
        match self.windows.iter_mut().find(|(n, _)| *n == sender) {
            Some((_, w)) => w.accept(incarnation, seq),
            None => self
                .windows
                .push((sender, ReplayWindow::new(incarnation, seq)))
                .map_err(|_| Error::TooManySenders),
        }
    }

    /// The window of `sender`, if tracked.
    pub fn window(&self, sender: NodeId) -> Option<&ReplayWindow> {
        self.windows
            .iter()
            .find(|(n, _)| *n == sender)
            .map(|(_, w)| w)
    }

    /// Forgets `sender`. Its current incarnation's old frames become acceptable again, so
    /// only do this for a node removed from the cluster for good.
    pub fn remove(&mut self, sender: NodeId) -> Option<ReplayWindow> {
        let pos = self.windows.iter().position(|(n, _)| *n == sender)?;
        Some(self.windows.swap_remove(pos).1)
    }

    pub fn len(&self) -> usize {
        self.windows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.windows.is_empty()
    }
}
