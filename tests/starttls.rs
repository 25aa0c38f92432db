//! STARTTLS toward the MX, performed and kept by the proxy: real TLS on loopback with
//! certificates made now.

mod common;

use common::*;
use greenarrow_proxy_client::ClientError;
use greenarrow_proxy_net::tls::TlsAcceptor;
use greenarrow_proxy_proto::protocol::{Failure, TlsPolicy};
use greenarrow_proxy_testkit::certgen;
use greenarrow_proxy_testkit::testmx::{Faults, TestMx, TestMxConfig};
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(10);

fn failure(e: ClientError) -> greenarrow_proxy_proto::protocol::FailureReply {
    match e {
        ClientError::Proxy(f) => f,
        other => panic!("expected a proxy failure, got {other}"),
    }
}

#[test]
fn opportunistic_uses_starttls_and_hands_over_post_tls_capabilities() {
    let mx = tls_mx(Faults::default());
    let h = Harness::start(&[mx.addr().port()], "");
    let mut c = h.client();
    let mut s = c
        .open(&req("127.0.0.2", mx.addr(), TlsPolicy::Opportunistic))
        .unwrap();
    let tls = s.ready.tls.clone().expect("TLS facts");
    assert!(
        tls.version == "TLSv1.3" || tls.version == "TLSv1.2",
        "{tls:?}"
    );
    assert!(!tls.cipher.is_empty());
    assert!(!tls.verified, "a self-signed certificate does not verify");
    assert_eq!(tls.peer_names, vec!["mx.test".to_string()]);
    // Post-TLS EHLO: STARTTLS is no longer offered.
    assert!(!s.caps.starttls);
    assert!(s.ready.ehlo.iter().all(|l| !l.ends_with(b"STARTTLS")));
    let msg = b"Subject: over TLS\r\n\r\nsecret stuff\r\n";
    s.send_mail("a@x.test", &["b@y.test"], msg).unwrap();
    s.quit().unwrap();
    assert!(mx.wait_until(WAIT, |st| st.messages.len() == 1));
    let m = &mx.messages()[0];
    assert!(m.tls);
    assert_eq!(m.content, msg);
    let conn = &mx.connections()[0];
    assert_eq!(conn.tls_version.as_deref(), Some(tls.version.as_str()));
    // EHLO before and after TLS.
    assert_eq!(
        conn.ehlo_names,
        vec!["mta.test".to_string(), "mta.test".to_string()]
    );
    println!("negotiated {} {}", tls.version, tls.cipher);
}

#[test]
fn opportunistic_without_starttls_delivers_in_plaintext_and_says_so() {
    let mx = TestMx::start(TestMxConfig::default()).unwrap();
    let h = Harness::start(&[mx.addr().port()], "");
    let mut c = h.client();
    let mut s = c
        .open(&req("127.0.0.2", mx.addr(), TlsPolicy::Opportunistic))
        .unwrap();
    assert!(s.ready.tls.is_none());
    assert!(s
        .ready
        .tls_note
        .as_deref()
        .unwrap()
        .contains("does not offer STARTTLS"));
    s.send_mail("a@x.test", &["b@y.test"], b"plain\r\n")
        .unwrap();
    s.quit().unwrap();
    assert!(mx.wait_until(WAIT, |st| st.messages.len() == 1));
    assert!(!mx.messages()[0].tls);
}

#[test]
fn required_against_a_plaintext_mx_fails_before_mail_from() {
    let mx = TestMx::start(TestMxConfig::default()).unwrap();
    let h = Harness::start(&[mx.addr().port()], "");
    let mut c = h.client();
    let f = failure(
        c.open(&req("127.0.0.2", mx.addr(), TlsPolicy::Required))
            .err()
            .unwrap(),
    );
    assert_eq!(f.failure, Failure::TlsNotOffered);
    assert!(f.failure.is_transient());
    assert!(mx.wait_until(WAIT, |st| st.connections.first().is_some_and(|c| c.closed)));
    let cmds = &mx.connections()[0].commands;
    assert!(
        !cmds
            .iter()
            .any(|l| l.to_ascii_uppercase().starts_with("MAIL")),
        "{cmds:?}"
    );
}

#[test]
fn verify_fails_on_a_self_signed_certificate() {
    let mx = tls_mx(Faults::default());
    let h = Harness::start(&[mx.addr().port()], "");
    let mut c = h.client();
    let mut r = req("127.0.0.2", mx.addr(), TlsPolicy::Verify);
    r.tls_name = Some("mx.test".into());
    let f = failure(c.open(&r).err().unwrap());
    assert_eq!(f.failure, Failure::TlsVerifyFailed, "{f}");
    assert_eq!(mx.messages().len(), 0);
}

#[test]
fn verify_succeeds_with_the_test_ca_as_extra_root() {
    let (mx, _dir, ca_yaml) = verified_mx();
    let h = Harness::start(&[mx.addr().port()], &ca_yaml);
    let mut c = h.client();
    let mut r = req("127.0.0.2", mx.addr(), TlsPolicy::Verify);
    r.tls_name = Some("mx.test".into());
    let mut s = c.open(&r).unwrap();
    let tls = s.ready.tls.clone().unwrap();
    assert!(tls.verified, "{tls:?}");
    s.send_mail("a@x.test", &["b@y.test"], b"verified\r\n")
        .unwrap();
    s.quit().unwrap();
    // The wrong name fails.
    r.tls_name = Some("other.test".into());
    let f = failure(c.open(&r).err().unwrap());
    assert_eq!(f.failure, Failure::TlsVerifyFailed, "{f}");
    assert!(mx.wait_until(WAIT, |st| st.messages.len() == 1));
}

#[test]
fn implicit_tls_smtps() {
    let cert = certgen::self_signed(&["mx.test"]).unwrap();
    let mx = TestMx::start(TestMxConfig {
        starttls: Some(TlsAcceptor::from_pem(&cert.cert_pem, &cert.key_pem).unwrap()),
        implicit_tls: true,
        ..TestMxConfig::default()
    })
    .unwrap();
    let h = Harness::start(&[mx.addr().port()], "");
    let mut c = h.client();
    let mut r = req("127.0.0.2", mx.addr(), TlsPolicy::Required);
    r.smtps = true;
    let mut s = c.open(&r).unwrap();
    assert!(s.ready.tls.is_some());
    s.send_mail("a@x.test", &["b@y.test"], b"smtps\r\n")
        .unwrap();
    s.quit().unwrap();
    assert!(mx.wait_until(WAIT, |st| st.messages.len() == 1));
    assert!(mx.messages()[0].tls);
}

#[test]
fn bytes_injected_after_starttls_220_are_rejected() {
    let mx = tls_mx(Faults {
        inject_after_starttls: true,
        ..Faults::default()
    });
    let h = Harness::start(&[mx.addr().port()], "");
    let mut c = h.client();
    let f = failure(
        c.open(&req("127.0.0.2", mx.addr(), TlsPolicy::Opportunistic))
            .err()
            .unwrap(),
    );
    assert_eq!(f.failure, Failure::MxSetupFailed);
    assert!(f.text.contains("CVE-2011-0411"), "{f}");
    assert_eq!(mx.messages().len(), 0);
}

#[test]
fn a_stalled_handshake_times_out_within_the_bound_and_can_fall_back() {
    let mx = tls_mx(Faults {
        stall_tls_handshake: true,
        ..Faults::default()
    });
    let h = Harness::start(&[mx.addr().port()], "timeouts:\n  mx_tls_handshake: 1s\n");
    let mut c = h.client();
    let started = Instant::now();
    let f = failure(
        c.open(&req("127.0.0.2", mx.addr(), TlsPolicy::Opportunistic))
            .err()
            .unwrap(),
    );
    assert_eq!(f.failure, Failure::TlsFailed, "{f}");
    assert!(f.text.contains("timed out"), "{f}");
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "took {:?}",
        started.elapsed()
    );
    // With tls_fallback=yes the proxy reconnects once without TLS.
    let mut r = req("127.0.0.2", mx.addr(), TlsPolicy::Opportunistic);
    r.tls_fallback = true;
    let mut s = c.open(&r).unwrap();
    assert!(s.ready.tls.is_none());
    assert!(s
        .ready
        .tls_note
        .as_deref()
        .unwrap()
        .contains("tls_fallback"));
    s.send_mail("a@x.test", &["b@y.test"], b"fell back\r\n")
        .unwrap();
    s.quit().unwrap();
    assert!(mx.wait_until(WAIT, |st| st.messages.len() == 1));
    assert!(!mx.messages()[0].tls);
}

#[test]
fn a_multi_megabyte_message_over_tls_arrives_byte_exact() {
    let mx = tls_mx(Faults::default());
    let h = Harness::start(&[mx.addr().port()], "");
    let mut c = h.client();
    let mut msg = b"Subject: big\r\n\r\n".to_vec();
    let mut i = 0u32;
    while msg.len() < 5 * 1024 * 1024 {
        // Lines of varying length, some starting with a dot.
        let line = format!(
            "{}{}\r\n",
            if i.is_multiple_of(7) { "." } else { "" },
            "x".repeat((i % 997) as usize)
        );
        msg.extend_from_slice(line.as_bytes());
        i += 1;
    }
    let mut s = c
        .open(&req("127.0.0.2", mx.addr(), TlsPolicy::Required))
        .unwrap();
    s.send_mail("a@x.test", &["b@y.test"], &msg).unwrap();
    s.send_mail_bdat("a@x.test", &["b@y.test"], &msg, 1 << 20)
        .unwrap();
    s.quit().unwrap();
    assert!(mx.wait_until(WAIT, |st| st.messages.len() == 2));
    for m in mx.messages() {
        assert!(m.tls);
        assert!(
            m.content == msg,
            "message differs ({} vs {} octets)",
            m.content.len(),
            msg.len()
        );
    }
}

/// `smtps=yes` has no plaintext to fall back to: `tls_fallback=yes` does not apply, a failed
/// handshake fails the request (448) after one connection. (It used to reconnect, again with
/// implicit TLS, and a retry that succeeded said "reconnected without TLS".)
#[test]
fn smtps_does_not_fall_back_to_plaintext() {
    use std::io::Write;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    // Not TLS on an implicit-TLS port: every handshake fails; count the connections.
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let n = accepted.clone();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { return };
            n.fetch_add(1, Ordering::SeqCst);
            let _ = s.write_all(b"220 plaintext here\r\n");
        }
    });
    let h = Harness::start(&[addr.port()], "");
    let mut c = h.client();
    let mut r = req("127.0.0.2", addr, TlsPolicy::Opportunistic);
    r.smtps = true;
    r.tls_fallback = true;
    let f = failure(c.open(&r).err().expect("no TLS, no connection"));
    assert_eq!(f.failure, Failure::TlsFailed, "{f:?}");
    assert_eq!(accepted.load(Ordering::SeqCst), 1, "no second connection");
}
