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
pub(super) fn bind(addr: SocketAddr, freebind: bool) -> Result<Socket, StartError> {
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
