//! Faults on the MX side of a relayed session.

use crate::common::*;
use crate::util::*;
use greenarrow_proxy_proto::protocol::{Failure, TlsPolicy};
use greenarrow_proxy_testkit::testmx::Faults;
use std::time::{Duration, Instant};

const BODY: &[u8] = b"Subject: fault\r\n\r\nline one of a message the MX will not get whole\r\n";

/// The MX closes its socket after 10 body bytes: the MTA sends the whole body and is told
/// `421 4.4.2` for it (never a 250), later commands get 421 until QUIT, nothing is delivered.
#[test]
fn mx_closes_mid_body() {
    let bad = mx(Faults {
        close_mid_data_after: Some(10),
        ..Faults::default()
    });
    let good = mx(Faults::default());
    let h = proxy(&[&bad, &good], "");
    let (mut raw, _) = open(&h, &reuse_req(bad.addr()));
    start_data(&mut raw);
    let mut body = BODY.repeat(50);
    body.extend_from_slice(b".\r\n");
    let end = exchange(&mut raw, &body, 1);
    assert!(end[0].starts_with("421 4.4.2 "), "{end:?}");
    let later = exchange(&mut raw, b"MAIL FROM:<a@x.test>\r\n", 1);
    assert!(later[0].starts_with("421 4.4.2 "), "{later:?}");
    smtp_quit_then_noop(&mut raw);
    wait_closed(&bad, 0);
    assert!(bad.messages().is_empty());
    assert_eq!(bad.stats().connections, 1);
    assert_eq!(pooled(&h), 0);
    good_session(&h, &good);
}

/// The MX answers the end of data with 421 and closes: the MTA gets that 421 byte for byte,
/// then the proxy's own 421 for everything until QUIT; nothing is recorded, nothing pooled.
#[test]
fn mx_421_at_the_end_of_data() {
    let bad = mx(Faults {
        reply_421_at: Some("DATA-END".into()),
        ..Faults::default()
    });
    let good = mx(Faults::default());
    let h = proxy(&[&bad, &good], "");
    let (mut raw, _) = open(&h, &reuse_req(bad.addr()));
    start_data(&mut raw);
    let mut body = BODY.to_vec();
    body.extend_from_slice(b".\r\nRSET\r\n");
    let r = exchange(&mut raw, &body, 2);
    assert!(r[0].starts_with("421 ") && !r[0].starts_with("421 4.4.2 greenarrow"));
    assert!(r[1].starts_with("421 4.4.2 "), "{r:?}");
    smtp_quit_then_noop(&mut raw);
    wait_closed(&bad, 0);
    assert!(bad.messages().is_empty());
    assert_eq!(pooled(&h), 0);
    good_session(&h, &good);
}

/// The MX says 421 to RCPT in a pipelined batch: MAIL's 250 and the MX's 421 are relayed,
/// the DATA owed gets the proxy's 421, and the MX never sees a body.
#[test]
fn mx_421_mid_transaction() {
    let bad = mx(Faults {
        reply_421_at: Some("RCPT".into()),
        ..Faults::default()
    });
    let good = mx(Faults::default());
    let h = proxy(&[&bad, &good], "");
    let (mut raw, _) = open(&h, &reuse_req(bad.addr()));
    let r = exchange(
        &mut raw,
        b"MAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\nDATA\r\n",
        3,
    );
    assert!(r[0].starts_with("250"), "{r:?}");
    assert!(r[1].starts_with("421"), "{r:?}");
    assert!(r[2].starts_with("421 4.4.2 "), "{r:?}");
    smtp_quit_then_noop(&mut raw);
    wait_closed(&bad, 0);
    assert!(bad.messages().is_empty());
    assert_eq!(pooled(&h), 0);
    good_session(&h, &good);
}

/// The MX never answers RCPT: after `timeouts.mx_command` (1 s) the MTA gets `421 4.4.2` for
/// RCPT and for the DATA behind it, the proxy closes the MX connection.
#[test]
fn mx_never_answers() {
    let bad = mx(Faults {
        silent_at: Some("RCPT".into()),
        ..Faults::default()
    });
    let good = mx(Faults::default());
    let h = proxy(&[&bad, &good], "timeouts:\n  mx_command: 1s\n");
    let (mut raw, _) = open(&h, &reuse_req(bad.addr()));
    let t0 = Instant::now();
    let r = exchange(
        &mut raw,
        b"MAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\nDATA\r\n",
        3,
    );
    let took = t0.elapsed();
    assert!(r[0].starts_with("250"), "{r:?}");
    assert!(r[1].starts_with("421 4.4.2 "), "{r:?}");
    assert!(r[2].starts_with("421 4.4.2 "), "{r:?}");
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(5),
        "{took:?}"
    );
    smtp_quit_then_noop(&mut raw);
    wait_closed(&bad, 0);
    assert!(bad.messages().is_empty());
    assert_eq!(pooled(&h), 0);
    good_session(&h, &good);
}

/// The MX accepts the end of data only after 3 s, beyond `timeouts.mx_data_done` (1 s): the
/// MTA is told `421 4.4.2` (so it will retry) although the MX has queued the message. This is
/// the RFC 1047 duplicate window every SMTP client has; the proxy cannot close it, only keep
/// `mx_data_done` generous (default 10 min, as RFC 5321 §4.5.3.2.6 recommends).
#[test]
fn mx_slow_to_accept_the_end_of_data() {
    let bad = mx(Faults {
        data_end_delay: Some(Duration::from_secs(3)),
        ..Faults::default()
    });
    let good = mx(Faults::default());
    let h = proxy(&[&bad, &good], "timeouts:\n  mx_data_done: 1s\n");
    let (mut raw, _) = open(&h, &reuse_req(bad.addr()));
    start_data(&mut raw);
    let mut body = BODY.to_vec();
    body.extend_from_slice(b".\r\n");
    let t0 = Instant::now();
    let r = exchange(&mut raw, &body, 1);
    let took = t0.elapsed();
    assert!(r[0].starts_with("421 4.4.2 "), "{r:?}");
    assert!(took < Duration::from_millis(2900), "{took:?}");
    smtp_quit_then_noop(&mut raw);
    // The MX took the whole message (never a truncated one) before its delayed 250.
    assert!(bad.wait_until(WAIT, |st| st.messages.len() == 1));
    assert_eq!(bad.messages()[0].content, BODY);
    wait_closed(&bad, 0);
    assert_eq!(pooled(&h), 0);
    good_session(&h, &good);
}

/// A pooled connection the MX kills while idle is never handed out: the next `reuse=yes`
/// session gets a new connection, delivers, and that one is pooled.
#[test]
fn pooled_connection_killed_while_idle() {
    let bad = mx(Faults::default());
    let good = mx(Faults::default());
    let h = proxy(&[&bad, &good], "");
    let r = reuse_req(bad.addr());
    let deliver = |want_origin: &str| {
        let (mut raw, ready) = open(&h, &r);
        assert!(ready.starts_with(want_origin), "{ready}");
        start_data(&mut raw);
        let mut body = BODY.to_vec();
        body.extend_from_slice(b".\r\n");
        let end = exchange(&mut raw, &body, 1);
        assert!(end[0].starts_with("250 "), "{end:?}");
        smtp_quit_then_noop(&mut raw);
    };
    deliver("250-connection=new");
    assert_eq!(pooled(&h), 1);
    bad.drop_idle_connections();
    wait_closed(&bad, 0);
    deliver("250-connection=new");
    assert!(bad.wait_until(WAIT, |st| st.messages.len() == 2));
    assert_eq!(bad.stats().connections, 2);
    assert!(bad.messages().iter().all(|m| m.content == BODY));
    assert_eq!(pooled(&h), 1, "the new connection is kept");
    // And that one is reused.
    deliver("250-connection=reused");
    assert_eq!(bad.stats().connections, 2);
    good_session(&h, &good);
}

/// STARTTLS answered 220, then no handshake: after `timeouts.mx_tls_handshake` (1 s) the MTA
/// gets `448 tls_failed`; the MX saw STARTTLS and nothing after; the MTA connection stays in
/// the command state.
#[test]
fn mx_tls_handshake_stalls() {
    let bad = tls_mx(Faults {
        stall_tls_handshake: true,
        ..Faults::default()
    });
    let good = mx(Faults::default());
    let h = proxy(&[&bad, &good], "timeouts:\n  mx_tls_handshake: 1s\n");
    let mut raw = h.raw();
    let mut r = reuse_req(bad.addr());
    r.tls = TlsPolicy::Required;
    let t0 = Instant::now();
    let rep = exchange(
        &mut raw,
        format!("AUTH 1 {SECRET}\r\n{}", r.to_line()).as_bytes(),
        2,
    );
    assert!(rep[0].starts_with("235"));
    let greenarrow_proxy_proto::protocol::Code {
        reply: code, tag, ..
    } = Failure::TlsFailed.code();
    assert!(
        rep[1].starts_with(&format!("{code} 4.7.5 {tag} ")),
        "{rep:?}"
    );
    assert!(t0.elapsed() < Duration::from_secs(5));
    assert_eq!(exchange(&mut raw, b"NOOP\r\n", 1)[0], "250 2.0.0 ok\r\n");
    wait_closed(&bad, 0);
    let cmds = commands(&bad, 0);
    assert_eq!(
        cmds.last().map(String::as_str),
        Some("STARTTLS"),
        "{cmds:?}"
    );
    assert_eq!(pooled(&h), 0);
    good_session(&h, &good);
}

/// `tls=verify` against an MX whose certificate does not chain to a trusted root: `449
/// tls_verify_failed`; the MX never sees MAIL FROM; nothing pooled.
#[test]
fn mx_certificate_rejected_by_verify() {
    let bad = tls_mx(Faults::default());
    let good = mx(Faults::default());
    let h = proxy(&[&bad, &good], "");
    let mut raw = h.raw();
    let mut r = reuse_req(bad.addr());
    r.tls = TlsPolicy::Verify;
    r.tls_name = Some("mx.test".into());
    let rep = exchange(
        &mut raw,
        format!("AUTH 1 {SECRET}\r\n{}", r.to_line()).as_bytes(),
        2,
    );
    let greenarrow_proxy_proto::protocol::Code {
        reply: code, tag, ..
    } = Failure::TlsVerifyFailed.code();
    assert!(
        rep[1].starts_with(&format!("{code} 4.7.5 {tag} ")),
        "{rep:?}"
    );
    assert_eq!(exchange(&mut raw, b"NOOP\r\n", 1)[0], "250 2.0.0 ok\r\n");
    wait_closed(&bad, 0);
    assert!(!commands(&bad, 0).iter().any(|c| c.starts_with("MAIL")));
    assert!(bad.messages().is_empty());
    assert_eq!(pooled(&h), 0);
    good_session(&h, &good);
}

/// A stray reply during set-up, after the MX's reply to EHLO (found by the soak): the MX is out
/// of step, so the request fails with `mx_setup_failed` and the connection is closed. Before,
/// the stray `250` was taken for a refusal of STARTTLS, the session went on in plaintext
/// (opportunistic TLS) and the MTA got the MX's `220` to STARTTLS as the reply to its MAIL.
#[test]
fn mx_stray_reply_during_set_up() {
    let bad = tls_mx(Faults {
        stray_reply_after: Some("EHLO".into()),
        ..Faults::default()
    });
    let good = mx(Faults::default());
    let h = proxy(&[&bad, &good], "");
    for i in 0..3 {
        let mut raw = h.raw();
        let mut r = reuse_req(bad.addr());
        r.tls = TlsPolicy::Opportunistic;
        let rep = exchange(
            &mut raw,
            format!("AUTH 1 {SECRET}\r\n{}", r.to_line()).as_bytes(),
            2,
        );
        assert!(rep[0].starts_with("235"), "{rep:?}");
        // Whether the stray reply comes in the same read as the reply to EHLO (bytes past a
        // reply) or as the answer to STARTTLS (a 250 there, carried as an `mx=` line) is the
        // network's timing: either way the attempt fails with mx_setup_failed.
        let greenarrow_proxy_proto::protocol::Code {
            reply: code, tag, ..
        } = Failure::MxSetupFailed.code();
        let first = rep[1].lines().next().unwrap_or_default();
        assert!(
            (first.starts_with(&format!("{code} ")) || first.starts_with(&format!("{code}-")))
                && first.contains(tag),
            "{rep:?}"
        );
        assert_eq!(exchange(&mut raw, b"NOOP\r\n", 1)[0], "250 2.0.0 ok\r\n");
        wait_closed(&bad, i);
        assert!(!commands(&bad, i).iter().any(|c| c.starts_with("MAIL")));
    }
    assert!(bad.messages().is_empty());
    assert_eq!(pooled(&h), 0);
    good_session(&h, &good);
}
