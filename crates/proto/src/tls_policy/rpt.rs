//! TLS reporting (RFC 8460) as data: the result types, the per-policy-domain, per-UTC-day
//! ledger of successes and failures, and the report JSON it becomes. Writing the files and
//! looking up `_smtp._tls` are the daemon's.

use serde::Serialize;
use std::collections::BTreeMap;
use std::net::IpAddr;

/// The policy a session was evaluated under, as RFC 8460 section 4.4 names it (`policy-type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PolicyType {
    /// DANE TLSA records (`tlsa`).
    Tlsa,
    /// An MTA-STS policy (`sts`).
    Sts,
    /// Neither was found (`no-policy-found`).
    NoPolicyFound,
}

impl PolicyType {
    /// The RFC 8460 string.
    pub fn as_str(self) -> &'static str {
        match self {
            PolicyType::Tlsa => "tlsa",
            PolicyType::Sts => "sts",
            PolicyType::NoPolicyFound => "no-policy-found",
        }
    }
}

/// A failed session's result type (RFC 8460 section 4.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ResultType {
    // Negotiation failures (4.3.1).
    /// The MX did not offer STARTTLS.
    StarttlsNotSupported,
    /// The certificate does not match the MX host name.
    CertificateHostMismatch,
    /// The certificate has expired.
    CertificateExpired,
    /// The certificate does not chain to a trusted root.
    CertificateNotTrusted,
    /// Any other failure to negotiate or validate.
    ValidationFailure,
    // Policy failures, DANE (4.3.2.1).
    /// No usable TLSA record, or none matched.
    TlsaInvalid,
    /// The TLSA look-up failed DNSSEC validation (bogus) or could not be made.
    DnssecInvalid,
    /// TLSA records were published but TLS could not be used at all.
    DaneRequired,
    // Policy failures, MTA-STS (4.3.2.2).
    /// The policy could not be fetched.
    StsPolicyFetchError,
    /// The policy was fetched but is not valid.
    StsPolicyInvalid,
    /// The MX's certificate is not WebPKI-valid for its name (or the MX matched no pattern).
    StsWebpkiInvalid,
}

impl ResultType {
    /// Every result type, in RFC order.
    pub const ALL: [ResultType; 11] = [
        ResultType::StarttlsNotSupported,
        ResultType::CertificateHostMismatch,
        ResultType::CertificateExpired,
        ResultType::CertificateNotTrusted,
        ResultType::ValidationFailure,
        ResultType::TlsaInvalid,
        ResultType::DnssecInvalid,
        ResultType::DaneRequired,
        ResultType::StsPolicyFetchError,
        ResultType::StsPolicyInvalid,
        ResultType::StsWebpkiInvalid,
    ];

    /// The RFC 8460 string (`result-type`).
    pub fn as_str(self) -> &'static str {
        match self {
            ResultType::StarttlsNotSupported => "starttls-not-supported",
            ResultType::CertificateHostMismatch => "certificate-host-mismatch",
            ResultType::CertificateExpired => "certificate-expired",
            ResultType::CertificateNotTrusted => "certificate-not-trusted",
            ResultType::ValidationFailure => "validation-failure",
            ResultType::TlsaInvalid => "tlsa-invalid",
            ResultType::DnssecInvalid => "dnssec-invalid",
            ResultType::DaneRequired => "dane-required",
            ResultType::StsPolicyFetchError => "sts-policy-fetch-error",
            ResultType::StsPolicyInvalid => "sts-policy-invalid",
            ResultType::StsWebpkiInvalid => "sts-webpki-invalid",
        }
    }
}

/// A UTC day, as days since 1970-01-01.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Day(pub u64);

impl Day {
    /// The day of a time given in seconds since the epoch.
    pub fn of(unix_secs: u64) -> Day {
        Day(unix_secs / 86_400)
    }

    /// Its first second, since the epoch.
    pub fn start(self) -> u64 {
        self.0 * 86_400
    }

    /// (year, month, day) in the proleptic Gregorian calendar (Howard Hinnant's
    /// `civil_from_days`).
    pub fn ymd(self) -> (u64, u32, u32) {
        let z = self.0 + 719_468;
        let era = z / 146_097;
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
        let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
        let y = yoe + era * 400 + u64::from(m <= 2);
        (y, m, d)
    }

    /// `YYYY-MM-DD`.
    pub fn iso(self) -> String {
        let (y, m, d) = self.ymd();
        format!("{y:04}-{m:02}-{d:02}")
    }
}

/// The policy a session was evaluated under, as reported (RFC 8460 section 4.4 `policy`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PolicyRef {
    pub policy_type: PolicyType,
    /// For `sts`, the policy file's lines; for `tlsa`, the TLSA records; empty for
    /// `no-policy-found`.
    pub strings: Vec<String>,
    /// For `sts`, the policy's `mx` patterns; for `tlsa` (and `no-policy-found`), the MX host.
    pub mx_hosts: Vec<String>,
}

/// What makes failures one `failure-details` row.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FailureKey {
    pub result: ResultType,
    pub sending_ip: Option<IpAddr>,
    pub receiving_mx: Option<String>,
    pub receiving_ip: Option<IpAddr>,
}

/// At most this many domains are counted per day; sessions for others are only counted in
/// [`Ledger::dropped`] (the ledger's memory is bounded whatever the traffic).
pub const MAX_DOMAINS_PER_DAY: usize = 10_000;
/// At most this many policies per domain and day (a policy changing all day long).
pub const MAX_POLICIES_PER_DOMAIN: usize = 16;
/// At most this many `failure-details` rows per policy; further distinct rows add to the
/// failure count only.
pub const MAX_FAILURE_ROWS: usize = 100;

/// The counts of one policy of one domain on one day.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub successes: u64,
    pub failures: u64,
    pub details: BTreeMap<FailureKey, u64>,
}

/// One domain's day: its policies and their counts.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DomainDay {
    pub policies: BTreeMap<PolicyRef, Counts>,
}

impl DomainDay {
    /// (successful, failed) sessions over all policies.
    pub fn totals(&self) -> (u64, u64) {
        self.policies
            .values()
            .fold((0, 0), |(s, f), c| (s + c.successes, f + c.failures))
    }

    /// The RFC 8460 report of this domain's day.
    pub fn report(&self, day: Day, domain: &str, organization: &str, contact: &str) -> Report {
        let date = day.iso();
        Report {
            organization_name: organization.to_string(),
            date_range: DateRange {
                start_datetime: format!("{date}T00:00:00Z"),
                end_datetime: format!("{date}T23:59:59Z"),
            },
            contact_info: contact.to_string(),
            report_id: format!("{date}T00:00:00Z_{domain}@{organization}"),
            policies: self
                .policies
                .iter()
                .map(|(p, c)| PolicyReport {
                    policy: PolicyDesc {
                        policy_type: p.policy_type.as_str(),
                        policy_string: p.strings.clone(),
                        policy_domain: domain.to_string(),
                        mx_host: p.mx_hosts.clone(),
                    },
                    summary: Summary {
                        total_successful_session_count: c.successes,
                        total_failure_session_count: c.failures,
                    },
                    failure_details: c
                        .details
                        .iter()
                        .map(|(k, n)| FailureDetail {
                            result_type: k.result.as_str(),
                            sending_mta_ip: k.sending_ip.map(|ip| ip.to_string()),
                            receiving_mx_hostname: k.receiving_mx.clone(),
                            receiving_ip: k.receiving_ip.map(|ip| ip.to_string()),
                            failed_session_count: *n,
                        })
                        .collect(),
                })
                .collect(),
        }
    }
}

/// Per UTC day and policy domain, the sessions' outcomes (no I/O, time given). The daemon
/// holds one under a mutex, records each set-up outcome and writes a day's reports when it
/// closes ([`Ledger::take_before`]).
#[derive(Clone, Debug, Default)]
pub struct Ledger {
    days: BTreeMap<Day, BTreeMap<String, DomainDay>>,
    dropped: u64,
}

impl Ledger {
    /// Count one session's outcome: a success when `failure` is `None`. The domain is
    /// lower-cased, without a trailing dot.
    pub fn record(
        &mut self,
        day: Day,
        domain: &str,
        policy: &PolicyRef,
        failure: Option<FailureKey>,
    ) {
        let domain = domain.trim_end_matches('.').to_ascii_lowercase();
        let domains = self.days.entry(day).or_default();
        if !domains.contains_key(&domain) && domains.len() >= MAX_DOMAINS_PER_DAY {
            self.dropped += 1;
            return;
        }
        let dd = domains.entry(domain).or_default();
        if !dd.policies.contains_key(policy) && dd.policies.len() >= MAX_POLICIES_PER_DOMAIN {
            self.dropped += 1;
            return;
        }
        let counts = dd.policies.entry(policy.clone()).or_default();
        match failure {
            None => counts.successes += 1,
            Some(key) => {
                counts.failures += 1;
                if let Some(n) = counts.details.get_mut(&key) {
                    *n += 1;
                } else if counts.details.len() < MAX_FAILURE_ROWS {
                    counts.details.insert(key, 1);
                }
            }
        }
    }

    /// Sessions not counted because a bound was reached.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// One day's domains.
    pub fn day(&self, day: Day) -> impl Iterator<Item = (&str, &DomainDay)> {
        self.days
            .get(&day)
            .into_iter()
            .flat_map(|d| d.iter().map(|(k, v)| (k.as_str(), v)))
    }

    /// Remove and return the days before `today` (closed days, to be written out).
    pub fn take_before(&mut self, today: Day) -> Vec<(Day, BTreeMap<String, DomainDay>)> {
        let open = self.days.split_off(&today);
        std::mem::replace(&mut self.days, open)
            .into_iter()
            .collect()
    }
}

/// The RFC 8460 section 4.4 report (serialised with its field names).
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub struct Report {
    pub organization_name: String,
    pub date_range: DateRange,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub contact_info: String,
    pub report_id: String,
    pub policies: Vec<PolicyReport>,
}

/// `date-range`.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub struct DateRange {
    pub start_datetime: String,
    pub end_datetime: String,
}

/// One entry of `policies`.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub struct PolicyReport {
    pub policy: PolicyDesc,
    pub summary: Summary,
    pub failure_details: Vec<FailureDetail>,
}

/// `policy`.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub struct PolicyDesc {
    pub policy_type: &'static str,
    pub policy_string: Vec<String>,
    pub policy_domain: String,
    pub mx_host: Vec<String>,
}

/// `summary`.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub struct Summary {
    pub total_successful_session_count: u64,
    pub total_failure_session_count: u64,
}

/// One `failure-details` row.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub struct FailureDetail {
    pub result_type: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sending_mta_ip: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub receiving_mx_hostname: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub receiving_ip: Option<String>,
    pub failed_session_count: u64,
}

/// The labels the reporting TXT record is under: `_smtp._tls.<domain>`.
pub const TXT_PREFIX: &str = "_smtp._tls";

/// A `_smtp._tls` TXT record's reporting addresses (RFC 8460 section 3): `v=TLSRPTv1;
/// rua=mailto:a@b,https://c`. `None` unless exactly one record starts with `v=TLSRPTv1`.
pub fn parse_rua<S: AsRef<[u8]>>(records: &[S]) -> Option<Vec<String>> {
    let mut found = records
        .iter()
        .filter_map(|r| std::str::from_utf8(r.as_ref()).ok())
        .filter(|r| r.starts_with("v=TLSRPTv1"));
    let record = found.next()?;
    if found.next().is_some() {
        return None;
    }
    let rua = record
        .split(';')
        .skip(1)
        .map(|f| f.trim_matches([' ', '\t']))
        .find_map(|f| f.strip_prefix("rua="))?;
    let uris: Vec<String> = rua
        .split(',')
        .map(|u| u.trim_matches([' ', '\t']).to_string())
        .filter(|u| u.starts_with("mailto:") || u.starts_with("https:"))
        .collect();
    (!uris.is_empty()).then_some(uris)
}

#[cfg(test)]
#[path = "rpt_tests.rs"]
mod tests;
