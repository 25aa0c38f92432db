//! `gaproxy testmx`: a local test MX that prints what it receives.

use clap::Args;
use greenarrow_proxy_net::tls::TlsAcceptor;
use greenarrow_proxy_testkit::certgen;
use greenarrow_proxy_testkit::testmx::{TestMx, TestMxConfig};
use std::net::SocketAddr;
use std::time::Duration;

#[derive(Args)]
pub struct TestMxArgs {
    /// Address to listen on (loopback, unless --any-address).
    #[arg(long, default_value = "127.0.0.1:2525")]
    pub listen: SocketAddr,
    /// Allow a listen address that is not loopback: only for a test network of its own, such
    /// as the network namespaces of tests/ha/drill.sh.
    #[arg(long)]
    pub any_address: bool,
    /// Host name in the banner and EHLO reply.
    #[arg(long, default_value = "mx.test")]
    pub hostname: String,
    /// Do not offer STARTTLS (by default it is offered with a generated certificate).
    #[arg(long)]
    pub no_starttls: bool,
    /// Implicit TLS (SMTPS) on connect.
    #[arg(long)]
    pub smtps: bool,
    /// Stop after this many messages (default: run until interrupted).
    #[arg(long)]
    pub messages: Option<usize>,
}

pub fn run(a: TestMxArgs) -> Result<(), Box<dyn std::error::Error>> {
    if !a.listen.ip().is_loopback() && !a.any_address {
        return Err(
            "the test MX only listens on loopback addresses (--any-address: inside a test network namespace)"
                .into(),
        );
    }
    let mut cfg = TestMxConfig {
        bind: a.listen,
        hostname: a.hostname.clone(),
        ..TestMxConfig::default()
    };
    if !a.no_starttls || a.smtps {
        let cert = certgen::self_signed(&[a.hostname.as_str()])?;
        cfg.starttls = Some(TlsAcceptor::from_pem(&cert.cert_pem, &cert.key_pem)?);
        cfg.implicit_tls = a.smtps;
    }
    let mx = TestMx::start(cfg)?;
    println!(
        "test MX listening on {} (STARTTLS {})",
        mx.addr(),
        if a.no_starttls { "off" } else { "on" }
    );
    let mut seen = 0;
    loop {
        mx.wait_until(Duration::from_secs(3600), |s| s.messages.len() > seen);
        let msgs = mx.messages();
        for m in &msgs[seen..] {
            println!(
                "message from {} (tls: {}): MAIL FROM:<{}> RCPT TO:{:?}, {} octets{}, Message-ID: {}",
                m.peer,
                m.tls,
                m.mail_from,
                m.rcpt_to,
                m.content.len(),
                if m.via_bdat { " via BDAT" } else { "" },
                message_id(&m.content).unwrap_or("(none)")
            );
        }
        seen = msgs.len();
        if a.messages.is_some_and(|n| seen >= n) {
            // Let the last client finish its session (QUIT) before going away.
            mx.wait_until(Duration::from_secs(30), |s| {
                s.connections.iter().all(|c| c.closed)
            });
            return Ok(());
        }
    }
}

/// The value of the message's first `Message-ID` header (from the header section only; no
/// unfolding: test messages keep it on one line), trimmed.
fn message_id(content: &[u8]) -> Option<&str> {
    for line in content.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            return None; // end of the header section
        }
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let (name, value) = line.split_at(colon);
        if name.eq_ignore_ascii_case(b"message-id") {
            let value = value.get(1..).unwrap_or_default();
            return std::str::from_utf8(value).ok().map(str::trim);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::message_id;

    #[test]
    fn message_id_is_taken_from_the_header_section_only() {
        let m = b"Subject: x\r\nmessage-ID:  <ha-7@drill.invalid> \r\n\r\nbody\r\n";
        assert_eq!(message_id(m), Some("<ha-7@drill.invalid>"));
        let body_only = b"Subject: x\r\n\r\nMessage-ID: <not-a-header@x>\r\n";
        assert_eq!(message_id(body_only), None);
        assert_eq!(message_id(b""), None);
        assert_eq!(message_id(b"Message-ID:\n\n"), Some(""));
    }
}
