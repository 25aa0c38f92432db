//! The SIGUSR1 report, and what it shares with the status view ([`crate::status`]) and the
//! metrics ([`crate::metrics`]): the [`Snapshot`] they are all made from, and its source.
//!
//! The running server takes the snapshot (the pool under its lock) and the report formats it
//! outside any lock, so it never stalls traffic. Its lines are stable `key=value` text:
//!
//! ```text
//! pooled source=127.0.0.2 ehlo=mta.test mx=127.0.0.1:2525 tls=TLSv1.3 cipher=TLS13_AES_256_GCM_SHA384 age=12.3s idle=1.2s uses=2 messages=5 last_mta=127.0.0.1:40100
//! summary pooled=1 keys=1 pool_hits=1 pool_misses=3 pool_stored=2 sessions_active=0 ...
//! ```
//!
//! The summary's figures ([`figures`]) are the one list the status view
//! ([`crate::status`]) and the metrics ([`crate::metrics`]) show too.

use crate::pool::PoolCounters;
use crate::procstat::ProcessFigures;
use crate::shared::{ConfigState, StatsSnapshot};
use crate::workers::PoolCounts;
pub use greenarrow_proxy_proto::status::{unix_seconds, Figure, Kind, Snapshot};
use log::info;
use std::fmt::Write as _;
use std::time::Duration;

/// Where snapshots come from: the running server hands itself to the metrics listener and the
/// control socket as one, so that they never see the server.
pub trait SnapshotSource: Send + Sync {
    /// Copy the state now.
    fn snapshot(&self) -> Snapshot;
}

fn secs(d: Duration) -> String {
    format!("{:.1}s", d.as_secs_f64())
}

/// The counters of the report, built once for the report, the status view and the metrics:
/// the pool's (`counters`), the session workers' (`w`), the proxy's counters (`s`), then the
/// configuration's state (`config`), then the process's own (`process`, from /proc; left out
/// where there is none).
pub fn figures(
    counters: &PoolCounters,
    w: &PoolCounts,
    s: &StatsSnapshot,
    config: &ConfigState,
    process: Option<&ProcessFigures>,
) -> Vec<Figure> {
    use Kind::{Counter, Gauge};
    let f = |name, metric, kind, help, value: u64| Figure {
        name,
        metric,
        kind,
        help,
        value: value as f64,
    };
    let mut list = vec![
        f(
            "pooled",
            "greenarrow_proxy_pooled_connections",
            Gauge,
            "Idle MX connections in the pool.",
            counters.idle as u64,
        ),
        f(
            "keys",
            "greenarrow_proxy_pool_keys",
            Gauge,
            "Pool keys (source, EHLO name, MX) with idle connections.",
            counters.keys as u64,
        ),
        f(
            "pool_hits",
            "greenarrow_proxy_pool_hits_total",
            Counter,
            "Checkouts that found an idle connection.",
            counters.hits,
        ),
        f(
            "pool_misses",
            "greenarrow_proxy_pool_misses_total",
            Counter,
            "Checkouts that found none.",
            counters.misses,
        ),
        f(
            "pool_stored",
            "greenarrow_proxy_pool_stored_total",
            Counter,
            "Connections checked in to the pool.",
            counters.stored,
        ),
        f(
            "sessions_active",
            "greenarrow_proxy_sessions_active",
            Gauge,
            "MTA sessions running on a worker.",
            w.busy as u64,
        ),
        f(
            "sessions_queued",
            "greenarrow_proxy_sessions_queued",
            Gauge,
            "MTA sessions waiting for a worker.",
            w.queued as u64,
        ),
        f(
            "threads",
            "greenarrow_proxy_session_threads",
            Gauge,
            "Session worker threads.",
            w.threads as u64,
        ),
        f(
            "sessions_total",
            "greenarrow_proxy_sessions_total",
            Counter,
            "MTA connections accepted.",
            s.sessions,
        ),
        f(
            "connects",
            "greenarrow_proxy_connects_total",
            Counter,
            "Connect requests that got an MX connection.",
            s.connects,
        ),
        f(
            "connect_failures",
            "greenarrow_proxy_connect_failures_total",
            Counter,
            "Connect requests that failed (by tag: connect_results_total).",
            s.connect_failures,
        ),
        f(
            "messages",
            "greenarrow_proxy_messages_total",
            Counter,
            "Messages the MX accepted.",
            s.messages,
        ),
        f(
            "refused_allow_from",
            "greenarrow_proxy_refused_allow_from_total",
            Counter,
            "Connections refused by allow_from.",
            s.refused_allow_from,
        ),
        f(
            "refused_busy",
            "greenarrow_proxy_refused_busy_total",
            Counter,
            "Connections closed: no free worker and a full queue.",
            s.refused_busy,
        ),
        f(
            "refused_per_ip",
            "greenarrow_proxy_refused_per_ip_total",
            Counter,
            "Connections refused by max_sessions_per_ip.",
            s.refused_per_ip,
        ),
        f(
            "session_panics",
            "greenarrow_proxy_session_panics_total",
            Counter,
            "Session jobs that panicked (caught).",
            s.panics,
        ),
        f(
            "frontend_sessions",
            "greenarrow_proxy_frontend_sessions_total",
            Counter,
            "Connections accepted on a front-end.",
            s.frontend_sessions,
        ),
        f(
            "passthrough_octets_to_mx",
            "greenarrow_proxy_passthrough_to_mx_bytes_total",
            Counter,
            "Bytes relayed to MXes by passthrough sessions.",
            s.passthrough_bytes_to_mx,
        ),
        f(
            "passthrough_octets_to_mta",
            "greenarrow_proxy_passthrough_to_mta_bytes_total",
            Counter,
            "Bytes relayed to MTAs by passthrough sessions.",
            s.passthrough_bytes_to_mta,
        ),
        f(
            "relay_octets_to_mx",
            "greenarrow_proxy_relay_to_mx_bytes_total",
            Counter,
            "Bytes MTAs sent to MXes through the SMTP relay (commands and message data).",
            s.relay_bytes_to_mx,
        ),
        f(
            "tls_handshakes_mta",
            "greenarrow_proxy_tls_handshakes_mta_total",
            Counter,
            "TLS handshakes completed with MTAs.",
            s.tls_handshakes_mta,
        ),
        f(
            "tls_handshakes_mx",
            "greenarrow_proxy_tls_handshakes_mx_total",
            Counter,
            "TLS handshakes completed with MXes.",
            s.tls_handshakes_mx,
        ),
        f(
            "max_sessions",
            "greenarrow_proxy_max_sessions",
            Gauge,
            "The most MTA sessions served at once (max_sessions in force).",
            w.max as u64,
        ),
        Figure {
            name: "config_loaded",
            metric: "greenarrow_proxy_config_last_reload_success_timestamp_seconds",
            kind: Gauge,
            help: "When the configuration in force was loaded (at start or by the last reload that worked), seconds since the epoch.",
            value: unix_seconds(config.loaded).floor(),
        },
        f(
            "last_reload_ok",
            "greenarrow_proxy_config_last_reload_successful",
            Gauge,
            "Whether the last reload (SIGHUP) worked: 1, or 0 when it failed and the previous configuration still runs (1 before any reload).",
            u64::from(config.last_reload_ok()),
        ),
    ];
    if let Some(p) = process {
        list.extend(process_figures(p));
    }
    list
}

/// The standard `process_*` figures.
fn process_figures(p: &ProcessFigures) -> Vec<Figure> {
    use Kind::{Counter, Gauge};
    let f = |name, metric, kind, help, value| Figure {
        name,
        metric,
        kind,
        help,
        value,
    };
    let mut list = vec![f(
        "open_fds",
        "process_open_fds",
        Gauge,
        "Number of open file descriptors.",
        p.open_fds as f64,
    )];
    if let Some(max) = p.max_fds {
        list.push(f(
            "max_fds",
            "process_max_fds",
            Gauge,
            "Maximum number of open file descriptors.",
            max as f64,
        ));
    }
    list.extend([
        f(
            "resident_memory_bytes",
            "process_resident_memory_bytes",
            Gauge,
            "Resident memory size in bytes.",
            p.resident_memory_bytes as f64,
        ),
        f(
            "virtual_memory_bytes",
            "process_virtual_memory_bytes",
            Gauge,
            "Virtual memory size in bytes.",
            p.virtual_memory_bytes as f64,
        ),
        f(
            "start_time_seconds",
            "process_start_time_seconds",
            Gauge,
            "Start time of the process since unix epoch in seconds.",
            p.start_time_seconds,
        ),
        f(
            "cpu_seconds",
            "process_cpu_seconds_total",
            Counter,
            "Total user and system CPU time spent in seconds.",
            p.cpu_seconds,
        ),
    ]);
    list
}

/// The report's lines: one per pooled connection, then the summary.
pub fn report_lines(snap: &Snapshot) -> Vec<String> {
    let mut lines = Vec::with_capacity(snap.pooled.len() + 1);
    let mut per_key = std::collections::BTreeMap::new();
    for p in &snap.pooled {
        let c = &p.conn;
        lines.push(format!(
            "pooled source={} ehlo={} mx={} tls={} cipher={} age={} idle={} uses={} messages={} last_mta={}",
            p.key.source,
            p.key.ehlo,
            p.key.mx,
            c.tls_version.as_deref().unwrap_or("none"),
            c.tls_cipher.as_deref().unwrap_or("none"),
            secs(c.age),
            secs(c.idle),
            c.uses,
            c.messages,
            c.last_mta.map_or("-".to_string(), |a| a.to_string()),
        ));
        *per_key
            .entry(format!("{}/{}/{}", p.key.source, p.key.ehlo, p.key.mx))
            .or_insert(0usize) += 1;
    }
    if let Some(sh) = &snap.shared {
        let groups: Vec<String> = sh
            .groups
            .iter()
            .map(|g| {
                format!(
                    "{}:held={},max={},share={},waiting={}",
                    g.group,
                    g.held,
                    g.max_connections.map_or("-".into(), |m| m.to_string()),
                    g.share.map_or("-".into(), |m| m.to_string()),
                    g.waiting
                )
            })
            .collect();
        lines.push(format!(
            "shared host={} state={} live_hosts={} groups={}",
            sh.host,
            sh.state,
            sh.live_hosts,
            groups.join(",")
        ));
    }
    let mut summary = String::from("summary");
    for f in &snap.figures {
        let _ = write!(summary, " {}={}", f.name, f.value);
    }
    if !per_key.is_empty() {
        summary.push_str(" per_key=");
        let parts: Vec<String> = per_key.iter().map(|(k, n)| format!("{k}:{n}")).collect();
        let _ = write!(summary, "{}", parts.join(","));
    }
    let failed: Vec<String> = snap
        .failures
        .iter()
        .filter(|(_, n)| *n > 0)
        .map(|(f, n)| format!("{}:{}:{n}", f.code().tag, f.code().reply))
        .collect();
    if !failed.is_empty() {
        let _ = write!(summary, " failures={}", failed.join(","));
    }
    // TLS reporting (RFC 8460) since start: successes per policy type, failures per result
    // type (the metrics' series; per domain in the status view and the report files).
    let rpt = &snap.tls_rpt;
    let ok: Vec<String> = rpt
        .successes
        .iter()
        .filter(|(_, n)| *n > 0)
        .map(|(p, n)| format!("{}:{n}", p.as_str()))
        .collect();
    if !ok.is_empty() {
        let _ = write!(summary, " tls_rpt_successes={}", ok.join(","));
    }
    let bad: Vec<String> = rpt
        .failures
        .iter()
        .filter(|(_, n)| *n > 0)
        .map(|(r, n)| format!("{}:{n}", r.as_str()))
        .collect();
    if !bad.is_empty() {
        let _ = write!(summary, " tls_rpt_failures={}", bad.join(","));
    }
    lines.push(summary);
    lines
}

/// Log the report (SIGUSR1).
pub fn log_report(snap: &Snapshot) {
    for line in report_lines(snap) {
        info!("report {line}");
    }
}
