//! Test harness: a real proxy (in this process, real sockets, real TLS with certificates made
//! now) in front of real test MX servers on loopback.
#![allow(dead_code)]

use greenarrow_proxy::config::Config;
use greenarrow_proxy::server::{Runtime, Server};
use greenarrow_proxy_client::{ProxyClient, ProxyClientConfig};
use greenarrow_proxy_net::tls::ProxyClientTls;
use greenarrow_proxy_proto::protocol::{ConnectRequest, Destination, TlsPolicy};
use greenarrow_proxy_testkit::certgen::TestCa;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

pub const SECRET: &str = "test-secret-0123456789abcdef-0123456789abcdef";

pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let p = std::env::temp_dir().join(format!(
            "gap-test-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub struct Harness {
    pub server: Arc<Server>,
    pub addr: SocketAddr,
    pub ca_pem: String,
    pub dir: TempDir,
}

/// Write the proxy's certificate and a config, return (dir, yaml, ca).
pub fn proxy_files(ports: &[u16], extra_yaml: &str) -> (TempDir, String, String) {
    let dir = TempDir::new("proxy");
    let ca = TestCa::new("test CA").unwrap();
    let leaf = ca.issue(&["localhost", "127.0.0.1", "::1"]).unwrap();
    std::fs::write(dir.0.join("cert.pem"), &leaf.cert_pem).unwrap();
    std::fs::write(dir.0.join("key.pem"), &leaf.key_pem).unwrap();
    let mut yaml = format!(
        "auth_shared_secret: \"{SECRET}\"\ntls_certificate: cert.pem\ntls_private_key: key.pem\nlog_verbose: true\n"
    );
    let has = |k: &str| extra_yaml.lines().any(|l| l.starts_with(k));
    if !has("listen") {
        yaml.push_str("listen: [\"127.0.0.1:0\"]\n");
    }
    if !has("destination_allow") {
        // Test MX servers live on loopback, which destination_deny refuses by default.
        yaml.push_str("destination_allow: [127.0.0.0/8, \"::1\"]\n");
    }
    if !has("source_addresses") {
        yaml.push_str("source_addresses: [127.0.0.0/8, \"::1\"]\n");
    }
    if !has("destination_ports") {
        let ports: Vec<String> = ports.iter().map(|p| p.to_string()).collect();
        yaml.push_str(&format!("destination_ports: [{}]\n", ports.join(", ")));
    }
    yaml.push_str(extra_yaml);
    (dir, yaml, ca.cert_pem())
}

impl Harness {
    /// A proxy permitting destination `ports`, with `extra_yaml` appended to a working base
    /// configuration.
    pub fn start(ports: &[u16], extra_yaml: &str) -> Harness {
        let (dir, yaml, ca_pem) = proxy_files(ports, extra_yaml);
        let config = Config::from_yaml_str(&yaml, &dir.0).unwrap();
        let server = Server::start(Runtime::build(config).unwrap()).unwrap();
        let addr = server.local_addrs()[0];
        Harness {
            server,
            addr,
            ca_pem,
            dir,
        }
    }

    /// The first bound address of front-end `i` (index into the config's `frontends` list).
    pub fn frontend(&self, i: usize) -> SocketAddr {
        self.server
            .frontend_addrs(i)
            .into_iter()
            .next()
            .unwrap_or_else(|| panic!("front-end {i} has no bound address"))
    }

    /// The first IPv6 address of front-end `i`.
    pub fn frontend_v6(&self, i: usize) -> SocketAddr {
        self.server
            .frontend_addrs(i)
            .into_iter()
            .find(SocketAddr::is_ipv6)
            .unwrap_or_else(|| panic!("front-end {i} has no IPv6 address"))
    }

    pub fn client_config(&self) -> ProxyClientConfig {
        ProxyClientConfig {
            proxy: self.addr,
            tls_name: "localhost".into(),
            tls: ProxyClientTls::from_ca_pem(self.ca_pem.as_bytes()).unwrap(),
            secret: SECRET.into(),
            timeout: Duration::from_secs(20),
        }
    }

    pub fn client(&self) -> ProxyClient {
        ProxyClient::connect(&self.client_config()).unwrap()
    }

    /// A raw connection that has sent `AUTH` and `CONNECT` pipelined and read `235` and the
    /// `250 ... ready` reply: the next bytes are SMTP to the MX.
    pub fn raw_connected(&self, r: &ConnectRequest) -> Raw {
        open(self, r).0
    }

    /// A raw TLS connection to the proxy (for byte-level tests).
    pub fn raw(&self) -> Raw {
        let tcp = TcpStream::connect(self.addr).unwrap();
        let tls = ProxyClientTls::from_ca_pem(self.ca_pem.as_bytes())
            .unwrap()
            .connect(tcp, "localhost", Duration::from_secs(10))
            .unwrap();
        tls.tcp()
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        Raw {
            s: tls,
            buf: Vec::new(),
        }
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.server.stop_accepting();
        self.server.drain(Duration::from_secs(5));
    }
}

/// A byte-level client: write anything, read reply lines.
pub struct Raw {
    pub s: greenarrow_proxy_net::tls::ClientTlsStream,
    buf: Vec<u8>,
}

impl Raw {
    /// A byte-level client over an established TLS stream.
    pub fn from_stream(s: greenarrow_proxy_net::tls::ClientTlsStream) -> Raw {
        s.tcp()
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        Raw { s, buf: Vec::new() }
    }

    pub fn send(&mut self, b: &[u8]) {
        self.s.write_all(b).unwrap();
        self.s.flush().unwrap();
    }

    /// Read one complete SMTP-shaped reply; returns its raw text. Panics on EOF.
    pub fn reply(&mut self) -> String {
        self.try_reply()
            .expect("connection closed while waiting for a reply")
    }

    /// One reply, or None at EOF.
    pub fn try_reply(&mut self) -> Option<String> {
        loop {
            if let Ok(Some((r, n))) =
                greenarrow_proxy_proto::smtp::parse_reply(&self.buf, &Default::default())
            {
                self.buf.drain(..n);
                return Some(String::from_utf8_lossy(r.raw()).into_owned());
            }
            let mut b = [0u8; 4096];
            match self.s.read(&mut b) {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.buf.extend_from_slice(&b[..n]),
            }
        }
    }

    /// True when the proxy closed the connection (EOF or error) without sending more.
    pub fn closed(&mut self) -> bool {
        let mut b = [0u8; 64];
        matches!(self.s.read(&mut b), Ok(0) | Err(_))
    }
}

/// A test MX offering STARTTLS with a self-signed certificate for `mx.test`.
pub fn tls_mx(
    faults: greenarrow_proxy_testkit::testmx::Faults,
) -> greenarrow_proxy_testkit::testmx::TestMx {
    tls_mx_on("127.0.0.1:0".parse().unwrap(), faults)
}

/// [`tls_mx`] listening on `bind` (e.g. `[::1]:0`).
pub fn tls_mx_on(
    bind: SocketAddr,
    faults: greenarrow_proxy_testkit::testmx::Faults,
) -> greenarrow_proxy_testkit::testmx::TestMx {
    use greenarrow_proxy_testkit::testmx::{TestMx, TestMxConfig};
    let cert = greenarrow_proxy_testkit::certgen::self_signed(&["mx.test"]).unwrap();
    TestMx::start(TestMxConfig {
        bind,
        starttls: Some(
            greenarrow_proxy_net::tls::TlsAcceptor::from_pem(&cert.cert_pem, &cert.key_pem)
                .unwrap(),
        ),
        faults,
        ..TestMxConfig::default()
    })
    .unwrap()
}

/// A test MX offering STARTTLS with a certificate for `mx.test` issued by a test CA, and the
/// proxy configuration that trusts that CA (`mx_tls.ca_file`, in the returned directory).
pub fn verified_mx() -> (greenarrow_proxy_testkit::testmx::TestMx, TempDir, String) {
    use greenarrow_proxy_testkit::testmx::{TestMx, TestMxConfig};
    let ca = TestCa::new("MX test CA").unwrap();
    let leaf = ca.issue(&["mx.test"]).unwrap();
    let mx = TestMx::start(TestMxConfig {
        starttls: Some(
            greenarrow_proxy_net::tls::TlsAcceptor::from_pem(&leaf.cert_pem, &leaf.key_pem)
                .unwrap(),
        ),
        ..TestMxConfig::default()
    })
    .unwrap();
    let dir = TempDir::new("ca");
    let ca_file = dir.0.join("mx-ca.pem");
    std::fs::write(&ca_file, ca.cert_pem()).unwrap();
    let yaml = format!("mx_tls:\n  ca_file: {}\n", ca_file.display());
    (mx, dir, yaml)
}

pub fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// A CONNECT request to `mx` from `source`.
pub fn req(source: &str, mx: SocketAddr, tls: TlsPolicy) -> ConnectRequest {
    let mut r = ConnectRequest::new(ip(source), Destination::Ip(mx.ip()), "mta.test");
    r.port = mx.port();
    r.tls = tls;
    r
}

/// A raw MTA connection with AUTH done and `r` connected; returns it with the ready reply.
pub fn open(h: &Harness, r: &ConnectRequest) -> (Raw, String) {
    let mut raw = h.raw();
    raw.send(format!("AUTH 1 {SECRET}\r\n{}", r.to_line()).as_bytes());
    let auth = raw.reply();
    assert!(auth.starts_with("235 "), "{auth}");
    let ready = raw.reply();
    assert!(ready.ends_with("250 ready\r\n"), "{ready}");
    (raw, ready)
}

/// Send `bytes`, then read `n` replies.
pub fn exchange(raw: &mut Raw, bytes: &[u8], n: usize) -> Vec<String> {
    raw.send(bytes);
    (0..n).map(|_| raw.reply()).collect()
}
