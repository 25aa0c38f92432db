//! A real Redis (Debian's `redis-server`) for a test: on a free loopback port, in a temp dir,
//! nothing saved (`--save '' --appendonly no`), killed on drop. It can be stopped and
//! started again on the same port (a Redis outage in the middle of a test).
//!
//! Missing `redis-server`: [`RedisServer::start`] returns `None` after printing why, so the
//! test can skip — unless `CI=true`, where a missing program is a failure.

use crate::fixtures::TempDir;
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
}

/// Whether the test must fail rather than skip when a program is missing.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

impl RedisServer {
    /// Start one; `None` (with a printed reason) when `redis-server` is not installed outside
    /// CI.
    pub fn start() -> Option<RedisServer> {
        let found = Command::new(PROGRAM)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !found {
            assert!(
                !in_ci(),
                "{PROGRAM} is not installed (CI=true: apt-get install redis-server)"
            );
            eprintln!("skipped: {PROGRAM} is not installed (apt-get install redis-server)");
            return None;
        }
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free loopback port")
            .port();
        let mut r = RedisServer {
            child: None,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            dir: TempDir::new("redis"),
        };
        r.restart();
        Some(r)
    }

    /// `redis://127.0.0.1:<port>/0`.
    pub fn url(&self) -> String {
        format!("redis://{}/0", self.addr)
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
        let child = Command::new(PROGRAM)
            .args(["--port", &self.addr.port().to_string()])
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

    /// One inline command, its raw reply (None: no connection).
    pub fn command(&self, line: &str) -> Option<String> {
        let mut s = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        s.write_all(line.as_bytes()).ok()?;
        let mut buf = [0u8; 4096];
        let n = s.read(&mut buf).ok()?;
        (n > 0).then(|| String::from_utf8_lossy(&buf[..n]).into_owned())
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}
