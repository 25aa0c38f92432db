//! Compatibility front-ends for MTAs that do not speak the native protocol: HAProxy's PROXY
//! protocol (v1/v2) and SOCKS5. Each front-end turns its handshake into a [`Target`] (client
//! identity, source address, destination) and hands it to the same egress core the native
//! protocol uses (`session::Egress`): the same access rules, the same pool, the same relay.
//!
//! - `proxy_header`, `socks5`: the handshakes, sans I/O.
//! - `proxy`, `socks`: their blocking I/O on a session thread.
//! - `passthrough`: `mode: passthrough`, bytes both ways (STARTTLS end to end).
//! - `smtp`: `mode: smtp`, the SMTP-aware front (STARTTLS by the proxy, pooled connections).

pub mod smtp;

use crate::config::{Frontend, FrontendKind, Identity};
use crate::dial::{dial, DialError};
use crate::mx::connect::dial_failure;
use crate::protocol::{ConnectRequest, Destination, Failure, FailureReply};
use crate::session::Egress;
use crate::shared::Shared;
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Instant;

/// Where an MTA wants to go, as a front-end's handshake said it.
pub struct Target<'a> {
    /// The client the connection acts as (its source addresses apply).
    pub identity: Identity<'a>,
    pub source: IpAddr,
    pub dest: Destination,
    pub port: u16,
}

/// Why a front-end refuses a target: the failure (with the native protocol's tags) and, for
/// a failed dial, the dial error (SOCKS5 reply codes are finer than the tags).
#[derive(Debug)]
pub struct Refusal {
    pub failure: FailureReply,
    pub dial: Option<DialError>,
}

impl From<FailureReply> for Refusal {
    fn from(failure: FailureReply) -> Refusal {
        Refusal {
            failure,
            dial: None,
        }
    }
}

impl Target<'_> {
    /// The request the egress core checks (and, in `mode: smtp`, opens).
    fn request(&self, ehlo: &str) -> ConnectRequest {
        let mut req = ConnectRequest::new(self.source, self.dest.clone(), ehlo);
        req.port = self.port;
        req
    }
}

/// Check the target as the native protocol checks a CONNECT (source permitted for the
/// client, port, destination resolved and permitted).
fn check(egress: &Egress, target: &Target) -> Result<Vec<SocketAddr>, Refusal> {
    let req = target.request("");
    egress.authorize(&target.identity, &req)?;
    Ok(egress
        .destinations(&req)?
        .into_iter()
        .map(|(a, _)| a)
        .collect())
}

/// `mode: passthrough`: check, then dial the first address that answers, from the source.
fn dial_target(egress: &Egress, target: &Target) -> Result<TcpStream, Refusal> {
    let addrs = check(egress, target)?;
    let mut last = None;
    for addr in addrs {
        match dial(target.source, addr, egress.rt.mx.timeouts.connect) {
            Ok(tcp) => return Ok(tcp),
            Err(e @ DialError::SourceNotLocal { .. }) => {
                return Err(Refusal {
                    failure: dial_failure(&e),
                    dial: Some(e),
                })
            }
            Err(e) => last = Some(e),
        }
    }
    Err(match last {
        Some(e) => Refusal {
            failure: dial_failure(&e),
            dial: Some(e),
        },
        None => FailureReply::new(Failure::NetworkError, "no address to try").into(),
    })
}

/// Serve one accepted connection on the front-end `frontends[index]`.
pub fn serve(shared: Arc<Shared>, tcp: TcpStream, peer: SocketAddr, index: usize) {
    let rt = shared.runtime();
    let Some(fe) = rt.config.frontends.get(index) else {
        return;
    };
    let _ = tcp.set_nodelay(true);
    let egress = Egress {
        shared: &shared,
        rt: &rt,
        peer,
    };
    let deadline = Instant::now() + rt.config.timeouts.session_lifetime;
    let fe: &Frontend = fe;
    match fe.kind {
        FrontendKind::ProxyProtocol => proxy::serve(&egress, fe, tcp, deadline),
        FrontendKind::Socks5 => socks::serve(&egress, fe, tcp, deadline),
    }
}

mod proxy {
    use super::*;
    pub(super) fn serve(_e: &Egress, _f: &Frontend, _t: TcpStream, _d: Instant) {
        let _ = (check, dial_target, super::smtp::serve);
    }
}
mod socks {
    use super::*;
    pub(super) fn serve(_e: &Egress, _f: &Frontend, _t: TcpStream, _d: Instant) {}
}
