//! What every end-to-end test starts from: a temporary directory, the proxy's certificate and
//! configuration file (with [`SECRET`]), test MX servers offering STARTTLS, CONNECT requests.
//! Used by the in-process harness (tests/common) and the real-process one ([`crate::daemon`]).

use crate::certgen::{self, TestCa};
use crate::testmx::{Faults, TestMx, TestMxConfig};
use greenarrow_proxy_net::tls::TlsAcceptor;
use greenarrow_proxy_proto::protocol::{ConnectRequest, Destination, TlsPolicy};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The shared secret of the configuration [`proxy_files`] writes.
pub const SECRET: &str = "test-secret-0123456789abcdef-0123456789abcdef";

/// A directory under the system's temporary directory, removed with its contents on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    /// A new, empty directory named after `tag`, this process and a counter.
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

/// Write the proxy's certificate and a config, return (dir, yaml, ca).
///
/// The certificate (cert.pem, key.pem in dir) is for `localhost`, 127.0.0.1 and ::1, issued by
/// a test CA whose PEM is returned. The configuration permits destination `ports` and
/// loopback sources and destinations, unless `extra_yaml` (appended) sets those keys itself.
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

/// A test MX offering STARTTLS with a self-signed certificate for `mx.test`.
pub fn tls_mx(faults: Faults) -> TestMx {
    tls_mx_on("127.0.0.1:0".parse().unwrap(), faults)
}

/// [`tls_mx`] listening on `bind` (e.g. `[::1]:0`).
pub fn tls_mx_on(bind: SocketAddr, faults: Faults) -> TestMx {
    let cert = certgen::self_signed(&["mx.test"]).unwrap();
    TestMx::start(TestMxConfig {
        bind,
        starttls: Some(TlsAcceptor::from_pem(&cert.cert_pem, &cert.key_pem).unwrap()),
        faults,
        ..TestMxConfig::default()
    })
    .unwrap()
}

/// A test MX offering STARTTLS with a certificate for `mx.test` issued by a test CA, and the
/// proxy configuration that trusts that CA (`mx_tls.ca_file`, in the returned directory).
pub fn verified_mx() -> (TestMx, TempDir, String) {
    verified_mx_named("mx.test")
}

/// [`verified_mx`] with a certificate for `name`.
pub fn verified_mx_named(name: &str) -> (TestMx, TempDir, String) {
    let ca = TestCa::new("MX test CA").unwrap();
    let leaf = ca.issue(&[name]).unwrap();
    let mx = TestMx::start(TestMxConfig {
        starttls: Some(TlsAcceptor::from_pem(&leaf.cert_pem, &leaf.key_pem).unwrap()),
        ..TestMxConfig::default()
    })
    .unwrap();
    let dir = TempDir::new("ca");
    let ca_file = dir.0.join("mx-ca.pem");
    std::fs::write(&ca_file, ca.cert_pem()).unwrap();
    let yaml = format!("mx_tls:\n  ca_file: {}\n", ca_file.display());
    (mx, dir, yaml)
}

/// An IP address literal; panics on anything else.
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

/// A test needs a program that is not installed: under `CI=true` (`.ci/run` installs every
/// program the tests use) that is a failure, else the test is skipped with `why` printed.
/// Returns when the caller should skip.
pub fn missing_program(why: &str) {
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("CI=true: {why}");
    }
    eprintln!("skipped: {why}");
}
