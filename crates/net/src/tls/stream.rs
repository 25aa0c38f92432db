//! The blocking TLS stream, one type for both sides (generic over rustls's connection), and
//! the plaintext-or-TLS stream of a connection that may switch with STARTTLS.

use super::{dns_names, TlsFacts};
use crate::bufconn::Timeouts;
use rustls::{ClientConnection, ConnectionCommon, ServerConnection, SideData, StreamOwned};
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::ops::DerefMut;
use std::time::Duration;

/// A TLS stream (blocking) over a socket, with the facts of its handshake. `C` is rustls's
/// [`ClientConnection`] or [`ServerConnection`].
pub struct TlsStream<C> {
    inner: StreamOwned<C, TcpStream>,
    facts: TlsFacts,
}

/// The client side: toward an MX, or an MTA's toward the proxy.
pub type ClientTlsStream = TlsStream<ClientConnection>;
/// The server side: the proxy's MTA-facing listener, the test MX.
pub type ServerTlsStream = TlsStream<ServerConnection>;

impl<C, S> TlsStream<C>
where
    C: DerefMut<Target = ConnectionCommon<S>>,
    S: SideData,
{
    /// Wrap a connection whose handshake is complete.
    pub(crate) fn new(conn: C, tcp: TcpStream, facts: TlsFacts) -> TlsStream<C> {
        TlsStream {
            inner: StreamOwned::new(conn, tcp),
            facts,
        }
    }

    /// The underlying socket (for timeouts, addresses, shutdown).
    pub fn tcp(&self) -> &TcpStream {
        &self.inner.sock
    }

    /// Facts of the handshake: protocol version and cipher suite (and on the client side,
    /// whether the peer's certificate verified, and its names).
    pub fn facts(&self) -> &TlsFacts {
        &self.facts
    }

    /// Whether the TLS layer holds something a read returns without touching the socket:
    /// decrypted data (records already received are processed; no I/O), or the peer's
    /// close_notify or an error a read reports.
    pub fn has_buffered_input(&mut self) -> bool {
        match self.inner.conn.process_new_packets() {
            Ok(state) => state.plaintext_bytes_to_read() > 0 || state.peer_has_closed(),
            Err(_) => true,
        }
    }

    /// Send close_notify (best effort) and shut the socket down.
    pub fn close(mut self) {
        self.inner.conn.send_close_notify();
        let _ = self.inner.flush();
        let _ = self.inner.sock.shutdown(Shutdown::Both);
    }
}

impl ClientTlsStream {
    /// The server's certificate chain as presented (end entity first); empty if none.
    pub fn peer_chain(&self) -> &[rustls::pki_types::CertificateDer<'static>] {
        self.inner.conn.peer_certificates().unwrap_or(&[])
    }
}

impl ServerTlsStream {
    /// DNS names of the client's certificate, when it presented one (rustls has verified it
    /// against the client CA during the handshake).
    pub fn peer_names(&self) -> Vec<String> {
        match self.inner.conn.peer_certificates() {
            Some([ee, ..]) => dns_names(ee),
            _ => Vec::new(),
        }
    }
}

impl<C, S> Read for TlsStream<C>
where
    C: DerefMut<Target = ConnectionCommon<S>>,
    S: SideData,
{
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read(buf)
    }
}

impl<C, S> Write for TlsStream<C>
where
    C: DerefMut<Target = ConnectionCommon<S>>,
    S: SideData,
{
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.inner.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// A connection's byte stream: plaintext until STARTTLS (or TLS from the start).
pub enum MaybeTlsStream<C> {
    Plain(TcpStream),
    Tls(Box<TlsStream<C>>),
}

/// The client side's: toward an MX.
pub type ClientStream = MaybeTlsStream<ClientConnection>;
/// The server side's: the test MX's.
pub type ServerStream = MaybeTlsStream<ServerConnection>;

impl<C, S> MaybeTlsStream<C>
where
    C: DerefMut<Target = ConnectionCommon<S>>,
    S: SideData,
{
    /// The socket.
    pub fn tcp(&self) -> &TcpStream {
        match self {
            MaybeTlsStream::Plain(s) => s,
            MaybeTlsStream::Tls(s) => s.tcp(),
        }
    }

    /// The TLS stream, once TLS is on.
    pub fn tls(&self) -> Option<&TlsStream<C>> {
        match self {
            MaybeTlsStream::Plain(_) => None,
            MaybeTlsStream::Tls(s) => Some(s),
        }
    }

    /// Close: a TLS stream sends its close_notify first; the socket is shut down.
    pub fn close(self) {
        match self {
            MaybeTlsStream::Plain(s) => {
                let _ = s.shutdown(Shutdown::Both);
            }
            MaybeTlsStream::Tls(s) => s.close(),
        }
    }
}

impl<C, S> Read for MaybeTlsStream<C>
where
    C: DerefMut<Target = ConnectionCommon<S>>,
    S: SideData,
{
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            MaybeTlsStream::Plain(s) => s.read(buf),
            MaybeTlsStream::Tls(s) => s.read(buf),
        }
    }
}

impl<C, S> Write for MaybeTlsStream<C>
where
    C: DerefMut<Target = ConnectionCommon<S>>,
    S: SideData,
{
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            MaybeTlsStream::Plain(s) => s.write(buf),
            MaybeTlsStream::Tls(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            MaybeTlsStream::Plain(s) => s.flush(),
            MaybeTlsStream::Tls(s) => s.flush(),
        }
    }
}

impl<C> Timeouts for TlsStream<C> {
    fn set_timeouts(&self, timeout: Duration) -> io::Result<()> {
        self.inner.sock.set_timeouts(timeout)
    }
}

impl<C, S> Timeouts for MaybeTlsStream<C>
where
    C: DerefMut<Target = ConnectionCommon<S>>,
    S: SideData,
{
    fn set_timeouts(&self, timeout: Duration) -> io::Result<()> {
        self.tcp().set_timeouts(timeout)
    }
}
