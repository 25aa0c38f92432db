//! Integration tests of `greenarrow_proxy::dns` against real DNS servers on
//! loopback: Debian's dnsmasq (package `dnsmasq-base`, must be installed: the
//! tests fail without it) and, for slow and SERVFAIL answers, a tiny scripted
//! responder built on hickory-proto.

#[path = "dns/dnsmasq.rs"]
mod dnsmasq;
#[path = "dns/fake.rs"]
mod fake;

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
use fake::{FakeDns, Reply};

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

/// The zone every dnsmasq test uses (all under `.test`).
fn zone() -> Vec<String> {
    [
        // Two preferences.
        "--mx-host=pref.test,mx20.pref.test,20",
        "--mx-host=pref.test,mx10.pref.test,10",
        "--host-record=mx10.pref.test,127.0.0.10,2001:db8::10",
        "--host-record=mx20.pref.test,127.0.0.20,2001:db8::20",
        // Equal preferences.
        "--mx-host=equal.test,a.equal.test,10",
        "--mx-host=equal.test,b.equal.test,10",
        "--mx-host=equal.test,c.equal.test,20",
        "--host-record=a.equal.test,127.0.1.1",
        "--host-record=b.equal.test,127.0.1.2",
        "--host-record=c.equal.test,127.0.1.3",
        // No MX, address records only: implicit MX.
        "--host-record=implicit.test,127.0.0.30,2001:db8::30",
        // IPv4 only, directly and as an MX.
        "--host-record=v4only.test,127.0.0.40",
        "--mx-host=v4mx.test,v4only.test,10",
        // Null MX (RFC 7505).
        "--mx-host=nullmx.test,.,0",
        // An MX host that does not exist next to one that does.
        "--mx-host=partial.test,gone.partial.test,5",
        "--mx-host=partial.test,mx.partial.test,10",
        "--host-record=mx.partial.test,127.0.0.50",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn dnsmasq() -> (Dnsmasq, Resolver) {
    let server = Dnsmasq::start(&zone());
    let resolver = resolver(server.addr, Duration::from_secs(2));
    (server, resolver)
}

fn hosts(candidates: &[Candidate]) -> Vec<(&str, IpAddr, Option<u16>)> {
    candidates
        .iter()
        .map(|c| (c.host.as_str(), c.addr, c.preference))
        .collect()
}

#[test]
fn mx_hosts_in_preference_order_with_family_addresses() {
    let (_server, resolver) = dnsmasq();
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

#[test]
fn equal_preferences_are_shuffled() {
    let (_server, resolver) = dnsmasq();
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

#[test]
fn no_mx_means_implicit_mx_from_address_records() {
    let (_server, resolver) = dnsmasq();
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
}

#[test]
fn lookup_host_picks_a_or_aaaa_by_family() {
    let (_server, resolver) = dnsmasq();
    assert_eq!(
        resolver.lookup_host("implicit.test", Family::V4).unwrap(),
        vec![ip("127.0.0.30")]
    );
    assert_eq!(
        resolver.lookup_host("implicit.test.", Family::V6).unwrap(),
        vec![ip("2001:db8::30")]
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

#[test]
fn nxdomain_is_permanent() {
    let (_server, resolver) = dnsmasq();
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

#[test]
fn null_mx_is_reported() {
    let (_server, resolver) = dnsmasq();
    let err = resolver.resolve_mx("nullmx.test", Family::V4).unwrap_err();
    assert_eq!(
        err,
        DnsError::NullMx {
            domain: "nullmx.test".into()
        }
    );
    assert!(err.is_permanent());
}

#[test]
fn only_a_records_asked_for_v6_is_no_address() {
    let (_server, resolver) = dnsmasq();
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

#[test]
fn missing_mx_host_is_skipped() {
    let (_server, resolver) = dnsmasq();
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
