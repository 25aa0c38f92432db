//! Integration tests of `greenarrow_proxy::dns` against DNS servers on
//! loopback, with the real resolver.
//!
//! By default everything runs against an in-process responder
//! (`greenarrow_proxy_testkit::fakedns`: UDP on 127.0.0.1, hickory-proto wire format):
//! a static zone for the RFC 5321 §5.1 behaviour, scripted answers for
//! SERVFAIL and slow servers. The zone tests also have `#[ignore]`d twins
//! (`dnsmasq_zone::*`) that ask Debian's dnsmasq (package `dnsmasq-base`)
//! serving the same zone; CI runs them with `cargo test --test dns -- --ignored`.

mod dnsmasq;

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use greenarrow_proxy::dns::{
    Candidate, DnsError, Family, Resolver, ResolverSettings, MAX_ADDRS_PER_HOST,
};
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::rr::rdata::{A, MX};
use hickory_resolver::proto::rr::{Name, RData, RecordType};

use dnsmasq::Dnsmasq;
use greenarrow_proxy_testkit::fakedns::{FakeDns, Reply, Zone};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn resolver(server: SocketAddr, timeout: Duration) -> Resolver {
    Resolver::new(&ResolverSettings {
        nameservers: vec![server],
        timeout,
        attempts: 1,
    })
    .unwrap()
}

/// One entry of the zone the twin tests use, served by dnsmasq and by the
/// in-process responder alike.
enum Entry {
    /// `MX preference exchange` for a domain; exchange `.` is a null MX.
    Mx(&'static str, u16, &'static str),
    /// A / AAAA records of a host, in this order.
    Host(&'static str, &'static [&'static str]),
}

/// The zone every twin test uses (all under `.test`).
const ZONE: &[Entry] = &[
    // Two preferences.
    Entry::Mx("pref.test", 20, "mx20.pref.test"),
    Entry::Mx("pref.test", 10, "mx10.pref.test"),
    Entry::Host("mx10.pref.test", &["127.0.0.10", "2001:db8::10"]),
    Entry::Host("mx20.pref.test", &["127.0.0.20", "2001:db8::20"]),
    // Equal preferences.
    Entry::Mx("equal.test", 10, "a.equal.test"),
    Entry::Mx("equal.test", 10, "b.equal.test"),
    Entry::Mx("equal.test", 20, "c.equal.test"),
    Entry::Host("a.equal.test", &["127.0.1.1"]),
    Entry::Host("b.equal.test", &["127.0.1.2"]),
    Entry::Host("c.equal.test", &["127.0.1.3"]),
    // No MX, address records only: implicit MX.
    Entry::Host("implicit.test", &["127.0.0.30", "2001:db8::30"]),
    // IPv4 only, directly and as an MX.
    Entry::Host("v4only.test", &["127.0.0.40"]),
    Entry::Mx("v4mx.test", 10, "v4only.test"),
    // Null MX (RFC 7505).
    Entry::Mx("nullmx.test", 0, "."),
    // An MX host that does not exist next to one that does.
    Entry::Mx("partial.test", 5, "gone.partial.test"),
    Entry::Mx("partial.test", 10, "mx.partial.test"),
    Entry::Host("mx.partial.test", &["127.0.0.50"]),
];

/// [`ZONE`] as dnsmasq options.
fn dnsmasq_options() -> Vec<String> {
    ZONE.iter()
        .map(|entry| match entry {
            Entry::Mx(domain, preference, exchange) => {
                format!("--mx-host={domain},{exchange},{preference}")
            }
            Entry::Host(name, addrs) => format!("--host-record={name},{}", addrs.join(",")),
        })
        .collect()
}

/// [`ZONE`] for the in-process responder.
fn fake_zone() -> Zone {
    ZONE.iter()
        .fold(Zone::new("test"), |zone, entry| match entry {
            Entry::Mx(domain, preference, exchange) => zone.mx(domain, *preference, exchange),
            Entry::Host(name, addrs) => zone.addrs(name, addrs),
        })
}

/// Runs each zone test twice: against the in-process responder (by default)
/// and against dnsmasq (ignored unless `--ignored`: needs `dnsmasq-base`).
macro_rules! zone_tests {
    ($($name:ident),+ $(,)?) => {
        /// The zone tests against the in-process responder.
        mod fake_zone {
            $(
                #[test]
                fn $name() {
                    let server = super::FakeDns::zone(super::fake_zone());
                    let resolver = super::resolver(server.addr, super::Duration::from_secs(2));
                    super::$name(&resolver);
                    assert!(server.queries.load(std::sync::atomic::Ordering::SeqCst) > 0);
                }
            )+
        }
        /// The same tests against Debian's dnsmasq serving the same zone.
        mod dnsmasq_zone {
            $(
                #[test]
                #[ignore = "needs Debian's dnsmasq-base; CI runs them with --ignored"]
                fn $name() {
                    let server = super::Dnsmasq::start(&super::dnsmasq_options());
                    let resolver = super::resolver(server.addr, super::Duration::from_secs(2));
                    super::$name(&resolver);
                }
            )+
        }
    };
}

zone_tests!(
    mx_hosts_in_preference_order_with_family_addresses,
    equal_preferences_are_shuffled,
    no_mx_means_implicit_mx_from_address_records,
    lookup_host_picks_a_or_aaaa_by_family,
    nxdomain_is_permanent,
    null_mx_is_reported,
    only_a_records_asked_for_v6_is_no_address,
    missing_mx_host_is_skipped,
);

fn hosts(candidates: &[Candidate]) -> Vec<(&str, IpAddr, Option<u16>)> {
    candidates
        .iter()
        .map(|c| (c.host.as_str(), c.addr, c.preference))
        .collect()
}

fn mx_hosts_in_preference_order_with_family_addresses(resolver: &Resolver) {
    let v4 = resolver.resolve_mx("pref.test", Family::V4).unwrap();
    assert_eq!(
        hosts(&v4),
        vec![
            ("mx10.pref.test", ip("127.0.0.10"), Some(10)),
            ("mx20.pref.test", ip("127.0.0.20"), Some(20)),
        ]
    );
    // Trailing dot and upper case are accepted; AAAA for V6.
    let v6 = resolver.resolve_mx("PREF.test.", Family::V6).unwrap();
    assert_eq!(
        hosts(&v6),
        vec![
            ("mx10.pref.test", ip("2001:db8::10"), Some(10)),
            ("mx20.pref.test", ip("2001:db8::20"), Some(20)),
        ]
    );
}

fn equal_preferences_are_shuffled(resolver: &Resolver) {
    let mut firsts = HashSet::new();
    for _ in 0..64 {
        let c = resolver.resolve_mx("equal.test", Family::V4).unwrap();
        assert_eq!(c.len(), 3);
        let top: HashSet<&str> = c[..2].iter().map(|c| c.host.as_str()).collect();
        assert_eq!(top, HashSet::from(["a.equal.test", "b.equal.test"]));
        assert_eq!(c[2].host, "c.equal.test");
        assert_eq!(c[2].addr, ip("127.0.1.3"));
        firsts.insert(c[0].host.clone());
    }
    // Each order has probability 1/2 per lookup: both appear in 64 (p(fail) = 2^-63).
    assert_eq!(firsts.len(), 2, "only saw {firsts:?} first");
}

fn no_mx_means_implicit_mx_from_address_records(resolver: &Resolver) {
    assert_eq!(
        resolver.resolve_mx("implicit.test", Family::V4).unwrap(),
        vec![Candidate {
            host: "implicit.test".into(),
            addr: ip("127.0.0.30"),
            preference: Some(0),
        }]
    );
    assert_eq!(
        hosts(&resolver.resolve_mx("implicit.test", Family::V6).unwrap()),
        vec![("implicit.test", ip("2001:db8::30"), Some(0))]
    );
    // Named like an MX host: lower case, without the trailing dot.
    assert_eq!(
        hosts(&resolver.resolve_mx("Implicit.TEST.", Family::V4).unwrap()),
        vec![("implicit.test", ip("127.0.0.30"), Some(0))]
    );
}

fn lookup_host_picks_a_or_aaaa_by_family(resolver: &Resolver) {
    assert_eq!(
        resolver.lookup_host("implicit.test", Family::V4).unwrap(),
        vec![ip("127.0.0.30")]
    );
    assert_eq!(
        resolver.lookup_host("implicit.test.", Family::V6).unwrap(),
        vec![ip("2001:db8::30")]
    );
    // A name that exists with other records only (NODATA).
    assert_eq!(
        resolver.lookup_host("pref.test", Family::V4).unwrap_err(),
        DnsError::NoAddress {
            name: "pref.test".into(),
            family: Family::V4
        }
    );
    // IP literals need no DNS, but must match the family.
    assert_eq!(
        resolver.lookup_host("127.0.0.7", Family::V4).unwrap(),
        vec![ip("127.0.0.7")]
    );
    assert!(matches!(
        resolver.lookup_host("::1", Family::V4),
        Err(DnsError::NoAddress {
            family: Family::V4,
            ..
        })
    ));
}

fn nxdomain_is_permanent(resolver: &Resolver) {
    let err = resolver.resolve_mx("nosuch.test", Family::V4).unwrap_err();
    assert_eq!(
        err,
        DnsError::NxDomain {
            name: "nosuch.test".into()
        }
    );
    assert!(err.is_permanent());
    let err = resolver.lookup_host("nosuch.test", Family::V6).unwrap_err();
    assert!(matches!(err, DnsError::NxDomain { .. }), "{err:?}");
}

fn null_mx_is_reported(resolver: &Resolver) {
    let err = resolver.resolve_mx("nullmx.test", Family::V4).unwrap_err();
    assert_eq!(
        err,
        DnsError::NullMx {
            domain: "nullmx.test".into()
        }
    );
    assert!(err.is_permanent());
}

fn only_a_records_asked_for_v6_is_no_address(resolver: &Resolver) {
    let err = resolver.lookup_host("v4only.test", Family::V6).unwrap_err();
    assert_eq!(
        err,
        DnsError::NoAddress {
            name: "v4only.test".into(),
            family: Family::V6
        }
    );
    assert!(err.is_permanent());
    // Implicit MX and real MX alike.
    assert!(matches!(
        resolver.resolve_mx("v4only.test", Family::V6),
        Err(DnsError::NoAddress {
            family: Family::V6,
            ..
        })
    ));
    assert_eq!(
        resolver.resolve_mx("v4mx.test", Family::V6).unwrap_err(),
        DnsError::NoAddress {
            name: "v4mx.test".into(),
            family: Family::V6
        }
    );
    assert_eq!(
        hosts(&resolver.resolve_mx("v4mx.test", Family::V4).unwrap()),
        vec![("v4only.test", ip("127.0.0.40"), Some(10))]
    );
}

fn missing_mx_host_is_skipped(resolver: &Resolver) {
    assert_eq!(
        hosts(&resolver.resolve_mx("partial.test", Family::V4).unwrap()),
        vec![("mx.partial.test", ip("127.0.0.50"), Some(10))]
    );
}

#[test]
fn invalid_names_are_rejected_without_a_query() {
    // Nothing listens for these: an accidental query would time out as Transient.
    let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
    let resolver = resolver(silent.local_addr().unwrap(), Duration::from_millis(200));
    for bad in [
        "bad_name.test",
        "-x.test",
        "a..test",
        "",
        "1.2.3.4",
        "x.test..",
    ] {
        let err = resolver.resolve_mx(bad, Family::V4).unwrap_err();
        assert!(
            matches!(err, DnsError::InvalidName { .. }),
            "{bad:?}: {err:?}"
        );
        assert!(err.is_permanent());
    }
}

#[test]
fn unanswered_queries_are_transient_within_bounded_time() {
    let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
    let resolver = resolver(silent.local_addr().unwrap(), Duration::from_millis(300));
    let start = Instant::now();
    let err = resolver.resolve_mx("example.test", Family::V4).unwrap_err();
    let elapsed = start.elapsed();
    eprintln!("timeout: {err} after {elapsed:?}");
    assert!(matches!(err, DnsError::Transient { .. }), "{err:?}");
    assert!(!err.is_permanent());
    // timeout 300 ms x (1 retry + 1): well under 3 s.
    assert!(elapsed >= Duration::from_millis(300), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(3), "{elapsed:?}");
}

#[test]
fn servfail_mx_host_is_skipped_and_all_failing_is_transient() {
    let server = FakeDns::start(Duration::ZERO, |name, rtype| {
        let mx = |pref: u16, host: &str| RData::MX(MX::new(pref, Name::from_ascii(host).unwrap()));
        match (name, rtype) {
            ("mixed.test", RecordType::MX) => Reply::records(vec![
                mx(10, "broken.mixed.test."),
                mx(20, "good.mixed.test."),
            ]),
            ("allbad.test", RecordType::MX) => Reply::records(vec![mx(10, "broken.mixed.test.")]),
            ("good.mixed.test", RecordType::A) => {
                Reply::records(vec![RData::A(A::new(127, 0, 0, 60))])
            }
            _ => Reply::code(ResponseCode::ServFail),
        }
    });
    let resolver = resolver(server.addr, Duration::from_secs(2));
    assert_eq!(
        hosts(&resolver.resolve_mx("mixed.test", Family::V4).unwrap()),
        vec![("good.mixed.test", ip("127.0.0.60"), Some(20))]
    );
    let err = resolver.resolve_mx("allbad.test", Family::V4).unwrap_err();
    assert!(matches!(err, DnsError::Transient { .. }), "{err:?}");
    // SERVFAIL on the MX query itself.
    let err = resolver.resolve_mx("other.test", Family::V4).unwrap_err();
    assert!(matches!(err, DnsError::Transient { .. }), "{err:?}");
    assert!(!err.is_permanent());
}

#[test]
fn many_addresses_are_bounded_per_mx_host() {
    let server = FakeDns::start(Duration::ZERO, |name, rtype| match (name, rtype) {
        ("many.test", RecordType::A) => {
            Reply::records((1..=20).map(|i| RData::A(A::new(127, 0, 2, i))).collect())
        }
        _ => Reply::code(ResponseCode::NoError),
    });
    let resolver = resolver(server.addr, Duration::from_secs(2));
    let c = resolver.resolve_mx("many.test", Family::V4).unwrap();
    assert_eq!(c.len(), MAX_ADDRS_PER_HOST);
    assert_eq!(c[0].addr, ip("127.0.2.1"));
    assert_eq!(
        resolver.lookup_host("many.test", Family::V4).unwrap().len(),
        16
    );
}

/// The address the slow server gives `hN.slow.test`.
fn slow_addr(n: u8) -> IpAddr {
    IpAddr::from([127, 0, 3, n])
}

#[test]
fn concurrent_lookups_are_not_serialised() {
    const THREADS: usize = 50;
    let delay = Duration::from_millis(200);
    let server = FakeDns::start(delay, |name, rtype| {
        let n = name
            .strip_suffix(".slow.test")
            .and_then(|h| h.strip_prefix('h'))
            .and_then(|n| n.parse::<u8>().ok());
        match (n, rtype) {
            (Some(n), RecordType::A) => Reply::records(vec![RData::A(A::new(127, 0, 3, n))]),
            _ => Reply::code(ResponseCode::NXDomain),
        }
    });
    let resolver = resolver(server.addr, Duration::from_secs(5));

    let start = Instant::now();
    assert_eq!(
        resolver.lookup_host("h200.slow.test", Family::V4).unwrap(),
        vec![slow_addr(200)]
    );
    let single = start.elapsed();
    assert!(single >= delay, "{single:?}");

    let barrier = Arc::new(Barrier::new(THREADS + 1));
    let workers: Vec<_> = (0..THREADS)
        .map(|i| {
            let (resolver, barrier) = (resolver.clone(), barrier.clone());
            thread::spawn(move || {
                barrier.wait();
                let name = format!("h{i}.slow.test");
                resolver.lookup_host(&name, Family::V4)
            })
        })
        .collect();
    barrier.wait();
    let start = Instant::now();
    for (i, worker) in workers.into_iter().enumerate() {
        let got = worker.join().unwrap().unwrap();
        assert_eq!(got, vec![slow_addr(i as u8)]);
    }
    let all = start.elapsed();
    eprintln!("one lookup: {single:?}; {THREADS} concurrent lookups: {all:?}");
    assert!(
        server.queries.load(std::sync::atomic::Ordering::SeqCst) > THREADS,
        "lookups did not reach the server"
    );
    assert!(
        all < single * 10,
        "{THREADS} concurrent lookups took {all:?}, one took {single:?}"
    );
}

#[test]
fn bad_settings_are_setup_errors() {
    let server: SocketAddr = "127.0.0.1:53".parse().unwrap();
    for (timeout, attempts) in [
        (Duration::ZERO, 1),
        (Duration::from_secs(1), 0),
        (Duration::from_secs(1), 11),
    ] {
        let err = Resolver::new(&ResolverSettings {
            nameservers: vec![server],
            timeout,
            attempts,
        })
        .unwrap_err();
        assert!(matches!(err, DnsError::Setup(_)), "{err:?}");
        assert!(!err.is_permanent());
    }
}

#[test]
fn blocking_calls_from_inside_an_async_runtime_are_refused() {
    let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
    let resolver = resolver(silent.local_addr().unwrap(), Duration::from_millis(200));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let err = runtime
        .block_on(async { resolver.lookup_host("example.test", Family::V4) })
        .unwrap_err();
    assert!(matches!(err, DnsError::Setup(_)), "{err:?}");
}

/// The in-process zone answers like an authoritative server: what the twin
/// tests rely on, checked on the zone itself (no resolver cache in between).
#[test]
fn fake_zone_answers_like_an_authoritative_server() {
    let zone = fake_zone();
    let mx = zone.answer("PREF.test.", RecordType::MX);
    assert_eq!(mx.code, ResponseCode::NoError);
    assert!(mx.authoritative);
    assert_eq!(
        mx.answers,
        vec![
            RData::MX(MX::new(20, Name::from_ascii("mx20.pref.test.").unwrap())),
            RData::MX(MX::new(10, Name::from_ascii("mx10.pref.test.").unwrap())),
        ]
    );
    let null = zone.answer("nullmx.test", RecordType::MX);
    assert_eq!(null.answers, vec![RData::MX(MX::new(0, Name::root()))]);
    // NODATA: the name exists with other types; the SOA comes with it.
    for (name, rtype) in [
        ("pref.test", RecordType::A),
        ("implicit.test", RecordType::MX),
        ("v4only.test", RecordType::AAAA),
        ("test", RecordType::A),
        ("equal.test", RecordType::AAAA),
    ] {
        let r = zone.answer(name, rtype);
        assert_eq!(r.code, ResponseCode::NoError, "{name} {rtype}");
        assert!(r.answers.is_empty(), "{name} {rtype}");
        assert_eq!(r.authority.len(), 1, "{name} {rtype}");
        assert_eq!(r.authority[0].1.record_type(), RecordType::SOA);
    }
    // NXDOMAIN under the zone, REFUSED outside it.
    let r = zone.answer("gone.partial.test", RecordType::A);
    assert_eq!(r.code, ResponseCode::NXDomain);
    assert_eq!(r.authority[0].1.record_type(), RecordType::SOA);
    assert_eq!(
        zone.answer("example.com", RecordType::A).code,
        ResponseCode::Refused
    );
    assert_eq!(
        zone.answer("nottest", RecordType::A).code,
        ResponseCode::Refused
    );
}
