//! Each fault does what it says.

use super::client::Client;
use super::*;
use greenarrow_proxy_net::tls::TlsError;

fn with_faults(faults: Faults) -> TestMx {
    start(TestMxConfig {
        faults,
        ..tls_config()
    })
}

#[test]
fn banner_fault_refuses_everything_but_quit() {
    let mx = with_faults(Faults {
        banner: Some("554 5.7.1 go away".into()),
        ..Faults::default()
    });
    let mut c = Client::connect_raw(mx.addr());
    assert_eq!(c.reply(), "554 5.7.1 go away\r\n");
    c.cmd("EHLO c", "503");
    c.cmd("MAIL FROM:<a@b>", "503");
    c.cmd("QUIT", "221");
    assert!(c.read_to_end().is_empty());
    let conn = closed_conn(&mx, 0);
    assert!(conn.quit_received);
    assert!(conn.ehlo_names.is_empty());
}

#[test]
fn ehlo_and_helo_replies() {
    let mx = with_faults(Faults {
        ehlo_reply: Some("502 5.5.1 no EHLO".into()),
        helo_reply: Some("250 old school".into()),
        ..Faults::default()
    });
    let mut c = Client::connect(mx.addr());
    assert_eq!(c.cmd("EHLO c", "502"), "502 5.5.1 no EHLO\r\n");
    c.cmd("MAIL FROM:<a@b>", "503");
    assert_eq!(c.cmd("HELO c", "250"), "250 old school\r\n");
    c.send_message("a@b", &["c@d"], b"x\r\n.\r\n");
    let conn = &mx.connections()[0];
    assert_eq!(conn.ehlo_names, vec!["c", "c"]);
    assert!(conn.helo_used);

    let mx = with_faults(Faults {
        helo_reply: Some("550 5.7.1 no HELO either".into()),
        ..Faults::default()
    });
    let mut c = Client::connect(mx.addr());
    c.cmd("HELO c", "550");
    c.cmd("MAIL FROM:<a@b>", "503");
}

#[test]
fn reply_421_at_each_step() {
    for verb in ["MAIL", "RCPT", "DATA", "DATA-END", "EHLO"] {
        let mx = with_faults(Faults {
            reply_421_at: Some(verb.into()),
            ..Faults::default()
        });
        let mut c = Client::connect(mx.addr());
        let steps = [
            ("EHLO", "EHLO c\r\n"),
            ("MAIL", "MAIL FROM:<a@b>\r\n"),
            ("RCPT", "RCPT TO:<c@d>\r\n"),
            ("DATA", "DATA\r\n"),
            ("DATA-END", "body\r\n.\r\n"),
        ];
        for (step, line) in steps {
            c.send(line.as_bytes());
            if step == verb {
                assert_eq!(
                    c.reply(),
                    "421 4.3.2 mx.test closing connection (test fault)\r\n"
                );
                break;
            }
            c.reply();
        }
        assert!(c.read_to_end().is_empty(), "{verb}");
        let conn = closed_conn(&mx, 0);
        assert!(!conn.aborted_data, "{verb}");
        assert!(mx.messages().is_empty(), "{verb}");
    }
}

#[test]
fn silent_at_never_answers() {
    for verb in ["RCPT", "DATA-END"] {
        let mx = with_faults(Faults {
            silent_at: Some(verb.into()),
            ..Faults::default()
        });
        let mut c = Client::connect(mx.addr());
        c.cmd("EHLO c", "250");
        c.cmd("MAIL FROM:<a@b>", "250");
        if verb == "RCPT" {
            c.send(b"RCPT TO:<c@d>\r\nNOOP\r\n");
        } else {
            c.cmd("RCPT TO:<c@d>", "250");
            c.cmd("DATA", "354");
            c.send(b"x\r\n.\r\nNOOP\r\n");
        }
        c.shutdown_write();
        // The MX reads until our EOF and then closes without having said anything.
        assert!(c.read_to_end().is_empty(), "{verb}");
        let conn = closed_conn(&mx, 0);
        assert!(
            conn.commands.iter().any(|l| l.starts_with("RCPT")),
            "{verb}"
        );
        assert!(mx.messages().is_empty());
    }
}

#[test]
fn close_mid_data_after_some_bytes() {
    for bdat in [false, true] {
        let mx = with_faults(Faults {
            close_mid_data_after: Some(10),
            ..Faults::default()
        });
        let mut c = Client::connect(mx.addr());
        c.cmd("EHLO c", "250");
        c.cmd("MAIL FROM:<a@b>", "250");
        c.cmd("RCPT TO:<c@d>", "250");
        if bdat {
            c.send(b"BDAT 100 LAST\r\n");
        } else {
            c.cmd("DATA", "354");
        }
        c.send(&[b'z'; 100]);
        assert!(c.read_to_end().is_empty());
        closed_conn(&mx, 0);
        assert!(mx.messages().is_empty());
    }
}

#[test]
fn slow_replies_and_data_end_delay() {
    let mx = with_faults(Faults {
        slow_replies: Some(Duration::from_millis(150)),
        ..Faults::default()
    });
    let t = Instant::now();
    let mut c = Client::connect(mx.addr());
    c.cmd("NOOP", "250");
    assert!(
        t.elapsed() >= Duration::from_millis(300),
        "{:?}",
        t.elapsed()
    );

    let mx = with_faults(Faults {
        data_end_delay: Some(Duration::from_millis(300)),
        ..Faults::default()
    });
    let mut c = Client::connect(mx.addr());
    c.cmd("EHLO c", "250");
    c.cmd("MAIL FROM:<a@b>", "250");
    c.cmd("RCPT TO:<c@d>", "250");
    c.cmd("DATA", "354");
    let t = Instant::now();
    c.send(b"x\r\n.\r\n");
    c.expect("250 2.0.0 queued");
    assert!(
        t.elapsed() >= Duration::from_millis(300),
        "{:?}",
        t.elapsed()
    );
}

#[test]
fn data_end_reply_replaces_the_queued_reply() {
    let mx = with_faults(Faults {
        data_end_reply: Some("451 4.3.0 try later".into()),
        ..Faults::default()
    });
    let mut c = Client::connect(mx.addr());
    c.cmd("EHLO c", "250");
    c.cmd("MAIL FROM:<a@b>", "250");
    c.cmd("RCPT TO:<c@d>", "250");
    c.cmd("DATA", "354");
    c.send(b"x\r\n.\r\n");
    assert_eq!(c.reply(), "451 4.3.0 try later\r\n");
    c.cmd("NOOP", "250");
    assert!(mx.messages().is_empty());

    let mx = with_faults(Faults {
        data_end_reply: Some("250 2.0.0 custom ok".into()),
        ..Faults::default()
    });
    let mut c = Client::connect(mx.addr());
    c.cmd("EHLO c", "250");
    assert_eq!(
        c.send_message("a@b", &["c@d"], b"x\r\n.\r\n"),
        "250 2.0.0 custom ok\r\n"
    );
    assert_eq!(mx.messages().len(), 1);
}

#[test]
fn inject_after_starttls_sends_two_replies_in_one_write() {
    let mx = with_faults(Faults {
        inject_after_starttls: true,
        ..Faults::default()
    });
    let mut c = Client::connect(mx.addr());
    c.cmd("EHLO c", "250");
    c.send(b"STARTTLS\r\n");
    assert_eq!(c.reply(), "220 ready\r\n");
    // Arrived together with the 220: already buffered, no further read needed.
    assert_eq!(c.buf, b"250 injected\r\n");
}

#[test]
fn stall_tls_handshake() {
    let mx = with_faults(Faults {
        stall_tls_handshake: true,
        ..Faults::default()
    });
    let mut c = Client::connect(mx.addr());
    c.cmd("EHLO c", "250");
    c.cmd("STARTTLS", "220");
    let err = c.upgrade(Duration::from_millis(300)).err().unwrap();
    assert!(matches!(err, TlsError::HandshakeTimeout(_)), "{err}");
    assert_eq!(mx.stats().tls_handshakes, 0);
}

#[test]
fn idle_close_after() {
    let mx = with_faults(Faults {
        idle_close_after: Some(Duration::from_millis(200)),
        ..Faults::default()
    });
    let t = Instant::now();
    let mut c = Client::connect(mx.addr());
    c.cmd("EHLO c", "250");
    assert_eq!(c.reply(), "421 4.4.2 mx.test idle timeout\r\n");
    assert!(t.elapsed() >= Duration::from_millis(200));
    assert!(c.read_to_end().is_empty());
    let conn = closed_conn(&mx, 0);
    assert!(!conn.quit_received);
}

#[test]
fn stray_reply_after_a_verb_and_after_the_end_of_data() {
    let mx = with_faults(Faults {
        stray_reply_after: Some("MAIL".into()),
        ..Faults::default()
    });
    let mut c = Client::connect(mx.addr());
    c.cmd("EHLO c", "250");
    c.cmd("MAIL FROM:<a@b>", "250");
    assert_eq!(c.reply(), "250 2.0.0 stray reply (test fault)\r\n");

    let mx = with_faults(Faults {
        stray_reply_after: Some("DATA-END".into()),
        ..Faults::default()
    });
    let mut c = Client::connect(mx.addr());
    c.cmd("EHLO c", "250");
    assert!(c
        .send_message("a@b", &["c@d"], b"x\r\n.\r\n")
        .starts_with("250 2.0.0 queued"));
    assert_eq!(c.reply(), "250 2.0.0 stray reply (test fault)\r\n");
    assert_eq!(mx.messages().len(), 1);
}

#[test]
fn set_faults_reaches_an_open_connection_and_clears() {
    let mx = with_faults(Faults::default());
    let mut c = Client::connect(mx.addr());
    c.cmd("EHLO c", "250");
    mx.set_faults(Faults {
        reply_421_at: Some("MAIL".into()),
        ..Faults::default()
    });
    c.cmd("MAIL FROM:<a@b>", "421");
    assert!(c.read_to_end().is_empty());
    mx.set_faults(Faults::default());
    let mut c = Client::connect(mx.addr());
    c.cmd("EHLO fresh.test", "250");
    c.send_message("a@b", &["c@d"], b"x\r\n.\r\n");
    let taken = mx.take_messages();
    assert_eq!(taken.len(), 1);
    assert_eq!(taken[0].ehlo.as_deref(), Some("fresh.test"));
    assert!(mx.messages().is_empty(), "taken messages are gone");
    assert_eq!(mx.stats().messages, 1, "the counters keep counting");
}

#[test]
fn hold_replies_in_transaction_answers_a_flight_once_it_is_whole() {
    let mx = with_faults(Faults {
        hold_replies_in_transaction: true,
        ..Faults::default()
    });
    let mut c = Client::connect(mx.addr());
    c.cmd("EHLO c", "250");
    c.send(b"MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nBDAT 5 LAST\r\nhel");
    assert!(
        c.silent_for(Duration::from_millis(200)),
        "a reply came before the chunk was whole: {:?}",
        String::from_utf8_lossy(&c.buf)
    );
    c.send(b"lo");
    assert_eq!(c.expect("250"), "250 2.1.0 sender ok\r\n");
    assert_eq!(c.expect("250"), "250 2.1.5 recipient ok\r\n");
    assert!(c.expect("250").starts_with("250 2.0.0 queued as "));
    // A refused MAIL opens no transaction: its reply is not held.
    c.cmd("MAIL FROM:<a@b> SIZE=999999999999", "552");
    c.cmd("QUIT", "221");
    assert_eq!(mx.messages()[0].raw, b"hello");
}
