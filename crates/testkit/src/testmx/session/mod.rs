//! The SMTP server state machine of the test MX, sans-I/O.
//!
//! [`Session::handle`] takes received bytes and returns [`Action`]s (replies to write, facts to
//! record, a TLS switch, a close); the connection loop in `server` only moves bytes.

mod verbs;

use super::body::{Body, DotDecoder};
use super::faults::{is_positive, reply_text, Faults};
use super::TestMxConfig;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// The longest command line accepted, CRLF excluded.
pub(crate) const MAX_LINE: usize = 4096;
/// The SIZE advertised in EHLO.
pub(crate) const ADVERTISED_SIZE: u64 = 52_428_800;
/// The most recipients accepted per message.
pub(crate) const MAX_RECIPIENTS: usize = 1000;

/// What the connection loop must do, in order.
#[derive(Debug)]
pub(crate) enum Action {
    /// Write this reply (one write), after waiting `delay`.
    Reply { text: String, delay: Duration },
    /// A command line was received (not emitted in lean mode).
    Command(String),
    /// EHLO (`helo: false`) or HELO with its argument.
    Hello { name: String, helo: bool },
    /// AUTH succeeded.
    Authenticated,
    /// A message was accepted; its reply follows.
    Accepted(Accepted),
    /// QUIT was received; its reply and a close follow.
    Quit,
    /// The 220 to STARTTLS has been queued before this: switch to TLS now.
    StartTls,
    /// Close the connection (after the replies before this).
    Close,
}

/// An accepted message, as the session knows it.
#[derive(Debug)]
pub(crate) struct Accepted {
    pub mail_from: String,
    pub rcpt_to: Vec<String>,
    pub body: Body,
    pub via_bdat: bool,
    pub tls: bool,
}

#[derive(Debug)]
enum Mode {
    /// After a negative banner: only QUIT works.
    NoService,
    Command,
    /// Discarding an over-long line; then reply 500 and return to the saved mode.
    DiscardLine {
        no_service: bool,
    },
    Data(DotDecoder),
    /// Reading a BDAT chunk; `error` is the reply to give instead of accepting it.
    Chunk {
        remaining: u64,
        last: bool,
        error: Option<String>,
    },
    AuthPlain,
    AuthLoginUser,
    AuthLoginPass,
    /// Swallow everything, answer nothing.
    Silent,
    /// A StartTls or Close action is pending; nothing more is processed.
    Stopped,
}

#[derive(Debug, Default)]
struct Transaction {
    mail_from: Option<String>,
    rcpt_to: Vec<String>,
    /// BDAT chunks so far (`Some` once the first chunk of this transaction arrived).
    chunks: Option<Body>,
}

/// One SMTP conversation.
pub(crate) struct Session {
    config: Arc<TestMxConfig>,
    queue_ids: Arc<AtomicU64>,
    mode: Mode,
    tls: bool,
    greeted: bool,
    authenticated: bool,
    txn: Transaction,
}

impl Session {
    /// A session; `tls` is true for implicit TLS. `queue_ids` numbers accepted messages.
    pub(crate) fn new(config: Arc<TestMxConfig>, queue_ids: Arc<AtomicU64>, tls: bool) -> Self {
        Session {
            config,
            queue_ids,
            mode: Mode::Command,
            tls,
            greeted: false,
            authenticated: false,
            txn: Transaction::default(),
        }
    }

    fn faults(&self) -> &Faults {
        &self.config.faults
    }

    fn keep(&self) -> bool {
        !self.config.lean
    }

    fn reply(&self, out: &mut Vec<Action>, text: &str) {
        out.push(Action::Reply {
            text: reply_text(text),
            delay: self.faults().slow_replies.unwrap_or_default(),
        });
    }

    fn close(&mut self, out: &mut Vec<Action>) {
        out.push(Action::Close);
        self.mode = Mode::Stopped;
    }

    /// The `stray_reply_after` fault: a reply nobody asked for, in a write of its own.
    fn stray_reply(&self, out: &mut Vec<Action>) {
        self.reply(out, "250 2.0.0 stray reply (test fault)");
    }

    fn reply_421(&mut self, out: &mut Vec<Action>) {
        let text = format!(
            "421 4.3.2 {} closing connection (test fault)",
            self.config.hostname
        );
        self.reply(out, &text);
        self.close(out);
    }

    /// The banner.
    pub(crate) fn greeting(&mut self, out: &mut Vec<Action>) {
        match self.faults().banner.clone() {
            Some(b) => {
                if !is_positive(&b) {
                    self.mode = Mode::NoService;
                }
                self.reply(out, &b);
            }
            None => {
                let text = format!(
                    "220 {} ESMTP greenarrow_proxy test MX",
                    self.config.hostname
                );
                self.reply(out, &text);
            }
        }
    }

    /// The handshake after STARTTLS succeeded: forget everything learnt before (RFC 3207).
    pub(crate) fn tls_established(&mut self) {
        self.tls = true;
        self.greeted = false;
        self.authenticated = false;
        self.txn = Transaction::default();
        self.mode = Mode::Command;
    }

    /// Whether the peer is in the middle of sending a message body.
    pub(crate) fn in_body(&self) -> bool {
        matches!(self.mode, Mode::Data(_) | Mode::Chunk { .. }) || self.txn.chunks.is_some()
    }

    /// Whether replies are held now (the `hold_replies_in_transaction` fault and an open
    /// transaction or a chunk being read).
    pub(crate) fn holds_replies(&self) -> bool {
        self.faults().hold_replies_in_transaction
            && (self.txn.mail_from.is_some() || matches!(self.mode, Mode::Chunk { .. }))
    }

    /// Consume received bytes, pushing actions to `out`. Returns how many bytes of `input` were
    /// consumed; the rest must be offered again with more input appended. Stops early after a
    /// `StartTls` or `Close` action.
    pub(crate) fn handle(&mut self, input: &[u8], out: &mut Vec<Action>) -> usize {
        let mut pos = 0;
        loop {
            let rest = input.get(pos..).unwrap_or_default();
            if rest.is_empty() || matches!(self.mode, Mode::Stopped) {
                return pos;
            }
            match &mut self.mode {
                Mode::Silent => return input.len(),
                Mode::Stopped => return pos,
                Mode::DiscardLine { no_service } => match memchr(b'\n', rest) {
                    None => return input.len(),
                    Some(i) => {
                        pos += i + 1;
                        self.mode = if *no_service {
                            Mode::NoService
                        } else {
                            Mode::Command
                        };
                        self.reply(out, "500 5.5.2 line too long");
                    }
                },
                Mode::Data(decoder) => {
                    let room =
                        room_left(self.config.faults.close_mid_data_after, decoder.received());
                    let slice = rest.get(..room.min(rest.len())).unwrap_or(rest);
                    match decoder.feed(slice) {
                        Some(n) => {
                            pos += n;
                            let decoder = std::mem::replace(&mut self.mode, Mode::Command);
                            if let Mode::Data(d) = decoder {
                                self.data_end(d.finish(), false, out);
                            }
                        }
                        None => {
                            pos += slice.len();
                            if room <= slice.len() {
                                self.close(out);
                            }
                        }
                    }
                }
                Mode::Chunk {
                    remaining,
                    last,
                    error,
                } => {
                    let (remaining, last, error) = (*remaining, *last, error.take());
                    let want = usize::try_from(remaining).unwrap_or(usize::MAX);
                    let want = want.min(rest.len());
                    let room = match error {
                        Some(_) => usize::MAX,
                        None => room_left(
                            self.config.faults.close_mid_data_after,
                            self.txn.chunks.as_ref().map_or(0, |c| c.size),
                        ),
                    };
                    let n = want.min(room);
                    let bytes = rest.get(..n).unwrap_or(rest);
                    pos += bytes.len();
                    let left = remaining.saturating_sub(bytes.len() as u64);
                    if error.is_none() {
                        self.append_chunk(bytes);
                    }
                    if error.is_none() && room <= n {
                        self.close(out);
                    } else if left == 0 {
                        self.mode = Mode::Command;
                        self.chunk_done(last, error, out);
                    } else {
                        self.mode = Mode::Chunk {
                            remaining: left,
                            last,
                            error,
                        };
                    }
                }
                Mode::Command
                | Mode::NoService
                | Mode::AuthPlain
                | Mode::AuthLoginUser
                | Mode::AuthLoginPass => {
                    let window = rest.get(..MAX_LINE + 2).unwrap_or(rest);
                    match memchr(b'\n', window) {
                        Some(i) => {
                            pos += i + 1;
                            let raw = rest.get(..i).unwrap_or_default();
                            let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
                            let line = String::from_utf8_lossy(raw).into_owned();
                            self.line(line, out);
                        }
                        None if window.len() > MAX_LINE + 1 => {
                            // Too long: skip to its end (possibly already here), then 500.
                            let no_service = matches!(self.mode, Mode::NoService);
                            self.mode = Mode::DiscardLine { no_service };
                            let window = rest.get(MAX_LINE..).unwrap_or_default();
                            pos += MAX_LINE.min(rest.len());
                            if memchr(b'\n', window).is_none() {
                                return input.len();
                            }
                        }
                        None => return pos,
                    }
                }
            }
        }
    }

    fn append_chunk(&mut self, bytes: &[u8]) {
        let keep = self.keep();
        let limit = self.config.max_message_size;
        let chunks = self.txn.chunks.get_or_insert_with(Body::default);
        chunks.size += bytes.len();
        if chunks.size > limit {
            chunks.oversized = true;
            chunks.raw = Vec::new();
            chunks.content = Vec::new();
        } else if keep {
            chunks.raw.extend_from_slice(bytes);
        }
    }

    fn chunk_done(&mut self, last: bool, error: Option<String>, out: &mut Vec<Action>) {
        if let Some(e) = error {
            self.reply(out, &e);
            return;
        }
        if last {
            let mut body = self.txn.chunks.take().unwrap_or_default();
            body.content = body.raw.clone();
            self.data_end(body, true, out);
        } else {
            let n = self.txn.chunks.as_ref().map_or(0, |c| c.size);
            self.reply(out, &format!("250 2.0.0 {n} octets received"));
        }
    }

    fn data_end(&mut self, body: Body, via_bdat: bool, out: &mut Vec<Action>) {
        let txn = std::mem::take(&mut self.txn);
        if body.oversized {
            self.reply(out, "552 5.3.4 message too big");
            return;
        }
        if Faults::hits(&self.faults().silent_at, "DATA-END") {
            self.mode = Mode::Silent;
            return;
        }
        if Faults::hits(&self.faults().reply_421_at, "DATA-END") {
            self.reply_421(out);
            return;
        }
        let text = self.faults().data_end_reply.clone().unwrap_or_default();
        let accepted = text.is_empty() || is_positive(&text);
        let text = if accepted {
            let id = self.queue_ids.fetch_add(1, Ordering::Relaxed) + 1;
            out.push(Action::Accepted(Accepted {
                mail_from: txn.mail_from.unwrap_or_default(),
                rcpt_to: txn.rcpt_to,
                body,
                via_bdat,
                tls: self.tls,
            }));
            if text.is_empty() {
                format!("250 2.0.0 queued as {id}")
            } else {
                text
            }
        } else {
            text
        };
        let delay = self.faults().slow_replies.unwrap_or_default()
            + self.faults().data_end_delay.unwrap_or_default();
        out.push(Action::Reply {
            text: reply_text(&text),
            delay,
        });
        if Faults::hits(&self.faults().stray_reply_after, "DATA-END") {
            self.stray_reply(out);
        }
    }

    /// Use `config` from now on (the faults a [`super::TestMx::set_faults`] put in force).
    pub(crate) fn set_config(&mut self, config: Arc<TestMxConfig>) {
        self.config = config;
    }
}

/// How many more body bytes may arrive before `close_mid_data_after` strikes.
fn room_left(close_after: Option<usize>, received: usize) -> usize {
    match close_after {
        Some(n) => n.saturating_sub(received),
        None => usize::MAX,
    }
}

fn memchr(needle: u8, haystack: &[u8]) -> Option<usize> {
    haystack.iter().position(|&b| b == needle)
}
