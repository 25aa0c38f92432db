//! The relay state machine: an MTA's SMTP session relayed to an MX in lockstep.
//!
//! # Model
//!
//! The I/O loop owns two connections, each with a buffer of unconsumed input. It calls
//! [`Relay::poll_input`] with the MTA's and acts on the returned [`InputStep`]: forward a
//! prefix to the MX, discard a prefix, answer the MTA itself, read from the MX, read more from
//! the MTA, end the session, or drop the MX connection. It consumes exactly what the step says
//! and calls again, until the step is [`InputStep::AwaitMx`] or [`InputStep::NeedInput`].
//! It calls [`Relay::poll_mx`] with the MX's input and acts on the [`MxStep`]: relay a reply
//! to the MTA unchanged, read more, look whether the MX sent anything beyond the last reply
//! owed, or close the MX connection because it broke the protocol (any byte the MX sends that
//! no command asked for kills the connection before it can shift a reply onto the wrong
//! command). The `input` submodule is the MTA side, `mx` the MX side.
//!
//! The machine never copies message bytes: steps are lengths of prefixes of the caller's input.
//! Its state is small (a mode, a few flags, and one tag per reply still owed), and the number
//! of owed replies is bounded by what the caller's buffer held, because [`InputStep::AwaitMx`]
//! is returned whenever a reply is owed and the MTA has sent only whole lines. In the middle
//! of a line or a BDAT chunk the MTA owes the rest whatever the replies say: the machine asks
//! for it ([`InputStep::NeedInput`]) even with replies owed, so that a pipelined `MAIL`,
//! `RCPT`, `BDAT n LAST` flight read in pieces reaches the MX whole before any reply is
//! awaited (one round trip per message; the MX may answer only once the chunk is whole).
//!
//! Every command line the MTA sends earns exactly one reply, in order. Lines are forwarded as
//! soon as they are complete (consecutive lines in one [`InputStep::Forward`], so a PIPELINING
//! batch reaches the MX in one write) except after a *sync point* — a command whose reply
//! decides how the following bytes must be read (DATA, AUTH and each AUTH response line): there
//! the machine waits for that reply. After `354` the body is forwarded as it comes until its
//! CR LF `.` CR LF, checking for SMTP smuggling sequences (the `body` submodule). `BDAT n` is
//! followed by exactly `n` bytes of chunk data, forwarded without interpretation. A refused
//! BDAT (`4xx`/`5xx`, `LAST` too) leaves the MX's transaction state indeterminate (RFC 3030):
//! the connection then needs a RSET before the pool ([`PoolState::NeedsRset`]).
//!
//! `BDAT` to an MX that did not offer CHUNKING is answered by the machine (the chunk is read and
//! discarded), never forwarded: such an MX would read the chunk as commands. An MTA that sends
//! EHLO or HELO with another name than the proxy's (or HELO at all) changes the connection's
//! identity at the MX, which then is not pooled.
//!
//! When the MX connection is lost ([`Relay::mx_lost`], a relayed `421`, a protocol violation by
//! the MX, an aborted unsafe body, or a cancelled AUTH exchange) the machine is *dead*: it answers everything still owed and
//! every later command itself, so the MTA always gets a well-formed session.
//!
//! [`Relay::pool_state`] says whether the MX connection could be reused for another session.

mod body;
mod dead;
mod input;
mod mx;
mod types;

#[cfg(test)]
mod adversary;
#[cfg(test)]
mod adversary_mx;
#[cfg(test)]
mod driver;
#[cfg(test)]
mod props;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_dead;
#[cfg(test)]
mod tests_mx;

use std::collections::VecDeque;

use self::body::BodyState;
use super::reply::ReplyScan;

pub use self::types::{
    InputStep, MxFacts, MxStep, PoolState, RelayError, RelayLimits, ReplyEffect, BDAT_REFUSED,
    LINE_TOO_LONG, SMUGGLING_REJECTED, STARTTLS_REFUSED,
};

/// The command a reply is owed to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Owed {
    /// HELO or EHLO: 2xx closes any transaction.
    Hello,
    /// MAIL (or anything starting with MAIL): 2xx opens a transaction.
    Mail,
    /// RSET: 2xx closes the transaction.
    Rset,
    /// DATA (sync point): 354 starts the body.
    Data,
    /// The end of a DATA body: closes the transaction.
    DataEnd,
    /// A BDAT chunk (sent completely); LAST closes the transaction.
    Bdat { last: bool },
    /// AUTH or an AUTH response line (sync point): 334 means another response line follows.
    Auth,
    /// A line starting with DATA/BDAT that we did not parse as such (sync point): anything
    /// but 4xx/5xx means the MX read it differently than we did.
    MustFail,
    /// Anything else.
    Other,
}

impl Owed {
    fn is_sync_point(self) -> bool {
        matches!(self, Owed::Data | Owed::Auth | Owed::MustFail)
    }

    fn name(self) -> &'static str {
        match self {
            Owed::Hello => "HELO/EHLO",
            Owed::Mail => "MAIL",
            Owed::Rset => "RSET",
            Owed::Data => "DATA",
            Owed::DataEnd => "end of data",
            Owed::Bdat { .. } => "BDAT",
            Owed::Auth => "AUTH",
            Owed::MustFail => "a malformed DATA/BDAT",
            Owed::Other => "a command",
        }
    }
}

/// How the next MTA bytes are read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// Command lines.
    Command,
    /// The next line is an AUTH response (after 334), not a command.
    AuthResponse,
    /// DATA body (after 354).
    Body(BodyState),
    /// BDAT chunk data still to forward; the reply is owed once it is all sent.
    Chunk { remaining: u64, last: bool },
    /// Discarding an over-long line through its LF; then 500.
    DiscardLine,
    /// Discarding a BDAT chunk the MX must not see (it did not offer CHUNKING); then 502.
    RefuseChunk { remaining: u64 },
    /// Dead: discarding a body through its CR LF . CR LF; then 554 (smuggled) or 421.
    DiscardBody { state: BodyState, smuggled: bool },
    /// Dead: discarding the rest of a BDAT chunk; then 421.
    DiscardChunk { remaining: u64 },
}

/// Why the machine is dead.
#[derive(Clone, Debug)]
struct Dead {
    reason: &'static str,
    /// The synthetic reply for everything owed.
    reply: Vec<u8>,
}

/// The relay state machine for one MTA session over one MX connection. See the module docs.
#[derive(Clone, Debug)]
pub struct Relay {
    limits: RelayLimits,
    facts: MxFacts,
    mode: Mode,
    owed: VecDeque<Owed>,
    dead: Option<Dead>,
    in_transaction: bool,
    used_auth: bool,
    /// Why the MTA's own EHLO/HELO makes the connection unfit for the pool.
    renamed: Option<&'static str>,
    accepted: u64,
    /// How far the reply the MX is sending was already checked.
    scan: ReplyScan,
}

impl Relay {
    /// A machine for a fresh session (command mode, nothing owed) over an MX connection
    /// described by `facts`.
    pub fn new(limits: RelayLimits, facts: MxFacts) -> Relay {
        Relay {
            limits,
            facts,
            mode: Mode::Command,
            owed: VecDeque::new(),
            dead: None,
            in_transaction: false,
            used_auth: false,
            renamed: None,
            accepted: 0,
            scan: ReplyScan::default(),
        }
    }

    /// The MX connection is gone (closed, timed out, protocol error, or a 421 was just
    /// relayed). From now on the machine is dead: every reply still owed is answered by a
    /// synthetic `421 4.4.2 <why>` via `InputStep::Reply { consume: 0, .. }`, body and chunk
    /// bytes still coming from the MTA are discarded (then the owed reply for that DATA/BDAT is
    /// given: 421, or 554 after [`InputStep::AbortMx`]), later command lines get a 421 each
    /// (a BDAT's chunk is discarded first), and QUIT still gives [`InputStep::Quit`].
    /// Calling it again only updates the text.
    pub fn mx_lost(&mut self, why: &str) {
        let why = if why.is_empty() {
            "connection to the MX lost"
        } else {
            why
        };
        self.die("connection to the MX lost", why);
    }

    /// A reply from the MX is owed (and the machine is not dead).
    pub fn awaiting_mx(&self) -> bool {
        self.dead.is_none() && !self.owed.is_empty()
    }

    /// Whether the next reply owed is the one after the end of a message (DATA's final reply
    /// or BDAT LAST's), which may take longer (`timeouts.mx_data_done`).
    pub fn awaiting_data_end(&self) -> bool {
        self.dead.is_none()
            && matches!(
                self.owed.front(),
                Some(Owed::DataEnd) | Some(Owed::Bdat { last: true })
            )
    }

    /// Whether the MTA is in the middle of message data (a DATA body or a BDAT chunk): if it
    /// goes away now, the MX connection must be closed without ending the message.
    pub fn in_message(&self) -> bool {
        matches!(
            self.mode,
            Mode::Body(_)
                | Mode::Chunk { .. }
                | Mode::DiscardBody { .. }
                | Mode::DiscardChunk { .. }
        )
    }

    /// Whether the MX connection could be reused now.
    pub fn pool_state(&self) -> PoolState {
        if let Some(dead) = &self.dead {
            return PoolState::Unusable(dead.reason);
        }
        if self.used_auth {
            return PoolState::Unusable("AUTH was used on this connection");
        }
        if let Some(why) = self.renamed {
            return PoolState::Unusable(why);
        }
        if !self.owed.is_empty() {
            return PoolState::Unusable("replies from the MX are outstanding");
        }
        match self.mode {
            // A refused chunk never reached the MX.
            Mode::Command | Mode::RefuseChunk { .. } => {}
            Mode::AuthResponse => return PoolState::Unusable("inside an AUTH exchange"),
            Mode::Body(_) => return PoolState::Unusable("inside a message body"),
            Mode::Chunk { .. } => return PoolState::Unusable("inside a BDAT chunk"),
            Mode::DiscardLine | Mode::DiscardBody { .. } | Mode::DiscardChunk { .. } => {
                return PoolState::Unusable("discarding MTA input")
            }
        }
        if self.in_transaction {
            PoolState::NeedsRset
        } else {
            PoolState::Clean
        }
    }

    /// Messages the MX accepted: final DATA replies and BDAT LAST replies with 2xx.
    pub fn messages_accepted(&self) -> u64 {
        self.accepted
    }

    /// The MTA sent AUTH (the connection must never be pooled).
    pub fn used_auth(&self) -> bool {
        self.used_auth
    }

    /// Why the machine is dead (for the log), or None while the MX connection is in use.
    pub fn dead_reason(&self) -> Option<&'static str> {
        self.dead.as_ref().map(|d| d.reason)
    }
}
