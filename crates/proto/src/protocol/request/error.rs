//! What is wrong with a request line: the parser's one error type.

use super::MAX_REQUEST_LINE;
use std::fmt;

/// What is wrong with a request that does not follow the protocol; its text goes to the MTA
/// in a `500 protocol_error` reply. Values quoted from the request are shown with `{:?}` (the
/// line is printable ASCII: anything else is refused first).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RequestError {
    /// Longer than [`MAX_REQUEST_LINE`].
    TooLong,
    /// A control character or a non-ASCII octet.
    NotText,
    /// An empty line.
    Empty,
    /// A verb other than AUTH, CONNECT, NOOP and QUIT (its first 32 characters).
    UnknownVerb(String),
    /// NOOP or QUIT with parameters.
    NoParameters(String),
    /// AUTH without a version and a secret.
    AuthUsage,
    /// AUTH with a version that is not a number.
    AuthVersion(String),
    /// AUTH with a secret that cannot be one ([`is_valid_secret`]).
    AuthSecret,
    /// A CONNECT word without `=`.
    NotKeyValue(String),
    /// A CONNECT parameter this protocol does not have.
    UnknownParameter(String),
    /// A CONNECT parameter given twice (its name in lower case).
    Twice(String),
    /// A required CONNECT parameter is missing (`source=`, `ehlo=`, `host= or domain=`).
    Missing(&'static str),
    /// Both `host=` and `domain=`.
    HostAndDomain,
    /// A CONNECT parameter's value is refused: `key`, the value, and what it is not.
    Invalid {
        key: &'static str,
        value: String,
        why: &'static str,
    },
    /// `tls=` with another word than the four policies.
    TlsPolicy(String),
    /// A yes/no parameter with another value.
    NotYesNo { key: &'static str, value: String },
    /// `wait=` that is not a duration within bounds (the `source()`).
    Wait {
        value: String,
        error: crate::duration::DurationError,
    },
}

impl fmt::Display for RequestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use crate::duration::DurationError;
        match self {
            RequestError::TooLong => {
                write!(f, "request line longer than {MAX_REQUEST_LINE} octets")
            }
            RequestError::NotText => {
                f.write_str("request contains control characters or non-ASCII octets")
            }
            RequestError::Empty => f.write_str("empty request"),
            RequestError::UnknownVerb(v) => write!(
                f,
                "unknown request {v:?}; expected AUTH, CONNECT, NOOP or QUIT"
            ),
            RequestError::NoParameters(verb) => write!(f, "{verb} takes no parameters"),
            RequestError::AuthUsage => f.write_str("usage: AUTH <version> <secret>"),
            RequestError::AuthVersion(v) => write!(f, "AUTH: bad protocol version {v:?}"),
            RequestError::AuthSecret => {
                f.write_str("usage: AUTH <version> <secret> (the secret contains no spaces)")
            }
            RequestError::NotKeyValue(w) => write!(f, "CONNECT: expected key=value, got {w:?}"),
            RequestError::UnknownParameter(k) => write!(f, "CONNECT: unknown parameter {k:?}"),
            RequestError::Twice(k) => write!(f, "CONNECT: parameter {k} given twice"),
            RequestError::Missing(what) => write!(f, "CONNECT: {what} is required"),
            RequestError::HostAndDomain => f.write_str("CONNECT: give host= or domain=, not both"),
            RequestError::Invalid { key, value, why } => {
                write!(f, "CONNECT: {key}={value:?} {why}")
            }
            RequestError::TlsPolicy(v) => write!(
                f,
                "CONNECT: tls={v:?}; expected none, opportunistic, required or verify"
            ),
            RequestError::NotYesNo { key, value } => {
                write!(f, "{key}: expected yes or no, got {value:?}")
            }
            // The reason is part of the text: an MTA sees only the reply line.
            RequestError::Wait {
                value,
                error: e @ DurationError::Syntax(_),
            } => write!(f, "CONNECT: wait={value:?}: {e}"),
            RequestError::Wait { value, error } => write!(f, "CONNECT: wait={value:?} {error}"),
        }
    }
}

impl std::error::Error for RequestError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            RequestError::Wait { error, .. } => Some(error),
            _ => None,
        }
    }
}

pub(super) fn invalid(key: &'static str, value: &str, why: &'static str) -> RequestError {
    RequestError::Invalid {
        key,
        value: value.to_string(),
        why,
    }
}
