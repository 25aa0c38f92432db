//! The MX side of set-up: a trickled reply, and destinations that embed a denied IPv4 address.

use crate::common::*;
use crate::scripted;
use greenarrow_proxy_client::ClientError;
use greenarrow_proxy_proto::protocol::{ConnectRequest, Destination, Failure, TlsPolicy};
use std::time::Duration;

/// The banner a trickling MX sends, one byte every 300 ms (13 s in all).
const BANNER: &[u8] = b"220 trickle.test ESMTP one byte at a time\r\n";

/// An MX that trickles [`BANNER`], then reads until the close. Its thread says how many octets
/// it sent and whether it finished before the proxy closed the connection.
fn trickling_mx() -> (std::net::SocketAddr, std::thread::JoinHandle<(usize, bool)>) {
    scripted::mx(|mut p| {
        for (sent, b) in BANNER.iter().enumerate() {
            std::thread::sleep(Duration::from_millis(300));
            if !p.send(&[*b]) {
                return (sent, false);
            }
        }
        // The whole banner went out: read EHLO, answer nothing, wait for the close.
        while p.line().is_some() {}
        (BANNER.len(), true)
    })
}

/// A CONNECT to a [`trickling_mx`] under `yaml`: it must fail with `mx_setup_failed`, and the
/// proxy must have closed the connection before the MX finished its banner.
fn connect_to_a_trickling_mx(
    yaml: &str,
    why: &str,
) -> greenarrow_proxy_proto::protocol::FailureReply {
    let (addr, script) = trickling_mx();
    let h = Harness::start(&[addr.port()], yaml);
    let mut c = h.client();
    let err = c
        .open(&req("127.0.0.2", addr, TlsPolicy::None))
        .err()
        .expect(why);
    let ClientError::Proxy(f) = err else {
        panic!("expected a failure reply, got {err}");
    };
    assert_eq!(f.failure, Failure::MxSetupFailed, "{f:?}");
    let (sent, finished) = script.join().unwrap();
    assert!(
        !finished && sent < BANNER.len(),
        "the MX trickled {sent} of {} octets before the proxy gave up",
        BANNER.len()
    );
    f
}

/// Issue 11 item 5 (set-up): every read of an MX reply during set-up has a deadline for the
/// whole reply. An MX that trickles its banner one byte every 300 ms (13 s in all) under
/// `mx_banner: 1s` fails the CONNECT with the banner timeout, and the proxy has closed the
/// connection before the MX could finish the banner.
#[test]
fn a_trickled_banner_fails_at_the_banner_deadline() {
    let f = connect_to_a_trickling_mx(
        "timeouts:\n  mx_banner: 1s\n  mx_command: 1s\n",
        "a trickled banner must not complete the CONNECT",
    );
    assert!(f.text.contains("banner"), "{}", f.text);
}

/// Issue 11 item 5: no read outlives `session_lifetime`, the set-up's included: a banner
/// trickled under a generous `mx_banner` is cut when the session's lifetime ends.
#[test]
fn the_set_up_ends_with_the_sessions_lifetime() {
    connect_to_a_trickling_mx(
        "timeouts:\n  mx_banner: 1m\n  session_lifetime: 2s\n",
        "the CONNECT must end with the session's lifetime",
    );
}

/// Issue 11 item 9d: IPv6 addresses that carry an IPv4 address (NAT64 `64:ff9b::/96`, 6to4
/// `2002::/16`, IPv4-compatible `::/96`, IPv4-mapped `::ffff:0:0/96`) are checked against the
/// IPv4 deny-list: each form of 169.254.169.254 is refused before any dial.
#[test]
fn ipv6_forms_embedding_a_denied_ipv4_address_are_refused() {
    let h = Harness::start(&[25], "");
    let mut c = h.client();
    for dest in [
        "64:ff9b::a9fe:a9fe",
        "2002:a9fe:a9fe::1",
        "::a9fe:a9fe",
        "::ffff:169.254.169.254",
    ] {
        let r = ConnectRequest::new(ip("::1"), Destination::Ip(ip(dest)), "mta.test");
        match c.open(&r) {
            Err(ClientError::Proxy(f)) => {
                assert_eq!(f.failure, Failure::DestinationNotPermitted, "{dest}: {f:?}")
            }
            Err(e) => panic!("{dest}: {e}"),
            Ok(_) => panic!("{dest}: connected"),
        }
    }
}
