//! Property tests: arbitrary bytes never panic; valid input, followed by anything, parses to
//! exactly what was encoded, in any number of pieces.

use super::*;
use proptest::prelude::*;

fn socks_addr() -> impl Strategy<Value = (u8, Vec<u8>, SocksAddr)> {
    let port = any::<u16>();
    prop_oneof![
        (any::<[u8; 4]>(), port).prop_map(|(a, p)| (
            1,
            a.to_vec(),
            SocksAddr::Ip(SocketAddr::new(IpAddr::from(a), p))
        )),
        (any::<[u8; 16]>(), port).prop_map(|(a, p)| (
            4,
            a.to_vec(),
            SocksAddr::Ip(SocketAddr::new(IpAddr::from(a), p))
        )),
        ("[a-z][a-z0-9-]{0,10}[a-z]\\.[a-z]{2,6}", port).prop_map(|(n, p)| (
            3,
            [&[n.len() as u8], n.as_bytes()].concat(),
            SocksAddr::Domain(n, p)
        )),
    ]
}

fn request(command: u8, atyp: u8, raw: &[u8], port: u16) -> Vec<u8> {
    [&[5, command, 0, atyp][..], raw, &port.to_be_bytes()].concat()
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(
        password in any::<bool>(),
        input in prop::collection::vec(any::<u8>(), 0..700),
        cut in any::<prop::sample::Index>(),
    ) {
        let auth = if password { AuthMode::Password } else { AuthMode::None };
        let whole = drive_all(auth, &input);
        let (a, b) = input.split_at(cut.index(input.len() + 1));
        prop_assert_eq!(drive(auth, [a, b], true), whole.clone());
        if let Some(Event::Error(e)) = whole.0.last() {
            prop_assert!(!e.to_string().chars().any(char::is_control));
        }
    }

    #[test]
    fn valid_handshakes_give_their_requests(
        password in any::<bool>(),
        extra_methods in prop::collection::vec(prop::sample::select(vec![0u8, 1, 2, 3, 0x80]), 0..5),
        user in prop::collection::vec(any::<u8>(), 0..256),
        pass in prop::collection::vec(any::<u8>(), 0..256),
        bind in prop::option::of(prop_oneof![any::<[u8; 4]>().prop_map(IpAddr::from), any::<[u8; 16]>().prop_map(IpAddr::from)]),
        (atyp, raw, addr) in socks_addr(),
        after in prop::collection::vec(any::<u8>(), 0..64),
        cut in any::<prop::sample::Index>(),
    ) {
        let auth = if password { AuthMode::Password } else { AuthMode::None };
        let mut methods = extra_methods.clone();
        methods.push(auth.method());
        let mut input = vec![5, methods.len() as u8];
        input.extend(&methods);
        let mut expected = vec![Event::Sent(vec![5, auth.method()])];
        if password {
            input.push(1);
            input.push(user.len().min(255) as u8);
            input.extend(&user[..user.len().min(255)]);
            input.push(pass.len().min(255) as u8);
            input.extend(&pass[..pass.len().min(255)]);
            expected.push(Event::Creds(user[..user.len().min(255)].to_vec(), pass[..pass.len().min(255)].to_vec()));
            expected.push(Event::Sent(vec![1, 0]));
        }
        // The BIND source takes the destination's family when one is known.
        let bind = bind.map(|b| match (&addr, b) {
            (SocksAddr::Ip(d), IpAddr::V6(s)) if d.is_ipv4() => IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(&s.octets()[..4]).unwrap())),
            (SocksAddr::Ip(d), IpAddr::V4(s)) if d.is_ipv6() => {
                let [a, b, c, e] = s.octets();
                IpAddr::V6(Ipv6Addr::from([0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, a, b, c, e]))
            }
            (_, b) => b,
        });
        if let Some(source) = bind {
            let (t, raw) = match source {
                IpAddr::V4(a) => (1, a.octets().to_vec()),
                IpAddr::V6(a) => (4, a.octets().to_vec()),
            };
            input.extend(request(2, t, &raw, 0));
            expected.push(Event::Bind(source));
            expected.push(Event::Sent(reply(ReplyCode::Succeeded, Some(SocketAddr::new(source, 0)), Some(AddrFamily::of(source)))));
        }
        input.extend(request(1, atyp, &raw, addr.port()));
        expected.push(Event::Connect(addr));
        input.extend(&after);
        let (a, b) = input.split_at(cut.index(input.len() + 1));
        prop_assert_eq!(drive(auth, [a, b], true), (expected, after));
    }
}
