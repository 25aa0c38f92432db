//! `gaproxy cert` as an administrator runs it: the real binary makes a private CA, the
//! proxy's certificate and MTA client certificates with the documented modes and group;
//! running it again keeps what exists and adds a client; and the real daemon started with
//! the result serves an MTA that trusts only ca.pem, by secret and by client certificate.

use greenarrow_proxy_client::{ProxyClient, ProxyClientConfig};
use greenarrow_proxy_net::tls::ProxyClientTls;
use greenarrow_proxy_proto::protocol::TlsPolicy;
use greenarrow_proxy_testkit::daemon::{Daemon, WAIT};
use greenarrow_proxy_testkit::fixtures::{req, TempDir, SECRET};
use greenarrow_proxy_testkit::testmx::{TestMx, TestMxConfig};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Command, Output};

fn gaproxy(args: &[&str]) -> Output {
    Command::new(greenarrow_proxy_testkit::bin_path::workspace_bin("gaproxy"))
        .args(args)
        .output()
        .expect("cannot run gaproxy")
}

fn text(o: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The current group's name (every test user can give files to it).
fn my_group() -> (String, u32) {
    let gid = nix::unistd::getegid();
    let name = nix::unistd::Group::from_gid(gid)
        .unwrap()
        .map(|g| g.name)
        .unwrap_or_else(|| gid.to_string());
    (name, gid.as_raw())
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().mode() & 0o7777
}

#[test]
fn makes_the_files_with_their_modes_keeps_them_on_rerun_and_the_daemon_serves_with_them() {
    let top = TempDir::new("cert");
    let dir = top.0.join("etc/tls");
    let d = dir.to_str().unwrap();
    let (group, gid) = my_group();

    let o = gaproxy(&[
        "cert",
        "--dir",
        d,
        "--host",
        "localhost",
        "--ip",
        "127.0.0.1",
        "--ip",
        "::1",
        "--client",
        "mta1",
        "--group",
        &group,
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    for f in [
        "ca.pem",
        "ca.key",
        "cert.pem",
        "key.pem",
        "client-mta1.pem",
        "client-mta1.key",
    ] {
        assert!(
            out.contains(&format!("wrote    {}", dir.join(f).display())),
            "{f} not reported:\n{out}"
        );
    }
    assert!(out.contains("Copy "), "{out}");
    assert!(
        out.contains(&format!("tls_certificate: {d}/cert.pem")),
        "{out}"
    );
    assert!(out.contains("tls_client_names: [mta1]"), "{out}");
    // Modes and group as documented; the parent directories are not restricted.
    assert_eq!(mode(&dir), 0o750);
    assert_eq!(std::fs::metadata(&dir).unwrap().gid(), gid);
    assert_eq!(mode(&top.0.join("etc")) & 0o005, 0o005);
    for (f, m) in [
        ("ca.pem", 0o644),
        ("ca.key", 0o600),
        ("cert.pem", 0o644),
        ("key.pem", 0o640),
        ("client-mta1.pem", 0o644),
        ("client-mta1.key", 0o600),
    ] {
        assert_eq!(mode(&dir.join(f)), m, "{f}");
    }
    assert_eq!(std::fs::metadata(dir.join("key.pem")).unwrap().gid(), gid);
    let read = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap();
    let (ca, cert, key) = (read("ca.pem"), read("cert.pem"), read("key.pem"));

    // Again, with another client: everything is kept, the new client signed by the same CA.
    let o = gaproxy(&["cert", "--dir", d, "--client", "mta2", "--group", &group]);
    assert!(o.status.success(), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(out.contains(&format!("kept     {}/ca.pem", d)), "{out}");
    assert!(out.contains(&format!("kept     {}/cert.pem", d)), "{out}");
    assert!(
        out.contains(&format!("wrote    {}/client-mta2.pem", d)),
        "{out}"
    );
    assert_eq!(
        (read("ca.pem"), read("cert.pem"), read("key.pem")),
        (ca.clone(), cert.clone(), key)
    );
    assert_eq!(mode(&dir.join("client-mta2.key")), 0o600);
    let client2 = read("client-mta2.pem");
    assert_eq!(
        greenarrow_proxy_testkit::certgen::verify(
            &ca,
            &client2,
            greenarrow_proxy_testkit::certgen::Usage::Client
        ),
        Ok(())
    );
    // --force re-issues the server certificate with the same CA.
    let o = gaproxy(&[
        "cert",
        "--dir",
        d,
        "--force",
        "--ip",
        "127.0.0.1",
        "--group",
        &group,
    ]);
    assert!(o.status.success(), "{}", text(&o));
    assert_ne!(read("cert.pem"), cert);
    assert_eq!(read("ca.pem"), ca);
    assert_eq!(mode(&dir.join("key.pem")), 0o640);
    let o = gaproxy(&[
        "cert",
        "--dir",
        d,
        "--force",
        "--host",
        "localhost",
        "--ip",
        "127.0.0.1",
        "--group",
        &group,
    ]);
    assert!(o.status.success(), "{}", text(&o));

    // The daemon with these files: TLS verified with ca.pem only, by secret and by the
    // client certificate.
    let mx = TestMx::start(TestMxConfig::default()).unwrap();
    let config = top.0.join("etc/greenarrow_proxy.yaml");
    std::fs::write(
        &config,
        format!(
            "listen: [\"127.0.0.1:0\"]\nauth_shared_secret: \"{SECRET}\"\n\
             tls_certificate: tls/cert.pem\ntls_private_key: tls/key.pem\n\
             tls_client_ca: tls/ca.pem\n\
             clients:\n  - name: mta1\n    tls_client_names: [mta1]\n    source_addresses: [127.0.0.3]\n\
             source_addresses: [127.0.0.2]\ndestination_allow: [127.0.0.0/8]\n\
             destination_ports: [{}]\ncontrol_socket: none\n",
            mx.addr().port()
        ),
    )
    .unwrap();
    let mut daemon = Daemon::spawn(&config, &[SECRET], |_| {});
    let addr = daemon.wait_ready()[0];
    let trust = ProxyClientTls::from_ca_pem(ca.as_bytes()).unwrap();
    let cfg = ProxyClientConfig {
        proxy: addr,
        tls_name: "localhost".into(),
        tls: trust.clone(),
        secret: SECRET.into(),
        timeout: WAIT,
    };
    let mut c = ProxyClient::connect(&cfg).unwrap();
    let mut s = c
        .open(&req("127.0.0.2", mx.addr(), TlsPolicy::None))
        .unwrap();
    s.send_mail("a@x.test", &["b@y.test"], b"by secret\r\n")
        .unwrap();
    s.quit().unwrap();
    c.quit().unwrap();
    // By IP too (the certificate names 127.0.0.1).
    let mut by_ip = cfg.clone();
    by_ip.tls_name = "127.0.0.1".into();
    ProxyClient::connect(&by_ip).unwrap().quit().unwrap();

    // The client certificate made for mta1: no AUTH, its own source address.
    let tls = trust
        .with_client_cert(
            read("client-mta1.pem").as_bytes(),
            read("client-mta1.key").as_bytes(),
        )
        .unwrap();
    let by_cert = ProxyClientConfig {
        tls,
        secret: String::new(),
        ..cfg.clone()
    };
    let mut c = ProxyClient::connect(&by_cert).unwrap();
    let mut s = c
        .open(&req("127.0.0.3", mx.addr(), TlsPolicy::None))
        .unwrap();
    s.send_mail("a@x.test", &["b@y.test"], b"by certificate\r\n")
        .unwrap();
    s.quit().unwrap();
    c.quit().unwrap();
    assert!(mx.wait_until(WAIT, |st| st.messages.len() == 2));
    // No warning about the certificate (e.g. a CA used as the server certificate).
    assert!(
        !daemon
            .seen()
            .iter()
            .any(|l| l.starts_with("WARN") && l.contains("tls_")),
        "{:?}",
        daemon.seen()
    );
}

#[test]
fn refuses_what_it_cannot_do_right() {
    let top = TempDir::new("cert-refuse");
    let d = top.0.join("tls");
    let d = d.to_str().unwrap();
    let (group, _) = my_group();
    // No server certificate yet and no name for it.
    let o = gaproxy(&["cert", "--dir", d, "--group", &group]);
    assert!(!o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("--host NAME and/or --ip ADDR"),
        "{}",
        text(&o)
    );
    // A client name that could not be a configuration's client or a certificate name.
    let o = gaproxy(&["cert", "--dir", d, "--ip", "127.0.0.1", "--client", "a b"]);
    assert!(!o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("--client \"a b\""), "{}", text(&o));
    // A group that does not exist.
    let o = gaproxy(&[
        "cert",
        "--dir",
        d,
        "--ip",
        "127.0.0.1",
        "--group",
        "no-such-group-gap",
    ]);
    assert!(!o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("no such group"), "{}", text(&o));
    // A key without its certificate: refused before anything is written.
    let o = gaproxy(&["cert", "--dir", d, "--ip", "127.0.0.1", "--group", &group]);
    assert!(o.status.success(), "{}", text(&o));
    std::fs::remove_file(top.0.join("tls/cert.pem")).unwrap();
    let key = std::fs::read(top.0.join("tls/key.pem")).unwrap();
    let o = gaproxy(&["cert", "--dir", d, "--ip", "127.0.0.1", "--group", &group]);
    assert!(!o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("go together"), "{}", text(&o));
    assert_eq!(std::fs::read(top.0.join("tls/key.pem")).unwrap(), key);
    assert!(!top.0.join("tls/cert.pem").exists());
    // Half a CA.
    std::fs::remove_file(top.0.join("tls/ca.key")).unwrap();
    let o = gaproxy(&["cert", "--dir", d, "--client", "mta1", "--group", &group]);
    assert!(!o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("ca.key go together"), "{}", text(&o));
}
