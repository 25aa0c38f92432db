//! SOCKS5 handshake tests: the exact bytes of kumod, Exim, curl and msmtp (from the MTA
//! compatibility notes), refusals with their reply codes, incremental feeding, properties.

use super::*;
use std::io;
use std::net::Ipv4Addr;

fn hex(text: &str) -> Vec<u8> {
    let digits: Vec<u8> = text.bytes().filter(u8::is_ascii_hexdigit).collect();
    digits
        .chunks(2)
        .map(|pair| u8::from_str_radix(std::str::from_utf8(pair).unwrap(), 16).unwrap())
        .collect()
}

fn sa(text: &str) -> SocketAddr {
    text.parse().unwrap()
}

/// What a listener does and sees, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Event {
    Sent(Vec<u8>),
    Creds(Vec<u8>, Vec<u8>),
    Bind(IpAddr),
    Connect(SocksAddr),
    Error(Socks5Error),
}

/// Feed `chunks` the way a listener does: all unconsumed bytes on every poll; credentials
/// accepted when `accept`; BIND answered with success. Returns the events and the bytes left
/// (the client's first bytes for the MX, after CONNECT).
fn drive<'a>(
    auth: AuthMode,
    chunks: impl IntoIterator<Item = &'a [u8]>,
    accept: bool,
) -> (Vec<Event>, Vec<u8>) {
    let mut machine = Socks5Server::new(auth);
    let mut buf = Vec::new();
    let mut events = Vec::new();
    let mut stopped = false;
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        while !stopped {
            let step = machine.poll(&buf);
            let consume = step.as_ref().map_or(0, Step::consumed);
            assert!(consume <= buf.len() && consume <= MAX_MESSAGE_LEN);
            buf.drain(..consume);
            match step {
                Ok(Step::NeedMore) => {
                    assert!(buf.len() < MAX_MESSAGE_LEN);
                    break;
                }
                Ok(Step::Done) => break,
                Ok(Step::Reply { bytes, .. }) => events.push(Event::Sent(bytes)),
                Ok(Step::Credentials {
                    username, password, ..
                }) => {
                    events.push(Event::Creds(username, password));
                    events.push(Event::Sent(machine.credentials_result(accept)));
                    stopped = !accept;
                }
                Ok(Step::Bind { source, .. }) => {
                    assert_eq!(machine.bound_source(), Some(source));
                    events.push(Event::Bind(source));
                    let bound = SocketAddr::new(source, 0);
                    events.push(Event::Sent(reply(
                        ReplyCode::Succeeded,
                        Some(bound),
                        Some(AddrFamily::of(source)),
                    )));
                }
                Ok(Step::Connect { addr, .. }) => {
                    assert!(machine.is_done());
                    events.push(Event::Connect(addr));
                }
                Err(e) => {
                    events.push(Event::Error(e));
                    stopped = true;
                }
            }
        }
    }
    (events, buf)
}

fn drive_all(auth: AuthMode, input: &[u8]) -> (Vec<Event>, Vec<u8>) {
    drive(auth, [input], true)
}

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

// ---- What real clients send ----

#[test]
fn kumod_bind_then_connect_ipv4() {
    let input = hex("050100
         05020001c000020a0000
         05010001c63364190019");
    let (events, rest) = drive_all(AuthMode::None, &input);
    assert_eq!(
        events,
        vec![
            Event::Sent(hex("0500")),
            Event::Bind(ip("192.0.2.10")),
            Event::Sent(hex("05000001c000020a0000")),
            Event::Connect(SocksAddr::Ip(sa("198.51.100.25:25"))),
        ]
    );
    assert!(rest.is_empty());
    // The CONNECT reply: one 10-byte buffer with the real local address.
    assert_eq!(
        reply(
            ReplyCode::Succeeded,
            Some(sa("192.0.2.10:40001")),
            Some(AddrFamily::V4)
        ),
        hex("05000001c000020a9c41")
    );
}

#[test]
fn kumod_with_credentials_bind_then_connect_ipv6() {
    let mut input = hex("05020002 01 04");
    input.extend_from_slice(b"kumo");
    input.push(6);
    input.extend_from_slice(b"s3cret");
    input.extend(hex("050200 04 20010db8000000000000000000000010 0000"));
    input.extend(hex("050100 04 20010db8000000000000000000000025 0019"));
    input.extend_from_slice(b"EHLO");
    let (events, rest) = drive_all(AuthMode::Password, &input);
    assert_eq!(
        events,
        vec![
            Event::Sent(hex("0502")),
            Event::Creds(b"kumo".to_vec(), b"s3cret".to_vec()),
            Event::Sent(hex("0100")),
            Event::Bind(ip("2001:db8::10")),
            Event::Sent(hex("050000 04 20010db8000000000000000000000010 0000")),
            Event::Connect(SocksAddr::Ip(sa("[2001:db8::25]:25"))),
        ]
    );
    // Bytes after the CONNECT are never consumed.
    assert_eq!(rest, b"EHLO");
    assert_eq!(
        reply(
            ReplyCode::Succeeded,
            Some(sa("[2001:db8::10]:40001")),
            Some(AddrFamily::V6)
        )
        .len(),
        22
    );
}

#[test]
fn exim_user_name_carries_the_source() {
    // Exim 4.96, `auth=name name=192.0.2.10 pass=s3cret`, as observed on the wire.
    let input = hex("050102
         010a 3139322e302e322e3130 06 733363726574
         050100017f00000109de");
    let (events, rest) = drive_all(AuthMode::Password, &input);
    assert_eq!(
        events,
        vec![
            Event::Sent(hex("0502")),
            Event::Creds(b"192.0.2.10".to_vec(), b"s3cret".to_vec()),
            Event::Sent(hex("0100")),
            Event::Connect(SocksAddr::Ip(sa("127.0.0.1:2526"))),
        ]
    );
    assert!(rest.is_empty());
}

#[test]
fn wrong_password_ends_the_handshake() {
    let mut machine = Socks5Server::new(AuthMode::Password);
    let step = machine.poll(&hex("050102")).unwrap();
    assert_eq!(
        step,
        Step::Reply {
            consume: 3,
            bytes: hex("0502")
        }
    );
    let creds = hex("01 00 02 7878");
    assert_eq!(
        machine.poll(&creds),
        Ok(Step::Credentials {
            consume: 5,
            username: vec![],
            password: b"xx".to_vec()
        })
    );
    // Polling before answering the credentials is refused.
    let mut early = machine.clone();
    assert_eq!(
        early.poll(&hex("050100017f00000109de")),
        Err(Socks5Error::CredentialsUnanswered)
    );
    assert_eq!(machine.credentials_result(false), hex("0101"));
    assert_eq!(
        machine.poll(&hex("050100017f00000109de")),
        Err(Socks5Error::Finished)
    );
    // An answer at the wrong time fails closed.
    let mut fresh = Socks5Server::new(AuthMode::Password);
    assert_eq!(fresh.credentials_result(true), hex("0101"));
    assert_eq!(fresh.poll(&hex("050102")), Err(Socks5Error::Finished));
}

#[test]
fn method_choice() {
    let choose = |auth, greeting: &str| {
        let mut machine = Socks5Server::new(auth);
        match machine.poll(&hex(greeting)) {
            Ok(Step::Reply { bytes, .. }) => bytes,
            Err(e) => e.reply_bytes().unwrap(),
            other => panic!("{other:?}"),
        }
    };
    // curl without credentials offers GSSAPI too; never chosen.
    assert_eq!(choose(AuthMode::None, "05020001"), hex("0500"));
    assert_eq!(choose(AuthMode::Password, "05020001"), hex("05ff"));
    assert_eq!(choose(AuthMode::Password, "0503000102"), hex("0502"));
    assert_eq!(choose(AuthMode::None, "0503000102"), hex("0500"));
    assert_eq!(choose(AuthMode::None, "050101"), hex("05ff"));
    // kumod, Exim, nodemailer.
    assert_eq!(choose(AuthMode::None, "050100"), hex("0500"));
    assert_eq!(choose(AuthMode::Password, "05020002"), hex("0502"));
    assert_eq!(choose(AuthMode::Password, "050102"), hex("0502"));
    assert_eq!(choose(AuthMode::None, "050102"), hex("05ff"));
    assert_eq!(choose(AuthMode::None, "0500"), hex("05ff"));
    let mut machine = Socks5Server::new(AuthMode::Password);
    let e = machine.poll(&hex("05020001")).unwrap_err();
    assert_eq!(
        e.to_string(),
        "SOCKS5 client offers methods [00 01] but this front-end requires username/password (02)"
    );
    assert_eq!(
        (e.tag(), e.reply_code()),
        ("socks_no_acceptable_method", None)
    );
}

#[test]
fn msmtp_type_3_ip_literal_is_an_ip() {
    let mut input = hex("050100 050100 03 09");
    input.extend_from_slice(b"127.0.0.1");
    input.extend(hex("09de"));
    let (events, _) = drive_all(AuthMode::None, &input);
    let addr = SocksAddr::Ip(sa("127.0.0.1:2526"));
    assert_eq!(events.last(), Some(&Event::Connect(addr.clone())));
    // Its reply is IPv4 (10 bytes), never ATYP 3.
    assert_eq!(
        reply(
            ReplyCode::Succeeded,
            Some(sa("127.0.0.2:40001")),
            addr.family()
        ),
        hex("050000017f0000029c41")
    );
    for (name, expected) in [
        ("::1", sa("[::1]:25")),
        ("[2001:db8::25]", sa("[2001:db8::25]:25")),
        ("::ffff:192.0.2.1", sa("[::ffff:192.0.2.1]:25")),
    ] {
        let got = decode_addr(3, &[&[name.len() as u8], name.as_bytes()].concat(), 25);
        assert_eq!(got, Ok(SocksAddr::Ip(expected)), "{name}");
    }
}

#[test]
fn type_3_host_names() {
    let decode = |name: &[u8]| decode_addr(3, &[&[name.len() as u8], name].concat(), 25);
    assert_eq!(
        decode(b"mx.example.com"),
        Ok(SocksAddr::Domain("mx.example.com".into(), 25))
    );
    assert_eq!(
        decode(b"MX1.Example.COM."),
        Ok(SocksAddr::Domain("MX1.Example.COM.".into(), 25))
    );
    for bad in [
        &b""[..],
        b"1.2.3.256",
        b"127.000.0.1",
        b"mx..example",
        b"-mx.example",
        b"mx example",
        b"mx\x00",
        b"\xc3\xa9.example",
        b"[127.0.0.1]",
    ] {
        let e = decode(bad).unwrap_err();
        assert!(matches!(e, Socks5Error::BadHostName { .. }), "{bad:?}");
        assert_eq!(e.reply_code(), Some(ReplyCode::GeneralFailure));
        assert!(!e.to_string().chars().any(char::is_control));
    }
    // A CONNECT by name: the reply follows the bound address's family.
    let addr = SocksAddr::Domain("mx.example.com".into(), 25);
    assert_eq!(addr.family(), None);
    assert_eq!(
        reply(
            ReplyCode::Succeeded,
            Some(sa("[2001:db8::10]:40001")),
            addr.family()
        )
        .len(),
        22
    );
    assert_eq!(
        reply(ReplyCode::HostUnreachable, None, addr.family()),
        hex("05040001000000000000")
    );
}

// ---- Reply codes and the encoder ----

#[test]
fn reply_codes_from_connect_errors() {
    use nix::errno::Errno;
    let code = |errno: Errno| ReplyCode::from_io_error(&io::Error::from_raw_os_error(errno as i32));
    assert_eq!(code(Errno::ENETUNREACH), ReplyCode::NetworkUnreachable);
    assert_eq!(code(Errno::EHOSTUNREACH), ReplyCode::HostUnreachable);
    assert_eq!(code(Errno::ECONNREFUSED), ReplyCode::ConnectionRefused);
    assert_eq!(code(Errno::ETIMEDOUT), ReplyCode::TtlExpired);
    assert_eq!(code(Errno::EADDRNOTAVAIL), ReplyCode::GeneralFailure);
    assert_eq!(code(Errno::EACCES), ReplyCode::GeneralFailure);
    assert_eq!(
        ReplyCode::from_io_error(&io::Error::new(io::ErrorKind::TimedOut, "connect timeout")),
        ReplyCode::TtlExpired
    );
    for byte in 0..=8 {
        assert_eq!(ReplyCode::from_code(byte).unwrap().code(), byte);
    }
    assert_eq!(ReplyCode::from_code(9), None);
    assert_eq!(
        ReplyCode::ConnectionRefused.to_string(),
        "05 connection refused"
    );
}

#[test]
fn reply_encoder_keeps_the_request_family() {
    use ReplyCode::*;
    assert_eq!(
        reply(NotAllowed, None, Some(AddrFamily::V4)),
        hex("05020001 00000000 0000")
    );
    assert_eq!(
        reply(ConnectionRefused, None, Some(AddrFamily::V6)),
        hex("05050004 00000000000000000000000000000000 0000")
    );
    // A v4 bound address for a v6 request is written IPv4-mapped, and back.
    assert_eq!(
        reply(Succeeded, Some(sa("127.0.0.2:258")), Some(AddrFamily::V6)),
        hex("05000004 00000000000000000000ffff7f000002 0102")
    );
    assert_eq!(
        reply(
            Succeeded,
            Some(sa("[::ffff:127.0.0.2]:258")),
            Some(AddrFamily::V4)
        ),
        hex("05000001 7f000002 0102")
    );
    // A v6 address that cannot be written as IPv4: the unspecified address, port 0.
    assert_eq!(
        reply(
            Succeeded,
            Some(sa("[2001:db8::1]:258")),
            Some(AddrFamily::V4)
        ),
        hex("05000001 00000000 0000")
    );
    assert_eq!(
        reply(GeneralFailure, None, None),
        hex("05010001 00000000 0000")
    );
}

// ---- Incremental feeding ----

fn scenarios() -> Vec<(AuthMode, Vec<u8>)> {
    let mut exim = hex("050102 010a");
    exim.extend_from_slice(b"192.0.2.10");
    exim.push(6);
    exim.extend_from_slice(b"s3cret");
    exim.extend(hex("050100017f00000109de"));
    let mut msmtp = hex("050100 050100 03 09");
    msmtp.extend_from_slice(b"127.0.0.1");
    msmtp.extend(hex("09de"));
    msmtp.extend_from_slice(b"EHLO x\r\n");
    vec![
        (
            AuthMode::None,
            hex("050100 05020001c000020a0000 05010001c63364190019 323230"),
        ),
        (AuthMode::Password, exim),
        (AuthMode::None, msmtp),
        (AuthMode::None, hex("050100 05030001c000020a0000")),
        (
            AuthMode::None,
            hex("050100 05020001c000020a0000 05020001c000020a0000"),
        ),
        (AuthMode::Password, hex("05020001")),
        (AuthMode::None, hex("050100 05010005 00")),
        (AuthMode::None, hex("050100 05010003 03 312e32 0019")),
    ]
}

#[test]
fn every_split_gives_the_same_events() {
    for (auth, input) in scenarios() {
        let whole = drive_all(auth, &input);
        for cut in 0..=input.len() {
            let (a, b) = input.split_at(cut);
            assert_eq!(
                drive(auth, [a, b], true),
                whole,
                "cut {cut} of {input:02x?}"
            );
        }
        let bytes: Vec<&[u8]> = input.chunks(1).collect();
        assert_eq!(drive(auth, bytes, true), whole);
    }
}

#[test]
fn captured_from_curl_and_msmtp() {
    // curl 7.88.1 and msmtp 1.8.23 against a recording SOCKS5 server on this machine.
    let connect = |addr| Event::Connect(addr);
    let cases = [
        // curl -x socks5://127.0.0.2:pw@…: offers 00 01 02; a password front-end picks 02.
        (
            AuthMode::Password,
            "050300010201093132372e302e302e32027077050100017f00000109de",
            vec![
                Event::Sent(hex("0502")),
                Event::Creds(b"127.0.0.2".to_vec(), b"pw".to_vec()),
                Event::Sent(hex("0100")),
                connect(SocksAddr::Ip(sa("127.0.0.1:2526"))),
            ],
        ),
        // curl -x socks5://… without credentials offers 00 and GSSAPI.
        (
            AuthMode::None,
            "05020001050100017f00000109de",
            vec![
                Event::Sent(hex("0500")),
                connect(SocksAddr::Ip(sa("127.0.0.1:2526"))),
            ],
        ),
        // msmtp: always ATYP 3, even for 127.0.0.1 and ::1.
        (
            AuthMode::None,
            "05010005010003093132372e302e302e3109de",
            vec![
                Event::Sent(hex("0500")),
                connect(SocksAddr::Ip(sa("127.0.0.1:2526"))),
            ],
        ),
        (
            AuthMode::None,
            "05010005010003033a3a3109de",
            vec![
                Event::Sent(hex("0500")),
                connect(SocksAddr::Ip(sa("[::1]:2526"))),
            ],
        ),
        // curl -x socks5h://…: a host name for the proxy to resolve.
        (
            AuthMode::None,
            "05020001050100030f6d782e6578616d706c652e7465737409de",
            vec![
                Event::Sent(hex("0500")),
                connect(SocksAddr::Domain("mx.example.test".into(), 2526)),
            ],
        ),
    ];
    for (auth, bytes, expected) in cases {
        let input = hex(bytes);
        assert_eq!(drive_all(auth, &input), (expected, vec![]), "{bytes}");
        for cut in 0..=input.len() {
            let (a, b) = input.split_at(cut);
            assert_eq!(drive(auth, [a, b], true), drive_all(auth, &input));
        }
    }
}

mod props;
mod refusals;
