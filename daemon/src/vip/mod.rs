//! Floating virtual IPs: which node holds each `--vip`, decided from the membership view.
//!
//! Pure (no sockets, no clock): the event loop passes `now` and the view each turn
//! ([`Vips::update`]) and carries out the [`Action`]s through [`crate::vip::ifaddr`].
//!
//! # Who holds a VIP
//!
//! Candidates are the live, healthy data nodes in this node's view: alive or suspect (a
//! suspect may still hold it, so nobody takes over before it is declared dead), not a
//! witness, not joining, syncing, draining or isolated. A candidate is *settled* once this
//! node has seen it healthy for `--vip-hold`; this node itself needs `hold + gap` (see
//! below). A peer already healthy when this node first hears it, while this node itself is
//! not settled, counts as settled at once: it was there first. The owner of a VIP is, in
//! order:
//!
//! 1. its preferred node, if that is a settled candidate;
//! 2. else the lowest-id settled candidate other than the preferred node;
//! 3. else the only candidate, if there is exactly one (alone at start, or the last one);
//!    with quorum (`--voters`), this node takes it so unsettled only while every peer it
//!    knows is healthy or left: regaining quorum after a partition, it may not have heard
//!    the live peer that holds it yet;
//! 4. else nobody: two unsettled candidates (a cold start together) wait for the hold rather
//!    than both claim it.
//!
//! Cold start: a node does not *take over* (acquire, as opposed to keep) a VIP preferred by
//! another node that is on its way: seen joining or syncing, or a candidate not yet settled.
//! Two nodes started together each see the other joining for a detection span after they
//! are healthy themselves, longer than `gap`: without this each would settle itself first
//! and take both VIPs, by rule 3 and then rule 2, for a few milliseconds.
//!
//! A node without quorum is not a candidate, so it releases everything. With `--voters`, a
//! peer declared dead (not one that left) still counts for `gap` more: across a partition
//! it may be alive and learn it lost quorum a heartbeat later than this side declares it
//! dead, and must have released before this side adds the address.
//!
//! # Handing back
//!
//! A returning preferred node P is a candidate but not settled, so the survivor S keeps the
//! VIP (rule 2). S sees P healthy at most one heartbeat interval (plus the network) after P
//! does, and releases `hold` later; P takes it `hold + gap` after it became healthy, `gap`
//! being two heartbeat intervals plus a millisecond. So when the link is symmetric S has
//! released before P adds the address.
//!
//! The gap rule alone cannot cover an uneven heal: when P hears S well before S hears P
//! (a partition healing one direction first: 14-16 ms in the namespace tests, any amount on
//! a real network), S releases that much later and the two overlapped, an ARP/ND conflict.
//! So a VIP that a live peer may still hold is acquired only after a probe of the link
//! ([`Action::ProbeAndAcquire`], carried out in `floating` through `ifaddr`): IPv4, an ARP
//! request for the VIP from sender 0.0.0.0 (RFC 5227); IPv6, a duplicate address detection
//! solicitation from `::` to the VIP's solicited-node group (RFC 4862). The kernel of any
//! host that has the address answers (an ARP reply, a neighbour advertisement); while one
//! does, P waits and probes again (every 2 ms, then every 100 ms after 16 answers, counted
//! in `tandem_vip_probe_answers_total` and logged), and adds the address only after a round
//! (two probes, 6 ms) nobody answers. A hand-back therefore costs that window plus the
//! probing on top of the gap; a planned move, not a failover.
//!
//! When to probe ([`Vips::update`]): the VIP's owner in this node's previous view is a peer
//! still alive (not declared dead: alive or suspect, whatever it advertises), or no peer
//! was named and some peer is alive (a cold start, a peer that just reappeared). A VIP
//! whose owner was declared dead or left is taken at once: failover and SIGTERM do not
//! wait, and a host that died with the address is not asked (it cannot answer; a process
//! killed on a live host leaves its address behind, which would answer for ever).
//!
//! Why a probe rather than the holder announcing what it holds in its heartbeats (a wire
//! change): the probe asks the ground truth, the kernels of the hosts on the link, at the
//! moment of taking, and answers for any holder, a stale address or a foreign host as much
//! as a peer whose heartbeats P has not heard yet (the uneven heal is exactly that: P's view
//! of S is fresh, S's of P is not, and a heartbeat saying "I hold it" races the release as
//! the view does). An announcement says what the holder's daemon believed when it sent the
//! heartbeat, arrives one interval late at best, and only from nodes P can hear; it would
//! also grow every heartbeat and the embedded node. The probe's limits: it needs layer-2
//! adjacency (a VIP is on one link anyway) and a holder's kernel that answers (Linux does
//! unless `arp_ignore` is 8; a holder set so would go unseen).

pub mod floating;
pub mod ifaddr;

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;
use std::time::Duration;

use tandem_core::{Instant, NodeId};

/// Default `--vip-hold`.
pub const DEFAULT_HOLD: Duration = Duration::from_secs(1);

/// One `--vip ADDR/PREFIX@NODE`, IPv4 or IPv6.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VipSpec {
    pub addr: IpAddr,
    pub prefix: u8,
    pub prefer: NodeId,
}

impl VipSpec {
    /// Checks the address is one a host can own: unicast, prefix 1..=32 (IPv4) or 1..=128
    /// (IPv6), and for IPv6 not link-local (a VIP must be reachable beyond one link's
    /// scope id, and every interface has its own fe80:: address already).
    pub fn validate(&self) -> Result<(), String> {
        match self.addr {
            IpAddr::V4(a) => {
                if !(1..=32).contains(&self.prefix) {
                    return Err(format!("--vip {self}: prefix must be 1..=32"));
                }
                if a.is_unspecified() || a.is_multicast() || a.is_broadcast() || a.is_loopback() {
                    return Err(format!("--vip {self}: not a unicast host address"));
                }
            }
            IpAddr::V6(a) => {
                if !(1..=128).contains(&self.prefix) {
                    return Err(format!("--vip {self}: prefix must be 1..=128"));
                }
                if a.is_unspecified() || a.is_multicast() || a.is_loopback() {
                    return Err(format!("--vip {self}: not a unicast host address"));
                }
                if a.segments()[0] & 0xffc0 == 0xfe80 {
                    return Err(format!("--vip {self}: link-local (fe80::/10) cannot float"));
                }
                if a.to_ipv4_mapped().is_some() {
                    return Err(format!(
                        "--vip {self}: an IPv4-mapped address; give it as IPv4"
                    ));
                }
            }
        }
        if self.prefer.0 == 0 {
            return Err(format!("--vip {self}: node id 0 is reserved"));
        }
        Ok(())
    }

    /// The address as `ADDR/PREFIX` (the form `ip addr` prints).
    pub fn cidr(&self) -> String {
        format!("{}/{}", self.addr, self.prefix)
    }
}

impl fmt::Display for VipSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}@{}", self.addr, self.prefix, self.prefer.0)
    }
}

impl FromStr for VipSpec {
    type Err = String;

    /// `ADDR/PREFIX@NODE`, e.g. `198.18.0.100/24@1` or `fd00:7a6e::100/64@1`.
    fn from_str(s: &str) -> Result<VipSpec, String> {
        let bad =
            || format!("--vip {s}: not ADDR/PREFIX@NODE (e.g. 198.18.0.100/24@1, fd00::100/64@1)");
        let (cidr, node) = s.trim().rsplit_once('@').ok_or_else(bad)?;
        let prefer = NodeId(node.parse().map_err(|_| bad())?);
        let (addr, prefix) = parse_cidr(cidr).ok_or_else(bad)?;
        Ok(VipSpec {
            addr,
            prefix,
            prefer,
        })
    }
}

/// `ADDR/PREFIX`; a bare address is a host route (/32, or /128 for IPv6).
pub fn parse_cidr(s: &str) -> Option<(IpAddr, u8)> {
    match s.split_once('/') {
        Some((a, p)) => Some((a.parse().ok()?, p.parse().ok()?)),
        None => {
            let a: IpAddr = s.parse().ok()?;
            Some((a, if a.is_ipv6() { 128 } else { 32 }))
        }
    }
}

/// A peer as this node sees it now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerHealth {
    pub node: NodeId,
    /// A live, healthy data node (see the module docs).
    pub healthy: bool,
    /// Left gracefully: it released its VIPs before saying so, nothing to wait for.
    pub left: bool,
    /// A live data node on its way to healthy (joining or syncing): it becomes a candidate
    /// in a moment, so nobody takes its VIPs over meanwhile (see the module docs).
    pub coming: bool,
    /// A data node not declared dead (alive or suspect, whatever it advertises): its host
    /// may hold a VIP, so taking one it may hold waits for a probe (see the module docs).
    pub alive: bool,
}

/// What to do with a VIP's address on this host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Add the address and announce it (gratuitous ARP, IPv6 neighbour advertisement).
    Acquire(VipSpec),
    /// The same, but only once a probe of the link finds no other host answering for the
    /// address: a live peer may still hold it (see the module docs, "Handing back").
    ProbeAndAcquire(VipSpec),
    /// Remove the address.
    Release(VipSpec),
}

/// Health history of one peer.
#[derive(Debug, Clone, Copy)]
struct Track {
    node: NodeId,
    /// Healthy since (as this node saw it); `None` while unhealthy.
    since: Option<Instant>,
    /// Healthy when first heard while this node was not settled: settled from the start.
    senior: bool,
    /// Lost (not left) and still counted as a candidate until then: see [`Vips::new`].
    fading: Option<Instant>,
}

/// The VIPs of this node, what it holds and how long each candidate has been healthy.
#[derive(Debug)]
pub struct Vips {
    me: NodeId,
    specs: Vec<VipSpec>,
    held: Vec<bool>,
    owners: Vec<Option<NodeId>>,
    hold: Duration,
    gap: Duration,
    fade: Duration,
    self_since: Option<Instant>,
    peers: Vec<Track>,
    /// The last `update`'s `now`: deadlines up to it have been acted on.
    last: Instant,
    /// Peers coming up (joining or syncing) in the last `update`.
    coming: Vec<NodeId>,
    /// A peer in the last `update` was neither healthy nor gone with a Leave.
    unheard: bool,
}

impl Vips {
    /// `gap`: the extra wait of a node taking its own VIP back (see the module docs).
    /// `fade`: how long a peer that died (rather than left) still counts as a candidate.
    /// With quorum (`--voters`) the dead peer may be a live node on the other side of a
    /// partition, which notices it lost quorum (and releases) up to a heartbeat interval
    /// after this side declares it dead; zero without quorum, where nothing releases anyway.
    pub fn new(
        me: NodeId,
        specs: Vec<VipSpec>,
        hold: Duration,
        gap: Duration,
        fade: Duration,
    ) -> Vips {
        let n = specs.len();
        Vips {
            me,
            specs,
            held: vec![false; n],
            owners: vec![None; n],
            hold,
            gap,
            fade,
            self_since: None,
            peers: Vec::new(),
            last: Instant::ZERO,
            coming: Vec::new(),
            unheard: false,
        }
    }

    pub fn specs(&self) -> &[VipSpec] {
        &self.specs
    }

    /// Each VIP with the node that should hold it in this node's view (`None`: nobody).
    pub fn owners(&self) -> impl Iterator<Item = (&VipSpec, Option<NodeId>)> + '_ {
        self.specs.iter().zip(self.owners.iter().copied())
    }

    /// Whether this node holds the VIP at `i` (its address is on the interface).
    pub fn holds(&self, i: usize) -> bool {
        self.held.get(i).copied().unwrap_or(false)
    }

    /// Takes the view at `now` (`me_healthy`: this node is alive, synced, has quorum and is
    /// not joining; `peers`: every peer in the membership table) and appends to `out` what
    /// must change on this host. The caller reports back with [`Vips::done`].
    pub fn update(
        &mut self,
        now: Instant,
        me_healthy: bool,
        peers: &[PeerHealth],
        out: &mut Vec<Action>,
    ) {
        self.last = now;
        let me_was_settled = self.settled_self(now);
        self.self_since = match (me_healthy, self.self_since) {
            (false, _) => None,
            (true, Some(t)) => Some(t),
            (true, None) => Some(now),
        };
        for t in &mut self.peers {
            if t.fading.is_some_and(|until| now >= until) {
                *t = Track {
                    since: None,
                    senior: false,
                    fading: None,
                    ..*t
                };
            }
        }
        // Forget peers no longer in the table (dead and gone, left) once they faded.
        let fade = self.fade;
        self.peers.retain_mut(|t| {
            if peers.iter().any(|p| p.node == t.node) {
                return true;
            }
            if t.since.is_some() && t.fading.is_none() && !fade.is_zero() {
                t.fading = Some(now + fade);
            }
            t.fading.is_some()
        });
        for p in peers {
            match self.peers.iter_mut().find(|t| t.node == p.node) {
                Some(t) => match (p.healthy, t.since) {
                    (true, Some(_)) => t.fading = None,
                    (true, None) => t.since = Some(now),
                    (false, Some(_)) if !p.left && !fade.is_zero() => {
                        t.fading = t.fading.or(Some(now + fade));
                    }
                    (false, _) => {
                        t.since = None;
                        t.senior = false;
                        t.fading = None;
                    }
                },
                None => self.peers.push(Track {
                    node: p.node,
                    since: p.healthy.then_some(now),
                    senior: p.healthy && !me_was_settled,
                    fading: None,
                }),
            }
        }
        self.unheard = peers.iter().any(|p| !p.healthy && !p.left);
        self.coming.clear();
        self.coming
            .extend(peers.iter().filter(|p| p.coming).map(|p| p.node));
        for i in 0..self.specs.len() {
            let prefer = self.specs[i].prefer;
            let owner = self.owner(now, prefer, self.held[i]);
            let was = self.owners[i];
            // Reported: while nobody may take it, a preferred node that is a candidate or
            // coming up keeps (or, once settled, takes) its own VIP.
            self.owners[i] = owner.or_else(|| {
                (self.coming.contains(&prefer) || self.candidates(now).any(|(n, _)| n == prefer))
                    .then_some(prefer)
            });
            let mine = owner == Some(self.me);
            if mine != self.held[i] {
                out.push(if !mine {
                    Action::Release(self.specs[i])
                } else if self.may_be_held_elsewhere(was, peers) {
                    Action::ProbeAndAcquire(self.specs[i])
                } else {
                    Action::Acquire(self.specs[i])
                });
            }
        }
    }

    /// Whether a VIP this node is about to take may still be on a live peer's host: its
    /// owner in the last view (`was`) is a peer not declared dead, or, with no peer named
    /// (this node regaining health, a peer just reappeared, a cold start), any peer is
    /// alive. A VIP whose owner was declared dead (or left) is taken at once: failover
    /// does not wait for a probe.
    fn may_be_held_elsewhere(&self, was: Option<NodeId>, peers: &[PeerHealth]) -> bool {
        match was {
            Some(n) if n != self.me => peers.iter().any(|p| p.node == n && p.alive),
            _ => peers.iter().any(|p| p.alive),
        }
    }

    /// The caller carried out `action` (or gave up on it: a failed add is not held).
    pub fn done(&mut self, action: Action, ok: bool) {
        let (spec, hold) = match action {
            Action::Acquire(s) | Action::ProbeAndAcquire(s) => (s, ok),
            // A failed remove leaves nothing we can do; the address is not ours any more.
            Action::Release(s) => (s, false),
        };
        if let Some(i) = self.specs.iter().position(|s| *s == spec) {
            self.held[i] = hold;
        }
    }

    /// Every VIP this node holds, as releases (SIGTERM: before the Leave goes out).
    pub fn release_all(&self, out: &mut Vec<Action>) {
        for (i, s) in self.specs.iter().enumerate() {
            if self.held[i] {
                out.push(Action::Release(*s));
            }
        }
    }

    /// When a candidate next becomes settled (the loop must look again then).
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.specs.is_empty() {
            return None;
        }
        let own = self.self_since.map(|t| t + self.hold + self.gap);
        let peers = self
            .peers
            .iter()
            .filter(|t| !t.senior)
            .filter_map(|t| t.since.map(|s| s + self.hold))
            .chain(self.peers.iter().filter_map(|t| t.fading));
        own.into_iter()
            .chain(peers)
            .filter(|t| *t > self.last)
            .min()
    }

    fn settled_self(&self, now: Instant) -> bool {
        self.self_since
            .is_some_and(|t| now >= t + self.hold + self.gap)
    }

    /// Candidates (`node`, settled) in this node's view, this node included when healthy.
    fn candidates(&self, now: Instant) -> impl Iterator<Item = (NodeId, bool)> + '_ {
        let me = self.self_since.map(|_| (self.me, self.settled_self(now)));
        let peers = self
            .peers
            .iter()
            .filter_map(move |t| t.since.map(|s| (t.node, t.senior || now >= s + self.hold)));
        me.into_iter().chain(peers)
    }

    /// The rule in the module docs; `held`: this node holds the VIP now.
    fn owner(&self, now: Instant, prefer: NodeId, held: bool) -> Option<NodeId> {
        // Its own VIP, held and still healthy: kept (nobody else takes over a VIP whose
        // preferred node is a candidate), so a cold start does not drop it again when the
        // peer turns up unsettled (rule 4).
        if held && prefer == self.me && self.self_since.is_some() {
            return Some(self.me);
        }
        let mut settled_other: Option<NodeId> = None;
        let mut only: Option<NodeId> = None;
        let mut count = 0usize;
        // The preferred node is on its way: coming up, or a candidate not yet settled.
        let mut prefer_coming = self.coming.contains(&prefer);
        for (node, settled) in self.candidates(now) {
            if node == prefer && settled {
                return Some(prefer);
            }
            if node == prefer {
                prefer_coming = true;
            }
            if node != prefer && settled {
                settled_other = Some(settled_other.map_or(node, |o| o.min(node)));
            }
            count += 1;
            only = Some(node);
        }
        // This node keeps what it holds, but does not take over a VIP whose preferred node
        // is on its way (the module docs, "cold start").
        let takes_over = |o: &NodeId| *o == self.me && !held && *o != prefer && prefer_coming;
        // Rule 3 for this node, unsettled, with quorum: not while a peer it knows is neither
        // healthy nor gone with a Leave. Regaining quorum after a partition, it may not have
        // heard that live peer yet, which holds the VIP: it waits to be settled like everyone.
        let alone = |o: &NodeId| {
            *o != self.me || held || self.fade.is_zero() || !self.unheard || self.settled_self(now)
        };
        settled_other
            .or(only.filter(|o| count == 1 && alone(o)))
            .filter(|o| !takes_over(o))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // In tests a failed unwrap is a failed test.
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    const HOLD: Duration = Duration::from_millis(1000);
    const GAP: Duration = Duration::from_millis(5);

    fn at(ms: u64) -> Instant {
        Instant::ZERO + Duration::from_millis(ms)
    }

    fn spec(s: &str) -> VipSpec {
        s.parse().unwrap()
    }

    fn two() -> Vec<VipSpec> {
        vec![spec("198.18.0.100/24@1"), spec("198.18.0.101/24@2")]
    }

    fn peer(node: u16, healthy: bool) -> PeerHealth {
        PeerHealth {
            node: NodeId(node),
            healthy,
            left: false,
            coming: false,
            alive: healthy,
        }
    }

    /// Runs one update and applies every action as successful; returns the actions.
    fn step(v: &mut Vips, ms: u64, me: bool, peers: &[PeerHealth]) -> Vec<Action> {
        let mut out = Vec::new();
        v.update(at(ms), me, peers, &mut out);
        for a in &out {
            v.done(*a, true);
        }
        out
    }

    fn held(v: &Vips) -> Vec<bool> {
        (0..v.specs().len()).map(|i| v.holds(i)).collect()
    }

    #[test]
    fn parses_and_validates() {
        let s = spec("198.18.0.100/24@1");
        assert_eq!(s.addr, IpAddr::V4(Ipv4Addr::new(198, 18, 0, 100)));
        assert_eq!((s.prefix, s.prefer), (24, NodeId(1)));
        assert_eq!(s.to_string(), "198.18.0.100/24@1");
        assert_eq!(s.cidr(), "198.18.0.100/24");
        assert_eq!(spec("10.0.0.1@3").prefix, 32);
        assert!(s.validate().is_ok());
        for bad in [
            "198.18.0.100/24",
            "198.18.0.100/24@x",
            "x/24@1",
            "1.2.3.4/a@1",
        ] {
            assert!(bad.parse::<VipSpec>().is_err(), "{bad}");
        }
        for invalid in [
            "1.2.3.4/33@1",
            "1.2.3.4/0@1",
            "224.0.0.1/24@1",
            "0.0.0.0/8@1",
        ] {
            assert!(spec(invalid).validate().is_err(), "{invalid}");
        }
        assert!(spec("1.2.3.4/24@0").validate().is_err());
        // IPv6: unicast, prefix 1..=128, not link-local.
        let v6 = spec("fd00:7a6e::100/64@2");
        assert_eq!(v6.addr, "fd00:7a6e::100".parse::<IpAddr>().unwrap());
        assert_eq!((v6.prefix, v6.prefer), (64, NodeId(2)));
        assert_eq!(v6.cidr(), "fd00:7a6e::100/64");
        assert!(v6.validate().is_ok());
        assert!(spec("2001:db8::1/128@1").validate().is_ok());
        assert_eq!(spec("2001:db8::1@1").prefix, 128);
        for invalid in [
            "2001:db8::1/129@1",
            "2001:db8::1/0@1",
            "ff02::1/64@1",
            "::/64@1",
            "::1/128@1",
            "fe80::1/64@1",
            "::ffff:198.18.0.1/120@1",
        ] {
            assert!(spec(invalid).validate().is_err(), "{invalid}");
        }
    }

    #[test]
    fn alone_holds_everything_at_once_and_nothing_while_unhealthy() {
        let mut v = Vips::new(NodeId(1), two(), HOLD, GAP, Duration::ZERO);
        assert!(step(&mut v, 0, false, &[]).is_empty());
        assert_eq!(held(&v), [false, false]);
        let acts = step(&mut v, 10, true, &[]);
        assert_eq!(acts.len(), 2);
        assert_eq!(held(&v), [true, true]);
        // Lost quorum (not healthy): releases both.
        let acts = step(&mut v, 20, false, &[]);
        assert!(acts.iter().all(|a| matches!(a, Action::Release(_))));
        assert_eq!(held(&v), [false, false]);
    }

    #[test]
    fn each_holds_its_own_and_survivor_takes_over_on_death() {
        // Node 2, joining a settled node 1 that holds both.
        let mut v = Vips::new(NodeId(2), two(), HOLD, GAP, Duration::ZERO);
        step(&mut v, 0, false, &[peer(1, true)]);
        // Healthy (synced): node 1 is senior, so .100 stays there; .101 waits for our hold.
        step(&mut v, 100, true, &[peer(1, true)]);
        assert_eq!(held(&v), [false, false]);
        step(&mut v, 100 + 1000, true, &[peer(1, true)]);
        assert_eq!(held(&v), [false, false], "hold without the gap: not yet");
        assert_eq!(v.poll_timeout(), Some(at(100 + 1005)));
        step(&mut v, 100 + 1005, true, &[peer(1, true)]);
        assert_eq!(held(&v), [false, true]);
        // Node 1 dies (gone from the table or declared dead: not healthy).
        let acts = step(&mut v, 2000, true, &[peer(1, false)]);
        assert_eq!(acts, [Action::Acquire(two()[0])]);
        assert_eq!(held(&v), [true, true]);
        let owners: Vec<_> = v.owners().map(|(_, o)| o).collect();
        assert_eq!(owners, [Some(NodeId(2)), Some(NodeId(2))]);
    }

    #[test]
    fn returning_preferred_node_waits_for_the_hold_and_survivor_releases_first() {
        // Survivor 2 has held both for a while.
        let mut s = Vips::new(NodeId(2), two(), HOLD, GAP, Duration::ZERO);
        step(&mut s, 0, true, &[]);
        step(&mut s, 5000, true, &[]);
        assert_eq!(held(&s), [true, true]);
        // Node 1 restarts: survivor sees it joining, then healthy at 6001.
        step(&mut s, 6000, true, &[peer(1, false)]);
        step(&mut s, 6001, true, &[peer(1, true)]);
        assert_eq!(held(&s), [true, true], "no move before the hold");
        step(&mut s, 6500, true, &[peer(1, true)]);
        assert_eq!(held(&s), [true, true]);
        assert_eq!(s.poll_timeout(), Some(at(7001)));
        let acts = step(&mut s, 7001, true, &[peer(1, true)]);
        assert_eq!(acts, [Action::Release(two()[0])]);

        // The returning node 1: healthy at 6000 (one interval before the survivor sees it).
        let mut r = Vips::new(NodeId(1), two(), HOLD, GAP, Duration::ZERO);
        step(&mut r, 5900, false, &[peer(2, true)]);
        step(&mut r, 6000, true, &[peer(2, true)]);
        assert_eq!(
            held(&r),
            [false, false],
            "survivor is senior: it keeps both"
        );
        step(&mut r, 7001, true, &[peer(2, true)]);
        assert_eq!(held(&r), [false, false], "still inside hold + gap");
        // Taken from a live peer: only after a probe finds nobody answering for it.
        let acts = step(&mut r, 7005, true, &[peer(2, true)]);
        assert_eq!(acts, [Action::ProbeAndAcquire(two()[0])]);
        assert_eq!(held(&r), [true, false]);
    }

    #[test]
    fn probes_before_taking_from_a_live_peer_and_never_after_a_death() {
        let specs = two();
        // The uneven heal: the returning node 1 hears node 2 at once, node 2 hears node 1
        // 16 ms later (more than GAP): at 1 + hold + gap node 2 still holds .100.
        let mut p = Vips::new(NodeId(1), specs.clone(), HOLD, GAP, Duration::ZERO);
        let mut s = Vips::new(NodeId(2), specs.clone(), HOLD, GAP, Duration::ZERO);
        step(&mut s, 0, true, &[]);
        step(&mut s, 5000, true, &[peer(1, false)]);
        let mut taken = None;
        for ms in 5001..7100 {
            let acts = step(&mut p, ms, true, &[peer(2, true)]);
            step(&mut s, ms, true, &[peer(1, ms >= 5017)]);
            if let Some(a) = acts.first() {
                taken = Some((ms, *a, s.holds(0)));
            }
        }
        // Without the probe these two would overlap; the action says to probe first.
        assert_eq!(
            taken,
            Some((5001 + 1005, Action::ProbeAndAcquire(specs[0]), true))
        );
        assert_eq!((held(&p), held(&s)), (vec![true, false], vec![false, true]));

        // The peer that held it declared dead (kill -9, host failure): at once, no probe.
        let mut v = Vips::new(NodeId(2), specs.clone(), HOLD, GAP, Duration::ZERO);
        step(&mut v, 0, true, &[peer(1, true)]);
        step(&mut v, 2000, true, &[peer(1, true)]);
        assert_eq!(held(&v), [false, true]);
        let acts = step(&mut v, 3000, true, &[peer(1, false)]);
        assert_eq!(acts, [Action::Acquire(specs[0])]);
        // Gone from the table altogether: the same.
        let mut w = Vips::new(NodeId(2), specs.clone(), HOLD, GAP, Duration::ZERO);
        step(&mut w, 0, true, &[peer(1, true)]);
        step(&mut w, 2000, true, &[peer(1, true)]);
        assert_eq!(step(&mut w, 3000, true, &[]), [Action::Acquire(specs[0])]);
        // Three data nodes: the owner dies, node 3 lives but never held it: no probe.
        let one = vec![spec("198.18.0.100/24@1")];
        let mut t = Vips::new(NodeId(2), one.clone(), HOLD, GAP, Duration::ZERO);
        step(&mut t, 0, true, &[peer(1, true), peer(3, true)]);
        step(&mut t, 2000, true, &[peer(1, true), peer(3, true)]);
        let acts = step(&mut t, 3000, true, &[peer(1, false), peer(3, true)]);
        assert_eq!(acts, [Action::Acquire(one[0])]);
        // A peer alive but not healthy (isolated, syncing): its host may still hold
        // what it held, so a VIP it owned in the last view is probed for.
        let mut u = Vips::new(NodeId(2), one.clone(), HOLD, GAP, Duration::ZERO);
        step(&mut u, 0, true, &[peer(1, true)]);
        step(&mut u, 2000, true, &[peer(1, true)]);
        let isolated = PeerHealth {
            alive: true,
            ..peer(1, false)
        };
        let acts = step(&mut u, 3000, true, &[isolated]);
        assert_eq!(acts, [Action::ProbeAndAcquire(one[0])]);
        // Alone at start (no peer at all): no probe.
        let mut a = Vips::new(NodeId(1), one.clone(), HOLD, GAP, Duration::ZERO);
        assert_eq!(step(&mut a, 0, true, &[]), [Action::Acquire(one[0])]);
    }

    #[test]
    fn flapping_peer_restarts_its_hold() {
        let mut s = Vips::new(NodeId(2), two(), HOLD, GAP, Duration::ZERO);
        step(&mut s, 0, true, &[]);
        step(&mut s, 5000, true, &[peer(1, true)]);
        step(&mut s, 5800, true, &[peer(1, false)]);
        step(&mut s, 5900, true, &[peer(1, true)]);
        step(&mut s, 6500, true, &[peer(1, true)]);
        assert_eq!(held(&s), [true, true], "hold counts from the last recovery");
        step(&mut s, 6900, true, &[peer(1, true)]);
        assert_eq!(held(&s), [false, true]);
    }

    #[test]
    fn cold_start_together_never_gives_one_vip_to_both() {
        let specs = two();
        let mut a = Vips::new(NodeId(1), specs.clone(), HOLD, GAP, Duration::ZERO);
        let mut b = Vips::new(NodeId(2), specs, HOLD, GAP, Duration::ZERO);
        for ms in (0..3000).step_by(1) {
            let a_ok = ms >= 10;
            let b_ok = ms >= 12;
            // Each sees the other's health one millisecond late.
            step(&mut a, ms, a_ok, &[peer(2, ms >= 13)]);
            step(&mut b, ms, b_ok, &[peer(1, ms >= 11)]);
            for i in 0..2 {
                assert!(!(a.holds(i) && b.holds(i)), "both hold vip {i} at {ms} ms");
            }
        }
        assert_eq!(held(&a), [true, false]);
        assert_eq!(held(&b), [false, true]);
    }

    #[test]
    fn cold_start_together_with_the_peer_seen_healthy_later_than_gap() {
        // Seen in the namespace tests: both nodes start in the same millisecond, each is
        // healthy itself at 10 ms but sees the other healthy only at 17 ms (its JOINING
        // heartbeats, then the next interval): more than GAP later. Each settles itself
        // before it settles the other, and neither may then take the other's VIP.
        let specs = two();
        let mut a = Vips::new(NodeId(1), specs.clone(), HOLD, GAP, Duration::ZERO);
        let mut b = Vips::new(NodeId(2), specs, HOLD, GAP, Duration::ZERO);
        let mut moves = Vec::new();
        for ms in 0..3000 {
            moves.extend(step(&mut a, ms, ms >= 10, &[coming(2, ms >= 17)]));
            moves.extend(step(&mut b, ms, ms >= 10, &[coming(1, ms >= 17)]));
            for i in 0..2 {
                assert!(!(a.holds(i) && b.holds(i)), "both hold vip {i} at {ms} ms");
            }
        }
        assert_eq!(held(&a), [true, false]);
        assert_eq!(held(&b), [false, true]);
        // Each took its own at once (alone, the other coming: after a probe, as the other
        // is alive) and kept it: no churn; and each reports the other's VIP with its
        // preferred node, which holds it.
        let specs = two();
        assert_eq!(
            moves,
            [
                Action::ProbeAndAcquire(specs[0]),
                Action::ProbeAndAcquire(specs[1])
            ]
        );
        let owners = |v: &Vips| v.owners().map(|(_, o)| o).collect::<Vec<_>>();
        let both = vec![Some(NodeId(1)), Some(NodeId(2))];
        assert_eq!((owners(&a), owners(&b)), (both.clone(), both));
    }

    /// A peer seen joining until `healthy`.
    fn coming(node: u16, healthy: bool) -> PeerHealth {
        PeerHealth {
            coming: !healthy,
            alive: true,
            ..peer(node, healthy)
        }
    }

    #[test]
    fn regaining_health_with_a_known_peer_waits_to_be_settled() {
        // Node 1 lost quorum in a partition (node 2 dead in its table, holding both VIPs
        // on the other side). Quorum back (witness heard first): node 2 not heard yet.
        let fade = Duration::from_millis(5);
        let mut v = Vips::new(NodeId(1), two(), HOLD, GAP, fade);
        step(&mut v, 0, true, &[peer(2, true)]);
        step(&mut v, 5000, false, &[peer(2, false)]);
        assert!(step(&mut v, 8000, true, &[peer(2, false)]).is_empty());
        assert_eq!(
            held(&v),
            [false, false],
            "not at once: node 2 may hold them"
        );
        // Node 2 heard 16 ms later: senior, it keeps both until node 1's hold is over.
        step(&mut v, 8016, true, &[peer(2, true)]);
        step(&mut v, 9004, true, &[peer(2, true)]);
        assert_eq!(held(&v), [false, false]);
        step(&mut v, 9005, true, &[peer(2, true)]);
        assert_eq!(held(&v), [true, false]);
        // Never heard again: takes both once settled.
        let mut w = Vips::new(NodeId(1), two(), HOLD, GAP, fade);
        step(&mut w, 0, true, &[peer(2, true)]);
        step(&mut w, 5000, false, &[peer(2, false)]);
        step(&mut w, 8000, true, &[peer(2, false)]);
        step(&mut w, 9004, true, &[peer(2, false)]);
        assert_eq!(held(&w), [false, false]);
        step(&mut w, 9005, true, &[peer(2, false)]);
        assert_eq!(held(&w), [true, true]);
    }

    #[test]
    fn fallback_is_the_lowest_settled_node_and_witnesses_never_count() {
        let specs = vec![spec("198.18.0.102/24@3")];
        let mut v = Vips::new(NodeId(2), specs, HOLD, GAP, Duration::ZERO);
        // Node 1 healthy and senior, node 3 (preferred) not healthy.
        step(&mut v, 0, true, &[peer(1, true), peer(3, false)]);
        assert_eq!(v.owners().next().map(|(_, o)| o), Some(Some(NodeId(1))));
        assert_eq!(held(&v), [false]);
        // Node 1 gone: node 2 is the only candidate.
        step(&mut v, 10, true, &[peer(3, false)]);
        assert_eq!(held(&v), [true]);
        let mut out = Vec::new();
        v.release_all(&mut out);
        assert_eq!(out.len(), 1);
    }

    #[test]
    fn with_quorum_a_dead_peer_fades_before_takeover_but_a_left_one_does_not() {
        let fade = Duration::from_millis(5);
        let mut v = Vips::new(NodeId(2), two(), HOLD, GAP, fade);
        step(&mut v, 0, false, &[peer(1, true)]);
        step(&mut v, 10, true, &[peer(1, true)]);
        step(&mut v, 2000, true, &[peer(1, true)]);
        assert_eq!(held(&v), [false, true]);
        // Declared dead: the other side may not know yet that it lost quorum.
        step(&mut v, 3000, true, &[peer(1, false)]);
        assert_eq!(held(&v), [false, true], "no takeover inside the fade");
        assert_eq!(v.poll_timeout(), Some(at(3005)));
        step(&mut v, 3004, true, &[]);
        assert_eq!(held(&v), [false, true], "gone from the table: still fading");
        step(&mut v, 3005, true, &[]);
        assert_eq!(held(&v), [true, true]);

        let mut w = Vips::new(NodeId(2), two(), HOLD, GAP, fade);
        step(&mut w, 0, false, &[peer(1, true)]);
        step(&mut w, 2000, true, &[peer(1, true)]);
        let left = PeerHealth {
            node: NodeId(1),
            healthy: false,
            left: true,
            coming: false,
            alive: false,
        };
        step(&mut w, 3000, true, &[left]);
        assert_eq!(held(&w), [true, true], "a Leave hands over at once");
    }

    #[test]
    fn failed_acquire_is_retried_next_turn() {
        let mut v = Vips::new(NodeId(1), two(), HOLD, GAP, Duration::ZERO);
        let mut out = Vec::new();
        v.update(at(0), true, &[], &mut out);
        for a in &out {
            v.done(*a, false);
        }
        assert_eq!(held(&v), [false, false]);
        out.clear();
        v.update(at(1), true, &[], &mut out);
        assert_eq!(out.len(), 2);
    }
}
