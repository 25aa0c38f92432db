//! Outbound dialing toward MX servers from a chosen source address (socket2).
//!
//! The source address is bound before connecting, with `IP_BIND_ADDRESS_NO_PORT` so that
//! the port is picked at connect time from the whole 4-tuple: many flows to different MX
//! servers can share one source address without exhausting its ephemeral ports. A bind that
//! fails is reported as such: the proxy never falls back to another source address.

use socket2::{Domain, Protocol, SockAddr, Socket, TcpKeepalive, Type};
use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::Duration;

/// Why a dial failed, in the categories an MTA needs.
#[derive(Debug)]
pub enum DialError {
    /// The source address is not configured on this host (EADDRNOTAVAIL) or cannot be bound.
    SourceNotLocal { source: IpAddr, error: io::Error },
    /// Source and destination are of different address families.
    FamilyMismatch { source: IpAddr, dest: SocketAddr },
    /// The MX refused the connection (RST).
    Refused { dest: SocketAddr },
    /// No answer within the connect timeout.
    Timeout { dest: SocketAddr, after: Duration },
    /// Unreachable network or host, or another socket error.
    Network { dest: SocketAddr, error: io::Error },
}

impl fmt::Display for DialError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DialError::SourceNotLocal { source, error } => {
                write!(f, "cannot bind source address {source}: {error}")
            }
            DialError::FamilyMismatch { source, dest } => write!(
                f,
                "source address {source} and destination {dest} are of different address families"
            ),
            DialError::Refused { dest } => write!(f, "connection to {dest} refused"),
            DialError::Timeout { dest, after } => write!(
                f,
                "connection to {dest} timed out after {}",
                humantime::format_duration(*after)
            ),
            DialError::Network { dest, error } => write!(f, "cannot connect to {dest}: {error}"),
        }
    }
}

impl std::error::Error for DialError {}

/// Same family, after unmapping IPv4-mapped IPv6 addresses.
pub fn same_family(a: IpAddr, b: IpAddr) -> bool {
    a.to_canonical().is_ipv4() == b.to_canonical().is_ipv4()
}

/// Connect to `dest` from `source` (port chosen by the kernel), with a connect timeout,
/// TCP_NODELAY and TCP keepalive.
pub fn dial(source: IpAddr, dest: SocketAddr, timeout: Duration) -> Result<TcpStream, DialError> {
    let source = source.to_canonical();
    let dest = SocketAddr::new(dest.ip().to_canonical(), dest.port());
    if !same_family(source, dest.ip()) {
        return Err(DialError::FamilyMismatch { source, dest });
    }
    let net = |error: io::Error| DialError::Network { dest, error };
    let socket =
        Socket::new(Domain::for_address(dest), Type::STREAM, Some(Protocol::TCP)).map_err(net)?;
    // Best effort: older kernels lack it; binding then reserves a port, which still works.
    let _ = nix::sys::socket::setsockopt(
        &socket,
        nix::sys::socket::sockopt::IpBindAddressNoPort,
        &true,
    );
    socket
        .bind(&SockAddr::from(SocketAddr::new(source, 0)))
        .map_err(|error| DialError::SourceNotLocal { source, error })?;
    match socket.connect_timeout(&SockAddr::from(dest), timeout) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
            return Err(DialError::Refused { dest })
        }
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
            ) =>
        {
            return Err(DialError::Timeout {
                dest,
                after: timeout,
            })
        }
        // With IP_BIND_ADDRESS_NO_PORT an unusable source can surface only at connect time.
        Err(e) if e.raw_os_error() == Some(nix::libc::EADDRNOTAVAIL) => {
            return Err(DialError::SourceNotLocal { source, error: e })
        }
        Err(e) => return Err(net(e)),
    }
    socket.set_tcp_nodelay(true).map_err(net)?;
    let keepalive = TcpKeepalive::new()
        .with_time(Duration::from_secs(60))
        .with_interval(Duration::from_secs(15))
        .with_retries(4);
    socket.set_tcp_keepalive(&keepalive).map_err(net)?;
    Ok(socket.into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn binds_the_requested_source() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let s = dial(
            "127.0.0.3".parse().unwrap(),
            l.local_addr().unwrap(),
            Duration::from_secs(5),
        )
        .unwrap();
        assert_eq!(s.local_addr().unwrap().ip().to_string(), "127.0.0.3");
        let (_, peer) = l.accept().unwrap();
        assert_eq!(peer.ip().to_string(), "127.0.0.3");
    }

    #[test]
    fn ipv6_works() {
        let l = TcpListener::bind("[::1]:0").unwrap();
        let s = dial(
            "::1".parse().unwrap(),
            l.local_addr().unwrap(),
            Duration::from_secs(5),
        )
        .unwrap();
        assert!(s.local_addr().unwrap().is_ipv6());
    }

    #[test]
    fn errors_are_classified() {
        // A source address that is not on this host.
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let err = dial(
            "192.0.2.1".parse().unwrap(),
            l.local_addr().unwrap(),
            Duration::from_secs(5),
        )
        .unwrap_err();
        assert!(matches!(err, DialError::SourceNotLocal { .. }), "{err}");
        // Refused: a port nobody listens on.
        let port = l.local_addr().unwrap().port();
        drop(l);
        let err = dial(
            "127.0.0.1".parse().unwrap(),
            SocketAddr::new("127.0.0.1".parse().unwrap(), port),
            Duration::from_secs(5),
        )
        .unwrap_err();
        assert!(matches!(err, DialError::Refused { .. }), "{err}");
        let err = dial(
            "::1".parse().unwrap(),
            "127.0.0.1:25".parse().unwrap(),
            Duration::from_secs(1),
        )
        .unwrap_err();
        assert!(matches!(err, DialError::FamilyMismatch { .. }), "{err}");
    }
}
