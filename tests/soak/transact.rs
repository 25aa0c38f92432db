//! The MTA side of one SMTP session's transactions: the messages (each with its id), the ways
//! of sending them, and the [`Ledger`] of what each message was told.
//!
//! How a message's outcome is judged from the MTA's side:
//! - **accepted**: a 2xx reply to its end of data (the final dot or `BDAT ... LAST`);
//! - **failed**: a negative reply, or the session ended before its end of data was sent;
//!   with BDAT (whose end of data goes out pipelined with its envelope), a negative reply of
//!   the MX's own to any step of its transaction;
//! - **ambiguous**: its end of data was sent and then no reply came (connection lost, timeout)
//!   or the reply was the proxy's own `421` for an MX connection it lost or found out of step —
//!   the window SMTP cannot close: the MX may or may not have taken the message. A negative
//!   reply the MX itself gave (the soak's MXes mark theirs `(test fault)`) is a failure. So
//!   is a message with a reply nobody asked for among its replies (the MX's stray reply, a
//!   `220`), or after one in its pipelined batch: replies out of step say nothing sure.

use crate::rng::Rng;
use greenarrow_proxy_proto::smtp::dot_stuff;
use greenarrow_proxy_testkit::mta::kumo::Smtp;
use greenarrow_proxy_testkit::raw::Raw;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::io::{self, Write};
use std::net::IpAddr;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

/// Bound of every MTA-side read and write (the daemon's own MX timeouts are 2-3 s).
pub const IO: Duration = Duration::from_secs(15);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Accepted,
    Failed,
    Ambiguous,
}

/// One message as sent.
#[derive(Clone, Debug)]
pub struct Sent {
    pub mta: usize,
    pub mx: usize,
    pub source: IpAddr,
    pub ehlo: String,
    pub from: String,
    pub rcpts: Vec<String>,
    pub len: usize,
    pub hash: u64,
    pub outcome: Outcome,
    /// The MTA was handed a reply nobody asked for (the MX's stray reply, a `220` in a
    /// transaction) by the native protocol or an SMTP-aware front-end: the MX was out of step
    /// and the proxy could not tell (a stray reply among the replies of a pipelined batch
    /// looks like the next one; it shows only at the end, as one reply too many). The message
    /// is ambiguous; these are counted for the record, not judged.
    pub relayed_out_of_step: bool,
    /// How it went: the way in (`native`, a front-end), then the replies or the error.
    pub how: String,
}

/// Every message sent, by id.
#[derive(Default)]
pub struct Ledger {
    pub next: AtomicU64,
    pub sent: Mutex<HashMap<u64, Sent>>,
    /// Sessions refused before any message (proxy or front-end refusals): counted only.
    pub refused: AtomicU64,
}

/// FNV-1a, 64 bits: enough to tell two message bodies apart.
pub fn hash(b: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &x in b {
        h ^= x as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// The id a message carries in its first header line.
pub fn id_of(content: &[u8]) -> Option<u64> {
    let rest = content.strip_prefix(b"X-Soak-Id: ")?;
    let end = rest.iter().position(|&b| b == b'\r')?;
    std::str::from_utf8(&rest[..end]).ok()?.parse().ok()
}

/// A message to send.
pub struct Msg {
    id: u64,
    from: String,
    rcpts: Vec<String>,
    body: Vec<u8>,
}

/// A random message: its id first, then lines of random length, some starting with a dot.
pub fn message(rng: &mut Rng, id: u64, mta: usize) -> Msg {
    let mut body =
        format!("X-Soak-Id: {id}\r\nFrom: <mta{mta}@soak.test>\r\nSubject: soak {id}\r\n\r\n")
            .into_bytes();
    let lines = match rng.below(100) {
        0..=59 => rng.below(10),
        60..=94 => 10 + rng.below(200),
        _ => 200 + rng.below(3000),
    };
    for _ in 0..lines {
        if rng.below(8) == 0 {
            body.push(b'.');
        }
        let n = rng.below(120) as usize;
        body.extend((0..n).map(|i| b'a' + ((id as usize + i) % 26) as u8));
        body.extend_from_slice(b"\r\n");
    }
    let rcpts = (0..1 + rng.below(3))
        .map(|j| format!("r{j}-{id}@soak.test"))
        .collect();
    Msg {
        id,
        from: format!("mta{mta}-{id}@soak.test"),
        rcpts,
        body,
    }
}

/// Both kinds of MTA connection: write bytes, read one whole reply.
pub trait Wire {
    fn send(&mut self, b: &[u8]) -> io::Result<()>;
    fn reply(&mut self) -> io::Result<String>;
}

impl Wire for Raw {
    fn send(&mut self, b: &[u8]) -> io::Result<()> {
        self.s.write_all(b)?;
        self.s.flush()
    }
    fn reply(&mut self) -> io::Result<String> {
        self.try_reply()
            .ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "closed"))
    }
}

impl Wire for Smtp {
    fn send(&mut self, b: &[u8]) -> io::Result<()> {
        self.send_raw(b)
    }
    fn reply(&mut self) -> io::Result<String> {
        let r = Smtp::reply(self);
        // The transcript is for failure messages; a soak session would grow it unbounded.
        self.transcript.clear();
        r
    }
}

/// How a batch of messages is sent.
#[derive(Clone, Copy, Debug)]
pub enum How {
    /// MAIL, RCPT..., DATA pipelined; then the body; one message at a time.
    Data,
    /// MAIL, RCPT..., BDAT (one or two chunks) in one write; one message at a time.
    Bdat,
    /// Every message's MAIL, RCPT..., BDAT LAST in one write, then all the replies.
    Batch,
}

/// Who sends: the MTA's identity for this session.
pub struct Who<'a> {
    /// The way in: `native` or the front-end.
    pub way: &'static str,
    pub mta: usize,
    pub mx: usize,
    pub source: IpAddr,
    pub ehlo: String,
    pub ledger: &'a Ledger,
}

impl Who<'_> {
    fn record(&self, m: &Msg, outcome: Outcome, how: String) {
        let out_of_step = out_of_step(&how);
        // Replies out of step say nothing sure about the message.
        let outcome = if out_of_step {
            Outcome::Ambiguous
        } else {
            outcome
        };
        self.ledger.sent.lock().insert(
            m.id,
            Sent {
                mta: self.mta,
                mx: self.mx,
                source: self.source,
                ehlo: self.ehlo.clone(),
                from: m.from.clone(),
                rcpts: m.rcpts.clone(),
                len: m.body.len(),
                hash: hash(&m.body),
                outcome,
                relayed_out_of_step: out_of_step && !self.way.ends_with("passthrough"),
                how: format!("{}: {how}", self.way),
            },
        );
    }
}

/// Whether `replies` (one reply, or a list's debug text) hold a reply nobody asked for: the
/// MX's stray one, or a `220` (which no transaction command gets).
fn out_of_step(replies: &str) -> bool {
    replies.contains("stray reply (test fault)")
        || replies.starts_with("220 ")
        || replies.contains("\"220 ")
}

/// The outcome a reply to an end of data gives.
fn judge_final(reply: &str) -> Outcome {
    if reply.starts_with('2') {
        Outcome::Accepted
    } else if reply.contains("(test fault)") {
        Outcome::Failed
    } else {
        // The proxy's own 421 (MX lost or out of step after the end of data was relayed).
        Outcome::Ambiguous
    }
}

fn envelope(m: &Msg) -> Vec<u8> {
    let mut v = format!("MAIL FROM:<{}>\r\n", m.from).into_bytes();
    for r in &m.rcpts {
        v.extend_from_slice(format!("RCPT TO:<{r}>\r\n").as_bytes());
    }
    v
}

/// Send `msgs` as `how`; every message sent is recorded. Returns whether the session may go
/// on (every message accepted, the connection in step).
pub fn transact(w: &mut dyn Wire, who: &Who, msgs: &[Msg], how: How, rng: &mut Rng) -> bool {
    match how {
        How::Data => msgs.iter().all(|m| data(w, who, m)),
        How::Bdat => msgs
            .iter()
            .all(|m| bdat(w, who, std::slice::from_ref(m), rng)),
        How::Batch => bdat(w, who, msgs, rng),
    }
}

fn data(w: &mut dyn Wire, who: &Who, m: &Msg) -> bool {
    let mut cmds = envelope(m);
    cmds.extend_from_slice(b"DATA\r\n");
    if let Err(e) = w.send(&cmds) {
        who.record(m, Outcome::Failed, format!("envelope write: {e}"));
        return false;
    }
    let mut replies = Vec::new();
    for _ in 0..m.rcpts.len() + 2 {
        match w.reply() {
            Ok(r) => replies.push(r),
            Err(e) => {
                who.record(
                    m,
                    Outcome::Failed,
                    format!("envelope: {e} after {replies:?}"),
                );
                return false;
            }
        }
    }
    if !replies.last().is_some_and(|r| r.starts_with("354")) {
        who.record(m, Outcome::Failed, format!("envelope: {replies:?}"));
        return false;
    }
    let mut payload = Vec::with_capacity(m.body.len() + 64);
    dot_stuff(&m.body, &mut payload);
    if let Err(e) = w.send(&payload) {
        // The end of data may not have gone out, or may have: the MTA cannot tell.
        who.record(m, Outcome::Ambiguous, format!("body write: {e}"));
        return false;
    }
    match w.reply() {
        Ok(r) => {
            let o = judge_final(&r);
            who.record(m, o, r);
            o == Outcome::Accepted
        }
        Err(e) => {
            who.record(m, Outcome::Ambiguous, format!("after the dot: {e}"));
            false
        }
    }
}

/// BDAT: each message's MAIL, RCPT..., BDAT chunk(s), all `msgs` in one write, then every
/// reply in order.
fn bdat(w: &mut dyn Wire, who: &Who, msgs: &[Msg], rng: &mut Rng) -> bool {
    let mut out = Vec::new();
    let mut owed = Vec::new();
    for m in msgs {
        out.extend(envelope(m));
        let split = if m.body.len() > 2 && rng.below(2) == 0 {
            1 + rng.below(m.body.len() as u64 - 1) as usize
        } else {
            m.body.len()
        };
        let (a, b) = m.body.split_at(split);
        let mut n = m.rcpts.len() + 1;
        if b.is_empty() {
            out.extend(format!("BDAT {} LAST\r\n", a.len()).as_bytes());
            out.extend(a);
        } else {
            out.extend(format!("BDAT {}\r\n", a.len()).as_bytes());
            out.extend(a);
            out.extend(format!("BDAT {} LAST\r\n", b.len()).as_bytes());
            out.extend(b);
        }
        n += if b.is_empty() { 1 } else { 2 };
        owed.push(n);
    }
    if let Err(e) = w.send(&out) {
        for m in msgs {
            who.record(m, Outcome::Ambiguous, format!("batch write: {e}"));
        }
        return false;
    }
    let mut all_ok = true;
    let mut lost: Option<String> = None;
    // Once a reply nobody asked for came, the later replies of the batch are shifted.
    let mut shifted = false;
    for (m, n) in msgs.iter().zip(owed) {
        if let Some(e) = &lost {
            who.record(m, Outcome::Ambiguous, format!("batch: {e}"));
            continue;
        }
        let mut replies = Vec::new();
        for _ in 0..n {
            match w.reply() {
                Ok(r) => replies.push(r),
                Err(e) => {
                    lost = Some(e.to_string());
                    break;
                }
            }
        }
        if let Some(e) = &lost {
            who.record(
                m,
                Outcome::Ambiguous,
                format!("BDAT: {e} after {replies:?}"),
            );
            all_ok = false;
            continue;
        }
        let last = replies.last().cloned().unwrap_or_default();
        let o = if last.starts_with('2') {
            Outcome::Accepted
        } else if replies
            .iter()
            .any(|r| !r.starts_with('2') && r.contains("(test fault)"))
        {
            // The MX itself refused a step of this transaction: it cannot have taken it.
            Outcome::Failed
        } else {
            judge_final(&last)
        };
        let how = format!("{replies:?}");
        let o = if shifted { Outcome::Ambiguous } else { o };
        shifted |= out_of_step(&how);
        all_ok &= o == Outcome::Accepted && !shifted;
        who.record(m, o, how);
    }
    all_ok
}
