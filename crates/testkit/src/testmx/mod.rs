//! A threaded test MX that records what it receives.
//!
//! A real SMTP server on loopback for the integration tests, `gaproxy testmx` /
//! `gaproxy demo` and the benchmarks. It speaks EHLO/HELO, MAIL, RCPT, DATA, BDAT, RSET, NOOP,
//! QUIT, STARTTLS, implicit TLS and AUTH PLAIN/LOGIN (accepting any credentials), records
//! every connection and message, and can be told to misbehave ([`Faults`]).
//!
//! ```no_run
//! use greenarrow_proxy_testkit::testmx::{TestMx, TestMxConfig};
//! use std::time::Duration;
//!
//! let mx = TestMx::start(TestMxConfig::default()).unwrap();
//! // ... point a client at mx.addr() ...
//! assert!(mx.wait_until(Duration::from_secs(5), |s| s.messages.len() == 1));
//! ```
//!
//! Layout: `session` is the sans-I/O SMTP state machine (with `body` for DATA decoding and
//! `command` for argument parsing); `server` is the thin blocking I/O around it, one thread per
//! connection; `record` holds what is recorded and the condition variable behind
//! [`TestMx::wait_until`].

mod body;
mod command;
mod faults;
mod record;
mod server;
mod session;
#[cfg(test)]
mod tests;

pub use faults::Faults;
pub use record::{ConnRecord, Message, MxState, Stats, MAX_RECORDED_COMMANDS, MAX_RECORDED_NAMES};

use greenarrow_proxy_net::tls::TlsAcceptor;
use record::Shared;
use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

/// How the test MX behaves.
#[derive(Clone)]
pub struct TestMxConfig {
    /// Where to listen; default `127.0.0.1:0` (any free port).
    pub bind: SocketAddr,
    /// Used in the banner and the EHLO greeting; default `mx.test`.
    pub hostname: String,
    /// Offer STARTTLS with this certificate (and use it for implicit TLS).
    pub starttls: Option<TlsAcceptor>,
    /// SMTPS: the TLS handshake right after accept (needs `starttls`).
    pub implicit_tls: bool,
    /// Advertise PIPELINING (default true).
    pub pipelining: bool,
    /// Advertise and accept CHUNKING / BDAT (default true).
    pub chunking: bool,
    /// Advertise 8BITMIME (default true).
    pub eightbitmime: bool,
    /// Advertise SMTPUTF8 (default true).
    pub smtputf8: bool,
    /// Advertise `AUTH PLAIN LOGIN` and accept any credentials (default false).
    pub auth: bool,
    /// Benchmark mode: count messages and bytes, store no contents nor command transcripts.
    pub lean: bool,
    /// The largest message accepted (larger ones get 552); default 64 MiB.
    pub max_message_size: usize,
    /// Misbehaviours to show.
    pub faults: Faults,
}

impl Default for TestMxConfig {
    fn default() -> Self {
        TestMxConfig {
            bind: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0),
            hostname: "mx.test".to_string(),
            starttls: None,
            implicit_tls: false,
            pipelining: true,
            chunking: true,
            eightbitmime: true,
            smtputf8: true,
            auth: false,
            lean: false,
            max_message_size: 64 * 1024 * 1024,
            faults: Faults::default(),
        }
    }
}

impl fmt::Debug for TestMxConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TestMxConfig")
            .field("bind", &self.bind)
            .field("hostname", &self.hostname)
            .field("starttls", &self.starttls.is_some())
            .field("implicit_tls", &self.implicit_tls)
            .field("pipelining", &self.pipelining)
            .field("chunking", &self.chunking)
            .field("eightbitmime", &self.eightbitmime)
            .field("smtputf8", &self.smtputf8)
            .field("auth", &self.auth)
            .field("lean", &self.lean)
            .field("max_message_size", &self.max_message_size)
            .field("faults", &self.faults)
            .finish()
    }
}

impl TestMxConfig {
    fn check(&self) -> io::Result<()> {
        let invalid = |m: &str| Err(io::Error::new(io::ErrorKind::InvalidInput, m.to_string()));
        if self.implicit_tls && self.starttls.is_none() {
            return invalid("test MX: implicit_tls needs a TLS acceptor in `starttls`");
        }
        if self.hostname.is_empty()
            || self
                .hostname
                .bytes()
                .any(|b| b.is_ascii_control() || b == b' ')
        {
            return invalid("test MX: hostname must be non-empty, without spaces or controls");
        }
        Ok(())
    }
}

/// A running test MX. Dropping it shuts it down like [`TestMx::shutdown`].
pub struct TestMx {
    addr: SocketAddr,
    /// The configuration started with.
    config: Arc<TestMxConfig>,
    shared: Arc<Shared>,
    accept_thread: Option<JoinHandle<Vec<JoinHandle<()>>>>,
}

impl TestMx {
    /// Bind, spawn the accept thread and return at once.
    pub fn start(config: TestMxConfig) -> io::Result<TestMx> {
        config.check()?;
        let listener = TcpListener::bind(config.bind)?;
        let addr = listener.local_addr()?;
        let config = Arc::new(config);
        let shared = Arc::new(Shared::new(config.clone()));
        let sh = shared.clone();
        let accept_thread = thread::Builder::new()
            .name(format!("testmx-accept-{}", addr.port()))
            .spawn(move || server::accept_loop(listener, sh))?;
        Ok(TestMx {
            addr,
            config,
            shared,
            accept_thread: Some(accept_thread),
        })
    }

    /// Show `faults` from now on, on every connection (open ones from their next command;
    /// `idle_close_after` only on connections accepted afterwards). `Faults::default()` ends
    /// them. For drivers that change an MX's behaviour while it serves (the soak test).
    pub fn set_faults(&self, faults: Faults) {
        self.shared.set_config(Arc::new(TestMxConfig {
            faults,
            ..(*self.config).clone()
        }));
    }

    /// Remove the recorded messages and return them (the counters keep counting): a long run
    /// takes them as they come instead of holding every message's bytes.
    pub fn take_messages(&self) -> Vec<Message> {
        self.shared.take_messages()
    }

    /// The address the MX listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// All connections so far, in accept order.
    pub fn connections(&self) -> Vec<ConnRecord> {
        self.shared.read(|s| s.connections.clone())
    }

    /// All accepted messages, in order of acceptance (empty in lean mode).
    pub fn messages(&self) -> Vec<Message> {
        self.shared.read(|s| s.messages.clone())
    }

    /// The counters.
    pub fn stats(&self) -> Stats {
        self.shared.read(|s| s.stats)
    }

    /// Start new concurrency high-water marks (`max_open_connections`,
    /// `max_active_sessions`) from what is open now; returns the counters before.
    pub fn reset_high_water(&self) -> Stats {
        self.shared.update(|s| {
            let before = s.stats;
            s.stats.max_open_connections = s.stats.open_connections;
            s.stats.max_active_sessions = s.stats.active_sessions;
            before
        })
    }

    /// A copy of everything recorded.
    pub fn state(&self) -> MxState {
        self.shared.read(|s| s.clone())
    }

    /// Block until `pred` holds for the recorded state or `timeout` passes; returns whether it
    /// came true. Woken by every state change (no polling). `pred` runs under the state lock:
    /// keep it short and do not call back into this `TestMx` from it.
    pub fn wait_until(&self, timeout: Duration, pred: impl Fn(&MxState) -> bool) -> bool {
        self.shared.wait_until(timeout, pred)
    }

    /// Shut down every open connection's socket, as an MX killing idle connections does: the
    /// clients see EOF. The listener keeps accepting.
    pub fn drop_idle_connections(&self) {
        self.shared.shutdown_sockets();
    }

    /// Stop accepting, close every connection and join all threads.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        let Some(accept_thread) = self.accept_thread.take() else {
            return;
        };
        self.shared.set_stopping();
        // Wake the blocking accept() with a connection of our own.
        let wake = match self.addr.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => {
                SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), self.addr.port())
            }
            IpAddr::V6(ip) if ip.is_unspecified() => {
                SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), self.addr.port())
            }
            _ => self.addr,
        };
        let waker = TcpStream::connect_timeout(&wake, Duration::from_secs(2));
        let handles = accept_thread.join().unwrap_or_default();
        drop(waker);
        self.shared.shutdown_sockets();
        for h in handles {
            let _ = h.join();
        }
    }
}

impl Drop for TestMx {
    fn drop(&mut self) {
        self.stop();
    }
}

impl fmt::Debug for TestMx {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TestMx").field("addr", &self.addr).finish()
    }
}
