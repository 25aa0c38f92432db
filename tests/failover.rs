//! Clients that fail over (`client::Failover`, `gaproxy send --proxy A --proxy B`): real
//! proxies and scripted fake ones on loopback — one down, one that is not TLS, one answering
//! `421 busy`, one breaking the connection at a chosen point — in front of a recording MX.
//! What counts: what the MX received (never a message twice) and which proxy was used.

mod common;

use common::*;
use greenarrow_proxy_client::{ClientError, Endpoint, Failover, ProxyClient, Stage};
use greenarrow_proxy_net::tls::TlsAcceptor;
use greenarrow_proxy_proto::protocol::{ConnectReady, Failure, FailureReply, Origin, TlsPolicy};
use greenarrow_proxy_proto::smtp::Reply;
use greenarrow_proxy_testkit::testmx::{TestMx, TestMxConfig};
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What a fake proxy does after the TLS handshake.
#[derive(Clone, Copy)]
enum Script {
    /// Answer the request with this failure (after `235` to AUTH).
    Fail(Failure),
    /// Say ready, then close when the first SMTP command (MAIL) arrives.
    CloseAtMail,
    /// Say ready, accept one message, then close at the next MAIL.
    AcceptOneThenClose,
    /// Say ready, take a whole message, close without the final reply.
    CloseBeforeFinalReply,
    /// Say ready, accept one message, answer QUIT, then close (as `timeouts.mta_idle` would).
    ServeThenClose,
}

/// A fake proxy: TLS with the harness's certificate, then `script`. Counts connections and
/// records every line received.
struct Fake {
    addr: SocketAddr,
    connections: Arc<AtomicUsize>,
    lines: Arc<Mutex<Vec<String>>>,
}

fn ready_reply(mx: SocketAddr) -> Vec<u8> {
    ConnectReady {
        origin: Origin::New,
        mx_host: None,
        remote: mx,
        local: "127.0.0.2:40000".parse().unwrap(),
        tls: None,
        tls_note: Some("fake".into()),
        tls_policy: None,
        banner: vec![b"220 fake.test".to_vec()],
        ehlo: vec![b"250-fake.test".to_vec(), b"250 PIPELINING".to_vec()],
    }
    .render()
}

impl Fake {
    fn start(h: &Harness, script: Script) -> Fake {
        let acceptor =
            TlsAcceptor::from_pem_files(&h.dir.0.join("cert.pem"), &h.dir.0.join("key.pem"))
                .unwrap();
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let connections = Arc::new(AtomicUsize::new(0));
        let lines = Arc::new(Mutex::new(Vec::new()));
        let (n, rec) = (connections.clone(), lines.clone());
        std::thread::spawn(move || {
            for tcp in l.incoming() {
                let Ok(tcp) = tcp else { return };
                n.fetch_add(1, Ordering::SeqCst);
                let Ok(tls) = acceptor.accept(tcp, Duration::from_secs(10)) else {
                    continue;
                };
                serve(tls, script, &rec, addr);
            }
        });
        Fake {
            addr,
            connections,
            lines,
        }
    }

    fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

fn serve(
    tls: greenarrow_proxy_net::tls::ServerTlsStream,
    script: Script,
    rec: &Mutex<Vec<String>>,
    me: SocketAddr,
) {
    let mut r = BufReader::new(tls);
    // AUTH, then the request.
    if read_line(&mut r, rec).is_none() || read_line(&mut r, rec).is_none() {
        return;
    }
    let mut out = b"235 2.7.0 authenticated protocol=1\r\n".to_vec();
    match script {
        Script::Fail(f) => out.extend(FailureReply::new(f, "fake").render()),
        _ => out.extend(ready_reply(me)),
    }
    let _ = r.get_mut().write_all(&out);
    let messages_before_close = match script {
        Script::Fail(_) => {
            // Wait for the client to go.
            while read_line(&mut r, rec).is_some() {}
            return;
        }
        Script::CloseAtMail => 0,
        Script::AcceptOneThenClose => 1,
        Script::CloseBeforeFinalReply => 1,
        Script::ServeThenClose => 1,
    };
    let final_reply = !matches!(script, Script::CloseBeforeFinalReply);
    for _ in 0..messages_before_close {
        // MAIL, RCPT, DATA (pipelined), then the body up to the lone dot.
        for reply in ["250 ok\r\n", "250 ok\r\n", "354 go\r\n"] {
            if read_line(&mut r, rec).is_none() {
                return;
            }
            let _ = r.get_mut().write_all(reply.as_bytes());
        }
        loop {
            match read_line(&mut r, rec) {
                None => return,
                Some(l) if l == ".\r\n" => break,
                Some(_) => {}
            }
        }
        if !final_reply {
            return;
        }
        let _ = r.get_mut().write_all(b"250 2.0.0 queued by fake\r\n");
    }
    // The next MAIL (or QUIT): close.
    if read_line(&mut r, rec).is_some() && matches!(script, Script::ServeThenClose) {
        let _ = r.get_mut().write_all(b"221 bye\r\n");
    }
}

fn read_line(
    r: &mut BufReader<greenarrow_proxy_net::tls::ServerTlsStream>,
    rec: &Mutex<Vec<String>>,
) -> Option<String> {
    let mut l = String::new();
    match r.read_line(&mut l) {
        Ok(0) | Err(_) => None,
        Ok(_) => {
            rec.lock().unwrap().push(l.trim_end().to_string());
            Some(l)
        }
    }
}

/// An address nobody listens on.
fn down() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

/// A listener that is not TLS: answers like a web server and closes.
fn not_tls() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for tcp in l.incoming() {
            let Ok(mut tcp) = tcp else { return };
            let _ = tcp.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n");
        }
    });
    addr
}

fn endpoints(addrs: &[SocketAddr]) -> Vec<Endpoint> {
    addrs
        .iter()
        .map(|&addr| Endpoint {
            addr,
            tls_name: "localhost".into(),
        })
        .collect()
}

fn failover(h: &Harness, addrs: &[SocketAddr]) -> Failover {
    let mut base = h.client_config();
    base.timeout = Duration::from_secs(10);
    let mut f = Failover::new(base, endpoints(addrs));
    f.record_transcript();
    f
}

/// One message from 127.0.0.2 to `mx`, in its own SMTP session.
fn one_message(
    mx: SocketAddr,
    subject: &str,
) -> impl FnMut(&mut ProxyClient) -> Result<(), ClientError> {
    let subject = subject.to_string();
    move |c: &mut ProxyClient| {
        let mut s = c.open(&req("127.0.0.2", mx, TlsPolicy::None))?;
        let body = format!("Subject: {subject}\r\n\r\nhi\r\n");
        s.send_mail("a@x.test", &["b@y.test"], body.as_bytes())?;
        s.quit()
    }
}

fn mx() -> TestMx {
    TestMx::start(TestMxConfig::default()).unwrap()
}

fn subjects(mx: &TestMx) -> Vec<String> {
    mx.state()
        .messages
        .iter()
        .map(|m| {
            let body = String::from_utf8_lossy(&m.content).to_string();
            body.lines().next().unwrap_or_default().to_string()
        })
        .collect()
}

#[test]
fn skips_a_down_proxy_a_tls_failure_a_busy_one_and_one_without_the_source() {
    let mx = mx();
    let h = Harness::start(&[mx.addr().port()], "");
    let busy = Fake::start(&h, Script::Fail(Failure::Busy));
    let not_local = Fake::start(&h, Script::Fail(Failure::SourceNotLocal));
    let (dead, garbage) = (down(), not_tls());
    let mut f = failover(&h, &[dead, garbage, busy.addr, not_local.addr, h.addr]);
    let t = std::time::Instant::now();
    f.run(one_message(mx.addr(), "one")).unwrap();
    // A figure for the docs, not an assertion.
    eprintln!(
        "four failing proxies skipped, message delivered, in {:?}",
        t.elapsed()
    );
    assert_eq!(subjects(&mx), ["Subject: one"]);
    assert_eq!(f.current().unwrap().addr, h.addr);
    let t = f.take_transcript().join("\n");
    for (addr, stage) in [
        (dead, "connect"),
        (garbage, "TLS handshake"),
        (busy.addr, "request: proxy refused: 421"),
        (not_local.addr, "request: proxy refused: 451"),
    ] {
        assert!(
            t.contains(&format!("*** proxy {addr} failed ({stage}")),
            "{addr}: {t}"
        );
    }
    // The busy proxy got the request (and said no): nothing was relayed anywhere else.
    assert!(busy.lines.lock().unwrap()[1].starts_with("CONNECT "));
    // The next job goes straight to the proxy that worked.
    let before = (busy.connections(), not_local.connections());
    f.run(one_message(mx.addr(), "two")).unwrap();
    assert_eq!(subjects(&mx), ["Subject: one", "Subject: two"]);
    assert_eq!((busy.connections(), not_local.connections()), before);
}

#[test]
fn a_connection_lost_before_any_message_data_moves_on() {
    let mx = mx();
    let h = Harness::start(&[mx.addr().port()], "");
    let fake = Fake::start(&h, Script::CloseAtMail);
    let mut f = failover(&h, &[fake.addr, h.addr]);
    f.run(one_message(mx.addr(), "once")).unwrap();
    assert_eq!(subjects(&mx), ["Subject: once"]);
    let got = fake.lines.lock().unwrap().clone();
    assert!(got.iter().any(|l| l.starts_with("MAIL FROM:")), "{got:?}");
    let t = f.take_transcript().join("\n");
    assert!(
        t.contains(&format!("*** proxy {} failed (envelope", fake.addr)),
        "{t}"
    );
}

#[test]
fn a_connection_lost_after_the_message_data_is_not_retried() {
    let mx = mx();
    let h = Harness::start(&[mx.addr().port()], "");
    let fake = Fake::start(&h, Script::CloseBeforeFinalReply);
    let mut f = failover(&h, &[fake.addr, h.addr]);
    let err = f.run(one_message(mx.addr(), "maybe")).unwrap_err();
    assert_eq!(err.stage, Stage::Data, "{err}");
    assert!(matches!(err.last, ClientError::Io(_)), "{err}");
    assert!(err.attempts.is_empty(), "{err}");
    // The fake got the whole message; the real proxy (and the MX) nothing.
    assert!(fake.lines.lock().unwrap().iter().any(|l| l == "hi"));
    assert_eq!(h.server.shared().stats().snapshot().sessions, 0);
    assert!(mx.state().messages.is_empty());
}

#[test]
fn a_job_is_never_rerun_after_the_mx_accepted_a_message_in_it() {
    let mx = mx();
    let h = Harness::start(&[mx.addr().port()], "");
    let fake = Fake::start(&h, Script::AcceptOneThenClose);
    let mut f = failover(&h, &[fake.addr, h.addr]);
    // Two messages in one SMTP session: the first is accepted, the session then breaks in
    // the second's envelope (a stage that alone would move on).
    let err = f
        .run(|c| {
            let mut s = c.open(&req("127.0.0.2", mx.addr(), TlsPolicy::None))?;
            s.send_mail("a@x.test", &["b@y.test"], b"Subject: first\r\n\r\nhi\r\n")?;
            s.send_mail("a@x.test", &["b@y.test"], b"Subject: second\r\n\r\nhi\r\n")?;
            s.quit()
        })
        .unwrap_err();
    assert_eq!(err.stage, Stage::Envelope, "{err}");
    assert!(err.attempts.is_empty(), "{err}");
    assert_eq!(h.server.shared().stats().snapshot().sessions, 0);
    assert!(mx.state().messages.is_empty());
}

#[test]
fn a_kept_connection_the_proxy_closed_is_replaced_by_a_fresh_one_to_the_same_proxy() {
    let mx = mx();
    let h = Harness::start(&[mx.addr().port()], "");
    let fake = Fake::start(&h, Script::ServeThenClose);
    // One proxy only: without the fresh retry the second job would have nowhere to go.
    let mut f = failover(&h, &[fake.addr]);
    f.run(one_message(mx.addr(), "first")).unwrap();
    f.run(one_message(mx.addr(), "second")).unwrap();
    assert_eq!(fake.connections(), 2);
    let t = f.take_transcript().join("\n");
    assert!(t.contains("closed the connection kept from before"), "{t}");
    let lines = fake.lines.lock().unwrap().clone();
    assert_eq!(
        lines.iter().filter(|l| l.starts_with("Subject: ")).count(),
        2,
        "{lines:?}"
    );
}

#[test]
fn a_job_that_leaves_its_smtp_session_open_does_not_spoil_the_next() {
    let mx = mx();
    let h = Harness::start(&[mx.addr().port()], "");
    let mut f = failover(&h, &[h.addr]);
    let err = f
        .run(|c| {
            let _session = c.open(&req("127.0.0.2", mx.addr(), TlsPolicy::None))?;
            // Gives up in the middle of the SMTP session, without QUIT, on an MX refusal.
            Err::<(), _>(ClientError::Smtp {
                stage: "MAIL FROM",
                reply: Reply::new_single(451, "4.3.0 try later"),
            })
        })
        .unwrap_err();
    assert_eq!(err.stage, Stage::Envelope);
    // The next job gets a fresh proxy connection, not the one still in SMTP.
    f.run(one_message(mx.addr(), "after")).unwrap();
    assert_eq!(subjects(&mx), ["Subject: after"]);
}

#[test]
fn refusals_that_every_proxy_would_give_are_returned() {
    let mx = mx();
    let h = Harness::start(&[mx.addr().port()], "");
    let h2 = Harness::start(&[mx.addr().port()], "");
    let mut f = failover(&h, &[h.addr, h2.addr]);
    // 550 source_not_permitted: a policy answer, not a proxy in trouble.
    let err = f
        .run(|c| {
            let s = c.open(&req("192.0.2.1", mx.addr(), TlsPolicy::None))?;
            s.quit()
        })
        .unwrap_err();
    match &err.last {
        ClientError::Proxy(r) => assert_eq!(r.failure, Failure::SourceNotPermitted),
        other => panic!("{other}"),
    }
    assert_eq!(h2.server.shared().stats().snapshot().sessions, 0);
}

#[test]
fn all_proxies_failing_gives_every_attempt() {
    let h = Harness::start(&[25], "");
    let busy = Fake::start(&h, Script::Fail(Failure::Busy));
    let dead = down();
    let mut f = failover(&h, &[dead, busy.addr]);
    let err = f
        .run(one_message("127.0.0.1:25".parse().unwrap(), "x"))
        .unwrap_err();
    assert_eq!(err.attempts.len(), 1, "{err}");
    assert_eq!(err.attempts[0].proxy, dead);
    assert_eq!(err.attempts[0].stage, Stage::Connect);
    match &err.last {
        ClientError::Proxy(r) => assert_eq!(r.failure, Failure::Busy),
        other => panic!("{other}"),
    }
    assert!(
        err.to_string()
            .contains(&format!("after trying {dead} (connect")),
        "{err}"
    );
}

#[test]
fn gaproxy_send_takes_several_proxies() {
    let mx = mx();
    let h = Harness::start(&[mx.addr().port()], "");
    let busy = Fake::start(&h, Script::Fail(Failure::Busy));
    std::fs::write(h.dir.0.join("secret"), SECRET).unwrap();
    std::fs::write(h.dir.0.join("ca.pem"), &h.ca_pem).unwrap();
    let dead = down();
    let out =
        std::process::Command::new(greenarrow_proxy_testkit::bin_path::workspace_bin("gaproxy"))
            .arg("send")
            .args(["--proxy", &dead.to_string()])
            .args(["--proxy", &busy.addr.to_string()])
            .args(["--proxy", &h.addr.to_string()])
            .args(["--proxy-name", "localhost", "--timeout", "10s"])
            .arg("--secret-file")
            .arg(h.dir.0.join("secret"))
            .arg("--ca-file")
            .arg(h.dir.0.join("ca.pem"))
            .args([
                "--source",
                "127.0.0.2",
                "--mx",
                "127.0.0.1",
                "--tls",
                "none",
            ])
            .args(["--port", &mx.addr().port().to_string(), "--count", "2"])
            .output()
            .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(mx.state().messages.len(), 2, "{stdout}");
    assert!(
        stdout.contains(&format!("*** proxy {dead} failed (connect")),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("*** proxy {} failed (request", busy.addr)),
        "{stdout}"
    );
    assert_eq!(
        stdout.matches("delivered to 1 recipient(s)").count(),
        2,
        "{stdout}"
    );
    // The second message went straight to the proxy that worked.
    assert_eq!(busy.connections(), 1, "{stdout}");
}
