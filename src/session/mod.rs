//! One MTA session, on one worker thread: TLS handshake, the proxy's command state (AUTH,
//! CONNECT, NOOP, QUIT), and the relayed SMTP session after each successful CONNECT.

pub mod relay;

use crate::bufconn::{BufConn, ReadError};
use crate::dns::{DnsError, Family};
use crate::mx::{establish, MxConnection};
use crate::protocol::{
    parse_request, ConnectReady, ConnectRequest, Destination, Failure, FailureReply, Origin,
    Request, MAX_REQUEST_LINE, PROTOCOL_VERSION,
};
use crate::server::{Runtime, Shared};
use crate::tls::ServerTlsStream;
use log::{info, warn};
use relay::{RelayEnd, RelayOutcome};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Protocol errors tolerated on one connection before it is closed.
const MAX_PROTOCOL_ERRORS: u32 = 10;

/// How long to wait for the MX's 221 after our QUIT.
const QUIT_WAIT: Duration = Duration::from_secs(5);

macro_rules! verbose {
    ($rt:expr, $($arg:tt)+) => {
        if $rt.config.log_verbose {
            info!($($arg)+);
        }
    };
}

/// Serve one accepted MTA connection to its end.
pub fn serve(shared: Arc<Shared>, tcp: TcpStream, peer: SocketAddr) {
    let rt = shared.runtime();
    let _ = tcp.set_nodelay(true);
    let tls = match rt.acceptor.accept(tcp, rt.config.timeouts.mta_handshake) {
        Ok(t) => t,
        Err(e) => {
            verbose!(rt, "mta={peer} TLS handshake failed: {e}");
            return;
        }
    };
    let mut mta = BufConn::new(tls);
    let mut session = Session {
        shared: &shared,
        rt: &rt,
        peer,
        authed: false,
        errors: 0,
    };
    session.run(&mut mta);
    mta.get_mut().tcp().shutdown(std::net::Shutdown::Both).ok();
}

struct Session<'a> {
    shared: &'a Shared,
    rt: &'a Runtime,
    peer: SocketAddr,
    authed: bool,
    errors: u32,
}

enum Next {
    Continue,
    Close,
}

impl Session<'_> {
    fn run(&mut self, mta: &mut BufConn<ServerTlsStream>) {
        loop {
            if mta.set_timeout(self.rt.config.timeouts.mta_idle).is_err() {
                return;
            }
            let n = match mta.read_line(MAX_REQUEST_LINE) {
                Ok(n) => n,
                Err(ReadError::Timeout) => {
                    let _ = mta.send(b"421 4.4.2 idle timeout: closing connection\r\n");
                    return;
                }
                Err(ReadError::LineTooLong(_)) => {
                    let f = FailureReply::new(Failure::ProtocolError, "request line too long; closing");
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
                    let f = FailureReply::new(Failure::ProtocolError, e.0);
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
            Request::Quit => reply(mta, b"221 2.0.0 greenarrow_proxy closing connection\r\n", Next::Close),
            Request::Auth { version, secret } => {
                if version != PROTOCOL_VERSION {
                    let f = FailureReply::new(
                        Failure::AuthFailed,
                        format!("protocol version {version} not supported (this proxy speaks {PROTOCOL_VERSION})"),
                    );
                    return reply(mta, &f.render(), Next::Close);
                }
                if self.rt.config.secret_matches(&secret) {
                    self.authed = true;
                    reply(mta, b"235 2.7.0 authenticated protocol=1\r\n", Next::Continue)
                } else {
                    warn!("mta={} authentication failed", self.peer);
                    let f = FailureReply::new(Failure::AuthFailed, "authentication failed");
                    reply(mta, &f.render(), Next::Close)
                }
            }
            Request::Connect(_) if !self.authed => {
                let f = FailureReply::new(Failure::AuthRequired, "authenticate with AUTH first");
                reply(mta, &f.render(), Next::Continue)
            }
            Request::Connect(req) => self.connect(mta, req),
        }
    }

    fn connect(&mut self, mta: &mut BufConn<ServerTlsStream>, req: ConnectRequest) -> Next {
        let started = Instant::now();
        let stats = &self.shared.stats;
        let mx = match self.open_mx(&req) {
            Ok(mx) => mx,
            Err(f) => {
                stats.connect_failures.fetch_add(1, Ordering::Relaxed);
                verbose!(
                    self.rt,
                    "mta={} source={} dest={} connect failed: {f}",
                    self.peer,
                    req.source,
                    req.dest
                );
                return if mta.send(&f.render()).is_err() {
                    Next::Close
                } else {
                    Next::Continue
                };
            }
        };
        stats.connects.fetch_add(1, Ordering::Relaxed);
        let ready = ConnectReady {
            origin: Origin::New,
            mx_host: mx.mx_host.clone(),
            remote: mx.remote,
            local: mx.local,
            tls: mx.tls.clone(),
            tls_note: mx.tls_note.clone(),
            banner: lines_of(mx.banner.raw()),
            ehlo: lines_of(mx.greeting.raw()),
        };
        verbose!(
            self.rt,
            "mta={} source={} mx={} ready in {} ms: connection=new tls={}",
            self.peer,
            mx.local.ip(),
            mx.remote,
            started.elapsed().as_millis(),
            mx.tls.as_ref().map_or("none", |t| t.version.as_str())
        );
        if mta.send(&ready.render()).is_err() {
            mx.quit(QUIT_WAIT);
            return Next::Close;
        }
        let t = &self.rt.config.timeouts;
        let out = relay::relay(
            mta,
            mx,
            t.mta_idle,
            &self.rt.mx.timeouts,
            self.rt.relay_limits,
            &self.rt.mx.reply_limits,
        );
        self.finish(mta, out)
    }

    /// Resolve the destination and dial the candidates in order.
    fn open_mx(&self, req: &ConnectRequest) -> Result<MxConnection, FailureReply> {
        let cfg = &self.rt.config;
        if !cfg.source_addresses.iter().any(|n| n.contains(req.source)) {
            return Err(FailureReply::new(
                Failure::SourceNotPermitted,
                format!("source address {} is not permitted (source_addresses)", req.source),
            ));
        }
        if !cfg.destination_ports.contains(&req.port) {
            return Err(FailureReply::new(
                Failure::DestinationNotPermitted,
                format!("destination port {} is not permitted (destination_ports)", req.port),
            ));
        }
        let candidates = self.candidates(req)?;
        let mut last = None;
        for (addr, host) in candidates {
            match establish(&self.rt.mx, req, addr, host.as_deref()) {
                Ok(c) => return Ok(c),
                Err(f) if crate::mx::connect::try_next_address(&f) => last = Some(f),
                Err(f) => return Err(f),
            }
        }
        Err(last.unwrap_or_else(|| FailureReply::new(Failure::NetworkError, "no address to try")))
    }

    /// The addresses to try, in order, each with the MX host name when known.
    fn candidates(&self, req: &ConnectRequest) -> Result<Vec<(SocketAddr, Option<String>)>, FailureReply> {
        let family = Family::of(&req.source);
        if let Destination::Ip(ip) = &req.dest {
            if !family.matches(ip) {
                return Err(FailureReply::new(
                    Failure::DestinationNotPermitted,
                    format!("destination {ip} and source {} are of different address families", req.source),
                ));
            }
            return Ok(vec![(SocketAddr::new(*ip, req.port), None)]);
        }
        let resolver = self.rt.resolver.as_ref().ok_or_else(|| {
            FailureReply::new(Failure::DnsTemporary, "no DNS resolver is available (see the log at start-up)")
        })?;
        let found = match &req.dest {
            Destination::Host(h) => resolver
                .lookup_host(h, family)
                .map(|addrs| addrs.into_iter().map(|a| (a, h.clone())).collect::<Vec<_>>()),
            Destination::Domain(d) => resolver
                .resolve_mx(d, family)
                .map(|cs| cs.into_iter().map(|c| (c.addr, c.host)).collect()),
            Destination::Ip(_) => Ok(Vec::new()),
        };
        match found {
            Ok(list) if !list.is_empty() => Ok(list
                .into_iter()
                .map(|(ip, host)| (SocketAddr::new(ip, req.port), Some(host)))
                .collect()),
            Ok(_) => Err(FailureReply::new(Failure::DnsNoAddress, format!("{}: no address of the source's family", req.dest))),
            Err(e) => Err(dns_failure(e)),
        }
    }

    fn finish(&mut self, mta: &mut BufConn<ServerTlsStream>, out: RelayOutcome) -> Next {
        let stats = &self.shared.stats;
        let messages = out.relay.messages_accepted();
        stats.messages.fetch_add(messages, Ordering::Relaxed);
        if let Some(why) = &out.mx_lost {
            verbose!(self.rt, "mta={} MX connection lost: {why}", self.peer);
        }
        let next = match out.end {
            RelayEnd::Quit => {
                if mta
                    .send(b"221 2.0.0 greenarrow_proxy: SMTP session closed\r\n")
                    .is_err()
                {
                    Next::Close
                } else {
                    Next::Continue
                }
            }
            RelayEnd::MtaGone | RelayEnd::MtaTimeout => Next::Close,
        };
        if let Some(mx) = out.mx {
            if out.mid_body {
                // Never complete a message the MTA did not finish.
                verbose!(self.rt, "mta={} left in the middle of a message: MX connection closed without end of data", self.peer);
                mx.close();
            } else {
                verbose!(self.rt, "mta={} mx={} closing MX connection after {messages} message(s)", self.peer, mx.remote);
                mx.quit(QUIT_WAIT);
            }
        }
        if out.end == RelayEnd::MtaTimeout {
            let _ = mta.send(b"421 4.4.2 idle timeout: closing connection\r\n");
        }
        next
    }
}

fn dns_failure(e: DnsError) -> FailureReply {
    let f = match &e {
        DnsError::NxDomain { .. } => Failure::DnsNxDomain,
        DnsError::NullMx { .. } => Failure::DnsNullMx,
        DnsError::NoAddress { .. } => Failure::DnsNoAddress,
        DnsError::InvalidName { .. } => Failure::ProtocolError,
        DnsError::Transient { .. } | DnsError::Setup(_) => Failure::DnsTemporary,
    };
    FailureReply::new(f, e.to_string())
}

/// Split a raw reply into its lines without line endings.
fn lines_of(raw: &[u8]) -> Vec<Vec<u8>> {
    raw.split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l).to_vec())
        .collect()
}
