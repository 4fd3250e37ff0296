//! What `/status` and `/health` report: a snapshot of membership taken from the [`Cluster`].
//!
//! [`Cluster`]: crate::cluster::Cluster

use serde_json::{json, Value};
use tandem_core::{ClusterId, Incarnation, NodeId};

/// A member's state as the failure detector and membership see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemberState {
    Alive,
    Suspect,
    Dead,
    Left,
}

impl MemberState {
    pub const ALL: [MemberState; 4] = [
        MemberState::Alive,
        MemberState::Suspect,
        MemberState::Dead,
        MemberState::Left,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            MemberState::Alive => "alive",
            MemberState::Suspect => "suspect",
            MemberState::Dead => "dead",
            MemberState::Left => "left",
        }
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
}

impl StatusSnapshot {
    /// `Ok` when a load balancer may send traffic here; else the reason, for the 503 body.
    pub fn health(&self) -> Result<(), &'static str> {
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
                    "state": m.state.as_str(),
                    "incarnation": m.incarnation.0,
                    "ms_since_heard": m.ms_since_heard,
                })
            })
            .collect();
        json!({
            "node_id": self.node_id.0,
            "cluster_id": self.cluster_id.0,
            "incarnation": self.incarnation.0,
            "state": self.state.as_str(),
            "leader": self.leader.map(|l| l.0),
            "view": self.view,
            "role": self.role.as_str(),
            "synced": self.synced,
            "isolated": self.isolated,
            "healthy": self.health().is_ok(),
            "members": members,
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
    }
}
