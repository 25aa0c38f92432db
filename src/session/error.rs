//! [`EgressError`]: why the egress core could not give an MTA its MX connection — the access
//! policy, the destination, DNS, the connection caps, or the attempt itself (dial, set-up).
//! Typed until a front-end answers its MTA: [`EgressError::reply`] is the native protocol's
//! failure reply, which the SMTP-aware front-end turns into its `421`/`451`; the SOCKS5
//! front-end reads the type for its reply code.

use crate::caps::CapFailure;
use crate::dial::DialError;
use crate::dns::DnsError;
use crate::mx::{AttemptError, SetupError};
use greenarrow_proxy_proto::protocol::{Destination, Failure, FailureReply};
use greenarrow_proxy_proto::tls_policy::decide::Refusal;
use std::error::Error;
use std::fmt;
use std::net::IpAddr;

/// Why the egress core refused or failed a request.
#[derive(Debug)]
#[non_exhaustive]
pub enum EgressError {
    /// The operator drained the source address (`gaproxy drain`).
    SourceDrained { source: IpAddr },
    /// The source address is not one of the client's.
    SourceNotPermitted { source: IpAddr, client: String },
    /// The source address has left this host (`localaddr`).
    SourceGone { source: IpAddr },
    /// The destination port is not in `destination_ports`.
    PortNotPermitted { port: u16 },
    /// An IP destination of the other address family than the source.
    FamilyMismatch { dest: IpAddr, source: IpAddr },
    /// Every address of the destination is in `destination_deny`.
    AllDenied { dest: Destination, total: usize },
    /// Every address of the destination is drained by the operator.
    AllDrained { dest: Destination, total: usize },
    /// No DNS resolver could be set up at start.
    NoResolver,
    /// The name resolved, but to no address of the source's family.
    NoAddressOfFamily { dest: Destination },
    /// The DNS said no, or did not answer.
    Dns(DnsError),
    /// A connection cap held past the request's wait.
    Cap(CapFailure),
    /// The proxy is stopping (a wait at a cap was cut short).
    Stopping,
    /// No address to try.
    NoAddress,
    /// The dial failed (the last address's, when several were tried).
    Dial(DialError),
    /// The set-up of the connection failed (the last address's).
    Setup(SetupError),
    /// The domain's TLS policy (DANE, MTA-STS) refused the request for every MX host before
    /// any dial: a failed TLSA look-up, `tls=none` where TLS is required, an MX the MTA-STS
    /// policy does not list.
    Policy(Refusal),
}

impl fmt::Display for EgressError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EgressError::SourceDrained { source } => write!(
                f,
                "source address {source} is drained by the operator (gaproxy undrain)"
            ),
            EgressError::SourceNotPermitted { source, client } => write!(
                f,
                "source address {source} is not permitted for client {client}"
            ),
            EgressError::SourceGone { source } => {
                write!(f, "source address {source} has left this host")
            }
            EgressError::PortNotPermitted { port } => write!(
                f,
                "destination port {port} is not permitted (destination_ports)"
            ),
            EgressError::FamilyMismatch { dest, source } => write!(
                f,
                "destination {dest} and source {source} are of different address families"
            ),
            EgressError::AllDenied { dest, total } => write!(
                f,
                "{dest}: {total} address(es), all refused by destination_deny"
            ),
            EgressError::AllDrained { dest, total } => write!(
                f,
                "{dest}: {total} address(es), all drained by the operator (gaproxy undrain)"
            ),
            EgressError::NoResolver => {
                f.write_str("no DNS resolver is available (see the log at start-up)")
            }
            EgressError::NoAddressOfFamily { dest } => {
                write!(f, "{dest}: no address of the source's family")
            }
            EgressError::Stopping => f.write_str("the proxy is stopping"),
            EgressError::NoAddress => f.write_str("no address to try"),
            // The layers below speak for themselves.
            EgressError::Dns(e) => write!(f, "{e}"),
            EgressError::Cap(e) => write!(f, "{e}"),
            EgressError::Dial(e) => write!(f, "{e}"),
            EgressError::Setup(e) => write!(f, "{e}"),
            EgressError::Policy(e) => write!(f, "{e}"),
        }
    }
}

impl Error for EgressError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        match self {
            EgressError::Dns(e) => Some(e),
            EgressError::Dial(e) => Some(e),
            EgressError::Setup(e) => Some(e),
            _ => None,
        }
    }
}

impl From<AttemptError> for EgressError {
    fn from(e: AttemptError) -> EgressError {
        match e {
            AttemptError::Dial(e) => EgressError::Dial(e),
            AttemptError::Setup(e) => EgressError::Setup(e),
        }
    }
}

impl From<DialError> for EgressError {
    fn from(e: DialError) -> EgressError {
        EgressError::Dial(e)
    }
}

impl EgressError {
    /// The failure (reply code and tag) the MTA is told of.
    pub fn failure(&self) -> Failure {
        match self {
            EgressError::SourceDrained { .. } | EgressError::AllDrained { .. } => Failure::Drained,
            EgressError::SourceNotPermitted { .. } => Failure::SourceNotPermitted,
            EgressError::SourceGone { .. } => Failure::SourceNotLocal,
            EgressError::PortNotPermitted { .. }
            | EgressError::FamilyMismatch { .. }
            | EgressError::AllDenied { .. } => Failure::DestinationNotPermitted,
            EgressError::NoResolver => Failure::DnsTemporary,
            EgressError::NoAddressOfFamily { .. } => Failure::DnsNoAddress,
            EgressError::Dns(e) => match e {
                DnsError::NxDomain { .. } => Failure::DnsNxDomain,
                DnsError::NullMx { .. } => Failure::DnsNullMx,
                DnsError::NoAddress { .. } => Failure::DnsNoAddress,
                DnsError::InvalidName { .. } => Failure::ProtocolError,
                DnsError::Transient { .. } | DnsError::Setup(_) => Failure::DnsTemporary,
            },
            EgressError::Cap(_) => Failure::ConcurrencyLimit,
            EgressError::Stopping => Failure::Busy,
            EgressError::NoAddress => Failure::NetworkError,
            EgressError::Dial(e) => e.failure(),
            EgressError::Setup(e) => e.failure(),
            EgressError::Policy(e) => e.failure(),
        }
    }

    /// The native protocol's failure reply: the failure, the whole chain of causes as its
    /// text, and the MX's own reply lines when it said no. The other front-ends render theirs
    /// from it (`frontend::smtp::greet`) or from the type (SOCKS5).
    pub fn reply(&self) -> FailureReply {
        let mx_lines = match self {
            EgressError::Setup(e) => e.mx_lines(),
            _ => Vec::new(),
        };
        FailureReply::new(self.failure(), chain(self)).with_mx_lines(mx_lines)
    }

    /// Whether the access policy refused it (source, port or destination not permitted), not
    /// the destination or the network.
    pub fn is_policy(&self) -> bool {
        matches!(
            self,
            EgressError::SourceNotPermitted { .. }
                | EgressError::PortNotPermitted { .. }
                | EgressError::FamilyMismatch { .. }
                | EgressError::AllDenied { .. }
        )
    }
}

/// `e` and its causes, `: ` between them. The proxy's own layers (this error, the attempt,
/// the dial, the set-up) say only their own part, so the chain is followed through them; the
/// first foreign cause (a socket, TLS, DNS or read error) is taken as complete. A cause shown
/// by its wrapper already (a transparent layer) is not repeated.
pub fn chain(e: &(dyn Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut current = e;
    while own_layer(current) {
        let Some(cause) = current.source() else {
            break;
        };
        let shown = cause.to_string();
        if !text.ends_with(&shown) {
            text.push_str(": ");
            text.push_str(&shown);
        }
        current = cause;
    }
    text
}

fn own_layer(e: &(dyn Error + 'static)) -> bool {
    e.is::<EgressError>() || e.is::<AttemptError>() || e.is::<SetupError>() || e.is::<DialError>()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mx::error::Stage;
    use greenarrow_proxy_net::bufconn::ReadError;
    use std::io;
    use std::net::SocketAddr;

    #[test]
    fn the_reply_text_is_the_chain_of_causes() {
        let dest: SocketAddr = "192.0.2.25:25".parse().unwrap();
        let e = EgressError::Dial(DialError::Network {
            dest,
            error: io::Error::from_raw_os_error(nix::libc::ENETUNREACH),
        });
        let f = e.reply();
        assert_eq!(f.failure, Failure::NetworkError);
        assert_eq!(
            f.text,
            format!(
                "cannot connect to 192.0.2.25:25: {}",
                io::Error::from_raw_os_error(nix::libc::ENETUNREACH)
            )
        );
        let e = EgressError::Setup(SetupError::Io {
            stage: Stage::Banner,
            error: ReadError::Timeout,
        });
        assert_eq!(
            e.reply().text,
            "waiting for the MX banner: timed out waiting for data"
        );
        assert_eq!(e.failure(), Failure::MxSetupFailed);
        // Every layer is reachable by source(), down to the socket error.
        let e = EgressError::Dial(DialError::SourceNotLocal {
            source: "192.0.2.1".parse().unwrap(),
            error: io::Error::from_raw_os_error(nix::libc::EADDRNOTAVAIL),
        });
        let dial = e.source().unwrap();
        assert!(dial.is::<DialError>());
        assert!(dial.source().unwrap().is::<io::Error>());
        assert_eq!(e.failure(), Failure::SourceNotLocal);
    }

    #[test]
    fn policy_refusals_are_told_apart() {
        let source: IpAddr = "192.0.2.1".parse().unwrap();
        assert!(EgressError::PortNotPermitted { port: 26 }.is_policy());
        assert!(EgressError::SourceNotPermitted {
            source,
            client: "c".into()
        }
        .is_policy());
        assert!(!EgressError::SourceGone { source }.is_policy());
        assert!(!EgressError::NoResolver.is_policy());
    }
}
