//! The SIGUSR1 report, and the pool housekeeping that reload and shutdown trigger.
//!
//! The report copies what it needs under the pool lock ([`crate::pool::Pool::snapshot`]) and
//! formats outside it, so it never stalls traffic. Its lines are stable `key=value` text:
//!
//! ```text
//! pooled source=127.0.0.2 ehlo=mta.test mx=127.0.0.1:2525 tls=TLSv1.3 cipher=TLS13_AES_256_GCM_SHA384 age=12.3s idle=1.2s uses=2 messages=5 last_mta=127.0.0.1:40100
//! summary pooled=1 keys=1 pool_hits=1 pool_misses=3 pool_stored=2 sessions_active=0 ...
//! ```
//!
//! The summary's figures ([`figures`]) are the one list the status view
//! ([`crate::status`]) and the metrics ([`crate::metrics`]) show too.

use crate::pool::reaper::quit_all;
use crate::server::Server;
use log::info;
use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn secs(d: Duration) -> String {
    format!("{:.1}s", d.as_secs_f64())
}

/// Whether a figure only goes up (a counter since start) or goes up and down (a gauge).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
}

/// One figure of the report's summary: its name in the report and the status view, its
/// Prometheus metric name (without the `greenarrow_proxy_` prefix), kind, help text and value.
#[derive(Clone, Copy, Debug)]
pub struct Figure {
    pub name: &'static str,
    pub metric: &'static str,
    pub kind: Kind,
    pub help: &'static str,
    pub value: u64,
}

/// The counters of the report, built once for the report, the status view and the metrics.
pub fn figures(server: &Server, counters: &crate::pool::PoolCounters) -> Vec<Figure> {
    use Kind::{Counter, Gauge};
    let s = &server.shared.stats;
    let w = server.worker_counts();
    let n = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    let f = |name, metric, kind, help, value| Figure {
        name,
        metric,
        kind,
        help,
        value,
    };
    vec![
        f(
            "pooled",
            "pooled_connections",
            Gauge,
            "Idle MX connections in the pool.",
            counters.idle as u64,
        ),
        f(
            "keys",
            "pool_keys",
            Gauge,
            "Pool keys (source, EHLO name, MX) with idle connections.",
            counters.keys as u64,
        ),
        f(
            "pool_hits",
            "pool_hits_total",
            Counter,
            "Checkouts that found an idle connection.",
            counters.hits,
        ),
        f(
            "pool_misses",
            "pool_misses_total",
            Counter,
            "Checkouts that found none.",
            counters.misses,
        ),
        f(
            "pool_stored",
            "pool_stored_total",
            Counter,
            "Connections checked in to the pool.",
            counters.stored,
        ),
        f(
            "sessions_active",
            "sessions_active",
            Gauge,
            "MTA sessions running on a worker.",
            w.busy as u64,
        ),
        f(
            "sessions_queued",
            "sessions_queued",
            Gauge,
            "MTA sessions waiting for a worker.",
            w.queued as u64,
        ),
        f(
            "threads",
            "session_threads",
            Gauge,
            "Session worker threads.",
            w.threads as u64,
        ),
        f(
            "sessions_total",
            "sessions_total",
            Counter,
            "MTA connections accepted.",
            n(&s.sessions),
        ),
        f(
            "connects",
            "connects_total",
            Counter,
            "Connect requests that got an MX connection.",
            n(&s.connects),
        ),
        f(
            "connect_failures",
            "connect_failures_total",
            Counter,
            "Connect requests that failed (by tag: connect_results_total).",
            n(&s.connect_failures),
        ),
        f(
            "messages",
            "messages_total",
            Counter,
            "Messages the MX accepted.",
            n(&s.messages),
        ),
        f(
            "refused_allow_from",
            "refused_allow_from_total",
            Counter,
            "Connections refused by allow_from.",
            n(&s.refused_allow_from),
        ),
        f(
            "refused_busy",
            "refused_busy_total",
            Counter,
            "Connections closed: no free worker and a full queue.",
            n(&s.refused_busy),
        ),
        f(
            "refused_per_ip",
            "refused_per_ip_total",
            Counter,
            "Connections refused by max_sessions_per_ip.",
            n(&s.refused_per_ip),
        ),
        f(
            "session_panics",
            "session_panics_total",
            Counter,
            "Session jobs that panicked (caught).",
            n(&s.panics),
        ),
        f(
            "frontend_sessions",
            "frontend_sessions_total",
            Counter,
            "Connections accepted on a front-end.",
            n(&s.frontend_sessions),
        ),
        f(
            "passthrough_octets_to_mx",
            "passthrough_octets_to_mx_total",
            Counter,
            "Octets relayed to MXes by passthrough sessions.",
            n(&s.passthrough_bytes_to_mx),
        ),
        f(
            "passthrough_octets_to_mta",
            "passthrough_octets_to_mta_total",
            Counter,
            "Octets relayed to MTAs by passthrough sessions.",
            n(&s.passthrough_bytes_to_mta),
        ),
        f(
            "relay_octets_to_mx",
            "relay_octets_to_mx_total",
            Counter,
            "Octets MTAs sent to MXes through the SMTP relay (commands and message data).",
            n(&s.relay_bytes_to_mx),
        ),
        f(
            "tls_handshakes_mta",
            "tls_handshakes_mta_total",
            Counter,
            "TLS handshakes completed with MTAs.",
            n(&s.tls_handshakes_mta),
        ),
        f(
            "tls_handshakes_mx",
            "tls_handshakes_mx_total",
            Counter,
            "TLS handshakes completed with MXes.",
            n(&s.tls_handshakes_mx),
        ),
    ]
}

/// The report's lines: one per pooled connection, then the summary.
pub fn report_lines(server: &Server) -> Vec<String> {
    let (pooled, counters) = server.shared.pool.snapshot(Instant::now());
    let mut lines = Vec::with_capacity(pooled.len() + 1);
    let mut per_key = std::collections::BTreeMap::new();
    for p in &pooled {
        let (tls, cipher) = match &p.tls {
            Some((v, c)) => (v.as_str(), c.as_str()),
            None => ("none", "none"),
        };
        lines.push(format!(
            "pooled source={} ehlo={} mx={} tls={tls} cipher={cipher} age={} idle={} uses={} messages={} last_mta={}",
            p.key.source,
            p.key.ehlo,
            p.key.mx,
            secs(p.age),
            secs(p.idle),
            p.uses,
            p.messages,
            p.last_mta.map_or("-".to_string(), |a| a.to_string()),
        ));
        *per_key
            .entry(format!("{}/{}/{}", p.key.source, p.key.ehlo, p.key.mx))
            .or_insert(0usize) += 1;
    }
    let mut summary = String::from("summary");
    for f in figures(server, &counters) {
        let _ = write!(summary, " {}={}", f.name, f.value);
    }
    if !per_key.is_empty() {
        summary.push_str(" per_key=");
        let parts: Vec<String> = per_key.iter().map(|(k, n)| format!("{k}:{n}")).collect();
        let _ = write!(summary, "{}", parts.join(","));
    }
    let failed: Vec<String> = server
        .shared
        .stats
        .failures
        .snapshot()
        .into_iter()
        .filter(|(_, n)| *n > 0)
        .map(|(f, n)| format!("{}:{}:{n}", f.code().2, f.code().0))
        .collect();
    if !failed.is_empty() {
        let _ = write!(summary, " failures={}", failed.join(","));
    }
    lines.push(summary);
    lines
}

/// Log the report (SIGUSR1).
pub fn log_report(server: &Arc<Server>) {
    for line in report_lines(server) {
        info!("report {line}");
    }
}

/// After a reload: take out the pooled connections whose source address is no longer
/// permitted (the caller QUITs them, off the signal thread).
pub fn after_reload(server: &Arc<Server>) -> Vec<crate::mx::MxConnection> {
    let rt = server.shared.runtime();
    // Keep a connection while any client may still use its source address.
    let c = &rt.config;
    let gone = server.shared.pool.take_keys_where(|k| {
        c.clients
            .iter()
            .flat_map(|cl| {
                cl.source_addresses
                    .as_deref()
                    .unwrap_or(&c.source_addresses)
            })
            .any(|n| n.contains(k.source))
    });
    if !gone.is_empty() {
        info!(
            "reload: closing {} pooled connection(s) whose source address is no longer permitted",
            gone.len()
        );
    }
    gone
}

/// Before draining: QUIT and close every idle pooled connection.
pub fn before_drain(server: &Arc<Server>) {
    let idle = server.shared.pool.take_all();
    if !idle.is_empty() {
        info!("stopping: closing {} pooled connection(s)", idle.len());
    }
    quit_all(idle);
}
