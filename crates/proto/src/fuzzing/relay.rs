//! The relay state machine driven by random MTA bytes, random MX bytes (listed replies and
//! arbitrary bytes, split anywhere, extra or unsolicited) and random losses of the MX
//! connection, the way the proxy's I/O loop drives it. Checks the step contract: never a
//! panic, steps within the input, progress, no forwarding after an abort, no relayed reply
//! unless one was owed, and a dead machine keeps answering by itself.

use crate::smtp::{
    parse_reply, InputStep, MxFacts, MxStep, Relay, RelayLimits, ReplyEffect, ReplyLimits,
};

/// Replies an MX commonly gives, to reach deep states quickly.
const REPLIES: &[&[u8]] = &[
    b"250 ok\r\n",
    b"250-mx\r\n250-PIPELINING\r\n250 CHUNKING\r\n",
    b"354 go ahead\r\n",
    b"334 VXNlcm5hbWU6\r\n",
    b"235 ok\r\n",
    b"221 bye\r\n",
    b"421 4.4.2 closing\r\n",
    b"451 4.3.0 later\r\n",
    b"550 5.1.1 no\r\n",
    b"500 5.5.1 what\r\n",
    b"220 ready\r\n",
    b"251 forwarded\n",
];

/// Reads the fuzz input as a little program.
struct Input<'a> {
    data: &'a [u8],
}

impl Input<'_> {
    fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.data.split_first()?;
        self.data = rest;
        Some(b)
    }

    fn take(&mut self, n: usize) -> &[u8] {
        let n = n.min(self.data.len());
        let (a, b) = self.data.split_at(n);
        self.data = b;
        a
    }
}

/// The `relay` target.
pub fn relay(data: &[u8]) {
    let mut input = Input { data };
    let max_line = 64 + usize::from(input.byte().unwrap_or(0));
    let flags = input.byte().unwrap_or(0);
    let mut relay = Relay::new(
        RelayLimits {
            max_command_line: max_line,
        },
        MxFacts {
            chunking: flags.is_multiple_of(2),
            ehlo_name: "mta.test".into(),
        },
    );
    let reply_limits = ReplyLimits::default();
    let mut buf: Vec<u8> = Vec::new();
    let mut mx_buf: Vec<u8> = Vec::new();
    let mut to_mx = 0usize;
    let mut aborted = false;
    let mut steps = 0usize;
    loop {
        steps += 1;
        assert!(steps < 1_000_000, "no progress");
        let step = relay.poll_input(&buf);
        match step {
            InputStep::Forward(n) => {
                assert!(n > 0 && n <= buf.len(), "{step:?} of {}", buf.len());
                assert!(!aborted, "forward after AbortMx");
                to_mx += n;
                buf.drain(..n);
            }
            InputStep::Discard(n) => {
                assert!(n > 0 && n <= buf.len(), "{step:?} of {}", buf.len());
                buf.drain(..n);
            }
            InputStep::Reply { consume, reply } => {
                assert!(consume <= buf.len());
                assert!(reply.ends_with(b"\r\n"));
                assert!(parse_reply(&reply, &reply_limits).is_ok_and(|r| r.is_some()));
                buf.drain(..consume);
            }
            InputStep::Quit(n) => {
                assert!(n > 0 && n <= buf.len());
                assert!(!relay.awaiting_mx());
                let _ = relay.pool_state();
                return;
            }
            InputStep::AbortMx => {
                assert!(!aborted, "second AbortMx");
                aborted = true;
                relay.mx_lost("aborted");
            }
            InputStep::AwaitMx => {
                assert!(relay.awaiting_mx());
                let _ = relay.awaiting_data_end();
                // The MX: a listed reply, arbitrary bytes, or a lost connection.
                let op = input.byte().unwrap_or(0);
                match op % 8 {
                    0 => {
                        relay.mx_lost("lost");
                        assert!(!relay.awaiting_mx());
                        mx_buf.clear();
                        continue;
                    }
                    1 | 2 => {
                        let n = usize::from(input.byte().unwrap_or(0) % 64);
                        mx_buf.extend_from_slice(input.take(n));
                    }
                    _ => {
                        let i = usize::from(input.byte().unwrap_or(0)) % REPLIES.len();
                        mx_buf.extend_from_slice(REPLIES[i]);
                    }
                }
                judge_mx(&mut relay, &mut mx_buf, &reply_limits, op >= 128);
            }
            InputStep::NeedInput => {
                // The MTA: the next chunk of bytes, or the end of the session.
                let Some(n) = input.byte() else {
                    let _ = (relay.in_message(), relay.pool_state(), to_mx);
                    return;
                };
                let chunk = input.take(usize::from(n)).to_vec();
                if chunk.is_empty() {
                    return;
                }
                buf.extend_from_slice(&chunk);
                // Now and then the MX speaks unasked (or follows a reply with more bytes).
                if n % 16 == 15 {
                    mx_buf.extend_from_slice(b"250 stray\r\n");
                }
                judge_mx(&mut relay, &mut mx_buf, &reply_limits, true);
            }
        }
    }
}

/// Let the machine judge the MX input until it needs more; check the MX step contract.
fn judge_mx(relay: &mut Relay, mx_buf: &mut Vec<u8>, limits: &ReplyLimits, quiet: bool) {
    let mut quiet = quiet;
    loop {
        let owed = relay.awaiting_mx();
        match relay.poll_mx(mx_buf, limits, quiet) {
            MxStep::Relay { consume, effect } => {
                assert!(owed, "relayed a reply nobody owed");
                assert!(consume > 0 && consume <= mx_buf.len());
                assert!(parse_reply(&mx_buf[..consume], limits)
                    .is_ok_and(|r| r.is_some_and(|(_, n)| n == consume)));
                mx_buf.drain(..consume);
                if effect == ReplyEffect::ServiceClosing {
                    relay.mx_lost("421");
                    mx_buf.clear();
                    return;
                }
            }
            MxStep::CheckSilence => {
                assert!(owed && !quiet);
                quiet = true;
            }
            MxStep::NeedMore => {
                assert!(owed);
                return;
            }
            MxStep::Idle => {
                assert!(!owed);
                mx_buf.clear();
                return;
            }
            MxStep::Violation(_) => {
                assert!(!relay.awaiting_mx());
                assert!(matches!(
                    relay.pool_state(),
                    crate::smtp::PoolState::Unusable(_)
                ));
                mx_buf.clear();
                return;
            }
        }
    }
}
