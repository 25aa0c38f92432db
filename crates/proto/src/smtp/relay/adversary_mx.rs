//! The MX of the adversarial property test: a small SMTP server that tags its honest replies
//! (see the `adversary` module), with twists that make it hostile.

use proptest::prelude::*;

/// What the MX does with one reply it owes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Twist {
    Honest,
    /// The honest reply as a multi-line reply.
    MultiLine,
    /// The honest reply; once every command received is answered, an untagged extra one.
    Extra,
    /// The honest reply, then at once an untagged extra one (among later answers).
    ExtraMid,
    /// Garbage instead of the reply.
    Garbage,
    /// No reply, now or ever after.
    Silent,
}

pub(super) fn twist() -> impl Strategy<Value = Twist> {
    prop_oneof![
        8 => Just(Twist::Honest),
        3 => Just(Twist::MultiLine),
        1 => Just(Twist::Extra),
        1 => Just(Twist::ExtraMid),
        1 => Just(Twist::Garbage),
        1 => Just(Twist::Silent),
    ]
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum MxMode {
    Command,
    Body,
    Chunk(usize),
    AuthResponse,
}

/// A small SMTP server: the honest MX, with its twists.
pub(super) struct Mx {
    input: Vec<u8>,
    mode: MxMode,
    /// Replies earned so far (the honest tag of the next one is this + 1).
    units: usize,
    /// Sent, not yet read by the proxy.
    pub(super) wire: Vec<u8>,
    /// Replies of the commands being received now, and what comes after them all.
    outbox: Vec<String>,
    tail: Vec<String>,
    twists: Vec<Twist>,
    /// DATA gets 354 and AUTH gets 334, or a refusal, by these (cyclic).
    accept: Vec<bool>,
    silent: bool,
    /// Replies sent so far.
    replies: usize,
    /// Some answer was not the honest one (another text, an extra, none, garbage).
    pub(super) lied: bool,
    /// After some batch, the MX had not sent exactly one reply per command it had received:
    /// it is out of step (an extra and a missing reply in one batch even out: that is only
    /// answering with another text).
    pub(super) deviated: bool,
    /// An extra reply was slipped in among answers.
    pub(super) shifted: bool,
    pub(super) saw_bdat: bool,
}

impl Mx {
    /// An MX answering with `twists` (cyclic, by reply number) and accepting DATA and AUTH
    /// by `accept` (cyclic).
    pub(super) fn new(twists: Vec<Twist>, accept: Vec<bool>) -> Mx {
        Mx {
            input: Vec::new(),
            mode: MxMode::Command,
            units: 0,
            wire: Vec::new(),
            outbox: Vec::new(),
            tail: Vec::new(),
            twists,
            accept,
            silent: false,
            replies: 0,
            lied: false,
            deviated: false,
            shifted: false,
            saw_bdat: false,
        }
    }

    /// Take in bytes from the proxy; answer every command complete in them, then send the
    /// answers at once, each marked with how many commands had been received.
    pub(super) fn receive(&mut self, bytes: &[u8]) {
        self.take(bytes);
        let received = self.units;
        if self.replies != received {
            self.deviated = true;
        }
        let replies: Vec<String> = self.outbox.drain(..).chain(self.tail.drain(..)).collect();
        for r in replies {
            self.wire
                .extend_from_slice(r.replace("\r\n", &format!(" r={received}\r\n")).as_bytes());
        }
    }

    fn take(&mut self, bytes: &[u8]) {
        self.input.extend_from_slice(bytes);
        loop {
            match self.mode {
                MxMode::Chunk(n) => {
                    if self.input.len() < n {
                        return;
                    }
                    self.input.drain(..n);
                    self.mode = MxMode::Command;
                    self.answer(250, false);
                }
                _ => {
                    let Some(lf) = self.input.iter().position(|&b| b == b'\n') else {
                        return;
                    };
                    let line: Vec<u8> = self.input.drain(..=lf).collect();
                    self.line(&line);
                }
            }
        }
    }

    fn line(&mut self, line: &[u8]) {
        let text = String::from_utf8_lossy(line).to_ascii_uppercase();
        match self.mode {
            MxMode::Body => {
                if line == b".\r\n" {
                    self.mode = MxMode::Command;
                    self.answer(250, false);
                }
            }
            MxMode::AuthResponse => {
                self.mode = MxMode::Command;
                self.answer(235, false);
            }
            _ if text.starts_with("DATA") => {
                let go = self.choice();
                if go {
                    self.mode = MxMode::Body;
                }
                self.answer(if go { 354 } else { 554 }, go);
            }
            _ if text.starts_with("AUTH") => {
                let go = self.choice();
                if go {
                    self.mode = MxMode::AuthResponse;
                }
                self.answer(if go { 334 } else { 535 }, go);
            }
            _ if text.starts_with("BDAT") => {
                self.saw_bdat = true;
                let n = text
                    .split_ascii_whitespace()
                    .nth(1)
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(0);
                self.mode = MxMode::Chunk(n);
            }
            _ => self.answer(250, false),
        }
    }

    fn choice(&mut self) -> bool {
        self.accept.get(self.units % self.accept.len().max(1)) != Some(&false)
    }

    /// Answer the next unit with `code`, tagged, as the twist for it says.
    fn answer(&mut self, code: u16, intermediate: bool) {
        self.units += 1;
        let n = self.units;
        let twist = self.twists.get(n % self.twists.len().max(1)).copied();
        if self.silent {
            return;
        }
        if !matches!(twist, None | Some(Twist::Honest | Twist::MultiLine)) {
            self.lied = true;
        }
        let honest = format!("{code} <{n}>\r\n");
        match twist.unwrap_or(Twist::Honest) {
            Twist::Honest => self.send(&honest),
            Twist::MultiLine if !intermediate => {
                // (Only the last line carries the r= mark.)
                self.send(&format!("{code}-first line of <{n}>\n{code} <{n}>\r\n"))
            }
            Twist::MultiLine => self.send(&honest),
            Twist::Extra => {
                self.send(&honest);
                self.tail.push("250 2.0.0 extra\r\n".into());
                self.replies += 1;
            }
            Twist::ExtraMid => {
                self.shifted = true;
                self.send(&honest);
                self.send("250 2.0.0 extra\r\n");
            }
            Twist::Garbage => {
                // Not a reply.
                self.outbox.push("hello there\r\n".into());
            }
            Twist::Silent => self.silent = true,
        }
    }

    fn send(&mut self, s: &str) {
        self.replies += 1;
        self.outbox.push(s.to_string());
    }
}
