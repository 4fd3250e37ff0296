//! Wire format: a fixed 32-byte header and one body per frame kind, all network byte order.
//!
//! Every datagram: 32-byte header (associated data) | body (encrypted) | 16-byte AEAD tag
//! (see [`crate::crypto`] for sealing). This module handles the plaintext `header | body`
//! part: the zerocopy layouts live in [`wire`], the validated values are the `*Repr` types,
//! smoltcp style: `Repr::parse(&[u8]) -> Result<Repr, Error>` and
//! `Repr::emit(&self, &mut [u8]) -> Result<usize, Error>`. Byte-offset tables: docs/PROTOCOL.md.
//! Heartbeats, most of the traffic, also have a borrowed validated view, [`HeartbeatView`],
//! which [`Frame::parse`] uses as its fast path.
//!
//! Panics: never. Parsing checks every length before it reads; emitting checks the output
//! buffer and the Repr (an unrepresentable Repr is [`Error::Malformed`]) before it writes.
//! Every datagram fits in [`MAX_DATAGRAM`] bytes. A datagram may carry several sealed frames
//! back to back (small replication frames share a datagram); [`sealed_frame_len`] splits them.

use zerocopy::{FromBytes, IntoBytes};

use crate::id::{ClusterId, Incarnation, KeyId, NodeId, Salt};

/// Largest datagram tandem ever sends or accepts.
pub const MAX_DATAGRAM: usize = 1400;
/// Longest session key.
pub const MAX_KEY_LEN: usize = 256;

/// `"TNDM"`: first four bytes of every datagram.
pub const MAGIC: u32 = 0x544e_444d;
/// Protocol version this build speaks. Version 2: the header carries the sender's run salt
/// and frames are sealed with per-run keys (docs/PROTOCOL.md).
pub const VERSION: u8 = 0x02;
/// Length of the common header.
pub const HEADER_LEN: usize = 32;

/// Where the plaintext header's fields sit: byte offsets from a frame's start, each field
/// big-endian (docs/PROTOCOL.md, "Header"). For readers that filter frames without parsing
/// them, such as the daemon's kernel socket filter, so that the layout stays the core's.
pub mod header {
    use super::wire::Header;
    use core::mem::{offset_of, size_of};

    /// The frame kind (u8, [`Kind`](super::Kind)).
    pub const KIND: usize = offset_of!(Header, kind);
    /// The sender's node id (u16).
    pub const SENDER: usize = offset_of!(Header, sender);
    /// The sender's incarnation (u32).
    pub const INCARNATION: usize = offset_of!(Header, incarnation);
    /// The sender's run salt ([`SALT_LEN`] bytes).
    pub const SALT: usize = offset_of!(Header, salt);
    pub const SALT_LEN: usize = size_of::<crate::Salt>();
}
/// Length of the AEAD tag that follows the body of a sealed datagram.
pub const TAG_LEN: usize = 16;
/// Longest body: what is left of a datagram after header and tag.
pub const MAX_BODY_LEN: usize = MAX_DATAGRAM - HEADER_LEN - TAG_LEN;
/// Largest header sequence number: the seq is 6 bytes of the AEAD nonce.
pub const MAX_SEQ: u64 = 0xffff_ffff_ffff;
/// Longest value bytes in one SessionUpdate or SyncChunk. A SyncChunk (the larger fixed part)
/// with a [`MAX_KEY_LEN`] key and a full chunk still fits in [`MAX_BODY_LEN`].
pub const MAX_VALUE_CHUNK: usize = 1024;
/// Longest session value (sum of its chunks): 1 MiB. Stores may enforce a lower limit.
pub const MAX_VALUE_LEN: u32 = 0x0010_0000;

/// Header flag: the frame was sealed by the insecure provider (no key). Set by
/// [`crate::crypto::seal`]; a receiver with real keys refuses such frames.
pub const FLAG_INSECURE: u8 = 0x80;
/// Header flag bits this version defines; any other bit set is [`Error::Malformed`].
pub const FLAGS_KNOWN: u8 = FLAG_INSECURE;

const _: () = assert!(wire::SYNC_CHUNK_FIXED_LEN + MAX_KEY_LEN + MAX_VALUE_CHUNK <= MAX_BODY_LEN);
const _: () = assert!(core::mem::size_of::<wire::Header>() == HEADER_LEN);

/// Why a frame was refused. `Copy`, tells truncated from malformed from refused.
/// No variant implies any state changed: a refused frame leaves the receiver untouched.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Error {
    /// Fewer bytes than the header or the body length says.
    Truncated,
    /// Bytes are there but a field is invalid (bad magic, reserved bits, length mismatch...).
    /// Also returned by `emit` for a Repr the wire cannot carry.
    Malformed,
    /// Protocol version this build does not speak.
    UnsupportedVersion,
    /// Frame kind unknown to this version: skip it, do not treat it as an attack.
    UnknownKind,
    /// The frame belongs to another cluster id.
    OtherCluster,
    /// Key id not in the keyring.
    UnknownKey,
    /// AEAD tag did not verify (or the frame's insecure flag does not match the keyring).
    Auth,
    /// Sequence number already seen, or older than the replay window.
    Replay,
    /// The sender's incarnation is older than one already seen from that node.
    StaleIncarnation,
    /// The caller's output buffer is too small.
    BufferTooSmall,
    /// A new sender while the replay table is full: refused, since accepting it untracked
    /// would let its frames be replayed.
    TooManySenders,
}

impl core::fmt::Display for Error {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let s = match self {
            Error::Truncated => "truncated frame",
            Error::Malformed => "malformed frame",
            Error::UnsupportedVersion => "unsupported protocol version",
            Error::UnknownKind => "unknown frame kind",
            Error::OtherCluster => "frame of another cluster",
            Error::UnknownKey => "unknown key id",
            Error::Auth => "authentication failed",
            Error::Replay => "replayed or too old sequence number",
            Error::StaleIncarnation => "stale incarnation",
            Error::BufferTooSmall => "buffer too small",
            Error::TooManySenders => "replay table full",
        };
        f.write_str(s)
    }
}

/// Frame kinds (hex protocol constants).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[repr(u8)]
pub enum Kind {
    Heartbeat = 0x01,
    SessionUpdate = 0x02,
    Ack = 0x03,
    RetransmitRequest = 0x04,
    SyncRequest = 0x05,
    SyncChunk = 0x06,
    SyncDone = 0x07,
    Leave = 0x08,
    Challenge = 0x09,
}

impl Kind {
    /// The kind of a wire byte, `None` for a kind this version does not know.
    pub const fn from_u8(byte: u8) -> Option<Kind> {
        Some(match byte {
            0x01 => Kind::Heartbeat,
            0x02 => Kind::SessionUpdate,
            0x03 => Kind::Ack,
            0x04 => Kind::RetransmitRequest,
            0x05 => Kind::SyncRequest,
            0x06 => Kind::SyncChunk,
            0x07 => Kind::SyncDone,
            0x08 => Kind::Leave,
            0x09 => Kind::Challenge,
            _ => return None,
        })
    }
}

/// The role a node announces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum Role {
    /// A member that holds sessions and is not the leader.
    Follower,
    /// The leader of its current view.
    Leader,
    /// A voting member that holds no sessions.
    Witness,
}

impl Role {
    const fn to_u8(self) -> u8 {
        match self {
            Role::Follower => 0x00,
            Role::Leader => 0x01,
            Role::Witness => 0x02,
        }
    }

    const fn from_u8(byte: u8) -> Result<Role, Error> {
        match byte {
            0x00 => Ok(Role::Follower),
            0x01 => Ok(Role::Leader),
            0x02 => Ok(Role::Witness),
            _ => Err(Error::Malformed),
        }
    }
}

/// Heartbeat state flags (bit set). Bits this version does not define are carried as they
/// are and ignored, so a newer sender can add states.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct StateFlags(pub u8);

impl StateFlags {
    pub const JOINING: u8 = 0x01;
    pub const SYNCING: u8 = 0x02;
    pub const DRAINING: u8 = 0x04;
    pub const ISOLATED: u8 = 0x08;

    /// Whether every bit of `mask` is set.
    pub const fn contains(self, mask: u8) -> bool {
        self.0 & mask == mask
    }
}

/// Common header fields, as validated values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct HeaderRepr {
    pub kind: Kind,
    pub flags: u8,
    pub key_id: KeyId,
    pub cluster: ClusterId,
    pub sender: NodeId,
    pub incarnation: Incarnation,
    /// The sender's random per-run value; its run key is derived from it.
    pub salt: Salt,
    /// Per (sender, incarnation) frame sequence; part of the nonce; at most 2^48 - 1.
    pub seq: u64,
}

/// Heartbeat body: everything a receiver needs for its deadline and view.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct HeartbeatRepr {
    /// Sender's heartbeat interval in microseconds.
    pub interval_us: u32,
    /// Sender's detect multiplier: missed intervals before it may be declared dead.
    pub multiplier: u8,
    pub role: Role,
    pub priority: u8,
    pub state: StateFlags,
    /// Leader in the sender's view (None on the wire as node id 0).
    pub leader: Option<NodeId>,
    /// Sender's view number.
    pub view: u64,
    /// Sender's replication high-water mark: last replication sequence it has sent.
    pub repl_hwm: u64,
}

/// What a SessionUpdate does to a session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum Op {
    Put,
    Delete,
    /// Change expiry only.
    Touch,
    /// Several writes applied together or not at all (a transaction): the value holds them
    /// (the daemon's encoding), the key is empty.
    Batch,
}

impl Op {
    /// Whether entries of this op carry a value (Put, Batch).
    const fn has_value(self) -> bool {
        matches!(self, Op::Put | Op::Batch)
    }
}

impl Op {
    const fn to_u8(self) -> u8 {
        match self {
            Op::Put => 0x01,
            Op::Delete => 0x02,
            Op::Touch => 0x03,
            Op::Batch => 0x04,
        }
    }

    const fn from_u8(byte: u8) -> Result<Op, Error> {
        match byte {
            0x01 => Ok(Op::Put),
            0x02 => Ok(Op::Delete),
            0x03 => Ok(Op::Touch),
            0x04 => Ok(Op::Batch),
            _ => Err(Error::Malformed),
        }
    }
}

/// One session entry or one chunk of it (shared by SessionUpdate and SyncChunk).
///
/// Valid on the wire: `key.len() <= MAX_KEY_LEN`, `value.len() <= MAX_VALUE_CHUNK`,
/// `total_len <= MAX_VALUE_LEN`, `offset + value.len() <= total_len`, an empty chunk only for
/// an empty value (`total_len == 0`, `offset == 0`), and Delete/Touch carry no value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct EntryRepr<'a> {
    pub op: Op,
    /// Lamport version of the write.
    pub version: u64,
    /// Node that took the write from a client.
    pub origin: NodeId,
    /// Absolute expiry, unix milliseconds; 0 = never.
    pub expires_at_ms: u64,
    /// At most [`MAX_KEY_LEN`] bytes.
    pub key: &'a [u8],
    /// Total value length across all chunks.
    pub total_len: u32,
    /// Byte offset of this chunk within the value.
    pub offset: u32,
    /// This chunk's bytes.
    pub value: &'a [u8],
}

/// SessionUpdate body: one replicated write (or chunk of it) in the sender's stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct SessionUpdateRepr<'a> {
    /// Replication sequence in the sender's stream (independent of the header seq, so
    /// heartbeats never create gaps and a retransmission keeps its rseq).
    pub rseq: u64,
    pub entry: EntryRepr<'a>,
}

/// Cumulative replication ack: the sender of this frame holds `origin`'s stream up to `rseq`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct AckRepr {
    pub origin: NodeId,
    pub origin_incarnation: Incarnation,
    pub rseq: u64,
}

/// Ask `target` to resend its stream range `from..=to` (`from <= to` on the wire).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct RetransmitRequestRepr {
    pub target: NodeId,
    pub target_incarnation: Incarnation,
    pub from: u64,
    pub to: u64,
}

/// Ask `target` for its full state, resuming after `cursor` entries (0 = from start).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct SyncRequestRepr {
    pub target: NodeId,
    pub sync_id: u32,
    pub cursor: u64,
}

/// One chunk of a full state transfer to `target`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct SyncChunkRepr<'a> {
    pub target: NodeId,
    pub sync_id: u32,
    /// Position of this chunk in the transfer (0-based).
    pub index: u64,
    pub entry: EntryRepr<'a>,
}

/// End of a full state transfer: `chunks` were sent; the sender's stream stood at `rseq`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct SyncDoneRepr {
    pub target: NodeId,
    pub sync_id: u32,
    pub chunks: u64,
    pub rseq: u64,
}

/// Graceful shutdown: receivers mark the sender `left` at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct LeaveRepr {
    pub reason: u8,
}

/// Freshness on first contact: a receiver counts nothing of a run it has not heard from
/// before until that run answered a challenge (docs/PROTOCOL.md, "Freshness").
///
/// A challenge (`answers: None`) asks the run (`target`, `target_incarnation`,
/// `target_salt`) to prove it is live. Its nonce is its own header's (salt, seq): unique
/// across the challenger's runs (random salt) and within one (seq), so no recorded answer can
/// match it. The answer (`answers: Some(seq)`), sealed in the challenged run, names the
/// challenger's run as its target and echoes the challenge's header seq.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct ChallengeRepr {
    pub target: NodeId,
    pub target_incarnation: Incarnation,
    pub target_salt: Salt,
    /// `None`: a challenge; `Some(seq)`: the answer to the target's challenge of header
    /// seq `seq` (at most [`MAX_SEQ`]).
    pub answers: Option<u64>,
}

/// Any frame body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum Body<'a> {
    Heartbeat(HeartbeatRepr),
    SessionUpdate(SessionUpdateRepr<'a>),
    Ack(AckRepr),
    RetransmitRequest(RetransmitRequestRepr),
    SyncRequest(SyncRequestRepr),
    SyncChunk(SyncChunkRepr<'a>),
    SyncDone(SyncDoneRepr),
    Leave(LeaveRepr),
    Challenge(ChallengeRepr),
}

/// A whole plaintext frame: header and body. `header.kind` must match the body's kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct Frame<'a> {
    pub header: HeaderRepr,
    pub body: Body<'a>,
}

/// The zerocopy layouts of the header and of each body's fixed part (network byte order,
/// alignment 1). Offsets are in docs/PROTOCOL.md.
pub mod wire {
    use zerocopy::network_endian::{U16, U32, U64};
    use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

    /// The common 32-byte header.
    #[derive(Clone, Copy, Debug, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
    #[repr(C)]
    pub struct Header {
        pub magic: U32,
        pub version: u8,
        pub kind: u8,
        pub flags: u8,
        pub key_id: u8,
        /// Body length in bytes, tag excluded.
        pub body_len: U16,
        pub sender: U16,
        pub cluster: U32,
        pub incarnation: U32,
        pub salt: [u8; 6],
        /// 48 bits, big endian.
        pub seq: [u8; 6],
    }

    /// Heartbeat body (32 bytes).
    #[derive(Clone, Copy, Debug, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
    #[repr(C)]
    pub struct Heartbeat {
        pub interval_us: U32,
        pub multiplier: u8,
        pub role: u8,
        pub priority: u8,
        pub state: u8,
        pub leader: U16,
        pub reserved: [u8; 6],
        pub view: U64,
        pub repl_hwm: U64,
    }

    /// Fixed part of an entry (32 bytes); `key_len` key bytes and `value_len` value bytes
    /// follow the fixed part of the body that holds it.
    #[derive(Clone, Copy, Debug, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
    #[repr(C)]
    pub struct Entry {
        pub op: u8,
        pub reserved: u8,
        pub key_len: U16,
        pub origin: U16,
        pub value_len: U16,
        pub version: U64,
        pub expires_at_ms: U64,
        pub total_len: U32,
        pub offset: U32,
    }

    /// Fixed part of a SessionUpdate body (40 bytes).
    #[derive(Clone, Copy, Debug, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
    #[repr(C)]
    pub struct SessionUpdate {
        pub rseq: U64,
        pub entry: Entry,
    }

    /// Ack body (16 bytes).
    #[derive(Clone, Copy, Debug, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
    #[repr(C)]
    pub struct Ack {
        pub origin: U16,
        pub reserved: U16,
        pub origin_incarnation: U32,
        pub rseq: U64,
    }

    /// RetransmitRequest body (24 bytes).
    #[derive(Clone, Copy, Debug, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
    #[repr(C)]
    pub struct RetransmitRequest {
        pub target: U16,
        pub reserved: U16,
        pub target_incarnation: U32,
        pub from: U64,
        pub to: U64,
    }

    /// SyncRequest body (16 bytes).
    #[derive(Clone, Copy, Debug, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
    #[repr(C)]
    pub struct SyncRequest {
        pub target: U16,
        pub reserved: U16,
        pub sync_id: U32,
        pub cursor: U64,
    }

    /// Fixed part of a SyncChunk body (48 bytes).
    #[derive(Clone, Copy, Debug, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
    #[repr(C)]
    pub struct SyncChunk {
        pub target: U16,
        pub reserved: U16,
        pub sync_id: U32,
        pub index: U64,
        pub entry: Entry,
    }

    /// SyncDone body (24 bytes).
    #[derive(Clone, Copy, Debug, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
    #[repr(C)]
    pub struct SyncDone {
        pub target: U16,
        pub reserved: U16,
        pub sync_id: U32,
        pub chunks: U64,
        pub rseq: U64,
    }

    /// Challenge body (24 bytes).
    #[derive(Clone, Copy, Debug, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
    #[repr(C)]
    pub struct Challenge {
        pub target: U16,
        /// 0x00 a challenge, 0x01 an answer.
        pub mode: u8,
        pub reserved: u8,
        pub target_incarnation: U32,
        pub target_salt: [u8; 6],
        /// An answer: the challenge's header seq (48 bits, big endian); a challenge: zero.
        pub seq: [u8; 6],
        pub reserved2: [u8; 4],
    }

    /// Leave body (8 bytes).
    #[derive(Clone, Copy, Debug, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
    #[repr(C)]
    pub struct Leave {
        pub reason: u8,
        pub reserved: [u8; 7],
    }

    pub const HEARTBEAT_LEN: usize = core::mem::size_of::<Heartbeat>();
    pub const ENTRY_LEN: usize = core::mem::size_of::<Entry>();
    pub const SESSION_UPDATE_FIXED_LEN: usize = core::mem::size_of::<SessionUpdate>();
    pub const ACK_LEN: usize = core::mem::size_of::<Ack>();
    pub const RETRANSMIT_REQUEST_LEN: usize = core::mem::size_of::<RetransmitRequest>();
    pub const SYNC_REQUEST_LEN: usize = core::mem::size_of::<SyncRequest>();
    pub const SYNC_CHUNK_FIXED_LEN: usize = core::mem::size_of::<SyncChunk>();
    pub const SYNC_DONE_LEN: usize = core::mem::size_of::<SyncDone>();
    pub const LEAVE_LEN: usize = core::mem::size_of::<Leave>();
    pub const CHALLENGE_LEN: usize = core::mem::size_of::<Challenge>();

    /// A whole plaintext heartbeat frame (64 bytes): header then body. Heartbeats are most
    /// of the traffic, so [`super::Frame::parse`] views one with a single length check.
    #[derive(Clone, Copy, Debug, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
    #[repr(C)]
    pub struct HeartbeatFrame {
        pub header: Header,
        pub body: Heartbeat,
    }

    pub const HEARTBEAT_FRAME_LEN: usize = core::mem::size_of::<HeartbeatFrame>();
}

/// Reads a fixed-size body that must be exactly `bytes` long.
fn read_exact<T: FromBytes + zerocopy::KnownLayout + zerocopy::Immutable>(
    bytes: &[u8],
) -> Result<&T, Error> {
    match T::ref_from_prefix(bytes) {
        Ok((t, [])) => Ok(t),
        Ok(_) => Err(Error::Malformed),
        Err(_) => Err(Error::Malformed),
    }
}

/// Writes `value` at the start of `out`, which the caller has checked is long enough.
fn write<T: IntoBytes + zerocopy::Immutable>(value: &T, out: &mut [u8]) -> Result<usize, Error> {
    value
        .write_to_prefix(out)
        .map_err(|_| Error::BufferTooSmall)?;
    Ok(core::mem::size_of_val(value))
}

fn u16be(v: u16) -> zerocopy::network_endian::U16 {
    zerocopy::network_endian::U16::new(v)
}
fn u32be(v: u32) -> zerocopy::network_endian::U32 {
    zerocopy::network_endian::U32::new(v)
}
fn u64be(v: u64) -> zerocopy::network_endian::U64 {
    zerocopy::network_endian::U64::new(v)
}

impl wire::Header {
    /// Whether [`HeaderRepr::check`] accepts this header: every test in one expression,
    /// combined with `&` rather than `&&` so that a valid header costs one branch. The
    /// error of an invalid one is worked out by [`wire::Header::error`].
    #[inline(always)]
    fn is_valid(&self) -> bool {
        (self.magic.get() == MAGIC)
            & (self.version == VERSION)
            & (self.flags & !FLAGS_KNOWN == 0)
            & (usize::from(self.body_len.get()) <= MAX_BODY_LEN)
    }

    /// The 48-bit seq.
    #[inline(always)]
    pub fn seq(&self) -> u64 {
        let s = self.seq;
        u64::from_be_bytes([0, 0, s[0], s[1], s[2], s[3], s[4], s[5]])
    }

    /// Why [`wire::Header::is_valid`] refused this header (off the fast path).
    #[cold]
    #[inline(never)]
    fn error(&self) -> Error {
        if self.magic.get() != MAGIC {
            Error::Malformed
        } else if self.version != VERSION {
            Error::UnsupportedVersion
        } else {
            Error::Malformed
        }
    }
}

/// A heartbeat frame validated in place: every check [`Frame::parse`] makes, no copy; the
/// fields are decoded when read. For a hot path that needs only a few fields of each
/// heartbeat (the detector: sender, incarnation, interval, multiplier). [`Frame::parse`]
/// takes this path for heartbeats too.
#[derive(Clone, Copy, Debug)]
pub struct HeartbeatView<'a>(&'a wire::HeartbeatFrame);

impl<'a> HeartbeatView<'a> {
    /// `Some` exactly when [`Frame::parse`] would return a heartbeat for `bytes`. `None` for
    /// anything else (another kind, or an invalid frame): hand those to [`Frame::parse`],
    /// which returns the other kind or the precise error.
    ///
    /// One zerocopy view over header and body ([`wire::HeartbeatFrame`], so one length
    /// check) and every field check in one expression.
    #[inline]
    pub fn new(bytes: &'a [u8]) -> Option<HeartbeatView<'a>> {
        let w = wire::HeartbeatFrame::ref_from_bytes(bytes).ok()?;
        let (h, b) = (&w.header, &w.body);
        let ok = h.is_valid()
            & (h.kind == Kind::Heartbeat as u8)
            & (usize::from(h.body_len.get()) == wire::HEARTBEAT_LEN)
            & (b.reserved == [0; 6])
            & (b.role <= Role::Witness.to_u8());
        if ok {
            Some(HeartbeatView(w))
        } else {
            None
        }
    }

    /// The wire layout, all fields raw.
    pub fn wire(&self) -> &'a wire::HeartbeatFrame {
        self.0
    }

    #[inline]
    pub fn sender(&self) -> NodeId {
        NodeId(self.0.header.sender.get())
    }

    #[inline]
    pub fn incarnation(&self) -> Incarnation {
        Incarnation(self.0.header.incarnation.get())
    }

    #[inline]
    pub fn seq(&self) -> u64 {
        self.0.header.seq()
    }

    #[inline]
    pub fn interval_us(&self) -> u32 {
        self.0.body.interval_us.get()
    }

    #[inline]
    pub fn multiplier(&self) -> u8 {
        self.0.body.multiplier
    }

    #[inline]
    pub fn header(&self) -> HeaderRepr {
        let h = &self.0.header;
        HeaderRepr {
            kind: Kind::Heartbeat,
            flags: h.flags,
            key_id: KeyId(h.key_id),
            cluster: ClusterId(h.cluster.get()),
            sender: self.sender(),
            incarnation: self.incarnation(),
            salt: Salt(h.salt),
            seq: self.seq(),
        }
    }

    #[inline]
    pub fn heartbeat(&self) -> HeartbeatRepr {
        let b = &self.0.body;
        HeartbeatRepr {
            interval_us: b.interval_us.get(),
            multiplier: b.multiplier,
            // new() checked role <= 0x02.
            role: match b.role {
                0x00 => Role::Follower,
                0x01 => Role::Leader,
                _ => Role::Witness,
            },
            priority: b.priority,
            state: StateFlags(b.state),
            leader: match b.leader.get() {
                0 => None,
                id => Some(NodeId(id)),
            },
            view: b.view.get(),
            repl_hwm: b.repl_hwm.get(),
        }
    }

    /// The frame [`Frame::parse`] returns for these bytes.
    #[inline]
    pub fn frame(&self) -> Frame<'a> {
        Frame {
            header: self.header(),
            body: Body::Heartbeat(self.heartbeat()),
        }
    }
}

/// Length of the first sealed frame in `bytes` (header + body + tag, as its header says),
/// clamped to `bytes.len()`: the rest of a datagram that packs several frames starts there.
/// A header that does not check (or too few bytes) claims the whole remainder, so the caller
/// hands it on as one frame, the open path refuses it with the precise error, and the split
/// ends. Returns 0 only for empty input.
#[inline]
pub fn sealed_frame_len(bytes: &[u8]) -> usize {
    match HeaderRepr::check(bytes) {
        Ok((_, body_len, _)) => (HEADER_LEN + body_len + TAG_LEN).min(bytes.len()),
        Err(_) => bytes.len(),
    }
}

impl HeaderRepr {
    /// Checks everything in a raw header that does not need the key: magic, version, flags
    /// and body length bound. The kind is not checked, so that a
    /// sealed frame of an unknown kind can still be authenticated before it is skipped.
    /// Returns the header view, the body length and the bytes after the header.
    #[inline]
    pub fn check(bytes: &[u8]) -> Result<(&wire::Header, usize, &[u8]), Error> {
        let (header, rest) = wire::Header::ref_from_prefix(bytes).map_err(|_| Error::Truncated)?;
        if !header.is_valid() {
            return Err(header.error());
        }
        Ok((header, usize::from(header.body_len.get()), rest))
    }

    /// The validated values of a header that passed [`HeaderRepr::check`].
    #[inline]
    pub fn from_wire(header: &wire::Header) -> Result<HeaderRepr, Error> {
        Ok(HeaderRepr {
            kind: Kind::from_u8(header.kind).ok_or(Error::UnknownKind)?,
            flags: header.flags,
            key_id: KeyId(header.key_id),
            cluster: ClusterId(header.cluster.get()),
            sender: NodeId(header.sender.get()),
            incarnation: Incarnation(header.incarnation.get()),
            salt: Salt(header.salt),
            seq: header.seq(),
        })
    }

    /// The wire header for this Repr with `body_len`; Malformed if a field cannot be sent.
    pub fn to_wire(self, body_len: usize) -> Result<wire::Header, Error> {
        if self.flags & !FLAGS_KNOWN != 0 || self.seq > MAX_SEQ || body_len > MAX_BODY_LEN {
            return Err(Error::Malformed);
        }
        Ok(wire::Header {
            magic: u32be(MAGIC),
            version: VERSION,
            kind: self.kind as u8,
            flags: self.flags,
            key_id: self.key_id.0,
            // Cannot truncate: body_len <= MAX_BODY_LEN < 2^16 was checked above.
            body_len: u16be(body_len as u16),
            sender: u16be(self.sender.0),
            cluster: u32be(self.cluster.0),
            incarnation: u32be(self.incarnation.0),
            salt: self.salt.0,
            // Cannot truncate: seq <= MAX_SEQ < 2^48 was checked above.
            seq: {
                let b = self.seq.to_be_bytes();
                [b[2], b[3], b[4], b[5], b[6], b[7]]
            },
        })
    }
}

impl<'a> Frame<'a> {
    /// Parses a plaintext frame: header then exactly `body_len` body bytes.
    ///
    /// Fewer bytes than the header or its body length: [`Error::Truncated`]; more:
    /// [`Error::Malformed`].
    ///
    /// A valid heartbeat takes a fast path ([`HeartbeatView::new`]). Anything else, including
    /// every invalid heartbeat, goes through the general path, which picks the error.
    #[inline]
    pub fn parse(bytes: &'a [u8]) -> Result<Frame<'a>, Error> {
        if let Some(view) = HeartbeatView::new(bytes) {
            return Ok(view.frame());
        }
        Frame::parse_general(bytes)
    }

    /// [`Frame::parse`] without the heartbeat fast path.
    #[inline]
    fn parse_general(bytes: &'a [u8]) -> Result<Frame<'a>, Error> {
        let (header, body_len, rest) = HeaderRepr::check(bytes)?;
        let body = match rest.len().cmp(&body_len) {
            core::cmp::Ordering::Less => return Err(Error::Truncated),
            core::cmp::Ordering::Greater => return Err(Error::Malformed),
            core::cmp::Ordering::Equal => rest,
        };
        Frame::from_checked(header, body)
    }

    /// The frame of a header that passed [`HeaderRepr::check`] and a body of exactly its
    /// `body_len` bytes (the header is not checked again).
    #[inline]
    pub(crate) fn from_checked(header: &wire::Header, body: &'a [u8]) -> Result<Frame<'a>, Error> {
        let header = HeaderRepr::from_wire(header)?;
        let body = Body::parse(header.kind, body)?;
        Ok(Frame { header, body })
    }

    /// Bytes [`Frame::emit`] writes.
    pub fn buffer_len(&self) -> usize {
        HEADER_LEN + self.body.buffer_len()
    }

    /// Writes header and body to the start of `out`, returns the length written.
    /// [`Error::BufferTooSmall`] if `out` is shorter than [`Frame::buffer_len`];
    /// [`Error::Malformed`] if the frame cannot be sent (kinds differ, seq too big, ...).
    /// Nothing is written on error.
    pub fn emit(&self, out: &mut [u8]) -> Result<usize, Error> {
        if self.header.kind != self.body.kind() {
            return Err(Error::Malformed);
        }
        // No `self.body.check()`: every body's emit checks itself before it writes.
        let body_len = self.body.buffer_len();
        let header = self.header.to_wire(body_len)?;
        let (head, rest) = out
            .split_at_mut_checked(HEADER_LEN)
            .ok_or(Error::BufferTooSmall)?;
        if rest.len() < body_len {
            return Err(Error::BufferTooSmall);
        }
        let n = self.body.emit(rest)?;
        write(&header, head)?;
        Ok(HEADER_LEN + n)
    }
}

impl<'a> Body<'a> {
    /// The kind of this body.
    pub const fn kind(&self) -> Kind {
        match self {
            Body::Heartbeat(_) => Kind::Heartbeat,
            Body::SessionUpdate(_) => Kind::SessionUpdate,
            Body::Ack(_) => Kind::Ack,
            Body::RetransmitRequest(_) => Kind::RetransmitRequest,
            Body::SyncRequest(_) => Kind::SyncRequest,
            Body::SyncChunk(_) => Kind::SyncChunk,
            Body::SyncDone(_) => Kind::SyncDone,
            Body::Leave(_) => Kind::Leave,
            Body::Challenge(_) => Kind::Challenge,
        }
    }

    /// Parses a body of `kind` that is exactly `bytes` long.
    #[inline]
    pub fn parse(kind: Kind, bytes: &'a [u8]) -> Result<Body<'a>, Error> {
        Ok(match kind {
            Kind::Heartbeat => Body::Heartbeat(HeartbeatRepr::parse(bytes)?),
            Kind::SessionUpdate => Body::SessionUpdate(SessionUpdateRepr::parse(bytes)?),
            Kind::Ack => Body::Ack(AckRepr::parse(bytes)?),
            Kind::RetransmitRequest => {
                Body::RetransmitRequest(RetransmitRequestRepr::parse(bytes)?)
            }
            Kind::SyncRequest => Body::SyncRequest(SyncRequestRepr::parse(bytes)?),
            Kind::SyncChunk => Body::SyncChunk(SyncChunkRepr::parse(bytes)?),
            Kind::SyncDone => Body::SyncDone(SyncDoneRepr::parse(bytes)?),
            Kind::Leave => Body::Leave(LeaveRepr::parse(bytes)?),
            Kind::Challenge => Body::Challenge(ChallengeRepr::parse(bytes)?),
        })
    }

    /// Bytes [`Body::emit`] writes.
    pub fn buffer_len(&self) -> usize {
        match self {
            Body::Heartbeat(_) => wire::HEARTBEAT_LEN,
            Body::SessionUpdate(r) => r.buffer_len(),
            Body::Ack(_) => wire::ACK_LEN,
            Body::RetransmitRequest(_) => wire::RETRANSMIT_REQUEST_LEN,
            Body::SyncRequest(_) => wire::SYNC_REQUEST_LEN,
            Body::SyncChunk(r) => r.buffer_len(),
            Body::SyncDone(_) => wire::SYNC_DONE_LEN,
            Body::Leave(_) => wire::LEAVE_LEN,
            Body::Challenge(_) => wire::CHALLENGE_LEN,
        }
    }

    /// Whether the wire can carry this body ([`Error::Malformed`] if not).
    pub fn check(&self) -> Result<(), Error> {
        match self {
            Body::Heartbeat(r) => r.check(),
            Body::SessionUpdate(r) => r.entry.check(),
            Body::RetransmitRequest(r) => r.check(),
            Body::SyncChunk(r) => r.entry.check(),
            Body::Challenge(r) => r.check(),
            Body::Ack(_) | Body::SyncRequest(_) | Body::SyncDone(_) | Body::Leave(_) => Ok(()),
        }
    }

    /// Writes the body to the start of `out`; returns the length written.
    pub fn emit(&self, out: &mut [u8]) -> Result<usize, Error> {
        match self {
            Body::Heartbeat(r) => r.emit(out),
            Body::SessionUpdate(r) => r.emit(out),
            Body::Ack(r) => r.emit(out),
            Body::RetransmitRequest(r) => r.emit(out),
            Body::SyncRequest(r) => r.emit(out),
            Body::SyncChunk(r) => r.emit(out),
            Body::SyncDone(r) => r.emit(out),
            Body::Leave(r) => r.emit(out),
            Body::Challenge(r) => r.emit(out),
        }
    }
}

impl HeartbeatRepr {
    #[inline]
    pub fn parse(bytes: &[u8]) -> Result<HeartbeatRepr, Error> {
        let w: &wire::Heartbeat = read_exact(bytes)?;
        if w.reserved != [0; 6] {
            return Err(Error::Malformed);
        }
        Ok(HeartbeatRepr {
            interval_us: w.interval_us.get(),
            multiplier: w.multiplier,
            role: Role::from_u8(w.role)?,
            priority: w.priority,
            state: StateFlags(w.state),
            leader: match w.leader.get() {
                0 => None,
                id => Some(NodeId(id)),
            },
            view: w.view.get(),
            repl_hwm: w.repl_hwm.get(),
        })
    }

    /// `Some(NodeId(0))` cannot be sent: 0 means "no leader" on the wire.
    pub fn check(&self) -> Result<(), Error> {
        match self.leader {
            Some(NodeId(0)) => Err(Error::Malformed),
            _ => Ok(()),
        }
    }

    pub fn emit(&self, out: &mut [u8]) -> Result<usize, Error> {
        self.check()?;
        let w = wire::Heartbeat {
            interval_us: u32be(self.interval_us),
            multiplier: self.multiplier,
            role: self.role.to_u8(),
            priority: self.priority,
            state: self.state.0,
            leader: u16be(self.leader.map_or(0, |n| n.0)),
            reserved: [0; 6],
            view: u64be(self.view),
            repl_hwm: u64be(self.repl_hwm),
        };
        write(&w, out)
    }
}

impl<'a> EntryRepr<'a> {
    /// Splits `value` into the entries (chunks) that carry it, in offset order. An empty
    /// value gives one chunk. [`Error::Malformed`] if the key or value is too long.
    pub fn chunks(
        op: Op,
        version: u64,
        origin: NodeId,
        expires_at_ms: u64,
        key: &'a [u8],
        value: &'a [u8],
    ) -> Result<EntryChunks<'a>, Error> {
        let total_len = u32::try_from(value.len()).map_err(|_| Error::Malformed)?;
        if key.len() > MAX_KEY_LEN || total_len > MAX_VALUE_LEN {
            return Err(Error::Malformed);
        }
        if !op.has_value() && !value.is_empty() {
            return Err(Error::Malformed);
        }
        let template = EntryRepr {
            op,
            version,
            origin,
            expires_at_ms,
            key,
            total_len,
            offset: 0,
            value: &[],
        };
        Ok(EntryChunks {
            template,
            rest: value,
            first: true,
        })
    }

    /// Whether this entry is the last chunk of its value.
    pub fn is_last_chunk(&self) -> bool {
        u64::from(self.offset) + self.value.len() as u64 == u64::from(self.total_len)
    }

    /// Whether the wire can carry this entry ([`Error::Malformed`] if not).
    #[inline]
    pub fn check(&self) -> Result<(), Error> {
        let end = u64::from(self.offset) + self.value.len() as u64;
        // `&`, not `&&`: all cheap comparisons, one branch.
        let ok = (self.key.len() <= MAX_KEY_LEN)
            & (self.value.len() <= MAX_VALUE_CHUNK)
            & (self.total_len <= MAX_VALUE_LEN)
            & (end <= u64::from(self.total_len))
            & (!self.value.is_empty() | ((self.total_len == 0) & (self.offset == 0)))
            & (self.op.has_value() | (self.total_len == 0));
        if ok {
            Ok(())
        } else {
            Err(Error::Malformed)
        }
    }

    fn buffer_len(&self) -> usize {
        self.key.len() + self.value.len()
    }

    /// Parses an entry from its fixed part and the bytes after it (exactly key + value).
    #[inline]
    fn parse(w: &wire::Entry, rest: &'a [u8]) -> Result<EntryRepr<'a>, Error> {
        let key_len = usize::from(w.key_len.get());
        let value_len = usize::from(w.value_len.get());
        if w.reserved != 0 || key_len.checked_add(value_len) != Some(rest.len()) {
            return Err(Error::Malformed);
        }
        let (key, value) = rest.split_at_checked(key_len).ok_or(Error::Malformed)?;
        let entry = EntryRepr {
            op: Op::from_u8(w.op)?,
            version: w.version.get(),
            origin: NodeId(w.origin.get()),
            expires_at_ms: w.expires_at_ms.get(),
            key,
            total_len: w.total_len.get(),
            offset: w.offset.get(),
            value,
        };
        entry.check()?;
        Ok(entry)
    }

    /// The fixed part; the caller has run [`EntryRepr::check`] (lengths fit in u16).
    fn to_wire(self) -> wire::Entry {
        wire::Entry {
            op: self.op.to_u8(),
            reserved: 0,
            key_len: u16be(self.key.len() as u16),
            origin: u16be(self.origin.0),
            value_len: u16be(self.value.len() as u16),
            version: u64be(self.version),
            expires_at_ms: u64be(self.expires_at_ms),
            total_len: u32be(self.total_len),
            offset: u32be(self.offset),
        }
    }

    /// Writes key then value after a fixed part of `fixed_len` already checked to fit.
    fn emit_tail(&self, out: &mut [u8], fixed_len: usize) -> Result<usize, Error> {
        let end = fixed_len + self.buffer_len();
        let tail = out.get_mut(fixed_len..end).ok_or(Error::BufferTooSmall)?;
        let (k, v) = tail.split_at_mut(self.key.len());
        k.copy_from_slice(self.key);
        v.copy_from_slice(self.value);
        Ok(end)
    }
}

/// Iterator over the chunks of one value, from [`EntryRepr::chunks`].
#[derive(Clone, Debug)]
pub struct EntryChunks<'a> {
    template: EntryRepr<'a>,
    rest: &'a [u8],
    first: bool,
}

impl<'a> Iterator for EntryChunks<'a> {
    type Item = EntryRepr<'a>;

    fn next(&mut self) -> Option<EntryRepr<'a>> {
        if self.rest.is_empty() && !self.first {
            return None;
        }
        self.first = false;
        let n = self.rest.len().min(MAX_VALUE_CHUNK);
        let (chunk, rest) = self.rest.split_at(n);
        let entry = EntryRepr {
            value: chunk,
            ..self.template
        };
        // Cannot overflow: offsets stay <= total_len, which fits in u32 (checked in chunks()).
        self.template.offset += n as u32;
        self.rest = rest;
        Some(entry)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = if self.first && self.rest.is_empty() {
            1
        } else {
            self.rest.len().div_ceil(MAX_VALUE_CHUNK)
        };
        (n, Some(n))
    }
}

impl ExactSizeIterator for EntryChunks<'_> {}

impl<'a> SessionUpdateRepr<'a> {
    #[inline]
    pub fn parse(bytes: &'a [u8]) -> Result<SessionUpdateRepr<'a>, Error> {
        let (w, rest) =
            wire::SessionUpdate::ref_from_prefix(bytes).map_err(|_| Error::Malformed)?;
        Ok(SessionUpdateRepr {
            rseq: w.rseq.get(),
            entry: EntryRepr::parse(&w.entry, rest)?,
        })
    }

    pub fn buffer_len(&self) -> usize {
        wire::SESSION_UPDATE_FIXED_LEN + self.entry.buffer_len()
    }

    pub fn emit(&self, out: &mut [u8]) -> Result<usize, Error> {
        self.entry.check()?;
        if out.len() < self.buffer_len() {
            return Err(Error::BufferTooSmall);
        }
        let w = wire::SessionUpdate {
            rseq: u64be(self.rseq),
            entry: self.entry.to_wire(),
        };
        write(&w, out)?;
        self.entry.emit_tail(out, wire::SESSION_UPDATE_FIXED_LEN)
    }
}

impl AckRepr {
    pub fn parse(bytes: &[u8]) -> Result<AckRepr, Error> {
        let w: &wire::Ack = read_exact(bytes)?;
        if w.reserved.get() != 0 {
            return Err(Error::Malformed);
        }
        Ok(AckRepr {
            origin: NodeId(w.origin.get()),
            origin_incarnation: Incarnation(w.origin_incarnation.get()),
            rseq: w.rseq.get(),
        })
    }

    pub fn emit(&self, out: &mut [u8]) -> Result<usize, Error> {
        let w = wire::Ack {
            origin: u16be(self.origin.0),
            reserved: u16be(0),
            origin_incarnation: u32be(self.origin_incarnation.0),
            rseq: u64be(self.rseq),
        };
        write(&w, out)
    }
}

impl RetransmitRequestRepr {
    pub fn parse(bytes: &[u8]) -> Result<RetransmitRequestRepr, Error> {
        let w: &wire::RetransmitRequest = read_exact(bytes)?;
        if w.reserved.get() != 0 {
            return Err(Error::Malformed);
        }
        let repr = RetransmitRequestRepr {
            target: NodeId(w.target.get()),
            target_incarnation: Incarnation(w.target_incarnation.get()),
            from: w.from.get(),
            to: w.to.get(),
        };
        repr.check()?;
        Ok(repr)
    }

    /// `from > to` is an empty range and cannot be sent.
    pub fn check(&self) -> Result<(), Error> {
        if self.from <= self.to {
            Ok(())
        } else {
            Err(Error::Malformed)
        }
    }

    pub fn emit(&self, out: &mut [u8]) -> Result<usize, Error> {
        self.check()?;
        let w = wire::RetransmitRequest {
            target: u16be(self.target.0),
            reserved: u16be(0),
            target_incarnation: u32be(self.target_incarnation.0),
            from: u64be(self.from),
            to: u64be(self.to),
        };
        write(&w, out)
    }
}

impl SyncRequestRepr {
    pub fn parse(bytes: &[u8]) -> Result<SyncRequestRepr, Error> {
        let w: &wire::SyncRequest = read_exact(bytes)?;
        if w.reserved.get() != 0 {
            return Err(Error::Malformed);
        }
        Ok(SyncRequestRepr {
            target: NodeId(w.target.get()),
            sync_id: w.sync_id.get(),
            cursor: w.cursor.get(),
        })
    }

    pub fn emit(&self, out: &mut [u8]) -> Result<usize, Error> {
        let w = wire::SyncRequest {
            target: u16be(self.target.0),
            reserved: u16be(0),
            sync_id: u32be(self.sync_id),
            cursor: u64be(self.cursor),
        };
        write(&w, out)
    }
}

impl<'a> SyncChunkRepr<'a> {
    pub fn parse(bytes: &'a [u8]) -> Result<SyncChunkRepr<'a>, Error> {
        let (w, rest) = wire::SyncChunk::ref_from_prefix(bytes).map_err(|_| Error::Malformed)?;
        if w.reserved.get() != 0 {
            return Err(Error::Malformed);
        }
        Ok(SyncChunkRepr {
            target: NodeId(w.target.get()),
            sync_id: w.sync_id.get(),
            index: w.index.get(),
            entry: EntryRepr::parse(&w.entry, rest)?,
        })
    }

    pub fn buffer_len(&self) -> usize {
        wire::SYNC_CHUNK_FIXED_LEN + self.entry.buffer_len()
    }

    pub fn emit(&self, out: &mut [u8]) -> Result<usize, Error> {
        self.entry.check()?;
        if out.len() < self.buffer_len() {
            return Err(Error::BufferTooSmall);
        }
        let w = wire::SyncChunk {
            target: u16be(self.target.0),
            reserved: u16be(0),
            sync_id: u32be(self.sync_id),
            index: u64be(self.index),
            entry: self.entry.to_wire(),
        };
        write(&w, out)?;
        self.entry.emit_tail(out, wire::SYNC_CHUNK_FIXED_LEN)
    }
}

impl SyncDoneRepr {
    pub fn parse(bytes: &[u8]) -> Result<SyncDoneRepr, Error> {
        let w: &wire::SyncDone = read_exact(bytes)?;
        if w.reserved.get() != 0 {
            return Err(Error::Malformed);
        }
        Ok(SyncDoneRepr {
            target: NodeId(w.target.get()),
            sync_id: w.sync_id.get(),
            chunks: w.chunks.get(),
            rseq: w.rseq.get(),
        })
    }

    pub fn emit(&self, out: &mut [u8]) -> Result<usize, Error> {
        let w = wire::SyncDone {
            target: u16be(self.target.0),
            reserved: u16be(0),
            sync_id: u32be(self.sync_id),
            chunks: u64be(self.chunks),
            rseq: u64be(self.rseq),
        };
        write(&w, out)
    }
}

impl LeaveRepr {
    pub fn parse(bytes: &[u8]) -> Result<LeaveRepr, Error> {
        let w: &wire::Leave = read_exact(bytes)?;
        if w.reserved != [0; 7] {
            return Err(Error::Malformed);
        }
        Ok(LeaveRepr { reason: w.reason })
    }

    pub fn emit(&self, out: &mut [u8]) -> Result<usize, Error> {
        let w = wire::Leave {
            reason: self.reason,
            reserved: [0; 7],
        };
        write(&w, out)
    }
}

impl ChallengeRepr {
    pub fn parse(bytes: &[u8]) -> Result<ChallengeRepr, Error> {
        let w: &wire::Challenge = read_exact(bytes)?;
        let s = w.seq;
        let seq = u64::from_be_bytes([0, 0, s[0], s[1], s[2], s[3], s[4], s[5]]);
        let answers = match w.mode {
            0x00 if seq == 0 => None,
            0x01 => Some(seq),
            _ => return Err(Error::Malformed),
        };
        if w.reserved != 0 || w.reserved2 != [0; 4] {
            return Err(Error::Malformed);
        }
        Ok(ChallengeRepr {
            target: NodeId(w.target.get()),
            target_incarnation: Incarnation(w.target_incarnation.get()),
            target_salt: Salt(w.target_salt),
            answers,
        })
    }

    /// An answered seq above [`MAX_SEQ`] cannot be sent.
    pub fn check(&self) -> Result<(), Error> {
        match self.answers {
            Some(seq) if seq > MAX_SEQ => Err(Error::Malformed),
            _ => Ok(()),
        }
    }

    pub fn emit(&self, out: &mut [u8]) -> Result<usize, Error> {
        self.check()?;
        let b = self.answers.unwrap_or(0).to_be_bytes();
        let w = wire::Challenge {
            target: u16be(self.target.0),
            mode: u8::from(self.answers.is_some()),
            reserved: 0,
            target_incarnation: u32be(self.target_incarnation.0),
            target_salt: self.target_salt.0,
            seq: [b[2], b[3], b[4], b[5], b[6], b[7]],
            reserved2: [0; 4],
        };
        write(&w, out)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::vec::Vec;

    #[test]
    fn header_offsets_find_the_fields_of_the_heartbeat_vector() {
        let f = &HEARTBEAT_BYTES;
        assert_eq!(f[header::KIND], Kind::Heartbeat as u8);
        assert_eq!(f[header::SENDER..header::SENDER + 2], [0x00, 0x01]);
        assert_eq!(
            f[header::INCARNATION..header::INCARNATION + 4],
            0x6553_f100u32.to_be_bytes()
        );
        assert_eq!(
            f[header::SALT..header::SALT + header::SALT_LEN],
            [0xa1, 0xa2, 0xa3, 0xa4, 0xa5, 0xa6]
        );
    }

    // Test vectors (also in docs/PROTOCOL.md): construct/deconstruct pairs, smoltcp style.

    pub(crate) static HEARTBEAT_BYTES: [u8; 64] = [
        // header: magic "TNDM", version 2, kind 0x01, flags 0, key id 1, body len 32
        0x54, 0x4e, 0x44, 0x4d, 0x02, 0x01, 0x00, 0x01, 0x00, 0x20, //
        // sender 1, cluster 0x0000beef, incarnation 0x6553f100
        0x00, 0x01, 0x00, 0x00, 0xbe, 0xef, 0x65, 0x53, 0xf1, 0x00, //
        // salt a1 a2 a3 a4 a5 a6, seq 7 (48 bits)
        0xa1, 0xa2, 0xa3, 0xa4, 0xa5, 0xa6, 0x00, 0x00, 0x00, 0x00, 0x00, 0x07, //
        // interval 10000 us, multiplier 3, role leader, priority 100, state syncing
        0x00, 0x00, 0x27, 0x10, 0x03, 0x01, 0x64, 0x02, //
        // leader 1, reserved
        0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, //
        // view 5, replication high-water mark 42
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x05, //
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x2a,
    ];

    fn heartbeat_header() -> HeaderRepr {
        HeaderRepr {
            kind: Kind::Heartbeat,
            flags: 0,
            key_id: KeyId(1),
            cluster: ClusterId(0xbeef),
            sender: NodeId(1),
            incarnation: Incarnation(0x6553_f100),
            salt: Salt([0xa1, 0xa2, 0xa3, 0xa4, 0xa5, 0xa6]),
            seq: 7,
        }
    }

    pub(crate) fn heartbeat_repr() -> HeartbeatRepr {
        HeartbeatRepr {
            interval_us: 10_000,
            multiplier: 3,
            role: Role::Leader,
            priority: 100,
            state: StateFlags(StateFlags::SYNCING),
            leader: Some(NodeId(1)),
            view: 5,
            repl_hwm: 42,
        }
    }

    pub(crate) fn heartbeat_frame() -> Frame<'static> {
        Frame {
            header: heartbeat_header(),
            body: Body::Heartbeat(heartbeat_repr()),
        }
    }

    /// An answer (also in docs/PROTOCOL.md): node 2's run answers node 1's challenge of seq 7.
    pub(crate) static CHALLENGE_ANSWER_BYTES: [u8; 56] = [
        // header: kind 0x09, key id 1, body len 24, sender 2, salt b1..b6, seq 0x10
        0x54, 0x4e, 0x44, 0x4d, 0x02, 0x09, 0x00, 0x01, 0x00, 0x18, //
        0x00, 0x02, 0x00, 0x00, 0xbe, 0xef, 0x65, 0x53, 0xf1, 0x01, //
        0xb1, 0xb2, 0xb3, 0xb4, 0xb5, 0xb6, 0x00, 0x00, 0x00, 0x00, 0x00, 0x10, //
        // target 1, mode answer, reserved, target incarnation 0x6553f100
        0x00, 0x01, 0x01, 0x00, 0x65, 0x53, 0xf1, 0x00, //
        // target salt a1..a6, answered seq 7, reserved
        0xa1, 0xa2, 0xa3, 0xa4, 0xa5, 0xa6, 0x00, 0x00, 0x00, 0x00, 0x00, 0x07, //
        0x00, 0x00, 0x00, 0x00,
    ];

    fn challenge_answer() -> Frame<'static> {
        Frame {
            header: HeaderRepr {
                kind: Kind::Challenge,
                flags: 0,
                key_id: KeyId(1),
                cluster: ClusterId(0xbeef),
                sender: NodeId(2),
                incarnation: Incarnation(0x6553_f101),
                salt: Salt([0xb1, 0xb2, 0xb3, 0xb4, 0xb5, 0xb6]),
                seq: 0x10,
            },
            body: Body::Challenge(ChallengeRepr {
                target: NodeId(1),
                target_incarnation: Incarnation(0x6553_f100),
                target_salt: Salt([0xa1, 0xa2, 0xa3, 0xa4, 0xa5, 0xa6]),
                answers: Some(7),
            }),
        }
    }

    /// The Challenge layout: the vector parses to its Repr and back, PROTOCOL.md shows the
    /// same bytes, a challenge carries no seq, and unknown modes or reserved bits refuse.
    #[test]
    fn challenge_vector_and_rules() {
        assert_eq!(
            Frame::parse(&CHALLENGE_ANSWER_BYTES),
            Ok(challenge_answer())
        );
        let mut out = [0u8; 56];
        assert_eq!(challenge_answer().emit(&mut out), Ok(56));
        assert_eq!(out, CHALLENGE_ANSWER_BYTES);
        let doc = include_str!("../../docs/PROTOCOL.md");
        let fence = "```hex vector:challenge-answer-plain\n";
        let start = doc.find(fence).expect("vector in PROTOCOL.md") + fence.len();
        let len = doc[start..].find("```").unwrap();
        let shown: Vec<u8> = doc[start..start + len]
            .split_whitespace()
            .map(|h| u8::from_str_radix(h, 16).unwrap())
            .collect();
        assert_eq!(shown, CHALLENGE_ANSWER_BYTES);
        let body = &CHALLENGE_ANSWER_BYTES[HEADER_LEN..];
        let mut ask = body.to_vec();
        ask[2] = 0x00;
        assert_eq!(
            ChallengeRepr::parse(&ask),
            Err(Error::Malformed),
            "seq in a challenge"
        );
        ask[19] = 0x00;
        assert!(ChallengeRepr::parse(&ask).is_ok_and(|c| c.answers.is_none()));
        for (at, v) in [(2, 0x02), (3, 0x01), (23, 0x01)] {
            let mut bad = body.to_vec();
            bad[at] = v;
            assert_eq!(
                ChallengeRepr::parse(&bad),
                Err(Error::Malformed),
                "byte {at}"
            );
        }
        let too_big = ChallengeRepr {
            answers: Some(MAX_SEQ + 1),
            ..ChallengeRepr::parse(body).unwrap()
        };
        assert_eq!(too_big.emit(&mut out), Err(Error::Malformed));
    }

    pub(crate) static SESSION_UPDATE_BYTES: [u8; 84] = [
        // header: kind 0x02, key id 1, body len 52, sender 2, salt b1..b6, seq 0x0102030405
        0x54, 0x4e, 0x44, 0x4d, 0x02, 0x02, 0x00, 0x01, 0x00, 0x34, //
        0x00, 0x02, 0x00, 0x00, 0xbe, 0xef, 0x65, 0x53, 0xf1, 0x01, //
        0xb1, 0xb2, 0xb3, 0xb4, 0xb5, 0xb6, 0x00, 0x01, 0x02, 0x03, 0x04, 0x05, //
        // rseq 9
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x09, //
        // op put, reserved, key len 7, origin 2, value len 5
        0x01, 0x00, 0x00, 0x07, 0x00, 0x02, 0x00, 0x05, //
        // version 0x11, expires at 1_700_000_000_000 ms
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x11, //
        0x00, 0x00, 0x01, 0x8b, 0xcf, 0xe5, 0x68, 0x00, //
        // total len 5, offset 0
        0x00, 0x00, 0x00, 0x05, 0x00, 0x00, 0x00, 0x00, //
        // key "sess:42", value "hello"
        b's', b'e', b's', b's', b':', b'4', b'2', //
        b'h', b'e', b'l', b'l', b'o',
    ];

    pub(crate) fn session_update_frame() -> Frame<'static> {
        Frame {
            header: HeaderRepr {
                kind: Kind::SessionUpdate,
                flags: 0,
                key_id: KeyId(1),
                cluster: ClusterId(0xbeef),
                sender: NodeId(2),
                incarnation: Incarnation(0x6553_f101),
                salt: Salt([0xb1, 0xb2, 0xb3, 0xb4, 0xb5, 0xb6]),
                seq: 0x01_0203_0405,
            },
            body: Body::SessionUpdate(SessionUpdateRepr {
                rseq: 9,
                entry: EntryRepr {
                    op: Op::Put,
                    version: 0x11,
                    origin: NodeId(2),
                    expires_at_ms: 1_700_000_000_000,
                    key: b"sess:42",
                    total_len: 5,
                    offset: 0,
                    value: b"hello",
                },
            }),
        }
    }

    #[test]
    fn deconstruct_heartbeat() {
        assert_eq!(Frame::parse(&HEARTBEAT_BYTES), Ok(heartbeat_frame()));
    }

    #[test]
    fn construct_heartbeat() {
        let mut buf = [0xa5u8; 80];
        let frame = heartbeat_frame();
        assert_eq!(frame.buffer_len(), HEARTBEAT_BYTES.len());
        assert_eq!(frame.emit(&mut buf), Ok(HEARTBEAT_BYTES.len()));
        assert_eq!(&buf[..64], &HEARTBEAT_BYTES[..]);
        assert_eq!(&buf[64..], &[0xa5; 16][..], "emit wrote past its length");
    }

    #[test]
    fn deconstruct_session_update() {
        assert_eq!(
            Frame::parse(&SESSION_UPDATE_BYTES),
            Ok(session_update_frame())
        );
    }

    #[test]
    fn construct_session_update() {
        let mut buf = [0x5au8; 84];
        assert_eq!(session_update_frame().emit(&mut buf), Ok(84));
        assert_eq!(&buf[..], &SESSION_UPDATE_BYTES[..]);
    }

    #[test]
    fn layout_sizes() {
        assert_eq!(wire::HEARTBEAT_LEN, 32);
        assert_eq!(wire::ENTRY_LEN, 32);
        assert_eq!(wire::SESSION_UPDATE_FIXED_LEN, 40);
        assert_eq!(wire::ACK_LEN, 16);
        assert_eq!(wire::RETRANSMIT_REQUEST_LEN, 24);
        assert_eq!(wire::SYNC_REQUEST_LEN, 16);
        assert_eq!(wire::SYNC_CHUNK_FIXED_LEN, 48);
        assert_eq!(wire::SYNC_DONE_LEN, 24);
        assert_eq!(wire::LEAVE_LEN, 8);
        assert_eq!(MAX_BODY_LEN, 1352);
    }

    #[test]
    fn emit_refuses_short_buffer_without_writing() {
        let frame = session_update_frame();
        for len in 0..frame.buffer_len() {
            let mut buf = std::vec![0xeeu8; len];
            assert_eq!(
                frame.emit(&mut buf),
                Err(Error::BufferTooSmall),
                "len {len}"
            );
            assert!(buf.iter().all(|&b| b == 0xee), "wrote into a short buffer");
        }
    }

    fn patched(bytes: &[u8], at: usize, value: u8) -> Vec<u8> {
        let mut v = bytes.to_vec();
        v[at] = value;
        v
    }

    #[test]
    fn header_field_errors() {
        let hb = &HEARTBEAT_BYTES;
        assert_eq!(Frame::parse(&patched(hb, 0, b'X')), Err(Error::Malformed));
        // a version 1 frame (the header before the salt) is refused as such
        assert_eq!(
            Frame::parse(&patched(hb, 4, 0x01)),
            Err(Error::UnsupportedVersion)
        );
        assert_eq!(Frame::parse(&patched(hb, 5, 0x0a)), Err(Error::UnknownKind));
        assert_eq!(Frame::parse(&patched(hb, 5, 0x00)), Err(Error::UnknownKind));
        assert_eq!(Frame::parse(&patched(hb, 6, 0x01)), Err(Error::Malformed));
        // every salt is valid; the seq is 48 bits wide
        assert!(Frame::parse(&patched(hb, 20, 0x00)).is_ok());
        let top = patched(hb, 26, 0xff);
        assert_eq!(
            Frame::parse(&top).map(|f| f.header.seq),
            Ok(0xff00_0000_0007)
        );
        // insecure flag is a known flag: parses
        assert!(Frame::parse(&patched(hb, 6, FLAG_INSECURE)).is_ok());
        // a longer body than the header says
        let mut long = hb.to_vec();
        long.push(0);
        assert_eq!(Frame::parse(&long), Err(Error::Malformed));
    }

    #[test]
    fn body_field_errors() {
        let hb = &HEARTBEAT_BYTES;
        // role 3, reserved byte
        assert_eq!(Frame::parse(&patched(hb, 37, 0x03)), Err(Error::Malformed));
        assert_eq!(Frame::parse(&patched(hb, 45, 0x01)), Err(Error::Malformed));
        let su = &SESSION_UPDATE_BYTES;
        // op 0, reserved, key len 8 (lengths no longer add up), value len 6
        assert_eq!(Frame::parse(&patched(su, 40, 0x00)), Err(Error::Malformed));
        assert_eq!(Frame::parse(&patched(su, 41, 0x01)), Err(Error::Malformed));
        assert_eq!(Frame::parse(&patched(su, 43, 0x08)), Err(Error::Malformed));
        assert_eq!(Frame::parse(&patched(su, 47, 0x06)), Err(Error::Malformed));
        // total len 4 < chunk end 5; offset 1 -> chunk end 6 > total 5
        assert_eq!(Frame::parse(&patched(su, 67, 0x04)), Err(Error::Malformed));
        assert_eq!(Frame::parse(&patched(su, 71, 0x01)), Err(Error::Malformed));
        // op delete with a value
        assert_eq!(Frame::parse(&patched(su, 40, 0x02)), Err(Error::Malformed));
        // a body length that disagrees with the kind's fixed size
        let mut hb_short = hb[..63].to_vec();
        hb_short[9] = 31;
        assert_eq!(Frame::parse(&hb_short), Err(Error::Malformed));
    }

    #[test]
    fn emit_refuses_unrepresentable() {
        let mut buf = [0u8; MAX_DATAGRAM];
        let mut f = heartbeat_frame();
        f.header.seq = MAX_SEQ + 1;
        assert_eq!(f.emit(&mut buf), Err(Error::Malformed));
        let mut f = heartbeat_frame();
        f.header.kind = Kind::Leave;
        assert_eq!(f.emit(&mut buf), Err(Error::Malformed));
        let mut f = heartbeat_frame();
        f.header.flags = 0x01;
        assert_eq!(f.emit(&mut buf), Err(Error::Malformed));
        let mut hb = heartbeat_repr();
        hb.leader = Some(NodeId(0));
        assert_eq!(hb.emit(&mut buf), Err(Error::Malformed));
        let rr = RetransmitRequestRepr {
            target: NodeId(1),
            target_incarnation: Incarnation(1),
            from: 5,
            to: 4,
        };
        assert_eq!(rr.emit(&mut buf), Err(Error::Malformed));
        let key = [0u8; MAX_KEY_LEN + 1];
        let Body::SessionUpdate(mut su) = session_update_frame().body else {
            unreachable!()
        };
        su.entry.key = &key;
        assert_eq!(su.emit(&mut buf), Err(Error::Malformed));
        let Body::SessionUpdate(mut su) = session_update_frame().body else {
            unreachable!()
        };
        su.entry.op = Op::Touch;
        assert_eq!(su.emit(&mut buf), Err(Error::Malformed));
    }

    #[test]
    fn heartbeat_fast_path_agrees_with_general_path() {
        // Every single-byte change of a valid heartbeat: the fast path must give exactly what
        // the general path gives (same frame, or same error).
        let mut bytes = HEARTBEAT_BYTES;
        let mut fast = 0;
        for at in 0..bytes.len() {
            for value in 0..=255u8 {
                let old = bytes[at];
                bytes[at] = value;
                let general = Frame::parse_general(&bytes);
                assert_eq!(Frame::parse(&bytes), general, "byte {at} = {value:#04x}");
                if let Some(view) = HeartbeatView::new(&bytes) {
                    assert_eq!(Ok(view.frame()), general, "byte {at} = {value:#04x}");
                    let Ok(Frame { header, .. }) = general else {
                        unreachable!()
                    };
                    assert_eq!(
                        (view.sender(), view.incarnation(), view.seq()),
                        (header.sender, header.incarnation, header.seq)
                    );
                    fast += 1;
                }
                bytes[at] = old;
            }
        }
        // The fast path did take the valid variants (key id, insecure flag, payload fields).
        assert!(fast > 64 * 100, "fast path taken {fast} times");
    }

    #[test]
    fn kind_from_u8_round_trips() {
        for b in 0..=255u8 {
            if let Some(k) = Kind::from_u8(b) {
                assert_eq!(k as u8, b);
            }
        }
        assert_eq!(Kind::from_u8(0x09), Some(Kind::Challenge));
        assert_eq!(Kind::from_u8(0x0a), None);
    }

    #[test]
    fn chunks_of_a_large_value_fit_and_reassemble() {
        let key = [b'k'; MAX_KEY_LEN];
        let value: Vec<u8> = (0..256 * 1024 + 7).map(|i| (i % 251) as u8).collect();
        let chunks = EntryRepr::chunks(Op::Put, 3, NodeId(1), 0, &key, &value).unwrap();
        assert_eq!(chunks.len(), value.len().div_ceil(MAX_VALUE_CHUNK));
        let mut rebuilt = Vec::new();
        let mut buf = [0u8; MAX_DATAGRAM];
        for (i, entry) in chunks.enumerate() {
            assert_eq!(entry.offset as usize, rebuilt.len());
            rebuilt.extend_from_slice(entry.value);
            let frame = Frame {
                header: HeaderRepr {
                    kind: Kind::SyncChunk,
                    ..heartbeat_header()
                },
                body: Body::SyncChunk(SyncChunkRepr {
                    target: NodeId(2),
                    sync_id: 1,
                    index: i as u64,
                    entry,
                }),
            };
            let n = frame.emit(&mut buf).unwrap();
            assert!(n + TAG_LEN <= MAX_DATAGRAM);
            assert_eq!(Frame::parse(&buf[..n]), Ok(frame));
        }
        assert_eq!(rebuilt, value);
    }

    #[test]
    fn chunks_of_empty_and_delete() {
        let one: Vec<_> = EntryRepr::chunks(Op::Put, 1, NodeId(1), 0, b"k", b"")
            .unwrap()
            .collect();
        assert_eq!(one.len(), 1);
        assert!(one[0].is_last_chunk());
        assert_eq!(one[0].check(), Ok(()));
        let del: Vec<_> = EntryRepr::chunks(Op::Delete, 1, NodeId(1), 0, b"k", b"")
            .unwrap()
            .collect();
        assert_eq!((del.len(), del[0].total_len), (1, 0));
        assert!(EntryRepr::chunks(Op::Delete, 1, NodeId(1), 0, b"k", b"v").is_err());
        let big = std::vec![0u8; MAX_VALUE_LEN as usize + 1];
        assert!(EntryRepr::chunks(Op::Put, 1, NodeId(1), 0, b"k", &big).is_err());
    }

    // proptest: every kind round trips, every truncation is Truncated.

    fn leak(v: Vec<u8>) -> &'static [u8] {
        // Tests only: a few hundred small leaked buffers keep the Reprs 'static.
        Vec::leak(v)
    }

    fn node() -> impl Strategy<Value = NodeId> {
        any::<u16>().prop_map(NodeId)
    }

    fn role() -> impl Strategy<Value = Role> {
        prop_oneof![
            Just(Role::Follower),
            Just(Role::Leader),
            Just(Role::Witness)
        ]
    }

    fn entry() -> impl Strategy<Value = EntryRepr<'static>> {
        let op = prop_oneof![
            Just(Op::Put),
            Just(Op::Delete),
            Just(Op::Touch),
            Just(Op::Batch)
        ];
        (
            op,
            any::<u64>(),
            node(),
            any::<u64>(),
            proptest::collection::vec(any::<u8>(), 0..=MAX_KEY_LEN),
            proptest::collection::vec(any::<u8>(), 0..=MAX_VALUE_CHUNK),
            any::<u32>(),
            any::<u32>(),
        )
            .prop_map(|(op, version, origin, expires_at_ms, key, value, a, b)| {
                let (value, offset, total_len) = if !op.has_value() || value.is_empty() {
                    (Vec::new(), 0, 0)
                } else {
                    let len = value.len() as u32;
                    let offset = a % (MAX_VALUE_LEN - len + 1);
                    let total = offset + len + b % (MAX_VALUE_LEN - offset - len + 1);
                    (value, offset, total)
                };
                EntryRepr {
                    op,
                    version,
                    origin,
                    expires_at_ms,
                    key: leak(key),
                    total_len,
                    offset,
                    value: leak(value),
                }
            })
    }

    pub(crate) fn body() -> impl Strategy<Value = Body<'static>> {
        let heartbeat = (
            any::<u32>(),
            any::<u8>(),
            role(),
            any::<u8>(),
            any::<u8>(),
            proptest::option::of(1..=u16::MAX),
            any::<u64>(),
            any::<u64>(),
        )
            .prop_map(|(i, m, role, p, s, l, view, hwm)| {
                Body::Heartbeat(HeartbeatRepr {
                    interval_us: i,
                    multiplier: m,
                    role,
                    priority: p,
                    state: StateFlags(s),
                    leader: l.map(NodeId),
                    view,
                    repl_hwm: hwm,
                })
            });
        let update = (any::<u64>(), entry())
            .prop_map(|(rseq, entry)| Body::SessionUpdate(SessionUpdateRepr { rseq, entry }));
        let ack = (node(), any::<u32>(), any::<u64>()).prop_map(|(o, i, r)| {
            Body::Ack(AckRepr {
                origin: o,
                origin_incarnation: Incarnation(i),
                rseq: r,
            })
        });
        let retransmit =
            (node(), any::<u32>(), any::<u64>(), any::<u64>()).prop_map(|(t, i, a, b)| {
                Body::RetransmitRequest(RetransmitRequestRepr {
                    target: t,
                    target_incarnation: Incarnation(i),
                    from: a.min(b),
                    to: a.max(b),
                })
            });
        let sync_req = (node(), any::<u32>(), any::<u64>()).prop_map(|(t, s, c)| {
            Body::SyncRequest(SyncRequestRepr {
                target: t,
                sync_id: s,
                cursor: c,
            })
        });
        let sync_chunk = (node(), any::<u32>(), any::<u64>(), entry()).prop_map(|(t, s, i, e)| {
            Body::SyncChunk(SyncChunkRepr {
                target: t,
                sync_id: s,
                index: i,
                entry: e,
            })
        });
        let sync_done =
            (node(), any::<u32>(), any::<u64>(), any::<u64>()).prop_map(|(t, s, c, r)| {
                Body::SyncDone(SyncDoneRepr {
                    target: t,
                    sync_id: s,
                    chunks: c,
                    rseq: r,
                })
            });
        let leave = any::<u8>().prop_map(|reason| Body::Leave(LeaveRepr { reason }));
        let challenge = (
            node(),
            any::<u32>(),
            any::<[u8; 6]>(),
            proptest::option::of(0..=MAX_SEQ),
        )
            .prop_map(|(t, i, s, a)| {
                Body::Challenge(ChallengeRepr {
                    target: t,
                    target_incarnation: Incarnation(i),
                    target_salt: Salt(s),
                    answers: a,
                })
            });
        prop_oneof![
            heartbeat, update, ack, retransmit, sync_req, sync_chunk, sync_done, leave, challenge
        ]
    }

    pub(crate) fn frame() -> impl Strategy<Value = Frame<'static>> {
        (
            body(),
            any::<bool>(),
            any::<u8>(),
            any::<u32>(),
            node(),
            any::<u32>(),
            any::<[u8; 6]>(),
            0..=MAX_SEQ,
        )
            .prop_map(
                |(body, insecure, key, cluster, sender, inc, salt, seq)| Frame {
                    header: HeaderRepr {
                        kind: body.kind(),
                        flags: if insecure { FLAG_INSECURE } else { 0 },
                        key_id: KeyId(key),
                        cluster: ClusterId(cluster),
                        sender,
                        incarnation: Incarnation(inc),
                        salt: Salt(salt),
                        seq,
                    },
                    body,
                },
            )
    }

    proptest! {
        #[test]
        fn every_kind_round_trips(frame in frame()) {
            let mut buf = [0xa5u8; MAX_DATAGRAM];
            let n = frame.emit(&mut buf).unwrap();
            prop_assert_eq!(n, frame.buffer_len());
            prop_assert!(n + TAG_LEN <= MAX_DATAGRAM);
            prop_assert_eq!(Frame::parse(&buf[..n]), Ok(frame));
        }

        #[test]
        fn every_truncation_is_truncated(frame in frame()) {
            let mut buf = [0u8; MAX_DATAGRAM];
            let n = frame.emit(&mut buf).unwrap();
            for len in 0..n {
                prop_assert_eq!(Frame::parse(&buf[..len]), Err(Error::Truncated), "len {}", len);
            }
        }

        #[test]
        fn fast_path_agrees_on_any_frame(frame in frame(), at in 0..64usize, value in any::<u8>()) {
            let mut buf = [0u8; MAX_DATAGRAM];
            let n = frame.emit(&mut buf).unwrap();
            buf[at] = value;
            let general = Frame::parse_general(&buf[..n]);
            prop_assert_eq!(Frame::parse(&buf[..n]), general);
            if let Some(view) = HeartbeatView::new(&buf[..n]) {
                prop_assert_eq!(Ok(view.frame()), general);
            }
        }

        #[test]
        fn parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = Frame::parse(&bytes);
        }
    }

    #[test]
    fn sealed_frame_len_splits_packed_frames_and_claims_junk_whole() {
        let mut keyring = crate::crypto::Keyring::<crate::crypto::Insecure, 1>::new(KeyId(0), ());
        let mut sealer =
            crate::crypto::Sealer::new(ClusterId(1), NodeId(2), Incarnation(3), Salt([0x5a; 6]));
        let body = Body::Leave(LeaveRepr { reason: 0 });
        let mut packed = [0u8; 256];
        let a = sealer.seal(&body, &mut keyring, &mut packed).unwrap();
        let b = sealer.seal(&body, &mut keyring, &mut packed[a..]).unwrap();
        assert_eq!(a, HEADER_LEN + 8 + TAG_LEN);
        assert_eq!(sealed_frame_len(&packed[..a + b]), a);
        assert_eq!(sealed_frame_len(&packed[a..a + b]), b);
        // Truncated: the header claims more than is there, so the rest is one (bad) frame.
        assert_eq!(sealed_frame_len(&packed[..a - 1]), a - 1);
        assert_eq!(sealed_frame_len(&[0xff; 40]), 40);
        assert_eq!(sealed_frame_len(&[1, 2, 3]), 3);
    }
}
