//! Floating VIPs on this host: carries out [`Vips`]' decisions on the interface
//! ([`IfAddrs`]), repeats the gratuitous ARP a few times after each acquisition, and counts
//! moves for `/metrics`.
//!
//! The loop calls [`Floating::update`] once per turn with the membership view; it never
//! blocks longer than one netlink round trip per changed VIP (microseconds).

use std::time::Duration;

use tandem_core::frame::{Role as WireRole, StateFlags};
use tandem_core::membership::{Member, MemberState};
use tandem_core::{Instant, NodeId};
use tracing::{info, warn};

use crate::config::Config;
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
    /// Announcements the kernel refused to send (each retried a millisecond later, at most
    /// [`ANNOUNCE_RETRIES`] times per acquisition).
    pub announce_failed: u64,
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
    peers: Vec<PeerHealth>,
    actions: Vec<Action>,
    stats: VipStats,
    /// After an address change failed, no acquisition is tried before then (the loop turns
    /// thousands of times a second; a refusing kernel must not get a call and a log line
    /// each time). Releases are always tried.
    retry_at: Option<Instant>,
}

/// How long after a failed address change acquisitions pause.
const RETRY: Duration = Duration::from_millis(100);

impl Floating {
    /// `None` when no VIP is configured. Removes every configured VIP from the interface:
    /// this node holds none yet, and a kill -9 leaves stale ones behind.
    /// `gap`: see [`crate::vip`] (the extra wait of a node taking its own VIP back).
    pub fn open(cfg: &Config, gap: Duration) -> Result<Option<Floating>, IfAddrError> {
        if cfg.vips.is_empty() {
            return Ok(None);
        }
        let v6 = cfg.vips.iter().any(|v| v.addr.is_ipv6());
        let mut kernel = IfAddrs::open(&cfg.interface, v6)?;
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
        }));
        self.actions.clear();
        self.vips
            .update(now, me_healthy, &self.peers, &mut self.actions);
        self.apply(now, events);
    }

    /// Releases every VIP held (SIGTERM, before the Leave goes out).
    pub fn release_all(&mut self, now: Instant, events: &mut Vec<VipEvent>) {
        self.actions.clear();
        self.vips.release_all(&mut self.actions);
        self.apply(now, events);
    }

    fn apply(&mut self, now: Instant, events: &mut Vec<VipEvent>) {
        for i in 0..self.actions.len() {
            let action = self.actions[i];
            if matches!(action, Action::Acquire(_)) && self.retry_at.is_some_and(|t| now < t) {
                // Not held; `update` asks again once the pause is over.
                self.vips.done(action, false);
                continue;
            }
            let (vip, result) = match action {
                Action::Acquire(v) => (v, self.kernel.add(&v)),
                Action::Release(v) => (v, self.kernel.remove(&v)),
            };
            let acquired = matches!(action, Action::Acquire(_));
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
        [announce, self.vips.poll_timeout(), self.retry_at]
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
                "VIP announcements (gratuitous ARP, neighbour advertisement) not sent (retried).",
                "counter",
                self.stats.announce_failed,
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
