//! The egress core's TLS policy step (docs/TLS-POLICY.md): one decision per MX host from the
//! request, `mx_tls:`, the host's TLSA records (`dns`) and the domain's MTA-STS policy
//! (`tls_policy::decide`), and every set-up outcome under those policies reported to the TLS
//! outcomes hook (`Shared::tls_outcome`).

use super::egress::Egress;
use super::error::EgressError;
use crate::mx::{AttemptError, MxConnection};
use greenarrow_proxy_proto::protocol::ConnectRequest;
use greenarrow_proxy_proto::tls_policy::dane::DaneFinding;
use greenarrow_proxy_proto::tls_policy::decide::{self, CertCheck, Decision, Observe, StsFinding};
use greenarrow_proxy_proto::tls_policy::rpt::PolicyType;
use greenarrow_proxy_proto::tls_policy::{Applied, Enforcement, TlsOutcome};
use std::net::{IpAddr, SocketAddr};

impl Egress<'_> {
    /// The TLS policy decision for each candidate (`tls_policy::decide`: the request, the
    /// domain's DANE and MTA-STS policies, `mx_tls:`). A host whose policy refuses the request
    /// is left out (reported to the TLS outcomes hook and logged); when none is left, or the
    /// refusal would hold for every host, the first refusal is the request's.
    pub(super) fn plan(
        &self,
        req: &ConnectRequest,
        candidates: Vec<(SocketAddr, Option<String>)>,
    ) -> Result<Vec<(SocketAddr, Option<String>, Decision)>, EgressError> {
        let settings = self.rt.config.mx_tls.policy();
        let mut tlsa: Vec<(String, DaneFinding)> = Vec::new();
        let mut planned = Vec::with_capacity(candidates.len());
        let mut refused = None;
        let mut refused_hosts: Vec<Option<String>> = Vec::new();
        let sts = self.sts_lookup(req, &settings);
        for (addr, host) in candidates {
            let dane = match (&host, &self.rt.resolver) {
                // A host= given as an address literal has no TLSA base name.
                (Some(h), Some(resolver))
                    if settings.dane != Enforcement::Off && h.parse::<IpAddr>().is_err() =>
                {
                    match tlsa.iter().find(|(n, _)| n == h) {
                        Some((_, f)) => f.clone(),
                        None => {
                            let f = resolver.lookup_tlsa(h, req.port);
                            tlsa.push((h.clone(), f.clone()));
                            f
                        }
                    }
                }
                _ => DaneFinding::NotLookedUp,
            };
            let sts = sts
                .as_ref()
                .map_or(StsFinding::NotLookedUp, |l| l.finding(host.as_deref()));
            let asked = decide::Request {
                tls: req.tls,
                tls_name: req.tls_name.as_deref(),
                mx_host: host.as_deref(),
                mx_ip: addr.ip(),
            };
            match decide::decide(asked, &dane, &sts, &settings) {
                Ok(d) => planned.push((addr, host, d)),
                Err(refusal) => {
                    let (policy, result) = refusal.report();
                    // Once per MX host, not per address of it.
                    if !refused_hosts.contains(&host) {
                        refused_hosts.push(host.clone());
                        self.shared.tls_outcome(&TlsOutcome {
                            policy_domain: policy_domain(req),
                            mx_host: host.as_deref(),
                            policy,
                            applied: Applied::None,
                            testing: false,
                            result,
                            mx_ip: Some(addr.ip()),
                            source: Some(req.source),
                            tlsa: match &dane {
                                DaneFinding::Secure(set) => Some(set),
                                _ => None,
                            },
                        });
                    }
                    verbose!(self.rt, mta = self.peer, source = req.source, mx = addr; "TLS policy: {refusal}");
                    if !refusal.worth_another_host() {
                        return Err(EgressError::Policy(refusal));
                    }
                    refused.get_or_insert(refusal);
                }
            }
        }
        match refused {
            Some(r) if planned.is_empty() => Err(EgressError::Policy(r)),
            _ => Ok(planned),
        }
    }

    /// The MTA-STS policy in force for the request's policy domain (`domain=` or
    /// `policy_domain=`; `tlspolicy::sts`: the TXT record, the cache, a fetch when due), or
    /// `None` when it is not looked up (`mx_tls.mta_sts: off`, no policy domain, no resolver).
    /// A failed fetch with no cached policy to fall back on is reported
    /// (`sts-policy-fetch-error`, `sts-policy-invalid`, `sts-webpki-invalid`); the delivery
    /// then goes on as for a domain without a policy (RFC 8461 section 5).
    fn sts_lookup(
        &self,
        req: &ConnectRequest,
        settings: &decide::Settings,
    ) -> Option<crate::tlspolicy::sts::Lookup> {
        if settings.mta_sts == Enforcement::Off {
            return None;
        }
        let domain = req.policy_domain()?;
        let lookup = self.shared.sts_lookup(domain)?;
        if let (None, Some(e)) = (&lookup.policy, &lookup.failure) {
            verbose!(self.rt, mta = self.peer, source = req.source; "MTA-STS: {domain}: {e}");
            self.shared.tls_outcome(&TlsOutcome {
                policy_domain: Some(domain),
                mx_host: None,
                policy: PolicyType::Sts,
                applied: Applied::None,
                testing: false,
                result: Some(e.result_type()),
                mx_ip: None,
                source: Some(req.source),
                tlsa: None,
            });
        }
        Some(lookup)
    }

    /// Report a set-up attempt under the TLS policies to the outcomes hook: the enforced
    /// policy's success or failure, and an observed (testing) policy's verdict.
    pub(super) fn report_setup(
        &self,
        req: &ConnectRequest,
        addr: SocketAddr,
        host: Option<&str>,
        decision: &Decision,
        outcome: &Result<MxConnection, AttemptError>,
    ) {
        let base = TlsOutcome {
            policy_domain: policy_domain(req),
            mx_host: host,
            policy: decision.policy,
            applied: decision.applied,
            testing: false,
            result: None,
            mx_ip: Some(addr.ip()),
            source: Some(req.source),
            tlsa: match (&decision.check, &decision.observe) {
                (CertCheck::Dane { tlsa, .. }, _) | (_, Some(Observe::Dane { tlsa, .. })) => {
                    Some(tlsa)
                }
                _ => None,
            },
        };
        match outcome {
            Ok(c) => {
                let observed = c.observed();
                if let Some((policy, result)) = observed {
                    self.shared.tls_outcome(&TlsOutcome {
                        policy,
                        applied: c.applied(),
                        testing: true,
                        result,
                        ..base
                    });
                }
                // One session, one count per policy: an observed policy's verdict is the
                // session's under that policy.
                if observed.is_none_or(|(policy, _)| policy != decision.policy) {
                    self.shared.tls_outcome(&TlsOutcome {
                        applied: c.applied(),
                        ..base
                    });
                }
            }
            Err(AttemptError::Setup(e)) => {
                if let Some(result) = e.result_type() {
                    self.shared.tls_outcome(&TlsOutcome {
                        result: Some(result),
                        ..base
                    });
                }
            }
            Err(_) => {}
        }
    }
}

/// The policy domain of a request: `domain=`, or `policy_domain=` with `host=`.
fn policy_domain(req: &ConnectRequest) -> Option<&str> {
    req.policy_domain()
}
