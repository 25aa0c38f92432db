//! PROXY header tests: the exact bytes real senders were seen to write (docs: the MTA
//! compatibility notes), refusals, incremental parsing and property tests.

use super::*;

fn sa(text: &str) -> SocketAddr {
    text.parse().unwrap()
}

fn hex(text: &str) -> Vec<u8> {
    let digits: Vec<u8> = text.bytes().filter(u8::is_ascii_hexdigit).collect();
    digits
        .chunks(2)
        .map(|pair| u8::from_str_radix(std::str::from_utf8(pair).unwrap(), 16).unwrap())
        .collect()
}

fn proxied(input: &[u8]) -> (usize, Version, SocketAddr, SocketAddr) {
    match parse(input) {
        Ok(Parsed::Header(Header {
            consumed,
            version,
            kind:
                HeaderKind::Proxied {
                    source,
                    destination,
                },
        })) => (consumed, version, source, destination),
        other => panic!("{:?}: {other:?}", String::from_utf8_lossy(input)),
    }
}

fn local(input: &[u8]) -> (usize, Version) {
    match parse(input) {
        Ok(Parsed::Header(Header {
            consumed,
            version,
            kind: HeaderKind::Local,
        })) => (consumed, version),
        other => panic!("{other:?}"),
    }
}

fn error(input: &[u8]) -> ProxyHeaderError {
    match parse(input) {
        Err(e) => e,
        other => panic!("{:?}: {other:?}", String::from_utf8_lossy(input)),
    }
}

/// The v2 header for TCP over `source`'s family, with `tlvs` (type, value) after the
/// addresses; with `crc`, a CRC32C TLV first, holding the right checksum.
fn encode_v2(
    source: SocketAddr,
    destination: SocketAddr,
    crc: bool,
    tlvs: &[(u8, Vec<u8>)],
) -> Vec<u8> {
    let mut body = Vec::new();
    let family = match (source.ip(), destination.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            body.extend_from_slice(&s.octets());
            body.extend_from_slice(&d.octets());
            TCP4
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            body.extend_from_slice(&s.octets());
            body.extend_from_slice(&d.octets());
            TCP6
        }
        _ => panic!("mixed families"),
    };
    body.extend_from_slice(&source.port().to_be_bytes());
    body.extend_from_slice(&destination.port().to_be_bytes());
    let mut crc_at = None;
    if crc {
        crc_at = Some(16 + body.len() + 3);
        body.extend_from_slice(&[TLV_CRC32C, 0, 4, 0, 0, 0, 0]);
    }
    for (kind, value) in tlvs {
        body.push(*kind);
        body.extend_from_slice(&(value.len() as u16).to_be_bytes());
        body.extend_from_slice(value);
    }
    let mut out = V2_SIGNATURE.to_vec();
    out.extend_from_slice(&[0x21, family]);
    out.extend_from_slice(&(body.len() as u16).to_be_bytes());
    out.extend_from_slice(&body);
    if let Some(at) = crc_at {
        let sum = crc32c::checksum(&out);
        out[at..at + 4].copy_from_slice(&sum.to_be_bytes());
    }
    out
}

fn encode_v1(source: SocketAddr, destination: SocketAddr) -> Vec<u8> {
    let proto = if source.is_ipv4() { "TCP4" } else { "TCP6" };
    format!(
        "PROXY {proto} {} {} {} {}\r\n",
        source.ip(),
        destination.ip(),
        source.port(),
        destination.port()
    )
    .into_bytes()
}

// ---- What real senders write ----

#[test]
fn kumod_v2_ipv4_is_28_bytes_with_source_port_0() {
    let header = hex("0d0a0d0a000d0a515549540a 21 11 000c c000020a c6336419 0000 0019");
    assert_eq!(header.len(), 28);
    let mut input = header.clone();
    input.extend_from_slice(b"EHLO mta1.example.com\r\n");
    let (consumed, version, source, destination) = proxied(&input);
    assert_eq!(consumed, 28);
    assert_eq!(version, Version::V2);
    assert_eq!(source, sa("192.0.2.10:0"));
    assert_eq!(destination, sa("198.51.100.25:25"));
}

#[test]
fn kumod_v2_ipv6_is_52_bytes_with_source_port_0() {
    let header = hex("0d0a0d0a000d0a515549540a 21 21 0024
         20010db8000000000000000000000010 20010db8000000000000000000000025 0000 0019");
    assert_eq!(header.len(), 52);
    let (consumed, _, source, destination) = proxied(&header);
    assert_eq!(consumed, 52);
    assert_eq!(source, sa("[2001:db8::10]:0"));
    assert_eq!(destination, sa("[2001:db8::25]:25"));
}

#[test]
fn swaks_v1_and_v2_headers() {
    let (consumed, version, source, destination) =
        proxied(b"PROXY TCP4 127.0.0.3 127.0.0.1 1 2526\r\n220 banner?");
    assert_eq!((consumed, version), (39, Version::V1));
    assert_eq!(
        (source, destination),
        (sa("127.0.0.3:1"), sa("127.0.0.1:2526"))
    );

    let (consumed, _, source, destination) = proxied(b"PROXY TCP6 ::1 ::1 1 2527\r\n");
    assert_eq!(consumed, 27);
    assert_eq!((source, destination), (sa("[::1]:1"), sa("[::1]:2527")));

    let v2 = hex("0d0a0d0a000d0a515549540a 21 11 000c 7f000003 7f000001 0001 09de");
    let (consumed, version, source, destination) = proxied(&v2);
    assert_eq!((consumed, version), (28, Version::V2));
    assert_eq!(
        (source, destination),
        (sa("127.0.0.3:1"), sa("127.0.0.1:2526"))
    );
}

#[test]
fn v1_source_port_zero_and_powermta_port_9999() {
    let (consumed, _, source, destination) =
        proxied(b"PROXY TCP4 127.0.0.5 127.0.0.1 0 2526\r\nEHLO x\r\n");
    assert_eq!(consumed, 39);
    assert_eq!(
        (source, destination),
        (sa("127.0.0.5:0"), sa("127.0.0.1:2526"))
    );
    let (_, _, source, _) = proxied(b"PROXY TCP4 192.0.2.10 198.51.100.25 9999 25\r\n");
    assert_eq!(source, sa("192.0.2.10:9999"));
}

#[test]
fn haproxy_v2_with_crc32c_and_unique_id_tlvs() {
    // HAProxy 2.6 `send-proxy-v2` with `proxy-v2-options unique-id,crc32c`: len 22, a CRC32C
    // TLV then an empty UNIQUE_ID TLV (05 0000); the source is the client's real port.
    let header = encode_v2(
        sa("127.0.0.8:40312"),
        sa("127.0.0.1:2526"),
        true,
        &[(0x05, vec![])],
    );
    assert_eq!(header.len(), 16 + 22);
    assert_eq!(&header[28..31], &[0x03, 0x00, 0x04]);
    assert_eq!(&header[35..], &[0x05, 0x00, 0x00]);
    let (consumed, _, source, destination) = proxied(&header);
    assert_eq!(consumed, 38);
    assert_eq!(
        (source, destination),
        (sa("127.0.0.8:40312"), sa("127.0.0.1:2526"))
    );

    // One bit changed anywhere (address, port, TLV) is caught by the checksum.
    for at in [16, 27, 36] {
        let mut bad = header.clone();
        bad[at] ^= 0x01;
        assert!(
            matches!(error(&bad), ProxyHeaderError::ChecksumMismatch { .. }),
            "byte {at}"
        );
    }
}

#[test]
fn aws_nlb_v2_with_crc32c_vpce_and_noop_tlvs() {
    // A header captured from an AWS Network Load Balancer (published in aws/elastic-load-
    // balancing-tools' compatibility tests): its CRC32C was computed by someone else's code.
    let mut header = hex(
        "0d0a0d0a000d0a515549540a 21 11 0054 ac1f0771 ac1f0a1f c8f2 0050
         03 0004 e8d6892d
         ea 0017 01",
    );
    header.extend_from_slice(b"vpce-08d2bf15fac5001c9");
    header.extend_from_slice(&[0x04, 0x00, 0x24]);
    header.extend_from_slice(&[0u8; 36]);
    assert_eq!(header.len(), 100);
    let (consumed, _, source, destination) = proxied(&header);
    assert_eq!(consumed, 100);
    assert_eq!(source, sa("172.31.7.113:51442"));
    assert_eq!(destination, sa("172.31.10.31:80"));
    header[99] = 1; // inside the NOOP padding, covered by the checksum
    assert_eq!(
        error(&header),
        ProxyHeaderError::ChecksumMismatch {
            received: 0xe8d6892d,
            computed: crc32c::with_zeroed(&header, 31, 4)
        }
    );
}

#[test]
fn health_checks_are_local() {
    assert_eq!(local(b"PROXY UNKNOWN\r\nrest"), (15, Version::V1));
    let long = b"PROXY UNKNOWN ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n";
    assert_eq!(long.len(), V1_MAX_LEN);
    assert_eq!(local(long), (107, Version::V1));
    // HAProxy's v2 health check: LOCAL, AF_UNSPEC, no address block.
    let mut v2 = V2_SIGNATURE.to_vec();
    v2.extend_from_slice(&[0x20, 0x00, 0x00, 0x00]);
    assert_eq!(local(&v2), (16, Version::V2));
    // LOCAL ignores the family and skips whatever block it carries, even AF_UNIX's.
    let mut v2 = V2_SIGNATURE.to_vec();
    v2.extend_from_slice(&[0x20, 0x31, 0x00, 0xd8]);
    v2.extend_from_slice(&[0xaa; 216]);
    v2.extend_from_slice(b"more");
    assert_eq!(local(&v2), (232, Version::V2));
}

#[test]
fn ipv4_mapped_addresses_are_unmapped() {
    let (_, _, source, destination) =
        proxied(b"PROXY TCP6 ::ffff:127.0.0.2 ::ffff:127.0.0.1 0 2526\r\n");
    assert_eq!(
        (source, destination),
        (sa("127.0.0.2:0"), sa("127.0.0.1:2526"))
    );
    let header = encode_v2(
        sa("[::ffff:192.0.2.10]:0"),
        sa("[::ffff:198.51.100.25]:25"),
        false,
        &[],
    );
    let (_, _, source, destination) = proxied(&header);
    assert_eq!(
        (source, destination),
        (sa("192.0.2.10:0"), sa("198.51.100.25:25"))
    );
    assert_eq!(
        error(b"PROXY TCP6 ::ffff:127.0.0.2 2001:db8::25 0 25\r\n"),
        ProxyHeaderError::FamilyMismatch {
            source: "127.0.0.2".parse().unwrap(),
            destination: "2001:db8::25".parse().unwrap(),
        }
    );
    let header = encode_v2(
        sa("[2001:db8::10]:0"),
        sa("[::ffff:198.51.100.25]:25"),
        false,
        &[],
    );
    assert_eq!(error(&header).tag(), "proxy_header_unsupported");
}

#[test]
fn v2_length_limit_is_judged_from_the_fixed_part() {
    let mut head = V2_SIGNATURE.to_vec();
    head.extend_from_slice(&[0x21, 0x11, 0x04, 0x01]); // 1025
    assert_eq!(
        error(&head),
        ProxyHeaderError::TooLong {
            length: 1025,
            limit: V2_MAX_PAYLOAD
        }
    );
    // Exactly the limit: addresses and one big TLV.
    let header = encode_v2(
        sa("192.0.2.10:0"),
        sa("198.51.100.25:25"),
        false,
        &[(0xe0, vec![7; 1024 - 12 - 3])],
    );
    assert_eq!(header.len(), MAX_HEADER_LEN);
    assert_eq!(proxied(&header).0, MAX_HEADER_LEN);
    assert_eq!(parse(&header[..MAX_HEADER_LEN - 1]), Ok(Parsed::Incomplete));
}

// ---- Incremental parsing ----

/// Same outcome, where a `NotProxy` error may show fewer bytes when fewer were received.
fn same_outcome(
    a: &Result<Parsed, ProxyHeaderError>,
    b: &Result<Parsed, ProxyHeaderError>,
) -> bool {
    match (a, b) {
        (Err(ProxyHeaderError::NotProxy { .. }), Err(ProxyHeaderError::NotProxy { .. })) => true,
        _ => a == b,
    }
}

/// Every prefix of `input` parses as Incomplete or as the whole input does; a prefix shorter
/// than a header is Incomplete.
fn check_every_split(input: &[u8]) {
    let full = parse(input);
    for cut in 0..=input.len() {
        let part = parse(&input[..cut]);
        let ok = match (&part, &full) {
            (Ok(Parsed::Incomplete), _) => true,
            _ => same_outcome(&part, &full),
        };
        assert!(ok, "cut {cut}: {part:?} vs {full:?}");
        if let Ok(Parsed::Header(h)) = &full {
            assert_eq!(
                cut < h.consumed,
                part == Ok(Parsed::Incomplete),
                "cut {cut}"
            );
        }
    }
}

#[test]
fn every_split_gives_the_same_result() {
    let mut samples: Vec<Vec<u8>> = vec![
        b"PROXY TCP4 127.0.0.5 127.0.0.1 0 2526\r\nEHLO x\r\n".to_vec(),
        b"PROXY TCP6 ::1 ::1 1 2527\r\n".to_vec(),
        b"PROXY UNKNOWN\r\n".to_vec(),
        b"PROXY TCP4 127.0.0.2 127.0.0.1 0 25\n".to_vec(),
        b"PROXY TCP4 127.0.0.2\r127.0.0.1 0 25\r\n".to_vec(),
        [b"PROXY UNKNOWN ".as_slice(), &[b'x'; 100]].concat(),
        b"EHLO x\r\n".to_vec(),
        hex("0d0a0d0a000d0a515549540a 21 11 000c c000020a c6336419 0000 0019 323230"),
        hex("0d0a0d0a000d0a515549540a 21 11 ffff"),
        hex("0d0a0d0a000d0a515549540a 22 11 000c"),
        hex("0d0a0d0a000d0a515549540a 20 00 0000"),
        hex("0d0a0d0a000d0a515549540a 21 11 0010 7f000002 7f000001 0000 0019 05 0002 aa"),
        encode_v2(
            sa("127.0.0.8:40312"),
            sa("127.0.0.1:2526"),
            true,
            &[(0x05, vec![])],
        ),
    ];
    let mut bad_crc = samples.last().unwrap().clone();
    bad_crc[20] ^= 0x40;
    samples.push(bad_crc);
    for input in samples {
        check_every_split(&input);
    }
}

#[test]
fn captured_from_swaks() {
    // swaks 20201014.0 against a recording listener on this machine, each followed by the
    // QUIT swaks sends when no banner comes: the header is taken, the QUIT left.
    let cases = [
        (
            "50524f58592054435034203132372e302e302e33203132372e302e302e31203120323532360d0a515549540d0a",
            Version::V1,
            "127.0.0.3:1",
            "127.0.0.1:2526",
        ),
        (
            "50524f58592054435034203132372e302e302e35203132372e302e302e31203020323532360d0a515549540d0a",
            Version::V1,
            "127.0.0.5:0",
            "127.0.0.1:2526",
        ),
        (
            "0d0a0d0a000d0a515549540a2111000c7f0000047f000001000109de515549540d0a",
            Version::V2,
            "127.0.0.4:1",
            "127.0.0.1:2526",
        ),
        (
            "0d0a0d0a000d0a515549540a212100240000000000000000000000000000000100000000000000000000000000000001000109df515549540d0a",
            Version::V2,
            "[::1]:1",
            "[::1]:2527",
        ),
    ];
    for (bytes, version, source, destination) in cases {
        let input = hex(bytes);
        let (consumed, got_version, got_source, got_destination) = proxied(&input);
        assert_eq!(&input[consumed..], b"QUIT\r\n");
        assert_eq!(got_version, version);
        assert_eq!((got_source, got_destination), (sa(source), sa(destination)));
        check_every_split(&input);
    }
}

mod props;
mod refusals;
