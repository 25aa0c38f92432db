//! The host's addresses as they come and go (keepalived moving a virtual address, an operator
//! running `ip addr del`): a source address that left the host is answered with
//! `451 source_not_local` at once and its pooled connections are closed; one that appears is
//! usable at once. Nothing here needs a restart or a reload.
//!
//! - [`netlink`]: sans-I/O parsing of the kernel's `RTM_NEWADDR`/`RTM_DELADDR` messages;
//! - [`watch`]: the thread that listens to them (or, where a netlink socket cannot be opened,
//!   compares `getifaddrs(3)` snapshots every few seconds) and applies them;
//! - [`LocalAddrs`] (here): the addresses known to have left, which every request consults.
//!
//! The kernel stays the authority: an address is "gone" only while binding it fails (a
//! `local` route, `ip_nonlocal_bind` or an address on `lo` covering it keeps it usable).

pub mod netlink;
pub mod watch;

use parking_lot::Mutex;
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};

/// The source addresses known to have left the host.
#[derive(Default)]
pub struct LocalAddrs {
    gone: Mutex<HashSet<IpAddr>>,
    /// `gone` is not empty (the common case, empty, costs one atomic load per request).
    any_gone: AtomicBool,
}

impl LocalAddrs {
    pub fn new() -> LocalAddrs {
        LocalAddrs::default()
    }

    /// May a connection be made from `ip` now? False only for an address that left the host
    /// and still cannot be bound (checked again here, so that a way of making it usable that
    /// sends no address event — a `local` route, the sysctl — is noticed).
    pub fn usable(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        if !self.is_gone(ip) {
            return true;
        }
        if bindable(ip) {
            self.back(ip);
            return true;
        }
        false
    }

    /// Known to have left the host (no bind attempted).
    pub fn is_gone(&self, ip: IpAddr) -> bool {
        self.any_gone.load(Ordering::Acquire) && self.gone.lock().contains(&ip.to_canonical())
    }

    /// `ip` left the host. True if it was not known as gone.
    pub fn left(&self, ip: IpAddr) -> bool {
        let mut g = self.gone.lock();
        let new = g.insert(ip.to_canonical());
        self.any_gone.store(true, Ordering::Release);
        new
    }

    /// `ip` is usable again. True if it was known as gone.
    pub fn back(&self, ip: IpAddr) -> bool {
        let mut g = self.gone.lock();
        let was = g.remove(&ip.to_canonical());
        self.any_gone.store(!g.is_empty(), Ordering::Release);
        was
    }

    /// Forget every gone address that `still_gone` no longer confirms; returns them.
    pub fn recheck(&self, still_gone: impl Fn(IpAddr) -> bool) -> Vec<IpAddr> {
        let mut g = self.gone.lock();
        let back: Vec<IpAddr> = g.iter().copied().filter(|ip| !still_gone(*ip)).collect();
        for ip in &back {
            g.remove(ip);
        }
        self.any_gone.store(!g.is_empty(), Ordering::Release);
        back
    }

    /// The addresses known as gone, sorted (for the log and tests).
    pub fn gone(&self) -> Vec<IpAddr> {
        let mut v: Vec<IpAddr> = self.gone.lock().iter().copied().collect();
        v.sort();
        v
    }
}

/// Can a TCP socket be bound to `ip` now? (`IP_BIND_ADDRESS_NO_PORT`: no port is taken.)
pub fn bindable(ip: IpAddr) -> bool {
    let ip = ip.to_canonical();
    let addr = SocketAddr::new(ip, 0);
    let Ok(s) = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP)) else {
        // Cannot even make a socket (fd exhaustion): do not call the address gone for that.
        return true;
    };
    let _ = nix::sys::socket::setsockopt(&s, nix::sys::socket::sockopt::IpBindAddressNoPort, &true);
    s.bind(&SockAddr::from(addr)).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn gone_until_back() {
        let l = LocalAddrs::new();
        // Documentation address: never on this host, so binding it fails.
        let doc = ip("192.0.2.77");
        assert!(l.usable(doc), "never seen leaving: not refused early");
        assert!(l.left(doc));
        assert!(!l.left(doc));
        assert!(l.is_gone(doc));
        assert!(!l.usable(doc));
        assert_eq!(l.gone(), vec![doc]);
        assert!(l.back(doc));
        assert!(!l.back(doc));
        assert!(l.usable(doc));
        assert!(l.gone().is_empty());
    }

    #[test]
    fn a_gone_address_that_binds_again_is_usable() {
        // 127.0.0.9 binds (127.0.0.0/8 is local): a stale "gone" heals itself at use.
        let l = LocalAddrs::new();
        let lo = ip("127.0.0.9");
        l.left(lo);
        assert!(l.usable(lo));
        assert!(!l.is_gone(lo));
        // IPv4-mapped IPv6 is the same address.
        l.left(ip("192.0.2.5"));
        assert!(l.is_gone(ip("::ffff:192.0.2.5")));
    }

    #[test]
    fn recheck_returns_those_back() {
        let l = LocalAddrs::new();
        for a in ["192.0.2.1", "192.0.2.2"] {
            l.left(ip(a));
        }
        let back = l.recheck(|a| a != ip("192.0.2.2"));
        assert_eq!(back, vec![ip("192.0.2.2")]);
        assert_eq!(l.gone(), vec![ip("192.0.2.1")]);
    }

    #[test]
    fn bindable_tells_local_from_foreign() {
        assert!(bindable(ip("127.0.0.1")));
        assert!(bindable(ip("127.0.0.42")));
        assert!(bindable(ip("::1")));
        assert!(!bindable(ip("192.0.2.1")));
    }
}
