//! Connection caps count front-end connections too, and front-ends refuse at a cap with the
//! `concurrency_limit` tag after `caps.wait`.

use super::*;

#[test]
fn front_ends_at_a_connection_cap_answer_421_concurrency_limit() {
    let mx = TestMx::start(TestMxConfig::default()).unwrap();
    let yaml = format!(
        "caps:\n  wait: 200ms\n  max_connections: 1\nfrontends:\n{}{}",
        frontend(
            "proxy_protocol",
            &["mode: smtp", "tls: none", "reuse: true", "client: default"]
        ),
        frontend("proxy_protocol", &["mode: passthrough", "client: default"]),
    );
    let h = Harness::start(&[mx.addr().port()], &yaml);
    // A native session holds the only place for 127.0.0.2 → the MX.
    let mut native = h.client();
    let _held = native
        .open(&req("127.0.0.2", mx.addr(), TlsPolicy::None))
        .unwrap();
    // mode: smtp: the EHLO is answered with the 421 after the wait.
    let mut tcp = TcpStream::connect(h.frontend(0)).unwrap();
    tcp.write_all(&kumo::proxy_v2_header(ip("127.0.0.2"), mx.addr()))
        .unwrap();
    let mut smtp = Smtp::new(tcp);
    assert!(smtp.reply().unwrap().starts_with("220 "));
    let r = smtp.command("EHLO mta.check.invalid").unwrap();
    assert!(r.starts_with("421 "), "{r}");
    assert!(r.contains("greenarrow_proxy: concurrency_limit"), "{r}");
    // Passthrough: the 421 line in place of the banner.
    let mut tcp = TcpStream::connect(h.frontend(1)).unwrap();
    tcp.write_all(&kumo::proxy_v2_header(ip("127.0.0.2"), mx.addr()))
        .unwrap();
    let mut line = String::new();
    tcp.read_to_string(&mut line).unwrap();
    assert!(line.starts_with("421 "), "{line}");
    assert!(line.contains("concurrency_limit"), "{line}");
    // Nothing of theirs reached the MX; another source is not held by this cap.
    assert_eq!(mx.stats().connections, 1);
    let mut tcp = TcpStream::connect(h.frontend(1)).unwrap();
    tcp.write_all(&kumo::proxy_v2_header(ip("127.0.0.3"), mx.addr()))
        .unwrap();
    let mut smtp = Smtp::new(tcp);
    assert!(smtp.reply().unwrap().starts_with("220 "));
    assert_eq!(mx.stats().connections, 2);
    let w = h.server.shared().caps().wait_stats();
    assert_eq!((w.waited, w.timed_out), (2, 2));
}

/// A real client (curl, through SOCKS5 in smtp mode) at a cap: refused after the wait with
/// nothing sent to the MX, then delivered once the place is free.
#[test]
fn curl_through_socks5_at_a_cap_is_refused_then_delivers_when_the_place_frees() {
    let mx = TestMx::start(TestMxConfig::default()).unwrap();
    let yaml = format!(
        "caps:\n  wait: 200ms\n  max_connections: 1\nfrontends:\n{}",
        frontend(
            "socks5",
            &["mode: smtp", "tls: none", "reuse: true", "auth: password"]
        ),
    );
    let h = Harness::start(&[mx.addr().port()], &yaml);
    let mut native = h.client();
    let held = native
        .open(&req("127.0.0.2", mx.addr(), TlsPolicy::None))
        .unwrap();
    let mail = clients::Mail::new("curl-at-cap");
    let Some(out) = clients::curl(
        Some(h.frontend(0)),
        Some(("127.0.0.2", SECRET)),
        mx.addr(),
        false,
        &mail,
    ) else {
        return;
    };
    assert!(!out.ok(), "curl should fail at the cap: {out}");
    assert_eq!(mx.stats().connections, 1, "curl's session reached no MX");
    assert_eq!(h.server.shared().caps().wait_stats().timed_out, 1);
    // The held session ends (its connection closes: reuse=no): the place is free.
    held.quit().unwrap();
    native.quit().unwrap();
    let Some(out) = clients::curl(
        Some(h.frontend(0)),
        Some(("127.0.0.2", SECRET)),
        mx.addr(),
        false,
        &mail,
    ) else {
        return;
    };
    assert!(out.ok(), "{out}");
    check_delivery(&mx, 0, "127.0.0.2", false, &mail);
}
