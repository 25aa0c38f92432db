//! The daemon as Prometheus and an operator see it: a real scrape checked by `promtool check
//! metrics`, the shipped alert rules and Grafana dashboard checked against that scrape (every
//! metric they use is there) and by `promtool check rules` / `promtool test rules`, and a
//! failed then a good reload (SIGHUP) shown in `gaproxy status` and the metrics.

use super::*;
use greenarrow_proxy_testkit::daemon::Daemon;
use std::collections::BTreeSet;

/// The shipped monitoring files.
fn monitoring(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("packaging/monitoring")
        .join(file)
}

/// `promtool`, or why it cannot be used (the caller skips, saying so).
fn promtool() -> Result<Command, String> {
    match Command::new("promtool").arg("--version").output() {
        Ok(o) if o.status.success() => Ok(Command::new("promtool")),
        Ok(o) => Err(format!("promtool --version failed: {:?}", o.status)),
        Err(e) => Err(format!(
            "promtool not found ({e}); Debian's prometheus package has it"
        )),
    }
}

/// Run a promtool command; its output (stdout and stderr), asserting it succeeded.
fn run_promtool(cmd: &mut Command, stdin: Option<&str>) -> String {
    use std::process::Stdio;
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.unwrap_or("").as_bytes()).unwrap();
    drop(input);
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{cmd:?} failed:\n{text}");
    text
}

/// The metrics address the daemon logged ("metrics on http://ADDR/metrics").
fn metrics_addr(d: &mut Daemon) -> SocketAddr {
    let line = d.wait_for("metrics on http://");
    let (_, rest) = line.split_once("metrics on http://").unwrap();
    rest.trim_end_matches("/metrics").parse().unwrap()
}

/// Scrape `addr`: the body, and its samples.
fn scrape(addr: SocketAddr) -> (String, Vec<(String, f64)>) {
    let (code, head, body) = metrics::http(addr, "GET", "/metrics");
    assert_eq!(code, 200, "{head}");
    let samples = metrics::parse_exposition(&body);
    (body, samples)
}

/// The metric names of PromQL expressions: the identifiers starting with the proxy's prefix or
/// `process_` (label values are quoted and never start so here).
fn metric_names(expr: &str) -> BTreeSet<String> {
    expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .filter(|t| t.starts_with("greenarrow_proxy_") || t.starts_with("process_"))
        .map(str::to_string)
        .collect()
}

/// Every string under a key named `key` in a JSON tree.
fn strings_under(v: &Value, key: &str, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                match x {
                    Value::String(s) if k == key => out.push(s.clone()),
                    _ => strings_under(x, key, out),
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|x| strings_under(x, key, out)),
        _ => {}
    }
}

/// The expressions of the alert rules, by alert name.
fn alert_exprs() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(monitoring("greenarrow_proxy-alerts.yml")).unwrap();
    let doc: Value = yaml_serde::from_str(&text).unwrap();
    doc["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap().clone())
        .map(|r| {
            (
                r["alert"].as_str().unwrap().to_string(),
                r["expr"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// The dashboard's query expressions (panels and template variables).
fn dashboard_exprs() -> Vec<String> {
    let text = std::fs::read_to_string(monitoring("greenarrow_proxy-dashboard.json")).unwrap();
    let doc: Value = serde_json::from_str(&text).unwrap();
    let mut out = Vec::new();
    strings_under(&doc, "expr", &mut out);
    strings_under(&doc, "definition", &mut out);
    out
}

/// A daemon with a control socket and metrics, one delivery done (so that the per-source
/// series exist, with an idle pooled connection).
fn daemon_with_metrics() -> (setup::Setup, Daemon, PathBuf, SocketAddr, SocketAddr) {
    daemon_with_metrics_and("")
}

/// [`daemon_with_metrics`] with more configuration.
fn daemon_with_metrics_and(extra: &str) -> (setup::Setup, Daemon, PathBuf, SocketAddr, SocketAddr) {
    let s = setup::Setup::new(&format!(
        "control_socket: control.sock\nmax_sessions: 40\nmetrics:\n  listen: 127.0.0.1:0\n{extra}"
    ));
    let mut d = s.daemon();
    let metrics = metrics_addr(&mut d);
    let addr = d.wait_ready()[0];
    s.deliver(addr, SECRET, &s.request("127.0.0.2", true), b"hello\r\n");
    d.wait_for("kept for reuse");
    let socket = s.dir.0.join("control.sock");
    (s, d, socket, metrics, addr)
}

#[test]
fn every_metric_the_alerts_and_the_dashboard_use_is_in_a_real_scrape() {
    // caps.shared toward a Redis that is not there (a loopback port nobody listens on): its
    // series exist only where it is configured, and the fallback alert reads them.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port();
    let (_s, mut d, _socket, addr, _) = daemon_with_metrics_and(&format!(
        "caps:\n  destinations:\n    - name: testmx\n      addresses: [127.0.0.1]\n  \
         shared:\n    redis: \"redis://127.0.0.1:{port}/0\"\n    host: monitoring\n    \
         timeout: 200ms\n    destinations:\n      testmx:\n        max_connections: 4\n"
    ));
    let (body, samples) = scrape(addr);
    let scraped: BTreeSet<String> = samples
        .iter()
        .map(|(series, _)| series.split('{').next().unwrap().to_string())
        .collect();
    let alerts = alert_exprs();
    let names: Vec<&str> = alerts.iter().map(|(n, _)| n.as_str()).collect();
    for want in [
        "GreenarrowProxyDown",
        "GreenarrowProxyFileDescriptorsNearLimit",
        "GreenarrowProxySessionsNearMax",
        "GreenarrowProxyWaitingAtCaps",
        "GreenarrowProxyConcurrencyLimitRefusals",
        "GreenarrowProxyMxTlsFailures",
        "GreenarrowProxyMxTlsPolicyDeferrals",
        "GreenarrowProxySharedCapsFallback",
        "GreenarrowProxyReloadFailed",
    ] {
        assert!(names.contains(&want), "no alert {want} in {names:?}");
    }
    let exprs: Vec<String> = alerts
        .into_iter()
        .map(|(_, e)| e)
        .chain(dashboard_exprs())
        .collect();
    assert!(exprs.len() > 20, "{exprs:?}");
    let used: BTreeSet<String> = exprs.iter().flat_map(|e| metric_names(e)).collect();
    let missing: Vec<&String> = used.difference(&scraped).collect();
    assert!(
        missing.is_empty(),
        "used by the alerts or the dashboard but not in a scrape: {missing:?}\nscrape:\n{body}"
    );
    // The standard process series, read from /proc.
    for name in [
        "process_open_fds",
        "process_max_fds",
        "process_resident_memory_bytes",
        "process_virtual_memory_bytes",
        "process_start_time_seconds",
        "process_cpu_seconds_total",
    ] {
        assert!(scraped.contains(name), "no {name} in\n{body}");
    }
    let value = |series: &str| metrics::sample(&samples, series);
    // Against the kernel's view of the daemon: its descriptors (the scrape's socket comes and
    // goes, hence the margin) and its soft open-files limit.
    let proc = PathBuf::from(format!("/proc/{}", d.pid()));
    let open = value("process_open_fds");
    let listed = std::fs::read_dir(proc.join("fd")).unwrap().count() as f64;
    assert!((open - listed).abs() <= 2.0, "{open} {listed}");
    let limits = std::fs::read_to_string(proc.join("limits")).unwrap();
    let soft = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .unwrap();
    assert_eq!(value("process_max_fds").to_string(), soft, "{limits}");
    assert!(value("process_resident_memory_bytes") > 1e6, "{body}");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let started = value("process_start_time_seconds");
    assert!(
        started > now - 60.0 && started <= now + 1.0,
        "{started} {now}"
    );
    assert_eq!(value("greenarrow_proxy_max_sessions"), 40.0);
    assert_eq!(
        value(&format!(
            "greenarrow_proxy_build_info{{version=\"{}\"}}",
            env!("CARGO_PKG_VERSION")
        )),
        1.0
    );
    // Prometheus naming: bytes, never octets; every counter ends in _total.
    assert!(!body.contains("octets"), "{body}");
    for line in body.lines().filter(|l| l.starts_with("# TYPE ")) {
        if line.ends_with(" counter") {
            assert!(line.contains("_total "), "{line}");
        }
    }

    match promtool() {
        Err(why) => eprintln!("skipped: promtool checks: {why}"),
        Ok(mut cmd) => {
            let out = run_promtool(cmd.args(["check", "metrics"]), Some(&body));
            assert_eq!(out.trim(), "", "promtool check metrics:\n{out}");
            let rules = monitoring("greenarrow_proxy-alerts.yml");
            let out = run_promtool(
                promtool().unwrap().arg("check").arg("rules").arg(&rules),
                None,
            );
            assert!(out.contains("SUCCESS"), "{out}");
            let out = run_promtool(
                promtool()
                    .unwrap()
                    .args(["test", "rules", "greenarrow_proxy-alerts.test.yml"])
                    .current_dir(monitoring("")),
                None,
            );
            assert!(out.contains("SUCCESS"), "{out}");
        }
    }
    d.signal(nix::sys::signal::Signal::SIGTERM);
    assert!(d.wait_exit().success());
}

/// The keys of the `"counters"` object of `gaproxy status --json`'s text, in their order.
fn counter_keys_in_order(text: &str) -> Vec<String> {
    let (_, rest) = text.split_once("\"counters\": {").unwrap();
    let (inner, _) = rest.split_once('}').unwrap();
    inner
        .lines()
        .filter_map(|l| l.trim().strip_prefix('"'))
        .filter_map(|l| l.split_once('"').map(|(k, _)| k.to_string()))
        .collect()
}

#[test]
fn a_failed_reload_shows_in_status_and_metrics_until_a_good_one() {
    use nix::sys::signal::Signal::{SIGHUP, SIGTERM, SIGUSR1};
    let (s, mut d, socket, addr, proxy) = daemon_with_metrics();
    let reload_ok = |addr| {
        let (_, m) = scrape(addr);
        let v = |n: &str| metrics::sample(&m, &format!("greenarrow_proxy_{n}"));
        (
            v("config_last_reload_successful"),
            v("config_last_reload_success_timestamp_seconds"),
        )
    };
    let st = status_json(&socket);
    assert_eq!(st["config"]["last_reload"], Value::Null, "{st:#}");
    let loaded = st["config"]["loaded_at"].as_str().unwrap().to_string();
    assert_eq!(st["started_at"].as_str(), Some(loaded.as_str()));
    assert!(st["uptime_seconds"].as_f64().unwrap() >= 0.0);
    assert_eq!(st["sessions"]["max_sessions"], 40);
    assert_eq!(st["sessions"]["active"], 0);
    let (ok, at) = reload_ok(addr);
    assert_eq!(ok, 1.0);
    let t = humantime::parse_rfc3339(&loaded).unwrap();
    assert_eq!(at, greenarrow_proxy::report::unix_seconds(t));

    // The counters of `--json` in the SIGUSR1 report's order.
    let json_text = stdout(&gaproxy(&["status", "--json"], &socket));
    let keys = counter_keys_in_order(&json_text);
    d.signal(SIGUSR1);
    let summary = d.wait_for("report summary ");
    let (_, summary) = summary.split_once("report summary ").unwrap();
    let report: Vec<&str> = summary
        .split(' ')
        .filter_map(|kv| kv.split_once('=').map(|(k, _)| k))
        .filter(|k| {
            ![
                "per_key",
                "failures",
                "tls_rpt_successes",
                "tls_rpt_failures",
            ]
            .contains(k)
        })
        .collect();
    assert_eq!(keys, report, "{json_text}");
    assert!(report.contains(&"last_reload_ok") && report.contains(&"open_fds"));

    // A broken file: refused, the previous configuration runs, and both views say so.
    s.rewrite(&format!("{}lisen: [\"127.0.0.1:0\"]\n", s.yaml));
    d.signal(SIGHUP);
    d.wait_for("reload failed");
    let st = status_json(&socket);
    let last = &st["config"]["last_reload"];
    assert_eq!(last["ok"], false, "{st:#}");
    assert!(
        last["error"].as_str().unwrap().contains("lisen"),
        "{last:#}"
    );
    assert_eq!(st["config"]["loaded_at"], loaded.as_str());
    assert_eq!(reload_ok(addr), (0.0, at));
    let text = stdout(&gaproxy(&["status"], &socket));
    assert!(
        text.lines().any(|l| l
            .starts_with(&format!("Configuration loaded {loaded}; last reload "))
            && l.contains(" FAILED, the previous configuration still runs: ")
            && l.contains("lisen")),
        "{text}"
    );
    assert!(
        text.contains("Sessions: 0 in use of max_sessions 40 (0%), 0 queued"),
        "{text}"
    );
    // The proxy still works.
    s.deliver(proxy, SECRET, &s.request("127.0.0.3", false), b"still\r\n");

    // A good file: in force, and both views say so.
    s.rewrite(&s.yaml);
    d.signal(SIGHUP);
    d.wait_for("configuration reloaded from");
    let st = status_json(&socket);
    let last = &st["config"]["last_reload"];
    assert_eq!(
        (&last["ok"], &last["error"]),
        (&Value::Bool(true), &Value::Null)
    );
    assert_eq!(st["config"]["loaded_at"], last["at"]);
    let (ok, at2) = reload_ok(addr);
    assert_eq!(ok, 1.0);
    assert!(at2 >= at, "{at2} {at}");
    let text = stdout(&gaproxy(&["status"], &socket));
    assert!(text.contains(" worked"), "{text}");
    d.signal(SIGTERM);
    assert!(d.wait_exit().success());
}
