//! The proxy under address moves (keepalived moving addresses between hosts): run the real
//! daemon inside a network namespace this test creates, add and delete a test address on
//! that namespace's `lo` and check what MTAs get and what the MX sees. Needs root (or
//! CAP_NET_ADMIN and CAP_SYS_ADMIN) and `ip` from iproute2; skipped with a message otherwise.
//!
//! Addresses from TEST-NET-1 (192.0.2.0/24) exist only inside the namespace; the test thread
//! (and the threads and processes it starts) enter it with setns(2).

use greenarrow_proxy_client::ClientError;
use greenarrow_proxy_proto::protocol::{Failure, Origin};
use greenarrow_proxy_testkit::daemon;
use greenarrow_proxy_testkit::daemon::setup::{conn_from, Setup};
use greenarrow_proxy_testkit::daemon::Daemon;
use greenarrow_proxy_testkit::fixtures::SECRET;
use greenarrow_proxy_testkit::netns::Netns;
use nix::sys::signal::Signal::SIGHUP;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};

/// The egress address that comes and goes.
const EGRESS: &str = "192.0.2.10";
/// The virtual listen address (bound before it exists: `listen_freebind`).
const VIP: &str = "192.0.2.20";
/// An IPv6 egress address (documentation range, inside the namespace only).
const EGRESS6: &str = "2001:db8::10";

/// Open a connection from `source` and deliver one message; the failure, if any.
fn deliver(s: &Setup, proxy: SocketAddr, source: &str) -> Result<Origin, ClientError> {
    let mut c = s.client(proxy, SECRET);
    let mut m = c.open(&s.request(source, true))?;
    let origin = m.ready.origin.clone();
    m.send_mail("a@x.test", &["b@y.test"], b"Subject: t\r\n\r\nhi\r\n")?;
    m.quit()?;
    c.quit()?;
    Ok(origin)
}

fn failure(r: Result<Origin, ClientError>) -> (Failure, String) {
    match r {
        Err(ClientError::Proxy(f)) => (f.failure, f.text.clone()),
        other => panic!("expected a proxy failure, got {other:?}"),
    }
}

#[test]
fn source_addresses_come_and_go_without_a_restart() {
    let Some(ns) = Netns::enter("addr") else {
        return;
    };
    let s = Setup::new(&format!(
        "source_addresses: [127.0.0.0/8, {EGRESS}, \"{EGRESS6}\"]\nlisten: [\"127.0.0.1:0\", \"{VIP}:2807\"]\nlisten_freebind: true\nallow_from: [127.0.0.0/8, 192.0.2.0/24]\nfrontends:\n  - kind: proxy_protocol\n    listen: [\"{VIP}:2600\"]\n"
    ));
    // Neither address is here yet: the daemon starts anyway (listen_freebind for the VIP;
    // an absent source address is not a configuration error).
    let mut d: Daemon = s.daemon();
    let addrs = d.wait_ready();
    let proxy = addrs[0];
    assert!(
        addrs.contains(&format!("{VIP}:2807").parse().unwrap()),
        "{addrs:?}"
    );
    let msgs = |s: &Setup| s.mx.state().messages.len();

    // Absent from the start: 451 source_not_local (the bind fails).
    let (f, _) = failure(deliver(&s, proxy, EGRESS));
    assert_eq!(f, Failure::SourceNotLocal);
    // Nor is one at reload.
    let listed = format!("[127.0.0.0/8, {EGRESS}, ");
    assert!(s.yaml.contains(&listed));
    s.rewrite(
        &s.yaml
            .replace(&listed, &format!("[127.0.0.0/8, {EGRESS}, 192.0.2.11, ")),
    );
    d.signal(SIGHUP);
    d.wait_for("configuration reloaded");

    // It appears: usable at once, no reload.
    ns.add(EGRESS);
    d.wait_for(&format!("address {EGRESS} appeared on the host"));
    assert_eq!(deliver(&s, proxy, EGRESS).unwrap(), Origin::New);
    d.wait_for("kept for reuse");
    assert!(conn_from(&s.mx.state(), EGRESS).is_some());
    assert_eq!(msgs(&s), 1);

    // It leaves: the pooled connection from it is closed, requests fail at once.
    let t = std::time::Instant::now();
    ns.del(EGRESS);
    let left = d.wait_for(&format!("source address {EGRESS} left the host"));
    // A figure for the docs, not an assertion.
    eprintln!(
        "netlink: the removal was logged {:?} after `ip addr del` began",
        t.elapsed()
    );
    assert!(
        left.contains("1 pooled connection(s) from it closed"),
        "{left}"
    );
    let (f, text) = failure(deliver(&s, proxy, EGRESS));
    assert_eq!(f, Failure::SourceNotLocal);
    assert!(text.contains("has left this host"), "{text}");
    // Other sources are not affected.
    deliver(&s, proxy, "127.0.0.2").unwrap();
    assert_eq!(msgs(&s), 2);

    // Back again: a new connection (the old one was dropped), no restart.
    ns.add(EGRESS);
    d.wait_for(&format!("address {EGRESS} appeared on the host"));
    assert_eq!(deliver(&s, proxy, EGRESS).unwrap(), Origin::New);
    assert_eq!(msgs(&s), 3);
    let from_egress =
        s.mx.state()
            .connections
            .iter()
            .filter(|c| c.peer.ip().to_string() == EGRESS)
            .count();
    assert_eq!(
        from_egress, 2,
        "the connection from before it left was not reused"
    );

    // IPv6 the same (no MX needed: the refusal comes before any dial).
    match ns.try_ip(&[
        "addr",
        "add",
        &format!("{EGRESS6}/128"),
        "dev",
        "lo",
        "nodad",
    ]) {
        Err(e) => eprintln!("IPv6 part skipped: {e}"),
        Ok(()) => {
            d.wait_for(&format!("address {EGRESS6} appeared on the host"));
            ns.ip(&["addr", "del", &format!("{EGRESS6}/128"), "dev", "lo"]);
            d.wait_for(&format!("source address {EGRESS6} left the host"));
            let (f, text) = failure(deliver(&s, proxy, EGRESS6));
            assert_eq!(f, Failure::SourceNotLocal);
            assert!(text.contains("has left this host"), "{text}");
        }
    }

    // The virtual listen address: bound while absent, serving once it is here.
    ns.add(VIP);
    deliver(&s, format!("{VIP}:2807").parse().unwrap(), "127.0.0.3").unwrap();
    assert_eq!(msgs(&s), 4);
    // The front-end's listener too: a PROXY v1 header, then the MX's banner comes back.
    let mut front = TcpStream::connect(format!("{VIP}:2600")).unwrap();
    front.set_read_timeout(Some(daemon::WAIT)).unwrap();
    let mx = s.mx.addr();
    write!(
        front,
        "PROXY TCP4 127.0.0.4 {} 1000 {}\r\n",
        mx.ip(),
        mx.port()
    )
    .unwrap();
    let mut banner = [0u8; 3];
    front.read_exact(&mut banner).unwrap();
    assert_eq!(&banner, b"220");
}

#[test]
fn without_listen_freebind_an_absent_listen_address_is_an_error() {
    let Some(_ns) = Netns::enter("nofree") else {
        return;
    };
    let s = Setup::new(&format!("listen: [\"{VIP}:2807\"]\n"));
    let mut d = s.daemon();
    // The configuration warning comes first (logged at start since issue 20), then the error.
    let warning = d.wait_for("is not an address of this host");
    assert!(warning.contains(&format!("{VIP}:2807")), "{warning}");
    let err = d.wait_for("cannot start");
    assert!(
        err.contains(&format!("cannot listen on {VIP}:2807")),
        "{err}"
    );
    assert!(err.contains("listen_freebind: true"), "{err}");
    assert!(!d.wait_exit().success());
}

#[test]
fn the_getifaddrs_scan_notices_too() {
    let Some(ns) = Netns::enter("scan") else {
        return;
    };
    let s = Setup::new(&format!("source_addresses: [127.0.0.0/8, {EGRESS}]\n"));
    let mut d = Daemon::spawn(&s.config, &[SECRET], |c| {
        c.env(greenarrow_proxy::localaddr::watch::MODE_ENV, "scan");
    });
    let proxy = d.wait_ready()[0];
    // Logged by the watcher thread, before or after the ready line.
    if !d
        .seen()
        .iter()
        .any(|l| l.contains("by scanning them every 2s"))
    {
        d.wait_for("by scanning them every 2s");
    }
    ns.add(EGRESS);
    d.wait_for(&format!("address {EGRESS} appeared on the host"));
    deliver(&s, proxy, EGRESS).unwrap();
    d.wait_for("kept for reuse");
    ns.del(EGRESS);
    let left = d.wait_for(&format!("source address {EGRESS} left the host"));
    assert!(
        left.contains("1 pooled connection(s) from it closed"),
        "{left}"
    );
    let (f, text) = failure(deliver(&s, proxy, EGRESS));
    assert_eq!(f, Failure::SourceNotLocal);
    assert!(text.contains("has left this host"), "{text}");
}
