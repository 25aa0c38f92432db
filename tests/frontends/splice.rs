//! Issue 24 part 2: a large message through a passthrough front-end, whose body the relay
//! moves with splice(2) once a read fills its buffer (unit tests in
//! src/frontend/passthrough/tests/spliced.rs show the path taken, the half-close both ways
//! and a slow reader); here the real front-ends and a real MX, plaintext and with STARTTLS
//! end to end, every byte checked at the MX.

use super::*;

/// About `n` bytes of message: a header, then lines of varied length, some starting with a
/// dot (stuffed by the MTA, unstuffed by the MX).
fn large_body(n: usize) -> Vec<u8> {
    let mut b = b"Subject: large passthrough\r\n\r\n".to_vec();
    let mut i = 0usize;
    while b.len() < n {
        if i.is_multiple_of(7) {
            b.push(b'.');
        }
        let len = 10 + (i * 37) % 900;
        b.extend((0..len).map(|k| b'a' + ((i + k) % 26) as u8));
        b.extend_from_slice(b"\r\n");
        i += 1;
    }
    b
}

fn check_large(mx: &TestMx, n: usize, source: &str, tls: bool, body: &[u8]) {
    assert!(mx.wait_until(WAIT, |s| s.messages.len() > n));
    let m = &mx.messages()[n];
    assert_eq!(m.peer.ip(), ip(source), "source address");
    assert_eq!(m.tls, tls);
    assert!(
        m.content == body,
        "the MX received {} octets, not the {} sent (or different ones)",
        m.content.len(),
        body.len()
    );
}

#[test]
fn megabytes_through_proxy_v2_and_socks5_passthrough_arrive_byte_exact() {
    let mx = tls_mx(Faults::default());
    let h = passthrough(&[mx.addr().port()]);
    let body = large_body(4 * 1024 * 1024);
    // Plaintext, then TLS records end to end (the relay moves ciphertext alike).
    for (n, tls) in [(0, false), (1, true)] {
        let d =
            kumo::deliver_proxy_v2(h.frontend(PP), ip("127.0.0.7"), mx.addr(), tls, &body).unwrap();
        assert!(d.final_reply.starts_with("250"), "{}", d.transcript);
        check_large(&mx, n, "127.0.0.7", tls, &body);
    }
    let (_, d) =
        kumo::deliver_socks5(h.frontend(SOCKS_SOLO), None, None, mx.addr(), true, &body).unwrap();
    assert!(d.final_reply.starts_with("250"), "{}", d.transcript);
    check_large(&mx, 2, SOLO_SOURCE, true, &body);
}
