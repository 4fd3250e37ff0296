//! Addresses on `--interface`, for floating VIPs: add and remove through rtnetlink
//! (RTM_NEWADDR / RTM_DELADDR on a NETLINK_ROUTE socket, each acknowledged by the kernel),
//! and announce: IPv4 with a gratuitous ARP on an `AF_PACKET` socket, IPv6 with an
//! unsolicited neighbour advertisement (RFC 4861 7.2.6: Override set, the interface's MAC as
//! target link-layer address) to all-nodes `ff02::1` on an ICMPv6 raw socket, sent from the
//! VIP itself. An IPv6 VIP is added with IFA_F_NODAD: duplicate address detection would keep
//! it tentative (unusable) for a second or more, and the cluster already decides that only
//! one node holds it.
//!
//! Before taking back a VIP that a live peer may still hold, the node probes for it
//! (RFC 5227 style, see [`crate::vip`], "Handing back"): IPv4, an ARP request for the VIP
//! with sender address 0.0.0.0 (which the holder's kernel answers); IPv6, a duplicate
//! address detection neighbour solicitation from `::` to the VIP's solicited-node group
//! (which the holder's kernel answers with an advertisement to all nodes), sent whole (IPv6
//! header included) on the packet socket, since an ICMPv6 socket cannot send from `::`.
//! Answers are heard on this interface only, on two sockets opened at start and kept (a
//! packet socket's close waits for an RCU grace period, tens of milliseconds on a loaded
//! host, which would stall the loop past the failure detector's deadline): ARP replies (a
//! socket filter passes nothing else, so little queues between probes) and neighbour
//! advertisements (an ICMPv6 filter). Every probe goes out of `--interface` alone.
//!
//! Hand-written over libc: two fixed-size requests, 28-byte ARP packets, a 32-byte
//! advertisement and a 64-byte solicitation are smaller than a netlink crate stack.
//!
//! Needs CAP_NET_ADMIN (addresses) and CAP_NET_RAW (the packet and ICMPv6 sockets):
//! [`missing_capabilities`] says which are missing before anything is tried.
//!
//! Panics: never.
#![allow(unsafe_code)]

use std::ffi::CString;
use std::io;
use std::mem::{size_of, zeroed};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use crate::vip::VipSpec;

/// Why the interface could not be prepared for VIPs.
#[derive(Debug)]
pub enum IfAddrError {
    /// A configuration problem (exit 2): a capability is missing, no such interface.
    Config(String),
    Io(String),
}

impl std::fmt::Display for IfAddrError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            IfAddrError::Config(s) | IfAddrError::Io(s) => f.write_str(s),
        }
    }
}

const CAP_NET_ADMIN: u32 = 12;
const CAP_NET_RAW: u32 = 13;

/// The capabilities VIPs need that this process lacks (from `CapEff` in
/// /proc/self/status), e.g. "CAP_NET_ADMIN, CAP_NET_RAW"; `None` when it has both.
pub fn missing_capabilities() -> Option<String> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    missing_from_status(&status)
}

fn missing_from_status(status: &str) -> Option<String> {
    let eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())?;
    let missing: Vec<&str> = [
        (CAP_NET_ADMIN, "CAP_NET_ADMIN"),
        (CAP_NET_RAW, "CAP_NET_RAW"),
    ]
    .into_iter()
    .filter(|(bit, _)| eff & (1 << bit) == 0)
    .map(|(_, name)| name)
    .collect();
    (!missing.is_empty()).then(|| missing.join(", "))
}

/// The interface VIPs live on: a netlink socket, a packet socket (and an ICMPv6 socket when
/// a VIP is IPv6), its index and MAC.
#[derive(Debug)]
pub struct IfAddrs {
    netlink: OwnedFd,
    packet: OwnedFd,
    icmp6: Option<OwnedFd>,
    /// ARP replies on this interface (an IPv4 VIP is configured): probe answers.
    arp: Option<OwnedFd>,
    /// Neighbour advertisements on this interface (an IPv6 VIP is configured).
    adverts: Option<OwnedFd>,
    ifindex: u32,
    mac: [u8; 6],
    seq: u32,
}

const NLMSG_HDR: usize = 16;
const IFADDRMSG: usize = 8;
/// A route attribute header.
const RTA_HDR: usize = 4;
/// The longest request: header, ifaddrmsg, IFA_LOCAL and IFA_ADDRESS of 16 bytes each.
const REQ_MAX: usize = NLMSG_HDR + IFADDRMSG + 2 * (RTA_HDR + 16);
/// `ifa_flags`: no duplicate address detection (linux/if_addr.h).
const IFA_F_NODAD: u8 = 0x02;
/// ICMPv6 Neighbor Advertisement (RFC 4861 4.4).
const ND_NEIGHBOR_ADVERT: u8 = 0x88;
/// Its Override flag, in the first byte of the flags word.
const ND_NA_OVERRIDE: u8 = 0x20;
/// Option "Target Link-Layer Address".
const ND_OPT_TARGET_LLADDR: u8 = 0x02;
/// ICMPv6 Neighbor Solicitation (RFC 4861 4.3).
const ND_NEIGHBOR_SOLICIT: u8 = 0x87;
/// IPv6's next-header number of ICMPv6.
const IPPROTO_ICMPV6: u8 = 0x3a;
/// ARP reply (RFC 826).
const ARP_REPLY: u16 = 0x0002;
/// Read at most this many queued packets per look at the probe answers: a busy link's
/// other traffic waits for the next look rather than stalling the loop.
const REPLIES_PER_LOOK: usize = 64;
/// Stale answers discarded at most before a probe starts (the rest are read as answers;
/// a stale one only delays the take by a round).
const STALE_PER_DRAIN: usize = 1024;
/// Receivers drop neighbour discovery whose hop limit is not 255 (RFC 4861 7.1.2).
const ND_HOP_LIMIT: libc::c_int = 255;
/// setsockopt ICMP6_FILTER (linux/icmpv6.h): a bit set blocks that ICMPv6 type.
const ICMP6_FILTER: libc::c_int = 1;

impl IfAddrs {
    /// Opens the sockets for interface `name` (a name, not an address); the ARP one only
    /// when `v4` (a VIP is IPv4), the ICMPv6 ones only when `v6` (a VIP is IPv6), so a host
    /// with IPv6 off still runs IPv4 VIPs.
    pub fn open(name: &str, v4: bool, v6: bool) -> Result<IfAddrs, IfAddrError> {
        if let Some(missing) = missing_capabilities() {
            return Err(IfAddrError::Config(format!(
                "--vip needs CAP_NET_ADMIN and CAP_NET_RAW; missing {missing} (run as root or \
                 grant them, see tandemd.service)"
            )));
        }
        let cname = CString::new(name)
            .map_err(|_| IfAddrError::Config(format!("--interface {name}: not a name")))?;
        // SAFETY: `cname` is a valid NUL-terminated string.
        let ifindex = unsafe { libc::if_nametoindex(cname.as_ptr()) };
        if ifindex == 0 {
            return Err(IfAddrError::Config(format!(
                "--vip: --interface {name} is not an interface name"
            )));
        }
        let netlink = socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::NETLINK_ROUTE,
        )
        .map_err(|e| IfAddrError::Io(format!("netlink socket: {e}")))?;
        // The kernel answers a request at once; the timeout only bounds a broken kernel.
        let tv = libc::timeval {
            tv_sec: 0,
            tv_usec: 200_000,
        };
        // SAFETY: a valid socket and a timeval of the size given.
        unsafe {
            libc::setsockopt(
                netlink.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&tv as *const libc::timeval).cast(),
                size_of::<libc::timeval>() as libc::socklen_t,
            )
        };
        // Protocol 0: this socket only sends (it never receives a packet).
        let packet = socket(libc::AF_PACKET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0)
            .map_err(|e| IfAddrError::Io(format!("packet socket: {e}")))?;
        let mac = hardware_addr(&packet, name)
            .map_err(|e| IfAddrError::Io(format!("--interface {name}: hardware address: {e}")))?;
        let open = |on: bool, what: &str, f: fn(u32) -> io::Result<OwnedFd>| {
            on.then(|| f(ifindex))
                .transpose()
                .map_err(|e| IfAddrError::Io(format!("{what} socket for --vip: {e}")))
        };
        let icmp6 = open(v6, "ICMPv6", icmp6_socket)?;
        let arp = open(v4, "ARP", arp_socket)?;
        let adverts = open(v6, "ICMPv6 advertisement", advert_socket)?;
        Ok(IfAddrs {
            netlink,
            packet,
            icmp6,
            arp,
            adverts,
            ifindex,
            mac,
            seq: 0,
        })
    }

    /// Adds the VIP's address; `Ok(false)` if it was already there.
    pub fn add(&mut self, vip: &VipSpec) -> io::Result<bool> {
        let flags = libc::NLM_F_REQUEST | libc::NLM_F_ACK | libc::NLM_F_CREATE | libc::NLM_F_EXCL;
        match self.request(libc::RTM_NEWADDR, flags, vip) {
            Ok(()) => Ok(true),
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Removes the VIP's address; `Ok(false)` if it was not there.
    pub fn remove(&mut self, vip: &VipSpec) -> io::Result<bool> {
        let flags = libc::NLM_F_REQUEST | libc::NLM_F_ACK;
        match self.request(libc::RTM_DELADDR, flags, vip) {
            Ok(()) => Ok(true),
            Err(e) if e.raw_os_error() == Some(libc::EADDRNOTAVAIL) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// One announcement, so hosts and switches on the link move the address to this node at
    /// once: IPv4, a gratuitous ARP (a broadcast request for the VIP from this interface's
    /// MAC); IPv6, an unsolicited neighbour advertisement to all nodes.
    pub fn announce(&self, vip: &VipSpec) -> io::Result<()> {
        match vip.addr {
            IpAddr::V4(ip) => self.send_frame(libc::ETH_P_ARP, [0xff; 6], &garp(self.mac, ip)),
            IpAddr::V6(ip) => self.advertise(ip),
        }
    }

    /// One probe for `vip` (see the module docs): does another host on the link hold it?
    /// Its answers are read with [`IfAddrs::answers`].
    pub fn probe(&self, vip: &VipSpec) -> io::Result<()> {
        match vip.addr {
            IpAddr::V4(ip) => self.send_frame(libc::ETH_P_ARP, [0xff; 6], &arp_probe(self.mac, ip)),
            IpAddr::V6(ip) => {
                self.send_frame(libc::ETH_P_IPV6, solicited_mac(ip), &dad_solicit(ip))
            }
        }
    }

    /// Discards the answers queued while no probe ran (bounded), before a probe starts.
    pub fn drain_answers(&self) {
        for sock in [&self.arp, &self.adverts].into_iter().flatten() {
            recv_each(sock, STALE_PER_DRAIN, |_, _| {});
        }
    }

    /// Appends to `out` each address another host answered for since the last look: the
    /// sender of an ARP reply not from this interface's MAC, the target of a neighbour
    /// advertisement (at most [`REPLIES_PER_LOOK`] packets per socket; the rest waits).
    pub fn answers(&self, out: &mut Vec<IpAddr>) {
        if let Some(sock) = &self.arp {
            recv_each(sock, REPLIES_PER_LOOK, |pkt, outgoing| {
                if let Some(ip) = arp_sender(pkt, self.mac).filter(|_| !outgoing) {
                    out.push(IpAddr::V4(ip));
                }
            });
        }
        if let Some(sock) = &self.adverts {
            recv_each(sock, REPLIES_PER_LOOK, |pkt, _| {
                if let Some(ip) = advert_target(pkt) {
                    out.push(IpAddr::V6(ip));
                }
            });
        }
    }

    /// One frame of `proto` (host order) to `dst` out of this interface on the packet
    /// socket (the kernel adds the Ethernet header).
    fn send_frame(&self, proto: libc::c_int, dst: [u8; 6], pkt: &[u8]) -> io::Result<()> {
        // SAFETY: zeroed sockaddr_ll is valid; every field we rely on is set below.
        let mut to: libc::sockaddr_ll = unsafe { zeroed() };
        to.sll_family = libc::AF_PACKET as u16;
        to.sll_protocol = (proto as u16).to_be();
        to.sll_ifindex = self.ifindex as i32;
        to.sll_halen = 6;
        to.sll_addr[..6].copy_from_slice(&dst);
        // SAFETY: valid socket, buffer and address of the sizes given.
        let n = unsafe {
            libc::sendto(
                self.packet.as_raw_fd(),
                pkt.as_ptr().cast(),
                pkt.len(),
                0,
                (&to as *const libc::sockaddr_ll).cast(),
                size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// An unsolicited neighbour advertisement of `ip` to ff02::1, from `ip` itself (added
    /// with NODAD, it is usable at once; the interface's own link-local address may still be
    /// tentative on a fresh link).
    fn advertise(&self, ip: Ipv6Addr) -> io::Result<()> {
        let Some(sock) = &self.icmp6 else {
            return Err(io::Error::from(io::ErrorKind::Unsupported));
        };
        let pkt = neighbour_advert(self.mac, ip);
        // SAFETY: zeroed sockaddr_in6 is valid; family, address and scope are set below.
        let mut to: libc::sockaddr_in6 = unsafe { zeroed() };
        to.sin6_family = libc::AF_INET6 as u16;
        to.sin6_addr.s6_addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1).octets();
        to.sin6_scope_id = self.ifindex;
        // SAFETY: zeroed in6_pktinfo is valid.
        let mut info: libc::in6_pktinfo = unsafe { zeroed() };
        info.ipi6_addr.s6_addr = ip.octets();
        info.ipi6_ifindex = self.ifindex;
        // Room for one cmsg holding an in6_pktinfo (20 bytes), u64-aligned.
        let mut control = [0u64; 8];
        let mut iov = libc::iovec {
            iov_base: pkt.as_ptr() as *mut libc::c_void,
            iov_len: pkt.len(),
        };
        // SAFETY: zeroed msghdr is valid; every pointer is set below to live locals.
        let mut msg: libc::msghdr = unsafe { zeroed() };
        msg.msg_name = (&mut to as *mut libc::sockaddr_in6).cast();
        msg.msg_namelen = size_of::<libc::sockaddr_in6>() as libc::socklen_t;
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        // SAFETY: CMSG_SPACE is a pure size computation.
        let space = unsafe { libc::CMSG_SPACE(size_of::<libc::in6_pktinfo>() as u32) } as usize;
        msg.msg_controllen = space.min(size_of::<[u64; 8]>());
        // SAFETY: msg_control points at `control`, large enough for one in6_pktinfo cmsg
        // (CMSG_SPACE of 20 bytes is 40); CMSG_FIRSTHDR is non-null for that length.
        unsafe {
            let c = libc::CMSG_FIRSTHDR(&msg);
            if c.is_null() {
                return Err(io::Error::from(io::ErrorKind::InvalidInput));
            }
            (*c).cmsg_level = libc::IPPROTO_IPV6;
            (*c).cmsg_type = libc::IPV6_PKTINFO;
            (*c).cmsg_len = libc::CMSG_LEN(size_of::<libc::in6_pktinfo>() as u32) as usize;
            std::ptr::write_unaligned(libc::CMSG_DATA(c).cast::<libc::in6_pktinfo>(), info);
        }
        // SAFETY: `msg` describes live buffers of the sizes given; the kernel only reads them.
        let n = unsafe { libc::sendmsg(sock.as_raw_fd(), &msg, 0) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Sends one address request and waits for the kernel's acknowledgement.
    fn request(&mut self, kind: u16, flags: i32, vip: &VipSpec) -> io::Result<()> {
        self.seq = self.seq.wrapping_add(1);
        let (req, len) = addr_request(
            kind,
            flags as u16,
            self.seq,
            self.ifindex,
            vip.addr,
            vip.prefix,
        );
        let req = &req[..len];
        // SAFETY: valid socket and buffer; an unbound netlink socket sends to the kernel.
        let n = unsafe { libc::send(self.netlink.as_raw_fd(), req.as_ptr().cast(), req.len(), 0) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        // Bounded: a few replies at most (a stale ack of an earlier timed-out request).
        let mut buf = [0u8; 1024];
        for _ in 0..4 {
            // SAFETY: valid socket and buffer of the size given.
            let n = unsafe {
                libc::recv(
                    self.netlink.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    0,
                )
            };
            if n < 0 {
                return Err(io::Error::last_os_error());
            }
            let got = buf.get(..n as usize).unwrap_or(&[]);
            if let Some(result) = parse_ack(got, self.seq) {
                return result;
            }
        }
        Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "no netlink acknowledgement",
        ))
    }
}

/// Reads up to `limit` queued packets from the non-blocking `sock`, each with whether the
/// packet socket saw it going out (always false on other sockets).
fn recv_each(sock: &OwnedFd, limit: usize, mut f: impl FnMut(&[u8], bool)) {
    let mut buf = [0u8; 128];
    for _ in 0..limit {
        // SAFETY: zeroed sockaddr_ll is valid storage for the sender's address.
        let mut from: libc::sockaddr_ll = unsafe { zeroed() };
        let mut len = size_of::<libc::sockaddr_ll>() as libc::socklen_t;
        // SAFETY: valid socket and buffers of the sizes given; a longer sender address (an
        // ICMPv6 socket's sockaddr_in6) is truncated to `len` by the kernel.
        let n = unsafe {
            libc::recvfrom(
                sock.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                libc::MSG_DONTWAIT,
                (&mut from as *mut libc::sockaddr_ll).cast(),
                &mut len,
            )
        };
        if n < 0 {
            // Nothing more queued (EAGAIN), or an error that leaves nothing to read.
            return;
        }
        let pkt = buf.get(..n as usize).unwrap_or(&[]);
        let outgoing =
            from.sll_family == libc::AF_PACKET as u16 && from.sll_pkttype == libc::PACKET_OUTGOING;
        f(pkt, outgoing);
    }
}

/// A packet socket hearing ARP replies on `ifindex` only (non-blocking): a classic BPF
/// filter drops every other ARP packet in the kernel, so the broadcast requests of a busy
/// link do not queue up between probes.
fn arp_socket(ifindex: u32) -> io::Result<OwnedFd> {
    // Protocol 0 hears nothing until bound to ARP on this interface alone.
    let sock = socket(
        libc::AF_PACKET,
        libc::SOCK_DGRAM | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
        0,
    )?;
    // On a SOCK_DGRAM packet socket offsets count from the ARP header: the operation is
    // the half-word at 6. Accept a reply whole, drop anything else.
    let prog = [
        libc::sock_filter {
            code: (libc::BPF_LD | libc::BPF_H | libc::BPF_ABS) as u16,
            jt: 0,
            jf: 0,
            k: 6,
        },
        libc::sock_filter {
            code: (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16,
            jt: 0,
            jf: 1,
            k: u32::from(ARP_REPLY),
        },
        libc::sock_filter {
            code: (libc::BPF_RET | libc::BPF_K) as u16,
            jt: 0,
            jf: 0,
            k: 0xffff,
        },
        libc::sock_filter {
            code: (libc::BPF_RET | libc::BPF_K) as u16,
            jt: 0,
            jf: 0,
            k: 0,
        },
    ];
    let fprog = libc::sock_fprog {
        len: prog.len() as u16,
        filter: prog.as_ptr() as *mut libc::sock_filter,
    };
    // `fprog` points at `prog`, alive for the call (the kernel copies the program).
    set_options(
        &sock,
        &[(
            libc::SOL_SOCKET,
            libc::SO_ATTACH_FILTER,
            (&fprog as *const libc::sock_fprog).cast(),
            size_of::<libc::sock_fprog>(),
        )],
    )?;
    // SAFETY: zeroed sockaddr_ll is valid; family, protocol and index set below.
    let mut at: libc::sockaddr_ll = unsafe { zeroed() };
    at.sll_family = libc::AF_PACKET as u16;
    at.sll_protocol = (libc::ETH_P_ARP as u16).to_be();
    at.sll_ifindex = ifindex as i32;
    // SAFETY: a valid socket and an address of the size given.
    let r = unsafe {
        libc::bind(
            sock.as_raw_fd(),
            (&at as *const libc::sockaddr_ll).cast(),
            size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(sock)
}

/// An ICMPv6 raw socket hearing neighbour advertisements on `ifindex` only (non-blocking;
/// every other ICMPv6 type blocked).
fn advert_socket(ifindex: u32) -> io::Result<OwnedFd> {
    let sock = socket(
        libc::AF_INET6,
        libc::SOCK_RAW | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
        libc::IPPROTO_ICMPV6,
    )?;
    let mut filter = [u32::MAX; 8];
    let na = usize::from(ND_NEIGHBOR_ADVERT);
    filter[na / 32] &= !(1 << (na % 32));
    let index = ifindex as libc::c_int;
    set_options(
        &sock,
        &[
            (
                libc::IPPROTO_ICMPV6,
                ICMP6_FILTER,
                filter.as_ptr().cast::<libc::c_void>(),
                size_of::<[u32; 8]>(),
            ),
            (
                libc::SOL_SOCKET,
                libc::SO_BINDTOIFINDEX,
                (&index as *const libc::c_int).cast(),
                size_of::<libc::c_int>(),
            ),
        ],
    )?;
    Ok(sock)
}

/// Socket options (`level`, `name`, a pointer to the value, its length) set in order.
fn set_options(
    sock: &OwnedFd,
    opts: &[(libc::c_int, libc::c_int, *const libc::c_void, usize)],
) -> io::Result<()> {
    for &(level, name, value, len) in opts {
        // SAFETY: a valid socket; every caller passes `value` pointing at a live local of
        // `len` bytes.
        let r = unsafe {
            libc::setsockopt(sock.as_raw_fd(), level, name, value, len as libc::socklen_t)
        };
        if r != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

fn socket(domain: i32, ty: i32, proto: i32) -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2); the descriptor is owned from here on.
    let fd = unsafe { libc::socket(domain, ty, proto) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn hardware_addr(sock: &OwnedFd, name: &str) -> io::Result<[u8; 6]> {
    // SAFETY: zeroed ifreq is valid.
    let mut req: libc::ifreq = unsafe { zeroed() };
    let bytes = name.as_bytes();
    if bytes.len() >= req.ifr_name.len() {
        return Err(io::Error::from(io::ErrorKind::InvalidInput));
    }
    for (d, s) in req.ifr_name.iter_mut().zip(bytes) {
        *d = *s as libc::c_char;
    }
    // SAFETY: valid socket and ifreq; SIOCGIFHWADDR fills `ifru_hwaddr`.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFHWADDR, &mut req) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the ioctl succeeded, so the union holds the hardware address.
    let data = unsafe { req.ifr_ifru.ifru_hwaddr.sa_data };
    let mut mac = [0u8; 6];
    for (d, s) in mac.iter_mut().zip(data.iter()) {
        *d = *s as u8;
    }
    Ok(mac)
}

/// The ICMPv6 raw socket advertisements go out on: hop limit 255 on `ifindex`, no loop back,
/// and every incoming ICMPv6 type blocked (it never reads, so nothing may queue up).
fn icmp6_socket(ifindex: u32) -> io::Result<OwnedFd> {
    let sock = socket(
        libc::AF_INET6,
        libc::SOCK_RAW | libc::SOCK_CLOEXEC,
        libc::IPPROTO_ICMPV6,
    )?;
    let block_all = [u32::MAX; 8];
    let index = ifindex as libc::c_int;
    let off: libc::c_int = 0;
    set_options(
        &sock,
        &[
            (
                libc::IPPROTO_IPV6,
                libc::IPV6_MULTICAST_HOPS,
                (&ND_HOP_LIMIT as *const libc::c_int).cast::<libc::c_void>(),
                size_of::<libc::c_int>(),
            ),
            (
                libc::IPPROTO_IPV6,
                libc::IPV6_MULTICAST_IF,
                (&index as *const libc::c_int).cast(),
                size_of::<libc::c_int>(),
            ),
            (
                libc::IPPROTO_IPV6,
                libc::IPV6_MULTICAST_LOOP,
                (&off as *const libc::c_int).cast(),
                size_of::<libc::c_int>(),
            ),
            (
                libc::IPPROTO_ICMPV6,
                ICMP6_FILTER,
                block_all.as_ptr().cast(),
                size_of::<[u32; 8]>(),
            ),
        ],
    )?;
    Ok(sock)
}

/// RTM_NEWADDR/RTM_DELADDR for `ip/prefix` on `ifindex` (native byte order, as netlink is):
/// the buffer and the request's length in it. An IPv6 address is added without duplicate
/// address detection (see the module docs).
fn addr_request(
    kind: u16,
    flags: u16,
    seq: u32,
    ifindex: u32,
    ip: IpAddr,
    prefix: u8,
) -> ([u8; REQ_MAX], usize) {
    let v4;
    let v6;
    let (family, ifa_flags, octets): (i32, u8, &[u8]) = match ip {
        IpAddr::V4(a) => {
            v4 = a.octets();
            (libc::AF_INET, 0, &v4)
        }
        IpAddr::V6(a) => {
            v6 = a.octets();
            (libc::AF_INET6, IFA_F_NODAD, &v6)
        }
    };
    let rta = RTA_HDR + octets.len();
    let len = NLMSG_HDR + IFADDRMSG + 2 * rta;
    let mut b = [0u8; REQ_MAX];
    b[0..4].copy_from_slice(&(len as u32).to_ne_bytes());
    b[4..6].copy_from_slice(&kind.to_ne_bytes());
    b[6..8].copy_from_slice(&flags.to_ne_bytes());
    b[8..12].copy_from_slice(&seq.to_ne_bytes());
    // nlmsg_pid 0: the kernel.
    b[16] = family as u8;
    b[17] = prefix;
    b[18] = ifa_flags;
    // Scope universe (0).
    b[20..24].copy_from_slice(&ifindex.to_ne_bytes());
    let mut at = NLMSG_HDR + IFADDRMSG;
    for ty in [libc::IFA_LOCAL, libc::IFA_ADDRESS] {
        b[at..at + 2].copy_from_slice(&(rta as u16).to_ne_bytes());
        b[at + 2..at + 4].copy_from_slice(&ty.to_ne_bytes());
        b[at + 4..at + rta].copy_from_slice(octets);
        at += rta;
    }
    (b, len)
}

/// An unsolicited neighbour advertisement for `ip` with `mac` as its link-layer address; the
/// checksum is left zero for the kernel (an ICMPv6 raw socket computes it).
fn neighbour_advert(mac: [u8; 6], ip: Ipv6Addr) -> [u8; 32] {
    let mut p = [0u8; 32];
    p[0] = ND_NEIGHBOR_ADVERT;
    // Code 0, checksum 0 (kernel). Not a router, not solicited, override.
    p[4] = ND_NA_OVERRIDE;
    p[8..24].copy_from_slice(&ip.octets());
    p[24] = ND_OPT_TARGET_LLADDR;
    p[25] = 1; // Option length in units of 8 bytes.
    p[26..32].copy_from_slice(&mac);
    p
}

/// The result in an NLMSG_ERROR acknowledgement of request `seq`; `None` for anything else.
fn parse_ack(msg: &[u8], seq: u32) -> Option<io::Result<()>> {
    let word = |at: usize| -> Option<[u8; 4]> { msg.get(at..at + 4)?.try_into().ok() };
    let kind = u16::from_ne_bytes(msg.get(4..6)?.try_into().ok()?);
    if kind != libc::NLMSG_ERROR as u16 || u32::from_ne_bytes(word(8)?) != seq {
        return None;
    }
    let err = i32::from_ne_bytes(word(NLMSG_HDR)?);
    Some(if err == 0 {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(err.saturating_neg()))
    })
}

/// A gratuitous ARP request: "who has `ip`? tell `ip`", from `mac`.
fn garp(mac: [u8; 6], ip: Ipv4Addr) -> [u8; 28] {
    let mut p = [0u8; 28];
    p[0..2].copy_from_slice(&0x0001u16.to_be_bytes()); // Ethernet
    p[2..4].copy_from_slice(&0x0800u16.to_be_bytes()); // IPv4
    p[4] = 6;
    p[5] = 4;
    p[6..8].copy_from_slice(&0x0001u16.to_be_bytes()); // request
    p[8..14].copy_from_slice(&mac);
    p[14..18].copy_from_slice(&ip.octets());
    // Target hardware address zero (unknown), target protocol address the VIP itself.
    p[24..28].copy_from_slice(&ip.octets());
    p
}

/// An ARP probe (RFC 5227 2.1.1): "who has `ip`?" from `mac`, sender address 0.0.0.0, so
/// no host learns a mapping from it; a host holding `ip` answers.
fn arp_probe(mac: [u8; 6], ip: Ipv4Addr) -> [u8; 28] {
    let mut p = garp(mac, ip);
    p[14..18].fill(0);
    p
}

/// The address another host says it holds in the ARP packet `pkt`: the sender address of
/// a packet from a MAC other than `mine` (RFC 5227 2.1.1's conflict test); `None` for this
/// node's own packets, a probe (sender 0.0.0.0 holds nothing) and anything not Ethernet
/// and IPv4.
fn arp_sender(pkt: &[u8], mine: [u8; 6]) -> Option<Ipv4Addr> {
    let ours = pkt.len() >= 28
        && pkt[0..2] == 0x0001u16.to_be_bytes()
        && pkt[2..4] == 0x0800u16.to_be_bytes()
        && pkt[4] == 6
        && pkt[5] == 4
        && pkt[8..14] != mine;
    if !ours {
        return None;
    }
    let ip = Ipv4Addr::new(pkt[14], pkt[15], pkt[16], pkt[17]);
    (!ip.is_unspecified()).then_some(ip)
}

/// The target of the neighbour advertisement `pkt` (an ICMPv6 message as a raw socket reads
/// it: no IPv6 header): the holder answering a probe, or announcing the address.
fn advert_target(pkt: &[u8]) -> Option<Ipv6Addr> {
    let target: [u8; 16] = pkt.get(8..24)?.try_into().ok()?;
    (pkt[0] == ND_NEIGHBOR_ADVERT && pkt[1] == 0).then(|| Ipv6Addr::from(target))
}

/// `ip`'s solicited-node multicast group, ff02::1:ffXX:XXXX (RFC 4291 2.7.1).
fn solicited_node(ip: Ipv6Addr) -> Ipv6Addr {
    let o = ip.octets();
    let mut g = [0u8; 16];
    g[..2].copy_from_slice(&[0xff, 0x02]);
    g[11..13].copy_from_slice(&[0x01, 0xff]);
    g[13..].copy_from_slice(&o[13..]);
    Ipv6Addr::from(g)
}

/// The Ethernet address of `ip`'s solicited-node group (RFC 2464 7: 33:33 and the group's
/// last 32 bits).
fn solicited_mac(ip: Ipv6Addr) -> [u8; 6] {
    let g = solicited_node(ip).octets();
    [0x33, 0x33, g[12], g[13], g[14], g[15]]
}

/// A duplicate address detection solicitation for `ip` (RFC 4862 5.4.2), whole: IPv6 header
/// from `::` to `ip`'s solicited-node group, hop limit 255, then the ICMPv6 neighbour
/// solicitation with `ip` as target and no options (none is allowed from `::`).
fn dad_solicit(ip: Ipv6Addr) -> [u8; 64] {
    let dst = solicited_node(ip);
    let mut p = [0u8; 64];
    p[0] = 0x60; // Version 6, traffic class and flow label 0.
    p[4..6].copy_from_slice(&24u16.to_be_bytes()); // Payload length.
    p[6] = IPPROTO_ICMPV6;
    p[7] = ND_HOP_LIMIT as u8;
    // Source :: (bytes 8..24 stay zero).
    p[24..40].copy_from_slice(&dst.octets());
    p[40] = ND_NEIGHBOR_SOLICIT;
    p[48..64].copy_from_slice(&ip.octets());
    let sum = icmp6_checksum(Ipv6Addr::UNSPECIFIED, dst, &p[40..]);
    p[42..44].copy_from_slice(&sum.to_be_bytes());
    p
}

/// The ICMPv6 checksum of `msg` (its checksum field zero) from `src` to `dst` (RFC 4443
/// 2.3: the ones' complement sum over the pseudo-header and the message).
fn icmp6_checksum(src: Ipv6Addr, dst: Ipv6Addr, msg: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    let mut add = |bytes: &[u8]| {
        for pair in bytes.chunks(2) {
            let hi = u32::from(pair[0]) << 8;
            sum += hi | pair.get(1).map_or(0, |b| u32::from(*b));
        }
    };
    add(&src.octets());
    add(&dst.octets());
    add(&(msg.len() as u32).to_be_bytes());
    add(&[0, 0, 0, IPPROTO_ICMPV6]);
    add(msg);
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // In tests a failed unwrap is a failed test.
mod tests {
    use super::*;

    #[test]
    fn capabilities_from_status() {
        let all = "Name:\ttandemd\nCapEff:\t000001ffffffffff\n";
        assert_eq!(missing_from_status(all), None);
        let none = "CapEff:\t0000000000000000\n";
        assert_eq!(
            missing_from_status(none).as_deref(),
            Some("CAP_NET_ADMIN, CAP_NET_RAW")
        );
        let raw_only = format!("CapEff:\t{:016x}\n", 1u64 << CAP_NET_RAW);
        assert_eq!(
            missing_from_status(&raw_only).as_deref(),
            Some("CAP_NET_ADMIN")
        );
    }

    #[test]
    fn request_layout() {
        let ip = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 100));
        let (r, len) = addr_request(libc::RTM_NEWADDR, 0x0605, 7, 3, ip, 24);
        assert_eq!(len, 40);
        assert_eq!(r[18], 0, "no flags for IPv4");
        assert_eq!(u32::from_ne_bytes(r[0..4].try_into().unwrap()), 40);
        assert_eq!(u16::from_ne_bytes(r[4..6].try_into().unwrap()), 20);
        assert_eq!(u32::from_ne_bytes(r[8..12].try_into().unwrap()), 7);
        assert_eq!((r[16], r[17]), (libc::AF_INET as u8, 24));
        assert_eq!(u32::from_ne_bytes(r[20..24].try_into().unwrap()), 3);
        assert_eq!(&r[28..32], &[198, 18, 0, 100]);
        assert_eq!(&r[36..40], &[198, 18, 0, 100]);
    }

    #[test]
    fn ipv6_request_layout_has_nodad() {
        let ip: Ipv6Addr = "fd00:7a6e::100".parse().unwrap();
        let (r, len) = addr_request(libc::RTM_NEWADDR, 0x0605, 8, 3, IpAddr::V6(ip), 64);
        assert_eq!(len, 64);
        assert_eq!(u32::from_ne_bytes(r[0..4].try_into().unwrap()), 64);
        assert_eq!(
            (r[16], r[17], r[18]),
            (libc::AF_INET6 as u8, 64, IFA_F_NODAD)
        );
        assert_eq!(u32::from_ne_bytes(r[20..24].try_into().unwrap()), 3);
        for at in [24, 44] {
            assert_eq!(u16::from_ne_bytes(r[at..at + 2].try_into().unwrap()), 20);
            assert_eq!(&r[at + 4..at + 20], &ip.octets());
        }
        assert_eq!(
            u16::from_ne_bytes(r[26..28].try_into().unwrap()),
            libc::IFA_LOCAL
        );
        assert_eq!(
            u16::from_ne_bytes(r[46..48].try_into().unwrap()),
            libc::IFA_ADDRESS
        );
    }

    #[test]
    fn neighbour_advert_layout() {
        let ip: Ipv6Addr = "fd00:7a6e::100".parse().unwrap();
        let p = neighbour_advert([2, 0, 0, 0, 0, 1], ip);
        assert_eq!(&p[..8], &[0x88, 0, 0, 0, 0x20, 0, 0, 0]);
        assert_eq!(&p[8..24], &ip.octets());
        assert_eq!(&p[24..32], &[2, 1, 2, 0, 0, 0, 0, 1]);
    }

    #[test]
    fn ack_parsing() {
        let mut m = [0u8; 36];
        m[4..6].copy_from_slice(&(libc::NLMSG_ERROR as u16).to_ne_bytes());
        m[8..12].copy_from_slice(&9u32.to_ne_bytes());
        assert!(parse_ack(&m, 9).unwrap().is_ok());
        assert!(parse_ack(&m, 8).is_none());
        m[16..20].copy_from_slice(&(-libc::EEXIST).to_ne_bytes());
        let e = parse_ack(&m, 9).unwrap().unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EEXIST));
        assert!(parse_ack(&m[..10], 9).is_none());
    }

    #[test]
    fn arp_probe_layout_and_what_answers_it() {
        let mine = [2, 0, 0, 0, 0, 1];
        let ip = Ipv4Addr::new(198, 18, 0, 100);
        let p = arp_probe(mine, ip);
        assert_eq!(&p[..8], &[0, 1, 8, 0, 6, 4, 0, 1]);
        assert_eq!(&p[8..14], &mine);
        assert_eq!(&p[14..18], &[0; 4], "sender 0.0.0.0");
        assert_eq!(&p[18..24], &[0; 6]);
        assert_eq!(&p[24..28], &ip.octets());
        // The holder's kernel answers: a reply from the VIP, its own MAC.
        let theirs = [2, 0, 0, 0, 0, 2];
        let mut reply = [0u8; 28];
        reply[..8].copy_from_slice(&[0, 1, 8, 0, 6, 4, 0, 2]);
        reply[8..14].copy_from_slice(&theirs);
        reply[14..18].copy_from_slice(&ip.octets());
        reply[18..24].copy_from_slice(&mine);
        assert_eq!(arp_sender(&reply, mine), Some(ip));
        // So does its gratuitous ARP; not this node's own, another host's probe (sender
        // 0.0.0.0: it holds nothing), a short or non-IPv4 packet.
        assert_eq!(arp_sender(&garp(theirs, ip), mine), Some(ip));
        assert_eq!(arp_sender(&garp(mine, ip), mine), None);
        assert_eq!(arp_sender(&arp_probe(theirs, ip), mine), None);
        for n in 0..28 {
            assert_eq!(arp_sender(&reply[..n], mine), None);
        }
        let mut other = reply;
        other[2..4].copy_from_slice(&[0x86, 0xdd]);
        assert_eq!(arp_sender(&other, mine), None);
    }

    #[test]
    fn dad_solicitation_layout_checksum_and_what_answers_it() {
        let ip: Ipv6Addr = "fd00:7a6e::100".parse().unwrap();
        let group: Ipv6Addr = "ff02::1:ff00:100".parse().unwrap();
        assert_eq!(solicited_node(ip), group);
        assert_eq!(solicited_mac(ip), [0x33, 0x33, 0xff, 0x00, 0x01, 0x00]);
        let p = dad_solicit(ip);
        // IPv6 header: version 6, payload 24, ICMPv6, hop limit 255, from ::.
        assert_eq!(&p[..8], &[0x60, 0, 0, 0, 0, 24, 0x3a, 255]);
        assert_eq!(&p[8..24], &[0; 16]);
        assert_eq!(&p[24..40], &group.octets());
        // Neighbour solicitation, code 0, reserved zero, target the VIP, no options.
        assert_eq!((p[40], p[41]), (0x87, 0));
        assert_eq!(&p[44..48], &[0; 4]);
        assert_eq!(&p[48..64], &ip.octets());
        // The checksum verifies: the sum over pseudo-header and message is all ones.
        assert_ne!(&p[42..44], &[0, 0]);
        assert_eq!(icmp6_checksum(Ipv6Addr::UNSPECIFIED, group, &p[40..]), 0);
        // Independently computed (RFC 4443 2.3 by hand, scripts-free): the same message
        // with its checksum field zeroed sums to the stored value.
        let mut zeroed = p;
        zeroed[42..44].fill(0);
        let expect = icmp6_checksum(Ipv6Addr::UNSPECIFIED, group, &zeroed[40..]);
        assert_eq!(expect.to_be_bytes(), [p[42], p[43]]);
        // An advertisement names the address it answers for; a solicitation or a short
        // message names none.
        let na = neighbour_advert([2, 0, 0, 0, 0, 2], ip);
        assert_eq!(advert_target(&na), Some(ip));
        assert_eq!(advert_target(&p[40..]), None);
        for n in 0..24 {
            assert_eq!(advert_target(&na[..n]), None);
        }
    }

    #[test]
    fn garp_layout() {
        let p = garp([2, 0, 0, 0, 0, 1], Ipv4Addr::new(198, 18, 0, 100));
        assert_eq!(&p[..8], &[0, 1, 8, 0, 6, 4, 0, 1]);
        assert_eq!(&p[8..14], &[2, 0, 0, 0, 0, 1]);
        assert_eq!(&p[14..18], &p[24..28]);
        assert_eq!(&p[18..24], &[0; 6]);
    }
}
