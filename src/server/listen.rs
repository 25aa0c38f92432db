//! Listening sockets and their accept threads: admission (`allow_from`, per-address limits)
//! happens here, before any TLS or protocol work; then the connection goes to the worker pool.

use super::{ListenKind, Server};
use crate::runtime::StartError;
use crate::shared::{IpSlot, Refusal};
use log::warn;
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use std::io;
use std::net::{SocketAddr, TcpStream};

/// Bind and listen on `addr`; with `freebind` (`listen_freebind`), with `IP_FREEBIND`, so that
/// an address not (yet) on the host can be bound: connections arrive once it appears.
///
/// A front-end's listener gets `TCP_NODELAY` and the proxy's TCP keepalive
/// ([`crate::dial::keepalive`]): Linux copies both to every socket it accepts, which saves
/// five system calls per MTA connection.
pub(super) fn bind(
    addr: SocketAddr,
    freebind: bool,
    kind: ListenKind,
) -> Result<Socket, StartError> {
    let err = |error| StartError::Bind { addr, error };
    let s =
        Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP)).map_err(err)?;
    s.set_reuse_address(true).map_err(err)?;
    if addr.is_ipv6() {
        s.set_only_v6(true).map_err(err)?;
        if freebind {
            s.set_freebind_v6(true).map_err(err)?;
        }
    } else if freebind {
        s.set_freebind_v4(true).map_err(err)?;
    }
    if matches!(kind, ListenKind::Frontend(..)) {
        s.set_tcp_nodelay(true).map_err(err)?;
        s.set_tcp_keepalive(&crate::dial::keepalive())
            .map_err(err)?;
    }
    s.bind(&SockAddr::from(addr)).map_err(err)?;
    s.listen(1024).map_err(err)?;
    Ok(s)
}

impl Server {
    /// Accept on `socket` (bound to `addr`, configured as `configured`) until it is shut down.
    /// Each connection is served under the runtime in force when it was accepted: the job
    /// carries it, so a reload while the connection waits for a worker changes nothing for it
    /// (not its front-end's mode, client, TLS policy or authentication, not the clients and
    /// secrets that authenticate it, not the native listener's certificate).
    pub(super) fn accept_loop(
        &self,
        socket: &Socket,
        configured: SocketAddr,
        addr: SocketAddr,
        kind: ListenKind,
    ) {
        loop {
            let (conn, peer) = match socket.accept() {
                Ok((c, p)) => (c, p),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    if self.shared.stopping() {
                        return;
                    }
                    if matches!(
                        e.raw_os_error(),
                        Some(nix::libc::EINVAL) | Some(nix::libc::EBADF)
                    ) {
                        // The listener was shut down (reload removed it).
                        return;
                    }
                    // EMFILE and friends: log and back off briefly so we do not spin.
                    warn!("accept on {addr}: {e}");
                    std::thread::sleep(std::time::Duration::from_millis(100));
                    continue;
                }
            };
            let Some(peer) = peer.as_socket() else {
                continue;
            };
            if self.shared.stopping() {
                return;
            }
            let rt = self.shared.runtime();
            if !super::configures(&rt.config, configured, kind) {
                // Not reached: `set_listen` stops a listener before the runtime that drops it
                // is put in force, and starts one after the runtime that adds it.
                warn!(mta:% = peer; "closed: {addr} is not a listener of the configuration in force");
                continue;
            }
            if !rt.config.allow_from.iter().any(|n| n.contains(peer.ip())) {
                self.shared.stats().refused(Refusal::AllowFrom);
                crate::logging::peer_warning(
                    peer,
                    crate::logging::PeerEvent::NotAllowed,
                    format_args!("refused: not in allow_from"),
                );
                drop(conn);
                continue;
            }
            let Some(slot) = IpSlot::take(&self.shared, peer.ip(), rt.config.max_sessions_per_ip)
            else {
                self.shared.stats().refused(Refusal::PerIp);
                crate::logging::peer_warning(
                    peer,
                    crate::logging::PeerEvent::PerIpLimit,
                    format_args!(
                        "refused: {} sessions from this address already (max_sessions_per_ip)",
                        rt.config.max_sessions_per_ip
                    ),
                );
                continue;
            };
            let tcp: TcpStream = conn.into();
            let shared = self.shared.clone();
            let job = Box::new(move || {
                let _slot = slot;
                shared.stats().session_started();
                let s = shared.clone();
                super::guard::run_session(s.stats(), peer, || match kind {
                    ListenKind::Native => crate::session::serve(shared, rt, tcp, peer),
                    ListenKind::Frontend(i, _) => crate::frontend::serve(shared, rt, tcp, peer, i),
                });
            });
            if let Err(job) = self.workers.try_submit(job) {
                // Dropping the job closes its socket.
                drop(job);
                self.shared.stats().refused(Refusal::Busy);
                warn!(
                    mta:% = peer;
                    "refused: all {} session threads busy and the queue is full",
                    self.shared.runtime().config.max_sessions
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::FrontendKind;
    use socket2::SockRef;
    use std::net::TcpListener;
    use std::time::Duration;

    /// What a connection accepted on a listener of `kind` has: (no-delay, keepalive idle).
    fn accepted(kind: ListenKind) -> (bool, Option<Duration>) {
        let s = bind("127.0.0.1:0".parse().unwrap(), false, kind).unwrap();
        let l: TcpListener = s.into();
        let _c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (a, _) = l.accept().unwrap();
        let a = SockRef::from(&a);
        let idle = a
            .keepalive()
            .unwrap()
            .then(|| a.tcp_keepalive_time().unwrap());
        (a.tcp_nodelay().unwrap(), idle)
    }

    #[test]
    fn front_end_connections_inherit_no_delay_and_keepalive_from_their_listener() {
        let fe = accepted(ListenKind::Frontend(0, FrontendKind::Socks5));
        assert_eq!(fe, (true, Some(Duration::from_secs(60))));
        let native = bind("127.0.0.1:0".parse().unwrap(), false, ListenKind::Native).unwrap();
        assert!(
            !native.keepalive().unwrap(),
            "the native listener is left as it was"
        );
    }
}
