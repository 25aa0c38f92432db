//! The session line of a relayed session (`log_sessions`): what it keeps from the opening of
//! the MX connection, and the line logged at the end (`logging::session` formats it).

use super::relay::RelayOutcome;
use crate::logging::session::{SessionRecord, Via};
use crate::mx::MxConnection;
use greenarrow_proxy_proto::protocol::{ConnectRequest, Origin};
use std::net::SocketAddr;
use std::time::Instant;

/// What the session line keeps from the opening of the MX connection (the connection itself
/// goes into the relay).
pub struct Opened<'a> {
    /// The client the MTA acts as.
    pub client: &'a str,
    /// When the request came.
    pub started: Instant,
    pub new: bool,
    pub mx: SocketAddr,
    /// The TLS version toward the MX, `none` without TLS.
    pub tls: String,
    /// The TLS policy applied and how the MX was authenticated.
    pub tls_policy: &'static str,
    pub tls_verified: &'static str,
}

impl<'a> Opened<'a> {
    pub fn new(client: &'a str, started: Instant, mx: &MxConnection, origin: &Origin) -> Self {
        Opened {
            client,
            started,
            new: *origin == Origin::New,
            mx: mx.remote(),
            tls: mx
                .tls()
                .as_ref()
                .map_or_else(|| "none".to_string(), |t| t.version.clone()),
            tls_policy: mx.applied().as_str(),
            tls_verified: mx.verified_word(),
        }
    }
}

impl Opened<'_> {
    /// Log the session line of the relayed session of `mta` (come through `via`) that ended
    /// with `out` (`messages` accepted). The caller checks `log_sessions`.
    pub(super) fn log_end(
        &self,
        mta: SocketAddr,
        via: Via,
        req: &ConnectRequest,
        out: &RelayOutcome,
        messages: u64,
    ) {
        let opened = self;
        let tag = if out.mx_lost.is_some() {
            "mx_lost"
        } else {
            out.end.tag()
        };
        let record = SessionRecord {
            mta,
            client: opened.client,
            via,
            source: req.source,
            mx: Some(opened.mx),
            ehlo: Some(&req.ehlo),
            tls: Some(&opened.tls),
            tls_policy: Some((opened.tls_policy, opened.tls_verified)),
            new: opened.new,
            messages: Some(messages),
            octets_to_mx: out.octets_to_mx,
            octets_to_mta: out.octets_to_mta,
            duration: opened.started.elapsed(),
            tag,
        };
        match (&out.mx_lost, out.mid_body) {
            (Some(why), _) => record.log(format_args!("session ended: MX connection lost: {why}")),
            (None, true) => record.log(format_args!(
                "session ended: the MTA left in the middle of a message"
            )),
            (None, false) => record.log(format_args!("session ended")),
        }
    }
}
