//! The PROXY protocol front-end's I/O: read the header (v1 or v2) within
//! `timeouts.mta_handshake`, then serve the target in the front-end's mode. A failure the MTA
//! should see is written as one SMTP line in place of the banner — `421 4.4.0
//! greenarrow_proxy: <tag> <text>` — before the close, so that the MTA logs why.

use super::proxy_header::{self, HeaderKind, Parsed};
use super::smtp::greet::{failure_421, reply_421};
use super::{dial_target, handshake_deadline, Target};
use crate::config::{Frontend, FrontendMode};
use crate::session::Egress;
use greenarrow_proxy_net::bufconn::BufConn;
use greenarrow_proxy_net::deadline::Deadline;
use greenarrow_proxy_proto::protocol::{Destination, Failure, FailureReply};
use std::io::Write;
use std::net::TcpStream;
use std::time::Duration;

/// Serve one connection on a PROXY front-end.
pub(super) fn serve(egress: &Egress, fe: &Frontend, tcp: TcpStream, deadline: Deadline) {
    let rt = egress.rt;
    let until = handshake_deadline(rt, deadline);
    let mut conn = BufConn::new(tcp);
    let parsed = conn.read_until(
        proxy_header::MAX_HEADER_LEN,
        until,
        |p| match proxy_header::parse(p) {
            Ok(Parsed::Incomplete) => None,
            Ok(Parsed::Header(h)) => Some(Ok(h)),
            Err(e) => Some(Err(e)),
        },
    );
    let (mut tcp, buf) = conn.into_parts();
    let header = match parsed {
        Err(why) => {
            // A TCP health check (connect, close) or a silent peer: nothing to say.
            verbose!(rt, mta = egress.peer; "PROXY front-end: no header ({why})");
            return;
        }
        Ok(Ok(h)) => h,
        Ok(Err(e)) => {
            crate::logging::peer_warning(
                egress.peer,
                crate::logging::PeerEvent::ProxyHeader,
                format_args!("PROXY front-end: {e}"),
            );
            let _ = tcp.write_all(&reply_421(e.tag(), &e.to_string(), &[]));
            return;
        }
    };
    let (source, destination) = match header.kind {
        HeaderKind::Local => {
            verbose!(rt, mta = egress.peer; "PROXY front-end: LOCAL/UNKNOWN header (health check); closing");
            return;
        }
        HeaderKind::Proxied {
            source,
            destination,
        } => (source.ip(), destination),
    };
    let initial = buf.get(header.consumed..).unwrap_or_default();
    let Some(identity) = rt.config.client_named(&fe.client) else {
        let f = FailureReply::new(
            Failure::SourceNotPermitted,
            format!("client {:?} is not configured", fe.client),
        );
        let _ = tcp.write_all(&failure_421(&f));
        return;
    };
    let target = Target {
        identity,
        source,
        dest: Destination::Ip(destination.ip()),
        port: destination.port(),
    };
    match &fe.mode {
        FrontendMode::Smtp(settings) => super::smtp::serve(
            egress,
            tcp,
            initial,
            target,
            settings,
            deadline,
            Duration::ZERO,
        ),
        FrontendMode::Passthrough => match dial_target(egress, &target) {
            Ok((mx, _permit)) => {
                super::passthrough_session(egress, fe, &target, &tcp, mx, initial, deadline)
            }
            Err(refusal) => {
                // The one place this front-end renders an egress error for its MTA.
                let refusal = refusal.reply();
                egress.shared.stats().count_connect_failure(refusal.failure);
                crate::logging::request_failed(
                    rt.config.log_verbose,
                    "PROXY front-end: refused",
                    egress.peer,
                    target.identity.name,
                    &target.request(""),
                    &refusal,
                );
                let _ = tcp.write_all(&failure_421(&refusal));
            }
        },
    }
}
