//! Relay integrity against a hostile MX or a careless MTA (issue 11): a tiny scripted MX on
//! loopback answers each command as the test says, in one write per pipelined batch (as
//! Postfix does); the real proxy runs in this process. Each test asserts what the MTA was told,
//! what the MX received, and whether the connection was pooled.

mod common;
#[path = "integrity/scripted.rs"]
mod scripted;

use common::*;
use greenarrow_proxy_proto::protocol::{ConnectRequest, TlsPolicy};
use scripted::*;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// How long any expected state may take to appear.
const WAIT: Duration = Duration::from_secs(10);

/// Item 1: DATA answered `354` and a stray `250` in one write, the end of data refused with
/// `554`. The MTA must never be told `250` for the message; the connection is not pooled,
/// and the next MTA gets a new connection and its own replies.
#[test]
fn a_stray_reply_after_354_never_reaches_the_mta_as_the_message_reply() {
    let mx = ScriptedMx::start(|conn, cmd| match (conn, cmd) {
        (0, "DATA") => Some(Answer::Send(
            b"354 go ahead\r\n250 2.0.0 stray\r\n".to_vec(),
        )),
        (_, "DATA-END") => Some(Answer::Send(b"554 5.7.1 message refused\r\n".to_vec())),
        (_, c) if c.starts_with("MAIL") => Some(Answer::Send(
            format!("250 2.1.0 sender ok conn={conn}\r\n").into_bytes(),
        )),
        _ => None,
    });
    let h = proxy(&mx, "");
    let (mut raw, _) = open(&h, &request(&mx, true));
    let r = exchange(
        &mut raw,
        b"MAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\nDATA\r\n",
        3,
    );
    // MAIL and RCPT were answered in the same batch as DATA: still unwritten when the MX
    // proved out of step, their replies are withdrawn with it (the proxy's 421).
    assert!(r[..2].iter().all(|x| x.starts_with("421 4.4.2 ")), "{r:?}");
    let message_reply = if r[2].starts_with("354") {
        // (The old relay let the 354 through and answered the end of data with the stray.)
        exchange(&mut raw, b"Subject: x\r\n\r\nbody\r\n.\r\n", 1).remove(0)
    } else {
        r[2].clone()
    };
    assert!(
        message_reply.starts_with("421 4.4.2 "),
        "the MTA was told {message_reply:?} for a message the MX refused"
    );
    quit_then_noop(&mut raw);
    mx.wait_closed(0);
    assert!(!mx.lines(0).iter().any(|l| l.starts_with("Subject")));

    let (mut raw, ready) = open(&h, &request(&mx, true));
    assert!(ready.contains("connection=new"), "{ready}");
    assert_eq!(mx.connections(), 2);
    let r = exchange(
        &mut raw,
        b"MAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\n",
        2,
    );
    assert_eq!(r[0], "250 2.1.0 sender ok conn=1\r\n");
    assert_eq!(r[1], "250 2.0.0 ok\r\n");
    quit_then_noop(&mut raw);
}

/// Item 1: an extra `250` after MAIL, RCPT refused with `550`, pipelined: the MTA is never
/// told `250` for the RCPT.
#[test]
fn an_extra_reply_after_mail_never_accepts_the_rcpt() {
    let mx = ScriptedMx::start(|_, cmd| {
        if cmd.starts_with("MAIL") {
            Some(Answer::Send(
                b"250 2.1.0 ok\r\n250 2.0.0 extra\r\n".to_vec(),
            ))
        } else if cmd.starts_with("RCPT") {
            Some(Answer::Send(b"550 5.1.1 no such user\r\n".to_vec()))
        } else {
            None
        }
    });
    let h = proxy(&mx, "");
    let (mut raw, _) = open(&h, &request(&mx, true));
    let r = exchange(
        &mut raw,
        b"MAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\n",
        2,
    );
    assert!(!r[1].starts_with("250"), "RCPT reported as {:?}", r[1]);
    assert!(r[1].starts_with("421 4.4.2 "), "{r:?}");
    // The batch's replies were still unwritten when the MX proved out of step: MAIL's is
    // withdrawn too (it may have been the stray).
    assert!(r[0].starts_with("421 4.4.2 "), "{r:?}");
    quit_then_noop(&mut raw);
    mx.wait_closed(0);
    let (mut raw, ready) = open(&h, &request(&mx, true));
    assert!(ready.contains("connection=new"), "{ready}");
    quit_then_noop(&mut raw);
}

/// A stray reply in the middle of a pipelined batch shifts every later reply onto the wrong
/// command: here RCPT 1 would be told `250` (the stray) and RCPT 2 `550` (RCPT 1's refusal, a
/// false permanent failure). The MX's extra bytes at the end of the batch show it is out of
/// step; the batch's replies, still unwritten, are withdrawn: the MTA gets `421` for each
/// command, never a shifted reply.
#[test]
fn a_stray_reply_mid_batch_withdraws_the_batchs_unwritten_replies() {
    let rcpts = std::sync::Mutex::new(0);
    let mx = ScriptedMx::start(move |_, cmd| {
        if cmd.starts_with("MAIL") {
            Some(Answer::Send(
                b"250 2.1.0 ok\r\n250 2.0.0 stray\r\n".to_vec(),
            ))
        } else if cmd.starts_with("RCPT") {
            let mut n = rcpts.lock().unwrap();
            *n += 1;
            Some(Answer::Send(if *n == 1 {
                b"550 5.1.1 rcpt 1 unknown\r\n".to_vec()
            } else {
                b"250 2.1.5 rcpt 2 ok\r\n".to_vec()
            }))
        } else {
            None
        }
    });
    let h = proxy(&mx, "");
    let (mut raw, _) = open(&h, &request(&mx, true));
    let r = exchange(
        &mut raw,
        b"MAIL FROM:<a@x.test>\r\nRCPT TO:<one@y.test>\r\nRCPT TO:<two@y.test>\r\n",
        3,
    );
    for reply in &r {
        assert!(reply.starts_with("421 4.4.2 "), "a shifted reply: {r:?}");
    }
    quit_then_noop(&mut raw);
    mx.wait_closed(0);
}

/// Peak resident memory of this process while `f` runs, sampled, and VmHWM, relative to the
/// resident size before (KiB).
fn memory_growth(f: impl FnOnce()) -> (u64, u64) {
    fn status(key: &str) -> u64 {
        let s = std::fs::read_to_string("/proc/self/status").unwrap();
        s.lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
            .unwrap_or(0)
    }
    // Reset the high-water mark where the kernel allows it.
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    let before = status("VmRSS:");
    let peak = Arc::new(AtomicU64::new(before));
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (peak, done) = (peak.clone(), done.clone());
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                peak.fetch_max(status("VmRSS:"), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(2));
            }
        })
    };
    f();
    done.store(true, Ordering::Relaxed);
    sampler.join().unwrap();
    let sampled = peak.load(Ordering::Relaxed).saturating_sub(before);
    let hwm = status("VmHWM:").saturating_sub(before);
    (sampled, hwm)
}

/// Item 2: 200 pipelined RCPTs, each answered with a 496 KiB reply (124 lines of 4 KiB,
/// inside the 128 x 4 KiB limits). The MTA gets all 200, in order; the proxy's memory does
/// not grow with what the MX sends (printed; only a generous bound is asserted).
#[test]
fn two_hundred_huge_replies_flow_through_in_bounded_memory() {
    const RCPTS: usize = 200;
    let mut block = Vec::new();
    for _ in 0..123 {
        block.extend_from_slice(b"250-");
        block.extend(std::iter::repeat_n(b'x', 4090));
        block.extend_from_slice(b"\r\n");
    }
    let block = Arc::new(block);
    let count = Arc::new(AtomicU64::new(0));
    let mx = {
        let count = count.clone();
        ScriptedMx::start(move |_, cmd| {
            if !cmd.starts_with("RCPT") {
                return None;
            }
            let n = count.fetch_add(1, Ordering::SeqCst) + 1;
            let tail = format!("250 2.1.5 recipient <{n}> ok\r\n").into_bytes();
            Some(Answer::Big(block.clone(), tail))
        })
    };
    let h = proxy(&mx, "");
    let (mut raw, _) = open(&h, &request(&mx, false));
    let mut batch = b"MAIL FROM:<a@x.test>\r\n".to_vec();
    for i in 0..RCPTS {
        batch.extend_from_slice(format!("RCPT TO:<r{i}@y.test>\r\n").as_bytes());
    }
    let mut replies = Vec::new();
    let (sampled, hwm) = memory_growth(|| {
        raw.send(&batch);
        // Read line by line (a reply parser rescanning 496 KiB per read would be the
        // bottleneck here); keep only each reply's last line.
        let mut lines = BufReader::with_capacity(64 * 1024, &mut raw.s);
        let mut line = Vec::new();
        let mut in_reply = 0usize;
        while replies.len() < RCPTS + 1 {
            line.clear();
            assert!(lines.read_until(b'\n', &mut line).unwrap() > 0, "EOF");
            assert!(line.len() <= 4096, "line of {} bytes", line.len());
            in_reply += 1;
            if line.get(3) == Some(&b' ') {
                replies.push((in_reply, String::from_utf8_lossy(&line).into_owned()));
                in_reply = 0;
            }
        }
    });
    println!(
        "200 x 496 KiB replies: peak RSS growth {sampled} KiB (sampled), VmHWM growth {hwm} KiB"
    );
    assert_eq!(replies[0], (1, "250 2.0.0 ok\r\n".to_string()));
    for (i, (lines, last)) in replies[1..].iter().enumerate() {
        assert_eq!(*lines, 124, "reply {i}");
        assert_eq!(*last, format!("250 2.1.5 recipient <{}> ok\r\n", i + 1));
    }
    assert!(
        sampled < 32 * 1024,
        "the proxy grew by {sampled} KiB for replies it should stream"
    );
    let mut raw = Raw::from_stream(raw.s);
    quit_then_noop(&mut raw);
}

/// Item 4: BDAT to an MX that did not offer CHUNKING, with commands in its chunk: the proxy
/// answers 502 itself and the MX never sees the chunk (nor `MAIL FROM:<x@evil>`).
#[test]
fn bdat_to_an_mx_without_chunking_never_runs_the_chunk_as_commands() {
    let mx = ScriptedMx::start(|_, _| None);
    let h = proxy(&mx, "");
    let (mut raw, ready) = open(&h, &request(&mx, false));
    assert!(!ready.contains("CHUNKING"), "{ready}");
    let r = exchange(
        &mut raw,
        b"MAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\n",
        2,
    );
    assert!(r.iter().all(|r| r.starts_with("250 ")), "{r:?}");
    let chunk = b"RSET\r\nMAIL FROM:<x@evil>\r\nRCPT TO:<y@z>\r\nDATA\r\nbody\r\n.\r\n";
    let mut bdat = format!("BDAT {} LAST\r\n", chunk.len()).into_bytes();
    bdat.extend_from_slice(chunk);
    let r = exchange(&mut raw, &bdat, 1);
    assert!(r[0].starts_with("502 5.5.1 "), "{r:?}");
    // One reply per line: the next command is answered in step.
    let r = exchange(&mut raw, b"RSET\r\n", 1);
    assert_eq!(r[0], "250 2.0.0 ok\r\n");
    quit_then_noop(&mut raw);
    mx.wait_closed(0);
    let lines = mx.lines(0);
    assert!(
        !lines
            .iter()
            .any(|l| l.contains("x@evil") || l.starts_with("BDAT")),
        "{lines:?}"
    );
}

/// Item 5: an MX that trickles its reply a byte every 300 ms is cut at `mx_command` (1 s) for
/// the whole reply: the MTA gets 421 soon after, the MX connection is closed and the worker
/// is free once the MTA leaves.
#[test]
fn a_trickling_mx_is_cut_at_the_reply_deadline() {
    let trickle = format!("250 {}\r\n", "x".repeat(200)).into_bytes();
    let mx = ScriptedMx::start(move |_, cmd| {
        cmd.starts_with("MAIL")
            .then(|| Answer::Trickle(trickle.clone(), Duration::from_millis(300)))
    });
    let h = proxy(&mx, "timeouts:\n  mx_command: 1s\n");
    let (mut raw, _) = open(&h, &request(&mx, true));
    let started = Instant::now();
    let r = exchange(&mut raw, b"MAIL FROM:<a@x.test>\r\n", 1);
    let took = started.elapsed();
    assert!(r[0].starts_with("421 4.4.2 "), "{r:?}");
    assert!(
        took < Duration::from_secs(5),
        "421 after {took:?} (deadline 1 s)"
    );
    mx.wait_closed(0);
    drop(raw);
    let freed = Instant::now();
    while h.server.worker_counts().busy > 0 {
        assert!(freed.elapsed() < WAIT, "the session's worker is still busy");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Item 6: the MTA's own EHLO with another name than the request's makes the connection
/// unfit for the pool; with the same name it is pooled.
#[test]
fn an_mta_renaming_itself_in_ehlo_is_not_pooled() {
    for (ehlo, pooled) in [("EHLO other.test", false), ("ehlo MTA.test", true)] {
        let mx = ScriptedMx::start(|_, _| None);
        let h = proxy(&mx, "");
        let (mut raw, _) = open(&h, &request(&mx, true));
        let r = exchange(&mut raw, format!("{ehlo}\r\n").as_bytes(), 1);
        assert!(r[0].starts_with("250-scripted.test"), "{r:?}");
        quit_then_noop(&mut raw);
        let (mut raw, ready) = open(&h, &request(&mx, true));
        let expect = if pooled {
            "connection=reused"
        } else {
            "connection=new"
        };
        assert!(ready.contains(expect), "{ehlo}: {ready}");
        assert_eq!(mx.connections(), if pooled { 1 } else { 2 }, "{ehlo}");
        quit_then_noop(&mut raw);
    }
}

/// Item 7: an over-long AUTH response gets the proxy's 500 and cancels the exchange: the
/// MTA's next line never reaches the MX as AUTH data, and every line gets exactly one reply.
#[test]
fn an_over_long_auth_response_does_not_leave_auth_open() {
    let mx = ScriptedMx::start(|_, cmd| {
        if cmd.starts_with("AUTH") {
            Some(Answer::Send(b"334 VXNlcm5hbWU6\r\n".to_vec()))
        } else {
            None
        }
    });
    let h = proxy(&mx, "");
    let (mut raw, _) = open(&h, &request(&mx, false));
    let r = exchange(&mut raw, b"AUTH LOGIN\r\n", 1);
    assert_eq!(r[0], "334 VXNlcm5hbWU6\r\n");
    let mut long = vec![b'A'; 5000];
    long.extend_from_slice(b"\r\n");
    let r = exchange(&mut raw, &long, 1);
    assert!(r[0].starts_with("500 5.5.2 "), "{r:?}");
    let r = exchange(&mut raw, b"MAIL FROM:<a@x.test>\r\n", 1);
    assert!(r[0].starts_with("421 4.4.2 "), "{r:?}");
    quit_then_noop(&mut raw);
    mx.wait_closed(0);
    let lines = mx.lines(0);
    let auth = lines.iter().position(|l| l == "AUTH LOGIN").unwrap();
    assert!(
        lines[auth + 1..].iter().all(|l| !l.starts_with("MAIL")),
        "{lines:?}"
    );
}

/// A TLS MX that sends a TLS record without data (a KeyUpdate) after its reply to `NOOP KU`,
/// once the MTA has that reply: the record waits in the proxy's socket. The proxy looks at the
/// MX without waiting before the next batch: a readable socket that yields no data is no
/// violation, so the session goes on and the connection is pooled and reused.
#[test]
fn tls_records_without_data_are_not_unsolicited_replies() {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let ck = greenarrow_proxy_testkit::certgen::self_signed(&["mx.test"]).unwrap();
    let cert = CertificateDer::from_pem_slice(ck.cert_pem.as_bytes()).unwrap();
    let key = PrivateKeyDer::from_pem_slice(ck.key_pem.as_bytes()).unwrap();
    let config = Arc::new(
        rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .unwrap(),
    );
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let connections = Arc::new(AtomicU64::new(0));
    let key_updates = Arc::new(AtomicU64::new(0));
    let (go, go_rx) = std::sync::mpsc::channel::<()>();
    let go_rx = Arc::new(Mutex::new(go_rx));
    let (sent_tx, sent) = std::sync::mpsc::channel::<()>();
    {
        let (connections, key_updates) = (connections.clone(), key_updates.clone());
        std::thread::spawn(move || {
            for tcp in listener.incoming() {
                let Ok(mut tcp) = tcp else { return };
                connections.fetch_add(1, Ordering::SeqCst);
                let (config, key_updates) = (config.clone(), key_updates.clone());
                let (go_rx, sent_tx) = (go_rx.clone(), sent_tx.clone());
                std::thread::spawn(move || -> std::io::Result<()> {
                    tcp.write_all(b"220 tls.test ESMTP\r\n")?;
                    let mut plain = BufReader::new(tcp.try_clone()?);
                    let mut line = String::new();
                    plain.read_line(&mut line)?; // EHLO
                    tcp.write_all(b"250-tls.test\r\n250-STARTTLS\r\n250 PIPELINING\r\n")?;
                    line.clear();
                    plain.read_line(&mut line)?; // STARTTLS
                    tcp.write_all(b"220 go ahead\r\n")?;
                    let conn = rustls::ServerConnection::new(config).unwrap();
                    let mut tls = rustls::StreamOwned::new(conn, tcp);
                    let mut pending = Vec::new();
                    loop {
                        let mut byte = [0u8; 1];
                        if tls.read(&mut byte)? == 0 {
                            return Ok(());
                        }
                        pending.push(byte[0]);
                        if byte[0] != b'\n' {
                            continue;
                        }
                        let cmd = String::from_utf8_lossy(&pending).trim_end().to_uppercase();
                        pending.clear();
                        if cmd == "QUIT" {
                            tls.write_all(b"221 bye\r\n")?;
                            return Ok(());
                        }
                        let reply: &[u8] = if cmd.starts_with("EHLO") {
                            b"250-tls.test\r\n250 PIPELINING\r\n"
                        } else {
                            b"250 2.0.0 ok\r\n"
                        };
                        tls.write_all(reply)?;
                        tls.flush()?;
                        if cmd == "NOOP KU" {
                            // Once the MTA has the reply (then the proxy waits for the MTA).
                            let _ = go_rx.lock().unwrap().recv_timeout(WAIT);
                            tls.conn.refresh_traffic_keys().unwrap();
                            tls.flush()?;
                            key_updates.fetch_add(1, Ordering::SeqCst);
                            let _ = sent_tx.send(());
                        }
                    }
                });
            }
        });
    }
    let h = Harness::start(&[addr.port()], "");
    let mut r = req("127.0.0.2", addr, TlsPolicy::Opportunistic);
    r.reuse = true;
    let (mut raw, ready) = open(&h, &r);
    assert!(ready.contains("tls=TLSv1.3"), "{ready}");
    for _ in 0..20 {
        let r = exchange(&mut raw, b"NOOP KU\r\n", 1);
        assert_eq!(r[0], "250 2.0.0 ok\r\n");
        go.send(()).unwrap();
        sent.recv_timeout(WAIT).unwrap();
    }
    let replies = exchange(&mut raw, b"NOOP\r\nMAIL FROM:<a@x.test>\r\nRSET\r\n", 3);
    assert!(
        replies.iter().all(|r| r == "250 2.0.0 ok\r\n"),
        "{replies:?}"
    );
    quit_then_noop(&mut raw);
    assert_eq!(key_updates.load(Ordering::SeqCst), 20);
    let (mut raw, ready) = open(&h, &r);
    assert!(ready.contains("connection=reused"), "{ready}");
    assert_eq!(connections.load(Ordering::SeqCst), 1);
    quit_then_noop(&mut raw);
}
