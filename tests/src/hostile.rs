//! Hostile traffic on the cluster's multicast group (issue 6, scenario 7): a capture of
//! valid frames, then a bounded-time flood cycling through random bytes, truncated frames,
//! frames sealed with a wrong key, replays of the captured frames, and frames of another
//! cluster id.
//!
//! Frames are built with `tandem_core` itself, so they are exactly what a daemon parses up to
//! the point each one must fail. The flood never sends a frame a daemon could accept: the
//! only frames sealed with the cluster's real key are truncated or carry another cluster id.
//! Sending is bounded by time and by count, multicast TTL 1, from inside a test namespace.

#![allow(unsafe_code)]

use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tandem_core::crypto::{Aes128Gcm, Insecure, Keyring, Sealer, KEY_LEN};
use tandem_core::frame::{Body, HeartbeatRepr, Role, StateFlags};
use tandem_core::testing::Rng;
use tandem_core::{ClusterId, Incarnation, KeyId, NodeId, Salt};

use crate::in_netns;

/// The daemon's default group.
pub const GROUP: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(239, 255, 72, 77), 7377);

/// How many frames of each kind the flood sent.
#[derive(Clone, Copy, Debug, Default)]
pub struct Flood {
    pub random: u64,
    pub truncated: u64,
    pub wrong_key: u64,
    pub replayed: u64,
    pub other_cluster: u64,
    /// Sends the kernel refused (buffer full); not counted above.
    pub send_errors: u64,
}

impl Flood {
    pub fn total(&self) -> u64 {
        self.random + self.truncated + self.wrong_key + self.replayed + self.other_cluster
    }
}

/// Receives datagrams sent to `group` on host address `iface` inside `ns` for at most
/// `limit`, at most `max` of them: valid frames of the live cluster, for replay.
pub fn capture(
    ns: &str,
    group: SocketAddrV4,
    iface: Ipv4Addr,
    limit: Duration,
    max: usize,
) -> Vec<Vec<u8>> {
    in_netns(ns, move || {
        let Ok(s) = UdpSocket::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, group.port())) else {
            return Vec::new();
        };
        if s.join_multicast_v4(group.ip(), &iface).is_err() {
            return Vec::new();
        }
        let _ = s.set_read_timeout(Some(Duration::from_millis(50)));
        let mut out = Vec::new();
        let mut buf = [0u8; 2048];
        let start = Instant::now();
        while start.elapsed() < limit && out.len() < max {
            if let Ok((n, _)) = s.recv_from(&mut buf) {
                if let Some(d) = buf.get(..n) {
                    out.push(d.to_vec());
                }
            }
        }
        out
    })
}

/// What to flood with.
#[derive(Clone, Debug)]
pub struct Attack {
    pub group: SocketAddrV4,
    /// The cluster id under attack.
    pub cluster: u32,
    /// The cluster's real key and its id: used only for frames that must still fail
    /// (truncated, other cluster id).
    pub key_id: u8,
    pub key: [u8; KEY_LEN],
    /// Captured frames to replay.
    pub replays: Vec<Vec<u8>>,
    pub duration: Duration,
    pub max_frames: u64,
}

/// Floods the group from namespace `ns` for `attack.duration` (and at most
/// `attack.max_frames` frames), as fast as one thread can send.
pub fn flood(ns: &str, attack: Attack) -> Flood {
    let Attack {
        group,
        cluster,
        key_id,
        key,
        replays,
        duration,
        max_frames,
    } = attack;
    in_netns(ns, move || {
        // On one machine the attacker competes with its victims for the same CPUs, which an
        // attacker on its own host would not: run it at the lowest priority, so it floods
        // with whatever CPU the daemons leave (still as fast as it can).
        // SAFETY: setpriority on this thread's own tid (Linux: nice is per thread).
        unsafe {
            libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, 19);
        }
        let mut f = Flood::default();
        let Ok(s) = UdpSocket::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0)) else {
            return f;
        };
        let _ = s.set_multicast_ttl_v4(1);
        let _ = s.set_multicast_loop_v4(false);
        let _ = s.set_nonblocking(true);
        let inc = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs() as u32)
            .unwrap_or(1);
        // Sender 0x7e0f: a node id no test uses, so even an accepted frame could not pose
        // as a member (none is accepted: see the module docs).
        let me = NodeId(0x7e0f);
        let mut good: Keyring<Aes128Gcm> = Keyring::new(KeyId(key_id), key);
        let mut wrong_key = key;
        wrong_key.iter_mut().for_each(|b| *b ^= 0x5a);
        let mut wrong: Keyring<Aes128Gcm> = Keyring::new(KeyId(key_id), wrong_key);
        let mut ours = Sealer::new(ClusterId(cluster), me, Incarnation(inc), Salt([0x5a; 6]));
        let mut other = Sealer::new(
            ClusterId(cluster ^ 0x00ff_0000),
            me,
            Incarnation(inc),
            Salt([0x5a; 6]),
        );
        let hb = Body::Heartbeat(HeartbeatRepr {
            interval_us: 20_000,
            multiplier: 10,
            role: Role::Follower,
            priority: 255,
            state: StateFlags(0),
            leader: Some(me),
            view: u64::MAX >> 20,
            repl_hwm: 0,
        });
        let mut rng = Rng::new(0x9e37_79b9_7f4a_7c15);
        let mut next = move || rng.next_u64();
        let mut buf = [0u8; 1500];
        let start = Instant::now();
        let mut i = 0u64;
        while start.elapsed() < duration && i < max_frames {
            i += 1;
            let (len, counter): (usize, &mut u64) = match i % 5 {
                0 => {
                    let n = 1 + (next() % 200) as usize;
                    for b in buf.iter_mut().take(n) {
                        *b = next() as u8;
                    }
                    (n, &mut f.random)
                }
                1 => match ours.seal(&hb, &mut good, &mut buf) {
                    // Cut anywhere short of the full length: header, body or tag missing.
                    Ok(n) => ((1 + next() as usize % (n - 1)).min(n - 1), &mut f.truncated),
                    Err(_) => continue,
                },
                2 => match ours.seal(&hb, &mut wrong, &mut buf) {
                    Ok(n) => (n, &mut f.wrong_key),
                    Err(_) => continue,
                },
                3 => {
                    let Some(r) = replays.get((i / 5) as usize % replays.len().max(1)) else {
                        continue;
                    };
                    let n = r.len().min(buf.len());
                    buf[..n].copy_from_slice(&r[..n]);
                    (n, &mut f.replayed)
                }
                _ => match other.seal(&hb, &mut good, &mut buf) {
                    Ok(n) => (n, &mut f.other_cluster),
                    Err(_) => continue,
                },
            };
            match s.send_to(&buf[..len], group) {
                Ok(_) => *counter += 1,
                Err(_) => {
                    f.send_errors += 1;
                    // Socket buffer full: let the kernel drain it.
                    std::thread::yield_now();
                }
            }
        }
        f
    })
}

/// Sends `count` keyless (INSECURE) heartbeats of node `sender` of cluster `cluster` to
/// `group`, one every `every`, from namespace `ns`: what anyone on the link can forge against
/// a node running without a key. Returns how many were sent.
pub fn forge_keyless_heartbeats(
    ns: &str,
    group: SocketAddrV4,
    cluster: u32,
    sender: u16,
    count: u32,
    every: Duration,
) -> u32 {
    in_netns(ns, move || {
        let Ok(s) = UdpSocket::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0)) else {
            return 0;
        };
        let _ = s.set_multicast_ttl_v4(1);
        let inc = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs() as u32)
            .unwrap_or(1);
        let me = NodeId(sender);
        let mut keyless: Keyring<Insecure> = Keyring::new(KeyId(0), ());
        let mut sealer = Sealer::new(ClusterId(cluster), me, Incarnation(inc), Salt([0x5a; 6]));
        let hb = Body::Heartbeat(HeartbeatRepr {
            interval_us: 20_000,
            multiplier: 10,
            role: Role::Leader,
            priority: 255,
            state: StateFlags(0),
            leader: Some(me),
            view: 1,
            repl_hwm: 0,
        });
        let mut buf = [0u8; 1500];
        let mut sent = 0;
        // Bounded by `count`.
        for _ in 0..count {
            if let Ok(n) = sealer.seal(&hb, &mut keyless, &mut buf) {
                if s.send_to(&buf[..n], group).is_ok() {
                    sent += 1;
                }
            }
            std::thread::sleep(every);
        }
        sent
    })
}

/// Sends `frames` to `group` from host address `iface` inside `ns`, once each, `pace` apart
/// (at most 100,000): an attacker replaying a recording at the pace it was recorded.
/// Returns how many datagrams were sent.
pub fn replay(
    ns: &str,
    group: SocketAddrV4,
    iface: Ipv4Addr,
    frames: Vec<Vec<u8>>,
    pace: Duration,
) -> u64 {
    in_netns(ns, move || {
        let Ok(s) = UdpSocket::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0)) else {
            return 0;
        };
        let _ = s.set_multicast_ttl_v4(1);
        let _ = s.set_multicast_loop_v4(false);
        let _ = socket2::SockRef::from(&s).set_multicast_if_v4(&iface);
        let mut sent = 0u64;
        // Bounded by the count.
        for f in frames.iter().take(100_000) {
            if s.send_to(f, group).is_ok() {
                sent += 1;
            }
            std::thread::sleep(pace);
        }
        sent
    })
}

/// The sender id of a sealed frame (header bytes 10..12), if it has a header.
pub fn sender(frame: &[u8]) -> Option<u16> {
    Some(u16::from_be_bytes([*frame.get(10)?, *frame.get(11)?]))
}
