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
//! owed, or close the MX connection because it broke the protocol (the `mx` submodule: any
//! byte the MX sends that no command asked for kills the connection before it can shift a
//! reply onto the wrong command).
//!
//! The machine never copies message bytes: steps are lengths of prefixes of the caller's input.
//! Its state is small (a mode, a few flags, and one tag per reply still owed), and the number
//! of owed replies is bounded by what the caller's buffer held, because [`InputStep::AwaitMx`]
//! is returned whenever a reply is owed and no complete line is left to forward.
//!
//! Every command line the MTA sends earns exactly one reply, in order. Lines are forwarded as
//! soon as they are complete (consecutive lines in one [`InputStep::Forward`], so a PIPELINING
//! batch reaches the MX in one write) except after a *sync point* — a command whose reply
//! decides how the following bytes must be read (DATA, AUTH and each AUTH response line): there
//! the machine waits for that reply. After `354` the body is forwarded as it comes until its
//! CR LF `.` CR LF, checking for SMTP smuggling sequences (the `body` submodule). `BDAT n` is
//! followed by exactly `n` bytes of chunk data, forwarded without interpretation.
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
mod mx;
mod types;

#[cfg(test)]
mod adversary;
#[cfg(test)]
mod props;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_dead;
#[cfg(test)]
mod tests_mx;

use std::collections::VecDeque;

use self::body::{BodyState, Scan};
use super::command::{classify, looks_like_data_or_bdat, looks_like_mail, Verb};
use super::reply::ReplyScan;
use super::strip_line_end;

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

enum Line {
    Complete(usize),
    Incomplete,
    TooLong,
}

/// Find the command line at the front of `input` (bounded by `max` bytes including the LF).
fn find_line(input: &[u8], max: usize) -> Line {
    let window = input.get(..max).unwrap_or(input);
    match window.iter().position(|&b| b == b'\n') {
        Some(i) => Line::Complete(i + 1),
        None if input.len() >= max => Line::TooLong,
        None => Line::Incomplete,
    }
}

/// What to do with a complete command line in live command mode.
enum Action {
    Forward(Owed),
    Hello { helo: bool },
    Chunk { size: u64, last: bool },
    Quit,
    StartTls,
}

fn action_for(line: &[u8]) -> Action {
    match classify(line) {
        Ok(Verb::Helo) => Action::Hello { helo: true },
        Ok(Verb::Ehlo) => Action::Hello { helo: false },
        Ok(Verb::Mail) => Action::Forward(Owed::Mail),
        Ok(Verb::Rset) => Action::Forward(Owed::Rset),
        Ok(Verb::Data) => Action::Forward(Owed::Data),
        Ok(Verb::Auth) => Action::Forward(Owed::Auth),
        Ok(Verb::Bdat { size, last }) => Action::Chunk { size, last },
        Ok(Verb::Quit) => Action::Quit,
        Ok(Verb::StartTls) => Action::StartTls,
        Ok(Verb::Rcpt | Verb::Noop | Verb::Other) | Err(_) => {
            if looks_like_data_or_bdat(line) {
                Action::Forward(Owed::MustFail)
            } else if looks_like_mail(line) {
                Action::Forward(Owed::Mail)
            } else {
                Action::Forward(Owed::Other)
            }
        }
    }
}

/// `Forward(pos)` if anything was scanned for forwarding, else `step`.
fn flush(pos: usize, step: InputStep) -> InputStep {
    if pos > 0 {
        InputStep::Forward(pos)
    } else {
        step
    }
}

fn clamp_len(remaining: u64, available: usize) -> usize {
    usize::try_from(remaining).map_or(available, |r| r.min(available))
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

    /// Decide the next step for the unconsumed MTA input `input`. Call repeatedly, acting on
    /// each step (consuming what the step says) until it returns [`InputStep::AwaitMx`] or
    /// [`InputStep::NeedInput`].
    pub fn poll_input(&mut self, input: &[u8]) -> InputStep {
        if self.dead.is_some() {
            return self.poll_dead(input);
        }
        let mut pos = 0usize;
        loop {
            let rest = input.get(pos..).unwrap_or(&[]);
            match self.mode {
                Mode::Body(state) => {
                    if pos > 0 {
                        return InputStep::Forward(pos);
                    }
                    match body::scan(state, rest, true) {
                        Scan::More(BodyState::DotCr) => {
                            // CR LF `.` CR: the last byte is that CR. Hold it back until the
                            // next byte shows whether this is the terminator, so the MX never
                            // sees even CR LF `.` CR of an ambiguous sequence.
                            self.mode = Mode::Body(BodyState::Dot);
                            return flush(rest.len().saturating_sub(1), InputStep::NeedInput);
                        }
                        Scan::More(state) => {
                            self.mode = Mode::Body(state);
                            return flush(rest.len(), InputStep::NeedInput);
                        }
                        Scan::End(n) => {
                            self.mode = Mode::Command;
                            self.owed.push_back(Owed::DataEnd);
                            pos = n;
                        }
                        Scan::Unsafe { .. } => {
                            // Nothing of this input is consumed: discarding restarts from
                            // `state`, reading leniently up to the real terminator.
                            self.die("message body had an ambiguous end-of-data sequence", "");
                            self.mode = Mode::DiscardBody {
                                state,
                                smuggled: true,
                            };
                            return InputStep::AbortMx;
                        }
                    }
                }
                Mode::Chunk { remaining, last } => {
                    if remaining == 0 {
                        self.mode = Mode::Command;
                        self.owed.push_back(Owed::Bdat { last });
                        continue;
                    }
                    if rest.is_empty() {
                        return flush(pos, InputStep::NeedInput);
                    }
                    let n = clamp_len(remaining, rest.len());
                    pos += n;
                    self.mode = Mode::Chunk {
                        remaining: remaining.saturating_sub(n as u64),
                        last,
                    };
                }
                Mode::Command | Mode::AuthResponse => {
                    if self.owed.back().is_some_and(|o| o.is_sync_point()) {
                        return flush(pos, InputStep::AwaitMx);
                    }
                    let len = match find_line(rest, self.limits.max_command_line) {
                        Line::Complete(len) => len,
                        Line::Incomplete => {
                            return flush(pos, self.wait_step());
                        }
                        Line::TooLong => {
                            if pos > 0 || !self.owed.is_empty() {
                                return flush(pos, InputStep::AwaitMx);
                            }
                            let in_auth = self.mode == Mode::AuthResponse;
                            self.mode = Mode::DiscardLine;
                            if in_auth {
                                // The MX waits for this response: it can neither have it nor
                                // be left waiting (the MTA's next line would be taken for the
                                // response). Close the MX connection; the line gets its 500.
                                self.die("AUTH exchange cancelled: response line too long", "");
                                return InputStep::AbortMx;
                            }
                            return self.discard_line(rest);
                        }
                    };
                    let line = rest.get(..len).unwrap_or(rest);
                    if self.mode == Mode::AuthResponse {
                        self.mode = Mode::Command;
                        self.owed.push_back(Owed::Auth);
                        pos += len;
                        continue;
                    }
                    match action_for(line) {
                        Action::Forward(owed) => {
                            if owed == Owed::Auth {
                                self.used_auth = true;
                            }
                            self.owed.push_back(owed);
                            pos += len;
                        }
                        Action::Hello { helo } => {
                            self.note_hello(line, helo);
                            self.owed.push_back(Owed::Hello);
                            pos += len;
                        }
                        Action::Chunk { size, last } if self.facts.chunking => {
                            self.mode = Mode::Chunk {
                                remaining: size,
                                last,
                            };
                            pos += len;
                        }
                        Action::Chunk { .. } | Action::Quit | Action::StartTls
                            if pos > 0 || !self.owed.is_empty() =>
                        {
                            return flush(pos, InputStep::AwaitMx);
                        }
                        Action::Chunk { size, .. } => return self.refuse_chunk(size, rest, len),
                        Action::Quit => return InputStep::Quit(len),
                        Action::StartTls => {
                            return InputStep::Reply {
                                consume: len,
                                reply: STARTTLS_REFUSED.to_vec(),
                            }
                        }
                    }
                }
                Mode::DiscardLine => {
                    if pos > 0 {
                        return InputStep::Forward(pos);
                    }
                    return self.discard_line(rest);
                }
                Mode::RefuseChunk { remaining } => {
                    if pos > 0 {
                        return InputStep::Forward(pos);
                    }
                    return self.refuse_chunk(remaining, rest, 0);
                }
                Mode::DiscardBody { .. } | Mode::DiscardChunk { .. } => {
                    // Only reachable when dead; handled there.
                    if pos > 0 {
                        return InputStep::Forward(pos);
                    }
                    return self.poll_dead(rest);
                }
            }
        }
    }

    /// The step when a command line is incomplete.
    fn wait_step(&self) -> InputStep {
        if self.owed.is_empty() {
            InputStep::NeedInput
        } else {
            InputStep::AwaitMx
        }
    }

    /// In `DiscardLine` mode: discard through the LF, then answer 500.
    fn discard_line(&mut self, input: &[u8]) -> InputStep {
        match input.iter().position(|&b| b == b'\n') {
            Some(i) => {
                self.mode = Mode::Command;
                InputStep::Reply {
                    consume: i + 1,
                    reply: LINE_TOO_LONG.to_vec(),
                }
            }
            None if input.is_empty() => InputStep::NeedInput,
            None => InputStep::Discard(input.len()),
        }
    }

    /// Refusing a BDAT chunk: consume `skip` bytes (the BDAT line) and up to `remaining` bytes
    /// of chunk after them; once the chunk is all read, answer 502.
    fn refuse_chunk(&mut self, remaining: u64, input: &[u8], skip: usize) -> InputStep {
        let data = input.get(skip..).unwrap_or(&[]);
        let n = clamp_len(remaining, data.len());
        let remaining = remaining.saturating_sub(n as u64);
        let consume = skip + n;
        if remaining == 0 {
            self.mode = Mode::Command;
            return InputStep::Reply {
                consume,
                reply: BDAT_REFUSED.to_vec(),
            };
        }
        self.mode = Mode::RefuseChunk { remaining };
        if consume == 0 {
            InputStep::NeedInput
        } else {
            InputStep::Discard(consume)
        }
    }

    /// The MTA sent EHLO (or HELO, `helo`) itself: with another name than the proxy's, or
    /// HELO at all (the MX then no longer speaks ESMTP on this connection), the connection
    /// must not serve the next MTA, which is told the proxy's name and EHLO reply.
    fn note_hello(&mut self, line: &[u8], helo: bool) {
        let content = strip_line_end(line);
        let arg = match content.iter().position(|&b| b == b' ') {
            Some(i) => content.get(i..).unwrap_or(&[]),
            None => &[],
        };
        let arg = arg.trim_ascii();
        if !arg.eq_ignore_ascii_case(self.facts.ehlo_name.as_bytes()) {
            self.renamed = Some("the MTA changed the EHLO name");
        } else if helo && self.renamed.is_none() {
            self.renamed = Some("the MTA sent HELO: the MX no longer speaks ESMTP here");
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
