//! A client of the proxy protocol, for MTAs written in Rust (and for `gaproxy send`).
//! With several proxies, [`failover::Failover`] moves to the next one where that is safe.
//!
//! ```no_run
//! use greenarrow_proxy_client::{ProxyClient, ProxyClientConfig};
//! use greenarrow_proxy_proto::protocol::{ConnectRequest, Destination};
//! use greenarrow_proxy_net::tls::ProxyClientTls;
//! use std::time::Duration;
//!
//! let cfg = ProxyClientConfig {
//!     proxy: "127.0.0.1:807".parse().unwrap(),
//!     tls_name: "localhost".into(),
//!     tls: ProxyClientTls::from_ca_file("/etc/mta/proxy-ca.pem".as_ref()).unwrap(),
//!     secret: std::fs::read_to_string("/etc/mta/proxy-secret").unwrap().trim().to_string(),
//!     timeout: Duration::from_secs(300),
//! };
//! let mut proxy = ProxyClient::connect(&cfg).unwrap();
//! let req = ConnectRequest::new(
//!     "192.0.2.10".parse().unwrap(),
//!     Destination::Ip("198.51.100.25".parse().unwrap()),
//!     "mta1.example.com",
//! );
//! let mut smtp = proxy.open(&req).unwrap();
//! let d = smtp.send_mail("a@example.com", &["b@example.net"], b"Subject: hi\r\n\r\nhello\r\n").unwrap();
//! println!("{}", d.final_reply.text());
//! smtp.quit().unwrap();
//! proxy.quit().unwrap();
//! ```

mod endpoint;
pub mod failover;
mod session;

pub use endpoint::{Endpoint, ResolveError};
pub use failover::{Decision, Failover, FailoverError, Stage};
pub use session::{Delivery, MxSession};

use greenarrow_proxy_net::bufconn::{BufConn, ReadError};
use greenarrow_proxy_net::tls::{ClientTlsStream, ProxyClientTls, TlsError};
use greenarrow_proxy_proto::protocol::{
    ConnectReady, ConnectRequest, FailureReply, PROTOCOL_VERSION,
};
use greenarrow_proxy_proto::smtp::{Capabilities, Reply, ReplyLimits};
use std::fmt;
use std::io;
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// Where the proxy is and how to authenticate.
#[derive(Clone)]
pub struct ProxyClientConfig {
    pub proxy: SocketAddr,
    /// The name (or IP) the proxy's certificate must match.
    pub tls_name: String,
    pub tls: ProxyClientTls,
    pub secret: String,
    /// Timeout for every read and write.
    pub timeout: Duration,
}

/// What went wrong, with transient/permanent predicates for an MTA's queue logic.
#[derive(Debug)]
#[non_exhaustive]
pub enum ClientError {
    /// TCP connection to the proxy failed.
    Connect(io::Error),
    /// TLS with the proxy failed.
    Tls(TlsError),
    /// Reading or writing failed (closed, timeout, malformed reply).
    Io(ReadError),
    /// The proxy refused a request (AUTH or CONNECT), with its failure code.
    Proxy(FailureReply),
    /// The MX (through the proxy) refused a command.
    Smtp { stage: &'static str, reply: Reply },
    /// A reply that does not fit the protocol.
    Protocol(String),
}

impl ClientError {
    /// Worth retrying later (4xx, network trouble).
    pub fn is_transient(&self) -> bool {
        match self {
            ClientError::Connect(_) | ClientError::Tls(_) | ClientError::Io(_) => true,
            ClientError::Proxy(f) => f.failure.is_transient(),
            ClientError::Smtp { reply, .. } => reply.is_transient(),
            ClientError::Protocol(_) => true,
        }
    }

    /// Not worth retrying (5xx).
    pub fn is_permanent(&self) -> bool {
        !self.is_transient()
    }
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::Connect(e) => write!(f, "cannot connect to the proxy: {e}"),
            ClientError::Tls(e) => write!(f, "TLS with the proxy: {e}"),
            ClientError::Io(e) => write!(f, "proxy connection: {e}"),
            ClientError::Proxy(r) => write!(f, "proxy refused: {r}"),
            ClientError::Smtp { stage, reply } => write!(f, "MX refused {stage}: {}", reply.text()),
            ClientError::Protocol(m) => write!(f, "protocol: {m}"),
        }
    }
}

impl std::error::Error for ClientError {}

impl From<io::Error> for ClientError {
    fn from(e: io::Error) -> Self {
        ClientError::Io(e.into())
    }
}

impl From<ReadError> for ClientError {
    fn from(e: ReadError) -> Self {
        ClientError::Io(e)
    }
}

/// A connection to the proxy.
pub struct ProxyClient {
    conn: BufConn<ClientTlsStream>,
    auth_pending: bool,
    transcript: Option<Vec<String>>,
    limits: ReplyLimits,
    /// How far the current request got (for [`failover::decide`]).
    stage: Stage,
    /// Messages the MX accepted over this connection (final 2xx reply).
    accepted: u64,
    /// Requests answered with a ready reply over this connection.
    opened: u64,
}

fn show(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).trim_end().to_string()
}

impl ProxyClient {
    /// Connect, handshake, and queue `AUTH` (sent with the first request: pipelined). With an
    /// empty `secret` no `AUTH` is sent: the client certificate must identify the client.
    pub fn connect(cfg: &ProxyClientConfig) -> Result<ProxyClient, ClientError> {
        let tcp =
            TcpStream::connect_timeout(&cfg.proxy, cfg.timeout).map_err(ClientError::Connect)?;
        let _ = tcp.set_nodelay(true);
        let tls = cfg
            .tls
            .connect(tcp, &cfg.tls_name, cfg.timeout)
            .map_err(ClientError::Tls)?;
        let mut conn = BufConn::new(tls);
        conn.set_timeout(cfg.timeout)?;
        // An empty secret: the client certificate authenticates (mutual TLS), no AUTH.
        let auth_pending = !cfg.secret.is_empty();
        if auth_pending {
            conn.queue(format!("AUTH {PROTOCOL_VERSION} {}\r\n", cfg.secret).as_bytes());
        }
        Ok(ProxyClient {
            conn,
            auth_pending,
            transcript: None,
            limits: ReplyLimits::default(),
            stage: Stage::Request,
            accepted: 0,
            opened: 0,
        })
    }

    /// How far the current request got: what a failure now means for failover.
    pub fn stage(&self) -> Stage {
        self.stage
    }

    /// Messages the MX accepted (final 2xx reply) over this proxy connection so far.
    pub fn accepted(&self) -> u64 {
        self.accepted
    }

    /// Requests this proxy connection has had answered with a ready reply.
    pub fn opened(&self) -> u64 {
        self.opened
    }

    /// Record a transcript of what is sent and received (the secret is redacted).
    pub fn record_transcript(&mut self) {
        let mut t = vec!["C: AUTH 1 <secret>".to_string()];
        if !self.auth_pending {
            t.clear();
        }
        self.transcript = Some(t);
    }

    /// Take the transcript recorded so far.
    pub fn take_transcript(&mut self) -> Vec<String> {
        self.transcript
            .as_mut()
            .map(std::mem::take)
            .unwrap_or_default()
    }

    fn note(&mut self, line: String) {
        if let Some(t) = self.transcript.as_mut() {
            t.push(line);
        }
    }

    fn read(&mut self) -> Result<Reply, ClientError> {
        let r = self.conn.read_reply(&self.limits)?;
        for l in show(r.raw()).lines() {
            self.note(format!("S: {l}"));
        }
        Ok(r)
    }

    fn finish_auth(&mut self) -> Result<(), ClientError> {
        if !self.auth_pending {
            return Ok(());
        }
        self.auth_pending = false;
        let r = self.read()?;
        if r.code() == 235 {
            return Ok(());
        }
        Err(proxy_failure(&r))
    }

    /// Send AUTH now and check the answer (otherwise it rides with the first request).
    pub fn authenticate(&mut self) -> Result<(), ClientError> {
        self.conn.flush()?;
        self.finish_auth()
    }

    /// Ask for an SMTP connection to an MX. On success the returned session is ready for
    /// MAIL FROM; dropping it without [`MxSession::quit`] leaves the proxy connection unusable.
    pub fn open(&mut self, req: &ConnectRequest) -> Result<MxSession<'_>, ClientError> {
        let line = req.to_line();
        self.stage = Stage::Request;
        self.note(format!("C: {}", line.trim_end()));
        self.conn.queue(line.as_bytes());
        self.conn.flush()?;
        self.finish_auth()?;
        let r = self.read()?;
        if r.code() != 250 {
            return Err(proxy_failure(&r));
        }
        let lines: Vec<&[u8]> = r.lines().collect();
        let ready = ConnectReady::parse(&lines).map_err(ClientError::Protocol)?;
        let mut ehlo = Vec::new();
        for l in &ready.ehlo {
            ehlo.extend_from_slice(l);
            ehlo.extend_from_slice(b"\r\n");
        }
        let caps = greenarrow_proxy_proto::smtp::parse_reply(&ehlo, &self.limits)
            .ok()
            .flatten()
            .map(|(r, _)| Capabilities::from_ehlo_reply(&r))
            .unwrap_or_default();
        self.stage = Stage::Envelope;
        self.opened += 1;
        Ok(MxSession {
            client: self,
            ready,
            caps,
        })
    }

    /// NOOP to the proxy.
    pub fn noop(&mut self) -> Result<(), ClientError> {
        self.note("C: NOOP".into());
        self.conn.send(b"NOOP\r\n")?;
        self.finish_auth()?;
        let r = self.read()?;
        if r.code() != 250 {
            return Err(ClientError::Protocol(format!("NOOP: {}", r.text())));
        }
        Ok(())
    }

    /// End the proxy connection.
    pub fn quit(mut self) -> Result<(), ClientError> {
        self.note("C: QUIT".into());
        self.conn.send(b"QUIT\r\n")?;
        self.finish_auth()?;
        let r = self.read()?;
        if r.code() != 221 {
            return Err(ClientError::Protocol(format!("QUIT: {}", r.text())));
        }
        Ok(())
    }
}

impl ProxyClient {
    /// The final reply to a message came: accepted (counted) or refused (the session goes on).
    fn finished_message(&mut self, reply: &Reply) {
        if reply.is_positive() {
            self.accepted += 1;
            self.stage = Stage::Accepted;
        } else {
            self.stage = Stage::Envelope;
        }
    }
}

fn proxy_failure(r: &Reply) -> ClientError {
    let lines: Vec<&[u8]> = r.lines().collect();
    match FailureReply::parse(r.code(), &lines) {
        Some(f) => ClientError::Proxy(f),
        None => ClientError::Protocol(format!("unexpected reply: {}", r.text())),
    }
}
