//! The guard around one session job: a panic in a session is caught on its worker thread,
//! logged with the session's fields, counted, and the worker goes on to its next job (so the
//! slot is not lost and a drain does not wait for a thread that no longer exists).

use crate::shared::Stats;
use log::error;
use std::net::SocketAddr;
use std::panic::{catch_unwind, AssertUnwindSafe};

/// Run `job`, the session of the MTA at `peer`, catching a panic: logged at error level with
/// `mta=<peer>` and counted (`Stats::session_panicked`). What the job owned (its sockets, its
/// per-address slot) is dropped by the unwinding, so the MTA's connection is closed.
pub fn run_session(stats: &Stats, peer: SocketAddr, job: impl FnOnce()) {
    // Unwind safety: the job's state dies with it; shared state is behind locks and atomics
    // that a panic cannot leave half-updated (parking_lot locks are released on unwind).
    if let Err(payload) = catch_unwind(AssertUnwindSafe(job)) {
        stats.session_panicked();
        let what = payload
            .downcast_ref::<&str>()
            .copied()
            .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
            .unwrap_or("(no message)");
        error!(mta:% = peer; "session panicked, connection closed: {what}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_is_caught_and_counted_and_a_normal_job_is_not() {
        let stats = Stats::default();
        let peer: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let mut ran = false;
        run_session(&stats, peer, || ran = true);
        assert!(ran);
        assert_eq!(stats.snapshot().panics, 0);
        run_session(&stats, peer, || panic!("boom"));
        run_session(&stats, peer, || panic!("{}", String::from("boom")));
        assert_eq!(stats.snapshot().panics, 2);
    }
}
