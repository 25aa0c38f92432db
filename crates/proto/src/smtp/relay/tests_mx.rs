//! Unit tests for the MX side ([`Relay::poll_mx`]), BDAT to an MX without CHUNKING, the MTA's
//! own EHLO/HELO, and the over-long AUTH response.

use super::driver::facts;
use super::*;
use crate::smtp::reply::{ReplyError, ReplyLimits};
use InputStep::{AbortMx, AwaitMx, Discard, Forward, NeedInput};

fn relay() -> Relay {
    Relay::new(RelayLimits::default(), facts())
}

fn poll(r: &mut Relay, input: &[u8], quiet: bool) -> MxStep {
    r.poll_mx(input, &ReplyLimits::default(), quiet)
}

fn relayed(consume: usize) -> MxStep {
    MxStep::Relay {
        consume,
        effect: ReplyEffect::Continue,
    }
}

/// The synthetic reply the MTA gets next for an owed reply.
fn owed_reply(r: &mut Relay) -> Vec<u8> {
    match r.poll_input(b"") {
        InputStep::Reply { consume: 0, reply } => reply,
        other => panic!("expected a synthetic reply, got {other:?}"),
    }
}

#[test]
fn a_stray_reply_after_354_is_refused_with_the_354() {
    let mut r = relay();
    let cmds = b"MAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nDATA\r\n";
    assert_eq!(r.poll_input(cmds), Forward(cmds.len()));
    let mx = b"250 a\r\n250 b\r\n354 go ahead\r\n250 2.0.0 stray\r\n";
    assert_eq!(poll(&mut r, mx, false), relayed(7));
    assert_eq!(poll(&mut r, &mx[7..], false), relayed(7));
    let step = poll(&mut r, &mx[14..], false);
    assert!(
        matches!(
            &step,
            MxStep::Violation(RelayError::TrailingData { command: "DATA", start })
                if start.starts_with("250 2.0.0 stray")
        ),
        "{step:?}"
    );
    // Not in body mode: the MTA's next bytes are commands again, after its 421 for DATA.
    assert!(!r.in_message());
    assert!(owed_reply(&mut r).starts_with(b"421 4.4.2 "));
    assert!(matches!(r.pool_state(), PoolState::Unusable(_)));
    assert_eq!(r.messages_accepted(), 0);
}

#[test]
fn an_extra_reply_after_mail_never_answers_rcpt() {
    let mut r = relay();
    let cmds = b"MAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\n";
    assert_eq!(r.poll_input(cmds), Forward(cmds.len()));
    let mx = b"250 mail\r\n250 extra\r\n550 5.1.1 no such user\r\n";
    assert_eq!(poll(&mut r, mx, false), relayed(10));
    // "250 extra" would answer RCPT, but the refusal follows it: out of sync.
    assert!(matches!(
        poll(&mut r, &mx[10..], false),
        MxStep::Violation(RelayError::TrailingData {
            command: "a command",
            ..
        })
    ));
    assert!(owed_reply(&mut r).starts_with(b"421 4.4.2 "));
}

#[test]
fn the_last_reply_owed_waits_for_a_look_at_the_mx() {
    let mut r = relay();
    assert_eq!(r.poll_input(b"NOOP\r\n"), Forward(6));
    assert_eq!(poll(&mut r, b"250 ok\r\n", false), MxStep::CheckSilence);
    assert!(r.awaiting_mx(), "nothing accepted yet");
    // The look found a stray reply behind it.
    assert!(matches!(
        poll(&mut r, b"250 ok\r\n250 stray\r\n", false),
        MxStep::Violation(RelayError::TrailingData { .. })
    ));
    // The look found nothing: accepted.
    let mut r = relay();
    assert_eq!(r.poll_input(b"NOOP\r\n"), Forward(6));
    assert_eq!(poll(&mut r, b"250 ok\r\n", false), MxStep::CheckSilence);
    assert_eq!(poll(&mut r, b"250 ok\r\n", true), relayed(8));
    assert!(!r.awaiting_mx());
    assert_eq!(poll(&mut r, b"", false), MxStep::Idle);
    assert_eq!(r.pool_state(), PoolState::Clean);
}

#[test]
fn bytes_when_nothing_is_owed_kill() {
    let mut r = relay();
    assert_eq!(poll(&mut r, b"", true), MxStep::Idle);
    let step = poll(&mut r, b"4", true);
    assert!(
        matches!(&step, MxStep::Violation(RelayError::Unsolicited { start }) if start == "4"),
        "{step:?}"
    );
    assert!(step_text(&step).contains("no reply was owed"));
    assert!(matches!(r.pool_state(), PoolState::Unusable(_)));
    assert_eq!(
        r.poll_input(b"MAIL FROM:<>\r\n"),
        InputStep::Reply {
            consume: 14,
            reply: b"421 4.4.2 MX sent data when no reply was owed\r\n".to_vec()
        }
    );
}

fn step_text(step: &MxStep) -> String {
    match step {
        MxStep::Violation(e) => e.to_string(),
        other => format!("{other:?}"),
    }
}

#[test]
fn malformed_or_over_long_replies_kill() {
    let mut r = relay();
    assert_eq!(r.poll_input(b"NOOP\r\n"), Forward(6));
    assert!(matches!(
        poll(&mut r, b"hello\r\n", false),
        MxStep::Violation(RelayError::BadReply(ReplyError::BadCode { .. }))
    ));
    let mut r = relay();
    assert_eq!(r.poll_input(b"NOOP\r\n"), Forward(6));
    let limits = ReplyLimits {
        max_line: 4096,
        max_lines: 2,
    };
    assert!(matches!(
        r.poll_mx(b"250-a\r\n250-b\r\n", &limits, false),
        MxStep::Violation(RelayError::BadReply(ReplyError::TooManyLines { limit: 2 }))
    ));
    assert!(owed_reply(&mut r).starts_with(b"421 4.4.2 "));
}

#[test]
fn a_reply_arriving_byte_by_byte() {
    let mut r = relay();
    assert_eq!(r.poll_input(b"NOOP\r\nNOOP\r\n"), Forward(12));
    let mx = b"250-first\r\n250 line\r\n250 second\r\n";
    for end in 0..21 {
        assert_eq!(poll(&mut r, &mx[..end], false), MxStep::NeedMore, "{end}");
    }
    assert_eq!(poll(&mut r, &mx[..22], false), relayed(21));
    let rest = &mx[21..];
    for end in 0..rest.len() {
        assert_eq!(poll(&mut r, &rest[..end], false), MxStep::NeedMore);
    }
    assert_eq!(poll(&mut r, rest, false), MxStep::CheckSilence);
    assert_eq!(poll(&mut r, rest, true), relayed(rest.len()));
}

#[test]
fn a_421_is_relayed_then_the_machine_is_dead() {
    let mut r = relay();
    assert_eq!(r.poll_input(b"MAIL FROM:<>\r\nNOOP\r\n"), Forward(20));
    assert_eq!(
        poll(&mut r, b"421 4.3.2 bye\r\n", false),
        MxStep::Relay {
            consume: 15,
            effect: ReplyEffect::ServiceClosing
        }
    );
    assert_eq!(r.dead_reason(), Some("MX closed the session (421)"));
    assert!(owed_reply(&mut r).starts_with(b"421 4.4.2 "));
}

fn no_chunking() -> Relay {
    Relay::new(
        RelayLimits::default(),
        MxFacts {
            chunking: false,
            ehlo_name: "mta.test".into(),
        },
    )
}

#[test]
fn bdat_without_chunking_is_refused_and_its_chunk_never_forwarded() {
    let mut r = no_chunking();
    let chunk: &[u8] = b"RSET\r\nMAIL FROM:<x@evil>\r\nRCPT TO:<y@z>\r\nDATA\r\nbody\r\n.\r\n";
    let bdat = format!("BDAT {} LAST\r\n", chunk.len());
    let mut input = b"MAIL FROM:<a@x>\r\n".to_vec();
    input.extend_from_slice(bdat.as_bytes());
    input.extend_from_slice(chunk);
    input.extend_from_slice(b"NOOP\r\n");
    // MAIL goes; BDAT waits for MAIL's reply (replies stay in order).
    assert_eq!(r.poll_input(&input), Forward(17));
    let rest = &input[17..];
    assert_eq!(r.poll_input(rest), AwaitMx);
    assert_eq!(poll(&mut r, b"250 ok\r\n", true), relayed(8));
    assert_eq!(
        r.poll_input(rest),
        InputStep::Reply {
            consume: bdat.len() + chunk.len(),
            reply: BDAT_REFUSED.to_vec()
        }
    );
    assert!(BDAT_REFUSED.starts_with(b"502 5.5.1 "));
    assert_eq!(r.poll_input(b"NOOP\r\n"), Forward(6));
    assert_eq!(
        r.pool_state(),
        PoolState::Unusable("replies from the MX are outstanding")
    );
}

#[test]
fn a_refused_chunk_across_reads_and_the_mta_leaving_in_it() {
    let mut r = no_chunking();
    assert_eq!(r.poll_input(b"BDAT 10\r\n0123"), Discard(13));
    assert!(
        !r.in_message(),
        "the MX saw nothing: leaving now is no unfinished message"
    );
    assert_eq!(r.pool_state(), PoolState::Clean);
    assert_eq!(r.poll_input(b""), NeedInput);
    assert_eq!(r.poll_input(b"45"), Discard(2));
    assert_eq!(
        r.poll_input(b"6789BDAT 0 LAST\r\nQUIT\r\n"),
        InputStep::Reply {
            consume: 4,
            reply: BDAT_REFUSED.to_vec()
        }
    );
    assert_eq!(
        r.poll_input(b"BDAT 0 LAST\r\nQUIT\r\n"),
        InputStep::Reply {
            consume: 13,
            reply: BDAT_REFUSED.to_vec()
        }
    );
    assert_eq!(r.poll_input(b"QUIT\r\n"), InputStep::Quit(6));
    assert_eq!(r.messages_accepted(), 0);
}

#[test]
fn the_mtas_own_ehlo_decides_whether_the_connection_can_be_pooled() {
    let hello = |line: &[u8]| {
        let mut r = relay();
        assert_eq!(r.poll_input(line), Forward(line.len()));
        assert_eq!(poll(&mut r, b"250 mx\r\n", true), relayed(8));
        r.pool_state()
    };
    assert_eq!(hello(b"EHLO mta.test\r\n"), PoolState::Clean);
    assert_eq!(hello(b"ehlo  MTA.Test \r\n"), PoolState::Clean);
    let renamed = PoolState::Unusable("the MTA changed the EHLO name");
    assert_eq!(hello(b"EHLO other.test\r\n"), renamed);
    assert_eq!(hello(b"EHLO\r\n"), renamed);
    assert_eq!(hello(b"EHLO mta.test.evil\r\n"), renamed);
    assert_eq!(hello(b"HELO other.test\r\n"), renamed);
    assert_eq!(
        hello(b"HELO mta.test\r\n"),
        PoolState::Unusable("the MTA sent HELO: the MX no longer speaks ESMTP here")
    );
}

#[test]
fn an_over_long_auth_response_cancels_the_exchange() {
    let mut r = Relay::new(
        RelayLimits {
            max_command_line: 16,
        },
        facts(),
    );
    assert_eq!(r.poll_input(b"AUTH LOGIN\r\n"), Forward(12));
    assert_eq!(poll(&mut r, b"334 VXNlcm5hbWU6\r\n", true), relayed(18));
    let long = [b'x'; 40];
    assert_eq!(r.poll_input(&long), AbortMx);
    assert_eq!(
        r.dead_reason(),
        Some("AUTH exchange cancelled: response line too long")
    );
    r.mx_lost("AUTH exchange cancelled: response line too long");
    assert_eq!(r.poll_input(&long), Discard(40));
    assert_eq!(
        r.poll_input(b"zz\r\nMAIL FROM:<>\r\n"),
        InputStep::Reply {
            consume: 4,
            reply: LINE_TOO_LONG.to_vec()
        }
    );
    // The next line is a command again (answered by the dead machine), never AUTH data.
    assert_eq!(
        r.poll_input(b"MAIL FROM:<>\r\n"),
        InputStep::Reply {
            consume: 14,
            reply: b"421 4.4.2 AUTH exchange cancelled: response line too long\r\n".to_vec()
        }
    );
    assert!(matches!(r.pool_state(), PoolState::Unusable(_)));
}
