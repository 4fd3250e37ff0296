//! Size configuration 1, heartbeat only: seal, open (with replay check) and the failure
//! detector, 16 peers. B hears A's heartbeats, then A goes silent until B declares it dead.
#![no_std]
#![no_main]

use cortex_m_rt::entry;
use static_cell::ConstStaticCell;
use tandem_core::crypto::{Aes128Gcm, Keyring, Receiver, Sealer};
use tandem_core::detector::{Detector, Liveness, Policy};
use tandem_core::frame::{Body, HeartbeatRepr, Role, StateFlags};
use tandem_core::{ClusterId, Incarnation, Instant, KeyId, NodeId, Salt};
use tandem_embedded::{check, exit, paint_stack, report, stack_used, stack_used_below_main};

const MEMBERS: usize = 16;
const KEY: [u8; 16] = [0x42; 16];

// Built at compile time, all zero: in .bss, never on the stack.
static KEYRING: ConstStaticCell<Keyring<Aes128Gcm, 1>> = ConstStaticCell::new(Keyring::empty());
static RECEIVER: ConstStaticCell<Receiver<MEMBERS>> =
    ConstStaticCell::new(Receiver::new(ClusterId(0)));
static DETECTOR: ConstStaticCell<Detector<MEMBERS>> = ConstStaticCell::new(Detector::zeroed());

type State = (
    &'static mut Keyring<Aes128Gcm, 1>,
    &'static mut Receiver<MEMBERS>,
    &'static mut Detector<MEMBERS>,
);

/// Takes the statics and starts them in place (its stack use is "stack at init").
#[inline(never)]
fn init(cluster: ClusterId) -> State {
    let keyring = KEYRING.take();
    keyring.reset(KeyId(1), KEY);
    let receiver = RECEIVER.take();
    receiver.reset(cluster);
    let detector = DETECTOR.take();
    detector.reset(Policy::Fixed, 50);
    (keyring, receiver, detector)
}

#[entry]
fn main() -> ! {
    paint_stack();
    let cluster = ClusterId(7);
    let (keyring, receiver, detector) = init(cluster);
    let mut sealer = Sealer::new(cluster, NodeId(1), Incarnation(1), Salt([1; 6]));
    report("stack.init ", stack_used_below_main() as u32);

    let hb = HeartbeatRepr {
        interval_us: 1_000,
        multiplier: 3,
        role: Role::Follower,
        priority: 100,
        state: StateFlags::default(),
        leader: None,
        view: 0,
        repl_hwm: 0,
    };
    let mut buf = [0u8; 80];
    let mut now = Instant::from_millis(1);
    for _ in 0..50 {
        let len = sealer.seal(&Body::Heartbeat(hb), keyring, &mut buf);
        check(len.is_ok(), "seal");
        let len = len.unwrap_or(0);
        // The heartbeat-only entry point: no parsing code of the other kinds is linked.
        let got = receiver.receive_heartbeat(&mut buf[..len], keyring);
        check(matches!(got, Ok((_, h)) if h == hb), "open");
        detector.heartbeat(1, now, hb.interval_us, hb.multiplier);
        now = now.saturating_add_micros(1_000);
    }
    check(detector.liveness(1) == Liveness::Alive, "alive");
    while detector.liveness(1) != Liveness::Dead {
        now = now.saturating_add_micros(100);
        while detector.handle_timeout(now).is_some() {}
        check(now < Instant::from_millis(100), "detect");
    }
    report("stack.max ", stack_used() as u32);
    exit(true)
}
