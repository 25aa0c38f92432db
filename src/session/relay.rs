//! The relay loop: thin blocking I/O around the sans-I/O [`Relay`] machine.
//!
//! Lockstep: forward everything the MTA sent that can be forwarded (one write to the MX per
//! batch), then read the replies owed, handing each to the MTA as soon as the machine accepts
//! it (written out once more than [`MTA_FLUSH_AT`] bytes wait, otherwise once per batch), then
//! read the MTA again. Every command line earns exactly one reply, so one thread never
//! deadlocks. One exception to "replies first": when the MTA is in the middle of a BDAT chunk
//! or a line (a pipelined `MAIL`, `RCPT`, `BDAT n LAST` flight read in pieces), the rest is
//! read and forwarded before the replies owed, so the whole flight reaches the MX without
//! waiting for the MX (which may answer only once the chunk is complete) and a message on a
//! reused connection costs one round trip.
//!
//! The MX is read only while a reply is owed, and then within a deadline for the whole reply
//! (`timeouts.mx_command`, or `mx_data_done` after the end of a message, never beyond the
//! session's deadline). Whatever the MX sends that nobody asked for is a protocol violation
//! the machine decides on ([`Relay::poll_mx`]); the loop shows it every byte that is already
//! there, looking without waiting ([`look`]) before a new batch goes to an MX that owes nothing
//! and before the last reply owed is accepted (unless the read that brought that reply emptied
//! the socket: [`drained`]). After a violation the MX connection is closed
//! (no QUIT) and the MTA gets the proxy's `421 4.4.2` for everything still owed.
//!
//! Memory: the MTA's input is consumed line by line and streamed through in bodies; the MX's
//! input holds at most one reply being read (bounded by the reply limits) plus one read; the
//! output toward the MTA is written out above [`MTA_FLUSH_AT`]; buffers grown by a burst are
//! shrunk back to [`KEEP_BUFFER`] whenever the loop waits for the MTA (docs/SECURITY.md gives
//! the resulting bound per session).

use super::held::Held;
use super::look::{drained, look, Look};
use crate::caps::Capped;
use crate::mx::{MxConnection, MxTimeouts};
use greenarrow_proxy_net::bufconn::{BufConn, ReadError, Timeouts};
use greenarrow_proxy_net::deadline::Deadline;
use greenarrow_proxy_proto::escape::printable;
use greenarrow_proxy_proto::smtp::{InputStep, MxStep, Relay, ReplyEffect, ReplyLimits};
use std::io::{self, Read, Write};
use std::time::Duration;

/// Replies waiting for the MTA are written out once more than this many bytes wait; a reply
/// at least this long is written straight through. What a session holds for the MTA therefore
/// stays below twice this, however much the MX sends.
pub const MTA_FLUSH_AT: usize = 64 * 1024;

/// When the loop waits for the MTA, each buffer (input and output, both connections) larger
/// than this gives its memory back down to this size.
pub const KEEP_BUFFER: usize = 64 * 1024;

/// How a relayed SMTP session ended.
#[derive(Debug, PartialEq, Eq)]
pub enum RelayEnd {
    /// The MTA sent QUIT (consumed); the MTA connection goes back to the command state.
    Quit,
    /// The MTA closed its connection or broke it.
    MtaGone,
    /// The MTA sent nothing within the idle timeout.
    MtaTimeout,
    /// The connection reached `timeouts.session_lifetime`.
    Lifetime,
}

impl RelayEnd {
    /// The session line's `tag=`: `quit`, `mta_gone`, `mta_timeout`, `lifetime`.
    pub fn tag(&self) -> &'static str {
        match self {
            RelayEnd::Quit => "quit",
            RelayEnd::MtaGone => "mta_gone",
            RelayEnd::MtaTimeout => "mta_timeout",
            RelayEnd::Lifetime => "lifetime",
        }
    }
}

/// The outcome: how it ended, the machine (for the pool decision), and the MX connection if
/// it is still open.
pub struct RelayOutcome {
    pub end: RelayEnd,
    pub relay: Relay,
    pub mx: Option<Capped>,
    /// Why the MX connection was lost, when it was.
    pub mx_lost: Option<String>,
    /// The MTA was in the middle of a message body when it went away.
    pub mid_body: bool,
    /// Octets of the MTA's forwarded to the MX in this session (commands and message data).
    pub octets_to_mx: u64,
    /// Octets of the MX's replies passed on to the MTA in this session.
    pub octets_to_mta: u64,
    /// The last thing done with the MX connection was a look that found it silent, with no
    /// reply owed (the MTA's `QUIT` is checked so): a check-in need not look again.
    pub mx_silent: bool,
}

/// Forwarded input at least this long goes to the MX at once, from the MTA's buffer, when
/// nothing is queued before it (body data: one copy fewer per byte).
const WRITE_THROUGH_MIN: usize = 4096;

/// Relay the MTA's SMTP session to `mx` with the machine `relay` (made for this connection:
/// [`Relay::new`] with the connection's facts) until the MTA's QUIT or disconnect. `deadline`
/// is the session's: no read, from either side, outlasts it.
pub fn relay<S: Read + Write + Timeouts>(
    mta: &mut BufConn<S>,
    mx: Capped,
    mut relay: Relay,
    mta_idle: Duration,
    deadline: Deadline,
    mx_timeouts: &MxTimeouts,
    reply_limits: &ReplyLimits,
) -> RelayOutcome {
    let mut mx = Some(mx);
    let mut mx_lost: Option<String> = None;
    let mut octets_to_mx = 0u64;
    let mut octets_to_mta = 0u64;
    // MX replies queued for the MTA and not yet written (withdrawn if the MX proves out of step).
    let mut held = Held::default();
    // `why` goes to the log; the MTA's 421s keep the machine's own short reason when it
    // already has one (it never carries bytes the MX chose).
    let mut lose = |relay: &mut Relay, mx: &mut Option<Capped>, why: String| {
        if relay.dead_reason().is_none() {
            relay.mx_lost(&why);
        }
        if let Some(c) = mx.take() {
            c.close();
        }
        mx_lost.get_or_insert(why);
    };
    // The MX socket's timeout while a reply deadline is further away than this: the shorter
    // phase timeout, set once (`set_timeout` skips unchanged values), so replies cost no
    // timeout system calls; only near a deadline is the socket timeout cut to what is left.
    let base = mx_timeouts.command.min(mx_timeouts.data_done);
    // When the reply being read must be complete.
    let mut reply_deadline: Option<Deadline> = None;
    let mut mx_silent = false;
    // The last round read the MTA in the middle of a flight (replies owed, see below).
    let mut mid_flight = false;
    let end = loop {
        // 0. Mid-flight: before more of the flight goes out, the replies the MX already sent
        //    are judged (looking without waiting): one that follows the last reply owed so
        //    far is caught here, before a later command of the flight could take it for its
        //    own (as before a new batch, below).
        if mid_flight && relay.awaiting_mx() {
            mx_silent = false;
            if let Some(c) = mx.as_mut() {
                match judge_ready(&mut relay, c, reply_limits, mta, &mut held) {
                    Ok(n) => octets_to_mta += n,
                    Err(Ready::MtaGone) => break RelayEnd::MtaGone,
                    Err(Ready::Lost { why, out_of_step }) => {
                        lose(&mut relay, &mut mx, why);
                        if out_of_step {
                            withdraw(&mut held, mta, &relay);
                        }
                    }
                }
            }
        }
        // 0. New MTA input while the MX owes nothing: it must have sent nothing either,
        //    before anything more goes to it (a byte read later would pass for a reply).
        if !relay.awaiting_mx() && !mta.pending().is_empty() {
            if let Some(c) = mx.as_mut() {
                let checked = check_silent(&mut relay, c, reply_limits);
                mx_silent = checked.is_ok();
                if let Err((why, out_of_step)) = checked {
                    lose(&mut relay, &mut mx, why);
                    if out_of_step {
                        withdraw(&mut held, mta, &relay);
                    }
                }
            }
        }
        // 1. Act on all the input we have.
        let mut quit = false;
        let mut need_input = false;
        loop {
            match relay.poll_input(mta.pending()) {
                InputStep::Forward(n) => {
                    mx_silent = false;
                    let mut sent = Ok(());
                    if let Some(c) = mx.as_mut() {
                        let bytes = &mta.pending()[..n];
                        if n >= WRITE_THROUGH_MIN && !c.stream_mut().has_output() {
                            // A large piece of a body: written from the MTA's buffer, not
                            // copied into the MX's first (the same bytes, in the same order).
                            sent = c
                                .stream_mut()
                                .set_timeout(base)
                                .and_then(|_| c.stream_mut().write_through(bytes));
                        } else {
                            c.stream_mut().queue(bytes);
                        }
                        c.add_bytes(n as u64);
                        octets_to_mx += n as u64;
                    }
                    mta.consume(n);
                    if let Err(e) = sent {
                        lose(&mut relay, &mut mx, format!("writing to the MX: {e}"));
                    }
                }
                InputStep::Discard(n) => mta.consume(n),
                InputStep::Reply { consume, reply } => {
                    mta.consume(consume);
                    mta.queue(&reply);
                }
                InputStep::Quit(n) => {
                    mta.consume(n);
                    quit = true;
                    break;
                }
                InputStep::AbortMx => {
                    let why = relay.dead_reason().unwrap_or("relay aborted").to_string();
                    lose(&mut relay, &mut mx, why);
                }
                InputStep::AwaitMx => break,
                InputStep::NeedInput => {
                    need_input = true;
                    break;
                }
            }
        }
        // 2. Send the batch to the MX.
        if let Some(c) = mx.as_mut() {
            if c.stream_mut().has_output() {
                let sent = c
                    .stream_mut()
                    .set_timeout(base)
                    .and_then(|_| c.stream_mut().flush());
                if let Err(e) = sent {
                    lose(&mut relay, &mut mx, format!("writing to the MX: {e}"));
                    continue;
                }
            }
        }
        if quit {
            break RelayEnd::Quit;
        }
        // The machine needs MTA input although replies are owed: the MTA is in the middle of
        // a BDAT chunk or a line it sent pipelined behind its commands (`MAIL`, `RCPT`, `BDAT
        // n LAST` and the chunk in one flight, read in pieces): it owes the rest whatever the
        // replies say, and the MX may answer only once the chunk is whole. Read the MTA
        // first; the replies owed wait in the MX's socket.
        mid_flight = need_input && relay.awaiting_mx();
        // 3. Read what the MX owes, one reply per round, each to the MTA as it is accepted.
        if relay.awaiting_mx() && !mid_flight {
            mx_silent = false;
            let Some(c) = mx.as_mut() else {
                // Cannot happen: a dead machine answers for itself. Be safe anyway.
                lose(&mut relay, &mut mx, "MX connection missing".into());
                continue;
            };
            let mut quiet = false;
            let step = loop {
                match relay.poll_mx(c.stream_mut().pending(), reply_limits, quiet) {
                    // The read that brought this reply emptied the socket: a look now
                    // would see the same.
                    MxStep::CheckSilence if drained(c) => quiet = true,
                    MxStep::CheckSilence => match look(c) {
                        Look::Nothing | Look::Closed => quiet = true,
                        Look::Data => {}
                        Look::Failed(e) => break Err(format!("reading from the MX: {e}")),
                    },
                    step => break Ok(step),
                }
            };
            match step {
                Ok(MxStep::Relay { consume, effect }) => {
                    reply_deadline = None;
                    let reply = c.stream_mut().pending().get(..consume).unwrap_or_default();
                    let start = mta.output_len();
                    let written = pass_to_mta(mta, reply);
                    match written {
                        Ok(true) => held.clear(),
                        Ok(false) => held.push(start, mta.output_len()),
                        Err(_) => {}
                    }
                    let closing = (effect == ReplyEffect::ServiceClosing)
                        .then(|| format!("the MX closed the session: {}", printable(reply, 200)));
                    c.stream_mut().consume(consume);
                    octets_to_mta += consume as u64;
                    if written.is_err() {
                        break RelayEnd::MtaGone;
                    }
                    if let Some(why) = closing {
                        lose(&mut relay, &mut mx, why);
                    }
                }
                Ok(MxStep::NeedMore) => {
                    let until = *reply_deadline.get_or_insert_with(|| {
                        let phase = if relay.awaiting_data_end() {
                            mx_timeouts.data_done
                        } else {
                            mx_timeouts.command
                        };
                        deadline.within(phase)
                    });
                    if let Err(e) = c.stream_mut().fill_until(until) {
                        reply_deadline = None;
                        let why = match e {
                            ReadError::Timeout => {
                                "no complete reply from the MX within its deadline".into()
                            }
                            e => format!("reading the MX reply: {e}"),
                        };
                        lose(&mut relay, &mut mx, why);
                    }
                }
                Ok(MxStep::Violation(e)) => {
                    reply_deadline = None;
                    lose(&mut relay, &mut mx, format!("MX protocol violation: {e}"));
                    // The batch's replies still unwritten may be shifted: withdraw them.
                    withdraw(&mut held, mta, &relay);
                }
                Ok(MxStep::Idle | MxStep::CheckSilence) => {
                    // Cannot happen while a reply is owed. Be safe anyway.
                    lose(&mut relay, &mut mx, "relay state: no reply to read".into());
                }
                Err(why) => lose(&mut relay, &mut mx, why),
            }
            continue;
        }
        // 4. Deliver the replies, give back what a burst took, and wait for the MTA. (Not
        //    mid-flight: its replies stay held until the last one owed is accepted, so that
        //    they can still be withdrawn if the MX proves out of step.)
        if !relay.awaiting_mx() {
            held.clear();
            if mta.has_output() && mta.flush().is_err() {
                break RelayEnd::MtaGone;
            }
        }
        mta.shrink_to(KEEP_BUFFER);
        if let Some(c) = mx.as_mut() {
            c.stream_mut().shrink_to(KEEP_BUFFER);
        }
        let Some(timeout) = super::read_timeout(mta_idle, deadline) else {
            break RelayEnd::Lifetime;
        };
        if mta.set_timeout(timeout).is_err() {
            break RelayEnd::MtaGone;
        }
        match mta.fill() {
            Ok(_) => {}
            Err(ReadError::Timeout) if deadline.has_passed() => break RelayEnd::Lifetime,
            Err(ReadError::Timeout) => break RelayEnd::MtaTimeout,
            Err(_) => break RelayEnd::MtaGone,
        }
    };
    let mid_body = relay.in_message();
    let mx_silent = mx_silent && mx.is_some();
    RelayOutcome {
        end,
        relay,
        mx_lost,
        mx,
        mid_body,
        octets_to_mx,
        octets_to_mta,
        mx_silent,
    }
}

/// Why [`judge_ready`] stopped the session or the MX connection.
enum Ready {
    MtaGone,
    Lost { why: String, out_of_step: bool },
}

/// The replies the MX has already sent, judged without waiting for more: each accepted one
/// is queued for the MTA (held), an incomplete one stays in the buffer. Returns the octets
/// queued.
fn judge_ready<S: Read + Write + Timeouts>(
    relay: &mut Relay,
    c: &mut MxConnection,
    limits: &ReplyLimits,
    mta: &mut BufConn<S>,
    held: &mut Held,
) -> Result<u64, Ready> {
    let mut queued = 0u64;
    let mut quiet = false;
    while relay.awaiting_mx() {
        match relay.poll_mx(c.stream_mut().pending(), limits, quiet) {
            MxStep::Relay { consume, effect } => {
                let reply = c.stream_mut().pending().get(..consume).unwrap_or_default();
                let start = mta.output_len();
                match pass_to_mta(mta, reply) {
                    Ok(true) => held.clear(),
                    Ok(false) => held.push(start, mta.output_len()),
                    Err(_) => return Err(Ready::MtaGone),
                }
                let closing = (effect == ReplyEffect::ServiceClosing)
                    .then(|| format!("the MX closed the session: {}", printable(reply, 200)));
                c.stream_mut().consume(consume);
                queued += consume as u64;
                if let Some(why) = closing {
                    return Err(Ready::Lost {
                        why,
                        out_of_step: false,
                    });
                }
            }
            step @ (MxStep::NeedMore | MxStep::CheckSilence) => match look(c) {
                Look::Data => {}
                Look::Nothing if step == MxStep::CheckSilence => quiet = true,
                Look::Nothing => break,
                Look::Closed => {
                    return Err(Ready::Lost {
                        why: "the MX closed the connection".into(),
                        out_of_step: false,
                    })
                }
                Look::Failed(e) => {
                    return Err(Ready::Lost {
                        why: format!("reading from the MX: {e}"),
                        out_of_step: false,
                    })
                }
            },
            MxStep::Violation(e) => {
                return Err(Ready::Lost {
                    why: format!("MX protocol violation: {e}"),
                    out_of_step: true,
                })
            }
            MxStep::Idle => break,
        }
    }
    Ok(queued)
}

/// The MX is out of step: the replies held for the MTA become the proxy's `421`.
fn withdraw<S: Read + Write + Timeouts>(held: &mut Held, mta: &mut BufConn<S>, relay: &Relay) {
    if held.len() > 0 {
        let why = relay.dead_reason().unwrap_or("MX out of step");
        let with = format!("421 4.4.2 {}\r\n", printable(why.as_bytes(), 200));
        let out = mta.take_output();
        mta.queue(&held.withdraw(&out, with.as_bytes()));
    }
}

/// Queue `reply` for the MTA; write the queue out once it holds more than [`MTA_FLUSH_AT`]
/// bytes, and write a reply at least that long straight through, not copying it. `Ok(true)`
/// when everything queued (this reply included) has been written.
fn pass_to_mta<S: Read + Write + Timeouts>(mta: &mut BufConn<S>, reply: &[u8]) -> io::Result<bool> {
    if reply.len() >= MTA_FLUSH_AT {
        if mta.has_output() {
            mta.flush()?;
        }
        mta.write_through(reply)?;
        return Ok(true);
    }
    mta.queue(reply);
    if mta.output_len() > MTA_FLUSH_AT {
        mta.flush()?;
        return Ok(true);
    }
    Ok(false)
}

/// The MX owes nothing: anything it sent is a violation (`true`: it is out of step), a close
/// loses it.
fn check_silent(
    relay: &mut Relay,
    c: &mut MxConnection,
    limits: &ReplyLimits,
) -> Result<(), (String, bool)> {
    match look(c) {
        Look::Nothing => Ok(()),
        Look::Closed => Err(("the MX closed the connection".into(), false)),
        Look::Failed(e) => Err((format!("reading from the MX: {e}"), false)),
        Look::Data => match relay.poll_mx(c.stream_mut().pending(), limits, true) {
            MxStep::Violation(e) => Err((format!("MX protocol violation: {e}"), true)),
            // Cannot happen with nothing owed and bytes read; never relay them anyway.
            _ => Err(("MX sent data when no reply was owed".into(), true)),
        },
    }
}
