//! The metrics listener: scraped over HTTP, every line parsed, values against the counters;
//! rebinding and closing with the configuration.

use super::*;

/// GET `path` over HTTP/1.1: (status code, headers, body).
fn http(addr: SocketAddr, method: &str, path: &str) -> (u16, String, String) {
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
fn parse_exposition(text: &str) -> Vec<(String, f64)> {
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

fn sample(samples: &[(String, f64)], series: &str) -> f64 {
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
    let relayed = p("relay_octets_to_mx_total");
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
