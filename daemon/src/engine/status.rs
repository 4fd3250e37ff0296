//! What `/status` and `/health` report: a snapshot of membership, sync and replication taken
//! from the [`Engine`](crate::engine::Engine) ([`Engine::status`](crate::engine::Engine::status)),
//! and its JSON shape. The engine owns it so that the layers above (HTTP, metrics, logs, hooks)
//! read one snapshot and never the core node.

use serde_json::{json, Value};
use tandem_core::{ClusterId, Incarnation, NodeId};

/// A member's state: the core's (membership and the failure detector own it).
pub use tandem_core::membership::MemberState;

/// Every member state, in the order `/metrics` lists them.
pub(crate) const MEMBER_STATES: [MemberState; 4] = [
    MemberState::Alive,
    MemberState::Suspect,
    MemberState::Dead,
    MemberState::Left,
];

/// A member state's name in `/status`, logs, hooks and `/metrics` labels.
pub(crate) fn state_name(state: MemberState) -> &'static str {
    match state {
        MemberState::Alive => "alive",
        MemberState::Suspect => "suspect",
        MemberState::Dead => "dead",
        MemberState::Left => "left",
    }
}

/// This node's role in the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Leader,
    Follower,
    /// A witness votes for quorum only.
    Witness,
    /// Joining: not yet a full member (e.g. still syncing state).
    Joining,
    /// Left the cluster (shutting down).
    Left,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Leader => "leader",
            Role::Follower => "follower",
            Role::Witness => "witness",
            Role::Joining => "joining",
            Role::Left => "left",
        }
    }
}

/// Where this node stands on holding the full session state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SyncPhase {
    /// No data peer seen yet (alone after one detection span).
    #[default]
    Waiting,
    /// Pulling the full state from this peer.
    Pulling(NodeId),
    /// Holds the full state (or is alone).
    Synced,
}

/// State transfer progress, for `/status`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SyncProgress {
    pub phase: SyncPhase,
    /// Sessions held now (during a pull: received so far, plus any written meanwhile).
    pub sessions: u64,
}

/// What this node's writes wait on, for `/status`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Backlog {
    /// Live data peers every write goes to.
    pub peers: u64,
    /// Highest chunk sequence written to this node's replication stream.
    pub written: u64,
    /// Highest sequence every live peer acknowledged.
    pub committed: u64,
    /// Client replies held until replication.
    pub writes_held: u64,
    /// Records waiting for room in the retransmit ring.
    pub outbox: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberStatus {
    pub node_id: NodeId,
    pub state: MemberState,
    pub incarnation: Incarnation,
    /// Milliseconds since a frame from this member was last accepted; 0 for this node itself.
    pub ms_since_heard: u64,
}

/// Everything `/status` and `/health` need, taken at one instant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusSnapshot {
    pub node_id: NodeId,
    pub cluster_id: ClusterId,
    pub incarnation: Incarnation,
    /// This node's own membership state (alive unless it left).
    pub state: MemberState,
    pub leader: Option<NodeId>,
    pub view: u64,
    pub role: Role,
    /// Every known member, this node included, sorted by node id.
    pub members: Vec<MemberStatus>,
    /// Holds the full session state (initial sync done).
    pub synced: bool,
    /// Cut off from the quorum (split-brain guard): must not serve as a member.
    pub isolated: bool,
    /// Another live process claims this node's id (a copied config, a cloned VM).
    pub duplicate_id: bool,
    /// Filled by the event loop, which owns the session store.
    pub sync: SyncProgress,
    pub backlog: Backlog,
    /// Each floating VIP and its owner in this node's view (filled by the event loop).
    pub vips: Vec<VipStatus>,
}

/// One `--vip` as `/status` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VipStatus {
    /// `ADDR/PREFIX`.
    pub address: String,
    pub prefer: NodeId,
    /// The node that should hold it in this node's view; `None`: no candidate.
    pub owner: Option<NodeId>,
    /// Whether the address is on this node's interface now.
    pub held: bool,
}

impl StatusSnapshot {
    /// `Ok` when a load balancer may send traffic here; else the reason, for the 503 body.
    pub fn health(&self) -> Result<(), &'static str> {
        if self.duplicate_id {
            return Err("duplicate node id: another live process claims this node's id");
        }
        if self.state != MemberState::Alive {
            return Err("not an alive member");
        }
        if self.isolated {
            return Err("isolated: no quorum");
        }
        if !self.synced {
            return Err("not synced: session state transfer in progress");
        }
        Ok(())
    }

    pub fn to_json(&self) -> Value {
        let members: Vec<Value> = self
            .members
            .iter()
            .map(|m| {
                json!({
                    "node_id": m.node_id.0,
                    "state": state_name(m.state),
                    "incarnation": m.incarnation.0,
                    "ms_since_heard": m.ms_since_heard,
                })
            })
            .collect();
        json!({
            "node_id": self.node_id.0,
            "cluster_id": self.cluster_id.0,
            "incarnation": self.incarnation.0,
            "state": state_name(self.state),
            "leader": self.leader.map(|l| l.0),
            "view": self.view,
            "role": self.role.as_str(),
            "synced": self.synced,
            "isolated": self.isolated,
            "duplicate_node_id": self.duplicate_id,
            "healthy": self.health().is_ok(),
            "health": self.health().err().unwrap_or("ok"),
            "sync": {
                "state": match self.sync.phase {
                    SyncPhase::Waiting => "waiting",
                    SyncPhase::Pulling(_) => "pulling",
                    SyncPhase::Synced => "synced",
                },
                "from": match self.sync.phase {
                    SyncPhase::Pulling(from) => Some(from.0),
                    _ => None,
                },
                "sessions": self.sync.sessions,
            },
            "replication": {
                "peers": self.backlog.peers,
                "written": self.backlog.written,
                "committed": self.backlog.committed,
                "backlog": self.backlog.written.saturating_sub(self.backlog.committed),
                "writes_held": self.backlog.writes_held,
                "outbox": self.backlog.outbox,
            },
            "members": members,
            "vips": self.vips.iter().map(|v| json!({
                "address": v.address,
                "prefer": v.prefer.0,
                "owner": v.owner.map(|o| o.0),
                "held_here": v.held,
            })).collect::<Vec<Value>>(),
        })
    }

    pub fn count(&self, state: MemberState) -> usize {
        self.members.iter().filter(|m| m.state == state).count()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // In tests a failed unwrap is a failed test.
mod tests {
    use super::*;

    pub(crate) fn sample() -> StatusSnapshot {
        StatusSnapshot {
            node_id: NodeId(1),
            cluster_id: ClusterId(7),
            incarnation: Incarnation(1_700_000_000),
            state: MemberState::Alive,
            leader: Some(NodeId(2)),
            view: 3,
            role: Role::Follower,
            members: vec![
                MemberStatus {
                    node_id: NodeId(1),
                    state: MemberState::Alive,
                    incarnation: Incarnation(1_700_000_000),
                    ms_since_heard: 0,
                },
                MemberStatus {
                    node_id: NodeId(2),
                    state: MemberState::Suspect,
                    incarnation: Incarnation(5),
                    ms_since_heard: 40,
                },
            ],
            synced: true,
            isolated: false,
            duplicate_id: false,
            sync: SyncProgress {
                phase: SyncPhase::Synced,
                sessions: 12,
            },
            backlog: Backlog {
                peers: 1,
                written: 10,
                committed: 7,
                writes_held: 2,
                outbox: 0,
            },
            vips: vec![VipStatus {
                address: "198.18.0.100/24".into(),
                prefer: NodeId(1),
                owner: Some(NodeId(2)),
                held: false,
            }],
        }
    }

    #[test]
    fn health_reasons() {
        let mut s = sample();
        assert_eq!(s.health(), Ok(()));
        s.synced = false;
        assert!(s.health().unwrap_err().contains("synced"));
        s.isolated = true;
        assert!(s.health().unwrap_err().contains("isolated"));
        s.state = MemberState::Left;
        assert!(s.health().unwrap_err().contains("alive"));
        s.duplicate_id = true;
        assert!(s.health().unwrap_err().contains("duplicate node id"));
        assert_eq!(s.to_json()["duplicate_node_id"], true);
    }

    #[test]
    fn json_shape() {
        let v = sample().to_json();
        assert_eq!(v["node_id"], 1);
        assert_eq!(v["leader"], 2);
        assert_eq!(v["role"], "follower");
        assert_eq!(v["members"][1]["state"], "suspect");
        assert_eq!(v["members"][1]["ms_since_heard"], 40);
        assert_eq!(v["members"][1]["incarnation"], 5);
        assert_eq!(sample().count(MemberState::Alive), 1);
        assert_eq!(v["health"], "ok");
        assert_eq!(v["sync"]["state"], "synced");
        assert_eq!(v["sync"]["sessions"], 12);
        assert_eq!(v["replication"]["backlog"], 3);
        let mut s = sample();
        s.synced = false;
        s.sync.phase = SyncPhase::Pulling(NodeId(2));
        let v = s.to_json();
        assert_eq!(
            v["health"],
            "not synced: session state transfer in progress"
        );
        assert_eq!(
            (&v["sync"]["state"], &v["sync"]["from"]),
            (&"pulling".into(), &2.into())
        );
        // The human view reads what /status sends.
        let view = crate::cli::status_view::render(&v);
        assert!(
            view.contains("pulling the full state from node 2"),
            "{view}"
        );
    }
}
