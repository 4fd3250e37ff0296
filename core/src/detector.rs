//! Poll-free failure detector.
//!
//! When a heartbeat from a peer arrives at `now`, the peer's next deadlines are computed in
//! closed form from `now` and the interval and multiplier the peer advertises. The deadlines of
//! all peers sit in an indexed 4-ary min-heap over fixed capacity, so:
//! - [`Detector::heartbeat`] is O(log n) (one sift in the heap, no allocation);
//! - [`Detector::poll_timeout`] is O(1) (the heap's root);
//! - [`Detector::handle_timeout`] touches only peers whose deadline has passed (each step pops
//!   or re-keys the root). Nothing ever scans every peer on a tick.
//!
//! A peer goes `Alive -> Suspect -> Dead`. With `span` the time a peer may stay silent:
//! - suspect at `last_heard + span * suspect_percent / 100`,
//! - dead at `last_heard + span`.
//!
//! # Policies
//! - [`Policy::Fixed`] (BFD-like): `span = interval * multiplier`, both as the peer advertises.
//! - [`Policy::Adaptive`] (phi-accrual): a ring of the last [`SAMPLES`] inter-arrival times
//!   gives a mean `m` and a standard deviation `s` (at least `min_std`). Phi uses the
//!   logistic approximation of the normal tail (as Akka does):
//!   `phi(t) = log10(1 + e^{y (1.5976 + 0.070566 y^2)})` with `y = (t - m) / s`. For a fixed
//!   threshold the crossing point is a fixed `y = z`, solved once when the config is built
//!   ([`Adaptive::from_phi`], Newton on the cubic, plain float ops, no libm), so at run time
//!   `span = m + z * s`: integer arithmetic and one approximate square root per heartbeat.
//!   The adaptive span is clamped to `[interval, interval * multiplier]`: on a steady link it
//!   detects sooner than the fixed policy, never later, so the profile bound still holds.
//!   Until [`MIN_SAMPLES`] inter-arrivals are known, the fixed span is used.
//!
//! Advertised values from the wire are clamped (interval to
//! [`MIN_INTERVAL_US`]..=[`MAX_INTERVAL_US`], multiplier to at least 1), so a peer cannot make
//! a deadline overflow or fire in the past.
//!
//! # Profiles
//! | profile | interval | multiplier | suspect | dead (detection bound) | policy |
//! |---|---|---|---|---|---|
//! | [`Profile::FAST`] | 2 ms | 5 | 5 ms | 10 ms after the last heartbeat | fixed |
//! | [`Profile::LAN`] (default) | 20 ms | 10 | 100 ms | 200 ms | fixed |
//! | [`Profile::WAN`] | 1 s | 5 | 2.5 s | 5 s (about 1.5-2 s on a steady link) | adaptive, phi 8, min std-dev 100 ms |
//!
//! A crashed peer is marked dead at most `interval * multiplier` plus one network delay after
//! the crash (its last heartbeat left before the crash). `fast` sends 500 heartbeats a second,
//! not 1000, to keep the daemon's idle cost near 0.3% of a core while still detecting in 10 ms.
//! A peer is never declared dead while its heartbeats arrive less than
//! `(multiplier - 1) * interval` late (delay jitter plus missed heartbeats). `lan` uses many
//! short intervals so that 20% random loss needs 10 heartbeats lost in a row (p = 1e-7) to
//! kill a live peer: with 40 ms x 5 that happened about once a minute per peer.
//!
//! Panics: never. Slot numbers out of range are ignored.

use crate::time::Instant;

/// Shortest interval a peer may advertise (100 us).
pub const MIN_INTERVAL_US: u32 = 100;
/// Longest interval a peer may advertise (60 s).
pub const MAX_INTERVAL_US: u32 = 60_000_000;
/// Inter-arrival samples kept per peer by the adaptive policy.
pub const SAMPLES: usize = 16;
/// Samples needed before the adaptive policy replaces the fixed span.
pub const MIN_SAMPLES: u8 = 8;

/// How a peer's silent span is computed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Policy {
    /// `interval * multiplier`, as advertised by the peer.
    Fixed,
    /// phi-accrual, see the module docs. Needs the `adaptive` feature (on by default):
    /// without it a build carries neither the sample rings nor their arithmetic.
    #[cfg(feature = "adaptive")]
    Adaptive(Adaptive),
}

/// Parameters of the phi-accrual policy, precomputed so run time needs no float math.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Adaptive {
    /// Threshold z-score, fixed point with 16 fractional bits (`span = mean + z * std`).
    pub z_q16: u32,
    /// Lower bound of the standard deviation, microseconds.
    pub min_std_us: u32,
}

impl Adaptive {
    /// Builds the policy for a phi threshold (clamped to 1..=30; Akka's default is 8).
    pub const fn from_phi(phi: f32, min_std_us: u32) -> Self {
        let z = z_for_phi(phi as f64);
        Adaptive {
            z_q16: (z * 65536.0) as u32,
            min_std_us,
        }
    }
}

/// A named set of detector numbers (see the table in the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Profile {
    /// This node's heartbeat interval, microseconds (advertised to peers).
    pub interval_us: u32,
    /// Missed intervals before peers may declare this node dead (advertised).
    pub multiplier: u8,
    /// Suspect after this percentage of the dead span (1..=100).
    pub suspect_percent: u8,
    pub policy: Policy,
}

impl Profile {
    /// About 10 ms detection.
    pub const FAST: Profile = Profile {
        interval_us: 2_000,
        multiplier: 5,
        suspect_percent: 50,
        policy: Policy::Fixed,
    };
    /// About 200 ms detection; the default.
    pub const LAN: Profile = Profile {
        interval_us: 20_000,
        multiplier: 10,
        suspect_percent: 50,
        policy: Policy::Fixed,
    };
    /// At most 5 s detection, sooner on a steady link.
    #[cfg(feature = "adaptive")]
    pub const WAN: Profile = Profile {
        interval_us: 1_000_000,
        multiplier: 5,
        suspect_percent: 50,
        policy: Policy::Adaptive(Adaptive::from_phi(8.0, 100_000)),
    };

    /// The name of a named profile with these numbers, `custom` otherwise. (A method, not a
    /// field: a `Profile` holds no pointer, so a node's zeroed state needs no flash.)
    pub fn name(&self) -> &'static str {
        match *self {
            p if p == Self::FAST => "fast",
            p if p == Self::LAN => "lan",
            #[cfg(feature = "adaptive")]
            p if p == Self::WAN => "wan",
            _ => "custom",
        }
    }

    /// Looks a profile up by name (`fast`, `lan`, `wan`).
    pub fn by_name(name: &str) -> Option<Profile> {
        match name {
            "fast" => Some(Self::FAST),
            "lan" => Some(Self::LAN),
            #[cfg(feature = "adaptive")]
            "wan" => Some(Self::WAN),
            _ => None,
        }
    }

    /// Time from the last heartbeat of a peer using these numbers until it is declared dead.
    pub const fn detection_bound_us(&self) -> u64 {
        self.interval_us as u64 * self.multiplier as u64
    }
}

impl Default for Profile {
    fn default() -> Self {
        Self::LAN
    }
}

/// Liveness of one peer slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Liveness {
    Alive,
    Suspect,
    Dead,
}

/// A deadline that passed: `slot` is now `to`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Expired {
    pub slot: usize,
    pub to: Liveness,
}

#[derive(Clone, Copy, Debug)]
struct Peer {
    last: Instant,
    /// Microseconds from `last` to death.
    span: u64,
    /// The peer's heartbeat interval (clamped), microseconds.
    interval: u32,
    /// Not dead before this, after a stall of our own ([`Detector::stalled`]); `ZERO` when
    /// the peer had no such grace since its last heartbeat.
    pardon_until: Instant,
    liveness: Liveness,
    samples: Samples,
}

/// The adaptive policy's ring of inter-arrival times (write head, count, running sums).
#[cfg(feature = "adaptive")]
#[derive(Clone, Copy, Debug)]
struct Samples {
    ring: [u32; SAMPLES],
    head: u8,
    count: u8,
    sum: u64,
    sum_sq: u64,
}

/// Without the `adaptive` feature a peer keeps no samples.
#[cfg(not(feature = "adaptive"))]
#[derive(Clone, Copy, Debug)]
struct Samples;

#[cfg(feature = "adaptive")]
impl Samples {
    const EMPTY: Samples = Samples {
        ring: [0; SAMPLES],
        head: 0,
        count: 0,
        sum: 0,
        sum_sq: 0,
    };

    fn push(&mut self, gap: u32) {
        let h = self.head as usize % SAMPLES;
        if self.count as usize == SAMPLES {
            let old = self.ring[h] as u64;
            self.sum -= old;
            self.sum_sq -= old * old;
        } else {
            self.count += 1;
        }
        self.ring[h] = gap;
        self.sum += gap as u64;
        self.sum_sq += gap as u64 * gap as u64;
        self.head = ((h + 1) % SAMPLES) as u8;
    }

    /// The silent span `policy` allows: `fixed` until enough samples.
    fn span(&self, policy: Policy, interval: u64, fixed: u64) -> u64 {
        match policy {
            Policy::Adaptive(a) if self.count >= MIN_SAMPLES => {
                // A full ring (the steady state) divides by a power of two.
                let (mean, sq) = if self.count as usize == SAMPLES {
                    (self.sum / SAMPLES as u64, self.sum_sq / SAMPLES as u64)
                } else {
                    (
                        self.sum / self.count as u64,
                        self.sum_sq / self.count as u64,
                    )
                };
                // E[x^2] >= E[x]^2; saturate against rounding anyway.
                let var = sq.saturating_sub(mean * mean);
                let std = sqrt_approx(var).max(a.min_std_us as u64);
                (mean + ((std * a.z_q16 as u64) >> 16)).clamp(interval, fixed)
            }
            _ => fixed,
        }
    }
}

#[cfg(not(feature = "adaptive"))]
impl Samples {
    const EMPTY: Samples = Samples;

    fn span(&self, _: Policy, _: u64, fixed: u64) -> u64 {
        fixed
    }
}

const NONE: u16 = u16::MAX;
/// Children per heap node: 4 keeps 64 peers 3 levels deep and a node's children in one or
/// two cache lines.
const ARITY: usize = 4;

impl Peer {
    /// All bytes zero: only inside [`Detector::zeroed`].
    const ZEROED: Peer = Peer {
        liveness: Liveness::Alive,
        ..Peer::EMPTY
    };

    const EMPTY: Peer = Peer {
        last: Instant::ZERO,
        span: 0,
        interval: 0,
        pardon_until: Instant::ZERO,
        liveness: Liveness::Dead,
        samples: Samples::EMPTY,
    };
}

#[derive(Clone, Copy, Debug)]
struct Entry {
    due: Instant,
    slot: u16,
}

/// Deadlines of up to `N` peer slots (`N` < 65535). The caller maps its peers to slots
/// `0..N` (membership uses its member table index).
#[derive(Clone, Debug)]
pub struct Detector<const N: usize> {
    policy: Policy,
    suspect_percent: u64,
    peers: [Peer; N],
    /// The heap's entries, as two arrays: an [`Entry`] array would pad each to 16 bytes
    /// (RAM per member on a microcontroller), and the sift loops compare only `due`.
    heap_due: [Instant; N],
    heap_slot: [u16; N],
    /// Heap position of each slot, `NONE` if not queued (apart from `peers` so the sift
    /// loops touch few cache lines).
    pos: [u16; N],
    len: usize,
}

impl<const N: usize> Detector<N> {
    pub fn new(policy: Policy, suspect_percent: u8) -> Self {
        let mut d = Detector::zeroed();
        d.reset(policy, suspect_percent);
        d
    }

    /// Every byte zero (so a `static` holding it costs no flash) and not usable until
    /// [`Detector::reset`] (which [`crate::membership::Membership::start`] calls).
    pub const fn zeroed() -> Self {
        Detector {
            policy: Policy::Fixed,
            suspect_percent: 0,
            peers: [Peer::ZEROED; N],
            pos: [0; N],
            heap_due: [Instant::ZERO; N],
            heap_slot: [0; N],
            len: 0,
        }
    }

    /// [`Detector::new`] in place: no peer, nothing queued.
    pub fn reset(&mut self, policy: Policy, suspect_percent: u8) {
        self.policy = policy;
        self.suspect_percent = suspect_percent.clamp(1, 100) as u64;
        for p in &mut self.peers {
            *p = Peer::EMPTY;
        }
        self.pos = [NONE; N];
        self.len = 0;
    }

    /// A heartbeat from `slot` arrived at `now`. Returns `true` if the peer was suspect or dead
    /// and is alive again. Restarts the sample ring if the peer was dead (a new life).
    pub fn heartbeat(
        &mut self,
        slot: usize,
        now: Instant,
        interval_us: u32,
        multiplier: u8,
    ) -> bool {
        let Some(p) = self.peers.get_mut(slot) else {
            return false;
        };
        let interval = interval_us.clamp(MIN_INTERVAL_US, MAX_INTERVAL_US) as u64;
        let fixed = interval * multiplier.max(1) as u64;
        let was = p.liveness;
        #[cfg(feature = "adaptive")]
        if was == Liveness::Dead {
            p.samples = Samples::EMPTY;
        } else if matches!(self.policy, Policy::Adaptive(_)) && now > p.last {
            let gap = (now.as_micros() - p.last.as_micros()).min(MAX_INTERVAL_US as u64) as u32;
            p.samples.push(gap);
        }
        if now >= p.last || was == Liveness::Dead {
            p.last = now;
        }
        p.span = p.samples.span(self.policy, interval, fixed);
        // Cannot truncate: clamped to MAX_INTERVAL_US above.
        p.interval = interval as u32;
        p.pardon_until = Instant::ZERO;
        p.liveness = Liveness::Alive;
        let due = after(p.last, div100(p.span * self.suspect_percent));
        self.schedule(slot, due);
        was != Liveness::Alive
    }

    /// Forgets `slot` (peer left or slot reused): no deadline fires for it any more.
    pub fn remove(&mut self, slot: usize) {
        let Some(p) = self.peers.get_mut(slot) else {
            return;
        };
        let pos = self.pos[slot];
        *p = Peer::EMPTY;
        if pos != NONE {
            self.heap_remove(pos as usize);
        }
    }

    /// Earliest pending deadline, O(1).
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.len == 0 {
            None
        } else {
            Some(self.heap_due[0])
        }
    }

    /// Applies the earliest deadline if it is `<= now` and returns the change; call until
    /// `None`. Only peers whose deadline passed are touched.
    pub fn handle_timeout(&mut self, now: Instant) -> Option<Expired> {
        if self.len == 0 || self.heap_due[0] > now {
            return None;
        }
        let slot = self.heap_slot[0] as usize;
        let p = &mut self.peers[slot];
        match p.liveness {
            Liveness::Alive => {
                p.liveness = Liveness::Suspect;
                let dead = after(p.last, p.span).max(p.pardon_until);
                self.heap_due[0] = dead;
                self.sift_down(0);
                Some(Expired {
                    slot,
                    to: Liveness::Suspect,
                })
            }
            _ => {
                p.liveness = Liveness::Dead;
                self.heap_remove(0);
                Some(Expired {
                    slot,
                    to: Liveness::Dead,
                })
            }
        }
    }

    /// This node was not running until `now` (its loop woke up late, e.g. the virtual
    /// machine was descheduled). A peer on the same host was frozen as well and sends its
    /// overdue heartbeat moments after it resumes, but our deadline for it may already have
    /// passed: every deadline due by `now` moves to `now` plus that peer's interval. Once per
    /// silence: a peer that already had this grace since its last heartbeat gets none, so a
    /// dead peer is declared dead at most one interval later than its bound, and only after
    /// a stall. Returns how many peers were pardoned.
    pub fn stalled(&mut self, now: Instant) -> usize {
        let mut pardoned = 0;
        // Bounded by N; each reschedule is a heap sift.
        for slot in 0..N {
            let i = self.pos[slot];
            if i == NONE || self.heap_due[i as usize] > now {
                continue;
            }
            let p = &mut self.peers[slot];
            if p.pardon_until != Instant::ZERO {
                continue;
            }
            let until = after(now, u64::from(p.interval));
            p.pardon_until = until;
            pardoned += 1;
            self.schedule(slot, until);
        }
        pardoned
    }

    pub fn liveness(&self, slot: usize) -> Liveness {
        self.peers.get(slot).map_or(Liveness::Dead, |p| p.liveness)
    }

    /// When the peer in `slot` was last heard (`Instant::ZERO` if never).
    pub fn last_heard(&self, slot: usize) -> Instant {
        self.peers.get(slot).map_or(Instant::ZERO, |p| p.last)
    }

    /// Current silent span of the peer in `slot`, microseconds.
    pub fn span_us(&self, slot: usize) -> u64 {
        self.peers.get(slot).map_or(0, |p| p.span)
    }

    /// Number of queued deadlines.
    pub fn pending(&self) -> usize {
        self.len
    }

    // Indexed 4-ary min-heap on `due`. Invariant: for `i < len`,
    // `pos[heap[i].slot] == i`; slots not queued have `pos == NONE`.

    fn entry(&self, i: usize) -> Entry {
        Entry {
            due: self.heap_due[i],
            slot: self.heap_slot[i],
        }
    }

    fn put(&mut self, i: usize, e: Entry) {
        self.heap_due[i] = e.due;
        self.heap_slot[i] = e.slot;
    }

    fn schedule(&mut self, slot: usize, due: Instant) {
        let pos = self.pos[slot];
        if pos == NONE {
            if self.len >= N {
                // Cannot happen: one entry per slot, N slots. Stay safe anyway.
                return;
            }
            let i = self.len;
            self.len += 1;
            self.put(
                i,
                Entry {
                    due,
                    slot: slot as u16,
                },
            );
            self.pos[slot] = i as u16;
            self.sift_up(i);
        } else {
            let i = pos as usize;
            let old = self.heap_due[i];
            self.heap_due[i] = due;
            if due < old {
                self.sift_up(i);
            } else {
                self.sift_down_to_leaf(i);
            }
        }
    }

    fn heap_remove(&mut self, i: usize) {
        let slot = self.heap_slot[i] as usize;
        self.pos[slot] = NONE;
        self.len -= 1;
        if i == self.len {
            return;
        }
        let moved = self.entry(self.len);
        self.put(i, moved);
        self.pos[moved.slot as usize] = i as u16;
        self.sift_down(i);
        self.sift_up(i);
    }

    fn sift_up(&mut self, mut i: usize) {
        let e = self.entry(i);
        while i > 0 {
            let parent = (i - 1) / ARITY;
            let pe = self.entry(parent);
            if pe.due <= e.due {
                break;
            }
            self.put(i, pe);
            self.pos[pe.slot as usize] = i as u16;
            i = parent;
        }
        self.put(i, e);
        self.pos[e.slot as usize] = i as u16;
    }

    /// Index of the earliest child of `i`, if it has children.
    fn min_child(&self, i: usize) -> Option<usize> {
        let first = ARITY * i + 1;
        if first >= self.len {
            return None;
        }
        let last = (first + ARITY).min(self.len);
        let mut c = first;
        for j in first + 1..last {
            if self.heap_due[j] < self.heap_due[c] {
                c = j;
            }
        }
        Some(c)
    }

    /// Floyd's bottom-up sift: a refreshed deadline usually belongs near the bottom, so walk
    /// the earliest children down to a leaf and sift up from there.
    fn sift_down_to_leaf(&mut self, mut i: usize) {
        let e = self.entry(i);
        while let Some(c) = self.min_child(i) {
            let ce = self.entry(c);
            self.put(i, ce);
            self.pos[ce.slot as usize] = i as u16;
            i = c;
        }
        self.put(i, e);
        self.pos[e.slot as usize] = i as u16;
        self.sift_up(i);
    }

    fn sift_down(&mut self, mut i: usize) {
        let e = self.entry(i);
        while let Some(c) = self.min_child(i) {
            let ce = self.entry(c);
            if e.due <= ce.due {
                break;
            }
            self.put(i, ce);
            self.pos[ce.slot as usize] = i as u16;
            i = c;
        }
        self.put(i, e);
        self.pos[e.slot as usize] = i as u16;
    }
}

#[cfg(feature = "adaptive")]
/// Square root within 0.01%: the classic reciprocal-square-root bit trick plus two Newton
/// steps, in `f32` (no libm in no_std; about 3x cheaper than `u64::isqrt` here).
/// Inputs here are variances of clamped samples (< 2^52), so going through `i64` (one
/// instruction each way on x86-64, unlike `u64`) loses nothing; anything larger would give a
/// NaN that saturates to 0, never a panic.
fn sqrt_approx(x: u64) -> u64 {
    let f = x as i64 as f32;
    let mut y = f32::from_bits(0x5F37_59DF - (f.to_bits() >> 1));
    y *= 1.5 - 0.5 * f * y * y;
    y *= 1.5 - 0.5 * f * y * y;
    (f * y) as i64 as u64
}

/// `x / 100`. A 32-bit target has no 64-bit divide: there it is long division in three
/// 32-bit steps (each a multiply, the divisor being constant), so no 64-bit division routine
/// (0.9 KiB of flash on a Cortex-M) is linked.
#[inline]
fn div100(x: u64) -> u64 {
    if cfg!(target_pointer_width = "64") {
        x / 100
    } else {
        div100_u32_steps(x)
    }
}

/// `x / 100` by 16-bit digits: every partial dividend is below `100 << 16`, so fits a `u32`.
fn div100_u32_steps(x: u64) -> u64 {
    let hi = (x >> 32) as u32;
    let mid = ((hi % 100) << 16) | ((x >> 16) as u32 & 0xffff);
    let lo = ((mid % 100) << 16) | (x as u32 & 0xffff);
    (u64::from(hi / 100) << 32) + (u64::from(mid / 100) << 16) + u64::from(lo / 100)
}

/// `t + us`, saturating at `Instant::NEVER` (cheaper than going through `Duration`).
fn after(t: Instant, us: u64) -> Instant {
    Instant::from_micros(t.as_micros().saturating_add(us))
}

const LN_10: f64 = core::f64::consts::LN_10;

/// z-score where the logistic phi crosses `phi`: solves
/// `y (1.5976 + 0.070566 y^2) = ln(10^phi - 1)` with Newton's method (plain float ops).
const fn z_for_phi(phi: f64) -> f64 {
    let phi = if phi < 1.0 {
        1.0
    } else if phi > 30.0 {
        30.0
    } else {
        phi
    };
    // ln(10^phi - 1) = phi ln 10 + ln(1 - x), x = 10^-phi <= 0.1.
    let x = pow10_neg(phi);
    let mut ln1mx = 0.0;
    let mut xk = x;
    let mut k = 1;
    while k <= 20 {
        ln1mx -= xk / k as f64;
        xk *= x;
        k += 1;
    }
    let c = phi * LN_10 + ln1mx;
    // g(y) is increasing and convex for y > 0 and g(c / 1.5976) >= c: Newton from there
    // decreases monotonically to the root.
    let mut y = c / 1.5976;
    let mut i = 0;
    while i < 40 {
        let g = y * (1.5976 + 0.070566 * y * y) - c;
        let dg = 1.5976 + 3.0 * 0.070566 * y * y;
        y -= g / dg;
        i += 1;
    }
    y
}

/// `10^-p` for `p` in `1..=30`: integer part by division, fraction by a Taylor series of
/// `e^{-f ln 10}` (|argument| < 2.31, 40 terms is far past f64 precision).
const fn pow10_neg(p: f64) -> f64 {
    let n = p as u32;
    let f = p - n as f64;
    let mut r = 1.0;
    let mut i = 0;
    while i < n {
        r /= 10.0;
        i += 1;
    }
    let a = -f * LN_10;
    let mut term = 1.0;
    let mut e = 1.0;
    let mut k = 1;
    while k < 40 {
        term *= a / k as f64;
        e += term;
        k += 1;
    }
    r * e
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::Rng;

    fn at(ms: u64) -> Instant {
        Instant::from_millis(ms)
    }

    fn drain(d: &mut Detector<8>, now: Instant) -> std::vec::Vec<Expired> {
        let mut v = std::vec::Vec::new();
        while let Some(e) = d.handle_timeout(now) {
            v.push(e);
        }
        v
    }

    #[test]
    fn fixed_deadlines_are_closed_form() {
        let mut d = Detector::<8>::new(Policy::Fixed, 50);
        assert_eq!(d.poll_timeout(), None);
        assert!(d.heartbeat(3, at(100), 10_000, 4)); // new peer counts as "now alive"
        assert_eq!(d.poll_timeout(), Some(at(120)));
        assert!(drain(&mut d, at(119)).is_empty());
        assert_eq!(
            drain(&mut d, at(120)),
            [Expired {
                slot: 3,
                to: Liveness::Suspect
            }]
        );
        assert_eq!(d.poll_timeout(), Some(at(140)));
        // A heartbeat while suspect revives it.
        assert!(d.heartbeat(3, at(125), 10_000, 4));
        assert_eq!(d.liveness(3), Liveness::Alive);
        assert_eq!(d.poll_timeout(), Some(at(145)));
        assert_eq!(drain(&mut d, at(1000)).len(), 2);
        assert_eq!(d.liveness(3), Liveness::Dead);
        assert_eq!(d.poll_timeout(), None);
    }

    /// A stall of our own past a peer's deadlines gives it one interval after the stall, not
    /// more: a second stall in the same silence does not extend it again, and the next
    /// heartbeat restores the normal bound.
    #[test]
    fn a_stall_pardons_overdue_peers_once_per_silence() {
        let mut d: Detector<8> = Detector::new(Policy::Fixed, 50);
        d.heartbeat(0, at(0), 2_000, 5); // suspect at 5 ms, dead at 10 ms
        d.heartbeat(1, at(0), 20_000, 5); // suspect at 50 ms: not due, untouched
        assert_eq!(d.stalled(at(17)), 1);
        assert_eq!(d.poll_timeout(), Some(at(19)));
        assert!(drain(&mut d, at(18)).is_empty());
        let e = drain(&mut d, at(19));
        assert_eq!(
            e,
            [
                Expired {
                    slot: 0,
                    to: Liveness::Suspect
                },
                Expired {
                    slot: 0,
                    to: Liveness::Dead
                }
            ]
        );
        // Heard again: a later stall pardons it once more, but only once.
        d.heartbeat(0, at(30), 2_000, 5);
        assert_eq!(d.stalled(at(36)), 1);
        assert_eq!(
            drain(&mut d, at(38)),
            [Expired {
                slot: 0,
                to: Liveness::Suspect
            }]
        );
        assert_eq!(d.stalled(at(45)), 0);
        assert_eq!(
            drain(&mut d, at(45)),
            [Expired {
                slot: 0,
                to: Liveness::Dead
            }]
        );
        // No stall: the bound is exact.
        d.heartbeat(0, at(50), 2_000, 5);
        let e = drain(&mut d, at(60));
        assert_eq!(e.iter().filter(|e| e.slot == 0).count(), 2, "{e:?}");
    }

    #[test]
    fn heap_orders_many_peers_and_touches_only_expired() {
        let mut d = Detector::<8>::new(Policy::Fixed, 100);
        for s in 0..8u64 {
            // Peer s dies at 10*(8-s) ms.
            d.heartbeat(s as usize, at(0), 1_000, (10 * (8 - s)) as u8);
        }
        assert_eq!(d.poll_timeout(), Some(at(10)));
        // suspect_percent 100: suspect and dead at the same instant.
        let ex = drain(&mut d, at(25));
        assert_eq!(ex.len(), 4);
        assert!(ex.iter().all(|e| e.slot == 7 || e.slot == 6));
        assert_eq!(d.poll_timeout(), Some(at(30)));
        d.remove(5);
        assert_eq!(d.poll_timeout(), Some(at(40)));
        assert_eq!(d.pending(), 5);
        // Refresh slot 4 (due 40) to later; order must follow.
        d.heartbeat(4, at(35), 1_000, 100);
        assert_eq!(d.poll_timeout(), Some(at(50)));
    }

    #[test]
    fn hostile_values_are_clamped() {
        let mut d = Detector::<2>::new(Policy::Fixed, 50);
        d.heartbeat(0, at(1), 0, 0);
        assert_eq!(d.span_us(0), MIN_INTERVAL_US as u64);
        d.heartbeat(1, Instant::from_micros(u64::MAX - 10), u32::MAX, u8::MAX);
        assert_eq!(d.poll_timeout(), Some(Instant::from_micros(1000 + 50)));
        assert!(!d.heartbeat(9, at(1), 1, 1)); // out of range: ignored
        d.remove(9);
    }

    #[test]
    fn phi_threshold_solves_to_known_z() {
        // Check the closed form against the logistic phi computed with std's libm.
        for phi in [1.0f64, 3.0, 8.0, 12.0] {
            let z = z_for_phi(phi);
            let e = (z * (1.5976 + 0.070566 * z * z)).exp();
            let back = (1.0 + e).log10();
            assert!((back - phi).abs() < 1e-6, "phi {phi} z {z} back {back}");
        }
        let a = Adaptive::from_phi(8.0, 0);
        assert!(
            (5200..5300).contains(&((a.z_q16 * 1000) >> 16)),
            "{}",
            a.z_q16
        );
    }

    #[test]
    #[cfg(feature = "adaptive")]
    fn adaptive_tracks_a_steady_link_and_never_exceeds_fixed() {
        let p = Adaptive::from_phi(8.0, 1_000);
        let mut d = Detector::<1>::new(Policy::Adaptive(p), 50);
        let mut t = 0;
        for _ in 0..20 {
            t += 100;
            d.heartbeat(0, at(t), 100_000, 5);
        }
        // Steady 100 ms: span = 100 ms + z * 1 ms.
        let span = d.span_us(0);
        assert_eq!(span, 100_000 + ((1_000 * p.z_q16 as u64) >> 16));
        // A very jittery link: clamped at interval * multiplier.
        for i in 0..20 {
            t += if i % 2 == 0 { 10 } else { 390 };
            d.heartbeat(0, at(t), 100_000, 5);
        }
        assert_eq!(d.span_us(0), 500_000);
    }

    #[test]
    #[cfg(feature = "adaptive")]
    fn sqrt_approx_is_close() {
        assert_eq!(sqrt_approx(0), 0);
        let mut x = 1u64;
        while x < 1 << 52 {
            for v in [x, x + x / 3, x * 2 - 1] {
                let (a, e) = (sqrt_approx(v) as f64, (v as f64).sqrt());
                assert!((a - e).abs() <= 1.0 + e * 1e-4, "{v}: {a} vs {e}");
            }
            x *= 2;
        }
    }

    #[test]
    fn div100_in_u32_steps_is_exact() {
        let mut rng = Rng::new(0x2545_F491_4F6C_DD1D);
        for v in [
            0,
            1,
            99,
            100,
            101,
            u32::MAX as u64,
            1 << 32,
            u64::MAX - 1,
            u64::MAX,
        ] {
            assert_eq!(div100_u32_steps(v), v / 100, "{v}");
        }
        for _ in 0..100_000 {
            let x = rng.next_u64();
            for v in [x, x >> 20, x >> 40] {
                assert_eq!(div100_u32_steps(v), v / 100, "{v}");
            }
        }
    }

    #[test]
    fn heap_matches_a_naive_model_under_random_operations() {
        // Model: per slot (liveness, next due); the detector must agree after every step.
        let mut d = Detector::<16>::new(Policy::Fixed, 50);
        let mut model: [(Liveness, u64, u64); 16] = [(Liveness::Dead, 0, 0); 16];
        let mut rng = Rng::new(0x2545_F491_4F6C_DD1D);
        let mut now = 0u64;
        for _ in 0..20_000 {
            let x = rng.next_u64();
            let slot = (x % 16) as usize;
            now += x >> 60; // 0..15 ms steps
            match (x >> 8) % 8 {
                0 => {
                    d.remove(slot);
                    model[slot].0 = Liveness::Dead;
                }
                1..=4 => {
                    let mult = ((x >> 16) % 8 + 1) as u8;
                    d.heartbeat(slot, at(now), 1_000, mult);
                    let span = 1_000 * mult as u64;
                    model[slot] = (Liveness::Alive, now * 1000 + span / 2, now * 1000 + span);
                }
                _ => {
                    while let Some(e) = d.handle_timeout(at(now)) {
                        let m = &mut model[e.slot];
                        assert!(m.0 != Liveness::Dead);
                        if m.0 == Liveness::Alive {
                            assert!(m.1 <= now * 1000);
                            m.0 = Liveness::Suspect;
                        } else {
                            assert!(m.2 <= now * 1000);
                            m.0 = Liveness::Dead;
                        }
                        assert_eq!(e.to, m.0);
                    }
                }
            }
            let want = model
                .iter()
                .filter_map(|m| match m.0 {
                    Liveness::Alive => Some(m.1),
                    Liveness::Suspect => Some(m.2),
                    Liveness::Dead => None,
                })
                .min();
            assert_eq!(d.poll_timeout().map(|t| t.as_micros()), want);
            for (i, m) in model.iter().enumerate() {
                assert_eq!(d.liveness(i), m.0);
            }
        }
    }
}
