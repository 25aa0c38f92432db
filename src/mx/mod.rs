//! Connections to MX servers: the stream (plaintext or TLS), the set-up sequence, and what a
//! connection carries with it when it is handed to an MTA or kept in the pool.

pub mod connect;
pub mod error;
pub use greenarrow_proxy_proto::mx_setup as setup;

use greenarrow_proxy_net::bufconn::BufConn;
use greenarrow_proxy_net::deadline::Deadline;
use greenarrow_proxy_net::tls::TlsFacts;
use greenarrow_proxy_proto::protocol::TlsState;
use greenarrow_proxy_proto::smtp::{Capabilities, Reply};
use greenarrow_proxy_proto::tls_policy::rpt::{PolicyType, ResultType};
use greenarrow_proxy_proto::tls_policy::Applied;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

pub use connect::{establish, MxSettings};
pub use error::{AttemptError, SetupError};

/// Timeouts toward the MX.
#[derive(Clone, Copy, Debug)]
pub struct MxTimeouts {
    pub connect: Duration,
    pub banner: Duration,
    pub command: Duration,
    pub data_done: Duration,
    pub tls_handshake: Duration,
}

/// The byte stream to an MX: plaintext, then TLS after STARTTLS (or from the start).
pub type MxStream = greenarrow_proxy_net::tls::ClientStream;

/// Send QUIT and wait up to `wait` in all for the reply (best effort: errors are ignored).
pub(crate) fn say_quit(conn: &mut BufConn<MxStream>, wait: Duration) {
    let deadline = Deadline::after(wait);
    if conn.set_timeout_until(deadline).is_ok() && conn.send(b"QUIT\r\n").is_ok() {
        let _ = conn.read_reply_until(&Default::default(), deadline);
    }
}

/// An established MX connection, ready for MAIL FROM. Made by [`establish`]; what it is
/// (addresses, replies, TLS) is read through methods, and only its life's counters change.
pub struct MxConnection {
    conn: BufConn<MxStream>,
    remote: SocketAddr,
    local: SocketAddr,
    /// The MX host name the current user asked for (None: given by address).
    mx_host: Option<String>,
    banner: Reply,
    /// The EHLO (post-TLS) or HELO reply handed to MTAs.
    greeting: Reply,
    caps: Capabilities,
    tls: Option<TlsFacts>,
    tls_note: Option<String>,
    /// The name the certificate was verified for (only when it verified).
    verified_name: Option<String>,
    /// TLS was wanted by the request that opened it (plaintext then means the MX has none).
    tls_attempted: bool,
    /// The TLS policy it was set up under.
    applied: Applied,
    /// The MX name and TLSA set fingerprint it was DANE-verified against.
    dane: Option<(String, u64)>,
    /// A policy observed but not enforced at set-up (`testing`): its type and what enforcing
    /// it would have found (`None`: it would have passed).
    observed: Option<(PolicyType, Option<ResultType>)>,
    created: Instant,
    /// Sessions served so far (1 for a fresh connection in use).
    uses: u64,
    /// Messages accepted by the MX over this connection.
    messages: u64,
    /// Bytes relayed from MTAs to the MX.
    bytes: u64,
    /// The MTA that used it last.
    last_mta: Option<SocketAddr>,
}

/// What the connection is: fixed when it was set up.
impl MxConnection {
    /// The buffered stream to the MX (the relay reads and writes it).
    pub fn stream(&self) -> &BufConn<MxStream> {
        &self.conn
    }

    pub fn stream_mut(&mut self) -> &mut BufConn<MxStream> {
        &mut self.conn
    }

    /// The MX's address.
    pub fn remote(&self) -> SocketAddr {
        self.remote
    }

    /// The proxy's end (the source address).
    pub fn local(&self) -> SocketAddr {
        self.local
    }

    /// The MX host name its current user asked for (None: the MX was given by address).
    pub fn mx_host(&self) -> Option<&str> {
        self.mx_host.as_deref()
    }

    /// The MX's banner.
    pub fn banner(&self) -> &Reply {
        &self.banner
    }

    /// The EHLO (post-TLS) or HELO reply handed to MTAs.
    pub fn greeting(&self) -> &Reply {
        &self.greeting
    }

    /// The MX's extensions, from [`MxConnection::greeting`].
    pub fn capabilities(&self) -> &Capabilities {
        &self.caps
    }

    /// The negotiated TLS session, if the connection is encrypted.
    pub fn tls(&self) -> Option<&TlsFacts> {
        self.tls.as_ref()
    }

    /// Why the connection is not (verified) TLS, when that is worth saying.
    pub fn tls_note(&self) -> Option<&str> {
        self.tls_note.as_deref()
    }

    /// The TLS facts reuse is decided on ([`greenarrow_proxy_proto::protocol::TlsWant::satisfied_by`]).
    pub fn tls_state(&self) -> TlsState<'_> {
        TlsState {
            encrypted: self.tls.is_some(),
            attempted: self.tls_attempted,
            verified_name: self.verified_name.as_deref(),
            dane: self.dane.as_ref().map(|(n, f)| (n.as_str(), *f)),
        }
    }

    /// How the MX was authenticated: `dane` (a TLSA record matched), `webpki` (the chain and
    /// name verified), or `no` (the ready reply's and the session line's `tls_verified`).
    pub fn verified_word(&self) -> &'static str {
        match (self.applied, &self.tls) {
            (Applied::DaneEe | Applied::DaneTa, Some(_)) => "dane",
            (_, Some(t)) if t.verified => "webpki",
            _ => "no",
        }
    }

    /// The TLS policy it was set up under (`tls_policy=` of the ready reply).
    pub fn applied(&self) -> Applied {
        self.applied
    }

    /// A policy observed but not enforced at set-up, and what enforcing it would have found.
    pub fn observed(&self) -> Option<(PolicyType, Option<ResultType>)> {
        self.observed
    }

    /// When it was connected.
    pub fn created(&self) -> Instant {
        self.created
    }
}

/// The counters of a connection's life: changed only through these methods.
impl MxConnection {
    /// Sessions served so far (1 for a fresh connection in use).
    pub fn uses(&self) -> u64 {
        self.uses
    }

    /// Messages the MX accepted over this connection.
    pub fn messages(&self) -> u64 {
        self.messages
    }

    /// Octets relayed from MTAs to the MX.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// The MTA that used it last.
    pub fn last_mta(&self) -> Option<SocketAddr> {
        self.last_mta
    }

    /// Taken again (from the pool, or handed over at a cap) by a request that named the MX
    /// `host` (None: by address): one more use, and from now on the name shown (ready reply,
    /// logs) is this request's, not the first user's.
    pub fn reuse_for(&mut self, host: Option<&str>) {
        self.uses += 1;
        self.mx_host = host.map(str::to_string);
    }

    /// `mta` is using it now.
    pub fn used_by(&mut self, mta: SocketAddr) {
        self.last_mta = Some(mta);
    }

    /// The MX accepted `n` more messages over it.
    pub fn add_messages(&mut self, n: u64) {
        self.messages += n;
    }

    /// `n` more octets were relayed to the MX.
    pub fn add_bytes(&mut self, n: u64) {
        self.bytes += n;
    }

    /// Going idle: give back the buffers' memory (they are empty between sessions).
    pub fn release_buffers(&mut self) {
        self.conn.release_buffers();
    }
}

impl MxConnection {
    /// A non-blocking look at the socket: false if the MX closed the connection or sent
    /// anything unsolicited (typically a `421` idle timeout) while it sat in the pool.
    pub fn is_alive(&self) -> bool {
        if !self.conn.pending().is_empty() {
            return false;
        }
        use nix::sys::socket::{recv, MsgFlags};
        use std::os::fd::AsRawFd;
        // One system call: peek without blocking. Nothing to read is the healthy answer;
        // 0 (EOF) or any byte (typically a 421) means the connection is finished.
        let fd = self.conn.get_ref().tcp().as_raw_fd();
        let mut b = [0u8; 1];
        matches!(
            recv(fd, &mut b, MsgFlags::MSG_PEEK | MsgFlags::MSG_DONTWAIT),
            Err(nix::errno::Errno::EAGAIN)
        )
    }

    /// One command round trip (`NOOP` or `RSET` probe) finished by `deadline`; true when the MX
    /// answered 2xx.
    pub fn probe(&mut self, command: &[u8], deadline: Deadline) -> bool {
        self.conn.set_timeout_until(deadline).is_ok()
            && self.conn.send(command).is_ok()
            && self
                .conn
                .read_reply_until(&Default::default(), deadline)
                .is_ok_and(|r| (200..300).contains(&r.code()))
    }

    /// Politely end the SMTP session: QUIT, wait briefly for the reply, close.
    pub fn quit(mut self, wait: Duration) {
        say_quit(&mut self.conn, wait);
        self.close();
    }

    /// Close at once, sending nothing more at the SMTP level (used when a message must not
    /// be completed). A TLS connection still gets its close_notify: it carries no SMTP data.
    pub fn close(self) {
        let (stream, _) = self.conn.into_parts();
        stream.close();
    }
}
