//! A point in time by which something must be done, and the arithmetic on it: the time left,
//! whether it has passed, a phase's timeout cut short by it. No I/O; every computation has a
//! form that takes the current time (`*_at(now)`, tested with given times) and one that
//! reads the clock.

use std::time::{Duration, Instant};

/// When something must be done by. Ordered: the earlier of two is `a.min(b)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Deadline(Instant);

/// Far enough to stand for "never" when `now + timeout` overflows (a 100-year timeout).
const FAR: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

impl Deadline {
    /// The deadline at `when`.
    pub fn at(when: Instant) -> Deadline {
        Deadline(when)
    }

    /// `timeout` from now.
    pub fn after(timeout: Duration) -> Deadline {
        Deadline::after_at(Instant::now(), timeout)
    }

    /// `timeout` from `now` (saturating: a timeout too large for the clock is "far away").
    pub fn after_at(now: Instant, timeout: Duration) -> Deadline {
        Deadline(
            now.checked_add(timeout)
                .or_else(|| now.checked_add(FAR))
                .unwrap_or(now),
        )
    }

    /// The instant.
    pub fn instant(self) -> Instant {
        self.0
    }

    /// The time left (zero once passed).
    pub fn remaining(self) -> Duration {
        self.remaining_at(Instant::now())
    }

    /// The time left at `now` (zero once passed).
    pub fn remaining_at(self, now: Instant) -> Duration {
        self.0.saturating_duration_since(now)
    }

    /// The time left, or `None` once the deadline has passed: what a socket timeout is set
    /// to (a zero timeout is refused by the socket calls).
    pub fn left(self) -> Option<Duration> {
        self.left_at(Instant::now())
    }

    /// [`Deadline::left`] at `now`.
    pub fn left_at(self, now: Instant) -> Option<Duration> {
        Some(self.remaining_at(now)).filter(|d| !d.is_zero())
    }

    /// Whether the deadline has passed.
    pub fn has_passed(self) -> bool {
        self.has_passed_at(Instant::now())
    }

    /// Whether the deadline has passed at `now`.
    pub fn has_passed_at(self, now: Instant) -> bool {
        self.left_at(now).is_none()
    }

    /// The earlier of this deadline and `timeout` from now: a phase's deadline within a
    /// session's.
    pub fn within(self, timeout: Duration) -> Deadline {
        self.within_at(Instant::now(), timeout)
    }

    /// [`Deadline::within`] at `now`.
    pub fn within_at(self, now: Instant, timeout: Duration) -> Deadline {
        self.min(Deadline::after_at(now, timeout))
    }

    /// `timeout`, cut short by this deadline, and never zero (an expired deadline leaves a
    /// millisecond: the socket calls refuse a zero timeout, and the operation then fails on
    /// its own time-out).
    pub fn cap(self, timeout: Duration) -> Duration {
        self.cap_at(Instant::now(), timeout)
    }

    /// [`Deadline::cap`] at `now`.
    pub fn cap_at(self, now: Instant, timeout: Duration) -> Duration {
        timeout
            .min(self.remaining_at(now))
            .max(Duration::from_millis(1))
    }
}

/// `d` rounded up to a whole millisecond: a socket or poll timeout in milliseconds that
/// ends no sooner than `d` (so the expiry check after the wake-up sees the deadline passed).
pub fn ceil_millis(d: Duration) -> Duration {
    let ms = u64::try_from(d.as_nanos().div_ceil(1_000_000)).unwrap_or(u64::MAX);
    Duration::from_millis(ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn time_left_counts_down_to_zero_and_then_none() {
        let t0 = Instant::now();
        let d = Deadline::after_at(t0, 10 * S);
        assert_eq!(d.instant(), t0 + 10 * S);
        assert_eq!(d.remaining_at(t0 + 4 * S), 6 * S);
        assert_eq!(d.left_at(t0 + 4 * S), Some(6 * S));
        assert!(!d.has_passed_at(t0 + 4 * S));
        // At the instant itself nothing is left: passed.
        assert_eq!(d.remaining_at(t0 + 10 * S), Duration::ZERO);
        assert_eq!(d.left_at(t0 + 10 * S), None);
        assert!(d.has_passed_at(t0 + 10 * S));
        assert_eq!(d.remaining_at(t0 + 11 * S), Duration::ZERO);
        assert!(d.has_passed_at(t0 + 11 * S));
    }

    #[test]
    fn within_takes_the_earlier() {
        let t0 = Instant::now();
        let session = Deadline::after_at(t0, 10 * S);
        assert_eq!(session.within_at(t0, 3 * S), Deadline::after_at(t0, 3 * S));
        assert_eq!(session.within_at(t0 + 8 * S, 3 * S), session);
        assert_eq!(session.min(Deadline::at(t0 + S)), Deadline::at(t0 + S));
    }

    #[test]
    fn cap_cuts_a_timeout_short_and_never_to_zero() {
        let t0 = Instant::now();
        let d = Deadline::after_at(t0, 10 * S);
        assert_eq!(d.cap_at(t0, 3 * S), 3 * S);
        assert_eq!(d.cap_at(t0 + 8 * S, 3 * S), 2 * S);
        assert_eq!(d.cap_at(t0 + 20 * S, 3 * S), Duration::from_millis(1));
    }

    #[test]
    fn ceil_millis_rounds_up_to_whole_milliseconds() {
        assert_eq!(ceil_millis(Duration::ZERO), Duration::ZERO);
        assert_eq!(
            ceil_millis(Duration::from_nanos(1)),
            Duration::from_millis(1)
        );
        assert_eq!(
            ceil_millis(Duration::from_micros(1500)),
            Duration::from_millis(2)
        );
        assert_eq!(
            ceil_millis(Duration::from_millis(7)),
            Duration::from_millis(7)
        );
    }

    #[test]
    fn a_huge_timeout_saturates_instead_of_panicking() {
        let t0 = Instant::now();
        let d = Deadline::after_at(t0, Duration::MAX);
        assert!(d.instant() > t0);
        assert!(!d.has_passed_at(t0 + 1000 * S));
    }
}
