//! `gaproxy send`'s errors name what to check (issue 14, item 7), and `--proxy` takes a host
//! name and a bare address (port 807 by default).

mod common;

use common::{Harness, TempDir, SECRET};
use greenarrow_proxy_testkit::certgen::TestCa;
use greenarrow_proxy_testkit::testmx::{TestMx, TestMxConfig};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Command, Output};

/// `gaproxy send` with a secret file and `ca_pem` as `--ca-file`, plus `args`.
fn send(dir: &TempDir, ca_pem: &str, args: &[&str]) -> (Output, PathBuf) {
    let ca = dir.0.join("ca.pem");
    std::fs::write(&ca, ca_pem).unwrap();
    let secret = dir.0.join("secret");
    std::fs::write(&secret, SECRET).unwrap();
    let out = Command::new(greenarrow_proxy_testkit::bin_path::workspace_bin("gaproxy"))
        .arg("send")
        .arg("--ca-file")
        .arg(&ca)
        .arg("--secret-file")
        .arg(&secret)
        .args(["--source", "127.0.0.1", "--timeout", "10s"])
        .args(args)
        .output()
        .unwrap();
    (out, ca)
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn some_ca() -> String {
    TestCa::new("another CA").unwrap().cert_pem()
}

#[test]
fn a_refused_connection_names_the_address() {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = TempDir::new("gaproxy");
    let proxy = format!("127.0.0.1:{port}");
    let (out, _) = send(&dir, &some_ca(), &["--proxy", &proxy, "--mx", "127.0.0.1"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.starts_with(&format!(
            "gaproxy: cannot connect to the proxy at {proxy}: Connection refused"
        )),
        "{err}"
    );
}

#[test]
fn an_smtp_server_is_named_as_such() {
    let mx = TestMx::start(TestMxConfig::default()).unwrap();
    let dir = TempDir::new("gaproxy");
    let proxy = mx.addr().to_string();
    let (out, _) = send(&dir, &some_ca(), &["--proxy", &proxy, "--mx", "127.0.0.1"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("this port speaks SMTP, not the proxy protocol"),
        "{err}"
    );
    assert!(
        err.contains(&format!("the server at {proxy} answered")),
        "{err}"
    );
}

#[test]
fn a_certificate_of_another_ca_points_at_ca_file() {
    let h = Harness::start(&[25], "");
    let dir = TempDir::new("gaproxy");
    let proxy = h.addr.to_string();
    let (out, ca) = send(&dir, &some_ca(), &["--proxy", &proxy, "--mx", "127.0.0.1"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out).trim_end(),
        format!(
            "gaproxy: TLS with the proxy at {proxy}: its certificate is not issued by the CA in \
             --ca-file {}: give the CA that issued the proxy's certificate (or that certificate \
             itself)",
            ca.display()
        )
    );
}

#[test]
fn proxy_takes_a_host_name() {
    let mx = TestMx::start(TestMxConfig::default()).unwrap();
    let h = Harness::start(&[mx.addr().port()], "");
    let dir = TempDir::new("gaproxy");
    let proxy = format!("localhost:{}", h.addr.port());
    let port = mx.addr().port().to_string();
    let (out, _) = send(
        &dir,
        &h.ca_pem,
        &[
            "--proxy",
            &proxy,
            "--mx",
            "127.0.0.1",
            "--port",
            &port,
            "--tls",
            "none",
        ],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}{stdout}", stderr(&out));
    assert!(
        stdout.contains("=== message 1: delivered to 1 recipient(s)"),
        "{stdout}"
    );
    assert_eq!(mx.state().messages.len(), 1);
}
