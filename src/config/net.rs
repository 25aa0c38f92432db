//! IP networks in CIDR notation (`192.0.2.0/24`, `2001:db8::/32`, or a bare address).

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

/// An IP network: an address and a prefix length, with no host bits set.
///
/// A bare address parses as a single-host network (`/32` or `/128`).
/// [`IpNet::contains`] treats IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`) as
/// the IPv4 address they carry, because that is how IPv4 peers appear on a
/// dual-stack socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IpNet {
    addr: IpAddr,
    prefix_len: u8,
}

/// Why a string is not a valid [`IpNet`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum IpNetError {
    /// The part before `/` is not an IP address.
    InvalidAddress(String),
    /// The part after `/` is not a number from 0 to `max`.
    InvalidPrefix {
        /// The prefix length as written.
        prefix: String,
        /// 32 for IPv4, 128 for IPv6.
        max: u8,
    },
    /// Bits after the prefix length are set, e.g. `10.1.2.3/8`.
    HostBitsSet {
        /// The network the user probably meant.
        suggestion: IpNet,
    },
}

impl fmt::Display for IpNetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IpNetError::InvalidAddress(addr) => write!(f, "{addr:?} is not an IP address"),
            IpNetError::InvalidPrefix { prefix, max } => {
                write!(
                    f,
                    "prefix length {prefix:?} is not a number from 0 to {max}"
                )
            }
            IpNetError::HostBitsSet { suggestion } => write!(
                f,
                "host bits are set after the prefix length; did you mean {suggestion}?"
            ),
        }
    }
}

impl std::error::Error for IpNetError {}

impl IpNet {
    /// Builds a network from an address and a prefix length.
    ///
    /// Fails if the prefix is longer than the address or host bits are set.
    pub fn new(addr: IpAddr, prefix_len: u8) -> Result<IpNet, IpNetError> {
        let max = max_prefix(addr);
        if prefix_len > max {
            return Err(IpNetError::InvalidPrefix {
                prefix: prefix_len.to_string(),
                max,
            });
        }
        let net = IpNet { addr, prefix_len };
        let masked = net.network();
        if masked != addr {
            return Err(IpNetError::HostBitsSet {
                suggestion: IpNet {
                    addr: masked,
                    prefix_len,
                },
            });
        }
        Ok(net)
    }

    /// Parses `addr/len` or a bare address (a single host).
    pub fn parse(s: &str) -> Result<IpNet, IpNetError> {
        let (addr_part, prefix_part) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr = IpAddr::from_str(addr_part)
            .map_err(|_| IpNetError::InvalidAddress(addr_part.to_string()))?;
        let max = max_prefix(addr);
        let prefix_len = match prefix_part {
            None => max,
            Some(p) => {
                let bad = || IpNetError::InvalidPrefix {
                    prefix: p.to_string(),
                    max,
                };
                if p.is_empty() || p.len() > 3 || !p.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(bad());
                }
                p.parse::<u8>().map_err(|_| bad())?
            }
        };
        IpNet::new(addr, prefix_len)
    }

    /// The network address (host bits are zero).
    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    /// The prefix length in bits.
    pub fn prefix_len(&self) -> u8 {
        self.prefix_len
    }

    /// Whether `ip` is inside this network. An IPv4-mapped IPv6 address
    /// (`::ffff:a.b.c.d`) also matches as the IPv4 address `a.b.c.d`.
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.contains_exact(ip) || self.contains_exact(ip.to_canonical())
    }

    fn contains_exact(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                (u32::from(net) ^ u32::from(ip)) & mask_v4(self.prefix_len) == 0
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                (u128::from(net) ^ u128::from(ip)) & mask_v6(self.prefix_len) == 0
            }
            _ => false,
        }
    }

    /// `addr` with the host bits cleared.
    fn network(&self) -> IpAddr {
        match self.addr {
            IpAddr::V4(a) => IpAddr::V4((u32::from(a) & mask_v4(self.prefix_len)).into()),
            IpAddr::V6(a) => IpAddr::V6((u128::from(a) & mask_v6(self.prefix_len)).into()),
        }
    }
}

impl FromStr for IpNet {
    type Err = IpNetError;

    fn from_str(s: &str) -> Result<IpNet, IpNetError> {
        IpNet::parse(s)
    }
}

/// As written in the file: `192.0.2.0/24`.
impl serde::Serialize for IpNet {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl fmt::Display for IpNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix_len)
    }
}

fn max_prefix(addr: IpAddr) -> u8 {
    match addr {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    }
}

fn mask_v4(prefix_len: u8) -> u32 {
    u32::MAX
        .checked_shl(32u32.saturating_sub(u32::from(prefix_len)))
        .unwrap_or(0)
}

fn mask_v6(prefix_len: u8) -> u128 {
    u128::MAX
        .checked_shl(128u32.saturating_sub(u32::from(prefix_len)))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn parses_and_displays() {
        assert_eq!(
            IpNet::parse("10.0.0.0/8").unwrap().to_string(),
            "10.0.0.0/8"
        );
        assert_eq!(
            IpNet::parse("192.0.2.7").unwrap().to_string(),
            "192.0.2.7/32"
        );
        assert_eq!(IpNet::parse("::1").unwrap().to_string(), "::1/128");
        assert_eq!(
            IpNet::parse("2001:db8::/32").unwrap().to_string(),
            "2001:db8::/32"
        );
        assert_eq!(IpNet::parse("0.0.0.0/0").unwrap().to_string(), "0.0.0.0/0");
        assert_eq!(IpNet::parse("::/0").unwrap().prefix_len(), 0);
    }

    #[test]
    fn rejects_bad_input() {
        assert_eq!(
            IpNet::parse("10.0.0.300/8"),
            Err(IpNetError::InvalidAddress("10.0.0.300".into()))
        );
        for bad in [
            "10.0.0.0/33",
            "10.0.0.0/",
            "10.0.0.0/+8",
            "10.0.0.0/x",
            "::/129",
        ] {
            assert!(
                matches!(IpNet::parse(bad), Err(IpNetError::InvalidPrefix { .. })),
                "{bad}"
            );
        }
        let err = IpNet::parse("10.1.2.3/8").unwrap_err();
        assert_eq!(
            err.to_string(),
            "host bits are set after the prefix length; did you mean 10.0.0.0/8?"
        );
        assert!(IpNet::parse("").is_err());
        assert!(IpNet::parse("2001:db8::1/32").is_err());
    }

    #[test]
    fn contains_v4_and_v6() {
        let net = IpNet::parse("192.0.2.0/24").unwrap();
        assert!(net.contains(ip("192.0.2.0")));
        assert!(net.contains(ip("192.0.2.255")));
        assert!(!net.contains(ip("192.0.3.0")));
        assert!(!net.contains(ip("2001:db8::1")));
        let all = IpNet::parse("0.0.0.0/0").unwrap();
        assert!(all.contains(ip("255.255.255.255")));
        let v6 = IpNet::parse("2001:db8::/32").unwrap();
        assert!(v6.contains(ip("2001:db8:ffff::1")));
        assert!(!v6.contains(ip("2001:db9::1")));
        assert!(!v6.contains(ip("192.0.2.1")));
    }

    #[test]
    fn contains_ipv4_mapped() {
        let net = IpNet::parse("127.0.0.0/8").unwrap();
        assert!(net.contains(ip("::ffff:127.0.0.1")));
        assert!(!net.contains(ip("::ffff:128.0.0.1")));
        // A network written in mapped form still matches the mapped address.
        let mapped = IpNet::parse("::ffff:0:0/96").unwrap();
        assert!(mapped.contains(ip("::ffff:192.0.2.1")));
        // ::1 is not IPv4-mapped and stays IPv6.
        assert!(!net.contains(ip("::1")));
    }
}
