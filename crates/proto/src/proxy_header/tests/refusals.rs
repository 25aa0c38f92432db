//! Refusals: each malformed or unsupported header gets its own error, tag and readable message.

use super::*;

#[test]
fn refusals_name_the_problem() {
    use ProxyHeaderError::*;
    let v2 = |rest: &str| {
        let mut v = V2_SIGNATURE.to_vec();
        v.extend(hex(rest));
        v
    };
    let cases: Vec<(Vec<u8>, ProxyHeaderError, &str)> = vec![
        (
            b"EHLO mta1.example.com\r\n".to_vec(),
            NotProxy {
                start: "EHLO mta1.exampl...".into(),
                hint: "looks like SMTP: the MTA is not configured to send a PROXY header",
            },
            "proxy_header_missing",
        ),
        (
            hex("16 03 01 02 00 01"),
            NotProxy {
                start: "\\x16\\x03\\x01\\x02\\x00\\x01".into(),
                hint: "looks like a TLS ClientHello: this front-end is plain TCP",
            },
            "proxy_header_missing",
        ),
        (
            b"PROXY TCP4  127.0.0.2 127.0.0.1 0 25\r\n".to_vec(),
            BadSyntax {
                line: "PROXY TCP4  127.0.0.2 127.0.0.1 0 25".into(),
            },
            "proxy_header_invalid",
        ),
        (
            b"PROXY TCP4 127.0.0.2 127.0.0.1 0 25 \r\n".to_vec(),
            BadSyntax {
                line: "PROXY TCP4 127.0.0.2 127.0.0.1 0 25 ".into(),
            },
            "proxy_header_invalid",
        ),
        (
            b"PROXY TCP4 127.0.0.2 127.0.0.1 0\r\n".to_vec(),
            BadSyntax {
                line: "PROXY TCP4 127.0.0.2 127.0.0.1 0".into(),
            },
            "proxy_header_invalid",
        ),
        (
            b"PROXY  TCP4 127.0.0.2 127.0.0.1 0 25\r\n".to_vec(),
            BadSyntax {
                line: "PROXY  TCP4 127.0.0.2 127.0.0.1 0 25".into(),
            },
            "proxy_header_invalid",
        ),
        (
            b"PROXY TCP4 127.0.0.2  0 25\r\n".to_vec(),
            BadSyntax {
                line: "PROXY TCP4 127.0.0.2  0 25".into(),
            },
            "proxy_header_invalid",
        ),
        (
            b"PROXY TCP4\r\n".to_vec(),
            BadSyntax {
                line: "PROXY TCP4".into(),
            },
            "proxy_header_invalid",
        ),
        (
            b"PROXY UDP4 127.0.0.2 127.0.0.1 0 25\r\n".to_vec(),
            BadProtocol {
                found: "UDP4".into(),
            },
            "proxy_header_invalid",
        ),
        (
            b"PROXY tcp4 127.0.0.2 127.0.0.1 0 25\r\n".to_vec(),
            BadProtocol {
                found: "tcp4".into(),
            },
            "proxy_header_invalid",
        ),
        (
            b"PROXY UNKNOWNX\r\n".to_vec(),
            BadProtocol {
                found: "UNKNOWNX".into(),
            },
            "proxy_header_invalid",
        ),
        (
            b"PROXY TCP4 ::1 127.0.0.1 0 25\r\n".to_vec(),
            BadAddress {
                endpoint: Endpoint::Source,
                protocol: "TCP4",
                found: "::1".into(),
            },
            "proxy_header_invalid",
        ),
        (
            b"PROXY TCP6 ::1 127.0.0.1 0 25\r\n".to_vec(),
            BadAddress {
                endpoint: Endpoint::Destination,
                protocol: "TCP6",
                found: "127.0.0.1".into(),
            },
            "proxy_header_invalid",
        ),
        (
            b"PROXY TCP4 127.000.0.2 127.0.0.1 0 25\r\n".to_vec(),
            BadAddress {
                endpoint: Endpoint::Source,
                protocol: "TCP4",
                found: "127.000.0.2".into(),
            },
            "proxy_header_invalid",
        ),
        (
            b"PROXY TCP4 127.0.0.2 127.0.0.1 0 65536\r\n".to_vec(),
            BadPort {
                endpoint: Endpoint::Destination,
                found: "65536".into(),
            },
            "proxy_header_invalid",
        ),
        (
            b"PROXY TCP4 127.0.0.2 127.0.0.1 +1 25\r\n".to_vec(),
            BadPort {
                endpoint: Endpoint::Source,
                found: "+1".into(),
            },
            "proxy_header_invalid",
        ),
        (
            b"PROXY TCP4 127.0.0.2 127.0.0.1 1 000025\r\n".to_vec(),
            BadPort {
                endpoint: Endpoint::Destination,
                found: "000025".into(),
            },
            "proxy_header_invalid",
        ),
        (
            b"PROXY TCP4 127.0.0.2 127.0.0.1 0 25\n".to_vec(),
            MissingCr,
            "proxy_header_invalid",
        ),
        (
            b"PROXY TCP4 127.0.0.2\r127.0.0.1 0 25\r\n".to_vec(),
            BadCharacter {
                byte: b'\r',
                offset: 20,
            },
            "proxy_header_invalid",
        ),
        (
            b"PROXY TCP4 127.0.0.2\t127.0.0.1 0 25\r\n".to_vec(),
            BadCharacter {
                byte: b'\t',
                offset: 20,
            },
            "proxy_header_invalid",
        ),
        (
            [b"PROXY UNKNOWN ".as_slice(), &[b'x'; 93]].concat(),
            LineTooLong,
            "proxy_header_too_long",
        ),
        (
            [b"PROXY UNKNOWN ".as_slice(), &[b'x'; 92], b"\r\n"].concat(),
            LineTooLong,
            "proxy_header_too_long",
        ),
        (
            v2("11 11 000c"),
            BadVersion { version: 1 },
            "proxy_header_unsupported",
        ),
        (
            v2("22 11 000c"),
            UnsupportedCommand { command: 2 },
            "proxy_header_unsupported",
        ),
        (
            v2("21 12 000c"),
            UnsupportedFamily { family: 0x12 },
            "proxy_header_unsupported",
        ),
        (
            v2("21 31 00d8"),
            UnsupportedFamily { family: 0x31 },
            "proxy_header_unsupported",
        ),
        (
            v2("21 00 0000"),
            UnsupportedFamily { family: 0x00 },
            "proxy_header_unsupported",
        ),
        (
            v2("21 11 ffff"),
            TooLong {
                length: 0xffff,
                limit: V2_MAX_PAYLOAD,
            },
            "proxy_header_too_long",
        ),
        (
            v2("21 21 000c"),
            AddressesTruncated {
                length: 12,
                needed: 36,
            },
            "proxy_header_invalid",
        ),
        (
            v2("21 11 000e 7f000002 7f000001 0000 0019 0500"),
            BadTlv {
                offset: 28,
                reason: "fewer than 3 bytes left for a TLV header",
            },
            "proxy_header_invalid",
        ),
        (
            v2("21 11 0010 7f000002 7f000001 0000 0019 05 0002 aa"),
            BadTlv {
                offset: 28,
                reason: "the TLV's value runs past the end of the header",
            },
            "proxy_header_invalid",
        ),
        (
            v2("21 11 0012 7f000002 7f000001 0000 0019 03 0003 aabbcc"),
            BadTlv {
                offset: 28,
                reason: "a CRC32C TLV must hold exactly 4 bytes",
            },
            "proxy_header_invalid",
        ),
    ];
    for (input, expected, tag) in cases {
        let got = error(&input);
        assert_eq!(got, expected, "{:?}", String::from_utf8_lossy(&input));
        assert_eq!(got.tag(), tag, "{got}");
        let text = got.to_string();
        assert!(!text.chars().any(char::is_control), "{text:?}");
    }
}

#[test]
fn error_messages_read_well() {
    assert_eq!(
        error(b"EHLO x\r\n").to_string(),
        "not a PROXY protocol header: the connection starts with \"EHLO x\\r\\n\" (looks like SMTP: the MTA is not configured to send a PROXY header)"
    );
    assert_eq!(
        error(b"PROXY TCP4 127.0.0.2 127.0.0.1 0 65536\r\n").to_string(),
        "PROXY v1 destination port \"65536\" is not a decimal number 0-65535"
    );
    let mut v2 = V2_SIGNATURE.to_vec();
    v2.extend_from_slice(&[0x21, 0x12, 0, 12]);
    assert_eq!(
        error(&v2).to_string(),
        "PROXY v2 address family and protocol 0x12 (AF_INET DGRAM) not supported: only TCP over IPv4 (0x11) or IPv6 (0x21)"
    );
}
