//! A small driver shared by the relay's unit and property tests: it plays the I/O loop over
//! a scripted MTA input and a scripted MX.

use super::*;
use crate::smtp::reply::{parse_reply, Reply, ReplyLimits};
use InputStep::{AbortMx, AwaitMx, Discard, Forward, NeedInput, Quit};

pub(super) fn reply(s: &str) -> Reply {
    parse_reply(s.as_bytes(), &ReplyLimits::default())
        .unwrap()
        .unwrap()
        .0
}

/// What happened in a driven session, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Event {
    /// A reply the machine made itself.
    Local(Vec<u8>),
    /// An MX reply relayed to the MTA.
    Mx(Vec<u8>),
    /// An MX reply refused by `poll_mx`.
    Refused(u16),
    Quit,
    Abort,
}

#[derive(Debug, Default)]
pub(super) struct Run {
    pub to_mx: Vec<u8>,
    pub to_mta: Vec<u8>,
    pub events: Vec<Event>,
    pub leftover: Vec<u8>,
    /// to_mx length at the moment of an AbortMx.
    pub mx_len_at_abort: Option<usize>,
}

/// Play an I/O loop: feed `chunks` one at a time on NeedInput, answer AwaitMx with `mx`
/// (given the bytes forwarded so far; `None` = the MX is lost). Checks the step contract.
pub(super) fn drive(
    relay: &mut Relay,
    chunks: &[Vec<u8>],
    mx: &mut dyn FnMut(&[u8]) -> Option<Reply>,
) -> Run {
    let mut run = Run::default();
    let mut buf: Vec<u8> = Vec::new();
    let mut chunks = chunks.iter();
    let total: usize = chunks.clone().map(Vec::len).sum();
    let mut budget = 4 * total + 2 * chunks.len() + 100;
    loop {
        budget = budget.checked_sub(1).expect("relay made no progress");
        let step = relay.poll_input(&buf);
        match step {
            Forward(n) => {
                assert!(n > 0 && n <= buf.len(), "{step:?} of {}", buf.len());
                assert!(run.mx_len_at_abort.is_none(), "forward after AbortMx");
                run.to_mx.extend(buf.drain(..n));
            }
            Discard(n) => {
                assert!(n > 0 && n <= buf.len(), "{step:?} of {}", buf.len());
                buf.drain(..n);
            }
            InputStep::Reply { consume, reply } => {
                assert!(consume <= buf.len());
                buf.drain(..consume);
                run.to_mta.extend_from_slice(&reply);
                run.events.push(Event::Local(reply));
            }
            AwaitMx => {
                assert!(relay.awaiting_mx());
                match mx(&run.to_mx) {
                    Some(r) => match judge(relay, &r) {
                        Ok(effect) => {
                            run.to_mta.extend_from_slice(r.raw());
                            run.events.push(Event::Mx(r.raw().to_vec()));
                            if effect == ReplyEffect::ServiceClosing {
                                relay.mx_lost("MX closed the session");
                            }
                        }
                        Err(_) => {
                            assert!(!relay.awaiting_mx());
                            run.events.push(Event::Refused(r.code()));
                        }
                    },
                    None => relay.mx_lost("MX connection lost"),
                }
            }
            NeedInput => match chunks.next() {
                Some(c) => buf.extend_from_slice(c),
                None => break,
            },
            Quit(n) => {
                assert!(n > 0 && n <= buf.len());
                assert!(!relay.awaiting_mx());
                buf.drain(..n);
                run.events.push(Event::Quit);
                break;
            }
            AbortMx => {
                assert!(run.mx_len_at_abort.is_none(), "second AbortMx");
                run.mx_len_at_abort = Some(run.to_mx.len());
                run.events.push(Event::Abort);
                relay.mx_lost("aborted");
            }
        }
    }
    run.leftover = buf;
    run
}

/// Give the machine one complete reply as the whole MX input, with nothing after it.
pub(super) fn judge(relay: &mut Relay, reply: &Reply) -> Result<ReplyEffect, RelayError> {
    let raw = reply.raw();
    match relay.poll_mx(raw, &ReplyLimits::default(), true) {
        MxStep::Relay { consume, effect } => {
            assert_eq!(consume, raw.len());
            Ok(effect)
        }
        MxStep::Violation(e) => Err(e),
        other => panic!("a complete reply gave {other:?}"),
    }
}

/// Facts of an MX offering CHUNKING, set up with EHLO `mta.test`.
pub(super) fn facts() -> MxFacts {
    MxFacts {
        chunking: true,
        ehlo_name: "mta.test".into(),
    }
}
