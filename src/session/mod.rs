//! One MTA session, on one worker thread: TLS handshake, the proxy's command state (AUTH,
//! CONNECT, NOOP, QUIT), and the relayed SMTP session after each successful CONNECT.

pub mod audit;
mod connect;
pub mod egress;
pub mod error;
mod finish;
mod held;
mod look;
mod policy;
pub mod relay;

pub use egress::Egress;
pub use error::EgressError;

use crate::config::Identity;
use crate::logging::session::Via;
use crate::logging::{self, PeerEvent};
use crate::runtime::Runtime;
use crate::shared::{Peer, Shared};
use greenarrow_proxy_net::bufconn::{BufConn, ReadError};
use greenarrow_proxy_net::deadline::Deadline;
use greenarrow_proxy_net::tls::ServerTlsStream;
use greenarrow_proxy_net::tls::TlsError;
use greenarrow_proxy_proto::protocol::{
    parse_request, Failure, FailureReply, Request, MAX_REQUEST_LINE, PROTOCOL_VERSION,
};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Protocol errors tolerated on one connection before it is closed.
const MAX_PROTOCOL_ERRORS: u32 = 10;

/// The text of the `421 busy` sent to MTAs waiting between requests when the proxy stops.
const STOPPING: &str = "the proxy is stopping; closing connection";

/// Sent when the MTA was silent for `timeouts.mta_idle`.
pub(crate) const IDLE_TIMEOUT: &[u8] = b"421 4.4.2 idle timeout: closing connection\r\n";

/// Sent when the connection reached `timeouts.session_lifetime`.
pub(crate) const LIFETIME_EXCEEDED: &[u8] =
    b"421 4.4.2 session lifetime exceeded: closing connection\r\n";

/// The failure for a CONNECT before authentication.
fn auth_required() -> FailureReply {
    FailureReply::new(Failure::AuthRequired, "authenticate with AUTH first")
}

/// How long the next read from the MTA may wait: the idle timeout, cut short by the session
/// deadline; None when the deadline has passed.
pub(crate) fn read_timeout(idle: Duration, deadline: Deadline) -> Option<Duration> {
    deadline.left().map(|left| idle.min(left))
}

/// The failure for a connection that did not authenticate within `timeouts.mta_auth`.
fn auth_timeout(limit: Duration) -> FailureReply {
    FailureReply::new(
        Failure::AuthTimeout,
        format!(
            "no successful AUTH within {} of connecting (timeouts.mta_auth); closing connection",
            humantime::format_duration(limit)
        ),
    )
}

/// Takes the session out of the registry of sessions waiting for a request when it ends,
/// however it ends (a panic included): a stale entry would let a stop shut down a descriptor
/// that by then belongs to another connection.
struct Deregister<'a> {
    shared: &'a Shared,
    number: u64,
}

impl Drop for Deregister<'_> {
    fn drop(&mut self) {
        self.shared.request_arrived(self.number);
    }
}

/// Serve one accepted MTA connection to its end, under `rt`, the runtime in force when it was
/// accepted (its certificate, clients and secrets, limits).
pub fn serve(shared: Arc<Shared>, rt: Arc<Runtime>, tcp: TcpStream, peer: SocketAddr) {
    let accepted = Instant::now();
    let t = &rt.config.timeouts;
    let _ = tcp.set_nodelay(true);
    let via = Via {
        kind: "native",
        mode: None,
        at: tcp.local_addr().ok(),
    };
    // The handshake counts against the unauthenticated deadline.
    // No acceptor: no native listener in this configuration (front-ends only); a connection
    // accepted just before a reload removed the listener is closed.
    let Some(acceptor) = &rt.acceptor else {
        return;
    };
    let tls = match acceptor.accept(tcp, t.mta_handshake.min(t.mta_auth)) {
        Ok(t) => {
            shared.stats().tls_handshake(Peer::Mta);
            t
        }
        // A peer that closes without a word (a TCP health check) is no problem.
        Err(e @ TlsError::ClosedDuringHandshake) => {
            verbose!(rt, mta = peer; "TLS handshake with the MTA failed: {e}");
            return;
        }
        Err(e) => {
            logging::peer_warning(
                peer,
                PeerEvent::MtaTlsFailed,
                format_args!("TLS handshake with the MTA failed: {e}"),
            );
            return;
        }
    };
    shared.panic_if_a_test_asks();
    // A verified client certificate may identify a client (mutual TLS).
    let identity = if rt.config.tls_client_ca.is_some() {
        let names = tls.peer_names();
        let id = rt.config.identify_certificate(&names);
        if let Some(id) = &id {
            verbose!(rt, mta = peer, client = id.name; "authenticated by client certificate");
        }
        id
    } else {
        None
    };
    let mut mta = BufConn::new(tls);
    let number = shared.session_number();
    // Declared after `mta`: dropped (deregistered) before the socket closes.
    let _registered = Deregister {
        shared: &shared,
        number,
    };
    let mut session = Session {
        shared: &shared,
        rt: &rt,
        peer,
        identity,
        number,
        via,
        errors: 0,
        deadline: Deadline::after_at(accepted, t.session_lifetime),
        auth_deadline: Deadline::after_at(accepted, t.mta_auth),
    };
    session.run(&mut mta);
    mta.get_mut().tcp().shutdown(std::net::Shutdown::Both).ok();
}

struct Session<'a> {
    shared: &'a Shared,
    rt: &'a Runtime,
    peer: SocketAddr,
    /// Who the MTA is, once authenticated (by secret or client certificate).
    identity: Option<Identity<'a>>,
    /// This session's number (for the registry of sessions waiting between requests).
    number: u64,
    /// The listener the MTA came through.
    via: Via,
    errors: u32,
    /// `timeouts.session_lifetime` from the accept.
    deadline: Deadline,
    /// `timeouts.mta_auth` from the accept: until the client is identified, the one deadline
    /// (the TLS handshake, `NOOP`s and anything else count against it).
    auth_deadline: Deadline,
}

enum Next {
    Continue,
    Close,
}

impl Session<'_> {
    /// The egress core, for this session.
    fn egress(&self) -> Egress<'_> {
        Egress {
            shared: self.shared,
            rt: self.rt,
            peer: self.peer,
            deadline: self.deadline,
            via: self.via,
        }
    }

    /// The deadline in force: the session's lifetime, and before authentication the
    /// unauthenticated deadline.
    fn current_deadline(&self) -> Deadline {
        if self.identity.is_none() {
            self.deadline.min(self.auth_deadline)
        } else {
            self.deadline
        }
    }

    /// What to tell the MTA when a wait for its next request timed out (then close).
    fn timed_out(&self) -> Vec<u8> {
        let now = Instant::now();
        if self.identity.is_none() && self.auth_deadline.has_passed_at(now) {
            auth_timeout(self.rt.config.timeouts.mta_auth).render()
        } else if self.deadline.has_passed_at(now) {
            LIFETIME_EXCEEDED.to_vec()
        } else {
            IDLE_TIMEOUT.to_vec()
        }
    }

    fn run(&mut self, mta: &mut BufConn<ServerTlsStream>) {
        loop {
            let Some(timeout) =
                read_timeout(self.rt.config.timeouts.mta_idle, self.current_deadline())
            else {
                let _ = mta.send(&self.timed_out());
                return;
            };
            if mta.set_timeout(timeout).is_err() {
                return;
            }
            // One deadline for the whole request line: trickling bytes does not stretch it.
            let until = Deadline::after(timeout);
            // Waiting for the next request (nothing complete buffered): a stop may wake us.
            let waiting = !mta.pending().contains(&b'\n');
            if waiting
                && !self
                    .shared
                    .waiting_for_request(self.number, mta.get_ref().tcp())
            {
                self.shared.request_arrived(self.number);
                let _ = mta.send(&FailureReply::new(Failure::Busy, STOPPING).render());
                return;
            }
            let read = mta.read_line_until(MAX_REQUEST_LINE, until);
            if waiting {
                self.shared.request_arrived(self.number);
            }
            let n = match read {
                Ok(n) => n,
                Err(_) if self.shared.stopping() => {
                    let _ = mta.send(&FailureReply::new(Failure::Busy, STOPPING).render());
                    return;
                }
                Err(ReadError::Timeout) => {
                    let _ = mta.send(&self.timed_out());
                    return;
                }
                Err(ReadError::LineTooLong(_)) => {
                    let f =
                        FailureReply::new(Failure::ProtocolError, "request line too long; closing");
                    let _ = mta.send(&f.render());
                    return;
                }
                Err(_) => return,
            };
            let line = mta.pending()[..n].to_vec();
            mta.consume(n);
            let next = match parse_request(&line) {
                Err(e) => {
                    self.errors += 1;
                    let f = FailureReply::new(Failure::ProtocolError, e.to_string());
                    if mta.send(&f.render()).is_err() || self.errors >= MAX_PROTOCOL_ERRORS {
                        Next::Close
                    } else {
                        Next::Continue
                    }
                }
                Ok(req) => self.handle(mta, req),
            };
            if let Next::Close = next {
                return;
            }
        }
    }

    fn handle(&mut self, mta: &mut BufConn<ServerTlsStream>, req: Request) -> Next {
        let reply = |mta: &mut BufConn<ServerTlsStream>, bytes: &[u8], next: Next| {
            if mta.send(bytes).is_err() {
                Next::Close
            } else {
                next
            }
        };
        match req {
            Request::Noop => reply(mta, b"250 2.0.0 ok\r\n", Next::Continue),
            Request::Quit => reply(
                mta,
                b"221 2.0.0 greenarrow_proxy closing connection\r\n",
                Next::Close,
            ),
            Request::Auth { version, secret } => {
                if version != PROTOCOL_VERSION {
                    let f = FailureReply::new(
                        Failure::AuthFailed,
                        format!("protocol version {version} not supported (this proxy speaks {PROTOCOL_VERSION})"),
                    );
                    return reply(mta, &f.render(), Next::Close);
                }
                if let Some(id) = self.rt.config.authenticate(&secret) {
                    verbose!(self.rt, mta = self.peer, client = id.name; "authenticated");
                    self.identity = Some(id);
                    reply(
                        mta,
                        b"235 2.7.0 authenticated protocol=1\r\n",
                        Next::Continue,
                    )
                } else {
                    logging::peer_warning(
                        self.peer,
                        PeerEvent::AuthFailed,
                        format_args!("authentication failed"),
                    );
                    let f = FailureReply::new(Failure::AuthFailed, "authentication failed");
                    reply(mta, &f.render(), Next::Close)
                }
            }
            Request::Connect(_) if self.identity.is_none() => {
                reply(mta, &auth_required().render(), Next::Continue)
            }
            Request::Connect(req) => self.connect(mta, req),
        }
    }
}
