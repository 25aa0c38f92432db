//! Compatibility front-ends for MTAs that do not speak the native protocol: HAProxy's PROXY
//! protocol (v1/v2) and SOCKS5. Each front-end turns its handshake into a [`Target`] (client
//! identity, source address, destination) and hands it to the same egress core the native
//! protocol uses (`session::Egress`): the same access rules, the same pool, the same relay.
//!
//! - `proxy_header`, `socks5`: the handshakes, sans I/O.
//! - `proxy`, `socks`: their blocking I/O on a session thread.
//! - `passthrough`: `mode: passthrough`, bytes both ways (STARTTLS end to end).
//! - `smtp`: `mode: smtp`, the SMTP-aware front (STARTTLS by the proxy, pooled connections).

pub mod passthrough;
mod proxy;
pub mod smtp;
mod socks;

pub use greenarrow_proxy_proto::{proxy_header, socks5};

use crate::caps::{Obtained, Permit};
use crate::config::{Frontend, FrontendKind, Identity};
use crate::dial::{dial, DialError};
use crate::logging::session::{SessionRecord, Via};
use crate::runtime::Runtime;
use crate::session::Egress;
use crate::session::EgressError;
use crate::shared::Shared;
use greenarrow_proxy_net::deadline::Deadline;
use greenarrow_proxy_proto::protocol::{ConnectRequest, Destination};
use passthrough::{CloseReason, PassthroughLimits, DEFAULT_BUFFER, DEFAULT_PIPE};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::sync::Arc;

/// When a front-end's handshake (PROXY header, SOCKS5 negotiation) must be complete.
fn handshake_deadline(rt: &Runtime, deadline: Deadline) -> Deadline {
    deadline.within(rt.config.timeouts.mta_handshake)
}

/// `mode: passthrough` once the MX is connected: relay bytes both ways, then count and log
/// (the session line, without what passthrough cannot know: EHLO, TLS, messages).
fn passthrough_session(
    egress: &Egress,
    fe: &Frontend,
    target: &Target,
    mta: &TcpStream,
    mx: TcpStream,
    initial: &[u8],
    deadline: Deadline,
) {
    let t = &egress.rt.config.timeouts;
    let limits = PassthroughLimits {
        idle: t.mta_idle,
        stall: t.mx_command,
        lifetime: Some(deadline.remaining()),
        // Both sockets have it already: the MTA's from its front-end's listener, the MX's
        // from `dial` (`dial::keepalive`).
        keepalive: None,
        buffer: DEFAULT_BUFFER,
        pipe: DEFAULT_PIPE,
        splice: fe.splice,
    };
    let remote = mx.peer_addr().ok();
    let stats = egress.shared.stats();
    stats.connected();
    let sum = passthrough::relay(mta, &mx, initial, &limits);
    stats.passed_through(sum.mta_to_mx, sum.mx_to_mta);
    verbose!(egress.rt, mta = egress.peer; "passthrough: bytes moved by {}", sum.path);
    if egress.rt.config.log_sessions {
        SessionRecord {
            mta: egress.peer,
            client: target.identity.name,
            via: egress.via,
            source: target.source,
            mx: remote,
            ehlo: None,
            tls: None,
            tls_policy: None,
            new: true,
            messages: None,
            octets_to_mx: sum.mta_to_mx,
            octets_to_mta: sum.mx_to_mta,
            duration: sum.duration,
            tag: sum.reason.tag(),
        }
        .log(format_args!("passthrough session ended: {}", sum.reason));
    }
    // After a relay that ran to its end both sockets are shut both ways already (EOF read,
    // EOF passed on): closing them is enough. Otherwise tell both peers now.
    if !matches!(sum.reason, CloseReason::MtaClosed | CloseReason::MxClosed) {
        let _ = mx.shutdown(std::net::Shutdown::Both);
        let _ = mta.shutdown(std::net::Shutdown::Both);
    }
}

/// Where an MTA wants to go, as a front-end's handshake said it.
pub struct Target<'a> {
    /// The client the connection acts as (its source addresses apply).
    pub identity: Identity<'a>,
    pub source: IpAddr,
    pub dest: Destination,
    pub port: u16,
}

impl Target<'_> {
    /// The request the egress core checks (and, in `mode: smtp`, opens).
    pub(crate) fn request(&self, ehlo: &str) -> ConnectRequest {
        let mut req = ConnectRequest::new(self.source, self.dest.clone(), ehlo);
        req.port = self.port;
        req
    }
}

/// Check the target as the native protocol checks a CONNECT (source permitted for the
/// client, port, destination resolved and permitted).
fn check(egress: &Egress, target: &Target) -> Result<Vec<SocketAddr>, EgressError> {
    let req = target.request("");
    egress.authorize(&target.identity, &req)?;
    Ok(egress
        .destinations(&req)?
        .into_iter()
        .map(|(a, _)| a)
        .collect())
}

/// `mode: passthrough`: check, then dial the first address that answers, from the source,
/// each under the connection caps (the permit is held for the whole session; a request at a
/// cap waits up to `caps.wait` for a place).
fn dial_target(egress: &Egress, target: &Target) -> Result<(TcpStream, Permit), EgressError> {
    let addrs = check(egress, target)?;
    let req = target.request("");
    let mut last = None;
    for addr in addrs {
        // reuse=no: the want is never matched.
        let permit = match egress.obtain(&req, addr, &crate::pool::TlsWant::Any)? {
            Obtained::Dial(p) => p,
            // Not asked for (reuse=no).
            Obtained::Reused(c) => {
                c.close();
                continue;
            }
        };
        match dial(target.source, addr, egress.rt.mx.timeouts.connect) {
            Ok(tcp) => return Ok((tcp, permit)),
            Err(e @ DialError::SourceNotLocal { .. }) => return Err(e.into()),
            Err(e) => last = Some(e),
        }
    }
    Err(last.map_or(EgressError::NoAddress, EgressError::from))
}

/// The session line's `frontend=` for a connection accepted on `fe`.
fn via(fe: &Frontend, tcp: &TcpStream) -> Via {
    Via {
        kind: fe.kind.name(),
        mode: Some(fe.mode.name()),
        at: tcp.local_addr().ok(),
    }
}

/// Serve one accepted connection on the front-end `frontends[index]` of `rt`, the runtime in
/// force when it was accepted: its mode, client, TLS policy and authentication, and the
/// clients and secrets that authenticate it, are those of the listener that accepted it,
/// whatever reloads happened since.
pub fn serve(
    shared: Arc<Shared>,
    rt: Arc<Runtime>,
    tcp: TcpStream,
    peer: SocketAddr,
    index: usize,
) {
    let Some(fe) = rt.config.frontends.get(index) else {
        return;
    };
    // TCP_NODELAY and keepalive come from the listener (`server::listen::bind`).
    let deadline = Deadline::after(rt.config.timeouts.session_lifetime);
    let fe: &Frontend = fe;
    let egress = Egress {
        shared: &shared,
        rt: &rt,
        peer,
        deadline,
        via: via(fe, &tcp),
    };
    shared.stats().frontend_session_started();
    match fe.kind {
        FrontendKind::ProxyProtocol => proxy::serve(&egress, fe, tcp, deadline),
        FrontendKind::Socks5 => socks::serve(&egress, fe, tcp, deadline),
    }
}
