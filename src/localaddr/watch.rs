//! The thread that follows the host's addresses: a blocking `NETLINK_ROUTE` socket
//! subscribed to IPv4 and IPv6 address changes (polled with a 1 s timeout so that the thread
//! ends with its server), or, when such a socket cannot be opened, a `getifaddrs(3)` scan
//! every [`SCAN_INTERVAL`]. Lost netlink messages (`ENOBUFS`, `NLMSG_OVERRUN`) are made up
//! for by a scan compared with the last known set.

use super::bindable;
use super::netlink::{self, AddrChange, AddrEvent};
use super::LocalAddrs;
use log::{debug, info, warn};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{
    bind, recv, setsockopt, socket, sockopt, AddressFamily, MsgFlags, NetlinkAddr, SockFlag,
    SockProtocol, SockType,
};
use std::collections::HashSet;
use std::io;
use std::net::IpAddr;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Weak;
use std::time::{Duration, Instant};

/// How often the fallback scans the host's addresses.
pub const SCAN_INTERVAL: Duration = Duration::from_secs(2);

/// How the thread learns of changes.
enum Source {
    Netlink(OwnedFd),
    Scan { next: Instant },
}

/// What the watcher acts on: the proxy's state, handed over by the server (so that this
/// module does not know it).
pub trait Host: Send + Sync {
    /// Whether the proxy is stopping (the thread ends).
    fn stopping(&self) -> bool;
    /// The source addresses known to have left the host.
    fn local(&self) -> &LocalAddrs;
    /// Whether `ip` is a source address of the configuration in force (any client).
    fn configured(&self, ip: IpAddr) -> bool;
    /// Close, without QUIT, the idle pooled connections from `ip`; how many.
    fn close_idle_from(&self, ip: IpAddr) -> usize;
}

/// Start the watcher thread for the server whose state is `shared`; it ends within
/// about a second of the server stopping or being dropped.
pub fn start(shared: Weak<dyn Host>) -> io::Result<()> {
    std::thread::Builder::new()
        .name("addresses".into())
        .stack_size(256 * 1024)
        .spawn(move || run(shared))
        .map(|_| ())
}

fn open_netlink() -> nix::Result<OwnedFd> {
    let fd = socket(
        AddressFamily::Netlink,
        SockType::Raw,
        SockFlag::SOCK_CLOEXEC,
        SockProtocol::NetlinkRoute,
    )?;
    // Room for bursts (keepalived moving many addresses at once).
    let _ = setsockopt(&fd, sockopt::RcvBuf, &(1 << 20));
    bind(
        std::os::fd::AsRawFd::as_raw_fd(&fd),
        &NetlinkAddr::new(0, netlink::ADDRESS_GROUPS),
    )?;
    Ok(fd)
}

/// The host's addresses now.
pub fn snapshot() -> io::Result<HashSet<IpAddr>> {
    let mut set = HashSet::new();
    for ifa in nix::ifaddrs::getifaddrs().map_err(io::Error::from)? {
        let Some(a) = ifa.address else { continue };
        if let Some(v4) = a.as_sockaddr_in() {
            set.insert(IpAddr::V4(v4.ip()));
        } else if let Some(v6) = a.as_sockaddr_in6() {
            set.insert(IpAddr::V6(v6.ip()));
        }
    }
    Ok(set)
}

/// What changed between two snapshots (removals first, each list sorted).
pub fn diff(old: &HashSet<IpAddr>, new: &HashSet<IpAddr>) -> Vec<AddrEvent> {
    let ev = |change, addr| AddrEvent {
        change,
        addr,
        prefix_len: 0,
        ifindex: 0,
        tentative: false,
    };
    let mut gone: Vec<IpAddr> = old.difference(new).copied().collect();
    let mut came: Vec<IpAddr> = new.difference(old).copied().collect();
    gone.sort();
    came.sort();
    gone.into_iter()
        .map(|a| ev(AddrChange::Removed, a))
        .chain(came.into_iter().map(|a| ev(AddrChange::Added, a)))
        .collect()
}

/// `GREENARROW_PROXY_ADDRESS_WATCH=scan` forces the `getifaddrs` scan (for tests and for
/// hosts where netlink notifications misbehave).
pub const MODE_ENV: &str = "GREENARROW_PROXY_ADDRESS_WATCH";

fn run(weak: Weak<dyn Host>) {
    let forced_scan = std::env::var(MODE_ENV).is_ok_and(|v| v == "scan");
    let netlink = if forced_scan {
        Err(nix::errno::Errno::ENOTSUP)
    } else {
        open_netlink()
    };
    let mut present = match snapshot() {
        Ok(p) => p,
        Err(e) => {
            // getifaddrs needs netlink too (glibc): nothing to follow with.
            warn!("cannot list the host's addresses ({e}): a source address that leaves the host is noticed only when binding it fails");
            return;
        }
    };
    let mut source = match netlink {
        Ok(fd) => {
            debug!("following the host's address changes (netlink)");
            Source::Netlink(fd)
        }
        Err(e) => {
            let why = if forced_scan {
                format!("{MODE_ENV}=scan")
            } else {
                format!("cannot open a netlink socket: {e}")
            };
            warn!(
                "following the host's addresses by scanning them every {} ({why})",
                humantime::format_duration(SCAN_INTERVAL)
            );
            Source::Scan {
                next: Instant::now() + SCAN_INTERVAL,
            }
        }
    };
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let Some(shared) = weak.upgrade() else { return };
        if shared.stopping() {
            return;
        }
        drop(shared);
        let events = match &mut source {
            Source::Netlink(fd) => match wait_netlink(fd, &mut buf) {
                Wait::Nothing => continue,
                Wait::Events(evs) => evs,
                Wait::Resync(why) => {
                    debug!("address watcher: {why}; rescanning the host's addresses");
                    rescan(&mut present)
                }
            },
            Source::Scan { next } => {
                let now = Instant::now();
                if now < *next {
                    std::thread::sleep((*next - now).min(Duration::from_secs(1)));
                    continue;
                }
                *next = now + SCAN_INTERVAL;
                rescan(&mut present)
            }
        };
        let Some(shared) = weak.upgrade() else { return };
        for ev in events {
            match ev.change {
                AddrChange::Added => present.insert(ev.addr),
                AddrChange::Removed => present.remove(&ev.addr),
            };
            apply(&*shared, &ev, present.contains(&ev.addr));
        }
    }
}

enum Wait {
    Nothing,
    Events(Vec<AddrEvent>),
    Resync(String),
}

fn wait_netlink(fd: &OwnedFd, buf: &mut [u8]) -> Wait {
    let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
    match poll(&mut fds, PollTimeout::from(1000u16)) {
        Ok(0) | Err(nix::errno::Errno::EINTR) => return Wait::Nothing,
        Ok(_) => {}
        Err(e) => {
            // Should not happen; do not spin.
            std::thread::sleep(Duration::from_secs(1));
            return Wait::Resync(format!("poll: {e}"));
        }
    }
    match recv(
        std::os::fd::AsRawFd::as_raw_fd(fd),
        buf,
        MsgFlags::MSG_DONTWAIT,
    ) {
        Ok(n) => match netlink::parse(buf.get(..n).unwrap_or_default()) {
            Ok(p) if p.resync => Wait::Resync("the kernel reported lost messages".into()),
            Ok(p) => Wait::Events(p.events),
            Err(e) => Wait::Resync(e.to_string()),
        },
        Err(nix::errno::Errno::EAGAIN) | Err(nix::errno::Errno::EINTR) => Wait::Nothing,
        Err(e) => Wait::Resync(format!("netlink: {e}")),
    }
}

fn rescan(present: &mut HashSet<IpAddr>) -> Vec<AddrEvent> {
    match snapshot() {
        Ok(now) => {
            let evs = diff(present, &now);
            *present = now;
            evs
        }
        Err(e) => {
            // Transient (fd exhaustion): try again at the next tick.
            debug!("cannot list the host's addresses: {e}");
            Vec::new()
        }
    }
}

/// Act on one event: an address that left (and cannot be bound any more) is refused at once
/// and its pooled connections are closed; one that came is usable at once.
fn apply(shared: &dyn Host, ev: &AddrEvent, still_present: bool) {
    let ip = ev.addr;
    match ev.change {
        AddrChange::Removed => {
            // The same address may remain on another interface, or be covered by a local
            // route (127.0.0.0/8): gone only if the kernel refuses it.
            if still_present || bindable(ip) {
                debug!("address {ev}: still usable");
                return;
            }
            shared.local().left(ip);
            let n = shared.close_idle_from(ip);
            if shared.configured(ip) {
                warn!(source:% = ip; "source address {ip} left the host ({ev}): requests for it fail with 451 source_not_local until it is back; {n} pooled connection(s) from it closed");
            } else {
                debug!("address {ev}: {n} pooled connection(s) closed");
            }
        }
        AddrChange::Added => {
            if ev.tentative {
                debug!("address {ev}: usable after duplicate address detection");
                return;
            }
            let was_gone = shared.local().back(ip);
            // A new address (or route) can make others bindable again.
            let also = shared.local().recheck(|a| !bindable(a));
            if was_gone || shared.configured(ip) {
                info!(source:% = ip; "address {ip} appeared on the host ({ev}): usable as a source address now");
            } else {
                debug!("address {ev}");
            }
            for a in also {
                info!(source:% = a; "source address {a} is usable again");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(items: &[&str]) -> HashSet<IpAddr> {
        items.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn diff_reports_removals_then_additions() {
        let old = set(&["127.0.0.1", "192.0.2.1", "2001:db8::1"]);
        let new = set(&["127.0.0.1", "2001:db8::1", "192.0.2.2", "192.0.2.3"]);
        let got: Vec<(AddrChange, String)> = diff(&old, &new)
            .into_iter()
            .map(|e| (e.change, e.addr.to_string()))
            .collect();
        assert_eq!(
            got,
            vec![
                (AddrChange::Removed, "192.0.2.1".into()),
                (AddrChange::Added, "192.0.2.2".into()),
                (AddrChange::Added, "192.0.2.3".into()),
            ]
        );
        assert!(diff(&new, &new).is_empty());
    }

    #[test]
    fn snapshot_lists_loopback() {
        let s = snapshot().unwrap();
        assert!(s.contains(&"127.0.0.1".parse::<IpAddr>().unwrap()), "{s:?}");
    }
}
