//! Access control: named clients and secret rotation, mutual TLS, the destination policy,
//! per-address session limits and the session lifetime.

mod common;

use common::*;
use greenarrow_proxy_client::{ClientError, ProxyClient};
use greenarrow_proxy_net::tls::ProxyClientTls;
use greenarrow_proxy_proto::protocol::{Failure, TlsPolicy};
use greenarrow_proxy_testkit::certgen::TestCa;
use greenarrow_proxy_testkit::testmx::{TestMx, TestMxConfig};
use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(10);
const A_NEW: &str = "client-a-secret-new-0123456789abcdef";
const A_OLD: &str = "client-a-secret-old-0123456789abcdef";
const B: &str = "client-b-secret-0123456789abcdef-xyz";

fn failure(e: ClientError) -> Failure {
    match e {
        ClientError::Proxy(f) => f.failure,
        other => panic!("expected a proxy failure, got {other}"),
    }
}

fn client_with(h: &Harness, secret: &str) -> ProxyClient {
    let mut cfg = h.client_config();
    cfg.secret = secret.into();
    ProxyClient::connect(&cfg).unwrap()
}

#[test]
fn named_clients_have_their_own_secrets_and_source_addresses() {
    let mx = TestMx::start(TestMxConfig::default()).unwrap();
    let clients = format!(
        "clients:\n  - name: a\n    secrets: [\"{A_NEW}\", \"{A_OLD}\"]\n    source_addresses: [127.0.0.2]\n  - name: b\n    secrets: [\"{B}\"]\n    source_addresses: [127.0.0.3]\n"
    );
    let h = Harness::start(&[mx.addr().port()], &clients);
    // Both of client a's secrets work (rotation), for its own source only.
    for secret in [A_NEW, A_OLD] {
        let mut c = client_with(&h, secret);
        let mut s = c
            .open(&req("127.0.0.2", mx.addr(), TlsPolicy::None))
            .unwrap();
        s.send_mail("a@x.test", &["b@y.test"], b"from a\r\n")
            .unwrap();
        s.quit().unwrap();
        let e = c
            .open(&req("127.0.0.3", mx.addr(), TlsPolicy::None))
            .err()
            .unwrap();
        assert_eq!(failure(e), Failure::SourceNotPermitted);
    }
    let mut c = client_with(&h, B);
    let e = c
        .open(&req("127.0.0.2", mx.addr(), TlsPolicy::None))
        .err()
        .unwrap();
    assert_eq!(failure(e), Failure::SourceNotPermitted);
    let mut s = c
        .open(&req("127.0.0.3", mx.addr(), TlsPolicy::None))
        .unwrap();
    s.send_mail("a@x.test", &["b@y.test"], b"from b\r\n")
        .unwrap();
    s.quit().unwrap();
    // The top-level secret (client "default") keeps working with the top-level sources.
    let mut c = h.client();
    let mut s = c
        .open(&req("127.0.0.4", mx.addr(), TlsPolicy::None))
        .unwrap();
    s.send_mail("a@x.test", &["b@y.test"], b"from default\r\n")
        .unwrap();
    s.quit().unwrap();
    assert!(mx.wait_until(WAIT, |st| st.messages.len() == 4));
    let peers: Vec<String> = mx
        .messages()
        .iter()
        .map(|m| m.peer.ip().to_string())
        .collect();
    assert_eq!(peers, ["127.0.0.2", "127.0.0.2", "127.0.0.3", "127.0.0.4"]);
    // A wrong secret is refused.
    let mut c = client_with(&h, "client-a-secret-bad-0123456789abcdef");
    let e = c
        .open(&req("127.0.0.2", mx.addr(), TlsPolicy::None))
        .err()
        .unwrap();
    assert_eq!(failure(e), Failure::AuthFailed);
}

#[test]
fn a_client_certificate_authenticates_without_a_secret() {
    let mx = TestMx::start(TestMxConfig::default()).unwrap();
    let client_ca = TestCa::new("MTA client CA").unwrap();
    let dir = TempDir::new("mtls");
    let ca_path = dir.0.join("client-ca.pem");
    std::fs::write(&ca_path, client_ca.cert_pem()).unwrap();
    let yaml = format!(
        "tls_client_ca: {}\nclients:\n  - name: certs\n    tls_client_names: [mta1.test]\n    source_addresses: [127.0.0.5]\n",
        ca_path.display()
    );
    let h = Harness::start(&[mx.addr().port()], &yaml);
    let connect = |tls: ProxyClientTls| {
        let tcp = TcpStream::connect(h.addr).unwrap();
        tls.connect(tcp, "localhost", Duration::from_secs(5))
    };
    let base = ProxyClientTls::from_ca_pem(h.ca_pem.as_bytes()).unwrap();

    // A certificate for mta1.test from the client CA: CONNECT works without AUTH.
    let leaf = client_ca.issue(&["mta1.test"]).unwrap();
    let tls = base
        .clone()
        .with_client_cert(leaf.cert_pem.as_bytes(), leaf.key_pem.as_bytes())
        .unwrap();
    let mut raw = Raw::from_stream(connect(tls).unwrap());
    raw.send(
        req("127.0.0.5", mx.addr(), TlsPolicy::None)
            .to_line()
            .as_bytes(),
    );
    let ready = raw.reply();
    assert!(ready.ends_with("250 ready\r\n"), "{ready}");
    raw.send(b"MAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\nDATA\r\n");
    raw.reply();
    raw.reply();
    assert!(raw.reply().starts_with("354"));
    raw.send(b"by certificate\r\n.\r\nQUIT\r\n");
    assert!(raw.reply().starts_with("250"));
    assert!(raw.reply().starts_with("221"));
    assert!(mx.wait_until(WAIT, |st| st.messages.len() == 1));

    // A certificate from another CA: the handshake fails.
    let other = TestCa::new("rogue CA")
        .unwrap()
        .issue(&["mta1.test"])
        .unwrap();
    let tls = base
        .clone()
        .with_client_cert(other.cert_pem.as_bytes(), other.key_pem.as_bytes())
        .unwrap();
    let refused = connect(tls).and_then(|s| {
        let mut r = Raw::from_stream(s);
        r.s.write_all(b"NOOP\r\n")
            .map_err(greenarrow_proxy_net::tls::TlsError::Io)?;
        match r.try_reply() {
            Some(rep) => Ok(rep),
            None => Err(greenarrow_proxy_net::tls::TlsError::ClosedDuringHandshake),
        }
    });
    assert!(refused.is_err(), "{refused:?}");

    // A certificate from the CA with a name no client has, or no certificate: AUTH needed.
    let stranger = client_ca.issue(&["stranger.test"]).unwrap();
    let tls = base
        .clone()
        .with_client_cert(stranger.cert_pem.as_bytes(), stranger.key_pem.as_bytes())
        .unwrap();
    let mut raw = Raw::from_stream(connect(tls).unwrap());
    raw.send(
        req("127.0.0.5", mx.addr(), TlsPolicy::None)
            .to_line()
            .as_bytes(),
    );
    assert!(raw.reply().starts_with("530 5.7.0 auth_required"));
    let mut raw = Raw::from_stream(connect(base).unwrap());
    raw.send(
        req("127.0.0.5", mx.addr(), TlsPolicy::None)
            .to_line()
            .as_bytes(),
    );
    assert!(raw.reply().starts_with("530 5.7.0 auth_required"));
    assert_eq!(mx.stats().connections, 1);
}

#[test]
fn internal_destinations_are_refused_by_default() {
    let mx = TestMx::start(TestMxConfig::default()).unwrap();
    // An explicit (empty) destination_allow: the default deny list applies to loopback.
    let h = Harness::start(&[mx.addr().port()], "destination_allow: []\n");
    let mut c = h.client();
    let e = c
        .open(&req("127.0.0.2", mx.addr(), TlsPolicy::None))
        .err()
        .unwrap();
    let ClientError::Proxy(f) = e else { panic!() };
    assert_eq!(f.failure, Failure::DestinationNotPermitted);
    assert!(f.text.contains("destination_deny"), "{f}");
    assert_eq!(mx.stats().connections, 0, "nothing was dialled");
}

#[test]
fn sessions_per_address_are_limited() {
    let h = Harness::start(&[25], "max_sessions_per_ip: 2\n");
    let mut a = h.client();
    a.authenticate().unwrap();
    let mut b = h.client();
    b.authenticate().unwrap();
    // The third connection from the same address is closed before TLS.
    let tcp = TcpStream::connect(h.addr).unwrap();
    let r = ProxyClientTls::from_ca_pem(h.ca_pem.as_bytes())
        .unwrap()
        .connect(tcp, "localhost", Duration::from_secs(5));
    assert!(r.is_err());
    let refused = h.server.shared().stats().snapshot().refused_per_ip;
    assert_eq!(refused, 1);
    // The two sessions still work.
    a.noop().unwrap();
    b.noop().unwrap();
}

#[test]
fn the_session_lifetime_ends_the_connection_with_421() {
    let h = Harness::start(&[25], "timeouts:\n  session_lifetime: 1s\n");
    let mut r = h.raw();
    let started = Instant::now();
    r.send(format!("AUTH 1 {SECRET}\r\n").as_bytes());
    assert!(r.reply().starts_with("235"));
    // Say nothing more: the proxy ends the connection at the deadline.
    let rep = r.reply();
    assert!(
        rep.starts_with("421 4.4.2 session lifetime exceeded"),
        "{rep}"
    );
    assert!(started.elapsed() >= Duration::from_millis(900));
    assert!(r.closed());
}
