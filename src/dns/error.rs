//! The error type of DNS resolution.

use std::fmt;

use super::Family;

/// Why a name could not be resolved into addresses to connect to.
///
/// [`DnsError::is_permanent`] tells whether asking again later can help: an MTA
/// bounces the message on a permanent error and defers it on a transient one.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DnsError {
    /// The name does not exist (NXDOMAIN). Permanent.
    NxDomain {
        /// The name that was looked up.
        name: String,
    },
    /// The domain publishes a null MX (RFC 7505): it accepts no mail. Permanent.
    NullMx {
        /// The recipient domain.
        domain: String,
    },
    /// The name exists but has no usable address of the wanted family (for a
    /// recipient domain: none of its mail exchangers has one). Permanent.
    NoAddress {
        /// The host or recipient domain that was looked up.
        name: String,
        /// The address family that was asked for.
        family: Family,
    },
    /// The lookup failed in a way that may go away: SERVFAIL, REFUSED, a
    /// timeout, a network error.
    Transient {
        /// The name that was looked up.
        name: String,
        /// What went wrong, for logs and SMTP replies.
        detail: String,
    },
    /// The name is not a syntactically valid host or domain name. Permanent.
    InvalidName {
        /// The name as it was given (possibly shortened for display).
        name: String,
        /// What is wrong with it.
        detail: String,
    },
    /// The resolver could not be set up (bad settings, unreadable resolv.conf,
    /// no async runtime).
    Setup(String),
}

impl DnsError {
    /// Whether retrying the same lookup later is pointless.
    ///
    /// `Transient` and `Setup` are not permanent; everything else is.
    pub fn is_permanent(&self) -> bool {
        match self {
            Self::NxDomain { .. }
            | Self::NullMx { .. }
            | Self::NoAddress { .. }
            | Self::InvalidName { .. } => true,
            Self::Transient { .. } | Self::Setup(_) => false,
        }
    }
}

impl fmt::Display for DnsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NxDomain { name } => write!(f, "{name}: no such domain (NXDOMAIN)"),
            Self::NullMx { domain } => {
                write!(
                    f,
                    "{domain}: domain does not accept mail (null MX, RFC 7505)"
                )
            }
            Self::NoAddress { name, family } => {
                write!(f, "{name}: no {family} address to connect to")
            }
            Self::Transient { name, detail } => {
                write!(f, "{name}: temporary DNS failure: {detail}")
            }
            Self::InvalidName { name, detail } => write!(f, "invalid name {name:?}: {detail}"),
            Self::Setup(detail) => write!(f, "DNS resolver setup failed: {detail}"),
        }
    }
}

impl std::error::Error for DnsError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permanence() {
        let name = String::from("example.test");
        assert!(DnsError::NxDomain { name: name.clone() }.is_permanent());
        assert!(DnsError::NullMx {
            domain: name.clone()
        }
        .is_permanent());
        assert!(DnsError::NoAddress {
            name: name.clone(),
            family: Family::V6
        }
        .is_permanent());
        assert!(DnsError::InvalidName {
            name: name.clone(),
            detail: String::new()
        }
        .is_permanent());
        assert!(!DnsError::Transient {
            name,
            detail: String::new()
        }
        .is_permanent());
        assert!(!DnsError::Setup(String::new()).is_permanent());
    }

    #[test]
    fn display_mentions_name_and_family() {
        let e = DnsError::NoAddress {
            name: "mx.example.test".into(),
            family: Family::V6,
        };
        assert_eq!(
            e.to_string(),
            "mx.example.test: no IPv6 address to connect to"
        );
        let e = DnsError::NullMx {
            domain: "example.test".into(),
        };
        assert!(e.to_string().contains("null MX"));
    }
}
