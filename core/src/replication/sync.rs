//! Full state sync: the requester (client) and the bounded server side.

use core::time::Duration;

use heapless::Vec;

use super::{Config, SyncFailure, SyncSend, MAX_SYNC_SERVE};
use crate::frame::SyncRequestRepr;
use crate::id::{Incarnation, NodeId};
use crate::time::Instant;

/// `SyncDone::chunks` value meaning "transfer refused or aborted"; `rseq` then says why.
pub const SYNC_ABORT: u64 = u64::MAX;
/// Abort reason (in `SyncDone::rseq`): the server already serves its maximum of requesters.
pub const ABORT_BUSY: u64 = 0x01;
/// Abort reason: a resume (cursor > 0) for a transfer the server does not know (it restarted
/// or timed the transfer out).
pub const ABORT_UNKNOWN: u64 = 0x02;
/// `SyncRequest::cursor` value the requester sends once complete: the server may drop the
/// transfer at once.
pub const CURSOR_RELEASE: u64 = u64::MAX;
/// Flag bit of `SyncRequest::cursor`: "chunks after `cursor` were lost, go back to it".
/// Without it the cursor is a plain cumulative ack. (Chunk counts never reach 2^63.)
pub const CURSOR_RESUME: u64 = 0x8000_0000_0000_0000;

/// Requester state of the one transfer in progress.
#[derive(Clone, Copy, Debug)]
pub(super) struct Client {
    pub(super) target: NodeId,
    pub(super) sync_id: u32,
    /// Next chunk index expected (= chunks applied so far).
    pub(super) next: u64,
    /// Cursor of the last SyncRequest sent if it had the resume flag. (Not an
    /// `Option<(u64, bool)>`, whose `None` is a niche byte: see [`Client::NONE`].)
    last_resume: Option<u64>,
    /// A SyncRequest is to be sent now.
    pub(super) pending: bool,
    /// ... with the resume flag.
    resume: bool,
    since_ack: u64,
    /// Re-send the request if no chunk arrived by then.
    resume_at: Instant,
    /// Microseconds, not a `Duration`: `Option<Client>` would take its niche (nanos = 10^9)
    /// and a zeroed replicator would need flash.
    rto_us: u64,
    /// Give up if no progress by then.
    stall_at: Instant,
    /// Chunks held beyond `next`: bit `i` = index `next + i` (bit 0 is never set).
    held: Held,
}

/// Bitmap of the [`HELD_WINDOW`] indexes after the requester's cursor.
#[derive(Clone, Copy, Debug, Default)]
struct Held([u64; 4]);

/// Out-of-order whole entries are accepted this far past the cursor.
pub(super) const HELD_WINDOW: u64 = 256;

impl Held {
    fn get(&self, bit: u64) -> bool {
        let (w, b) = ((bit / 64) as usize, bit % 64);
        self.0.get(w).is_some_and(|word| word & (1 << b) != 0)
    }

    fn set(&mut self, bit: u64) {
        let (w, b) = ((bit / 64) as usize, bit % 64);
        if let Some(word) = self.0.get_mut(w) {
            *word |= 1 << b;
        }
    }

    /// Drops bit 0: the cursor moved one index on.
    fn shift(&mut self) {
        let mut carry = 0;
        for word in self.0.iter_mut().rev() {
            let low = *word & 1;
            *word = (*word >> 1) | (carry << 63);
            carry = low;
        }
    }
}

impl Client {
    /// No transfer (node id 0 is never a target). The replicator holds this rather than an
    /// `Option<Client>`, whose `None` is a niche byte: every byte here is zero, so a zeroed
    /// replicator needs no flash.
    pub(super) const NONE: Client = Client {
        target: NodeId(0),
        sync_id: 0,
        next: 0,
        last_resume: None,
        pending: false,
        resume: false,
        since_ack: 0,
        resume_at: Instant::ZERO,
        rto_us: 0,
        stall_at: Instant::ZERO,
        held: Held([0; 4]),
    };

    /// The transfer in progress, if any.
    pub(super) fn active(&self) -> Option<&Client> {
        (self.target.0 != 0).then_some(self)
    }

    pub(super) fn active_mut(&mut self) -> Option<&mut Client> {
        (self.target.0 != 0).then_some(self)
    }

    pub(super) fn new(now: Instant, target: NodeId, sync_id: u32, config: &Config) -> Self {
        Client {
            target,
            sync_id,
            next: 0,
            last_resume: None,
            pending: true,
            resume: false,
            since_ack: 0,
            resume_at: Instant::NEVER,
            rto_us: micros(config.rto),
            stall_at: now + config.sync_stall_timeout,
            held: Held::default(),
        }
    }

    /// A chunk of this transfer arrived; `whole`: it holds a whole entry (offset 0, all of
    /// the value), which can be applied out of order since the store is last-writer-wins.
    /// Returns whether the caller applies it.
    pub(super) fn chunk(&mut self, now: Instant, index: u64, whole: bool, config: &Config) -> bool {
        if index < self.next {
            return false;
        }
        if index == self.next {
            self.progress(now, config);
            while self.held.get(0) {
                self.progress(now, config);
            }
            return true;
        }
        self.out_of_order(now);
        let bit = index - self.next;
        if whole && bit < HELD_WINDOW && !self.held.get(bit) {
            self.held.set(bit);
            return true;
        }
        false
    }

    /// Ask the server to go back to `next`.
    pub(super) fn request_resume(&mut self) {
        self.pending = true;
        self.resume = true;
    }

    /// A request went out: returns its cursor field.
    pub(super) fn sent(&mut self, now: Instant) -> u64 {
        self.pending = false;
        self.last_resume = self.resume.then_some(self.next);
        self.resume_at = now.saturating_add_micros(self.rto_us);
        let flag = if self.resume { CURSOR_RESUME } else { 0 };
        self.resume = false;
        self.next | flag
    }

    /// The chunk at the cursor is held: move on.
    fn progress(&mut self, now: Instant, config: &Config) {
        self.next += 1;
        self.held.shift();
        self.since_ack += 1;
        self.rto_us = micros(config.rto);
        self.resume_at = now.saturating_add_micros(self.rto_us);
        self.stall_at = now + config.sync_stall_timeout;
        if self.since_ack >= config.sync_ack_every.max(1) {
            self.since_ack = 0;
            self.pending = true;
        }
    }

    /// A chunk beyond `next` arrived: one was lost.
    pub(super) fn out_of_order(&mut self, now: Instant) {
        // One resume per position and RTO: the rest of the window is still arriving.
        if now >= self.resume_at || self.last_resume != Some(self.next) {
            self.request_resume();
        }
    }

    /// Returns Some when the transfer stalled for good.
    pub(super) fn handle_timeout(&mut self, now: Instant, config: &Config) -> Option<SyncFailure> {
        if now >= self.stall_at {
            return Some(SyncFailure::Stalled);
        }
        if now >= self.resume_at {
            self.rto_us = self.rto_us.saturating_mul(2).min(micros(config.max_rto));
            self.request_resume();
            self.resume_at = now.saturating_add_micros(self.rto_us);
        }
        None
    }

    pub(super) fn poll_timeout(&self) -> Instant {
        self.resume_at.min(self.stall_at)
    }
}

/// One requester being served.
#[derive(Clone, Copy, Debug)]
pub(super) struct Session {
    pub(super) to: NodeId,
    to_incarnation: Incarnation,
    pub(super) sync_id: u32,
    /// Requester's cumulative cursor: chunks it holds.
    acked: u64,
    /// Next index to hand to the caller.
    next: u64,
    /// Snapshot length, once the caller said the index ran past its end.
    total: Option<u64>,
    /// This node's stream position when the snapshot was taken.
    pub(super) hwm: u64,
    pub(super) done_pending: bool,
    expires_at: Instant,
}

impl Session {
    pub(super) fn chunks(&self) -> u64 {
        self.total.unwrap_or(0)
    }
}

pub(super) enum ServeOutcome {
    /// A new transfer: the caller must snapshot its store now.
    Started,
    Updated,
    /// The requester is done; the transfer was released.
    Released(Session),
    /// Refuse with SyncDone{chunks: SYNC_ABORT, rseq: reason}; a replaced older session, if any.
    Abort(u64),
    Ignored,
}

pub(super) struct Server {
    pub(super) sessions: Vec<Session, MAX_SYNC_SERVE>,
    /// Round-robin position for fairness between requesters.
    rr: usize,
}

impl Server {
    pub(super) const fn new() -> Self {
        Server {
            sessions: Vec::new(),
            rr: 0,
        }
    }

    /// Returns the outcome and a session it replaced (the requester restarted its sync).
    pub(super) fn handle_request(
        &mut self,
        now: Instant,
        from: NodeId,
        from_incarnation: Incarnation,
        req: &SyncRequestRepr,
        hwm: u64,
        config: &Config,
    ) -> (ServeOutcome, Option<Session>) {
        let (sync_id, cursor) = (req.sync_id, req.cursor);
        let pos = self.sessions.iter().position(|s| s.to == from);
        if let Some(s) = pos.and_then(|i| self.sessions.get_mut(i)) {
            if s.to_incarnation == from_incarnation && s.sync_id == sync_id {
                if cursor == CURSOR_RELEASE {
                    let s = *s;
                    // One session per requester; heapless's retain costs flash.
                    if let Some(i) = pos {
                        super::swap_remove(&mut self.sessions, i);
                    }
                    return (ServeOutcome::Released(s), None);
                }
                let resume = cursor & CURSOR_RESUME != 0;
                let cursor = cursor & !CURSOR_RESUME;
                if s.total.is_some_and(|t| cursor > t) {
                    // Claims chunks that do not exist: not from a sane requester.
                    return (ServeOutcome::Ignored, None);
                }
                s.expires_at = now + config.sync_serve_timeout;
                if cursor < s.acked && !resume {
                    // A stale ack overtaken by a newer one.
                    return (ServeOutcome::Updated, None);
                }
                s.acked = s.acked.max(cursor);
                if cursor > s.next {
                    s.next = cursor;
                } else if resume && cursor < s.next {
                    // Go-back-N: resend from the requester's position.
                    s.next = cursor;
                    s.done_pending = false;
                }
                if resume && s.total == Some(cursor) {
                    // Has every chunk but missed the SyncDone.
                    s.done_pending = true;
                }
                return (ServeOutcome::Updated, None);
            }
            if s.to_incarnation > from_incarnation {
                return (ServeOutcome::Ignored, None);
            }
        }
        if cursor == CURSOR_RELEASE {
            return (ServeOutcome::Ignored, None);
        }
        if cursor & !CURSOR_RESUME != 0 {
            return (ServeOutcome::Abort(ABORT_UNKNOWN), None);
        }
        let replaced = pos.and_then(|i| super::swap_remove(&mut self.sessions, i));
        let session = Session {
            to: from,
            to_incarnation: from_incarnation,
            sync_id,
            acked: 0,
            next: 0,
            total: None,
            hwm,
            done_pending: false,
            expires_at: now + config.sync_serve_timeout,
        };
        match self.sessions.push(session) {
            Ok(()) => (ServeOutcome::Started, replaced),
            Err(_) => (ServeOutcome::Abort(ABORT_BUSY), replaced),
        }
    }

    pub(super) fn poll_send(&mut self, config: &Config) -> Option<SyncSend> {
        let n = self.sessions.len();
        for k in 0..n {
            let i = (self.rr + k) % n;
            let Some(s) = self.sessions.get_mut(i) else {
                continue;
            };
            let open = s.next < s.acked.saturating_add(config.sync_window);
            if open && s.total.is_none_or(|t| s.next < t) {
                let index = s.next;
                s.next += 1;
                if s.total == Some(s.next) {
                    s.done_pending = true;
                }
                self.rr = i + 1;
                return Some(SyncSend {
                    to: s.to,
                    sync_id: s.sync_id,
                    index,
                });
            }
        }
        None
    }

    pub(super) fn exhausted(&mut self, to: NodeId, sync_id: u32, total: u64) {
        if let Some(s) = self
            .sessions
            .iter_mut()
            .find(|s| s.to == to && s.sync_id == sync_id)
        {
            let total = s.total.map_or(total, |t| t.min(total));
            s.total = Some(total);
            s.next = s.next.min(total);
            s.acked = s.acked.min(total);
            if s.next >= total {
                s.done_pending = true;
            }
        }
    }

    /// Drops transfers whose requester went quiet; calls `ended` for each.
    pub(super) fn handle_timeout(&mut self, now: Instant, mut ended: impl FnMut(&Session)) {
        // By swap_remove (order is free: sends round-robin); heapless's retain costs flash.
        let mut i = 0;
        while let Some(s) = self.sessions.get(i) {
            if now < s.expires_at {
                i += 1;
            } else {
                ended(s);
                super::swap_remove(&mut self.sessions, i);
            }
        }
    }

    pub(super) fn poll_timeout(&self) -> Instant {
        self.sessions
            .iter()
            .map(|s| s.expires_at)
            .min()
            .unwrap_or(Instant::NEVER)
    }

    pub(super) fn take_done(&mut self) -> Option<Session> {
        let s = self.sessions.iter_mut().find(|s| s.done_pending)?;
        s.done_pending = false;
        Some(*s)
    }
}

/// `d` in whole microseconds, saturating.
fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn held_bitmap_shifts_across_words() {
        let mut h = Held::default();
        for bit in [1, 63, 64, 200, 255] {
            h.set(bit);
        }
        h.set(HELD_WINDOW); // out of range: ignored
        h.shift();
        for bit in [0, 62, 63, 199, 254] {
            assert!(h.get(bit), "bit {bit}");
        }
        assert!(!h.get(1) && !h.get(64) && !h.get(255));
        assert!(!h.get(HELD_WINDOW + 10));
    }
}
