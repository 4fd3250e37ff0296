//! Floating VIPs on this host: carries out [`Vips`]' decisions on the interface
//! ([`IfAddrs`]), repeats the gratuitous ARP a few times after each acquisition, and counts
//! moves for `/metrics`.
//!
//! A VIP that a live peer may still hold ([`Action::ProbeAndAcquire`]) is added only after
//! a probe round finds no other host answering for it ([`Probing`]; the packets are
//! [`IfAddrs::probe`]'s): while one answers, the node waits and probes again.
//!
//! The loop calls [`Floating::update`] once per turn with the membership view; it never
//! blocks longer than one netlink round trip per changed VIP (microseconds).

use std::net::IpAddr;
use std::time::Duration;

use tandem_core::frame::{Role as WireRole, StateFlags};
use tandem_core::membership::{Member, MemberState};
use tandem_core::{Instant, NodeId};
use tracing::{info, warn};

use crate::vip::ifaddr::{IfAddrError, IfAddrs};
use crate::vip::{Action, PeerHealth, VipSpec, Vips};

/// Announcements (gratuitous ARP, or unsolicited neighbour advertisement for IPv6) after an
/// acquisition, at these offsets: the first at once, the rest in case one is lost.
const ANNOUNCE_AT: [Duration; 4] = [
    Duration::ZERO,
    Duration::from_millis(5),
    Duration::from_millis(50),
    Duration::from_millis(500),
];

/// A VIP changed hands on this node (for hooks and logs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VipEvent {
    pub vip: VipSpec,
    pub acquired: bool,
}

impl VipEvent {
    /// The hook's `TANDEM_EVENT`.
    pub fn name(&self) -> &'static str {
        if self.acquired {
            "vip_acquired"
        } else {
            "vip_released"
        }
    }
}

/// `/metrics` counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VipStats {
    pub acquired: u64,
    pub released: u64,
    /// Address changes the kernel refused (retried next turn).
    pub failed: u64,
    /// Announcements and probes the kernel refused to send (an announcement is retried a
    /// millisecond later, at most [`ANNOUNCE_RETRIES`] times per acquisition; a probe
    /// until it goes out).
    pub announce_failed: u64,
    /// Probes sent before taking a VIP a live peer may hold.
    pub probes: u64,
    /// Probe rounds another host answered: the VIP was still on it, the node waited.
    pub probe_answers: u64,
}

/// Probes per round: a second one in case the first or its answer is lost.
const PROBES: u8 = 2;
/// Between the probes of a round.
const PROBE_SPACING: Duration = Duration::from_millis(2);
/// How long after a round's last probe went out an answer is waited for: none by then,
/// and the address is taken (a round is 6 ms). An answer comes from the holder's kernel
/// within microseconds on a quiet link; this leaves milliseconds for a loaded host's
/// softirq. Counted from the actual send, so a late turn cannot shorten it.
const PROBE_WAIT: Duration = Duration::from_millis(4);
/// After an answer, the next round starts this much later for the first
/// [`PROBE_FAST_ROUNDS`] answers (a hand-back's holder releases within milliseconds),
/// then every [`PROBE_SLOW_RETRY`] (a host that keeps answering is not the hand-back case:
/// a one-way partition, or a foreign host on the address).
const PROBE_RETRY: Duration = Duration::from_millis(2);
const PROBE_FAST_ROUNDS: u32 = 16;
const PROBE_SLOW_RETRY: Duration = Duration::from_millis(100);
/// An answer for this long is logged as a warning (once per acquisition).
const PROBE_WARN_AFTER: Duration = Duration::from_secs(1);

/// Where a probe for one VIP stands (pure: [`Floating`] does the sending and reading).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Probing {
    /// When the next probe is due, or (all of this round's sent) the round's window ends.
    next: Instant,
    /// Probes of this round sent.
    sent: u8,
    /// Rounds another host answered.
    answers: u32,
    /// When the first round began.
    since: Instant,
}

/// What [`Probing::step`] says to do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ProbeStep {
    /// Send a probe (then [`Probing::sent`] or [`Probing::not_sent`]).
    Send,
    /// Nothing before [`Probing::due`].
    Wait,
    /// Another host answered: it still holds the address; a new round starts later.
    Answered,
    /// A whole round without an answer: take the address.
    Take,
}

impl Probing {
    fn new(now: Instant) -> Probing {
        Probing {
            next: now,
            sent: 0,
            answers: 0,
            since: now,
        }
    }

    fn due(&self) -> Instant {
        self.next
    }

    /// `answered`: another host answered for the address since the last step.
    fn step(&mut self, now: Instant, answered: bool) -> ProbeStep {
        if answered {
            self.answers = self.answers.saturating_add(1);
            let pause = if self.answers <= PROBE_FAST_ROUNDS {
                PROBE_RETRY
            } else {
                PROBE_SLOW_RETRY
            };
            self.next = now + pause;
            self.sent = 0;
            return ProbeStep::Answered;
        }
        if now < self.next {
            ProbeStep::Wait
        } else if self.sent < PROBES {
            ProbeStep::Send
        } else {
            ProbeStep::Take
        }
    }

    /// The probe [`ProbeStep::Send`] asked for went out at `now`.
    fn sent(&mut self, now: Instant) {
        self.sent += 1;
        self.next = now
            + if self.sent < PROBES {
                PROBE_SPACING
            } else {
                PROBE_WAIT
            };
    }

    /// It did not: the round starts over [`ANNOUNCE_RETRY`] later.
    fn not_sent(&mut self, now: Instant) {
        self.next = now + ANNOUNCE_RETRY;
        self.sent = 0;
    }
}

/// An acquisition waiting for its probe.
#[derive(Debug)]
struct Pending {
    vip: VipSpec,
    probing: Probing,
    warned: bool,
}

/// Extra tries of failed announcements per acquisition (a full socket buffer, say).
const ANNOUNCE_RETRIES: u8 = 3;
/// How long after a failed announcement it is tried again.
const ANNOUNCE_RETRY: Duration = Duration::from_millis(1);

/// The announcements still due for one acquired VIP.
#[derive(Debug, Clone, Copy)]
struct Announce {
    vip: VipSpec,
    /// When it was acquired (plus [`ANNOUNCE_RETRY`] per failed try): [`ANNOUNCE_AT`] counts
    /// from here.
    from: Instant,
    /// Which of [`ANNOUNCE_AT`] is next.
    step: usize,
    /// Failed tries retried so far.
    retries: u8,
}

impl Announce {
    fn due(&self) -> Option<Instant> {
        ANNOUNCE_AT.get(self.step).map(|off| self.from + *off)
    }
}

#[derive(Debug)]
pub struct Floating {
    vips: Vips,
    kernel: IfAddrs,
    announce: Vec<Announce>,
    /// Acquisitions waiting for their probe.
    pending: Vec<Pending>,
    /// Addresses another host answered for in this turn (read once per turn for every
    /// pending probe).
    answered: Vec<IpAddr>,
    peers: Vec<PeerHealth>,
    actions: Vec<Action>,
    stats: VipStats,
    /// After an address change failed, no acquisition is tried before then (the loop turns
    /// thousands of times a second; a refusing kernel must not get a call and a log line
    /// each time). Releases are always tried.
    retry_at: Option<Instant>,
}

/// What the floating VIPs need from the configuration
/// ([`Config::floating_config`](crate::config::Config::floating_config)).
#[derive(Debug, Clone)]
pub struct FloatingConfig {
    pub node_id: NodeId,
    /// The interface the addresses go on.
    pub interface: String,
    pub vips: Vec<VipSpec>,
    pub vip_hold: Duration,
    /// Empty: every member votes (no quorum, so no fade; see `Vips::new`).
    pub voters: Vec<NodeId>,
}

/// How long after a failed address change acquisitions pause.
const RETRY: Duration = Duration::from_millis(100);

impl Floating {
    /// `None` when no VIP is configured. Removes every configured VIP from the interface:
    /// this node holds none yet, and a kill -9 leaves stale ones behind.
    /// `gap`: see [`crate::vip`] (the extra wait of a node taking its own VIP back).
    pub fn open(cfg: &FloatingConfig, gap: Duration) -> Result<Option<Floating>, IfAddrError> {
        if cfg.vips.is_empty() {
            return Ok(None);
        }
        let v4 = cfg.vips.iter().any(|v| v.addr.is_ipv4());
        let v6 = cfg.vips.iter().any(|v| v.addr.is_ipv6());
        let mut kernel = IfAddrs::open(&cfg.interface, v4, v6)?;
        // Only a quorum makes the other side of a partition release (see `Vips::new`).
        let fade = if cfg.voters.is_empty() {
            Duration::ZERO
        } else {
            gap
        };
        for v in &cfg.vips {
            match kernel.remove(v) {
                Ok(true) => warn!(vip = %v.cidr(), "removed a stale VIP left by an earlier run"),
                Ok(false) => {}
                Err(e) => return Err(IfAddrError::Io(format!("--vip {v}: remove: {e}"))),
            }
        }
        info!(vips = cfg.vips.len(), interface = %cfg.interface, hold_ms = cfg.vip_hold.as_millis() as u64, "floating VIPs configured");
        Ok(Some(Floating {
            vips: Vips::new(cfg.node_id, cfg.vips.clone(), cfg.vip_hold, gap, fade),
            kernel,
            announce: Vec::new(),
            pending: Vec::new(),
            answered: Vec::new(),
            peers: Vec::new(),
            actions: Vec::new(),
            stats: VipStats::default(),
            retry_at: None,
        }))
    }

    /// One turn: `me_healthy` (alive, synced, quorum, not joining) and the membership table.
    pub fn update<'a>(
        &mut self,
        now: Instant,
        me_healthy: bool,
        members: impl Iterator<Item = &'a Member>,
        events: &mut Vec<VipEvent>,
    ) {
        // A past pause is over (and must not stay a deadline: the loop would spin).
        self.retry_at = self.retry_at.filter(|t| now < *t);
        self.peers.clear();
        self.peers.extend(members.map(|m| PeerHealth {
            node: m.node,
            healthy: peer_healthy(m),
            left: m.state == MemberState::Left,
            coming: peer_coming(m),
            alive: peer_alive(m),
        }));
        self.actions.clear();
        self.vips
            .update(now, me_healthy, &self.peers, &mut self.actions);
        // A probe nobody asks for any more (the view changed) ends here.
        let actions = &self.actions;
        self.pending
            .retain(|p| actions.contains(&Action::ProbeAndAcquire(p.vip)));
        self.answered.clear();
        if !self.pending.is_empty() {
            self.kernel.answers(&mut self.answered);
        }
        self.apply(now, events);
    }

    /// Releases every VIP held (SIGTERM, before the Leave goes out).
    pub fn release_all(&mut self, now: Instant, events: &mut Vec<VipEvent>) {
        self.actions.clear();
        self.pending.clear();
        self.vips.release_all(&mut self.actions);
        self.apply(now, events);
    }

    fn apply(&mut self, now: Instant, events: &mut Vec<VipEvent>) {
        for i in 0..self.actions.len() {
            let action = self.actions[i];
            let acquired = !matches!(action, Action::Release(_));
            if acquired && self.retry_at.is_some_and(|t| now < t) {
                // Not held; `update` asks again once the pause is over.
                self.vips.done(action, false);
                continue;
            }
            if let Action::ProbeAndAcquire(v) = action {
                if !self.probe(now, v) {
                    // Not held yet; `update` asks again each turn until the probe is done.
                    self.vips.done(action, false);
                    continue;
                }
            }
            let (vip, result) = match action {
                Action::Acquire(v) | Action::ProbeAndAcquire(v) => (v, self.kernel.add(&v)),
                Action::Release(v) => (v, self.kernel.remove(&v)),
            };
            match result {
                Ok(_) => {
                    self.vips.done(action, true);
                    self.announce.retain(|a| a.vip != vip);
                    if acquired {
                        self.stats.acquired += 1;
                        self.announce.push(Announce {
                            vip,
                            from: now,
                            step: 0,
                            retries: 0,
                        });
                        info!(vip = %vip.cidr(), "VIP acquired");
                    } else {
                        self.stats.released += 1;
                        info!(vip = %vip.cidr(), "VIP released");
                    }
                    events.push(VipEvent { vip, acquired });
                }
                Err(e) => {
                    self.vips.done(action, false);
                    self.stats.failed += 1;
                    self.retry_at = Some(now + RETRY);
                    warn!(vip = %vip.cidr(), acquired, error = %e, "VIP address change failed");
                }
            }
        }
        self.handle_timeout(now);
    }

    /// Carries `vip`'s probe on (starting it if new): whether the address may be taken now.
    fn probe(&mut self, now: Instant, vip: VipSpec) -> bool {
        let i = match self.pending.iter().position(|p| p.vip == vip) {
            Some(i) => i,
            None => {
                if self.pending.is_empty() {
                    // What queued while no probe ran is stale.
                    self.kernel.drain_answers();
                }
                self.pending.push(Pending {
                    vip,
                    probing: Probing::new(now),
                    warned: false,
                });
                self.pending.len() - 1
            }
        };
        let answered = self.answered.contains(&vip.addr);
        let p = &mut self.pending[i];
        // Bounded: at most one probe per call, and `due` moves on after each.
        match p.probing.step(now, answered) {
            ProbeStep::Wait => false,
            ProbeStep::Send => {
                match self.kernel.probe(&vip) {
                    Ok(()) => {
                        p.probing.sent(now);
                        self.stats.probes += 1;
                    }
                    Err(e) => {
                        p.probing.not_sent(now);
                        self.stats.announce_failed += 1;
                        warn!(vip = %vip.cidr(), error = %e, "VIP probe not sent");
                    }
                }
                false
            }
            ProbeStep::Answered => {
                self.stats.probe_answers += 1;
                let waited = now.saturating_duration_since(p.probing.since);
                if p.probing.answers == 1 {
                    info!(vip = %vip.cidr(), "VIP still answered by another host; waiting for it to release");
                } else if waited >= PROBE_WARN_AFTER && !p.warned {
                    p.warned = true;
                    warn!(vip = %vip.cidr(), waited_ms = waited.as_millis() as u64, answers = p.probing.answers, "VIP still answered by another host; not taking it while it answers");
                }
                false
            }
            ProbeStep::Take => {
                let p = self.pending.swap_remove(i);
                if p.probing.answers > 0 {
                    let waited = now.saturating_duration_since(p.probing.since);
                    info!(vip = %vip.cidr(), waited_ms = waited.as_millis() as u64, answers = p.probing.answers, "VIP no longer answered by another host");
                }
                true
            }
        }
    }

    /// Sends the announcements due by `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        // Bounded: each entry sends at most once per call and ends after ANNOUNCE_AT.len()
        // sends and ANNOUNCE_RETRIES failures.
        for a in self.announce.iter_mut() {
            if a.due().is_some_and(|t| t <= now) {
                match self.kernel.announce(&a.vip) {
                    Ok(()) => a.step += 1,
                    Err(e) => {
                        self.stats.announce_failed += 1;
                        warn!(vip = %a.vip.cidr(), error = %e, "VIP announcement not sent");
                        if a.retries < ANNOUNCE_RETRIES {
                            a.retries += 1;
                            a.from = a.from + ANNOUNCE_RETRY;
                        } else {
                            a.step += 1;
                        }
                    }
                }
            }
        }
        self.announce.retain(|a| a.step < ANNOUNCE_AT.len());
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        let announce = self.announce.iter().filter_map(Announce::due).min();
        let probe = self.pending.iter().map(|p| p.probing.due()).min();
        [announce, probe, self.vips.poll_timeout(), self.retry_at]
            .into_iter()
            .flatten()
            .min()
    }

    // Nothing reads these yet: `/metrics` does not export VIP moves.
    #[allow(dead_code)]
    pub fn stats(&self) -> VipStats {
        self.stats
    }

    /// Each VIP, its owner in this node's view, and whether this node holds it.
    pub fn owners(&self) -> impl Iterator<Item = (VipSpec, Option<NodeId>, bool)> + '_ {
        self.vips
            .owners()
            .enumerate()
            .map(|(i, (s, o))| (*s, o, self.vips.holds(i)))
    }

    /// Appends the VIP counters in Prometheus text format.
    pub fn render_metrics(&self, out: &mut String) {
        use std::fmt::Write;
        let held = (0..self.vips.specs().len())
            .filter(|i| self.vips.holds(*i))
            .count();
        for (name, help, kind, v) in [
            (
                "tandem_vip_acquired_total",
                "VIPs this node added to its interface.",
                "counter",
                self.stats.acquired,
            ),
            (
                "tandem_vip_released_total",
                "VIPs this node removed from its interface.",
                "counter",
                self.stats.released,
            ),
            (
                "tandem_vip_failures_total",
                "VIP address changes the kernel refused (retried).",
                "counter",
                self.stats.failed,
            ),
            (
                "tandem_vip_announce_failures_total",
                "VIP announcements (gratuitous ARP, neighbour advertisement) and probes not sent (retried).",
                "counter",
                self.stats.announce_failed,
            ),
            (
                "tandem_vip_probes_total",
                "Probes (ARP, duplicate address detection) sent before taking a VIP a live peer may hold.",
                "counter",
                self.stats.probes,
            ),
            (
                "tandem_vip_probe_answers_total",
                "Probe rounds another host answered (it still held the VIP; this node waited).",
                "counter",
                self.stats.probe_answers,
            ),
            (
                "tandem_vips_held",
                "VIPs on this node's interface now.",
                "gauge",
                held as u64,
            ),
        ] {
            // Writing to a String cannot fail.
            let _ = write!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}\n"
            );
        }
    }
}

/// A live, healthy data node: alive or suspect (not yet dead: it may still hold its VIPs),
/// not a witness, and advertising none of joining, syncing, draining, isolated.
fn peer_healthy(m: &Member) -> bool {
    let unhealthy =
        StateFlags::JOINING | StateFlags::SYNCING | StateFlags::DRAINING | StateFlags::ISOLATED;
    matches!(m.state, MemberState::Alive | MemberState::Suspect)
        && m.role != WireRole::Witness
        && m.flags.0 & unhealthy == 0
}

/// A data node not declared dead, whatever it advertises: its host may hold a VIP.
fn peer_alive(m: &Member) -> bool {
    matches!(m.state, MemberState::Alive | MemberState::Suspect) && m.role != WireRole::Witness
}

/// A live data node still joining or syncing (and neither draining nor isolated): it will
/// be healthy in a moment.
fn peer_coming(m: &Member) -> bool {
    let coming = StateFlags::JOINING | StateFlags::SYNCING;
    let going = StateFlags::DRAINING | StateFlags::ISOLATED;
    matches!(m.state, MemberState::Alive | MemberState::Suspect)
        && m.role != WireRole::Witness
        && m.flags.0 & coming != 0
        && m.flags.0 & going == 0
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // In tests a failed unwrap is a failed test.
mod tests {
    use super::*;

    fn at(ms: u64) -> Instant {
        Instant::ZERO + Duration::from_millis(ms)
    }

    /// Drives a probe from `start`, a turn every millisecond, `answering` saying whether
    /// another host answers at that time; returns when it was taken and the probes sent.
    fn run(start: u64, answering: impl Fn(u64) -> bool) -> (Option<u64>, u32) {
        let mut p = Probing::new(at(start));
        let mut sent = 0;
        // An answer is heard at the turn after the probe it answers.
        let mut answer = false;
        for ms in start..start + 3000 {
            let heard = std::mem::take(&mut answer);
            match p.step(at(ms), heard) {
                ProbeStep::Send => {
                    p.sent(at(ms));
                    sent += 1;
                    answer = answering(ms);
                }
                ProbeStep::Take => return (Some(ms), sent),
                ProbeStep::Wait | ProbeStep::Answered => {}
            }
            assert!(p.due() >= at(ms), "due in the past at {ms}");
        }
        (None, sent)
    }

    #[test]
    fn probe_takes_after_a_quiet_window_and_waits_while_answered() {
        // Nobody answers: two probes, taken at the end of the window.
        let round = (PROBE_SPACING + PROBE_WAIT).as_millis() as u64;
        let (taken, sent) = run(100, |_| false);
        assert_eq!(taken, Some(100 + round));
        assert_eq!(sent, u32::from(PROBES));
        // The holder answers until it releases at 120 ms: never taken before then, and
        // taken a window after the first quiet round.
        let (taken, sent) = run(100, |ms| ms < 120);
        let taken = taken.unwrap();
        assert!(taken >= 120 + round, "{taken}");
        assert!(taken <= 120 + 2 * round, "{taken}");
        assert!(sent > u32::from(PROBES), "{sent}");
        // A host that keeps answering: never taken, and probed at a bounded rate (the
        // fast rounds, then one every PROBE_SLOW_RETRY).
        let (taken, sent) = run(0, |_| true);
        assert_eq!(taken, None);
        let slow = 3000 / PROBE_SLOW_RETRY.as_millis() as u32;
        assert!(sent <= PROBE_FAST_ROUNDS + slow + 1, "{sent} probes in 3 s");
    }

    #[test]
    fn probe_waits_from_the_actual_sends_and_a_failed_send_starts_over() {
        let mut p = Probing::new(at(0));
        assert_eq!(p.step(at(0), false), ProbeStep::Send);
        p.not_sent(at(0));
        assert_eq!(p.due(), at(0) + ANNOUNCE_RETRY);
        assert_eq!(p.step(at(0), false), ProbeStep::Wait);
        // A late turn (10 ms): the probes and the wait count from when they went out, so
        // the window never closes on a probe just sent.
        assert_eq!(p.step(at(10), false), ProbeStep::Send);
        p.sent(at(10));
        assert_eq!(p.step(at(11), false), ProbeStep::Wait);
        assert_eq!(p.step(at(20), false), ProbeStep::Send);
        p.sent(at(20));
        assert_eq!(p.step(at(23), false), ProbeStep::Wait);
        assert_eq!(p.step(at(24), false), ProbeStep::Take);
    }
}
