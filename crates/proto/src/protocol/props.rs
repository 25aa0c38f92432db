//! Property tests for the request parser and the ready/failure reply parsers.
//!
//! (a) arbitrary bytes never panic any parser;
//! (b) a generated valid CONNECT, written with any key order, key and verb case, spacing and
//!     line ending, parses to exactly the request it was made from; every prefix of it parses
//!     without panicking, and a prefix cut inside the verb is refused;
//! (c) pipelined requests split into arbitrary chunks and cut into lines the way the session
//!     does give the same requests;
//! (d) a generated ready or failure reply, rendered and received in arbitrary chunks through
//!     the SMTP reply parser (as a client does), parses back to exactly what was rendered, and
//!     no strict prefix of it is taken for a complete reply.

use proptest::prelude::*;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use super::*;
use crate::smtp::{parse_reply, ReplyLimits};
use crate::tls_facts::TlsFacts;

fn ip() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        any::<[u8; 4]>().prop_map(|b| IpAddr::V4(Ipv4Addr::from(b))),
        any::<[u8; 16]>().prop_map(|b| IpAddr::V6(Ipv6Addr::from(b))),
    ]
}

fn hostname() -> impl Strategy<Value = String> {
    prop::collection::vec("[a-z0-9]([a-z0-9_-]{0,8}[a-z0-9])?", 1..4).prop_map(|l| l.join("."))
}

fn ehlo() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => hostname(),
        1 => ip().prop_map(|ip| match ip {
            IpAddr::V4(a) => format!("[{a}]"),
            IpAddr::V6(a) => format!("[IPv6:{a}]"),
        }),
    ]
}

fn policy() -> impl Strategy<Value = TlsPolicy> {
    prop::sample::select(vec![
        TlsPolicy::None,
        TlsPolicy::Opportunistic,
        TlsPolicy::Required,
        TlsPolicy::Verify,
    ])
}

fn destination() -> impl Strategy<Value = Destination> {
    prop_oneof![
        ip().prop_map(Destination::Ip),
        hostname()
            .prop_filter("not an IP", |h| h.parse::<IpAddr>().is_err())
            .prop_map(Destination::Host),
        hostname().prop_map(Destination::Domain),
    ]
}

/// A valid request, and for every parameter whether to write it out (optional ones only).
fn connect() -> impl Strategy<Value = (ConnectRequest, [bool; 7])> {
    (
        (ip(), destination(), 1..=u16::MAX, ehlo(), policy()),
        (
            prop::option::of(hostname()),
            any::<bool>(),
            any::<bool>(),
            any::<bool>(),
            prop::option::of(1..=u64::MAX),
        ),
        any::<[bool; 7]>(),
        prop::option::of(hostname()),
    )
        .prop_map(
            |(
                (source, dest, port, ehlo, tls),
                (tls_name, fallback, smtps, reuse, max),
                show,
                policy_domain,
            )| {
                // policy_domain= goes with host=<name> only.
                let policy_domain = policy_domain.filter(|_| matches!(dest, Destination::Host(_)));
                let mut c = ConnectRequest::new(source, dest, &ehlo);
                c.port = port;
                c.tls = tls;
                c.tls_name = tls_name;
                c.tls_fallback = fallback;
                c.smtps = smtps;
                c.reuse = reuse;
                c.reuse_max_messages = max;
                c.policy_domain = policy_domain;
                (c, show)
            },
        )
}

/// The `key=value` words of `c`; optional parameters at their default are left out unless
/// `show` says to write them.
fn words(c: &ConnectRequest, show: [bool; 7]) -> Vec<(String, String)> {
    let yn = |b: bool| if b { "yes" } else { "no" }.to_string();
    let mut w = vec![
        ("source".to_string(), c.source.to_string()),
        ("ehlo".to_string(), c.ehlo.clone()),
    ];
    w.push(match &c.dest {
        Destination::Ip(ip) => ("host".into(), ip.to_string()),
        Destination::Host(h) => ("host".into(), h.clone()),
        Destination::Domain(d) => ("domain".into(), d.clone()),
    });
    if show[0] || c.port != 25 {
        w.push(("port".into(), c.port.to_string()));
    }
    if show[1] || c.tls != TlsPolicy::Opportunistic {
        w.push(("tls".into(), c.tls.as_str().into()));
    }
    if let Some(n) = &c.tls_name {
        w.push(("tls_name".into(), n.clone()));
    }
    if show[2] || c.tls_fallback {
        w.push(("tls_fallback".into(), yn(c.tls_fallback)));
    }
    if show[3] || c.smtps != (c.port == 465) {
        w.push(("smtps".into(), yn(c.smtps)));
    }
    if show[4] || c.reuse {
        w.push(("reuse".into(), yn(c.reuse)));
    }
    if let Some(n) = c.reuse_max_messages {
        w.push(("reuse_max_messages".into(), n.to_string()));
    }
    if let Some(d) = &c.policy_domain {
        w.push(("policy_domain".into(), d.clone()));
    }
    w
}

/// Write a request line from its words with the given permutation, key case, spacing and
/// line ending.
fn write_line(
    verb_upper: bool,
    mut w: Vec<(String, String)>,
    order: &[usize],
    upper: &[bool],
    spaces: &[usize],
    ending: &str,
) -> Vec<u8> {
    let n = w.len();
    for (i, &j) in order.iter().enumerate() {
        w.swap(i % n, j % n);
    }
    let mut s = if verb_upper { "CONNECT" } else { "connect" }.to_string();
    for (i, (k, v)) in w.iter().enumerate() {
        s.push_str(&" ".repeat(1 + spaces.get(i).copied().unwrap_or(0)));
        if upper.get(i).copied().unwrap_or(false) {
            s.push_str(&k.to_ascii_uppercase());
        } else {
            s.push_str(k);
        }
        s.push('=');
        s.push_str(v);
    }
    s.push_str(ending);
    s.into_bytes()
}

fn valid_line() -> impl Strategy<Value = (ConnectRequest, Vec<u8>)> {
    (
        connect(),
        any::<bool>(),
        prop::collection::vec(0..16usize, 12),
        prop::collection::vec(any::<bool>(), 12),
        prop::collection::vec(0..3usize, 12),
        prop::sample::select(vec!["\r\n", "\n", ""]),
    )
        .prop_map(|((c, show), verb_upper, order, upper, spaces, ending)| {
            let line = write_line(verb_upper, words(&c, show), &order, &upper, &spaces, ending);
            (c, line)
        })
}

/// Cut `bytes` into chunks at the given sizes (the rest as the last chunk).
fn chunks(bytes: &[u8], sizes: &[usize]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut rest = bytes;
    for &n in sizes {
        let n = n.min(rest.len());
        let (a, b) = rest.split_at(n);
        out.push(a.to_vec());
        rest = b;
    }
    out.push(rest.to_vec());
    out
}

/// Receive `raw` in `parts` through the SMTP reply parser as a client does; assert that no
/// reply completes before the last byte, and return the one reply's code and line texts.
fn receive(raw: &[u8], parts: &[Vec<u8>]) -> (u16, Vec<Vec<u8>>) {
    let limits = ReplyLimits::default();
    let mut buf = Vec::new();
    let mut got = None;
    for p in parts {
        buf.extend_from_slice(p);
        match parse_reply(&buf, &limits) {
            Ok(Some((r, n))) => {
                assert_eq!(n, raw.len(), "a reply completed early at {n}");
                assert!(got.is_none());
                got = Some(r);
                buf.drain(..n);
            }
            Ok(None) => assert!(buf.len() < raw.len()),
            Err(e) => panic!("{e} after {} bytes", buf.len()),
        }
    }
    let r = got.expect("the reply never completed");
    assert_eq!(r.raw(), raw);
    (r.code(), r.lines().map(<[u8]>::to_vec).collect())
}

fn printable(max: usize) -> impl Strategy<Value = String> {
    prop::collection::vec(0x20u8..0x7f, 0..max)
        .prop_map(|b| String::from_utf8(b).unwrap_or_default())
}

/// A raw reply line as an MX may send it: any bytes but CR and LF.
fn raw_line() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(
        any::<u8>().prop_filter("no CR/LF", |b| *b != b'\r' && *b != b'\n'),
        0..40,
    )
}

fn socket_addr() -> impl Strategy<Value = SocketAddr> {
    (ip(), any::<u16>()).prop_map(|(ip, p)| SocketAddr::new(ip, p))
}

fn ready() -> impl Strategy<Value = ConnectReady> {
    let origin = prop_oneof![
        Just(Origin::New),
        (any::<u32>(), any::<u64>(), any::<u64>()).prop_map(|(a, u, m)| Origin::Reused {
            age: Duration::from_millis(u64::from(a)),
            uses: u,
            messages: m,
        }),
    ];
    let tls = prop::option::of(
        (
            "TLSv1\\.[23]",
            "[A-Z0-9_]{1,30}",
            any::<bool>(),
            printable(60),
            prop::collection::vec("[a-z0-9.*-]{1,20}", 0..4),
        )
            .prop_map(
                |(version, cipher, verified, verify_error, peer_names)| TlsFacts {
                    version,
                    cipher,
                    verified,
                    verify_error,
                    peer_names,
                },
            ),
    );
    (
        origin,
        prop::option::of(hostname()),
        socket_addr(),
        socket_addr(),
        tls,
        prop::option::of(printable(60)),
        prop::option::of(prop::sample::select(
            crate::protocol::reuse::Applied::ALL.to_vec(),
        )),
        prop::collection::vec(raw_line(), 0..4),
        prop::collection::vec(raw_line(), 0..6),
    )
        .prop_map(
            |(origin, mx_host, remote, local, tls, tls_note, tls_policy, banner, ehlo)| {
                ConnectReady {
                    origin,
                    mx_host,
                    remote,
                    local,
                    tls,
                    tls_note,
                    tls_policy,
                    banner,
                    ehlo,
                }
            },
        )
}

fn failure() -> impl Strategy<Value = Failure> {
    prop::sample::select(super::reply::ALL_FAILURES.to_vec())
}

fn failure_reply() -> impl Strategy<Value = FailureReply> {
    (
        failure(),
        printable(120),
        prop::collection::vec(raw_line(), 0..4),
    )
        .prop_map(|(f, text, mx)| FailureReply::new(f, text).with_mx_lines(mx))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_bytes_never_panic_the_parsers(
        bytes in prop::collection::vec(any::<u8>(), 0..300),
        code in 200u16..600,
    ) {
        let _ = parse_request(&bytes);
        let lines: Vec<&[u8]> = bytes.split(|&b| b == b'\n').collect();
        let _ = ConnectReady::parse(&lines);
        let parsed = FailureReply::parse(code, &lines);
        // (A reply of more than 128 lines is refused by the client's reply limits.)
        if let Some(f) = parsed.filter(|f| f.mx_lines.len() < 100) {
            // Whatever parsed renders to a reply that parses to the same rendering.
            let raw = f.render();
            let (c, texts) = receive(&raw, std::slice::from_ref(&raw));
            let refs: Vec<&[u8]> = texts.iter().map(Vec::as_slice).collect();
            let again = FailureReply::parse(c, &refs).expect("a rendered failure parses");
            prop_assert_eq!(again.render(), raw);
        }
    }

    #[test]
    fn printable_garbage_after_a_verb_never_panics(
        verb in prop::sample::select(vec!["AUTH", "CONNECT", "NOOP", "QUIT", "auth", "connect"]),
        rest in "[ -~]{0,200}",
    ) {
        let line = format!("{verb} {rest}\r\n");
        if let Ok(Request::Connect(c)) = parse_request(line.as_bytes()) {
            // A CONNECT that parses renders to a line that parses to the same request.
            prop_assert_eq!(parse_request(c.to_line().as_bytes()), Ok(Request::Connect(c)));
        }
    }

    #[test]
    fn a_valid_connect_parses_to_what_it_was_made_from((c, line) in valid_line()) {
        let mut want = c.clone();
        if let Destination::Host(h) | Destination::Domain(h) = &mut want.dest {
            *h = h.to_ascii_lowercase();
        }
        prop_assert_eq!(parse_request(&line), Ok(Request::Connect(want.clone())));
        prop_assert_eq!(parse_request(want.to_line().as_bytes()), Ok(Request::Connect(want)));
    }

    #[test]
    fn every_prefix_of_a_valid_connect_is_handled((_c, line) in valid_line()) {
        for cut in 0..line.len() {
            let r = parse_request(&line[..cut]);
            if cut < "CONNECT".len() {
                prop_assert!(r.is_err(), "{:?}", String::from_utf8_lossy(&line[..cut]));
            }
        }
    }

    #[test]
    fn pipelined_requests_survive_any_chunking(
        (c, connect_line) in valid_line(),
        sizes in prop::collection::vec(0..40usize, 0..20),
    ) {
        let mut all = b"AUTH 1 s3cret-s3cret\r\nnoop\n".to_vec();
        let mut connect_line = connect_line;
        if !connect_line.ends_with(b"\n") {
            connect_line.extend_from_slice(b"\r\n");
        }
        all.extend_from_slice(&connect_line);
        all.extend_from_slice(b"QUIT\r\n");
        // Cut into lines at LF as the session's line reader does, whatever the chunks.
        let mut buf = Vec::new();
        let mut got = Vec::new();
        for part in chunks(&all, &sizes) {
            buf.extend_from_slice(&part);
            while let Some(i) = buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = buf.drain(..=i).collect();
                prop_assert!(line.len() <= MAX_REQUEST_LINE);
                got.push(parse_request(&line));
            }
        }
        prop_assert!(buf.is_empty());
        prop_assert_eq!(got.len(), 4);
        prop_assert_eq!(
            &got[0],
            &Ok(Request::Auth { version: 1, secret: b"s3cret-s3cret".to_vec() })
        );
        prop_assert_eq!(&got[1], &Ok(Request::Noop));
        prop_assert!(matches!(&got[2], Ok(Request::Connect(p)) if p.source == c.source && p.port == c.port));
        prop_assert_eq!(&got[3], &Ok(Request::Quit));
    }

    #[test]
    fn a_ready_reply_survives_any_chunking(
        r in ready(),
        sizes in prop::collection::vec(0..64usize, 0..24),
    ) {
        let raw = r.render();
        let (code, texts) = receive(&raw, &chunks(&raw, &sizes));
        prop_assert_eq!(code, 250);
        let refs: Vec<&[u8]> = texts.iter().map(Vec::as_slice).collect();
        prop_assert_eq!(ConnectReady::parse(&refs), Ok(r));
    }

    #[test]
    fn every_prefix_of_a_ready_reply_parses_without_panic(r in ready()) {
        let raw = r.render();
        let lines: Vec<&[u8]> = raw.split(|&b| b == b'\n').collect();
        for n in 0..=lines.len() {
            let texts: Vec<&[u8]> = lines[..n].iter().map(|l| l.get(4..).unwrap_or(&[])).collect();
            let _ = ConnectReady::parse(&texts);
        }
    }

    #[test]
    fn a_failure_reply_survives_any_chunking(
        f in failure_reply(),
        sizes in prop::collection::vec(0..32usize, 0..16),
    ) {
        let raw = f.render();
        let (code, texts) = receive(&raw, &chunks(&raw, &sizes));
        prop_assert_eq!(code, f.failure.code().reply);
        let refs: Vec<&[u8]> = texts.iter().map(Vec::as_slice).collect();
        for n in 0..refs.len() {
            // Prefixes of the lines: never a panic, and a parse gives the right failure.
            if let Some(p) = FailureReply::parse(code, &refs[..n]) {
                prop_assert_eq!(p.failure, f.failure);
            }
        }
        prop_assert_eq!(FailureReply::parse(code, &refs), Some(f));
    }
}
