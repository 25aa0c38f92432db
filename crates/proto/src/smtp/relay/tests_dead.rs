//! Unit tests for dead mode, the smuggling defence and pool states.

use super::driver::{drive, facts, judge, reply, Event};
use super::*;
use crate::smtp::Reply;
use InputStep::{Discard, Forward, NeedInput, Quit};

fn relay() -> Relay {
    Relay::new(RelayLimits::default(), facts())
}

fn mx(r: &mut Relay, s: &str) -> ReplyEffect {
    judge(r, &reply(s)).unwrap()
}

fn script(replies: &[&str]) -> impl FnMut(&[u8]) -> Option<Reply> {
    let mut replies: Vec<Reply> = replies.iter().rev().map(|r| reply(r)).collect();
    move |_| replies.pop()
}

fn run(input: &[u8], replies: &[&str]) -> (Relay, super::driver::Run) {
    let mut r = relay();
    let out = drive(&mut r, &[input.to_vec()], &mut script(replies));
    (r, out)
}

fn in_body() -> Relay {
    let mut r = relay();
    assert_eq!(r.poll_input(b"DATA\r\n"), Forward(6));
    mx(&mut r, "354 go\r\n");
    r
}

#[test]
fn mx_421_then_dead_mode_synthetic_replies() {
    let mut r = relay();
    assert_eq!(
        r.poll_input(b"MAIL FROM:<>\r\nRCPT TO:<a@b>\r\nRCPT TO:<c@d>\r\n"),
        Forward(44)
    );
    assert_eq!(
        judge(&mut r, &reply("421 4.3.2 bye\r\n")),
        Ok(ReplyEffect::ServiceClosing)
    );
    assert!(!r.awaiting_mx());
    assert!(matches!(r.pool_state(), PoolState::Unusable(_)));
    r.mx_lost("MX went away");
    let synthetic = b"421 4.4.2 MX went away\r\n".to_vec();
    for _ in 0..2 {
        assert_eq!(
            r.poll_input(b"NOOP\r\n"),
            InputStep::Reply {
                consume: 0,
                reply: synthetic.clone()
            }
        );
    }
    assert_eq!(
        r.poll_input(b"NOOP\r\nDATA\r\n"),
        InputStep::Reply {
            consume: 6,
            reply: synthetic.clone()
        }
    );
    assert_eq!(
        r.poll_input(b"DATA\r\n"),
        InputStep::Reply {
            consume: 6,
            reply: synthetic.clone()
        }
    );
    assert_eq!(r.poll_input(b"BDAT 3 LAST\r\nabc"), Discard(13));
    assert_eq!(
        r.poll_input(b"abc"),
        InputStep::Reply {
            consume: 3,
            reply: synthetic.clone()
        }
    );
    assert_eq!(r.poll_input(b"QUI"), NeedInput);
    assert_eq!(r.poll_input(b"QUIT\r\n"), Quit(6));
    assert_eq!(
        r.poll_mx(b"250 ok\r\n", &Default::default(), true),
        MxStep::Idle
    );
}

#[test]
fn mx_lost_mid_body_discards_then_421() {
    let mut r = in_body();
    assert_eq!(r.poll_input(b"part one\r\n"), Forward(10));
    r.mx_lost("read timeout");
    assert_eq!(r.poll_input(b"more\n.\n\r\n"), Discard(9));
    let step = r.poll_input(b".\r\nQUIT\r\n");
    assert_eq!(
        step,
        InputStep::Reply {
            consume: 3,
            reply: b"421 4.4.2 read timeout\r\n".to_vec()
        }
    );
    assert_eq!(r.poll_input(b"QUIT\r\n"), Quit(6));
    assert_eq!(r.messages_accepted(), 0);
}

#[test]
fn mx_lost_mid_chunk_answers_earlier_commands_first() {
    let mut r = relay();
    assert_eq!(
        r.poll_input(b"MAIL FROM:<>\r\nBDAT 5 LAST\r\nab"),
        Forward(29)
    );
    r.mx_lost("");
    let lost = b"421 4.4.2 connection to the MX lost\r\n".to_vec();
    assert_eq!(
        r.poll_input(b"cd"),
        InputStep::Reply {
            consume: 0,
            reply: lost.clone()
        }
    );
    assert_eq!(r.poll_input(b"cd"), Discard(2));
    assert_eq!(
        r.poll_input(b"eQUIT\r\n"),
        InputStep::Reply {
            consume: 1,
            reply: lost
        }
    );
    assert_eq!(r.poll_input(b"QUIT\r\n"), Quit(6));
}

#[test]
fn mx_lost_while_awaiting_354() {
    let (r, out) = run(b"DATA\r\nQUIT\r\n", &[]);
    assert_eq!(
        out.events,
        vec![
            Event::Local(b"421 4.4.2 MX connection lost\r\n".to_vec()),
            Event::Quit
        ]
    );
    assert!(!r.awaiting_mx());
}

#[test]
fn smuggling_patterns_abort() {
    let patterns: [&[u8]; 8] = [
        b"evil\n.\r\nMAIL FROM:<x>\r\n",
        b"evil\n.\nMAIL FROM:<x>\r\n",
        b"evil\r\n.\nMAIL FROM:<x>\r\n",
        b"evil\r\n.\rMAIL FROM:<x>\r\n",
        b"evil\r\n.\r\rMAIL FROM:<x>\r\n",
        b"evil\r.\r\nMAIL FROM:<x>\r\n",
        b".\nMAIL FROM:<x>\r\n",
        b"\n.\r\nMAIL FROM:<x>\r\n",
    ];
    for pattern in patterns {
        let mut body = b"Subject: hi\r\n\r\n".to_vec();
        body.extend_from_slice(pattern);
        body.extend_from_slice(b"rest\r\n.\r\nNOOP\r\nQUIT\r\n");
        for cut in 0..body.len() {
            let mut r = in_body();
            let out = drive(
                &mut r,
                &[body[..cut].to_vec(), body[cut..].to_vec()],
                &mut script(&[]),
            );
            let name = String::from_utf8_lossy(pattern);
            assert_eq!(
                out.events,
                vec![
                    Event::Abort,
                    Event::Local(SMUGGLING_REJECTED.to_vec()),
                    Event::Local(b"421 4.4.2 aborted\r\n".to_vec()),
                    Event::Quit
                ],
                "{name:?} cut {cut}"
            );
            // The MX saw neither the smuggled command nor the byte completing the sequence.
            let seen = &body[..out.to_mx.len()];
            assert_eq!(out.to_mx, seen);
            assert!(!seen.windows(4).any(|w| w == b"MAIL"), "{name:?} cut {cut}");
            assert!(
                !seen.ends_with(b".\r") && !seen.ends_with(b".\n"),
                "{name:?} cut {cut}"
            );
            assert_eq!(
                r.pool_state(),
                PoolState::Unusable("message body had an ambiguous end-of-data sequence")
            );
        }
    }
}

#[test]
fn pool_state_transitions() {
    let mut r = relay();
    assert_eq!(r.pool_state(), PoolState::Clean);
    assert_eq!(
        r.poll_input(b"EHLO mta.test\r\nMAIL FROM:<>\r\n"),
        Forward(29)
    );
    assert_eq!(
        r.pool_state(),
        PoolState::Unusable("replies from the MX are outstanding")
    );
    mx(&mut r, "250 mx\r\n");
    mx(&mut r, "250 ok\r\n");
    assert_eq!(r.pool_state(), PoolState::NeedsRset);
    assert_eq!(r.poll_input(b"RSET\r\n"), Forward(6));
    mx(&mut r, "250 ok\r\n");
    assert_eq!(r.pool_state(), PoolState::Clean);
    // A failed MAIL does not open; EHLO closes.
    assert_eq!(
        r.poll_input(b"MAIL FROM:<>\r\nMAIL\tFROM:<>\r\n"),
        Forward(28)
    );
    mx(&mut r, "550 no\r\n");
    assert_eq!(
        r.pool_state(),
        PoolState::Unusable("replies from the MX are outstanding")
    );
    mx(&mut r, "250 lenient MX\r\n");
    assert_eq!(
        r.pool_state(),
        PoolState::NeedsRset,
        "MAIL-like line counted"
    );
    assert_eq!(r.poll_input(b"EHLO MTA.test\r\n"), Forward(15));
    mx(&mut r, "250 mx\r\n");
    assert_eq!(r.pool_state(), PoolState::Clean);
    // The final DATA reply closes the transaction whatever its code.
    assert_eq!(r.poll_input(b"MAIL FROM:<>\r\nDATA\r\n"), Forward(20));
    mx(&mut r, "250 ok\r\n");
    mx(&mut r, "354 go\r\n");
    assert_eq!(r.poll_input(b".\r\n"), Forward(3));
    mx(&mut r, "451 try later\r\n");
    assert_eq!(r.pool_state(), PoolState::Clean);
    assert_eq!(r.messages_accepted(), 0);
    // AUTH in flight.
    assert_eq!(r.poll_input(b"AUTH LOGIN\r\n"), Forward(12));
    mx(&mut r, "334 x\r\n");
    assert_eq!(
        r.pool_state(),
        PoolState::Unusable("AUTH was used on this connection")
    );
    // Dead.
    let mut r = relay();
    r.mx_lost("gone");
    assert_eq!(
        r.pool_state(),
        PoolState::Unusable("connection to the MX lost")
    );
}
