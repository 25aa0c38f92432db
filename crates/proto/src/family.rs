//! Address families, with the one rule for IPv4-mapped IPv6 addresses.

use std::fmt;
use std::net::IpAddr;

/// An address family: the family of the source IP a connection will use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Family {
    /// IPv4 (A records).
    V4,
    /// IPv6 (AAAA records).
    V6,
}

impl Family {
    /// The family of `addr`. An IPv4-mapped IPv6 address (`::ffff:a.b.c.d`) is IPv4: the one
    /// rule for every family check in the proxy (egress, dial, the SOCKS5 BIND, the PROXY
    /// header), so that a mapped destination from an IPv4 source is the IPv4 destination
    /// whichever protocol carried it.
    pub fn of(addr: &IpAddr) -> Self {
        match addr.to_canonical() {
            IpAddr::V4(_) => Self::V4,
            IpAddr::V6(_) => Self::V6,
        }
    }

    /// Whether `a` and `b` are of one family ([`Family::of`]).
    pub fn same(a: &IpAddr, b: &IpAddr) -> bool {
        Self::of(a) == Self::of(b)
    }

    /// Whether `addr` is of this family.
    pub fn matches(self, addr: &IpAddr) -> bool {
        Self::of(addr) == self
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::V4 => "IPv4",
            Self::V6 => "IPv6",
        })
    }
}
