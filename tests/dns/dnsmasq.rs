//! Runs Debian's `dnsmasq` (package `dnsmasq-base`) on 127.0.0.1 and a free port.

use std::io::Read;
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A dnsmasq process serving only the given records; killed on drop.
pub struct Dnsmasq {
    child: Child,
    /// Where it listens (UDP and TCP).
    pub addr: SocketAddr,
}

/// Finds the dnsmasq binary, or fails the test with how to install it.
fn binary() -> &'static str {
    for path in ["/usr/sbin/dnsmasq", "/usr/bin/dnsmasq"] {
        if Path::new(path).exists() {
            return path;
        }
    }
    panic!(
        "dnsmasq is not installed: these tests need a real DNS server on loopback. \
         Install the Debian package: apt-get install -y dnsmasq-base"
    );
}

/// A port free for both UDP and TCP on 127.0.0.1 right now.
fn free_port() -> u16 {
    for _ in 0..20 {
        let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = udp.local_addr().unwrap().port();
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port for dnsmasq");
}

impl Dnsmasq {
    /// Starts dnsmasq authoritative-ish for `.test` (`--local=/test/`: unknown
    /// names there are NXDOMAIN) with extra options such as `--mx-host=...` and
    /// `--host-record=...`, and waits until it answers.
    pub fn start(records: &[String]) -> Dnsmasq {
        let bin = binary();
        let mut last_error = String::new();
        for _ in 0..5 {
            let port = free_port();
            let mut child = Command::new(bin)
                .args([
                    "--keep-in-foreground",
                    "--no-resolv",
                    "--no-hosts",
                    "--conf-file=/dev/null",
                    "--pid-file=",
                    "--listen-address=127.0.0.1",
                    "--bind-interfaces",
                    "--local=/test/",
                    "--cache-size=0",
                ])
                .arg(format!("--port={port}"))
                .args(records)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap_or_else(|e| panic!("cannot run {bin}: {e}"));
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            match wait_ready(&mut child, addr) {
                Ok(()) => return Dnsmasq { child, addr },
                Err(e) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    last_error = e;
                }
            }
        }
        panic!("dnsmasq did not start: {last_error}");
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends a probe query until dnsmasq answers it, or dnsmasq exits, or 10 s pass.
fn wait_ready(child: &mut Child, addr: SocketAddr) -> Result<(), String> {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    // Header (id 0x4242, RD), one question: "probe.test" A IN.
    let mut query = vec![0x42, 0x42, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in ["probe", "test"] {
        query.push(label.len() as u8);
        query.extend_from_slice(label.as_bytes());
    }
    query.extend_from_slice(&[0, 0, 1, 0, 1]);
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut buf = [0u8; 512];
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().unwrap() {
            let mut stderr = String::new();
            if let Some(mut pipe) = child.stderr.take() {
                let _ = pipe.read_to_string(&mut stderr);
            }
            return Err(format!("dnsmasq exited with {status}: {}", stderr.trim()));
        }
        socket.send_to(&query, addr).unwrap();
        if let Ok((n, _)) = socket.recv_from(&mut buf) {
            if n >= 2 && buf[..2] == [0x42, 0x42] {
                return Ok(());
            }
        }
    }
    Err("dnsmasq did not answer within 10 s".into())
}
