//! SOCKS5 reply codes and the reply encoder (RFC 1928 §6).

use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The `REP` field of a SOCKS5 reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum ReplyCode {
    /// 00: succeeded.
    Succeeded = 0,
    /// 01: general SOCKS server failure (also: source address not local, protocol errors).
    GeneralFailure = 1,
    /// 02: connection not allowed by ruleset (source, port or destination policy).
    NotAllowed = 2,
    /// 03: network unreachable.
    NetworkUnreachable = 3,
    /// 04: host unreachable.
    HostUnreachable = 4,
    /// 05: connection refused.
    ConnectionRefused = 5,
    /// 06: TTL expired (used for connect timeouts).
    TtlExpired = 6,
    /// 07: command not supported.
    CommandNotSupported = 7,
    /// 08: address type not supported.
    AddressTypeNotSupported = 8,
}

impl ReplyCode {
    /// The byte on the wire.
    pub fn code(self) -> u8 {
        self as u8
    }

    /// The reply code for a byte, `None` above 8.
    pub fn from_code(code: u8) -> Option<ReplyCode> {
        use ReplyCode::*;
        Some(match code {
            0 => Succeeded,
            1 => GeneralFailure,
            2 => NotAllowed,
            3 => NetworkUnreachable,
            4 => HostUnreachable,
            5 => ConnectionRefused,
            6 => TtlExpired,
            7 => CommandNotSupported,
            8 => AddressTypeNotSupported,
            _ => return None,
        })
    }

    /// The reply for a failed connect: ENETUNREACH/ENETDOWN → 03, EHOSTUNREACH → 04,
    /// ECONNREFUSED → 05, ETIMEDOUT (or any `TimedOut`) → 06, anything else → 01.
    pub fn from_io_error(error: &io::Error) -> ReplyCode {
        match error.kind() {
            io::ErrorKind::NetworkUnreachable | io::ErrorKind::NetworkDown => {
                ReplyCode::NetworkUnreachable
            }
            io::ErrorKind::HostUnreachable => ReplyCode::HostUnreachable,
            io::ErrorKind::ConnectionRefused => ReplyCode::ConnectionRefused,
            io::ErrorKind::TimedOut => ReplyCode::TtlExpired,
            _ => ReplyCode::GeneralFailure,
        }
    }

    /// RFC 1928's name for the code.
    pub fn describe(self) -> &'static str {
        use ReplyCode::*;
        match self {
            Succeeded => "succeeded",
            GeneralFailure => "general SOCKS server failure",
            NotAllowed => "connection not allowed by ruleset",
            NetworkUnreachable => "network unreachable",
            HostUnreachable => "host unreachable",
            ConnectionRefused => "connection refused",
            TtlExpired => "TTL expired",
            CommandNotSupported => "command not supported",
            AddressTypeNotSupported => "address type not supported",
        }
    }
}

impl fmt::Display for ReplyCode {
    /// `05 connection refused`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02x} {}", self.code(), self.describe())
    }
}

/// The address family of a request, which its reply must repeat (Exim reads the reply with
/// one `read()` of the request's length).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AddrFamily {
    /// ATYP 1 (or a type-3 IPv4 literal): the reply is 10 bytes.
    V4,
    /// ATYP 4 (or a type-3 IPv6 literal): the reply is 22 bytes.
    V6,
}

impl AddrFamily {
    /// The family of an address as written (an IPv4-mapped IPv6 address is `V6`).
    pub fn of(ip: IpAddr) -> AddrFamily {
        match ip {
            IpAddr::V4(_) => AddrFamily::V4,
            IpAddr::V6(_) => AddrFamily::V6,
        }
    }
}

/// Encode a whole SOCKS5 reply `05 REP 00 ATYP BND.ADDR BND.PORT` as one buffer, to be sent
/// in one write.
///
/// `family` is the request's family ([`SocksAddr::family`](super::SocksAddr::family); the
/// source's family for a BIND); `None` (a request by host name) means the family of `bound`,
/// or IPv4. The reply never uses ATYP 3. `bound` is the address to report: the real local
/// `ip:port` after a CONNECT, the bound source after a BIND; `None` (usual for failures)
/// writes the family's unspecified address and port 0. A `bound` of the other family is
/// converted when it is IPv4-mapped or can be mapped, else replaced by the unspecified address.
pub fn reply(code: ReplyCode, bound: Option<SocketAddr>, family: Option<AddrFamily>) -> Vec<u8> {
    let family = family.unwrap_or(match bound {
        Some(SocketAddr::V6(_)) => AddrFamily::V6,
        _ => AddrFamily::V4,
    });
    let port = bound.map_or(0, |b| b.port());
    let ip = bound.map(|b| b.ip());
    let mut out = vec![0x05, code.code(), 0x00];
    match family {
        AddrFamily::V4 => {
            let v4 = match ip {
                Some(IpAddr::V4(a)) => Some(a),
                Some(IpAddr::V6(a)) => a.to_ipv4_mapped(),
                None => None,
            };
            out.push(0x01);
            out.extend_from_slice(&v4.unwrap_or(Ipv4Addr::UNSPECIFIED).octets());
            out.extend_from_slice(&v4.map_or(0, |_| port).to_be_bytes());
        }
        AddrFamily::V6 => {
            let v6 = match ip {
                Some(IpAddr::V6(a)) => Some(a),
                Some(IpAddr::V4(a)) => Some(a.to_ipv6_mapped()),
                None => None,
            };
            out.push(0x04);
            out.extend_from_slice(&v6.unwrap_or(Ipv6Addr::UNSPECIFIED).octets());
            out.extend_from_slice(&v6.map_or(0, |_| port).to_be_bytes());
        }
    }
    out
}
