//! The relay state machine: an MTA's SMTP session relayed to an MX in lockstep.
//!
//! # Model
//!
//! The I/O loop owns two connections and a buffer of unconsumed bytes from the MTA. It calls
//! [`Relay::poll_input`] with that buffer and acts on the returned [`InputStep`]: forward a
//! prefix to the MX, discard a prefix, answer the MTA itself, read a reply from the MX, read more
//! from the MTA, end the session, or drop the MX connection. It consumes exactly what the step
//! says and calls again, until the step is [`InputStep::AwaitMx`] or [`InputStep::NeedInput`].
//! Replies read from the MX go to [`Relay::on_mx_reply`] and then, unchanged, to the MTA.
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
//! When the MX connection is lost ([`Relay::mx_lost`], a relayed `421`, a protocol violation by
//! the MX, or an aborted unsafe body) the machine is *dead*: it answers everything still owed and
//! every later command itself, so the MTA always gets a well-formed session.
//!
//! [`Relay::pool_state`] says whether the MX connection could be reused for another session.

mod body;
mod dead;
mod types;

#[cfg(test)]
mod props;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_dead;

use std::collections::VecDeque;

use self::body::{BodyState, Scan};
use super::command::{classify, looks_like_data_or_bdat, looks_like_mail, Verb};
use super::reply::Reply;

pub use self::types::{
    InputStep, PoolState, RelayError, RelayLimits, ReplyEffect, LINE_TOO_LONG, SMUGGLING_REJECTED,
    STARTTLS_REFUSED,
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
    DiscardLine { resume_auth: bool },
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
    mode: Mode,
    owed: VecDeque<Owed>,
    dead: Option<Dead>,
    in_transaction: bool,
    used_auth: bool,
    accepted: u64,
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
    Chunk { size: u64, last: bool },
    Quit,
    StartTls,
}

fn action_for(line: &[u8]) -> Action {
    match classify(line) {
        Ok(Verb::Helo | Verb::Ehlo) => Action::Forward(Owed::Hello),
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
    /// A machine for a fresh session (command mode, nothing owed).
    pub fn new(limits: RelayLimits) -> Relay {
        Relay {
            limits,
            mode: Mode::Command,
            owed: VecDeque::new(),
            dead: None,
            in_transaction: false,
            used_auth: false,
            accepted: 0,
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
                            self.mode = Mode::DiscardLine {
                                resume_auth: self.mode == Mode::AuthResponse,
                            };
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
                        Action::Chunk { size, last } => {
                            self.mode = Mode::Chunk {
                                remaining: size,
                                last,
                            };
                            pos += len;
                        }
                        Action::Quit | Action::StartTls if pos > 0 || !self.owed.is_empty() => {
                            return flush(pos, InputStep::AwaitMx);
                        }
                        Action::Quit => return InputStep::Quit(len),
                        Action::StartTls => {
                            return InputStep::Reply {
                                consume: len,
                                reply: STARTTLS_REFUSED.to_vec(),
                            }
                        }
                    }
                }
                Mode::DiscardLine { .. } => {
                    if pos > 0 {
                        return InputStep::Forward(pos);
                    }
                    return self.discard_line(rest);
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
        let resume_auth = matches!(self.mode, Mode::DiscardLine { resume_auth: true });
        match input.iter().position(|&b| b == b'\n') {
            Some(i) => {
                self.mode = if resume_auth && self.dead.is_none() {
                    Mode::AuthResponse
                } else {
                    Mode::Command
                };
                InputStep::Reply {
                    consume: i + 1,
                    reply: LINE_TOO_LONG.to_vec(),
                }
            }
            None if input.is_empty() => InputStep::NeedInput,
            None => InputStep::Discard(input.len()),
        }
    }

    /// Feed one complete reply read from the MX (only when a reply is owed, else `Err`). On
    /// `Ok` the caller sends `reply.raw()` to the MTA unchanged. On `Err` the machine is dead
    /// (the MX is out of sync): do not relay the reply, close the MX connection; the owed reply
    /// will come from [`Relay::poll_input`] as a synthetic 421.
    pub fn on_mx_reply(&mut self, reply: &Reply) -> Result<ReplyEffect, RelayError> {
        if self.dead.is_some() {
            return Err(RelayError::NotAwaiting);
        }
        let Some(&owed) = self.owed.front() else {
            self.die("MX sent an unsolicited reply", "");
            return Err(RelayError::NotAwaiting);
        };
        let code = reply.code();
        if code == 421 {
            self.owed.pop_front();
            self.die("MX closed the session (421)", "");
            return Ok(ReplyEffect::ServiceClosing);
        }
        let unexpected = match owed {
            Owed::Data => code != 354 && code / 100 == 3,
            Owed::Auth => code != 334 && code / 100 == 3,
            Owed::MustFail => code < 400,
            _ => code / 100 == 3,
        };
        let needs_command_mode = code == 354 || (code == 334 && owed == Owed::Auth);
        if unexpected
            || !(200..600).contains(&code)
            || (needs_command_mode && self.mode != Mode::Command)
        {
            self.die("MX protocol violation", "");
            return Err(RelayError::UnexpectedReply {
                code,
                command: owed.name(),
            });
        }
        self.owed.pop_front();
        let positive = (200..300).contains(&code);
        match owed {
            Owed::Hello | Owed::Rset if positive => self.in_transaction = false,
            Owed::Mail if positive => self.in_transaction = true,
            Owed::Data if code == 354 => self.mode = Mode::Body(BodyState::START),
            Owed::Auth if code == 334 => self.mode = Mode::AuthResponse,
            Owed::DataEnd | Owed::Bdat { last: true } => {
                self.in_transaction = false;
                if positive {
                    self.accepted += 1;
                }
            }
            _ => {}
        }
        Ok(ReplyEffect::Continue)
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
        if !self.owed.is_empty() {
            return PoolState::Unusable("replies from the MX are outstanding");
        }
        match self.mode {
            Mode::Command => {}
            Mode::AuthResponse => return PoolState::Unusable("inside an AUTH exchange"),
            Mode::Body(_) => return PoolState::Unusable("inside a message body"),
            Mode::Chunk { .. } => return PoolState::Unusable("inside a BDAT chunk"),
            Mode::DiscardLine { .. } | Mode::DiscardBody { .. } | Mode::DiscardChunk { .. } => {
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
}
