//! A userspace link emulator: delay, jitter, loss, partitions and a bounded queue between the
//! hosts of a [`Net`](crate::Net), for kernels without `sch_netem`.
//!
//! Topology: instead of a bridge, the switch namespace holds one veth port `v<i>` per host and
//! no bridge device. A thread that has joined that namespace opens one `AF_PACKET`/`SOCK_RAW`
//! socket per port, reads every L2 frame a host sends, and after a per-frame delay
//! (`delay` +/- uniform `jitter`, seeded RNG) writes it out of the port that owns the
//! destination MAC (learned from source MACs), or out of every other port for multicast,
//! broadcast and unknown destinations: a learning switch with a delay line. On the way each
//! (frame, output port) pair may be dropped: by the loss roll, by the partition matrix, or
//! when more than `queue_limit` frames are in flight.
//!
//! The kernel's offloads are turned off on both ends of every veth (`ethtool`), so frames are
//! at most MTU sized and carry full checksums: a frame re-sent from a packet socket has no
//! checksum-offload metadata.
//!
//! The thread stops when [`LinkEmu`] is dropped, or at the latest after `max_run`.
//! Parameters can be changed while it runs ([`LinkEmu::set`], [`LinkEmu::block`]).
//!
//! Panics: `start` panics if a socket cannot be opened (set-up must not half-work); the
//! forwarding loop never panics: every length comes from the kernel and is checked.
#![allow(unsafe_code)]

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::ffi::CString;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tandem_core::testing::Rng;

/// What the emulated wire does to each frame. The default is a perfect wire.
#[derive(Clone, Copy, Debug)]
pub struct LinkParams {
    /// Mean one-way delay added to every frame.
    pub delay: Duration,
    /// The delay is uniform in `[delay - jitter, delay + jitter]` (clamped at 0); frames may
    /// be reordered, as with netem.
    pub jitter: Duration,
    /// Loss per (frame, output port), in percent (0..=100).
    pub loss_percent: u32,
    /// Frames in flight beyond this are dropped (a router's queue).
    pub queue_limit: usize,
    /// RNG seed: the same seed and traffic give the same drops and delays.
    pub seed: u64,
    /// The emulator stops by itself after this long, whatever happens to the test.
    pub max_run: Duration,
}

impl Default for LinkParams {
    fn default() -> LinkParams {
        LinkParams {
            delay: Duration::ZERO,
            jitter: Duration::ZERO,
            loss_percent: 0,
            queue_limit: 10_000,
            seed: 0x7a4d_3e11,
            max_run: Duration::from_secs(600),
        }
    }
}

/// Counters of the emulator (frames per output port).
#[derive(Debug, Default)]
pub struct LinkStats {
    pub received: AtomicU64,
    pub forwarded: AtomicU64,
    pub lost: AtomicU64,
    pub partitioned: AtomicU64,
    pub queue_full: AtomicU64,
    pub send_errors: AtomicU64,
}

struct Shared {
    stop: AtomicBool,
    params: Mutex<LinkParams>,
    /// `blocked[i][j]`: frames from port i to port j are dropped.
    blocked: Mutex<Vec<Vec<bool>>>,
    stats: LinkStats,
}

/// A running emulator; stops (and joins its thread) on drop.
pub struct LinkEmu {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl LinkEmu {
    /// Starts forwarding between `ports` (interface names inside namespace `ns`). Port `k`
    /// (0-based) connects host `k + 1`.
    pub fn start(ns: &str, ports: &[String], params: LinkParams) -> LinkEmu {
        let n = ports.len();
        let shared = Arc::new(Shared {
            stop: AtomicBool::new(false),
            params: Mutex::new(params),
            blocked: Mutex::new(vec![vec![false; n]; n]),
            stats: LinkStats::default(),
        });
        let path = format!("/run/netns/{ns}");
        let nsfile = File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        let ports = ports.to_vec();
        let (tx, rx) = std::sync::mpsc::channel();
        let sh = shared.clone();
        let thread = std::thread::spawn(move || {
            // SAFETY: setns on an fd we own; it changes only this thread's namespace.
            let r = unsafe { libc::setns(nsfile.as_raw_fd(), libc::CLONE_NEWNET) };
            if r != 0 {
                let _ = tx.send(Err(format!("setns: {}", std::io::Error::last_os_error())));
                return;
            }
            let socks: Result<Vec<PacketSocket>, String> =
                ports.iter().map(|p| PacketSocket::open(p)).collect();
            match socks {
                Ok(socks) => {
                    let _ = tx.send(Ok(()));
                    run(&socks, &sh);
                }
                Err(e) => {
                    let _ = tx.send(Err(e));
                }
            }
        });
        match rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => panic!("link emulator: {e}"),
            Err(_) => panic!("link emulator thread died"),
        }
        LinkEmu {
            shared,
            thread: Some(thread),
        }
    }

    /// Replaces the parameters (`max_run` keeps its start value).
    pub fn set(&self, params: LinkParams) {
        if let Ok(mut p) = self.shared.params.lock() {
            *p = LinkParams {
                max_run: p.max_run,
                ..params
            };
        }
    }

    pub fn params(&self) -> LinkParams {
        self.shared.params.lock().map(|p| *p).unwrap_or_default()
    }

    /// Blocks (or unblocks) frames from host `from` to host `to` (1-based), one direction.
    pub fn block(&self, from: usize, to: usize, blocked: bool) {
        if let Ok(mut m) = self.shared.blocked.lock() {
            if let Some(cell) = m
                .get_mut(from.wrapping_sub(1))
                .and_then(|r| r.get_mut(to.wrapping_sub(1)))
            {
                *cell = blocked;
            }
        }
    }

    /// Unblocks every pair.
    pub fn heal(&self) {
        if let Ok(mut m) = self.shared.blocked.lock() {
            for row in m.iter_mut() {
                row.iter_mut().for_each(|c| *c = false);
            }
        }
    }

    pub fn stats(&self) -> &LinkStats {
        &self.shared.stats
    }
}

impl Drop for LinkEmu {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A raw packet socket bound to one interface.
struct PacketSocket {
    fd: i32,
}

const ETH_P_ALL_BE: u16 = (libc::ETH_P_ALL as u16).to_be();

impl PacketSocket {
    fn open(ifname: &str) -> Result<PacketSocket, String> {
        let c = CString::new(ifname).map_err(|e| e.to_string())?;
        // SAFETY: `c` is a valid NUL-terminated string.
        let ifindex = unsafe { libc::if_nametoindex(c.as_ptr()) };
        if ifindex == 0 {
            return Err(format!("{ifname}: {}", std::io::Error::last_os_error()));
        }
        // SAFETY: plain socket(2); the fd is owned by the returned value.
        let fd = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                i32::from(ETH_P_ALL_BE),
            )
        };
        if fd < 0 {
            return Err(format!(
                "packet socket: {}",
                std::io::Error::last_os_error()
            ));
        }
        let sock = PacketSocket { fd };
        // SAFETY: sockaddr_ll is plain data; all-zero is a valid value.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = ETH_P_ALL_BE;
        sll.sll_ifindex = ifindex as i32;
        // SAFETY: `sll` is a live sockaddr_ll and its exact size is passed.
        let r = unsafe {
            libc::bind(
                fd,
                (&sll as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if r != 0 {
            return Err(format!(
                "bind {ifname}: {}",
                std::io::Error::last_os_error()
            ));
        }
        Ok(sock)
    }

    /// One received frame that arrived from the wire (not one we sent): its length.
    fn recv(&self, buf: &mut [u8]) -> Option<usize> {
        loop {
            // SAFETY: sockaddr_ll is plain data; all-zero is a valid value.
            let mut from: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
            let mut len = std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
            // SAFETY: `buf` is writable for its length; `from`/`len` describe a live struct.
            let n = unsafe {
                libc::recvfrom(
                    self.fd,
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    libc::MSG_DONTWAIT | libc::MSG_TRUNC,
                    (&mut from as *mut libc::sockaddr_ll).cast(),
                    &mut len,
                )
            };
            if n < 0 {
                return None;
            }
            let n = n as usize;
            // Our own transmissions on this port, and frames larger than the buffer (cannot
            // happen with offloads off), are not forwarded.
            if from.sll_pkttype == libc::PACKET_OUTGOING || n > buf.len() || n < 14 {
                continue;
            }
            return Some(n);
        }
    }

    fn send(&self, frame: &[u8]) -> bool {
        // SAFETY: `frame` is readable for its length.
        let n = unsafe { libc::send(self.fd, frame.as_ptr().cast(), frame.len(), 0) };
        n == frame.len() as isize
    }
}

impl Drop for PacketSocket {
    fn drop(&mut self) {
        // SAFETY: the fd is ours and not used after this.
        unsafe { libc::close(self.fd) };
    }
}

/// A frame waiting in the delay line: (due, order, output port, bytes).
type Pending = Reverse<(Instant, u64, usize, Arc<[u8]>)>;

fn run(socks: &[PacketSocket], sh: &Shared) {
    let started = Instant::now();
    let max_run = sh.params.lock().map(|p| p.max_run).unwrap_or_default();
    let mut rng = Rng::new(sh.params.lock().map(|p| p.seed).unwrap_or(1) | 1);
    let mut macs: HashMap<[u8; 6], usize> = HashMap::new();
    let mut line: BinaryHeap<Pending> = BinaryHeap::new();
    let mut order = 0u64;
    let mut buf = vec![0u8; 65_536];
    let mut pfds: Vec<libc::pollfd> = socks
        .iter()
        .map(|s| libc::pollfd {
            fd: s.fd,
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    while !sh.stop.load(Ordering::Relaxed) && started.elapsed() < max_run {
        let now = Instant::now();
        // Send everything that is due.
        while let Some(Reverse((due, _, _, _))) = line.peek() {
            if *due > now {
                break;
            }
            let Some(Reverse((_, _, port, frame))) = line.pop() else {
                break;
            };
            let ok = socks.get(port).is_some_and(|s| s.send(&frame));
            let c = if ok {
                &sh.stats.forwarded
            } else {
                &sh.stats.send_errors
            };
            c.fetch_add(1, Ordering::Relaxed);
        }
        // Wait for a frame or the next due time, at most 20 ms (to notice `stop`).
        let wait = line
            .peek()
            .map(|Reverse((due, ..))| due.saturating_duration_since(now))
            .unwrap_or(Duration::from_millis(20))
            .min(Duration::from_millis(20));
        // Round up so a sub-millisecond wait does not spin at 0.
        let ms = wait.as_micros().div_ceil(1000) as i32;
        // SAFETY: `pfds` is a live array of pollfd of the length passed.
        let r = unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, ms) };
        if r <= 0 {
            continue;
        }
        let params = sh.params.lock().map(|p| *p).unwrap_or_default();
        let blocked = sh.blocked.lock().map(|m| m.clone()).unwrap_or_default();
        for (inp, pfd) in pfds.iter().enumerate() {
            if pfd.revents & libc::POLLIN == 0 {
                continue;
            }
            let Some(sock) = socks.get(inp) else { continue };
            // Bounded per wake-up so one busy port cannot starve the delay line.
            for _ in 0..256 {
                let Some(n) = sock.recv(&mut buf) else { break };
                sh.stats.received.fetch_add(1, Ordering::Relaxed);
                let Some(frame) = buf.get(..n) else { break };
                let (Some(dst), Some(src)) = (frame.get(0..6), frame.get(6..12)) else {
                    continue;
                };
                let (Ok(dst), Ok(src)) = (<[u8; 6]>::try_from(dst), <[u8; 6]>::try_from(src))
                else {
                    continue;
                };
                macs.insert(src, inp);
                let outs: Vec<usize> = match macs.get(&dst) {
                    Some(&p) if dst[0] & 1 == 0 => vec![p],
                    _ => (0..socks.len()).collect(),
                };
                let bytes: Arc<[u8]> = Arc::from(frame);
                for out in outs.into_iter().filter(|&o| o != inp) {
                    if blocked
                        .get(inp)
                        .and_then(|r| r.get(out))
                        .copied()
                        .unwrap_or(false)
                    {
                        sh.stats.partitioned.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    if rng.below(100) < u64::from(params.loss_percent) {
                        sh.stats.lost.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    if line.len() >= params.queue_limit {
                        sh.stats.queue_full.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    let j = params.jitter.as_micros() as u64;
                    let d = params.delay.as_micros() as u64;
                    let us = if j == 0 {
                        d
                    } else {
                        (d + rng.below(2 * j + 1)).saturating_sub(j)
                    };
                    order += 1;
                    line.push(Reverse((
                        Instant::now() + Duration::from_micros(us),
                        order,
                        out,
                        bytes.clone(),
                    )));
                }
            }
        }
    }
}
