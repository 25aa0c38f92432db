//! The relay state machine driven by random MTA bytes, random MX replies and random losses of
//! the MX connection, the way the proxy's I/O loop drives it. Checks the step contract: never
//! a panic, steps within the input, progress, no forwarding after an abort, one reply per
//! AwaitMx, and a dead machine keeps answering by itself.

use crate::smtp::{parse_reply, InputStep, Relay, RelayLimits, ReplyEffect, ReplyLimits};

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

/// The `relay` target: the input read as a little program (see [`Input`]).
pub fn relay(data: &[u8]) {
    let mut input = Input { data };
    let max_line = 64 + usize::from(input.byte().unwrap_or(0));
    let mut relay = Relay::new(RelayLimits {
        max_command_line: max_line,
    });
    let reply_limits = ReplyLimits::default();
    let mut buf: Vec<u8> = Vec::new();
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
                // The MX: a listed reply, arbitrary bytes as a reply, or a lost connection.
                let op = input.byte().unwrap_or(0);
                let reply = match op % 8 {
                    0 => None,
                    1 | 2 => {
                        let n = usize::from(input.byte().unwrap_or(0) % 64);
                        let bytes = input.take(n).to_vec();
                        match parse_reply(&bytes, &reply_limits) {
                            Ok(Some((r, _))) => Some(r),
                            _ => None,
                        }
                    }
                    _ => {
                        let i = usize::from(input.byte().unwrap_or(0)) % REPLIES.len();
                        parse_reply(REPLIES[i], &reply_limits)
                            .ok()
                            .flatten()
                            .map(|(r, _)| r)
                    }
                };
                match reply {
                    Some(r) => match relay.on_mx_reply(&r) {
                        Ok(ReplyEffect::ServiceClosing) => relay.mx_lost("421"),
                        Ok(ReplyEffect::Continue) => {}
                        Err(_) => assert!(!relay.awaiting_mx()),
                    },
                    None => {
                        relay.mx_lost("lost");
                        assert!(!relay.awaiting_mx());
                    }
                }
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
            }
        }
    }
}
