//! Test harness: a real proxy (in this process, real sockets, real TLS with certificates made
//! now) in front of real test MX servers on loopback.
//!
//! Only what needs the daemon's library in-process is here; what the tests share otherwise is
//! in the test kit and re-exported below, so that `use common::*` brings a test's usual set.
#![allow(dead_code)]

use greenarrow_proxy::config::Config;
use greenarrow_proxy::server::{Runtime, Server};
use greenarrow_proxy_client::{ProxyClient, ProxyClientConfig};
use greenarrow_proxy_net::tls::ProxyClientTls;
use greenarrow_proxy_proto::protocol::ConnectRequest;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

// Each test uses some of them.
#[allow(unused_imports)]
pub use greenarrow_proxy_testkit::fixtures::{
    ip, proxy_files, req, tls_mx, tls_mx_on, verified_mx, verified_mx_named, TempDir, SECRET,
};
#[allow(unused_imports)]
pub use greenarrow_proxy_testkit::raw::{exchange, Raw};

/// A proxy started in this process from a configuration written by [`proxy_files`]; drained
/// on drop.
pub struct Harness {
    pub server: Arc<Server>,
    pub addr: SocketAddr,
    pub ca_pem: String,
    pub dir: TempDir,
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
        Raw::connect(self.addr, &self.ca_pem)
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.server.stop_accepting();
        self.server.drain(Duration::from_secs(5));
    }
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
