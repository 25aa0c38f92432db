//! Unit tests for the relay state machine.

use super::driver::{drive, facts, judge, reply, Event, Run};
use super::*;
use crate::smtp::{Reply, ReplyLimits};
use InputStep::{AbortMx, AwaitMx, Discard, Forward, NeedInput, Quit};

/// An MX that answers from a list, in order.
fn script(replies: &[&str]) -> impl FnMut(&[u8]) -> Option<Reply> {
    let mut replies: Vec<Reply> = replies.iter().rev().map(|r| reply(r)).collect();
    move |_| replies.pop()
}

fn relay() -> Relay {
    Relay::new(RelayLimits::default(), facts())
}

fn run(input: &[u8], replies: &[&str]) -> (Relay, Run) {
    let mut r = relay();
    let out = drive(&mut r, &[input.to_vec()], &mut script(replies));
    (r, out)
}

fn mx(r: &mut Relay, s: &str) -> ReplyEffect {
    judge(r, &reply(s)).unwrap()
}

#[test]
fn pipelined_batch_is_one_forward() {
    let mut r = relay();
    let input =
        b"MAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nRCPT TO:<c@y>\r\nNOOP\r\nVRFY z\r\n\r\nXYZ\r\n";
    assert_eq!(r.poll_input(input), Forward(input.len()));
    assert_eq!(r.poll_input(b""), AwaitMx);
    for _ in 0..6 {
        assert!(r.awaiting_mx());
        assert_eq!(mx(&mut r, "250 ok\r\n"), ReplyEffect::Continue);
    }
    assert_eq!(r.poll_input(b""), AwaitMx);
    mx(&mut r, "500 what\r\n");
    assert!(!r.awaiting_mx());
    assert_eq!(r.poll_input(b""), NeedInput);
    assert_eq!(r.pool_state(), PoolState::NeedsRset);
}

#[test]
fn incomplete_line_waits_for_input_or_owed_reply() {
    let mut r = relay();
    assert_eq!(r.poll_input(b"NOOP"), NeedInput);
    assert_eq!(r.poll_input(b"NOOP\r\nRSE"), Forward(6));
    // Mid-line the MTA owes the rest of the line: it comes before the reply owed.
    assert_eq!(r.poll_input(b"RSE"), NeedInput);
    assert!(r.awaiting_mx());
    // With whole lines sent, the MTA may be waiting for the replies.
    assert_eq!(r.poll_input(b""), AwaitMx);
    mx(&mut r, "250 ok\r\n");
    assert_eq!(r.poll_input(b"RSE"), NeedInput);
    assert!(matches!(
        judge(&mut r, &reply("250 x\r\n")),
        Err(RelayError::Unsolicited { .. })
    ));
}

#[test]
fn data_sync_point_with_body_in_same_input() {
    let mut r = relay();
    let input = b"MAIL FROM:<>\r\nRCPT TO:<b@y>\r\nDATA\r\nSubject: x\r\n\r\nhi\r\n.\r\nQUIT\r\n";
    assert_eq!(r.poll_input(input), Forward(35));
    let rest = &input[35..];
    for _ in 0..2 {
        assert_eq!(r.poll_input(rest), AwaitMx);
        mx(&mut r, "250 ok\r\n");
    }
    assert_eq!(r.poll_input(rest), AwaitMx, "body bytes must wait for 354");
    mx(&mut r, "354 go ahead\r\n");
    assert_eq!(r.pool_state(), PoolState::Unusable("inside a message body"));
    let body_len = rest.len() - 6;
    assert_eq!(r.poll_input(rest), Forward(body_len));
    assert_eq!(r.poll_input(b"QUIT\r\n"), AwaitMx);
    mx(&mut r, "250 2.0.0 queued\r\n");
    assert_eq!(r.messages_accepted(), 1);
    assert_eq!(r.poll_input(b"QUIT\r\n"), Quit(6));
    assert_eq!(r.pool_state(), PoolState::Clean);
}

#[test]
fn data_rejected_returns_to_command_mode() {
    let (r, out) = run(
        b"DATA\r\nNOOP\r\n.\r\nQUIT\r\n",
        &["554 no valid recipients\r\n", "250 ok\r\n", "500 eh\r\n"],
    );
    assert_eq!(out.to_mx, b"DATA\r\nNOOP\r\n.\r\n");
    assert_eq!(out.events.last(), Some(&Event::Quit));
    assert_eq!(r.messages_accepted(), 0);
}

#[test]
fn pipelining_after_end_of_data_is_one_forward() {
    let mut r = relay();
    assert_eq!(r.poll_input(b"DATA\r\n"), Forward(6));
    mx(&mut r, "354 go\r\n");
    let input = b"a\r\n.\r\nMAIL FROM:<>\r\nRCPT TO:<x@y>\r\nQUIT\r\n";
    assert_eq!(r.poll_input(input), Forward(input.len() - 6));
    assert_eq!(r.poll_input(b"QUIT\r\n"), AwaitMx);
    mx(&mut r, "250 queued\r\n");
    mx(&mut r, "250 ok\r\n");
    mx(&mut r, "250 ok\r\n");
    assert_eq!(r.poll_input(b"QUIT\r\n"), Quit(6));
    assert_eq!(r.pool_state(), PoolState::NeedsRset);
}

/// Drive a relay into body mode.
fn in_body() -> Relay {
    let mut r = relay();
    assert_eq!(r.poll_input(b"DATA\r\n"), Forward(6));
    mx(&mut r, "354 go\r\n");
    r
}

#[test]
fn empty_body() {
    let mut r = in_body();
    assert_eq!(r.poll_input(b".\r\nNOOP\r\n"), Forward(9));
    mx(&mut r, "250 ok\r\n");
    mx(&mut r, "250 ok\r\n");
    assert_eq!(r.messages_accepted(), 1);
}

#[test]
fn terminator_split_at_every_position() {
    let body: &[u8] = b"Subject: x\r\n\r\n..leading dot\r\n.\r\nNOOP\r\n";
    let data_end = body.len() - 6;
    for cut in 0..=body.len() {
        let mut r = in_body();
        let out = drive(
            &mut r,
            &[body[..cut].to_vec(), body[cut..].to_vec()],
            &mut script(&["250 queued\r\n", "250 ok\r\n"]),
        );
        assert_eq!(out.to_mx, body, "cut {cut}");
        assert_eq!(
            out.events,
            vec![
                Event::Mx(b"250 queued\r\n".to_vec()),
                Event::Mx(b"250 ok\r\n".to_vec())
            ]
        );
        assert_eq!(r.messages_accepted(), 1, "cut {cut}");
        // And by hand: the first part never completes the body on its own.
        let mut r = in_body();
        let first = r.poll_input(&body[..cut]);
        if cut < data_end {
            assert!(
                matches!(first, Forward(_) | NeedInput),
                "cut {cut}: {first:?}"
            );
            assert!(!r.awaiting_mx(), "cut {cut}");
        }
    }
}

#[test]
fn dot_stuffed_lines_are_not_terminators() {
    let mut r = in_body();
    let body = b"..\r\n...\r\n..x\r\n.x\r\n";
    assert_eq!(r.poll_input(body), Forward(body.len()));
    assert!(!r.awaiting_mx());
    assert_eq!(r.poll_input(b""), NeedInput);
    assert_eq!(r.poll_input(b".\r\n"), Forward(3));
    assert!(r.awaiting_mx());
}

#[test]
fn crlf_dot_cr_is_held_back_until_decided() {
    let mut r = in_body();
    assert_eq!(r.poll_input(b"a\r\n.\r"), Forward(4));
    assert_eq!(r.poll_input(b"\r"), NeedInput);
    assert_eq!(r.poll_input(b"\r\n"), Forward(2));
    assert!(r.awaiting_mx());
    let mut r = in_body();
    assert_eq!(r.poll_input(b"a\r\n.\r"), Forward(4));
    assert_eq!(r.poll_input(b"\rX"), AbortMx);
}

#[test]
fn bdat_chunk_is_opaque() {
    let chunk: &[u8] = b"x\r\n.\r\nQUIT\r\nDATA\r\nAUTH x\r\nSTARTTLS\r\n";
    let mut input = b"MAIL FROM:<>\r\nRCPT TO:<a@b>\r\n".to_vec();
    input.extend_from_slice(format!("BDAT {}\r\n", chunk.len()).as_bytes());
    input.extend_from_slice(chunk);
    input.extend_from_slice(b"BDAT 3 LAST\r\n\n.\nQUIT\r\n");
    let mut r = relay();
    assert_eq!(r.poll_input(&input), Forward(input.len() - 6));
    assert_eq!(r.poll_input(b"QUIT\r\n"), AwaitMx);
    for _ in 0..4 {
        mx(&mut r, "250 ok\r\n");
    }
    assert_eq!(r.messages_accepted(), 1);
    assert_eq!(r.pool_state(), PoolState::Clean);
    assert_eq!(r.poll_input(b"QUIT\r\n"), Quit(6));
}

#[test]
fn bdat_chunk_across_reads_and_zero_size() {
    let mut r = relay();
    assert_eq!(
        r.poll_input(b"MAIL FROM:<>\r\nBDAT 10\r\n1234"),
        Forward(27)
    );
    // Mid-chunk: more input is needed even though MAIL's reply is owed.
    assert_eq!(r.poll_input(b""), NeedInput);
    assert!(r.awaiting_mx());
    assert_eq!(
        r.pool_state(),
        PoolState::Unusable("replies from the MX are outstanding")
    );
    mx(&mut r, "250 ok\r\n");
    assert!(
        !r.awaiting_mx(),
        "BDAT reply not owed before its chunk is sent"
    );
    assert_eq!(r.pool_state(), PoolState::Unusable("inside a BDAT chunk"));
    assert_eq!(r.poll_input(b"567890BDAT 0 LAST\r\n"), Forward(19));
    assert_eq!(r.poll_input(b""), AwaitMx);
    mx(&mut r, "250 chunk\r\n");
    assert_eq!(
        r.pool_state(),
        PoolState::Unusable("replies from the MX are outstanding")
    );
    mx(&mut r, "250 message\r\n");
    assert_eq!(r.messages_accepted(), 1);
    assert_eq!(r.pool_state(), PoolState::Clean);
}

/// `MAIL`, `RCPT`, `BDAT n LAST` and the chunk in one flight, read in pieces (inside the
/// chunk, inside a command line): the machine asks for the MTA's bytes, not for the replies
/// owed, until the whole flight is forwarded.
#[test]
fn a_pipelined_bdat_flight_is_forwarded_whole_before_any_reply() {
    let flight = b"MAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nBDAT 10 LAST\r\n0123456789";
    let mut r = relay();
    assert_eq!(r.poll_input(flight), Forward(flight.len()));
    assert_eq!(r.poll_input(b""), AwaitMx);
    for cut in [20, 33, 40, 45] {
        let mut r = relay();
        let (a, b) = flight.split_at(cut);
        let Forward(n) = r.poll_input(a) else {
            panic!("cut {cut}: nothing forwarded");
        };
        assert_eq!(
            r.poll_input(&a[n..]),
            NeedInput,
            "cut {cut}: the MTA owes the rest"
        );
        assert!(r.awaiting_mx());
        let rest = [&a[n..], b].concat();
        assert_eq!(r.poll_input(&rest), Forward(rest.len()), "cut {cut}");
        assert_eq!(r.poll_input(b""), AwaitMx);
        for text in ["250 ok\r\n", "250 ok\r\n", "250 queued\r\n"] {
            mx(&mut r, text);
        }
        assert_eq!(r.messages_accepted(), 1);
        assert_eq!(r.pool_state(), PoolState::Clean);
    }
}

#[test]
fn bdat_error_reply_needs_rset() {
    let (r, out) = run(
        b"MAIL FROM:<>\r\nBDAT 2\r\nabBDAT 1 LAST\r\nc",
        &["250 ok\r\n", "552 too big\r\n", "554 failed\r\n"],
    );
    assert_eq!(out.events.len(), 3);
    assert_eq!(r.messages_accepted(), 0);
    assert_eq!(
        r.pool_state(),
        PoolState::NeedsRset,
        "RFC 3030: after a refused BDAT (LAST too) the state is indeterminate until RSET"
    );
    // A refused MAIL in a pipelined flight: RCPT and BDAT LAST refused too, the chunk
    // consumed as data; the refused BDAT still asks for a RSET.
    let (r, out) = run(
        b"MAIL FROM:<> SIZE=9\r\nRCPT TO:<b@y>\r\nBDAT 6 LAST\r\nRSET\r\n",
        &["552 too big\r\n", "503 need MAIL\r\n", "503 need MAIL\r\n"],
    );
    assert_eq!(out.events.len(), 3);
    assert_eq!(r.pool_state(), PoolState::NeedsRset);
    let (r, _) = run(
        b"MAIL FROM:<>\r\nBDAT 1 LAST\r\nc",
        &["250 ok\r\n", "250 queued\r\n"],
    );
    assert_eq!(r.messages_accepted(), 1);
    assert_eq!(
        r.pool_state(),
        PoolState::Clean,
        "an accepted BDAT LAST closes"
    );
    let (r, _) = run(
        b"MAIL FROM:<>\r\nBDAT 2\r\nab",
        &["250 ok\r\n", "552 too big\r\n"],
    );
    assert_eq!(r.pool_state(), PoolState::NeedsRset);
}

#[test]
fn malformed_bdat_is_forwarded_as_a_sync_point() {
    let mut r = relay();
    assert_eq!(r.poll_input(b"BDAT x\r\nNOOP\r\n"), Forward(8));
    assert_eq!(r.poll_input(b"NOOP\r\n"), AwaitMx);
    mx(&mut r, "501 syntax\r\n");
    assert_eq!(r.poll_input(b"NOOP\r\n"), Forward(6));
    // An MX that accepts what we could not parse disagrees about framing: dead.
    let mut r = relay();
    assert_eq!(r.poll_input(b"BDAT 10 \r\n0123456789"), Forward(10));
    let err = judge(&mut r, &reply("250 ok\r\n")).unwrap_err();
    assert!(matches!(err, RelayError::UnexpectedReply { code: 250, .. }));
    assert!(err.to_string().contains("out of sync"));
    assert!(matches!(
        r.poll_input(b"0123456789"),
        InputStep::Reply { consume: 0, .. }
    ));
}

#[test]
fn data_with_arguments_getting_354_is_refused() {
    let mut r = relay();
    assert_eq!(r.poll_input(b"DATA please\r\nbody\r\n"), Forward(13));
    assert_eq!(r.poll_input(b"body\r\n"), AwaitMx);
    assert!(judge(&mut r, &reply("354 go\r\n")).is_err());
    assert!(!r.awaiting_mx());
    assert!(matches!(r.pool_state(), PoolState::Unusable(_)));
    // The owed reply for the DATA line is now a synthetic 421.
    let step = r.poll_input(b"body\r\n");
    assert_eq!(
        step,
        InputStep::Reply {
            consume: 0,
            reply: b"421 4.4.2 MX protocol violation\r\n".to_vec()
        }
    );
}

#[test]
fn intermediate_reply_to_ordinary_command_kills() {
    let mut r = relay();
    assert_eq!(r.poll_input(b"NOOP\r\n"), Forward(6));
    assert!(judge(&mut r, &reply("354 go\r\n")).is_err());
    assert_eq!(
        r.poll_mx(b"250 ok\r\n", &ReplyLimits::default(), true),
        MxStep::Idle,
        "a dead machine reads nothing more"
    );
}

#[test]
fn auth_334_continuation() {
    let mut r = relay();
    assert_eq!(r.poll_input(b"AUTH LOGIN\r\ndXNlcg==\r\n"), Forward(12));
    assert!(r.used_auth());
    assert_eq!(r.poll_input(b"dXNlcg==\r\n"), AwaitMx);
    mx(&mut r, "334 VXNlcm5hbWU6\r\n");
    assert_eq!(
        r.pool_state(),
        PoolState::Unusable("AUTH was used on this connection")
    );
    // Response lines are data, even when they look like commands.
    assert_eq!(r.poll_input(b"QUIT\r\nSTARTTLS\r\n"), Forward(6));
    assert_eq!(r.poll_input(b"STARTTLS\r\n"), AwaitMx);
    mx(&mut r, "334 UGFzc3dvcmQ6\r\n");
    assert_eq!(r.poll_input(b"STARTTLS\r\n"), Forward(10));
    mx(&mut r, "235 2.7.0 ok\r\n");
    assert_eq!(r.poll_input(b"QUIT\r\n"), Quit(6));
    assert_eq!(
        r.pool_state(),
        PoolState::Unusable("AUTH was used on this connection")
    );
}

#[test]
fn auth_rejected_returns_to_commands() {
    let (r, out) = run(b"AUTH PLAIN AGEAYg==\r\nQUIT\r\n", &["535 no\r\n"]);
    assert!(r.used_auth());
    assert_eq!(out.to_mx, b"AUTH PLAIN AGEAYg==\r\n");
    assert_eq!(out.events.last(), Some(&Event::Quit));
}

#[test]
fn quit_waits_for_owed_replies() {
    let mut r = relay();
    assert_eq!(r.poll_input(b"NOOP\r\nRSET\r\nQUIT\r\n"), Forward(12));
    assert_eq!(r.poll_input(b"QUIT\r\n"), AwaitMx);
    mx(&mut r, "250 ok\r\n");
    assert_eq!(r.poll_input(b"QUIT\r\n"), AwaitMx);
    mx(&mut r, "250 ok\r\n");
    assert_eq!(r.poll_input(b"QUIT\r\nleftover"), Quit(6));
    assert_eq!(r.poll_input(b"quit\n"), Quit(5));
}

#[test]
fn starttls_is_refused_locally_after_owed_replies() {
    let mut r = relay();
    assert_eq!(
        r.poll_input(b"EHLO mta\r\nSTARTTLS\r\nNOOP\r\n"),
        Forward(10)
    );
    assert_eq!(r.poll_input(b"STARTTLS\r\nNOOP\r\n"), AwaitMx);
    mx(&mut r, "250 mx\r\n");
    assert_eq!(
        r.poll_input(b"STARTTLS\r\nNOOP\r\n"),
        InputStep::Reply {
            consume: 10,
            reply: STARTTLS_REFUSED.to_vec()
        }
    );
    assert_eq!(r.poll_input(b"NOOP\r\n"), Forward(6));
}

#[test]
fn over_long_line_is_discarded_and_answered() {
    let mut r = Relay::new(
        RelayLimits {
            max_command_line: 16,
        },
        facts(),
    );
    let long = [b'x'; 40];
    let mut input = b"NOOP\r\n".to_vec();
    input.extend_from_slice(&long);
    assert_eq!(r.poll_input(&input), Forward(6));
    assert_eq!(r.poll_input(&long), AwaitMx, "waits for owed replies first");
    mx(&mut r, "250 ok\r\n");
    assert_eq!(r.poll_input(&long), Discard(40));
    assert_eq!(r.pool_state(), PoolState::Unusable("discarding MTA input"));
    assert_eq!(r.poll_input(b""), NeedInput);
    assert_eq!(r.poll_input(b"yyy"), Discard(3));
    assert_eq!(
        r.poll_input(b"zz\r\nNOOP\r\n"),
        InputStep::Reply {
            consume: 4,
            reply: LINE_TOO_LONG.to_vec()
        }
    );
    assert_eq!(r.poll_input(b"NOOP\r\n"), Forward(6));
    // A complete line one byte too long; exactly at the limit is fine.
    let mut r = Relay::new(
        RelayLimits {
            max_command_line: 16,
        },
        facts(),
    );
    assert_eq!(
        r.poll_input(b"NOOP 7890123456\r\n"),
        InputStep::Reply {
            consume: 17,
            reply: LINE_TOO_LONG.to_vec()
        }
    );
    assert_eq!(r.poll_input(b"NOOP 789012345\r\n"), Forward(16));
}

#[test]
fn bare_lf_command_lines() {
    let (r, out) = run(b"NOOP\nDATA\n", &["250 ok\r\n", "354 go\r\n"]);
    assert_eq!(out.to_mx, b"NOOP\nDATA\n");
    assert_eq!(r.pool_state(), PoolState::Unusable("inside a message body"));
}
