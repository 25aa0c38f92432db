//! The MTA side: the unauthenticated deadline, a panicking session, and the MTA's next
//! request after its `221`.

use crate::capture;
use crate::common::*;
use greenarrow_proxy_client::ProxyClient;
use greenarrow_proxy_net::tls::ProxyClientTls;
use greenarrow_proxy_proto::protocol::TlsPolicy;
use greenarrow_proxy_testkit::testmx::{Faults, TestMx, TestMxConfig};
use std::io::Write;
use std::net::TcpStream;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(10);

fn plain_mx(faults: Faults) -> TestMx {
    TestMx::start(TestMxConfig {
        faults,
        ..TestMxConfig::default()
    })
    .unwrap()
}

/// One complete message through the proxy to `mx`, with a client whose reads give up after
/// `timeout`.
fn deliver(h: &Harness, mx: &TestMx, timeout: Duration) {
    let before = mx.messages().len();
    let mut cfg = h.client_config();
    cfg.timeout = timeout;
    let mut c = ProxyClient::connect(&cfg).unwrap();
    let mut s = c
        .open(&req("127.0.0.3", mx.addr(), TlsPolicy::None))
        .unwrap();
    let d = s
        .send_mail(
            "a@x.test",
            &["b@y.test"],
            b"Subject: real\r\n\r\nserved\r\n",
        )
        .unwrap();
    assert_eq!(d.final_reply.code(), 250);
    s.quit().unwrap();
    c.quit().unwrap();
    assert!(mx.wait_until(WAIT, |st| st.messages.len() == before + 1));
}

/// What a client that never authenticates sees when it sends `NOOP` every 200 ms: the replies
/// until the first that is not `250`, and whether the proxy closed the connection after it.
/// Gives up after 5 s (25 NOOPs).
fn noop_without_auth(mut raw: Raw) -> (usize, Option<String>, bool) {
    let mut ok = 0;
    for _ in 0..25 {
        if raw.s.write_all(b"NOOP\r\n").is_err() {
            return (ok, None, true);
        }
        match raw.try_reply() {
            None => return (ok, None, true),
            Some(r) if r == "250 2.0.0 ok\r\n" => ok += 1,
            Some(r) => return (ok, Some(r), raw.closed()),
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    (ok, None, false)
}

/// Issue 11 item 3: before `AUTH`, a connection is bounded by one deadline from accept
/// (`timeouts.mta_auth`) that `NOOP` does not extend. Two clients holding both workers of a
/// `max_sessions: 2` proxy with a `NOOP` every 200 ms are told `auth_timeout` and closed; then
/// a real MTA is served.
#[test]
fn unauthenticated_clients_are_closed_at_the_auth_deadline_and_free_their_workers() {
    let good = plain_mx(Faults::default());
    let h = Harness::start(
        &[good.addr().port()],
        "max_sessions: 2\ntimeouts:\n  mta_auth: 1s\n",
    );
    let idle: Vec<_> = (0..2)
        .map(|_| {
            let raw = h.raw();
            std::thread::spawn(move || noop_without_auth(raw))
        })
        .collect();
    for t in idle {
        let (ok, last, closed) = t.join().unwrap();
        assert!(ok >= 1, "NOOP before AUTH is answered");
        let last = last.expect("the proxy kept an unauthenticated client for 5 s");
        assert!(
            last.starts_with("454 4.7.0 auth_timeout "),
            "after {ok} NOOPs: {last}"
        );
        assert!(
            closed,
            "the connection is closed after the auth_timeout reply"
        );
    }
    deliver(&h, &good, Duration::from_secs(5));
}

/// Issue 11 item 8: a session job that panics is caught: logged at error level with the MTA's
/// address, counted (`session_panics`), and its worker is free again — a `max_sessions: 1`
/// proxy serves the next MTA, and a drain does not wait out its grace period.
#[test]
fn a_panicking_session_is_caught_logged_counted_and_frees_its_worker() {
    capture::install();
    let good = plain_mx(Faults::default());
    let h = Harness::start(&[good.addr().port()], "max_sessions: 1\n");
    h.server.shared().panic_next_session_for_tests();
    let tcp = TcpStream::connect(h.addr).unwrap();
    let peer = tcp.local_addr().unwrap();
    let tls = ProxyClientTls::from_ca_pem(h.ca_pem.as_bytes())
        .unwrap()
        .connect(tcp, "localhost", Duration::from_secs(10));
    if let Ok(tls) = tls {
        let mut raw = Raw::from_stream(tls);
        let _ = raw.s.write_all(b"NOOP\r\n");
        assert_eq!(
            raw.try_reply(),
            None,
            "the panicked session answers nothing"
        );
    }
    deliver(&h, &good, Duration::from_secs(5));
    assert_eq!(h.server.shared().stats().snapshot().panics, 1);
    let logged = capture::lines_where(|l| {
        l.starts_with("ERROR ") && l.contains("panicked") && l.contains(&format!("mta={peer}"))
    });
    assert_eq!(logged.len(), 1, "{logged:?}");
    let report = greenarrow_proxy::report::report_lines(&h.server.snapshot());
    assert!(
        report.last().unwrap().contains(" session_panics=1"),
        "{report:?}"
    );
    h.server.stop_accepting();
    assert!(h.server.drain(WAIT), "the drain found every worker idle");
    assert_eq!(h.server.worker_counts().busy, 0);
}

/// Issue 11 item 9c: the QUIT toward the MX after the MTA got its `221` runs off the session's
/// path. The MX never answers QUIT; the MTA's next request is answered at once, well before the
/// proxy's wait for the MX's `221` could have ended (the read gives up after 3 s).
#[test]
fn the_mtas_next_request_after_221_does_not_wait_for_the_mx_to_answer_quit() {
    let mx = plain_mx(Faults {
        silent_at: Some("QUIT".into()),
        ..Faults::default()
    });
    let h = Harness::start(&[mx.addr().port()], "");
    let mut raw = h.raw_connected(&req("127.0.0.2", mx.addr(), TlsPolicy::None));
    raw.send(b"MAIL FROM:<a@x.test>\r\n");
    assert!(raw.reply().starts_with("250 "));
    raw.send(b"QUIT\r\n");
    assert!(raw.reply().starts_with("221 "));
    raw.s
        .tcp()
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    raw.send(b"NOOP\r\n");
    assert_eq!(
        raw.try_reply().as_deref(),
        Some("250 2.0.0 ok\r\n"),
        "the NOOP after 221 waited for the MX's answer to QUIT"
    );
    // The QUIT was still sent, and the connection closed once the wait for 221 ended.
    assert!(
        mx.wait_until(WAIT, |st| st.connections.first().is_some_and(|c| c
            .commands
            .iter()
            .any(|l| l == "QUIT")
            && c.closed))
    );
}
