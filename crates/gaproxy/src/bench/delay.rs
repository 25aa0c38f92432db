//! A user-space delay relay in front of the test MX: network latency on loopback (issue 15).
//!
//! Every connection accepted on [`DelayRelay::addr`] is forwarded to the MX. Each chunk read
//! in either direction is written on `rtt / 2` after it was read, in order; a new connection
//! is opened toward the MX only `1.5 × rtt` after it was accepted, so the banner reaches the
//! client `2 × rtt` after its `connect`, as over real TCP (standing in for the handshake, which
//! loopback completes at once: the client's `connect` returns after one round trip, the
//! server's `accept` half a round trip later, when the final ACK arrives, and the banner takes
//! another half). The direct path and the proxy path both dial the relay, so both pay the
//! same latency toward the MX; the MTA↔proxy leg stays on loopback (MTAs sit next to their
//! proxy).
//!
//! Not modelled: bandwidth limits and queueing (a chunk is delayed, never slowed down), loss
//! and retransmission, TCP slow start and congestion windows, delayed ACKs and their
//! interplay with Nagle (both sides of the relay set `TCP_NODELAY`; chunks keep the
//! boundaries of the reads, not of the sender's segments). (Before issue 24 the MX was dialled
//! after one `rtt`, giving the banner at `1.5 × rtt`: half a round trip less than real TCP
//! charges a new connection.)
//!
//! Four threads per connection (a reader and a delayed writer per direction), small stacks;
//! no async runtime.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Stack size of the relay's threads (they only copy bytes).
const STACK: usize = 64 * 1024;
/// Largest chunk read at once.
const CHUNK: usize = 64 * 1024;

/// What a reader hands its writer.
enum Item {
    /// Bytes to write at the instant given.
    Data(Instant, Vec<u8>),
    /// The source closed (or failed) at the instant given: shut the destination's write side.
    End(Instant),
}

/// A running delay relay; stops accepting when dropped (open connections run to their end).
pub struct DelayRelay {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
}

impl DelayRelay {
    /// Listen on a free loopback port and forward to `upstream` with round-trip time `rtt`.
    pub fn start(upstream: SocketAddr, rtt: Duration) -> io::Result<DelayRelay> {
        let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let accept = std::thread::Builder::new()
            .name("delay-accept".into())
            .stack_size(STACK)
            .spawn(move || accept_loop(listener, upstream, rtt, &flag))?;
        Ok(DelayRelay {
            addr,
            stop,
            accept: Some(accept),
        })
    }

    /// Where clients connect (in place of the MX).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for DelayRelay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop with a connection of our own.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(h) = self.accept.take() {
            let _ = h.join();
        }
    }
}

fn accept_loop(listener: TcpListener, upstream: SocketAddr, rtt: Duration, stop: &AtomicBool) {
    for conn in listener.incoming() {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let Ok(client) = conn else { continue };
        let spawned = std::thread::Builder::new()
            .name("delay-conn".into())
            .stack_size(STACK)
            .spawn(move || {
                if let Err(e) = connection(client, upstream, rtt) {
                    eprintln!("gaproxy bench: delay relay: {e}");
                }
            });
        if let Err(e) = spawned {
            eprintln!("gaproxy bench: delay relay: cannot start a thread: {e}");
        }
    }
}

/// One connection: the TCP handshake's round trip and the half by which `accept` trails it,
/// then the two delayed directions.
fn connection(client: TcpStream, upstream: SocketAddr, rtt: Duration) -> io::Result<()> {
    std::thread::sleep(rtt + rtt / 2);
    let server = match TcpStream::connect(upstream) {
        Ok(s) => s,
        Err(e) => {
            let _ = client.shutdown(Shutdown::Both);
            return Err(e);
        }
    };
    client.set_nodelay(true)?;
    server.set_nodelay(true)?;
    let half = rtt / 2;
    let up = (client.try_clone()?, server.try_clone()?);
    let down = (server, client);
    let t = std::thread::Builder::new()
        .name("delay-up".into())
        .stack_size(STACK)
        .spawn(move || direction(up.0, up.1, half))?;
    direction(down.0, down.1, half);
    let _ = t.join();
    Ok(())
}

/// Copy `from` to `to`, each chunk `delay` after it was read: this thread reads, a second
/// one writes on time.
fn direction(from: TcpStream, to: TcpStream, delay: Duration) {
    let (tx, rx) = mpsc::channel();
    let writer = std::thread::Builder::new()
        .name("delay-write".into())
        .stack_size(STACK)
        .spawn(move || write_on_time(&rx, to));
    match writer {
        Ok(w) => {
            read_chunks(from, &tx, delay);
            drop(tx);
            let _ = w.join();
        }
        Err(e) => {
            eprintln!("gaproxy bench: delay relay: cannot start a thread: {e}");
            let _ = from.shutdown(Shutdown::Both);
        }
    }
}

fn read_chunks(mut from: TcpStream, tx: &Sender<Item>, delay: Duration) {
    let mut buf = vec![0u8; CHUNK];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => {
                let _ = tx.send(Item::End(Instant::now() + delay));
                return;
            }
            Ok(n) => {
                let chunk = buf.get(..n).unwrap_or_default().to_vec();
                if tx.send(Item::Data(Instant::now() + delay, chunk)).is_err() {
                    // The writer gave up (its peer is gone): stop reading too.
                    let _ = from.shutdown(Shutdown::Both);
                    return;
                }
            }
        }
    }
}

fn write_on_time(rx: &Receiver<Item>, mut to: TcpStream) {
    while let Ok(item) = rx.recv() {
        let (at, data) = match item {
            Item::Data(at, data) => (at, Some(data)),
            Item::End(at) => (at, None),
        };
        if let Some(wait) = at.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        match data {
            Some(d) => {
                if to.write_all(&d).is_err() {
                    let _ = to.shutdown(Shutdown::Both);
                    return;
                }
            }
            None => {
                let _ = to.shutdown(Shutdown::Write);
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::BufRead;

    /// A server that sends a banner, then echoes lines upper-cased until EOF, then says bye.
    fn banner_echo() -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        std::thread::spawn(move || {
            for conn in l.incoming() {
                let mut s = conn.unwrap();
                std::thread::spawn(move || {
                    s.write_all(b"220 hello\r\n").unwrap();
                    let mut r = io::BufReader::new(s.try_clone().unwrap());
                    let mut line = String::new();
                    while r.read_line(&mut line).unwrap() > 0 {
                        s.write_all(line.to_uppercase().as_bytes()).unwrap();
                        line.clear();
                    }
                    s.write_all(b"221 bye\r\n").unwrap();
                });
            }
        });
        addr
    }

    fn read_line(r: &mut impl BufRead) -> String {
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        line
    }

    #[test]
    fn relays_both_ways_in_order_with_the_delays() {
        let rtt = Duration::from_millis(60);
        let relay = DelayRelay::start(banner_echo(), rtt).unwrap();
        let started = Instant::now();
        let mut c = TcpStream::connect(relay.addr()).unwrap();
        let mut r = io::BufReader::new(c.try_clone().unwrap());
        assert_eq!(read_line(&mut r), "220 hello\r\n");
        // The handshake's round trip, the half by which accept trails it, half of one for the
        // banner: never earlier.
        assert!(started.elapsed() >= rtt * 2, "{:?}", started.elapsed());
        let sent = Instant::now();
        // Many small writes: every one arrives, in order, unchanged.
        let lines: Vec<String> = (0..50).map(|i| format!("line {i} é\r\n")).collect();
        for l in &lines {
            c.write_all(l.as_bytes()).unwrap();
        }
        for l in &lines {
            assert_eq!(read_line(&mut r), l.to_uppercase());
        }
        assert!(sent.elapsed() >= rtt, "{:?}", sent.elapsed());
        // A half-close reaches the server, whose last words and close come back.
        c.shutdown(Shutdown::Write).unwrap();
        assert_eq!(read_line(&mut r), "221 bye\r\n");
        assert_eq!(read_line(&mut r), "");
    }
}
