//! The MTAs: worker threads that each loop over random sessions (their own seeded generator)
//! through every way in — the native protocol with and without reuse, PROXY and SOCKS5 in
//! passthrough and `mode: smtp` — and deliver messages by DATA, BDAT (one or two chunks) and
//! pipelined BDAT batches, writing down what each message was told in the [`Ledger`].
//!
//! How a message's outcome is judged from the MTA's side:
//! - **accepted**: a 2xx reply to its end of data (the final dot or `BDAT ... LAST`);
//! - **failed**: a negative reply, or the session ended before its end of data was sent;
//!   with BDAT (whose end of data goes out pipelined with its envelope), a negative reply of
//!   the MX's own to any step of its transaction;
//! - **ambiguous**: its end of data was sent and then no reply came (connection lost, timeout)
//!   or the reply was the proxy's own `421` for an MX connection it lost or found out of step —
//!   the window SMTP cannot close: the MX may or may not have taken the message. A negative
//!   reply the MX itself gave (the soak's MXes mark theirs `(test fault)`) is a failure.

use crate::common::Raw;
use crate::kumo::{proxy_v2_header, socks5_handshake, Smtp};
use crate::rig::{secret, Files, Front, Mx, FRONTS};
use crate::rng::Rng;
use greenarrow_proxy::protocol::{ConnectRequest, Destination, TlsPolicy};
use greenarrow_proxy::smtp::dot_stuff;
use greenarrow_proxy::tls::ProxyClientTls;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::io::{self, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
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
    next: AtomicU64,
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
struct Msg {
    id: u64,
    from: String,
    rcpts: Vec<String>,
    body: Vec<u8>,
}

/// A random message: its id first, then lines of random length, some starting with a dot.
fn message(rng: &mut Rng, id: u64, mta: usize) -> Msg {
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
trait Wire {
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
enum How {
    /// MAIL, RCPT..., DATA pipelined; then the body; one message at a time.
    Data,
    /// MAIL, RCPT..., BDAT (one or two chunks) in one write; one message at a time.
    Bdat,
    /// Every message's MAIL, RCPT..., BDAT LAST in one write, then all the replies.
    Batch,
}

/// Who sends: the MTA's identity for this session.
struct Who<'a> {
    /// The way in: `native` or the front-end.
    way: &'static str,
    mta: usize,
    mx: usize,
    source: IpAddr,
    ehlo: String,
    ledger: &'a Ledger,
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
fn transact(w: &mut dyn Wire, who: &Who, msgs: &[Msg], how: How, rng: &mut Rng) -> bool {
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

/// One MTA thread.
pub struct Mta {
    pub k: usize,
    pub rng: Rng,
    pub files: Arc<Files>,
    pub mxes: Arc<Vec<Mx>>,
    pub ledger: Arc<Ledger>,
    pub stop: Arc<AtomicBool>,
    pub tls: ProxyClientTls,
}

impl Mta {
    /// Sessions until told to stop.
    pub fn run(mut self) {
        while !self.stop.load(Ordering::Relaxed) {
            let front = match self.rng.below(10) {
                0..=4 => None,
                n => Some(FRONTS[(n - 5) as usize % FRONTS.len()]),
            };
            match front {
                None => self.native(),
                Some(f) => self.front(f),
            }
        }
    }

    fn pick(&mut self) -> (usize, IpAddr, String) {
        let mx = self.rng.below(self.mxes.len() as u64) as usize;
        let sources = &self.mxes[mx].sources;
        let source = sources[self.rng.below(sources.len() as u64) as usize];
        let ehlo = format!("mta{}-{}.soak.test", self.k, self.rng.below(2));
        (mx, source, ehlo)
    }

    fn batch(&mut self, max: u64) -> (Vec<Msg>, How) {
        let how = match self.rng.below(3) {
            0 => How::Data,
            1 => How::Bdat,
            _ => How::Batch,
        };
        let n = 1 + self.rng.below(max);
        let msgs = (0..n)
            .map(|_| {
                let id = self.ledger.next.fetch_add(1, Ordering::Relaxed) + 1;
                message(&mut self.rng, id, self.k)
            })
            .collect();
        (msgs, how)
    }

    /// Up to `max` messages from `source` as `ehlo` to MX `mx`, as [`transact`] says.
    fn deliver(
        &mut self,
        w: &mut dyn Wire,
        mx: usize,
        source: IpAddr,
        ehlo: String,
        max: u64,
        way: &'static str,
    ) -> bool {
        let (msgs, how) = self.batch(max);
        let who = Who {
            way,
            mta: self.k,
            mx,
            source,
            ehlo,
            ledger: &self.ledger,
        };
        transact(w, &who, &msgs, how, &mut self.rng)
    }

    /// The native protocol: one TLS connection, one to three CONNECTs, reuse or not.
    fn native(&mut self) {
        let Ok(tcp) = TcpStream::connect_timeout(&self.files.listen, IO) else {
            self.ledger.refused.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let Ok(tls) = self.tls.connect(tcp, "localhost", IO) else {
            self.ledger.refused.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let mut raw = Raw::from_stream(tls);
        let _ = raw.s.tcp().set_read_timeout(Some(IO));
        let _ = raw.s.tcp().set_write_timeout(Some(IO));
        let mut first = true;
        for _ in 0..1 + self.rng.below(3) {
            let (mx, source, ehlo) = self.pick();
            let m = &self.mxes[mx];
            let mut r = ConnectRequest::new(source, Destination::Ip(m.mx.addr().ip()), &ehlo);
            r.port = m.mx.addr().port();
            r.reuse = self.rng.below(3) != 0;
            r.tls = match (m.tls, self.rng.below(2)) {
                (true, 0) => TlsPolicy::Required,
                (false, 0) => TlsPolicy::None,
                _ => TlsPolicy::Opportunistic,
            };
            let mut line = String::new();
            if first {
                line = format!("AUTH 1 {}\r\n", secret());
            }
            line.push_str(&r.to_line());
            if Wire::send(&mut raw, line.as_bytes()).is_err() {
                return;
            }
            if first {
                match Wire::reply(&mut raw) {
                    Ok(a) if a.starts_with("235 ") => {}
                    _ => {
                        self.ledger.refused.fetch_add(1, Ordering::Relaxed);
                        return;
                    }
                }
                first = false;
            }
            match Wire::reply(&mut raw) {
                Ok(ready) if ready.ends_with("250 ready\r\n") => {}
                Ok(_) => {
                    // Refused (source not local, cap, drain, MX trouble): ask again or go.
                    self.ledger.refused.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                Err(_) => return,
            }
            // Messages of the batch after a failure were not sent: not in the ledger.
            if !self.deliver(&mut raw, mx, source, ehlo, 4, "native") {
                return;
            }
            match Wire::send(&mut raw, b"QUIT\r\n").and_then(|()| Wire::reply(&mut raw)) {
                Ok(r) if r.starts_with("221") => {}
                _ => return,
            }
        }
        let _ = Wire::send(&mut raw, b"QUIT\r\n").and_then(|()| Wire::reply(&mut raw));
    }

    /// A front-end session: the PROXY header or the SOCKS5 handshake, then SMTP.
    fn front(&mut self, front: Front) {
        let (mx, source, ehlo) = self.pick();
        let fe = self.files.fronts[FRONTS.iter().position(|f| *f == front).unwrap()];
        let m = &self.mxes[mx];
        let mx_addr = m.mx.addr();
        let mx_tls = m.tls;
        let Ok(mut tcp) = TcpStream::connect_timeout(&fe, IO) else {
            self.ledger.refused.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let set_up = match front {
            Front::ProxyPassthrough | Front::ProxySmtp => {
                let header = if self.rng.below(2) == 0 {
                    proxy_v2_header(source, mx_addr)
                } else {
                    v1_header(source, mx_addr)
                };
                tcp.write_all(&header).is_ok()
            }
            Front::SocksPassthrough | Front::SocksSmtp => {
                let user = source.to_string();
                socks5_handshake(&mut tcp, Some((&user, secret())), None, mx_addr).is_ok()
            }
        };
        if !set_up {
            self.ledger.refused.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let mut smtp = Smtp::new(tcp);
        let greeted = (|| -> io::Result<bool> {
            if !smtp.reply()?.starts_with("220") {
                return Ok(false);
            }
            let e = smtp.command(&format!("EHLO {ehlo}"))?;
            if !e.starts_with("250") {
                return Ok(false);
            }
            if !front.smtp_mode() && mx_tls {
                smtp.starttls("mx.test")?;
                if !smtp.command(&format!("EHLO {ehlo}"))?.starts_with("250") {
                    return Ok(false);
                }
            }
            Ok(true)
        })();
        smtp.transcript.clear();
        if !matches!(greeted, Ok(true)) {
            self.ledger.refused.fetch_add(1, Ordering::Relaxed);
            return;
        }
        if self.deliver(&mut smtp, mx, source, ehlo, 3, front.name()) {
            let _ = smtp.command("QUIT");
        }
    }
}

fn v1_header(source: IpAddr, mx: SocketAddr) -> Vec<u8> {
    let fam = if source.is_ipv4() { "TCP4" } else { "TCP6" };
    format!("PROXY {fam} {source} {} 40000 {}\r\n", mx.ip(), mx.port()).into_bytes()
}
