//! The egress core's TLS policy step (docs/TLS-POLICY.md): one decision per MX host from the
//! request, `mx_tls:`, the host's TLSA records (`dns`) and the domain's MTA-STS policy
//! (`tls_policy::decide`), and every set-up outcome under those policies reported to the TLS
//! outcomes hook (`Shared::tls_outcome`).

use super::egress::Egress;
use super::error::EgressError;
use crate::mx::{AttemptError, MxConnection};
use greenarrow_proxy_proto::protocol::{ConnectRequest, Destination};
use greenarrow_proxy_proto::tls_policy::dane::DaneFinding;
use greenarrow_proxy_proto::tls_policy::decide::{self, Decision, StsFinding};
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
            let sts = self.sts_finding(req, host.as_deref());
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

    /// What MTA-STS says of the request's policy domain for this MX host. The MTA-STS
    /// look-up and cache (issue 23, MTA-STS part) answers here; until then nothing is looked up.
    fn sts_finding(&self, _req: &ConnectRequest, _host: Option<&str>) -> StsFinding {
        StsFinding::NotLookedUp
    }

    /// Report a set-up attempt under the TLS policies to the outcomes hook: the enforced
    /// policy's success or failure, and an observed (testing) policy's verdict.
    pub(super) fn report_setup(
        &self,
        req: &ConnectRequest,
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
        };
        match outcome {
            Ok(c) => {
                if let Some((policy, result)) = c.observed() {
                    self.shared.tls_outcome(&TlsOutcome {
                        policy,
                        applied: c.applied(),
                        testing: true,
                        result,
                        ..base
                    });
                }
                self.shared.tls_outcome(&TlsOutcome {
                    applied: c.applied(),
                    ..base
                });
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

/// The policy domain of a request: the recipient domain when the MTA gave one.
fn policy_domain(req: &ConnectRequest) -> Option<&str> {
    match &req.dest {
        Destination::Domain(d) => Some(d.as_str()),
        _ => None,
    }
}
