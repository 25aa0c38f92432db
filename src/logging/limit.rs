//! Rate limiting of repeated warnings from unauthenticated peers (sans-I/O).
//!
//! A warning is identified by the peer's IP address and its kind (`auth_failed`,
//! `mta_tls_failed`, ...). Each identity may log [`Limiter::burst`] times per window; what is
//! over is counted, and the next warning let through says how many were suppressed. Memory is
//! bounded: at most `capacity` identities are tracked; when the table is full, entries whose
//! window has ended are dropped (their unreported counts carried to the next warning let
//! through), and warnings from further addresses share one bucket (a flood from many
//! addresses is limited as one).

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// The window of the proxy's limiter.
pub const WINDOW: Duration = Duration::from_secs(60);
/// Warnings of one kind from one address let through per window.
pub const BURST: u32 = 10;
/// Addresses tracked at most.
pub const CAPACITY: usize = 4096;

/// What to do with a warning.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Log it, saying how many like it (same address and kind, or any address when
    /// `shared_bucket`) were suppressed since the last one let through, and how many
    /// suppressed warnings of expired entries were not reported yet.
    Log {
        suppressed: u64,
        unreported: u64,
        shared_bucket: bool,
    },
    /// Count it, do not log it.
    Suppress,
}

impl Verdict {
    /// The text appended to a warning let through: empty when nothing was suppressed.
    pub fn note(&self) -> String {
        let Verdict::Log {
            suppressed,
            unreported,
            shared_bucket,
        } = *self
        else {
            return String::new();
        };
        let mut note = String::new();
        if suppressed > 0 {
            note.push_str(&format!(
                " ({suppressed} similar warning(s) {} suppressed)",
                if shared_bucket {
                    "from other addresses"
                } else {
                    "from this address"
                }
            ));
        }
        if unreported > 0 {
            note.push_str(&format!(
                " ({unreported} earlier warning(s) from other addresses suppressed)"
            ));
        }
        note
    }
}

#[derive(Clone, Copy, Debug)]
struct Bucket {
    start: Instant,
    logged: u32,
    suppressed: u64,
}

impl Bucket {
    fn new(now: Instant) -> Bucket {
        Bucket {
            start: now,
            logged: 0,
            suppressed: 0,
        }
    }

    fn check(&mut self, now: Instant, window: Duration, burst: u32) -> Option<u64> {
        if now.saturating_duration_since(self.start) >= window {
            self.start = now;
            self.logged = 0;
        }
        if self.logged < burst {
            self.logged += 1;
            Some(std::mem::take(&mut self.suppressed))
        } else {
            self.suppressed += 1;
            None
        }
    }
}

/// The limiter: a bounded table of buckets keyed by (address, kind).
#[derive(Debug)]
pub struct Limiter {
    window: Duration,
    burst: u32,
    capacity: usize,
    buckets: HashMap<(IpAddr, &'static str), Bucket>,
    /// The bucket of every address beyond `capacity`.
    shared: Option<Bucket>,
    /// Suppressed warnings of buckets dropped before they could be reported.
    unreported: u64,
}

impl Limiter {
    pub fn new(window: Duration, burst: u32, capacity: usize) -> Limiter {
        Limiter {
            window,
            burst,
            capacity,
            buckets: HashMap::new(),
            shared: None,
            unreported: 0,
        }
    }

    /// The limiter the daemon uses: [`WINDOW`], [`BURST`], [`CAPACITY`].
    pub fn standard() -> Limiter {
        Limiter::new(WINDOW, BURST, CAPACITY)
    }

    /// Addresses (with kinds) tracked now.
    pub fn tracked(&self) -> usize {
        self.buckets.len()
    }

    /// Whether a warning of `kind` from `ip` at `now` is logged.
    pub fn check(&mut self, ip: IpAddr, kind: &'static str, now: Instant) -> Verdict {
        let (window, burst) = (self.window, self.burst);
        let key = (ip, kind);
        if !self.buckets.contains_key(&key) && self.buckets.len() >= self.capacity {
            self.drop_expired(now);
        }
        let shared_bucket = !self.buckets.contains_key(&key) && self.buckets.len() >= self.capacity;
        let bucket = if shared_bucket {
            self.shared.get_or_insert_with(|| Bucket::new(now))
        } else {
            self.buckets.entry(key).or_insert_with(|| Bucket::new(now))
        };
        match bucket.check(now, window, burst) {
            Some(suppressed) => Verdict::Log {
                suppressed,
                unreported: std::mem::take(&mut self.unreported),
                shared_bucket,
            },
            None => Verdict::Suppress,
        }
    }

    fn drop_expired(&mut self, now: Instant) {
        let window = self.window;
        let mut unreported = 0;
        self.buckets.retain(|_, b| {
            let keep = now.saturating_duration_since(b.start) < window;
            if !keep {
                unreported += b.suppressed;
            }
            keep
        });
        self.unreported += unreported;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn logged(v: Verdict) -> Option<u64> {
        match v {
            Verdict::Log { suppressed, .. } => Some(suppressed),
            Verdict::Suppress => None,
        }
    }

    #[test]
    fn a_burst_passes_then_the_rest_is_counted_and_reported_next_window() {
        let t0 = Instant::now();
        let mut l = Limiter::new(Duration::from_secs(60), 3, 16);
        let a = ip("192.0.2.7");
        for _ in 0..3 {
            assert_eq!(logged(l.check(a, "auth_failed", t0)), Some(0));
        }
        for _ in 0..5 {
            assert_eq!(l.check(a, "auth_failed", t0), Verdict::Suppress);
        }
        // Another kind, another address: their own buckets.
        assert_eq!(logged(l.check(a, "mta_tls_failed", t0)), Some(0));
        assert_eq!(logged(l.check(ip("192.0.2.8"), "auth_failed", t0)), Some(0));
        // Still within the window.
        let t1 = t0 + Duration::from_secs(59);
        assert_eq!(l.check(a, "auth_failed", t1), Verdict::Suppress);
        // The next window lets one through and says how many were suppressed.
        let t2 = t0 + Duration::from_secs(60);
        let v = l.check(a, "auth_failed", t2);
        assert_eq!(logged(v), Some(6));
        assert_eq!(
            v.note(),
            " (6 similar warning(s) from this address suppressed)"
        );
        assert_eq!(logged(l.check(a, "auth_failed", t2)), Some(0));
    }

    #[test]
    fn memory_is_bounded_and_further_addresses_share_one_bucket() {
        let t0 = Instant::now();
        let mut l = Limiter::new(Duration::from_secs(60), 1, 4);
        for i in 0..4 {
            assert_eq!(
                logged(l.check(ip(&format!("10.0.0.{i}")), "k", t0)),
                Some(0)
            );
        }
        // Full: a fifth address goes to the shared bucket, which lets one through per window.
        let v = l.check(ip("10.0.0.100"), "k", t0);
        assert!(
            matches!(
                v,
                Verdict::Log {
                    shared_bucket: true,
                    ..
                }
            ),
            "{v:?}"
        );
        for i in 101..200 {
            assert_eq!(
                l.check(ip(&format!("10.0.0.{i}")), "k", t0),
                Verdict::Suppress
            );
        }
        assert_eq!(l.tracked(), 4);
        // Known addresses keep their own buckets.
        assert_eq!(l.check(ip("10.0.0.1"), "k", t0), Verdict::Suppress);
        // After the window, expired entries make room; the shared bucket's count is reported
        // by the next warning let through from it.
        let t1 = t0 + Duration::from_secs(61);
        let v = l.check(ip("10.0.0.250"), "k", t1);
        assert_eq!(
            v,
            Verdict::Log {
                suppressed: 0,
                unreported: 1,
                shared_bucket: false
            }
        );
        assert!(v.note().contains("1 earlier warning(s)"), "{}", v.note());
        assert_eq!(l.tracked(), 1);
    }

    #[test]
    fn the_shared_bucket_reports_its_suppressed_count() {
        let t0 = Instant::now();
        let mut l = Limiter::new(Duration::from_secs(60), 1, 1);
        assert_eq!(logged(l.check(ip("10.0.0.1"), "k", t0)), Some(0));
        assert_eq!(logged(l.check(ip("10.0.0.2"), "k", t0)), Some(0));
        assert_eq!(l.check(ip("10.0.0.3"), "k", t0), Verdict::Suppress);
        assert_eq!(l.check(ip("10.0.0.4"), "k", t0), Verdict::Suppress);
        // 10.0.0.1 still holds the only slot within the window.
        let t1 = t0 + Duration::from_secs(30);
        let v = l.check(ip("10.0.0.5"), "k", t1);
        assert_eq!(v, Verdict::Suppress);
        let t2 = t0 + Duration::from_secs(60);
        // The slot expired: 10.0.0.6 takes it.
        assert!(matches!(
            l.check(ip("10.0.0.6"), "k", t2),
            Verdict::Log {
                shared_bucket: false,
                ..
            }
        ));
        let v = l.check(ip("10.0.0.7"), "k", t2);
        assert_eq!(
            v,
            Verdict::Log {
                suppressed: 3,
                unreported: 0,
                shared_bucket: true
            }
        );
        assert!(v
            .note()
            .contains("3 similar warning(s) from other addresses"));
    }
}
