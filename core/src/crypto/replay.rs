//! Replay protection and freshness on first contact, per sender.
//!
//! A sender numbers all its frames from one counter, but heartbeats and the other frames
//! travel different paths to the receiver: the daemon gives heartbeats their own socket and
//! reads it once per heartbeat interval, while acks and updates are read at once. Under a
//! stream of writes, hundreds of a sender's later frames can be accepted before its
//! heartbeats are read; one shared window would refuse those heartbeats as too old and the
//! sender would be suspected while alive. So each [`Lane`] is checked on its own: every seq
//! is still accepted at most once (a seq belongs to one frame, whose kind is authenticated).
//! The data lane is a window: the highest seq accepted and a 128-bit bitmap of the seqs just
//! below it; a seq already seen, or more than [`WINDOW`] - 1 below the highest, is refused
//! ([`Error::Replay`]). The heartbeat lane only moves forward: a heartbeat older than the
//! newest one accepted carries nothing new, so it is refused too (8 bytes, not 24).
//!
//! A sender is tracked in one run: (incarnation, salt) of the first frame that made it
//! tracked. A lower incarnation is refused ([`Error::StaleIncarnation`]); a higher one
//! starts a fresh run (the node restarted). Each tracked run is unverified until it answered
//! a challenge ([`ReplayTable::verify`]): a recorded frame opens and passes its window on a
//! receiver that never saw it (a node that just started), so only a run that a live key
//! holder answers for counts (docs/PROTOCOL.md, "Freshness").
//!
//! Senders come and go: a member declared down or gone is evicted ([`ReplayTable::evict`])
//! and leaves an incarnation floor behind (8 bytes), below which its frames stay refused; a
//! full table makes room by dropping its longest-unverified run. The floors are a ring of
//! `N`: an older floor is overwritten, and a run it guarded can then be tracked again, but
//! never verified (nobody answers for a dead run).
//!
//! Run the checks only after the frame's tag verified, or forged frames could move them.
//!
//! Panics: never.

use crate::frame::{ChallengeRepr, Error};
use crate::id::{Incarnation, NodeId, Salt};

/// Width of the data lane's window in seqs.
pub const WINDOW: u64 = 128;

/// The replay window of one sender's data lane.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReplayWindow {
    incarnation: Incarnation,
    ring: Ring,
}

/// The seqs a window accepted: the highest, and a ring of the [`WINDOW`] seqs up to it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Ring {
    highest: u64,
    /// Bit `seq % WINDOW` set: seq was accepted (for seqs `highest - WINDOW + 1 ..=
    /// highest`). Words, not a u128: a 32-bit target spells out a u128 shift in a dozen
    /// instructions (flash).
    seen: [u32; 4],
}

/// Word and bit of `seq` in a ring.
fn bit(seq: u64) -> (usize, u32) {
    ((seq / 32 % 4) as usize, 1 << (seq % 32))
}

impl Ring {
    const EMPTY: Ring = Ring {
        highest: 0,
        seen: [0; 4],
    };

    /// Every seq up to `seq` counts as seen.
    const fn up_to(seq: u64) -> Ring {
        Ring {
            highest: seq,
            seen: [u32::MAX; 4],
        }
    }

    fn check(&self, seq: u64) -> Result<(), Error> {
        if seq > self.highest {
            return Ok(());
        }
        let (w, b) = bit(seq);
        let seen = self.seen.get(w).is_some_and(|&x| x & b != 0);
        if self.highest - seq >= WINDOW || seen {
            return Err(Error::Replay);
        }
        Ok(())
    }

    /// Checks and records `seq`; on error nothing changed.
    fn accept(&mut self, seq: u64) -> Result<(), Error> {
        self.check(seq)?;
        if seq > self.highest {
            // The seqs the window moves over leave it: clear their bits (one, usually;
            // at most WINDOW).
            let mut n = (seq - self.highest).min(WINDOW);
            while n > 0 {
                n -= 1;
                let (w, b) = bit(seq - n);
                if let Some(x) = self.seen.get_mut(w) {
                    *x &= !b;
                }
            }
            self.highest = seq;
        }
        self.set(seq);
        Ok(())
    }

    fn set(&mut self, seq: u64) {
        let (w, b) = bit(seq);
        if let Some(x) = self.seen.get_mut(w) {
            *x |= b;
        }
    }
}

impl ReplayWindow {
    /// A window that has accepted exactly `seq` of `incarnation`.
    pub fn new(incarnation: Incarnation, seq: u64) -> ReplayWindow {
        let mut ring = Ring::EMPTY;
        ring.highest = seq;
        ring.set(seq);
        ReplayWindow { incarnation, ring }
    }

    /// A window of `incarnation` that has accepted nothing yet.
    pub const fn empty(incarnation: Incarnation) -> ReplayWindow {
        ReplayWindow {
            incarnation,
            ring: Ring::EMPTY,
        }
    }

    pub fn incarnation(&self) -> Incarnation {
        self.incarnation
    }

    /// Highest seq accepted in the current incarnation.
    pub fn highest(&self) -> u64 {
        self.ring.highest
    }

    /// Whether `seq` of `incarnation` would be accepted. Changes nothing.
    pub fn check(&self, incarnation: Incarnation, seq: u64) -> Result<(), Error> {
        if incarnation < self.incarnation {
            return Err(Error::StaleIncarnation);
        }
        if incarnation > self.incarnation {
            return Ok(());
        }
        self.ring.check(seq)
    }

    /// Checks and records `seq`; on error nothing changed.
    pub fn accept(&mut self, incarnation: Incarnation, seq: u64) -> Result<(), Error> {
        self.check(incarnation, seq)?;
        if incarnation > self.incarnation {
            *self = ReplayWindow::new(incarnation, seq);
            return Ok(());
        }
        self.ring.accept(seq)
    }
}

/// Which lane of a sender a frame is checked against.
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

/// `since` of a run no challenge was sent to yet.
const NOT_CHALLENGED: u64 = u64::MAX;

/// Replay state and freshness of up to `N` senders, and the incarnation floors of up to `N`
/// evicted ones (heapless, linear scan: N is a cluster size).
#[derive(Clone, Debug)]
pub struct ReplayTable<const N: usize> {
    senders: heapless::Vec<Sender, N>,
    /// A ring; an all-zero entry refuses nothing.
    floors: [Floor; N],
    next_floor: usize,
}

impl<const N: usize> Default for ReplayTable<N> {
    fn default() -> Self {
        ReplayTable::new()
    }
}

/// One tracked sender, stored field by field: 56 bytes.
#[derive(Clone, Debug)]
struct Sender {
    node: NodeId,
    salt: Salt,
    incarnation: Incarnation,
    verified: bool,
    /// A challenge to this run is due ([`ReplayTable::poll_challenge`]).
    ask: bool,
    /// An answer to this run's challenge is due.
    answer: bool,
    /// The receiver's own seq from which its challenges to this run count
    /// ([`NOT_CHALLENGED`]: none sent yet).
    since: u64,
    /// Lowest heartbeat seq still acceptable.
    heartbeat_next: u64,
    data: Ring,
}

impl Sender {
    /// A run first heard of in frame `seq` of `lane`, which counts as accepted. Data seqs
    /// up to it count as seen too: the run is unverified, so they would be of no use, and
    /// once verified its frames from before the answer are refused anyway.
    fn new(node: NodeId, incarnation: Incarnation, salt: Salt, seq: u64, lane: Lane) -> Sender {
        Sender {
            node,
            salt,
            incarnation,
            verified: false,
            ask: false,
            answer: false,
            since: NOT_CHALLENGED,
            heartbeat_next: match lane {
                Lane::Heartbeat => seq.saturating_add(1),
                Lane::Data => 0,
            },
            // Not an empty ring: 24 zero bytes would link a 174-byte memclr (flash).
            data: Ring::up_to(seq),
        }
    }

    fn data(&self) -> ReplayWindow {
        ReplayWindow {
            incarnation: self.incarnation,
            ring: self.data,
        }
    }

    /// A challenge to this run is due, sealed with the receiver's seq `next_seq` or later;
    /// the first one sets `since`.
    fn ask(&mut self, next_seq: u64) {
        if self.since == NOT_CHALLENGED {
            self.since = next_seq;
        }
        self.ask = true;
    }

    fn is_run(&self, incarnation: Incarnation, salt: Salt) -> bool {
        self.incarnation == incarnation && self.salt.to_u64() == salt.to_u64()
    }

    /// Checks and records `seq` of this run's incarnation; on error nothing changed.
    fn accept(&mut self, seq: u64, lane: Lane) -> Result<(), Error> {
        match lane {
            Lane::Heartbeat if seq < self.heartbeat_next => Err(Error::Replay),
            Lane::Heartbeat => {
                self.heartbeat_next = seq.saturating_add(1);
                Ok(())
            }
            Lane::Data => self.data.accept(seq),
        }
    }
}

/// Frames of `node` below `incarnation` are refused.
#[derive(Clone, Copy, Debug)]
struct Floor {
    node: NodeId,
    incarnation: Incarnation,
}

impl Floor {
    /// Refuses nothing.
    const NONE: Floor = Floor {
        node: NodeId(0),
        incarnation: Incarnation(0),
    };
}

impl<const N: usize> ReplayTable<N> {
    pub const fn new() -> ReplayTable<N> {
        ReplayTable {
            senders: heapless::Vec::new(),
            floors: [Floor::NONE; N],
            next_floor: 0,
        }
    }

    /// Checks and records `seq` of `sender`'s run (`incarnation`, `salt`) in the lane's
    /// window. A higher incarnation than the tracked one starts a new run, unverified. A new
    /// sender takes a free slot, else the slot of the run that has been unverified longest;
    /// if every run is verified, [`Error::TooManySenders`]. Below a sender's floor,
    /// [`Error::StaleIncarnation`]. On error nothing changed.
    ///
    /// Frames of the tracked incarnation with another salt (another process with that id
    /// and incarnation) share its windows; they are never verified
    /// ([`ReplayTable::is_verified`]).
    pub fn accept(
        &mut self,
        sender: NodeId,
        incarnation: Incarnation,
        salt: Salt,
        seq: u64,
        lane: Lane,
    ) -> Result<(), Error> {
        let pos = self.senders.iter().position(|s| s.node == sender);
        if let Some(s) = pos.and_then(|i| self.senders.get_mut(i)) {
            if incarnation < s.incarnation {
                return Err(Error::StaleIncarnation);
            }
            if incarnation == s.incarnation {
                return s.accept(seq, lane);
            }
        }
        // Off the per-frame path: a new run or a new sender.
        let floor = match pos {
            Some(_) => None,
            None => self.floors.iter().position(|f| f.node == sender),
        };
        if floor
            .and_then(|i| self.floors.get(i))
            .is_some_and(|f| incarnation < f.incarnation)
        {
            return Err(Error::StaleIncarnation);
        }
        let fresh = Sender::new(sender, incarnation, salt, seq, lane);
        let slot = match pos {
            Some(i) => i,
            None if !self.senders.is_full() => self.senders.len(),
            None => self.oldest_unverified().ok_or(Error::TooManySenders)?,
        };
        if slot == self.senders.len() {
            // Cannot fail: not full, checked above.
            let _ = self.senders.push(fresh);
        } else if let Some(s) = self.senders.get_mut(slot) {
            *s = fresh;
        }
        // Tracked from here on, its window refuses the lower incarnations.
        if let Some(f) = floor.and_then(|i| self.floors.get_mut(i)) {
            *f = Floor::NONE;
        }
        Ok(())
    }

    /// The slot of the run unverified longest (recordings of dead nodes never answer).
    fn oldest_unverified(&self) -> Option<usize> {
        // One plain loop (flash).
        let mut oldest: Option<(usize, u64)> = None;
        for (i, s) in self.senders.iter().enumerate() {
            if !s.verified && oldest.is_none_or(|(_, since)| s.since < since) {
                oldest = Some((i, s.since));
            }
        }
        oldest.map(|(i, _)| i)
    }

    /// Whether `sender` is tracked in run (`incarnation`, `salt`) and that run answered a
    /// challenge: only then does anything it sends count.
    pub fn is_verified(&self, sender: NodeId, incarnation: Incarnation, salt: Salt) -> bool {
        self.sender(sender)
            .is_some_and(|s| s.verified && s.is_run(incarnation, salt))
    }

    /// Whether `sender`'s run (`incarnation`, `salt`) is verified ([`ReplayTable::is_verified`]);
    /// if it is the tracked run and is not, a challenge to it is due ([`ReplayTable::challenge`]).
    /// One scan for both, on every frame.
    pub fn fresh(
        &mut self,
        sender: NodeId,
        incarnation: Incarnation,
        salt: Salt,
        next_seq: u64,
    ) -> bool {
        match self.sender_mut(sender) {
            Some(s) if s.is_run(incarnation, salt) => {
                if !s.verified {
                    s.ask(next_seq);
                }
                s.verified
            }
            _ => false,
        }
    }

    /// Makes a challenge to `sender`'s run (`incarnation`, `salt`) due; it will be sealed
    /// with the receiver's seq `next_seq` or a later one: answers echoing a seq from then on
    /// count. Returns false (nothing changed) if that is not the tracked run or it is
    /// verified.
    pub fn challenge(
        &mut self,
        sender: NodeId,
        incarnation: Incarnation,
        salt: Salt,
        next_seq: u64,
    ) -> bool {
        match self.sender_mut(sender) {
            Some(s) if !s.verified && s.is_run(incarnation, salt) => {
                s.ask(next_seq);
                true
            }
            _ => false,
        }
    }

    /// `sender`'s run (`incarnation`, `salt`) challenged the receiver's run: an answer is due.
    /// False (nothing changed) if that is not the tracked run.
    pub fn challenged(&mut self, sender: NodeId, incarnation: Incarnation, salt: Salt) -> bool {
        match self.sender_mut(sender) {
            Some(s) if s.is_run(incarnation, salt) => {
                s.answer = true;
                true
            }
            _ => false,
        }
    }

    /// The next due challenge or answer, no longer due once returned. An answer echoes the
    /// highest seq accepted from the challenger's run: its challenge or a later frame,
    /// either sent after it started challenging (see [`ReplayTable::verify`]).
    pub fn poll_challenge(&mut self) -> Option<ChallengeRepr> {
        let s = self.senders.iter_mut().find(|s| s.ask | s.answer)?;
        let answers = if s.answer { Some(s.data.highest) } else { None };
        if s.answer {
            s.answer = false;
        } else {
            s.ask = false;
        }
        Some(ChallengeRepr {
            target: s.node,
            target_incarnation: s.incarnation,
            target_salt: s.salt,
            answers,
        })
    }

    /// `sender`'s run (`incarnation`, `salt`) answered a challenge, echoing `answered`, the
    /// highest of the receiver's seqs it had accepted, in the answer frame of seq `seq`
    /// (already accepted): the run is verified if `answered` was sent after the receiver began
    /// challenging it (at or above the seq [`ReplayTable::challenge`] noted). Its frames sent
    /// before the answer (seq below `seq`) stay refused: they may be recordings from before
    /// the receiver started. Returns whether the run is verified now; false changed nothing.
    pub fn verify(
        &mut self,
        sender: NodeId,
        incarnation: Incarnation,
        salt: Salt,
        answered: u64,
        seq: u64,
    ) -> bool {
        match self.sender_mut(sender) {
            Some(s) if s.is_run(incarnation, salt) && !s.verified => {
                if s.since == NOT_CHALLENGED || answered < s.since {
                    return false;
                }
                s.verified = true;
                s.ask = false;
                s.heartbeat_next = s.heartbeat_next.max(seq);
                if seq >= s.data.highest {
                    s.data = Ring::up_to(seq);
                }
                true
            }
            Some(s) => s.verified && s.is_run(incarnation, salt),
            None => false,
        }
    }

    /// Forgets `sender` (a member declared down or gone) and keeps its floor: its runs below
    /// the tracked incarnation stay refused, and the tracked one too if `ended` (it left).
    /// The tracked run itself may come back (a member declared down by mistake) but counts
    /// only once it answered a challenge again. Returns whether `sender` was tracked.
    pub fn evict(&mut self, sender: NodeId, ended: bool) -> bool {
        let Some(i) = self.senders.iter().position(|s| s.node == sender) else {
            return false;
        };
        let Some(s) = self.senders.get(i) else {
            return false;
        };
        let incarnation = if ended {
            Incarnation(s.incarnation.0.saturating_add(1))
        } else {
            s.incarnation
        };
        crate::vec::swap_remove(&mut self.senders, i);
        // The ring holds no floor of `sender`: tracking it again removed its last one.
        let i = self.next_floor;
        if let Some(f) = self.floors.get_mut(i) {
            *f = Floor {
                node: sender,
                incarnation,
            };
            self.next_floor = if i + 1 < N { i + 1 } else { 0 };
        }
        true
    }

    /// The data lane's window of `sender`, if tracked.
    pub fn window(&self, sender: NodeId) -> Option<ReplayWindow> {
        self.sender(sender).map(Sender::data)
    }

    /// Forgets `sender` without a floor: its current run's old frames become acceptable
    /// again, so only do this for a node removed from the cluster for good.
    pub fn remove(&mut self, sender: NodeId) -> bool {
        let pos = self.senders.iter().position(|s| s.node == sender);
        pos.and_then(|i| crate::vec::swap_remove(&mut self.senders, i))
            .is_some()
    }

    /// Forgets every sender and floor.
    pub fn clear(&mut self) {
        // In place: a new table would be built on the stack first (microcontrollers).
        self.senders.clear();
        for f in &mut self.floors {
            *f = Floor::NONE;
        }
        self.next_floor = 0;
    }

    pub fn len(&self) -> usize {
        self.senders.len()
    }

    pub fn is_empty(&self) -> bool {
        self.senders.is_empty()
    }

    fn sender(&self, node: NodeId) -> Option<&Sender> {
        self.senders.iter().find(|s| s.node == node)
    }

    fn sender_mut(&mut self, node: NodeId) -> Option<&mut Sender> {
        self.senders.iter_mut().find(|s| s.node == node)
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

    const SALT: Salt = Salt([1; 6]);

    fn accept<const N: usize>(
        t: &mut ReplayTable<N>,
        node: u16,
        inc: Incarnation,
        seq: u64,
        lane: Lane,
    ) -> Result<(), Error> {
        t.accept(NodeId(node), inc, SALT, seq, lane)
    }

    /// Challenges `node`'s run with our seq 100 and has it answer in its frame `seq`.
    fn verify<const N: usize>(t: &mut ReplayTable<N>, node: u16, inc: Incarnation, seq: u64) {
        assert!(t.challenge(NodeId(node), inc, SALT, 100));
        accept(t, node, inc, seq, Lane::Data).unwrap();
        assert!(t.verify(NodeId(node), inc, SALT, 100, seq));
    }

    #[test]
    fn table_tracks_senders_separately() {
        let mut t: ReplayTable<2> = ReplayTable::new();
        accept(&mut t, 1, I, 1, Lane::Data).unwrap();
        accept(&mut t, 2, I, 1, Lane::Data).unwrap();
        assert_eq!(accept(&mut t, 1, I, 1, Lane::Data), Err(Error::Replay));
        verify(&mut t, 1, I, 2);
        verify(&mut t, 2, I, 2);
        assert_eq!(
            accept(&mut t, 3, I, 1, Lane::Data),
            Err(Error::TooManySenders),
            "every run is verified: none makes room"
        );
        assert_eq!(t.len(), 2);
        assert!(t.remove(NodeId(2)));
        accept(&mut t, 3, I, 1, Lane::Data).unwrap();
        assert_eq!(t.window(NodeId(3)).map(|w| w.highest()), Some(1));
    }

    /// The daemon reads heartbeats once per interval and data frames at once: a heartbeat
    /// read after more than a window's worth of the sender's later data frames still counts,
    /// once.
    #[test]
    fn heartbeats_read_late_are_not_replays() {
        let mut t: ReplayTable<2> = ReplayTable::new();
        accept(&mut t, 1, I, 0, Lane::Heartbeat).unwrap();
        for seq in 2..2 + 3 * WINDOW {
            accept(&mut t, 1, I, seq, Lane::Data).unwrap();
        }
        assert_eq!(accept(&mut t, 1, I, 1, Lane::Heartbeat), Ok(()));
        assert_eq!(accept(&mut t, 1, I, 1, Lane::Heartbeat), Err(Error::Replay));
        assert_eq!(accept(&mut t, 1, I, 0, Lane::Heartbeat), Err(Error::Replay));
        // Old data frames are still refused in their own lane.
        assert_eq!(accept(&mut t, 1, I, 2, Lane::Data), Err(Error::Replay));
        // A restart (higher incarnation) starts a new run for both lanes.
        let next = Incarnation(11);
        assert_eq!(accept(&mut t, 1, next, 0, Lane::Data), Ok(()));
        assert_eq!(
            accept(&mut t, 1, I, 3 * WINDOW, Lane::Data),
            Err(Error::StaleIncarnation)
        );
        assert_eq!(
            accept(&mut t, 1, I, 3 * WINDOW + 5, Lane::Heartbeat),
            Err(Error::StaleIncarnation)
        );
        assert_eq!(accept(&mut t, 1, next, 1, Lane::Heartbeat), Ok(()));
    }

    /// A heartbeat lane only moves forward: an older heartbeat than the newest is refused.
    #[test]
    fn an_older_heartbeat_is_refused() {
        let mut t: ReplayTable<1> = ReplayTable::new();
        accept(&mut t, 1, I, 9, Lane::Heartbeat).unwrap();
        assert_eq!(accept(&mut t, 1, I, 5, Lane::Heartbeat), Err(Error::Replay));
        assert_eq!(accept(&mut t, 1, I, 10, Lane::Heartbeat), Ok(()));
    }

    /// A run counts only once it answered a challenge sent to it since it was tracked; its
    /// frames from before the answer stay refused.
    #[test]
    fn a_run_is_verified_by_an_answer_to_a_challenge_since_tracked() {
        let mut t: ReplayTable<2> = ReplayTable::new();
        let s = NodeId(1);
        accept(&mut t, 1, I, 50, Lane::Data).unwrap();
        assert!(!t.is_verified(s, I, SALT));
        // No challenge sent yet: an answer (a recording) verifies nothing.
        accept(&mut t, 1, I, 52, Lane::Data).unwrap();
        assert!(!t.verify(s, I, SALT, 7, 52));
        assert!(t.challenge(s, I, SALT, 100));
        // A later challenge keeps the first one's seq as the floor.
        assert!(t.challenge(s, I, SALT, 120));
        assert!(!t.challenge(s, I, Salt([2; 6]), 120), "not the tracked run");
        accept(&mut t, 1, I, 60, Lane::Data).unwrap();
        assert!(
            !t.verify(s, I, SALT, 99, 60),
            "answers a challenge from before"
        );
        assert!(!t.verify(s, I, Salt([2; 6]), 100, 60), "another run");
        assert!(!t.is_verified(s, I, SALT));
        assert!(t.verify(s, I, SALT, 100, 60));
        assert!(t.is_verified(s, I, SALT));
        assert!(!t.is_verified(s, I, Salt([2; 6])), "a twin's run is not");
        assert!(!t.challenge(s, I, SALT, 130), "verified: no challenge");
        // Sent before the answer: refused, even inside the window and never seen.
        assert_eq!(accept(&mut t, 1, I, 59, Lane::Data), Err(Error::Replay));
        assert_eq!(
            accept(&mut t, 1, I, 55, Lane::Heartbeat),
            Err(Error::Replay)
        );
        assert_eq!(accept(&mut t, 1, I, 61, Lane::Data), Ok(()));
        assert_eq!(accept(&mut t, 1, I, 61, Lane::Heartbeat), Ok(()));
        // A restart is a new run: unverified again.
        accept(&mut t, 1, Incarnation(11), 0, Lane::Heartbeat).unwrap();
        assert!(!t.is_verified(s, Incarnation(11), SALT));
    }

    /// An evicted sender leaves a floor: its older runs stay refused, the run it was in may
    /// come back (unverified), and a run that ended (left) stays refused too.
    #[test]
    fn eviction_keeps_an_incarnation_floor() {
        let mut t: ReplayTable<2> = ReplayTable::new();
        accept(&mut t, 1, I, 5, Lane::Data).unwrap();
        verify(&mut t, 1, I, 6);
        assert!(t.evict(NodeId(1), false));
        assert!(!t.evict(NodeId(1), false));
        assert!(t.is_empty());
        assert_eq!(
            accept(&mut t, 1, Incarnation(9), 5, Lane::Data),
            Err(Error::StaleIncarnation)
        );
        assert!(t.is_empty(), "a refusal changes nothing");
        accept(&mut t, 1, I, 5, Lane::Data).unwrap();
        assert!(!t.is_verified(NodeId(1), I, SALT), "back, but unverified");
        assert!(t.evict(NodeId(1), true));
        assert_eq!(
            accept(&mut t, 1, I, 7, Lane::Data),
            Err(Error::StaleIncarnation),
            "it left: its run is over"
        );
        accept(&mut t, 1, Incarnation(11), 0, Lane::Data).unwrap();
        // The floor went with the new run: evicting again keeps the newer floor.
        assert!(t.evict(NodeId(1), false));
        assert_eq!(
            accept(&mut t, 1, I, 8, Lane::Data),
            Err(Error::StaleIncarnation)
        );
    }

    /// 17 senders through a table of 2, each evicted when it goes: the table never fills,
    /// and the floors (a ring of 2) refuse the most recent ones' old runs.
    #[test]
    fn churn_through_more_ids_than_slots() {
        let mut t: ReplayTable<2> = ReplayTable::new();
        accept(&mut t, 100, I, 0, Lane::Data).unwrap();
        verify(&mut t, 100, I, 1);
        for node in 1..=17 {
            accept(&mut t, node, I, 0, Lane::Heartbeat).unwrap();
            verify(&mut t, node, I, 1);
            assert!(t.evict(NodeId(node), true));
        }
        assert_eq!(t.len(), 1);
        for node in [16, 17] {
            assert_eq!(
                accept(&mut t, node, I, 5, Lane::Data),
                Err(Error::StaleIncarnation)
            );
        }
        accept(&mut t, 18, I, 0, Lane::Data).unwrap();
    }

    /// A full table makes room by dropping the run unverified longest (recordings of dead
    /// nodes never answer), never a verified one.
    #[test]
    fn a_full_table_drops_the_oldest_unverified_run() {
        let mut t: ReplayTable<3> = ReplayTable::new();
        accept(&mut t, 1, I, 0, Lane::Data).unwrap();
        verify(&mut t, 1, I, 1);
        accept(&mut t, 2, I, 0, Lane::Data).unwrap();
        assert!(t.challenge(NodeId(2), I, SALT, 10));
        accept(&mut t, 3, I, 0, Lane::Data).unwrap();
        assert!(t.challenge(NodeId(3), I, SALT, 20));
        accept(&mut t, 4, I, 0, Lane::Data).unwrap();
        assert!(t.window(NodeId(2)).is_none(), "challenged first, dropped");
        assert!(t.window(NodeId(1)).is_some());
        assert!(t.window(NodeId(3)).is_some());
        assert!(t.window(NodeId(4)).is_some());
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
