//! Property tests for the relay state machine.
//!
//! (a) arbitrary MTA bytes, MX replies and connection losses never panic the machine or break
//!     the step contract (checked by the shared driver);
//! (b) a valid session gives the same MX stream, MTA stream and events however its input is
//!     split into reads;
//! (c) whatever a body contains and however it is split, the bytes that reach the MX contain no
//!     end-of-data candidate that any lenient MX could take, other than the real terminator.

use proptest::prelude::*;

use super::driver::{drive, facts, judge, reply, Event};
use super::*;
use crate::smtp::Reply;

/// One step of a generated valid session.
#[derive(Clone, Debug)]
enum Item {
    Ehlo,
    Mail,
    Rcpt,
    Noop,
    Rset,
    Unknown,
    /// DATA accepted, with these body lines (no CR/LF inside; dot-stuffed when built).
    Data(Vec<Vec<u8>>),
    DataRejected,
    /// BDAT chunks (arbitrary bytes); the last one carries LAST.
    Bdat(Vec<Vec<u8>>),
    AuthLogin,
    StartTls,
    /// MAIL, this many RCPTs and BDAT chunks (the last with LAST; none: `BDAT 0 LAST`) in one
    /// pipelined flight, every reply owed only once all of it reached the MX (an MX that
    /// answers once the chunk is whole); `refused`: MAIL gets 552 and the rest 503.
    Flight {
        rcpts: usize,
        chunks: Vec<Vec<u8>>,
        refused: bool,
    },
}

fn item() -> impl Strategy<Value = Item> {
    let line = prop::collection::vec(
        prop::sample::select(vec![b'.', b'a', b' ', b':', 0xc3, b'Q']),
        0..12,
    );
    let chunk = prop::collection::vec(
        prop::sample::select(vec![b'.', b'\r', b'\n', b'D', b'Q', b' ']),
        0..20,
    );
    prop_oneof![
        Just(Item::Ehlo),
        Just(Item::Mail),
        Just(Item::Rcpt),
        Just(Item::Noop),
        Just(Item::Rset),
        Just(Item::Unknown),
        prop::collection::vec(line, 0..6).prop_map(Item::Data),
        Just(Item::DataRejected),
        prop::collection::vec(chunk.clone(), 0..4).prop_map(Item::Bdat),
        Just(Item::AuthLogin),
        Just(Item::StartTls),
        (1usize..3, prop::collection::vec(chunk, 0..3), any::<bool>()).prop_map(
            |(rcpts, chunks, refused)| Item::Flight {
                rcpts,
                chunks,
                refused
            }
        ),
    ]
}

/// A generated session: MTA input, expected MX stream, MX replies (each with the MX stream
/// length that must have been forwarded before it can be given), expected events.
struct Session {
    input: Vec<u8>,
    to_mx: Vec<u8>,
    replies: Vec<(usize, Reply)>,
    events: Vec<Event>,
}

impl Session {
    fn build(items: &[Item]) -> Session {
        let mut s = Session {
            input: Vec::new(),
            to_mx: Vec::new(),
            replies: Vec::new(),
            events: Vec::new(),
        };
        for it in items {
            match it {
                Item::Ehlo => s.cmd(b"EHLO mta.example\r\n", "250-mx\r\n250 PIPELINING\r\n"),
                Item::Mail => s.cmd(b"MAIL FROM:<a@example.org>\r\n", "250 2.1.0 ok\r\n"),
                Item::Rcpt => s.cmd(b"RCPT TO:<b@example.net>\r\n", "250 2.1.5 ok\r\n"),
                Item::Noop => s.cmd(b"NOOP\r\n", "250 ok\r\n"),
                Item::Rset => s.cmd(b"RSET\r\n", "250 reset\r\n"),
                Item::Unknown => s.cmd(b"XYZZY\r\n", "500 5.5.1 unknown\r\n"),
                Item::DataRejected => s.cmd(b"DATA\r\n", "554 no valid recipients\r\n"),
                Item::Data(lines) => {
                    s.cmd(b"DATA\r\n", "354 go ahead\r\n");
                    let mut body = Vec::new();
                    for line in lines {
                        if line.first() == Some(&b'.') {
                            body.push(b'.');
                        }
                        body.extend_from_slice(line);
                        body.extend_from_slice(b"\r\n");
                    }
                    body.extend_from_slice(b".\r\n");
                    s.cmd(&body, "250 2.0.0 queued\r\n");
                }
                Item::Bdat(chunks) => {
                    if chunks.is_empty() {
                        s.cmd(b"BDAT 0 LAST\r\n", "250 2.0.0 queued\r\n");
                    }
                    for (i, chunk) in chunks.iter().enumerate() {
                        let last = if i + 1 == chunks.len() { " LAST" } else { "" };
                        let mut bytes = format!("BDAT {}{last}\r\n", chunk.len()).into_bytes();
                        bytes.extend_from_slice(chunk);
                        s.cmd(&bytes, "250 2.0.0 chunk ok\r\n");
                    }
                }
                Item::AuthLogin => {
                    s.cmd(b"AUTH LOGIN\r\n", "334 VXNlcm5hbWU6\r\n");
                    s.cmd(b"QUIT\r\n", "334 UGFzc3dvcmQ6\r\n");
                    s.cmd(b"cGFzcw==\r\n", "235 2.7.0 ok\r\n");
                }
                Item::StartTls => {
                    s.input.extend_from_slice(b"STARTTLS\r\n");
                    s.events.push(Event::Local(STARTTLS_REFUSED.to_vec()));
                }
                Item::Flight {
                    rcpts,
                    chunks,
                    refused,
                } => s.flight(*rcpts, chunks, *refused),
            }
        }
        s.input.extend_from_slice(b"QUIT\r\n");
        s.events.push(Event::Quit);
        s
    }

    /// A pipelined flight (see [`Item::Flight`]), each reply given once its unit was
    /// forwarded; `Session::units` marks where each unit ends.
    fn flight(&mut self, rcpts: usize, chunks: &[Vec<u8>], refused: bool) {
        let (ok, no) = if refused {
            ("552 5.3.4 too big\r\n", "503 5.5.1 need MAIL\r\n")
        } else {
            ("250 2.1.0 ok\r\n", "250 ok\r\n")
        };
        self.cmd(b"MAIL FROM:<a@example.org>\r\n", ok);
        for _ in 0..rcpts {
            self.cmd(b"RCPT TO:<b@example.net>\r\n", no);
        }
        if chunks.is_empty() {
            self.cmd(b"BDAT 0 LAST\r\n", no);
        }
        for (i, chunk) in chunks.iter().enumerate() {
            let last = if i + 1 == chunks.len() { " LAST" } else { "" };
            let mut bytes = format!("BDAT {}{last}\r\n", chunk.len()).into_bytes();
            bytes.extend_from_slice(chunk);
            self.cmd(&bytes, no);
        }
    }

    /// Bytes forwarded verbatim and answered by one MX reply.
    fn cmd(&mut self, bytes: &[u8], answer: &str) {
        self.input.extend_from_slice(bytes);
        self.to_mx.extend_from_slice(bytes);
        self.replies.push((self.to_mx.len(), reply(answer)));
        self.events.push(Event::Mx(answer.as_bytes().to_vec()));
    }
}

fn split(input: &[u8], cuts: &[prop::sample::Index]) -> Vec<Vec<u8>> {
    let mut points: Vec<usize> = cuts.iter().map(|c| c.index(input.len() + 1)).collect();
    points.sort_unstable();
    let mut chunks = Vec::new();
    let mut from = 0;
    for p in points {
        chunks.push(input[from..p].to_vec());
        from = p;
    }
    chunks.push(input[from..].to_vec());
    chunks
}

/// Run `chunks` against the session's scripted MX.
fn run_session(s: &Session, chunks: &[Vec<u8>]) -> (Relay, super::driver::Run) {
    let mut relay = Relay::new(RelayLimits::default(), facts());
    let mut replies = s.replies.iter();
    let out = drive(&mut relay, chunks, &mut |forwarded| {
        let (needed, r) = replies.next().expect("machine awaited a reply nobody owes");
        assert!(
            forwarded.len() >= *needed,
            "reply awaited before its command was forwarded"
        );
        Some(r.clone())
    });
    (relay, out)
}

/// Where a lenient MX could see an end-of-data: the index of a `.` at a line start (after CR,
/// LF, or at the start) that is followed by CR or LF.
fn lenient_candidates(body: &[u8]) -> Vec<usize> {
    (0..body.len())
        .filter(|&i| {
            body[i] == b'.'
                && (i == 0 || matches!(body[i - 1], b'\r' | b'\n'))
                && matches!(body.get(i + 1), Some(b'\r' | b'\n'))
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn split_input_gives_same_session(
        items in prop::collection::vec(item(), 0..12),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..10),
    ) {
        let session = Session::build(&items);
        let (whole_relay, whole) = run_session(&session, std::slice::from_ref(&session.input));
        prop_assert_eq!(&whole.to_mx, &session.to_mx);
        prop_assert_eq!(&whole.events, &session.events);
        prop_assert!(whole.leftover.is_empty());

        let chunks = split(&session.input, &cuts);
        let (split_relay, parts) = run_session(&session, &chunks);
        prop_assert_eq!(&parts.to_mx, &whole.to_mx);
        prop_assert_eq!(&parts.to_mta, &whole.to_mta);
        prop_assert_eq!(&parts.events, &whole.events);
        prop_assert_eq!(split_relay.messages_accepted(), whole_relay.messages_accepted());
        prop_assert_eq!(split_relay.pool_state(), whole_relay.pool_state());
        prop_assert_eq!(split_relay.used_auth(), whole_relay.used_auth());
    }

    /// A flight read in pieces cut inside its units (inside a line or a chunk, never between
    /// two units, where the MTA may be waiting for replies) is forwarded whole before the
    /// machine awaits any reply: an MX that answers only once the chunk is whole is never
    /// waited for.
    #[test]
    fn a_flight_cut_inside_its_units_is_forwarded_whole_first(
        rcpts in 1usize..4,
        chunks in prop::collection::vec(
            prop::collection::vec(prop::sample::select(vec![b'.', b'\r', b'\n', b'B']), 1..20),
            0..3),
        refused in any::<bool>(),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..6),
    ) {
        let mut s = Session::build(&[]);
        s.input.clear();
        s.events.clear();
        s.flight(rcpts, &chunks, refused);
        let ends: Vec<usize> = s.replies.iter().map(|(end, _)| *end).collect();
        let inside: Vec<prop::sample::Index> = cuts
            .into_iter()
            .filter(|c| !ends.contains(&c.index(s.input.len() + 1)))
            .collect();
        let whole = s.input.len();
        let pieces = split(&s.input, &inside);
        let mut relay = Relay::new(RelayLimits::default(), facts());
        let mut replies = s.replies.iter();
        let out = drive(&mut relay, &pieces, &mut |forwarded| {
            let (needed, r) = replies.next().expect("machine awaited a reply nobody owes");
            assert!(forwarded.len() >= *needed, "reply awaited before its command was forwarded");
            assert_eq!(forwarded.len(), whole, "a reply awaited before the flight was whole");
            Some(r.clone())
        });
        prop_assert_eq!(&out.to_mx, &s.input);
        prop_assert_eq!(&out.events, &s.events);
    }

    #[test]
    fn arbitrary_input_never_panics(
        parts in prop::collection::vec(prop_oneof![
            prop::collection::vec(any::<u8>(), 0..16),
            prop::sample::select(vec![
                &b"DATA\r\n"[..], b"BDAT 3\r\n", b"BDAT 2 LAST\r\n", b"BDAT x\r\n", b"AUTH x\r\n",
                b"\r\n.\r\n", b"\n.\n", b"\r\n.\r", b".\r\n", b"QUIT\r\n", b"STARTTLS\r\n",
                b"MAIL FROM:<>\r\n", b"RSET\r\n", b"\r\n", b"\n",
            ]).prop_map(|t| t.to_vec()),
        ], 0..40),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..8),
        codes in prop::collection::vec(prop::sample::select(
            vec![250u16, 354, 334, 421, 550, 451, 221, 300, 235, 501]), 1..12),
        lose_at in prop::option::of(0usize..20),
        max_line in prop::sample::select(vec![0usize, 1, 5, 12, 4096]),
    ) {
        let input: Vec<u8> = parts.concat();
        let chunks = split(&input, &cuts);
        let mut relay = Relay::new(RelayLimits { max_command_line: max_line }, facts());
        let mut calls = 0usize;
        let _ = drive(&mut relay, &chunks, &mut |_| {
            calls += 1;
            if Some(calls) == lose_at {
                return None;
            }
            let code = codes[calls % codes.len()];
            Some(Reply::new_single(code, "x"))
        });
        let _ = relay.pool_state();
        let _ = relay.messages_accepted();
    }

    #[test]
    fn mx_never_sees_an_ambiguous_end_of_data(
        body in prop::collection::vec(
            prop::sample::select(vec![b'.', b'\r', b'\n', b'a']), 0..40),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..6),
    ) {
        let mut relay = Relay::new(RelayLimits::default(), facts());
        prop_assert_eq!(relay.poll_input(b"DATA\r\n"), InputStep::Forward(6));
        judge(&mut relay, &reply("354 go\r\n")).unwrap();
        let out = drive(&mut relay, &split(&body, &cuts), &mut |_| Some(reply("250 ok\r\n")));
        let candidates = lenient_candidates(&out.to_mx);
        let strict_end = (0..body.len()).find(|&i| {
            body[i..].starts_with(b".\r\n") && (i == 0 || body[..i].ends_with(b"\r\n"))
        });
        if out.events.contains(&Event::Abort) {
            prop_assert!(candidates.is_empty(), "{:?} -> {:?}", body, out.to_mx);
            prop_assert!(!out.events.contains(&Event::Mx(b"250 ok\r\n".to_vec())));
        } else if let Some(end) = strict_end {
            // Accepted: the MX got exactly the body through the real terminator, and the first
            // place a lenient MX could stop is that terminator.
            // (What follows the terminator is command lines, forwarded as such.)
            prop_assert_eq!(&out.to_mx[..end + 3], &body[..end + 3]);
            prop_assert_eq!(candidates.first(), Some(&end));
        } else {
            prop_assert!(candidates.is_empty());
            prop_assert!(body.starts_with(&out.to_mx));
        }
    }
}
