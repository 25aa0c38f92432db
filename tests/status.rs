//! The live status view: the control socket (`gaproxy status`, `drain`, `undrain`, run as real
//! processes against a real proxy on loopback) and the metrics listener (scraped over HTTP).

mod common;
// The metrics listener, scraped over HTTP.
#[path = "status/metrics.rs"]
mod metrics;
// A real scrape against promtool, the shipped alerts and dashboard; reloads in status.
#[path = "status/monitoring.rs"]
mod monitoring;

use common::*;
use greenarrow_proxy_client::ClientError;
use greenarrow_proxy_proto::protocol::{ConnectRequest, Failure, Origin, TlsPolicy};
use greenarrow_proxy_testkit::daemon::setup;
use greenarrow_proxy_testkit::daemon::setup::gaproxy;
use greenarrow_proxy_testkit::testmx::{Faults, TestMx};
use serde_json::Value;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(10);

fn reuse_req(source: &str, mx: SocketAddr) -> ConnectRequest {
    let mut r = req(source, mx, TlsPolicy::Opportunistic);
    r.reuse = true;
    r
}

/// One MTA connection delivering `n` messages, then QUIT: returns how its MX connection came.
fn deliver(h: &Harness, r: &ConnectRequest, n: usize) -> Origin {
    let mut c = h.client();
    let mut s = c.open(r).unwrap();
    let origin = s.ready.origin.clone();
    for i in 0..n {
        s.send_mail(
            "a@x.test",
            &["b@y.test"],
            format!("message {i}\r\n").as_bytes(),
        )
        .unwrap();
    }
    s.quit().unwrap();
    c.quit().unwrap();
    origin
}

fn failure(h: &Harness, r: &ConnectRequest) -> Failure {
    let mut c = h.client();
    match c.open(r) {
        Err(ClientError::Proxy(f)) => f.failure,
        Err(e) => panic!("expected a proxy failure, got {e}"),
        Ok(_) => panic!("expected a proxy failure, got a connection"),
    }
}

/// A proxy with its control socket in its own directory, and `extra` configuration.
fn proxy(mx: &TestMx, extra: &str) -> (Harness, PathBuf) {
    let h = Harness::start(
        &[mx.addr().port()],
        &format!("control_socket: control.sock\n{extra}"),
    );
    let path = h.dir.0.join("control.sock");
    assert_eq!(h.server.control_path().as_deref(), Some(path.as_path()));
    (h, path)
}

fn status_json(socket: &Path) -> Value {
    let out = gaproxy(&["status", "--json"], socket);
    serde_json::from_slice(&out.stdout).unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The idle connections the status shows for `source`.
fn idle_of(st: &Value, source: &str) -> Vec<Value> {
    st["pools"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["source"] == source)
        .flat_map(|p| p["idle"].as_array().unwrap().clone())
        .collect()
}

#[test]
fn gaproxy_status_json_shows_the_pooled_connection_and_the_counters() {
    let mx = tls_mx(Faults::default());
    let (h, socket) = proxy(&mx, "");
    let r = reuse_req("127.0.0.2", mx.addr());
    assert_eq!(deliver(&h, &r, 2), Origin::New);
    assert!(mx.wait_until(WAIT, |s| s.stats.messages == 2));

    let st = status_json(&socket);
    assert_eq!(st["version"], 1);
    let pools = st["pools"].as_array().unwrap();
    assert_eq!(pools.len(), 1, "{st:#}");
    let p = &pools[0];
    assert_eq!(p["source"], "127.0.0.2");
    assert_eq!(p["ehlo"], "mta.test");
    assert_eq!(p["mx"], mx.addr().to_string());
    assert_eq!(p["in_use"], 0);
    let idle = p["idle"].as_array().unwrap();
    assert_eq!(idle.len(), 1, "{st:#}");
    assert_eq!(idle[0]["uses"], 1);
    assert_eq!(idle[0]["messages"], 2);
    // The MX's own record of the TLS session is what the status reports.
    let conn = &mx.connections()[0];
    assert_eq!(idle[0]["tls_version"].as_str(), conn.tls_version.as_deref());
    assert_eq!(idle[0]["tls_cipher"].as_str(), conn.tls_cipher.as_deref());
    assert!(idle[0]["last_mta"]
        .as_str()
        .unwrap()
        .starts_with("127.0.0.1:"));
    assert!(idle[0]["age_seconds"].as_f64().unwrap() >= idle[0]["idle_seconds"].as_f64().unwrap());
    let c = &st["counters"];
    assert_eq!(c["pooled"], 1);
    assert_eq!(c["pool_stored"], 1);
    assert_eq!(c["pool_misses"], 1);
    assert_eq!(c["connects"], 1);
    assert_eq!(c["messages"], 2);
    assert_eq!(c["sessions_total"], 1);
    assert_eq!(c["tls_handshakes_mx"], 1);
    assert_eq!(c["tls_handshakes_mta"], 1);
    // The counters are the SIGUSR1 report's, same names.
    let summary = greenarrow_proxy::report::report_lines(&h.server.snapshot())
        .pop()
        .unwrap();
    let names: Vec<&str> = c.as_object().unwrap().keys().map(String::as_str).collect();
    let report_names: Vec<&str> = summary
        .split(' ')
        .skip(1)
        .filter_map(|kv| kv.split_once('=').map(|(k, _)| k))
        .filter(|k| {
            ![
                "per_key",
                "failures",
                "tls_rpt_successes",
                "tls_rpt_failures",
            ]
            .contains(k)
        })
        .collect();
    // In the same order (the wire JSON and serde_json's Value keep it).
    assert_eq!(names, report_names);
    // Caps (filled in by the caps ledger) and waits are there, of their type.
    assert!(st["caps"].is_array());
    assert!(st["waits"]["waited"].is_u64() && st["waits"]["buckets"].is_array());
    assert!(st["failures"]
        .as_array()
        .unwrap()
        .iter()
        .any(|f| f["tag"] == "drained" && f["code"] == 453 && f["count"] == 0));
    assert_eq!(st["drains"]["sources"], Value::Array(vec![]));

    // Without --json: the same figures, as tables.
    let text = stdout(&gaproxy(&["status"], &socket));
    assert!(text.contains("Idle pooled connections:"), "{text}");
    assert!(
        text.lines()
            .any(|l| l.trim_start().starts_with("127.0.0.2") && l.contains(&mx.addr().to_string())),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.split_whitespace().eq(["messages", "2"])),
        "{text}"
    );
}

#[test]
fn drain_closes_idle_connections_refuses_new_ones_and_undrain_restores() {
    let mx = tls_mx(Faults::default());
    let (h, socket) = proxy(&mx, "");
    let a = reuse_req("127.0.0.2", mx.addr());
    let b = reuse_req("127.0.0.3", mx.addr());
    deliver(&h, &a, 1);
    deliver(&h, &b, 1);
    assert_eq!(mx.stats().connections, 2);

    let out = stdout(&gaproxy(&["drain", "--source", "127.0.0.2"], &socket));
    assert!(
        out.contains("drained source 127.0.0.2: 1 idle pooled connection(s) closed"),
        "{out}"
    );
    // The MX saw QUIT on the connection from 127.0.0.2, and only on that one.
    let from = |ip: &str| {
        let ip: IpAddr = ip.parse().unwrap();
        move |c: &greenarrow_proxy_testkit::testmx::ConnRecord| c.peer.ip() == ip
    };
    assert!(mx.wait_until(WAIT, |s| s
        .connections
        .iter()
        .any(|c| from("127.0.0.2")(c) && c.quit_received && c.closed)));
    assert!(!mx
        .connections()
        .iter()
        .any(|c| from("127.0.0.3")(c) && c.quit_received));

    // New connections from it: 453 drained, nothing sent to the MX.
    assert_eq!(failure(&h, &a), Failure::Drained);
    assert_eq!(
        Failure::Drained.code(),
        greenarrow_proxy_proto::protocol::Code {
            reply: 453,
            enhanced: "4.3.2",
            tag: "drained"
        }
    );
    assert_eq!(mx.stats().connections, 2);
    // The other source still works, on its pooled connection.
    assert!(matches!(deliver(&h, &b, 1), Origin::Reused { .. }));
    let st = status_json(&socket);
    assert_eq!(st["drains"]["sources"], serde_json::json!(["127.0.0.2"]));
    assert!(idle_of(&st, "127.0.0.2").is_empty());
    assert_eq!(idle_of(&st, "127.0.0.3").len(), 1);
    assert!(st["failures"]
        .as_array()
        .unwrap()
        .iter()
        .any(|f| f["tag"] == "drained" && f["count"] == 1));

    let out = stdout(&gaproxy(&["undrain", "--source", "127.0.0.2"], &socket));
    assert!(
        out.contains("undrained 1") && out.contains("drains in force: none"),
        "{out}"
    );
    assert_eq!(deliver(&h, &a, 1), Origin::New);
    assert_eq!(mx.stats().connections, 3);
    assert!(mx.wait_until(WAIT, |s| s.stats.messages == 4));
}

#[test]
fn a_connection_in_use_when_drained_finishes_its_session_and_is_not_pooled() {
    let mx = tls_mx(Faults::default());
    let (h, socket) = proxy(&mx, "");
    let r = reuse_req("127.0.0.2", mx.addr());
    let mut c = h.client();
    let mut s = c.open(&r).unwrap();
    s.send_mail("a@x.test", &["b@y.test"], b"before\r\n")
        .unwrap();
    // Drained by MX address (every port) while the session is in progress.
    let out = stdout(&gaproxy(&["drain", "--mx", "127.0.0.1"], &socket));
    assert!(out.contains("0 idle pooled connection(s) closed"), "{out}");
    s.send_mail("a@x.test", &["b@y.test"], b"after\r\n")
        .unwrap();
    s.quit().unwrap();
    c.quit().unwrap();
    // Both messages went through; then QUIT, and nothing pooled.
    assert!(mx.wait_until(WAIT, |s| s.stats.messages == 2
        && s.connections
            .first()
            .is_some_and(|c| c.quit_received && c.closed)));
    let st = status_json(&socket);
    assert_eq!(st["counters"]["pooled"], 0, "{st:#}");
    assert_eq!(st["drains"]["mx"], serde_json::json!(["127.0.0.1"]));
    // Every source is refused for that MX.
    assert_eq!(
        failure(&h, &reuse_req("127.0.0.3", mx.addr())),
        Failure::Drained
    );
    gaproxy(&["undrain", "--all"], &socket);
    assert_eq!(deliver(&h, &r, 1), Origin::New);
}

#[test]
fn the_smtp_aware_front_end_obeys_a_drain_too() {
    let mx = tls_mx(Faults::default());
    let (h, socket) = proxy(
        &mx,
        "frontends:\n  - kind: proxy_protocol\n    listen: [\"127.0.0.1:0\"]\n    mode: smtp\n",
    );
    gaproxy(&["drain", "--source", "127.0.0.2"], &socket);
    let mut tcp = TcpStream::connect(h.frontend(0)).unwrap();
    tcp.set_read_timeout(Some(WAIT)).unwrap();
    let header = format!(
        "PROXY TCP4 127.0.0.2 {} 40000 {}\r\n",
        mx.addr().ip(),
        mx.addr().port()
    );
    tcp.write_all(header.as_bytes()).unwrap();
    let mut read = std::io::BufReader::new(tcp.try_clone().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut read, &mut line).unwrap();
    assert!(line.starts_with("220 "), "{line}");
    tcp.write_all(b"EHLO mta.test\r\n").unwrap();
    let mut answer = String::new();
    read.read_to_string(&mut answer).unwrap();
    assert!(
        answer.starts_with("421 ") && answer.contains("drained"),
        "{answer}"
    );
    assert_eq!(mx.stats().connections, 0);
}

#[test]
fn the_control_socket_is_0660_and_answers_bad_requests_with_clear_errors() {
    let mx = tls_mx(Faults::default());
    let (h, socket) = proxy(&mx, "");
    let meta = std::fs::metadata(&socket).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o660);

    let ask = |bytes: &[u8]| -> Value {
        let mut s = UnixStream::connect(&socket).unwrap();
        s.set_read_timeout(Some(WAIT)).unwrap();
        s.write_all(bytes).unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).unwrap();
        assert!(text.ends_with('\n'), "{text:?}");
        serde_json::from_str(&text).unwrap()
    };
    let v = ask(b"frobnicate now\n");
    assert_eq!(v["ok"], false);
    assert_eq!(
        v["error"],
        "unknown request \"frobnicate\" (expected status, drain or undrain)"
    );
    let v = ask(b"drain source mx.example\n");
    assert_eq!(v["error"], "\"mx.example\" is not an IP address");
    let v = ask(b"undrain source 127.0.0.9\n");
    assert_eq!(v["error"], "source 127.0.0.9 is not drained");
    let v = ask(&[b'x'; 600]);
    assert_eq!(v["error"], "request longer than 512 bytes");
    // A client that sends nothing gets an answer saying so (the thread moves on).
    let mut silent = UnixStream::connect(&socket).unwrap();
    silent.set_read_timeout(Some(WAIT)).unwrap();
    let mut text = String::new();
    silent.read_to_string(&mut text).unwrap();
    assert!(
        text.contains("no complete request line within 2s"),
        "{text}"
    );
    // gaproxy says what went wrong and fails.
    let out = Command::new(greenarrow_proxy_testkit::bin_path::workspace_bin("gaproxy"))
        .args(["undrain", "--mx", "127.0.0.1:25", "--socket"])
        .arg(&socket)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "gaproxy: refused: mx 127.0.0.1:25 is not drained\n"
    );
    let out = Command::new(greenarrow_proxy_testkit::bin_path::workspace_bin("gaproxy"))
        .args(["status", "--socket"])
        .arg(h.dir.0.join("nothing-here.sock"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cannot connect to the control socket"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Stopping the proxy removes its socket.
    h.server.stop_accepting();
    assert!(h.server.drain(Duration::from_secs(5)));
    assert!(!socket.exists());
}

#[test]
fn the_daemon_keeps_drains_over_sighup_and_moves_its_control_socket_with_the_file() {
    let s = setup::Setup::new("control_socket: control.sock\n");
    let mut d = s.daemon();
    let socket = s.dir.0.join("control.sock");
    d.wait_for(&format!("control socket on {}", socket.display()));
    let addr = d.wait_ready()[0];
    s.deliver(addr, SECRET, &s.request("127.0.0.2", true), b"hello\r\n");
    d.wait_for("kept for reuse");
    let out = stdout(&gaproxy(&["drain", "--source", "127.0.0.2"], &socket));
    assert!(out.contains("1 idle pooled connection(s) closed"), "{out}");
    d.wait_for("control: drained source 127.0.0.2");

    // A reload that moves the control socket: the drain stays, the old socket goes.
    s.rewrite(&s.yaml.replace("control.sock", "moved.sock"));
    d.signal(nix::sys::signal::Signal::SIGHUP);
    d.wait_for("configuration reloaded from");
    let moved = s.dir.0.join("moved.sock");
    assert!(!socket.exists());
    let st = status_json(&moved);
    assert_eq!(st["drains"]["sources"], serde_json::json!(["127.0.0.2"]));
    let mut c = s.client(addr, SECRET);
    match c.open(&s.request("127.0.0.2", true)) {
        Err(ClientError::Proxy(f)) => assert_eq!(f.failure, Failure::Drained),
        other => panic!("expected 453 drained, got {:?}", other.map(|_| ())),
    }
    s.deliver(addr, SECRET, &s.request("127.0.0.3", true), b"other\r\n");

    d.signal(nix::sys::signal::Signal::SIGTERM);
    assert!(d.wait_exit().success());
    assert!(!moved.exists(), "the socket file is removed at exit");
}

#[test]
fn a_stale_socket_file_is_replaced_but_a_live_socket_or_another_file_is_left_alone() {
    use greenarrow_proxy::control::{ControlError, ControlSocket};
    use greenarrow_proxy::server::Server;
    use std::sync::Weak;
    let dir = TempDir::new("control");
    let path = dir.0.join("c.sock");
    // Stale: a socket file nobody listens on.
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    let mut first = ControlSocket::start(&path, Weak::<Server>::new()).unwrap();
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o660
    );
    // Live: a second one refuses, and the first keeps its file.
    match ControlSocket::start(&path, Weak::<Server>::new()) {
        Err(e @ ControlError::InUse { .. }) => {
            assert!(
                e.to_string().ends_with("another process is serving it"),
                "{e}"
            )
        }
        other => panic!("expected InUse, got {:?}", other.err()),
    }
    assert!(UnixStream::connect(&path).is_ok());
    first.stop();
    assert!(!path.exists());
    // Not a socket: untouched.
    std::fs::write(&path, b"keep me").unwrap();
    match ControlSocket::start(&path, Weak::<Server>::new()) {
        Err(ControlError::NotASocket { .. }) => {}
        other => panic!("expected NotASocket, got {:?}", other.err()),
    }
    assert_eq!(std::fs::read(&path).unwrap(), b"keep me");
}
