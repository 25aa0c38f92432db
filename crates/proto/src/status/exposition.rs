//! The Prometheus text exposition (format 0.0.4) of a status [`Snapshot`] (sans-I/O).
//!
//! Cardinality is bounded: one series per figure of the report, one per failure (tag and
//! code), and per source address at most — never per MX address.

use super::{Kind, Snapshot};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::IpAddr;

/// Every metric name starts with this.
pub const PREFIX: &str = "greenarrow_proxy_";

/// The `Content-Type` of the exposition.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The `# HELP` and `# TYPE` lines of the metric `name` (in full).
fn head(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// A label value, escaped as the format wants (backslash, double quote, line feed).
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn float(v: f64) -> String {
    if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.to_string()
    } else if v.is_nan() {
        "NaN".to_string()
    } else {
        format!("{v}")
    }
}

/// The exposition of `snap`.
pub fn render(snap: &Snapshot) -> String {
    let mut out = String::with_capacity(8192);
    head(
        &mut out,
        "greenarrow_proxy_build_info",
        "gauge",
        "Always 1; the version of the proxy in its label.",
    );
    let _ = writeln!(
        out,
        "{PREFIX}build_info{{version=\"{}\"}} 1",
        label(env!("CARGO_PKG_VERSION"))
    );
    for f in &snap.figures {
        let kind = match f.kind {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
        };
        head(&mut out, f.metric, kind, f.help);
        let _ = writeln!(out, "{} {}", f.metric, float(f.value));
    }

    head(
        &mut out,
        "greenarrow_proxy_connect_results_total",
        "counter",
        "Connect requests by result: ok, or the failure's tag and reply code.",
    );
    let connects = snap
        .figures
        .iter()
        .find(|f| f.name == "connects")
        .map_or(0.0, |f| f.value);
    let _ = writeln!(
        out,
        "{PREFIX}connect_results_total{{result=\"ok\",code=\"250\"}} {}",
        float(connects)
    );
    for (failure, n) in &snap.failures {
        let code = failure.code();
        let _ = writeln!(
            out,
            "{PREFIX}connect_results_total{{result=\"{}\",code=\"{}\"}} {n}",
            label(code.tag),
            code.reply
        );
    }

    // TLS reporting: per result type and per policy type (never per domain).
    head(
        &mut out,
        "greenarrow_proxy_tls_rpt_failures_total",
        "counter",
        "MX connection set-ups under the TLS policies that failed (or would have, under a policy only tested), by RFC 8460 result type.",
    );
    for (r, n) in &snap.tls_rpt.failures {
        let _ = writeln!(
            out,
            "{PREFIX}tls_rpt_failures_total{{result=\"{}\"}} {n}",
            r.as_str()
        );
    }
    head(
        &mut out,
        "greenarrow_proxy_tls_rpt_successes_total",
        "counter",
        "MX connection set-ups under the TLS policies that succeeded, by RFC 8460 policy type.",
    );
    for (p, n) in &snap.tls_rpt.successes {
        let _ = writeln!(
            out,
            "{PREFIX}tls_rpt_successes_total{{policy=\"{}\"}} {n}",
            p.as_str()
        );
    }

    // Per source address: connections in use and idle, and requests waiting under a cap.
    let mut per_source: BTreeMap<IpAddr, [u64; 3]> = BTreeMap::new();
    for (k, n) in &snap.in_use {
        per_source.entry(k.source).or_default()[0] += *n as u64;
    }
    for p in &snap.pooled {
        per_source.entry(p.key.source).or_default()[1] += 1;
    }
    for r in &snap.rows {
        per_source.entry(r.source).or_default()[2] += r.waiting as u64;
    }
    head(
        &mut out,
        "greenarrow_proxy_source_connections",
        "gauge",
        "Open MX connections per source address: in use by a session, or idle in the pool.",
    );
    for (ip, [in_use, idle, _]) in &per_source {
        let ip = label(&ip.to_string());
        let _ = writeln!(
            out,
            "{PREFIX}source_connections{{source=\"{ip}\",state=\"in_use\"}} {in_use}"
        );
        let _ = writeln!(
            out,
            "{PREFIX}source_connections{{source=\"{ip}\",state=\"idle\"}} {idle}"
        );
    }
    head(
        &mut out,
        "greenarrow_proxy_source_waiting",
        "gauge",
        "Requests waiting for a connection under a cap, per source address.",
    );
    for (ip, [_, _, waiting]) in &per_source {
        let ip = label(&ip.to_string());
        let _ = writeln!(out, "{PREFIX}source_waiting{{source=\"{ip}\"}} {waiting}");
    }

    let w = &snap.waits;
    head(
        &mut out,
        "greenarrow_proxy_cap_waits_total",
        "counter",
        "Requests that waited for a connection under a cap.",
    );
    let _ = writeln!(out, "{PREFIX}cap_waits_total {}", w.waited);
    head(
        &mut out,
        "greenarrow_proxy_cap_wait_timeouts_total",
        "counter",
        "Waits that expired (concurrency_limit).",
    );
    let _ = writeln!(out, "{PREFIX}cap_wait_timeouts_total {}", w.timed_out);
    head(
        &mut out,
        "greenarrow_proxy_cap_wait_seconds",
        "histogram",
        "Time requests waited for a connection under a cap.",
    );
    let mut count = w.waited;
    let mut has_inf = false;
    for (le, n) in &w.buckets {
        has_inf |= le.is_infinite();
        if le.is_infinite() {
            count = *n;
        }
        let _ = writeln!(
            out,
            "{PREFIX}cap_wait_seconds_bucket{{le=\"{}\"}} {n}",
            float(*le)
        );
    }
    if !has_inf {
        let _ = writeln!(
            out,
            "{PREFIX}cap_wait_seconds_bucket{{le=\"+Inf\"}} {count}"
        );
    }
    let _ = writeln!(out, "{PREFIX}cap_wait_seconds_sum {}", float(w.sum_seconds));
    let _ = writeln!(out, "{PREFIX}cap_wait_seconds_count {count}");

    if let Some(sh) = &snap.shared {
        head(
            &mut out,
            "greenarrow_proxy_shared_caps_fallback",
            "gauge",
            "1 while caps.shared uses this host's share (Redis unreachable, or rejoining), else 0.",
        );
        let _ = writeln!(
            out,
            "{PREFIX}shared_caps_fallback {}",
            u8::from(matches!(sh.state.as_str(), "fallback" | "rejoining"))
        );
        head(
            &mut out,
            "greenarrow_proxy_shared_caps_live_hosts",
            "gauge",
            "Proxy hosts alive as last counted in Redis.",
        );
        let _ = writeln!(out, "{PREFIX}shared_caps_live_hosts {}", sh.live_hosts);
        head(
            &mut out,
            "greenarrow_proxy_shared_caps_leases",
            "gauge",
            "Leases under a shared cap held by this host, per configured destination group.",
        );
        for g in &sh.groups {
            let _ = writeln!(
                out,
                "{PREFIX}shared_caps_leases{{group=\"{}\"}} {}",
                label(&g.group),
                g.held
            );
        }
    }
    head(
        &mut out,
        "greenarrow_proxy_drains",
        "gauge",
        "Drains in force (gaproxy drain), by kind.",
    );
    let _ = writeln!(
        out,
        "{PREFIX}drains{{kind=\"source\"}} {}",
        snap.drains.sources.len()
    );
    let _ = writeln!(
        out,
        "{PREFIX}drains{{kind=\"mx\"}} {}",
        snap.drains.mx.len()
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::reply::ALL_FAILURES;
    use crate::protocol::reuse::PoolKey;
    use crate::protocol::Failure;
    use crate::status::{
        CapRow, ConfigState, DrainList, Figure, IdleConnection, PooledInfo, WaitSnapshot,
    };
    use std::time::{Duration, UNIX_EPOCH};

    fn snapshot() -> Snapshot {
        let key =
            |s: &str, mx: &str| PoolKey::new(s.parse().unwrap(), "mta.test", mx.parse().unwrap());
        let pooled = |k: PoolKey| PooledInfo {
            key: k,
            conn: IdleConnection {
                age: Duration::from_secs(3),
                idle: Duration::from_secs(1),
                uses: 1,
                messages: 2,
                tls_version: None,
                tls_cipher: None,
                last_mta: None,
            },
        };
        Snapshot {
            figures: vec![
                Figure {
                    name: "connects",
                    metric: "greenarrow_proxy_connects_total",
                    kind: Kind::Counter,
                    help: "Connects.",
                    value: 7.0,
                },
                Figure {
                    name: "cpu_seconds",
                    metric: "process_cpu_seconds_total",
                    kind: Kind::Counter,
                    help: "CPU.",
                    value: 0.25,
                },
            ],
            pooled: vec![
                pooled(key("127.0.0.2", "127.0.0.1:25")),
                pooled(key("127.0.0.2", "127.0.0.9:25")),
            ],
            in_use: vec![(key("127.0.0.3", "127.0.0.1:25"), 2)],
            rows: vec![CapRow {
                source: "127.0.0.3".parse().unwrap(),
                destination: "127.0.0.1:25".into(),
                in_use: 2,
                idle: 0,
                max_connections: Some(2),
                waiting: 4,
                oldest_wait: Some(Duration::from_millis(1500)),
            }],
            shared: None,
            waits: WaitSnapshot {
                waited: 5,
                timed_out: 1,
                buckets: vec![(0.5, 3), (f64::INFINITY, 5)],
                sum_seconds: 2.25,
            },
            failures: ALL_FAILURES
                .iter()
                .map(|f| (*f, u64::from(*f == Failure::Drained) * 3))
                .collect(),
            drains: DrainList {
                sources: vec!["127.0.0.2".parse().unwrap()],
                mx: vec![],
            },
            tls_rpt: crate::status::TlsRptSnapshot {
                failures: vec![(crate::tls_policy::rpt::ResultType::StsWebpkiInvalid, 2)],
                successes: vec![(crate::tls_policy::rpt::PolicyType::Sts, 5)],
                domains: Vec::new(),
                sts_cached: 1,
            },
            config: ConfigState {
                started: UNIX_EPOCH,
                loaded: UNIX_EPOCH,
                last_reload: None,
            },
            now: UNIX_EPOCH + Duration::from_secs(5),
        }
    }

    #[test]
    fn the_exposition_has_one_series_per_source_and_per_failure_and_no_mx() {
        let text = render(&snapshot());
        for line in [
            "greenarrow_proxy_connects_total 7",
            "process_cpu_seconds_total 0.25",
            concat!(
                "greenarrow_proxy_build_info{version=\"",
                env!("CARGO_PKG_VERSION"),
                "\"} 1"
            ),
            "greenarrow_proxy_connect_results_total{result=\"ok\",code=\"250\"} 7",
            "greenarrow_proxy_connect_results_total{result=\"drained\",code=\"453\"} 3",
            "greenarrow_proxy_connect_results_total{result=\"banner_rejected\",code=\"545\"} 0",
            "greenarrow_proxy_source_connections{source=\"127.0.0.2\",state=\"idle\"} 2",
            "greenarrow_proxy_source_connections{source=\"127.0.0.3\",state=\"in_use\"} 2",
            "greenarrow_proxy_source_waiting{source=\"127.0.0.3\"} 4",
            "greenarrow_proxy_cap_wait_seconds_bucket{le=\"0.5\"} 3",
            "greenarrow_proxy_cap_wait_seconds_bucket{le=\"+Inf\"} 5",
            "greenarrow_proxy_cap_wait_seconds_sum 2.25",
            "greenarrow_proxy_cap_wait_seconds_count 5",
            "greenarrow_proxy_drains{kind=\"source\"} 1",
            "greenarrow_proxy_tls_rpt_failures_total{result=\"sts-webpki-invalid\"} 2",
            "greenarrow_proxy_tls_rpt_successes_total{policy=\"sts\"} 5",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
        }
        assert!(
            !text.contains("127.0.0.1:25") && !text.contains("127.0.0.9"),
            "{text}"
        );
        let results = text
            .lines()
            .filter(|l| l.starts_with("greenarrow_proxy_connect_results_total{"))
            .count();
        assert_eq!(results, ALL_FAILURES.len() + 1);
        // One TYPE line per metric name.
        let mut types: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.split(' ').next())
            .collect();
        let n = types.len();
        types.sort();
        types.dedup();
        assert_eq!(types.len(), n);
    }

    #[test]
    fn a_histogram_without_buckets_still_has_its_inf_bucket() {
        let mut s = snapshot();
        s.waits = WaitSnapshot::default();
        let text = render(&s);
        assert!(text.contains("greenarrow_proxy_cap_wait_seconds_bucket{le=\"+Inf\"} 0\n"));
        assert!(text.contains("greenarrow_proxy_cap_wait_seconds_count 0\n"));
    }
}
