//! The front-ends under the real daemon: which settings serve a connection across a reload,
//! and SOCKS5 user names as KumoMTA sends them.

use greenarrow_proxy_testkit::daemon::setup::Setup;
use greenarrow_proxy_testkit::daemon::{Daemon, WAIT};
use greenarrow_proxy_testkit::mta::kumo::{self, SocksError};
use nix::sys::signal::Signal::SIGHUP;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};

/// The address a "listening on A (frontends[i], kind)" line names, for `frontends[index]`.
fn frontend_addr(d: &mut Daemon, index: usize) -> SocketAddr {
    let tag = format!(" (frontends[{index}], ");
    let line = d.wait_for(&tag);
    let (_, rest) = line
        .split_once("listening on ")
        .unwrap_or_else(|| panic!("not a listening line: {line:?}"));
    let (addr, _) = rest.split_once(' ').unwrap();
    addr.parse()
        .unwrap_or_else(|e| panic!("{addr:?}: {e} in {line:?}"))
}

/// A SOCKS5 client that has sent `bytes` to the front-end at `addr`.
fn socks(addr: SocketAddr, bytes: &[u8]) -> TcpStream {
    let mut s = TcpStream::connect_timeout(&addr, WAIT).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    s.write_all(bytes).unwrap();
    s
}

/// Read exactly `n` bytes, or fewer when the proxy closes first.
fn read_n(s: &mut TcpStream, n: usize) -> Vec<u8> {
    let mut got = Vec::new();
    let mut chunk = [0u8; 64];
    while got.len() < n {
        match s.read(&mut chunk[..(n - got.len()).min(64)]) {
            Ok(0) | Err(_) => break,
            Ok(k) => got.extend_from_slice(&chunk[..k]),
        }
    }
    got
}

/// A SOCKS5 CONNECT to an IPv4 address.
fn connect_request(dest: SocketAddr) -> Vec<u8> {
    let SocketAddr::V4(v4) = dest else {
        panic!("{dest} is not IPv4")
    };
    let mut r = vec![0x05, 0x01, 0x00, 0x01];
    r.extend_from_slice(&v4.ip().octets());
    r.extend_from_slice(&v4.port().to_be_bytes());
    r
}

/// A client with one source address, for the `auth: none` front-end.
const SOLO: &str = "clients:\n  - name: solo\n    secrets: [\"solo-secret-0123456789abcdef-0123456789abcdef\"]\n    source_addresses: [127.0.0.4]\n";

/// Issue 21: with both workers busy, a client waits in the queue of a SOCKS5 front-end that
/// requires a password; a reload replaces that front-end by one without authentication on
/// another address. When a worker frees up, the queued connection is served under the
/// settings of the listener that accepted it: no password, no way through.
#[test]
fn a_queued_socks5_connection_keeps_its_front_ends_password_across_a_reload() {
    let base = format!(
        "max_sessions: 2\nmax_queued_sessions: 1\ntimeouts:\n  mta_handshake: 60s\n{SOLO}frontends:\n"
    );
    let password = "  - kind: socks5\n    listen: [\"127.0.0.1:0\"]\n    mode: passthrough\n    auth: password\n";
    let open = "  - kind: socks5\n    listen: [\"127.0.0.3:0\"]\n    mode: passthrough\n    auth: none\n    client: solo\n";
    let s = Setup::new(&format!("{base}{password}"));
    let mut d = s.daemon();
    let fe = frontend_addr(&mut d, 0);
    d.wait_ready();

    // Both workers busy: each has answered a greeting and waits for credentials.
    let mut busy: Vec<TcpStream> = (0..2)
        .map(|_| {
            let mut c = socks(fe, &[0x05, 0x01, 0x02]);
            assert_eq!(read_n(&mut c, 2), [0x05, 0x02]);
            c
        })
        .collect();
    // The attacker offers only "no authentication" and waits in the queue.
    let mut queued = socks(fe, &[0x05, 0x01, 0x00]);
    // The next connection finds the queue full: once the daemon says so, the one before it
    // (accepted first) is in the queue.
    let mut extra = socks(fe, &[0x05, 0x01, 0x02]);
    d.wait_for("the queue is full");
    assert_eq!(read_n(&mut extra, 2), b"", "refused at the queue");

    s.rewrite(&s.yaml.replace(password, open));
    d.signal(SIGHUP);
    d.wait_for("configuration reloaded");
    // A worker frees up and takes the queued connection.
    drop(busy.remove(0));

    let method = read_n(&mut queued, 2);
    let mut connect_reply = Vec::new();
    if method == [0x05, 0x00] {
        // Served under the new front-end: go on as the attacker would.
        queued.write_all(&connect_request(s.mx.addr())).unwrap();
        connect_reply = read_n(&mut queued, 10);
    }
    let mx_connections = s.mx.stats().connections;
    assert_eq!(
        (method.as_slice(), connect_reply.as_slice(), mx_connections),
        (&[0x05, 0xFF][..], &[][..], 0),
        "the queued connection must be served by its own front-end (password required: no \
         acceptable method), and the MX must see nothing"
    );
    assert_eq!(read_n(&mut queued, 1), b"", "closed after the refusal");
}

/// Issue 20: kumod sends whatever `socks5_proxy_username` says. A user name that names a
/// client selects it, and the password must be one of that client's secrets; any other user
/// name that is neither empty nor an IP address is refused with a warning that says so.
#[test]
fn a_socks5_user_name_that_names_a_client_selects_it() {
    let kumo_secret = "kumo-secret-0123456789abcdef-0123456789abcdef";
    let yaml = format!(
        "clients:\n  - name: kumo\n    secrets: [\"{kumo_secret}\"]\n    source_addresses: [127.0.0.6]\n\
         frontends:\n  - kind: socks5\n    listen: [\"127.0.0.1:0\"]\n    mode: passthrough\n    auth: password\n"
    );
    let s = Setup::new(&yaml);
    let mut d = s.daemon();
    let fe = frontend_addr(&mut d, 0);
    d.wait_ready();
    let source = "127.0.0.6".parse().unwrap();
    let body = b"Subject: kumo\r\n\r\nselected by its name\r\n";

    let (ok, delivered) = kumo::deliver_socks5(
        fe,
        Some(("kumo", kumo_secret)),
        Some(source),
        s.mx.addr(),
        false,
        body,
    )
    .unwrap();
    assert!(
        delivered.final_reply.starts_with("250"),
        "{}",
        delivered.transcript
    );
    assert_eq!(ok.connect_addr().map(|a| a.ip()), Some(source));
    assert!(s.mx.wait_until(WAIT, |st| st.messages.len() == 1));
    let st = s.mx.state();
    assert_eq!(st.messages[0].peer.ip(), source);
    assert_eq!(st.messages[0].content, body);

    let refused = |user: &str, pass: &str| {
        let mut tcp = TcpStream::connect_timeout(&fe, WAIT).unwrap();
        match kumo::socks5_handshake(&mut tcp, Some((user, pass)), Some(source), s.mx.addr()) {
            Err(SocksError::Auth(status)) => status,
            other => panic!("{user:?}: {other:?}"),
        }
    };
    // The name of a client with another client's secret (the default one's).
    assert_eq!(
        refused("kumo", greenarrow_proxy_testkit::fixtures::SECRET),
        [0x01, 0x01]
    );
    let line = d.wait_for("SOCKS5 front-end: authentication failed");
    assert!(
        line.contains(
            "the user name names client \"kumo\" and the password is not one of its secrets"
        ),
        "{line}"
    );
    // A user name that is no client's, with a good password.
    assert_eq!(refused("egress-pool-1", kumo_secret), [0x01, 0x01]);
    let line = d.wait_for("SOCKS5 front-end: authentication failed");
    assert!(
        line.contains("the user name is neither empty, an IP address nor a client name"),
        "{line}"
    );
    assert_eq!(s.mx.stats().connections, 1, "nothing more reached the MX");
}
