//! DANE (RFC 7672) end to end with real components: nsd serving signed, unsigned and bogus
//! zones, unbound validating them with the test parent's trust anchor
//! (`greenarrow_proxy_testkit::dnssec`), the proxy asking unbound (`dns.nameservers`) and test
//! MXes with certificates made at test time. Each case asserts what the MTA was told and what
//! the MX received. Skipped (with the reason printed) where unbound, nsd or ldnsutils are
//! missing, except under CI=true.

mod common;

use common::*;
use greenarrow_proxy::shared::TlsOutcomes;
use greenarrow_proxy_client::ClientError;
use greenarrow_proxy_net::tls::TlsAcceptor;
use greenarrow_proxy_proto::protocol::{
    ConnectRequest, Destination, FailureReply, Origin, TlsPolicy,
};
use greenarrow_proxy_proto::tls_policy::rpt::{PolicyType, ResultType};
use greenarrow_proxy_proto::tls_policy::{Applied, TlsOutcome};
use greenarrow_proxy_testkit::certgen::{CertifiedPem, TestCa};
use greenarrow_proxy_testkit::dnssec::{tlsa_data, DnssecWorld, Kind, Zone};
use greenarrow_proxy_testkit::mta::kumo::Smtp;
use greenarrow_proxy_testkit::testmx::{TestMx, TestMxConfig};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(10);

/// A test MX presenting `chain_pem` (leaf first), or offering no STARTTLS at all.
fn mx(cert: Option<(&CertifiedPem, Option<&str>)>) -> TestMx {
    let starttls = cert.map(|(leaf, ca)| {
        let chain = format!("{}{}", leaf.cert_pem, ca.unwrap_or(""));
        TlsAcceptor::from_pem(&chain, &leaf.key_pem).unwrap()
    });
    TestMx::start(TestMxConfig {
        starttls,
        ..TestMxConfig::default()
    })
    .unwrap()
}

fn host_req(host: &str, port: u16, tls: TlsPolicy) -> ConnectRequest {
    let mut r = ConnectRequest::new(ip("127.0.0.2"), Destination::Host(host.into()), "mta.test");
    r.port = port;
    r.tls = tls;
    r.reuse = true;
    r
}

fn proxy(world: &DnssecWorld, ports: &[u16], extra: &str) -> Harness {
    Harness::start(
        ports,
        &format!(
            "dns:\n  nameservers: [\"{}\"]\n  timeout: 3s\n{extra}",
            world.resolver
        ),
    )
}

/// Deliver one message through `h` to `host`: the ready reply's TLS policy.
fn deliver(
    h: &Harness,
    host: &str,
    port: u16,
    tls: TlsPolicy,
) -> Result<(Applied, Origin), FailureReply> {
    let mut c = h.client();
    let mut s = match c.open(&host_req(host, port, tls)) {
        Ok(s) => s,
        Err(ClientError::Proxy(f)) => return Err(f),
        Err(e) => panic!("{host}: {e}"),
    };
    let applied = s.ready.tls_policy.expect("tls_policy= in the ready reply");
    let origin = s.ready.origin.clone();
    s.send_mail("a@x.test", &["b@y.test"], b"under DANE\r\n")
        .unwrap();
    s.quit().unwrap();
    c.quit().unwrap();
    Ok((applied, origin))
}

/// What the MX saw: messages, and whether any connection got a transaction command.
fn nothing_after_setup(mx: &TestMx) -> bool {
    mx.messages().is_empty()
        && mx.connections().iter().all(|c| {
            c.commands.iter().all(|cmd| {
                let verb = cmd
                    .split_whitespace()
                    .next()
                    .unwrap_or("")
                    .to_ascii_uppercase();
                matches!(verb.as_str(), "EHLO" | "HELO" | "STARTTLS" | "QUIT")
            })
        })
}

/// One outcome as recorded: MX host, policy type, applied, testing, result type.
type Seen = (
    Option<String>,
    PolicyType,
    Applied,
    bool,
    Option<ResultType>,
);

/// The TLS outcomes hook's calls.
#[derive(Default)]
struct Recorder(Mutex<Vec<Seen>>);

impl TlsOutcomes for Recorder {
    fn record(&self, o: &TlsOutcome<'_>) {
        self.0.lock().unwrap().push((
            o.mx_host.map(str::to_string),
            o.policy,
            o.applied,
            o.testing,
            o.result,
        ));
    }
}

#[test]
fn dane_ee_and_ta_deliver_mismatches_and_stripped_starttls_defer() {
    let ca = TestCa::new("DANE test CA").unwrap();
    let ca_pem = ca.cert_pem();
    let good = ca.issue(&["ee.s.dane.test"]).unwrap();
    let other = ca.issue(&["ee.s.dane.test"]).unwrap();
    let ta_good = ca.issue(&["ta.s.dane.test"]).unwrap();
    let ta_wrong_name = ca.issue(&["elsewhere.example"]).unwrap();
    let expired = ca.issue_expired(&["old.s.dane.test"]).unwrap();

    let ee = mx(Some((&good, None)));
    let mismatch = mx(Some((&good, None)));
    let ta = mx(Some((&ta_good, Some(&ca_pem))));
    let ta_bad = mx(Some((&ta_wrong_name, Some(&ca_pem))));
    let old_ee = mx(Some((&expired, None)));
    let old_ta = mx(Some((&expired, Some(&ca_pem))));
    let stripped = mx(None);

    let e311 = |p: &CertifiedPem| format!("TLSA 3 1 1 {}", tlsa_data(&p.cert_pem, 1, 1));
    let t201 = format!("TLSA 2 0 1 {}", tlsa_data(&ca_pem, 0, 1));
    let zone = [
        ("ee", &ee, e311(&good)),
        ("mismatch", &mismatch, e311(&other)),
        ("ta", &ta, t201.clone()),
        ("tabad", &ta_bad, t201.clone()),
        ("oldee", &old_ee, e311(&expired)),
        ("oldta", &old_ta, t201.clone()),
        ("stripped", &stripped, e311(&good)),
    ]
    .iter()
    .fold(Zone::new("s", Kind::Secure), |z, (label, m, tlsa)| {
        z.record(&format!("{label} A 127.0.0.1"))
            .record(&format!("_{}._tcp.{label} {tlsa}", m.addr().port()))
    });
    let Some(world) = DnssecWorld::start(&[zone]) else {
        return;
    };
    let ports: Vec<u16> = [&ee, &mismatch, &ta, &ta_bad, &old_ee, &old_ta, &stripped]
        .iter()
        .map(|m| m.addr().port())
        .collect();
    let h = proxy(&world, &ports, "");
    let recorder = Arc::new(Recorder::default());
    h.server.shared().set_tls_outcomes(recorder.clone());
    let port = |m: &TestMx| m.addr().port();

    // 3 1 1 matching: delivered, under DANE, whatever the request asked beyond tls=none.
    for tls in [TlsPolicy::Opportunistic, TlsPolicy::Verify] {
        let (applied, _) = deliver(&h, "ee.s.dane.test", port(&ee), tls)
            .unwrap_or_else(|f| panic!("{f}\n{}", world.logs()));
        assert_eq!(applied, Applied::DaneEe);
    }
    assert!(ee.wait_until(WAIT, |st| st.messages.len() == 2));

    // DANE-TA 2 0 1 with the TA in the chain and the right name.
    assert_eq!(
        deliver(&h, "ta.s.dane.test", port(&ta), TlsPolicy::Opportunistic)
            .unwrap()
            .0,
        Applied::DaneTa
    );
    assert!(ta.wait_until(WAIT, |st| st.messages.len() == 1));

    // DANE-EE ignores dates: an expired certificate under 3 1 1 delivers.
    assert_eq!(
        deliver(
            &h,
            "oldee.s.dane.test",
            port(&old_ee),
            TlsPolicy::Opportunistic
        )
        .unwrap()
        .0,
        Applied::DaneEe
    );
    assert!(old_ee.wait_until(WAIT, |st| st.messages.len() == 1));

    // Each of these defers with its own tag, and the MX got nothing after set-up.
    let cases = [
        (
            "mismatch",
            &mismatch,
            "dane_mismatch",
            ResultType::TlsaInvalid,
        ),
        (
            "tabad",
            &ta_bad,
            "dane_mismatch",
            ResultType::CertificateHostMismatch,
        ),
        (
            "oldta",
            &old_ta,
            "dane_mismatch",
            ResultType::CertificateExpired,
        ),
        (
            "stripped",
            &stripped,
            "dane_required",
            ResultType::StarttlsNotSupported,
        ),
    ];
    for (label, m, tag, result) in cases {
        let host = format!("{label}.s.dane.test");
        let f = deliver(&h, &host, port(m), TlsPolicy::Opportunistic)
            .err()
            .unwrap_or_else(|| panic!("{host} delivered"));
        assert_eq!(f.failure.code().tag, tag, "{host}: {f}");
        assert!(f.failure.code().reply < 500, "{host}: temporary: {f}");
        assert!(nothing_after_setup(m), "{host}: {:?}", m.connections());
        let seen = recorder.0.lock().unwrap().clone();
        assert!(
            seen.iter()
                .any(|(h, p, _, testing, r)| h.as_deref() == Some(host.as_str())
                    && *p == PolicyType::Tlsa
                    && !testing
                    && *r == Some(result)),
            "{host}: {seen:?}"
        );
    }
    let seen = recorder.0.lock().unwrap().clone();
    assert!(seen
        .iter()
        .any(|(h, _, a, _, r)| h.as_deref() == Some("ta.s.dane.test")
            && *a == Applied::DaneTa
            && r.is_none()));

    // tls=none toward secure TLSA records: refused before any dial, unless configured.
    let before = ee.stats().connections;
    let f = deliver(&h, "ee.s.dane.test", port(&ee), TlsPolicy::None).expect_err("tls=none");
    assert_eq!(f.failure.code().tag, "dane_required", "{f}");
    assert_eq!(ee.stats().connections, before, "not dialled");
    drop(h);
    let lenient = proxy(
        &world,
        &ports,
        "mx_tls:\n  allow_none_when_required: true\n",
    );
    let (applied, _) = deliver(&lenient, "ee.s.dane.test", port(&ee), TlsPolicy::None).unwrap();
    assert_eq!(applied, Applied::None);
    drop(lenient);

    // testing-only: the mismatch is delivered as asked, and counted as what enforcing found.
    let testing = proxy(&world, &ports, "mx_tls:\n  dane: testing-only\n");
    let recorder = Arc::new(Recorder::default());
    testing.server.shared().set_tls_outcomes(recorder.clone());
    let (applied, _) = deliver(
        &testing,
        "mismatch.s.dane.test",
        port(&mismatch),
        TlsPolicy::Opportunistic,
    )
    .unwrap();
    assert_eq!(applied, Applied::Opportunistic);
    assert!(mismatch.wait_until(WAIT, |st| st.messages.len() == 1));
    let seen = recorder.0.lock().unwrap().clone();
    assert!(
        seen.contains(&(
            Some("mismatch.s.dane.test".into()),
            PolicyType::Tlsa,
            Applied::Opportunistic,
            true,
            Some(ResultType::TlsaInvalid)
        )),
        "{seen:?}"
    );
}

/// A SOCKS5 client in `mode: smtp` naming the MX (address type 3): the proxy applies DANE.
#[test]
fn smtp_mode_socks5_by_name_applies_dane() {
    let ca = TestCa::new("DANE test CA").unwrap();
    let leaf = ca.issue(&["mx.f.dane.test"]).unwrap();
    let other = ca.issue(&["mx.f.dane.test"]).unwrap();
    let good = mx(Some((&leaf, None)));
    let bad = mx(Some((&leaf, None)));
    let zone = Zone::new("f", Kind::Secure)
        .record("mx A 127.0.0.1")
        .record("bad A 127.0.0.1")
        .record(&format!(
            "_{}._tcp.mx TLSA 3 1 1 {}",
            good.addr().port(),
            tlsa_data(&leaf.cert_pem, 1, 1)
        ))
        .record(&format!(
            "_{}._tcp.bad TLSA 3 1 1 {}",
            bad.addr().port(),
            tlsa_data(&other.cert_pem, 1, 1)
        ));
    let Some(world) = DnssecWorld::start(&[zone]) else {
        return;
    };
    let h = proxy(
        &world,
        &[good.addr().port(), bad.addr().port()],
        "frontends:\n  - kind: socks5\n    listen: [\"127.0.0.1:0\"]\n    mode: smtp\n    tls: opportunistic\n    auth: password\n",
    );
    let session = |name: &str, port: u16| {
        let mut tcp = TcpStream::connect(h.frontend(0)).unwrap();
        tcp.set_read_timeout(Some(WAIT)).unwrap();
        tcp.write_all(&[5, 1, 2]).unwrap();
        let mut b = [0u8; 2];
        tcp.read_exact(&mut b).unwrap();
        assert_eq!(b, [5, 2]);
        let user = "127.0.0.2";
        let mut auth = vec![1, user.len() as u8];
        auth.extend_from_slice(user.as_bytes());
        auth.push(SECRET.len() as u8);
        auth.extend_from_slice(SECRET.as_bytes());
        tcp.write_all(&auth).unwrap();
        tcp.read_exact(&mut b).unwrap();
        assert_eq!(b, [1, 0]);
        let mut connect = vec![5, 1, 0, 3, name.len() as u8];
        connect.extend_from_slice(name.as_bytes());
        connect.extend_from_slice(&port.to_be_bytes());
        tcp.write_all(&connect).unwrap();
        let mut reply = [0u8; 10];
        tcp.read_exact(&mut reply).unwrap();
        assert_eq!(reply[..2], [5, 0], "SOCKS5 success");
        let mut smtp = Smtp::new(tcp);
        assert!(smtp.reply().unwrap().starts_with("220 "));
        smtp
    };
    let mut s = session("bad.f.dane.test", bad.addr().port());
    let r = s.command("EHLO mta.test").unwrap();
    assert!(r.starts_with("421 ") && r.contains("dane_mismatch"), "{r}");
    assert!(nothing_after_setup(&bad), "{:?}", bad.connections());

    let mut s = session("mx.f.dane.test", good.addr().port());
    let r = s.command("EHLO mta.test").unwrap();
    assert!(r.starts_with("250"), "{r}\n{}", world.logs());
    let r = s
        .send_mail("a@x.test", "b@y.test", b"socks5 under DANE\r\n")
        .unwrap();
    assert!(r.starts_with("250"), "{r}");
    s.command("QUIT").unwrap();
    assert!(good.wait_until(WAIT, |st| st.messages.len() == 1));
    assert!(good.messages()[0].tls);
}

#[test]
fn bogus_tlsa_defers_and_an_insecure_zone_keeps_the_request() {
    let ca = TestCa::new("DANE test CA").unwrap();
    let leaf = ca.issue(&["mx.b.dane.test"]).unwrap();
    let bogus_mx = mx(Some((&leaf, None)));
    let insecure_mx = mx(Some((&leaf, None)));
    let tlsa = format!("TLSA 3 1 1 {}", tlsa_data(&leaf.cert_pem, 1, 1));
    // The insecure zone's record does not match: were it trusted, the delivery would defer.
    let wrong = format!("TLSA 3 1 1 {}", "ab".repeat(32));
    let bogus = Zone::new("b", Kind::Bogus)
        .record("mx A 127.0.0.1")
        .record(&format!("_{}._tcp.mx {tlsa}", bogus_mx.addr().port()));
    let insecure = Zone::new("i", Kind::Insecure)
        .record("mx A 127.0.0.1")
        .record(&format!("_{}._tcp.mx {wrong}", insecure_mx.addr().port()));
    let Some(world) = DnssecWorld::start(&[bogus, insecure]) else {
        return;
    };
    let h = proxy(
        &world,
        &[bogus_mx.addr().port(), insecure_mx.addr().port()],
        "",
    );
    let f = deliver(
        &h,
        "mx.b.dane.test",
        bogus_mx.addr().port(),
        TlsPolicy::Opportunistic,
    )
    .expect_err("a bogus TLSA answer defers");
    assert_eq!(f.failure.code().tag, "tlsa_lookup_failed", "{f}");
    assert_eq!(bogus_mx.stats().connections, 0, "not even dialled");

    let (applied, _) = deliver(
        &h,
        "mx.i.dane.test",
        insecure_mx.addr().port(),
        TlsPolicy::Opportunistic,
    )
    .unwrap_or_else(|f| panic!("{f}\n{}", world.logs()));
    assert_eq!(applied, Applied::Opportunistic);
    assert!(insecure_mx.wait_until(WAIT, |st| st.messages.len() == 1));
}

#[test]
fn a_pooled_opportunistic_connection_is_never_given_to_a_dane_request() {
    let ca = TestCa::new("DANE test CA").unwrap();
    let leaf = ca.issue(&["mx.p.dane.test"]).unwrap();
    let m = mx(Some((&leaf, None)));
    let port = m.addr().port();
    let zone = Zone::new("p", Kind::Secure)
        .record("mx A 127.0.0.1")
        .record(&format!(
            "_{port}._tcp.mx TLSA 3 1 1 {}",
            tlsa_data(&leaf.cert_pem, 1, 1)
        ));
    let Some(world) = DnssecWorld::start(&[zone]) else {
        return;
    };
    let h = proxy(&world, &[port], "");
    // By address: no name, no DANE; the connection is pooled at the end.
    let by_ip = {
        let mut r = ConnectRequest::new(
            ip("127.0.0.2"),
            Destination::Ip(ip("127.0.0.1")),
            "mta.test",
        );
        r.port = port;
        r.tls = TlsPolicy::Opportunistic;
        r.reuse = true;
        r
    };
    let mut c = h.client();
    let mut s = c.open(&by_ip).unwrap();
    assert_eq!(s.ready.tls_policy, Some(Applied::Opportunistic));
    s.send_mail("a@x.test", &["b@y.test"], b"one\r\n").unwrap();
    s.quit().unwrap();
    c.quit().unwrap();
    let (pooled, _) = h.server.shared().pool().snapshot(std::time::Instant::now());
    assert_eq!(pooled.len(), 1, "pooled");

    // The same source, EHLO name and MX address, by name under DANE: a new connection.
    let (applied, origin) = deliver(&h, "mx.p.dane.test", port, TlsPolicy::Opportunistic).unwrap();
    assert_eq!((applied, origin), (Applied::DaneEe, Origin::New));
    assert_eq!(m.stats().connections, 2);
    // The DANE connection itself is reused by the next DANE request.
    let (applied, origin) = deliver(&h, "mx.p.dane.test", port, TlsPolicy::Opportunistic).unwrap();
    assert_eq!(applied, Applied::DaneEe);
    assert!(matches!(origin, Origin::Reused { .. }), "{origin:?}");
    assert_eq!(m.stats().connections, 2);
    assert!(m.wait_until(WAIT, |st| st.messages.len() == 3));

    // The cost of the policy on a reused connection: the decision's TLSA look-up is a cache
    // hit. Printed, not asserted (a figure, not a timed test): CONNECT to ready, reused, by
    // name under DANE against by address (no look-up), one client connection each.
    let mut figures = Vec::new();
    for (what, dest) in [
        ("by name, DANE", Destination::Host("mx.p.dane.test".into())),
        ("by address", Destination::Ip(ip("127.0.0.1"))),
    ] {
        let mut c = h.client();
        let mut r = ConnectRequest::new(ip("127.0.0.2"), dest, "mta.test");
        r.port = port;
        r.reuse = true;
        const N: u32 = 50;
        let started = std::time::Instant::now();
        for _ in 0..N {
            let s = c.open(&r).unwrap();
            assert!(matches!(s.ready.origin, Origin::Reused { .. }));
            s.quit().unwrap();
        }
        figures.push(format!(
            "{what}: {:?} per reused CONNECT",
            started.elapsed() / N
        ));
        c.quit().unwrap();
    }
    eprintln!("reuse cost: {}", figures.join("; "));
    assert_eq!(m.stats().connections, 2, "every request above reused");
}

/// IPv6 as IPv4: an MX host with only an AAAA record, reached from ::1, under DANE-EE.
#[test]
fn dane_over_ipv6() {
    let ca = TestCa::new("DANE test CA").unwrap();
    let leaf = ca.issue(&["mx.v6.dane.test"]).unwrap();
    let m = TestMx::start(TestMxConfig {
        bind: "[::1]:0".parse().unwrap(),
        starttls: Some(TlsAcceptor::from_pem(&leaf.cert_pem, &leaf.key_pem).unwrap()),
        ..TestMxConfig::default()
    })
    .unwrap();
    let port = m.addr().port();
    let zone = Zone::new("v6", Kind::Secure)
        .record("mx AAAA ::1")
        .record(&format!(
            "_{port}._tcp.mx TLSA 3 1 1 {}",
            tlsa_data(&leaf.cert_pem, 1, 1)
        ));
    let Some(world) = DnssecWorld::start(&[zone]) else {
        return;
    };
    let h = proxy(&world, &[port], "");
    let mut c = h.client();
    let mut r = host_req("mx.v6.dane.test", port, TlsPolicy::Opportunistic);
    r.source = ip("::1");
    let mut s = c
        .open(&r)
        .unwrap_or_else(|e| panic!("{e}\n{}", world.logs()));
    assert_eq!(s.ready.tls_policy, Some(Applied::DaneEe));
    assert_eq!(s.ready.remote, m.addr());
    s.send_mail("a@x.test", &["b@y.test"], b"over IPv6\r\n")
        .unwrap();
    s.quit().unwrap();
    c.quit().unwrap();
    assert!(m.wait_until(WAIT, |st| st.messages.len() == 1));
    assert!(m.messages()[0].tls);
}
