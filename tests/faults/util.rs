//! Helpers for the fault matrix: test MXes, a raw MTA session opened through the proxy, the
//! pool's state, and the "good session" every case ends with.

use crate::common::*;
use greenarrow_proxy_proto::protocol::{ConnectRequest, TlsPolicy};
use greenarrow_proxy_testkit::testmx::{Faults, TestMx, TestMxConfig};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// How long any expected MX state may take to appear.
pub const WAIT: Duration = Duration::from_secs(10);

/// A plaintext test MX with `faults`.
pub fn mx(faults: Faults) -> TestMx {
    TestMx::start(TestMxConfig {
        faults,
        ..TestMxConfig::default()
    })
    .unwrap()
}

/// A proxy permitting the ports of `mxs`, with `yaml` added to the base configuration.
pub fn proxy(mxs: &[&TestMx], yaml: &str) -> Harness {
    let ports: Vec<u16> = mxs.iter().map(|m| m.addr().port()).collect();
    Harness::start(&ports, yaml)
}

/// A `reuse=yes` request from 127.0.0.2 to `mx`, plaintext.
pub fn reuse_req(mx: SocketAddr) -> ConnectRequest {
    let mut r = req("127.0.0.2", mx, TlsPolicy::None);
    r.reuse = true;
    r
}

/// MAIL, RCPT and DATA pipelined; asserts 250, 250, 354.
pub fn start_data(raw: &mut Raw) {
    let r = exchange(
        raw,
        b"MAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\nDATA\r\n",
        3,
    );
    assert!(r[0].starts_with("250") && r[1].starts_with("250"), "{r:?}");
    assert!(r[2].starts_with("354"), "{r:?}");
}

/// End the SMTP session (QUIT → 221), then make sure the session thread has finished with
/// the MX connection (pooled or closed) by a proxy-level NOOP, whose answer comes after it.
pub fn smtp_quit_then_noop(raw: &mut Raw) {
    let q = exchange(raw, b"QUIT\r\n", 1);
    assert!(q[0].starts_with("221 "), "{q:?}");
    let n = exchange(raw, b"NOOP\r\n", 1);
    assert_eq!(n[0], "250 2.0.0 ok\r\n");
}

/// How many idle connections the proxy's pool holds now.
pub fn pooled(h: &Harness) -> usize {
    h.server.shared().pool().snapshot(Instant::now()).0.len()
}

/// Every fault case ends here: a complete, well-behaved session to `good` (a healthy MX the
/// proxy permits) delivers exactly one message, byte for byte.
pub fn good_session(h: &Harness, good: &TestMx) {
    let before = good.messages().len();
    let body = format!("Subject: good {before}\r\n\r\nthe daemon still serves\r\n");
    let mut c = h.client();
    let mut s = c
        .open(&req("127.0.0.3", good.addr(), TlsPolicy::None))
        .unwrap();
    let d = s
        .send_mail("a@x.test", &["b@y.test"], body.as_bytes())
        .unwrap();
    assert_eq!(d.final_reply.code(), 250);
    s.quit().unwrap();
    c.quit().unwrap();
    assert!(good.wait_until(WAIT, |st| st.messages.len() == before + 1));
    assert_eq!(good.messages()[before].content, body.as_bytes());
}

/// The MX commands recorded on connection `i`, for assertions.
pub fn commands(mx: &TestMx, i: usize) -> Vec<String> {
    mx.connections()[i].commands.clone()
}

/// Wait until MX connection `i` is closed.
pub fn wait_closed(mx: &TestMx, i: usize) {
    assert!(
        mx.wait_until(WAIT, |st| st.connections.get(i).is_some_and(|c| c.closed)),
        "MX connection {i} still open: {:?}",
        mx.connections().get(i)
    );
}
