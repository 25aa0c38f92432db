//! Property test: the machine, driven the way the I/O loop in `session::relay` drives it,
//! between an MTA running a random pipelined script and an MX that is partly honest and
//! partly hostile.
//!
//! The honest part of the MX tags every reply with the number of the command it answers
//! (`250 <7> r=9`), counting as the MTA does, and every reply it sends with how many commands
//! it had received when it sent it (`r=9`). The hostile part sends an untagged reply nobody
//! asked for (`Extra`: after answering everything it received), slips one in among its answers
//! (`ExtraMid`), replaces one with garbage, or stops answering (`Silent`). Whatever the MX
//! sends reaches the proxy split at random points, and every byte it sent is there by the time
//! the loop looks without waiting. Invariants:
//!
//! - every MTA command line (and every body) earns exactly one reply;
//! - a reply never answers a command the MX had not received when it sent it (no reply is
//!   carried over to a later batch, a later message or, through the pool, a later MTA);
//! - a tagged reply only ever answers the command it was tagged for — unless the MX slipped
//!   an extra reply in among the answers of one batch, which, for the rest of that batch, is
//!   the same as answering those commands with other texts; then the batch's last reply is
//!   still refused (the extra one is found behind it);
//! - a session in which the MX deviated ends unfit for the pool;
//! - a session in which it did not gets exactly the honest replies (no false alarm);
//! - BDAT never reaches an MX that did not offer CHUNKING.

use proptest::prelude::*;

use super::adversary_mx::{twist, Mx, Twist};
use super::driver::facts;
use super::*;
use crate::smtp::reply::ReplyLimits;

/// One unit of the MTA's script.
#[derive(Clone, Debug)]
enum Cmd {
    /// EHLO with the proxy's name (true) or another one.
    Ehlo(bool),
    Mail,
    Rcpt,
    Noop,
    Rset,
    /// DATA and, after a 354, a body of this many lines.
    Data(usize),
    /// `BDAT <len> [LAST]` with this chunk (CR, LF, dots and command words inside).
    Bdat(Vec<u8>, bool),
    /// AUTH and, after a 334, one response line.
    Auth,
    /// MAIL, RCPT and `BDAT <len> LAST` with this chunk: one pipelined flight.
    Flight(Vec<u8>),
}

fn cmd() -> impl Strategy<Value = Cmd> {
    let chunk = prop::collection::vec(
        prop::sample::select(vec![b'.', b'\r', b'\n', b'D', b'A', b'T', b' ']),
        0..24,
    );
    prop_oneof![
        any::<bool>().prop_map(Cmd::Ehlo),
        Just(Cmd::Mail),
        Just(Cmd::Rcpt),
        Just(Cmd::Noop),
        Just(Cmd::Rset),
        (0usize..4).prop_map(Cmd::Data),
        (chunk.clone(), any::<bool>()).prop_map(|(c, last)| Cmd::Bdat(c, last)),
        Just(Cmd::Auth),
        chunk.prop_map(Cmd::Flight),
    ]
}

/// What the MTA expects of the reply to one of its units.
#[derive(Clone, Copy, Debug)]
enum Expect {
    /// The MX's reply tagged with this number (or the proxy's 421).
    Tagged(usize),
    /// The proxy's 502 for BDAT (or its 421).
    Refused,
}

/// The MTA: sends its script in rounds, each up to and including a command that needs its
/// reply before the MTA can go on (DATA, AUTH), then reads every reply.
struct Mta {
    script: Vec<Cmd>,
    next: usize,
    /// After the last unit sent: its continuation if the reply allows it.
    pending: Option<Cmd>,
    expect: Vec<Expect>,
    /// Units the MX sees (the honest tag of the next one is this + 1).
    mx_units: usize,
    got: Vec<Vec<u8>>,
    chunking: bool,
    quit_sent: bool,
}

impl Mta {
    fn unit(&mut self, out: &mut Vec<u8>, bytes: &[u8], to_mx: bool) {
        out.extend_from_slice(bytes);
        if to_mx {
            self.mx_units += 1;
            self.expect.push(Expect::Tagged(self.mx_units));
        } else {
            self.expect.push(Expect::Refused);
        }
    }

    /// The next round of bytes, given every reply so far (`None`: nothing more to send).
    fn round(&mut self) -> Option<Vec<u8>> {
        if self.quit_sent {
            return None;
        }
        let mut out = Vec::new();
        if let Some(cont) = self.pending.take() {
            let last = self.got.last().cloned().unwrap_or_default();
            match cont {
                Cmd::Data(lines) if last.starts_with(b"354") => {
                    let mut body = Vec::new();
                    for i in 0..lines {
                        body.extend_from_slice(format!("line {i} of the body\r\n").as_bytes());
                    }
                    body.extend_from_slice(b".\r\n");
                    self.unit(&mut out, &body, true);
                }
                Cmd::Auth if last.starts_with(b"334") => {
                    self.unit(&mut out, b"cmVzcG9uc2U=\r\n", true);
                }
                _ => {}
            }
        }
        while let Some(c) = self.script.get(self.next).cloned() {
            self.next += 1;
            match c {
                Cmd::Ehlo(same) => {
                    let name = if same { "mta.test" } else { "other.test" };
                    self.unit(&mut out, format!("EHLO {name}\r\n").as_bytes(), true);
                }
                Cmd::Mail => {
                    self.unit(&mut out, b"MAIL FROM:<a@example.org>\r\n", true);
                }
                Cmd::Rcpt => self.unit(&mut out, b"RCPT TO:<b@example.net>\r\n", true),
                Cmd::Noop => self.unit(&mut out, b"NOOP\r\n", true),
                Cmd::Rset => self.unit(&mut out, b"RSET\r\n", true),
                Cmd::Bdat(chunk, last) => {
                    let last = if last { " LAST" } else { "" };
                    let mut bytes = format!("BDAT {}{last}\r\n", chunk.len()).into_bytes();
                    bytes.extend_from_slice(&chunk);
                    let chunking = self.chunking;
                    self.unit(&mut out, &bytes, chunking);
                }
                Cmd::Flight(chunk) => {
                    self.unit(&mut out, b"MAIL FROM:<a@example.org>\r\n", true);
                    self.unit(&mut out, b"RCPT TO:<b@example.net>\r\n", true);
                    let mut bytes = format!("BDAT {} LAST\r\n", chunk.len()).into_bytes();
                    bytes.extend_from_slice(&chunk);
                    let chunking = self.chunking;
                    self.unit(&mut out, &bytes, chunking);
                }
                Cmd::Data(_) => {
                    self.unit(&mut out, b"DATA\r\n", true);
                    self.pending = Some(c);
                    return Some(out);
                }
                Cmd::Auth => {
                    self.unit(&mut out, b"AUTH LOGIN\r\n", true);
                    self.pending = Some(c);
                    return Some(out);
                }
            }
        }
        out.extend_from_slice(b"QUIT\r\n");
        self.quit_sent = true;
        Some(out)
    }
}

/// Random numbers for the driver, used in turn.
struct Dice {
    values: Vec<usize>,
    at: usize,
}

impl Dice {
    /// A number in 1..=max (max ≥ 1).
    fn upto(&mut self, max: usize) -> usize {
        let v = self.values.get(self.at % self.values.len().max(1)).copied();
        self.at += 1;
        1 + v.unwrap_or(0) % max.max(1)
    }
}

/// What a session ended with.
struct Outcome {
    relay: Relay,
    mta: Mta,
    mx: Mx,
    quit: bool,
}

/// Run the loop of `session::relay` over the models.
fn run(
    script: Vec<Cmd>,
    twists: Vec<Twist>,
    accept: Vec<bool>,
    chunking: bool,
    dice: Vec<usize>,
) -> Outcome {
    let limits = ReplyLimits::default();
    let mut relay = Relay::new(
        RelayLimits::default(),
        MxFacts {
            chunking,
            ..facts()
        },
    );
    let mut mx = Mx::new(twists, accept);
    let mut mta = Mta {
        script,
        next: 0,
        pending: None,
        expect: Vec::new(),
        mx_units: 0,
        got: Vec::new(),
        chunking,
        quit_sent: false,
    };
    let mut dice = Dice {
        values: dice,
        at: 0,
    };
    let mut mx_alive = true;
    let mut mta_in: Vec<u8> = Vec::new();
    let mut mta_chunks: Vec<Vec<u8>> = Vec::new();
    let mut mx_in: Vec<u8> = Vec::new();
    let mut to_mta: Vec<u8> = Vec::new();
    let mut budget = 100_000usize;
    let lose = |relay: &mut Relay, alive: &mut bool, mx_in: &mut Vec<u8>, why: &str| {
        relay.mx_lost(why);
        *alive = false;
        mx_in.clear();
    };
    // The bytes the MX sent that one read without waiting returns (some of them).
    let read = |mx: &mut Mx, mx_in: &mut Vec<u8>, dice: &mut Dice| {
        let n = dice.upto(mx.wire.len());
        mx_in.extend(mx.wire.drain(..n.min(mx.wire.len())));
    };
    let quit = loop {
        budget = budget.checked_sub(1).expect("no progress");
        // 0. New MTA input while nothing is owed: look at the MX first.
        if !relay.awaiting_mx() && !mta_in.is_empty() && mx_alive && !mx.wire.is_empty() {
            read(&mut mx, &mut mx_in, &mut dice);
            let step = relay.poll_mx(&mx_in, &limits, true);
            assert!(matches!(step, MxStep::Violation(_)), "{step:?}");
            lose(&mut relay, &mut mx_alive, &mut mx_in, "violation");
        }
        // 1. The MTA's input.
        let mut to_mx = Vec::new();
        let mut quit = false;
        let mut need_input = false;
        loop {
            match relay.poll_input(&mta_in) {
                InputStep::Forward(n) => {
                    to_mx.extend(mta_in.drain(..n));
                }
                InputStep::Discard(n) => {
                    mta_in.drain(..n);
                }
                InputStep::Reply { consume, reply } => {
                    mta_in.drain(..consume);
                    to_mta.extend_from_slice(&reply);
                }
                InputStep::Quit(n) => {
                    mta_in.drain(..n);
                    quit = true;
                    break;
                }
                InputStep::AbortMx => lose(&mut relay, &mut mx_alive, &mut mx_in, "abort"),
                InputStep::AwaitMx => break,
                InputStep::NeedInput => {
                    need_input = true;
                    break;
                }
            }
        }
        // 2. The batch to the MX.
        if mx_alive {
            mx.receive(&to_mx);
        }
        if quit {
            break true;
        }
        // Mid-chunk or mid-line with replies owed: the MTA's bytes first (it owes them
        // whatever the replies say; the replies stay held for it).
        if need_input && relay.awaiting_mx() {
            assert!(
                !mta_chunks.is_empty(),
                "the machine waits for MTA bytes the MTA does not owe (a deadlock)"
            );
            // Look at the MX without waiting: judge the replies already there.
            let mut quiet = false;
            while mx_alive && relay.awaiting_mx() {
                match relay.poll_mx(&mx_in, &limits, quiet) {
                    MxStep::Relay { consume, effect } => {
                        to_mta.extend(mx_in.drain(..consume));
                        if effect == ReplyEffect::ServiceClosing {
                            lose(&mut relay, &mut mx_alive, &mut mx_in, "421");
                        }
                    }
                    MxStep::CheckSilence if mx.wire.is_empty() => quiet = true,
                    MxStep::NeedMore if mx.wire.is_empty() => break,
                    MxStep::CheckSilence | MxStep::NeedMore => read(&mut mx, &mut mx_in, &mut dice),
                    MxStep::Violation(_) => {
                        lose(&mut relay, &mut mx_alive, &mut mx_in, "violation");
                    }
                    MxStep::Idle => break,
                }
            }
            let chunk = mta_chunks.remove(0);
            mta_in.extend_from_slice(&chunk);
            continue;
        }
        // 3. One reply from the MX.
        if relay.awaiting_mx() {
            let mut quiet = false;
            loop {
                match relay.poll_mx(&mx_in, &limits, quiet) {
                    MxStep::CheckSilence if mx.wire.is_empty() => quiet = true,
                    MxStep::CheckSilence => read(&mut mx, &mut mx_in, &mut dice),
                    MxStep::Relay { consume, effect } => {
                        to_mta.extend(mx_in.drain(..consume));
                        if effect == ReplyEffect::ServiceClosing {
                            lose(&mut relay, &mut mx_alive, &mut mx_in, "421");
                        }
                        break;
                    }
                    MxStep::NeedMore if mx.wire.is_empty() => {
                        lose(&mut relay, &mut mx_alive, &mut mx_in, "timeout");
                        break;
                    }
                    MxStep::NeedMore => {
                        read(&mut mx, &mut mx_in, &mut dice);
                        break;
                    }
                    MxStep::Violation(_) => {
                        lose(&mut relay, &mut mx_alive, &mut mx_in, "violation");
                        break;
                    }
                    MxStep::Idle => panic!("Idle while a reply is owed"),
                }
            }
            continue;
        }
        // 4. The MTA reads its replies and sends more.
        let replies = take_replies(&mut to_mta);
        mta.got.extend(replies);
        if mta_chunks.is_empty() {
            assert_eq!(
                mta.got.len(),
                mta.expect.len(),
                "every unit answered once all input is read: {:?}",
                mta.got
            );
            match mta.round() {
                Some(bytes) => mta_chunks = split(&bytes, &mut dice),
                None => break false,
            }
        }
        let chunk = mta_chunks.remove(0);
        mta_in.extend_from_slice(&chunk);
    };
    mta.got.extend(take_replies(&mut to_mta));
    assert!(to_mta.is_empty());
    Outcome {
        relay,
        mta,
        mx,
        quit,
    }
}

fn take_replies(buf: &mut Vec<u8>) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    while let Ok(Some((r, n))) = crate::smtp::parse_reply(buf, &ReplyLimits::default()) {
        out.push(r.into_raw());
        buf.drain(..n);
    }
    out
}

/// Split `bytes` into 1 to 4 reads at random points.
fn split(bytes: &[u8], dice: &mut Dice) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut rest = bytes;
    for _ in 0..dice.upto(4) {
        if rest.is_empty() {
            break;
        }
        let n = dice.upto(rest.len());
        out.push(rest[..n].to_vec());
        rest = &rest[n..];
    }
    if !rest.is_empty() || out.is_empty() {
        out.push(rest.to_vec());
    }
    out
}

/// The tag `<n>` in a reply, if any.
fn tag(reply: &[u8]) -> Option<usize> {
    let text = String::from_utf8_lossy(reply);
    let start = text.find('<')?;
    let end = text[start..].find('>')? + start;
    text[start + 1..end].parse().ok()
}

/// How many commands the MX had received when it sent `reply` (`r=n`), if it says.
fn received(reply: &[u8]) -> Option<usize> {
    let text = String::from_utf8_lossy(reply);
    let start = text.rfind(" r=")? + 3;
    text[start..].trim_end().parse().ok()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn an_adversarial_mx_never_shifts_a_reply(
        script in prop::collection::vec(cmd(), 0..14),
        twists in prop::collection::vec(twist(), 1..24),
        accept in prop::collection::vec(prop::bool::weighted(0.8), 1..6),
        chunking in prop::bool::weighted(0.7),
        dice in prop::collection::vec(any::<usize>(), 1..40),
    ) {
        let out = run(script, twists, accept, chunking, dice);
        prop_assert!(out.quit, "the session ends with QUIT");
        prop_assert_eq!(out.mta.got.len(), out.mta.expect.len(), "one reply per unit");
        for (i, (got, expect)) in out.mta.got.iter().zip(&out.mta.expect).enumerate() {
            let proxy_421 = got.starts_with(b"421 4.4.2 ");
            match *expect {
                Expect::Tagged(n) => {
                    if let Some(r) = received(got) {
                        prop_assert!(r >= n, "unit {} got {:?}, sent before the MX had it", i,
                            String::from_utf8_lossy(got));
                    }
                    if let (Some(t), false) = (tag(got), out.mx.shifted) {
                        prop_assert_eq!(t, n, "unit {} got {:?}", i, String::from_utf8_lossy(got));
                    }
                    if !out.mx.lied {
                        prop_assert_eq!(tag(got), Some(n), "honest MX, unit {}: {:?}", i,
                            String::from_utf8_lossy(got));
                    }
                }
                Expect::Refused => {
                    prop_assert!(got.starts_with(b"502 5.5.1 ") || proxy_421,
                        "{:?}", String::from_utf8_lossy(got));
                    prop_assert!(out.mx.lied || !proxy_421);
                }
            }
        }
        if out.mx.deviated {
            prop_assert!(matches!(out.relay.pool_state(), PoolState::Unusable(_)),
                "{:?}", out.relay.pool_state());
        }
        if !out.mta.chunking {
            prop_assert!(!out.mx.saw_bdat, "BDAT reached an MX without CHUNKING");
        }
    }
}
