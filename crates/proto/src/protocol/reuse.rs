//! What makes two MX connections interchangeable (sans-I/O): the key they are pooled and
//! counted under, and what a request demands of a connection's TLS state. Used by the pool,
//! the caps ledger and the egress core alike; none of them owns it.

use super::TlsPolicy;
use std::net::{IpAddr, SocketAddr};

/// What makes connections interchangeable: same source address, same EHLO name, same MX
/// address and port. The TLS state is matched per connection ([`TlsWant`]).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PoolKey {
    pub source: IpAddr,
    /// Lower-cased.
    pub ehlo: String,
    pub mx: SocketAddr,
}

impl PoolKey {
    pub fn new(source: IpAddr, ehlo: &str, mx: SocketAddr) -> PoolKey {
        PoolKey {
            source: source.to_canonical(),
            ehlo: ehlo.to_ascii_lowercase(),
            mx: SocketAddr::new(mx.ip().to_canonical(), mx.port()),
        }
    }
}

/// The TLS facts of one connection that reuse is decided on: what was negotiated and
/// verified, nothing about how.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TlsState<'a> {
    /// The connection is encrypted (STARTTLS succeeded).
    pub encrypted: bool,
    /// TLS was wanted by the request that opened it (plaintext then means the MX has none).
    pub attempted: bool,
    /// The name the certificate was verified for by WebPKI (only when it verified).
    pub verified_name: Option<&'a str>,
    /// The MX name and the TLSA set's fingerprint
    /// ([`crate::tls_policy::dane::TlsaSet::fingerprint`]) the certificate was DANE-verified
    /// against (only when it was).
    pub dane: Option<(&'a str, u64)>,
}

/// The policy a connection was set up under: recorded with the pooled connection, shown in the
/// READY reply (`tls_policy=`) and the logs. A pooled connection is handed only to a request
/// whose [`TlsWant`] it satisfies (Postfix's connection-cache rule).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Applied {
    /// Plaintext on purpose (`tls=none`).
    None,
    /// STARTTLS when offered, any certificate (RFC 7435).
    Opportunistic,
    /// TLS required, any certificate (`tls=required`).
    Required,
    /// TLS with a WebPKI-valid certificate for the name (`tls=verify`).
    WebPki,
    /// MTA-STS `enforce`: the MX matched the policy and presented a WebPKI-valid certificate.
    MtaSts,
    /// DANE with a matching DANE-EE(3) record.
    DaneEe,
    /// DANE with a chain to a DANE-TA(2) trust anchor and a matching name.
    DaneTa,
}

impl Applied {
    /// The word shown in READY replies, logs and status.
    pub fn as_str(self) -> &'static str {
        match self {
            Applied::None => "none",
            Applied::Opportunistic => "opportunistic",
            Applied::Required => "required",
            Applied::WebPki => "webpki",
            Applied::MtaSts => "mta-sts",
            Applied::DaneEe => "dane-ee",
            Applied::DaneTa => "dane-ta",
        }
    }

    /// Every policy, weakest first.
    pub const ALL: [Applied; 7] = [
        Applied::None,
        Applied::Opportunistic,
        Applied::Required,
        Applied::WebPki,
        Applied::MtaSts,
        Applied::DaneEe,
        Applied::DaneTa,
    ];

    /// The policy a word of [`Applied::as_str`] names.
    pub fn from_word(word: &str) -> Option<Applied> {
        Applied::ALL.into_iter().find(|a| a.as_str() == word)
    }
}

/// What a request demands of a connection's TLS state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TlsWant {
    /// `tls=none`: anything.
    Any,
    /// `tls=opportunistic`: TLS, or plaintext that was the result of trying TLS (the MX does
    /// not offer it) — never a connection that was kept plaintext on purpose.
    Opportunistic,
    /// `tls=required`: TLS.
    Tls,
    /// `tls=verify` (or MTA-STS `enforce`): TLS verified by WebPKI for this name.
    Verified(String),
    /// DANE (RFC 7672): TLS DANE-verified for this MX name against this TLSA set (its
    /// fingerprint). A connection verified by WebPKI only, or against another set, will not do.
    Dane { name: String, tlsa: u64 },
}

impl TlsWant {
    /// From a request's policy and the name its certificate must match.
    pub fn from_request(policy: TlsPolicy, name: Option<&str>, mx: SocketAddr) -> TlsWant {
        match policy {
            TlsPolicy::None => TlsWant::Any,
            TlsPolicy::Opportunistic => TlsWant::Opportunistic,
            TlsPolicy::Required => TlsWant::Tls,
            TlsPolicy::Verify => TlsWant::Verified(
                name.map(str::to_string)
                    .unwrap_or_else(|| mx.ip().to_string()),
            ),
        }
    }

    /// Whether a connection in TLS state `tls` satisfies this want.
    pub fn satisfied_by(&self, tls: &TlsState<'_>) -> bool {
        match self {
            TlsWant::Any => true,
            TlsWant::Opportunistic => tls.encrypted || tls.attempted,
            TlsWant::Tls => tls.encrypted,
            TlsWant::Verified(name) => tls.encrypted && tls.verified_name == Some(name.as_str()),
            TlsWant::Dane { name, tlsa } => {
                tls.encrypted && tls.dane == Some((name.as_str(), *tlsa))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_is_canonical() {
        let v4: IpAddr = "192.0.2.1".parse().unwrap();
        let mapped: IpAddr = "::ffff:192.0.2.1".parse().unwrap();
        let mx: SocketAddr = "[::ffff:198.51.100.2]:25".parse().unwrap();
        let a = PoolKey::new(mapped, "Relay.Example", mx);
        assert_eq!(
            a,
            PoolKey::new(v4, "relay.example", "198.51.100.2:25".parse().unwrap())
        );
        assert_eq!(a.ehlo, "relay.example");
    }

    #[test]
    fn wants_against_tls_states() {
        let mx: SocketAddr = "192.0.2.9:25".parse().unwrap();
        let plain_on_purpose = TlsState::default();
        let plain_after_trying = TlsState {
            attempted: true,
            ..TlsState::default()
        };
        let tls = TlsState {
            encrypted: true,
            attempted: true,
            ..TlsState::default()
        };
        let verified = TlsState {
            verified_name: Some("mx.example"),
            ..tls
        };
        let dane = TlsState {
            dane: Some(("mx.example", 7)),
            ..tls
        };
        let dane_and_webpki = TlsState {
            verified_name: Some("mx.example"),
            ..dane
        };
        let dane_other_set = TlsState {
            dane: Some(("mx.example", 8)),
            ..tls
        };
        let any = TlsWant::from_request(TlsPolicy::None, None, mx);
        let opp = TlsWant::from_request(TlsPolicy::Opportunistic, None, mx);
        let req = TlsWant::from_request(TlsPolicy::Required, None, mx);
        let ver = TlsWant::from_request(TlsPolicy::Verify, Some("mx.example"), mx);
        let ver_ip = TlsWant::from_request(TlsPolicy::Verify, None, mx);
        let dane_want = TlsWant::Dane {
            name: "mx.example".into(),
            tlsa: 7,
        };
        assert_eq!(ver_ip, TlsWant::Verified("192.0.2.9".into()));
        // Columns: any, opportunistic, required, verify, DANE (name, set 7).
        let table = [
            (&plain_on_purpose, [true, false, false, false, false]),
            (&plain_after_trying, [true, true, false, false, false]),
            (&tls, [true, true, true, false, false]),
            // WebPKI-verified only: never given to a DANE request.
            (&verified, [true, true, true, true, false]),
            // DANE-verified only: never given to a tls=verify (or MTA-STS) request.
            (&dane, [true, true, true, false, true]),
            (&dane_and_webpki, [true, true, true, true, true]),
            // DANE-verified against another TLSA set: not this request's.
            (&dane_other_set, [true, true, true, false, false]),
        ];
        for (state, expect) in table {
            let got = [&any, &opp, &req, &ver, &dane_want].map(|w| w.satisfied_by(state));
            assert_eq!(got, expect, "{state:?}");
            assert!(!ver_ip.satisfied_by(state));
        }
    }
}
