//! A front-end-only deployment (issue 26): `listen: []`, a PROXY protocol front-end, no
//! certificate, no key and no secret. The real daemon starts, relays an MTA's SMTP session to
//! the MX from the source the header names, and reloads on SIGHUP.

use greenarrow_proxy_testkit::daemon::{self, Daemon, WAIT};
use greenarrow_proxy_testkit::fixtures::TempDir;
use greenarrow_proxy_testkit::testmx::{TestMx, TestMxConfig};
use nix::sys::signal::Signal::SIGHUP;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};

/// The address a listener log line names: `listening on 127.0.0.1:40000 (frontends[0], ...)`.
fn listening_addr(line: &str) -> SocketAddr {
    let rest = line.split_once("listening on ").unwrap().1;
    rest.split(' ').next().unwrap().parse().unwrap()
}

/// One message through the front-end at `fe`, from source 127.0.0.2 to `mx`.
fn deliver(fe: SocketAddr, mx: SocketAddr, body: &str) {
    let s = TcpStream::connect(fe).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    let mut w = s.try_clone().unwrap();
    let mut r = BufReader::new(s);
    let mut expect = |send: &str, code: &str| {
        w.write_all(send.as_bytes()).unwrap();
        loop {
            let mut line = String::new();
            r.read_line(&mut line).unwrap();
            assert!(line.starts_with(code), "{send:?}: {line:?}");
            if line.as_bytes().get(3) == Some(&b' ') {
                return;
            }
        }
    };
    expect(
        &format!("PROXY TCP4 127.0.0.2 {} 1 {}\r\n", mx.ip(), mx.port()),
        "220",
    );
    expect("EHLO mta.test\r\n", "250");
    expect("MAIL FROM:<a@x.test>\r\n", "250");
    expect("RCPT TO:<b@y.test>\r\n", "250");
    expect("DATA\r\n", "354");
    expect(&format!("{body}\r\n.\r\n"), "250");
    expect("QUIT\r\n", "221");
}

#[test]
fn front_ends_only_without_certificate_or_secret_relays_and_reloads() {
    let mx = TestMx::start(TestMxConfig::default()).unwrap();
    let dir = TempDir::new("fe-only");
    let config = dir.0.join("greenarrow_proxy.yaml");
    let yaml = format!(
        "listen: []\nsource_addresses: [127.0.0.2]\ndestination_allow: [127.0.0.0/8]\n\
         destination_ports: [{}]\ncontrol_socket: none\n\
         frontends:\n  - kind: proxy_protocol\n    listen: [\"127.0.0.1:0\"]\n",
        mx.addr().port()
    );
    std::fs::write(&config, &yaml).unwrap();
    let mut d = Daemon::spawn(&config, &[], |_| {});
    let fe = listening_addr(&d.wait_for("(frontends[0], proxy_protocol)"));
    d.wait_for("ready with front-ends only (listen: [])");
    deliver(fe, mx.addr(), "first");
    assert!(mx.wait_until(WAIT, |st| st.messages.len() == 1));
    assert_eq!(mx.state().connections[0].peer.ip().to_string(), "127.0.0.2");

    // Reloaded with the same file (and --check-config agrees it is valid).
    d.signal(SIGHUP);
    d.wait_for("configuration reloaded from ");
    deliver(fe, mx.addr(), "second");
    assert!(mx.wait_until(WAIT, |st| st.messages.len() == 2));
    let out = daemon::run(&[
        "--check-config",
        "--config-filename",
        config.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let effective = String::from_utf8_lossy(&out.stdout);
    assert!(effective.contains("listen: []"), "{effective}");
}
