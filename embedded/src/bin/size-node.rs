//! Size configuration 3, the full `Node` (membership, leader, replication), 16 members and
//! a 16-slot retransmit ring. Its peer B is played by hand (heartbeats, acks and the answer
//! to A's challenge, sealed with the same code): A meets B, replicates writes until B acks
//! each, then B goes silent and A declares it down, which releases the last write.
#![no_std]
#![no_main]

use cortex_m_rt::entry;
use static_cell::ConstStaticCell;
use tandem_core::crypto::{Aes128Gcm, Keys, Receiver, Sealer};
use tandem_core::detector::Profile;
use tandem_core::frame::{AckRepr, Body, ChallengeRepr, HeartbeatRepr, Role, StateFlags};
use tandem_core::membership::{self, Event as MemberEvent};
use tandem_core::node::{Config, Event, Node, KEYS};
use tandem_core::replication::{self, Slot};
use tandem_core::{ClusterId, Incarnation, Instant, KeyId, NodeId, Salt};
use tandem_embedded::{
    check, exit, paint_stack, report, stack_used, stack_used_below_main, test_key, test_write,
};

const MEMBERS: usize = 16;
const RING: usize = 16;
/// Events between two drains: this loop drains after every step.
const EVENTS: usize = MEMBERS + 8;
const KEY: [u8; 16] = [0x42; 16];
const CLUSTER: ClusterId = ClusterId(7);

type FullNode = Node<Aes128Gcm, [Slot; RING], MEMBERS, [Slot; 0], EVENTS>;

// Built at compile time, all zero: in .bss, never on the stack.
static NODE: ConstStaticCell<FullNode> =
    ConstStaticCell::new(Node::zeroed([Slot::EMPTY; RING], []));
// The node's keys type (KEYS keys per role): the peer shares the node's seal and open code
// instead of linking a second copy for a one-key keyring.
static PEER_KEYS: ConstStaticCell<Keys<Aes128Gcm, KEYS>> = ConstStaticCell::new(Keys::empty());
static PEER_RX: ConstStaticCell<Receiver<MEMBERS>> =
    ConstStaticCell::new(Receiver::new(ClusterId(0)));

/// The hand-played peer: heartbeats every millisecond and an ack for every update.
struct Peer {
    sealer: Sealer,
    receiver: &'static mut Receiver<MEMBERS>,
    keyring: &'static mut Keys<Aes128Gcm, KEYS>,
}

impl Peer {
    fn send(&mut self, body: Body<'_>, a: &mut FullNode, now: Instant) {
        let mut buf = [0u8; 128];
        let len = self.sealer.seal(&body, self.keyring, &mut buf);
        check(len.is_ok(), "peer seal");
        let _ = a.handle_datagram(now, &mut buf[..len.unwrap_or(0)]);
    }

    fn heartbeat(&mut self, a: &mut FullNode, now: Instant) {
        let hb = HeartbeatRepr {
            interval_us: 1_000,
            multiplier: 5,
            role: Role::Follower,
            priority: 50,
            state: StateFlags::default(),
            leader: a.membership().leader(),
            view: a.membership().view(),
            repl_hwm: 0,
        };
        self.send(Body::Heartbeat(hb), a, now);
    }

    /// Opens what A sent; acks a SessionUpdate, answers a challenge.
    fn receive(&mut self, datagram: &mut [u8], a: &mut FullNode, now: Instant) {
        let reply = match self.receiver.receive(datagram, self.keyring) {
            Ok(f) => match f.body {
                Body::SessionUpdate(u) => Some(Body::Ack(AckRepr {
                    origin: f.header.sender,
                    origin_incarnation: f.header.incarnation,
                    rseq: u.rseq,
                })),
                Body::Challenge(c) if c.answers.is_none() => Some(Body::Challenge(ChallengeRepr {
                    target: f.header.sender,
                    target_incarnation: f.header.incarnation,
                    target_salt: f.header.salt,
                    answers: Some(f.header.seq),
                })),
                _ => None,
            },
            Err(_) => None,
        };
        if let Some(reply) = reply {
            self.send(reply, a, now);
        }
    }
}

fn step(a: &mut FullNode, peer: Option<&mut Peer>, now: Instant) {
    a.handle_timeout(now);
    let mut buf = [0u8; tandem_core::frame::MAX_DATAGRAM];
    match peer {
        Some(p) => {
            p.heartbeat(a, now);
            while let Some(t) = a.poll_transmit(now, &mut buf) {
                p.receive(&mut buf[..t.len], a, now);
            }
        }
        None => while a.poll_transmit(now, &mut buf).is_some() {},
    }
}

/// The node's configuration, in flash.
static CONFIG: Config = Config {
    cluster: CLUSTER,
    salt: Salt([1; 6]),
    membership: membership::Config::new(NodeId(1), Incarnation(1)).with_profile(Profile::FAST),
    replication: replication::Config::DEFAULT,
};

/// Takes the node's static and starts it in place (its stack use is "stack at init").
#[inline(never)]
fn init(t0: Instant) -> &'static mut FullNode {
    let a = NODE.take();
    a.start(&CONFIG, KeyId(1), KEY, t0);
    a
}

/// The hand-played peer's state, in place as well. Its key is a copy of the node's: a
/// firmware builds one key, and with one call site the AES-GCM key setup is inlined into
/// [`Node::start`], whose frame it then shares (about 0.8 KiB less stack at init).
#[inline(never)]
fn init_peer(node: &FullNode) -> Peer {
    let keyring = PEER_KEYS.take();
    if let Some(key) = node.keys().control.active_key() {
        keyring.reset(KeyId(1), *key);
    }
    let receiver = PEER_RX.take();
    receiver.reset(CLUSTER);
    Peer {
        sealer: Sealer::new(CLUSTER, NodeId(2), Incarnation(1), Salt([1; 6])),
        receiver,
        keyring,
    }
}

#[entry]
fn main() -> ! {
    paint_stack();
    let t0 = Instant::from_millis(1);
    let a = init(t0);
    report("stack.init ", stack_used_below_main() as u32);
    let mut peer = init_peer(a);

    let tick = core::time::Duration::from_millis(1);
    let mut now = t0;
    while a.live_data_peers() == 0 {
        step(a, Some(&mut peer), now);
        now = now + tick;
        check(now < Instant::from_millis(100), "meet");
    }
    let mut last = 0;
    for i in 0..20u8 {
        let key = test_key(i);
        let entry = test_write(&key, u64::from(i) + 1);
        let id = a.write(now, &entry);
        check(id.is_ok(), "write");
        last = id.map_or(0, |id| id.0);
        while a.committed() < last {
            step(a, Some(&mut peer), now);
            now = now + tick;
            check(now < Instant::from_millis(1_000), "commit");
        }
    }
    while a.poll_event().is_some() {}
    let mut down = false;
    while !down {
        step(a, None, now);
        while let Some(e) = a.poll_event() {
            down |= e == Event::Membership(MemberEvent::MemberDown { node: NodeId(2) });
        }
        now = now + tick;
        check(now < Instant::from_millis(2_000), "detect");
    }
    check(a.committed() >= last, "released");
    report("stack.max ", stack_used() as u32);
    // RAM per member: what 8 more members add to the node (compile-time constants).
    type Node8 = Node<Aes128Gcm, [Slot; RING], 8, [Slot; 0], EVENTS>;
    let per_member = (core::mem::size_of::<FullNode>() - core::mem::size_of::<Node8>()) / 8;
    report("node.bytes ", core::mem::size_of::<FullNode>() as u32);
    report("node.per_member ", per_member as u32);
    exit(true)
}
