//! TLS reporting (RFC 8460) as data: the result types, the per-policy-domain, per-UTC-day
//! ledger of successes and failures, and the report JSON it becomes. Writing the files and
//! looking up `_smtp._tls` are the daemon's.

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn result_type_strings_are_distinct() {
        let mut names: Vec<&str> = ResultType::ALL.iter().map(|r| r.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), ResultType::ALL.len());
        assert_eq!(ResultType::TlsaInvalid.as_str(), "tlsa-invalid");
        assert_eq!(PolicyType::NoPolicyFound.as_str(), "no-policy-found");
    }
}
