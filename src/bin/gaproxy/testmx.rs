//! `gaproxy testmx`: a local test MX that prints what it receives.

use clap::Args;
use greenarrow_proxy::certgen;
use greenarrow_proxy::testmx::{TestMx, TestMxConfig};
use greenarrow_proxy::tls::TlsAcceptor;
use std::net::SocketAddr;
use std::time::Duration;

#[derive(Args)]
pub struct TestMxArgs {
    /// Address to listen on (loopback).
    #[arg(long, default_value = "127.0.0.1:2525")]
    pub listen: SocketAddr,
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
    if !a.listen.ip().is_loopback() {
        return Err("the test MX only listens on loopback addresses".into());
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
                "message from {} (tls: {}): MAIL FROM:<{}> RCPT TO:{:?}, {} octets{}",
                m.peer,
                m.tls,
                m.mail_from,
                m.rcpt_to,
                m.content.len(),
                if m.via_bdat { " via BDAT" } else { "" }
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
