//! MTA-STS end to end: the proxy (in this process) delivers for `domain=sts.test` (or
//! `host=` with `policy_domain=`) to a STARTTLS test MX on loopback, under the policy its
//! HTTPS server (a certificate from a test CA, trusted through the test-only key) publishes;
//! each test asserts what the MX received and what the MTA was told, and the TLS-RPT counts.

mod common;

use common::*;
use greenarrow_proxy::report::Snapshot;
use greenarrow_proxy_client::ClientError;
use greenarrow_proxy_net::tls::TlsAcceptor;
use greenarrow_proxy_proto::protocol::{
    ConnectRequest, Destination, Failure, FailureReply, TlsPolicy,
};
use greenarrow_proxy_proto::status::Status;
use greenarrow_proxy_proto::tls_policy::rpt::{Day, ResultType};
use greenarrow_proxy_proto::tls_policy::Applied;
use greenarrow_proxy_testkit::certgen::Ca;
use greenarrow_proxy_testkit::fakedns::{FakeDns, Zone};
use greenarrow_proxy_testkit::stsserver::{PolicyServer, Serve};
use greenarrow_proxy_testkit::testmx::{TestMx, TestMxConfig};
use parking_lot::Mutex;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(10);

fn zone(id: &str) -> Zone {
    Zone::new("test")
        .ttl(0)
        .mx("sts.test", 10, "mx.sts.test")
        .addr("mx.sts.test", "127.0.0.1")
        .addr("mx.elsewhere.test", "127.0.0.1")
        .addr("mta-sts.sts.test", "127.0.0.1")
        .txt("_mta-sts.sts.test", &format!("v=STSv1; id={id}"))
        .txt(
            "_smtp._tls.sts.test",
            "v=TLSRPTv1; rua=mailto:tlsrpt@sts.test",
        )
}

/// The DNS, the CA, the policy server, a state directory and the proxy's extra YAML.
struct World {
    ca: Ca,
    zone: Arc<Mutex<Zone>>,
    dns: FakeDns,
    state: TempDir,
    ca_dir: TempDir,
}

impl World {
    fn new() -> World {
        let zone = Arc::new(Mutex::new(zone("1")));
        let dns = FakeDns::shared_zone(zone.clone());
        let ca = Ca::new("MTA-STS delivery test CA").unwrap();
        let ca_dir = TempDir::new("sts-ca");
        std::fs::write(ca_dir.0.join("ca.pem"), ca.cert_pem()).unwrap();
        World {
            ca,
            zone,
            dns,
            state: TempDir::new("sts-state"),
            ca_dir,
        }
    }

    fn policy_server(&self, serve: Serve) -> PolicyServer {
        PolicyServer::start("127.0.0.1:0".parse().unwrap(), &self.ca, "sts.test", serve)
    }

    /// A STARTTLS MX whose certificate, from the test CA, is for `name`.
    fn mx(&self, name: &str) -> TestMx {
        let leaf = self.ca.issue(&[name]).unwrap();
        TestMx::start(TestMxConfig {
            starttls: Some(TlsAcceptor::from_pem(&leaf.cert_pem, &leaf.key_pem).unwrap()),
            ..TestMxConfig::default()
        })
        .unwrap()
    }

    fn proxy(&self, mx_port: u16, policy_port: u16) -> Harness {
        let ca = self.ca_dir.0.join("ca.pem");
        Harness::start(
            &[mx_port],
            &format!(
                "state_directory: {}\ndns:\n  nameservers: [\"{}\"]\n  timeout: 2s\nmx_tls:\n  ca_file: {}\n  mta_sts_test_ca_file: {}\n  mta_sts_test_port: {policy_port}\n  tls_rpt_organization: proxy.test\n",
                self.state.0.display(),
                self.dns.addr,
                ca.display(),
                ca.display(),
            ),
        )
    }
}

fn by_domain(port: u16, tls: TlsPolicy) -> ConnectRequest {
    let mut r = ConnectRequest::new(
        ip("127.0.0.2"),
        Destination::Domain("sts.test".into()),
        "mta.test",
    );
    r.port = port;
    r.tls = tls;
    r
}

fn failure(e: ClientError) -> FailureReply {
    match e {
        ClientError::Proxy(f) => f,
        e => panic!("expected a proxy failure, got {e}"),
    }
}

fn status(h: &Harness) -> Status {
    let snap: Snapshot = h.server.snapshot();
    Status::from_snapshot(&snap)
}

/// Today's (successes, failures) of sts.test in the status view, and its rua.
fn today(h: &Harness) -> (u64, u64, Vec<String>) {
    let s = status(h);
    let rpt = s.tls_rpt.expect("tls_rpt in the status view");
    let d = rpt.domains.iter().find(|d| d.domain == "sts.test");
    d.map_or((0, 0, Vec::new()), |d| {
        (d.successes, d.failures, d.rua.clone())
    })
}

fn metric(h: &Harness, result: ResultType) -> u64 {
    h.server
        .snapshot()
        .tls_rpt
        .failures
        .iter()
        .find(|(r, _)| *r == result)
        .map_or(0, |(_, n)| *n)
}

#[test]
fn enforce_with_a_matching_mx_and_a_valid_certificate_delivers_verified() {
    let w = World::new();
    let server = w.policy_server(Serve::policy("enforce", &["mx.sts.test"], 86400));
    let mx = w.mx("mx.sts.test");
    let h = w.proxy(mx.addr().port(), server.addr.port());
    let mut c = h.client();
    // The MTA asks only for opportunistic TLS: the domain's policy raises it.
    let mut s = c
        .open(&by_domain(mx.addr().port(), TlsPolicy::Opportunistic))
        .unwrap();
    assert_eq!(s.ready.tls_policy, Some(Applied::MtaSts));
    let tls = s.ready.tls.clone().expect("TLS toward the MX");
    assert!(tls.verified, "{tls:?}");
    s.send_mail("a@mta.test", &["b@sts.test"], b"under MTA-STS\r\n")
        .unwrap();
    s.quit().unwrap();
    c.quit().unwrap();
    assert!(mx.wait_until(WAIT, |st| st.messages.len() == 1));
    assert_eq!(mx.messages()[0].content, b"under MTA-STS\r\n");
    assert_eq!(server.requests.load(Ordering::SeqCst), 1);
    let (ok, failed, rua) = today(&h);
    assert_eq!((ok, failed), (1, 0));
    assert_eq!(rua, vec!["mailto:tlsrpt@sts.test"]);
    // The SIGUSR1 report's summary and the metrics count it per policy type.
    let summary = greenarrow_proxy::report::report_lines(&h.server.snapshot())
        .pop()
        .unwrap();
    assert!(summary.contains(" tls_rpt_successes=sts:1"), "{summary}");
    let metrics = greenarrow_proxy_proto::status::exposition::render(&h.server.snapshot());
    assert!(
        metrics.contains("greenarrow_proxy_tls_rpt_successes_total{policy=\"sts\"} 1\n"),
        "{metrics}"
    );
}

#[test]
fn enforce_with_an_mx_the_policy_does_not_list_defers_and_sends_nothing() {
    let w = World::new();
    let server = w.policy_server(Serve::policy("enforce", &["mx.elsewhere.test"], 86400));
    let mx = w.mx("mx.sts.test");
    let h = w.proxy(mx.addr().port(), server.addr.port());
    let mut c = h.client();
    let f = failure(
        c.open(&by_domain(mx.addr().port(), TlsPolicy::Opportunistic))
            .err()
            .unwrap(),
    );
    assert_eq!(f.failure, Failure::StsMxMismatch, "{f}");
    assert!((400..500).contains(&f.failure.code().reply), "{f}");
    assert_eq!(mx.stats().connections, 0, "nothing may reach the MX");
    assert_eq!(today(&h).1, 1);
}

#[test]
fn enforce_with_a_certificate_for_another_name_defers_and_sends_nothing() {
    let w = World::new();
    let server = w.policy_server(Serve::policy("enforce", &["mx.sts.test"], 86400));
    let mx = w.mx("other.example");
    let h = w.proxy(mx.addr().port(), server.addr.port());
    let mut c = h.client();
    let f = failure(
        c.open(&by_domain(mx.addr().port(), TlsPolicy::Opportunistic))
            .err()
            .unwrap(),
    );
    assert!((400..500).contains(&f.failure.code().reply), "{f}");
    assert!(mx.messages().is_empty());
    assert_eq!(today(&h).1, 1);
    assert_eq!(
        metric(&h, ResultType::StsWebpkiInvalid) + metric(&h, ResultType::CertificateHostMismatch),
        1
    );
}

#[test]
fn testing_mode_delivers_and_counts_the_failure() {
    let w = World::new();
    let server = w.policy_server(Serve::policy("testing", &["mx.sts.test"], 86400));
    let mx = w.mx("other.example");
    let h = w.proxy(mx.addr().port(), server.addr.port());
    let mut c = h.client();
    let mut s = c
        .open(&by_domain(mx.addr().port(), TlsPolicy::Opportunistic))
        .unwrap();
    assert_ne!(s.ready.tls_policy, Some(Applied::MtaSts));
    s.send_mail("a@mta.test", &["b@sts.test"], b"testing mode\r\n")
        .unwrap();
    s.quit().unwrap();
    c.quit().unwrap();
    assert!(mx.wait_until(WAIT, |st| st.messages.len() == 1));
    let (ok, failed, _) = today(&h);
    assert_eq!(
        (ok, failed),
        (0, 1),
        "the would-be failure is counted, once"
    );
}

#[test]
fn host_with_policy_domain_is_under_the_domains_policy() {
    let w = World::new();
    let server = w.policy_server(Serve::policy("enforce", &["mx.elsewhere.test"], 86400));
    let mx = w.mx("mx.sts.test");
    let h = w.proxy(mx.addr().port(), server.addr.port());
    let mut c = h.client();
    let mut r = ConnectRequest::new(
        ip("127.0.0.2"),
        Destination::Host("mx.sts.test".into()),
        "mta.test",
    );
    r.port = mx.addr().port();
    // Without a policy domain, no MTA-STS policy applies.
    let s = c.open(&r).unwrap();
    assert_ne!(s.ready.tls_policy, Some(Applied::MtaSts));
    s.quit().unwrap();
    r.policy_domain = Some("sts.test".into());
    let f = failure(c.open(&r).err().unwrap());
    assert_eq!(f.failure, Failure::StsMxMismatch, "{f}");
}

#[test]
fn the_policy_survives_a_restart_with_the_https_server_gone_and_is_refreshed_on_a_new_id() {
    let w = World::new();
    let server = w.policy_server(Serve::policy("enforce", &["mx.sts.test"], 86400));
    let policy_port = server.addr.port();
    let mx = w.mx("mx.sts.test");
    let port = mx.addr().port();
    {
        let h = w.proxy(port, policy_port);
        let mut c = h.client();
        let s = c.open(&by_domain(port, TlsPolicy::Opportunistic)).unwrap();
        assert_eq!(s.ready.tls_policy, Some(Applied::MtaSts));
        s.quit().unwrap();
    }
    assert_eq!(server.requests.load(Ordering::SeqCst), 1);
    server.stop();

    // A new proxy on the same state directory, the HTTPS server gone: the policy is in force.
    let h = w.proxy(port, policy_port);
    let mut c = h.client();
    let s = c.open(&by_domain(port, TlsPolicy::Opportunistic)).unwrap();
    assert_eq!(s.ready.tls_policy, Some(Applied::MtaSts));
    s.quit().unwrap();

    // A new id: the proxy fetches the new policy (from a server back on the same port), which
    // no longer lists this MX: deferred.
    let server = PolicyServer::start(
        format!("127.0.0.1:{policy_port}").parse().unwrap(),
        &w.ca,
        "sts.test",
        Serve::policy("enforce", &["mx.elsewhere.test"], 86400),
    );
    *w.zone.lock() = zone("2");
    let f = failure(
        c.open(&by_domain(port, TlsPolicy::Opportunistic))
            .err()
            .unwrap(),
    );
    assert_eq!(f.failure, Failure::StsMxMismatch, "{f}");
    assert_eq!(server.requests.load(Ordering::SeqCst), 1);
}

#[test]
fn the_days_tls_rpt_report_is_written_with_rfc_8460_names_and_counts() {
    let w = World::new();
    let server = w.policy_server(Serve::policy("enforce", &["mx.sts.test"], 86400));
    let good = w.mx("mx.sts.test");
    let h = w.proxy(good.addr().port(), server.addr.port());
    let mut c = h.client();
    for _ in 0..2 {
        let mut s = c
            .open(&by_domain(good.addr().port(), TlsPolicy::Opportunistic))
            .unwrap();
        s.send_mail("a@mta.test", &["b@sts.test"], b"counted\r\n")
            .unwrap();
        s.quit().unwrap();
    }
    c.quit().unwrap();
    assert!(good.wait_until(WAIT, |st| st.messages.len() == 2));
    // What SIGUSR1 and shutdown do.
    h.server.shared().tls_policies().reports.flush();
    let day = Day::of(greenarrow_proxy::tlspolicy::unix_now()).iso();
    let dir = w.state.0.join("tls-rpt").join(&day);
    let text = std::fs::read_to_string(dir.join("sts.test.json")).unwrap();
    println!("{text}");
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(json["organization-name"], "proxy.test");
    assert_eq!(
        json["date-range"]["start-datetime"],
        format!("{day}T00:00:00Z")
    );
    let p = &json["policies"][0];
    assert_eq!(p["policy"]["policy-type"], "sts");
    assert_eq!(p["policy"]["policy-domain"], "sts.test");
    assert_eq!(p["policy"]["policy-string"][1], "mode: enforce");
    assert_eq!(p["policy"]["mx-host"][0], "mx.sts.test");
    assert_eq!(p["summary"]["total-successful-session-count"], 2);
    assert_eq!(p["summary"]["total-failure-session-count"], 0);
    assert_eq!(
        std::fs::read_to_string(dir.join("sts.test.rua")).unwrap(),
        "mailto:tlsrpt@sts.test\n"
    );
}

/// The real daemon: `gaproxy status --json` shows the day's TLS-RPT counts and the `rua`,
/// SIGUSR1 writes the day's report so far.
#[test]
fn the_daemon_shows_tls_rpt_in_status_and_writes_the_report_on_sigusr1() {
    use greenarrow_proxy_testkit::daemon::setup::gaproxy;
    use greenarrow_proxy_testkit::daemon::Daemon;
    use nix::sys::signal::Signal::SIGUSR1;

    let w = World::new();
    let server = w.policy_server(Serve::policy("enforce", &["mx.sts.test"], 86400));
    let mx = w.mx("mx.sts.test");
    let port = mx.addr().port();
    let ca = w.ca_dir.0.join("ca.pem");
    let (dir, yaml, ca_pem) = proxy_files(
        &[port],
        &format!(
            "control_socket: control.sock\nstate_directory: {}\ndns:\n  nameservers: [\"{}\"]\n  timeout: 2s\nmx_tls:\n  ca_file: {}\n  mta_sts_test_ca_file: {}\n  mta_sts_test_port: {}\n",
            w.state.0.display(),
            w.dns.addr,
            ca.display(),
            ca.display(),
            server.addr.port(),
        ),
    );
    let config = dir.0.join("greenarrow_proxy.yaml");
    std::fs::write(&config, yaml).unwrap();
    let mut d = Daemon::spawn(&config, &[SECRET], |_| {});
    let proxy = d.wait_ready()[0];
    let mut c = greenarrow_proxy_client::ProxyClient::connect(
        &greenarrow_proxy_client::ProxyClientConfig {
            proxy,
            tls_name: "localhost".into(),
            tls: greenarrow_proxy_net::tls::ProxyClientTls::from_ca_pem(ca_pem.as_bytes()).unwrap(),
            secret: SECRET.into(),
            timeout: WAIT,
        },
    )
    .unwrap();
    let mut s = c.open(&by_domain(port, TlsPolicy::Opportunistic)).unwrap();
    assert_eq!(s.ready.tls_policy, Some(Applied::MtaSts));
    s.send_mail("a@mta.test", &["b@sts.test"], b"through the daemon\r\n")
        .unwrap();
    s.quit().unwrap();
    c.quit().unwrap();
    assert!(mx.wait_until(WAIT, |st| st.messages.len() == 1));

    let out = gaproxy(&["status", "--json"], &dir.0.join("control.sock"));
    let st: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let dom = &st["tls_rpt"]["domains"][0];
    assert_eq!(dom["domain"], "sts.test", "{st}");
    assert_eq!(dom["successes"], 1);
    assert_eq!(dom["failures"], 0);
    assert_eq!(dom["rua"][0], "mailto:tlsrpt@sts.test");
    assert_eq!(st["tls_rpt"]["sts_cached"], 1);

    d.signal(SIGUSR1);
    d.wait_for("TLS-RPT: 1 report(s) of");
    let day = Day::of(greenarrow_proxy::tlspolicy::unix_now()).iso();
    let report = w.state.0.join("tls-rpt").join(&day).join("sts.test.json");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(report).unwrap()).unwrap();
    assert_eq!(
        json["policies"][0]["summary"]["total-successful-session-count"],
        1
    );
    // The policy cache file, kept for the next start.
    assert!(w.state.0.join("mta-sts/sts.test.json").exists());
}

#[test]
fn a_policy_that_cannot_be_fetched_leaves_the_domain_without_one_and_is_counted() {
    let w = World::new();
    // Nothing listens on the policy port: the fetch fails, no policy is cached.
    let gone = w.policy_server(Serve::policy("enforce", &["mx.elsewhere.test"], 86400));
    let policy_port = gone.addr.port();
    gone.stop();
    let mx = w.mx("mx.sts.test");
    let h = w.proxy(mx.addr().port(), policy_port);
    let mut c = h.client();
    let mut s = c
        .open(&by_domain(mx.addr().port(), TlsPolicy::Opportunistic))
        .unwrap();
    assert_ne!(s.ready.tls_policy, Some(Applied::MtaSts));
    s.send_mail("a@mta.test", &["b@sts.test"], b"no policy to apply\r\n")
        .unwrap();
    s.quit().unwrap();
    c.quit().unwrap();
    assert!(mx.wait_until(WAIT, |st| st.messages.len() == 1));
    assert_eq!(metric(&h, ResultType::StsPolicyFetchError), 1);
    let (_, failed, _) = today(&h);
    assert_eq!(failed, 1);
}
