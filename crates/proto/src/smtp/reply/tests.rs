use super::*;

fn parse(buf: &[u8]) -> Result<Option<(Reply, usize)>, ReplyError> {
    parse_reply(buf, &ReplyLimits::default())
}

#[test]
fn single_line() {
    let (r, n) = parse(b"250 OK\r\nNEXT").unwrap().unwrap();
    assert_eq!(n, 8);
    assert_eq!(r.code(), 250);
    assert_eq!(r.raw(), b"250 OK\r\n");
    assert_eq!(r.lines().collect::<Vec<_>>(), vec![&b"OK"[..]]);
    assert_eq!(r.text(), "OK");
    assert!(r.is_positive() && !r.is_transient() && !r.is_permanent());
}

#[test]
fn multi_line_and_bare_lf_kept_verbatim() {
    let buf = b"250-mx.example\n250-PIPELINING\r\n250 SIZE 100\r\n354 x\r\n";
    let (r, n) = parse(buf).unwrap().unwrap();
    assert_eq!(n, 45);
    assert_eq!(r.raw(), &buf[..45]);
    assert_eq!(
        r.lines().collect::<Vec<_>>(),
        vec![&b"mx.example"[..], b"PIPELINING", b"SIZE 100"]
    );
    assert_eq!(r.text(), "mx.example / PIPELINING / SIZE 100");
}

#[test]
fn code_only_line() {
    let (r, n) = parse(b"250\r\n").unwrap().unwrap();
    assert_eq!((r.code(), n), (250, 5));
    assert_eq!(r.lines().collect::<Vec<_>>(), vec![&b""[..]]);
    let (r, _) = parse(b"421-a\r\n421\n").unwrap().unwrap();
    assert_eq!(r.code(), 421);
    assert!(r.is_transient());
    let (r, _) = parse(b"550 no\r\n").unwrap().unwrap();
    assert!(r.is_permanent() && !r.is_positive());
}

#[test]
fn incomplete() {
    assert_eq!(parse(b"").unwrap(), None);
    assert_eq!(parse(b"25").unwrap(), None);
    assert_eq!(parse(b"250-a\r\n250 b").unwrap(), None);
    assert_eq!(parse(b"250\r").unwrap(), None);
}

#[test]
fn malformed() {
    assert!(matches!(
        parse(b"hello\r\n"),
        Err(ReplyError::BadCode { .. })
    ));
    assert!(matches!(
        parse(b"150 x\r\n"),
        Err(ReplyError::BadCode { .. })
    ));
    assert!(matches!(parse(b"25\r\n"), Err(ReplyError::BadCode { .. })));
    assert!(matches!(parse(b"2x"), Err(ReplyError::BadCode { .. })));
    assert_eq!(parse(b"250x\r\n"), Err(ReplyError::BadSeparator));
    assert_eq!(parse(b"250\rx\r\n"), Err(ReplyError::BadSeparator));
    assert_eq!(parse(b"250_"), Err(ReplyError::BadSeparator));
    assert_eq!(
        parse(b"250-a\r\n251 b\r\n"),
        Err(ReplyError::CodeMismatch {
            first: 250,
            later: 251
        })
    );
    assert_eq!(
        parse(b"250-a\r\n251"),
        Err(ReplyError::CodeMismatch {
            first: 250,
            later: 251
        })
    );
}

#[test]
fn limits() {
    let limits = ReplyLimits {
        max_line: 10,
        max_lines: 2,
    };
    // exactly 10 bytes including CRLF is fine
    assert!(parse_reply(b"250 abcd\r\n", &limits).unwrap().is_some());
    assert_eq!(
        parse_reply(b"250 abcde\r\n", &limits),
        Err(ReplyError::LineTooLong { limit: 10 })
    );
    // incomplete line that already reached the limit
    assert_eq!(
        parse_reply(b"250 abcdef", &limits),
        Err(ReplyError::LineTooLong { limit: 10 })
    );
    assert_eq!(parse_reply(b"250 abcde", &limits), Ok(None));
    assert!(parse_reply(b"250-a\r\n250 b\r\n", &limits)
        .unwrap()
        .is_some());
    assert_eq!(
        parse_reply(b"250-a\r\n250-b\r\n", &limits),
        Err(ReplyError::TooManyLines { limit: 2 })
    );
    assert_eq!(
        parse_reply(b"250-a\r\n250-b\r\n250 c\r\n", &limits),
        Err(ReplyError::TooManyLines { limit: 2 })
    );
}

#[test]
fn new_single_builds_one_line() {
    let r = Reply::new_single(421, "4.4.2 gone\r\nQUIT");
    assert_eq!(r.raw(), b"421 4.4.2 gone  QUIT\r\n");
    assert_eq!(r.code(), 421);
    let (parsed, _) = parse(r.raw()).unwrap().unwrap();
    assert_eq!(parsed, r);
    assert_eq!(Reply::new_single(250, "").raw(), b"250\r\n");
}

#[test]
fn text_is_printable() {
    let (r, _) = parse(b"550 bad\x1b[0m\xff\r\n").unwrap().unwrap();
    assert_eq!(r.text(), "bad?[0m\u{fffd}");
    assert_eq!(r.to_string(), "550 bad?[0m\u{fffd}");
}

#[test]
fn error_messages_are_useful() {
    let e = parse(b"HTTP/1.1 400\r\n").unwrap_err();
    assert!(e.to_string().contains("HTTP/1.1 400"), "{e}");
}

mod props {
    use super::*;
    use proptest::prelude::*;

    fn valid_reply() -> impl Strategy<Value = Vec<u8>> {
        (
            200u16..600,
            prop::collection::vec(
                (prop::collection::vec(0x20u8..0x7f, 0..40), any::<bool>()),
                1..6,
            ),
        )
            .prop_map(|(code, lines)| {
                let mut out = Vec::new();
                let n = lines.len();
                for (i, (text, bare_lf)) in lines.into_iter().enumerate() {
                    out.extend_from_slice(code.to_string().as_bytes());
                    out.push(if i + 1 == n { b' ' } else { b'-' });
                    out.extend_from_slice(&text);
                    out.extend_from_slice(if bare_lf { b"\n" } else { b"\r\n" });
                }
                out
            })
    }

    proptest! {
        #[test]
        fn prefixes_need_more(reply in valid_reply()) {
            for i in 0..reply.len() {
                prop_assert_eq!(parse(&reply[..i]), Ok(None));
            }
            let (r, n) = parse(&reply).unwrap().unwrap();
            prop_assert_eq!(n, reply.len());
            prop_assert_eq!(r.raw(), &reply[..]);
        }

        /// Fed a growing buffer (what the caller appends between calls), the incremental
        /// scan decides exactly what `parse_reply` decides on each prefix.
        #[test]
        fn incremental_scan_matches_parse_reply(
            buf in prop::collection::vec(prop::sample::select(
                vec![b'2', b'5', b'0', b'-', b' ', b'\r', b'\n', b'x']), 0..120),
            cuts in prop::collection::vec(0usize..120, 0..12),
            max_line in 1usize..20, max_lines in 1usize..5,
        ) {
            let limits = ReplyLimits { max_line, max_lines };
            let mut ends: Vec<usize> = cuts.into_iter().filter(|&c| c <= buf.len()).collect();
            ends.push(buf.len());
            ends.sort_unstable();
            let mut scan = ReplyScan::default();
            for end in ends {
                let prefix = &buf[..end];
                let whole = parse_reply(prefix, &limits).map(|o| o.map(|(r, n)| (r.code(), n)));
                let got = scan.scan(prefix, &limits);
                prop_assert_eq!(&got, &whole);
                if !matches!(got, Ok(None)) {
                    break;
                }
            }
        }

        #[test]
        fn random_bytes_never_panic(buf in prop::collection::vec(any::<u8>(), 0..300),
                                    max_line in 0usize..50, max_lines in 0usize..5) {
            let limits = ReplyLimits { max_line, max_lines };
            if let Ok(Some((r, n))) = parse_reply(&buf, &limits) {
                prop_assert!(n <= buf.len());
                prop_assert_eq!(r.raw(), &buf[..n]);
                let _ = r.text();
                let _ = r.lines().count();
            }
        }
    }
}
