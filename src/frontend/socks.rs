//! The SOCKS5 front-end's I/O: drive the `socks5` handshake machine within
//! `timeouts.mta_handshake` (credentials checked against the clients' secrets, KumoMTA's
//! BIND-then-CONNECT honoured), then serve the target in the front-end's mode. Every reply is
//! one write with the request's address family; the MX's first bytes never share it.

mod credentials;

use super::socks5::{reply, AddrFamily, AuthMode, ReplyCode, Socks5Server, SocksAddr, Step};
use super::{check, dial_target, handshake_deadline, Target};
use crate::config::{Frontend, FrontendMode, Identity, SocksAuth};
use crate::dial::DialError;
use crate::session::{Egress, EgressError};
use greenarrow_proxy_net::bufconn::BufConn;
use greenarrow_proxy_net::deadline::Deadline;
use greenarrow_proxy_proto::protocol::{Destination, Failure};
use socket2::{Domain, SockAddr, Socket, Type};
use std::io::Write;
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::Duration;

/// In `mode: smtp` the proxy's own banner follows the CONNECT reply: this gap keeps the two
/// apart for clients that lose bytes read together with the reply (nodemailer's socks).
const BANNER_GAP: Duration = Duration::from_millis(50);

/// The reply code for a refusal: this front-end's one rendering of an egress error (a failed
/// dial by its kind, SOCKS5 codes being finer than the failure tags; the rest by failure).
fn code_for(r: &EgressError) -> ReplyCode {
    if let EgressError::Dial(d) = r {
        return match d {
            DialError::Refused { .. } => ReplyCode::ConnectionRefused,
            DialError::Timeout { .. } => ReplyCode::TtlExpired,
            DialError::Network { error, .. } => ReplyCode::from_io_error(error),
            DialError::FamilyMismatch { .. } => ReplyCode::AddressTypeNotSupported,
            _ => ReplyCode::GeneralFailure,
        };
    }
    match r.failure() {
        Failure::SourceNotPermitted | Failure::DestinationNotPermitted => ReplyCode::NotAllowed,
        Failure::DnsNxDomain | Failure::DnsNoAddress | Failure::DnsNullMx => {
            ReplyCode::HostUnreachable
        }
        _ => ReplyCode::GeneralFailure,
    }
}

/// The source address of a client with exactly one single-address source network.
fn only_source(id: &Identity) -> Option<IpAddr> {
    match id.sources {
        [one] if one.prefix_len() == if one.addr().is_ipv4() { 32 } else { 128 } => {
            Some(one.addr())
        }
        _ => None,
    }
}

/// Whether `ip` can be bound on this host (a KumoMTA BIND asks exactly that).
fn bindable(ip: IpAddr) -> std::io::Result<()> {
    let addr = SocketAddr::new(ip, 0);
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    s.bind(&SockAddr::from(addr))
}

/// Serve one connection on a SOCKS5 front-end.
pub(super) fn serve(egress: &Egress, fe: &Frontend, tcp: TcpStream, deadline: Deadline) {
    let rt = egress.rt;
    let peer = egress.peer;
    let until = handshake_deadline(rt, deadline);
    let mut machine = Socks5Server::new(match fe.auth {
        SocksAuth::Password => AuthMode::Password,
        SocksAuth::None => AuthMode::None,
    });
    let mut identity: Option<Identity> = match fe.auth {
        SocksAuth::None => rt.config.client_named(&fe.client),
        SocksAuth::Password => None,
    };
    let mut named_source: Option<IpAddr> = None;
    let mut bound_source: Option<IpAddr> = None;
    let mut conn = BufConn::new(tcp);
    // A refused BIND or CONNECT (source not permitted or not local, no client or source):
    // a problem, logged whatever `log_verbose`.
    let refuse = |tcp: &mut TcpStream, code: ReplyCode, family: Option<AddrFamily>, why: &str| {
        log::warn!(mta:% = peer; "SOCKS5 front-end: refused ({code}): {why}");
        let _ = tcp.write_all(&reply(code, None, family));
    };
    let addr = loop {
        let step = match machine.poll(conn.pending()) {
            Ok(s) => s,
            Err(e) => {
                verbose!(rt, mta = peer; "SOCKS5 front-end: {e}");
                if let Some(bytes) = e.reply_bytes() {
                    let _ = conn.send(&bytes);
                }
                return;
            }
        };
        conn.consume(step.consumed());
        match step {
            Step::NeedMore => {
                if let Err(why) = conn.fill_until(until) {
                    verbose!(rt, mta = peer; "SOCKS5 front-end: handshake not finished ({why})");
                    return;
                }
            }
            Step::Reply { bytes, .. } => {
                if conn.send(&bytes).is_err() {
                    return;
                }
            }
            Step::Credentials {
                username, password, ..
            } => {
                let checked = credentials::check(&rt.config, &username, &password);
                let status = machine.credentials_result(checked.is_ok());
                match checked {
                    Ok(accepted) => {
                        identity = Some(accepted.identity);
                        named_source = accepted.source;
                    }
                    Err(why) => crate::logging::peer_warning(
                        peer,
                        crate::logging::PeerEvent::AuthFailed,
                        format_args!("SOCKS5 front-end: authentication failed: {why}"),
                    ),
                }
                if conn.send(&status).is_err() || identity.is_none() {
                    return;
                }
            }
            Step::Bind { source, .. } => {
                let family = Some(AddrFamily::of(source));
                let permitted = identity
                    .as_ref()
                    .is_some_and(|id| id.sources.iter().any(|n| n.contains(source)));
                if !permitted {
                    return refuse(
                        conn.get_mut(),
                        ReplyCode::NotAllowed,
                        family,
                        &format!("source address {source} is not permitted for this client"),
                    );
                }
                if let Err(e) = bindable(source) {
                    return refuse(
                        conn.get_mut(),
                        ReplyCode::GeneralFailure,
                        family,
                        &format!("source address {source} is not local: {e}"),
                    );
                }
                bound_source = Some(source);
                if conn
                    .send(&reply(
                        ReplyCode::Succeeded,
                        Some(SocketAddr::new(source, 0)),
                        family,
                    ))
                    .is_err()
                {
                    return;
                }
            }
            Step::Connect { addr, .. } => break addr,
            Step::Done => return,
        }
    };
    // The stream and what the MTA sent after the handshake (pipelined SMTP).
    let (mut tcp, buf) = conn.into_parts();
    let family = addr.family();
    let Some(identity) = identity else {
        return refuse(
            &mut tcp,
            ReplyCode::NotAllowed,
            family,
            "no client: the front-end's client is not configured",
        );
    };
    let Some(source) = bound_source
        .or(named_source)
        .or_else(|| only_source(&identity))
    else {
        return refuse(&mut tcp, ReplyCode::NotAllowed, family, "no source address: BIND one, give it as the user name, or give the client exactly one source address");
    };
    let (dest, port) = match &addr {
        SocksAddr::Ip(a) => (Destination::Ip(a.ip()), a.port()),
        SocksAddr::Domain(name, port) => (Destination::Host(name.clone()), *port),
    };
    let target = Target {
        identity,
        source,
        dest,
        port,
    };
    match &fe.mode {
        FrontendMode::Passthrough => match dial_target(egress, &target) {
            // The permit holds the place under the caps until the session ends.
            Ok((mx, _permit)) => {
                let local = mx.local_addr().ok();
                if tcp
                    .write_all(&reply(ReplyCode::Succeeded, local, family))
                    .is_err()
                {
                    return;
                }
                super::passthrough_session(egress, fe, &target, &tcp, mx, &buf, deadline);
            }
            Err(r) => refuse_target(egress, &mut tcp, &target, &r, family),
        },
        FrontendMode::Smtp(settings) => match check(egress, &target) {
            Ok(_) => {
                let bound = SocketAddr::new(source, 0);
                if tcp
                    .write_all(&reply(ReplyCode::Succeeded, Some(bound), family))
                    .is_err()
                {
                    return;
                }
                super::smtp::serve(egress, tcp, &buf, target, settings, deadline, BANNER_GAP);
            }
            // A policy refusal goes to the transactions, where an MTA retries the message
            // rather than the MX (Exim records any SOCKS failure against the MX).
            Err(r) if r.is_policy() => {
                log_refusal(egress, &target, &r);
                let bound = SocketAddr::new(source, 0);
                if tcp
                    .write_all(&reply(ReplyCode::Succeeded, Some(bound), family))
                    .is_ok()
                {
                    super::smtp::refuse(egress, tcp, &buf, &r, deadline, BANNER_GAP);
                }
            }
            Err(r) => refuse_target(egress, &mut tcp, &target, &r, family),
        },
    }
}

/// Count and log a target the egress core refused.
fn log_refusal(egress: &Egress, target: &Target, r: &EgressError) {
    egress.shared.stats().count_connect_failure(r.failure());
    crate::logging::request_failed(
        egress.rt.config.log_verbose,
        "SOCKS5 front-end: refused",
        egress.peer,
        target.identity.name,
        &target.request(""),
        &r.reply(),
    );
}

/// Refuse a target the egress core refused: log it as a failed request, reply.
fn refuse_target(
    egress: &Egress,
    tcp: &mut TcpStream,
    target: &Target,
    r: &EgressError,
    family: Option<AddrFamily>,
) {
    log_refusal(egress, target, r);
    let _ = tcp.write_all(&reply(code_for(r), None, family));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::IpNet;
    use crate::dns::DnsError;
    use std::io;
    use std::time::Duration;

    #[test]
    fn reply_codes_follow_the_refusal() {
        let dest: SocketAddr = "192.0.2.25:25".parse().unwrap();
        let source: IpAddr = "192.0.2.1".parse().unwrap();
        let os = |errno| io::Error::from_raw_os_error(errno);
        let cases = [
            (
                EgressError::SourceNotPermitted {
                    source,
                    client: "c".into(),
                },
                ReplyCode::NotAllowed,
            ),
            (
                EgressError::PortNotPermitted { port: 26 },
                ReplyCode::NotAllowed,
            ),
            (
                EgressError::Dns(DnsError::NxDomain {
                    name: "nx.test".into(),
                }),
                ReplyCode::HostUnreachable,
            ),
            (
                EgressError::Dns(DnsError::Transient {
                    name: "slow.test".into(),
                    detail: "timeout".into(),
                }),
                ReplyCode::GeneralFailure,
            ),
            (
                EgressError::Dial(DialError::Refused { dest }),
                ReplyCode::ConnectionRefused,
            ),
            (
                EgressError::Dial(DialError::Timeout {
                    dest,
                    after: Duration::from_secs(1),
                }),
                ReplyCode::TtlExpired,
            ),
            (
                EgressError::Dial(DialError::Network {
                    dest,
                    error: os(nix::libc::ENETUNREACH),
                }),
                ReplyCode::NetworkUnreachable,
            ),
            (
                EgressError::Dial(DialError::Network {
                    dest,
                    error: os(nix::libc::EHOSTUNREACH),
                }),
                ReplyCode::HostUnreachable,
            ),
            (
                EgressError::Dial(DialError::SourceNotLocal {
                    source,
                    error: os(nix::libc::EADDRNOTAVAIL),
                }),
                ReplyCode::GeneralFailure,
            ),
            (
                EgressError::Dial(DialError::FamilyMismatch {
                    source: "::1".parse().unwrap(),
                    dest,
                }),
                ReplyCode::AddressTypeNotSupported,
            ),
        ];
        for (r, want) in cases {
            assert_eq!(code_for(&r), want, "{r:?}");
        }
    }

    #[test]
    fn only_a_single_address_client_has_an_only_source() {
        let nets = |list: &[&str]| -> Vec<IpNet> {
            list.iter().map(|s| IpNet::parse(s).unwrap()).collect()
        };
        let id =
            |sources: &[IpNet]| -> Option<IpAddr> { only_source(&Identity { name: "c", sources }) };
        assert_eq!(
            id(&nets(&["192.0.2.10"])),
            Some("192.0.2.10".parse().unwrap())
        );
        assert_eq!(
            id(&nets(&["2001:db8::10/128"])),
            Some("2001:db8::10".parse().unwrap())
        );
        assert_eq!(id(&nets(&["192.0.2.0/28"])), None);
        assert_eq!(id(&nets(&["192.0.2.10", "192.0.2.11"])), None);
        assert_eq!(id(&[]), None);
    }
}
