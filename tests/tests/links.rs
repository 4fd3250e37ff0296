//! Checks of the fault helpers themselves: the userspace link emulator (delay, loss,
//! partitions) and the nftables loss and partition rules. The daemon is not involved.
// A failed unwrap in a test is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{SocketAddr, UdpSocket};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use tandem_tests::linkemu::LinkParams;
use tandem_tests::{in_netns, Net};

const PORT: u16 = 9000;

/// Sends `count` datagrams from host `from` to host `to` (paced: 100 us apart, so no queue
/// overflows) and returns how many arrived.
fn burst(net: &Net, from: usize, to: usize, count: u32) -> u32 {
    let (ready_tx, ready_rx) = mpsc::channel();
    let ns_to = net.ns(to).to_string();
    let rx = std::thread::spawn(move || {
        in_netns(&ns_to, move || {
            let s = UdpSocket::bind(("0.0.0.0", PORT)).unwrap();
            s.set_read_timeout(Some(Duration::from_millis(500)))
                .unwrap();
            ready_tx.send(()).unwrap();
            let mut got = 0;
            let mut buf = [0u8; 64];
            // Ends after 500 ms of silence; bounded by the sender's count.
            while got < count && s.recv(&mut buf).is_ok() {
                got += 1;
            }
            got
        })
    });
    ready_rx.recv().unwrap();
    let dst = SocketAddr::from((Net::addr(to), PORT));
    in_netns(net.ns(from), move || {
        let s = UdpSocket::bind("0.0.0.0:0").unwrap();
        for i in 0..count {
            let _ = s.send_to(&i.to_be_bytes(), dst);
            std::thread::sleep(Duration::from_micros(100));
        }
    });
    rx.join().unwrap()
}

/// Smallest of `n` UDP round trips from host 1 to an echo on host 2.
fn min_rtt(net: &Net, n: u32) -> Duration {
    let ns2 = net.ns(2).to_string();
    let (ready_tx, ready_rx) = mpsc::channel();
    let echo = std::thread::spawn(move || {
        in_netns(&ns2, move || {
            let s = UdpSocket::bind(("0.0.0.0", PORT)).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            ready_tx.send(()).unwrap();
            let mut buf = [0u8; 64];
            for _ in 0..n {
                let Ok((k, from)) = s.recv_from(&mut buf) else {
                    break;
                };
                s.send_to(&buf[..k], from).unwrap();
            }
        })
    });
    ready_rx.recv().unwrap();
    let dst = SocketAddr::from((Net::addr(2), PORT));
    let best = in_netns(net.ns(1), move || {
        let s = UdpSocket::bind("0.0.0.0:0").unwrap();
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut best = Duration::MAX;
        let mut buf = [0u8; 64];
        for _ in 0..n {
            let t = Instant::now();
            s.send_to(b"x", dst).unwrap();
            s.recv(&mut buf).expect("echo lost on a lossless link");
            best = best.min(t.elapsed());
        }
        best
    });
    echo.join().unwrap();
    best
}

#[test]
fn emulated_wire_delays_every_frame() {
    let params = LinkParams {
        delay: Duration::from_millis(20),
        jitter: Duration::from_millis(2),
        ..LinkParams::default()
    };
    let Some(net) = Net::emulated(2, params) else {
        return;
    };
    // Each way is delayed at least delay - jitter = 18 ms, so no round trip beats 36 ms,
    // however fast or loaded the machine (a lower bound, not a timing).
    let rtt = min_rtt(&net, 10);
    assert!(rtt >= Duration::from_millis(36), "{rtt:?}");
    // Positive control: the same hosts without delay answer faster than that.
    net.emu.as_ref().unwrap().set(LinkParams::default());
    let fast = min_rtt(&net, 10);
    assert!(fast < Duration::from_millis(36), "{fast:?}");
    let s = net.emu.as_ref().unwrap().stats();
    assert!(s.forwarded.load(std::sync::atomic::Ordering::Relaxed) >= 40);
}

#[test]
fn emulated_wire_loses_about_the_set_share() {
    let Some(net) = Net::emulated(2, LinkParams::default()) else {
        return;
    };
    // Resolve ARP on a clean wire first: a lost ARP exchange would stall the burst for
    // the kernel's 1 s retransmit and hide the emulator's own rate.
    assert_eq!(burst(&net, 1, 2, 50), 50);
    let emu = net.emu.as_ref().unwrap();
    emu.set(LinkParams {
        loss_percent: 30,
        ..LinkParams::default()
    });
    let got = burst(&net, 1, 2, 1000);
    // Binomial(1000, 0.7): mean 700, sd 14.5; the window is +/- 7 sd.
    assert!(
        (600..=800).contains(&got),
        "{got} of 1000 arrived at 30% loss"
    );
    let lost = emu.stats().lost.load(std::sync::atomic::Ordering::Relaxed);
    assert!(lost >= u64::from(1000 - got), "{lost}");
}

#[test]
fn emulated_wire_partitions_block_and_heal() {
    let Some(net) = Net::emulated(3, LinkParams::default()) else {
        return;
    };
    let emu = net.emu.as_ref().unwrap();
    assert_eq!(burst(&net, 1, 2, 20), 20);
    emu.block(1, 2, true);
    emu.block(2, 1, true);
    assert_eq!(burst(&net, 1, 2, 20), 0);
    assert_eq!(burst(&net, 2, 1, 20), 0);
    assert_eq!(burst(&net, 1, 3, 20), 20);
    emu.heal();
    assert_eq!(burst(&net, 1, 2, 20), 20);
}

#[test]
fn nft_loss_drops_about_the_set_share_and_is_removed() {
    let Some(net) = Net::new(2) else { return };
    assert_eq!(burst(&net, 1, 2, 50), 50);
    net.loss(2, 30);
    let got = burst(&net, 1, 2, 1000);
    assert!(
        (600..=800).contains(&got),
        "{got} of 1000 arrived at 30% loss"
    );
    assert!(net.loss_dropped(2) >= 1000 - u64::from(got));
    net.loss(2, 0);
    assert_eq!(burst(&net, 1, 2, 100), 100);
}

#[test]
fn nft_partition_cuts_sides_and_heals() {
    let Some(net) = Net::new(4) else { return };
    net.partition(&[&[1], &[2, 3]]);
    assert_eq!(burst(&net, 1, 2, 10), 0);
    assert_eq!(burst(&net, 3, 1, 10), 0);
    assert_eq!(burst(&net, 2, 3, 10), 10);
    // Host 4 is on no side: it reaches both.
    assert_eq!(burst(&net, 4, 1, 10), 10);
    assert_eq!(burst(&net, 4, 2, 10), 10);
    net.heal();
    assert_eq!(burst(&net, 1, 2, 10), 10);
    assert_eq!(burst(&net, 3, 1, 10), 10);
}
