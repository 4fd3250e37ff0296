//! Replay protection: sliding windows of header seqs per (sender, incarnation, lane).
//!
//! A sender numbers all its frames from one counter, but heartbeats and the other frames
//! travel different paths to the receiver: the daemon gives heartbeats their own socket and
//! reads it once per heartbeat interval, while acks and updates are read at once. Under a
//! stream of writes, hundreds of a sender's later frames can be accepted before its
//! heartbeats are read; one shared window would refuse those heartbeats as too old and the
//! sender would be suspected while alive. So each [`Lane`] has its own window: every seq is
//! still accepted at most once (a seq belongs to one frame, whose kind is authenticated).
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

    /// A window of `incarnation` that has accepted nothing yet.
    pub const fn empty(incarnation: Incarnation) -> ReplayWindow {
        ReplayWindow {
            incarnation,
            highest: 0,
            seen: 0,
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

/// Which window of a sender a frame is checked against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lane {
    /// Heartbeats: read on their own schedule, possibly after later frames.
    Heartbeat = 0,
    /// Every other kind.
    Data = 1,
}

impl Lane {
    pub const fn of(kind: crate::frame::Kind) -> Lane {
        match kind {
            crate::frame::Kind::Heartbeat => Lane::Heartbeat,
            _ => Lane::Data,
        }
    }
}

/// Replay windows of up to `N` senders, one per [`Lane`] (heapless, linear scan: N is a
/// cluster size).
#[derive(Clone, Debug, Default)]
pub struct ReplayTable<const N: usize> {
    windows: heapless::Vec<Sender, N>,
}

/// The windows of one sender, stored field by field: 64 bytes, where a `(NodeId,
/// [ReplayWindow; 2])` takes 72 (RAM per member on a microcontroller).
#[derive(Clone, Debug)]
struct Sender {
    node: NodeId,
    incarnation: [Incarnation; 2],
    highest: [u64; 2],
    seen: [u128; 2],
}

impl Sender {
    fn new(node: NodeId, windows: [ReplayWindow; 2]) -> Sender {
        let mut s = Sender {
            node,
            incarnation: [Incarnation(0); 2],
            highest: [0; 2],
            seen: [0; 2],
        };
        s.set(Lane::Heartbeat, windows[0]);
        s.set(Lane::Data, windows[1]);
        s
    }

    fn window(&self, lane: Lane) -> ReplayWindow {
        let l = lane as usize;
        ReplayWindow {
            incarnation: self.incarnation[l],
            highest: self.highest[l],
            seen: self.seen[l],
        }
    }

    fn set(&mut self, lane: Lane, w: ReplayWindow) {
        let l = lane as usize;
        self.incarnation[l] = w.incarnation;
        self.highest[l] = w.highest;
        self.seen[l] = w.seen;
    }
}

impl<const N: usize> ReplayTable<N> {
    pub const fn new() -> ReplayTable<N> {
        ReplayTable {
            windows: heapless::Vec::new(),
        }
    }

    /// Checks and records `seq` of `sender`'s `incarnation` in the window of `lane`. A new
    /// sender takes a free slot; if none is left, [`Error::TooManySenders`]. On error nothing
    /// changed.
    pub fn accept(
        &mut self,
        sender: NodeId,
        incarnation: Incarnation,
        seq: u64,
        lane: Lane,
    ) -> Result<(), Error> {
        match self.windows.iter_mut().find(|s| s.node == sender) {
            Some(s) => {
                let mut w = s.window(lane);
                w.accept(incarnation, seq)?;
                s.set(lane, w);
                Ok(())
            }
            None => {
                let mut w = [ReplayWindow::empty(incarnation); 2];
                w[lane as usize] = ReplayWindow::new(incarnation, seq);
                self.windows
                    .push(Sender::new(sender, w))
                    .map_err(|_| Error::TooManySenders)
            }
        }
    }

    /// The window of `sender` for `lane`, if tracked.
    pub fn window(&self, sender: NodeId, lane: Lane) -> Option<ReplayWindow> {
        self.windows
            .iter()
            .find(|s| s.node == sender)
            .map(|s| s.window(lane))
    }

    /// Forgets `sender`. Its current incarnation's old frames become acceptable again, so
    /// only do this for a node removed from the cluster for good.
    pub fn remove(&mut self, sender: NodeId) -> Option<[ReplayWindow; 2]> {
        let pos = self.windows.iter().position(|s| s.node == sender)?;
        let s = self.windows.swap_remove(pos);
        Some([s.window(Lane::Heartbeat), s.window(Lane::Data)])
    }

    /// Forgets every sender.
    pub fn clear(&mut self) {
        self.windows.clear();
    }

    pub fn len(&self) -> usize {
        self.windows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.windows.is_empty()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const I: Incarnation = Incarnation(10);

    #[test]
    fn duplicates_and_old_seqs_are_refused() {
        let mut w = ReplayWindow::new(I, 1000);
        assert_eq!(w.accept(I, 1000), Err(Error::Replay));
        assert_eq!(w.accept(I, 1002), Ok(()));
        // Out of order inside the window: accepted once.
        assert_eq!(w.accept(I, 1001), Ok(()));
        assert_eq!(w.accept(I, 1001), Err(Error::Replay));
        // Oldest seq still inside the window, and the first outside it.
        assert_eq!(w.accept(I, 1002 - (WINDOW - 1)), Ok(()));
        assert_eq!(w.accept(I, 1002 - WINDOW), Err(Error::Replay));
        assert_eq!(w.highest(), 1002);
    }

    #[test]
    fn a_jump_forward_forgets_the_past() {
        let mut w = ReplayWindow::new(I, 5);
        assert_eq!(w.accept(I, 5 + WINDOW), Ok(()));
        assert_eq!(w.accept(I, 5), Err(Error::Replay));
        assert_eq!(w.accept(I, 6), Ok(()));
        assert_eq!(w.accept(I, u64::MAX), Ok(()));
        assert_eq!(w.accept(I, u64::MAX), Err(Error::Replay));
        assert_eq!(w.accept(I, u64::MAX - 1), Ok(()));
    }

    #[test]
    fn shifting_keeps_seen_bits() {
        let mut w = ReplayWindow::new(I, 0);
        for seq in [2, 4, 6] {
            w.accept(I, seq).unwrap();
        }
        w.accept(I, 70).unwrap();
        for seq in [0, 2, 4, 6, 70] {
            assert_eq!(w.check(I, seq), Err(Error::Replay), "seq {seq}");
        }
        for seq in [1, 3, 5, 69] {
            assert_eq!(w.check(I, seq), Ok(()), "seq {seq}");
        }
    }

    #[test]
    fn incarnations() {
        let mut w = ReplayWindow::new(I, 7);
        assert_eq!(w.accept(Incarnation(9), 100), Err(Error::StaleIncarnation));
        assert_eq!(w, ReplayWindow::new(I, 7), "a refusal changes nothing");
        assert_eq!(w.accept(Incarnation(11), 0), Ok(()));
        assert_eq!(w.incarnation(), Incarnation(11));
        assert_eq!(w.accept(I, 8), Err(Error::StaleIncarnation));
    }

    #[test]
    fn table_tracks_senders_separately() {
        let mut t: ReplayTable<2> = ReplayTable::new();
        t.accept(NodeId(1), I, 1, Lane::Data).unwrap();
        t.accept(NodeId(2), I, 1, Lane::Data).unwrap();
        assert_eq!(t.accept(NodeId(1), I, 1, Lane::Data), Err(Error::Replay));
        assert_eq!(
            t.accept(NodeId(3), I, 1, Lane::Data),
            Err(Error::TooManySenders)
        );
        assert_eq!(t.len(), 2);
        assert!(t.remove(NodeId(2)).is_some());
        t.accept(NodeId(3), I, 1, Lane::Data).unwrap();
        assert_eq!(
            t.window(NodeId(3), Lane::Data).map(|w| w.highest()),
            Some(1)
        );
    }

    /// The daemon reads heartbeats once per interval and data frames at once: a heartbeat
    /// read after more than a window's worth of the sender's later data frames still counts,
    /// once.
    #[test]
    fn heartbeats_read_late_are_not_replays() {
        let mut t: ReplayTable<2> = ReplayTable::new();
        let s = NodeId(1);
        t.accept(s, I, 0, Lane::Heartbeat).unwrap();
        for seq in 2..2 + 3 * WINDOW {
            t.accept(s, I, seq, Lane::Data).unwrap();
        }
        assert_eq!(t.accept(s, I, 1, Lane::Heartbeat), Ok(()));
        assert_eq!(t.accept(s, I, 1, Lane::Heartbeat), Err(Error::Replay));
        assert_eq!(t.accept(s, I, 0, Lane::Heartbeat), Err(Error::Replay));
        // Old data frames are still refused in their own lane.
        assert_eq!(t.accept(s, I, 2, Lane::Data), Err(Error::Replay));
        // A restart (higher incarnation) is taken by each lane on its first frame.
        let next = Incarnation(11);
        assert_eq!(t.accept(s, next, 0, Lane::Data), Ok(()));
        assert_eq!(
            t.accept(s, I, 3 * WINDOW, Lane::Data),
            Err(Error::StaleIncarnation)
        );
        assert_eq!(t.accept(s, next, 1, Lane::Heartbeat), Ok(()));
        assert_eq!(
            t.accept(s, I, 3 * WINDOW + 5, Lane::Heartbeat),
            Err(Error::StaleIncarnation)
        );
    }

    #[test]
    fn an_empty_window_accepts_any_seq_of_its_incarnation_once() {
        let mut w = ReplayWindow::empty(I);
        assert_eq!(w.accept(I, 0), Ok(()));
        assert_eq!(w.accept(I, 0), Err(Error::Replay));
        let mut w = ReplayWindow::empty(I);
        assert_eq!(w.accept(I, 500), Ok(()));
        assert_eq!(w.accept(Incarnation(9), 501), Err(Error::StaleIncarnation));
    }
}
