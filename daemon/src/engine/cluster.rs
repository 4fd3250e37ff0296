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
//! The body is a [`tandem_core::node::Node`]: the sealed wire format, the failure detector,
//! membership and replication; the core also packs its frames into datagrams and splits them
//! again ([`tandem_core::datagram`]) and paces state transfers
//! ([`tandem_core::replication::SyncPacer`]): nothing here reads a frame header. This file
//! maps the core's events and counters to the daemon's.
//!
//! Panics: never (inputs are untrusted bytes).

use std::collections::VecDeque;
use std::fmt;
use std::time::Duration;

use clap::ValueEnum;
use serde::Deserialize;

use tandem_core::crypto::{AnyKey, Keyring, Keys};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::engine::cipher::Cipher;
use tandem_core::datagram::{self, EntrySource, Packer};
use tandem_core::frame::{EntryRepr, SyncChunkRepr, MAX_DATAGRAM};
use tandem_core::node::{self as core_node, Node, KEYS};
use tandem_core::replication::{self, Dest, Slot, SyncPacer, SyncSend};
use tandem_core::{detector, membership};
use tandem_core::{ClusterId, Incarnation, Instant, KeyId, NodeId, Salt};

use crate::engine::counters::{ClusterMetrics, DropReason};
use crate::engine::node::{CoreNode, REORDER_SLOTS, RING_SLOTS};
use crate::engine::status::{MemberState, MemberStatus, Role, StatusSnapshot};

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

/// Timing profile of the failure detector; the core owns the numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Profile {
    Fast,
    Lan,
    Wan,
}

impl Profile {
    pub fn as_str(self) -> &'static str {
        match self {
            Profile::Fast => "fast",
            Profile::Lan => "lan",
            Profile::Wan => "wan",
        }
    }
}

/// A 16-byte AES-128 key with its id. The key bytes are wiped when it is dropped.
#[derive(Clone, PartialEq, Eq, Zeroize, ZeroizeOnDrop)]
pub struct Key {
    #[zeroize(skip)]
    pub id: KeyId,
    pub bytes: [u8; 16],
}

impl fmt::Debug for Key {
    // Never print key material, not even in debug logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Key {{ id: {}, .. }}", self.id.0)
    }
}

/// The keys of a key file by role; the first key of a role is its active (sending) key.
/// `control` is never empty; `data` is empty in a witness's file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeySet {
    pub control: Vec<Key>,
    pub data: Vec<Key>,
}

impl KeySet {
    /// The active control key.
    pub fn active(&self) -> &Key {
        // `KeySet` is only built by `parse_keys`, which refuses a file without a control key.
        &self.control[0]
    }

    /// Refuses keys that do not fit the node's role: a witness must not hold a data key (it
    /// would read and forge every session), a data node needs one.
    pub(crate) fn check_role(&self, witness: bool) -> Result<(), String> {
        match (witness, self.data.first()) {
            (true, Some(k)) => Err(format!(
                "holds data key {} (a line `id:hex` without a role is both keys), and a witness must never hold the data key; give the witness a control-only file: `tandemd keygen --witness DATA-NODE-KEY-FILE > witness.key` (run `tandemd keygen --rotate` on a one-key file first)",
                k.id.0
            )),
            (false, None) => Err(
                "holds no data key (a witness's control-only file?); a data node needs both: give it the data nodes' key file, or run it with --witness"
                    .into(),
            ),
            _ => Ok(()),
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
    /// Overrides of the profile's heartbeat interval (µs) and multiplier.
    pub interval_us: Option<u32>,
    pub multiplier: Option<u8>,
    pub priority: u8,
    pub preempt: bool,
    pub witness: bool,
    /// Empty: every member votes.
    pub voters: Vec<NodeId>,
    /// `None`: unauthenticated (`--insecure` or loopback without a key file).
    pub keys: Option<KeySet>,
    /// Random per start ([`random_salt`]): this run's sealing keys are derived from it.
    pub salt: Salt,
}

/// A salt from the kernel's CSPRNG for this start (docs/PROTOCOL.md "Run keys").
pub(crate) fn random_salt() -> Result<Salt, ring::error::Unspecified> {
    use ring::rand::SecureRandom;
    let mut salt = [0u8; 6];
    ring::rand::SystemRandom::new().fill(&mut salt)?;
    Ok(Salt(salt))
}

impl ClusterConfig {
    /// The detector timing: the profile with `--interval` / `--multiplier` applied.
    pub fn timing(&self) -> detector::Profile {
        let mut p = core_profile(self.profile);
        if let Some(iv) = self.interval_us {
            p.interval_us = iv;
        }
        if let Some(m) = self.multiplier {
            p.multiplier = m;
        }
        p
    }
}

/// Why new keys were not taken; state did not change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReloadError {
    /// The cluster runs unauthenticated and cannot switch to keys at run time (restart).
    NotAuthenticated,
    /// The keys do not fit the node's role ([`KeySet::check_role`]).
    Role(String),
}

/// Bound on the queued events; the loop drains them every iteration.
const MAX_EVENTS: usize = 256;

/// The node's view of the cluster: drives heartbeats, detection, membership (see module docs).
pub struct Cluster {
    cfg: ClusterConfig,
    node: CoreNode,
    started: Instant,
    left: bool,
    leave_sent: bool,
    heard_peer: bool,
    events: VecDeque<ClusterEvent>,
    core_events: VecDeque<core_node::Event>,
    metrics: ClusterMetrics,
    /// Packs the core's frames into datagrams (its carry storage boxed: 1.4 KiB).
    packer: Packer<Box<[u8]>>,
    /// Paces the state-transfer chunks this node serves.
    pacer: SyncPacer,
    /// The core's count of a twin's frames when last read, and when it last grew.
    twin_frames: u64,
    twin_heard: Option<Instant>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("node_id", &self.cfg.node_id)
            .field("incarnation", &self.cfg.incarnation)
            .finish_non_exhaustive()
    }
}

fn core_profile(p: Profile) -> detector::Profile {
    match p {
        Profile::Fast => detector::Profile::FAST,
        Profile::Lan => detector::Profile::LAN,
        Profile::Wan => detector::Profile::WAN,
    }
}

/// The node's keys for `keys` (`None`: the explicit insecure mode): a control and a data
/// keyring, the data one empty for a witness's control-only file.
pub fn keys(keys: Option<&KeySet>) -> Keys<Cipher, KEYS> {
    match keys {
        None => Keys::both(KeyId(0), AnyKey::Insecure),
        Some(set) => Keys {
            control: keyring(&set.control),
            data: keyring(&set.data),
        },
    }
}

/// One role's keyring: the first key active ([`Keyring::empty`] for no key).
fn keyring(keys: &[Key]) -> Keyring<Cipher, KEYS> {
    let mut ring = Keyring::empty();
    let Some((active, rest)) = keys.split_first() else {
        return ring;
    };
    ring.reset(active.id, AnyKey::Aes128Gcm(Zeroizing::new(active.bytes)));
    for k in rest.iter().take(KEYS - 1) {
        // Ids are distinct per role (the key file parser refuses duplicates) and at most KEYS
        // are added, so this cannot fail; if it did, the key is simply not accepted.
        let _ = ring.add(k.id, AnyKey::Aes128Gcm(Zeroizing::new(k.bytes)));
    }
    ring
}

impl Cluster {
    pub fn new(cfg: ClusterConfig, now: Instant) -> Cluster {
        let mut m = membership::Config::new(cfg.node_id, cfg.incarnation);
        m.priority = cfg.priority;
        m.preempt = cfg.preempt;
        m.witness = cfg.witness;
        m.profile = cfg.timing();
        for v in cfg.voters.iter().take(membership::MAX_VOTERS) {
            // Bounded by `take`: cannot overflow.
            let _ = m.voters.push(*v);
        }
        let config = core_node::Config {
            cluster: cfg.cluster_id,
            salt: cfg.salt,
            membership: m,
            replication: replication::Config::default(),
        };
        let ring = vec![Slot::EMPTY; RING_SLOTS].into_boxed_slice();
        let reorder = vec![Slot::EMPTY; REORDER_SLOTS].into_boxed_slice();
        let node = Node::with_reorder(config, keys(cfg.keys.as_ref()), ring, reorder, now);
        Cluster {
            cfg,
            node,
            started: now,
            left: false,
            leave_sent: false,
            heard_peer: false,
            events: VecDeque::with_capacity(MAX_EVENTS),
            core_events: VecDeque::with_capacity(MAX_EVENTS),
            metrics: ClusterMetrics::default(),
            packer: Packer::new(vec![0; MAX_DATAGRAM].into_boxed_slice()),
            pacer: SyncPacer::new(now),
            twin_frames: 0,
            twin_heard: None,
        }
    }

    /// Whether another live process holds this node's id: one of its authentic frames
    /// arrived within the last three detection spans.
    pub(crate) fn twin_live(&self, now: Instant) -> bool {
        let span = Duration::from_micros(3 * self.cfg.timing().detection_bound_us());
        self.twin_heard.is_some_and(|t| now < t + span)
    }

    /// One received datagram, `arrival` = its kernel receive time. `data` is decrypted in
    /// place. Any bytes are fine: bad ones are counted as drops, never panic. Session entries
    /// it carries (and any the reorder buffer releases) go to `entries` (the [`Engine`] hands
    /// them to its session store). Returns the peer the core authenticated it from (`None`:
    /// nothing opened, or an own frame).
    ///
    /// [`Engine`]: crate::engine::Engine
    pub fn handle_datagram(
        &mut self,
        arrival: Instant,
        data: &mut [u8],
        entries: impl FnMut(EntrySource, NodeId, &EntryRepr<'_>),
    ) -> Option<NodeId> {
        let handled = datagram::handle_datagram(&mut self.node, arrival, data, entries);
        self.metrics.frames_received += handled.frames as u64;
        let twin = self.node.stats().twin;
        if twin != self.twin_frames {
            self.twin_frames = twin;
            self.twin_heard = Some(arrival);
        }
        self.after_input();
        handled.sender
    }

    /// A raw core event (membership and replication) for the session layer.
    pub(crate) fn poll_core_event(&mut self) -> Option<core_node::Event> {
        self.core_events.pop_front()
    }

    /// The next state-transfer chunk the core asks for, when the pacer lets one go now;
    /// `None` when none is due (or this node left). The [`Engine`] builds it from its store
    /// and hands it to [`Cluster::seal_sync_chunk`], or reports [`Cluster::sync_exhausted`].
    ///
    /// [`Engine`]: crate::engine::Engine
    pub fn poll_sync_send(&mut self, now: Instant) -> Option<SyncSend> {
        if self.left {
            return None;
        }
        self.pacer.poll(now, || self.node.poll_sync_send(now))
    }

    /// Seals a state-transfer chunk into `buf`; its length and destination (the requester).
    pub(crate) fn seal_sync_chunk(
        &mut self,
        c: &SyncChunkRepr<'_>,
        buf: &mut [u8],
    ) -> Option<(usize, Dest)> {
        let t = self.node.seal_sync_chunk(c, buf)?;
        self.pacer.sent();
        self.metrics.frames_sent += 1;
        Some((t.len, t.to))
    }

    /// The snapshot behind a transfer ends at `total` chunks, before the one asked for.
    pub fn sync_exhausted(&mut self, s: &SyncSend, total: u64) {
        self.node.sync_exhausted(s.to, s.sync_id, total);
    }

    /// The loop woke up late (it was not running): overdue peers get one more interval
    /// (`Node::handle_stall`). Call after this turn's datagrams, before `handle_timeout`.
    pub(crate) fn handle_stall(&mut self, now: Instant) {
        self.node.handle_stall(now);
    }

    /// Call when `now >= poll_timeout()`: heartbeats due, detector deadlines.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.node.handle_timeout(now);
        self.after_input();
    }

    /// The earliest instant something is due, `None` when nothing ever will be (left).
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.left && self.leave_sent {
            return None;
        }
        if self.packer.pending() {
            return Some(Instant::ZERO);
        }
        [self.node.poll_timeout(), self.pacer.poll_timeout()]
            .into_iter()
            .flatten()
            .min()
    }

    /// Writes the next datagram to send into `buf` (at least [`crate::io::net::SLOT_BYTES`]
    /// bytes) and returns its length and destination; `None` when nothing is due.
    /// Small frames (heartbeats, acks, small session updates) for one destination are packed
    /// into one datagram of at most [`MAX_DATAGRAM`] bytes: under write load the kernel's
    /// per-datagram cost, not sealing, is what limits replication.
    pub fn poll_transmit(&mut self, now: Instant, buf: &mut [u8]) -> Option<(usize, Dest)> {
        if self.left && self.leave_sent {
            return None;
        }
        // The first frame after leave() is the Leave itself; nothing follows it.
        let max_frames = if self.left { 1 } else { usize::MAX };
        let d = self
            .packer
            .poll_datagram(&mut self.node, now, buf, max_frames)?;
        self.metrics.frames_sent += d.frames as u64;
        if self.left && d.frames > 0 {
            self.leave_sent = true;
        }
        Some((d.len, d.to))
    }

    pub fn poll_event(&mut self) -> Option<ClusterEvent> {
        self.events.pop_front()
    }

    /// Graceful leave: the next `poll_transmit` returns the Leave frame; afterwards no more
    /// heartbeats. Peers mark this node `left` at once.
    pub fn leave(&mut self, now: Instant) {
        if !self.left {
            self.left = true;
            self.node.leave(now);
        }
    }

    /// True once this node has announced itself and either heard a peer or waited one
    /// detection period (then it is alone, not just unheard): time for READY=1.
    pub fn joined(&self, now: Instant) -> bool {
        let span = Duration::from_micros(self.cfg.timing().detection_bound_us());
        self.metrics.frames_sent > 0 && (self.heard_peer || now >= self.started + span)
    }

    pub fn status(&self, now: Instant) -> StatusSnapshot {
        let ms = self.node.membership();
        let state = if self.left {
            MemberState::Left
        } else {
            MemberState::Alive
        };
        let mut members = vec![MemberStatus {
            node_id: self.cfg.node_id,
            state,
            incarnation: self.cfg.incarnation,
            ms_since_heard: 0,
        }];
        members.extend(ms.members().map(|m| MemberStatus {
            node_id: m.node,
            state: m.state,
            incarnation: m.incarnation,
            ms_since_heard: u64::try_from((now - m.last_heard).as_millis()).unwrap_or(u64::MAX),
        }));
        members.sort_by_key(|m| m.node_id);
        StatusSnapshot {
            node_id: self.cfg.node_id,
            cluster_id: self.cfg.cluster_id,
            incarnation: self.cfg.incarnation,
            state,
            leader: ms.leader(),
            view: ms.view(),
            role: self.role(),
            members,
            synced: true,
            isolated: ms.isolated(),
            duplicate_id: self.twin_live(now),
            // The session store's side, filled in by the event loop.
            sync: Default::default(),
            backlog: Default::default(),
            vips: Vec::new(),
        }
    }

    pub fn metrics(&self) -> ClusterMetrics {
        self.folded_metrics()
    }

    /// New keys from the key file (SIGHUP): each role's first key becomes its sending key,
    /// the rest stay accepted. On error nothing changed.
    pub(crate) fn reload_keys(&mut self, new: &KeySet) -> Result<(), ReloadError> {
        if self.cfg.keys.is_none() {
            return Err(ReloadError::NotAuthenticated);
        }
        new.check_role(self.cfg.witness)
            .map_err(ReloadError::Role)?;
        self.node.set_keys(keys(Some(new)));
        self.cfg.keys = Some(new.clone());
        Ok(())
    }

    pub fn node_id(&self) -> NodeId {
        self.cfg.node_id
    }

    pub fn profile(&self) -> Profile {
        self.cfg.profile
    }

    /// How long the detector takes to declare a silent peer dead with this node's timing.
    pub(crate) fn detection_span(&self) -> Duration {
        Duration::from_micros(self.cfg.timing().detection_bound_us())
    }

    /// The core node (replication, membership queries).
    pub fn node(&self) -> &CoreNode {
        &self.node
    }

    pub fn node_mut(&mut self) -> &mut CoreNode {
        &mut self.node
    }

    fn role(&self) -> Role {
        let ms = self.node.membership();
        if self.left {
            Role::Left
        } else if self.cfg.witness {
            Role::Witness
        } else if ms.joining() {
            Role::Joining
        } else if ms.leader() == Some(self.cfg.node_id) {
            Role::Leader
        } else {
            Role::Follower
        }
    }

    /// Folds the core's events and counters into the daemon's.
    fn after_input(&mut self) {
        while let Some(ev) = self.node.poll_event() {
            if self.core_events.len() >= MAX_EVENTS {
                self.core_events.pop_front();
            }
            self.core_events.push_back(ev);
            let mapped = match ev {
                core_node::Event::Membership(m) => self.map_event(m),
                core_node::Event::Replication(_) => None,
            };
            if let Some(ev) = mapped {
                if self.events.len() >= MAX_EVENTS {
                    self.events.pop_front();
                }
                self.events.push_back(ev);
            }
        }
    }

    fn map_event(&mut self, ev: membership::Event) -> Option<ClusterEvent> {
        use membership::Event as E;
        let member = |node: NodeId, incarnation: Incarnation, state| ClusterEvent::Member {
            node,
            incarnation,
            state,
        };
        let inc_of = |n: &CoreNode, node: NodeId| {
            n.membership()
                .member(node)
                .map_or(Incarnation(0), |m| m.incarnation)
        };
        Some(match ev {
            E::MemberUp { node, incarnation } | E::MemberRejoined { node, incarnation } => {
                self.heard_peer = true;
                member(node, incarnation, MemberState::Alive)
            }
            E::MemberRecovered { node } => {
                member(node, inc_of(&self.node, node), MemberState::Alive)
            }
            E::MemberSuspect { node } => {
                self.metrics.suspicions += 1;
                member(node, inc_of(&self.node, node), MemberState::Suspect)
            }
            E::MemberDown { node } => {
                self.metrics.detections += 1;
                member(node, inc_of(&self.node, node), MemberState::Dead)
            }
            E::MemberLeft { node } => member(node, inc_of(&self.node, node), MemberState::Left),
            E::LeaderChanged { leader, view } => {
                self.metrics.leader_changes += 1;
                ClusterEvent::Role {
                    role: self.role(),
                    leader,
                    view,
                }
            }
            E::QuorumLost => ClusterEvent::Quorum { isolated: true },
            E::QuorumRegained => ClusterEvent::Quorum { isolated: false },
            E::DuplicateNodeId { node, incarnation } => {
                tracing::error!(
                    node = node.0,
                    incarnation = incarnation.0,
                    "two live processes claim one node id; the other one's frames are refused"
                );
                return None;
            }
            E::CapacityExceeded { node } => {
                tracing::warn!(node = node.0, "member table full: node refused");
                return None;
            }
            E::Overflow => {
                tracing::warn!("core event queue overflowed; state is re-read from queries");
                return None;
            }
        })
    }

    /// The daemon's counters with the core's (cumulative) ones folded in. Computed when read,
    /// not per datagram: the receive path stays free of bookkeeping.
    fn folded_metrics(&self) -> ClusterMetrics {
        let now = *self.node.stats();
        let mut m = self.metrics.clone();
        m.frames_accepted = now.received - now.unverified;
        for (reason, n) in [
            (DropReason::Own, now.own),
            (DropReason::Truncated, now.truncated),
            (
                DropReason::Malformed,
                now.malformed + now.unsupported_version,
            ),
            (DropReason::UnknownKind, now.unknown_kind),
            (DropReason::OtherCluster, now.other_cluster),
            (DropReason::Auth, now.auth + now.unknown_key),
            (DropReason::Replay, now.replay),
            (DropReason::Stale, now.stale_incarnation),
            (DropReason::NoDataKey, now.no_data_key),
            (DropReason::Unverified, now.unverified),
            (DropReason::Other, now.too_many_senders),
        ] {
            m.add_drops(reason, n);
        }
        m.state_changes = self.node.membership().stats().state_changes;
        m.stall_pardons = self.node.membership().stats().pardons;
        m.twin_frames = now.twin;
        m
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // In tests a failed unwrap is a failed test.
mod tests {
    use super::*;

    fn config(id: u16, keys: Option<KeySet>) -> ClusterConfig {
        ClusterConfig {
            node_id: NodeId(id),
            cluster_id: ClusterId(1),
            incarnation: Incarnation(100 + u32::from(id)),
            profile: Profile::Fast,
            interval_us: None,
            multiplier: None,
            priority: 100,
            preempt: true,
            witness: false,
            voters: vec![],
            keys,
            salt: Salt([id as u8; 6]),
        }
    }

    fn cluster(id: u16, keys: Option<KeySet>) -> Cluster {
        Cluster::new(config(id, keys), Instant::ZERO)
    }

    /// Runs two clusters for `ms` of virtual time over a lossless in-memory link.
    fn run(a: &mut Cluster, b: &mut Cluster, from_ms: u64, ms: u64) {
        for step in 0..ms * 4 {
            let now = Instant::from_micros(from_ms * 1000 + step * 250);
            pump(a, b, now);
            pump(b, a, now);
        }
    }

    fn pump(src: &mut Cluster, dst: &mut Cluster, now: Instant) {
        let mut buf = [0u8; 2048];
        if src.poll_timeout().is_some_and(|t| t <= now) {
            src.handle_timeout(now);
        }
        for _ in 0..100 {
            let Some((n, _)) = src.poll_transmit(now, &mut buf) else {
                break;
            };
            let from = dst.handle_datagram(now, &mut buf[..n], no_entries);
            // The authenticated sender, or nothing when the frame did not open (wrong key).
            assert!(from.is_none_or(|f| f == src.node_id()), "{from:?}");
        }
    }

    /// Heartbeats carry no session entries; none reach the store in these tests.
    fn no_entries(_: EntrySource, _: NodeId, _: &EntryRepr<'_>) {}

    fn drain(c: &mut Cluster) -> Vec<&'static str> {
        std::iter::from_fn(|| c.poll_event())
            .map(|e| e.name())
            .collect()
    }

    /// `--interval 10ms --multiplier 3` on a `fast` node: it heartbeats every 10 ms and its
    /// peer declares it dead 30 ms after it goes silent, not 10 ms.
    #[test]
    fn timing_overrides_reach_the_heartbeats_and_the_peer_detector() {
        let mut a = cluster(1, None);
        let mut slow = cluster(2, None);
        slow.cfg.interval_us = Some(10_000);
        slow.cfg.multiplier = Some(3);
        let mut b = Cluster::new(slow.cfg.clone(), Instant::ZERO);
        assert_eq!(b.detection_span(), Duration::from_millis(30));
        // 100 ms: about 10 heartbeats from b, 50 from a.
        let sent0 = b.metrics().frames_sent;
        run(&mut a, &mut b, 0, 100);
        let sent = b.metrics().frames_sent - sent0;
        assert!((9..=13).contains(&sent), "b sent {sent} frames in 100 ms");
        drain(&mut a);
        // b goes silent now; a declares it dead 30 ms after it last heard it.
        let mut buf = [0u8; 2048];
        let (mut last_heard_us, mut dead_at_us) = (None, None);
        for step in 0..400 {
            let us = 100_000 + step * 250;
            let now = Instant::from_micros(us);
            let st = a.status(now);
            let m = st.members.iter().find(|m| m.node_id == NodeId(2)).unwrap();
            last_heard_us.get_or_insert(us - m.ms_since_heard * 1000);
            if m.state == MemberState::Dead {
                dead_at_us = Some(us);
                break;
            }
            if a.poll_timeout().is_some_and(|t| t <= now) {
                a.handle_timeout(now);
            }
            while a.poll_transmit(now, &mut buf).is_some() {}
        }
        let span_us = dead_at_us.unwrap() - last_heard_us.unwrap();
        assert!(
            (29_000..=32_000).contains(&span_us),
            "dead {span_us} us after last heard"
        );
    }

    #[test]
    fn pair_joins_agrees_on_a_leader_and_sees_a_leave() {
        let mut a = cluster(1, None);
        let mut b = cluster(2, None);
        run(&mut a, &mut b, 0, 40);
        let (sa, sb) = (
            a.status(Instant::from_millis(40)),
            b.status(Instant::from_millis(40)),
        );
        assert_eq!(sa.members.len(), 2);
        assert_eq!(sa.count(MemberState::Alive), 2);
        assert_eq!(sb.count(MemberState::Alive), 2);
        assert_eq!(sa.leader, Some(NodeId(1)));
        assert_eq!(sb.leader, Some(NodeId(1)));
        assert_eq!(sa.role, Role::Leader);
        assert_eq!(sb.role, Role::Follower);
        assert!(drain(&mut a).contains(&"member_alive"));
        assert!(a.joined(Instant::from_millis(40)));
        assert!(a.metrics().frames_accepted > 0);
        assert!(
            a.metrics().drops(DropReason::Own) == 0,
            "no loopback in this harness"
        );

        b.leave(Instant::from_millis(40));
        run(&mut a, &mut b, 40, 2);
        assert_eq!(
            b.poll_timeout(),
            None,
            "nothing due after the Leave went out"
        );
        let s = a.status(Instant::from_millis(42));
        assert_eq!(
            s.members
                .iter()
                .find(|m| m.node_id == NodeId(2))
                .map(|m| m.state),
            Some(MemberState::Left)
        );
        assert!(drain(&mut a).contains(&"member_left"));
        assert_eq!(b.status(Instant::from_millis(42)).role, Role::Left);
    }

    #[test]
    fn wrong_key_is_counted_as_auth_drop_and_never_joins() {
        let k1 = crate::config::parse_keys(&[1u8; 16]).unwrap();
        let k2 = crate::config::parse_keys(&[2u8; 16]).unwrap();
        let mut a = cluster(1, Some(k1.clone()));
        let mut b = cluster(2, Some(k2.clone()));
        run(&mut a, &mut b, 0, 20);
        assert_eq!(a.status(Instant::from_millis(20)).members.len(), 1);
        assert!(a.metrics().drops(DropReason::Auth) > 0);
        // Rotation: b learns a's key via SIGHUP-style reload and the pair joins.
        b.reload_keys(&k1).unwrap();
        run(&mut a, &mut b, 20, 20);
        assert_eq!(
            a.status(Instant::from_millis(40)).count(MemberState::Alive),
            2
        );
        let mut plain = cluster(3, None);
        assert_eq!(plain.reload_keys(&k1), Err(ReloadError::NotAuthenticated));
    }

    /// A witness with the control key only is heard by a data node (heartbeats are control
    /// frames); a reload that would give it a data key, or take a data node's, is refused.
    #[test]
    fn a_witness_runs_on_the_control_key_and_refuses_a_data_key_on_reload() {
        let data = crate::config::parse_keys(
            b"1:control:00112233445566778899aabbccddeeff\n1:data:ffeeddccbbaa99887766554433221100\n",
        )
        .unwrap();
        let control =
            crate::config::parse_keys(b"1:control:00112233445566778899aabbccddeeff\n").unwrap();
        let mut a = cluster(1, Some(data.clone()));
        let mut w = Cluster::new(
            ClusterConfig {
                witness: true,
                ..config(2, Some(control.clone()))
            },
            Instant::ZERO,
        );
        run(&mut a, &mut w, 0, 20);
        for c in [&a, &w] {
            assert_eq!(
                c.status(Instant::from_millis(20)).count(MemberState::Alive),
                2
            );
            assert_eq!(c.metrics().drops(DropReason::Auth), 0);
        }
        match w.reload_keys(&data) {
            Err(ReloadError::Role(e)) => assert!(e.contains("witness"), "{e}"),
            other => panic!("{other:?}"),
        }
        match a.reload_keys(&control) {
            Err(ReloadError::Role(e)) => assert!(e.contains("no data key"), "{e}"),
            other => panic!("{other:?}"),
        }
        assert_eq!(w.reload_keys(&control), Ok(()));
    }

    #[test]
    fn garbage_is_dropped_and_counted() {
        let mut a = cluster(1, None);
        a.handle_datagram(Instant::ZERO, &mut [1, 2, 3], no_entries);
        a.handle_datagram(Instant::ZERO, &mut [], no_entries);
        assert_eq!(a.metrics().frames_received, 2);
        assert_eq!(a.metrics().drops(DropReason::Truncated), 2);
        assert_eq!(a.metrics().frames_accepted, 0);
    }
}
