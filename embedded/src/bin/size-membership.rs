//! Size configuration 2, heartbeat + membership and leader election, 16 members: two
//! members meet over sealed heartbeats, agree on a leader, then B goes silent and A
//! declares it down.
#![no_std]
#![no_main]

use cortex_m_rt::entry;
use static_cell::StaticCell;
use tandem_core::crypto::{Aes128Gcm, Keyring, Receiver, Sealer};
use tandem_core::detector::Profile;
use tandem_core::frame::Body;
use tandem_core::membership::{Config, Event, Membership};
use tandem_core::{ClusterId, Incarnation, Instant, KeyId, NodeId};
use tandem_embedded::{check, exit, paint_stack, report, stack_used};

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

static KEYRING: StaticCell<Keyring<Aes128Gcm, 1>> = StaticCell::new();
static A: StaticCell<Member> = StaticCell::new();
static B: StaticCell<Member> = StaticCell::new();

fn member(id: u16, now: Instant) -> Member {
    let mut config = Config::new(NodeId(id), Incarnation(1));
    config.profile = Profile::FAST;
    Member {
        membership: Membership::new(config, now),
        sealer: Sealer::new(CLUSTER, NodeId(id), Incarnation(1)),
        receiver: Receiver::new(CLUSTER),
    }
}

/// `from`'s due heartbeat, sealed and handed to `to`.
fn step(from: &mut Member, to: &mut Member, keyring: &Keyring<Aes128Gcm, 1>, now: Instant) {
    from.membership.handle_timeout(now);
    let Some(hb) = from.membership.poll_heartbeat(now) else {
        return;
    };
    let mut buf = [0u8; 80];
    let Ok(len) = from.sealer.seal(&Body::Heartbeat(hb), keyring, &mut buf) else {
        check(false, "seal");
        return;
    };
    if let Ok(f) = to.receiver.receive(&mut buf[..len], keyring) {
        match f.body {
            Body::Heartbeat(hb) => {
                let h = f.header;
                to.membership
                    .handle_heartbeat(now, h.sender, h.incarnation, &hb)
            }
            Body::Leave(_) => {
                let h = f.header;
                to.membership.handle_leave(now, h.sender, h.incarnation)
            }
            _ => {}
        }
    }
}

#[entry]
fn main() -> ! {
    paint_stack();
    let t0 = Instant::from_millis(1);
    let keyring = KEYRING.init_with(|| Keyring::new(KeyId(1), Aes128Gcm::new(&KEY)));
    let a = A.init_with(|| member(1, t0));
    let b = B.init_with(|| member(2, t0));
    report("stack.init ", stack_used() as u64);

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
    report("stack.max ", stack_used() as u64);
    exit(true)
}
