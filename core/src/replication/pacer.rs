//! State-transfer pacing: a token bucket in microseconds of credit, so that a transfer never
//! takes all the CPU from heartbeats and clients, on either end.

use crate::replication::SyncSend;
use crate::Instant;

/// Credit one chunk (about 1 KiB) costs: 50,000 chunks/s (~50 MB/s: 100,000 sessions of
/// 1 KiB in about 2 s)...
pub const SYNC_CHUNK_US: u64 = 20;
/// ... with bursts of at most 64 chunks.
pub const SYNC_BURST_US: u64 = 64 * SYNC_CHUNK_US;

/// Paces the chunks a node serves ([`crate::node::Node::poll_sync_send`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SyncPacer {
    credit_us: u64,
    last: Instant,
    /// A chunk the node asked for that waits for credit.
    held: Option<SyncSend>,
}

impl SyncPacer {
    pub fn new(now: Instant) -> SyncPacer {
        SyncPacer {
            credit_us: SYNC_BURST_US,
            last: now,
            held: None,
        }
    }

    /// The next chunk to build and send, from `next` (the node's `poll_sync_send`) unless one
    /// is held; `None` when none is due or the credit is spent (the chunk is then held for
    /// [`SyncPacer::poll_timeout`]). Call [`SyncPacer::sent`] once it went out.
    pub fn poll(
        &mut self,
        now: Instant,
        next: impl FnOnce() -> Option<SyncSend>,
    ) -> Option<SyncSend> {
        let elapsed = now.saturating_duration_since(self.last).as_micros();
        let elapsed = u64::try_from(elapsed).unwrap_or(u64::MAX);
        self.credit_us = self.credit_us.saturating_add(elapsed).min(SYNC_BURST_US);
        self.last = now;
        let s = match self.held.take() {
            Some(s) => s,
            None => next()?,
        };
        if self.credit_us < SYNC_CHUNK_US {
            self.held = Some(s);
            return None;
        }
        Some(s)
    }

    /// The chunk [`SyncPacer::poll`] gave went out.
    pub fn sent(&mut self) {
        self.credit_us = self.credit_us.saturating_sub(SYNC_CHUNK_US);
    }

    /// When a held chunk may go: once half a burst of credit is back (one wake-up then sends
    /// many chunks). `None`: nothing held.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.held?;
        let wait = (SYNC_BURST_US / 2).saturating_sub(self.credit_us);
        Some(self.last.saturating_add_micros(wait))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // In tests a failed unwrap is a failed test.
mod tests {
    use super::*;
    use crate::NodeId;

    fn ask(index: u64) -> Option<SyncSend> {
        Some(SyncSend {
            to: NodeId(3),
            sync_id: 1,
            index,
        })
    }

    #[test]
    fn a_burst_then_one_chunk_per_credit_and_a_held_chunk_waits_for_half_a_burst() {
        let t0 = Instant::from_millis(1);
        let mut p = SyncPacer::new(t0);
        let mut sent = 0;
        for i in 0..100 {
            match p.poll(t0, || ask(i)) {
                Some(s) => {
                    assert_eq!(s.index, i);
                    p.sent();
                    sent += 1;
                }
                None => break,
            }
        }
        assert_eq!(sent, SYNC_BURST_US / SYNC_CHUNK_US);
        // Chunk 64 is held: not asked for again, due once half a burst is back.
        let due = p.poll_timeout().unwrap();
        assert_eq!(due, t0.saturating_add_micros(SYNC_BURST_US / 2));
        assert_eq!(p.poll(t0, || panic!("held chunk first")), None);
        let s = p.poll(due, || panic!("held chunk first")).unwrap();
        assert_eq!(s.index, 64);
        p.sent();
        assert_eq!(p.poll_timeout(), None);
        // 32 chunks' worth of credit came back; one was spent.
        let mut more = 0;
        while p.poll(due, || ask(65 + more)).is_some() {
            p.sent();
            more += 1;
        }
        assert_eq!(more, SYNC_BURST_US / 2 / SYNC_CHUNK_US - 1);
    }
}
