//! The daemon as operators run it: the real `greenarrow_proxy` binary in a child process,
//! configured by a file, receiving real signals (SIGUSR1, SIGHUP, SIGTERM), talking to
//! systemd's notify socket, and logging to stderr.
//!
//! Every wait is bounded (10 s) and reads the daemon's stderr through a channel: the
//! "ready on" line tells the port it bound (`listen: 127.0.0.1:0`) and that it is ready.
//! No secret may ever appear in the daemon's stderr (checked when each daemon is dropped).

mod frontends;

use greenarrow_proxy_client::ClientError;
use greenarrow_proxy_proto::protocol::{Failure, Origin};
use greenarrow_proxy_testkit::daemon::setup::{
    conn_from, field, fields, is_secs, Setup, NEW_SECRET,
};
use greenarrow_proxy_testkit::daemon::{self, Daemon, WAIT};
use greenarrow_proxy_testkit::fixtures::SECRET;
use greenarrow_proxy_testkit::raw;
use nix::sys::signal::Signal::{SIGHUP, SIGINT, SIGTERM, SIGUSR1};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;

#[test]
fn sigusr1_reports_every_pooled_connection_and_the_counters() {
    let s = Setup::new("");
    let mut d = s.daemon();
    let addr = d.wait_ready()[0];
    for source in ["127.0.0.2", "127.0.0.3"] {
        s.deliver(addr, SECRET, &s.request(source, true), b"hello\r\n");
        // The 221 reaches the MTA before the connection is checked in: wait for the log.
        let kept = d.wait_for("kept for reuse");
        // Structured fields trail the text on stderr.
        assert!(kept.contains(" mta=127.0.0.1:"), "{kept}");
        assert!(kept.contains(&format!(" mx={}", s.mx.addr())), "{kept}");
    }
    d.signal(SIGUSR1);
    let mut pooled = [d.wait_for("report pooled "), d.wait_for("report pooled ")];
    let summary = d.wait_for("report summary ");
    pooled.sort();
    for (line, source) in pooled.iter().zip(["127.0.0.2", "127.0.0.3"]) {
        let f = fields(line, "report pooled ");
        let keys: Vec<&str> = f.iter().map(|(k, _)| *k).collect();
        assert_eq!(
            keys,
            [
                "source", "ehlo", "mx", "tls", "cipher", "age", "idle", "uses", "messages",
                "last_mta"
            ],
            "{line}"
        );
        assert_eq!(field(&f, "source"), source, "{line}");
        assert_eq!(field(&f, "ehlo"), "mta.test", "{line}");
        assert_eq!(field(&f, "mx"), s.mx.addr().to_string(), "{line}");
        assert_eq!(field(&f, "tls"), "TLSv1.3", "{line}");
        assert!(field(&f, "cipher").starts_with("TLS13_"), "{line}");
        assert!(is_secs(field(&f, "age")), "{line}");
        assert!(is_secs(field(&f, "idle")), "{line}");
        assert_eq!(field(&f, "uses"), "1", "{line}");
        assert_eq!(field(&f, "messages"), "1", "{line}");
        let mta: SocketAddr = field(&f, "last_mta").parse().unwrap();
        assert_eq!(mta.ip().to_string(), "127.0.0.1", "{line}");
    }
    let f = fields(&summary, "report summary ");
    for (k, v) in [
        ("pooled", "2"),
        ("keys", "2"),
        ("pool_hits", "0"),
        ("pool_stored", "2"),
        ("sessions_total", "2"),
        ("connects", "2"),
        ("connect_failures", "0"),
        ("messages", "2"),
    ] {
        assert_eq!(field(&f, k), v, "{k} in {summary}");
    }
    let mx = s.mx.addr();
    assert_eq!(
        field(&f, "per_key"),
        format!("127.0.0.2/mta.test/{mx}:1,127.0.0.3/mta.test/{mx}:1"),
        "{summary}"
    );
    // Both connections are still open at the MX, unquit.
    let st = s.mx.state();
    assert_eq!(st.connections.len(), 2);
    assert!(st.connections.iter().all(|c| !c.quit_received && !c.closed));
}

#[test]
fn sighup_with_a_broken_file_keeps_the_running_configuration() {
    let s = Setup::new("");
    let mut d = s.daemon();
    let addr = d.wait_ready()[0];
    let failed = "reload failed, keeping the running configuration: ";

    // Not YAML at all (the secret is in the file: it must not leak into the error).
    s.rewrite(&format!(
        "auth_shared_secret: \"{SECRET}\"\nlisten: [\"127.0.0.1:0\"\n  tls_certificate: [}}\n"
    ));
    d.signal(SIGHUP);
    let line = d.wait_for(failed);
    assert!(line.starts_with("ERROR "), "{line}");
    let why = line.split_once(failed).unwrap().1;
    assert!(
        why.contains(" at line 3 column 3"),
        "the error should say where: {line}"
    );
    s.deliver(addr, SECRET, &s.request("127.0.0.2", false), b"one\r\n");

    // Valid YAML, invalid value: the error names the key.
    s.rewrite(&format!("{}timeouts:\n  mx_command: 5 parsecs\n", s.yaml));
    d.signal(SIGHUP);
    let line = d.wait_for(failed);
    assert!(line.contains(": timeouts.mx_command: "), "{line}");
    s.deliver(addr, SECRET, &s.request("127.0.0.2", false), b"two\r\n");

    // Valid file naming a certificate that does not exist: the error names the file.
    let missing = s.dir.0.join("missing.pem");
    s.rewrite(
        &s.yaml
            .replace("tls_certificate: cert.pem", "tls_certificate: missing.pem"),
    );
    d.signal(SIGHUP);
    let line = d.wait_for(failed);
    assert!(line.contains(&missing.display().to_string()), "{line}");
    s.deliver(addr, SECRET, &s.request("127.0.0.2", false), b"three\r\n");

    assert!(s.mx.wait_until(WAIT, |st| st.messages.len() == 3));
    assert!(
        !d.seen()
            .iter()
            .any(|l| l.contains("configuration reloaded")),
        "{:?}",
        d.seen()
    );
    // Still the same process, still serving.
    d.signal(SIGTERM);
    d.wait_for("all sessions ended; exiting");
    assert!(d.wait_exit().success());
}

#[test]
fn sighup_with_a_new_secret_rejects_the_old_one_but_lets_a_session_finish() {
    let s = Setup::new("");
    let mut d = s.daemon();
    let addr = d.wait_ready()[0];
    // A session authenticated with the old secret, in the middle of a message.
    let mut old = s.session_mid_body(addr, SECRET, "127.0.0.3", "Subject: in flight\r\n\r\n");

    s.rewrite(&s.yaml.replace(SECRET, NEW_SECRET));
    d.signal(SIGHUP);
    d.wait_for("configuration reloaded from");

    // New sessions: the old secret is refused, the new one works.
    let mut c = s.client(addr, SECRET);
    match c.authenticate() {
        Err(ClientError::Proxy(f)) => assert_eq!(f.failure, Failure::AuthFailed, "{f}"),
        other => panic!("the old secret should be refused, got {other:?}"),
    }
    d.wait_for("authentication failed");
    s.deliver(addr, NEW_SECRET, &s.request("127.0.0.2", false), b"new\r\n");

    // The session opened before the reload completes its message.
    old.send(b"second half\r\n.\r\n");
    let r = old.reply();
    assert!(r.starts_with("250 "), "{r}");
    old.expect("QUIT\r\n", "221 ");
    old.expect("QUIT\r\n", "221 ");

    assert!(s.mx.wait_until(WAIT, |st| st.messages.len() == 2));
    let msgs = s.mx.messages();
    assert_eq!(msgs[0].content, b"new\r\n");
    assert_eq!(
        msgs[1].content,
        b"Subject: in flight\r\n\r\nsecond half\r\n"
    );
    assert_eq!(msgs[1].peer.ip().to_string(), "127.0.0.3");
}

#[test]
fn sigterm_quits_pooled_connections_and_lets_a_session_finish() {
    let s = Setup::new("");
    let mut d = s.daemon();
    let addr = d.wait_ready()[0];
    s.deliver(addr, SECRET, &s.request("127.0.0.2", true), b"pooled\r\n");
    d.wait_for("kept for reuse");
    let mut busy = s.session_mid_body(addr, SECRET, "127.0.0.3", "Subject: busy\r\n\r\n");

    d.signal(SIGTERM);
    d.wait_for("stopping: no longer accepting connections");
    d.wait_for("stopping: closing 1 pooled connection(s)");
    // The pooled connection got QUIT.
    assert!(s.mx.wait_until(WAIT, |st| conn_from(st, "127.0.0.2")
        .is_some_and(|c| c.quit_received && c.closed)));
    // Nothing accepts new MTAs any more.
    assert!(TcpStream::connect_timeout(&addr, WAIT).is_err());
    // Our session, and perhaps the first MTA's, still closing after its QUIT.
    d.wait_line("the drain to start", |l| {
        l.contains("waiting up to 30s for 1 session(s) in progress")
            || l.contains("waiting up to 30s for 2 session(s) in progress")
    });

    // The session in progress finishes its message and ends.
    busy.send(b"still here\r\n.\r\n");
    let r = busy.reply();
    assert!(r.starts_with("250 "), "{r}");
    busy.expect("QUIT\r\n", "221 ");
    // Back in the command state of a stopping proxy: told so (or, had the QUIT come first, 221).
    busy.send(b"QUIT\r\n");
    let r = busy.reply();
    assert!(
        r.starts_with("221 ") || r.starts_with("421 4.3.2 busy"),
        "{r}"
    );
    d.wait_for("all sessions ended; exiting");
    let status = d.wait_exit();
    assert_eq!(status.code(), Some(0), "{status:?}");

    let st = s.mx.state();
    assert_eq!(st.messages.len(), 2);
    assert_eq!(
        st.messages[1].content,
        b"Subject: busy\r\n\r\nstill here\r\n"
    );
    // The session's own MX connection was not kept: QUIT, closed, message complete.
    assert!(s
        .mx
        .wait_until(WAIT, |st| conn_from(st, "127.0.0.3").is_some_and(|c| c
            .quit_received
            && c.closed
            && !c.aborted_data
            && c.messages == 1)));
}

#[test]
fn an_mta_idle_between_requests_is_told_421_and_does_not_hold_up_the_stop() {
    let s = Setup::new("");
    let mut d = s.daemon();
    let addr = d.wait_ready()[0];
    // An MTA that keeps its proxy connection open between SMTP sessions.
    let mut idle = raw::Raw::connect(addr, &s.ca_pem);
    let auth = idle.expect(&format!("AUTH 1 {SECRET}\r\n"), "235 ");
    assert!(auth.starts_with("235 "), "{auth}");
    d.signal(SIGTERM);
    // Woken at once: told why, and the drain does not wait out its 30 s grace period.
    let r = idle.reply();
    assert!(r.starts_with("421 4.3.2 busy the proxy is stopping"), "{r}");
    d.wait_for("all sessions ended; exiting");
    assert_eq!(d.wait_exit().code(), Some(0));
}

#[test]
fn a_second_stop_signal_exits_without_waiting() {
    let s = Setup::new("");
    let mut d = s.daemon();
    let addr = d.wait_ready()[0];
    let _busy = s.session_mid_body(addr, SECRET, "127.0.0.3", "Subject: cut\r\n\r\n");
    d.signal(SIGTERM);
    d.wait_line("the drain to start", |l| {
        l.contains("waiting up to 30s for")
    });
    d.signal(SIGINT);
    d.wait_for("second stop signal: exiting now");
    let status = d.wait_exit();
    assert_eq!(status.code(), Some(0), "{status:?}");
    // The message that was in progress was not completed at the MX.
    assert!(s.mx.wait_until(WAIT, |st| conn_from(st, "127.0.0.3")
        .is_some_and(|c| c.closed)));
    assert_eq!(s.mx.state().messages.len(), 0);
}

#[test]
fn sd_notify_ready_reloading_stopping() {
    // A port chosen here, so that READY=1 can be checked against the listener without
    // reading the log first.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let s = Setup::new(&format!("listen: [\"127.0.0.1:{port}\"]\n"));
    let path = s.dir.0.join("notify.sock");
    let sock = UnixDatagram::bind(&path).unwrap();
    sock.set_read_timeout(Some(WAIT)).unwrap();
    let recv = || {
        let mut b = [0u8; 1024];
        let n = sock.recv(&mut b).expect("no notification in time");
        String::from_utf8(b[..n].to_vec()).unwrap()
    };
    let mut d = Daemon::spawn(&s.config, &[SECRET], |c| {
        c.env("NOTIFY_SOCKET", &path);
    });

    assert_eq!(recv(), "READY=1\n");
    // READY came after the listener was bound.
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    s.client(addr, SECRET).noop().unwrap();
    assert_eq!(d.wait_ready(), [addr]);

    d.signal(SIGHUP);
    let reloading = recv();
    let mut lines = reloading.lines();
    assert_eq!(lines.next(), Some("RELOADING=1"), "{reloading:?}");
    let usec = lines
        .next()
        .and_then(|l| l.strip_prefix("MONOTONIC_USEC="))
        .and_then(|v| v.parse::<u64>().ok());
    assert!(usec.is_some_and(|u| u > 0), "{reloading:?}");
    assert_eq!(lines.next(), None, "{reloading:?}");
    // A good reload clears the status text (of an earlier failed one).
    assert_eq!(recv(), "READY=1\nSTATUS=\n");
    d.wait_for("configuration reloaded from");

    // A failed reload also ends with READY=1 (the old configuration is serving), and the
    // status text says so.
    s.rewrite("listen: [\n");
    d.signal(SIGHUP);
    assert!(recv().starts_with("RELOADING=1\n"));
    let ready = recv();
    assert!(
        ready.starts_with(
            "READY=1\nSTATUS=reload failed, still running the previous configuration: "
        ),
        "{ready:?}"
    );
    assert!(ready.contains(&s.config.display().to_string()), "{ready:?}");
    assert_eq!(ready.matches('\n').count(), 2, "{ready:?}");
    d.wait_for("reload failed");
    // Still the old configuration: the listener answers.
    s.client(addr, SECRET).noop().unwrap();
    // Fixed: the next reload clears the text.
    s.rewrite(&s.yaml);
    d.signal(SIGHUP);
    assert!(recv().starts_with("RELOADING=1\n"));
    assert_eq!(recv(), "READY=1\nSTATUS=\n");
    d.wait_for("configuration reloaded from");

    d.signal(SIGTERM);
    assert_eq!(recv(), "STOPPING=1\n");
    assert!(d.wait_exit().success());
}

#[test]
fn check_config_prints_the_effective_configuration_or_a_precise_error() {
    let s = Setup::new("");
    let config = s.config.to_str().unwrap();
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();

    let out = daemon::run(&["--check-config", "--config-filename", config]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(!stdout.contains(SECRET) && !stderr.contains(SECRET));
    let eff: yaml_serde::Value = yaml_serde::from_str(&stdout).unwrap();
    assert_eq!(
        eff["auth_shared_secret"].as_str(),
        Some("<redacted>"),
        "{stdout}"
    );
    assert_eq!(eff["listen"][0].as_str(), Some("127.0.0.1:0"), "{stdout}");
    assert_eq!(
        eff["timeouts"]["shutdown_grace"].as_str(),
        Some("30s"),
        "{stdout}"
    );
    assert!(stderr.contains("configuration is valid"), "{stderr}");

    let check = |yaml: &str| {
        s.rewrite(yaml);
        let out = daemon::run(&["--check-config", "--config-filename", config]);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(78), "{stderr}");
        assert!(out.stdout.is_empty(), "{}", text(&out.stdout));
        assert!(!stderr.contains(SECRET), "{stderr}");
        stderr
    };
    let e = check(&format!("{}timeouts:\n  mx_command: 5 parsecs\n", s.yaml));
    assert!(e.contains("timeouts.mx_command"), "{e}");
    let e = check(&format!("{}pool:\n  idle_tll: 5s\n", s.yaml));
    assert!(e.contains("pool.idle_tll"), "{e}");
    let e = check(
        &s.yaml
            .replace("tls_certificate: cert.pem", "tls_certificate: nope.pem"),
    );
    assert!(
        e.contains(&s.dir.0.join("nope.pem").display().to_string()),
        "{e}"
    );
    // A missing configuration file is named too.
    let missing = s.dir.0.join("absent.yaml");
    let out = daemon::run(&[
        "--check-config",
        "--config-filename",
        missing.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(78));
    assert!(text(&out.stderr).contains(missing.to_str().unwrap()));

    let out = daemon::run(&["--version"]);
    assert!(out.status.success());
    assert_eq!(
        text(&out.stdout),
        format!("greenarrow_proxy {}\n", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn sighup_adds_and_removes_listen_addresses() {
    let s = Setup::new("");
    let mut d = s.daemon();
    let first = d.wait_ready()[0];
    let two = s.yaml.replace(
        "listen: [\"127.0.0.1:0\"]",
        "listen: [\"127.0.0.1:0\", \"127.0.0.2:0\"]",
    );
    assert_ne!(two, s.yaml);
    s.rewrite(&two);
    d.signal(SIGHUP);
    let line = d.wait_for("listening on 127.0.0.2:");
    let second: SocketAddr = line.split_once("listening on ").unwrap().1.parse().unwrap();
    d.wait_for("configuration reloaded from");
    s.deliver(
        second,
        SECRET,
        &s.request("127.0.0.2", false),
        b"second\r\n",
    );
    s.deliver(first, SECRET, &s.request("127.0.0.2", false), b"first\r\n");

    // Dropping the first address stops that listener only.
    s.rewrite(&s.yaml.replace("127.0.0.1:0", "127.0.0.2:0"));
    d.signal(SIGHUP);
    d.wait_for("stopped listening on 127.0.0.1:0");
    d.wait_for("configuration reloaded from");
    assert!(TcpStream::connect_timeout(&first, WAIT).is_err());
    s.client(second, SECRET).noop().unwrap();

    // An address that cannot be bound: the reload fails as a whole, the listeners stay.
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_addr = taken.local_addr().unwrap();
    s.rewrite(&s.yaml.replace(
        "listen: [\"127.0.0.1:0\"]",
        &format!("listen: [\"127.0.0.2:0\", \"{taken_addr}\"]"),
    ));
    d.signal(SIGHUP);
    let line = d.wait_for("reload failed, keeping the running configuration: ");
    assert!(
        line.ends_with(&format!(
            "cannot listen on {taken_addr}: Address already in use (os error 98)"
        )),
        "{line}"
    );
    s.client(second, SECRET).noop().unwrap();
    assert!(s.mx.wait_until(WAIT, |st| st.messages.len() == 2));
}

#[test]
fn sighup_closes_pooled_connections_from_sources_no_longer_permitted() {
    let both = "source_addresses: [127.0.0.2/32, 127.0.0.3/32]\n";
    let s = Setup::new(both);
    let mut d = s.daemon();
    let addr = d.wait_ready()[0];
    for source in ["127.0.0.2", "127.0.0.3"] {
        s.deliver(addr, SECRET, &s.request(source, true), b"hello\r\n");
        d.wait_for("kept for reuse");
    }
    s.rewrite(&s.yaml.replace(both, "source_addresses: [127.0.0.2/32]\n"));
    d.signal(SIGHUP);
    d.wait_for(
        "reload: closing 1 pooled connection(s) whose source address is no longer permitted",
    );
    d.wait_for("configuration reloaded from");
    assert!(s.mx.wait_until(WAIT, |st| conn_from(st, "127.0.0.3")
        .is_some_and(|c| c.quit_received && c.closed)));
    assert!(conn_from(&s.mx.state(), "127.0.0.2").is_some_and(|c| !c.quit_received && !c.closed));

    // The removed source is refused; the kept one is reused.
    let mut c = s.client(addr, SECRET);
    match c.open(&s.request("127.0.0.3", true)) {
        Err(ClientError::Proxy(f)) => assert_eq!(f.failure, Failure::SourceNotPermitted, "{f}"),
        Err(e) => panic!("expected source_not_permitted, got {e}"),
        Ok(_) => panic!("expected source_not_permitted, got a connection"),
    }
    drop(c);
    d.signal(SIGUSR1);
    let line = d.wait_for("report ");
    assert!(line.contains("report pooled source=127.0.0.2 "), "{line}");
    let line = d.wait_for("report ");
    assert!(line.contains("report summary pooled=1 keys=1 "), "{line}");
    let mut c = s.client(addr, SECRET);
    let sess = c.open(&s.request("127.0.0.2", true)).unwrap();
    assert!(
        matches!(sess.ready.origin, Origin::Reused { .. }),
        "{:?}",
        sess.ready.origin
    );
    sess.quit().unwrap();
    c.quit().unwrap();
}

#[test]
fn check_config_quiet_prints_only_errors_and_tells_the_service_manager() {
    let s = Setup::new("");
    let config = s.config.to_str().unwrap();
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    let path = s.dir.0.join("notify.sock");
    let sock = UnixDatagram::bind(&path).unwrap();
    sock.set_read_timeout(Some(WAIT)).unwrap();
    let with_notify = |c: &mut std::process::Command| {
        c.env("NOTIFY_SOCKET", &path);
    };

    // Valid: nothing at all, exit 0, no notification.
    let out = daemon::run_with(&["--check-config", "-q", "-c", config], with_notify);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(out.stdout.is_empty(), "{}", text(&out.stdout));
    assert!(out.stderr.is_empty(), "{}", text(&out.stderr));
    // A warning is not printed either (a world-readable secret file warns).
    let secret_file = s.dir.0.join("secret");
    std::fs::write(&secret_file, SECRET).unwrap();
    std::fs::set_permissions(&secret_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    s.rewrite(&s.yaml.replace(
        &format!("auth_shared_secret: \"{SECRET}\""),
        &format!("auth_shared_secret_file: {}", secret_file.display()),
    ));
    let out = daemon::run(&["--check-config", "-c", config]);
    assert!(
        text(&out.stderr).contains("warning: "),
        "{}",
        text(&out.stderr)
    );
    let out = daemon::run(&["--check-config", "--quiet", "-c", config]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(out.stderr.is_empty(), "{}", text(&out.stderr));

    // Invalid: the error only, exit 78, and STATUS= for `systemctl status`.
    s.rewrite(&format!("{}timeouts:\n  mx_command: 5 parsecs\n", s.yaml));
    let out = daemon::run_with(&["--check-config", "-q", "-c", config], with_notify);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{stderr}");
    assert!(out.stdout.is_empty(), "{}", text(&out.stdout));
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("timeouts.mx_command"), "{stderr}");
    let mut b = [0u8; 1024];
    let n = sock.recv(&mut b).expect("no STATUS= from the failed check");
    let status = String::from_utf8(b[..n].to_vec()).unwrap();
    assert!(
        status.starts_with(
            "STATUS=configuration check failed, not reloaded; still running the previous \
             configuration: "
        ),
        "{status:?}"
    );
    assert!(status.contains("timeouts.mx_command"), "{status:?}");
    assert!(!status.contains(SECRET), "{status:?}");

    // -q belongs to --check-config.
    let out = daemon::run(&["-q", "-c", config]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
}

#[test]
fn the_shipped_example_configuration_is_refused_with_exit_78() {
    let s = Setup::new("");
    let example = include_str!("../../etc/greenarrow_proxy.yaml");
    std::fs::write(&s.config, example).unwrap();
    let mut d = s.daemon();
    let status = d.wait_exit();
    assert_eq!(status.code(), Some(78), "{:?}", d.seen());
    let config = s.config.display().to_string();
    assert_eq!(
        d.seen(),
        [format!(
            "ERROR cannot start: {config}: auth_shared_secret: still the public placeholder of \
             the example configuration: set a secret of your own (generate one with e.g. \
             `openssl rand -hex 32`); edit {config} (see greenarrow_proxy.yaml(5)) and check \
             it with greenarrow_proxy --check-config"
        )]
    );
    let out = daemon::run(&["--check-config", "-c", &config]);
    assert_eq!(out.status.code(), Some(78));
}

#[test]
fn a_daemon_that_cannot_start_says_why_once_and_exits_78_or_1() {
    // A loopback name server: with the host's remote ones the start would also warn that DANE
    // cannot apply (tests/check_config.rs), and this test counts every line.
    let s = Setup::new("dns:\n  nameservers: [\"127.0.0.1:53\"]\n");
    // A certificate that does not exist.
    s.rewrite(
        &s.yaml
            .replace("tls_certificate: cert.pem", "tls_certificate: nope.pem"),
    );
    let mut d = s.daemon();
    let status = d.wait_exit();
    // EX_CONFIG: the unit's RestartPreventExitStatus=78 keeps systemd from looping.
    assert_eq!(status.code(), Some(78), "{:?}", d.seen());
    let nope = s.dir.0.join("nope.pem").display().to_string();
    let config = s.config.display();
    assert_eq!(
        d.seen(),
        [format!(
            "ERROR cannot start: tls_certificate: {nope}: no such file; edit {config} \
             (see greenarrow_proxy.yaml(5)) and check it with greenarrow_proxy --check-config"
        )]
    );

    // A listen address already in use.
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_addr = taken.local_addr().unwrap();
    s.rewrite(&s.yaml.replace("127.0.0.1:0", &taken_addr.to_string()));
    let mut d = s.daemon();
    let status = d.wait_exit();
    assert_eq!(status.code(), Some(1), "{:?}", d.seen());
    assert_eq!(
        d.seen(),
        [format!(
            "ERROR cannot start: cannot listen on {taken_addr}: Address already in use (os error 98)"
        )]
    );
}

#[test]
fn logs_go_to_stderr_when_not_connected_to_the_journal() {
    let s = Setup::new("");
    // JOURNAL_STREAM naming something other than our stderr: not the journal.
    let mut d = Daemon::spawn(&s.config, &[SECRET], |c| {
        c.env("JOURNAL_STREAM", "1:1");
    });
    let line = d.wait_for(" ready on ");
    assert!(
        line.starts_with(&format!(
            "INFO  greenarrow_proxy {} ready on 127.0.0.1:",
            env!("CARGO_PKG_VERSION")
        )),
        "{line}"
    );
    // A failed authentication is logged, without the secret that was tried.
    let addr = daemon::ready_addrs(&line)[0];
    let mut c = s.client(addr, &format!("{SECRET}-wrong"));
    assert!(c.authenticate().is_err());
    let line = d.wait_for("authentication failed");
    assert!(
        line.starts_with("WARN  authentication failed mta=127.0.0.1:"),
        "{line}"
    );
    // SIGINT stops it like SIGTERM.
    d.signal(SIGINT);
    d.wait_for("stopping: no longer accepting connections");
    assert_eq!(d.wait_exit().code(), Some(0));
}

/// The first line a front-end connection reads after `header`.
fn first_line_after(fe: SocketAddr, header: &[u8]) -> String {
    use std::io::{BufRead, BufReader, Write};
    let mut s = TcpStream::connect(fe).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    s.write_all(header).unwrap();
    let mut line = String::new();
    BufReader::new(&s).read_line(&mut line).unwrap();
    let _ = s.write_all(b"QUIT\r\n");
    line
}

/// The address a listener log line names: `listening on 127.0.0.1:40000 (frontends[0], ...)`.
fn listening_addr(line: &str) -> SocketAddr {
    let rest = line.split_once("listening on ").unwrap().1;
    rest.split(' ').next().unwrap().parse().unwrap()
}

#[test]
fn sighup_adds_front_ends_and_changes_their_mode_for_new_connections() {
    let front = "frontends:\n  - kind: proxy_protocol\n    listen: [\"127.0.0.1:0\"]\n";
    let s = Setup::new(front);
    let mut d = s.daemon();
    let pp = listening_addr(&d.wait_for("(frontends[0], proxy_protocol)"));
    d.wait_ready();
    let header = format!(
        "PROXY TCP4 127.0.0.2 127.0.0.1 1 {}\r\n",
        s.mx.addr().port()
    );
    // Passthrough: the MX's own banner.
    let banner = first_line_after(pp, header.as_bytes());
    assert!(banner.starts_with("220 mx.test "), "{banner}");

    // The same listener in mode smtp (not rebound: the new mode applies to new
    // connections), and a SOCKS5 front-end added.
    let changed = s.yaml.replace(
        front,
        "frontends:\n  - kind: proxy_protocol\n    listen: [\"127.0.0.1:0\"]\n    mode: smtp\n  - kind: socks5\n    listen: [\"127.0.0.1:0\"]\n",
    );
    assert_ne!(changed, s.yaml);
    s.rewrite(&changed);
    d.signal(SIGHUP);
    let socks = listening_addr(&d.wait_for("(frontends[1], socks5)"));
    d.wait_for("configuration reloaded from");
    let banner = first_line_after(pp, header.as_bytes());
    assert_eq!(banner, "220 greenarrow_proxy ESMTP ready\r\n");
    // SOCKS5 with auth: password answers a client offering no authentication with 05 FF.
    {
        use std::io::{Read, Write};
        let mut c = TcpStream::connect(socks).unwrap();
        c.set_read_timeout(Some(WAIT)).unwrap();
        c.write_all(&[5, 1, 0]).unwrap();
        let mut reply = [0u8; 2];
        c.read_exact(&mut reply).unwrap();
        assert_eq!(reply, [5, 0xff]);
    }

    // A fixed address that changes kind (PROXY to SOCKS5) is rebound as the new kind.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let fixed = |kind: &str| {
        s.yaml.replace(
            front,
            &format!("frontends:\n  - kind: {kind}\n    listen: [\"127.0.0.1:{port}\"]\n"),
        )
    };
    s.rewrite(&fixed("proxy_protocol"));
    d.signal(SIGHUP);
    d.wait_for(&format!(
        "listening on 127.0.0.1:{port} (frontends[0], proxy_protocol)"
    ));
    d.wait_for("configuration reloaded from");
    s.rewrite(&fixed("socks5"));
    d.signal(SIGHUP);
    d.wait_for(&format!(
        "listening on 127.0.0.1:{port} (frontends[0], socks5)"
    ));
    d.wait_for("configuration reloaded from");
    {
        use std::io::{Read, Write};
        let mut c = TcpStream::connect(("127.0.0.1", port)).unwrap();
        c.set_read_timeout(Some(WAIT)).unwrap();
        c.write_all(&[5, 1, 0]).unwrap();
        let mut reply = [0u8; 2];
        c.read_exact(&mut reply).unwrap();
        assert_eq!(reply, [5, 0xff], "SOCKS5 now on that port");
    }

    // Front-ends removed: the listeners stop.
    s.rewrite(&s.yaml.replace(front, ""));
    d.signal(SIGHUP);
    d.wait_for("configuration reloaded from");
    assert!(TcpStream::connect_timeout(&pp, WAIT).is_err());
    assert!(TcpStream::connect_timeout(&socks, WAIT).is_err());
    assert!(TcpStream::connect_timeout(&SocketAddr::from(([127, 0, 0, 1], port)), WAIT).is_err());
}

/// A reload that moves a fixed address to another kind of listener and then fails to bind a
/// further address is refused as a whole: the moved address keeps listening as it was (it was
/// unbound, waiting to be rebound as the new kind, and stayed so until the next good reload).
#[test]
fn a_reload_that_cannot_bind_keeps_a_moved_listener_as_it_was() {
    let fixed = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = fixed.local_addr().unwrap().port();
    drop(fixed);
    let front =
        format!("frontends:\n  - kind: proxy_protocol\n    listen: [\"127.0.0.1:{port}\"]\n");
    let s = Setup::new(&front);
    let mut d = s.daemon();
    d.wait_for(&format!(
        "listening on 127.0.0.1:{port} (frontends[0], proxy_protocol)"
    ));
    d.wait_ready();
    // The address moves to a SOCKS5 front-end; a second front-end wants an address in use.
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let busy = taken.local_addr().unwrap();
    s.rewrite(&s.yaml.replace(
        &front,
        &format!(
            "frontends:\n  - kind: socks5\n    listen: [\"127.0.0.1:{port}\"]\n  - kind: socks5\n    listen: [\"{busy}\"]\n"
        ),
    ));
    d.signal(SIGHUP);
    d.wait_for("reload failed");
    // Still the PROXY front-end on that port: the MX's banner after a header.
    let header = format!(
        "PROXY TCP4 127.0.0.2 127.0.0.1 1 {}\r\n",
        s.mx.addr().port()
    );
    let banner = first_line_after(SocketAddr::from(([127, 0, 0, 1], port)), header.as_bytes());
    assert!(banner.starts_with("220 mx.test "), "{banner}");
    drop(taken);
}
