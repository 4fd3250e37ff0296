//! Size configuration 2, heartbeat + membership and leader election, 16 members: two
//! members meet over sealed heartbeats, agree on a leader, then B goes silent and A
//! declares it down.
#![no_std]
#![no_main]

use cortex_m_rt::entry;
use static_cell::ConstStaticCell;
use tandem_core::crypto::{Aes128Gcm, Keyring, Receiver, Sealer};
use tandem_core::detector::Profile;
use tandem_core::frame::{Body, Error, HeartbeatRepr, Kind, LeaveRepr};
use tandem_core::membership::{Config, Event, Membership};
use tandem_core::{ClusterId, Incarnation, Instant, KeyId, NodeId, Salt};
use tandem_embedded::{check, exit, paint_stack, report, stack_used, stack_used_below_main};

const MEMBERS: usize = 16;
/// Events between two drains: this loop drains after every step.
const EVENTS: usize = MEMBERS + 8;
const KEY: [u8; 16] = [0x42; 16];
const CLUSTER: ClusterId = ClusterId(7);

struct Member {
    membership: Membership<MEMBERS, EVENTS>,
    sealer: Sealer,
    receiver: Receiver<MEMBERS>,
}

// Built at compile time, all zero: in .bss, never on the stack.
static KEYRING: ConstStaticCell<Keyring<Aes128Gcm, 1>> = ConstStaticCell::new(Keyring::empty());
static A: ConstStaticCell<Member> = ConstStaticCell::new(Member::ZEROED);
static B: ConstStaticCell<Member> = ConstStaticCell::new(Member::ZEROED);

impl Member {
    const ZEROED: Member = Member {
        membership: Membership::zeroed(),
        sealer: Sealer::new(ClusterId(0), NodeId(0), Incarnation(0), Salt([0; 6])),
        receiver: Receiver::new(ClusterId(0)),
    };

    /// Starts member `id` in place.
    fn start(&mut self, id: u16, now: Instant) {
        let mut config = Config::new(NodeId(id), Incarnation(1));
        config.profile = Profile::FAST;
        self.membership.start(&config, now);
        self.sealer = Sealer::new(CLUSTER, NodeId(id), Incarnation(1), Salt([id as u8; 6]));
        self.receiver.reset(CLUSTER);
    }
}

/// `from`'s due heartbeat, sealed and handed to `to`.
fn step(from: &mut Member, to: &mut Member, keyring: &mut Keyring<Aes128Gcm, 1>, now: Instant) {
    from.membership.handle_timeout(now);
    let Some(hb) = from.membership.poll_heartbeat(now) else {
        return;
    };
    let mut buf = [0u8; 80];
    let Ok(len) = from.sealer.seal(&Body::Heartbeat(hb), keyring, &mut buf) else {
        check(false, "seal");
        return;
    };
    // Only the kinds membership speaks are parsed: no parsing code of the others is linked.
    match to
        .receiver
        .receive_with(&mut buf[..len], keyring, membership_kinds)
    {
        Ok((h, Body::Heartbeat(hb))) => {
            to.membership
                .handle_heartbeat(now, h.sender, h.incarnation, &hb)
        }
        Ok((h, Body::Leave(_))) => to.membership.handle_leave(now, h.sender, h.incarnation),
        _ => {}
    }
}

/// Heartbeat and Leave bodies; any other kind is unknown to this node.
fn membership_kinds(kind: Kind, body: &[u8]) -> Result<Body<'_>, Error> {
    match kind {
        Kind::Heartbeat => HeartbeatRepr::parse(body).map(Body::Heartbeat),
        Kind::Leave => LeaveRepr::parse(body).map(Body::Leave),
        _ => Err(Error::UnknownKind),
    }
}

type State = (
    &'static mut Keyring<Aes128Gcm, 1>,
    &'static mut Member,
    &'static mut Member,
);

/// Takes the statics and starts them in place (its stack use is "stack at init").
#[inline(never)]
fn init(t0: Instant) -> State {
    let keyring = KEYRING.take();
    keyring.reset(KeyId(1), KEY);
    let a = A.take();
    a.start(1, t0);
    let b = B.take();
    b.start(2, t0);
    (keyring, a, b)
}

#[entry]
fn main() -> ! {
    paint_stack();
    let t0 = Instant::from_millis(1);
    let (keyring, a, b) = init(t0);
    report("stack.init ", stack_used_below_main() as u32);

    let mut now = t0;
    let tick = core::time::Duration::from_micros(250);
    while !(a.membership.leader().is_some() && a.membership.leader() == b.membership.leader()) {
        step(a, b, keyring, now);
        step(b, a, keyring, now);
        now = now + tick;
        check(now < Instant::from_millis(200), "leader");
    }
    while a.membership.poll_event().is_some() {}
    let mut down = false;
    while !down {
        a.membership.handle_timeout(now);
        while let Some(e) = a.membership.poll_event() {
            down |= e == Event::MemberDown { node: NodeId(2) };
        }
        now = now + tick;
        check(now < Instant::from_millis(400), "detect");
    }
    check(a.membership.leader() == Some(NodeId(1)), "takeover");
    report("stack.max ", stack_used() as u32);
    exit(true)
}
