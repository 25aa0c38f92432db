//! The public vocabulary of the relay: limits, steps, effects, pool states, errors, and the
//! replies the machine makes itself.

use std::fmt;

/// Reply to an MTA line longer than [`RelayLimits::max_command_line`].
pub const LINE_TOO_LONG: &[u8] = b"500 5.5.2 line too long\r\n";
/// Reply to STARTTLS from the MTA.
pub const STARTTLS_REFUSED: &[u8] =
    b"454 4.7.0 TLS toward the MX is handled by greenarrow_proxy; STARTTLS not relayed\r\n";
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
    /// read: read one reply from the MX and call [`Relay::on_mx_reply`](super::Relay::on_mx_reply).
    AwaitMx,
    /// More input from the MTA is needed (input empty, an incomplete line, or in a body a
    /// possible terminator not complete yet): keep the unconsumed input and call again with
    /// more appended. Replies may still be owed when this is returned inside a BDAT chunk (the
    /// MX answers only once the chunk is complete); a caller able to wait on both sides may
    /// read them meanwhile.
    NeedInput,
    /// The MTA sent QUIT and every earlier reply has been delivered: consume `n` (the QUIT
    /// line); the SMTP session is over. The caller answers 221 itself and decides, with
    /// [`Relay::pool_state`](super::Relay::pool_state), what to do with the MX connection.
    Quit(usize),
    /// The message body being relayed is unsafe (SMTP smuggling): close the MX connection at
    /// once without sending anything more. Nothing is consumed. The machine is now dead: it
    /// discards the rest of the body and answers the DATA with a 554.
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

/// A reply from the MX the machine could not accept. After any of these the machine is dead;
/// the caller must not relay the reply and must close the MX connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RelayError {
    /// No reply was owed (the MX sent an unsolicited reply, or the caller read one when the
    /// machine did not ask for it).
    NotAwaiting,
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
            RelayError::NotAwaiting => write!(f, "MX sent a reply when none was owed"),
            RelayError::UnexpectedReply { code, command } => write!(
                f,
                "MX answered {command} with unexpected reply code {code}; session out of sync"
            ),
        }
    }
}

impl std::error::Error for RelayError {}
