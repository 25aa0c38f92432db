//! TLS policy toward the MX (sans-I/O): what the recipient domain publishes (DANE TLSA
//! records, an MTA-STS policy), what the operator configured (`mx_tls:`), what the MTA asked
//! (`tls=`), and therefore what a connection must be to carry the request; and the RFC 8460
//! (TLS reporting) vocabulary the outcomes are counted in. See docs/TLS-POLICY.md.
//!
//! - [`dane`]: TLSA record data (RFC 6698, RFC 7671, RFC 7672) as the DNS gives it;
//! - [`sts`]: MTA-STS (RFC 8461): the `_mta-sts` TXT record, the policy file, MX patterns;
//! - [`decide`]: the one decision from the request, the configuration and what was found;
//! - [`rpt`]: TLS-RPT (RFC 8460) result types, the per-domain daily ledger and its report.

pub mod dane;
pub mod decide;
pub mod rpt;
pub mod sts;

/// How one mechanism (DANE, MTA-STS) is applied, from `mx_tls:` in the configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Enforcement {
    /// What the domain publishes is applied: a failure defers the delivery.
    Enforce,
    /// Looked up and checked, failures counted and logged, but never deferred for.
    TestingOnly,
    /// Not looked up.
    Off,
}

/// The policy a connection was set up under (defined beside `TlsWant`, which the pool matches
/// on; the protocol's ready reply shows it).
pub use crate::protocol::reuse::Applied;

/// One set-up outcome under the TLS policies, success or failure: what the session reports
/// after each attempt at an MX (`Shared::tls_outcome`), for the TLS-RPT ledger (RFC 8460).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TlsOutcome<'a> {
    /// The policy domain (the recipient domain), when known.
    pub policy_domain: Option<&'a str>,
    /// The MX host name (none for an IP literal).
    pub mx_host: Option<&'a str>,
    /// The policy the session is counted under.
    pub policy: rpt::PolicyType,
    /// The policy applied (for a failure: the one that was being applied).
    pub applied: Applied,
    /// The policy was only observed (`testing-only`, MTA-STS `testing`): `result` is what
    /// enforcing it would have found, and the delivery went on.
    pub testing: bool,
    /// `None`: a successful session; otherwise the failure's result type.
    pub result: Option<rpt::ResultType>,
    /// The MX address (TLS-RPT `receiving-ip`), when one was chosen.
    pub mx_ip: Option<std::net::IpAddr>,
    /// The source address (TLS-RPT `sending-mta-ip`).
    pub source: Option<std::net::IpAddr>,
    /// The TLSA records of a `tlsa` policy (TLS-RPT `policy-string`).
    pub tlsa: Option<&'a dane::TlsaSet>,
}
