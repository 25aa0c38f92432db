use super::*;

#[test]
fn a_secret_is_printable_ascii_without_spaces_and_fits_a_request_line() {
    assert!(is_valid_secret(b"!~0123456789abcdefABCDEF#:\"'"));
    for bad in [
        &b""[..],
        b"with space",
        b"tab\there",
        "caf\u{e9}".as_bytes(),
        b"nul\0",
        b"del\x7f",
    ] {
        assert!(!is_valid_secret(bad), "{bad:?}");
    }
    assert!(is_valid_secret(&[b'x'; MAX_SECRET_LEN]));
    assert!(!is_valid_secret(&[b'x'; MAX_SECRET_LEN + 1]));
    // The parser accepts exactly these.
    let line = format!("AUTH 1 {}\r\n", "x".repeat(MAX_SECRET_LEN));
    assert!(matches!(
        parse_request(line.as_bytes()),
        Ok(Request::Auth { .. })
    ));
    assert!(parse_request(b"AUTH 1 two words\r\n").is_err());
}

#[test]
fn parses_auth_noop_quit() {
    assert_eq!(
        parse_request(b"AUTH 1 s3cret\r\n").unwrap(),
        Request::Auth {
            version: 1,
            secret: b"s3cret".to_vec()
        }
    );
    assert_eq!(parse_request(b"noop\r\n").unwrap(), Request::Noop);
    assert_eq!(parse_request(b"QUIT").unwrap(), Request::Quit);
    assert!(parse_request(b"AUTH s3cret\r\n").is_err());
    assert!(parse_request(b"AUTH 1 a b\r\n").is_err());
    assert!(parse_request(b"QUIT now\r\n").is_err());
    assert!(parse_request(b"HELO x\r\n")
        .unwrap_err()
        .to_string()
        .contains("unknown request"));
    assert!(parse_request(b"\r\n").is_err());
    assert!(parse_request(b"NOOP\x00\r\n").is_err());
    let secret_debug = format!("{:?}", parse_request(b"AUTH 1 topsecret").unwrap());
    assert!(!secret_debug.contains("topsecret"));
}

#[test]
fn parses_connect_with_defaults() {
    let r =
        parse_request(b"CONNECT source=127.0.0.2 host=127.0.0.1 ehlo=mta.example.com\r\n").unwrap();
    let Request::Connect(c) = r else { panic!() };
    assert_eq!(c.source, "127.0.0.2".parse::<IpAddr>().unwrap());
    assert_eq!(c.dest, Destination::Ip("127.0.0.1".parse().unwrap()));
    assert_eq!(c.port, 25);
    assert_eq!(c.tls, TlsPolicy::Opportunistic);
    assert!(!c.reuse && !c.smtps && !c.tls_fallback);
}

#[test]
fn policy_domain_goes_with_a_host_name() {
    let r = parse_request(
        b"CONNECT source=192.0.2.1 host=mx.example.com ehlo=a.example policy_domain=Example.COM.",
    )
    .unwrap();
    let Request::Connect(c) = r else { panic!() };
    assert_eq!(c.policy_domain.as_deref(), Some("example.com"));
    assert_eq!(c.policy_domain(), Some("example.com"));
    assert_eq!(
        parse_request(c.to_line().as_bytes()).unwrap(),
        Request::Connect(c)
    );
    // domain= is the policy domain itself.
    let Request::Connect(c) =
        parse_request(b"CONNECT source=192.0.2.1 domain=example.net ehlo=a.example").unwrap()
    else {
        panic!()
    };
    assert_eq!(c.policy_domain(), Some("example.net"));
    for bad in [
        "CONNECT source=192.0.2.1 domain=example.net ehlo=a.example policy_domain=example.net",
        "CONNECT source=192.0.2.1 host=192.0.2.9 ehlo=a.example policy_domain=example.net",
        "CONNECT source=192.0.2.1 host=mx.example ehlo=a.example policy_domain=bad..name",
    ] {
        let e = parse_request(bad.as_bytes()).unwrap_err();
        assert!(
            matches!(
                e,
                RequestError::Invalid {
                    key: "policy_domain",
                    ..
                }
            ),
            "{bad}: {e}"
        );
    }
}

#[test]
fn round_trips_every_parameter() {
    let mut c = ConnectRequest::new(
        "::1".parse().unwrap(),
        Destination::Domain("example.com".into()),
        "[IPv6:::1]",
    );
    c.port = 465;
    c.tls = TlsPolicy::Verify;
    c.tls_name = Some("mx.example.com".into());
    c.tls_fallback = true;
    c.smtps = true;
    c.reuse = true;
    c.reuse_max_messages = Some(100);
    c.wait = Some(std::time::Duration::from_millis(1500));
    assert_eq!(
        parse_request(c.to_line().as_bytes()).unwrap(),
        Request::Connect(c.clone())
    );
    c.smtps = false;
    assert!(c.to_line().contains("smtps=no"));
    assert_eq!(
        parse_request(c.to_line().as_bytes()).unwrap(),
        Request::Connect(c)
    );
}

#[test]
fn rejects_bad_connects_precisely() {
    let cases: &[(&str, &str)] = &[
        ("CONNECT host=127.0.0.1 ehlo=a", "source= is required"),
        (
            "CONNECT source=x host=127.0.0.1 ehlo=a",
            "not an IP address",
        ),
        (
            "CONNECT source=127.0.0.1 ehlo=a",
            "host= or domain= is required",
        ),
        (
            "CONNECT source=127.0.0.1 host=a domain=b ehlo=a",
            "not both",
        ),
        (
            "CONNECT source=127.0.0.1 host=127.0.0.1",
            "ehlo= is required",
        ),
        (
            "CONNECT source=127.0.0.1 host=127.0.0.1 ehlo=a port=0",
            "port",
        ),
        (
            "CONNECT source=127.0.0.1 host=127.0.0.1 ehlo=a port=70000",
            "port",
        ),
        (
            "CONNECT source=127.0.0.1 host=127.0.0.1 ehlo=a tls=maybe",
            "tls=",
        ),
        (
            "CONNECT source=127.0.0.1 host=127.0.0.1 ehlo=a colour=blue",
            "unknown parameter",
        ),
        (
            "CONNECT source=127.0.0.1 host=127.0.0.1 ehlo=a ehlo=b",
            "given twice",
        ),
        (
            "CONNECT source=127.0.0.1 host=127.0.0.1 ehlo=a reuse=maybe",
            "yes or no",
        ),
        (
            "CONNECT source=127.0.0.1 host=127.0.0.1 ehlo=a reuse_max_messages=0",
            "positive",
        ),
        (
            "CONNECT source=127.0.0.1 host=127.0.0.1 ehlo=a wait=3601",
            "wait=",
        ),
        (
            "CONNECT source=127.0.0.1 host=127.0.0.1 ehlo=a wait=-1",
            "wait=",
        ),
        (
            "CONNECT source=127.0.0.1 host=127.0.0.1 ehlo=a wait=soon",
            "wait=",
        ),
        (
            "CONNECT source=127.0.0.1 host=bad..name ehlo=a",
            "neither an IP",
        ),
        (
            "CONNECT source=127.0.0.1 host=127.0.0.1 ehlo=[1.2.3]",
            "ehlo=",
        ),
        (
            "CONNECT source=127.0.0.1 host=127.0.0.1 ehlo=a novalue",
            "key=value",
        ),
    ];
    for (line, want) in cases {
        let e = parse_request(line.as_bytes()).unwrap_err();
        assert!(e.to_string().contains(want), "{line}: {e}");
    }
    let long = format!("CONNECT {}", "x".repeat(MAX_REQUEST_LINE));
    assert!(parse_request(long.as_bytes())
        .unwrap_err()
        .to_string()
        .contains("longer"));
}

#[test]
fn smtps_defaults_to_port_465() {
    let Request::Connect(c) =
        parse_request(b"CONNECT source=127.0.0.1 host=127.0.0.1 port=465 ehlo=a").unwrap()
    else {
        panic!()
    };
    assert!(c.smtps);
}

#[test]
fn wait_takes_seconds_milliseconds_and_the_configurations_forms() {
    use std::time::Duration;
    let wait = |w: &str| match parse_request(
        format!("CONNECT source=127.0.0.1 host=127.0.0.1 ehlo=a wait={w}").as_bytes(),
    ) {
        Ok(Request::Connect(c)) => c.wait,
        other => panic!("{other:?}"),
    };
    assert_eq!(wait("0"), Some(Duration::ZERO));
    assert_eq!(wait("30"), Some(Duration::from_secs(30)));
    assert_eq!(wait("250ms"), Some(Duration::from_millis(250)));
    assert_eq!(wait("3600"), Some(Duration::from_secs(3600)));
    // The configuration's forms too (caps.wait: 30s).
    assert_eq!(wait("30s"), Some(Duration::from_secs(30)));
    assert_eq!(wait("0s"), Some(Duration::ZERO));
    assert_eq!(wait("2m"), Some(Duration::from_secs(120)));
    assert_eq!(wait("1m30s"), Some(Duration::from_secs(90)));
    assert_eq!(wait("1h"), Some(Duration::from_secs(3600)));
    let c = parse_request(b"CONNECT source=127.0.0.1 host=127.0.0.1 ehlo=a").unwrap();
    assert!(matches!(c, Request::Connect(c) if c.wait.is_none()));
}

#[test]
fn request_errors_say_what_went_wrong_in_the_reply_text() {
    let text = |line: &str| parse_request(line.as_bytes()).unwrap_err().to_string();
    assert_eq!(
        text("HELO x"),
        r#"unknown request "HELO"; expected AUTH, CONNECT, NOOP or QUIT"#
    );
    assert_eq!(text("NOOP now"), "NOOP takes no parameters");
    assert_eq!(text("AUTH v1 s"), r#"AUTH: bad protocol version "v1""#);
    assert_eq!(
        text("CONNECT source=x host=127.0.0.1 ehlo=a"),
        r#"CONNECT: source="x" is not an IP address"#
    );
    assert_eq!(
        text("CONNECT source=127.0.0.1 ehlo=a"),
        "CONNECT: host= or domain= is required"
    );
    assert_eq!(
        text("CONNECT source=127.0.0.1 host=127.0.0.1 ehlo=a reuse=maybe"),
        r#"reuse: expected yes or no, got "maybe""#
    );
    let e = parse_request(b"CONNECT source=127.0.0.1 host=127.0.0.1 ehlo=a wait=soon").unwrap_err();
    assert!(
        matches!(&e, RequestError::Wait { value, .. } if value == "soon"),
        "{e:?}"
    );
    assert!(
        e.to_string().starts_with(r#"CONNECT: wait="soon": "#),
        "{e}"
    );
    assert!(std::error::Error::source(&e).is_some());
    assert_eq!(parse_request(b"\r\n"), Err(RequestError::Empty));
    assert_eq!(parse_request(b"NOOP\x00"), Err(RequestError::NotText));
}
