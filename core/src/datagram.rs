//! Datagrams: several sealed frames of one destination packed back to back, and split again
//! on receipt (docs/PROTOCOL.md, "Packing").
//!
//! Under write load the kernel's per-datagram cost, not sealing, limits replication, so a
//! sender packs small frames (acks, small session updates) into one datagram. Rules:
//! - one destination per datagram ([`Dest`]): a unicast transport sends a datagram for one
//!   node to that node alone;
//! - a heartbeat travels alone: receivers may route a datagram by its first frame's kind
//!   (`tandemd` reads heartbeats on their own socket once per interval), which must never
//!   delay a frame packed behind one;
//! - a control frame (a Leave) never follows a data frame: a witness cannot open data frames
//!   (it holds no data key), and a frame that does not open ends the datagram;
//! - a datagram holds at most [`MAX_DATAGRAM`] bytes.
//!
//! [`Packer`] drives a [`Node`]'s `poll_transmit` and packs; the frame that did not fit
//! waits in caller-provided storage (`carry`) for the next datagram. [`handle_datagram`]
//! splits a received datagram and hands each frame to the node.
//!
//! Panics: never; any bytes are fine.

use crate::crypto::{Aead, KeyRole};
use crate::frame::{
    sealed_frame_len, EntryRepr, HeaderRepr, Kind, HEADER_LEN, MAX_DATAGRAM, TAG_LEN,
};
use crate::node::{Node, Received, Transmit};
use crate::replication::{Dest, Slot};
use crate::{Instant, NodeId};

/// Smallest sealed frame (a Leave): below this much room a datagram is full.
const MIN_FRAME: usize = HEADER_LEN + 8 + TAG_LEN;

/// Room for one sealed frame: the carry storage a [`Packer`] needs.
pub type FrameBuf = [u8; MAX_DATAGRAM];

/// One packed datagram: `len` bytes at the start of the caller's buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Packed {
    pub len: usize,
    pub to: Dest,
    /// Frames taken from the node for it (a carried frame from the last call not counted).
    pub frames: usize,
}

/// Packs a node's frames into datagrams (see the module docs). `C` is the storage of the frame
/// that did not fit the last datagram: at least [`MAX_DATAGRAM`] bytes (e.g. a boxed
/// [`FrameBuf`]).
pub struct Packer<C> {
    carry: C,
    /// Length and destination of the frame in `carry`.
    held: Option<(usize, Dest)>,
}

impl<C: AsRef<[u8]> + AsMut<[u8]>> Packer<C> {
    pub fn new(carry: C) -> Packer<C> {
        Packer { carry, held: None }
    }

    /// A frame waits for the next datagram: send now.
    pub fn pending(&self) -> bool {
        self.held.is_some()
    }

    /// The next datagram of `node`, written into `out` (at most [`MAX_DATAGRAM`] bytes are
    /// used); `None` when nothing is due. At most `max_frames` new frames are taken from the
    /// node (1 after a leave: nothing follows the Leave).
    pub fn poll_datagram<A, S, const N: usize, B, const E: usize>(
        &mut self,
        node: &mut Node<A, S, N, B, E>,
        now: Instant,
        out: &mut [u8],
        max_frames: usize,
    ) -> Option<Packed>
    where
        A: Aead,
        S: AsRef<[Slot]> + AsMut<[Slot]>,
        B: AsRef<[Slot]> + AsMut<[Slot]>,
    {
        let limit = MAX_DATAGRAM.min(out.len());
        let mut packed = Packed {
            len: 0,
            to: Dest::All,
            frames: 0,
        };
        if let Some((n, to)) = self.held.take() {
            let frame = self.carry.as_ref().get(..n)?;
            out.get_mut(..n)?.copy_from_slice(frame);
            packed.len = n;
            packed.to = to;
            if kind(frame) == Some(Kind::Heartbeat as u8) {
                return Some(packed);
            }
        }
        // Bounded by `max_frames` and by the datagram's room.
        while packed.frames < max_frames && limit - packed.len >= MIN_FRAME {
            let scratch = self.carry.as_mut();
            let Some(Transmit { len, to }) = node.poll_transmit(now, scratch) else {
                break;
            };
            packed.frames += 1;
            let frame = scratch.get(..len)?;
            let kind = kind(frame);
            let heartbeat = kind == Some(Kind::Heartbeat as u8);
            // A control frame (a Leave) never follows a data frame: a witness, which cannot
            // open data frames, would lose it with the rest of the datagram.
            let control = kind.is_some_and(|k| KeyRole::of(k) == KeyRole::Control);
            let empty = packed.len == 0;
            if !empty && (control || to != packed.to) || packed.len + len > limit {
                self.held = Some((len, to));
                break;
            }
            out.get_mut(packed.len..packed.len + len)?
                .copy_from_slice(frame);
            packed.len += len;
            packed.to = to;
            if heartbeat {
                break;
            }
        }
        (packed.len > 0).then_some(packed)
    }
}

/// The kind byte of a sealed frame (from its plaintext header: our own frame).
fn kind(frame: &[u8]) -> Option<u8> {
    HeaderRepr::check(frame).ok().map(|(h, _, _)| h.kind)
}

/// The sealed frames of a received datagram, in order. An empty datagram is one empty
/// (truncated) frame; every later frame holds at least one byte, so the split is bounded.
pub struct Frames<'a> {
    rest: Option<&'a mut [u8]>,
}

impl<'a> Frames<'a> {
    pub fn new(datagram: &'a mut [u8]) -> Frames<'a> {
        Frames {
            rest: Some(datagram),
        }
    }
}

impl<'a> Iterator for Frames<'a> {
    type Item = &'a mut [u8];

    fn next(&mut self) -> Option<&'a mut [u8]> {
        let rest = self.rest.take()?;
        let (frame, tail) = rest.split_at_mut(sealed_frame_len(rest));
        if !tail.is_empty() {
            self.rest = Some(tail);
        }
        Some(frame)
    }
}

/// Where a session entry of a received datagram came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntrySource {
    /// `from`'s replication stream, in order.
    Stream,
    /// A full state transfer from `from`: apply by last-writer-wins.
    Sync,
}

/// What [`handle_datagram`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Handled {
    /// Frames handed to the node.
    pub frames: usize,
    /// The authenticated sender of the first frame that opened (not this node).
    pub sender: Option<NodeId>,
}

/// Splits a received datagram and hands each frame to `node`; `apply` gets every session
/// entry it carries, in order, and those the reorder buffer then releases. A frame that does
/// not open ends the datagram: the rest is not trusted either.
pub fn handle_datagram<A, S, const N: usize, B, const E: usize>(
    node: &mut Node<A, S, N, B, E>,
    now: Instant,
    datagram: &mut [u8],
    mut apply: impl FnMut(EntrySource, NodeId, &EntryRepr<'_>),
) -> Handled
where
    A: Aead,
    S: AsRef<[Slot]> + AsMut<[Slot]>,
    B: AsRef<[Slot]> + AsMut<[Slot]>,
{
    let me = node.node_id();
    let mut out = Handled::default();
    for frame in Frames::new(datagram) {
        out.frames += 1;
        let from = match node.handle_datagram(now, frame) {
            Ok(Received::Update { from, entry }) => {
                apply(EntrySource::Stream, from, &entry);
                from
            }
            Ok(Received::SyncEntry { from, entry }) => {
                apply(EntrySource::Sync, from, &entry);
                from
            }
            Ok(Received::Handled { from }) => from,
            // A recording may carry it: no evidence of where `from` is.
            Ok(Received::Unverified { .. }) => continue,
            Err(_) => break,
        };
        if from != me {
            out.sender.get_or_insert(from);
        }
        // Bounded by the reorder buffer's size.
        while let Some((origin, u)) = node.poll_delivery() {
            apply(EntrySource::Stream, origin, &u.entry);
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // In tests a failed unwrap is a failed test.
mod tests {
    use super::*;
    use crate::crypto::{Aes128Gcm, Keys};
    use crate::frame::Op;
    use crate::id::{ClusterId, Incarnation, KeyId};
    use crate::node::Config;
    use crate::{membership, replication};
    use std::vec::Vec;

    type TestNode = Node<Aes128Gcm, [Slot; 64], 8>;

    fn node(id: u16, now: Instant) -> TestNode {
        let mut m = membership::Config::new(NodeId(id), Incarnation(1000 + u32::from(id)));
        m.profile = crate::detector::Profile::FAST;
        let config = Config {
            cluster: ClusterId(7),
            salt: crate::id::Salt([id as u8; 6]),
            membership: m,
            replication: replication::Config::default(),
        };
        Node::new(
            config,
            Keys::both(KeyId(1), [0x42; 16]),
            [Slot::EMPTY; 64],
            now,
        )
    }

    /// Every datagram `n` sends now.
    fn drain(n: &mut TestNode, p: &mut Packer<FrameBuf>, now: Instant) -> Vec<(Vec<u8>, Packed)> {
        n.handle_timeout(now);
        let mut out = Vec::new();
        let mut buf = [0u8; MAX_DATAGRAM];
        for _ in 0..1000 {
            match p.poll_datagram(n, now, &mut buf, usize::MAX) {
                Some(d) => out.push((buf[..d.len].to_vec(), d)),
                None => break,
            }
        }
        out
    }

    fn entry(key: &[u8], value: &[u8]) -> EntryRepr<'static> {
        let key: &'static [u8] = Vec::leak(key.to_vec());
        let value: &'static [u8] = Vec::leak(value.to_vec());
        EntryRepr {
            op: Op::Put,
            version: 1,
            origin: NodeId(1),
            expires_at_ms: 0,
            key,
            total_len: value.len() as u32,
            offset: 0,
            value,
        }
    }

    /// Runs a pair with lossless delivery for `ms`; returns the keys `b` was handed and
    /// every datagram each side sent.
    #[allow(clippy::type_complexity)]
    fn run(
        a: &mut TestNode,
        b: &mut TestNode,
        packers: &mut [Packer<FrameBuf>; 2],
        start: Instant,
        ms: u64,
    ) -> (Vec<Vec<u8>>, Vec<(Vec<u8>, Packed)>) {
        let mut keys = Vec::new();
        let mut sent = Vec::new();
        for step in 0..ms * 4 {
            let now = Instant::from_micros(start.as_micros() + step * 250);
            let [pa, pb] = packers;
            let from_a = drain(a, pa, now);
            let from_b = drain(b, pb, now);
            for (d, _) in &from_a {
                let mut d = d.clone();
                let h = handle_datagram(b, now, &mut d, |_, _, e| keys.push(e.key.to_vec()));
                // None until a's run answered b's challenge (the first round trip).
                assert!(h.sender.is_none_or(|s| s == NodeId(1)));
                assert!(h.sender.is_some() || step < 8, "a verified after 2 ms");
            }
            for (d, _) in &from_b {
                let mut d = d.clone();
                handle_datagram(a, now, &mut d, |_, _, _| {});
            }
            sent.extend(from_a);
            sent.extend(from_b);
        }
        (keys, sent)
    }

    #[test]
    fn frames_of_one_destination_share_a_datagram_heartbeats_travel_alone() {
        let t0 = Instant::from_millis(1);
        let (mut a, mut b) = (node(1, t0), node(2, t0));
        let mut packers = [
            Packer::new([0; MAX_DATAGRAM]),
            Packer::new([0; MAX_DATAGRAM]),
        ];
        run(&mut a, &mut b, &mut packers, t0, 30);
        assert_eq!(a.live_data_peers(), 1);
        let now = Instant::from_millis(31);
        // 40 small writes: their updates (for every peer) pack into few datagrams.
        for i in 0..40u32 {
            let mut e = entry(&i.to_be_bytes(), b"value");
            e.version = u64::from(i) + 1;
            a.write(now, &e).unwrap();
        }
        let (keys, sent) = run(&mut a, &mut b, &mut packers, now, 5);
        assert_eq!(keys.len(), 40, "every write delivered in order");
        for (k, i) in keys.iter().zip(0u32..) {
            assert_eq!(k[..], i.to_be_bytes());
        }
        let mut packed_updates = 0;
        for (d, p) in &sent {
            let frames: Vec<Vec<u8>> = Frames::new(&mut d.clone()).map(|f| f.to_vec()).collect();
            let kinds: Vec<u8> = frames
                .iter()
                .map(|f| HeaderRepr::check(f).unwrap().0.kind)
                .collect();
            if kinds.contains(&(Kind::Heartbeat as u8)) {
                assert_eq!(kinds.len(), 1, "a heartbeat travels alone");
            }
            // One destination per datagram: acks (one node) never share with updates (all).
            let acks = kinds.iter().filter(|&&k| k == Kind::Ack as u8).count();
            assert!(acks == 0 || acks == kinds.len(), "{kinds:?}");
            if acks > 0 {
                assert_eq!(p.to, Dest::Node(NodeId(1)));
            }
            if kinds.contains(&(Kind::SessionUpdate as u8)) {
                assert_eq!(p.to, Dest::All);
                packed_updates = packed_updates.max(kinds.len());
            }
            assert!(d.len() <= MAX_DATAGRAM);
        }
        assert!(packed_updates > 10, "updates packed: {packed_updates}");
    }

    /// A Leave polled while an update waits for the next datagram starts that datagram's
    /// successor rather than following the update: a witness drops a datagram's frames after
    /// the first it cannot open (a data frame), and would miss the Leave.
    #[test]
    fn a_leave_never_follows_a_data_frame() {
        let t0 = Instant::from_millis(1);
        let (mut a, mut b) = (node(1, t0), node(2, t0));
        let mut packers = [
            Packer::new([0; MAX_DATAGRAM]),
            Packer::new([0; MAX_DATAGRAM]),
        ];
        run(&mut a, &mut b, &mut packers, t0, 30);
        let now = Instant::from_millis(31);
        // About 600 bytes sealed each: two fit a datagram, the third waits.
        for i in 0..3u32 {
            let mut e = entry(&i.to_be_bytes(), &[b'v'; 500]);
            e.version = u64::from(i) + 1;
            a.write(now, &e).unwrap();
        }
        let [pa, _] = &mut packers;
        let mut buf = [0u8; MAX_DATAGRAM];
        let first = pa.poll_datagram(&mut a, now, &mut buf, usize::MAX).unwrap();
        assert!(pa.pending(), "an update waits: the test proves nothing");
        assert!(first.len > 0);
        a.leave(now);
        let mut leaves = 0;
        for _ in 0..10 {
            let Some(d) = pa.poll_datagram(&mut a, now, &mut buf, usize::MAX) else {
                break;
            };
            let kinds: Vec<u8> = Frames::new(&mut buf[..d.len])
                .map(|f| HeaderRepr::check(f).unwrap().0.kind)
                .collect();
            if let Some(at) = kinds.iter().position(|&k| k == Kind::Leave as u8) {
                assert_eq!(at, 0, "a Leave behind a data frame: {kinds:?}");
                leaves += 1;
            }
        }
        assert_eq!(leaves, 1);
    }

    #[test]
    fn a_frame_that_does_not_open_ends_the_datagram() {
        let t0 = Instant::from_millis(1);
        let (mut a, mut b) = (node(1, t0), node(2, t0));
        let mut pa = Packer::new([0; MAX_DATAGRAM]);
        let (hb, _) = drain(&mut a, &mut pa, t0).remove(0);
        // Two copies of a heartbeat behind a corrupted one: nothing opens.
        let mut d = hb.clone();
        d[HEADER_LEN] ^= 1;
        d.extend_from_slice(&hb);
        d.extend_from_slice(&hb);
        let h = handle_datagram(&mut b, t0, &mut d, |_, _, _| {});
        assert_eq!(
            h,
            Handled {
                frames: 1,
                sender: None
            }
        );
        // Garbage and the empty datagram: one frame each, never a panic.
        assert_eq!(handle_datagram(&mut b, t0, &mut [], |_, _, _| {}).frames, 1);
        assert_eq!(
            handle_datagram(&mut b, t0, &mut [1, 2, 3], |_, _, _| {}).frames,
            1
        );
        // The intact heartbeat opens, but its run has not answered a challenge yet: it
        // names no sender (a recording could carry it).
        let mut d = hb.clone();
        let h = handle_datagram(&mut b, t0, &mut d, |_, _, _| {});
        assert_eq!(
            h,
            Handled {
                frames: 1,
                sender: None
            }
        );
        assert_eq!(b.stats().unverified, 1);
    }

    #[test]
    fn frames_split_at_each_sealed_length() {
        let t0 = Instant::from_millis(1);
        let mut a = node(1, t0);
        let mut pa = Packer::new([0; MAX_DATAGRAM]);
        let (hb, _) = drain(&mut a, &mut pa, t0).remove(0);
        let mut d = hb.clone();
        d.extend_from_slice(&hb);
        d.push(7);
        let lens: Vec<usize> = Frames::new(&mut d).map(|f| f.len()).collect();
        assert_eq!(lens, [hb.len(), hb.len(), 1]);
    }
}
