//! What the cluster (core) path counts: received, accepted and sent frames, drops by reason,
//! membership changes. Filled by [`Cluster`], rendered by `ops::metrics`.
//!
//! [`Cluster`]: crate::engine::cluster::Cluster

/// Why a received datagram was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// Fields that cannot be right (bad version, bad lengths).
    Malformed,
    /// Shorter than its header says, or larger than a receive slot.
    Truncated,
    /// AEAD open failed or unknown key id.
    Auth,
    /// Sequence number already seen or too old for the replay window.
    Replay,
    /// Another cluster id on the same group.
    OtherCluster,
    UnknownKind,
    /// From an older incarnation of a member.
    Stale,
    /// This node's own frame, looped back by the kernel.
    Own,
    /// A data frame (session data, replication, state transfer) at a node without the data
    /// key: a witness, which holds the control key only, hears them and cannot open them.
    NoDataKey,
    /// Authentic, of a run that has not answered this node's challenge yet (it may be a
    /// recording): counted for nothing.
    Unverified,
    Other,
}

impl DropReason {
    pub const ALL: [DropReason; 11] = [
        DropReason::Malformed,
        DropReason::Truncated,
        DropReason::Auth,
        DropReason::Replay,
        DropReason::OtherCluster,
        DropReason::UnknownKind,
        DropReason::Stale,
        DropReason::Own,
        DropReason::NoDataKey,
        DropReason::Unverified,
        DropReason::Other,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::Malformed => "malformed",
            DropReason::Truncated => "truncated",
            DropReason::Auth => "auth",
            DropReason::Replay => "replay",
            DropReason::OtherCluster => "other_cluster",
            DropReason::UnknownKind => "unknown_kind",
            DropReason::Stale => "stale",
            DropReason::Own => "own",
            DropReason::NoDataKey => "no_data_key",
            DropReason::Unverified => "unverified",
            DropReason::Other => "other",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Counted by the cluster (core) path.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClusterMetrics {
    /// Datagrams handed to [`Cluster::handle_datagram`](crate::engine::cluster::Cluster::handle_datagram).
    pub frames_received: u64,
    /// Frames accepted (authenticated, parsed, current).
    pub frames_accepted: u64,
    /// Frames produced by `poll_transmit`.
    pub frames_sent: u64,
    drops: [u64; DropReason::ALL.len()],
    /// Member state transitions (alive/suspect/dead/left).
    pub state_changes: u64,
    /// Members suspected (on the way to dead unless heard again).
    pub suspicions: u64,
    /// Failures detected (a member declared dead by the detector, not by Leave).
    pub detections: u64,
    /// Leader changes (view changes).
    pub leader_changes: u64,
    /// Overdue peers given one more interval because this node's loop had stalled.
    pub stall_pardons: u64,
    /// Authentic frames of another process with this node's id.
    pub twin_frames: u64,
}

impl ClusterMetrics {
    pub fn drop(&mut self, reason: DropReason) {
        if let Some(c) = self.drops.get_mut(reason.index()) {
            *c += 1;
        }
    }

    pub fn add_drops(&mut self, reason: DropReason, n: u64) {
        if let Some(c) = self.drops.get_mut(reason.index()) {
            *c += n;
        }
    }

    pub fn drops(&self, reason: DropReason) -> u64 {
        self.drops.get(reason.index()).copied().unwrap_or(0)
    }
}
