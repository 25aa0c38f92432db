//! The MX side of the machine: judging the bytes the MX sends before any of them reaches the
//! MTA.
//!
//! In lockstep the MX may send exactly one reply per command it was sent, in order, and nothing
//! else. Two rules make a misbehaving MX unable to shift a reply onto another command:
//!
//! - no byte may arrive when no reply is owed;
//! - nothing may follow the last reply owed: when the reply just read answers the last command
//!   sent (always the case after `354` and `334`, which wait for the MTA), any byte after it is
//!   an answer nobody asked for, so that reply itself is suspect and is not relayed. The I/O
//!   loop is asked to look at the socket without waiting before that last reply is accepted
//!   ([`MxStep::CheckSilence`]), so a stray reply already in the socket buffer is caught too.
//!
//! A violation kills the machine before the suspect reply is accepted: the MTA gets the
//! proxy's `421 4.4.2` for it and for everything else owed, and the machine stays in command
//! mode (a refused `354` does not start a body).

use super::body::BodyState;
use super::types::{MxStep, RelayError, ReplyEffect};
use super::{Mode, Owed, Relay};
use crate::escape::printable;
use crate::smtp::reply::ReplyLimits;

/// How much of unexpected MX bytes is kept for the log.
const SHOWN: usize = 60;

impl Relay {
    /// Decide what to do with the MX's unconsumed input `input` (see [`MxStep`]). `quiet` is
    /// true when the caller has just looked, without waiting, and the MX had sent nothing
    /// beyond `input`. Call it whenever bytes arrive from the MX, and with an empty `input`
    /// as well.
    ///
    /// Contract: between calls the caller only appends to `input`, except to consume what an
    /// [`MxStep::Relay`] says (a long reply arriving in many reads is then scanned once).
    pub fn poll_mx(&mut self, input: &[u8], limits: &ReplyLimits, quiet: bool) -> MxStep {
        if self.dead.is_some() {
            return MxStep::Idle;
        }
        let Some(&owed) = self.owed.front() else {
            if input.is_empty() {
                return MxStep::Idle;
            }
            self.die("MX sent data when no reply was owed", "");
            return MxStep::Violation(RelayError::Unsolicited {
                start: printable(input, SHOWN),
            });
        };
        let (code, len) = match self.scan.scan(input, limits) {
            Ok(Some(found)) => found,
            Ok(None) => return MxStep::NeedMore,
            Err(e) => {
                self.die("MX sent a malformed reply", "");
                return MxStep::Violation(RelayError::BadReply(e));
            }
        };
        if self.owed.len() == 1 {
            if let Some(after) = input.get(len..).filter(|a| !a.is_empty()) {
                self.die("MX sent more replies than commands", "");
                return MxStep::Violation(RelayError::TrailingData {
                    command: owed.name(),
                    start: printable(after, SHOWN),
                });
            }
            if !quiet {
                return MxStep::CheckSilence;
            }
        }
        match self.accept(owed, code) {
            Ok(effect) => MxStep::Relay {
                consume: len,
                effect,
            },
            Err(e) => MxStep::Violation(e),
        }
    }

    /// Judge the code of the reply owed to `owed` (the front of the queue) and, when it fits,
    /// take it off the queue and apply it.
    fn accept(&mut self, owed: Owed, code: u16) -> Result<ReplyEffect, RelayError> {
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
            Owed::DataEnd => {
                self.in_transaction = false;
                if positive {
                    self.accepted += 1;
                }
            }
            Owed::Bdat { last: true } if positive => {
                self.in_transaction = false;
                self.accepted += 1;
            }
            // RFC 3030: after a BDAT refused (4xx/5xx) the MX's state is indeterminate and
            // a RSET must clear it, LAST or not: the connection is pooled only after one.
            Owed::Bdat { .. } if !positive => self.in_transaction = true,
            _ => {}
        }
        Ok(ReplyEffect::Continue)
    }
}
