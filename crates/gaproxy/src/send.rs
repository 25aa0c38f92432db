//! `gaproxy send`: deliver messages through a proxy and print the transcript.

use crate::proxy_addr;
use clap::Args;
use greenarrow_proxy_client::{ClientError, Endpoint, Failover, ProxyClientConfig};
use greenarrow_proxy_net::tls::ProxyClientTls;
use greenarrow_proxy_proto::protocol::{ConnectRequest, Destination, Origin, TlsPolicy};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::{Duration, Instant};

#[derive(Args)]
pub struct SendArgs {
    /// A proxy: IP, IP:PORT, [IPv6]:PORT, NAME or NAME:PORT (port 807 when not given);
    /// repeatable, tried in order.
    ///
    /// A name with several addresses gives each. The next proxy is tried when one cannot be
    /// reached, fails TLS, answers 421 busy or 451 source_not_local, or loses the connection
    /// before message data was sent; never once message data was sent.
    #[arg(long, default_value = "127.0.0.1:807")]
    pub proxy: Vec<String>,
    /// Name (or IP) the proxies' certificates must match [default: each --proxy's IP or name,
    /// as written]
    #[arg(long)]
    pub proxy_name: Option<String>,
    /// File holding the shared secret (optional with --client-cert).
    #[arg(long, required_unless_present = "client_cert")]
    pub secret_file: Option<PathBuf>,
    /// CA (or the proxy's own certificate) to verify the proxy with, PEM.
    #[arg(long)]
    pub ca_file: PathBuf,
    /// Client certificate (PEM) to present to the proxy (mutual TLS).
    #[arg(long, requires = "client_key")]
    pub client_cert: Option<PathBuf>,
    /// Private key (PEM) of --client-cert.
    #[arg(long, requires = "client_cert")]
    pub client_key: Option<PathBuf>,
    /// Source IP the proxy should connect from.
    #[arg(long)]
    pub source: IpAddr,
    /// The MX: an IP address or a host name.
    #[arg(long, conflicts_with = "domain", required_unless_present = "domain")]
    pub mx: Option<String>,
    /// A mail domain whose MX records the proxy looks up.
    #[arg(long)]
    pub domain: Option<String>,
    /// MX port.
    #[arg(long, default_value_t = 25)]
    pub port: u16,
    /// Name for EHLO.
    #[arg(long, default_value = "gaproxy.localdomain")]
    pub ehlo: String,
    /// TLS policy toward the MX: none, opportunistic, required, verify.
    #[arg(long, default_value = "opportunistic")]
    pub tls: String,
    /// TLS name (SNI and verification).
    #[arg(long)]
    pub tls_name: Option<String>,
    /// The recipient domain whose MTA-STS and TLS-RPT policy applies, with --mx <name>
    /// (--domain is itself the policy domain).
    #[arg(long, conflicts_with = "domain")]
    pub policy_domain: Option<String>,
    /// Ask for connection reuse.
    #[arg(long)]
    pub reuse: bool,
    /// Envelope sender.
    #[arg(long, default_value = "sender@example.com")]
    pub from: String,
    /// Envelope recipient (repeatable).
    #[arg(long, default_value = "recipient@example.net")]
    pub to: Vec<String>,
    /// Message file (sent as is, dot-stuffed on the wire); default: a generated message.
    #[arg(long)]
    pub message_file: Option<PathBuf>,
    /// Size of the generated message body in bytes.
    #[arg(long, default_value_t = 1024)]
    pub size: usize,
    /// Messages to send, each in its own SMTP session (over one proxy connection, a new one
    /// after a failover).
    #[arg(long, default_value_t = 1)]
    pub count: u32,
    /// Use BDAT (CHUNKING) instead of DATA.
    #[arg(long, conflicts_with = "bdat_pipelined")]
    pub bdat: bool,
    /// Send MAIL, RCPT and `BDAT <size> LAST` with the whole message in one write (needs
    /// PIPELINING and CHUNKING from the MX): one round trip per message.
    #[arg(long)]
    pub bdat_pipelined: bool,
    /// Timeout for every step, e.g. 30s.
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
}

/// A generated message of about `size` body bytes (lines of 76 characters, one starting
/// with a dot to exercise dot-stuffing).
pub fn sample_message(from: &str, to: &str, n: u32, size: usize) -> Vec<u8> {
    let mut m = format!(
        "From: <{from}>\r\nTo: <{to}>\r\nSubject: greenarrow_proxy test message {n}\r\nMessage-ID: <{n}.{}@gaproxy.localdomain>\r\n\r\n.This line starts with a dot.\r\n",
        std::process::id()
    )
    .into_bytes();
    let line = b"abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz0123456789ab\r\n";
    while m.len() < size {
        m.extend_from_slice(line);
    }
    m
}

pub fn tls_policy(s: &str) -> Result<TlsPolicy, String> {
    Ok(match s {
        "none" => TlsPolicy::None,
        "opportunistic" => TlsPolicy::Opportunistic,
        "required" => TlsPolicy::Required,
        "verify" => TlsPolicy::Verify,
        _ => {
            return Err(format!(
                "--tls {s:?}: expected none, opportunistic, required or verify"
            ))
        }
    })
}

pub fn run(a: SendArgs) -> Result<(), Box<dyn std::error::Error>> {
    let secret = match &a.secret_file {
        Some(path) => std::fs::read_to_string(path)
            .map_err(|e| format!("{}: {e}", path.display()))?
            .trim_end_matches(['\r', '\n'])
            .to_string(),
        None => String::new(),
    };
    let mut tls = ProxyClientTls::from_ca_file(&a.ca_file)?;
    if let (Some(cert), Some(key)) = (&a.client_cert, &a.client_key) {
        let read = |p: &PathBuf| std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()));
        tls = tls.with_client_cert(&read(cert)?, &read(key)?)?;
    }
    let endpoints = Endpoint::resolve(&a.proxy, 807, a.proxy_name.as_deref())?;
    let first = endpoints.first().ok_or("--proxy: no address")?.clone();
    let cfg = ProxyClientConfig {
        proxy: first.addr,
        tls_name: first.tls_name,
        tls,
        secret,
        timeout: a.timeout,
    };
    let dest = match (&a.mx, &a.domain) {
        (Some(mx), _) => match mx.parse::<IpAddr>() {
            Ok(ip) => Destination::Ip(ip),
            Err(_) => Destination::Host(mx.clone()),
        },
        (None, Some(d)) => Destination::Domain(d.clone()),
        (None, None) => return Err("give --mx or --domain".into()),
    };
    let mut req = ConnectRequest::new(a.source, dest, &a.ehlo);
    req.port = a.port;
    req.smtps = a.port == 465;
    req.tls = tls_policy(&a.tls)?;
    req.tls_name = a.tls_name.clone();
    req.policy_domain = a.policy_domain.clone();
    req.reuse = a.reuse;
    let body = match &a.message_file {
        Some(p) => Some(std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()))?),
        None => None,
    };
    let to: Vec<&str> = a.to.iter().map(String::as_str).collect();
    let mut proxy = Failover::new(cfg, endpoints);
    proxy.record_transcript();
    let mut failures = 0;
    for n in 1..=a.count {
        let result = proxy.run(|proxy| {
            let started = Instant::now();
            let mut s = proxy.open(&req)?;
            let ready_ms = started.elapsed().as_secs_f64() * 1000.0;
            let msg = body
                .clone()
                .unwrap_or_else(|| sample_message(&a.from, to[0], n, a.size));
            let d = if a.bdat {
                s.send_mail_bdat(&a.from, &to, &msg, 64 * 1024)
            } else if a.bdat_pipelined {
                s.send_mail_bdat_pipelined(&a.from, &to, &msg)
            } else {
                s.send_mail(&a.from, &to, &msg)
            };
            let origin = match &s.ready.origin {
                Origin::New => "new".to_string(),
                Origin::Reused {
                    age,
                    uses,
                    messages,
                } => format!(
                    "reused (age {:.1} s, used {uses} time(s), {messages} message(s) before)",
                    age.as_secs_f64()
                ),
            };
            let tls = s
                .ready
                .tls
                .as_ref()
                .map(|t| t.version.clone())
                .unwrap_or_else(|| "none".into());
            let quit = s.quit();
            let d = d?;
            quit?;
            Ok::<_, ClientError>((ready_ms, origin, tls, d))
        });
        for line in proxy.take_transcript() {
            println!("{line}");
        }
        match result {
            Ok((ready_ms, origin, tls, d)) => println!(
                "=== message {n}: delivered to {} recipient(s); connection {origin}, tls {tls}, ready in {ready_ms:.1} ms; MX said: {}",
                d.accepted.len(),
                d.final_reply.text()
            ),
            Err(e) => {
                failures += 1;
                let kind = if e.last.is_transient() {
                    "transient"
                } else {
                    "permanent"
                };
                let unknown = if e.stage == greenarrow_proxy_client::Stage::Data {
                    "; the connection was lost after the message data was sent: the MX may have accepted it, so it was not sent again"
                } else {
                    ""
                };
                println!("=== message {n}: FAILED ({kind}): {e}{unknown}");
                // No proxy could be reached or spoke TLS: every message would fail the same
                // way. Say what was tried and what to check.
                if let (ClientError::Connect(_) | ClientError::Tls(_), Some(at)) = (&e.last, e.proxy)
                {
                    let _ = proxy.quit();
                    return Err(unreachable(&e, at, &a).into());
                }
            }
        }
    }
    let _ = proxy.quit();
    if failures > 0 {
        return Err(format!("{failures} of {} message(s) failed", a.count).into());
    }
    Ok(())
}

/// The error for a job that no proxy could take at the connection or TLS stage: the last
/// proxy's address and what to check ([`proxy_addr::explain`]), then the others tried.
fn unreachable(e: &greenarrow_proxy_client::FailoverError, at: SocketAddr, a: &SendArgs) -> String {
    let banner = if proxy_addr::worth_probing(&e.last) {
        proxy_addr::probe(at)
    } else {
        Vec::new()
    };
    let tls_name = a.proxy_name.clone().unwrap_or_else(|| at.ip().to_string());
    let mut msg = proxy_addr::explain(&e.last, at, &tls_name, &a.ca_file, &banner);
    if !e.attempts.is_empty() {
        let tried: Vec<String> = e
            .attempts
            .iter()
            .map(|t| format!("{} ({}: {})", t.proxy, t.stage, t.error))
            .collect();
        msg.push_str(&format!(" (after trying {})", tried.join(", ")));
    }
    msg
}
