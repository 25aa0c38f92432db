//! The public vocabulary of the relay: limits, steps, effects, pool states, errors, and the
//! replies the machine makes itself.

use std::fmt;

use crate::smtp::ReplyError;

/// Reply to an MTA line longer than [`RelayLimits::max_command_line`].
pub const LINE_TOO_LONG: &[u8] = b"500 5.5.2 line too long\r\n";
/// Reply to STARTTLS from the MTA.
pub const STARTTLS_REFUSED: &[u8] =
    b"454 4.7.0 TLS toward the MX is handled by greenarrow_proxy; STARTTLS not relayed\r\n";
/// Reply to `BDAT` when the MX did not offer CHUNKING (the chunk is read and discarded).
pub const BDAT_REFUSED: &[u8] =
    b"502 5.5.1 BDAT not available: the MX did not offer CHUNKING; chunk discarded\r\n";
/// Final reply to a DATA body that contained an ambiguous end-of-data sequence.
pub const SMUGGLING_REJECTED: &[u8] =
    b"554 5.6.0 message rejected: ambiguous end-of-data sequence (bare LF/CR around '.')\r\n";

/// Bounds on what the MTA may send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RelayLimits {
    /// Longest command line accepted, including its line ending. Default 4096. The caller's
    /// input buffer must be able to hold at least this many bytes.
    pub max_command_line: usize,
}

impl Default for RelayLimits {
    fn default() -> RelayLimits {
        RelayLimits {
            max_command_line: 4096,
        }
    }
}

/// What the machine must know about the MX connection and how it was set up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MxFacts {
    /// The MX offered CHUNKING (RFC 3030) in its EHLO reply: `BDAT` may be relayed. Without
    /// it the machine answers `BDAT` itself ([`BDAT_REFUSED`]) and never forwards it.
    pub chunking: bool,
    /// The name the proxy gave in EHLO (or HELO) when it set the connection up. An MTA that
    /// sends EHLO or HELO with another name makes the connection unfit for the pool.
    pub ehlo_name: String,
}

/// What the I/O loop must do next with the MTA input it passed to
/// [`Relay::poll_input`](super::Relay::poll_input).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InputStep {
    /// Send `input[..n]` to the MX verbatim, then consume it.
    Forward(usize),
    /// Consume `input[..n]` without sending it anywhere.
    Discard(usize),
    /// Consume `input[..consume]` and send `reply` to the MTA (a reply the proxy makes itself).
    Reply {
        /// Bytes of input to consume (0 for a reply owed to an earlier command).
        consume: usize,
        /// The complete reply, line ending included.
        reply: Vec<u8>,
    },
    /// A reply from the MX is owed and nothing more can be done with the input until it is
    /// read: read from the MX and call [`Relay::poll_mx`](super::Relay::poll_mx).
    AwaitMx,
    /// More input from the MTA is needed (input empty, an incomplete line, or in a body a
    /// possible terminator not complete yet): keep the unconsumed input and call again with
    /// more appended. Replies may still be owed when this is returned inside a BDAT chunk or
    /// a command line: the MTA owes the rest of it whatever the replies say (the MX may answer
    /// a pipelined `MAIL`, `RCPT`, `BDAT n LAST` flight only once the chunk is complete), so
    /// the caller reads the MTA first and the replies after.
    NeedInput,
    /// The MTA sent QUIT and every earlier reply has been delivered: consume `n` (the QUIT
    /// line); the SMTP session is over. The caller answers 221 itself and decides, with
    /// [`Relay::pool_state`](super::Relay::pool_state), what to do with the MX connection.
    Quit(usize),
    /// Close the MX connection at once without sending anything more. Nothing is consumed.
    /// The machine is now dead ([`Relay::dead_reason`](super::Relay::dead_reason) says why).
    /// Either the message body being relayed is unsafe (SMTP smuggling): the machine discards
    /// the rest of the body and answers the DATA with a 554; or an AUTH response line was too
    /// long: the machine discards it through its line end and answers it with a 500, which
    /// cancels the AUTH exchange.
    AbortMx,
}

/// What the caller must do after relaying an MX reply to the MTA.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplyEffect {
    /// Nothing special.
    Continue,
    /// A 421 from the MX: forward it, then close the MX connection (and call
    /// [`Relay::mx_lost`](super::Relay::mx_lost), which the machine has in effect already done).
    ServiceClosing,
}

/// What the I/O loop must do next with the MX input it passed to
/// [`Relay::poll_mx`](super::Relay::poll_mx).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MxStep {
    /// `input[..consume]` is the reply owed: send it to the MTA unchanged, consume it, act on
    /// `effect`, and call again.
    Relay {
        /// Length of the reply at the front of the input.
        consume: usize,
        /// What to do after relaying it.
        effect: ReplyEffect,
    },
    /// A reply is owed and the input holds only part of it (or nothing): read more from the
    /// MX (within the reply's deadline) and call again with it appended.
    NeedMore,
    /// The input is exactly the last reply owed. Before it is accepted, look without waiting
    /// whether the MX has sent anything after it: call again with what arrived appended, or
    /// with `quiet: true` when nothing did. (An MX must not send anything the MTA has not
    /// asked for yet; bytes that are already there are a protocol violation.)
    CheckSilence,
    /// No reply is owed and the input is empty: nothing to do. (Before forwarding a new batch
    /// the caller looks whether the MX sent anything meanwhile and calls again with it.)
    Idle,
    /// The MX broke the protocol: do not relay anything more from it, close its connection
    /// (no QUIT). The machine is dead; every reply still owed comes from
    /// [`Relay::poll_input`](super::Relay::poll_input) as the proxy's `421 4.4.2`.
    Violation(RelayError),
}

/// Whether the MX connection could serve another MTA session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PoolState {
    /// Nothing owed, command mode, no open transaction, not dead, AUTH never used.
    Clean,
    /// As `Clean` but a mail transaction is open: RSET answered by 250 makes it clean.
    NeedsRset,
    /// Cannot be reused; the reason is for the log.
    Unusable(&'static str),
}

/// How the MX broke the protocol ([`MxStep::Violation`]). After any of these the machine is
/// dead; the caller must not relay anything more from the MX and must close the connection.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RelayError {
    /// The MX sent bytes when no reply was owed.
    Unsolicited {
        /// The start of what it sent, made printable.
        start: String,
    },
    /// The MX sent bytes after the last reply owed (beyond its reply to `command`): it
    /// answered more than it was asked, or before it was asked (after a `354` or `334`, the
    /// MTA has not sent the body or response yet). The reply before them is not relayed.
    TrailingData {
        /// The command whose reply they follow.
        command: &'static str,
        /// The start of the bytes, made printable.
        start: String,
    },
    /// The bytes are not a valid reply, or exceed the reply limits.
    BadReply(ReplyError),
    /// The MX answered with a code that makes its view of the session differ from ours (for
    /// example an intermediate 3xx to a command that has no continuation).
    UnexpectedReply {
        /// The MX's reply code.
        code: u16,
        /// The command it answered.
        command: &'static str,
    },
}

impl fmt::Display for RelayError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RelayError::Unsolicited { start } => {
                write!(f, "MX sent data when no reply was owed: {start:?}")
            }
            RelayError::TrailingData { command, start } => write!(
                f,
                "MX sent more than its reply to {command}: {start:?}; session out of sync"
            ),
            RelayError::BadReply(e) => write!(f, "{e}"),
            RelayError::UnexpectedReply { code, command } => write!(
                f,
                "MX answered {command} with unexpected reply code {code}; session out of sync"
            ),
        }
    }
}

impl std::error::Error for RelayError {}
