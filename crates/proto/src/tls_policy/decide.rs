//! The decision: from the MTA's `tls=`, the configuration's [`super::Enforcement`]s and what
//! the DANE and MTA-STS look-ups found, what a connection must be to carry the request
//! ([`crate::protocol::reuse::TlsWant`]), which [`super::Applied`] policy that is, or why the
//! request is refused or deferred.
//!
//! The rules (docs/TLS-POLICY.md):
//! - DANE first (RFC 7672; it takes precedence over MTA-STS, RFC 8461 section 2): a secure
//!   TLSA RRset with a usable record makes TLS mandatory and DANE-authenticated, whatever the
//!   MTA asked beyond `tls=none` (`tls=verify` too: DANE authenticates the MX name); a secure
//!   set with no usable record makes TLS mandatory, unauthenticated; a failed or bogus look-up
//!   defers. Insecure answers and secure denials leave the request as it was.
//! - MTA-STS `enforce` with a matching MX: TLS verified by WebPKI for the MX name; an MX the
//!   policy does not list defers.
//! - `tls=none` against a domain whose policy requires TLS is refused unless
//!   `mx_tls.allow_none_when_required`; `testing-only` (and an MTA-STS `testing` policy)
//!   delivers under the requested policy and has the outcome counted.

use super::dane::{DaneFinding, TlsaSet};
use super::rpt::{PolicyType, ResultType};
use super::{Applied, Enforcement};
use crate::protocol::reply::Failure;
use crate::protocol::reuse::TlsWant;
use crate::protocol::TlsPolicy;
use std::fmt;
use std::net::IpAddr;

/// An MTA-STS policy's `mode` (RFC 8461 section 3.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StsMode {
    Enforce,
    Testing,
    None,
}

/// What the MTA-STS look-up found for the policy domain (produced by the daemon's MTA-STS
/// code; `NotLookedUp` when it is off or there is no policy domain).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StsFinding {
    NotLookedUp,
    /// No `_mta-sts` record (or no usable policy and none cached).
    NoPolicy,
    /// A valid policy: its mode, whether this MX host matches one of its `mx` patterns, and
    /// its id (for the reports).
    Policy {
        mode: StsMode,
        mx_matches: bool,
        policy_id: String,
    },
}

/// `mx_tls:`'s part of the decision.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Settings {
    pub dane: Enforcement,
    pub mta_sts: Enforcement,
    /// `tls=none` against a domain whose policy requires TLS is carried out (in plaintext)
    /// rather than refused.
    pub allow_none_when_required: bool,
}

impl Default for Settings {
    /// DANE and MTA-STS enforced, `tls=none` refused where the domain requires TLS: the
    /// proxy never does less than a careful MTA would do by itself.
    fn default() -> Settings {
        Settings {
            dane: Enforcement::Enforce,
            mta_sts: Enforcement::Enforce,
            allow_none_when_required: false,
        }
    }
}

/// What the request asks, for one MX host.
#[derive(Clone, Copy, Debug)]
pub struct Request<'a> {
    /// The MTA's `tls=`.
    pub tls: TlsPolicy,
    /// The MTA's `tls_name=`, if any.
    pub tls_name: Option<&'a str>,
    /// The MX host's name (none for an IP literal).
    pub mx_host: Option<&'a str>,
    /// The MX address.
    pub mx_ip: IpAddr,
}

/// How the MX's certificate is to be judged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CertCheck {
    /// Any certificate (the handshake signature still verified).
    AcceptAny,
    /// WebPKI: chain to the roots, valid for the name.
    WebPki(String),
    /// DANE: the usable records of the set; DANE-TA also checks this name.
    Dane { name: String, tlsa: TlsaSet },
}

/// A policy checked and counted, but not enforced (`testing-only`, MTA-STS `testing`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Observe {
    /// Check the certificate against this TLSA set (for `name`) and count the result.
    Dane { name: String, tlsa: TlsaSet },
    /// Count whether the MX matched the policy and its certificate was WebPKI-valid.
    Sts { policy_id: String, mx_matches: bool },
}

/// What a connection must be to carry the request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    /// What a pooled connection must satisfy (and a new one will).
    pub want: TlsWant,
    /// What the set-up machine runs: `None` (no STARTTLS), `Opportunistic`, `Required` (TLS
    /// mandatory) or `Verify`.
    pub setup: TlsPolicy,
    /// How the certificate is judged.
    pub check: CertCheck,
    /// The policy applied: for DANE [`Applied::DaneEe`] until the handshake says whether an
    /// EE or a TA record matched.
    pub applied: Applied,
    /// The RFC 8460 policy type the session is counted under.
    pub policy: PolicyType,
    /// The domain's policy is enforced: a TLS failure defers with its own tag (DANE's or
    /// MTA-STS's), never falls back.
    pub enforced: bool,
    /// A policy only observed.
    pub observe: Option<Observe>,
}

/// Why a request cannot be carried to this MX host (before any dial).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Refusal {
    /// The TLSA look-up failed or was bogus (RFC 7672 section 2.2: do not use the MX now).
    TlsaLookupFailed { mx: String, detail: String },
    /// `tls=none` toward an MX with secure TLSA records.
    DaneRequired { mx: String },
    /// MTA-STS `enforce` and the MX matches no `mx` pattern of the policy.
    StsMxMismatch { mx: String, policy_id: String },
    /// `tls=none` toward a domain with an MTA-STS `enforce` policy.
    StsRequired { policy_id: String },
}

impl Refusal {
    /// The failure the MTA is told of.
    pub fn failure(&self) -> Failure {
        match self {
            Refusal::TlsaLookupFailed { .. } => Failure::TlsaLookupFailed,
            Refusal::DaneRequired { .. } => Failure::DaneRequired,
            Refusal::StsMxMismatch { .. } => Failure::StsMxMismatch,
            Refusal::StsRequired { .. } => Failure::StsRequired,
        }
    }

    /// The RFC 8460 policy type and result type it is counted as (none: the refusal is the
    /// MTA's request against the policy, not a failed TLS session).
    pub fn report(&self) -> (PolicyType, Option<ResultType>) {
        match self {
            Refusal::TlsaLookupFailed { .. } => (PolicyType::Tlsa, Some(ResultType::DnssecInvalid)),
            Refusal::DaneRequired { .. } => (PolicyType::Tlsa, None),
            Refusal::StsMxMismatch { .. } => (PolicyType::Sts, Some(ResultType::ValidationFailure)),
            Refusal::StsRequired { .. } => (PolicyType::Sts, None),
        }
    }

    /// Whether another MX host of the destination may do better.
    pub fn worth_another_host(&self) -> bool {
        matches!(
            self,
            Refusal::TlsaLookupFailed { .. } | Refusal::StsMxMismatch { .. }
        )
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::TlsaLookupFailed { mx, detail } => {
                write!(f, "TLSA look-up for {mx} failed or was not DNSSEC-valid ({detail}); not delivering to it now")
            }
            Refusal::DaneRequired { mx } => write!(
                f,
                "{mx} publishes DNSSEC-signed TLSA records: TLS is required, tls=none refused"
            ),
            Refusal::StsMxMismatch { mx, policy_id } => write!(
                f,
                "{mx} is not an MX of the domain's MTA-STS policy (id {policy_id}, mode enforce)"
            ),
            Refusal::StsRequired { policy_id } => write!(
                f,
                "the domain's MTA-STS policy (id {policy_id}) is in enforce mode: TLS is required, tls=none refused"
            ),
        }
    }
}

impl std::error::Error for Refusal {}

/// The one decision for `req` to one MX host, given what was found.
pub fn decide(
    req: Request<'_>,
    dane: &DaneFinding,
    sts: &StsFinding,
    settings: &Settings,
) -> Result<Decision, Refusal> {
    let mut observe = None;
    if let (Some(mx), true) = (req.mx_host, settings.dane != Enforcement::Off) {
        let enforce = settings.dane == Enforcement::Enforce;
        match dane {
            DaneFinding::Failed(detail) if enforce => {
                return Err(Refusal::TlsaLookupFailed {
                    mx: mx.to_string(),
                    detail: detail.clone(),
                })
            }
            DaneFinding::Secure(set) if enforce => return dane_decision(req, mx, set, settings),
            // Observed only where TLS is tried: tls=none has no handshake to judge.
            DaneFinding::Secure(set) if set.has_usable() && req.tls != TlsPolicy::None => {
                observe = Some(Observe::Dane {
                    name: mx.to_string(),
                    tlsa: set.clone(),
                })
            }
            _ => {}
        }
    }
    if let (
        StsFinding::Policy {
            mode,
            mx_matches,
            policy_id,
        },
        true,
    ) = (sts, settings.mta_sts != Enforcement::Off)
    {
        let enforce = *mode == StsMode::Enforce && settings.mta_sts == Enforcement::Enforce;
        match (enforce, req.mx_host) {
            (true, _) if req.tls == TlsPolicy::None => {
                if !settings.allow_none_when_required {
                    return Err(Refusal::StsRequired {
                        policy_id: policy_id.clone(),
                    });
                }
                return Ok(requested(req, PolicyType::Sts, None));
            }
            (true, Some(mx)) if *mx_matches => {
                return Ok(Decision {
                    want: TlsWant::Verified(mx.to_string()),
                    setup: TlsPolicy::Verify,
                    check: CertCheck::WebPki(mx.to_string()),
                    applied: Applied::MtaSts,
                    policy: PolicyType::Sts,
                    enforced: true,
                    observe,
                })
            }
            (true, mx) => {
                return Err(Refusal::StsMxMismatch {
                    mx: mx.map_or_else(|| req.mx_ip.to_string(), str::to_string),
                    policy_id: policy_id.clone(),
                })
            }
            (false, _)
                if *mode != StsMode::None && observe.is_none() && req.tls != TlsPolicy::None =>
            {
                observe = Some(Observe::Sts {
                    policy_id: policy_id.clone(),
                    mx_matches: *mx_matches,
                });
                return Ok(requested(req, PolicyType::Sts, observe));
            }
            (false, _) => {}
        }
    }
    let policy = match &observe {
        Some(Observe::Dane { .. }) => PolicyType::Tlsa,
        _ => PolicyType::NoPolicyFound,
    };
    Ok(requested(req, policy, observe))
}

/// A secure TLSA set, enforced.
fn dane_decision(
    req: Request<'_>,
    mx: &str,
    set: &TlsaSet,
    settings: &Settings,
) -> Result<Decision, Refusal> {
    if req.tls == TlsPolicy::None {
        if !settings.allow_none_when_required {
            return Err(Refusal::DaneRequired { mx: mx.to_string() });
        }
        return Ok(requested(req, PolicyType::Tlsa, None));
    }
    if !set.has_usable() {
        // RFC 7672 section 2.2: TLS mandatory, no authentication (unless asked by the MTA).
        if req.tls == TlsPolicy::Verify {
            return Ok(requested(req, PolicyType::Tlsa, None));
        }
        return Ok(Decision {
            want: TlsWant::Tls,
            setup: TlsPolicy::Required,
            check: CertCheck::AcceptAny,
            applied: Applied::Required,
            policy: PolicyType::Tlsa,
            enforced: true,
            observe: None,
        });
    }
    Ok(Decision {
        want: TlsWant::Dane {
            name: mx.to_string(),
            tlsa: set.fingerprint(),
        },
        setup: TlsPolicy::Required,
        check: CertCheck::Dane {
            name: mx.to_string(),
            tlsa: set.clone(),
        },
        applied: Applied::DaneEe,
        policy: PolicyType::Tlsa,
        enforced: true,
        observe: None,
    })
}

/// The request as the MTA made it, no domain policy applied (a tool that dials an address of
/// its own, the benchmark).
pub fn as_requested(req: Request<'_>) -> Decision {
    requested(req, PolicyType::NoPolicyFound, None)
}

/// The request as the MTA made it.
fn requested(req: Request<'_>, policy: PolicyType, observe: Option<Observe>) -> Decision {
    let name = req.tls_name.or(req.mx_host);
    let want = TlsWant::from_request(req.tls, name, std::net::SocketAddr::new(req.mx_ip, 0));
    let (check, applied) = match &want {
        TlsWant::Verified(n) => (CertCheck::WebPki(n.clone()), Applied::WebPki),
        _ => (
            CertCheck::AcceptAny,
            match req.tls {
                TlsPolicy::None => Applied::None,
                TlsPolicy::Opportunistic => Applied::Opportunistic,
                _ => Applied::Required,
            },
        ),
    };
    Decision {
        want,
        setup: req.tls,
        check,
        applied,
        policy,
        enforced: false,
        observe,
    }
}

#[cfg(test)]
mod tests;
