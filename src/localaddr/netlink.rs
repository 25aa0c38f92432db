//! Sans-I/O parsing of rtnetlink address messages (`RTM_NEWADDR`, `RTM_DELADDR`), as the
//! kernel sends them to a `NETLINK_ROUTE` socket subscribed to `RTMGRP_IPV4_IFADDR` and
//! `RTMGRP_IPV6_IFADDR`. Layout (native byte order, every part aligned to 4 bytes):
//! `nlmsghdr` (16 bytes) · `ifaddrmsg` (8 bytes) · `rtattr`s (`IFA_ADDRESS`, `IFA_LOCAL`, ...).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// `RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR`: the multicast groups to subscribe to.
pub const ADDRESS_GROUPS: u32 = 0x10 | 0x100;

const NLMSG_HDRLEN: usize = 16;
const NLMSG_ERROR: u16 = 2;
const NLMSG_OVERRUN: u16 = 4;
const RTM_NEWADDR: u16 = 20;
const RTM_DELADDR: u16 = 21;
const IFADDRMSG_LEN: usize = 8;
const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
const IFA_FLAGS: u16 = 8;
const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;
/// `IFA_F_TENTATIVE`: an IPv6 address still in duplicate address detection (not bindable).
const IFA_F_TENTATIVE: u32 = 0x40;

/// An address was added to or removed from an interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddrChange {
    Added,
    Removed,
}

/// One address event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AddrEvent {
    pub change: AddrChange,
    /// The host's own address (`IFA_LOCAL` when present — on point-to-point links
    /// `IFA_ADDRESS` is the peer's — otherwise `IFA_ADDRESS`).
    pub addr: IpAddr,
    pub prefix_len: u8,
    /// Interface index (0: unknown, from a scan).
    pub ifindex: u32,
    /// IPv6 duplicate address detection still running: not usable yet.
    pub tentative: bool,
}

impl fmt::Display for AddrEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.change {
            AddrChange::Added => "added",
            AddrChange::Removed => "removed",
        };
        if self.ifindex == 0 {
            return write!(f, "{what} {} (found by a scan)", self.addr);
        }
        write!(
            f,
            "{what} {}/{} on interface {}{}",
            self.addr,
            self.prefix_len,
            self.ifindex,
            if self.tentative { " (tentative)" } else { "" }
        )
    }
}

/// What one datagram from the socket says.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Parsed {
    pub events: Vec<AddrEvent>,
    /// The kernel reported lost messages (`NLMSG_OVERRUN`) or an error: resynchronise from a
    /// full scan of the host's addresses.
    pub resync: bool,
}

/// Why a datagram could not be parsed (the watcher then resynchronises).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum NetlinkError {
    /// A header or attribute length points outside the datagram or below its own header.
    BadLength { offset: usize, len: usize },
}

impl fmt::Display for NetlinkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NetlinkError::BadLength { offset, len } => {
                write!(
                    f,
                    "malformed netlink message: length {len} at offset {offset}"
                )
            }
        }
    }
}

impl std::error::Error for NetlinkError {}

fn align(n: usize) -> usize {
    (n + 3) & !3
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// Parse every message of one datagram. Messages other than address messages are skipped;
/// address messages of other families, or without an address, are skipped too.
pub fn parse(buf: &[u8]) -> Result<Parsed, NetlinkError> {
    let mut out = Parsed::default();
    let mut at = 0;
    while buf.len() - at >= NLMSG_HDRLEN {
        let bad = |len| NetlinkError::BadLength { offset: at, len };
        let len = u32_at(buf, at).unwrap_or(0) as usize;
        if len < NLMSG_HDRLEN || len > buf.len() - at {
            return Err(bad(len));
        }
        let kind = u16_at(buf, at + 4).unwrap_or(0);
        let body = &buf[at + NLMSG_HDRLEN..at + len];
        match kind {
            RTM_NEWADDR | RTM_DELADDR => {
                let change = if kind == RTM_NEWADDR {
                    AddrChange::Added
                } else {
                    AddrChange::Removed
                };
                if let Some(ev) = address(change, body).map_err(|_| bad(len))? {
                    out.events.push(ev);
                }
            }
            NLMSG_OVERRUN | NLMSG_ERROR => out.resync = true,
            _ => {}
        }
        at += align(len).min(buf.len() - at);
    }
    Ok(out)
}

/// The event an `ifaddrmsg` and its attributes describe (None: not IPv4/IPv6, no address).
fn address(change: AddrChange, body: &[u8]) -> Result<Option<AddrEvent>, ()> {
    if body.len() < IFADDRMSG_LEN {
        return Err(());
    }
    let family = body[0];
    let prefix_len = body[1];
    let mut flags = u32::from(body[2]);
    let ifindex = u32_at(body, 4).ok_or(())?;
    let (mut address, mut local) = (None, None);
    let mut at = IFADDRMSG_LEN;
    while body.len() - at >= 4 {
        let len = usize::from(u16_at(body, at).ok_or(())?);
        if len < 4 || len > body.len() - at {
            return Err(());
        }
        let kind = u16_at(body, at + 2).ok_or(())?;
        let data = &body[at + 4..at + len];
        match kind {
            IFA_ADDRESS => address = ip(family, data),
            IFA_LOCAL => local = ip(family, data),
            IFA_FLAGS => flags = u32_at(data, 0).unwrap_or(flags),
            _ => {}
        }
        at += align(len).min(body.len() - at);
    }
    Ok(local.or(address).map(|addr| AddrEvent {
        change,
        addr,
        prefix_len,
        ifindex,
        tentative: flags & IFA_F_TENTATIVE != 0,
    }))
}

fn ip(family: u8, data: &[u8]) -> Option<IpAddr> {
    match family {
        AF_INET => Some(IpAddr::V4(Ipv4Addr::from(
            <[u8; 4]>::try_from(data.get(..4)?).ok()?,
        ))),
        AF_INET6 => Some(IpAddr::V6(Ipv6Addr::from(
            <[u8; 16]>::try_from(data.get(..16)?).ok()?,
        ))),
        _ => None,
    }
}

// Captured on x86_64 Linux (a test namespace's `lo`): the byte order is the host's.
#[cfg(all(test, target_endian = "little"))]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// `ip addr add 192.0.2.10/32 dev lo`
    const V4_ADD: &str = "4c0000001400000078fd0d6b36070000022080000100000008000100c000020a08000200c000020a070003006c6f0000080008008000000014000600ffffffffffffffff2c0a0a002c0a0a00";
    /// `ip addr del 192.0.2.10/32 dev lo`
    const V4_DEL: &str = "4c0000001500000078fd0d6b37070000022080000100000008000100c000020a08000200c000020a070003006c6f0000080008008000000014000600ffffffffffffffff2c0a0a002c0a0a00";
    /// `ip addr add 2001:db8::10/128 dev lo nodad`
    const V6_ADD: &str = "480000001400000000000000000000000a808200010000001400010020010db800000000000000000000001014000600ffffffffffffffff2e0a0a002e0a0a000800080082000000";
    /// `ip addr del 2001:db8::10/128 dev lo`
    const V6_DEL: &str = "480000001500000000000000000000000a808200010000001400010020010db800000000000000000000001014000600ffffffffffffffff2e0a0a002e0a0a000800080082000000";

    fn one(s: &str) -> AddrEvent {
        let p = parse(&hex(s)).unwrap();
        assert!(!p.resync);
        assert_eq!(p.events.len(), 1, "{p:?}");
        p.events[0]
    }

    #[test]
    fn ipv4_add_and_delete() {
        let add = one(V4_ADD);
        assert_eq!(add.change, AddrChange::Added);
        assert_eq!(add.addr, "192.0.2.10".parse::<IpAddr>().unwrap());
        assert_eq!((add.prefix_len, add.ifindex, add.tentative), (32, 1, false));
        let del = one(V4_DEL);
        assert_eq!(del.change, AddrChange::Removed);
        assert_eq!(del.addr, add.addr);
        assert_eq!(del.to_string(), "removed 192.0.2.10/32 on interface 1");
    }

    #[test]
    fn ipv6_add_and_delete() {
        let add = one(V6_ADD);
        assert_eq!(add.change, AddrChange::Added);
        assert_eq!(add.addr, "2001:db8::10".parse::<IpAddr>().unwrap());
        assert_eq!((add.prefix_len, add.ifindex), (128, 1));
        assert_eq!(one(V6_DEL).change, AddrChange::Removed);
    }

    #[test]
    fn several_messages_in_one_datagram() {
        let mut b = hex(V4_ADD);
        b.extend(hex(V6_DEL));
        let p = parse(&b).unwrap();
        let got: Vec<_> = p.events.iter().map(|e| (e.change, e.addr)).collect();
        assert_eq!(
            got,
            vec![
                (AddrChange::Added, "192.0.2.10".parse().unwrap()),
                (AddrChange::Removed, "2001:db8::10".parse().unwrap()),
            ]
        );
    }

    #[test]
    fn local_wins_over_peer_address() {
        // Point-to-point: IFA_ADDRESS is the peer (192.0.2.99), IFA_LOCAL ours (.10).
        let mut b = hex(V4_ADD);
        b[28..32].copy_from_slice(&[192, 0, 2, 99]);
        assert_eq!(one_of(&b).addr, "192.0.2.10".parse::<IpAddr>().unwrap());
        // Without IFA_LOCAL (IPv6 style) IFA_ADDRESS is taken: retype the attribute.
        let mut b = hex(V4_ADD);
        b[34] = 99;
        assert_eq!(one_of(&b).addr, "192.0.2.10".parse::<IpAddr>().unwrap());
    }

    fn one_of(b: &[u8]) -> AddrEvent {
        parse(b).unwrap().events[0]
    }

    #[test]
    fn tentative_flag_from_ifa_flags() {
        let mut b = hex(V6_ADD);
        // IFA_FLAGS value (last attribute): 0x82 | IFA_F_TENTATIVE.
        let n = b.len();
        b[n - 4] |= 0x40;
        assert!(one_of(&b).tentative);
    }

    #[test]
    fn overrun_and_error_ask_for_a_resync() {
        for kind in [NLMSG_OVERRUN, NLMSG_ERROR] {
            let mut b = vec![0u8; 20];
            b[..4].copy_from_slice(&20u32.to_ne_bytes());
            b[4..6].copy_from_slice(&kind.to_ne_bytes());
            let p = parse(&b).unwrap();
            assert!(p.resync && p.events.is_empty());
        }
    }

    #[test]
    fn malformed_lengths_are_errors_not_panics() {
        let good = hex(V4_ADD);
        // Header length beyond the datagram, and below the header size.
        for len in [good.len() as u32 + 4, 8] {
            let mut b = good.clone();
            b[..4].copy_from_slice(&len.to_ne_bytes());
            assert!(parse(&b).is_err(), "{len}");
        }
        // An attribute whose length runs past the message.
        let mut b = good.clone();
        b[24..26].copy_from_slice(&200u16.to_ne_bytes());
        assert!(parse(&b).is_err());
        // Truncated anywhere: never a panic.
        for cut in 0..good.len() {
            let _ = parse(&good[..cut]);
        }
        // Other message types are skipped.
        let mut b = good.clone();
        b[4..6].copy_from_slice(&16u16.to_ne_bytes());
        assert_eq!(parse(&b).unwrap(), Parsed::default());
    }
}
