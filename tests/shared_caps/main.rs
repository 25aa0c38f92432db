//! `caps.shared`: three proxy daemons (real processes, each with its own source addresses)
//! share a cap of 4 connections toward one test MX through a real Redis (started here), and a
//! rate of new connections toward a second one. Cases, in order: shared; Redis stopped (each
//! host falls back to its share); Redis restarted (shared again, in `gaproxy status`); one
//! daemon SIGKILLed while it holds leases (they expire, the others use them); the shared rate.
//! Each case prints one summary line with the MX's observed maximum.

use greenarrow_proxy_client::{ProxyClient, ProxyClientConfig};
use greenarrow_proxy_net::tls::ProxyClientTls;
use greenarrow_proxy_proto::protocol::{ConnectRequest, TlsPolicy};
use greenarrow_proxy_testkit::daemon::{setup::gaproxy, Daemon};
use greenarrow_proxy_testkit::fixtures::{proxy_files, req, TempDir, SECRET};
use greenarrow_proxy_testkit::redis::RedisServer;
use greenarrow_proxy_testkit::testmx::{Faults, TestMx, TestMxConfig};
use nix::sys::signal::Signal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::mpsc;
use std::time::{Duration, Instant};

mod tls;

const CAP: u64 = 4;
const LEASE: Duration = Duration::from_secs(3);
/// The shared rate: RATE new connections per WINDOW (GCRA, a burst of RATE).
const RATE: usize = 4;
const WINDOW: Duration = Duration::from_secs(1);

/// A daemon and its directory.
struct Proxy {
    ep: Ep,
    daemon: Daemon,
    _dir: TempDir,
}

/// What MTAs need of a proxy (shared by their threads).
struct Ep {
    name: &'static str,
    addr: SocketAddr,
    ca_pem: String,
    sources: [String; 2],
    socket: PathBuf,
}

impl Proxy {
    fn start(i: usize, redis: &str, prefix: &str, mx: &TestMx, rate_mx: &TestMx) -> Proxy {
        Proxy::start_with(i, redis, prefix, mx, rate_mx, CAP)
    }

    fn start_with(
        i: usize,
        redis: &str,
        prefix: &str,
        mx: &TestMx,
        rate_mx: &TestMx,
        cap: u64,
    ) -> Proxy {
        let name = ["proxy-a", "proxy-b", "proxy-c"][i];
        let sources = [
            format!("127.0.0.{}", 2 + 2 * i),
            format!("127.0.0.{}", 3 + 2 * i),
        ];
        let yaml = format!(
            "source_addresses: [{s0}, {s1}]\n\
             control_socket: control.sock\n\
             caps:\n  wait: 30s\n  window: {window}s\n  destinations:\n\
             \x20   - name: testmx\n      addresses: [{mx}]\n\
             \x20   - name: ratemx\n      addresses: [{rmx}]\n\
             \x20 shared:\n    redis: {redis}\n    key_prefix: {prefix}\n    host: {name}\n\
             \x20   lease: {lease}s\n    timeout: 300ms\n    destinations:\n\
             \x20     testmx:\n        max_connections: {cap}\n\
             \x20     ratemx:\n        max_new_connections: {RATE}\n",
            s0 = sources[0],
            s1 = sources[1],
            window = WINDOW.as_secs(),
            mx = mx.addr().ip(),
            rmx = rate_mx.addr().ip(),
            lease = LEASE.as_secs(),
        );
        let (dir, yaml, ca_pem) = proxy_files(&[mx.addr().port(), rate_mx.addr().port()], &yaml);
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
}

impl Ep {
    fn client(&self) -> ProxyClient {
        ProxyClient::connect(&ProxyClientConfig {
            proxy: self.addr,
            tls_name: "localhost".into(),
            tls: ProxyClientTls::from_ca_pem(self.ca_pem.as_bytes()).unwrap(),
            secret: SECRET.into(),
            timeout: Duration::from_secs(40),
        })
        .unwrap()
    }

    fn request(&self, n: usize, mx: &TestMx) -> ConnectRequest {
        req(&self.sources[n % 2], mx.addr(), TlsPolicy::None)
    }

    fn status(&self) -> serde_json::Value {
        let out = gaproxy(&["status", "--json"], &self.socket);
        serde_json::from_slice(&out.stdout).unwrap()
    }
}

/// `sessions` MTA sessions, spread over `proxies` (4 MTA threads per proxy), each one message
/// on a new connection; every one must succeed.
fn run(proxies: &[&Ep], sessions: usize, mx: &TestMx) {
    let threads = 4 * proxies.len();
    std::thread::scope(|s| {
        for t in 0..threads {
            let p = proxies[t % proxies.len()];
            s.spawn(move || {
                for n in (t..sessions).step_by(threads) {
                    let mut c = p.client();
                    let mut sess = c.open(&p.request(n, mx)).unwrap_or_else(|e| {
                        panic!("{}: session {n}: {e}", p.name);
                    });
                    let body = format!("Subject: {n}\r\n\r\nsession {n} via {}\r\n", p.name);
                    sess.send_mail("a@x.test", &["b@y.test"], body.as_bytes())
                        .unwrap();
                    sess.quit().unwrap();
                    c.quit().unwrap();
                }
            });
        }
    });
}

/// The MX's concurrency since the last call: sessions (a QUIT ends one before its 221: what a
/// cap must bound) and TCP connections (which end when the MX reads the EOF: may lag a
/// moment behind the proxy's close); new marks start.
fn high_water(mx: &TestMx) -> (u64, u64) {
    let s = mx.reset_high_water();
    (s.max_active_sessions, s.max_open_connections)
}

/// The leases per host of `group` in a status.
fn holders(st: &serde_json::Value, group: &str) -> Vec<(String, u64)> {
    let groups = st["shared"]["groups"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let g = groups.iter().find(|g| g["group"] == group);
    g.and_then(|g| g["holders"].as_array())
        .map(|hs| {
            hs.iter()
                .map(|h| {
                    (
                        h["host"].as_str().unwrap_or("").to_string(),
                        h["leases"].as_u64().unwrap_or(0),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn slow_mx(bind: &str) -> TestMx {
    TestMx::start(TestMxConfig {
        bind: bind.parse().unwrap(),
        lean: true,
        faults: Faults {
            // Each message holds its connection a while: the cap is what limits concurrency.
            data_end_delay: Some(Duration::from_millis(60)),
            ..Faults::default()
        },
        ..TestMxConfig::default()
    })
    .unwrap()
}

#[test]
fn three_proxies_share_a_cap_through_redis_and_survive_its_outage() {
    let Some(mut redis) = RedisServer::start() else {
        return;
    };
    let mx = slow_mx("127.0.0.1:0");
    let rate_mx = slow_mx("127.0.1.1:0");
    let prefix = format!("t{}", std::process::id());
    let mut eps = Vec::new();
    let mut daemons = Vec::new();
    let mut _dirs = Vec::new();
    for i in 0..3 {
        let p = Proxy::start(i, &redis.url(), &prefix, &mx, &rate_mx);
        eps.push(p.ep);
        daemons.push(p.daemon);
        _dirs.push(p._dir);
    }
    for d in &mut daemons {
        // Logged once the first heartbeat round answered (before or after "ready").
        if !d
            .seen()
            .iter()
            .any(|l| l.contains("shared caps through Redis"))
        {
            d.wait_for("shared caps through Redis");
        }
    }
    let all: Vec<&Ep> = eps.iter().collect();

    // 1. Shared: 60 sessions over the three.
    run(&all, 60, &mx);
    let (max, tcp) = high_water(&mx);
    assert_eq!(mx.stats().messages, 60);
    println!(
        "shared_caps: case=shared sessions=60 delivered=60 cap={CAP} mx_max={max} mx_max_tcp={tcp}"
    );
    assert!(max <= CAP, "the MX saw {max} connections at once");
    assert!(
        max >= 2,
        "the cap was never reached: the test proves nothing ({max})"
    );

    // 2. Redis stops: each host falls back to max(1, floor(4 / 3)) = 1; deliveries go on.
    redis.stop();
    run(&all, 30, &mx);
    let (max, tcp) = high_water(&mx);
    assert_eq!(mx.stats().messages, 90);
    for (d, ep) in daemons.iter_mut().zip(&eps) {
        d.wait_for("falls back to its share");
        assert_eq!(ep.status()["shared"]["state"], "fallback");
    }
    println!(
        "shared_caps: case=redis_down sessions=30 delivered=30 cap={CAP} share=1 slack=0 mx_max={max} mx_max_tcp={tcp}"
    );
    // The shares add up to 3 <= 4: no slack with 3 hosts and a cap of 4.
    let shares = 3 * (CAP / 3).max(1);
    assert!(
        max <= shares,
        "the MX saw {max} sessions at once in fallback (shares: {shares})"
    );
    let warnings = daemons[0]
        .seen()
        .iter()
        .filter(|l| l.contains("falls back to its share"))
        .count();
    assert_eq!(warnings, 1, "one warning per outage");

    // 3. Redis back: re-registration, one lease time of shares, then shared again.
    redis.restart();
    for d in &mut daemons {
        d.wait_for("is back; leases re-registered");
    }
    run(&all, 30, &mx);
    for d in &mut daemons {
        d.wait_for("shared caps through Redis");
    }
    run(&all, 30, &mx);
    let (max, tcp) = high_water(&mx);
    assert_eq!(mx.stats().messages, 150);
    daemons[0].signal(Signal::SIGUSR1);
    daemons[0].wait_for("report shared host=proxy-a state=shared live_hosts=3 groups=");
    let st = eps[0].status();
    assert_eq!(st["shared"]["state"], "shared", "{st}");
    assert_eq!(st["shared"]["live_hosts"], 3, "{st}");
    println!("shared_caps: case=redis_back sessions=60 delivered=60 cap={CAP} mx_max={max} mx_max_tcp={tcp}");
    assert!(
        max <= CAP,
        "the MX saw {max} connections at once after Redis came back"
    );

    // 4. proxy-c holds all four leases (four sessions left open), then dies by SIGKILL: the
    // others wait until its leases expire (within the lease time), then deliver.
    let (opened_tx, opened_rx) = mpsc::channel();
    let (end_tx, end_rx) = mpsc::channel::<()>();
    let end_rx = std::sync::Mutex::new(end_rx);
    let (c, c_daemon) = (&eps[2], &daemons[2]);
    let killed_at = std::thread::scope(|s| {
        for n in 0..CAP as usize {
            let (opened_tx, end_rx, mx) = (opened_tx.clone(), &end_rx, &mx);
            s.spawn(move || {
                let mut client = c.client();
                let sess = client.open(&c.request(n, mx)).unwrap();
                opened_tx.send(()).unwrap();
                let _ = end_rx.lock().unwrap().recv();
                drop(sess);
            });
        }
        for _ in 0..CAP {
            opened_rx.recv_timeout(Duration::from_secs(20)).unwrap();
        }
        // proxy-a's status shows proxy-c's leases after the next renewal round.
        let end = Instant::now() + LEASE * 2;
        loop {
            let st = eps[0].status();
            if holders(&st, "testmx") == [("proxy-c".to_string(), CAP)] {
                break;
            }
            assert!(Instant::now() < end, "no holders in proxy-a's status: {st}");
            std::thread::sleep(Duration::from_millis(100));
        }
        c_daemon.signal(Signal::SIGKILL);
        let at = Instant::now();
        drop(end_tx);
        at
    });
    let before = mx.stats().connections;
    let survivors = [&eps[0], &eps[1]];
    run(&survivors, 16, &mx);
    let took = killed_at.elapsed();
    let first_new = mx
        .state()
        .connections
        .iter()
        .skip(before as usize)
        .map(|c| c.accepted_at.saturating_duration_since(killed_at))
        .min()
        .unwrap_or_default();
    let (max, tcp) = high_water(&mx);
    assert_eq!(mx.stats().messages, 166);
    println!(
        "shared_caps: case=kill sessions=16 delivered=16 cap={CAP} lease={}s first_new_after={:.2}s all_done_after={:.2}s mx_max={max} mx_max_tcp={tcp}",
        LEASE.as_secs(),
        first_new.as_secs_f64(),
        took.as_secs_f64()
    );
    assert!(
        max <= CAP,
        "the MX saw {max} connections at once after the kill"
    );
    assert!(
        first_new >= LEASE / 3,
        "a new connection {first_new:?} after the kill: the dead host's leases were ignored"
    );
    assert!(first_new <= LEASE + Duration::from_secs(1), "{first_new:?}");

    // 5. The shared rate toward the second MX: RATE per WINDOW across the (two live) hosts.
    let started = Instant::now();
    run(&survivors, 16, &rate_mx);
    let accepted: Vec<Duration> = rate_mx
        .state()
        .connections
        .iter()
        .map(|c| c.accepted_at.saturating_duration_since(started))
        .collect();
    // GCRA, N per window with a burst of N: k connections take at least (k - N) emission
    // intervals; no window holds more than 2N.
    let interval = WINDOW / RATE as u32;
    let span = accepted.iter().max().copied().unwrap_or_default();
    let most_in_window = accepted
        .iter()
        .map(|a| {
            accepted
                .iter()
                .filter(|b| **b >= *a && **b < *a + WINDOW)
                .count()
        })
        .max()
        .unwrap_or(0);
    println!(
        "shared_caps: case=rate sessions=16 delivered={} rate={RATE}/{}s span={:.2}s most_in_any_window={most_in_window} mx_max={}",
        rate_mx.stats().messages,
        WINDOW.as_secs(),
        span.as_secs_f64(),
        rate_mx.stats().max_active_sessions
    );
    assert_eq!(rate_mx.stats().messages, 16);
    let tolerance = Duration::from_millis(100);
    assert!(
        span + tolerance >= interval * (16 - RATE as u32),
        "16 connections in {span:?}: faster than {RATE} per {WINDOW:?}"
    );
    assert!(most_in_window <= 2 * RATE, "{most_in_window} in one window");
}

/// A Redis that never answered: the host falls back at its first request, with one live host
/// known (itself), so its share is the whole cap; deliveries go on within it.
#[test]
fn a_proxy_whose_redis_never_answers_keeps_to_the_whole_cap_alone() {
    let mx = slow_mx("127.0.0.1:0");
    let rate_mx = slow_mx("127.0.1.1:0");
    // A loopback port with nothing listening.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port();
    let redis = format!("redis://127.0.0.1:{port}/0");
    let mut p = Proxy::start_with(0, &redis, "never", &mx, &rate_mx, 2);
    run(&[&p.ep], 12, &mx);
    let (max, tcp) = high_water(&mx);
    assert_eq!(mx.stats().messages, 12);
    println!("shared_caps: case=never_reached sessions=12 delivered=12 cap=2 share=2 mx_max={max} mx_max_tcp={tcp}");
    assert!(max <= 2, "the MX saw {max} sessions at once");
    if !p
        .daemon
        .seen()
        .iter()
        .any(|l| l.contains("falls back to its share"))
    {
        p.daemon.wait_for("falls back to its share");
    }
    let st = p.ep.status();
    assert_eq!(st["shared"]["state"], "fallback", "{st}");
    assert_eq!(st["shared"]["live_hosts"], 1, "{st}");
    let warnings = p
        .daemon
        .seen()
        .iter()
        .filter(|l| l.contains("cannot be reached"))
        .count();
    assert_eq!(warnings, 1, "one warning: {:?}", p.daemon.seen());

    // A reload with another shared cap: new caps in force (a new set of leases), shown.
    let config = p._dir.0.join("greenarrow_proxy.yaml");
    let yaml = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        yaml.replace("max_connections: 2", "max_connections: 3"),
    )
    .unwrap();
    p.daemon.signal(Signal::SIGHUP);
    p.daemon.wait_for("configuration reloaded from");
    let st = p.ep.status();
    let groups = st["shared"]["groups"].as_array().unwrap();
    let g = groups.iter().find(|g| g["group"] == "testmx").unwrap();
    assert_eq!(g["max_connections"], 3, "{st}");
    run(&[&p.ep], 12, &mx);
    let (max, _) = high_water(&mx);
    assert_eq!(mx.stats().messages, 24);
    assert!(
        max <= 3,
        "the MX saw {max} sessions at once after the reload"
    );
}
