//! Wire format. (Skeleton: the Repr data types are fixed here so that membership and
//! replication can be written against them; parse/emit/seal/open are being written.)
//!
//! Every datagram: 32-byte header (associated data) | body (encrypted) | 16-byte AEAD tag.
//! Every datagram fits in [`MAX_DATAGRAM`] bytes.

use crate::id::{ClusterId, Incarnation, KeyId, NodeId};

/// Largest datagram tandem ever sends or accepts.
pub const MAX_DATAGRAM: usize = 1400;
/// Longest session key.
pub const MAX_KEY_LEN: usize = 256;

/// Why a frame was refused. `Copy`, tells truncated from malformed from refused.
/// No variant implies any state changed: a refused frame leaves the receiver untouched.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Error {
    /// Fewer bytes than the header or the body length says.
    Truncated,
    /// Bytes are there but a field is invalid (bad magic, reserved bits, length mismatch...).
    Malformed,
    /// Protocol version this build does not speak.
    UnsupportedVersion,
    /// Frame kind unknown to this version: skip it, do not treat it as an attack.
    UnknownKind,
    /// The frame belongs to another cluster id.
    OtherCluster,
    /// Key id not in the keyring.
    UnknownKey,
    /// AEAD tag did not verify.
    Auth,
    /// Sequence number already seen, or older than the replay window.
    Replay,
    /// The sender's incarnation is older than one already seen from that node.
    StaleIncarnation,
    /// The caller's output buffer is too small.
    BufferTooSmall,
}

/// Frame kinds (hex protocol constants).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
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

/// Heartbeat state flags (bit set).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct StateFlags(pub u8);

impl StateFlags {
    pub const JOINING: u8 = 0x01;
    pub const SYNCING: u8 = 0x02;
    pub const DRAINING: u8 = 0x04;
    pub const ISOLATED: u8 = 0x08;
}

/// Common header fields, as validated values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeaderRepr {
    pub kind: Kind,
    pub flags: u8,
    pub key_id: KeyId,
    pub cluster: ClusterId,
    pub sender: NodeId,
    pub incarnation: Incarnation,
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
}

/// One session entry or one chunk of it (shared by SessionUpdate and SyncChunk).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
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

/// Ask `target` to resend its stream range `from..=to`.
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

/// Any frame body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Body<'a> {
    Heartbeat(HeartbeatRepr),
    SessionUpdate(SessionUpdateRepr<'a>),
    Ack(AckRepr),
    RetransmitRequest(RetransmitRequestRepr),
    SyncRequest(SyncRequestRepr),
    SyncChunk(SyncChunkRepr<'a>),
    SyncDone(SyncDoneRepr),
    Leave(LeaveRepr),
}
