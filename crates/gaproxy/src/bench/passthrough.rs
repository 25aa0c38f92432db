//! MTAs through a passthrough front-end (issue 24 part 2): the MTA connects to the proxy's
//! PROXY protocol or SOCKS5 front-end (`mode: passthrough`), says where to go — a PROXY v2
//! header, or SOCKS5 `BIND <source>` then `CONNECT <mx>` as KumoMTA does — and then speaks
//! SMTP to the MX through it exactly as the direct client does (banner, EHLO, pipelined
//! MAIL/RCPT/DATA, the body in one write, QUIT).

use super::direct::{read, DirectError};
use clap::ValueEnum;
use greenarrow_proxy::mx::MxStream;
use greenarrow_proxy_net::bufconn::BufConn;
use greenarrow_proxy_proto::smtp::{Capabilities, Reply};
use greenarrow_proxy_testkit::mta::kumo;
use std::io::{self, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::Duration;

/// Which front-end the MTAs go through.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Front {
    /// The PROXY protocol front-end, with a PROXY v2 header.
    ProxyV2,
    /// The SOCKS5 front-end without authentication: BIND the source, CONNECT the MX.
    Socks5,
}

/// Where the MTAs connect and where they ask to go.
#[derive(Clone)]
pub struct FrontTarget {
    pub kind: Front,
    /// The front-end's listening address.
    pub addr: SocketAddr,
    /// The MX (or the delay relay in front of it).
    pub mx: SocketAddr,
    pub timeout: Duration,
}

/// An SMTP connection to the MX through the front-end, after EHLO.
pub struct FrontConn {
    pub conn: BufConn<MxStream>,
    /// The MX offered PIPELINING.
    pub pipelining: bool,
}

fn positive(stage: &'static str, reply: Reply) -> Result<Reply, DirectError> {
    if reply.is_positive() {
        Ok(reply)
    } else {
        Err(DirectError::Refused { stage, reply })
    }
}

impl FrontTarget {
    /// Connect to the front-end, ask for the MX from `source`, read the banner, say EHLO.
    pub fn open(&self, source: IpAddr, ehlo: &str) -> Result<FrontConn, DirectError> {
        let mut tcp = TcpStream::connect_timeout(&self.addr, self.timeout)?;
        tcp.set_nodelay(true)?;
        tcp.set_read_timeout(Some(self.timeout))?;
        tcp.set_write_timeout(Some(self.timeout))?;
        match self.kind {
            Front::ProxyV2 => tcp.write_all(&kumo::proxy_v2_header(source, self.mx))?,
            Front::Socks5 => {
                kumo::socks5_handshake(&mut tcp, None, Some(source), self.mx)
                    .map_err(|e| io::Error::other(e.to_string()))?;
                // The handshake set its own timeouts: the run's apply to the SMTP part.
                tcp.set_read_timeout(Some(self.timeout))?;
                tcp.set_write_timeout(Some(self.timeout))?;
            }
        }
        let mut conn = BufConn::new(MxStream::Plain(tcp));
        positive("the banner", read(&mut conn)?)?;
        conn.send(format!("EHLO {ehlo}\r\n").as_bytes())?;
        let reply = positive("EHLO", read(&mut conn)?)?;
        Ok(FrontConn {
            conn,
            pipelining: Capabilities::from_ehlo_reply(&reply).pipelining,
        })
    }
}

/// QUIT, read the 221, close.
pub fn quit(mut c: FrontConn) -> Result<(), DirectError> {
    c.conn.send(b"QUIT\r\n")?;
    let r = read(&mut c.conn)?;
    if r.code() == 221 {
        Ok(())
    } else {
        Err(DirectError::Refused {
            stage: "QUIT",
            reply: r,
        })
    }
}
