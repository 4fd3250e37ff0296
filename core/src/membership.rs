//! Membership: members and their incarnations, graceful leave, leader election with a view
//! number, and the split-brain guard.
//!
//! Sans-IO, quinn-proto shape: feed [`Membership::handle_heartbeat`],
//! [`Membership::handle_leave`] and [`Membership::handle_timeout`]; take
//! [`Membership::poll_heartbeat`] (the heartbeat to send now; the caller wraps it in a frame),
//! [`Membership::poll_event`] and [`Membership::poll_timeout`] (the earliest of: a peer's
//! deadline, this node's next heartbeat, the end of the startup hold).
//!
//! Driving it: after every input, and whenever `now >= poll_timeout()`, call
//! `handle_timeout(now)`, then send what `poll_heartbeat(now)` returns, then drain
//! `poll_event()`. `poll_timeout()` may return an instant already past (a change makes the
//! next heartbeat due at once): that means "work now".
//!
//! # Members
//! Up to `N` members (default 16) in a fixed table, plus this node. States: alive, suspect,
//! dead, left (see [`crate::detector`] for the deadlines). A heartbeat with a higher
//! incarnation is a restart: the member keeps its slot and a
//! [`Event::MemberRejoined`] is reported, never a second member. Frames from an older
//! incarnation are ignored, unless they keep coming for longer than the member's detection
//! span after the newer incarnation appeared: then two processes claim one node id and
//! [`Event::DuplicateNodeId`] is reported (the newer incarnation is kept; nothing merges).
//! A heartbeat claiming this node's id with another incarnation is reported the same way.
//! A Leave marks the member `left` at once; later frames of that incarnation are ignored.
//! A member beyond capacity is refused and reported ([`Event::CapacityExceeded`],
//! [`Stats::refused`]); dead or left members give their slot to newcomers first.
//!
//! # Leader and view
//! Candidates: members alive or suspect (suspicion alone never moves leadership), not
//! witnesses, not still joining ([`StateFlags::JOINING`]), and, when voters are configured,
//! in the voter set. This node is a candidate on the same terms. The best candidate has the
//! highest priority, then the lowest node id.
//! - `preempt = true` (default, like keepalived): the leader is always the best candidate.
//! - `preempt = false`: the sitting leader stays while it is a candidate; only when it stops
//!   being one is the best candidate chosen.
//!
//! The view number increases by one on every local membership change (up, down, left,
//! rejoin, a member's priority/role/joining change). Every heartbeat carries the sender's
//! `(view, leader)`. Convergence rule: a node that sees a higher view adopts that view number
//! and, if the advertised leader is a candidate locally and (`preempt = false` or the node is
//! still in its startup hold), that leader too; with `preempt = false` an equal view with a
//! better-ranked advertised leader is adopted as well (this is how two sitting leaders resolve
//! after a partition heals). Views only grow and adoption never bumps them, so once the
//! membership is stable every connected node ends with the same view and leader.
//!
//! Startup hold: for one detection span of its own profile after start, a node advertises
//! `JOINING`, is no one's candidate and does not elect itself, so a restarting node first
//! learns the sitting leader instead of grabbing leadership for a moment.
//!
//! # Split-brain guard
//! With voters configured (for two data nodes: both plus a witness), a node that sees at most
//! half of the voters (itself included, alive or suspect) is isolated: [`Membership::isolated`]
//! is true, it has no leader, it advertises [`StateFlags::ISOLATED`], and
//! [`Event::QuorumLost`] / [`Event::QuorumRegained`] mark the changes. In a clean partition at
//! most one side holds a majority, so once the detection span has passed at most one side
//! serves. A node starts isolated when voters are configured (it has seen no one yet) and
//! reports [`Event::QuorumRegained`] when it first sees a majority.
//!
//! A non-transitive partition (A and B both see the witness W but not each other) would leave
//! both A and B with a majority. Every heartbeat names the sender's leader, and W, seeing both,
//! names one of them, say A. B sees W name a leader that B cannot see: W is in A's component.
//! A voter that names a leader this node sees neither alive nor as itself *contradicts* it;
//! once a contradiction has lasted [`CONTRADICTION_SPANS`] of that voter's detection spans
//! (time enough for the voter to notice the same death on its own), the voter no longer
//! counts towards this node's quorum. So B becomes isolated and A serves alone, until the
//! A-B link heals (W's leader is then alive for B: the contradiction ends at once). In a
//! normal failover every node sees the dead leader die within about one detection span of
//! each other, well inside the allowance, so nobody is isolated by it.
//!
//! Without voters (two-node mode) nobody is ever isolated. On a partition each side declares
//! the other dead after the detection span and elects its own leader (view + 1 on each side):
//! both sides serve, which is the point of an active-active pair. On heal each side sees the
//! other come back (view + 1 again); the higher view wins and, on equal views, the preempt
//! rule (or the better rank with `preempt = false`) picks one leader; sessions written on both
//! sides meanwhile are reconciled by the replication layer's last-writer-wins rule.
//!
//! Panics: never; every input is bounded and a full event queue drops and counts
//! ([`Event::Overflow`], [`Stats::events_dropped`]).

use crate::detector::{Detector, Liveness, Profile};
use crate::frame::{HeartbeatRepr, LeaveRepr, Role, StateFlags};
use crate::id::{Incarnation, NodeId};
use crate::time::Instant;
use heapless::{Deque, Vec};

/// Most voters a config can name.
pub const MAX_VOTERS: usize = 16;
/// Events buffered between two `poll_event` drains, by default (the `E` parameter of
/// [`Membership`]).
pub const EVENT_QUEUE: usize = 64;

/// How this node takes part.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    pub node_id: NodeId,
    pub incarnation: Incarnation,
    /// Higher wins the election.
    pub priority: u8,
    /// Votes for quorum, never leads, holds no sessions.
    pub witness: bool,
    /// Voter set for the split-brain guard; empty = no quorum rule (two-node mode).
    pub voters: Vec<NodeId, MAX_VOTERS>,
    /// Whether a better candidate takes leadership from a sitting leader.
    pub preempt: bool,
    pub profile: Profile,
}

impl Config {
    /// Priority 100, not a witness, no voters, preempt, `lan` profile.
    pub const fn new(node_id: NodeId, incarnation: Incarnation) -> Self {
        Config {
            node_id,
            incarnation,
            priority: 100,
            witness: false,
            voters: Vec::new(),
            preempt: true,
            profile: Profile::LAN,
        }
    }

    /// This config with `profile` (a `const fn`, for a configuration kept in flash).
    pub const fn with_profile(mut self, profile: Profile) -> Self {
        self.profile = profile;
        self
    }
}

/// State of a member.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemberState {
    Alive,
    Suspect,
    Dead,
    Left,
}

/// What this node knows of a peer (for `/status`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Member {
    pub node: NodeId,
    pub incarnation: Incarnation,
    pub state: MemberState,
    pub last_heard: Instant,
    /// Role the member announced.
    pub role: Role,
    pub priority: u8,
    pub flags: StateFlags,
    /// Leader and view in the member's last heartbeat.
    pub leader: Option<NodeId>,
    pub view: u64,
    /// Member's replication high-water mark from its last heartbeat.
    pub repl_hwm: u64,
}

/// Something the daemon should know about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    MemberUp {
        node: NodeId,
        incarnation: Incarnation,
    },
    MemberSuspect {
        node: NodeId,
    },
    /// A suspect member was heard again before being declared dead.
    MemberRecovered {
        node: NodeId,
    },
    MemberDown {
        node: NodeId,
    },
    MemberLeft {
        node: NodeId,
    },
    MemberRejoined {
        node: NodeId,
        incarnation: Incarnation,
    },
    /// Leader (None while isolated, joining, or with no candidate) and the view it holds in.
    LeaderChanged {
        leader: Option<NodeId>,
        view: u64,
    },
    QuorumLost,
    QuorumRegained,
    /// Two live processes claim `node`; `incarnation` is the one refused.
    DuplicateNodeId {
        node: NodeId,
        incarnation: Incarnation,
    },
    /// `node` was refused: the member table is full of live members.
    CapacityExceeded {
        node: NodeId,
    },
    /// The queue was full and events were dropped: re-read the state through the queries.
    Overflow,
}

/// Counters for `/metrics`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub heartbeats: u64,
    /// Frames ignored for a stale incarnation or after a leave.
    pub stale: u64,
    /// Member state changes of any kind.
    pub state_changes: u64,
    pub suspicions: u64,
    /// Members declared dead.
    pub detections: u64,
    pub recoveries: u64,
    pub rejoins: u64,
    pub leaves: u64,
    pub duplicates: u64,
    /// Heartbeats refused for lack of capacity.
    pub refused: u64,
    pub view_changes: u64,
    pub leader_changes: u64,
    pub events_dropped: u64,
    /// Overdue peers given one more interval after a stall of this node ([`Membership::stalled`]).
    pub pardons: u64,
}

/// How long (in multiples of its own detection span) a voter may name a leader this node
/// cannot see before it stops counting towards this node's quorum (module docs).
pub const CONTRADICTION_SPANS: u64 = 3;

#[derive(Clone, Copy, Debug)]
struct Slot {
    m: Member,
    /// When the current incarnation was first heard (duplicate-id grace).
    since: Instant,
    /// Heartbeat interval and detect multiplier the member advertises.
    interval_us: u32,
    multiplier: u8,
    /// Since when this voter has named a leader we cannot see (split-brain guard), if
    /// `contradicting`. Two fields rather than an `Option<Instant>` and kept out of
    /// [`Member`]: a slot packs into 64 bytes (RAM per member on a microcontroller).
    contradicts_since: Instant,
    contradicting: bool,
    /// The contradiction outlasted its allowance: the voter does not count for quorum.
    discounted: bool,
}

impl Slot {
    /// A slot that holds no member (node id 0 is never a member). All bytes zero, where an
    /// `Option<Slot>` would put a niche value, so a zeroed [`Membership`] needs no flash.
    const FREE: Slot = Slot {
        m: Member {
            node: NodeId(0),
            incarnation: Incarnation(0),
            state: MemberState::Alive,
            last_heard: Instant::ZERO,
            role: Role::Follower,
            priority: 0,
            flags: StateFlags(0),
            leader: None,
            view: 0,
            repl_hwm: 0,
        },
        since: Instant::ZERO,
        interval_us: 0,
        multiplier: 0,
        contradicts_since: Instant::ZERO,
        contradicting: false,
        discounted: false,
    };

    /// Since when this voter contradicts us, if it does.
    fn contradiction(&self) -> Option<Instant> {
        self.contradicting.then_some(self.contradicts_since)
    }

    /// How long a voter may contradict us before it stops counting (module docs).
    fn contradiction_allowance_us(&self) -> u64 {
        CONTRADICTION_SPANS * self.interval_us as u64 * self.multiplier.max(1) as u64
    }

    fn used(&self) -> Option<&Slot> {
        (self.m.node.0 != 0).then_some(self)
    }

    fn used_mut(&mut self) -> Option<&mut Slot> {
        (self.m.node.0 != 0).then_some(self)
    }
}

/// Membership state machine of one node with room for `N` peers and `E` events between two
/// `poll_event` drains (the caller's choice: a microcontroller that drains after every input
/// needs few; at least `N + 2` holds everything one timeout can report).
#[derive(Clone, Debug)]
pub struct Membership<const N: usize = 16, const E: usize = EVENT_QUEUE> {
    cfg: Config,
    slots: [Slot; N],
    det: Detector<N>,
    events: Deque<Event, E>,
    overflowed: bool,
    view: u64,
    leader: Option<NodeId>,
    isolated: bool,
    hold_until: Option<Instant>,
    next_heartbeat: Instant,
    left: bool,
    flags: StateFlags,
    repl_hwm: u64,
    stats: Stats,
    last_refused: Option<NodeId>,
    last_duplicate: Option<(NodeId, Incarnation)>,
}

impl<const N: usize, const E: usize> Membership<N, E> {
    /// Starts a node at `now`: its first heartbeat is due at once, and it holds off electing
    /// itself for one detection span.
    pub fn new(cfg: Config, now: Instant) -> Self {
        let mut m = Membership::zeroed();
        m.start(&cfg, now);
        m
    }

    /// Every byte zero (so a `static` holding it costs no flash) and not usable until
    /// [`Membership::start`].
    pub const fn zeroed() -> Self {
        Membership {
            cfg: Config {
                node_id: NodeId(0),
                incarnation: Incarnation(0),
                priority: 0,
                witness: false,
                voters: Vec::new(),
                preempt: false,
                profile: Profile {
                    interval_us: 0,
                    multiplier: 0,
                    suspect_percent: 0,
                    policy: crate::detector::Policy::Fixed,
                },
            },
            slots: [Slot::FREE; N],
            det: Detector::zeroed(),
            events: Deque::new(),
            overflowed: false,
            view: 0,
            leader: None,
            isolated: false,
            hold_until: None,
            next_heartbeat: Instant::ZERO,
            left: false,
            flags: StateFlags(0),
            repl_hwm: 0,
            stats: Stats {
                heartbeats: 0,
                stale: 0,
                state_changes: 0,
                suspicions: 0,
                detections: 0,
                recoveries: 0,
                rejoins: 0,
                leaves: 0,
                duplicates: 0,
                refused: 0,
                view_changes: 0,
                leader_changes: 0,
                events_dropped: 0,
                pardons: 0,
            },
            last_refused: None,
            last_duplicate: None,
        }
    }

    /// [`Membership::new`] in place, whatever the state was: no member, no event.
    pub fn start(&mut self, cfg: &Config, now: Instant) {
        self.det
            .reset(cfg.profile.policy, cfg.profile.suspect_percent);
        self.cfg.clone_from(cfg);
        self.slots.iter_mut().for_each(|s| *s = Slot::FREE);
        self.events.clear();
        self.overflowed = false;
        self.view = 0;
        self.leader = None;
        let hold = now.saturating_add_micros(cfg.profile.detection_bound_us());
        self.hold_until = Some(hold);
        self.next_heartbeat = now;
        self.left = false;
        self.flags = StateFlags::default();
        self.repl_hwm = 0;
        self.stats = Stats::default();
        self.last_refused = None;
        self.last_duplicate = None;
        self.isolated = self.quorum_missing();
    }

    // ---- inputs ----

    /// A heartbeat from `sender` (incarnation from the frame header) arrived at `now`.
    pub fn handle_heartbeat(
        &mut self,
        now: Instant,
        sender: NodeId,
        incarnation: Incarnation,
        hb: &HeartbeatRepr,
    ) {
        self.stats.heartbeats += 1;
        if sender.0 == 0 {
            self.stats.stale += 1;
            return;
        }
        if sender == self.cfg.node_id {
            // Our own multicast looped back is fine; another incarnation is another process.
            if incarnation != self.cfg.incarnation {
                self.report_duplicate(sender, incarnation);
            }
            return;
        }
        let mut changed = false;
        let idx = match self.find(sender) {
            Some(i) => i,
            None => match self.free_slot() {
                Some(i) => {
                    if self.slots[i].used().is_some() {
                        // dead or left member evicted for a newcomer
                        self.det.remove(i);
                    }
                    self.slots[i] = Slot {
                        m: Member {
                            node: sender,
                            incarnation,
                            state: MemberState::Dead,
                            last_heard: now,
                            role: hb.role,
                            priority: hb.priority,
                            flags: hb.state,
                            leader: None,
                            view: 0,
                            repl_hwm: 0,
                        },
                        since: now,
                        interval_us: hb.interval_us,
                        multiplier: hb.multiplier,
                        contradicts_since: Instant::ZERO,
                        contradicting: false,
                        discounted: false,
                    };
                    self.det.heartbeat(i, now, hb.interval_us, hb.multiplier);
                    self.set_state(i, MemberState::Alive);
                    self.push(Event::MemberUp {
                        node: sender,
                        incarnation,
                    });
                    changed = true;
                    i
                }
                None => {
                    self.stats.refused += 1;
                    if self.last_refused != Some(sender) {
                        self.last_refused = Some(sender);
                        self.push(Event::CapacityExceeded { node: sender });
                    }
                    return;
                }
            },
        };
        let Some(&slot) = self.slots[idx].used() else {
            return; // filled above or found: cannot be free
        };
        if !changed {
            let m = slot.m;
            if incarnation < m.incarnation {
                let span = self.det.span_us(idx).max(detection_span(hb));
                if now >= slot.since.saturating_add_micros(span) {
                    self.report_duplicate(sender, incarnation);
                } else {
                    self.stats.stale += 1; // reordered frame from before the restart
                }
                return;
            }
            if incarnation > m.incarnation {
                self.det.remove(idx);
                self.det.heartbeat(idx, now, hb.interval_us, hb.multiplier);
                if let Some(s) = self.slots[idx].used_mut() {
                    s.m.incarnation = incarnation;
                    s.since = now;
                }
                self.set_state(idx, MemberState::Alive);
                self.stats.rejoins += 1;
                self.push(Event::MemberRejoined {
                    node: sender,
                    incarnation,
                });
                changed = true;
            } else if m.state == MemberState::Left {
                self.stats.stale += 1;
                return;
            } else {
                self.det.heartbeat(idx, now, hb.interval_us, hb.multiplier);
                match m.state {
                    MemberState::Dead => {
                        self.set_state(idx, MemberState::Alive);
                        self.push(Event::MemberUp {
                            node: sender,
                            incarnation,
                        });
                        changed = true;
                    }
                    MemberState::Suspect => {
                        self.set_state(idx, MemberState::Alive);
                        self.stats.recoveries += 1;
                        self.push(Event::MemberRecovered { node: sender });
                    }
                    _ => {}
                }
            }
            let joining = |f: StateFlags| f.0 & StateFlags::JOINING != 0;
            if m.role != hb.role
                || m.priority != hb.priority
                || joining(m.flags) != joining(hb.state)
            {
                changed = true;
            }
        }
        if let Some(s) = self.slots[idx].used_mut() {
            s.m.last_heard = now;
            s.m.role = hb.role;
            s.m.priority = hb.priority;
            s.m.flags = hb.state;
            s.m.leader = hb.leader;
            s.m.view = hb.view;
            s.m.repl_hwm = hb.repl_hwm;
            s.interval_us = hb.interval_us;
            s.multiplier = hb.multiplier;
        }
        // A changed membership refreshes every contradiction; else only the sender's claim
        // may have changed.
        if changed || self.refresh_contradiction(idx, now) {
            self.changed(now);
        }
        self.adopt(now, sender, hb);
    }

    /// A Leave from `sender` arrived: the member is `left` at once.
    pub fn handle_leave(&mut self, now: Instant, sender: NodeId, incarnation: Incarnation) {
        let Some(idx) = self.find(sender) else {
            return; // unknown: nothing to forget, nothing allocated
        };
        let Some(&slot) = self.slots[idx].used() else {
            return;
        };
        if incarnation < slot.m.incarnation || slot.m.state == MemberState::Left {
            self.stats.stale += 1;
            return;
        }
        self.det.remove(idx);
        if let Some(s) = self.slots[idx].used_mut() {
            s.m.incarnation = incarnation;
            s.m.last_heard = now;
        }
        self.set_state(idx, MemberState::Left);
        self.stats.leaves += 1;
        self.push(Event::MemberLeft { node: sender });
        self.changed(now);
    }

    /// Applies every deadline that passed by `now` (peers' and the startup hold).
    pub fn handle_timeout(&mut self, now: Instant) {
        let mut changed = false;
        while let Some(e) = self.det.handle_timeout(now) {
            let Some(node) = self
                .slots
                .get(e.slot)
                .and_then(Slot::used)
                .map(|s| s.m.node)
            else {
                continue;
            };
            match e.to {
                Liveness::Suspect => {
                    self.set_state(e.slot, MemberState::Suspect);
                    self.stats.suspicions += 1;
                    self.push(Event::MemberSuspect { node });
                }
                Liveness::Dead => {
                    self.set_state(e.slot, MemberState::Dead);
                    self.stats.detections += 1;
                    self.push(Event::MemberDown { node });
                    changed = true;
                }
                Liveness::Alive => {}
            }
        }
        if let Some(h) = self.hold_until {
            if now >= h {
                self.hold_until = None;
                // Our candidacy changes what everyone computes: announce it now.
                self.next_heartbeat = self.next_heartbeat.min(now);
                changed = true;
            }
        }
        for slot in self.slots.iter_mut().filter_map(Slot::used_mut) {
            if let (Some(t), false) = (slot.contradiction(), slot.discounted) {
                if now >= t.saturating_add_micros(slot.contradiction_allowance_us()) {
                    slot.discounted = true;
                    changed = true;
                }
            }
        }
        if changed {
            self.changed(now);
        }
    }

    /// This node was not running until `now` (the caller's loop woke up late): peers whose
    /// deadlines fell due meanwhile get one more heartbeat interval, once per silence (see
    /// [`Detector::stalled`]). Call after reading the heartbeats that arrived, before
    /// [`Membership::handle_timeout`]. Changes no member state.
    pub fn stalled(&mut self, now: Instant) {
        self.stats.pardons += self.det.stalled(now) as u64;
    }

    /// Leaves the cluster: no more heartbeats; send the returned Leave.
    pub fn leave(&mut self, now: Instant) -> LeaveRepr {
        self.left = true;
        self.update_leader(now);
        LeaveRepr { reason: 0 }
    }

    /// Daemon-owned heartbeat flags (SYNCING, DRAINING); JOINING and ISOLATED are added here.
    pub fn set_flags(&mut self, flags: StateFlags) {
        self.flags = StateFlags(flags.0 & !(StateFlags::JOINING | StateFlags::ISOLATED));
    }

    /// Replication high-water mark advertised in heartbeats.
    pub fn set_repl_hwm(&mut self, hwm: u64) {
        self.repl_hwm = hwm;
    }

    /// Makes the next heartbeat due at `now` (a peer just learned this node is live and
    /// waits for one); the schedule after it is unchanged.
    pub fn heartbeat_now(&mut self, now: Instant) {
        self.next_heartbeat = self.next_heartbeat.min(now);
    }

    // ---- outputs ----

    /// Earliest instant `handle_timeout` or `poll_heartbeat` has work.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut t = self.det.poll_timeout();
        let mut consider = |x: Instant| t = Some(t.map_or(x, |t| t.min(x)));
        if !self.left {
            consider(self.next_heartbeat);
        }
        if let Some(h) = self.hold_until {
            consider(h);
        }
        for slot in self.slots.iter().filter_map(Slot::used) {
            if let (Some(t), false) = (slot.contradiction(), slot.discounted) {
                consider(t.saturating_add_micros(slot.contradiction_allowance_us()));
            }
        }
        t
    }

    /// The heartbeat to send now, if one is due.
    pub fn poll_heartbeat(&mut self, now: Instant) -> Option<HeartbeatRepr> {
        if self.left || now < self.next_heartbeat {
            return None;
        }
        let iv = self.cfg.profile.interval_us as u64;
        let next = self.next_heartbeat.saturating_add_micros(iv);
        self.next_heartbeat = if next <= now {
            now.saturating_add_micros(iv)
        } else {
            next
        };
        let mut state = self.flags.0;
        if self.hold_until.is_some() {
            state |= StateFlags::JOINING;
        }
        if self.isolated {
            state |= StateFlags::ISOLATED;
        }
        Some(HeartbeatRepr {
            interval_us: self.cfg.profile.interval_us,
            multiplier: self.cfg.profile.multiplier,
            role: self.role(),
            priority: self.cfg.priority,
            state: StateFlags(state),
            leader: self.leader,
            view: self.view,
            repl_hwm: self.repl_hwm,
        })
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        let e = self.events.pop_front();
        if e == Some(Event::Overflow) {
            self.overflowed = false;
        }
        e
    }

    // ---- queries ----

    pub fn node_id(&self) -> NodeId {
        self.cfg.node_id
    }

    pub fn incarnation(&self) -> Incarnation {
        self.cfg.incarnation
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// This node's role: Witness, Leader (leader of the current view) or Follower.
    pub fn role(&self) -> Role {
        if self.cfg.witness {
            Role::Witness
        } else if self.leader == Some(self.cfg.node_id) {
            Role::Leader
        } else {
            Role::Follower
        }
    }

    pub fn leader(&self) -> Option<NodeId> {
        self.leader
    }

    pub fn view(&self) -> u64 {
        self.view
    }

    /// True when voters are configured and this node sees at most half of them.
    pub fn isolated(&self) -> bool {
        self.isolated
    }

    /// Still in the startup hold (advertising JOINING).
    pub fn joining(&self) -> bool {
        self.hold_until.is_some()
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Every known peer (alive, suspect, dead or left), in table order.
    pub fn members(&self) -> impl Iterator<Item = &Member> + '_ {
        self.slots.iter().filter_map(Slot::used).map(|s| &s.m)
    }

    pub fn member(&self, node: NodeId) -> Option<&Member> {
        self.members().find(|m| m.node == node)
    }

    /// Peers currently alive or suspect.
    pub fn live_members(&self) -> usize {
        self.members().filter(|m| is_live(m.state)).count()
    }

    // ---- internals ----

    fn find(&self, node: NodeId) -> Option<usize> {
        self.slots
            .iter()
            .position(|s| s.used().is_some_and(|s| s.m.node == node))
    }

    /// An empty slot, else the dead or left member heard from longest ago.
    fn free_slot(&self) -> Option<usize> {
        // One plain loop: the iterator chain it replaces copied each member (flash).
        let mut oldest: Option<(usize, Instant)> = None;
        for (i, s) in self.slots.iter().enumerate() {
            let Some(s) = s.used() else {
                return Some(i);
            };
            if !is_live(s.m.state) && oldest.is_none_or(|(_, t)| s.m.last_heard < t) {
                oldest = Some((i, s.m.last_heard));
            }
        }
        oldest.map(|(i, _)| i)
    }

    fn set_state(&mut self, idx: usize, state: MemberState) {
        if let Some(s) = self.slots.get_mut(idx).and_then(Slot::used_mut) {
            if s.m.state != state {
                s.m.state = state;
                self.stats.state_changes += 1;
            }
        }
    }

    /// Counts an authentic frame of another process claiming `node`'s id (this node's, or
    /// a member's twin) and reports it once per (node, incarnation).
    pub fn report_duplicate(&mut self, node: NodeId, incarnation: Incarnation) {
        self.stats.duplicates += 1;
        if self.last_duplicate != Some((node, incarnation)) {
            self.last_duplicate = Some((node, incarnation));
            self.push(Event::DuplicateNodeId { node, incarnation });
        }
    }

    /// Whether the voter in slot `idx` names a leader that is neither us, nor itself, nor a
    /// member we hold alive or suspect.
    fn contradicts(&self, idx: usize) -> bool {
        let Some(slot) = self.slots.get(idx).and_then(Slot::used) else {
            return false;
        };
        let v = &slot.m;
        // Two-node mode (no voters) first: it is checked on every heartbeat.
        if self.cfg.voters.is_empty() || !is_live(v.state) || !self.voter(v.node) {
            return false;
        }
        match v.leader {
            None => false,
            Some(l) if l == self.cfg.node_id || l == v.node => false,
            Some(l) => !self.member(l).is_some_and(|m| is_live(m.state)),
        }
    }

    /// Starts or ends the contradiction of slot `idx`; true if the end of one gave the voter
    /// back to the quorum count (recompute).
    fn refresh_contradiction(&mut self, idx: usize, now: Instant) -> bool {
        let contradicts = self.contradicts(idx);
        let Some(slot) = self.slots.get_mut(idx).and_then(Slot::used_mut) else {
            return false;
        };
        if contradicts {
            if !slot.contradicting {
                slot.contradicting = true;
                slot.contradicts_since = now;
            }
            false
        } else {
            slot.contradicting = false;
            core::mem::take(&mut slot.discounted)
        }
    }

    /// A membership change: new view, quorum and leader recomputed, heartbeat sent early.
    fn changed(&mut self, now: Instant) {
        self.view = self.view.saturating_add(1);
        self.stats.view_changes += 1;
        self.next_heartbeat = self.next_heartbeat.min(now);
        // Who is alive changed: any voter's claim may now contradict us, or stop to.
        for idx in 0..N {
            self.refresh_contradiction(idx, now);
        }
        let isolated = self.quorum_missing();
        if isolated != self.isolated {
            self.isolated = isolated;
            self.push(if isolated {
                Event::QuorumLost
            } else {
                Event::QuorumRegained
            });
        }
        self.update_leader(now);
    }

    /// The convergence rule (module docs): adopt a higher view, and its leader when allowed.
    fn adopt(&mut self, now: Instant, sender: NodeId, hb: &HeartbeatRepr) {
        let _ = sender;
        let can_take = |me: &Self, l: Option<NodeId>| l.filter(|&l| me.candidate(l));
        if hb.view > self.view {
            self.view = hb.view;
            self.stats.view_changes += 1;
            if !self.cfg.preempt || self.hold_until.is_some() {
                if let Some(l) = can_take(self, hb.leader) {
                    self.leader = Some(l);
                    self.stats.leader_changes += 1;
                    self.push(Event::LeaderChanged {
                        leader: Some(l),
                        view: self.view,
                    });
                }
            }
            self.update_leader(now);
        } else if hb.view == self.view && !self.cfg.preempt && hb.leader != self.leader {
            if let Some(l) = can_take(self, hb.leader) {
                let better = match self.leader {
                    Some(cur) if self.candidate(cur) => self.rank(l) > self.rank(cur),
                    _ => true,
                };
                if better {
                    self.leader = Some(l);
                    self.stats.leader_changes += 1;
                    self.push(Event::LeaderChanged {
                        leader: Some(l),
                        view: self.view,
                    });
                    self.update_leader(now);
                }
            }
        }
    }

    fn update_leader(&mut self, now: Instant) {
        let l = self.elect();
        if l != self.leader {
            self.leader = l;
            self.stats.leader_changes += 1;
            self.next_heartbeat = self.next_heartbeat.min(now);
            self.push(Event::LeaderChanged {
                leader: l,
                view: self.view,
            });
        }
    }

    fn elect(&self) -> Option<NodeId> {
        if self.isolated || self.left {
            return None;
        }
        if let Some(cur) = self.leader.filter(|&l| self.candidate(l)) {
            if !self.cfg.preempt || self.hold_until.is_some() {
                return Some(cur);
            }
        }
        if self.hold_until.is_some() {
            return None;
        }
        let mut best = self.candidate(self.cfg.node_id).then_some(self.cfg.node_id);
        for m in self.members() {
            if self.candidate(m.node) && best.is_none_or(|b| self.rank(m.node) > self.rank(b)) {
                best = Some(m.node);
            }
        }
        best
    }

    /// Election order: higher priority, then lower node id.
    fn rank(&self, node: NodeId) -> (u8, core::cmp::Reverse<u16>) {
        let prio = if node == self.cfg.node_id {
            self.cfg.priority
        } else {
            self.member(node).map_or(0, |m| m.priority)
        };
        (prio, core::cmp::Reverse(node.0))
    }

    fn voter(&self, node: NodeId) -> bool {
        self.cfg.voters.is_empty() || self.cfg.voters.contains(&node)
    }

    fn candidate(&self, node: NodeId) -> bool {
        if !self.voter(node) {
            return false;
        }
        if node == self.cfg.node_id {
            return !self.cfg.witness && !self.left && self.hold_until.is_none();
        }
        self.member(node).is_some_and(|m| {
            is_live(m.state) && m.role != Role::Witness && m.flags.0 & StateFlags::JOINING == 0
        })
    }

    fn quorum_missing(&self) -> bool {
        let voters = &self.cfg.voters;
        if voters.is_empty() {
            return false;
        }
        let seen = voters
            .iter()
            .filter(|&&v| {
                if v == self.cfg.node_id {
                    !self.left
                } else {
                    self.slots
                        .iter()
                        .filter_map(Slot::used)
                        .any(|s| s.m.node == v && is_live(s.m.state) && !s.discounted)
                }
            })
            .count();
        2 * seen <= voters.len()
    }

    /// Queues `e`; a LeaderChanged replaces a LeaderChanged just before it; when full, drops
    /// and counts, keeping the last place for one `Overflow`.
    fn push(&mut self, e: Event) {
        if let Event::LeaderChanged { .. } = e {
            if let Some(Event::LeaderChanged { .. }) = self.events.back() {
                self.events.pop_back();
            }
        }
        if self.events.len() + 1 >= E {
            self.stats.events_dropped += 1;
            if !self.overflowed {
                self.overflowed = true;
                let _ = self.events.push_back(Event::Overflow);
            }
            return;
        }
        let _ = self.events.push_back(e);
    }
}

fn is_live(s: MemberState) -> bool {
    matches!(s, MemberState::Alive | MemberState::Suspect)
}

fn detection_span(hb: &HeartbeatRepr) -> u64 {
    hb.interval_us as u64 * hb.multiplier.max(1) as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec::Vec as StdVec;

    const IV: u32 = 40_000;

    fn ms(t: u64) -> Instant {
        Instant::from_millis(t)
    }

    fn hb(prio: u8, leader: Option<u16>, view: u64) -> HeartbeatRepr {
        HeartbeatRepr {
            interval_us: IV,
            multiplier: 5,
            role: Role::Follower,
            priority: prio,
            state: StateFlags::default(),
            leader: leader.map(NodeId),
            view,
            repl_hwm: 0,
        }
    }

    fn node(id: u16) -> Membership<4> {
        let mut m = Membership::new(Config::new(NodeId(id), Incarnation(1)), ms(0));
        m.handle_timeout(ms(1000)); // past the startup hold
        m
    }

    fn events<const N: usize, const E: usize>(m: &mut Membership<N, E>) -> StdVec<Event> {
        core::iter::from_fn(|| m.poll_event()).collect()
    }

    #[test]
    fn alone_node_leads_after_hold() {
        let mut m = Membership::<4>::new(Config::new(NodeId(1), Incarnation(1)), ms(0));
        assert_eq!(m.leader(), None);
        assert!(m.joining());
        let h = m.poll_heartbeat(ms(0)).expect("due at start");
        assert_ne!(h.state.0 & StateFlags::JOINING, 0);
        assert_eq!(m.poll_timeout(), Some(ms(20))); // lan interval
        m.handle_timeout(ms(200));
        assert_eq!(m.leader(), Some(NodeId(1)));
        assert_eq!(m.role(), Role::Leader);
        assert_eq!(
            events(&mut m),
            [Event::LeaderChanged {
                leader: Some(NodeId(1)),
                view: 1
            }]
        );
    }

    #[test]
    fn up_suspect_down_and_rejoin() {
        let mut m = node(1);
        events(&mut m);
        m.handle_heartbeat(ms(1000), NodeId(2), Incarnation(7), &hb(100, None, 0));
        assert_eq!(
            m.member(NodeId(2)).map(|x| x.state),
            Some(MemberState::Alive)
        );
        assert_eq!(
            events(&mut m)[0],
            Event::MemberUp {
                node: NodeId(2),
                incarnation: Incarnation(7)
            }
        );
        assert_eq!(m.leader(), Some(NodeId(1))); // equal priority: lower id
                                                 // A reordered frame of an older incarnation is ignored.
        m.handle_heartbeat(ms(1050), NodeId(2), Incarnation(6), &hb(100, None, 0));
        assert_eq!(m.member(NodeId(2)).map(|x| x.last_heard), Some(ms(1000)));
        m.handle_timeout(ms(1099));
        assert!(events(&mut m).is_empty());
        m.handle_timeout(ms(1100));
        assert_eq!(events(&mut m), [Event::MemberSuspect { node: NodeId(2) }]);
        m.handle_timeout(ms(1200));
        assert_eq!(events(&mut m), [Event::MemberDown { node: NodeId(2) }]);
        let v = m.view();
        // A new incarnation is a rejoin in the same slot.
        m.handle_heartbeat(ms(1202), NodeId(2), Incarnation(8), &hb(100, None, 0));
        assert_eq!(
            events(&mut m),
            [Event::MemberRejoined {
                node: NodeId(2),
                incarnation: Incarnation(8)
            }]
        );
        assert_eq!(m.members().count(), 1);
        assert_eq!(m.view(), v + 1);
    }

    #[test]
    fn leave_is_immediate_and_final_for_that_incarnation() {
        let mut m = node(1);
        m.handle_heartbeat(ms(1000), NodeId(2), Incarnation(7), &hb(100, None, 0));
        m.handle_leave(ms(1001), NodeId(2), Incarnation(7));
        assert_eq!(
            m.member(NodeId(2)).map(|x| x.state),
            Some(MemberState::Left)
        );
        m.handle_heartbeat(ms(1002), NodeId(2), Incarnation(7), &hb(100, None, 0));
        assert_eq!(
            m.member(NodeId(2)).map(|x| x.state),
            Some(MemberState::Left)
        );
        assert!(m.poll_heartbeat(ms(1002)).is_some());
        assert_eq!(m.poll_timeout(), Some(ms(1022))); // only our own heartbeat remains
        let ev = events(&mut m);
        assert!(ev.contains(&Event::MemberLeft { node: NodeId(2) }));
    }

    #[test]
    fn duplicate_node_ids_are_reported_not_merged() {
        let mut m = node(1);
        events(&mut m);
        m.handle_heartbeat(ms(1000), NodeId(1), Incarnation(1), &hb(1, None, 0)); // own echo
        m.handle_heartbeat(ms(1000), NodeId(1), Incarnation(9), &hb(1, None, 0));
        m.handle_heartbeat(ms(1000), NodeId(2), Incarnation(5), &hb(1, None, 0));
        m.handle_heartbeat(ms(1010), NodeId(2), Incarnation(4), &hb(1, None, 0)); // reordered
        m.handle_heartbeat(ms(1300), NodeId(2), Incarnation(4), &hb(1, None, 0)); // still alive
        let ev = events(&mut m);
        let dups: StdVec<_> = ev
            .iter()
            .filter(|e| matches!(e, Event::DuplicateNodeId { .. }))
            .collect();
        assert_eq!(dups.len(), 2, "{ev:?}");
        assert_eq!(
            m.member(NodeId(2)).map(|x| x.incarnation),
            Some(Incarnation(5))
        );
        assert_eq!(m.members().count(), 1);
    }

    #[test]
    fn capacity_is_refused_and_reported_and_dead_slots_reused() {
        let mut m = node(1);
        for id in 2..=5 {
            m.handle_heartbeat(ms(1000), NodeId(id), Incarnation(1), &hb(1, None, 0));
        }
        events(&mut m);
        for _ in 0..3 {
            m.handle_heartbeat(ms(1001), NodeId(6), Incarnation(1), &hb(1, None, 0));
        }
        assert_eq!(
            events(&mut m),
            [Event::CapacityExceeded { node: NodeId(6) }]
        );
        assert_eq!(m.stats().refused, 3);
        assert_eq!(m.members().count(), 4);
        m.handle_leave(ms(1002), NodeId(3), Incarnation(1));
        m.handle_heartbeat(ms(1003), NodeId(6), Incarnation(1), &hb(1, None, 0));
        assert!(m.member(NodeId(6)).is_some());
        assert!(m.member(NodeId(3)).is_none());
    }

    #[test]
    fn preempt_and_sticky_leader() {
        let mut p = node(2);
        let mut cfg = Config::new(NodeId(2), Incarnation(1));
        cfg.preempt = false;
        let mut s = Membership::<4>::new(cfg, ms(0));
        s.handle_timeout(ms(1000));
        for m in [&mut p, &mut s] {
            m.handle_heartbeat(ms(1000), NodeId(1), Incarnation(1), &hb(200, None, 0));
        }
        // Node 1 has the higher priority: preempt takes it, sticky keeps the sitting leader 2.
        assert_eq!(p.leader(), Some(NodeId(1)));
        assert_eq!(s.leader(), Some(NodeId(2)));
        // Sticky adopts a higher view's leader if it is a candidate.
        s.handle_heartbeat(ms(1010), NodeId(1), Incarnation(1), &hb(200, Some(1), 50));
        assert_eq!((s.leader(), s.view()), (Some(NodeId(1)), 50));
    }

    #[test]
    fn quorum_with_witness() {
        let mut cfg = Config::new(NodeId(1), Incarnation(1));
        cfg.voters = [NodeId(1), NodeId(2), NodeId(3)].into_iter().collect();
        let mut m = Membership::<4>::new(cfg, ms(0));
        assert!(m.isolated());
        let mut w = hb(0, None, 0);
        w.role = Role::Witness;
        m.handle_heartbeat(ms(10), NodeId(3), Incarnation(1), &w);
        assert!(!m.isolated());
        m.handle_timeout(ms(1000)); // witness silent: dead
        assert!(m.isolated());
        assert_eq!(m.leader(), None);
        let ev = events(&mut m);
        assert!(ev.contains(&Event::QuorumRegained) && ev.contains(&Event::QuorumLost));
        let h = m.poll_heartbeat(ms(1000)).expect("due");
        assert_ne!(h.state.0 & StateFlags::ISOLATED, 0);
    }

    /// Three voters (1, 2 data nodes; 3 a witness) on an in-memory network where each
    /// directed link can be cut; every node heartbeats on its own schedule.
    struct Trio {
        nodes: [Membership<4>; 3],
        up: [[bool; 3]; 3],
        alive: [bool; 3],
        now: u64,
    }

    impl Trio {
        fn new() -> Trio {
            let mk = |id: u16| {
                let mut cfg = Config::new(NodeId(id), Incarnation(1));
                cfg.voters = [NodeId(1), NodeId(2), NodeId(3)].into_iter().collect();
                cfg.witness = id == 3;
                Membership::<4>::new(cfg, ms(0))
            };
            Trio {
                nodes: [mk(1), mk(2), mk(3)],
                up: [[true; 3]; 3],
                alive: [true; 3],
                now: 0,
            }
        }

        fn cut(&mut self, a: usize, b: usize, up: bool) {
            self.up[a][b] = up;
            self.up[b][a] = up;
        }

        /// Runs `ms` of virtual time in 1 ms steps.
        fn run(&mut self, ms_: u64) {
            for _ in 0..ms_ {
                self.now += 1;
                let now = ms(self.now);
                for i in 0..3 {
                    if !self.alive[i] {
                        continue;
                    }
                    if self.nodes[i].poll_timeout().is_some_and(|t| t <= now) {
                        self.nodes[i].handle_timeout(now);
                    }
                    if let Some(h) = self.nodes[i].poll_heartbeat(now) {
                        for j in 0..3 {
                            if j != i && self.up[i][j] && self.alive[j] {
                                let from = NodeId(i as u16 + 1);
                                self.nodes[j].handle_heartbeat(now, from, Incarnation(1), &h);
                            }
                        }
                    }
                }
            }
        }

        fn isolated(&self) -> [bool; 3] {
            [0, 1, 2].map(|i| self.nodes[i].isolated())
        }

        fn leaders(&self) -> [Option<NodeId>; 3] {
            [0, 1, 2].map(|i| self.nodes[i].leader())
        }
    }

    /// A and B both see the witness but not each other: without the contradiction rule both
    /// would keep a majority and both lead. The witness names A, so B steps down (isolated)
    /// within its allowance, and comes back as soon as the link heals.
    #[test]
    fn non_transitive_partition_leaves_one_side_serving() {
        let mut t = Trio::new();
        t.run(1_000);
        let a = Some(NodeId(1));
        assert_eq!(t.leaders(), [a, a, a]);
        assert_eq!(t.isolated(), [false; 3]);
        t.cut(0, 1, false);
        // B declares A dead after 200 ms (lan), then W still names A for 3 x 200 ms.
        t.run(200 + 3 * 200 + 50);
        assert_eq!(t.isolated(), [false, true, false], "{:?}", t.leaders());
        assert_eq!(t.leaders(), [a, None, a]);
        let ev = events(&mut t.nodes[1]);
        assert!(ev.contains(&Event::QuorumLost), "{ev:?}");
        // And it stays that way.
        t.run(2_000);
        assert_eq!(t.isolated(), [false, true, false]);
        assert_eq!(t.nodes[0].stats().leader_changes, 1, "A led throughout");
        t.cut(0, 1, true);
        t.run(100);
        assert_eq!(t.isolated(), [false; 3]);
        assert_eq!(t.leaders(), [a, a, a]);
    }

    /// A real failover must not isolate the survivor on its way: B and W see A die within
    /// about one detection span of each other.
    #[test]
    fn failover_never_isolates_the_survivor() {
        let mut t = Trio::new();
        t.run(1_000);
        events(&mut t.nodes[1]);
        t.alive[0] = false;
        t.run(1_000);
        let b = Some(NodeId(2));
        assert_eq!(t.leaders()[1..], [b, b]);
        assert_eq!(t.isolated()[1..], [false, false]);
        let ev = events(&mut t.nodes[1]);
        assert!(!ev.contains(&Event::QuorumLost), "{ev:?}");
    }

    /// The witness itself is slow to notice (it hears A 150 ms longer than B does, e.g. a
    /// congested link): still inside the allowance, no isolation.
    #[test]
    fn a_witness_that_notices_late_does_not_isolate_anyone() {
        let mut t = Trio::new();
        t.run(1_000);
        events(&mut t.nodes[1]);
        t.cut(0, 1, false);
        t.run(150);
        t.alive[0] = false;
        t.run(1_000);
        assert_eq!(t.isolated()[1..], [false, false]);
        let ev = events(&mut t.nodes[1]);
        assert!(!ev.contains(&Event::QuorumLost), "{ev:?}");
        assert_eq!(t.leaders()[1..], [Some(NodeId(2)); 2]);
    }

    #[test]
    fn event_queue_overflow_is_counted_never_panics() {
        let mut m = node(1);
        churn(&mut m);
        assert!(m.stats().events_dropped > 0);
        let ev = events(&mut m);
        assert_eq!(ev.len(), EVENT_QUEUE);
        assert_eq!(ev.last(), Some(&Event::Overflow));
    }

    #[test]
    fn event_queue_size_is_the_callers() {
        let mut m: Membership<4, 8> =
            Membership::new(Config::new(NodeId(1), Incarnation(1)), ms(0));
        m.handle_timeout(ms(1000));
        churn(&mut m);
        let ev = events(&mut m);
        assert_eq!(ev.len(), 8);
        assert_eq!(ev.last(), Some(&Event::Overflow));
    }

    /// Far more events than a default queue holds: node 2 joins, leaves and rejoins 200 times.
    fn churn<const E: usize>(m: &mut Membership<4, E>) {
        for i in 0..200u64 {
            m.handle_heartbeat(ms(1000 + i), NodeId(2), Incarnation(1), &hb(1, None, 0));
            m.handle_leave(ms(1000 + i), NodeId(2), Incarnation(1));
            m.handle_heartbeat(
                ms(1000 + i),
                NodeId(2),
                Incarnation(2 + i as u32),
                &hb(1, None, 0),
            );
        }
    }
}
