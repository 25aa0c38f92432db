//! `caps.shared` over TLS (`rediss://`) with a real Redis serving TLS only (started here with a
//! certificate of a CA made here): two proxy daemons share a cap of 2 through it, presenting
//! client certificates to a Redis that asks for them; and a daemon given the wrong CA cannot
//! verify Redis's certificate, so it falls back to its share (one warning saying why) and still
//! delivers, while one given the right CA shares.

use super::{run, slow_mx, Ep};
use greenarrow_proxy_testkit::certgen::Ca;
use greenarrow_proxy_testkit::daemon::Daemon;
use greenarrow_proxy_testkit::fixtures::{proxy_files, TempDir, SECRET};
use greenarrow_proxy_testkit::redis::RedisServer;
use greenarrow_proxy_testkit::testmx::TestMx;

const CAP: u64 = 2;

/// A daemon, what MTAs need of it, and its directory.
struct Proxy {
    ep: Ep,
    daemon: Daemon,
    _dir: TempDir,
}

/// What a proxy is given to reach Redis over TLS.
struct RedisTls<'a> {
    url: String,
    /// `tls_ca_file`'s content.
    ca_pem: &'a str,
    /// `tls_cert_file` and `tls_key_file`'s.
    client: Option<(&'a str, &'a str)>,
}

impl Proxy {
    fn start(i: usize, redis: &RedisTls, prefix: &str, mx: &TestMx) -> Proxy {
        let name = ["proxy-a", "proxy-b"][i];
        let sources = [
            format!("127.0.0.{}", 2 + 2 * i),
            format!("127.0.0.{}", 3 + 2 * i),
        ];
        let client_files = if redis.client.is_some() {
            "    tls_cert_file: redis-client.pem\n    tls_key_file: redis-client.key\n"
        } else {
            ""
        };
        let yaml = format!(
            "source_addresses: [{s0}, {s1}]\n\
             control_socket: control.sock\n\
             caps:\n  wait: 30s\n  destinations:\n\
             \x20   - name: testmx\n      addresses: [{mx}]\n\
             \x20 shared:\n    redis: \"{url}\"\n    tls_ca_file: redis-ca.pem\n{client_files}\
             \x20   key_prefix: {prefix}\n    host: {name}\n    lease: 3s\n    timeout: 500ms\n\
             \x20   destinations:\n      testmx:\n        max_connections: {CAP}\n",
            s0 = sources[0],
            s1 = sources[1],
            mx = mx.addr().ip(),
            url = redis.url,
        );
        let (dir, yaml, ca_pem) = proxy_files(&[mx.addr().port()], &yaml);
        std::fs::write(dir.0.join("redis-ca.pem"), redis.ca_pem).unwrap();
        if let Some((cert, key)) = redis.client {
            std::fs::write(dir.0.join("redis-client.pem"), cert).unwrap();
            std::fs::write(dir.0.join("redis-client.key"), key).unwrap();
        }
        let config = dir.0.join("greenarrow_proxy.yaml");
        std::fs::write(&config, &yaml).unwrap();
        let mut daemon = Daemon::spawn(&config, &[SECRET], |_| {});
        let addr = daemon.wait_ready()[0];
        Proxy {
            ep: Ep {
                name,
                addr,
                ca_pem,
                sources,
                socket: dir.0.join("control.sock"),
            },
            daemon,
            _dir: dir,
        }
    }

    /// Wait for a log line containing `text` (already seen, or to come).
    fn logged(&mut self, text: &str) {
        if !self.daemon.seen().iter().any(|l| l.contains(text)) {
            self.daemon.wait_for(text);
        }
    }

    /// The log lines seen so far containing `text`.
    fn count(&self, text: &str) -> usize {
        self.daemon
            .seen()
            .iter()
            .filter(|l| l.contains(text))
            .count()
    }
}

#[test]
fn two_proxies_share_a_cap_through_rediss_with_client_certificates() {
    let Some(redis) = RedisServer::start_tls(true) else {
        return;
    };
    let mx = slow_mx("127.0.0.1:0");
    let client = redis.client_cert().unwrap();
    let tls = RedisTls {
        url: redis.url(),
        ca_pem: redis.ca_pem().unwrap(),
        client: Some((&client.cert_pem, &client.key_pem)),
    };
    assert!(tls.url.starts_with("rediss://127.0.0.1:"), "{}", tls.url);
    let prefix = format!("tls{}", std::process::id());
    let mut proxies: Vec<Proxy> = (0..2)
        .map(|i| Proxy::start(i, &tls, &prefix, &mx))
        .collect();
    for p in &mut proxies {
        p.logged("shared caps through Redis rediss://");
    }
    let all: Vec<&Ep> = proxies.iter().map(|p| &p.ep).collect();
    run(&all, 40, &mx);
    let s = mx.stats();
    println!(
        "shared_caps_tls: case=rediss sessions=40 delivered={} cap={CAP} mx_max={} mx_max_tcp={}",
        s.messages, s.max_active_sessions, s.max_open_connections
    );
    assert_eq!(s.messages, 40);
    assert!(
        s.max_active_sessions <= CAP,
        "the MX saw {} sessions at once",
        s.max_active_sessions
    );
    for p in &proxies {
        let st = p.ep.status();
        assert_eq!(st["shared"]["state"], "shared", "{}: {st}", p.ep.name);
        assert_eq!(st["shared"]["live_hosts"], 2, "{}: {st}", p.ep.name);
        assert_eq!(p.count("cannot be reached"), 0, "{:?}", p.daemon.seen());
    }
}

#[test]
fn a_proxy_given_the_wrong_ca_falls_back_and_still_delivers() {
    let Some(redis) = RedisServer::start_tls(false) else {
        return;
    };
    let mx = slow_mx("127.0.0.1:0");
    let wrong_ca = Ca::new("not Redis's CA").unwrap().cert_pem();
    let prefix = format!("tlsw{}", std::process::id());
    let right = RedisTls {
        url: redis.url(),
        ca_pem: redis.ca_pem().unwrap(),
        client: None,
    };
    let wrong = RedisTls {
        url: redis.url(),
        ca_pem: &wrong_ca,
        client: None,
    };
    let mut good = Proxy::start(0, &right, &prefix, &mx);
    let mut bad = Proxy::start(1, &wrong, &prefix, &mx);
    good.logged("shared caps through Redis rediss://");
    run(&[&bad.ep], 12, &mx);
    bad.logged("falls back to its share");
    let warnings: Vec<String> = bad
        .daemon
        .seen()
        .iter()
        .filter(|l| l.contains("cannot be reached"))
        .cloned()
        .collect();
    println!("shared_caps_tls: wrong_ca warning: {warnings:?}");
    assert_eq!(warnings.len(), 1, "one warning: {warnings:?}");
    assert!(
        warnings[0].contains("certificate"),
        "the warning names the verification failure: {}",
        warnings[0]
    );
    assert_eq!(bad.ep.status()["shared"]["state"], "fallback");
    assert_eq!(mx.stats().messages, 12);
    // The one with the right CA (no client certificate: Redis does not ask) shares.
    run(&[&good.ep], 12, &mx);
    assert_eq!(mx.stats().messages, 24);
    assert_eq!(good.ep.status()["shared"]["state"], "shared");
    assert_eq!(
        good.count("cannot be reached"),
        0,
        "{:?}",
        good.daemon.seen()
    );
}
