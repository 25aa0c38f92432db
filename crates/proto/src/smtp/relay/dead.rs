//! Dead mode: the MX connection is gone (lost, closed with 421, out of sync, or dropped
//! because of an unsafe body). The machine now answers the MTA itself: every reply still owed
//! becomes a synthetic 421, a body or chunk still arriving is discarded and then answered (554
//! for an unsafe body, else 421), each later command gets a 421, and QUIT still ends the
//! session normally.

use super::body::{self, Scan};
use super::input::{clamp_len, find_line, Line};
use super::types::{InputStep, SMUGGLING_REJECTED};
use super::{Dead, Mode, Relay};
use crate::escape::printable;
use crate::smtp::command::{classify, Verb};

impl Relay {
    /// `poll_input` once the MX connection is gone.
    pub(super) fn poll_dead(&mut self, input: &[u8]) -> InputStep {
        if self.owed.pop_front().is_some() {
            return InputStep::Reply {
                consume: 0,
                reply: self.lost_reply(),
            };
        }
        match self.mode {
            Mode::DiscardBody { state, smuggled } => {
                match body::scan(state, input, false) {
                    Scan::End(n) => {
                        self.mode = Mode::Command;
                        let reply = if smuggled {
                            SMUGGLING_REJECTED.to_vec()
                        } else {
                            self.lost_reply()
                        };
                        InputStep::Reply { consume: n, reply }
                    }
                    Scan::More(state) => {
                        self.mode = Mode::DiscardBody { state, smuggled };
                        if input.is_empty() {
                            InputStep::NeedInput
                        } else {
                            InputStep::Discard(input.len())
                        }
                    }
                    // Lenient scans never report Unsafe; discard what we have regardless.
                    Scan::Unsafe { .. } if input.is_empty() => InputStep::NeedInput,
                    Scan::Unsafe { .. } => InputStep::Discard(input.len()),
                }
            }
            Mode::DiscardChunk { remaining } => {
                if remaining == 0 {
                    self.mode = Mode::Command;
                    return InputStep::Reply {
                        consume: 0,
                        reply: self.lost_reply(),
                    };
                }
                if input.is_empty() {
                    return InputStep::NeedInput;
                }
                let n = clamp_len(remaining, input.len());
                let remaining = remaining.saturating_sub(n as u64);
                if remaining == 0 {
                    self.mode = Mode::Command;
                    InputStep::Reply {
                        consume: n,
                        reply: self.lost_reply(),
                    }
                } else {
                    self.mode = Mode::DiscardChunk { remaining };
                    InputStep::Discard(n)
                }
            }
            Mode::DiscardLine => self.discard_line(input),
            // `die` converts these; kept total for safety.
            Mode::Body(state) => {
                self.mode = Mode::DiscardBody {
                    state,
                    smuggled: false,
                };
                self.poll_dead(input)
            }
            Mode::Chunk { remaining, .. } | Mode::RefuseChunk { remaining } => {
                self.mode = Mode::DiscardChunk { remaining };
                self.poll_dead(input)
            }
            Mode::Command | Mode::AuthResponse => {
                self.mode = Mode::Command;
                let len = match find_line(input, self.limits.max_command_line) {
                    Line::Complete(len) => len,
                    Line::Incomplete => return InputStep::NeedInput,
                    Line::TooLong => {
                        self.mode = Mode::DiscardLine;
                        return self.discard_line(input);
                    }
                };
                match classify(input.get(..len).unwrap_or(input)) {
                    Ok(Verb::Quit) => InputStep::Quit(len),
                    Ok(Verb::Bdat { size, .. }) if size > 0 => {
                        // The MTA sends the chunk without waiting: swallow it, then answer.
                        self.mode = Mode::DiscardChunk { remaining: size };
                        InputStep::Discard(len)
                    }
                    _ => InputStep::Reply {
                        consume: len,
                        reply: self.lost_reply(),
                    },
                }
            }
        }
    }

    pub(super) fn lost_reply(&self) -> Vec<u8> {
        match &self.dead {
            Some(dead) => dead.reply.clone(),
            None => b"421 4.4.2 connection to the MX lost\r\n".to_vec(),
        }
    }

    /// Enter dead mode (idempotent: the first reason stays; a non-empty `why` updates the text
    /// of the synthetic 421).
    pub(super) fn die(&mut self, reason: &'static str, why: &str) {
        let text = if why.is_empty() { reason } else { why };
        let reply = format!("421 4.4.2 {}\r\n", printable(text.as_bytes(), 200)).into_bytes();
        match &mut self.dead {
            Some(dead) => {
                if !why.is_empty() {
                    dead.reply = reply;
                }
                return;
            }
            None => self.dead = Some(Dead { reason, reply }),
        }
        self.mode = match self.mode {
            Mode::Body(state) => Mode::DiscardBody {
                state,
                smuggled: false,
            },
            Mode::Chunk { remaining, .. } | Mode::RefuseChunk { remaining } => {
                Mode::DiscardChunk { remaining }
            }
            Mode::AuthResponse => Mode::Command,
            other => other,
        };
    }
}
