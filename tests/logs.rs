//! What the daemon logs when something goes wrong, with `log_verbose: false` (issue 14): the
//! real binary, its stderr read line by line (each line must start with a timestamp, which
//! `greenarrow_proxy_testkit::daemon` checks and strips).

use greenarrow_proxy_client::{ProxyClient, ProxyClientConfig};
use greenarrow_proxy_net::tls::ProxyClientTls;
use greenarrow_proxy_proto::protocol::TlsPolicy;
use greenarrow_proxy_testkit::daemon::{Daemon, WAIT};
use greenarrow_proxy_testkit::fixtures::{proxy_files, req, TempDir, SECRET};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;

/// A daemon with `log_verbose: false`, source 192.0.2.1 permitted (not on this host),
/// only 127.0.0.1 permitted as a destination, and `port` (where nothing listens) permitted.
struct Quiet {
    _dir: TempDir,
    ca_pem: String,
    daemon: Daemon,
    addr: SocketAddr,
    /// A permitted destination where nothing listens.
    closed: SocketAddr,
}

impl Quiet {
    fn start() -> Quiet {
        let closed = {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let (dir, yaml, ca_pem) = proxy_files(
            &[closed.port()],
            "source_addresses: [127.0.0.0/8, 192.0.2.1]\ndestination_allow: [127.0.0.1/32]\n",
        );
        let yaml = yaml.replace("log_verbose: true\n", "log_verbose: false\n");
        assert!(yaml.contains("log_verbose: false"), "{yaml}");
        let config: PathBuf = dir.0.join("greenarrow_proxy.yaml");
        std::fs::write(&config, &yaml).unwrap();
        let mut daemon = Daemon::spawn(&config, &[SECRET], |_| {});
        let addr = daemon.wait_ready()[0];
        Quiet {
            _dir: dir,
            ca_pem,
            daemon,
            addr,
            closed,
        }
    }

    fn client(&self, secret: &str) -> ProxyClient {
        ProxyClient::connect(&ProxyClientConfig {
            proxy: self.addr,
            tls_name: "localhost".into(),
            tls: ProxyClientTls::from_ca_pem(self.ca_pem.as_bytes()).unwrap(),
            secret: secret.into(),
            timeout: WAIT,
        })
        .unwrap()
    }

    /// A TCP connection that speaks SMTP instead of TLS; read until the proxy closes it.
    fn not_tls(&self) {
        let mut s = TcpStream::connect(self.addr).unwrap();
        s.set_read_timeout(Some(WAIT)).unwrap();
        s.write_all(b"EHLO mta.test\r\n").unwrap();
        let mut sink = Vec::new();
        let _ = s.read_to_end(&mut sink);
    }
}

/// The line with the MTA's port (`mta=127.0.0.1:40312`) replaced by `P`.
fn shape(line: &str) -> String {
    let Some((head, rest)) = line.split_once(" mta=127.0.0.1:") else {
        return line.to_string();
    };
    let tail = rest.trim_start_matches(|c: char| c.is_ascii_digit());
    format!("{head} mta=127.0.0.1:P{tail}")
}

#[test]
fn the_five_failures_of_issue_14_are_warnings_without_log_verbose() {
    let mut q = Quiet::start();
    let mx = q.closed;
    let mut c = q.client(SECRET);
    // 1. source_not_local: permitted, not on this host (the bind fails; nothing is sent).
    assert!(c.open(&req("192.0.2.1", mx, TlsPolicy::None)).is_err());
    let l = q.daemon.wait_for("tag=source_not_local");
    assert_eq!(
        shape(&l),
        format!(
            "WARN  connect failed: cannot bind source address 192.0.2.1: Cannot assign requested \
             address (os error 99) mta=127.0.0.1:P client=default source=192.0.2.1 mx={mx} \
             tag=source_not_local"
        )
    );
    // 2. The MX refuses the connection.
    assert!(c.open(&req("127.0.0.2", mx, TlsPolicy::None)).is_err());
    let l = q.daemon.wait_for("tag=connect_refused");
    assert_eq!(
        shape(&l),
        format!(
            "WARN  connect failed: connection to {mx} refused mta=127.0.0.1:P client=default \
             source=127.0.0.2 mx={mx} tag=connect_refused"
        )
    );
    // 3. A denied destination (loopback other than 127.0.0.1: destination_deny's default).
    let denied: SocketAddr = format!("127.0.0.9:{}", mx.port()).parse().unwrap();
    assert!(c.open(&req("127.0.0.2", denied, TlsPolicy::None)).is_err());
    let l = q.daemon.wait_for("tag=destination_not_permitted");
    assert!(
        shape(&l).starts_with("WARN  connect failed: 127.0.0.9: "),
        "{l}"
    );
    assert!(
        l.ends_with(&format!(
            " client=default source=127.0.0.2 mx={denied} tag=destination_not_permitted"
        )),
        "{l}"
    );
    let _ = c.quit();
    // 4. The MTA's TLS handshake fails (it speaks SMTP in clear).
    q.not_tls();
    let l = q.daemon.wait_for("tag=mta_tls_failed");
    assert!(
        l.starts_with("WARN  TLS handshake with the MTA failed: "),
        "{l}"
    );
    assert!(l.contains(" mta=127.0.0.1:"), "{l}");
    // 5. A failed AUTH: the peer address in the text, for fail2ban; never the secret tried.
    let mut c = q.client("wrong-secret-0123456789abcdef-0123456789abcdef");
    assert!(c.authenticate().is_err());
    let l = q.daemon.wait_for("tag=auth_failed");
    assert_eq!(
        shape(&l),
        "WARN  authentication failed mta=127.0.0.1:P tag=auth_failed"
    );
    assert!(!l.contains("wrong-secret"), "{l}");
    // Nothing at info level but the start: per-session events need log_verbose.
    let info: Vec<&String> = q
        .daemon
        .seen()
        .iter()
        .filter(|l| l.starts_with("INFO "))
        .collect();
    assert!(
        info.iter().all(|l| l.contains(" ready on ")
            || l.contains("listening on ")
            || l.contains("state_directory: none")),
        "{info:?}"
    );
    for l in q.daemon.seen() {
        eprintln!("{l}");
    }
}

#[test]
fn repeated_failed_auth_from_one_address_is_rate_limited() {
    let mut q = Quiet::start();
    for _ in 0..13 {
        let mut c = q.client("wrong-secret-0123456789abcdef-0123456789abcdef");
        // The 535 comes after the warning (or its suppression).
        assert!(c.authenticate().is_err());
    }
    // Another kind from the same address has its own allowance: once its line is there,
    // every AUTH line before it is too.
    q.not_tls();
    q.daemon.wait_for("tag=mta_tls_failed");
    let auth = q
        .daemon
        .seen()
        .iter()
        .filter(|l| l.contains("tag=auth_failed"))
        .count();
    assert_eq!(auth, 10, "{:?}", q.daemon.seen());
}
