//! Wait counters and the wait-time histogram.

use std::time::Duration;

/// Upper bounds of the wait-time histogram, in seconds (then +Inf).
pub const BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// Waits since start.
#[derive(Clone, Debug, Default)]
pub struct WaitStats {
    /// Requests queued.
    pub waited: u64,
    /// Waits that expired.
    pub timed_out: u64,
    /// Ended waits per bucket (not cumulative; the last one is +Inf).
    counts: [u64; 14],
    sum: f64,
}

impl WaitStats {
    /// A wait ended after `waited` (`expired`: without a connection).
    pub fn record(&mut self, waited: Duration, expired: bool) {
        if expired {
            self.timed_out += 1;
        }
        let s = waited.as_secs_f64();
        self.sum += s;
        let i = BUCKETS
            .iter()
            .position(|&b| s <= b)
            .unwrap_or(BUCKETS.len());
        if let Some(c) = self.counts.get_mut(i) {
            *c += 1;
        }
    }

    /// Sum of all wait times, in seconds.
    pub fn sum_seconds(&self) -> f64 {
        self.sum
    }

    /// The histogram as (upper bound in seconds, cumulative count), ascending, as Prometheus
    /// wants it; the last bound is `f64::INFINITY`.
    pub fn cumulative(&self) -> Vec<(f64, u64)> {
        let mut acc = 0;
        BUCKETS
            .iter()
            .copied()
            .chain(std::iter::once(f64::INFINITY))
            .zip(self.counts.iter())
            .map(|(b, &c)| {
                acc += c;
                (b, acc)
            })
            .collect()
    }
}
