//! What the server hands to the report, the status view, the metrics and the control socket:
//! snapshots of its state and the actions the control socket may ask ([`Controlled`]), so that
//! none of them imports the server. Also the pool housekeeping that reload and shutdown
//! trigger.

use super::Server;
use crate::control::Controlled;
use crate::drain::Drains;
use crate::pool::reaper::{quit_all, quit_detached};
use crate::report::{figures, Snapshot, SnapshotSource};
use log::info;
use std::time::{Instant, SystemTime};

impl Server {
    /// Copy the server's state now: the pool under its lock, the caps ledger, the counters,
    /// the drains (everything made from it is made outside any lock).
    pub fn snapshot(&self) -> Snapshot {
        let now = Instant::now();
        let shared = &self.shared;
        let (pooled, counters) = shared.pool().snapshot(now);
        let config = shared.config_state();
        let stats = shared.stats().snapshot();
        let process = crate::procstat::read();
        Snapshot {
            figures: figures(
                &counters,
                &self.worker_counts(),
                &stats,
                &config,
                process.as_ref(),
            ),
            pooled,
            in_use: shared.caps().in_use_by_key(),
            rows: shared.caps().rows(now),
            waits: shared.caps().wait_stats(),
            shared: shared.caps().shared_status(),
            failures: stats.failures,
            tls_rpt: shared
                .tls_policies()
                .snapshot(stats.tls_rpt_failures, stats.tls_rpt_successes),
            drains: shared.drains().list(),
            config,
            now: SystemTime::now(),
        }
    }

    /// After a reload: take out the pooled connections whose source address is no longer
    /// permitted (the caller QUITs them, off the signal thread).
    pub fn take_unpermitted_idle(&self) -> Vec<crate::caps::Capped> {
        let rt = self.shared.runtime();
        // Keep a connection while any client may still use its source address.
        let c = &rt.config;
        let gone = self.shared.pool().take_keys_where(|k| {
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
    pub fn close_all_idle(&self) {
        let idle = self.shared.pool().take_all();
        if !idle.is_empty() {
            info!("stopping: closing {} pooled connection(s)", idle.len());
        }
        quit_all(idle);
    }
}

impl SnapshotSource for Server {
    fn snapshot(&self) -> Snapshot {
        Server::snapshot(self)
    }
}

impl Controlled for Server {
    fn drains(&self) -> &Drains {
        self.shared.drains()
    }

    fn close_drained_idle(&self) -> usize {
        // Taken under the pool lock, QUIT and closed off it (and off this thread).
        let drained = self.shared.drains().copy();
        let idle = self.shared.pool().take_keys_where(|k| !drained.matches(k));
        let closed = idle.len();
        quit_detached(idle);
        closed
    }
}
