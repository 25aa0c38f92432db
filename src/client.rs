//! A client of the proxy protocol, for MTAs written in Rust (and for `gaproxy send`).
//! With several proxies, [`failover::Failover`] moves to the next one where that is safe.
//!
//! ```no_run
//! use greenarrow_proxy::client::{ProxyClient, ProxyClientConfig};
//! use greenarrow_proxy::protocol::{ConnectRequest, Destination};
//! use greenarrow_proxy::tls::ProxyClientTls;
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

pub mod failover;

pub use failover::{Decision, Endpoint, Failover, FailoverError, Stage};

use crate::bufconn::{BufConn, ReadError};
use crate::protocol::{ConnectReady, ConnectRequest, FailureReply, PROTOCOL_VERSION};
use crate::smtp::{dot_stuff, Capabilities, Reply, ReplyLimits};
use crate::tls::{ClientTlsStream, ProxyClientTls, TlsError};
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
        let caps = crate::smtp::parse_reply(&ehlo, &self.limits)
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

/// The result of one message.
#[derive(Debug)]
pub struct Delivery {
    pub accepted: Vec<String>,
    pub rejected: Vec<(String, Reply)>,
    /// The reply after the message data.
    pub final_reply: Reply,
}

/// What [`MxSession::envelope`] found out.
struct Envelope {
    accepted: Vec<String>,
    rejected: Vec<(String, Reply)>,
    /// The reply to DATA, when DATA was sent.
    data: Option<Reply>,
}

/// An SMTP session with an MX through the proxy.
pub struct MxSession<'a> {
    client: &'a mut ProxyClient,
    /// What the proxy said about the connection.
    pub ready: ConnectReady,
    /// The MX's capabilities (post-TLS EHLO).
    pub caps: Capabilities,
}

impl MxSession<'_> {
    /// Send one command line and read its reply.
    pub fn command(&mut self, line: &str) -> Result<Reply, ClientError> {
        self.client.note(format!("C: {line}"));
        self.client.conn.send(format!("{line}\r\n").as_bytes())?;
        self.client.read()
    }

    /// Send MAIL FROM, one RCPT TO per recipient and, with `data`, DATA: in one batch when
    /// the MX offers PIPELINING, otherwise one by one (stopping after a refused MAIL). A
    /// refused MAIL, or no recipient accepted, is an error (after RSET). Returns the accepted
    /// and refused recipients and the reply to DATA, if sent.
    fn envelope(&mut self, from: &str, to: &[&str], data: bool) -> Result<Envelope, ClientError> {
        let c = &mut *self.client;
        c.stage = Stage::Envelope;
        let mut cmds = vec![format!("MAIL FROM:<{from}>")];
        cmds.extend(to.iter().map(|r| format!("RCPT TO:<{r}>")));
        if data {
            cmds.push("DATA".into());
        }
        let mut replies = Vec::with_capacity(cmds.len());
        for cmd in &cmds {
            c.note(format!("C: {cmd}"));
            c.conn.queue(format!("{cmd}\r\n").as_bytes());
            if !self.caps.pipelining {
                c.conn.flush()?;
                replies.push(c.read()?);
                if !replies[0].is_positive() {
                    break;
                }
            }
        }
        if self.caps.pipelining {
            c.conn.flush()?;
            for _ in &cmds {
                replies.push(c.read()?);
            }
        }
        let data_reply = if data && replies.len() == cmds.len() {
            replies.pop()
        } else {
            None
        };
        if !replies[0].is_positive() {
            if data_reply.as_ref().is_some_and(|d| d.code() == 354) {
                // Cannot happen with a sane MX; end the data phase cleanly anyway.
                c.conn.send(b".\r\n")?;
                c.read()?;
            }
            let reply = replies.swap_remove(0);
            self.rset_quietly();
            return Err(ClientError::Smtp {
                stage: "MAIL FROM",
                reply,
            });
        }
        let mut env = Envelope {
            accepted: Vec::new(),
            rejected: Vec::new(),
            data: data_reply,
        };
        for (r, rep) in to.iter().zip(replies.into_iter().skip(1)) {
            if rep.is_positive() {
                env.accepted.push(r.to_string());
            } else {
                env.rejected.push((r.to_string(), rep));
            }
        }
        if env.accepted.is_empty() {
            if env.data.as_ref().is_some_and(|d| d.code() == 354) {
                // A compliant MX refuses DATA without recipients; if it said 354 anyway,
                // end the (empty) data phase at once.
                self.client.conn.send(b".\r\n")?;
                self.client.read()?;
            }
            let reply = env
                .rejected
                .first()
                .map(|(_, r)| r.clone())
                .unwrap_or_else(|| Reply::new_single(554, "no recipients"));
            self.rset_quietly();
            return Err(ClientError::Smtp {
                stage: "RCPT TO",
                reply,
            });
        }
        Ok(env)
    }

    /// Deliver one message with MAIL, RCPT..., DATA (pipelined when the MX offers
    /// PIPELINING). `message` is the message as it should arrive; it is dot-stuffed here.
    pub fn send_mail(
        &mut self,
        from: &str,
        to: &[&str],
        message: &[u8],
    ) -> Result<Delivery, ClientError> {
        let env = self.envelope(from, to, true)?;
        let data = env
            .data
            .ok_or_else(|| ClientError::Protocol("no reply to DATA".into()))?;
        if data.code() != 354 {
            self.rset_quietly();
            return Err(ClientError::Smtp {
                stage: "DATA",
                reply: data,
            });
        }
        let c = &mut *self.client;
        let mut payload = Vec::with_capacity(message.len() + message.len() / 64 + 8);
        dot_stuff(message, &mut payload);
        c.note(format!("C: <{} octets of message data>", payload.len()));
        // From the first byte of data on, the MX may accept the message: no failover.
        c.stage = Stage::Data;
        c.conn.write_through(&payload)?;
        let final_reply = c.read()?;
        c.finished_message(&final_reply);
        if !final_reply.is_positive() {
            return Err(ClientError::Smtp {
                stage: "end of data",
                reply: final_reply,
            });
        }
        Ok(Delivery {
            accepted: env.accepted,
            rejected: env.rejected,
            final_reply,
        })
    }

    /// Deliver one message with BDAT in chunks of `chunk` octets (needs CHUNKING).
    pub fn send_mail_bdat(
        &mut self,
        from: &str,
        to: &[&str],
        message: &[u8],
        chunk: usize,
    ) -> Result<Delivery, ClientError> {
        let env = self.envelope(from, to, false)?;
        let c = &mut *self.client;
        let chunks: Vec<&[u8]> = if message.is_empty() {
            vec![&[][..]]
        } else {
            message.chunks(chunk.max(1)).collect()
        };
        let n = chunks.len();
        c.stage = Stage::Data;
        for (i, part) in chunks.into_iter().enumerate() {
            let last = if i + 1 == n { " LAST" } else { "" };
            let cmd = format!("BDAT {}{last}", part.len());
            c.note(format!("C: {cmd} <{} octets>", part.len()));
            c.conn.queue(format!("{cmd}\r\n").as_bytes());
            c.conn.write_through(part)?;
        }
        let mut failure = None;
        let mut last = None;
        for _ in 0..n {
            let r = c.read()?;
            if !r.is_positive() && failure.is_none() {
                failure = Some(r.clone());
            }
            last = Some(r);
        }
        if let Some(reply) = failure {
            c.stage = Stage::Envelope;
            self.rset_quietly();
            return Err(ClientError::Smtp {
                stage: "BDAT",
                reply,
            });
        }
        let final_reply = last.ok_or_else(|| ClientError::Protocol("no BDAT reply".into()))?;
        c.finished_message(&final_reply);
        Ok(Delivery {
            accepted: env.accepted,
            rejected: env.rejected,
            final_reply,
        })
    }

    fn rset_quietly(&mut self) {
        let _ = self.command("RSET");
    }

    /// End the SMTP session (the proxy answers 221 and closes or keeps the MX connection);
    /// the proxy connection is then ready for another request.
    pub fn quit(self) -> Result<(), ClientError> {
        let c = self.client;
        c.note("C: QUIT".into());
        c.conn.send(b"QUIT\r\n")?;
        let r = c.read()?;
        if r.code() != 221 {
            return Err(ClientError::Smtp {
                stage: "QUIT",
                reply: r,
            });
        }
        c.stage = Stage::Request;
        Ok(())
    }
}
