//! TLS policy look-ups and reporting toward MX servers that need I/O: the MTA-STS policy
//! fetcher and cache ([`sts`], over the small HTTPS client [`https`]) and the TLS-RPT
//! reports written into `state_directory` ([`rpt`]). The rules are sans-I/O in
//! `greenarrow_proxy_proto::tls_policy`; see docs/TLS-POLICY.md.

pub mod https;
pub mod rpt;
pub mod sts;

use std::time::{SystemTime, UNIX_EPOCH};

/// Seconds since the epoch (the policy cache and the report days are in UTC wall time).
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

use greenarrow_proxy_proto::status::TlsRptSnapshot;
use greenarrow_proxy_proto::tls_policy::rpt::{FailureKey, PolicyRef, PolicyType, ResultType};
use greenarrow_proxy_proto::tls_policy::TlsOutcome;
use std::path::Path;

/// The long-lived TLS policy state every session shares (it outlives reloads): the MTA-STS
/// cache and the TLS-RPT reports. (Their counters are `shared::Stats`'s.)
pub struct TlsPolicies {
    pub sts: sts::StsCache,
    pub reports: rpt::Reports,
}

impl TlsPolicies {
    /// With `state_dir`, policies and reports are kept there (`mta-sts/`, `tls-rpt/`).
    pub fn new(state_dir: Option<&Path>, organization: &str, contact: Option<&str>) -> TlsPolicies {
        TlsPolicies {
            sts: sts::StsCache::new(state_dir),
            reports: rpt::Reports::new(state_dir, organization, contact),
        }
    }

    /// Count a session's set-up outcome toward a policy domain's MX in the day's ledger
    /// (`Shared::tls_outcome` also counts it in the metrics). The policy is reported as
    /// RFC 8460 has it: for `sts`, the policy in force from the cache (its lines and `mx`
    /// patterns); for `tlsa`, the TLSA records and the MX host; for `no-policy-found`, the MX
    /// host.
    pub fn record(&self, o: &TlsOutcome<'_>, resolver: Option<&crate::dns::Resolver>) {
        let Some(domain) = o.policy_domain else {
            return;
        };
        let mx_host = o
            .mx_host
            .map(|h| h.trim_end_matches('.').to_ascii_lowercase());
        let policy = match (o.policy, o.tlsa) {
            (PolicyType::Sts, _) => self.sts.policy_ref(domain),
            (PolicyType::Tlsa, Some(set)) => Some(PolicyRef {
                policy_type: PolicyType::Tlsa,
                strings: set.records().iter().map(|r| r.to_string()).collect(),
                mx_hosts: mx_host.iter().cloned().collect(),
            }),
            _ => None,
        }
        .unwrap_or_else(|| PolicyRef {
            policy_type: o.policy,
            strings: Vec::new(),
            mx_hosts: mx_host.iter().cloned().collect(),
        });
        let failure = o.result.map(|result| FailureKey {
            result,
            sending_ip: o.source,
            receiving_mx: mx_host,
            receiving_ip: o.mx_ip,
        });
        self.reports.record(domain, &policy, failure, resolver);
    }

    /// The figures status and metrics show, with the counters since start given.
    pub fn snapshot(
        &self,
        failures: Vec<(ResultType, u64)>,
        successes: Vec<(PolicyType, u64)>,
    ) -> TlsRptSnapshot {
        TlsRptSnapshot {
            failures,
            successes,
            domains: self
                .reports
                .today()
                .into_iter()
                .map(|d| greenarrow_proxy_proto::status::TlsRptDomain {
                    domain: d.domain,
                    successes: d.successes,
                    failures: d.failures,
                    rua: d.rua,
                })
                .collect(),
            sts_cached: self.sts.cached_domains() as u64,
        }
    }
}
