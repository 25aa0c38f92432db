//! Outbound dialing toward MX servers from a chosen source address (socket2).
//!
//! The source address is bound before connecting, with `IP_BIND_ADDRESS_NO_PORT` so that
//! the port is picked at connect time from the whole 4-tuple: many flows to different MX
//! servers can share one source address without exhausting its ephemeral ports. A bind that
//! fails is reported as such: the proxy never falls back to another source address.

use greenarrow_proxy_net::deadline::{ceil_millis, Deadline};
use greenarrow_proxy_proto::protocol::Failure;
use socket2::{Domain, Protocol, SockAddr, Socket, TcpKeepalive, Type};
use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::Duration;

/// Why a dial failed, in the categories an MTA needs. The socket error, when there is one, is
/// the `source()`: the text says only what failed (the reply's text is the whole chain).
#[derive(Debug)]
#[non_exhaustive]
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
            DialError::SourceNotLocal { source, .. } => {
                write!(f, "cannot bind source address {source}")
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
            DialError::Network { dest, .. } => write!(f, "cannot connect to {dest}"),
        }
    }
}

impl std::error::Error for DialError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            DialError::SourceNotLocal { error, .. } | DialError::Network { error, .. } => {
                Some(error)
            }
            _ => None,
        }
    }
}

impl DialError {
    /// The failure the MTA is told of.
    pub fn failure(&self) -> Failure {
        match self {
            DialError::SourceNotLocal { .. } => Failure::SourceNotLocal,
            DialError::FamilyMismatch { .. } => Failure::DestinationNotPermitted,
            DialError::Refused { .. } => Failure::ConnectRefused,
            DialError::Timeout { .. } => Failure::ConnectTimeout,
            DialError::Network { .. } => Failure::NetworkError,
        }
    }

    /// Whether another address of the destination may do better: the MX's or the network's
    /// answer, not this host's (its source address) or the request's (its address family).
    pub fn worth_another_address(&self) -> bool {
        matches!(
            self,
            DialError::Refused { .. } | DialError::Timeout { .. } | DialError::Network { .. }
        )
    }
}

/// Connect to `dest` from `source` (port chosen by the kernel), with a connect timeout,
/// TCP_NODELAY and TCP keepalive.
pub fn dial(source: IpAddr, dest: SocketAddr, timeout: Duration) -> Result<TcpStream, DialError> {
    let source = source.to_canonical();
    let dest = SocketAddr::new(dest.ip().to_canonical(), dest.port());
    if !crate::dns::Family::same(&source, &dest.ip()) {
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
    match connect_within(&socket, &SockAddr::from(dest), timeout) {
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
    socket.set_tcp_keepalive(&keepalive()).map_err(net)?;
    Ok(socket.into())
}

/// The TCP keepalive of the proxy's connections: MX connections (set by [`dial`]) and the
/// MTA connections of the front-ends (set on their listeners, whose accepted sockets inherit
/// it): probes after 60 s of silence, every 15 s, 4 of them.
pub fn keepalive() -> TcpKeepalive {
    TcpKeepalive::new()
        .with_time(Duration::from_secs(60))
        .with_interval(Duration::from_secs(15))
        .with_retries(4)
}

/// A blocking connect bounded by the socket's send timeout (Linux bounds a blocking `connect`
/// by `SO_SNDTIMEO` and says `EINPROGRESS` when it runs out): one `setsockopt` where socket2's
/// `connect_timeout` makes four `fcntl` and a `poll` (non-blocking on, connect, poll,
/// non-blocking off). The set-up replaces the send timeout before its first write.
fn connect_within(socket: &Socket, dest: &SockAddr, timeout: Duration) -> io::Result<()> {
    let deadline = Deadline::after(timeout);
    socket.set_write_timeout(Some(timeout))?;
    match socket.connect(dest) {
        Ok(()) => Ok(()),
        Err(e) if e.raw_os_error() == Some(nix::libc::EINPROGRESS) => {
            Err(io::ErrorKind::TimedOut.into())
        }
        // A signal interrupted the wait (a socket with a timeout is not restarted); the
        // handshake goes on in the kernel: wait for it as a non-blocking connect would.
        Err(e) if e.kind() == io::ErrorKind::Interrupted => wait_connected(socket, deadline),
        Err(e) => Err(e),
    }
}

/// Wait until an interrupted connect completes or `deadline` passes.
fn wait_connected(socket: &Socket, deadline: Deadline) -> io::Result<()> {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    use std::os::fd::AsFd;
    loop {
        let Some(left) = deadline.left() else {
            return Err(io::ErrorKind::TimedOut.into());
        };
        // Whole milliseconds, rounded up (a zero poll timeout would not wait).
        let ms = ceil_millis(left).as_millis();
        let wait = PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX);
        let mut fds = [PollFd::new(socket.as_fd(), PollFlags::POLLOUT)];
        match poll(&mut fds, wait) {
            Ok(0) => continue,
            Ok(_) => {
                return match socket.take_error()? {
                    Some(e) => Err(e),
                    None => Ok(()),
                }
            }
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
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

    #[test]
    fn a_connect_that_gets_no_answer_times_out() {
        // A listener with a full accept queue (backlog 0 holds one connection) drops SYNs:
        // the next connect gets no answer.
        let l = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        l.bind(&SockAddr::from(SocketAddr::from(([127, 0, 0, 1], 0))))
            .unwrap();
        l.listen(0).unwrap();
        let addr = l.local_addr().unwrap().as_socket().unwrap();
        let _queued = TcpStream::connect(addr).unwrap();
        let err = dial(
            "127.0.0.1".parse().unwrap(),
            addr,
            Duration::from_millis(300),
        )
        .unwrap_err();
        assert!(matches!(err, DialError::Timeout { .. }), "{err}");
    }
}
