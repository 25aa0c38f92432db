//! `gaproxy demo`: everything on loopback, nothing to prepare.
//!
//! Generates a CA, a certificate for the proxy and a secret; starts a test MX that offers
//! STARTTLS and the proxy (in this process, on a free port); then sends messages through the
//! proxy from two source addresses and checks what the MX received.

use crate::send::sample_message;
use clap::Args;
use greenarrow_proxy::config::Config;
use greenarrow_proxy::server::{Runtime, Server};
use greenarrow_proxy_client::{ProxyClient, ProxyClientConfig};
use greenarrow_proxy_net::tls::{ProxyClientTls, TlsAcceptor};
use greenarrow_proxy_proto::protocol::{ConnectRequest, Destination, Origin};
use greenarrow_proxy_testkit::certgen::{self, TestCa};
use greenarrow_proxy_testkit::testmx::{TestMx, TestMxConfig};
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

#[derive(Args)]
pub struct DemoArgs {
    /// Messages to send.
    #[arg(long, default_value_t = 6)]
    pub messages: u32,
    /// Body size of each message in bytes.
    #[arg(long, default_value_t = 2048)]
    pub size: usize,
    /// Do not show the proxy's own log lines.
    #[arg(long)]
    pub quiet: bool,
    /// Do not ask for connection reuse.
    #[arg(long)]
    pub no_reuse: bool,
}

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn random_hex(bytes: usize) -> Result<String, Box<dyn std::error::Error>> {
    let mut b = vec![0u8; bytes];
    getrandom::fill(&mut b).map_err(|e| format!("random: {e}"))?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

pub fn run(a: DemoArgs) -> Result<(), Box<dyn std::error::Error>> {
    if !a.quiet {
        greenarrow_proxy::logging::init();
    }
    let dir = TempDir(std::env::temp_dir().join(format!("gaproxy-demo-{}", std::process::id())));
    std::fs::create_dir_all(&dir.0)?;
    println!(
        "== greenarrow_proxy demo (everything on loopback; files in {})",
        dir.0.display()
    );

    // Certificates and secret, made now.
    let ca = TestCa::new("greenarrow_proxy demo CA")?;
    let proxy_cert = ca.issue(&["localhost", "127.0.0.1"])?;
    let cert_path = dir.0.join("proxy-cert.pem");
    let key_path = dir.0.join("proxy-key.pem");
    std::fs::write(&cert_path, &proxy_cert.cert_pem)?;
    std::fs::write(&key_path, &proxy_cert.key_pem)?;
    let secret = random_hex(32)?;

    // A test MX offering STARTTLS with a self-signed certificate.
    let mx_cert = certgen::self_signed(&["mx.test"])?;
    let mx = TestMx::start(TestMxConfig {
        starttls: Some(TlsAcceptor::from_pem(&mx_cert.cert_pem, &mx_cert.key_pem)?),
        ..TestMxConfig::default()
    })?;
    println!(
        "-- test MX listening on {} (offers STARTTLS, PIPELINING, CHUNKING)",
        mx.addr()
    );

    // The proxy, configured from YAML like the daemon.
    let yaml = format!(
        "listen: [\"127.0.0.1:0\"]\nallow_from: [127.0.0.0/8, \"::1\"]\nauth_shared_secret: \"{secret}\"\n\
         log_verbose: true\ntls_certificate: {}\ntls_private_key: {}\n\
         source_addresses: [127.0.0.0/8, \"::1\"]\ndestination_ports: [{}]\n\
         destination_allow: [127.0.0.0/8]\n",
        cert_path.display(),
        key_path.display(),
        mx.addr().port()
    );
    let config = Config::from_yaml_str(&yaml, &dir.0)?;
    let server = Server::start(Runtime::build(config)?)?;
    let proxy_addr = server.local_addrs()[0];
    println!("-- proxy listening on {proxy_addr} (TLS, certificate from a demo CA)");

    let client_cfg = ProxyClientConfig {
        proxy: proxy_addr,
        tls_name: "localhost".into(),
        tls: ProxyClientTls::from_ca_pem(ca.cert_pem().as_bytes())?,
        secret,
        timeout: Duration::from_secs(30),
    };
    // Two MTAs (two proxy connections), both allowing reuse.
    let mut mtas = [
        ProxyClient::connect(&client_cfg)?,
        ProxyClient::connect(&client_cfg)?,
    ];
    mtas[0].record_transcript();
    let sources: [IpAddr; 2] = ["127.0.0.2".parse()?, "127.0.0.3".parse()?];
    let mut sent = Vec::new();
    let (mut fresh, mut reused) = (Vec::new(), Vec::new());
    for n in 1..=a.messages {
        let i = n as usize - 1;
        let source = sources[i % 2];
        // MTA A sends the first round, then MTA B and A take turns.
        let mta = if i < 2 { 0 } else { (i / 2) % 2 };
        let proxy = &mut mtas[mta];
        let mut req = ConnectRequest::new(source, Destination::Ip(mx.addr().ip()), "mta.demo.test");
        req.port = mx.addr().port();
        req.reuse = !a.no_reuse;
        let started = Instant::now();
        let mut s = proxy.open(&req)?;
        let ready = started.elapsed();
        let msg = sample_message("demo@sender.test", "user@mx.test", n, a.size);
        let d = s.send_mail("demo@sender.test", &["user@mx.test"], &msg)?;
        let origin = match &s.ready.origin {
            Origin::New => {
                fresh.push(ready);
                "new".to_string()
            }
            Origin::Reused { uses, messages, .. } => {
                reused.push(ready);
                format!("reused (used {uses} time(s), {messages} message(s) before)")
            }
        };
        let tls = s
            .ready
            .tls
            .as_ref()
            .map(|t| format!("{} {}", t.version, t.cipher))
            .unwrap_or("none".into());
        s.quit()?;
        let transcript = proxy.take_transcript();
        if n == 1 {
            println!("-- transcript of message 1 (C: the MTA, S: the proxy / the MX through it)");
            for l in transcript {
                println!("   {l}");
            }
        }
        println!(
            "-- message {n}: MTA {}, source {source}, connection {origin}, connect-to-ready {:.2} ms, TLS to MX: {tls}; MX: {}",
            if mta == 0 { "A" } else { "B" },
            ready.as_secs_f64() * 1000.0,
            d.final_reply.text()
        );
        sent.push((source, msg));
    }
    for m in mtas {
        m.quit()?;
    }
    let median = |v: &mut Vec<Duration>| {
        v.sort();
        v.get(v.len() / 2).map(|d| d.as_secs_f64() * 1000.0)
    };
    if let (Some(f), Some(r)) = (median(&mut fresh), median(&mut reused)) {
        println!(
            "-- connect-to-ready, median: fresh STARTTLS connection {f:.2} ms, reused connection {r:.2} ms ({:.0}x faster)",
            f / r
        );
    }

    // What did the MX really get?
    let all_in = mx.wait_until(Duration::from_secs(10), |s| s.messages.len() >= sent.len());
    let got = mx.messages();
    let mut ok = all_in && got.len() == sent.len();
    for (i, ((source, msg), m)) in sent.iter().zip(got.iter()).enumerate() {
        let exact = &m.content == msg;
        let from_source = m.peer.ip() == *source;
        ok &= exact && from_source && m.tls;
        println!(
            "-- MX received message {}: from {} ({}), over TLS: {}, {} octets, byte-exact: {}",
            i + 1,
            m.peer.ip(),
            if from_source {
                "the requested source"
            } else {
                "WRONG SOURCE"
            },
            m.tls,
            m.content.len(),
            if exact { "yes" } else { "NO" }
        );
    }
    let st = mx.stats();
    println!(
        "-- the MX saw {} TCP connection(s) and {} TLS handshake(s) for {} message(s)",
        st.connections, st.tls_handshakes, st.messages
    );
    for line in greenarrow_proxy::report::report_lines(&server.snapshot()) {
        println!("-- SIGUSR1 report: {line}");
    }
    server.stop_accepting();
    server.drain(Duration::from_secs(5));
    mx.shutdown();
    if ok {
        println!(
            "== demo OK: {} message(s) relayed through greenarrow_proxy",
            sent.len()
        );
        Ok(())
    } else {
        Err("demo FAILED: the MX did not receive exactly what was sent".into())
    }
}
