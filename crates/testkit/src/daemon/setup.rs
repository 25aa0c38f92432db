//! The test set-up around a daemon process: a test MX with STARTTLS, a proxy configuration
//! file, clients, and helpers to read the daemon's `key=value` log lines.

use super::{Daemon, WAIT};
use crate::certgen;
use crate::fixtures::{proxy_files, req, TempDir, SECRET};
use crate::raw::Raw;
use crate::testmx::{ConnRecord, MxState, TestMx, TestMxConfig};
use greenarrow_proxy_client::{ProxyClient, ProxyClientConfig};
use greenarrow_proxy_net::tls::{ProxyClientTls, TlsAcceptor};
use greenarrow_proxy_proto::protocol::{ConnectRequest, TlsPolicy};
use std::net::SocketAddr;
use std::path::PathBuf;

/// The secret a reload switches to.
pub const NEW_SECRET: &str = "rotated-secret-fedcba9876543210-fedcba9876543210";

/// A test MX offering STARTTLS, and a proxy configuration file in a temp dir.
pub struct Setup {
    pub mx: TestMx,
    pub dir: TempDir,
    /// The configuration as first written.
    pub yaml: String,
    pub ca_pem: String,
    pub config: PathBuf,
}

impl Setup {
    pub fn new(extra_yaml: &str) -> Setup {
        let cert = certgen::self_signed(&["mx.test"]).unwrap();
        let mx = TestMx::start(TestMxConfig {
            starttls: Some(TlsAcceptor::from_pem(&cert.cert_pem, &cert.key_pem).unwrap()),
            ..TestMxConfig::default()
        })
        .unwrap();
        let (dir, yaml, ca_pem) = proxy_files(&[mx.addr().port()], extra_yaml);
        let config = dir.0.join("greenarrow_proxy.yaml");
        std::fs::write(&config, &yaml).unwrap();
        Setup {
            mx,
            dir,
            yaml,
            ca_pem,
            config,
        }
    }

    /// Replace the configuration file (the daemon reads it on SIGHUP).
    pub fn rewrite(&self, yaml: &str) {
        std::fs::write(&self.config, yaml).unwrap();
    }

    pub fn daemon(&self) -> Daemon {
        Daemon::spawn(&self.config, &[SECRET, NEW_SECRET], |_| {})
    }

    pub fn client_config(&self, proxy: SocketAddr, secret: &str) -> ProxyClientConfig {
        ProxyClientConfig {
            proxy,
            tls_name: "localhost".into(),
            tls: ProxyClientTls::from_ca_pem(self.ca_pem.as_bytes()).unwrap(),
            secret: secret.into(),
            timeout: WAIT,
        }
    }

    pub fn client(&self, proxy: SocketAddr, secret: &str) -> ProxyClient {
        ProxyClient::connect(&self.client_config(proxy, secret)).unwrap()
    }

    /// One MTA connection: open, deliver `body`, QUIT the SMTP session and the proxy.
    pub fn deliver(&self, proxy: SocketAddr, secret: &str, r: &ConnectRequest, body: &[u8]) {
        let mut c = self.client(proxy, secret);
        let mut s = c.open(r).unwrap();
        s.send_mail("a@x.test", &["b@y.test"], body).unwrap();
        s.quit().unwrap();
        c.quit().unwrap();
    }

    pub fn request(&self, source: &str, reuse: bool) -> ConnectRequest {
        let mut r = req(source, self.mx.addr(), TlsPolicy::Opportunistic);
        r.reuse = reuse;
        r
    }

    /// A raw session from `source` opened with `secret`, left in the middle of a message body
    /// (MAIL, RCPT, DATA done, `first` sent).
    pub fn session_mid_body(
        &self,
        proxy: SocketAddr,
        secret: &str,
        source: &str,
        first: &str,
    ) -> Raw {
        let mut raw = Raw::connect(proxy, &self.ca_pem);
        raw.expect(&format!("AUTH 1 {secret}\r\n"), "235 ");
        let ready = raw.expect(&self.request(source, false).to_line(), "250");
        assert!(ready.contains("250-tls=TLSv1.3"), "{ready}");
        raw.expect("MAIL FROM:<a@x.test>\r\n", "250 ");
        raw.expect("RCPT TO:<b@y.test>\r\n", "250 ");
        raw.expect("DATA\r\n", "354 ");
        raw.send(first.as_bytes());
        raw
    }
}

/// The `key=value` fields after `prefix` in a log line.
pub fn fields<'a>(line: &'a str, prefix: &str) -> Vec<(&'a str, &'a str)> {
    let (_, rest) = line
        .split_once(prefix)
        .unwrap_or_else(|| panic!("{prefix:?} not in {line:?}"));
    rest.split(' ')
        .map(|kv| {
            kv.split_once('=')
                .unwrap_or_else(|| panic!("{kv:?} in {line:?}"))
        })
        .collect()
}

/// The value of `key` in [`fields`].
pub fn field<'a>(fields: &[(&'a str, &'a str)], key: &str) -> &'a str {
    fields
        .iter()
        .find(|(k, _)| *k == key)
        .unwrap_or_else(|| panic!("no {key} in {fields:?}"))
        .1
}

/// Whether `v` looks like `12.3s`.
pub fn is_secs(v: &str) -> bool {
    v.strip_suffix('s')
        .is_some_and(|n| n.parse::<f64>().is_ok_and(|f| f >= 0.0))
}

/// The MX's record of the (first) connection from `ip`.
pub fn conn_from(st: &MxState, ip: &str) -> Option<ConnRecord> {
    st.connections
        .iter()
        .find(|c| c.peer.ip().to_string() == ip)
        .cloned()
}

/// Run `gaproxy ARGS --socket SOCKET` to its end; panics unless it succeeds.
pub fn gaproxy(args: &[&str], socket: &std::path::Path) -> std::process::Output {
    let out = std::process::Command::new(crate::bin_path::workspace_bin("gaproxy"))
        .args(args)
        .arg("--socket")
        .arg(socket)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "gaproxy {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}
