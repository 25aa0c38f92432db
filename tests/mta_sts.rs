//! MTA-STS (RFC 8461) and TLS reporting (RFC 8460) with real components: the policy fetched
//! over HTTPS from a server on loopback with a certificate from a test CA (the test-only
//! trust key), `_mta-sts` and `_smtp._tls` TXT records from the in-process DNS responder, the
//! cache in a state directory; the reports written as files and read back as JSON.

use greenarrow_proxy::dns::{Resolver, ResolverSettings};
use greenarrow_proxy::tlspolicy::https::Client;
use greenarrow_proxy::tlspolicy::sts::StsCache;
use greenarrow_proxy::tlspolicy::TlsPolicies;
use greenarrow_proxy_net::tls::{load_roots, MinVersion, MxTlsConnector};
use greenarrow_proxy_proto::tls_policy::decide::{StsFinding, StsMode};
use greenarrow_proxy_proto::tls_policy::rpt::{Day, PolicyType, ResultType};
use greenarrow_proxy_proto::tls_policy::{Applied, TlsOutcome};
use greenarrow_proxy_testkit::certgen::Ca;
use greenarrow_proxy_testkit::fakedns::{FakeDns, Zone};
use greenarrow_proxy_testkit::fixtures::TempDir;
use greenarrow_proxy_testkit::stsserver::{PolicyServer, Serve};
use parking_lot::Mutex;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

const DOMAIN: &str = "sts.test";

/// The zone: the policy host on 127.0.0.1, the TXT record with `id`; TTL 0 so that the
/// resolver asks again after each change.
fn zone(id: &str) -> Zone {
    Zone::new("test")
        .ttl(0)
        .addr("mta-sts.sts.test", "127.0.0.1")
        .txt("_mta-sts.sts.test", &format!("v=STSv1; id={id};"))
        .addr("mta-sts.other.test", "127.0.0.1")
        .txt("_mta-sts.other.test", "v=STSv1; id=o1")
        .txt(
            "_smtp._tls.sts.test",
            "v=TLSRPTv1; rua=mailto:tlsrpt@sts.test",
        )
}

struct Setup {
    ca: Ca,
    zone: Arc<Mutex<Zone>>,
    dns: FakeDns,
    dir: TempDir,
    resolver: Resolver,
    _ca_dir: TempDir,
    ca_file: std::path::PathBuf,
}

fn setup(tag: &str) -> Setup {
    let ca = Ca::new("MTA-STS test CA").unwrap();
    let zone = Arc::new(Mutex::new(zone("1")));
    let dns = FakeDns::shared_zone(zone.clone());
    let resolver = Resolver::new(&ResolverSettings {
        nameservers: vec![dns.addr],
        timeout: Duration::from_secs(2),
        attempts: 1,
    })
    .unwrap();
    let ca_dir = TempDir::new("sts-ca");
    let ca_file = ca_dir.0.join("ca.pem");
    std::fs::write(&ca_file, ca.cert_pem()).unwrap();
    Setup {
        ca,
        zone,
        dns,
        dir: TempDir::new(tag),
        resolver,
        _ca_dir: ca_dir,
        ca_file,
    }
}

impl Setup {
    fn client(&self, port: u16) -> Client {
        let roots = load_roots(Some(&self.ca_file)).unwrap();
        Client {
            tls: MxTlsConnector::new(roots, MinVersion::Tls12).unwrap(),
            resolver: self.resolver.clone(),
            timeout: Duration::from_secs(5),
            max_size: 64 * 1024,
            port,
        }
    }

    fn server(&self, domain: &str, serve: Serve) -> PolicyServer {
        PolicyServer::start("127.0.0.1:0".parse().unwrap(), &self.ca, domain, serve)
    }

    fn set_id(&self, id: &str) {
        *self.zone.lock() = zone(id);
    }
}

fn mode(finding: &StsFinding) -> Option<StsMode> {
    match finding {
        StsFinding::Policy { mode, .. } => Some(*mode),
        _ => None,
    }
}

#[test]
fn a_policy_is_fetched_once_applied_to_mx_names_and_refreshed_when_the_id_changes() {
    let s = setup("sts-fetch");
    let server = s.server(
        DOMAIN,
        Serve::policy("enforce", &["mx.sts.test", "*.mx.sts.test"], 86400),
    );
    let client = s.client(server.addr.port());
    let cache = StsCache::new(Some(&s.dir.0));

    let found = cache.lookup(&client, DOMAIN);
    assert!(found.failure.is_none(), "{:?}", found.failure);
    assert_eq!(
        found.finding(Some("mx.sts.test")),
        StsFinding::Policy {
            mode: StsMode::Enforce,
            mx_matches: true,
            policy_id: "1".into()
        }
    );
    assert_eq!(
        found.finding(Some("a.mx.sts.test")),
        StsFinding::Policy {
            mode: StsMode::Enforce,
            mx_matches: true,
            policy_id: "1".into()
        }
    );
    for other in ["mx.other.test", "a.b.mx.sts.test"] {
        assert!(
            matches!(
                found.finding(Some(other)),
                StsFinding::Policy {
                    mx_matches: false,
                    ..
                }
            ),
            "{other}"
        );
    }
    // The policy's lines and patterns, as TLS-RPT reports them.
    let p = found.report_policy().unwrap();
    assert_eq!(p.policy_type, PolicyType::Sts);
    assert_eq!(p.strings[1], "mode: enforce");
    assert_eq!(p.mx_hosts, vec!["mx.sts.test", "*.mx.sts.test"]);
    assert_eq!(server.requests.load(Ordering::SeqCst), 1);

    // The same id: the cached policy, no request.
    let again = cache.lookup(&client, DOMAIN);
    assert_eq!(
        mode(&again.finding(Some("mx.sts.test"))),
        Some(StsMode::Enforce)
    );
    assert_eq!(server.requests.load(Ordering::SeqCst), 1);

    // A new id: fetched again, the new policy in force.
    server.set(Serve::policy("testing", &["mx.sts.test"], 86400));
    s.set_id("2");
    let refreshed = cache.lookup(&client, DOMAIN);
    assert_eq!(server.requests.load(Ordering::SeqCst), 2);
    assert_eq!(
        refreshed.finding(Some("mx.sts.test")),
        StsFinding::Policy {
            mode: StsMode::Testing,
            mx_matches: true,
            policy_id: "2".into()
        }
    );
    // Kept in the state directory.
    let file = std::fs::read_to_string(s.dir.0.join("mta-sts/sts.test.json")).unwrap();
    assert!(
        file.contains("\"id\":\"2\"") && file.contains("mode: testing"),
        "{file}"
    );
}

#[test]
fn the_cache_survives_a_restart_and_the_https_server_going_away() {
    let s = setup("sts-restart");
    let server = s.server(DOMAIN, Serve::policy("enforce", &["mx.sts.test"], 86400));
    let client = s.client(server.addr.port());
    {
        let cache = StsCache::new(Some(&s.dir.0));
        assert_eq!(
            mode(&cache.lookup(&client, DOMAIN).finding(None)),
            Some(StsMode::Enforce)
        );
    }
    server.stop();
    // A new cache (a restarted proxy) from the same directory: the policy is there, nothing
    // is fetched (the server is gone).
    let cache = StsCache::new(Some(&s.dir.0));
    let found = cache.lookup(&client, DOMAIN);
    assert!(found.failure.is_none(), "{:?}", found.failure);
    assert_eq!(
        mode(&found.finding(Some("mx.sts.test"))),
        Some(StsMode::Enforce)
    );
    // The TXT record gone: the cached policy stays until it expires (RFC 8461 section 5.1).
    *s.zone.lock() = Zone::new("test")
        .ttl(0)
        .addr("mta-sts.sts.test", "127.0.0.1");
    assert_eq!(
        mode(&cache.lookup(&client, DOMAIN).finding(None)),
        Some(StsMode::Enforce)
    );
    // A new id while the server is gone: the refresh fails, the cached policy stays in force
    // and the failure is reported.
    s.set_id("9");
    let failed = cache.lookup(&client, DOMAIN);
    assert_eq!(mode(&failed.finding(None)), Some(StsMode::Enforce));
    let e = failed.failure.expect("a failed refresh");
    assert_eq!(e.result_type(), ResultType::StsPolicyFetchError, "{e}");
}

#[test]
fn broken_policies_and_certificates_are_failures_with_their_result_types() {
    let s = setup("sts-broken");
    // Not a policy.
    let server = s.server(DOMAIN, Serve::Policy("<html>hello</html>\n".into()));
    let client = s.client(server.addr.port());
    let cache = StsCache::new(None);
    let found = cache.lookup(&client, DOMAIN);
    assert_eq!(found.finding(None), StsFinding::NoPolicy);
    assert_eq!(
        found.failure.unwrap().result_type(),
        ResultType::StsPolicyInvalid
    );
    drop(server);

    // A redirect is not followed; a wrong media type is refused.
    for raw in [
        "HTTP/1.1 302 Found\r\nLocation: https://mta-sts.sts.test/x\r\nContent-Length: 0\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 0\r\n\r\n",
    ] {
        let server = s.server(DOMAIN, Serve::Raw(raw.into()));
        let client = s.client(server.addr.port());
        let found = StsCache::new(None).lookup(&client, DOMAIN);
        assert_eq!(found.finding(None), StsFinding::NoPolicy);
        let e = found.failure.unwrap();
        assert_eq!(e.result_type(), ResultType::StsPolicyFetchError, "{e}");
    }

    // A certificate for another name: sts-webpki-invalid.
    let server = s.server(
        "other.test",
        Serve::policy("enforce", &["mx.sts.test"], 86400),
    );
    let client = s.client(server.addr.port());
    let found = StsCache::new(None).lookup(&client, DOMAIN);
    let e = found.failure.unwrap();
    assert_eq!(e.result_type(), ResultType::StsWebpkiInvalid, "{e}");
    assert_eq!(server.requests.load(Ordering::SeqCst), 0);
}

#[test]
fn sessions_wanting_one_domain_share_one_fetch() {
    let s = setup("sts-flight");
    let server = s.server(DOMAIN, Serve::policy("enforce", &["mx.sts.test"], 86400));
    let client = s.client(server.addr.port());
    let cache = Arc::new(StsCache::new(None));
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let (cache, client) = (cache.clone(), client.clone());
            std::thread::spawn(move || mode(&cache.lookup(&client, DOMAIN).finding(None)))
        })
        .collect();
    for t in threads {
        assert_eq!(t.join().unwrap(), Some(StsMode::Enforce));
    }
    assert_eq!(server.requests.load(Ordering::SeqCst), 1);
}

#[test]
fn the_days_tls_rpt_report_has_rfc_8460_field_names_and_counts() {
    let s = setup("sts-rpt");
    let policies = TlsPolicies::new(Some(&s.dir.0), "proxy.example", Some("tls@proxy.example"));
    // The policy in force for the domain (its lines are what the report shows).
    let server = s.server(DOMAIN, Serve::policy("testing", &["mx.sts.test"], 86400));
    let client = s.client(server.addr.port());
    assert!(policies.sts.lookup(&client, DOMAIN).policy.is_some());
    let outcome = |result| TlsOutcome {
        policy_domain: Some(DOMAIN),
        mx_host: Some("mx.sts.test"),
        policy: PolicyType::Sts,
        applied: Applied::Opportunistic,
        testing: true,
        result,
        mx_ip: Some("127.0.0.1".parse().unwrap()),
        source: Some("127.0.0.2".parse().unwrap()),
        tlsa: None,
    };
    for _ in 0..3 {
        policies.record(&outcome(None), Some(&s.resolver));
    }
    policies.record(
        &outcome(Some(ResultType::CertificateHostMismatch)),
        Some(&s.resolver),
    );
    policies.record(
        &outcome(Some(ResultType::CertificateHostMismatch)),
        Some(&s.resolver),
    );
    let today = policies.reports.today();
    assert_eq!(today.len(), 1);
    assert_eq!((today[0].successes, today[0].failures), (3, 2));
    assert_eq!(today[0].rua, vec!["mailto:tlsrpt@sts.test"]);

    policies.reports.flush();
    let day = Day::of(greenarrow_proxy::tlspolicy::unix_now()).iso();
    let dir = s.dir.0.join("tls-rpt").join(&day);
    let text = std::fs::read_to_string(dir.join("sts.test.json")).unwrap();
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(json["organization-name"], "proxy.example");
    assert_eq!(json["contact-info"], "tls@proxy.example");
    assert_eq!(
        json["date-range"]["start-datetime"],
        format!("{day}T00:00:00Z")
    );
    assert_eq!(
        json["date-range"]["end-datetime"],
        format!("{day}T23:59:59Z")
    );
    assert!(json["report-id"].is_string());
    let p = &json["policies"][0];
    assert_eq!(p["policy"]["policy-type"], "sts");
    assert_eq!(p["policy"]["policy-string"][1], "mode: testing");
    assert_eq!(p["policy"]["policy-domain"], "sts.test");
    assert_eq!(p["policy"]["mx-host"][0], "mx.sts.test");
    assert_eq!(p["summary"]["total-successful-session-count"], 3);
    assert_eq!(p["summary"]["total-failure-session-count"], 2);
    let f = &p["failure-details"][0];
    assert_eq!(f["result-type"], "certificate-host-mismatch");
    assert_eq!(f["sending-mta-ip"], "127.0.0.2");
    assert_eq!(f["receiving-mx-hostname"], "mx.sts.test");
    assert_eq!(f["receiving-ip"], "127.0.0.1");
    assert_eq!(f["failed-session-count"], 2);
    // The rua beside it, for the operator's sending script.
    let rua = std::fs::read_to_string(dir.join("sts.test.rua")).unwrap();
    assert_eq!(rua, "mailto:tlsrpt@sts.test\n");
    println!("{text}");
}

#[test]
fn a_policy_host_with_only_an_ipv6_address_is_fetched_over_ipv6() {
    let s = setup("sts-v6");
    *s.zone.lock() = Zone::new("test")
        .ttl(0)
        .addr("mta-sts.sts.test", "::1")
        .txt("_mta-sts.sts.test", "v=STSv1; id=6");
    let server = PolicyServer::start(
        "[::1]:0".parse().unwrap(),
        &s.ca,
        DOMAIN,
        Serve::policy("enforce", &["mx.sts.test"], 86400),
    );
    let client = s.client(server.addr.port());
    let found = StsCache::new(None).lookup(&client, DOMAIN);
    assert!(found.failure.is_none(), "{:?}", found.failure);
    assert_eq!(mode(&found.finding(None)), Some(StsMode::Enforce));
    assert_eq!(server.requests.load(Ordering::SeqCst), 1);
}

#[test]
fn a_tlsa_policy_is_reported_with_its_records_and_mx_host() {
    use greenarrow_proxy_proto::tls_policy::dane::{Tlsa, TlsaSet};
    let s = setup("rpt-tlsa");
    let policies = TlsPolicies::new(Some(&s.dir.0), "proxy.example", None);
    let set = TlsaSet::new(vec![Tlsa {
        usage: 3,
        selector: 1,
        matching: 1,
        data: vec![0xab; 32],
    }]);
    policies.record(
        &TlsOutcome {
            policy_domain: Some("dane.test"),
            mx_host: Some("MX.dane.test."),
            policy: PolicyType::Tlsa,
            applied: Applied::DaneEe,
            testing: false,
            result: Some(ResultType::TlsaInvalid),
            mx_ip: Some("::1".parse().unwrap()),
            source: Some("::1".parse().unwrap()),
            tlsa: Some(&set),
        },
        None,
    );
    policies.reports.flush();
    let day = Day::of(greenarrow_proxy::tlspolicy::unix_now()).iso();
    let path = s.dir.0.join("tls-rpt").join(&day).join("dane.test.json");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    assert!(json.get("contact-info").is_none(), "{json}");
    let p = &json["policies"][0];
    assert_eq!(p["policy"]["policy-type"], "tlsa");
    assert_eq!(
        p["policy"]["policy-string"][0],
        format!("3 1 1 {}", "ab".repeat(32))
    );
    assert_eq!(p["policy"]["mx-host"][0], "mx.dane.test");
    assert_eq!(p["failure-details"][0]["result-type"], "tlsa-invalid");
    assert_eq!(p["failure-details"][0]["receiving-ip"], "::1");
    assert_eq!(p["summary"]["total-failure-session-count"], 1);
}

/// The cost of the MTA-STS look-up of a request whose policy is cached (a reused connection
/// pays only this): the TXT answer from the resolver's cache, the cache map. Printed, not
/// asserted (a figure, not a timed test).
#[test]
fn the_cost_of_a_cached_policy_look_up_is_printed() {
    let s = setup("sts-cost");
    // A TTL the resolver caches for, so that the figure is the cached path.
    *s.zone.lock() = Zone::new("test")
        .addr("mta-sts.sts.test", "127.0.0.1")
        .txt("_mta-sts.sts.test", "v=STSv1; id=c1");
    let server = s.server(DOMAIN, Serve::policy("enforce", &["mx.sts.test"], 86400));
    let client = s.client(server.addr.port());
    let cache = StsCache::new(None);
    assert!(cache.lookup(&client, DOMAIN).policy.is_some());
    let queries = s.dns.queries.load(Ordering::SeqCst);
    let n = 2000;
    let started = std::time::Instant::now();
    for _ in 0..n {
        assert!(cache.lookup(&client, DOMAIN).policy.is_some());
    }
    let per = started.elapsed() / n;
    println!(
        "cached MTA-STS look-up: {per:?} each over {n}; DNS queries meanwhile: {}; policy fetches: {}",
        s.dns.queries.load(Ordering::SeqCst) - queries,
        server.requests.load(Ordering::SeqCst)
    );
    assert_eq!(server.requests.load(Ordering::SeqCst), 1);
}
