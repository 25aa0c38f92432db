//! A real Redis (Debian's `redis-server`) for a test: on a free loopback port, in a temp dir,
//! nothing saved (`--save '' --appendonly no`), killed on drop. It can be stopped and
//! started again on the same port (a Redis outage in the middle of a test).
//!
//! [`RedisServer::start_tls`] serves TLS only (`rediss://`, `--port 0 --tls-port P`) with a
//! certificate for 127.0.0.1 and localhost from a CA made for it ([`RedisServer::ca_pem`]),
//! and asks clients for a certificate of that CA when told to ([`RedisServer::client_cert`]).
//!
//! Missing `redis-server`: [`RedisServer::start`] returns `None` after printing why, so the
//! test can skip — unless `CI=true`, where a missing program is a failure.

use crate::certgen::{Ca, CertifiedPem, Usage};
use crate::fixtures::TempDir;
use greenarrow_proxy_net::tls::ProxyClientTls;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const PROGRAM: &str = "redis-server";
/// The bound on waiting for Redis to answer after a start.
const START_WAIT: Duration = Duration::from_secs(10);

/// A running (or stopped) `redis-server`.
pub struct RedisServer {
    child: Option<Child>,
    addr: SocketAddr,
    dir: TempDir,
    tls: Option<Tls>,
}

/// The TLS side of a [`RedisServer::start_tls`].
struct Tls {
    ca_pem: String,
    /// A client certificate of the CA (the fixture's own, for PING).
    client: CertifiedPem,
    /// `--tls-auth-clients yes`.
    auth_clients: bool,
}

impl RedisServer {
    /// Start one; `None` (with a printed reason) when `redis-server` is not installed outside
    /// CI.
    pub fn start() -> Option<RedisServer> {
        RedisServer::launch(None)
    }

    /// Start one serving TLS only; `auth_clients`: it refuses clients without a certificate of
    /// its CA. `None` as [`RedisServer::start`].
    pub fn start_tls(auth_clients: bool) -> Option<RedisServer> {
        let ca = Ca::new("redis test CA").expect("a test CA");
        let server = ca
            .issue_for(&["localhost", "127.0.0.1"], Usage::Server, 30)
            .expect("a Redis server certificate");
        let client = ca
            .issue_for(&["redis-client"], Usage::Client, 30)
            .expect("a Redis client certificate");
        let tls = Tls {
            ca_pem: ca.cert_pem(),
            client,
            auth_clients,
        };
        RedisServer::launch(Some((tls, server)))
    }

    fn launch(tls: Option<(Tls, CertifiedPem)>) -> Option<RedisServer> {
        let found = Command::new(PROGRAM)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !found {
            crate::fixtures::missing_program(&format!(
                "{PROGRAM} is not installed (apt-get install redis-server)"
            ));
            return None;
        }
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free loopback port")
            .port();
        let dir = TempDir::new("redis");
        let tls = tls.map(|(tls, server)| {
            for (name, pem) in [
                ("ca.crt", &tls.ca_pem),
                ("redis.crt", &server.cert_pem),
                ("redis.key", &server.key_pem),
            ] {
                std::fs::write(dir.0.join(name), pem).expect("write a Redis TLS file");
            }
            tls
        });
        let mut r = RedisServer {
            child: None,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            dir,
            tls,
        };
        r.restart();
        Some(r)
    }

    /// `redis://127.0.0.1:<port>/0` (`rediss://` with TLS).
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() {
            "rediss"
        } else {
            "redis"
        };
        format!("{scheme}://{}/0", self.addr)
    }

    /// With TLS: the PEM of the CA that signed its certificate.
    pub fn ca_pem(&self) -> Option<&str> {
        self.tls.as_ref().map(|t| t.ca_pem.as_str())
    }

    /// With TLS: a client certificate (and key) of its CA.
    pub fn client_cert(&self) -> Option<&CertifiedPem> {
        self.tls.as_ref().map(|t| &t.client)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Kill it (SIGKILL: an outage, nothing handed over) and wait for it to be gone.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Start it (again) on the same port, empty, and wait until it answers PING.
    pub fn restart(&mut self) {
        self.stop();
        let port = self.addr.port().to_string();
        let mut cmd = Command::new(PROGRAM);
        match &self.tls {
            None => cmd.args(["--port", &port]),
            Some(t) => cmd
                .args(["--port", "0", "--tls-port", &port])
                .arg("--tls-cert-file")
                .arg(self.dir.0.join("redis.crt"))
                .arg("--tls-key-file")
                .arg(self.dir.0.join("redis.key"))
                .arg("--tls-ca-cert-file")
                .arg(self.dir.0.join("ca.crt"))
                .args([
                    "--tls-auth-clients",
                    if t.auth_clients { "yes" } else { "no" },
                ]),
        };
        let child = cmd
            .args(["--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&self.dir.0)
            .args(["--protected-mode", "no", "--loglevel", "warning"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("cannot start redis-server");
        self.child = Some(child);
        let end = Instant::now() + START_WAIT;
        while !self.ping() {
            assert!(
                Instant::now() < end,
                "redis-server on {} did not answer",
                self.addr
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Whether it answers PING now.
    pub fn ping(&self) -> bool {
        self.command("PING\r\n")
            .is_some_and(|r| r.starts_with("+PONG"))
    }

    /// One inline command, its raw reply (None: no connection). Over TLS (with the client
    /// certificate) when it serves TLS.
    pub fn command(&self, line: &str) -> Option<String> {
        let s = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        s.set_write_timeout(Some(Duration::from_secs(2))).ok()?;
        let mut buf = [0u8; 4096];
        let n = match &self.tls {
            None => exchange(s, line, &mut buf)?,
            Some(t) => {
                let tls = ProxyClientTls::from_ca_pem(t.ca_pem.as_bytes())
                    .and_then(|c| {
                        c.with_client_cert(
                            t.client.cert_pem.as_bytes(),
                            t.client.key_pem.as_bytes(),
                        )
                    })
                    .ok()?;
                let s = tls.connect(s, "127.0.0.1", Duration::from_secs(2)).ok()?;
                exchange(s, line, &mut buf)?
            }
        };
        (n > 0).then(|| String::from_utf8_lossy(&buf[..n]).into_owned())
    }
}

/// Write `line`, read one reply into `buf`: its length.
fn exchange(mut s: impl Read + Write, line: &str, buf: &mut [u8]) -> Option<usize> {
    s.write_all(line.as_bytes()).ok()?;
    s.flush().ok()?;
    s.read(buf).ok()
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}
