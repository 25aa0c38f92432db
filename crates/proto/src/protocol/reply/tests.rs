use super::*;

fn lines(raw: &[u8]) -> (u16, Vec<Vec<u8>>) {
    let text = std::str::from_utf8(raw).unwrap();
    let code = text[..3].parse().unwrap();
    let ls = text
        .split("\r\n")
        .filter(|l| !l.is_empty())
        .map(|l| l.as_bytes()[4..].to_vec())
        .collect();
    (code, ls)
}

#[test]
fn codes_are_distinct() {
    let all: Vec<Failure> = ALL_FAILURES.to_vec();
    let mut codes: Vec<u16> = all.iter().map(|f| f.code().reply).collect();
    codes.sort();
    codes.dedup();
    assert_eq!(codes.len(), all.len());
    for f in all {
        let Code {
            reply: code, tag, ..
        } = f.code();
        assert_eq!(Failure::from_tag(tag, code), Some(f));
        assert_eq!(f.is_transient(), code < 500);
    }
}

#[test]
fn failure_round_trip_with_mx_lines() {
    let f = FailureReply::new(
        Failure::BannerRejected { permanent: true },
        "MX rejected us\r\nx",
    )
    .with_mx_lines(vec![b"554-5.7.1 go".to_vec(), b"554 5.7.1 away".to_vec()]);
    let raw = f.render();
    assert!(raw.starts_with(b"545-5.0.0 banner_rejected MX rejected us  x\r\n545-mx=554-5.7.1 go\r\n545 mx=554 5.7.1 away\r\n"));
    let (code, ls) = lines(&raw);
    let refs: Vec<&[u8]> = ls.iter().map(|l| l.as_slice()).collect();
    let p = FailureReply::parse(code, &refs).unwrap();
    assert_eq!(p.failure, f.failure);
    assert_eq!(p.mx_lines, f.mx_lines);
}

#[test]
fn ready_round_trip() {
    let r = ConnectReady {
        origin: Origin::Reused {
            age: Duration::from_millis(1500),
            uses: 2,
            messages: 7,
        },
        mx_host: Some("mx.example.com".into()),
        remote: "[::1]:25".parse().unwrap(),
        local: "[::1]:40000".parse().unwrap(),
        tls: Some(TlsFacts {
            version: "TLSv1.3".into(),
            cipher: "TLS13_AES_256_GCM_SHA384".into(),
            verified: false,
            verify_error: "invalid peer certificate: UnknownIssuer".into(),
            peer_names: vec!["mx.test".into(), "mx2.test".into()],
        }),
        tls_note: None,
        tls_policy: None,
        banner: vec![b"220 mx.test ESMTP".to_vec()],
        ehlo: vec![b"250-mx.test".to_vec(), b"250 PIPELINING".to_vec()],
    };
    let raw = r.render();
    assert!(raw.ends_with(b"250 ready\r\n"));
    let (code, ls) = lines(&raw);
    assert_eq!(code, 250);
    let refs: Vec<&[u8]> = ls.iter().map(|l| l.as_slice()).collect();
    assert_eq!(ConnectReady::parse(&refs).unwrap(), r);
}

#[test]
fn a_cr_or_lf_inside_a_ready_value_becomes_a_space() {
    let r = ConnectReady {
        origin: Origin::New,
        mx_host: None,
        remote: "127.0.0.1:25".parse().unwrap(),
        local: "127.0.0.2:40000".parse().unwrap(),
        tls: None,
        tls_note: None,
        tls_policy: None,
        banner: vec![b"220 a\rb\nc".to_vec()],
        ehlo: vec![b"250 d".to_vec()],
    };
    let raw = String::from_utf8(r.render()).unwrap();
    assert!(raw.contains("\r\n250-banner=220 a b c\r\n"), "{raw}");
    // connection, remote, local, tls, banner, ehlo, ready: one line each.
    assert_eq!(raw.matches('\n').count(), 7, "{raw}");
}
