//! The egress core every front-end shares: from a request (client identity, source address,
//! destination, TLS policy, reuse) to an MX connection — permission checks, destination
//! resolution and policy, a pooled connection or a new one — then the relayed SMTP session and
//! the keep-or-close decision at its end. The native protocol (`session`) and the compatibility
//! front-ends (`frontend`) differ only in how they obtain the request and talk to their MTA.

use super::audit::Opened;
use super::error::EgressError;
use super::relay::{self, RelayOutcome};
use crate::caps::Capped;
use crate::caps::{Obtained, Request as CapRequest, Returned, Reuse};
use crate::config::Identity;
use crate::dns::Family;
use crate::logging::session::Via;
use crate::mx::{establish, MxConnection};
use crate::pool::reaper::quit_detached;
use crate::pool::{PoolKey, Refused, TlsWant};
use crate::runtime::Runtime;
use crate::shared::{Peer, Shared};
use greenarrow_proxy_net::bufconn::{BufConn, Timeouts};
use greenarrow_proxy_net::deadline::Deadline;
use greenarrow_proxy_proto::protocol::{ConnectRequest, Destination, Origin};
use greenarrow_proxy_proto::smtp::{MxFacts, PoolState, Relay};
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// How long the checkout probes (`pool.checkout_probe`) of one request may take in all (or
/// `timeouts.mx_command` when shorter); after that the proxy dials a new connection.
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long the `RSET` that cleans a connection before it is pooled may take.
const RSET_TIMEOUT: Duration = Duration::from_secs(10);

/// One MTA session's view of the proxy: the shared state, the configuration in force when the
/// session started, and the MTA's address (for the log).
#[derive(Clone, Copy)]
pub struct Egress<'a> {
    pub shared: &'a Shared,
    pub rt: &'a Runtime,
    pub peer: SocketAddr,
    /// The session's end (`timeouts.session_lifetime` from the accept): no read or dial of
    /// the egress core outlives it.
    pub deadline: Deadline,
    /// The listener the MTA came through (the session line's `frontend=`).
    pub via: Via,
}

impl Egress<'_> {
    /// The source address is permitted for the client and the port by `destination_ports`.
    pub fn authorize(&self, id: &Identity, req: &ConnectRequest) -> Result<(), EgressError> {
        let source = req.source;
        if self.shared.drains().source_drained(source) {
            return Err(EgressError::SourceDrained { source });
        }
        if !id.sources.iter().any(|n| n.contains(source)) {
            return Err(EgressError::SourceNotPermitted {
                source,
                client: id.name.to_string(),
            });
        }
        if !self.shared.local().usable(source) {
            return Err(EgressError::SourceGone { source });
        }
        if !self.rt.config.destination_ports.contains(&req.port) {
            return Err(EgressError::PortNotPermitted { port: req.port });
        }
        Ok(())
    }

    /// The addresses to try, in order, each with the MX host name when known: resolved, of
    /// the source's family, and permitted by the destination policy.
    pub fn destinations(
        &self,
        req: &ConnectRequest,
    ) -> Result<Vec<(SocketAddr, Option<String>)>, EgressError> {
        let permitted = self.permitted(req, self.candidates(req)?)?;
        let total = permitted.len();
        let drains = &self.shared.drains();
        let open: Vec<_> = permitted
            .into_iter()
            .filter(|(a, _)| !drains.mx_drained(*a))
            .collect();
        if open.is_empty() {
            return Err(EgressError::AllDrained {
                dest: req.dest.clone(),
                total,
            });
        }
        Ok(open)
    }

    /// Check permissions, resolve, then reuse or dial (banner, EHLO, STARTTLS, EHLO).
    pub fn open_mx(
        &self,
        id: &Identity,
        req: &ConnectRequest,
    ) -> Result<(Capped, Origin), EgressError> {
        self.authorize(id, req)?;
        let candidates = self.plan(req, self.destinations(req)?)?;
        if req.reuse {
            // One deadline for every probe of this request: a hung MX costs it once.
            let deadline = self
                .deadline
                .within(PROBE_TIMEOUT.min(self.rt.mx.timeouts.command));
            for (addr, host, decision) in &candidates {
                if let Some(found) =
                    self.reuse(req, *addr, host.as_deref(), &decision.want, deadline)
                {
                    return Ok(found);
                }
            }
        }
        let mut last = None;
        let count = candidates.len();
        for (i, (addr, host, decision)) in candidates.into_iter().enumerate() {
            // A place under the connection caps (perhaps after a wait, perhaps a connection
            // of this key handed over meanwhile).
            // A connection handed over is checked like one from the pool; a dead one is
            // closed (its place is free again) and the caps are asked again. Each round
            // closes one, and `obtain` keeps to the session's deadline: this ends.
            let permit = loop {
                match self.obtain(req, addr, &decision.want)? {
                    Obtained::Dial(p) => break p,
                    Obtained::Reused(c) => {
                        let mut c = *c;
                        let deadline = self
                            .deadline
                            .within(PROBE_TIMEOUT.min(self.rt.mx.timeouts.command));
                        if self.healthy(&mut c, deadline) {
                            return Ok(self.reused(c, host.as_deref()));
                        }
                        c.close();
                    }
                }
            };
            let outcome = establish(
                &self.rt.mx,
                req,
                addr,
                host.as_deref(),
                &decision,
                self.deadline,
            );
            self.report_setup(req, addr, host.as_deref(), &decision, &outcome);
            match outcome {
                Ok(c) => {
                    let c = Capped::new(c, permit);
                    if c.tls().is_some() {
                        self.shared.stats().tls_handshake(Peer::Mx);
                    }
                    return Ok((c, Origin::New));
                }
                Err(f) if f.worth_another_address() => {
                    // The last address's failure is the request's, logged by the caller.
                    if i + 1 < count {
                        verbose!(self.rt, mta = self.peer, source = req.source, mx = addr; "failed, trying the next address: {}", super::error::chain(&f));
                    }
                    last = Some(f);
                }
                Err(f) => return Err(f.into()),
            }
        }
        Err(last.map_or(EgressError::NoAddress, EgressError::from))
    }

    /// A place under the connection caps for a connection to `addr` (see `caps`): Err with
    /// `concurrency_limit` when the cap holds past the request's wait.
    pub fn obtain(
        &self,
        req: &ConnectRequest,
        addr: SocketAddr,
        want: &TlsWant,
    ) -> Result<Obtained, EgressError> {
        let reuse = req.reuse.then(|| Reuse {
            want: want.clone(),
            max_messages: req.reuse_max_messages,
        });
        let request = CapRequest {
            source: req.source,
            ehlo: &req.ehlo,
            mx: addr,
            reuse,
            wait: req.wait,
            deadline: self.deadline.instant(),
        };
        self.shared
            .caps()
            .obtain(self.shared.pool(), &request)
            .map_err(|e| {
                verbose!(self.rt, mta = self.peer, source = req.source, mx = addr; "connection cap: {e}");
                if self.shared.stopping() {
                    // Woken by the stop, not by the cap's wait.
                    EgressError::Stopping
                } else {
                    EgressError::Cap(e)
                }
            })
    }

    /// A pooled connection for a session: liveness peek and the checkout probe, all within
    /// `deadline`; false if it is dead.
    fn healthy(&self, c: &mut MxConnection, deadline: Deadline) -> bool {
        let probe: Option<&[u8]> = match self.rt.config.pool.checkout_probe {
            crate::config::Probe::None => None,
            crate::config::Probe::Noop => Some(b"NOOP\r\n"),
            crate::config::Probe::Rset => Some(b"RSET\r\n"),
        };
        c.is_alive() && probe.is_none_or(|p| c.probe(p, deadline))
    }

    /// A pooled connection handed to this session, with its origin for the ready reply.
    fn reused(&self, mut c: Capped, host: Option<&str>) -> (Capped, Origin) {
        let origin = Origin::Reused {
            age: c.created().elapsed(),
            uses: c.uses(),
            messages: c.messages(),
        };
        // The name this request used (none for an IP literal), not the first user's.
        c.reuse_for(host);
        (c, origin)
    }

    /// Log (verbose) that `mx` is ready for the MTA, `started` being when the request came.
    pub fn log_ready(&self, started: Instant, mx: &MxConnection, origin: &Origin) {
        verbose!(
            self.rt,
            mta = self.peer,
            source = mx.local().ip(),
            mx = mx.remote();
            "ready in {:.2} ms: connection={} tls={} tls_policy={} tls_verified={}",
            started.elapsed().as_secs_f64() * 1000.0,
            if *origin == Origin::New { "new" } else { "reused" },
            mx.tls().as_ref().map_or("none", |t| t.version.as_str()),
            mx.applied().as_str(),
            mx.verified_word()
        );
    }

    /// Relay the MTA's SMTP session over `mx` (opened for `req`) until the MTA's QUIT or
    /// disconnect, with a relay machine that knows the connection's facts.
    pub fn relay<S: Read + Write + Timeouts>(
        &self,
        mta: &mut BufConn<S>,
        mx: Capped,
        req: &ConnectRequest,
        deadline: Deadline,
    ) -> RelayOutcome {
        let facts = MxFacts {
            chunking: mx.capabilities().chunking,
            ehlo_name: req.ehlo.clone(),
        };
        relay::relay(
            mta,
            mx,
            Relay::new(self.rt.relay_limits, facts),
            self.rt.config.timeouts.mta_idle,
            deadline,
            &self.rt.mx.timeouts,
            &self.rt.mx.reply_limits,
        )
    }

    /// After a relayed session: count its messages, log its line (`log_sessions`), then keep
    /// the MX connection for reuse or close it (never completing a message the MTA did not
    /// finish).
    pub fn conclude(&self, req: &ConnectRequest, out: RelayOutcome, opened: &Opened) {
        let messages = out.relay.messages_accepted();
        if self.rt.config.log_sessions {
            opened.log_end(self.peer, self.via, req, &out, messages);
        }
        let stats = self.shared.stats();
        stats.messages_accepted(messages);
        stats.relayed_to_mx(out.octets_to_mx);
        if let Some(why) = &out.mx_lost {
            verbose!(self.rt, mta = self.peer; "MX connection lost: {why}");
        }
        if let Some(mut mx) = out.mx {
            mx.add_messages(messages);
            if out.mid_body {
                // Never complete a message the MTA did not finish.
                verbose!(self.rt, mta = self.peer, mx = mx.remote(); "the MTA left in the middle of a message: MX connection closed without end of data");
                mx.close();
            } else {
                let state = out.relay.pool_state();
                self.release(req, mx, Some(state), out.mx_silent);
            }
        }
    }

    /// A healthy pooled connection for `addr`, if there is one and `deadline` (for the
    /// probes) has not passed. Dead ones are discarded.
    fn reuse(
        &self,
        req: &ConnectRequest,
        addr: SocketAddr,
        host: Option<&str>,
        want: &TlsWant,
        deadline: Deadline,
    ) -> Option<(Capped, Origin)> {
        let pool = &self.shared.pool();
        let key = PoolKey::new(req.source, &req.ehlo, addr);
        loop {
            if deadline.has_passed() {
                return None;
            }
            let mut expired = Vec::new();
            let got = pool.checkout(
                &key,
                want,
                req.reuse_max_messages,
                Instant::now(),
                &mut expired,
            );
            // QUIT waits on the MX: not on this session's way to its connection.
            quit_detached(expired);
            let mut c = got?;
            self.shared.caps().taken_from_pool(&mut c);
            if !self.healthy(&mut c, deadline) {
                verbose!(self.rt, mta = self.peer, source = c.local().ip(), mx = c.remote(); "pool: discarding a dead idle connection");
                c.close();
                continue;
            }
            return Some(self.reused(c, host));
        }
    }

    /// Drop candidates in `destination_deny` (unless in `destination_allow`); none left is
    /// a `destination_not_permitted` failure.
    fn permitted(
        &self,
        req: &ConnectRequest,
        candidates: Vec<(SocketAddr, Option<String>)>,
    ) -> Result<Vec<(SocketAddr, Option<String>)>, EgressError> {
        let total = candidates.len();
        let kept: Vec<_> = candidates
            .into_iter()
            .filter(|(a, _)| self.rt.config.destination_permitted(a.ip()))
            .collect();
        if kept.is_empty() {
            return Err(EgressError::AllDenied {
                dest: req.dest.clone(),
                total,
            });
        }
        Ok(kept)
    }

    /// The addresses to try, in order, each with the MX host name when known.
    fn candidates(
        &self,
        req: &ConnectRequest,
    ) -> Result<Vec<(SocketAddr, Option<String>)>, EgressError> {
        let family = Family::of(&req.source);
        if let Destination::Ip(ip) = &req.dest {
            if !family.matches(ip) {
                return Err(EgressError::FamilyMismatch {
                    dest: *ip,
                    source: req.source,
                });
            }
            return Ok(vec![(SocketAddr::new(*ip, req.port), None)]);
        }
        let resolver = self.rt.resolver.as_ref().ok_or(EgressError::NoResolver)?;
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
            Ok(_) => Err(EgressError::NoAddressOfFamily {
                dest: req.dest.clone(),
            }),
            Err(e) => Err(EgressError::Dns(e)),
        }
    }

    /// Keep `mx` in the pool when everything allows it, otherwise QUIT and close it.
    /// `state` is the relay's view (None when no SMTP session took place).
    /// `silent`: the relay's last act on the connection was a look that found nothing (see
    /// [`RelayOutcome::mx_silent`]); the check-in does not look again a moment later.
    pub fn release(
        &self,
        req: &ConnectRequest,
        mut mx: Capped,
        state: Option<PoolState>,
        silent: bool,
    ) {
        let why_not: Option<String> = (|| {
            if !req.reuse {
                return Some("the request did not allow reuse".to_string());
            }
            if self.shared.stopping() {
                return Some("the proxy is stopping".to_string());
            }
            if self.shared.drains().key_drained(req.source, mx.remote()) {
                return Some("its source address or MX is drained".to_string());
            }
            // The watcher closes the pooled ones; this keeps a session ending now from
            // pooling one after it. (A check-in racing the watcher leaves a connection no
            // request can take: `authorize` refuses the address; it expires in the reaper.)
            if self.shared.local().is_gone(req.source) {
                return Some("the source address has left this host".to_string());
            }
            match state {
                Some(PoolState::Clean) | None => {}
                Some(PoolState::NeedsRset) => {
                    if !mx.probe(b"RSET\r\n", self.deadline.within(RSET_TIMEOUT)) {
                        return Some("RSET after an unfinished transaction failed".into());
                    }
                }
                Some(PoolState::Unusable(reason)) => return Some(reason.to_string()),
            }
            if let Some(cap) = req.reuse_max_messages {
                if mx.messages() >= cap {
                    return Some(format!("message cap reached ({} of {cap})", mx.messages()));
                }
            }
            None
        })();
        // QUIT (and its wait for the MX's 221) happens off the session's path: the MTA may
        // already have its 221 and send its next request.
        let mx = match why_not {
            Some(reason) => {
                verbose!(self.rt, mta = self.peer, mx = mx.remote(); "not kept: {reason}");
                quit_detached(vec![mx]);
                return;
            }
            None => mx,
        };
        let key = PoolKey::new(req.source, &req.ehlo, mx.remote());
        let remote = mx.remote();
        // Unread MX bytes (buffered, or waiting on the socket: one non-blocking peek, unless
        // the relay has just made it) would be taken for the next user's replies. (A session
        // taking it from the pool looks again in any case.)
        let alive = if silent {
            !mx.has_unread_input()
        } else {
            mx.is_alive()
        };
        if !alive {
            verbose!(self.rt, mta = self.peer, mx = remote; "not kept: {}", Refused::UnreadInput.reason());
            quit_detached(vec![mx]);
            return;
        }
        let source = key.source;
        match self
            .shared
            .caps()
            .give_back(self.shared.pool(), key, mx, Instant::now())
        {
            Returned::Pooled => {
                verbose!(self.rt, mta = self.peer, mx = remote; "kept for reuse");
                // A drain that came between the check above and the check-in took nothing:
                // take it out again.
                if self.shared.drains().key_drained(source, remote) {
                    let drained = self.shared.drains().copy();
                    quit_detached(self.shared.pool().take_keys_where(|k| !drained.matches(k)));
                }
            }
            Returned::Handed => {
                verbose!(self.rt, mta = self.peer, mx = remote; "kept: handed to a request waiting at its connection cap")
            }
            Returned::ClosedForWaiter => {
                verbose!(self.rt, mta = self.peer, mx = remote; "not kept: closed to make room for a request of another key waiting at the connection cap")
            }
            Returned::Refused(rejected) => {
                verbose!(self.rt, mta = self.peer, mx = remote; "not kept: {}", rejected.why.reason());
                quit_detached(vec![rejected.conn]);
            }
        }
    }
}
