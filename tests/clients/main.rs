//! The real clients of `tests/frontends.rs`, checked without the proxy: directly against the
//! test MX, and through the minimal stand-in PROXY / SOCKS5 servers of `standin.rs`.
//! These pin down each command line and the exact bytes each client sends, so that a
//! failing front-end test points at the front-end. A client that is not installed is
//! skipped (`SKIP: …` on stderr); `.ci/run` installs them all.

mod standin;

use clients::{check_delivery, ehlos, Mail, SwaksProxy};
use greenarrow_proxy_testkit::fixtures::{ip, tls_mx, tls_mx_on, SECRET};
use greenarrow_proxy_testkit::mta::{clients, exim, kumo};
use greenarrow_proxy_testkit::testmx::{Faults, TestMx};
use standin::Standin;
use std::net::SocketAddr;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(10);

#[test]
fn client_versions() {
    // For the test log (and the closing note of issue 12).
    println!("{}", clients::versions());
}

// ---------------------------------------------------------------- swaks

#[test]
fn swaks_delivers_directly_with_and_without_starttls() {
    let mx = tls_mx(Faults::default());
    for (n, tls) in [false, true].into_iter().enumerate() {
        let mail = Mail::new(&format!("swaks-direct-{tls}"));
        let Some(out) = clients::swaks(mx.addr(), None, tls, &mail) else {
            return;
        };
        assert!(out.ok(), "{out}");
        assert_eq!(
            check_delivery(&mx, n, "127.0.0.1", tls, &mail),
            ehlos(&mail, tls)
        );
    }
}

#[test]
fn swaks_proxy_v1_and_v2_through_a_standin() {
    let mx = tls_mx(Faults::default());
    let pp = Standin::proxy("127.0.0.1:0");
    let port = mx.addr().port();
    for (n, (version, source, tls)) in [
        (1, "127.0.0.2", false),
        (1, "127.0.0.3", true),
        (2, "127.0.0.3", false),
        (2, "127.0.0.2", true),
    ]
    .into_iter()
    .enumerate()
    {
        let mail = Mail::new(&format!("swaks-v{version}-{source}-{tls}"));
        let p = if version == 1 {
            SwaksProxy::v1(ip(source), mx.addr())
        } else {
            SwaksProxy::v2(ip(source), mx.addr())
        };
        let Some(out) = clients::swaks(pp.addr, Some(&p), tls, &mail) else {
            return;
        };
        assert!(out.ok(), "{out}");
        check_delivery(&mx, n, source, tls, &mail);
        let header = pp.seen()[n].header.clone();
        if version == 1 {
            assert_eq!(
                String::from_utf8_lossy(&header),
                format!("PROXY TCP4 {source} 127.0.0.1 1 {port}\r\n")
            );
        } else {
            let mut want = kumo::V2_SIGNATURE.to_vec();
            want.extend([0x21, 0x11, 0x00, 0x0c]);
            want.extend(
                ip(source)
                    .to_string()
                    .parse::<std::net::Ipv4Addr>()
                    .unwrap()
                    .octets(),
            );
            want.extend([127, 0, 0, 1, 0, 1]);
            want.extend(port.to_be_bytes());
            assert_eq!(header, want, "swaks's v2 header: no TLVs, source port 1");
        }
    }
}

#[test]
fn swaks_raw_v1_sends_source_port_zero() {
    let mx = tls_mx(Faults::default());
    let pp = Standin::proxy("127.0.0.1:0");
    let text = format!("TCP4 127.0.0.5 127.0.0.1 0 {}", mx.addr().port());
    let mail = Mail::new("swaks-raw-v1");
    let Some(out) = clients::swaks(
        pp.addr,
        Some(&SwaksProxy::RawV1(text.clone())),
        false,
        &mail,
    ) else {
        return;
    };
    assert!(out.ok(), "{out}");
    check_delivery(&mx, 0, "127.0.0.5", false, &mail);
    assert_eq!(
        pp.seen()[0].header,
        format!("PROXY {text}\r\n").into_bytes()
    );
}

#[test]
fn swaks_proxy_over_ipv6_through_a_standin() {
    let mx = tls_mx_on("[::1]:0".parse().unwrap(), Faults::default());
    let pp = Standin::proxy("[::1]:0");
    for (n, p) in [
        SwaksProxy::v1(ip("::1"), mx.addr()),
        SwaksProxy::v2(ip("::1"), mx.addr()),
    ]
    .iter()
    .enumerate()
    {
        let mail = Mail::new(&format!("swaks-v6-{n}"));
        let Some(out) = clients::swaks(pp.addr, Some(p), true, &mail) else {
            return;
        };
        assert!(out.ok(), "{out}");
        check_delivery(&mx, n, "::1", true, &mail);
    }
    let seen = pp.seen();
    assert_eq!(
        String::from_utf8_lossy(&seen[0].header),
        format!("PROXY TCP6 ::1 ::1 1 {}\r\n", mx.addr().port())
    );
    assert_eq!(seen[1].header.len(), 16 + 36);
    assert_eq!(&seen[1].header[12..14], &[0x21, 0x21]);
}

// ---------------------------------------------------------------- curl

#[test]
fn curl_delivers_directly_and_through_a_socks5_standin() {
    let mx = tls_mx(Faults::default());
    let mail = Mail::new("curl-direct");
    let Some(out) = clients::curl(None, None, mx.addr(), true, &mail) else {
        return;
    };
    assert!(out.ok(), "{out}");
    assert_eq!(
        check_delivery(&mx, 0, "127.0.0.1", true, &mail),
        ehlos(&mail, true)
    );

    let socks = Standin::socks5("127.0.0.1:0", Some(SECRET));
    for (n, (source, tls)) in [("127.0.0.2", true), ("127.0.0.3", false)]
        .into_iter()
        .enumerate()
    {
        let mail = Mail::new(&format!("curl-socks-{source}"));
        let out = clients::curl(
            Some(socks.addr),
            Some((source, SECRET)),
            mx.addr(),
            tls,
            &mail,
        )
        .unwrap();
        assert!(out.ok(), "{out}");
        check_delivery(&mx, n + 1, source, tls, &mail);
        let seen = &socks.seen()[n];
        assert!(
            seen.header.starts_with(&[5]) && seen.header[2..].contains(&2),
            "{:02x?}",
            seen.header
        );
        let mut auth = vec![1, source.len() as u8];
        auth.extend(source.as_bytes());
        auth.push(SECRET.len() as u8);
        auth.extend(SECRET.as_bytes());
        assert_eq!(seen.auth.as_deref(), Some(&auth[..]));
        let mut connect = vec![5, 1, 0];
        connect.extend(kumo::socks_addr(mx.addr().ip(), mx.addr().port()));
        assert_eq!(
            seen.requests,
            vec![connect],
            "curl: one CONNECT, address type 1"
        );
    }
}

// ---------------------------------------------------------------- msmtp

#[test]
fn msmtp_delivers_directly_and_through_a_socks5_standin_with_type_3() {
    let mx = tls_mx(Faults::default());
    let mail = Mail::new("msmtp-direct");
    let Some(out) = clients::msmtp(None, mx.addr(), true, &mail) else {
        return;
    };
    assert!(out.ok(), "{out}");
    assert_eq!(
        check_delivery(&mx, 0, "127.0.0.1", true, &mail),
        ehlos(&mail, true)
    );

    let socks = Standin::socks5("127.0.0.1:0", None);
    let mail = Mail::new("msmtp-socks");
    let out = clients::msmtp(Some(socks.addr), mx.addr(), true, &mail).unwrap();
    assert!(out.ok(), "{out}");
    check_delivery(&mx, 1, "127.0.0.1", true, &mail);
    let seen = &socks.seen()[0];
    assert_eq!(seen.header, [5, 1, 0]);
    assert_eq!(seen.auth, None);
    let host = mx.addr().ip().to_string();
    let mut connect = vec![5, 1, 0, 3, host.len() as u8];
    connect.extend(host.as_bytes());
    connect.extend(mx.addr().port().to_be_bytes());
    assert_eq!(
        seen.requests,
        vec![connect],
        "msmtp: address type 3 with an IP literal"
    );
}

// ---------------------------------------------------------------- Exim

/// Exim adds a Received: header (and keeps ours): the MX gets its headers, then ours.
fn check_exim_content(mx: &TestMx, n: usize, mail: &Mail) {
    let m = &mx.messages()[n];
    let content = String::from_utf8_lossy(&m.content).into_owned();
    let ours = String::from_utf8_lossy(&mail.expected()).into_owned();
    assert!(content.starts_with("Received: from "), "{content}");
    assert!(content.ends_with(&ours), "{content}");
}

#[test]
fn exim_delivers_directly_and_through_a_socks5_standin() {
    let mx = tls_mx(Faults::default());
    let mail = Mail::new("exim-direct");
    let Some(run) = exim::exim(None, mx.addr(), true, &mail) else {
        return;
    };
    assert!(run.delivered(&mail.to), "{run}");
    assert_eq!(
        check_delivery_exim(&mx, 0, "127.0.0.1", true, &mail),
        ehlos(&mail, true)
    );

    let socks = Standin::socks5("127.0.0.1:0", Some(SECRET));
    let mail = Mail::new("exim-socks");
    let opts = format!("auth=name name=127.0.0.2 pass={SECRET}");
    let run = exim::exim(Some((socks.addr, &opts)), mx.addr(), false, &mail).unwrap();
    assert!(run.delivered(&mail.to), "{run}");
    check_delivery_exim(&mx, 1, "127.0.0.2", false, &mail);
    let seen = &socks.seen()[0];
    assert_eq!(seen.header, [5, 1, 2], "Exim offers only username/password");
    assert_eq!(&seen.auth.as_ref().unwrap()[..11], b"\x01\x09127.0.0.2");
    assert_eq!(seen.requests[0][3], 1, "Exim CONNECTs by IP");
}

fn check_delivery_exim(mx: &TestMx, n: usize, source: &str, tls: bool, mail: &Mail) -> Vec<String> {
    assert!(mx.wait_until(WAIT, |s| s.messages.len() > n));
    let m = &mx.messages()[n];
    assert_eq!(m.peer.ip(), ip(source));
    assert_eq!(m.tls, tls);
    assert_eq!(m.rcpt_to, vec![mail.to.clone()]);
    check_exim_content(mx, n, mail);
    mx.connections()[m.conn_index].ehlo_names.clone()
}

// ---------------------------------------------------------------- the KumoMTA client

#[test]
fn kumo_client_through_socks5_and_proxy_v2_standins() {
    let mx = tls_mx(Faults::default());
    let body = b"Subject: kumo\r\n\r\nhello\r\n.dot\r\n";
    let socks = Standin::socks5("127.0.0.1:0", Some(SECRET));
    let (ok, d) = kumo::deliver_socks5(
        socks.addr,
        Some(("", SECRET)),
        Some(ip("127.0.0.6")),
        mx.addr(),
        true,
        body,
    )
    .unwrap();
    assert!(d.final_reply.starts_with("250"), "{}", d.transcript);
    assert!(d.tls);
    assert_eq!(
        ok.bind_reply.as_deref(),
        Some(&[5, 0, 0, 1, 127, 0, 0, 6, 0, 0][..])
    );
    assert_eq!(ok.connect_addr().unwrap().ip(), ip("127.0.0.6"));
    assert!(mx.wait_until(WAIT, |s| s.messages.len() == 1));
    let m = &mx.messages()[0];
    assert_eq!(
        (m.peer.ip(), m.tls, &m.content[..]),
        (ip("127.0.0.6"), true, &body[..])
    );
    let seen = &socks.seen()[0];
    assert_eq!(seen.header, [5, 2, 0, 2]);
    let mut bind = vec![5, 2, 0];
    bind.extend(kumo::socks_addr(ip("127.0.0.6"), 0));
    assert_eq!(seen.requests[0], bind);

    let pp = Standin::proxy("127.0.0.1:0");
    let d = kumo::deliver_proxy_v2(pp.addr, ip("127.0.0.7"), mx.addr(), false, body).unwrap();
    assert!(d.final_reply.starts_with("250"), "{}", d.transcript);
    assert!(mx.wait_until(WAIT, |s| s.messages.len() == 2));
    let m = &mx.messages()[1];
    assert_eq!(
        (m.peer.ip(), m.tls, &m.content[..]),
        (ip("127.0.0.7"), false, &body[..])
    );
    assert_eq!(
        pp.seen()[0].header,
        kumo::proxy_v2_header(ip("127.0.0.7"), mx.addr())
    );
}

#[test]
fn kumo_proxy_v2_headers_match_the_notes() {
    // notes §1.3: 192.0.2.10 → 198.51.100.25:25.
    let h = kumo::proxy_v2_header(ip("192.0.2.10"), "198.51.100.25:25".parse().unwrap());
    let want: [u8; 28] = [
        0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a, 0x21, 0x11, 0x00,
        0x0c, 0xc0, 0x00, 0x02, 0x0a, 0xc6, 0x33, 0x64, 0x19, 0x00, 0x00, 0x00, 0x19,
    ];
    assert_eq!(h, want);
    let h6 = kumo::proxy_v2_header(ip("::1"), "[::1]:25".parse().unwrap());
    assert_eq!(h6.len(), 52);
    assert_eq!(&h6[12..16], &[0x21, 0x21, 0x00, 0x24]);
    assert_eq!(&h6[48..52], &[0, 0, 0, 25]);
}

#[test]
fn kumo_socks_requests_match_the_notes() {
    // notes §1.2: BIND 192.0.2.10:0 and CONNECT 198.51.100.25:25.
    let mut bind = vec![5, 2, 0];
    bind.extend(kumo::socks_addr(ip("192.0.2.10"), 0));
    assert_eq!(
        bind,
        [0x05, 0x02, 0x00, 0x01, 0xc0, 0x00, 0x02, 0x0a, 0x00, 0x00]
    );
    let mut connect = vec![5, 1, 0];
    connect.extend(kumo::socks_addr(ip("198.51.100.25"), 25));
    assert_eq!(
        connect,
        [0x05, 0x01, 0x00, 0x01, 0xc6, 0x33, 0x64, 0x19, 0x00, 0x19]
    );
    let a: SocketAddr = "127.0.0.2:40000".parse().unwrap();
    assert_eq!(
        kumo::reply_addr(&[5, 0, 0, 1, 127, 0, 0, 2, 0x9c, 0x40]),
        Some(a)
    );
}
