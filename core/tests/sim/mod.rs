//! The simulator harness: PRNG, network, nodes, scenarios and property checks.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};
use std::fmt;
use std::time::Duration;

use tandem_core::detector::{Policy, Profile};
use tandem_core::frame::HeartbeatRepr;
use tandem_core::membership::{Config, Event, MemberState, Membership};
pub use tandem_core::testing::Rng;
use tandem_core::{Incarnation, Instant, NodeId};

/// Member table capacity of every simulated node.
pub const CAP: usize = 8;

/// What the runs did, summed over seeds.
#[derive(Default, Debug)]
pub struct Totals {
    pub runs: u64,
    pub virtual_us: u64,
    pub deliveries: u64,
    pub crash_detections: u64,
    /// Worst crash-to-dead latency as a fraction of `bound + max delay`.
    pub worst_detect_ratio: f64,
    pub lossy_runs: u64,
    /// Deaths declared under 20% loss (each justified: a full dead span without delivery).
    pub lossy_deaths: u64,
    pub jitter_runs: u64,
    pub convergence_checks: u64,
    pub quorum_checks: u64,
    pub rejoins_checked: u64,
    pub refusals: u64,
    pub duplicate_runs: u64,
    pub partitions: u64,
    pub leaves: u64,
}

impl Totals {
    pub fn add(&mut self, o: &Totals) {
        self.runs += o.runs;
        self.virtual_us += o.virtual_us;
        self.deliveries += o.deliveries;
        self.crash_detections += o.crash_detections;
        self.worst_detect_ratio = self.worst_detect_ratio.max(o.worst_detect_ratio);
        self.lossy_runs += o.lossy_runs;
        self.lossy_deaths += o.lossy_deaths;
        self.jitter_runs += o.jitter_runs;
        self.convergence_checks += o.convergence_checks;
        self.quorum_checks += o.quorum_checks;
        self.rejoins_checked += o.rejoins_checked;
        self.refusals += o.refusals;
        self.duplicate_runs += o.duplicate_runs;
        self.partitions += o.partitions;
        self.leaves += o.leaves;
    }
}

impl fmt::Display for Totals {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "runs {} | virtual {:.1} s | deliveries {} | crash detections {} (worst {:.0}% of bound) \
             | lossy runs {} ({} justified deaths) | jitter-only runs {} | convergence checks {} \
             | quorum checks {} | rejoins checked {} | refusals {} | duplicate-id runs {} | partitions {} | leaves {}",
            self.runs,
            self.virtual_us as f64 / 1e6,
            self.deliveries,
            self.crash_detections,
            self.worst_detect_ratio * 100.0,
            self.lossy_runs,
            self.lossy_deaths,
            self.jitter_runs,
            self.convergence_checks,
            self.quorum_checks,
            self.rejoins_checked,
            self.refusals,
            self.duplicate_runs,
            self.partitions,
            self.leaves
        )
    }
}

#[derive(Clone, Copy, Debug)]
enum Msg {
    Hb(HeartbeatRepr),
    Leave,
}

#[derive(Debug)]
struct Packet {
    at: Instant,
    seq: u64,
    from: usize,
    inc: Incarnation,
    to: usize,
    msg: Msg,
}

// Min-heap on (at, seq): BinaryHeap is a max-heap, so reverse.
impl Ord for Packet {
    fn cmp(&self, o: &Self) -> Ordering {
        (o.at, o.seq).cmp(&(self.at, self.seq))
    }
}
impl PartialOrd for Packet {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl PartialEq for Packet {
    fn eq(&self, o: &Self) -> bool {
        self.cmp(o) == Ordering::Equal
    }
}
impl Eq for Packet {}

struct Node {
    cfg: Config,
    m: Option<Membership<CAP>>,
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Churn,
    Witness,
    Lossy,
    Jitter,
    Capacity,
    Duplicate,
}

#[derive(Debug)]
enum Action {
    Crash(usize),
    Restart(usize),
    Leave(usize),
    Partition(Vec<u8>),
}

struct CrashCheck {
    t: Instant,
    x: usize,
    observers: Vec<usize>,
}

struct RestartCheck {
    t: Instant,
    x: usize,
    inc: Incarnation,
    observers: Vec<(usize, bool)>,
}

struct Sim {
    seed: u64,
    rng: Rng,
    kind: Kind,
    trace: bool,
    profile: Profile,
    nodes: Vec<Node>,
    group: Vec<u8>,
    loss: f64,
    dup: f64,
    dmin: u64,
    dmax: u64,
    queue: BinaryHeap<Packet>,
    seq: u64,
    now: Instant,
    last_change: Instant,
    /// (observer, sender) -> last delivered heartbeat (time, incarnation).
    delivered: HashMap<(usize, usize), (Instant, Incarnation)>,
    events: Vec<(Instant, usize, Event)>,
    /// Nodes that reported the duplicate id (Duplicate scenario).
    duplicates_seen: std::collections::HashSet<usize>,
    /// (observer, leaver) -> incarnation that left.
    left: HashMap<(usize, usize), Incarnation>,
    crashes: Vec<CrashCheck>,
    restarts: Vec<RestartCheck>,
    totals: Totals,
}

pub fn run_seed(seed: u64, trace: bool, totals: &mut Totals) {
    let mut rng = Rng::new(seed);
    let kind = match rng.below(20) {
        0..=7 => Kind::Churn,
        8..=11 => Kind::Witness,
        12..=15 => Kind::Lossy,
        16 | 17 => Kind::Jitter,
        18 => Kind::Capacity,
        _ => Kind::Duplicate,
    };
    let profile = match (kind, rng.below(8)) {
        (Kind::Lossy | Kind::Capacity | Kind::Duplicate, _) => Profile::LAN,
        // Jitter tolerance is the fixed policy's promise; phi-accrual adapts instead.
        (Kind::Jitter, 0..=3) => Profile::FAST,
        (Kind::Jitter, _) => Profile::LAN,
        (_, 0) => Profile::WAN,
        (_, 1..=3) => Profile::FAST,
        _ => Profile::LAN,
    };
    let iv = profile.interval_us as u64;
    let bound = profile.detection_bound_us();
    let n = match kind {
        Kind::Churn => rng.range(2, 5) as usize,
        Kind::Witness => 3 + rng.below(2) as usize,
        Kind::Lossy | Kind::Jitter => rng.range(2, 4) as usize,
        Kind::Capacity => CAP + 2,
        // Node 2 twice: the last process is an impostor with node id 2.
        Kind::Duplicate => 4,
    };
    let (loss, dup, dmax) = match kind {
        Kind::Lossy => (0.2, 0.05, iv / 2),
        // Jitter up to (multiplier - 2) intervals: heartbeats still arrive within tolerance.
        Kind::Jitter => (0.0, 0.05, iv * (profile.multiplier as u64 - 2)),
        Kind::Capacity | Kind::Duplicate => (0.0, 0.0, iv / 4),
        _ => (if rng.chance(0.5) { 0.0 } else { 0.03 }, 0.05, iv / 4),
    };
    let preempt = rng.chance(0.5);
    let mut nodes = Vec::new();
    for i in 0..n {
        let mut cfg = Config::new(NodeId(i as u16 + 1), Incarnation(1));
        cfg.priority = rng.range(1, 3) as u8;
        cfg.preempt = preempt;
        cfg.profile = profile;
        if kind == Kind::Duplicate && i == 3 {
            cfg.node_id = NodeId(2);
            cfg.incarnation = Incarnation(5);
        }
        if kind == Kind::Witness {
            cfg.voters = [NodeId(1), NodeId(2), NodeId(3)].into_iter().collect();
            cfg.witness = i == 2;
        }
        nodes.push(Node { cfg, m: None });
    }
    let mut sim = Sim {
        seed,
        rng,
        kind,
        trace,
        profile,
        nodes,
        group: vec![0; n],
        loss,
        dup,
        dmin: 50,
        dmax: dmax.max(100),
        queue: BinaryHeap::new(),
        seq: 0,
        now: Instant::ZERO,
        last_change: Instant::ZERO,
        delivered: HashMap::new(),
        events: Vec::new(),
        left: HashMap::new(),
        duplicates_seen: Default::default(),
        crashes: Vec::new(),
        restarts: Vec::new(),
        totals: Totals {
            runs: 1,
            ..Totals::default()
        },
    };
    if trace {
        println!(
            "seed {seed:#x}: {n} nodes, profile {}, loss {loss}, dup {dup}, delay {}..{} us, preempt {preempt}",
            profile.name(), sim.dmin, sim.dmax
        );
    }
    // Staggered starts within one interval.
    let mut starts: Vec<(u64, usize)> = (0..n).map(|i| (sim.rng.below(iv), i)).collect();
    starts.sort_unstable();
    for (t, i) in starts {
        sim.run_until(Instant::from_micros(t));
        sim.start(i);
    }
    // Settle: hold + detection + a few delays and intervals for views to spread.
    let settle = 2 * bound + 4 * sim.dmax + 3 * iv;
    let mut t = sim.now.as_micros() + settle;
    let actions = match kind {
        Kind::Churn | Kind::Witness => sim.rng.range(3, 6),
        _ => 0,
    };
    for _ in 0..actions {
        sim.run_until(Instant::from_micros(t));
        sim.checkpoint(settle);
        let a = sim.pick_action();
        sim.apply(a);
        t += settle + sim.rng.below(bound);
    }
    let end = match kind {
        Kind::Lossy | Kind::Jitter => t + 10 * bound,
        // Enough for every node to hear every other a few times.
        Kind::Capacity => sim.now.as_micros() + 5 * iv,
        _ => t,
    };
    sim.run_until(Instant::from_micros(end));
    sim.checkpoint(settle);
    sim.finish();
    sim.totals.virtual_us = sim.now.as_micros();
    totals.add(&sim.totals);
}

impl Sim {
    fn fail(&self, what: &str) -> ! {
        panic!(
            "seed {:#x} at {} us: {what}",
            self.seed,
            self.now.as_micros()
        );
    }

    fn start(&mut self, i: usize) {
        let cfg = self.nodes[i].cfg.clone();
        if self.trace {
            println!(
                "{:>10} start node {} inc {}",
                self.now.as_micros(),
                cfg.node_id.0,
                cfg.incarnation.0
            );
        }
        self.nodes[i].m = Some(Membership::new(cfg, self.now));
        self.last_change = self.now;
    }

    fn live(&self, i: usize) -> bool {
        self.nodes[i].m.is_some()
    }

    fn pick_action(&mut self) -> Action {
        let n = self.nodes.len();
        let live: Vec<usize> = (0..n).filter(|&i| self.live(i)).collect();
        let down: Vec<usize> = (0..n).filter(|&i| !self.live(i)).collect();
        loop {
            match self.rng.below(5) {
                0 | 1 if live.len() > 1 => {
                    return Action::Crash(live[self.rng.below(live.len() as u64) as usize])
                }
                2 if !down.is_empty() => {
                    return Action::Restart(down[self.rng.below(down.len() as u64) as usize])
                }
                3 if live.len() > 1 && self.kind == Kind::Churn => {
                    return Action::Leave(live[self.rng.below(live.len() as u64) as usize])
                }
                4 => {
                    let split = self.group.iter().all(|&g| g == 0) && self.rng.chance(0.7);
                    let g = (0..n)
                        .map(|_| if split { self.rng.below(2) as u8 } else { 0 })
                        .collect();
                    return Action::Partition(g);
                }
                _ => {}
            }
        }
    }

    fn apply(&mut self, a: Action) {
        if self.trace {
            println!("{:>10} action {a:?}", self.now.as_micros());
        }
        self.last_change = self.now;
        match a {
            Action::Crash(x) => {
                let id = self.nodes[x].cfg.node_id;
                let observers = (0..self.nodes.len())
                    .filter(|&y| y != x && self.group[y] == self.group[x])
                    .filter(|&y| {
                        let st = self.nodes[y]
                            .m
                            .as_ref()
                            .and_then(|m| m.member(id))
                            .map(|m| m.state);
                        matches!(st, Some(MemberState::Alive | MemberState::Suspect))
                    })
                    .collect();
                self.crashes.push(CrashCheck {
                    t: self.now,
                    x,
                    observers,
                });
                self.nodes[x].m = None;
            }
            Action::Leave(x) => {
                self.totals.leaves += 1;
                let inc = self.nodes[x].cfg.incarnation;
                if let Some(m) = self.nodes[x].m.as_mut() {
                    let _ = m.leave(self.now);
                }
                for to in 0..self.nodes.len() {
                    if to != x {
                        let d = self.rng.range(self.dmin, self.dmax);
                        self.send(x, inc, to, Msg::Leave, d);
                    }
                }
                self.nodes[x].m = None;
            }
            Action::Restart(x) => {
                let inc = Incarnation(self.nodes[x].cfg.incarnation.0 + 1);
                self.nodes[x].cfg.incarnation = inc;
                let id = self.nodes[x].cfg.node_id;
                let observers = (0..self.nodes.len())
                    .filter(|&y| y != x && self.live(y) && self.group[y] == self.group[x])
                    .map(|y| {
                        (
                            y,
                            self.nodes[y]
                                .m
                                .as_ref()
                                .and_then(|m| m.member(id))
                                .is_some(),
                        )
                    })
                    .collect();
                self.restarts.push(RestartCheck {
                    t: self.now,
                    x,
                    inc,
                    observers,
                });
                self.start(x);
            }
            Action::Partition(g) => {
                if g.iter().any(|&x| x != 0) {
                    self.totals.partitions += 1;
                }
                self.group = g;
            }
        }
    }

    fn send(&mut self, from: usize, inc: Incarnation, to: usize, msg: Msg, delay: u64) {
        self.seq += 1;
        self.queue.push(Packet {
            at: self.now + Duration::from_micros(delay),
            seq: self.seq,
            from,
            inc,
            to,
            msg,
        });
    }

    fn broadcast(&mut self, from: usize, hb: HeartbeatRepr) {
        let inc = self.nodes[from].cfg.incarnation;
        for to in 0..self.nodes.len() {
            if to == from || self.rng.chance(self.loss) {
                continue;
            }
            let d = self.rng.range(self.dmin, self.dmax);
            self.send(from, inc, to, Msg::Hb(hb), d);
            if self.rng.chance(self.dup) {
                let d = self.rng.range(self.dmin, self.dmax);
                self.send(from, inc, to, Msg::Hb(hb), d);
            }
        }
    }

    fn run_until(&mut self, end: Instant) {
        let mut steps = 0u64;
        loop {
            let mut t = end;
            if let Some(p) = self.queue.peek() {
                t = t.min(p.at);
            }
            for n in &self.nodes {
                if let Some(x) = n.m.as_ref().and_then(|m| m.poll_timeout()) {
                    t = t.min(x);
                }
            }
            if t < self.now {
                self.fail("poll_timeout went back in time after its work was done");
            }
            self.now = t;
            self.step();
            if self.now >= end {
                return;
            }
            steps += 1;
            if steps > 10_000_000 {
                self.fail("livelock: no progress of the virtual clock");
            }
        }
    }

    fn step(&mut self) {
        let now = self.now;
        while self.queue.peek().is_some_and(|p| p.at <= now) {
            let Some(p) = self.queue.pop() else { break };
            if self.group[p.from] != self.group[p.to] {
                continue;
            }
            let from_id = self.nodes[p.from].cfg.node_id;
            let Some(m) = self.nodes[p.to].m.as_mut() else {
                continue;
            };
            self.totals.deliveries += 1;
            match p.msg {
                Msg::Hb(hb) => {
                    m.handle_heartbeat(now, from_id, p.inc, &hb);
                    let e = self.delivered.entry((p.to, p.from)).or_insert((now, p.inc));
                    if p.inc >= e.1 {
                        *e = (now, p.inc);
                    }
                }
                Msg::Leave => m.handle_leave(now, from_id, p.inc),
            }
        }
        for i in 0..self.nodes.len() {
            let mut out = Vec::new();
            if let Some(m) = self.nodes[i].m.as_mut() {
                if m.poll_timeout().is_some_and(|t| t <= now) {
                    m.handle_timeout(now);
                }
                while let Some(hb) = m.poll_heartbeat(now) {
                    out.push(hb);
                }
            }
            for hb in out {
                self.broadcast(i, hb);
            }
            let mut evs = Vec::new();
            if let Some(m) = self.nodes[i].m.as_mut() {
                while let Some(e) = m.poll_event() {
                    evs.push(e);
                }
            }
            for e in evs {
                self.on_event(i, e);
            }
        }
    }

    fn on_event(&mut self, y: usize, e: Event) {
        if self.trace {
            println!("{:>10} node {} {e:?}", self.now.as_micros(), y + 1);
        }
        if self.kind == Kind::Duplicate {
            // Node ids do not map to processes here; only the duplicate report is checked.
            if let Event::DuplicateNodeId { node, .. } = e {
                if node == NodeId(2) {
                    self.duplicates_seen.insert(y);
                }
            }
            return;
        }
        if let Event::MemberSuspect { node } | Event::MemberDown { node } = e {
            let x = node.0 as usize - 1;
            if self.left.get(&(y, x)) == Some(&self.nodes[x].cfg.incarnation) {
                self.fail(&format!(
                    "node {} reported {e:?} after {} left",
                    y + 1,
                    x + 1
                ));
            }
        }
        match e {
            Event::MemberDown { node } => {
                let x = node.0 as usize - 1;
                self.last_change = self.now;
                // Property 2: a death needs a full dead span without any delivery.
                let last = self.delivered.get(&(y, x)).map_or(Instant::ZERO, |d| d.0);
                let silent = self.now.as_micros() - last.as_micros();
                let need = match self.profile.policy {
                    Policy::Fixed => self.profile.detection_bound_us(),
                    Policy::Adaptive(_) => self.profile.interval_us as u64,
                };
                if silent < need {
                    self.fail(&format!(
                        "node {} declared {} dead after only {silent} us of silence (< {need})",
                        y + 1,
                        x + 1
                    ));
                }
                let connected_alive = self.live(x) && self.group[x] == self.group[y];
                if connected_alive {
                    match self.kind {
                        Kind::Jitter => self.fail(&format!(
                            "false death of {} at {} under jitter within tolerance",
                            x + 1,
                            y + 1
                        )),
                        Kind::Lossy => self.totals.lossy_deaths += 1,
                        _ => {}
                    }
                }
            }
            Event::MemberLeft { node } => {
                self.last_change = self.now;
                let x = node.0 as usize - 1;
                self.left.insert((y, x), self.nodes[x].cfg.incarnation);
            }
            Event::MemberUp { node, incarnation } => {
                self.last_change = self.now;
                // A Leave is final for its incarnation, even with heartbeats still in flight.
                if self.left.get(&(y, node.0 as usize - 1)) == Some(&incarnation) {
                    self.fail(&format!(
                        "node {} brought back {} after it left",
                        y + 1,
                        node.0
                    ));
                }
            }
            Event::MemberRejoined { .. } => self.last_change = self.now,
            Event::DuplicateNodeId { .. } => self.fail(&format!("node {} reported {e:?}", y + 1)),
            Event::Overflow => self.fail("event queue overflowed in a small cluster"),
            _ => {}
        }
        self.events.push((self.now, y, e));
    }

    fn checkpoint(&mut self, settle: u64) {
        let now = self.now;
        let bound = self.profile.detection_bound_us() + self.dmax;
        // Property 6: bounded table, one entry per node id.
        for (i, n) in self.nodes.iter().enumerate() {
            if let Some(m) = &n.m {
                let mut ids: Vec<u16> = m.members().map(|x| x.node.0).collect();
                let len = ids.len();
                ids.sort_unstable();
                ids.dedup();
                if len > CAP || ids.len() != len {
                    self.fail(&format!("node {} table broken: {ids:?} ({len})", i + 1));
                }
            }
        }
        // Property 1: crashed nodes detected in time.
        for c in std::mem::take(&mut self.crashes) {
            let id = NodeId(c.x as u16 + 1);
            for &y in &c.observers {
                let down = self
                    .events
                    .iter()
                    .find(|(t, o, e)| *o == y && *t >= c.t && *e == Event::MemberDown { node: id });
                match down {
                    Some((t, _, _)) => {
                        let lat = t.as_micros() - c.t.as_micros();
                        if lat > bound {
                            self.fail(&format!(
                                "node {} saw crash of {} after {lat} us > {bound}",
                                y + 1,
                                c.x + 1
                            ));
                        }
                        self.totals.crash_detections += 1;
                        let r = lat as f64 / bound as f64;
                        self.totals.worst_detect_ratio = self.totals.worst_detect_ratio.max(r);
                    }
                    None => self.fail(&format!("node {} never saw crash of {}", y + 1, c.x + 1)),
                }
            }
        }
        // Property 5: one rejoin per restart, no duplicate member.
        for r in std::mem::take(&mut self.restarts) {
            let id = NodeId(r.x as u16 + 1);
            for &(y, knew) in &r.observers {
                if !self.live(y) {
                    continue;
                }
                let count = |want: Event| {
                    self.events
                        .iter()
                        .filter(|(t, o, e)| *o == y && *t >= r.t && *e == want)
                        .count()
                };
                let rejoined = count(Event::MemberRejoined {
                    node: id,
                    incarnation: r.inc,
                });
                let up = count(Event::MemberUp {
                    node: id,
                    incarnation: r.inc,
                });
                let ok = if knew {
                    rejoined == 1
                } else {
                    rejoined == 0 && up >= 1
                };
                let inc = self.nodes[y]
                    .m
                    .as_ref()
                    .and_then(|m| m.member(id))
                    .map(|m| m.incarnation);
                if !ok || (self.live(r.x) && inc != Some(r.inc)) {
                    self.fail(&format!(
                        "restart of {} seen by {}: knew {knew}, rejoined {rejoined}, up {up}, table inc {inc:?}",
                        r.x + 1,
                        y + 1
                    ));
                }
                self.totals.rejoins_checked += 1;
            }
        }
        self.events.clear();
        // With more nodes than capacity each node knows a different subset: no agreement.
        if matches!(self.kind, Kind::Capacity | Kind::Duplicate)
            || now.as_micros() < self.last_change.as_micros() + settle
        {
            return;
        }
        // No zombies: a crashed or departed node is dead or left everywhere once settled (a
        // heartbeat still in flight after a Leave must not bring the member back).
        for x in (0..self.nodes.len()).filter(|&x| !self.live(x)) {
            let id = self.nodes[x].cfg.node_id;
            for y in (0..self.nodes.len()).filter(|&y| self.live(y)) {
                let st = self.nodes[y]
                    .m
                    .as_ref()
                    .and_then(|m| m.member(id))
                    .map(|m| m.state);
                if matches!(st, Some(MemberState::Alive | MemberState::Suspect)) {
                    self.fail(&format!(
                        "node {} still sees gone node {} as {st:?}",
                        y + 1,
                        x + 1
                    ));
                }
            }
        }
        // Property 3: agreement per connected group; property 4: one quorum side at most.
        let mut quorum_sides = 0;
        for g in 0..2u8 {
            let members: Vec<usize> = (0..self.nodes.len())
                .filter(|&i| self.live(i) && self.group[i] == g)
                .collect();
            let Some(&first) = members.first() else {
                continue;
            };
            let Some(m0) = self.nodes[first].m.as_ref() else {
                continue;
            };
            let (leader, view) = (m0.leader(), m0.view());
            for &i in &members {
                let Some(m) = self.nodes[i].m.as_ref() else {
                    continue;
                };
                if (m.leader(), m.view()) != (leader, view) {
                    self.fail(&format!(
                        "group {g}: node {} has ({:?}, {}) but node {} has ({leader:?}, {view})",
                        i + 1,
                        m.leader(),
                        m.view(),
                        first + 1
                    ));
                }
            }
            let isolated = members
                .iter()
                .all(|&i| self.nodes[i].m.as_ref().is_some_and(|m| m.isolated()));
            let has_candidate = members.iter().any(|&i| {
                let c = &self.nodes[i].cfg;
                !c.witness && (c.voters.is_empty() || c.voters.contains(&c.node_id))
            });
            match leader {
                Some(l) => {
                    let li = l.0 as usize - 1;
                    if !members.contains(&li) || self.nodes[li].cfg.witness {
                        self.fail(&format!(
                            "group {g} follows leader {} outside it or a witness",
                            l.0
                        ));
                    }
                }
                None if !isolated && has_candidate => {
                    self.fail(&format!("group {g} has no leader"))
                }
                None => {}
            }
            if !isolated {
                quorum_sides += 1;
            }
            self.totals.convergence_checks += 1;
        }
        if self.kind == Kind::Witness {
            if quorum_sides > 1 {
                self.fail("two partition sides both hold quorum");
            }
            self.totals.quorum_checks += 1;
        }
    }

    fn finish(&mut self) {
        match self.kind {
            Kind::Lossy => self.totals.lossy_runs += 1,
            Kind::Jitter => self.totals.jitter_runs += 1,
            Kind::Duplicate => {
                // Both processes claiming id 2 and every other node report it.
                if self.duplicates_seen.len() != self.nodes.len() {
                    self.fail(&format!(
                        "duplicate id reported only by {:?}",
                        self.duplicates_seen
                    ));
                }
                self.totals.duplicate_runs += 1;
            }
            Kind::Capacity => {
                // Property 6: every node heard CAP + 1 peers; the extra ones were refused.
                for (i, n) in self.nodes.iter().enumerate() {
                    let Some(m) = &n.m else { continue };
                    let reported = m.stats().refused > 0 && m.members().count() == CAP;
                    if !reported {
                        self.fail(&format!("node {} did not refuse the extra member", i + 1));
                    }
                    self.totals.refusals += 1;
                }
            }
            _ => {}
        }
    }
}
