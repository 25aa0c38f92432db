//! Refusals: each refused greeting, sub-negotiation or request says which bytes to send.

use super::*;

#[test]
fn refused_requests_say_which_reply_to_send() {
    use ReplyCode::*;
    let v4 = "7f000001 0019";
    let v6 = "00000000000000000000000000000001 0019";
    let cases: Vec<(String, Option<ReplyCode>, &str, &str)> = vec![
        (
            format!("05 03 00 01 {v4}"),
            Some(CommandNotSupported),
            "05070001000000000000",
            "socks_command_not_supported",
        ),
        (
            format!("05 03 00 04 {v6}"),
            Some(CommandNotSupported),
            "05070004 00000000000000000000000000000000 0000",
            "socks_command_not_supported",
        ),
        (
            format!("05 09 00 01 {v4}"),
            Some(CommandNotSupported),
            "05070001000000000000",
            "socks_command_not_supported",
        ),
        (
            "05 02 00 01 c000020a 0050".to_string(),
            Some(CommandNotSupported),
            "05070001000000000000",
            "socks_command_not_supported",
        ),
        (
            "05 02 00 03 0e 6d782e6578616d706c652e636f6d 0000".to_string(),
            Some(AddressTypeNotSupported),
            "05080001000000000000",
            "socks_address_not_supported",
        ),
        (
            format!("05 01 00 05 {v4}"),
            Some(AddressTypeNotSupported),
            "05080001000000000000",
            "socks_address_not_supported",
        ),
        (
            format!("05 01 01 01 {v4}"),
            Some(GeneralFailure),
            "05010001000000000000",
            "socks_protocol_error",
        ),
        (
            format!("04 01 00 01 {v4}"),
            Some(GeneralFailure),
            "05010001000000000000",
            "socks_protocol_error",
        ),
        (
            "05 01 00 03 03 312e32 0019".to_string(),
            Some(GeneralFailure),
            "05010001000000000000",
            "socks_bad_host_name",
        ),
    ];
    for (request, code, bytes, tag) in cases {
        let input = [hex("050100"), hex(&request)].concat();
        let (events, _) = drive_all(AuthMode::None, &input);
        let Some(Event::Error(e)) = events.last() else {
            panic!("{request}: {events:?}")
        };
        assert_eq!(e.reply_code(), code, "{request}: {e}");
        assert_eq!(e.reply_bytes(), Some(hex(bytes)), "{request}: {e}");
        assert_eq!(e.tag(), tag, "{request}");
        assert!(!e.to_string().chars().any(char::is_control));
    }
}

#[test]
fn bind_rules() {
    let greeting = hex("050100");
    let bind4 = hex("05020001c000020a0000");
    let bind6 = hex("05020004 20010db8000000000000000000000010 0000");
    let connect6 = hex("05010004 20010db8000000000000000000000025 0019");
    // A second BIND.
    let (events, _) = drive_all(AuthMode::None, &[&greeting[..], &bind4, &bind4].concat());
    let Some(Event::Error(e)) = events.last() else {
        panic!("{events:?}")
    };
    assert_eq!(
        e,
        &Socks5Error::SecondBind {
            first: ip("192.0.2.10"),
            family: AddrFamily::V4
        }
    );
    assert_eq!(e.reply_bytes(), Some(hex("05010001000000000000")));
    // CONNECT of the other family than the BIND.
    let (events, _) = drive_all(AuthMode::None, &[&greeting[..], &bind4, &connect6].concat());
    let Some(Event::Error(e)) = events.last() else {
        panic!("{events:?}")
    };
    assert_eq!(e.reply_code(), Some(ReplyCode::AddressTypeNotSupported));
    assert_eq!(e.reply_bytes().unwrap().len(), 22);
    // A type-3 IP literal is fine as a BIND source; an IPv4-mapped source matches IPv4.
    let mut input = [&greeting[..], &hex("050200 03 0a")].concat();
    input.extend_from_slice(b"127.0.0.20");
    input.extend(hex("0000 05010001 7f000001 09de"));
    let (events, _) = drive_all(AuthMode::None, &input);
    assert_eq!(events[1], Event::Bind(ip("127.0.0.20")));
    assert_eq!(
        events[3],
        Event::Connect(SocksAddr::Ip(sa("127.0.0.1:2526")))
    );
    let mapped = hex("050200 04 00000000000000000000ffff7f000014 0000");
    let (events, _) = drive_all(
        AuthMode::None,
        &[&greeting[..], &mapped, &hex("05010001 7f000001 09de")].concat(),
    );
    assert_eq!(events[1], Event::Bind(ip("::ffff:127.0.0.20")));
    assert!(matches!(events[3], Event::Connect(_)), "{events:?}");
    // IPv6 BIND and CONNECT are fine.
    let (events, _) = drive_all(AuthMode::None, &[&greeting[..], &bind6, &connect6].concat());
    assert!(matches!(events[3], Event::Connect(_)), "{events:?}");
}

#[test]
fn nothing_is_parsed_after_connect() {
    let mut machine = Socks5Server::new(AuthMode::None);
    assert!(matches!(
        machine.poll(&hex("050100")),
        Ok(Step::Reply { .. })
    ));
    let connect = hex("05010001c63364190019");
    let bind = hex("05020001c000020a0000");
    let input = [&connect[..], &bind].concat();
    assert_eq!(
        machine.poll(&input),
        Ok(Step::Connect {
            consume: 10,
            addr: SocksAddr::Ip(sa("198.51.100.25:25"))
        })
    );
    assert_eq!(machine.bound_source(), None);
    assert_eq!(machine.poll(&bind), Ok(Step::Done));
    assert!(machine.is_done());
}

#[test]
fn greeting_and_auth_refusals() {
    let mut machine = Socks5Server::new(AuthMode::None);
    let e = machine.poll(&hex("040100507f000001")).unwrap_err();
    assert_eq!(e, Socks5Error::BadGreetingVersion { version: 4 });
    assert_eq!((e.reply_bytes(), e.reply_code()), (None, None));
    assert!(e.to_string().contains("SOCKS4"));
    assert_eq!(machine.poll(&hex("050100")), Err(Socks5Error::Finished));

    let mut machine = Socks5Server::new(AuthMode::Password);
    machine.poll(&hex("050102")).unwrap();
    let e = machine.poll(&hex("05")).unwrap_err();
    assert_eq!(e, Socks5Error::BadAuthVersion { version: 5 });
    assert_eq!(e.reply_bytes(), Some(hex("0101")));
}
