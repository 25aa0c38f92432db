//! CONNECT by name, end to end: the proxy (in this process) resolves `host=`
//! and `domain=` through the in-process DNS responder (`dns.nameservers`
//! pointing at it) and connects to test MX servers on loopback.

mod common;

use common::*;
use greenarrow_proxy_client::ClientError;
use greenarrow_proxy_proto::protocol::{
    ConnectRequest, Destination, Failure, FailureReply, Origin, TlsPolicy,
};
use greenarrow_proxy_testkit::fakedns::{FakeDns, Zone};
use greenarrow_proxy_testkit::testmx::{TestMx, TestMxConfig};
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(10);

/// The zone every test resolves in.
fn zone() -> Zone {
    Zone::new("test")
        // Two MX hosts: the preferred one refuses connections (nothing listens
        // on 127.0.0.9), the second is the test MX.
        .mx("two.test", 10, "mx1.two.test")
        .mx("two.test", 20, "mx2.two.test")
        .addr("mx1.two.test", "127.0.0.9")
        .addr("mx2.two.test", "127.0.0.1")
        // A host with both families.
        .mx("dual.test", 10, "mx.dual.test")
        .addrs("mx.dual.test", &["127.0.0.1", "::1"])
        // IPv4 only (and an implicit MX: no MX records).
        .addr("v4only.test", "127.0.0.1")
        .null_mx("nullmx.test")
        // An MX with a certificate for its name.
        .mx("tls.test", 10, "mx.tls.test")
        .addr("mx.tls.test", "127.0.0.1")
        .mx("pool.test", 10, "mx.pool.test")
        .addr("mx.pool.test", "127.0.0.1")
}

/// A proxy permitting `ports`, asking `dns` for names, with `extra` YAML.
fn proxy(ports: &[u16], dns: SocketAddr, extra: &str) -> Harness {
    Harness::start(
        ports,
        &format!("dns:\n  nameservers: [\"{dns}\"]\n  timeout: 2s\n{extra}"),
    )
}

fn plain_mx(bind: &str) -> TestMx {
    TestMx::start(TestMxConfig {
        bind: bind.parse().unwrap(),
        ..TestMxConfig::default()
    })
    .unwrap()
}

fn by(source: &str, dest: Destination, port: u16) -> ConnectRequest {
    let mut r = ConnectRequest::new(ip(source), dest, "mta.test");
    r.port = port;
    r.tls = TlsPolicy::Opportunistic;
    r
}

fn domain(d: &str) -> Destination {
    Destination::Domain(d.into())
}

fn host(h: &str) -> Destination {
    Destination::Host(h.into())
}

fn failure(e: ClientError) -> FailureReply {
    match e {
        ClientError::Proxy(f) => f,
        e => panic!("expected a proxy failure, got {e}"),
    }
}

/// AUTH and one CONNECT line on a raw connection; the reply as sent.
fn raw_connect(h: &Harness, params: &str) -> String {
    let mut raw = h.raw();
    raw.send(format!("AUTH 1 {SECRET}\r\nCONNECT {params}\r\n").as_bytes());
    let auth = raw.reply();
    assert!(auth.starts_with("235 "), "{auth}");
    raw.reply()
}

#[test]
fn domain_falls_back_to_the_next_mx_when_the_preferred_one_refuses() {
    let dns = FakeDns::zone(zone());
    let mx = plain_mx("127.0.0.1:0");
    let port = mx.addr().port();
    let h = proxy(&[port], dns.addr, "");
    let mut c = h.client();
    let mut s = c.open(&by("127.0.0.2", domain("two.test"), port)).unwrap();
    assert_eq!(s.ready.origin, Origin::New);
    assert_eq!(s.ready.mx_host.as_deref(), Some("mx2.two.test"));
    assert_eq!(s.ready.remote, mx.addr());
    assert_eq!(s.ready.local.ip(), ip("127.0.0.2"));
    s.send_mail("a@x.test", &["b@two.test"], b"via the second MX\r\n")
        .unwrap();
    s.quit().unwrap();
    c.quit().unwrap();
    assert!(mx.wait_until(WAIT, |st| st.messages.len() == 1));
    let msgs = mx.messages();
    assert_eq!(msgs[0].content, b"via the second MX\r\n");
    assert_eq!(msgs[0].peer.ip(), ip("127.0.0.2"));
    assert_eq!(mx.stats().connections, 1);
}

#[test]
fn the_source_family_picks_aaaa_or_a() {
    let dns = FakeDns::zone(zone());
    let mx4 = plain_mx("127.0.0.1:0");
    let mx6 = plain_mx("[::1]:0");
    let (p4, p6) = (mx4.addr().port(), mx6.addr().port());
    let h = proxy(&[p4, p6], dns.addr, "");
    let mut c = h.client();

    let mut s = c.open(&by("::1", domain("dual.test"), p6)).unwrap();
    assert_eq!(s.ready.mx_host.as_deref(), Some("mx.dual.test"));
    assert_eq!(s.ready.remote, SocketAddr::new(ip("::1"), p6));
    assert_eq!(s.ready.local.ip(), ip("::1"));
    s.send_mail("a@x.test", &["b@dual.test"], b"over IPv6\r\n")
        .unwrap();
    s.quit().unwrap();

    let mut s = c.open(&by("127.0.0.3", domain("dual.test"), p4)).unwrap();
    assert_eq!(s.ready.mx_host.as_deref(), Some("mx.dual.test"));
    assert_eq!(s.ready.remote, SocketAddr::new(ip("127.0.0.1"), p4));
    assert_eq!(s.ready.local.ip(), ip("127.0.0.3"));
    s.send_mail("a@x.test", &["b@dual.test"], b"over IPv4\r\n")
        .unwrap();
    s.quit().unwrap();
    c.quit().unwrap();

    assert!(mx6.wait_until(WAIT, |st| st.messages.len() == 1));
    assert!(mx4.wait_until(WAIT, |st| st.messages.len() == 1));
    assert_eq!(mx6.messages()[0].content, b"over IPv6\r\n");
    assert_eq!(mx4.messages()[0].content, b"over IPv4\r\n");
}

#[test]
fn host_by_name() {
    let dns = FakeDns::zone(zone());
    let mx = plain_mx("127.0.0.1:0");
    let port = mx.addr().port();
    let h = proxy(&[port], dns.addr, "");
    let mut c = h.client();
    // Case and a trailing dot do not matter; mx_host is the name in canonical form.
    for name in ["mx.dual.test", "MX.Dual.Test."] {
        let mut s = c.open(&by("127.0.0.2", host(name), port)).unwrap();
        assert_eq!(s.ready.mx_host.as_deref(), Some("mx.dual.test"), "{name}");
        assert_eq!(s.ready.remote, mx.addr());
        s.send_mail("a@x.test", &["b@dual.test"], b"by host name\r\n")
            .unwrap();
        s.quit().unwrap();
    }
    c.quit().unwrap();
    assert!(mx.wait_until(WAIT, |st| st.messages.len() == 2));
}

#[test]
fn dns_failures_have_their_own_codes() {
    let dns = FakeDns::zone(zone());
    let h = proxy(&[25], dns.addr, "");
    let cases = [
        (
            "source=127.0.0.2 domain=nosuch.test ehlo=mta.test",
            "552 5.1.2 dns_nxdomain ",
            "nosuch.test",
        ),
        (
            "source=127.0.0.2 host=nosuch.test ehlo=mta.test",
            "552 5.1.2 dns_nxdomain ",
            "nosuch.test",
        ),
        (
            "source=127.0.0.2 domain=nullmx.test ehlo=mta.test",
            "556 5.1.10 dns_null_mx ",
            "nullmx.test",
        ),
        (
            "source=::1 host=v4only.test ehlo=mta.test",
            "553 5.4.4 dns_no_address ",
            "v4only.test",
        ),
        (
            "source=::1 domain=v4only.test ehlo=mta.test",
            "553 5.4.4 dns_no_address ",
            "v4only.test",
        ),
    ];
    for (params, start, name) in cases {
        let reply = raw_connect(&h, params);
        assert!(reply.starts_with(start), "{params}: {reply}");
        assert!(reply.contains(name), "{params}: {reply}");
        assert_eq!(reply.lines().count(), 1, "{params}: {reply}");
    }
    // The client library reads them as permanent failures.
    let mut c = h.client();
    let f = failure(c.open(&by("::1", host("v4only.test"), 25)).err().unwrap());
    assert_eq!(f.failure, Failure::DnsNoAddress, "{f}");
    assert!(!f.failure.is_transient());
    // And the connection is still usable afterwards.
    c.noop().unwrap();
    c.quit().unwrap();
}

#[test]
fn an_unanswered_name_server_is_a_temporary_failure() {
    let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
    let h = Harness::start(
        &[25],
        &format!(
            "dns:\n  nameservers: [\"{}\"]\n  timeout: 200ms\n  attempts: 1\n",
            silent.local_addr().unwrap()
        ),
    );
    let start = Instant::now();
    let reply = raw_connect(&h, "source=127.0.0.2 domain=slow.test ehlo=mta.test");
    let elapsed = start.elapsed();
    assert!(
        reply.starts_with("450 4.4.3 dns_temporary "),
        "{reply} after {elapsed:?}"
    );
    assert!(reply.contains("slow.test"), "{reply}");
    // 200 ms x (1 retry + 1) and the safety deadline: far below the 5 s default.
    assert!(elapsed < Duration::from_secs(3), "{elapsed:?}");
    let mut c = h.client();
    let f = failure(
        c.open(&by("127.0.0.2", host("mx.slow.test"), 25))
            .err()
            .unwrap(),
    );
    assert_eq!(f.failure, Failure::DnsTemporary, "{f}");
    assert!(f.failure.is_transient());
}

#[test]
fn the_tls_name_defaults_to_the_mx_host_name() {
    let dns = FakeDns::zone(zone());
    let (mx, _dir, ca_yaml) = verified_mx_named("mx.tls.test");
    let port = mx.addr().port();
    let h = proxy(&[port], dns.addr, &ca_yaml);
    let mut c = h.client();
    for dest in [domain("tls.test"), host("mx.tls.test")] {
        let mut r = by("127.0.0.2", dest.clone(), port);
        r.tls = TlsPolicy::Verify;
        let mut s = c.open(&r).unwrap();
        assert_eq!(s.ready.mx_host.as_deref(), Some("mx.tls.test"));
        let tls = s.ready.tls.clone().expect("TLS");
        assert!(tls.verified, "{dest}: {tls:?}");
        assert_eq!(tls.peer_names, vec!["mx.tls.test".to_string()]);
        s.send_mail("a@x.test", &["b@tls.test"], b"verified\r\n")
            .unwrap();
        s.quit().unwrap();
    }
    // The same MX by IP literal has no name to verify against: the certificate
    // does not name 127.0.0.1.
    let mut r = by("127.0.0.2", Destination::Ip(ip("127.0.0.1")), port);
    r.tls = TlsPolicy::Verify;
    let f = failure(c.open(&r).err().unwrap());
    assert_eq!(f.failure, Failure::TlsVerifyFailed, "{f}");
    c.quit().unwrap();
    assert!(mx.wait_until(WAIT, |st| st.messages.len() == 2));
    assert!(mx.messages().iter().all(|m| m.tls));
}

#[test]
fn the_pool_is_keyed_by_the_mx_address_not_the_name_asked_for() {
    let dns = FakeDns::zone(zone());
    let mx = plain_mx("127.0.0.1:0");
    let port = mx.addr().port();
    let h = proxy(&[port], dns.addr, "");

    // An MTA asks by IP literal and lets the proxy keep the connection.
    let mut literal = by("127.0.0.2", Destination::Ip(ip("127.0.0.1")), port);
    literal.reuse = true;
    let mut c = h.client();
    let mut s = c.open(&literal).unwrap();
    assert_eq!(s.ready.origin, Origin::New);
    assert_eq!(s.ready.mx_host, None);
    s.send_mail("a@x.test", &["b@pool.test"], b"one\r\n")
        .unwrap();
    s.quit().unwrap();
    c.quit().unwrap();

    // Another asks by domain: its MX resolves to the same address.
    let queries_before = dns.queries.load(Ordering::SeqCst);
    let mut by_domain = by("127.0.0.2", domain("pool.test"), port);
    by_domain.reuse = true;
    let mut c = h.client();
    let mut s = c.open(&by_domain).unwrap();
    match &s.ready.origin {
        Origin::Reused { uses, messages, .. } => {
            assert_eq!(*uses, 1);
            assert_eq!(*messages, 1);
        }
        o => panic!("expected a pooled connection, got {o:?}"),
    }
    assert_eq!(s.ready.mx_host.as_deref(), Some("mx.pool.test"));
    assert_eq!(s.ready.remote, mx.addr());
    s.send_mail("a@x.test", &["b@pool.test"], b"two\r\n")
        .unwrap();
    s.quit().unwrap();
    c.quit().unwrap();
    assert!(
        dns.queries.load(Ordering::SeqCst) > queries_before,
        "the domain was resolved"
    );

    assert!(mx.wait_until(WAIT, |st| st.messages.len() == 2));
    assert_eq!(mx.stats().connections, 1, "one TCP connection for both");
    let msgs = mx.messages();
    assert_eq!(msgs[0].conn_index, msgs[1].conn_index);
    assert_eq!(msgs[1].content, b"two\r\n");
}
