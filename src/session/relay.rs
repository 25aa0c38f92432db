//! The relay loop: thin blocking I/O around the sans-I/O [`Relay`] machine.
//!
//! Lockstep: forward everything the MTA sent that can be forwarded (one write to the MX per
//! batch), then read the replies owed (one write to the MTA per batch), then read the MTA
//! again. Every command line earns exactly one reply, so one thread never deadlocks.

use crate::bufconn::{BufConn, ReadError, Timeouts};
use crate::mx::{MxConnection, MxTimeouts};
use crate::smtp::{InputStep, Relay, RelayLimits, ReplyEffect, ReplyLimits};
use std::io::{Read, Write};
use std::time::{Duration, Instant};

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

/// The outcome: how it ended, the machine (for the pool decision), and the MX connection if
/// it is still open.
pub struct RelayOutcome {
    pub end: RelayEnd,
    pub relay: Relay,
    pub mx: Option<MxConnection>,
    /// Why the MX connection was lost, when it was.
    pub mx_lost: Option<String>,
    /// The MTA was in the middle of a message body when it went away.
    pub mid_body: bool,
}

/// Relay the MTA's SMTP session to `mx` until the MTA's QUIT or disconnect.
pub fn relay<S: Read + Write + Timeouts>(
    mta: &mut BufConn<S>,
    mx: MxConnection,
    mta_idle: Duration,
    deadline: Instant,
    mx_timeouts: &MxTimeouts,
    relay_limits: RelayLimits,
    reply_limits: &ReplyLimits,
) -> RelayOutcome {
    let mut relay = Relay::new(relay_limits);
    let mut mx = Some(mx);
    let mut mx_lost: Option<String> = None;
    let mut lose = |relay: &mut Relay, mx: &mut Option<MxConnection>, why: String| {
        relay.mx_lost(&why);
        if let Some(c) = mx.take() {
            c.close();
        }
        mx_lost.get_or_insert(why);
    };
    let end = loop {
        // 1. Act on all the input we have.
        let mut quit = false;
        loop {
            match relay.poll_input(mta.pending()) {
                InputStep::Forward(n) => {
                    if let Some(c) = mx.as_mut() {
                        c.conn.queue(&mta.pending()[..n]);
                        c.bytes += n as u64;
                    }
                    mta.consume(n);
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
                    lose(
                        &mut relay,
                        &mut mx,
                        "message body aborted (ambiguous end-of-data)".into(),
                    );
                }
                InputStep::AwaitMx | InputStep::NeedInput => break,
            }
        }
        // 2. Send the batch to the MX.
        if let Some(c) = mx.as_mut() {
            if c.conn.has_output() {
                if let Err(e) = c.conn.flush() {
                    lose(&mut relay, &mut mx, format!("writing to the MX: {e}"));
                    continue;
                }
            }
        }
        if quit {
            break RelayEnd::Quit;
        }
        // 3. Read the replies owed.
        if relay.awaiting_mx() {
            let Some(c) = mx.as_mut() else {
                // Cannot happen: a dead machine answers for itself. Be safe anyway.
                lose(&mut relay, &mut mx, "MX connection missing".into());
                continue;
            };
            let timeout = if relay.awaiting_data_end() {
                mx_timeouts.data_done
            } else {
                mx_timeouts.command
            };
            // The socket keeps the shorter of the two deadlines (set once: `set_timeout`
            // skips the system calls when unchanged); a read owed the longer one goes on
            // after the shorter expires. No timeout switching per message.
            let base = mx_timeouts.command.min(mx_timeouts.data_done);
            let r = c
                .conn
                .set_timeout(base)
                .map_err(ReadError::from)
                .and_then(|_| c.conn.read_reply_within(reply_limits, timeout));
            match r {
                // The machine judges the reply first: one it refuses (e.g. a 2xx where the
                // MX should have said 354) is not relayed; the owed reply becomes the
                // proxy's 421, so the MTA still gets exactly one reply per command.
                Ok(reply) => {
                    let judged = relay.on_mx_reply(&reply);
                    if judged.is_ok() {
                        mta.queue(reply.raw());
                    }
                    match judged {
                        Ok(ReplyEffect::Continue) => {}
                        Ok(ReplyEffect::ServiceClosing) => {
                            lose(
                                &mut relay,
                                &mut mx,
                                format!("the MX closed the session: {}", reply.text()),
                            );
                        }
                        Err(e) => lose(&mut relay, &mut mx, format!("relay state: {e}")),
                    }
                }
                Err(e) => lose(&mut relay, &mut mx, format!("reading the MX reply: {e}")),
            }
            continue;
        }
        // 4. Deliver the replies and wait for the MTA.
        if mta.has_output() && mta.flush().is_err() {
            break RelayEnd::MtaGone;
        }
        let Some(timeout) = super::read_timeout(mta_idle, deadline) else {
            break RelayEnd::Lifetime;
        };
        if mta.set_timeout(timeout).is_err() {
            break RelayEnd::MtaGone;
        }
        match mta.fill() {
            Ok(_) => {}
            Err(ReadError::Timeout) if Instant::now() >= deadline => break RelayEnd::Lifetime,
            Err(ReadError::Timeout) => break RelayEnd::MtaTimeout,
            Err(_) => break RelayEnd::MtaGone,
        }
    };
    let mid_body = relay.in_message();
    RelayOutcome {
        end,
        relay,
        mx,
        mx_lost,
        mid_body,
    }
}
