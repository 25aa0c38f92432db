//! Property tests: arbitrary bytes never panic; valid input, followed by anything, parses to
//! exactly what was encoded, in any number of pieces.

use super::*;
use proptest::prelude::*;

fn ip_pair() -> impl Strategy<Value = (IpAddr, IpAddr)> {
    let v6 = any::<[u8; 16]>()
        .prop_map(Ipv6Addr::from)
        .prop_filter("not IPv4-mapped", |a| a.to_ipv4_mapped().is_none());
    prop_oneof![
        (any::<[u8; 4]>(), any::<[u8; 4]>()).prop_map(|(s, d)| (IpAddr::from(s), IpAddr::from(d))),
        (v6.clone(), v6).prop_map(|(s, d)| (IpAddr::V6(s), IpAddr::V6(d))),
    ]
}

fn tlvs() -> impl Strategy<Value = Vec<(u8, Vec<u8>)>> {
    let kind = any::<u8>().prop_filter("not CRC32C", |&k| k != TLV_CRC32C);
    prop::collection::vec((kind, prop::collection::vec(any::<u8>(), 0..40)), 0..5)
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(
        prefix in prop::sample::select(vec![
            vec![],
            b"PROXY ".to_vec(),
            b"PROXY TCP4 ".to_vec(),
            b"PROXY TCP6 ".to_vec(),
            V2_SIGNATURE.to_vec(),
            [&V2_SIGNATURE[..], &[0x21, 0x11, 0x00]].concat(),
            [&V2_SIGNATURE[..], &[0x21, 0x21, 0x00]].concat(),
            [&V2_SIGNATURE[..], &[0x21, 0x11, 0x00, 0x20]].concat(),
        ]),
        rest in prop::collection::vec(any::<u8>(), 0..1200),
    ) {
        let input = [&prefix[..], &rest[..]].concat();
        match parse(&input) {
            Ok(Parsed::Incomplete) => prop_assert!(input.len() < MAX_HEADER_LEN),
            Ok(Parsed::Header(h)) => {
                prop_assert!(h.consumed <= input.len() && h.consumed <= MAX_HEADER_LEN);
                prop_assert_eq!(parse(&input[..h.consumed]), Ok(Parsed::Header(h)));
            }
            Err(e) => {
                let text = e.to_string();
                prop_assert!(!text.chars().any(char::is_control), "{:?}", text);
                prop_assert!(e.tag().starts_with("proxy_header_"));
            }
        }
        // Reading the same bytes in pieces cannot change the verdict.
        check_every_split(&input);
    }

    #[test]
    fn valid_headers_parse_back_exactly(
        (src, dst) in ip_pair(),
        sport in any::<u16>(),
        dport in any::<u16>(),
        v2 in any::<bool>(),
        crc in any::<bool>(),
        tlvs in tlvs(),
        after in prop::collection::vec(any::<u8>(), 0..64),
    ) {
        let (source, destination) = (SocketAddr::new(src, sport), SocketAddr::new(dst, dport));
        let header = if v2 {
            encode_v2(source, destination, crc, &tlvs)
        } else {
            encode_v1(source, destination)
        };
        let input = [&header[..], &after[..]].concat();
        let expected = Header {
            consumed: header.len(),
            version: if v2 { Version::V2 } else { Version::V1 },
            kind: HeaderKind::Proxied { source, destination },
        };
        prop_assert_eq!(parse(&input), Ok(Parsed::Header(expected)));
        for cut in 0..header.len() {
            prop_assert_eq!(parse(&input[..cut]), Ok(Parsed::Incomplete));
        }
    }
}
