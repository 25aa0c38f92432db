//! The MTA side of the machine: reading command lines, bodies and chunks, and deciding what
//! is forwarded to the MX, answered by the proxy, or waits for a reply.

use super::body::{self, BodyState, Scan};
use super::types::{InputStep, BDAT_REFUSED, LINE_TOO_LONG, STARTTLS_REFUSED};
use super::{Mode, Owed, Relay};
use crate::smtp::command::{classify, looks_like_data_or_bdat, looks_like_mail, Verb};
use crate::smtp::strip_line_end;

pub(super) enum Line {
    Complete(usize),
    Incomplete,
    TooLong,
}

/// Find the command line at the front of `input` (bounded by `max` bytes including the LF).
pub(super) fn find_line(input: &[u8], max: usize) -> Line {
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

pub(super) fn clamp_len(remaining: u64, available: usize) -> usize {
    usize::try_from(remaining).map_or(available, |r| r.min(available))
}

impl Relay {
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
                            return flush(pos, self.wait_step(rest));
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

    /// The step when the command line at the front of `rest` is incomplete: more input when
    /// nothing is owed, or when the MTA is in the middle of a line (it owes the rest of the
    /// line whatever the replies say: a pipelined flight read in pieces reaches the MX whole
    /// before its replies are awaited); the replies owed when the MTA has sent whole lines.
    fn wait_step(&self, rest: &[u8]) -> InputStep {
        if self.owed.is_empty() || !rest.is_empty() {
            InputStep::NeedInput
        } else {
            InputStep::AwaitMx
        }
    }

    /// In `DiscardLine` mode: discard through the LF, then answer 500.
    pub(super) fn discard_line(&mut self, input: &[u8]) -> InputStep {
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
}
