//! Looking at the MX without waiting: whether anything arrived that the relay did not ask
//! for (a stray reply, a close), at the cost of at most one non-blocking peek and one read.

use crate::mx::{MxConnection, MxStream};
use greenarrow_proxy_net::bufconn::ReadError;

/// Whether the MX's last read emptied its socket and nothing was sent to it since, so that a
/// [`look`] now would find nothing more either (without a system call).
pub(super) fn drained(c: &mut MxConnection) -> bool {
    let conn = c.stream_mut();
    conn.drained()
        && match conn.get_mut() {
            MxStream::Plain(_) => true,
            MxStream::Tls(s) => s.drained(),
        }
}

/// What [`look`] found.
pub(super) enum Look {
    /// Nothing to read now (a TLS record without data, such as a session ticket, counts as
    /// nothing).
    Nothing,
    /// Bytes arrived; they are in the connection's input buffer.
    Data,
    /// The MX closed the connection.
    Closed,
    /// The socket or TLS failed.
    Failed(String),
}

/// Look at the MX without waiting: one non-blocking peek at the socket (and, under TLS, at
/// data already decrypted); only when something is there, one read that does not wait.
pub(super) fn look(c: &mut MxConnection) -> Look {
    let buffered = match c.stream_mut().get_mut() {
        MxStream::Tls(s) => s.has_buffered_input(),
        MxStream::Plain(_) => false,
    };
    if !buffered {
        use nix::sys::socket::{recv, MsgFlags};
        use std::os::fd::AsRawFd;
        let fd = c.stream_mut().get_ref().tcp().as_raw_fd();
        let mut b = [0u8; 1];
        loop {
            match recv(fd, &mut b, MsgFlags::MSG_PEEK | MsgFlags::MSG_DONTWAIT) {
                Err(nix::errno::Errno::EINTR) => continue,
                Err(nix::errno::Errno::EAGAIN) => return Look::Nothing,
                Err(e) => return Look::Failed(e.to_string()),
                Ok(0) => return Look::Closed,
                Ok(_) => break,
            }
        }
    }
    let tcp = c.stream_mut().get_ref().tcp();
    if let Err(e) = tcp.set_nonblocking(true) {
        return Look::Failed(e.to_string());
    }
    let read = c.stream_mut().fill();
    if let Err(e) = c.stream_mut().get_ref().tcp().set_nonblocking(false) {
        return Look::Failed(e.to_string());
    }
    match read {
        Ok(_) => Look::Data,
        Err(ReadError::Timeout) => Look::Nothing,
        Err(ReadError::Closed) => Look::Closed,
        Err(e) => Look::Failed(e.to_string()),
    }
}
