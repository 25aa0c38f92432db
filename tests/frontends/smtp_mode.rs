//! `mode: smtp`: the proxy answers banner, EHLO and QUIT, hides STARTTLS and AUTH, does
//! STARTTLS toward the MX itself and pools MX connections with the native protocol.

use super::*;

#[test]
fn smtp_mode_two_swaks_sessions_share_one_mx_connection_and_one_tls_upgrade() {
    let mx = tls_mx(Faults::default());
    let h = Harness::start(
        &[mx.addr().port()],
        &smtp_mode_config("proxy_protocol", "required"),
    );
    let mut mails = Vec::new();
    for n in 0..2 {
        let mail = Mail::new(&format!("smtp-mode-{n}"));
        // No -tls: the MTA leaves STARTTLS to the proxy.
        let p = SwaksProxy::v1(ip("127.0.0.2"), mx.addr());
        let Some(out) = clients::swaks(h.frontend(0), Some(&p), false, &mail) else {
            return;
        };
        assert!(out.ok(), "{out}");
        // The EHLO reply the MTA saw offers neither STARTTLS nor AUTH.
        let ehlo_lines: Vec<&str> = out
            .stdout
            .lines()
            .filter(|l| l.starts_with("<-  250"))
            .collect();
        assert!(!ehlo_lines.is_empty(), "{out}");
        assert!(
            ehlo_lines
                .iter()
                .all(|l| !l.contains("STARTTLS") && !l.contains("AUTH")),
            "{out}"
        );
        // Over TLS between proxy and MX, although the MTA never said STARTTLS.
        check_delivery(&mx, n, "127.0.0.2", true, &mail);
        mails.push(mail);
    }
    let st = mx.stats();
    assert_eq!(st.connections, 1, "one MX connection for two MTA sessions");
    assert_eq!(st.tls_handshakes, 1, "one TLS upgrade");
    let conn = &mx.connections()[0];
    // The proxy's EHLO uses the MTA's name, before and after STARTTLS; the second session
    // needs none.
    assert_eq!(conn.ehlo_names, ehlos(&mails[0], true));
    assert_eq!(conn.messages, 2);
    for (m, mail) in mx.messages().iter().zip(&mails) {
        assert_eq!(m.raw, stuffed(mail), "the bytes on the wire");
    }
}

#[test]
fn smtp_mode_native_and_proxy_clients_share_one_pooled_connection() {
    let mx = tls_mx(Faults::default());
    let h = Harness::start(
        &[mx.addr().port()],
        &smtp_mode_config("proxy_protocol", "opportunistic"),
    );
    let mail = Mail::new("shared");
    let mut r = req("127.0.0.2", mx.addr(), TlsPolicy::Opportunistic);
    r.reuse = true;
    r.ehlo = mail.ehlo.clone();
    let native = |want_reused: bool| {
        let mut c = h.client();
        let mut s = c.open(&r).unwrap();
        assert_eq!(
            matches!(s.ready.origin, Origin::Reused { .. }),
            want_reused,
            "{:?}",
            s.ready.origin
        );
        s.send_mail(&mail.from, &[mail.to.as_str()], &mail.data)
            .unwrap();
        s.quit().unwrap();
        c.quit().unwrap();
    };
    // Native first: it opens the connection and leaves it in the pool.
    native(false);
    // A PROXY client with the same source, MX and EHLO name takes it.
    let p = SwaksProxy::v2(ip("127.0.0.2"), mx.addr());
    let Some(out) = clients::swaks(h.frontend(0), Some(&p), false, &mail) else {
        return;
    };
    assert!(out.ok(), "{out}");
    // And gives it back for the next native client.
    native(true);
    assert!(mx.wait_until(WAIT, |s| s.messages.len() == 3));
    assert_eq!(mx.stats().connections, 1, "one MX connection for all three");
    assert_eq!(mx.stats().tls_handshakes, 1);
    for m in mx.messages() {
        assert_eq!((m.peer.ip(), m.tls), (ip("127.0.0.2"), true));
        assert_eq!(m.content, mail.expected());
    }
}

#[test]
fn smtp_mode_hides_starttls_and_auth_and_answers_starttls_with_454() {
    let cert = greenarrow_proxy_testkit::certgen::self_signed(&["mx.test"]).unwrap();
    let mx = TestMx::start(TestMxConfig {
        starttls: Some(
            greenarrow_proxy_net::tls::TlsAcceptor::from_pem(&cert.cert_pem, &cert.key_pem)
                .unwrap(),
        ),
        auth: true,
        ..TestMxConfig::default()
    })
    .unwrap();
    let h = Harness::start(
        &[mx.addr().port()],
        &smtp_mode_config("proxy_protocol", "opportunistic"),
    );
    let mut tcp = TcpStream::connect(h.frontend(0)).unwrap();
    tcp.write_all(&kumo::proxy_v2_header(ip("127.0.0.3"), mx.addr()))
        .unwrap();
    let mut smtp = Smtp::new(tcp);
    let banner = smtp.reply().unwrap();
    assert!(banner.starts_with("220 "), "{banner}");
    let ehlo = smtp.command("EHLO mta.check.invalid").unwrap();
    assert!(ehlo.starts_with("250"), "{ehlo}");
    assert!(!advertises(&ehlo, "STARTTLS"), "{ehlo}");
    assert!(!advertises(&ehlo, "AUTH"), "{ehlo}");
    assert!(
        advertises(&ehlo, "PIPELINING"),
        "the MX's other capabilities pass: {ehlo}"
    );
    let r = smtp.command("STARTTLS").unwrap();
    assert!(r.starts_with("454"), "{r}");
    let body = b"Subject: smtp mode\r\n\r\n.leading dot\r\n";
    let done = smtp
        .send_mail("a@example.test", "b@example.test", body)
        .unwrap();
    assert!(done.starts_with("250"), "{}", smtp.show());
    let bye = smtp.command("QUIT").unwrap();
    assert!(bye.starts_with("221"), "{bye}");
    assert!(smtp.rest().unwrap().is_empty(), "EOF after 221");
    assert!(mx.wait_until(WAIT, |s| s.messages.len() == 1));
    let m = &mx.messages()[0];
    assert_eq!(
        (m.peer.ip(), m.tls, &m.content[..]),
        (ip("127.0.0.3"), true, &body[..])
    );
    let conn = &mx.connections()[0];
    assert_eq!(
        conn.commands
            .iter()
            .filter(|c| c.eq_ignore_ascii_case("STARTTLS"))
            .count(),
        1
    );
    assert!(!conn.authenticated);
    assert_eq!(conn.ehlo_names, vec!["mta.check.invalid".to_string(); 2]);
}

#[test]
fn smtp_mode_tls_required_without_starttls_answers_the_ehlo_with_421() {
    let mx = TestMx::start(TestMxConfig::default()).unwrap(); // no STARTTLS
    let h = Harness::start(
        &[mx.addr().port()],
        &smtp_mode_config("proxy_protocol", "required"),
    );
    let mut tcp = TcpStream::connect(h.frontend(0)).unwrap();
    tcp.write_all(&kumo::proxy_v2_header(ip("127.0.0.2"), mx.addr()))
        .unwrap();
    let mut smtp = Smtp::new(tcp);
    let banner = smtp.reply().unwrap();
    assert!(banner.starts_with("220 "), "{banner}");
    let r = smtp.command("EHLO mta.check.invalid").unwrap();
    assert!(r.starts_with("421 "), "{r}");
    assert!(r.contains("greenarrow_proxy: tls_not_offered"), "{r}");
    assert!(smtp.rest().unwrap().is_empty(), "closed after the 421");
    assert!(mx.wait_until(WAIT, |s| s.connections.iter().all(|c| c.closed)));
    assert_eq!(mx.stats().messages, 0);
}

#[test]
fn smtp_mode_exim_without_tls_gets_tls_from_the_proxy() {
    let mx = tls_mx(Faults::default());
    let h = Harness::start(&[mx.addr().port()], &smtp_mode_config("socks5", "required"));
    let mail = Mail::new("exim-smtp-mode");
    let opts = format!("auth=name name=127.0.0.2 pass={SECRET}");
    // hosts_avoid_tls = *: Exim leaves TLS to the proxy.
    let Some(run) = exim::exim(Some((h.frontend(0), &opts)), mx.addr(), false, &mail) else {
        return;
    };
    assert!(run.delivered(&mail.to), "{run}");
    assert!(
        !run.mainlog.contains(" X=TLS"),
        "Exim itself did no TLS: {run}"
    );
    assert!(mx.wait_until(WAIT, |s| s.messages.len() == 1));
    let m = &mx.messages()[0];
    assert_eq!((m.peer.ip(), m.tls), (ip("127.0.0.2"), true));
    let content = String::from_utf8_lossy(&m.content).into_owned();
    let ours = String::from_utf8_lossy(&mail.expected()).into_owned();
    assert!(content.ends_with(&ours), "{content}");
}

/// Issue 26: in `mode: smtp` a policy refusal (source or port not permitted) is a SOCKS
/// success, the proxy's banner and EHLO reply, then `451 4.7.1` to MAIL: Exim records a 4xx
/// to MAIL against the message, where a SOCKS failure is recorded against the MX for every
/// message and transport.
#[test]
fn smtp_mode_socks5_policy_refusals_are_a_451_to_mail() {
    let mx = TestMx::start(TestMxConfig::default()).unwrap();
    let h = Harness::start(
        &[mx.addr().port()],
        &smtp_mode_config("socks5", "opportunistic"),
    );
    let port_9 = SocketAddr::new(ip("127.0.0.1"), 9);
    for (user, dest, source, refusal) in [
        (
            "198.51.100.7",
            mx.addr(),
            [198, 51, 100, 7],
            "451 4.7.1 greenarrow_proxy: source_not_permitted ",
        ),
        (
            "127.0.0.2",
            port_9,
            [127, 0, 0, 2],
            "451 4.7.1 greenarrow_proxy: destination_not_permitted ",
        ),
    ] {
        let mut tcp = TcpStream::connect(h.frontend(0)).unwrap();
        let ok = kumo::socks5_handshake(&mut tcp, Some((user, SECRET)), None, dest)
            .unwrap_or_else(|e| panic!("{user} to {dest}: {e}"));
        // Success with the source and port 0, as for any CONNECT in mode: smtp.
        let mut want = vec![5, 0, 0, 1];
        want.extend_from_slice(&source);
        want.extend_from_slice(&[0, 0]);
        assert_eq!(ok.connect_reply, want);
        let mut smtp = Smtp::new(tcp);
        assert_eq!(
            smtp.reply().unwrap(),
            "220 greenarrow_proxy ESMTP ready\r\n"
        );
        assert_eq!(
            smtp.command("EHLO mta.check.invalid").unwrap(),
            "250 greenarrow_proxy\r\n"
        );
        for command in ["MAIL FROM:<a@x.test>", "RCPT TO:<b@y.test>", "DATA"] {
            let r = smtp.command(command).unwrap();
            assert!(r.starts_with(refusal), "{command}: {r:?}");
            assert!(
                r.ends_with("\r\n") && r.matches("\r\n").count() == 1,
                "{r:?}"
            );
        }
        assert_eq!(smtp.command("RSET").unwrap(), "250 2.0.0 ok\r\n");
        assert_eq!(
            smtp.command("QUIT").unwrap(),
            "221 2.0.0 greenarrow_proxy closing connection\r\n"
        );
        assert!(smtp.rest().unwrap().is_empty(), "closed after the 221");
    }
    assert_eq!(mx.stats().connections, 0, "nothing reached the MX");
}
