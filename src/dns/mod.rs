//! DNS: a blocking facade over hickory-resolver.
//!
//! The daemon is synchronous (one thread per MTA session); this module is the
//! only place with an async runtime. A [`Resolver`] owns one hickory resolver
//! (and so one cache) and a one-worker tokio runtime that drives its sockets and
//! timers. Session threads call the blocking methods concurrently: each call
//! runs its lookup on the calling thread with `Handle::block_on`, so lookups
//! are not serialised behind a lock.
//!
//! - [`Resolver::lookup_host`]: addresses of one host name (or an IP literal).
//! - [`Resolver::resolve_mx`]: RFC 5321 §5.1 candidate list for a recipient
//!   domain (MX by preference, implicit MX, null MX), bounded to
//!   [`MAX_MX_HOSTS`] hosts of [`MAX_ADDRS_PER_HOST`] addresses each.
//! - [`Resolver::lookup_tlsa`]: the TLSA records of an MX host with their DNSSEC status, for
//!   DANE (`tlsa`: blocking queries to a validating resolver on loopback, AD bit trusted).
//!
//! Names are always fully qualified: no search domain is appended, a trailing
//! dot is optional, `/etc/hosts` is not consulted. See `docs/DNS.md`.

mod error;
mod mx;
mod name;
mod resolver;
mod tlsa;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

pub use error::DnsError;
pub use greenarrow_proxy_proto::family::Family;
pub use mx::{MAX_ADDRS_PER_HOST, MAX_MX_HOSTS};
pub use resolver::{Resolver, MAX_HOST_ADDRS};
pub use tlsa::TlsaLookup;

/// How to reach DNS.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResolverSettings {
    /// Recursive name servers to ask (UDP, falling back to TCP on the same
    /// port). Empty: the `nameserver` lines of the system's `/etc/resolv.conf`.
    pub nameservers: Vec<SocketAddr>,
    /// How long to wait for one answer before trying again.
    pub timeout: Duration,
    /// How many times a query is retried after a timeout or network error
    /// (1 to 10). A lookup gives up after about `timeout * (attempts + 1)`.
    pub attempts: usize,
}

impl Default for ResolverSettings {
    /// System name servers, 5 s timeout, 2 retries.
    fn default() -> Self {
        Self {
            nameservers: Vec::new(),
            timeout: Duration::from_secs(5),
            attempts: 2,
        }
    }
}

/// One address to try to connect to, and how it was found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    /// The MX host name, the host name that was resolved, or the IP literal;
    /// lower case, without trailing dot for names found via MX.
    pub host: String,
    /// The address to connect to.
    pub addr: IpAddr,
    /// MX preference; `Some(0)` for an implicit MX (a domain without MX
    /// records); `None` when no MX lookup was involved.
    pub preference: Option<u16>,
}

impl Candidate {
    /// A candidate for an IP literal given by the MTA (no DNS involved).
    pub fn literal(addr: IpAddr) -> Self {
        Self {
            host: addr.to_string(),
            addr,
            preference: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn family_of_addresses() {
        let v4: IpAddr = "127.0.0.1".parse().unwrap();
        let v6: IpAddr = "::1".parse().unwrap();
        assert_eq!(Family::of(&v4), Family::V4);
        assert_eq!(Family::of(&v6), Family::V6);
        assert!(Family::V4.matches(&v4));
        assert!(!Family::V4.matches(&v6));
        let mapped: IpAddr = "::ffff:192.0.2.1".parse().unwrap();
        assert_eq!(Family::of(&mapped), Family::V4);
        assert!(Family::same(&mapped, &v4) && !Family::same(&mapped, &v6));
        // Only the mapped form: an IPv4-compatible or NAT64 address is IPv6.
        for other in ["::192.0.2.1", "64:ff9b::c000:201"] {
            assert_eq!(Family::of(&other.parse().unwrap()), Family::V6, "{other}");
        }
        assert_eq!(Family::V6.to_string(), "IPv6");
    }

    #[test]
    fn resolver_is_send_sync_clone() {
        fn check<T: Send + Sync + Clone>() {}
        check::<Resolver>();
        check::<DnsError>();
    }

    #[test]
    fn literal_candidate() {
        let c = Candidate::literal("::1".parse().unwrap());
        assert_eq!(c.host, "::1");
        assert_eq!(c.preference, None);
    }
}
