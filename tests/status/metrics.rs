//! The metrics listener: scraped over HTTP, every line parsed, values against the counters;
//! rebinding and closing with the configuration.

use super::*;

/// GET `path` over HTTP/1.1: (status code, headers, body).
pub fn http(addr: SocketAddr, method: &str, path: &str) -> (u16, String, String) {
    let mut tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(WAIT)).unwrap();
    write!(
        tcp,
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nAccept: text/plain\r\n\r\n"
    )
    .unwrap();
    let mut raw = String::new();
    tcp.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    let code = head.split(' ').nth(1).unwrap().parse().unwrap();
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .unwrap()
        .parse()
        .unwrap();
    if method != "HEAD" {
        assert_eq!(body.len(), len);
    }
    (code, head.to_string(), body.to_string())
}

/// Parse an exposition: every line a comment (`# HELP`/`# TYPE`) or a sample; returns the
/// samples as (name{labels}, value).
pub fn parse_exposition(text: &str) -> Vec<(String, f64)> {
    let name_ok = |n: &str| {
        !n.is_empty()
            && n.chars().enumerate().all(|(i, c)| {
                c.is_ascii_alphabetic() || c == '_' || c == ':' || (i > 0 && c.is_ascii_digit())
            })
    };
    let mut typed = std::collections::HashSet::new();
    let mut out = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# ") {
            let mut w = rest.splitn(3, ' ');
            let (kw, name, what) = (w.next().unwrap(), w.next().unwrap(), w.next().unwrap());
            assert!(name_ok(name), "{line}");
            match kw {
                "HELP" => assert!(!what.is_empty(), "{line}"),
                "TYPE" => {
                    assert!(["counter", "gauge", "histogram"].contains(&what), "{line}");
                    assert!(typed.insert(name.to_string()), "second TYPE: {line}");
                }
                _ => panic!("not a comment of the format: {line}"),
            }
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("{line}"));
        let name = series.split('{').next().unwrap();
        assert!(name_ok(name), "{line}");
        if let Some(labels) = series.strip_prefix(name).filter(|l| !l.is_empty()) {
            let inner = labels
                .strip_prefix('{')
                .and_then(|l| l.strip_suffix('}'))
                .unwrap();
            for pair in inner.split(',') {
                let (k, v) = pair.split_once('=').unwrap_or_else(|| panic!("{line}"));
                assert!(name_ok(k), "{line}");
                assert!(
                    v.len() >= 2 && v.starts_with('"') && v.ends_with('"'),
                    "{line}"
                );
            }
        }
        let v = match value {
            "+Inf" => f64::INFINITY,
            v => v
                .parse::<f64>()
                .unwrap_or_else(|_| panic!("bad value: {line}")),
        };
        out.push((series.to_string(), v));
    }
    out
}

pub fn sample(samples: &[(String, f64)], series: &str) -> f64 {
    samples
        .iter()
        .find(|(s, _)| s == series)
        .unwrap_or_else(|| panic!("no {series}"))
        .1
}

#[test]
fn metrics_scraped_over_http_match_the_counters() {
    let mx = tls_mx(Faults::default());
    let (h, _socket) = proxy(&mx, "metrics:\n  listen: 127.0.0.1:0\n");
    let addr = h.server.metrics_addr().expect("metrics listener");
    assert!(addr.ip().is_loopback());
    // 3 sessions of 2 messages from one source (one MX connection, reused twice), 1 from
    // another, and one refused request.
    let r = reuse_req("127.0.0.2", mx.addr());
    for _ in 0..3 {
        deliver(&h, &r, 2);
    }
    deliver(&h, &reuse_req("127.0.0.3", mx.addr()), 1);
    let mut denied = reuse_req("127.0.0.4", mx.addr());
    denied.port = 9;
    assert_eq!(failure(&h, &denied), Failure::DestinationNotPermitted);
    assert!(mx.wait_until(WAIT, |s| s.stats.messages == 7));

    let (code, head, body) = http(addr, "GET", "/metrics");
    assert_eq!(code, 200, "{head}");
    assert!(
        head.contains("Content-Type: text/plain; version=0.0.4"),
        "{head}"
    );
    let m = parse_exposition(&body);
    let p = |s: &str| sample(&m, &format!("greenarrow_proxy_{s}"));
    assert_eq!(p("sessions_total"), 5.0);
    assert_eq!(p("messages_total"), 7.0);
    assert_eq!(p("connects_total"), 4.0);
    assert_eq!(p("connect_failures_total"), 1.0);
    assert_eq!(p("connect_results_total{result=\"ok\",code=\"250\"}"), 4.0);
    assert_eq!(
        p("connect_results_total{result=\"destination_not_permitted\",code=\"551\"}"),
        1.0
    );
    assert_eq!(
        p("connect_results_total{result=\"drained\",code=\"453\"}"),
        0.0
    );
    assert_eq!(p("pool_hits_total"), 2.0);
    assert_eq!(p("pool_misses_total"), 2.0);
    assert_eq!(p("pooled_connections"), 2.0);
    assert_eq!(p("tls_handshakes_mx_total"), 2.0);
    assert_eq!(p("tls_handshakes_mta_total"), 5.0);
    assert_eq!(mx.stats().tls_handshakes, 2);
    // The MTAs' commands and message data: at least the messages the MX received.
    let relayed = p("relay_to_mx_bytes_total");
    assert!(
        relayed >= mx.stats().bytes as f64 && relayed > 0.0,
        "{relayed}"
    );
    assert_eq!(
        p("source_connections{source=\"127.0.0.2\",state=\"idle\"}"),
        1.0
    );
    assert_eq!(
        p("source_connections{source=\"127.0.0.3\",state=\"idle\"}"),
        1.0
    );
    assert_eq!(
        p("cap_wait_seconds_bucket{le=\"+Inf\"}"),
        p("cap_wait_seconds_count")
    );
    // Bounded: nothing per MX address.
    assert!(
        !body.contains(&mx.addr().to_string()) && !body.contains("127.0.0.1"),
        "{body}"
    );
    // Read-only, one path.
    assert_eq!(http(addr, "POST", "/metrics").0, 405);
    assert_eq!(http(addr, "GET", "/").0, 404);
    let (code, _, body) = http(addr, "HEAD", "/metrics");
    assert_eq!((code, body.as_str()), (200, ""));
}

#[test]
fn endpoints_follow_the_configuration_and_nothing_listens_when_not_configured() {
    let mx = tls_mx(Faults::default());
    let (h, socket) = proxy(&mx, "metrics:\n  listen: 127.0.0.1:0\n");
    let addr = h.server.metrics_addr().unwrap();
    assert_eq!(http(addr, "GET", "/metrics").0, 200);
    // A reload without metrics and with another control socket path.
    let yaml = |extra: &str| {
        // Relative paths: the certificate and key of `h`, in its directory.
        let (_, yaml, _) = proxy_files(&[mx.addr().port()], "");
        greenarrow_proxy::config::Config::from_yaml_str(&format!("{yaml}{extra}"), &h.dir.0)
            .unwrap()
    };
    h.server
        .set_endpoints(&yaml("control_socket: other.sock\n"));
    assert_eq!(h.server.metrics_addr(), None);
    let refused = TcpStream::connect(addr).unwrap_err();
    assert_eq!(refused.kind(), std::io::ErrorKind::ConnectionRefused);
    assert!(!socket.exists());
    let other = h.dir.0.join("other.sock");
    assert_eq!(status_json(&other)["version"], 1);
    // `none`: no control socket either.
    h.server.set_endpoints(&yaml("control_socket: none\n"));
    assert_eq!(h.server.control_path(), None);
    assert!(!other.exists());
}

/// The caps figures as the operator sees them: a request waiting at a cap of 1 shows in
/// `gaproxy status --json` (the pair, its count against the cap, the waiter) and, once it
/// got the connection, in the metrics' wait counters and histogram.
#[test]
fn a_request_waiting_at_its_cap_shows_in_status_and_metrics() {
    let mx = TestMx::start(greenarrow_proxy_testkit::testmx::TestMxConfig::default()).unwrap();
    let (h, socket) = proxy(
        &mx,
        "metrics:\n  listen: 127.0.0.1:0\ncaps:\n  wait: 30s\n  sources:\n    - addresses: [127.0.0.2]\n      max_connections: 1\n",
    );
    let addr = h.server.metrics_addr().expect("metrics listener");
    let mut r = req("127.0.0.2", mx.addr(), TlsPolicy::None);
    r.reuse = true;
    // The first MTA holds the only connection the cap allows.
    let mut first = h.client();
    let mut held = first.open(&r).unwrap();
    assert_eq!(held.ready.origin, Origin::New);
    std::thread::scope(|s| {
        let second = s.spawn(|| deliver(&h, &r, 1));
        // The status view, asked until it shows the second request waiting (there is no
        // other signal of a request queued inside the proxy).
        let deadline = std::time::Instant::now() + WAIT;
        let row = loop {
            let st = status_json(&socket);
            let rows = st["caps"].as_array().unwrap().clone();
            if let Some(row) = rows.into_iter().find(|row| row["waiting"] == 1) {
                break row;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no waiter shown: {st}"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        assert_eq!(row["source"], "127.0.0.2");
        assert_eq!(row["destination"], mx.addr().to_string());
        assert_eq!(row["in_use"], 1);
        assert_eq!(row["idle"], 0);
        assert_eq!(row["max_connections"], 1);
        assert!(row["oldest_wait_seconds"].as_f64().unwrap() >= 0.0, "{row}");
        let text = stdout(&gaproxy(&["status"], &socket));
        assert!(text.contains("127.0.0.2"), "{text}");
        // The first MTA ends its session: its connection goes to the waiter, not the pool.
        held.send_mail("a@x.test", &["b@y.test"], b"first\r\n")
            .unwrap();
        held.quit().unwrap();
        assert!(matches!(second.join().unwrap(), Origin::Reused { .. }));
    });
    first.quit().unwrap();
    assert!(mx.wait_until(WAIT, |s| s.stats.messages == 2));
    assert_eq!(mx.stats().connections, 1, "one MX connection for both");
    let st = status_json(&socket);
    assert_eq!(st["waits"]["waited"], 1, "{st}");
    assert_eq!(st["waits"]["timed_out"], 0, "{st}");
    let (_, _, body) = http(addr, "GET", "/metrics");
    let m = parse_exposition(&body);
    let p = |s: &str| sample(&m, &format!("greenarrow_proxy_{s}"));
    assert_eq!(p("cap_waits_total"), 1.0);
    assert_eq!(p("cap_wait_timeouts_total"), 0.0);
    assert_eq!(p("cap_wait_seconds_count"), 1.0);
    assert_eq!(p("cap_wait_seconds_bucket{le=\"+Inf\"}"), 1.0);
    assert_eq!(p("source_waiting{source=\"127.0.0.2\"}"), 0.0);
}
