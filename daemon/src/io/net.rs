//! The cluster socket: UDP multicast, raw IP multicast or UDP unicast, with batched I/O.
//!
//! Set-up goes through socket2; what socket2 does not cover (recvmmsg/sendmmsg, the
//! SO_TIMESTAMPNS control message, getifaddrs) goes through libc. This module's `unsafe`
//! blocks, [`crate::io::memory`]'s one `prctl` and [`crate::vip::ifaddr`]'s netlink and packet
//! sockets are the only unsafe code of the daemon; each says why it is sound.
//!
//! Batches are preallocated once ([`RecvBatch`], [`SendBatch`]): no allocation per packet.
//! A datagram larger than [`SLOT_BYTES`] is reported as truncated and never handed on.
//!
//! Sending is best effort: if the socket buffer is full (EAGAIN), the rest of the batch is
//! dropped and counted. Heartbeats are soft state and replication has its own retransmission,
//! so a queue here would only age frames.
//!
//! Also here: [`DeadlineTimer`], a timerfd that wakes the loop at a deadline with microsecond
//! precision (epoll's own timeout has millisecond granularity, and mio rounds it up).
//!
//! Panics: never.
#![allow(unsafe_code)]

use std::io;
use std::mem::{size_of, MaybeUninit};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6};
use std::os::fd::{AsRawFd, RawFd};

use clap::ValueEnum;
use serde::Deserialize;
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use tandem_core::frame::{header, Kind};
use tandem_core::replication::Dest;
use tandem_core::{Incarnation, Instant, NodeId, Salt};

use crate::engine::node::MAX_PEERS;
use crate::io::clock::Clock;

/// Datagrams handled per recvmmsg/sendmmsg call.
pub const BATCH: usize = 32;
/// Bytes per datagram slot: an Ethernet MTU plus room for a raw socket's IPv4 header.
pub(crate) const SLOT_BYTES: usize = 2048;
/// Socket buffer asked for, so a burst of a few hundred frames does not drop.
const SOCKET_BUFFER_BYTES: usize = 1 << 20;
/// Control message room per slot: one `timespec` cmsg with headroom.
const CMSG_WORDS: usize = 8;

/// Why the socket could not be set up.
#[derive(Debug)]
pub enum NetError {
    /// Raw sockets need CAP_NET_RAW (a configuration problem: exit code 2).
    NeedCapNetRaw,
    /// Anything else, with the step that failed.
    Io(&'static str, io::Error),
}

impl std::fmt::Display for NetError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NetError::NeedCapNetRaw => f.write_str(
                "--transport raw needs CAP_NET_RAW (run as root, or `setcap cap_net_raw+ep tandemd`, or AmbientCapabilities=CAP_NET_RAW in the unit)",
            ),
            NetError::Io(step, e) => write!(f, "{step}: {e}"),
        }
    }
}

/// How the cluster socket reaches the others (`--transport`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TransportKind {
    /// UDP to the multicast group (default).
    Udp,
    /// Raw IP datagrams with `--protocol` to the multicast group (needs CAP_NET_RAW).
    Raw,
    /// UDP to each `--peer`, for networks without multicast.
    Unicast,
}

impl TransportKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TransportKind::Udp => "udp",
            TransportKind::Raw => "raw",
            TransportKind::Unicast => "unicast",
        }
    }
}

/// Where and how the cluster socket talks; built from the configuration
/// ([`Config::net_config`](crate::config::Config::net_config)).
#[derive(Debug, Clone)]
pub struct NetConfig {
    pub transport: TransportKind,
    /// The interface's address of the cluster's family (see [`LocalAddr`]).
    pub interface: LocalAddr,
    /// IPv4 or IPv6 (a link-scope group such as `ff02::7a6e` is scoped to the interface).
    pub group: SocketAddr,
    /// Unicast peers, all of one family (the configuration checks it).
    pub peers: Vec<SocketAddr>,
    pub listen: Option<SocketAddr>,
    pub protocol: u8,
    pub ttl: u32,
    /// Copy own multicast frames back to this host, for other nodes on it (the socket filter
    /// drops this node's own copy in the kernel).
    pub multicast_loop: bool,
    /// Heartbeats on a second socket that the loop drains on every turn instead of waking for
    /// (see [`ClusterSocket`]). Multicast transports only; meant for short intervals.
    pub split_heartbeats: bool,
}

/// The non-blocking cluster socket and where each datagram goes.
///
/// A datagram for every peer ([`Dest::All`]) goes to the group, or to each unicast peer. One
/// for one node ([`Dest::Node`]) goes to the group too on multicast transports (the others
/// drop it after opening it), and on unicast to that node's peer address alone, once the
/// node's address is known: [`ClusterSocket::learn`] maps a node to the configured peer
/// address its authenticated frames come from. Until then (it never sent us a frame, so
/// it cannot have asked for anything either) such a datagram goes to every peer.
///
/// With `split_heartbeats`, a second socket on the same group and port takes the heartbeats:
/// a kernel filter (classic BPF on the plaintext header's kind byte) gives it every
/// Heartbeat and the main socket everything else. Only the main socket wakes the loop; the
/// loop drains the heartbeat socket on every turn ([`ClusterSocket::recv_heartbeats`]),
/// before it handles timeouts. The loop turns at least once per own heartbeat interval (it
/// sends one), so a peer's heartbeat waits at most that long, and its arrival time is the
/// kernel's receive timestamp, so the detector sees the true arrival: an idle node wakes
/// once per interval instead of once per peer heartbeat. Replication, acks, sync and leave
/// frames still wake the loop at once. Multicast delivers every datagram to every socket
/// bound to the group port, which is what makes the split possible; unicast cannot split.
#[derive(Debug)]
pub struct ClusterSocket {
    socket: Socket,
    /// Heartbeats only (split mode).
    heartbeats: Option<Socket>,
    /// The group, or each unicast peer.
    dests: Vec<SockAddr>,
    framing: Framing,
    /// Unicast: which of `dests` each node sends from (at most one node per address).
    routes: Vec<(NodeId, usize)>,
    unicast: bool,
    /// Raw IPv4 sockets deliver the IP header; it is stripped on receive.
    strip_ip_header: bool,
}

/// Where the frame starts in what a socket's filter sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// UDP (IPv4 or IPv6): the filter sees the UDP header first.
    Udp,
    /// Raw IPv4: the filter sees the IPv4 header (its length from IHL) and so does recv.
    RawV4,
    /// Raw IPv6: the kernel delivers the payload alone, to the filter and to recv.
    RawV6,
}

fn io_step<T>(step: &'static str, r: io::Result<T>) -> Result<T, NetError> {
    r.map_err(|e| NetError::Io(step, e))
}

impl ClusterSocket {
    pub fn open(cfg: &NetConfig) -> Result<ClusterSocket, NetError> {
        let (socket, dests, framing) = open_socket(cfg)?;
        let mut heartbeats = None;
        if cfg.split_heartbeats && cfg.transport != TransportKind::Unicast {
            let (h, _, _) = open_socket(cfg)?;
            // Both filters or neither: a half-split would hand heartbeats over twice.
            let ok = h
                .attach_filter(&frame_filter(Kinds::Heartbeat, None, framing))
                .and_then(|()| socket.attach_filter(&frame_filter(Kinds::Other, None, framing)));
            match ok {
                Ok(()) => heartbeats = Some(h),
                Err(e) => {
                    let _ = socket.detach_filter();
                    tracing::warn!(error = %e, "no socket filter: heartbeats wake the loop");
                }
            }
        }
        Ok(ClusterSocket {
            socket,
            heartbeats,
            dests,
            framing,
            routes: Vec::new(),
            unicast: cfg.transport == TransportKind::Unicast,
            strip_ip_header: framing == Framing::RawV4,
        })
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket
            .local_addr()?
            .as_socket()
            .ok_or_else(|| io::Error::other("not an inet socket"))
    }

    /// Receives up to [`BATCH`] datagrams without blocking; returns how many slots of `batch`
    /// were filled (0 when nothing was waiting). Arrival times come from the kernel's receive
    /// timestamp when present, else `now`.
    pub fn recv_batch(
        &self,
        batch: &mut RecvBatch,
        clock: &Clock,
        now: Instant,
    ) -> io::Result<usize> {
        recv_batch_fd(
            self.socket.as_raw_fd(),
            batch,
            clock,
            now,
            self.strip_ip_header,
        )
    }

    /// Like [`ClusterSocket::recv_batch`] on the heartbeat socket (split mode; else `Ok(0)`).
    pub(crate) fn recv_heartbeats(
        &self,
        batch: &mut RecvBatch,
        clock: &Clock,
        now: Instant,
    ) -> io::Result<usize> {
        match &self.heartbeats {
            Some(h) => recv_batch_fd(h.as_raw_fd(), batch, clock, now, self.strip_ip_header),
            None => Ok(0),
        }
    }

    /// Whether heartbeats come through [`ClusterSocket::recv_heartbeats`].
    pub fn split(&self) -> bool {
        self.heartbeats.is_some()
    }

    /// Sends every queued datagram of `batch` to its destination (see the type's docs), then
    /// clears it. Returns the number of datagrams the kernel took; the rest (socket buffer
    /// full) were dropped. The batch counts what went where ([`SendBatch::sent_to`]).
    pub fn send_batch(&self, batch: &mut SendBatch) -> io::Result<usize> {
        let r = send_batch_fd(self.socket.as_raw_fd(), batch, &self.dests, |to| {
            self.targets(to)
        });
        // sendmmsg sends in order and stops at the first refusal: the first `sent` pairs of
        // (datagram, address) went out.
        let mut left = *r.as_ref().unwrap_or(&0);
        for f in 0..batch.count.min(BATCH) {
            let to = batch.to[f];
            let n = self.targets(to).len().min(left);
            left -= n;
            batch.sent_to.add(to, n as u64);
        }
        batch.clear();
        r
    }

    /// Kernel datagrams `batch` turns into (one per address of each datagram's destination).
    pub fn datagrams(&self, batch: &SendBatch) -> usize {
        batch.to[..batch.count.min(BATCH)]
            .iter()
            .map(|&to| self.targets(to).len())
            .sum()
    }

    /// Datagrams one frame for every peer turns into (one per address).
    #[cfg(test)]
    pub(crate) fn fanout(&self) -> usize {
        self.dests.len()
    }

    /// Unicast: `node`'s authenticated frames came from `source`; if that is a configured peer
    /// address, datagrams for `node` go there alone from now on. Other transports (and
    /// unknown addresses) ignore it. Call with the sender the core authenticated, never with
    /// a header's unverified sender field.
    pub(crate) fn learn(&mut self, node: NodeId, source: impl FnOnce() -> Option<SocketAddr>) {
        if !self.unicast {
            return;
        }
        let Some(src) = source() else {
            return;
        };
        let Some(i) = self.dests.iter().position(|d| d.as_socket() == Some(src)) else {
            return;
        };
        if self.routes.contains(&(node, i)) {
            return;
        }
        // One node per address and one address per node: bounded by `dests` (MAX_PEERS).
        self.routes.retain(|&(n, j)| n != node && j != i);
        self.routes.push((node, i));
    }

    /// Indices into `dests` of a datagram for `to`.
    fn targets(&self, to: Dest) -> std::ops::Range<usize> {
        let route = match to {
            Dest::Node(n) => self.routes.iter().find(|r| r.0 == n),
            Dest::All => None,
        };
        match route {
            Some(&(_, i)) => i..i + 1,
            None => 0..self.dests.len(),
        }
    }

    /// Has the kernel drop this node's own frames (sender `node` with `incarnation` and
    /// `salt` in the plaintext header) before they reach a socket queue, so a frame looped
    /// back to its sender costs no wake-up. Frames with our id but another incarnation or
    /// salt still come through (the core reports a duplicate node id from them), and so does
    /// anything too short to hold those fields (the core counts it as truncated). On error
    /// the sockets keep their previous filters.
    pub(crate) fn drop_own_frames(
        &self,
        node: NodeId,
        incarnation: Incarnation,
        salt: Salt,
    ) -> io::Result<()> {
        let own = Some((node, incarnation, salt));
        let framing = self.framing;
        match &self.heartbeats {
            Some(h) => {
                h.attach_filter(&frame_filter(Kinds::Heartbeat, own, framing))?;
                self.socket
                    .attach_filter(&frame_filter(Kinds::Other, own, framing))
            }
            None => self
                .socket
                .attach_filter(&frame_filter(Kinds::All, own, framing)),
        }
    }
}

/// Which frame kinds a socket's filter lets through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kinds {
    All,
    Heartbeat,
    /// Everything but heartbeats, including datagrams too short to have a kind.
    Other,
}

/// The plaintext header's fields the filter reads, at the core's offsets (kind u8, sender
/// u16, incarnation u32, salt 6 bytes; big-endian as cBPF loads them).
const HEADER_KIND: u32 = header::KIND as u32;
const HEADER_SENDER: u32 = header::SENDER as u32;
const HEADER_INCARNATION: u32 = header::INCARNATION as u32;
const HEADER_SALT: u32 = header::SALT as u32;
const SALT_LEN: u32 = header::SALT_LEN as u32;
const KIND_HEARTBEAT: u32 = Kind::Heartbeat as u32;
/// UDP sockets run their filter with the packet starting at the UDP header.
const UDP_HEADER: u32 = 8;

/// The classic BPF program of a cluster socket: keep `kinds`, drop frames from `own`
/// (node, incarnation, salt). A UDP socket's filter sees the packet from the UDP header; a raw
/// IPv4 socket's from the IPv4 header (its length from IHL, kept in X); a raw IPv6 socket's
/// from the frame itself.
fn frame_filter(
    kinds: Kinds,
    own: Option<(NodeId, Incarnation, Salt)>,
    framing: Framing,
) -> Vec<libc::sock_filter> {
    use libc::{
        BPF_ABS, BPF_ALU, BPF_B, BPF_H, BPF_IND, BPF_JEQ, BPF_JGE, BPF_JMP, BPF_K, BPF_LD, BPF_LDX,
        BPF_LEN, BPF_MSH, BPF_RET, BPF_SUB, BPF_W, BPF_X,
    };
    /// Where a conditional jump goes; resolved once the program's length is known.
    #[derive(Clone, Copy)]
    enum To {
        Next,
        Keep,
        Drop,
    }
    let mut prog: Vec<(u32, To, To, u32)> = Vec::with_capacity(16);
    let (mode, base) = match framing {
        Framing::RawV4 => {
            // X = IPv4 header length; A = bytes after it.
            prog.push((BPF_LDX | BPF_B | BPF_MSH, To::Next, To::Next, 0));
            prog.push((BPF_LD | BPF_W | BPF_LEN, To::Next, To::Next, 0));
            prog.push((BPF_ALU | BPF_SUB | BPF_X, To::Next, To::Next, 0));
            (BPF_IND, 0)
        }
        Framing::Udp => {
            prog.push((BPF_LD | BPF_W | BPF_LEN, To::Next, To::Next, 0));
            (BPF_ABS, UDP_HEADER)
        }
        Framing::RawV6 => {
            prog.push((BPF_LD | BPF_W | BPF_LEN, To::Next, To::Next, 0));
            (BPF_ABS, 0)
        }
    };
    // Too short for the fields: only the main socket takes it (the core counts it).
    let short = if kinds == Kinds::Heartbeat {
        To::Drop
    } else {
        To::Keep
    };
    prog.push((
        BPF_JMP | BPF_JGE | BPF_K,
        To::Next,
        short,
        base + HEADER_SALT + SALT_LEN,
    ));
    if kinds != Kinds::All {
        prog.push((
            BPF_LD | BPF_B | mode,
            To::Next,
            To::Next,
            base + HEADER_KIND,
        ));
        let (hb, other) = match kinds {
            Kinds::Heartbeat => (To::Next, To::Drop),
            _ => (To::Drop, To::Next),
        };
        prog.push((BPF_JMP | BPF_JEQ | BPF_K, hb, other, KIND_HEARTBEAT));
    }
    if let Some((node, inc, salt)) = own {
        prog.push((
            BPF_LD | BPF_H | mode,
            To::Next,
            To::Next,
            base + HEADER_SENDER,
        ));
        prog.push((
            BPF_JMP | BPF_JEQ | BPF_K,
            To::Next,
            To::Keep,
            u32::from(node.0),
        ));
        prog.push((
            BPF_LD | BPF_W | mode,
            To::Next,
            To::Next,
            base + HEADER_INCARNATION,
        ));
        prog.push((BPF_JMP | BPF_JEQ | BPF_K, To::Next, To::Keep, inc.0));
        let [s0, s1, s2, s3, s4, s5] = salt.0;
        prog.push((
            BPF_LD | BPF_W | mode,
            To::Next,
            To::Next,
            base + HEADER_SALT,
        ));
        prog.push((
            BPF_JMP | BPF_JEQ | BPF_K,
            To::Next,
            To::Keep,
            u32::from_be_bytes([s0, s1, s2, s3]),
        ));
        prog.push((
            BPF_LD | BPF_H | mode,
            To::Next,
            To::Next,
            base + HEADER_SALT + 4,
        ));
        prog.push((
            BPF_JMP | BPF_JEQ | BPF_K,
            To::Drop,
            To::Keep,
            u32::from(u16::from_be_bytes([s4, s5])),
        ));
    }
    let keep = prog.len();
    let drop = keep + 1;
    let mut out: Vec<libc::sock_filter> = prog
        .iter()
        .enumerate()
        .map(|(i, &(code, jt, jf, k))| {
            // Every jump is forward and the program is a few instructions: fits a u8.
            let off = |to: To| match to {
                To::Next => 0,
                To::Keep => (keep - i - 1) as u8,
                To::Drop => (drop - i - 1) as u8,
            };
            libc::sock_filter {
                code: code as u16,
                jt: off(jt),
                jf: off(jf),
                k,
            }
        })
        .collect();
    let ret = |k| libc::sock_filter {
        code: (BPF_RET | BPF_K) as u16,
        jt: 0,
        jf: 0,
        k,
    };
    out.push(ret(u32::MAX));
    out.push(ret(0));
    out
}

impl AsRawFd for ClusterSocket {
    fn as_raw_fd(&self) -> RawFd {
        self.socket.as_raw_fd()
    }
}

/// One non-blocking socket of `cfg`'s transport, bound (and joined to the group), with
/// receive timestamps; and the destinations of every frame.
fn open_socket(cfg: &NetConfig) -> Result<(Socket, Vec<SockAddr>, Framing), NetError> {
    let index = cfg.interface.index;
    let (socket, dests, framing) = match cfg.transport {
        TransportKind::Udp => {
            let group = scoped(cfg.group, index);
            let s = io_step(
                "udp socket",
                Socket::new(Domain::for_address(group), Type::DGRAM, Some(Protocol::UDP)),
            )?;
            // Several nodes on one host (and the heartbeat socket) share the group port:
            // SO_REUSEADDR is what lets UDP sockets bind one address and port together. Not
            // SO_REUSEPORT: the kernel's multicast early demux hands a datagram to the one
            // socket allowed to take it and then re-picks within that socket's reuseport
            // group by a hash of the addresses, so a node in a group with another program's
            // socket could be given frames from an interface it never joined, past
            // IP_MULTICAST_ALL below.
            io_step("SO_REUSEADDR", s.set_reuse_address(true))?;
            // Bound to the group address: only datagrams to the group arrive here (an IPv6
            // link-scope group also binds the socket to the interface, by its scope id).
            io_step("bind group port", s.bind(&group.into()))?;
            join_group(&s, cfg)?;
            (s, vec![SockAddr::from(group)], Framing::Udp)
        }
        TransportKind::Raw => {
            // Raw sockets have no port: bound to and sending to the group address alone.
            let group = scoped(SocketAddr::new(cfg.group.ip(), 0), index);
            let s = match Socket::new(
                Domain::for_address(group),
                Type::RAW,
                Some(Protocol::from(i32::from(cfg.protocol))),
            ) {
                Ok(s) => s,
                Err(e) if e.raw_os_error() == Some(libc::EPERM) => {
                    return Err(NetError::NeedCapNetRaw)
                }
                Err(e) => return Err(NetError::Io("raw socket", e)),
            };
            io_step("bind group address", s.bind(&group.into()))?;
            join_group(&s, cfg)?;
            let framing = if group.is_ipv6() {
                Framing::RawV6
            } else {
                Framing::RawV4
            };
            (s, vec![SockAddr::from(group)], framing)
        }
        TransportKind::Unicast => {
            let listen = scoped(
                cfg.listen
                    .unwrap_or(SocketAddr::new(cfg.interface.addr, cfg.group.port())),
                index,
            );
            let s = io_step(
                "udp socket",
                Socket::new(
                    Domain::for_address(listen),
                    Type::DGRAM,
                    Some(Protocol::UDP),
                ),
            )?;
            io_step("SO_REUSEADDR", s.set_reuse_address(true))?;
            if listen.is_ipv6() {
                // `--listen [::]:P` hears IPv6 only: the peers are IPv6 (checked in config).
                io_step("IPV6_V6ONLY", s.set_only_v6(true))?;
            }
            io_step("bind listen address", s.bind(&listen.into()))?;
            if listen.is_ipv6() {
                io_step("IPV6_UNICAST_HOPS", s.set_unicast_hops_v6(cfg.ttl))?;
            } else {
                io_step("IP_TTL", s.set_ttl(cfg.ttl))?;
            }
            let dests = cfg
                .peers
                .iter()
                .take(MAX_PEERS)
                .map(|p| SockAddr::from(scoped(*p, index)))
                .collect();
            (s, dests, Framing::Udp)
        }
    };
    io_step("O_NONBLOCK", socket.set_nonblocking(true))?;
    // Larger buffers are a wish, not a requirement (capped by net.core.*mem_max).
    let _ = socket.set_recv_buffer_size(SOCKET_BUFFER_BYTES);
    let _ = socket.set_send_buffer_size(SOCKET_BUFFER_BYTES);
    io_step("SO_TIMESTAMPNS", enable_timestamps(&socket))?;
    Ok((socket, dests, framing))
}

/// `addr` with the interface as its scope when it is an IPv6 link-scope address (`ff02::`,
/// `fe80::`): the kernel needs the scope to bind or send to one, and ignores it otherwise.
fn scoped(addr: SocketAddr, index: u32) -> SocketAddr {
    match addr {
        SocketAddr::V6(a) if a.scope_id() == 0 && link_scope(a.ip()) => {
            SocketAddr::V6(SocketAddrV6::new(*a.ip(), a.port(), a.flowinfo(), index))
        }
        other => other,
    }
}

/// Interface- or link-local multicast, or link-local unicast.
fn link_scope(ip: &Ipv6Addr) -> bool {
    let o = ip.octets();
    (o[0] == 0xff && matches!(o[1] & 0x0f, 0x01 | 0x02)) || (o[0] == 0xfe && o[1] & 0xc0 == 0x80)
}

fn join_group(s: &Socket, cfg: &NetConfig) -> Result<(), NetError> {
    let index = cfg.interface.index;
    let (group, iface) = match (cfg.group.ip(), cfg.interface.addr) {
        (IpAddr::V4(group), IpAddr::V4(iface)) => (group, iface),
        (IpAddr::V6(group), _) => {
            // The same options as IPv4 below, for the same reasons.
            io_step("IPV6_ADD_MEMBERSHIP", s.join_multicast_v6(&group, index))?;
            io_step("IPV6_MULTICAST_IF", s.set_multicast_if_v6(index))?;
            io_step("IPV6_MULTICAST_HOPS", s.set_multicast_hops_v6(cfg.ttl))?;
            io_step("IPV6_MULTICAST_ALL", s.set_multicast_all_v6(false))?;
            io_step(
                "IPV6_MULTICAST_LOOP",
                s.set_multicast_loop_v6(cfg.multicast_loop),
            )?;
            return Ok(());
        }
        (IpAddr::V4(_), IpAddr::V6(_)) => {
            return Err(NetError::Io(
                "IP_ADD_MEMBERSHIP",
                io::Error::other("an IPv4 group needs the interface's IPv4 address"),
            ))
        }
    };
    io_step("IP_ADD_MEMBERSHIP", s.join_multicast_v4(&group, &iface))?;
    io_step("IP_MULTICAST_IF", s.set_multicast_if_v4(&iface))?;
    io_step("IP_MULTICAST_TTL", s.set_multicast_ttl_v4(cfg.ttl))?;
    // Linux delivers a group's datagrams to every socket bound to it once any socket of the
    // host joined it on any interface (IP_MULTICAST_ALL defaults to 1). Off, this socket hears
    // only the group on the interface it joined: a node on `lo` never takes frames that arrive
    // on another interface of its host, where they may come from anyone.
    io_step("IP_MULTICAST_ALL", s.set_multicast_all_v4(false))?;
    // On by default, so several nodes can share one host on any interface. A node's own
    // frames come back too, and the socket filter (own node id and incarnation) drops them in
    // the kernel before they are queued, so they never wake the loop; but the copy still
    // costs the sender about a tenth of its CPU under write load, hence the opt-out.
    io_step(
        "IP_MULTICAST_LOOP",
        s.set_multicast_loop_v4(cfg.multicast_loop),
    )?;
    Ok(())
}

fn enable_timestamps(s: &Socket) -> io::Result<()> {
    let on: libc::c_int = 1;
    // SAFETY: `on` is a live c_int and its exact size is passed; the fd is owned by `s`.
    let r = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_TIMESTAMPNS,
            (&on as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Preallocated receive slots.
pub struct RecvBatch {
    bufs: Box<[[u8; SLOT_BYTES]; BATCH]>,
    /// Payload start (after a stripped IP header) and end, per filled slot.
    spans: [(usize, usize); BATCH],
    /// The datagram did not fit its slot (or its IP header was bad): not to be parsed.
    truncated: [bool; BATCH],
    arrival: [Instant; BATCH],
    cmsg: Box<[[u64; CMSG_WORDS]; BATCH]>,
    /// Source addresses (unicast learns where a node is from them).
    names: Box<[libc::sockaddr_storage; BATCH]>,
    name_lens: [libc::socklen_t; BATCH],
}

impl RecvBatch {
    pub fn new() -> RecvBatch {
        RecvBatch {
            bufs: Box::new([[0; SLOT_BYTES]; BATCH]),
            spans: [(0, 0); BATCH],
            truncated: [false; BATCH],
            arrival: [Instant::ZERO; BATCH],
            cmsg: Box::new([[0; CMSG_WORDS]; BATCH]),
            // SAFETY: sockaddr_storage is a plain C struct; all-zero is AF_UNSPEC.
            names: Box::new(unsafe { MaybeUninit::zeroed().assume_init() }),
            name_lens: [0; BATCH],
        }
    }

    /// Slot `i` of the last receive: `None` past the filled count's range is the caller's
    /// bug, so out-of-range also gives `None` rather than panicking.
    pub fn datagram(&mut self, i: usize) -> Option<Datagram<'_>> {
        let (start, end) = *self.spans.get(i)?;
        let truncated = *self.truncated.get(i)?;
        let arrival = *self.arrival.get(i)?;
        let data = self.bufs.get_mut(i)?.get_mut(start..end)?;
        Some(Datagram {
            data,
            truncated,
            arrival,
            name: (self.names.get(i)?, *self.name_lens.get(i)?),
        })
    }
}

impl Default for RecvBatch {
    fn default() -> Self {
        RecvBatch::new()
    }
}

/// One received datagram, borrowed from its slot.
pub struct Datagram<'a> {
    pub data: &'a mut [u8],
    pub truncated: bool,
    pub arrival: Instant,
    name: (&'a libc::sockaddr_storage, libc::socklen_t),
}

impl Datagram<'_> {
    /// Where the datagram came from (IPv4 or IPv6), as the kernel reported it.
    pub fn source(&self) -> Option<SocketAddr> {
        let (storage, len) = self.name;
        // SAFETY: `storage` is a whole sockaddr_storage and `len` what recvmmsg wrote, at
        // most its size (checked here too); SockAddr reads only `len` bytes of it.
        let len = len.min(size_of::<libc::sockaddr_storage>() as libc::socklen_t);
        unsafe { SockAddr::new(*storage, len) }.as_socket()
    }
}

/// Preallocated send slots: fill with [`SendBatch::slot`] + [`SendBatch::commit`].
pub struct SendBatch {
    bufs: Box<[[u8; SLOT_BYTES]; BATCH]>,
    lens: [usize; BATCH],
    to: [Dest; BATCH],
    count: usize,
    sent_to: SentTo,
}

impl SendBatch {
    pub fn new() -> SendBatch {
        SendBatch {
            bufs: Box::new([[0; SLOT_BYTES]; BATCH]),
            lens: [0; BATCH],
            to: [Dest::All; BATCH],
            count: 0,
            sent_to: SentTo::default(),
        }
    }

    /// The next free slot, or `None` when the batch is full (send it first).
    pub fn slot(&mut self) -> Option<&mut [u8]> {
        self.bufs.get_mut(self.count).map(|b| &mut b[..])
    }

    /// Queues the first `len` bytes of the slot last returned by [`SendBatch::slot`], for
    /// every peer.
    pub fn commit(&mut self, len: usize) {
        self.commit_to(len, Dest::All);
    }

    /// [`SendBatch::commit`] for destination `to`.
    pub(crate) fn commit_to(&mut self, len: usize, to: Dest) {
        if let (Some(l), Some(d)) = (self.lens.get_mut(self.count), self.to.get_mut(self.count)) {
            *l = len.min(SLOT_BYTES);
            *d = to;
            self.count += 1;
        }
    }

    /// Datagrams the kernel took so far, by destination (cumulative, for `/metrics`).
    pub(crate) fn sent_to(&self) -> &SentTo {
        &self.sent_to
    }

    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    pub fn is_full(&self) -> bool {
        self.count == BATCH
    }

    pub fn clear(&mut self) {
        self.count = 0;
    }
}

/// Datagrams sent, by the destination the core gave them: every peer, or one node.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct SentTo {
    pub all: u64,
    /// Per node, in order of first use; at most [`MAX_PEERS`] nodes...
    pub nodes: Vec<(NodeId, u64)>,
    /// ... the rest counted here.
    pub other_nodes: u64,
}

impl SentTo {
    fn add(&mut self, to: Dest, n: u64) {
        if n == 0 {
            return;
        }
        match to {
            Dest::All => self.all += n,
            Dest::Node(node) => {
                let full = self.nodes.len() >= MAX_PEERS;
                match self.nodes.iter_mut().find(|(m, _)| *m == node) {
                    Some((_, c)) => *c += n,
                    None if full => self.other_nodes += n,
                    None => self.nodes.push((node, n)),
                }
            }
        }
    }
}

impl Default for SendBatch {
    fn default() -> Self {
        SendBatch::new()
    }
}

/// recvmmsg on any datagram fd into `batch`; also used by the ingest bench for the raw rate.
pub fn recv_batch_fd(
    fd: RawFd,
    batch: &mut RecvBatch,
    clock: &Clock,
    now: Instant,
    strip_ip_header: bool,
) -> io::Result<usize> {
    // SAFETY: iovec and mmsghdr are plain C structs; all-zero is valid (null pointers, 0 lens)
    // and every pointer used by the kernel is filled in below.
    let mut iov: [libc::iovec; BATCH] = unsafe { MaybeUninit::zeroed().assume_init() };
    let mut msgs: [libc::mmsghdr; BATCH] = unsafe { MaybeUninit::zeroed().assume_init() };
    for i in 0..BATCH {
        iov[i].iov_base = batch.bufs[i].as_mut_ptr().cast();
        iov[i].iov_len = SLOT_BYTES;
        let h = &mut msgs[i].msg_hdr;
        h.msg_iov = &mut iov[i];
        h.msg_iovlen = 1;
        h.msg_control = batch.cmsg[i].as_mut_ptr().cast();
        h.msg_controllen = size_of::<[u64; CMSG_WORDS]>();
        h.msg_name = (&mut batch.names[i] as *mut libc::sockaddr_storage).cast();
        h.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    }
    // SAFETY: `msgs` holds BATCH headers whose buffers (slots, cmsg and name space) live in
    // `batch`, which is borrowed mutably for the whole call, with their true sizes.
    let n = unsafe {
        libc::recvmmsg(
            fd,
            msgs.as_mut_ptr(),
            BATCH as libc::c_uint,
            libc::MSG_DONTWAIT,
            std::ptr::null_mut(),
        )
    };
    if n < 0 {
        let e = io::Error::last_os_error();
        return match e.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Ok(0),
            _ => Err(e),
        };
    }
    let n = (n as usize).min(BATCH);
    for (i, m) in msgs.iter().enumerate().take(n) {
        let len = (m.msg_len as usize).min(SLOT_BYTES);
        let h = &m.msg_hdr;
        let mut truncated = h.msg_flags & libc::MSG_TRUNC != 0;
        let mut start = 0;
        if strip_ip_header {
            // IPv4 raw sockets deliver the header; IHL is in 32-bit words.
            match batch.bufs[i].first() {
                Some(&b) if b >> 4 == 4 && usize::from(b & 0x0f) * 4 >= 20 => {
                    start = usize::from(b & 0x0f) * 4;
                    if start > len {
                        truncated = true;
                        start = len;
                    }
                }
                _ => truncated = true,
            }
        }
        batch.spans[i] = (start, len);
        batch.name_lens[i] = h.msg_namelen;
        batch.truncated[i] = truncated;
        batch.arrival[i] = match timestamp_ns(h) {
            Some(ns) => clock.from_realtime(ns, now),
            None => now,
        };
    }
    Ok(n)
}

/// The SCM_TIMESTAMPNS value of a received message, in ns since the epoch.
fn timestamp_ns(h: &libc::msghdr) -> Option<i64> {
    // SAFETY: `h` was filled by recvmmsg; msg_control/msg_controllen describe our cmsg buffer
    // (u64-aligned), and the CMSG_* macros never step past msg_controllen.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(h);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET
                && (*c).cmsg_type == libc::SCM_TIMESTAMPNS
                && (*c).cmsg_len as usize
                    >= libc::CMSG_LEN(size_of::<libc::timespec>() as u32) as usize
            {
                let ts: libc::timespec = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast());
                // time_t and c_long are 32-bit on some targets.
                #[allow(clippy::useless_conversion)]
                let ns = i64::from(ts.tv_sec)
                    .saturating_mul(1_000_000_000)
                    .saturating_add(i64::from(ts.tv_nsec));
                return Some(ns);
            }
            c = libc::CMSG_NXTHDR(h, c);
        }
    }
    None
}

/// sendmmsg of each queued datagram to the addresses `targets` picks of `dests` for its
/// destination; stops at EAGAIN (rest dropped).
fn send_batch_fd(
    fd: RawFd,
    batch: &SendBatch,
    dests: &[SockAddr],
    targets: impl Fn(Dest) -> std::ops::Range<usize>,
) -> io::Result<usize> {
    const MAX_MSGS: usize = 64;
    // SAFETY: plain C structs, all-zero valid; pointers filled in below.
    let mut iov: [libc::iovec; MAX_MSGS] = unsafe { MaybeUninit::zeroed().assume_init() };
    let mut msgs: [libc::mmsghdr; MAX_MSGS] = unsafe { MaybeUninit::zeroed().assume_init() };
    let mut sent = 0usize;
    let pairs = (0..batch.count.min(BATCH)).flat_map(|f| {
        let range = targets(batch.to[f]);
        dests.get(range).unwrap_or(&[]).iter().map(move |d| (f, d))
    });
    let mut pairs = pairs.peekable();
    while pairs.peek().is_some() {
        let mut pending = 0usize;
        for (f, d) in pairs.by_ref().take(MAX_MSGS) {
            iov[pending].iov_base = batch.bufs[f].as_ptr() as *mut libc::c_void;
            iov[pending].iov_len = batch.lens[f];
            let h = &mut msgs[pending].msg_hdr;
            h.msg_iov = &mut iov[pending];
            h.msg_iovlen = 1;
            h.msg_name = d.as_ptr() as *mut libc::c_void;
            h.msg_namelen = d.len();
            pending += 1;
        }
        // SAFETY: the first `pending` headers point at frames in `batch` and addresses in
        // `dests`, both borrowed for the call; the kernel only reads them.
        let n = unsafe { libc::sendmmsg(fd, msgs.as_mut_ptr(), pending as libc::c_uint, 0) };
        if n < 0 {
            let e = io::Error::last_os_error();
            return match e.kind() {
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Ok(sent),
                _ if sent > 0 => Ok(sent),
                _ => Err(e),
            };
        }
        sent += n as usize;
        if (n as usize) < pending {
            break;
        }
    }
    Ok(sent)
}

/// A monotonic timerfd for the event loop: armed with the loop's next deadline, it becomes
/// readable when the deadline passes.
///
/// One system call per new deadline and none per expiry: the timer is one-shot and re-armed
/// only when the deadline changes, and the expiry count is never read (mio registers
/// edge-triggered, and each expiry of a newly armed timer is a new edge). A periodic timerfd
/// would not save the call: the kernel restarts a periodic timerfd only when it is read.
#[derive(Debug)]
pub(crate) struct DeadlineTimer {
    fd: std::os::fd::OwnedFd,
    /// The deadline the kernel holds; `None`: disarmed.
    armed: Option<Instant>,
    /// System calls made by `arm` (for tests and profiling).
    pub rearms: u64,
}

impl DeadlineTimer {
    pub fn new() -> io::Result<DeadlineTimer> {
        // SAFETY: plain syscall; on success we own the returned fd.
        let fd = unsafe {
            libc::timerfd_create(
                libc::CLOCK_MONOTONIC,
                libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a fresh descriptor nobody else owns.
        let fd = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
        Ok(DeadlineTimer {
            fd,
            armed: None,
            rearms: 0,
        })
    }

    /// Makes the timer fire at `deadline` (given `now` on the same clock); `None` disarms.
    /// A deadline at or before `now` is left to the poll timeout (zero) instead.
    /// An armed deadline still ahead and no later than the new one is kept: waking early is
    /// harmless (the loop recomputes and re-arms), and under load the deadline moves on
    /// almost every turn, which would otherwise cost a system call per turn.
    pub(crate) fn arm(&mut self, deadline: Option<Instant>, now: Instant) -> io::Result<()> {
        if deadline == self.armed {
            return Ok(());
        }
        if let Some(armed) = self.armed {
            if armed > now && deadline.is_none_or(|d| d >= armed) {
                return Ok(());
            }
        }
        let wait = match deadline {
            Some(d) if d > now => d - now,
            Some(_) => return Ok(()),
            None => std::time::Duration::ZERO, // it_value zero disarms.
        };
        let spec = libc::itimerspec {
            it_interval: libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: libc::timespec {
                tv_sec: wait.as_secs().min(i64::MAX as u64) as libc::time_t,
                tv_nsec: libc::c_long::from(wait.subsec_nanos() as i32),
            },
        };
        // SAFETY: `spec` is a valid itimerspec; a null old-value pointer is allowed.
        let r =
            unsafe { libc::timerfd_settime(self.fd.as_raw_fd(), 0, &spec, std::ptr::null_mut()) };
        self.rearms += 1;
        if r != 0 {
            self.armed = None;
            return Err(io::Error::last_os_error());
        }
        self.armed = deadline;
        Ok(())
    }

    /// The deadline the kernel holds, if any.
    pub(crate) fn armed(&self) -> Option<Instant> {
        self.armed
    }

    /// Consumes the expiry count (the loop is edge-triggered and does not need it).
    #[cfg(test)]
    fn clear(&mut self) {
        let mut count = [0u8; 8];
        // SAFETY: reads at most 8 bytes into an 8-byte buffer; non-blocking fd.
        let _ = unsafe { libc::read(self.fd.as_raw_fd(), count.as_mut_ptr().cast(), count.len()) };
    }
}

impl AsRawFd for DeadlineTimer {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// 127.0.0.0/8, `::1`, or 127.0.0.0/8 mapped into IPv6 (`::ffff:127.0.0.1`): every other
/// address (an IPv6 ULA, link-local, global or `::` included) reaches past this host.
pub(crate) fn is_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(a) => a.is_loopback(),
        IpAddr::V6(a) => a
            .to_ipv4_mapped()
            .map_or(a.is_loopback(), |v4| v4.is_loopback()),
    }
}

/// An address of `--interface` and the interface's index (IPv6 multicast and link-scope
/// addresses name the interface by index).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalAddr {
    pub addr: IpAddr,
    pub index: u32,
}

/// The address to use for `--interface`, of the family asked for (`v6`): given a name, the
/// interface's first such address (for IPv6, one that is not link-local when it has one);
/// given an address, itself if some local interface has it. `None` otherwise.
pub(crate) fn interface_addr(name_or_addr: &str, v6: bool) -> Option<LocalAddr> {
    let all = local_addrs();
    let mine: Vec<&(String, LocalAddr)> = match name_or_addr.parse::<IpAddr>() {
        Ok(a) => all.iter().filter(|(_, l)| l.addr == a).collect(),
        Err(_) => all.iter().filter(|(n, _)| n == name_or_addr).collect(),
    };
    let family = |l: &LocalAddr| l.addr.is_ipv6() == v6;
    let not_link_local = |l: &LocalAddr| match l.addr {
        IpAddr::V6(a) => !link_scope(&a),
        IpAddr::V4(_) => true,
    };
    mine.iter()
        .map(|(_, l)| *l)
        .find(|l| family(l) && not_link_local(l))
        .or_else(|| mine.iter().map(|(_, l)| *l).find(family))
}

/// Every local IPv4 and IPv6 address with its interface name and index.
fn local_addrs() -> Vec<(String, LocalAddr)> {
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs writes a list head we free below with freeifaddrs.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return Vec::new();
    }
    let mut found = Vec::new();
    let mut cur = head;
    // SAFETY: we walk the list the kernel/libc built, reading only non-null nodes and
    // addresses whose family says they are sockaddr_in or sockaddr_in6; names are
    // NUL-terminated C strings.
    unsafe {
        while !cur.is_null() {
            let ifa = &*cur;
            let addr = if ifa.ifa_addr.is_null() {
                None
            } else {
                match i32::from((*ifa.ifa_addr).sa_family) {
                    libc::AF_INET => {
                        let sin = &*(ifa.ifa_addr as *const libc::sockaddr_in);
                        Some(IpAddr::V4(Ipv4Addr::from(u32::from_be(
                            sin.sin_addr.s_addr,
                        ))))
                    }
                    libc::AF_INET6 => {
                        let sin6 = &*(ifa.ifa_addr as *const libc::sockaddr_in6);
                        Some(IpAddr::V6(Ipv6Addr::from(sin6.sin6_addr.s6_addr)))
                    }
                    _ => None,
                }
            };
            if let Some(addr) = addr {
                let index = libc::if_nametoindex(ifa.ifa_name);
                let name = std::ffi::CStr::from_ptr(ifa.ifa_name)
                    .to_string_lossy()
                    .into_owned();
                found.push((name, LocalAddr { addr, index }));
            }
            cur = ifa.ifa_next;
        }
        libc::freeifaddrs(head);
    }
    found
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // In tests a failed unwrap is a failed test.
mod tests {
    use super::*;
    use std::time::Duration;

    fn udp_cfg(port: u16) -> NetConfig {
        NetConfig {
            transport: TransportKind::Udp,
            interface: LocalAddr {
                addr: IpAddr::V4(Ipv4Addr::LOCALHOST),
                index: 1,
            },
            group: SocketAddr::from(([239, 255, 72, 78], port)),
            peers: vec![],
            listen: None,
            protocol: 0xFD,
            ttl: 1,
            multicast_loop: true,
            split_heartbeats: false,
        }
    }

    /// A unicast socket listening on loopback `port`, sending to `peers`.
    fn unicast_cfg(port: u16, peers: Vec<SocketAddr>) -> NetConfig {
        NetConfig {
            transport: TransportKind::Unicast,
            listen: Some(lo(port)),
            peers,
            ..udp_cfg(port)
        }
    }

    fn lo(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    fn recv_all(
        s: &ClusterSocket,
        batch: &mut RecvBatch,
        clock: &Clock,
        want: usize,
    ) -> Vec<Vec<u8>> {
        let mut got = Vec::new();
        // Bounded: at most 200 polls of 5 ms.
        for _ in 0..200 {
            let n = s.recv_batch(batch, clock, clock.now()).unwrap();
            for i in 0..n {
                let d = batch.datagram(i).unwrap();
                assert!(!d.truncated);
                assert!(d.arrival <= clock.now());
                got.push(d.data.to_vec());
            }
            if got.len() >= want {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        got
    }

    fn fill(batch: &mut SendBatch, frames: usize) {
        for i in 0..frames {
            let slot = batch.slot().unwrap();
            slot[..4].copy_from_slice(&(i as u32).to_be_bytes());
            batch.commit(4);
        }
    }

    #[test]
    fn deadline_timer_fires_once_armed() {
        let clock = Clock::new();
        let mut t = DeadlineTimer::new().unwrap();
        let now = clock.now();
        t.arm(Some(now + std::time::Duration::from_millis(2)), now)
            .unwrap();
        let mut fds = [libc::pollfd {
            fd: t.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        }];
        // SAFETY: one valid pollfd; bounded 1 s timeout.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), 1, 1000) };
        assert_eq!(n, 1);
        t.clear();
        assert_eq!(t.rearms, 1);
        // Disarmed: nothing within 20 ms.
        t.arm(None, clock.now()).unwrap();
        // SAFETY: as above.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), 1, 20) };
        assert_eq!(n, 0);
    }

    #[test]
    fn deadline_timer_rearms_only_for_a_new_deadline_and_fires_without_reads() {
        let clock = Clock::new();
        let mut t = DeadlineTimer::new().unwrap();
        let mut epoll = mio::Poll::new().unwrap();
        epoll
            .registry()
            .register(
                &mut mio::unix::SourceFd(&t.as_raw_fd()),
                mio::Token(0),
                mio::Interest::READABLE,
            )
            .unwrap();
        let mut events = mio::Events::with_capacity(4);
        // Three deadlines in a row, never reading the count: each one wakes the poll.
        for _ in 0..3 {
            let now = clock.now();
            let d = now + Duration::from_millis(2);
            t.arm(Some(d), now).unwrap();
            t.arm(Some(d), now).unwrap(); // same deadline: no system call
            epoll
                .poll(&mut events, Some(Duration::from_secs(1)))
                .unwrap();
            assert!(events.iter().any(|e| e.token() == mio::Token(0)));
            assert!(clock.now() >= d);
        }
        assert_eq!(t.rearms, 3);
        // Due already: left to the poll timeout.
        t.arm(Some(Instant::ZERO), clock.now()).unwrap();
        assert_eq!(t.rearms, 3);
    }

    #[test]
    fn on_loopback_other_sockets_hear_a_node_with_or_without_multicast_loop() {
        // Frames sent out of `lo` come back in through it: the option only drops the extra
        // copy on real interfaces (tests/tests/cluster.rs checks that), so several nodes on
        // loopback (the README's one-host cluster) keep hearing each other either way.
        let clock = Clock::new();
        for (port, looped) in [(47_361, true), (47_362, false)] {
            let cfg = NetConfig {
                multicast_loop: looped,
                ..udp_cfg(port)
            };
            let tx = ClusterSocket::open(&cfg).unwrap();
            let rx = ClusterSocket::open(&udp_cfg(port)).unwrap();
            let mut sb = SendBatch::new();
            fill(&mut sb, 3);
            assert_eq!(tx.send_batch(&mut sb).unwrap(), 3);
            let mut rb = RecvBatch::new();
            assert_eq!(recv_all(&rx, &mut rb, &clock, 3).len(), 3, "loop {looped}");
        }
    }

    #[test]
    fn own_frames_are_dropped_by_the_kernel_filter() {
        let clock = Clock::new();
        let cfg = udp_cfg(47_341);
        let a = ClusterSocket::open(&cfg).unwrap();
        let salt = [0xa1, 0xa2, 0xa3, 0xa4, 0xa5, 0xa6];
        a.drop_own_frames(NodeId(0x0102), Incarnation(0x0304_0506), Salt(salt))
            .unwrap();
        let frame = |sender: u16, inc: u32, salt: [u8; 6]| {
            let mut f = [0u8; 40];
            f[10..12].copy_from_slice(&sender.to_be_bytes());
            f[16..20].copy_from_slice(&inc.to_be_bytes());
            f[20..26].copy_from_slice(&salt);
            f
        };
        let mut twin_salt = salt;
        twin_salt[5] ^= 1;
        let mut sb = SendBatch::new();
        for (i, f) in [
            frame(0x0102, 0x0304_0506, salt),      // own: dropped
            frame(0x0102, 0x0304_0507, salt),      // own id, other incarnation: kept
            frame(0x0103, 0x0304_0506, salt),      // another node: kept
            frame(0x0102, 0x0304_0506, twin_salt), // own id and incarnation, a twin: kept
        ]
        .iter()
        .enumerate()
        {
            let slot = sb.slot().unwrap();
            slot[..40].copy_from_slice(f);
            slot[0] = i as u8;
            sb.commit(40);
        }
        // Too short to carry the fields: kept (the core counts it).
        sb.slot().unwrap()[0] = 4;
        sb.commit(12);
        assert_eq!(a.send_batch(&mut sb).unwrap(), 5);
        let mut rb = RecvBatch::new();
        let got = recv_all(&a, &mut rb, &clock, 4);
        let firsts: Vec<u8> = got.iter().map(|d| d[0]).collect();
        assert_eq!(firsts, vec![1, 2, 3, 4]);
    }

    #[test]
    fn split_mode_routes_heartbeats_to_their_own_socket() {
        let clock = Clock::new();
        let cfg = NetConfig {
            split_heartbeats: true,
            ..udp_cfg(47_351)
        };
        let a = ClusterSocket::open(&cfg).unwrap();
        assert!(a.split());
        a.drop_own_frames(NodeId(1), Incarnation(9), Salt([0; 6]))
            .unwrap();
        let mut sb = SendBatch::new();
        // (kind, sender, tag): heartbeat and session update from node 2, own heartbeat.
        for (kind, sender, tag) in [(0x01u8, 2u16, 10u8), (0x02, 2, 11), (0x01, 1, 12)] {
            let slot = sb.slot().unwrap();
            slot[..40].fill(0);
            slot[5] = kind;
            slot[10..12].copy_from_slice(&sender.to_be_bytes());
            slot[16..20].copy_from_slice(&9u32.to_be_bytes());
            slot[0] = tag;
            sb.commit(40);
        }
        sb.slot().unwrap()[0] = 13; // too short for a kind: the main socket's
        sb.commit(3);
        assert_eq!(a.send_batch(&mut sb).unwrap(), 4);
        let mut rb = RecvBatch::new();
        let main: Vec<u8> = recv_all(&a, &mut rb, &clock, 2)
            .iter()
            .map(|d| d[0])
            .collect();
        assert_eq!(main, vec![11, 13]);
        let n = a.recv_heartbeats(&mut rb, &clock, clock.now()).unwrap();
        assert_eq!(n, 1);
        assert_eq!(rb.datagram(0).unwrap().data[0], 10);
        assert_eq!(a.recv_heartbeats(&mut rb, &clock, clock.now()).unwrap(), 0);
        // Unicast never splits.
        let u = ClusterSocket::open(&NetConfig {
            transport: TransportKind::Unicast,
            listen: Some(SocketAddr::from(([127, 0, 0, 1], 47_352))),
            split_heartbeats: true,
            ..udp_cfg(47_352)
        })
        .unwrap();
        assert!(!u.split());
    }

    #[test]
    fn loopback_resolves() {
        let addr = |n: &str, v6| interface_addr(n, v6).map(|l| l.addr);
        assert_eq!(addr("lo", false), Some(IpAddr::V4(Ipv4Addr::LOCALHOST)));
        assert_eq!(addr("no-such-if0", false), None);
        assert_eq!(
            addr("127.0.0.1", false),
            Some(IpAddr::V4(Ipv4Addr::LOCALHOST))
        );
        assert_eq!(addr("198.51.100.77", false), None);
        // IPv6 on loopback is ::1 (unless the host has IPv6 off).
        if std::path::Path::new("/proc/net/if_inet6").exists() {
            assert_eq!(addr("lo", true), Some(IpAddr::V6(Ipv6Addr::LOCALHOST)));
            assert_eq!(addr("::1", true), Some(IpAddr::V6(Ipv6Addr::LOCALHOST)));
            assert_eq!(addr("::1", false), None);
        }
        let lo = interface_addr("lo", false).unwrap();
        assert!(lo.index > 0);
    }

    #[test]
    fn two_multicast_sockets_share_the_port_and_exchange_a_batch() {
        let clock = Clock::new();
        let cfg = udp_cfg(47_311);
        let a = ClusterSocket::open(&cfg).unwrap();
        let b = ClusterSocket::open(&cfg).unwrap();
        let mut sb = SendBatch::new();
        fill(&mut sb, 10);
        assert_eq!(a.send_batch(&mut sb).unwrap(), 10);
        assert!(sb.is_empty());
        let mut rb = RecvBatch::new();
        // Both sockets hear the batch (multicast loop on, shared port).
        for s in [&b, &a] {
            let got = recv_all(s, &mut rb, &clock, 10);
            assert_eq!(got.len(), 10);
            assert_eq!(got[9], 9u32.to_be_bytes());
        }
    }

    #[test]
    fn unicast_reaches_each_peer() {
        let clock = Clock::new();
        let b = ClusterSocket::open(&unicast_cfg(47_322, vec![])).unwrap_or_else(|e| panic!("{e}"));
        let c = ClusterSocket::open(&unicast_cfg(47_323, vec![])).unwrap_or_else(|e| panic!("{e}"));
        let a = ClusterSocket::open(&unicast_cfg(47_321, vec![lo(47_322), lo(47_323)])).unwrap();
        assert_eq!(a.fanout(), 2);
        let mut sb = SendBatch::new();
        fill(&mut sb, BATCH);
        assert!(sb.is_full() && sb.slot().is_none());
        assert_eq!(a.send_batch(&mut sb).unwrap(), 2 * BATCH);
        let mut rb = RecvBatch::new();
        assert_eq!(recv_all(&b, &mut rb, &clock, BATCH).len(), BATCH);
        assert_eq!(recv_all(&c, &mut rb, &clock, BATCH).len(), BATCH);
    }

    /// A datagram for one node goes to that node's learned peer address alone; one for
    /// every peer, or for a node whose address is not known yet, to every peer.
    #[test]
    fn unicast_sends_a_datagram_for_one_node_to_that_node_only() {
        let clock = Clock::new();
        let b = ClusterSocket::open(&unicast_cfg(47_332, vec![lo(47_331)])).unwrap();
        let c = ClusterSocket::open(&unicast_cfg(47_333, vec![])).unwrap();
        let mut a =
            ClusterSocket::open(&unicast_cfg(47_331, vec![lo(47_332), lo(47_333)])).unwrap();
        // Node 3 is at 47_333. An address that is no configured peer teaches nothing.
        a.learn(NodeId(3), || Some(lo(47_333)));
        a.learn(NodeId(2), || Some(lo(47_399)));
        let mut sb = SendBatch::new();
        for (tag, to) in [
            (0u8, Dest::Node(NodeId(3))),
            (1, Dest::All),
            (2, Dest::Node(NodeId(2))),
        ] {
            sb.slot().unwrap()[0] = tag;
            sb.commit_to(1, to);
        }
        assert_eq!(a.datagrams(&sb), 5);
        assert_eq!(a.send_batch(&mut sb).unwrap(), 5);
        let mut rb = RecvBatch::new();
        let firsts = |got: Vec<Vec<u8>>| got.iter().map(|d| d[0]).collect::<Vec<u8>>();
        assert_eq!(firsts(recv_all(&c, &mut rb, &clock, 3)), vec![0, 1, 2]);
        assert_eq!(firsts(recv_all(&b, &mut rb, &clock, 2)), vec![1, 2]);
        let sent = sb.sent_to();
        assert_eq!(sent.all, 2);
        assert_eq!(sent.nodes, vec![(NodeId(3), 1), (NodeId(2), 2)]);
        // What b receives names its source: a's listen address, which b learns a from.
        sb.slot().unwrap()[0] = 9;
        sb.commit(1);
        b.send_batch(&mut sb).unwrap();
        let n = recv_all(&a, &mut rb, &clock, 1).len();
        assert_eq!(n, 1);
        assert_eq!(rb.datagram(0).unwrap().source(), Some(lo(47_332)));
    }

    #[test]
    fn ipv6_unicast_reaches_a_peer_and_filters_own_frames() {
        if !std::path::Path::new("/proc/net/if_inet6").exists() {
            eprintln!("SKIP: IPv6 is off on this host");
            return;
        }
        let clock = Clock::new();
        let lo6 = |p| SocketAddr::from((Ipv6Addr::LOCALHOST, p));
        let mk = |port: u16, peers: Vec<SocketAddr>| NetConfig {
            transport: TransportKind::Unicast,
            interface: LocalAddr {
                addr: IpAddr::V6(Ipv6Addr::LOCALHOST),
                index: 1,
            },
            listen: Some(lo6(port)),
            peers,
            ..udp_cfg(port)
        };
        let b = ClusterSocket::open(&mk(47_372, vec![])).unwrap_or_else(|e| panic!("{e}"));
        let a = ClusterSocket::open(&mk(47_371, vec![lo6(47_372), lo6(47_371)])).unwrap();
        assert!(a.local_addr().unwrap().is_ipv6());
        // The UDP filter sees IPv6 datagrams from the UDP header too: own frames dropped.
        a.drop_own_frames(NodeId(7), Incarnation(1), Salt([0; 6]))
            .unwrap();
        let mut sb = SendBatch::new();
        let slot = sb.slot().unwrap();
        slot[..40].fill(0);
        slot[10..12].copy_from_slice(&7u16.to_be_bytes());
        slot[16..20].copy_from_slice(&1u32.to_be_bytes());
        sb.commit(40);
        assert_eq!(a.send_batch(&mut sb).unwrap(), 2);
        let mut rb = RecvBatch::new();
        assert_eq!(recv_all(&b, &mut rb, &clock, 1).len(), 1);
        assert_eq!(a.recv_batch(&mut rb, &clock, clock.now()).unwrap(), 0);
    }

    #[test]
    fn link_scope_addresses_get_the_interface_as_scope() {
        let g: SocketAddr = "[ff02::7a6e]:7377".parse().unwrap();
        let SocketAddr::V6(s) = scoped(g, 4) else {
            panic!()
        };
        assert_eq!(s.scope_id(), 4);
        let ll: SocketAddr = "[fe80::1]:7377".parse().unwrap();
        assert!(matches!(scoped(ll, 4), SocketAddr::V6(s) if s.scope_id() == 4));
        for other in ["[ff05::1]:1", "[fd00::1]:1", "198.18.0.1:1"] {
            let a: SocketAddr = other.parse().unwrap();
            assert_eq!(scoped(a, 4), a, "{other}");
        }
        assert!(is_loopback("::1".parse().unwrap()));
        assert!(is_loopback("::ffff:127.0.0.1".parse().unwrap()));
        assert!(!is_loopback("fd00::1".parse().unwrap()));
        assert!(!is_loopback("::".parse().unwrap()));
    }

    #[test]
    fn oversized_datagram_is_marked_truncated() {
        let clock = Clock::new();
        let cfg = udp_cfg(47_331);
        let a = ClusterSocket::open(&cfg).unwrap();
        let big = vec![0u8; SLOT_BYTES + 100];
        a.socket.send_to(&big, &SockAddr::from(cfg.group)).unwrap();
        let mut rb = RecvBatch::new();
        for _ in 0..200 {
            if a.recv_batch(&mut rb, &clock, clock.now()).unwrap() == 1 {
                let d = rb.datagram(0).unwrap();
                assert!(d.truncated);
                assert_eq!(d.data.len(), SLOT_BYTES);
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        panic!("oversized datagram never arrived");
    }

    #[test]
    fn raw_socket_strips_ip_header_or_reports_missing_capability() {
        let cfg = NetConfig {
            transport: TransportKind::Raw,
            protocol: 0xFD,
            ..udp_cfg(0)
        };
        match ClusterSocket::open(&NetConfig {
            group: SocketAddr::from(([239, 255, 72, 79], 1)),
            ..cfg
        }) {
            Err(NetError::NeedCapNetRaw) => {
                assert!(NetError::NeedCapNetRaw.to_string().contains("CAP_NET_RAW"));
            }
            Err(e) => panic!("{e}"),
            Ok(a) => {
                let clock = Clock::new();
                let mut sb = SendBatch::new();
                fill(&mut sb, 3);
                assert_eq!(a.send_batch(&mut sb).unwrap(), 3);
                let mut rb = RecvBatch::new();
                let got = recv_all(&a, &mut rb, &clock, 3);
                assert_eq!(got.len(), 3);
                assert_eq!(got[2], 2u32.to_be_bytes());
            }
        }
    }
}
