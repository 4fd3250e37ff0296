//! The seam between the daemon's loop and the sans-IO core.
//!
//! The loop only ever talks to [`Cluster`] through these calls (quinn-proto shape):
//!
//! | input                                   | output                                   |
//! |-----------------------------------------|------------------------------------------|
//! | [`Cluster::handle_datagram`]            | [`Cluster::poll_transmit`] (frames)      |
//! | [`Cluster::handle_timeout`]             | [`Cluster::poll_event`] ([`ClusterEvent`]) |
//! | [`Cluster::leave`]                      | [`Cluster::poll_timeout`] (next deadline)|
//! | [`Cluster::reload_keys`]                | [`Cluster::status`], [`Cluster::metrics`], [`Cluster::joined`] |
//!
//! PLACEHOLDER BODY. The wire format, keyring, detector and membership live in tandem-core and
//! are wired in by the lead. Until then this body is deliberately minimal and honest: it sends
//! a placeholder heartbeat (`b"TDMSTUB"` + node id + incarnation + seq, not the real wire
//! format) on the profile's interval, counts every received datagram as dropped with reason
//! `other`, and reports itself as the only member and therefore its own leader. The names and
//! signatures are the contract; replace the bodies.
//!
//! Panics: never (inputs are untrusted bytes).

use std::collections::VecDeque;
use std::time::Duration;

use tandem_core::{ClusterId, Incarnation, Instant, NodeId};

use crate::config::{Config, KeySet, Profile};
use crate::metrics::{ClusterMetrics, DropReason};
use crate::status::{MemberState, MemberStatus, Role, StatusSnapshot};

/// Events the cluster reports; each runs the `--on-change` hook.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClusterEvent {
    /// A member changed state (`node` may be this node, e.g. on join).
    Member {
        node: NodeId,
        incarnation: Incarnation,
        state: MemberState,
    },
    /// This node's role or the leader changed (also on a new view with the same leader).
    Role {
        role: Role,
        leader: Option<NodeId>,
        view: u64,
    },
    /// The split-brain guard cut this node off from the quorum (`isolated`) or let it back.
    Quorum { isolated: bool },
}

impl ClusterEvent {
    /// The `TANDEM_EVENT` value.
    pub fn name(&self) -> &'static str {
        match self {
            ClusterEvent::Member { state, .. } => match state {
                MemberState::Alive => "member_alive",
                MemberState::Suspect => "member_suspect",
                MemberState::Dead => "member_dead",
                MemberState::Left => "member_left",
            },
            ClusterEvent::Role { .. } => "role_changed",
            ClusterEvent::Quorum { isolated: true } => "quorum_lost",
            ClusterEvent::Quorum { isolated: false } => "quorum_regained",
        }
    }
}

/// What the cluster needs from the configuration.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    pub node_id: NodeId,
    pub cluster_id: ClusterId,
    pub incarnation: Incarnation,
    pub profile: Profile,
    pub priority: u8,
    pub preempt: bool,
    pub witness: bool,
    /// Empty: every member votes.
    pub voters: Vec<NodeId>,
    /// `None`: unauthenticated (`--insecure` or loopback without a key file).
    pub keys: Option<KeySet>,
}

impl ClusterConfig {
    pub fn from_config(c: &Config, incarnation: Incarnation) -> ClusterConfig {
        ClusterConfig {
            node_id: c.node_id,
            cluster_id: c.cluster_id,
            incarnation,
            profile: c.profile,
            priority: c.priority,
            preempt: c.preempt,
            witness: c.witness,
            voters: c.voters.clone(),
            keys: c.keys.clone(),
        }
    }
}

/// Why new keys were not taken; state did not change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReloadError {
    /// The cluster runs unauthenticated and cannot switch to keys at run time (restart).
    NotAuthenticated,
}

/// Placeholder timing per profile; the core's detector profiles replace these.
fn heartbeat_interval(p: Profile) -> Duration {
    match p {
        Profile::Fast => Duration::from_millis(2),
        Profile::Lan => Duration::from_millis(50),
        Profile::Wan => Duration::from_millis(500),
    }
}

/// Bound on the queued events; the loop drains them every iteration.
const MAX_EVENTS: usize = 64;

/// The node's view of the cluster: drives heartbeats, detection, membership (see module docs).
#[derive(Debug)]
pub struct Cluster {
    cfg: ClusterConfig,
    started: Instant,
    next_heartbeat: Instant,
    heartbeats_sent: u64,
    left: bool,
    leave_pending: bool,
    events: VecDeque<ClusterEvent>,
    metrics: ClusterMetrics,
}

impl Cluster {
    pub fn new(cfg: ClusterConfig, now: Instant) -> Cluster {
        let mut events = VecDeque::with_capacity(MAX_EVENTS);
        events.push_back(ClusterEvent::Member {
            node: cfg.node_id,
            incarnation: cfg.incarnation,
            state: MemberState::Alive,
        });
        events.push_back(ClusterEvent::Role {
            role: Role::Leader,
            leader: Some(cfg.node_id),
            view: 1,
        });
        Cluster {
            cfg,
            started: now,
            next_heartbeat: now,
            heartbeats_sent: 0,
            left: false,
            leave_pending: false,
            events,
            metrics: ClusterMetrics::default(),
        }
    }

    /// One received datagram, `arrival` = its kernel receive time. `data` may be decrypted in
    /// place. Any bytes are fine: bad ones are counted as drops, never panic.
    pub fn handle_datagram(&mut self, arrival: Instant, data: &mut [u8]) {
        let _ = (arrival, data);
        self.metrics.frames_received += 1;
        self.metrics.drop(DropReason::Other);
    }

    /// Call when `now >= poll_timeout()`: heartbeats due, detector deadlines.
    pub fn handle_timeout(&mut self, now: Instant) {
        let _ = now;
    }

    /// The earliest instant something is due, `None` when nothing ever will be (left).
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.left && !self.leave_pending {
            return None;
        }
        Some(self.next_heartbeat)
    }

    /// Writes the next frame to send into `buf` (at least [`crate::net::SLOT_BYTES`] bytes)
    /// and returns its length; `None` when nothing is due.
    pub fn poll_transmit(&mut self, now: Instant, buf: &mut [u8]) -> Option<usize> {
        let due = self.leave_pending || (!self.left && now >= self.next_heartbeat);
        if !due {
            return None;
        }
        let mut frame = [0u8; 21];
        frame[..7].copy_from_slice(b"TDMSTUB");
        frame[7..9].copy_from_slice(&self.cfg.node_id.0.to_be_bytes());
        frame[9..13].copy_from_slice(&self.cfg.incarnation.0.to_be_bytes());
        frame[13..21].copy_from_slice(&self.heartbeats_sent.to_be_bytes());
        let out = buf.get_mut(..frame.len())?;
        out.copy_from_slice(&frame);
        self.heartbeats_sent += 1;
        self.metrics.frames_sent += 1;
        self.leave_pending = false;
        // Next beat one interval after this one was due, not after `now`: no drift.
        let iv = heartbeat_interval(self.cfg.profile);
        self.next_heartbeat = (self.next_heartbeat + iv).max(now);
        Some(frame.len())
    }

    pub fn poll_event(&mut self) -> Option<ClusterEvent> {
        self.events.pop_front()
    }

    /// Graceful leave: the next `poll_transmit` returns the Leave frame; afterwards no more
    /// heartbeats. Peers mark this node `left` at once.
    pub fn leave(&mut self, now: Instant) {
        let _ = now;
        if !self.left {
            self.left = true;
            self.leave_pending = true;
        }
    }

    /// True once this node has announced itself and either heard a peer or waited one
    /// detection period (then it is alone, not just unheard): time for READY=1.
    pub fn joined(&self, now: Instant) -> bool {
        let detection_period = heartbeat_interval(self.cfg.profile) * 5;
        self.heartbeats_sent > 0 && now >= self.started + detection_period
    }

    pub fn status(&self, now: Instant) -> StatusSnapshot {
        let _ = now;
        let state = if self.left {
            MemberState::Left
        } else {
            MemberState::Alive
        };
        StatusSnapshot {
            node_id: self.cfg.node_id,
            cluster_id: self.cfg.cluster_id,
            incarnation: self.cfg.incarnation,
            state,
            leader: Some(self.cfg.node_id),
            view: 1,
            role: if self.left { Role::Left } else { Role::Leader },
            members: vec![MemberStatus {
                node_id: self.cfg.node_id,
                state,
                incarnation: self.cfg.incarnation,
                ms_since_heard: 0,
            }],
            synced: true,
            isolated: false,
        }
    }

    pub fn metrics(&self) -> &ClusterMetrics {
        &self.metrics
    }

    /// New keys from the key file (SIGHUP): `keys.keys[0]` becomes the sending key, the rest
    /// stay accepted. On error nothing changed.
    pub fn reload_keys(&mut self, keys: &KeySet) -> Result<(), ReloadError> {
        if self.cfg.keys.is_none() {
            return Err(ReloadError::NotAuthenticated);
        }
        self.cfg.keys = Some(keys.clone());
        Ok(())
    }

    pub fn node_id(&self) -> NodeId {
        self.cfg.node_id
    }

    pub fn profile(&self) -> Profile {
        self.cfg.profile
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // In tests a failed unwrap is a failed test.
mod tests {
    use super::*;

    fn cluster() -> Cluster {
        Cluster::new(
            ClusterConfig {
                node_id: NodeId(4),
                cluster_id: ClusterId(1),
                incarnation: Incarnation(100),
                profile: Profile::Lan,
                priority: 100,
                preempt: false,
                witness: false,
                voters: vec![],
                keys: None,
            },
            Instant::ZERO,
        )
    }

    #[test]
    fn heartbeats_follow_poll_timeout_and_stop_after_leave() {
        let mut c = cluster();
        let mut buf = [0u8; 2048];
        assert_eq!(c.poll_timeout(), Some(Instant::ZERO));
        assert!(c.poll_transmit(Instant::ZERO, &mut buf).is_some());
        assert!(c.poll_transmit(Instant::ZERO, &mut buf).is_none());
        let next = c.poll_timeout().unwrap();
        assert_eq!(next, Instant::from_millis(50));
        assert!(!c.joined(Instant::from_millis(10)));
        assert!(c.joined(Instant::from_millis(250)));
        c.leave(next);
        assert!(c.poll_transmit(next, &mut buf).is_some());
        assert!(c
            .poll_transmit(next + Duration::from_secs(1), &mut buf)
            .is_none());
        assert_eq!(c.poll_timeout(), None);
        assert_eq!(c.status(next).state, MemberState::Left);
        assert_eq!(c.metrics().frames_sent, 2);
    }

    #[test]
    fn datagrams_are_counted_and_events_drain() {
        let mut c = cluster();
        c.handle_datagram(Instant::ZERO, &mut [1, 2, 3]);
        c.handle_datagram(Instant::ZERO, &mut []);
        assert_eq!(c.metrics().frames_received, 2);
        assert_eq!(c.metrics().drops(DropReason::Other), 2);
        assert_eq!(c.poll_event().map(|e| e.name()), Some("member_alive"));
        assert_eq!(c.poll_event().map(|e| e.name()), Some("role_changed"));
        assert_eq!(c.poll_event(), None);
        assert_eq!(
            c.reload_keys(&crate::config::parse_keys(&[1u8; 16]).unwrap()),
            Err(ReloadError::NotAuthenticated)
        );
    }
}
