//! The one home for logging what went wrong, whatever the front-end:
//!
//! - [`request_failed`]: a request (CONNECT, or a front-end's target) that could not be served.
//!   Problems the operator must see ([`is_problem`]: the source address, permissions, the
//!   network) are warnings always; answers of the world (DNS, an MX's banner, EHLO or TLS) are
//!   per-session events, logged at info level when `log_verbose` is on.
//! - [`peer_warning`]: something an unauthenticated peer did (failed AUTH or TLS handshake,
//!   refused by `allow_from`, ...): a warning, rate-limited per address and kind ([`limit`]).
//!
//! Every line carries the key fields in its text (`mta=`, `client=`, `source=`, `mx=`,
//! `tag=`) as well as structured journal fields, so that `journalctl` and fail2ban see the
//! peer address.
//!
//! [`limit`]: super::limit

use super::limit::{Limiter, Verdict};
use greenarrow_proxy_proto::protocol::{ConnectRequest, Destination, Failure, FailureReply};
use log::Level;
use parking_lot::Mutex;
use std::fmt;
use std::net::SocketAddr;
use std::sync::LazyLock;
use std::time::Instant;

/// Whether a failed request is a problem the operator must see (logged as a warning always)
/// rather than an answer of the world, logged only with `log_verbose`.
pub fn is_problem(f: Failure) -> bool {
    use Failure::*;
    match f {
        SourceNotPermitted
        | DestinationNotPermitted
        | SourceNotLocal
        | ConnectRefused
        | ConnectTimeout
        | NetworkError
        | AuthFailed
        | AuthTimeout
        | ProtocolError
        | ConcurrencyLimit
        // A certificate no TLSA record matches, an MX the MTA-STS policy does not list: what
        // an active attacker would cause, so shown.
        | DaneMismatch
        | StsMxMismatch => true,
        Busy
        | AuthRequired
        | MxSetupFailed
        | BannerRejected { .. }
        | EhloRejected { .. }
        | TlsNotOffered
        | TlsFailed
        | TlsVerifyFailed
        | DnsTemporary
        | DnsNxDomain
        | DnsNoAddress
        | DnsNullMx
        | Drained
        | DaneRequired
        | TlsaLookupFailed
        | StsRequired => false,
        // `Failure` is #[non_exhaustive] (crates/proto): one this daemon does not know yet is
        // shown to the operator rather than hidden.
        _ => true,
    }
}

/// The level a failed request is logged at: `None` when it is not logged.
pub fn request_level(f: Failure, verbose: bool) -> Option<Level> {
    if is_problem(f) {
        Some(Level::Warn)
    } else {
        verbose.then_some(Level::Info)
    }
}

/// The `mx=` field of a request: the destination as asked, with its port, without spaces
/// (`192.0.2.1:25`, `[2001:db8::1]:25`, `mx.example.com:25`, `example.com:25` for a domain).
pub struct AskedMx<'a>(pub &'a Destination, pub u16);

impl fmt::Display for AskedMx<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Destination::Ip(ip) => write!(f, "{}", SocketAddr::new(*ip, self.1)),
            Destination::Host(h) | Destination::Domain(h) => write!(f, "{h}:{}", self.1),
        }
    }
}

/// The failure's text with the MX's reply lines, without the code and tag (the tag is a field).
pub fn failure_text(f: &FailureReply) -> String {
    let mut text = f.text.clone();
    for l in &f.mx_lines {
        text.push_str(&format!(" [MX: {}]", String::from_utf8_lossy(l)));
    }
    text
}

/// Log a request that could not be served: `what` says by whom (`connect failed`,
/// `SOCKS5 front-end: refused`, ...), `client` is the client's name.
pub fn request_failed(
    verbose: bool,
    what: &str,
    mta: SocketAddr,
    client: &str,
    req: &ConnectRequest,
    f: &FailureReply,
) {
    let Some(level) = request_level(f.failure, verbose) else {
        return;
    };
    log::log!(
        level,
        mta:% = mta,
        client = client,
        source:% = req.source,
        mx:% = AskedMx(&req.dest, req.port),
        tag = f.failure.code().tag;
        "{what}: {}",
        failure_text(f)
    );
}

/// What an unauthenticated peer did, as a warning's kind (its `tag=`) and rate-limit key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeerEvent {
    /// A wrong secret (native AUTH or SOCKS5 password).
    AuthFailed,
    /// The TLS handshake with the MTA failed.
    MtaTlsFailed,
    /// Not in `allow_from`.
    NotAllowed,
    /// `max_sessions_per_ip` reached.
    PerIpLimit,
    /// A PROXY header that could not be parsed.
    ProxyHeader,
}

impl PeerEvent {
    /// The `tag=` field.
    pub fn tag(self) -> &'static str {
        match self {
            PeerEvent::AuthFailed => "auth_failed",
            PeerEvent::MtaTlsFailed => "mta_tls_failed",
            PeerEvent::NotAllowed => "not_allowed",
            PeerEvent::PerIpLimit => "per_ip_limit",
            PeerEvent::ProxyHeader => "proxy_header",
        }
    }
}

static LIMITER: LazyLock<Mutex<Limiter>> = LazyLock::new(|| Mutex::new(Limiter::standard()));

/// Log a warning about an unauthenticated peer, unless the limiter suppresses it; the first
/// one let through after suppressed ones says how many were.
pub fn peer_warning(peer: SocketAddr, event: PeerEvent, text: fmt::Arguments) {
    let verdict = LIMITER.lock().check(peer.ip(), event.tag(), Instant::now());
    if verdict == Verdict::Suppress {
        return;
    }
    log::warn!(mta:% = peer, tag = event.tag(); "{text}{}", verdict.note());
}

#[cfg(test)]
mod tests {
    use super::*;
    use greenarrow_proxy_proto::protocol::reply::ALL_FAILURES;

    #[test]
    fn the_five_problems_of_issue_14_are_warnings_without_verbose() {
        for f in [
            Failure::SourceNotLocal,
            Failure::ConnectRefused,
            Failure::ConnectTimeout,
            Failure::NetworkError,
            Failure::DestinationNotPermitted,
            Failure::AuthFailed,
        ] {
            assert_eq!(request_level(f, false), Some(Level::Warn), "{f:?}");
        }
    }

    #[test]
    fn answers_of_the_world_are_verbose_only() {
        for &f in ALL_FAILURES {
            if !is_problem(f) {
                assert_eq!(request_level(f, false), None, "{f:?}");
                assert_eq!(request_level(f, true), Some(Level::Info), "{f:?}");
            }
        }
        assert!(!is_problem(Failure::DnsNxDomain));
        assert!(!is_problem(Failure::BannerRejected { permanent: true }));
    }

    #[test]
    fn the_asked_mx_has_no_space() {
        let ip = Destination::Ip("2001:db8::1".parse().unwrap());
        assert_eq!(AskedMx(&ip, 25).to_string(), "[2001:db8::1]:25");
        let d = Destination::Domain("example.com".into());
        assert_eq!(AskedMx(&d, 587).to_string(), "example.com:587");
    }

    #[test]
    fn the_failure_text_keeps_the_mx_reply() {
        let mut f = FailureReply::new(Failure::BannerRejected { permanent: true }, "banner");
        f.mx_lines = vec![b"554 go away".to_vec()];
        assert_eq!(failure_text(&f), "banner [MX: 554 go away]");
    }
}
