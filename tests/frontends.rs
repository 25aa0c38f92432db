//! Issue 12: unmodified MTAs deliver through the proxy's PROXY v1/v2 and SOCKS5 front-ends,
//! in `mode: passthrough` (bytes relayed, STARTTLS end to end) and `mode: smtp` (the proxy
//! owns banner/EHLO/STARTTLS/QUIT and pools MX connections).
//!
//! Real clients nobody here wrote — swaks, curl, msmtp, Exim (the test kit's `mta::clients`
//! and `mta::exim`) — and a byte-faithful KumoMTA client (`mta::kumo`) talk to the real proxy
//! (in-process `Harness`) in front of a recording test MX; every test asserts what the MX
//! recorded: the peer address (= the requested source), EHLO name, TLS, exact message bytes.
//! Each client invocation is checked without the proxy in `tests/clients`. A client that is
//! not installed is skipped (`SKIP: …`); `.ci/run` installs them all.
//!
//! The configuration contract these tests assume (appended to the harness's base config):
//! ```yaml
//! frontends:
//!   - kind: proxy_protocol        # PROXY v1 and v2, auto-detected
//!     listen: ["127.0.0.1:0", "[::1]:0"]
//!     mode: passthrough           # or: smtp
//!     client: default             # the named client whose source_addresses apply
//!   - kind: socks5
//!     listen: ["127.0.0.1:0", "[::1]:0"]
//!     mode: passthrough
//!     auth: password              # or: none (then `client` applies)
//! ```
//! In `mode: smtp` also `tls: none|opportunistic|required`, `reuse: true|false` (default
//! true), `reuse_max_messages: N`. The bound addresses: `Server::frontend_addrs(index)` (index
//! into `frontends`, in `listen` order), via `Harness::frontend(i)` / `frontend_v6(i)`.
//! SOCKS5 `auth: password`: the password is a client's secret, the user name the wanted
//! source IP literal (or empty; a BIND sets the source then). PROXY failures: one line
//! `421 4.4.0 greenarrow_proxy: <tag> <text>` as the banner, then EOF. SOCKS failures: reply
//! 02 (source or port not permitted), 05 (connection refused), 01 (source not local).
//! `mode: smtp`: the MX connection is checked in (or closed) before the MTA gets the 221 to
//! its QUIT, so the MTA's next session can reuse it.

#[path = "frontends/caps.rs"]
mod caps;
mod common;
#[path = "frontends/failures.rs"]
mod failures;
#[path = "frontends/smtp_mode.rs"]
mod smtp_mode;
#[path = "frontends/splice.rs"]
mod splice;

use clients::{check_delivery, ehlos, Mail, SwaksProxy};
use common::*;
use greenarrow_proxy_proto::protocol::{Origin, TlsPolicy};
use greenarrow_proxy_proto::smtp::dot_stuff;
use greenarrow_proxy_testkit::mta::{clients, exim, kumo};
use greenarrow_proxy_testkit::testmx::{Faults, TestMx, TestMxConfig};
use kumo::{Smtp, SocksError, Step};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(10);

/// A named client with exactly one source address, for `auth: none` / `client:`.
const SOLO: &str = "solo";
const SOLO_SOURCE: &str = "127.0.0.4";
const SOLO_SECRET: &str = "solo-secret-0123456789abcdef-0123456789abcdef";

// Front-end indexes of `passthrough_config()`.
const PP: usize = 0;
const SOCKS: usize = 1;
const SOCKS_SOLO: usize = 2;

fn solo_client() -> String {
    format!(
        "clients:\n  - name: {SOLO}\n    secrets: [\"{SOLO_SECRET}\"]\n    source_addresses: [{SOLO_SOURCE}]\n"
    )
}

fn frontend(kind: &str, lines: &[&str]) -> String {
    let mut s = format!("  - kind: {kind}\n    listen: [\"127.0.0.1:0\", \"[::1]:0\"]\n");
    for l in lines {
        s.push_str(&format!("    {l}\n"));
    }
    s
}

/// PROXY (default client), SOCKS5 with passwords, SOCKS5 without authentication for the
/// client `solo`: all passthrough.
fn passthrough_config() -> String {
    format!(
        "{}frontends:\n{}{}{}",
        solo_client(),
        frontend("proxy_protocol", &["mode: passthrough", "client: default"]),
        frontend("socks5", &["mode: passthrough", "auth: password"]),
        frontend(
            "socks5",
            &[
                "mode: passthrough",
                "auth: none",
                &format!("client: {SOLO}")
            ]
        ),
    )
}

/// One front-end of `kind` in `mode: smtp` with TLS policy `tls` (index 0).
fn smtp_mode_config(kind: &str, tls: &str) -> String {
    let auth = if kind == "socks5" {
        "auth: password"
    } else {
        "client: default"
    };
    format!(
        "frontends:\n{}",
        frontend(
            kind,
            &["mode: smtp", &format!("tls: {tls}"), "reuse: true", auth]
        )
    )
}

fn passthrough(ports: &[u16]) -> Harness {
    Harness::start(ports, &passthrough_config())
}

/// A port on 127.0.0.1 where nothing listens.
fn closed_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// The MX's raw bytes for `mail`: dot-stuffed, without the terminator.
fn stuffed(mail: &Mail) -> Vec<u8> {
    let mut v = Vec::new();
    dot_stuff(&mail.expected(), &mut v);
    v.truncate(v.len() - 3);
    v
}

/// The lines of an EHLO reply that advertise `word` (case-insensitive keyword).
fn advertises(ehlo_reply: &str, word: &str) -> bool {
    ehlo_reply.lines().skip(1).any(|l| {
        l.get(4..)
            .and_then(|k| k.split_whitespace().next())
            .is_some_and(|k| k.eq_ignore_ascii_case(word))
    })
}

// ================================================================ PROXY, passthrough: swaks

fn swaks_through_proxy(version: u8, tls: bool) {
    let mx = tls_mx(Faults::default());
    let h = passthrough(&[mx.addr().port()]);
    for (n, source) in ["127.0.0.2", "127.0.0.3"].into_iter().enumerate() {
        let mail = Mail::new(&format!("pp-v{version}-{source}-{tls}"));
        let p = match version {
            1 => SwaksProxy::v1(ip(source), mx.addr()),
            _ => SwaksProxy::v2(ip(source), mx.addr()),
        };
        let Some(out) = clients::swaks(h.frontend(PP), Some(&p), tls, &mail) else {
            return;
        };
        assert!(out.ok(), "{out}");
        // Passthrough: the MTA's own EHLO (twice with its own STARTTLS) reaches the MX.
        assert_eq!(
            check_delivery(&mx, n, source, tls, &mail),
            ehlos(&mail, tls)
        );
    }
    assert_eq!(
        mx.stats().connections,
        2,
        "one MX connection per MTA session"
    );
    assert_eq!(mx.stats().tls_handshakes, if tls { 2 } else { 0 });
    // The SIGUSR1 report counts front-end sessions and the octets passed through, once the
    // sessions have ended (swaks is gone when its QUIT is answered; the proxy may still be
    // closing): poll the counters, no fixed sleep.
    let summary = || {
        greenarrow_proxy::report::report_lines(&h.server.snapshot())
            .pop()
            .unwrap_or_default()
    };
    let field = |line: &str, key: &str| -> u64 {
        line.split(' ')
            .find_map(|kv| kv.strip_prefix(&format!("{key}=")).map(str::to_string))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let until = std::time::Instant::now() + WAIT;
    let mut line = summary();
    while field(&line, "passthrough_octets_to_mta") == 0 || h.server.worker_counts().busy > 0 {
        assert!(std::time::Instant::now() < until, "{line}");
        std::thread::sleep(Duration::from_millis(10));
        line = summary();
    }
    assert_eq!(field(&line, "frontend_sessions"), 2, "{line}");
    let up = field(&line, "passthrough_octets_to_mx");
    // At least both messages went up (more with TLS, the records' overhead).
    assert!(up as usize >= 2 * 100, "{line}");
}

#[test]
fn swaks_proxy_v1_passthrough_plaintext() {
    swaks_through_proxy(1, false);
}

#[test]
fn swaks_proxy_v1_passthrough_starttls_end_to_end() {
    swaks_through_proxy(1, true);
}

#[test]
fn swaks_proxy_v2_passthrough_plaintext() {
    swaks_through_proxy(2, false);
}

#[test]
fn swaks_proxy_v2_passthrough_starttls_end_to_end() {
    swaks_through_proxy(2, true);
}

#[test]
fn swaks_proxy_v1_and_v2_over_ipv6() {
    let mx = tls_mx_on("[::1]:0".parse().unwrap(), Faults::default());
    let h = passthrough(&[mx.addr().port()]);
    let fe = h.frontend_v6(PP);
    for (n, p) in [
        SwaksProxy::v1(ip("::1"), mx.addr()),
        SwaksProxy::v2(ip("::1"), mx.addr()),
    ]
    .iter()
    .enumerate()
    {
        let mail = Mail::new(&format!("pp-v6-{n}"));
        let Some(out) = clients::swaks(fe, Some(p), true, &mail) else {
            return;
        };
        assert!(out.ok(), "{out}");
        assert_eq!(
            check_delivery(&mx, n, "::1", true, &mail),
            ehlos(&mail, true)
        );
    }
}

#[test]
fn swaks_raw_proxy_v1_with_source_port_zero() {
    let mx = tls_mx(Faults::default());
    let h = passthrough(&[mx.addr().port()]);
    let raw = SwaksProxy::RawV1(format!("TCP4 127.0.0.5 127.0.0.1 0 {}", mx.addr().port()));
    let mail = Mail::new("pp-raw-port-0");
    let Some(out) = clients::swaks(h.frontend(PP), Some(&raw), false, &mail) else {
        return;
    };
    assert!(out.ok(), "{out}");
    check_delivery(&mx, 0, "127.0.0.5", false, &mail);
}

// ================================================================ SOCKS5, passthrough

#[test]
fn curl_socks5_user_name_is_the_source_and_password_the_secret() {
    let mx = tls_mx(Faults::default());
    let h = passthrough(&[mx.addr().port()]);
    for (n, (source, tls)) in [("127.0.0.2", true), ("127.0.0.3", false)]
        .into_iter()
        .enumerate()
    {
        let mail = Mail::new(&format!("curl-{source}"));
        let Some(out) = clients::curl(
            Some(h.frontend(SOCKS)),
            Some((source, SECRET)),
            mx.addr(),
            tls,
            &mail,
        ) else {
            return;
        };
        assert!(out.ok(), "{out}");
        assert_eq!(
            check_delivery(&mx, n, source, tls, &mail),
            ehlos(&mail, tls)
        );
    }
}

#[test]
fn msmtp_socks5_without_auth_uses_the_clients_only_source() {
    let mx = tls_mx(Faults::default());
    let h = passthrough(&[mx.addr().port()]);
    let mail = Mail::new("msmtp-solo");
    // msmtp cannot authenticate to SOCKS and sends the MX as address type 3 ("127.0.0.1").
    let Some(out) = clients::msmtp(Some(h.frontend(SOCKS_SOLO)), mx.addr(), true, &mail) else {
        return;
    };
    assert!(out.ok(), "{out}");
    assert_eq!(
        check_delivery(&mx, 0, SOLO_SOURCE, true, &mail),
        ehlos(&mail, true)
    );
}

#[test]
fn exim_socks5_auth_name_chooses_the_source() {
    let mx = tls_mx(Faults::default());
    let h = passthrough(&[mx.addr().port()]);
    let mail = Mail::new("exim-passthrough");
    let opts = format!("auth=name name=127.0.0.2 pass={SECRET}");
    let Some(run) = exim::exim(Some((h.frontend(SOCKS), &opts)), mx.addr(), true, &mail) else {
        return;
    };
    assert!(run.delivered(&mail.to), "{run}");
    // STARTTLS end to end: Exim logs the TLS it negotiated with the MX itself.
    assert!(run.mainlog.contains(" X=TLS"), "{run}");
    assert!(mx.wait_until(WAIT, |s| s.messages.len() == 1));
    let m = &mx.messages()[0];
    assert_eq!((m.peer.ip(), m.tls), (ip("127.0.0.2"), true));
    let content = String::from_utf8_lossy(&m.content).into_owned();
    let ours = String::from_utf8_lossy(&mail.expected()).into_owned();
    assert!(
        content.starts_with("Received: from ") && content.ends_with(&ours),
        "{content}"
    );
    assert_eq!(mx.connections()[0].ehlo_names, ehlos(&mail, true));
}

// ================================================================ the KumoMTA dialects

const KUMO_BODY: &[u8] = b"Subject: kumo\r\n\r\nhello\r\n.dot line\r\n";

fn check_kumo(mx: &TestMx, n: usize, source: &str, tls: bool) {
    assert!(mx.wait_until(WAIT, |s| s.messages.len() > n));
    let m = &mx.messages()[n];
    assert_eq!(m.peer.ip(), ip(source), "source address");
    assert_eq!(m.tls, tls);
    assert_eq!(m.content, KUMO_BODY);
    let names = &mx.connections()[m.conn_index].ehlo_names;
    assert_eq!(
        names,
        &vec!["kumo.check.invalid".to_string(); if tls { 2 } else { 1 }]
    );
}

#[test]
fn kumo_socks5_bind_then_connect_with_credentials_and_starttls() {
    let mx = tls_mx(Faults::default());
    let h = passthrough(&[mx.addr().port()]);
    let (ok, d) = kumo::deliver_socks5(
        h.frontend(SOCKS),
        Some(("", SECRET)),
        Some(ip("127.0.0.6")),
        mx.addr(),
        true,
        KUMO_BODY,
    )
    .unwrap();
    assert!(d.final_reply.starts_with("250"), "{}", d.transcript);
    assert!(d.tls);
    // One reply each: BIND names the source (family of the request), CONNECT the real local
    // address of the MX connection.
    let bind = ok.bind_reply.clone().unwrap();
    assert_eq!(&bind[..4], &[5, 0, 0, 1], "{bind:02x?}");
    assert_eq!(ok.connect_reply.len(), 10, "{:02x?}", ok.connect_reply);
    let local = ok.connect_addr().unwrap();
    assert_eq!(local.ip(), ip("127.0.0.6"));
    check_kumo(&mx, 0, "127.0.0.6", true);
    assert_eq!(
        mx.messages()[0].peer,
        local,
        "the CONNECT reply names the MX connection"
    );
}

#[test]
fn kumo_socks5_without_credentials_binds_the_clients_source() {
    let mx = tls_mx(Faults::default());
    let h = passthrough(&[mx.addr().port()]);
    let (_, d) = kumo::deliver_socks5(
        h.frontend(SOCKS_SOLO),
        None,
        Some(ip(SOLO_SOURCE)),
        mx.addr(),
        false,
        KUMO_BODY,
    )
    .unwrap();
    assert!(d.final_reply.starts_with("250"), "{}", d.transcript);
    check_kumo(&mx, 0, SOLO_SOURCE, false);
}

#[test]
fn kumo_socks5_over_ipv6() {
    let mx = tls_mx_on("[::1]:0".parse().unwrap(), Faults::default());
    let h = passthrough(&[mx.addr().port()]);
    let (ok, d) = kumo::deliver_socks5(
        h.frontend_v6(SOCKS),
        Some(("", SECRET)),
        Some(ip("::1")),
        mx.addr(),
        true,
        KUMO_BODY,
    )
    .unwrap();
    assert!(d.final_reply.starts_with("250"), "{}", d.transcript);
    assert_eq!(
        ok.bind_reply.unwrap()[3],
        4,
        "reply family = request family"
    );
    assert_eq!(ok.connect_reply.len(), 22);
    check_kumo(&mx, 0, "::1", true);
}

/// Issue 21: an IPv4-mapped IPv6 destination (`::ffff:a.b.c.d`) from an IPv4 source is the
/// IPv4 destination, through SOCKS5 as through the PROXY header and the native protocol.
#[test]
fn an_ipv4_mapped_destination_is_ipv4_through_socks5_and_proxy() {
    let mx = tls_mx(Faults::default());
    let h = passthrough(&[mx.addr().port()]);
    let mapped = match mx.addr() {
        SocketAddr::V4(a) => SocketAddr::new(a.ip().to_ipv6_mapped().into(), a.port()),
        a => panic!("{a} is not IPv4"),
    };
    // The source by user name, then by BIND.
    for (user, bind, source) in [
        ("127.0.0.2", None, "127.0.0.2"),
        ("", Some(ip("127.0.0.3")), "127.0.0.3"),
    ] {
        let (ok, d) = kumo::deliver_socks5(
            h.frontend(SOCKS),
            Some((user, SECRET)),
            bind,
            mapped,
            false,
            KUMO_BODY,
        )
        .unwrap_or_else(|e| panic!("from {source}: {e}"));
        assert!(d.final_reply.starts_with("250"), "{}", d.transcript);
        // The reply has the request's family: the local address, IPv4-mapped.
        assert_eq!(ok.connect_reply.len(), 22, "{:02x?}", ok.connect_reply);
        let local = ok.connect_addr().unwrap();
        assert_eq!(local.ip(), ip(&format!("::ffff:{source}")));
    }
    let d = kumo::deliver_proxy_v2(
        h.frontend(PP),
        ip("::ffff:127.0.0.7"),
        mapped,
        false,
        KUMO_BODY,
    )
    .unwrap();
    assert!(d.final_reply.starts_with("250"), "{}", d.transcript);
    // The native protocol agrees.
    let mut c = h.client();
    let mut session = c
        .open(&req("127.0.0.8", mapped, TlsPolicy::Opportunistic))
        .unwrap();
    session
        .send_mail("a@x.test", &["b@y.test"], KUMO_BODY)
        .unwrap();
    session.quit().unwrap();
    let peers: Vec<String> = mx
        .messages()
        .iter()
        .map(|m| m.peer.ip().to_string())
        .collect();
    assert_eq!(peers, ["127.0.0.2", "127.0.0.3", "127.0.0.7", "127.0.0.8"]);
}

#[test]
fn kumo_proxy_v2_with_source_port_zero() {
    let mx = tls_mx(Faults::default());
    let h = passthrough(&[mx.addr().port()]);
    let d = kumo::deliver_proxy_v2(h.frontend(PP), ip("127.0.0.7"), mx.addr(), true, KUMO_BODY)
        .unwrap();
    assert!(d.final_reply.starts_with("250"), "{}", d.transcript);
    // Passthrough: the banner is the MX's own.
    assert!(d.banner.starts_with("220 mx.test"), "{}", d.banner);
    check_kumo(&mx, 0, "127.0.0.7", true);

    let mx6 = tls_mx_on("[::1]:0".parse().unwrap(), Faults::default());
    let h6 = passthrough(&[mx6.addr().port()]);
    let d = kumo::deliver_proxy_v2(h6.frontend_v6(PP), ip("::1"), mx6.addr(), false, KUMO_BODY)
        .unwrap();
    assert!(d.final_reply.starts_with("250"), "{}", d.transcript);
    check_kumo(&mx6, 0, "::1", false);
}
