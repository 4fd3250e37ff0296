//! Addresses on `--interface`, for floating VIPs: add and remove through rtnetlink
//! (RTM_NEWADDR / RTM_DELADDR on a NETLINK_ROUTE socket, each acknowledged by the kernel),
//! and announce with gratuitous ARP on an `AF_PACKET` socket.
//!
//! Hand-written over libc: two fixed-size requests and one 28-byte ARP packet are smaller
//! than a netlink crate stack. IPv4 only for now; IPv6 would add IFA_* attributes of 16
//! bytes and an unsolicited neighbour advertisement instead of ARP.
//!
//! Needs CAP_NET_ADMIN (addresses) and CAP_NET_RAW (the packet socket):
//! [`missing_capabilities`] says which are missing before anything is tried.
//!
//! Panics: never.
#![allow(unsafe_code)]

use std::ffi::CString;
use std::io;
use std::mem::{size_of, zeroed};
use std::net::{IpAddr, Ipv4Addr};
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

/// The interface VIPs live on: a netlink socket, a packet socket, its index and MAC.
#[derive(Debug)]
pub struct IfAddrs {
    netlink: OwnedFd,
    packet: OwnedFd,
    ifindex: u32,
    mac: [u8; 6],
    seq: u32,
}

const NLMSG_HDR: usize = 16;
const IFADDRMSG: usize = 8;
const RTA_V4: usize = 8;
/// One request: header, ifaddrmsg, IFA_LOCAL and IFA_ADDRESS.
const REQ_V4: usize = NLMSG_HDR + IFADDRMSG + 2 * RTA_V4;

impl IfAddrs {
    /// Opens both sockets for interface `name` (a name, not an address).
    pub fn open(name: &str) -> Result<IfAddrs, IfAddrError> {
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
        Ok(IfAddrs {
            netlink,
            packet,
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

    /// One gratuitous ARP (a broadcast request for the VIP from this interface's MAC), so
    /// hosts and switches on the link move the address to this node at once.
    pub fn announce(&self, vip: &VipSpec) -> io::Result<()> {
        let IpAddr::V4(ip) = vip.addr else {
            return Err(io::Error::from(io::ErrorKind::Unsupported));
        };
        let pkt = garp(self.mac, ip);
        // SAFETY: zeroed sockaddr_ll is valid; every field we rely on is set below.
        let mut to: libc::sockaddr_ll = unsafe { zeroed() };
        to.sll_family = libc::AF_PACKET as u16;
        to.sll_protocol = (libc::ETH_P_ARP as u16).to_be();
        to.sll_ifindex = self.ifindex as i32;
        to.sll_halen = 6;
        to.sll_addr[..6].copy_from_slice(&[0xff; 6]);
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

    /// Sends one address request and waits for the kernel's acknowledgement.
    fn request(&mut self, kind: u16, flags: i32, vip: &VipSpec) -> io::Result<()> {
        let IpAddr::V4(ip) = vip.addr else {
            return Err(io::Error::from(io::ErrorKind::Unsupported));
        };
        self.seq = self.seq.wrapping_add(1);
        let req = addr_request(kind, flags as u16, self.seq, self.ifindex, ip, vip.prefix);
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

/// RTM_NEWADDR/RTM_DELADDR for `ip/prefix` on `ifindex` (native byte order, as netlink is).
fn addr_request(
    kind: u16,
    flags: u16,
    seq: u32,
    ifindex: u32,
    ip: Ipv4Addr,
    prefix: u8,
) -> [u8; REQ_V4] {
    let mut b = [0u8; REQ_V4];
    b[0..4].copy_from_slice(&(REQ_V4 as u32).to_ne_bytes());
    b[4..6].copy_from_slice(&kind.to_ne_bytes());
    b[6..8].copy_from_slice(&flags.to_ne_bytes());
    b[8..12].copy_from_slice(&seq.to_ne_bytes());
    // nlmsg_pid 0: the kernel.
    b[16] = libc::AF_INET as u8;
    b[17] = prefix;
    // ifa_flags 0, scope universe (0).
    b[20..24].copy_from_slice(&ifindex.to_ne_bytes());
    let mut at = NLMSG_HDR + IFADDRMSG;
    for ty in [libc::IFA_LOCAL, libc::IFA_ADDRESS] {
        b[at..at + 2].copy_from_slice(&(RTA_V4 as u16).to_ne_bytes());
        b[at + 2..at + 4].copy_from_slice(&ty.to_ne_bytes());
        b[at + 4..at + 8].copy_from_slice(&ip.octets());
        at += RTA_V4;
    }
    b
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
        let ip = Ipv4Addr::new(198, 18, 0, 100);
        let r = addr_request(libc::RTM_NEWADDR, 0x0605, 7, 3, ip, 24);
        assert_eq!(u32::from_ne_bytes(r[0..4].try_into().unwrap()), 40);
        assert_eq!(u16::from_ne_bytes(r[4..6].try_into().unwrap()), 20);
        assert_eq!(u32::from_ne_bytes(r[8..12].try_into().unwrap()), 7);
        assert_eq!((r[16], r[17]), (libc::AF_INET as u8, 24));
        assert_eq!(u32::from_ne_bytes(r[20..24].try_into().unwrap()), 3);
        assert_eq!(&r[28..32], &[198, 18, 0, 100]);
        assert_eq!(&r[36..40], &[198, 18, 0, 100]);
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
    fn garp_layout() {
        let p = garp([2, 0, 0, 0, 0, 1], Ipv4Addr::new(198, 18, 0, 100));
        assert_eq!(&p[..8], &[0, 1, 8, 0, 6, 4, 0, 1]);
        assert_eq!(&p[8..14], &[2, 0, 0, 0, 0, 1]);
        assert_eq!(&p[14..18], &p[24..28]);
        assert_eq!(&p[18..24], &[0; 6]);
    }
}
