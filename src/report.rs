//! The SIGUSR1 report, and the pool housekeeping that reload and shutdown trigger.
//!
//! The report copies what it needs under the pool lock ([`crate::pool::Pool::snapshot`]) and
//! formats outside it, so it never stalls traffic. Its lines are stable `key=value` text:
//!
//! ```text
//! pooled source=127.0.0.2 ehlo=mta.test mx=127.0.0.1:2525 tls=TLSv1.3 cipher=TLS13_AES_256_GCM_SHA384 age=12.3s idle=1.2s uses=2 messages=5 last_mta=127.0.0.1:40100
//! summary pooled=1 keys=1 pool_hits=1 pool_misses=3 pool_stored=2 sessions_active=0 ...
//! ```

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
    let s = &server.shared.stats;
    let w = server.worker_counts();
    let mut summary = format!(
        "summary pooled={} keys={} pool_hits={} pool_misses={} pool_stored={} sessions_active={} sessions_queued={} threads={} sessions_total={} connects={} connect_failures={} messages={} refused_allow_from={} refused_busy={} refused_per_ip={} session_panics={} frontend_sessions={} passthrough_octets_to_mx={} passthrough_octets_to_mta={}",
        counters.idle,
        counters.keys,
        counters.hits,
        counters.misses,
        counters.stored,
        w.busy,
        w.queued,
        w.threads,
        s.sessions.load(Ordering::Relaxed),
        s.connects.load(Ordering::Relaxed),
        s.connect_failures.load(Ordering::Relaxed),
        s.messages.load(Ordering::Relaxed),
        s.refused_allow_from.load(Ordering::Relaxed),
        s.refused_busy.load(Ordering::Relaxed),
        s.refused_per_ip.load(Ordering::Relaxed),
        s.panics.load(Ordering::Relaxed),
        s.frontend_sessions.load(Ordering::Relaxed),
        s.passthrough_bytes_to_mx.load(Ordering::Relaxed),
        s.passthrough_bytes_to_mta.load(Ordering::Relaxed),
    );
    if !per_key.is_empty() {
        summary.push_str(" per_key=");
        let parts: Vec<String> = per_key.iter().map(|(k, n)| format!("{k}:{n}")).collect();
        let _ = write!(summary, "{}", parts.join(","));
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
