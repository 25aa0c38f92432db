//! The direct SMTP client: what an MTA does without the proxy.
//!
//! Connection set-up reuses the proxy's own MX code ([`establish`]: dial, banner, EHLO,
//! optional STARTTLS, EHLO again), so the direct path and the proxy do the same work toward
//! the MX. [`send_mail`] mirrors [`greenarrow_proxy_client::MxSession::send_mail`]: MAIL,
//! RCPT and DATA in one write when the MX offers PIPELINING, then the dot-stuffed body in one
//! write, then the final reply; [`send_mail_bdat_pipelined`] sends MAIL, RCPT and `BDAT n
//! LAST` with the message in one write (`--bdat-pipelined`).

use greenarrow_proxy::mx::{
    establish, AttemptError, MxConnection, MxSettings, MxStream, MxTimeouts,
};
use greenarrow_proxy_net::bufconn::{BufConn, ReadError};
use greenarrow_proxy_net::tls::{MinVersion, MxTlsConnector};
use greenarrow_proxy_proto::protocol::{ConnectRequest, Destination, TlsPolicy};
use greenarrow_proxy_proto::smtp::{dot_stuff, Reply, ReplyLimits};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// Why a direct session failed.
#[derive(Debug)]
pub enum DirectError {
    /// Connection set-up failed (dial, banner, EHLO, STARTTLS).
    Setup(AttemptError),
    /// Reading or writing failed.
    Io(ReadError),
    /// The MX refused a step.
    Refused { stage: &'static str, reply: Reply },
    /// The MX does not offer what the session needs.
    Unsupported(&'static str),
}

impl fmt::Display for DirectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DirectError::Setup(r) => {
                write!(f, "set-up: {}", greenarrow_proxy::session::error::chain(r))
            }
            DirectError::Io(e) => write!(f, "{e}"),
            DirectError::Refused { stage, reply } => {
                write!(f, "MX refused {stage}: {}", reply.text())
            }
            DirectError::Unsupported(what) => write!(f, "{what}"),
        }
    }
}

impl std::error::Error for DirectError {}

impl From<ReadError> for DirectError {
    fn from(e: ReadError) -> Self {
        DirectError::Io(e)
    }
}

impl From<std::io::Error> for DirectError {
    fn from(e: std::io::Error) -> Self {
        DirectError::Io(e.into())
    }
}

/// Where and how a direct client connects.
#[derive(Clone)]
pub struct DirectTarget {
    settings: MxSettings,
    /// The MX (or the TCP relay in front of it).
    pub addr: SocketAddr,
    /// STARTTLS on every connection.
    pub tls: bool,
}

impl DirectTarget {
    pub fn new(addr: SocketAddr, tls: bool, timeout: Duration) -> Result<DirectTarget, String> {
        // Any certificate is accepted (as the proxy's `tls=opportunistic`): no roots needed.
        let tls_connector = MxTlsConnector::new(rustls::RootCertStore::empty(), MinVersion::Tls12)
            .map_err(|e| e.to_string())?;
        Ok(DirectTarget {
            settings: MxSettings {
                tls: tls_connector,
                timeouts: MxTimeouts {
                    connect: timeout,
                    banner: timeout,
                    command: timeout,
                    data_done: timeout,
                    tls_handshake: timeout,
                },
                reply_limits: ReplyLimits::default(),
            },
            addr,
            tls,
        })
    }

    /// Connect from `source` and run banner, EHLO (and STARTTLS, EHLO).
    pub fn open(&self, source: IpAddr, ehlo: &str) -> Result<MxConnection, DirectError> {
        let mut req = ConnectRequest::new(source, Destination::Ip(self.addr.ip()), ehlo);
        req.port = self.addr.port();
        req.tls = if self.tls {
            TlsPolicy::Required
        } else {
            TlsPolicy::None
        };
        let decision = greenarrow_proxy_proto::tls_policy::decide::as_requested(
            greenarrow_proxy_proto::tls_policy::decide::Request {
                tls: req.tls,
                tls_name: None,
                mx_host: None,
                mx_ip: self.addr.ip(),
            },
        );
        establish(
            &self.settings,
            &req,
            self.addr,
            None,
            &decision,
            greenarrow_proxy_net::deadline::Deadline::after(Duration::from_secs(3600)),
        )
        .map_err(DirectError::Setup)
    }
}

pub fn read(conn: &mut BufConn<MxStream>) -> Result<Reply, DirectError> {
    Ok(conn.read_reply(&ReplyLimits::default())?)
}

/// Deliver one message; returns the reply after the data.
pub fn send_mail(
    mx: &mut MxConnection,
    from: &str,
    to: &[&str],
    message: &[u8],
) -> Result<Reply, DirectError> {
    let pipelining = mx.capabilities().pipelining;
    send_on(mx.stream_mut(), pipelining, from, to, message)
}

/// [`send_mail`] on a connection set up elsewhere (through a passthrough front-end), whose
/// MX offers PIPELINING or not.
pub fn send_on(
    c: &mut BufConn<MxStream>,
    pipelining: bool,
    from: &str,
    to: &[&str],
    message: &[u8],
) -> Result<Reply, DirectError> {
    let mut cmds = vec![format!("MAIL FROM:<{from}>")];
    cmds.extend(to.iter().map(|r| format!("RCPT TO:<{r}>")));
    cmds.push("DATA".into());
    let mut replies = Vec::with_capacity(cmds.len());
    for cmd in &cmds {
        c.queue(format!("{cmd}\r\n").as_bytes());
        if !pipelining {
            c.flush()?;
            replies.push(read(c)?);
        }
    }
    if pipelining {
        c.flush()?;
        for _ in &cmds {
            replies.push(read(c)?);
        }
    }
    if let Some(r) = replies.iter().find(|r| !r.is_positive()) {
        return Err(DirectError::Refused {
            stage: "MAIL/RCPT/DATA",
            reply: r.clone(),
        });
    }
    let mut payload = Vec::with_capacity(message.len() + message.len() / 64 + 8);
    dot_stuff(message, &mut payload);
    c.write_through(&payload)?;
    let final_reply = read(c)?;
    if !final_reply.is_positive() {
        return Err(DirectError::Refused {
            stage: "end of data",
            reply: final_reply,
        });
    }
    Ok(final_reply)
}

/// Deliver one message in one flight, as [`greenarrow_proxy_client::MxSession::send_mail_bdat_pipelined`]:
/// MAIL, RCPT..., `BDAT <size> LAST` and the message in one write (the MX must offer
/// PIPELINING and CHUNKING), then every reply; returns the reply to the BDAT.
pub fn send_mail_bdat_pipelined(
    mx: &mut MxConnection,
    from: &str,
    to: &[&str],
    message: &[u8],
) -> Result<Reply, DirectError> {
    let caps = mx.capabilities();
    if !caps.pipelining || !caps.chunking {
        return Err(DirectError::Unsupported(
            "a pipelined BDAT flight needs PIPELINING and CHUNKING from the MX",
        ));
    }
    let c = mx.stream_mut();
    let mut head = format!("MAIL FROM:<{from}>\r\n");
    for r in to {
        head.push_str(&format!("RCPT TO:<{r}>\r\n"));
    }
    head.push_str(&format!("BDAT {} LAST\r\n", message.len()));
    c.queue(head.as_bytes());
    c.write_through(message)?;
    let mut envelope = Vec::with_capacity(to.len() + 1);
    for _ in 0..=to.len() {
        envelope.push(read(c)?);
    }
    let final_reply = read(c)?;
    match envelope.into_iter().find(|r| !r.is_positive()) {
        Some(reply) => Err(DirectError::Refused {
            stage: "MAIL/RCPT",
            reply,
        }),
        None if !final_reply.is_positive() => Err(DirectError::Refused {
            stage: "BDAT LAST",
            reply: final_reply,
        }),
        None => Ok(final_reply),
    }
}

/// QUIT, read the 221, close.
pub fn quit(mut mx: MxConnection) -> Result<(), DirectError> {
    mx.stream_mut().send(b"QUIT\r\n")?;
    let r = read(mx.stream_mut());
    mx.close();
    match r? {
        r if r.code() == 221 => Ok(()),
        reply => Err(DirectError::Refused {
            stage: "QUIT",
            reply,
        }),
    }
}
