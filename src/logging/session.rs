//! The audit trail: one info line per relayed session (`log_sessions`, on by default), native
//! protocol and every front-end alike, with its values as key fields (in the text and, in the
//! journal, as structured fields `MTA`, `CLIENT`, `FRONTEND`, ... — [`super::line`]).
//!
//! A value the session's kind cannot know is left out: a passthrough session sees no EHLO, no
//! TLS version and no transactions, so it has no `ehlo=`, `tls=` or `messages=`.

use log::kv::Value;
use log::Level;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// Which listener a session came through: `native@ADDR`, or a front-end's kind and mode at
/// the address the MTA connected to (`socks5/smtp@127.0.0.1:1080`,
/// `proxy_protocol/passthrough@[::1]:2500`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Via {
    /// `native`, `proxy_protocol` or `socks5`.
    pub kind: &'static str,
    /// `None` for the native protocol; `passthrough` or `smtp` for a front-end.
    pub mode: Option<&'static str>,
    /// The listening address the MTA connected to (None if the system could not say).
    pub at: Option<SocketAddr>,
}

impl fmt::Display for Via {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.kind)?;
        if let Some(m) = self.mode {
            write!(f, "/{m}")?;
        }
        if let Some(a) = self.at {
            write!(f, "@{a}")?;
        }
        Ok(())
    }
}

/// One relayed session, as its audit line says it.
#[derive(Clone, Debug)]
pub struct SessionRecord<'a> {
    pub mta: SocketAddr,
    /// The client the MTA acted as.
    pub client: &'a str,
    pub via: Via,
    pub source: IpAddr,
    /// The MX address connected to.
    pub mx: Option<SocketAddr>,
    /// The EHLO name (not known in passthrough).
    pub ehlo: Option<&'a str>,
    /// The TLS version toward the MX, `none` without TLS (not known in passthrough).
    pub tls: Option<&'a str>,
    /// The TLS policy the MX connection was set up under and how the MX was authenticated
    /// (`dane`, `webpki`, `no`): `tls_policy=`, `tls_verified=` (not known in passthrough).
    pub tls_policy: Option<(&'a str, &'a str)>,
    /// Whether the MX connection was new (`true`) or taken from the pool.
    pub new: bool,
    /// Messages the MX accepted (not known in passthrough).
    pub messages: Option<u64>,
    /// Octets from the MTA to the MX, and from the MX to the MTA.
    pub octets_to_mx: u64,
    pub octets_to_mta: u64,
    pub duration: Duration,
    /// How it ended: `quit`, `mta_gone`, `mta_timeout`, `lifetime`, `mx_lost` (relayed);
    /// `mta_closed`, `mx_closed`, `idle`, `stall`, `lifetime`, `error` (passthrough).
    pub tag: &'a str,
}

impl SessionRecord<'_> {
    /// The key fields, in order, as text: `mta`, `client`, `frontend`, `source`, `mx`, `ehlo`,
    /// `tls`, `tls_policy`, `tls_verified`, `connection`, `messages`, `octets_to_mx`, `octets_to_mta`, `duration`, `tag`;
    /// those the session cannot know are left out. `-` for an MX address the system lost.
    pub fn fields(&self) -> Vec<(&'static str, String)> {
        let mut f = vec![
            ("mta", self.mta.to_string()),
            ("client", self.client.to_string()),
            ("frontend", self.via.to_string()),
            ("source", self.source.to_string()),
            ("mx", self.mx.map_or_else(|| "-".into(), |a| a.to_string())),
        ];
        if let Some(e) = self.ehlo {
            f.push(("ehlo", e.to_string()));
        }
        if let Some(t) = self.tls {
            f.push(("tls", t.to_string()));
        }
        if let Some((policy, verified)) = self.tls_policy {
            f.push(("tls_policy", policy.to_string()));
            f.push(("tls_verified", verified.to_string()));
        }
        let connection = if self.new { "new" } else { "reused" };
        f.push(("connection", connection.into()));
        if let Some(m) = self.messages {
            f.push(("messages", m.to_string()));
        }
        f.push(("octets_to_mx", self.octets_to_mx.to_string()));
        f.push(("octets_to_mta", self.octets_to_mta.to_string()));
        f.push(("duration", format!("{:.3}s", self.duration.as_secs_f64())));
        f.push(("tag", self.tag.to_string()));
        f
    }

    /// Log the line at info level, `text` before the key fields (`session ended`, with the
    /// reason when there is one worth saying).
    pub fn log(&self, text: fmt::Arguments) {
        let fields = self.fields();
        let kvs: Vec<(&str, Value)> = fields
            .iter()
            .map(|(k, v)| (*k, Value::from_display(v)))
            .collect();
        log::logger().log(
            &log::Record::builder()
                .args(text)
                .level(Level::Info)
                .target(module_path!())
                .module_path_static(Some(module_path!()))
                .key_values(&kvs)
                .build(),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn native() -> SessionRecord<'static> {
        SessionRecord {
            mta: "127.0.0.1:40312".parse().unwrap(),
            client: "default",
            via: Via {
                kind: "native",
                mode: None,
                at: Some("127.0.0.1:807".parse().unwrap()),
            },
            source: "127.0.0.2".parse().unwrap(),
            mx: Some("127.0.0.1:2525".parse().unwrap()),
            ehlo: Some("mta.test"),
            tls: Some("TLSv1.3"),
            tls_policy: Some(("dane-ee", "dane")),
            new: true,
            messages: Some(2),
            octets_to_mx: 1234,
            octets_to_mta: 567,
            duration: Duration::from_millis(1500),
            tag: "quit",
        }
    }

    #[test]
    fn the_message_and_the_journal_fields_carry_the_same_values() {
        let r = native();
        let fields = r.fields();
        let kvs: Vec<(&str, Value)> = fields
            .iter()
            .map(|(k, v)| (*k, Value::from_display(v)))
            .collect();
        let record = log::Record::builder()
            .args(format_args!("session ended"))
            .level(Level::Info)
            .key_values(&kvs)
            .build();
        assert_eq!(
            super::super::line::message(&record),
            "session ended mta=127.0.0.1:40312 client=default frontend=native@127.0.0.1:807 \
             source=127.0.0.2 mx=127.0.0.1:2525 ehlo=mta.test tls=TLSv1.3 tls_policy=dane-ee tls_verified=dane \
             connection=new messages=2 octets_to_mx=1234 octets_to_mta=567 duration=1.500s tag=quit"
        );
        // The journal's fields: the same keys, upper-cased by systemd-journal-logger.
        let journal: Vec<String> = fields
            .iter()
            .map(|(k, v)| format!("{}={v}", k.to_ascii_uppercase()))
            .collect();
        assert_eq!(
            journal.join(" "),
            "MTA=127.0.0.1:40312 CLIENT=default FRONTEND=native@127.0.0.1:807 \
             SOURCE=127.0.0.2 MX=127.0.0.1:2525 EHLO=mta.test TLS=TLSv1.3 TLS_POLICY=dane-ee TLS_VERIFIED=dane \
             CONNECTION=new MESSAGES=2 OCTETS_TO_MX=1234 OCTETS_TO_MTA=567 DURATION=1.500s TAG=quit"
        );
    }

    #[test]
    fn a_passthrough_session_leaves_out_what_it_cannot_know() {
        let r = SessionRecord {
            via: Via {
                kind: "socks5",
                mode: Some("passthrough"),
                at: Some("[::1]:1080".parse().unwrap()),
            },
            ehlo: None,
            tls: None,
            tls_policy: None,
            messages: None,
            mx: None,
            tag: "mta_closed",
            ..native()
        };
        let keys: Vec<&str> = r.fields().iter().map(|(k, _)| *k).collect();
        assert_eq!(
            keys,
            [
                "mta",
                "client",
                "frontend",
                "source",
                "mx",
                "connection",
                "octets_to_mx",
                "octets_to_mta",
                "duration",
                "tag"
            ]
        );
        let f = r.fields();
        assert_eq!(f[2].1, "socks5/passthrough@[::1]:1080");
        assert_eq!(f[4].1, "-");
    }
}
