//! A CONNECT request: permission checks, destination resolution, a pooled connection when
//! the request allows reuse, otherwise a new one; then the relayed SMTP session.

use super::relay;
use super::{Next, Session};
use crate::bufconn::BufConn;
use crate::dns::{DnsError, Family};
use crate::mx::connect::try_next_address;
use crate::mx::{establish, MxConnection};
use crate::pool::reaper::quit_all;
use crate::pool::{PoolKey, TlsWant};
use crate::protocol::{
    reply_lines, ConnectReady, ConnectRequest, Destination, Failure, FailureReply, Origin,
};
use crate::smtp::{MxFacts, Relay};
use crate::tls::ServerTlsStream;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// How long a checkout probe (`pool.checkout_probe`) may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

impl Session<'_> {
    pub(super) fn connect(
        &mut self,
        mta: &mut BufConn<ServerTlsStream>,
        req: ConnectRequest,
    ) -> Next {
        let started = Instant::now();
        let stats = &self.shared.stats;
        let (mut mx, origin) = match self.open_mx(&req) {
            Ok(x) => x,
            Err(f) => {
                stats.connect_failures.fetch_add(1, Ordering::Relaxed);
                verbose!(self.rt, mta = self.peer, source = req.source, dest = req.dest; "connect failed: {f}");
                return if mta.send(&f.render()).is_err() {
                    Next::Close
                } else {
                    Next::Continue
                };
            }
        };
        stats.connects.fetch_add(1, Ordering::Relaxed);
        mx.last_mta = Some(self.peer);
        let ready = ConnectReady {
            origin: origin.clone(),
            mx_host: mx.mx_host.clone(),
            remote: mx.remote,
            local: mx.local,
            tls: mx.tls.clone(),
            tls_note: mx.tls_note.clone(),
            banner: reply_lines(mx.banner.raw()),
            ehlo: reply_lines(mx.greeting.raw()),
        };
        verbose!(
            self.rt,
            mta = self.peer,
            source = mx.local.ip(),
            mx = mx.remote;
            "ready in {:.2} ms: connection={} tls={}",
            started.elapsed().as_secs_f64() * 1000.0,
            if origin == Origin::New { "new" } else { "reused" },
            mx.tls.as_ref().map_or("none", |t| t.version.as_str())
        );
        if mta.send(&ready.render()).is_err() {
            self.release(&req, mx, None);
            return Next::Close;
        }
        let t = &self.rt.config.timeouts;
        let facts = MxFacts {
            chunking: mx.caps.chunking,
            ehlo_name: req.ehlo.clone(),
        };
        let out = relay::relay(
            mta,
            mx,
            Relay::new(self.rt.relay_limits, facts),
            t.mta_idle,
            self.deadline,
            &self.rt.mx.timeouts,
            &self.rt.mx.reply_limits,
        );
        self.finish(mta, &req, out)
    }

    /// Check permissions, resolve, then reuse or dial.
    fn open_mx(&self, req: &ConnectRequest) -> Result<(MxConnection, Origin), FailureReply> {
        let cfg = &self.rt.config;
        let Some(id) = self.identity else {
            return Err(FailureReply::new(
                Failure::AuthRequired,
                "authenticate with AUTH first",
            ));
        };
        if !id.sources.iter().any(|n| n.contains(req.source)) {
            return Err(FailureReply::new(
                Failure::SourceNotPermitted,
                format!(
                    "source address {} is not permitted for client {}",
                    req.source, id.name
                ),
            ));
        }
        if !cfg.destination_ports.contains(&req.port) {
            return Err(FailureReply::new(
                Failure::DestinationNotPermitted,
                format!(
                    "destination port {} is not permitted (destination_ports)",
                    req.port
                ),
            ));
        }
        let candidates = self.permitted(req, self.candidates(req)?)?;
        if req.reuse {
            for (addr, host) in &candidates {
                if let Some(found) = self.reuse(req, *addr, host.as_deref()) {
                    return Ok(found);
                }
            }
        }
        let mut last = None;
        for (addr, host) in candidates {
            match establish(&self.rt.mx, req, addr, host.as_deref()) {
                Ok(c) => return Ok((c, Origin::New)),
                Err(f) if try_next_address(&f) => {
                    verbose!(self.rt, mta = self.peer, source = req.source, mx = addr; "failed, trying the next address: {f}");
                    last = Some(f);
                }
                Err(f) => return Err(f),
            }
        }
        Err(last.unwrap_or_else(|| FailureReply::new(Failure::NetworkError, "no address to try")))
    }

    /// A healthy pooled connection for `addr`, if there is one. Dead ones are discarded.
    fn reuse(
        &self,
        req: &ConnectRequest,
        addr: SocketAddr,
        host: Option<&str>,
    ) -> Option<(MxConnection, Origin)> {
        let pool = &self.shared.pool;
        let key = PoolKey::new(req.source, &req.ehlo, addr);
        let want = TlsWant::from_request(req.tls, req.tls_name.as_deref().or(host), addr);
        loop {
            let mut expired = Vec::new();
            let got = pool.checkout(&key, &want, Instant::now(), &mut expired);
            if !expired.is_empty() {
                // QUIT waits on the MX: not on this session's way to its connection.
                // (Should the thread not start, dropping them closes them without QUIT.)
                let _ = std::thread::Builder::new()
                    .name("pool expire".into())
                    .spawn(move || quit_all(expired));
            }
            let mut c = got?;
            let probe: Option<&[u8]> = match self.rt.config.pool.checkout_probe {
                crate::config::Probe::None => None,
                crate::config::Probe::Noop => Some(b"NOOP\r\n"),
                crate::config::Probe::Rset => Some(b"RSET\r\n"),
            };
            if !c.is_alive() || probe.is_some_and(|p| !c.probe(p, PROBE_TIMEOUT)) {
                verbose!(self.rt, mta = self.peer, source = c.local.ip(), mx = c.remote; "pool: discarding a dead idle connection");
                c.close();
                continue;
            }
            let origin = Origin::Reused {
                age: c.created.elapsed(),
                uses: c.uses,
                messages: c.messages,
            };
            c.uses += 1;
            // The name this request used (none for an IP literal), not the first user's.
            c.mx_host = host.map(str::to_string);
            return Some((c, origin));
        }
    }

    /// Drop candidates in `destination_deny` (unless in `destination_allow`); none left is
    /// a `destination_not_permitted` failure.
    fn permitted(
        &self,
        req: &ConnectRequest,
        candidates: Vec<(SocketAddr, Option<String>)>,
    ) -> Result<Vec<(SocketAddr, Option<String>)>, FailureReply> {
        let total = candidates.len();
        let kept: Vec<_> = candidates
            .into_iter()
            .filter(|(a, _)| self.rt.config.destination_permitted(a.ip()))
            .collect();
        if kept.is_empty() {
            return Err(FailureReply::new(
                Failure::DestinationNotPermitted,
                format!(
                    "{}: {} address(es), all refused by destination_deny",
                    req.dest, total
                ),
            ));
        }
        Ok(kept)
    }

    /// The addresses to try, in order, each with the MX host name when known.
    fn candidates(
        &self,
        req: &ConnectRequest,
    ) -> Result<Vec<(SocketAddr, Option<String>)>, FailureReply> {
        let family = Family::of(&req.source);
        if let Destination::Ip(ip) = &req.dest {
            if !family.matches(ip) {
                return Err(FailureReply::new(
                    Failure::DestinationNotPermitted,
                    format!(
                        "destination {ip} and source {} are of different address families",
                        req.source
                    ),
                ));
            }
            return Ok(vec![(SocketAddr::new(*ip, req.port), None)]);
        }
        let resolver = self.rt.resolver.as_ref().ok_or_else(|| {
            FailureReply::new(
                Failure::DnsTemporary,
                "no DNS resolver is available (see the log at start-up)",
            )
        })?;
        let found = match &req.dest {
            Destination::Host(h) => resolver.lookup_host(h, family).map(|addrs| {
                // Named like MX hosts (lower case, no trailing dot): this name is the
                // default TLS name (SNI, verification, pool matching) and `mx_host`.
                let name = h.strip_suffix('.').unwrap_or(h).to_ascii_lowercase();
                addrs
                    .into_iter()
                    .map(|a| (a, name.clone()))
                    .collect::<Vec<_>>()
            }),
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
            Ok(_) => Err(FailureReply::new(
                Failure::DnsNoAddress,
                format!("{}: no address of the source's family", req.dest),
            )),
            Err(e) => Err(dns_failure(e)),
        }
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
