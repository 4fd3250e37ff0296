//! Two tandem nodes on one Cortex-M, SysTick as their clock, sealed frames over an
//! in-memory link that loses about one datagram in eight. They find each other, elect a
//! leader, replicate writes (losses repaired by retransmission), and the survivor detects
//! its killed peer and leads. Then the docs/PROTOCOL.md test vectors are checked on target.
//! Exit status 0 only if every check passed (`run.sh`).
#![no_std]
#![no_main]

use cortex_m_rt::entry;
use cortex_m_semihosting::hprintln;
use static_cell::ConstStaticCell;
use tandem_core::crypto::{self, Aes128Gcm, Insecure, Keyring};
use tandem_core::detector::Profile;
use tandem_core::frame::{EntryRepr, Error, Frame, MAX_DATAGRAM};
use tandem_core::membership::{self, Event as MemberEvent};
use tandem_core::node::{Config, Event, Node, Received};
use tandem_core::replication::{self, Slot};
use tandem_core::{ClusterId, Incarnation, Instant, KeyId, NodeId, Salt};
use tandem_embedded::{check, exit, now, start_clock, test_key, test_write, TICK_US};

mod vectors {
    include!(concat!(env!("OUT_DIR"), "/vectors.rs"));
}

const MEMBERS: usize = 4;
const RING: usize = 8;
const WRITES: u8 = 12;
const KEY: [u8; 16] = [0x42; 16];
const CLUSTER: ClusterId = ClusterId(7);

/// Events between two drains: the loop drains after every step.
const EVENTS: usize = MEMBERS + 8;

type DemoNode = Node<Aes128Gcm, [Slot; RING], MEMBERS, [Slot; 0], EVENTS>;

// Built at compile time, all zero (in .bss), started in place: never on the stack.
static NODE_A: ConstStaticCell<DemoNode> =
    ConstStaticCell::new(Node::zeroed([Slot::EMPTY; RING], []));
static NODE_B: ConstStaticCell<DemoNode> =
    ConstStaticCell::new(Node::zeroed([Slot::EMPTY; RING], []));
static DATAGRAM: ConstStaticCell<[u8; MAX_DATAGRAM]> = ConstStaticCell::new([0; MAX_DATAGRAM]);

fn config(id: u16) -> Config {
    let mut m = membership::Config::new(NodeId(id), Incarnation(1));
    m.profile = Profile::FAST;
    m.priority = 100 + id as u8;
    Config {
        cluster: CLUSTER,
        // A firmware draws it from its hardware RNG at every start.
        salt: Salt([id as u8; 6]),
        membership: m,
        replication: replication::Config::default(),
    }
}

/// The lossy link: a xorshift decides which datagrams are lost.
struct Link {
    state: u32,
    sent: u32,
    lost: u32,
}

impl Link {
    fn lose(&mut self) -> bool {
        self.state ^= self.state << 13;
        self.state ^= self.state >> 17;
        self.state ^= self.state << 5;
        self.sent += 1;
        let lost = self.state % 8 == 0;
        self.lost += u32::from(lost);
        lost
    }
}

/// What the receiving side of a direction applied: keys `k00`.. as a bit set.
#[derive(Default)]
struct Store {
    keys: u32,
}

impl Store {
    fn apply(&mut self, entry: &EntryRepr<'_>) {
        if let [b'k', a, b] = *entry.key {
            let i = u32::from(a - b'0') * 10 + u32::from(b - b'0');
            self.keys |= 1 << i;
        }
    }
}

/// One step of `from`: timers, then every datagram it sends, through the link, into `to`.
fn step(
    from: &mut DemoNode,
    to: &mut DemoNode,
    link: &mut Link,
    store: &mut Store,
    buf: &mut [u8],
) {
    let t = now();
    from.handle_timeout(t);
    while let Some(tx) = from.poll_transmit(t, buf) {
        if link.lose() {
            continue;
        }
        if let Ok(Received::Update { entry, .. } | Received::SyncEntry { entry, .. }) =
            to.handle_datagram(t, &mut buf[..tx.len])
        {
            store.apply(&entry);
        }
        while let Some((_, u)) = to.poll_delivery() {
            store.apply(&u.entry);
        }
    }
}

/// Runs both nodes (or only `a`) until `done` or `limit_ms` of SysTick time.
fn run(
    a: &mut DemoNode,
    b: Option<&mut DemoNode>,
    link: &mut Link,
    stores: &mut [Store; 2],
    buf: &mut [u8],
    limit_ms: u64,
    mut done: impl FnMut(&mut DemoNode, Option<&DemoNode>) -> bool,
) -> bool {
    let deadline = Instant::from_micros(now().as_micros() + limit_ms * 1000);
    let mut b = b;
    let [to_a, to_b] = stores;
    loop {
        match b.as_deref_mut() {
            Some(b) => {
                step(a, b, link, to_b, buf);
                step(b, a, link, to_a, buf);
            }
            None => {
                a.handle_timeout(now());
                while a.poll_transmit(now(), buf).is_some() {}
            }
        }
        if done(a, b.as_deref()) {
            return true;
        }
        if now() > deadline {
            return false;
        }
        cortex_m::asm::wfi();
    }
}

#[entry]
fn main() -> ! {
    let cp = cortex_m::Peripherals::take();
    check(cp.is_some(), "peripherals");
    let Some(cp) = cp else { exit(false) };
    start_clock(cp.SYST);
    let t0 = now();
    let a = NODE_A.take();
    a.start(&config(1), KeyId(1), KEY, t0);
    let b = NODE_B.take();
    b.start(&config(2), KeyId(1), KEY, t0);
    let buf = DATAGRAM.take();
    let mut link = Link {
        state: 0x1234_5678,
        sent: 0,
        lost: 0,
    };
    let mut stores = [Store::default(), Store::default()];

    // 1. They find each other and agree on a leader (the higher priority: node 2).
    let met = run(a, Some(b), &mut link, &mut stores, buf, 1_000, |a, b| {
        let b = b.and_then(|b| b.membership().leader());
        a.live_data_peers() == 1
            && a.membership().leader().is_some()
            && a.membership().leader() == b
    });
    check(met && b.live_data_peers() == 1, "the nodes did not meet");
    let leader = a.membership().leader();
    check(
        leader == b.membership().leader(),
        "the nodes disagree on the leader",
    );
    check(
        leader == Some(NodeId(2)),
        "the higher priority does not lead",
    );
    hprintln!(
        "met: both see leader {:?} after {} ms",
        leader,
        (now().as_micros() - t0.as_micros()) / 1000
    );

    // 2. A replicates writes; each is committed (B holds it) before the next.
    for i in 0..WRITES {
        let key = test_key(i);
        let entry = test_write(&key, u64::from(i) + 1);
        let id = a.write(now(), &entry);
        check(id.is_ok(), "write refused");
        let id = id.map_or(0, |id| id.0);
        let ok = run(a, Some(b), &mut link, &mut stores, buf, 1_000, |a, _| {
            a.committed() >= id
        });
        check(ok, "a write was not committed");
    }
    check(
        stores[1].keys == (1 << WRITES) - 1,
        "B does not hold every write",
    );
    hprintln!(
        "replicated: {} writes, {} of {} datagrams lost, {} retransmitted",
        WRITES,
        link.lost,
        link.sent,
        a.replication().stats().retransmits
    );
    check(link.lost > 0, "the link lost nothing");

    // 3. B is killed (no longer run): A declares it down and takes the lead.
    while a.poll_event().is_some() {}
    let killed = now();
    let mut down_at = None;
    let ok = run(a, None, &mut link, &mut stores, buf, 1_000, |a, _| {
        while let Some(e) = a.poll_event() {
            if e == Event::Membership(MemberEvent::MemberDown { node: NodeId(2) }) {
                down_at = Some(now());
            }
        }
        down_at.is_some() && a.membership().leader() == Some(NodeId(1))
    });
    check(ok, "the killed peer was not detected, or A does not lead");
    let detect_us = down_at.map_or(0, |t| t.as_micros() - killed.as_micros());
    let bound_us = Profile::FAST.detection_bound_us() + Profile::FAST.interval_us as u64 + TICK_US;
    hprintln!(
        "killed: A declared B down after {} us (bound {} us) and leads",
        detect_us,
        bound_us
    );
    check(
        detect_us <= bound_us,
        "detection slower than the profile's bound",
    );

    // 4. The PROTOCOL.md test vectors.
    check_vectors();
    hprintln!("vectors: {} checked", vectors::VECTORS.len());
    hprintln!("PASS");
    exit(true)
}

/// Each sealed vector opens under the test key (the insecure ones under the insecure
/// provider) to its plain vector, reseals to the same bytes, and is refused with one bit
/// flipped; each plain vector parses and emits back to itself.
fn check_vectors() {
    const TEST_KEY: [u8; 16] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15];
    let cluster = ClusterId(0xbeef);
    let plain = |name: &str| {
        let base = name.rsplit_once('-').map_or(name, |(b, _)| b);
        vectors::VECTORS
            .iter()
            .find(|(n, _)| n.strip_suffix("-plain") == Some(base))
            .map(|(_, b)| *b)
    };
    check(vectors::VECTORS.len() >= 6, "PROTOCOL.md vectors missing");
    for (name, bytes) in vectors::VECTORS {
        let mut buf = [0u8; 256];
        let mut out = [0u8; 256];
        let Some(copy) = buf.get_mut(..bytes.len()) else {
            check(false, "vector too long");
            return;
        };
        copy.copy_from_slice(bytes);
        if let Some(frame) = name.strip_prefix("run-key-") {
            // The run key of that frame's plain vector's header, derived on the target.
            let header = vectors::VECTORS
                .iter()
                .find(|(n, _)| n.strip_suffix("-plain") == Some(frame))
                .and_then(|(_, b)| Frame::parse(b).ok())
                .map(|f| f.header);
            let key = header.map(|h| crypto::run_key(&TEST_KEY, &crypto::Run::of(&h)));
            check(key.as_ref().map(|k| &k[..]) == Some(*bytes), name);
            continue;
        }
        if name.ends_with("-plain") {
            let len = Frame::parse(copy).and_then(|f| f.emit(&mut out));
            check(len.ok().and_then(|n| out.get(..n)) == Some(*bytes), name);
            continue;
        }
        let plain = plain(name);
        check(plain.is_some(), "sealed vector without its plain vector");
        let resealed = if name.ends_with("-insecure") {
            open_and_reseal(
                copy,
                cluster,
                &mut Keyring::<Insecure, 1>::new(KeyId(0), ()),
                &mut out,
            )
        } else {
            let mut keyring = Keyring::<Aes128Gcm, 1>::new(KeyId(1), TEST_KEY);
            open_and_reseal(copy, cluster, &mut keyring, &mut out)
        };
        check(
            copy.get(32..copy.len() - 16) == plain.and_then(|p| p.get(32..)),
            name,
        );
        check(resealed.and_then(|n| out.get(..n)) == Some(*bytes), name);
        if !name.ends_with("-insecure") {
            let mut keyring = Keyring::<Aes128Gcm, 1>::new(KeyId(1), TEST_KEY);
            copy.copy_from_slice(bytes);
            copy[40] ^= 0x01;
            let refused = crypto::open(copy, cluster, &mut keyring).err();
            check(refused == Some(Error::Auth), name);
        }
    }
}

/// Opens `datagram` in place and seals the frame again into `out`.
fn open_and_reseal<A: crypto::Aead>(
    datagram: &mut [u8],
    cluster: ClusterId,
    keyring: &mut Keyring<A, 1>,
    out: &mut [u8],
) -> Option<usize> {
    let f = crypto::open(datagram, cluster, keyring).ok()?;
    crypto::seal(&f.header, &f.body, keyring, out).ok()
}
