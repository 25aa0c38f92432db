//! Why one attempt at an MX address failed: the dial ([`DialError`]) or the set-up on the
//! connection ([`SetupError`]: banner, EHLO/HELO, STARTTLS, the TLS handshake). Typed up to the
//! front-end, which renders them (`session::EgressError::reply`); the retry decision (another
//! address of the destination, a plaintext fallback) is made here on the type, not on a code.

use crate::dial::DialError;
use greenarrow_proxy_net::bufconn::ReadError;
use greenarrow_proxy_net::tls::TlsError;
use greenarrow_proxy_proto::protocol::{reply_lines, Failure, TlsPolicy};
use greenarrow_proxy_proto::smtp::Reply;
use greenarrow_proxy_proto::tls_policy::rpt::{PolicyType, ResultType};
use std::error::Error;
use std::fmt;
use std::io;
use std::net::SocketAddr;

/// Where in the set-up a read or a send failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Stage {
    /// Sending a command (EHLO, HELO, STARTTLS).
    Sending,
    /// Waiting for the banner.
    Banner,
    /// Waiting for the reply to a command.
    Reply,
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Stage::Sending => "sending to the MX",
            Stage::Banner => "waiting for the MX banner",
            Stage::Reply => "waiting for the MX reply",
        })
    }
}

/// Why the set-up of a connected MX failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum SetupError {
    /// The socket's local address could not be read (its `source()`).
    LocalAddr(io::Error),
    /// A read or a send failed: closed, timed out, malformed (the `source()`).
    Io { stage: Stage, error: ReadError },
    /// The MX sent bytes after its `220` to STARTTLS (CVE-2011-0411).
    AfterStartTls { octets: usize },
    /// The set-up machine asked for TLS on a connection that has it.
    TlsTwice,
    /// The TLS handshake failed (the `source()`, shown as the TLS error itself); under
    /// `tls=verify` a refused certificate is its own failure.
    Tls { error: TlsError, policy: TlsPolicy },
    /// The banner was not 220.
    BannerRejected { mx: SocketAddr, reply: Reply },
    /// EHLO and then HELO were refused (the last reply).
    EhloRejected {
        mx: SocketAddr,
        ehlo: String,
        reply: Reply,
    },
    /// The MX said 421 at some step.
    Closing { mx: SocketAddr, reply: Reply },
    /// TLS is required but the MX does not offer it or refused STARTTLS (why).
    TlsNotOffered(String),
    /// A reply that answers nothing asked (a 3xx to EHLO, a 250 to STARTTLS).
    Unexpected { mx: SocketAddr, reply: Reply },
    /// Bytes nobody asked for arrived before the next command: the MX is out of step.
    OutOfStep { mx: SocketAddr, octets: usize },
    /// The machine finished without a banner or a greeting.
    EndedEarly,
    /// TLS could not be had as the domain's policy (DANE: `Tlsa`, MTA-STS: `Sts`) requires:
    /// STARTTLS not offered, the handshake or the certificate failed (the `error` inside).
    /// Nothing but the set-up was sent to the MX.
    Policy {
        policy: PolicyType,
        error: Box<SetupError>,
    },
}

impl fmt::Display for SetupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SetupError::LocalAddr(_) => f.write_str("local address"),
            SetupError::Io { stage, .. } => write!(f, "{stage}"),
            SetupError::AfterStartTls { octets } => write!(
                f,
                "the MX sent {octets} octets after its 220 reply to STARTTLS (possible command injection, CVE-2011-0411)"
            ),
            SetupError::TlsTwice => f.write_str("TLS requested twice"),
            SetupError::Tls { error, .. } => write!(f, "{error}"),
            SetupError::BannerRejected { mx, .. } => {
                write!(f, "{mx} rejected the connection in its banner")
            }
            SetupError::EhloRejected { mx, ehlo, .. } => {
                write!(f, "{mx} rejected EHLO and HELO {ehlo}")
            }
            SetupError::Closing { mx, .. } => write!(f, "{mx} closed the session during set-up"),
            SetupError::TlsNotOffered(note) => f.write_str(note),
            SetupError::Unexpected { mx, .. } => write!(f, "{mx} gave an unexpected reply"),
            SetupError::OutOfStep { mx, octets } => write!(
                f,
                "{mx} sent {octets} octets nobody asked for during set-up (out of step)"
            ),
            SetupError::EndedEarly => f.write_str("set-up ended early"),
            SetupError::Policy { policy, .. } => f.write_str(match policy {
                PolicyType::Tlsa => "DANE: the MX publishes DNSSEC-signed TLSA records",
                PolicyType::Sts => "MTA-STS: the domain's policy is in enforce mode",
                PolicyType::NoPolicyFound => "TLS policy",
            }),
        }
    }
}

impl Error for SetupError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        match self {
            SetupError::LocalAddr(e) => Some(e),
            SetupError::Io { error, .. } => Some(error),
            SetupError::Tls { error, .. } => Some(error),
            SetupError::Policy { error, .. } => Some(&**error),
            _ => None,
        }
    }
}

impl SetupError {
    /// The failure the MTA is told of.
    pub fn failure(&self) -> Failure {
        match self {
            SetupError::LocalAddr(_) => Failure::NetworkError,
            SetupError::Io { .. }
            | SetupError::AfterStartTls { .. }
            | SetupError::Closing { .. }
            | SetupError::Unexpected { .. }
            | SetupError::OutOfStep { .. }
            | SetupError::EndedEarly => Failure::MxSetupFailed,
            SetupError::TlsTwice => Failure::TlsFailed,
            SetupError::Tls { error, policy } => {
                if *policy == TlsPolicy::Verify && matches!(error, TlsError::Certificate(..)) {
                    Failure::TlsVerifyFailed
                } else {
                    Failure::TlsFailed
                }
            }
            SetupError::BannerRejected { reply, .. } => Failure::BannerRejected {
                permanent: reply.is_permanent(),
            },
            SetupError::EhloRejected { reply, .. } => Failure::EhloRejected {
                permanent: reply.is_permanent(),
            },
            SetupError::TlsNotOffered(_) => Failure::TlsNotOffered,
            SetupError::Policy { policy, error } => match (policy, &**error) {
                (
                    PolicyType::Tlsa,
                    SetupError::Tls {
                        error: TlsError::Dane(_),
                        ..
                    },
                ) => Failure::DaneMismatch,
                (PolicyType::Tlsa, _) => Failure::DaneRequired,
                (PolicyType::Sts, _) => Failure::StsRequired,
                (PolicyType::NoPolicyFound, e) => e.failure(),
            },
        }
    }

    /// Under `policy`, a TLS failure becomes [`SetupError::Policy`] (its own tags); other
    /// failures, and any under no policy, stay as they are.
    pub fn under(self, policy: PolicyType) -> SetupError {
        match self {
            SetupError::TlsNotOffered(_) | SetupError::Tls { .. }
                if policy != PolicyType::NoPolicyFound =>
            {
                SetupError::Policy {
                    policy,
                    error: Box::new(self),
                }
            }
            other => other,
        }
    }

    /// The RFC 8460 result type of a TLS failure (none for failures that are not about TLS).
    pub fn result_type(&self) -> Option<ResultType> {
        match self {
            SetupError::TlsNotOffered(_) => Some(ResultType::StarttlsNotSupported),
            SetupError::Tls { error, .. } => Some(match error {
                TlsError::Dane(f) => f.result_type(),
                TlsError::Certificate(refusal) => match refusal.reason() {
                    Some(greenarrow_proxy_net::tls::CertificateError::Expired)
                    | Some(greenarrow_proxy_net::tls::CertificateError::ExpiredContext {
                        ..
                    }) => ResultType::CertificateExpired,
                    Some(greenarrow_proxy_net::tls::CertificateError::NotValidForName)
                    | Some(greenarrow_proxy_net::tls::CertificateError::NotValidForNameContext {
                        ..
                    }) => ResultType::CertificateHostMismatch,
                    Some(greenarrow_proxy_net::tls::CertificateError::UnknownIssuer) => {
                        ResultType::CertificateNotTrusted
                    }
                    _ => ResultType::ValidationFailure,
                },
                _ => ResultType::ValidationFailure,
            }),
            SetupError::Policy { policy, error } => {
                let inner = error.result_type();
                match (policy, &**error) {
                    // RFC 8460: under MTA-STS a certificate that is not WebPKI-valid.
                    (
                        PolicyType::Sts,
                        SetupError::Tls {
                            error: TlsError::Certificate(_),
                            ..
                        },
                    ) => Some(ResultType::StsWebpkiInvalid),
                    _ => inner,
                }
            }
            _ => None,
        }
    }

    /// The MX's own reply, when it said no: its lines, without line endings.
    pub fn mx_lines(&self) -> Vec<Vec<u8>> {
        match self {
            SetupError::BannerRejected { reply, .. }
            | SetupError::EhloRejected { reply, .. }
            | SetupError::Closing { reply, .. }
            | SetupError::Unexpected { reply, .. } => reply_lines(reply.raw()),
            _ => Vec::new(),
        }
    }

    /// Whether another address of the destination may do better: the connection or the MX
    /// broke, or a banner refused for now; not a refusal that every MX of the domain would
    /// repeat (EHLO, TLS).
    pub fn worth_another_address(&self) -> bool {
        match self {
            // RFC 7672 section 2.2: an MX failing DANE is skipped for the next one.
            SetupError::Policy { .. } => true,
            SetupError::LocalAddr(_)
            | SetupError::Io { .. }
            | SetupError::AfterStartTls { .. }
            | SetupError::Closing { .. }
            | SetupError::Unexpected { .. }
            | SetupError::OutOfStep { .. }
            | SetupError::EndedEarly => true,
            SetupError::BannerRejected { reply, .. } => !reply.is_permanent(),
            SetupError::TlsTwice
            | SetupError::Tls { .. }
            | SetupError::EhloRejected { .. }
            | SetupError::TlsNotOffered(_) => false,
        }
    }
}

/// Why one attempt at an MX address failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum AttemptError {
    Dial(DialError),
    Setup(SetupError),
}

impl fmt::Display for AttemptError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AttemptError::Dial(e) => write!(f, "{e}"),
            AttemptError::Setup(e) => write!(f, "{e}"),
        }
    }
}

impl Error for AttemptError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        match self {
            AttemptError::Dial(e) => Some(e),
            AttemptError::Setup(e) => Some(e),
        }
    }
}

impl AttemptError {
    /// Whether another address of the destination may do better.
    pub fn worth_another_address(&self) -> bool {
        match self {
            AttemptError::Dial(e) => e.worth_another_address(),
            AttemptError::Setup(e) => e.worth_another_address(),
        }
    }
}

impl From<SetupError> for AttemptError {
    fn from(e: SetupError) -> AttemptError {
        AttemptError::Setup(e)
    }
}

impl From<DialError> for AttemptError {
    fn from(e: DialError) -> AttemptError {
        AttemptError::Dial(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(raw: &str) -> Reply {
        greenarrow_proxy_proto::smtp::parse_reply(raw.as_bytes(), &Default::default())
            .unwrap()
            .unwrap()
            .0
    }

    #[test]
    fn the_retry_decision_follows_the_type() {
        let mx: SocketAddr = "192.0.2.25:25".parse().unwrap();
        let banner = |raw| SetupError::BannerRejected {
            mx,
            reply: reply(raw),
        };
        assert!(banner("421 4.3.2 busy\r\n").worth_another_address());
        assert!(!banner("554 5.7.1 go away\r\n").worth_another_address());
        assert!(SetupError::OutOfStep { mx, octets: 3 }.worth_another_address());
        assert!(!SetupError::TlsNotOffered("no".into()).worth_another_address());
        let dial = |e| AttemptError::Dial(e).worth_another_address();
        assert!(dial(DialError::Refused { dest: mx }));
        assert!(!dial(DialError::FamilyMismatch {
            source: "::1".parse().unwrap(),
            dest: mx
        }));
        assert!(!dial(DialError::SourceNotLocal {
            source: "192.0.2.1".parse().unwrap(),
            error: io::Error::from_raw_os_error(nix::libc::EADDRNOTAVAIL),
        }));
    }

    #[test]
    fn a_refused_certificate_is_its_own_failure_only_under_verify() {
        let tls = |policy| SetupError::Tls {
            error: TlsError::Certificate(greenarrow_proxy_net::tls::CertRefusal::NoTrustAnchors),
            policy,
        };
        assert_eq!(tls(TlsPolicy::Verify).failure(), Failure::TlsVerifyFailed);
        assert_eq!(tls(TlsPolicy::Required).failure(), Failure::TlsFailed);
        let e = tls(TlsPolicy::Verify);
        assert!(e.source().is_some_and(|s| s.is::<TlsError>()));
    }

    #[test]
    fn tls_failures_under_a_policy_get_its_tags_and_result_types() {
        use greenarrow_proxy_net::tls::dane::DaneFailure;
        let not_offered = || SetupError::TlsNotOffered("the MX does not offer STARTTLS".into());
        let dane = |f: DaneFailure| SetupError::Tls {
            error: TlsError::Dane(Box::new(f)),
            policy: TlsPolicy::Required,
        };
        let cert = || SetupError::Tls {
            error: TlsError::Certificate(greenarrow_proxy_net::tls::CertRefusal::NoTrustAnchors),
            policy: TlsPolicy::Verify,
        };
        let cases = [
            (
                not_offered().under(PolicyType::Tlsa),
                Failure::DaneRequired,
                ResultType::StarttlsNotSupported,
            ),
            (
                dane(DaneFailure::NoMatch).under(PolicyType::Tlsa),
                Failure::DaneMismatch,
                ResultType::TlsaInvalid,
            ),
            (
                not_offered().under(PolicyType::Sts),
                Failure::StsRequired,
                ResultType::StarttlsNotSupported,
            ),
            (
                cert().under(PolicyType::Sts),
                Failure::StsRequired,
                ResultType::StsWebpkiInvalid,
            ),
            // No policy: the ordinary failures.
            (
                not_offered().under(PolicyType::NoPolicyFound),
                Failure::TlsNotOffered,
                ResultType::StarttlsNotSupported,
            ),
        ];
        for (e, failure, result) in cases {
            assert_eq!(e.failure(), failure, "{e}");
            assert_eq!(e.result_type(), Some(result), "{e}");
        }
        let e = not_offered().under(PolicyType::Tlsa);
        assert!(e.worth_another_address(), "RFC 7672: the next MX host");
        assert!(chain_text(&e).contains("does not offer STARTTLS"));
        // Not a TLS failure: unchanged, and no result type.
        let mx: SocketAddr = "192.0.2.25:25".parse().unwrap();
        let e = SetupError::OutOfStep { mx, octets: 1 }.under(PolicyType::Tlsa);
        assert_eq!(e.failure(), Failure::MxSetupFailed);
        assert_eq!(e.result_type(), None);
    }

    fn chain_text(e: &(dyn Error + 'static)) -> String {
        let mut text = e.to_string();
        let mut cur = e.source();
        while let Some(c) = cur {
            text.push_str(": ");
            text.push_str(&c.to_string());
            cur = c.source();
        }
        text
    }

    #[test]
    fn the_mx_reply_travels_with_the_error() {
        let mx: SocketAddr = "192.0.2.25:25".parse().unwrap();
        let e = SetupError::EhloRejected {
            mx,
            ehlo: "mta.test".into(),
            reply: reply("550-no\r\n550 never\r\n"),
        };
        assert_eq!(
            e.to_string(),
            "192.0.2.25:25 rejected EHLO and HELO mta.test"
        );
        assert_eq!(
            e.mx_lines(),
            vec![b"550-no".to_vec(), b"550 never".to_vec()]
        );
        assert_eq!(e.failure(), Failure::EhloRejected { permanent: true });
    }
}
