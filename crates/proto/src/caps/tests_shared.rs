//! The shared caps' book: queue order, fallback shares, rejoining, rates.

use super::shared::*;
use std::time::{Duration, Instant};

const LEASE: Duration = Duration::from_secs(30);
const WINDOW: Duration = Duration::from_secs(60);

fn book(cap: usize, rate: Option<usize>, now: Instant) -> SharedBook {
    let _ = now;
    let mut b = SharedBook::new("h1", "abc", LEASE, WINDOW);
    b.configure(
        [(
            "g".to_string(),
            SharedLimits {
                max_connections: Some(cap),
                max_new_connections: rate,
            },
        )],
        WINDOW,
    );
    b
}

#[test]
fn only_the_first_in_line_asks_redis_and_a_grant_moves_the_line() {
    let now = Instant::now();
    let mut b = book(4, None, now);
    assert_eq!(b.health(), Health::Starting);
    assert_eq!(
        b.redis_ok(3, Some(b.mark()), now),
        Some(Transition::ToShared)
    );
    assert_eq!(b.redis_ok(3, None, now + LEASE), None);
    let (t1, t2) = (b.join("g"), b.join("g"));
    assert_eq!(b.step("g", t2, now), Step::Wait);
    let Step::AskRedis { lease, member } = b.step("g", t1, now) else {
        panic!("the first asks")
    };
    assert!(member.starts_with("h1|abc-"), "{member}");
    // Refused: still first.
    b.answer("g", t1, lease, false);
    assert_eq!(b.step("g", t2, now), Step::Wait);
    let Step::AskRedis { lease, .. } = b.step("g", t1, now) else {
        panic!()
    };
    b.answer("g", t1, lease, true);
    assert!(matches!(b.step("g", t2, now), Step::AskRedis { .. }));
    assert_eq!(b.view()[0].held, 1);
    // Given back while Redis decides: gone, even with t2 waiting here (every host's first in
    // line gets the same chance at it).
    assert_eq!(b.release("g", lease), Released::Gone(b.member(lease)));
    assert_eq!(b.release("g", lease), Released::NotHeld);
    assert!(matches!(b.step("g", t2, now), Step::AskRedis { .. }));
}

#[test]
fn fallback_grants_the_floor_share_and_never_less_than_one() {
    let now = Instant::now();
    let mut b = book(4, None, now);
    b.redis_ok(3, Some(b.mark()), now);
    assert_eq!(b.redis_failed(now), Some(Transition::ToFallback));
    assert_eq!(b.redis_failed(now), None, "one transition, one warning");
    assert_eq!(b.share(4), 1);
    let t = b.join("g");
    let Step::Granted(l) = b.step("g", t, now) else {
        panic!()
    };
    let t2 = b.join("g");
    assert_eq!(
        b.step("g", t2, now),
        Step::Wait,
        "share of 4 over 3 hosts is 1"
    );
    b.release("g", l);
    assert!(matches!(b.step("g", t2, now), Step::Granted(_)));
    b.redis_ok(8, None, now);
    assert_eq!(
        b.health().name(),
        "fallback",
        "not back before re-registering"
    );
    assert_eq!(b.share(4), 1, "at least one");
    b.redis_ok(2, None, now);
    assert_eq!(b.share(5), 2, "floor");
}

#[test]
fn rejoining_needs_both_the_share_and_redis_then_shared_after_one_lease_time() {
    let now = Instant::now();
    let mut b = book(4, None, now);
    b.redis_ok(2, Some(b.mark()), now);
    b.redis_failed(now);
    let leases: Vec<_> = (0..2)
        .map(|_| {
            let t = b.join("g");
            match b.step("g", t, now) {
                Step::Granted(l) => l,
                s => panic!("{s:?}"),
            }
        })
        .collect();
    let members = b.held_members();
    assert_eq!(members[0].1.len(), 2, "re-registered on return");
    assert_eq!(
        b.redis_ok(2, Some(b.mark()), now),
        Some(Transition::ToRejoining)
    );
    let t = b.join("g");
    assert_eq!(
        b.step("g", t, now),
        Step::Wait,
        "share used up while rejoining"
    );
    // Given back within the share: handed to the waiter.
    assert_eq!(b.release("g", leases[0]), Released::Handed);
    assert_eq!(b.step("g", t, now), Step::Granted(leases[0]));
    let t = b.join("g");
    assert_eq!(b.release("g", leases[1]), Released::Handed);
    let Step::Granted(l) = b.step("g", t, now) else {
        panic!()
    };
    assert_eq!(l, leases[1]);
    // Nobody waits: gone; a newcomer asks Redis (within the share).
    assert!(matches!(b.release("g", l), Released::Gone(_)));
    let t = b.join("g");
    assert!(matches!(b.step("g", t, now), Step::AskRedis { .. }));
    assert_eq!(b.redis_ok(2, None, now + LEASE), Some(Transition::ToShared));
}

#[test]
fn the_rate_asks_redis_when_shared_and_counts_a_share_in_fallback() {
    let now = Instant::now();
    let mut b = book(4, Some(6), now);
    b.redis_ok(3, Some(b.mark()), now);
    assert_eq!(b.rate("g", now), RateStep::AskRedis);
    assert_eq!(b.rate("other", now), RateStep::Go);
    b.redis_failed(now);
    assert_eq!(b.rate("g", now), RateStep::Go);
    assert_eq!(b.rate("g", now), RateStep::Go);
    assert_eq!(b.rate("g", now), RateStep::WaitUntil(now + WINDOW));
    assert_eq!(b.rate("g", now + WINDOW), RateStep::Go);
}

#[test]
fn holders_are_counted_per_host() {
    let m: Vec<String> = ["b|x-1", "a|y-2", "b|x-3"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(
        holders(&m),
        vec![("a".to_string(), 1), ("b".to_string(), 2)]
    );
}

#[test]
fn starting_asks_redis_and_a_failure_before_any_answer_falls_back_to_the_whole_cap() {
    let now = Instant::now();
    let mut b = book(4, None, now);
    let t = b.join("g");
    assert!(matches!(b.step("g", t, now), Step::AskRedis { .. }));
    assert_eq!(b.redis_failed(now), Some(Transition::ToFallback));
    // Never counted the hosts: one live host, the whole cap (the documented slack).
    assert_eq!(b.share(4), 4);
}

#[test]
fn a_lease_granted_after_the_mark_keeps_the_host_in_fallback() {
    let now = Instant::now();
    let mut b = book(4, None, now);
    b.redis_ok(2, Some(b.mark()), now);
    b.redis_failed(now);
    let mark = b.mark();
    let t = b.join("g");
    assert!(matches!(b.step("g", t, now), Step::Granted(_)));
    // The round re-registered what it saw at `mark`: the new lease is not in Redis yet.
    assert_eq!(b.redis_ok(2, Some(mark), now), None);
    assert_eq!(b.health().name(), "fallback");
    assert_eq!(
        b.redis_ok(2, Some(b.mark()), now),
        Some(Transition::ToRejoining)
    );
}

#[test]
fn a_lease_handed_to_a_waiter_that_redis_also_served_or_that_left_is_given_back() {
    let now = Instant::now();
    let mut b = book(2, None, now);
    b.redis_ok(1, Some(b.mark()), now);
    b.redis_failed(now);
    assert_eq!(
        b.redis_ok(1, Some(b.mark()), now),
        Some(Transition::ToRejoining)
    );
    let (t1, t2) = (b.join("g"), b.join("g"));
    let Step::AskRedis { lease: l1, .. } = b.step("g", t1, now) else {
        panic!()
    };
    assert_eq!(b.answer("g", t1, l1, true), Released::NotHeld);
    // t2 is mid-ask when l1 comes back: handed to t2; then Redis grants t2 too.
    let Step::AskRedis { lease: l2, .. } = b.step("g", t2, now) else {
        panic!()
    };
    assert_eq!(b.release("g", l1), Released::Handed);
    assert_eq!(b.answer("g", t2, l2, true), Released::Gone(b.member(l1)));
    assert_eq!(b.view()[0].held, 1);
    assert_eq!(b.view()[0].waiting, 0);
    // A waiter that leaves with a lease handed to it gives it back.
    let t3 = b.join("g");
    assert_eq!(b.release("g", l2), Released::Handed);
    assert_eq!(b.leave("g", t3), Released::Gone(b.member(l2)));
    assert_eq!(b.view()[0].held, 0);
}

#[test]
fn in_fallback_a_lease_is_not_handed_on_above_the_share() {
    let now = Instant::now();
    let mut b = book(4, None, now);
    b.redis_ok(1, Some(b.mark()), now);
    let leases: Vec<_> = (0..4)
        .map(|_| {
            let t = b.join("g");
            let Step::AskRedis { lease, .. } = b.step("g", t, now) else {
                panic!()
            };
            b.answer("g", t, lease, true);
            lease
        })
        .collect();
    // Two hosts now: share 2, four held.
    b.redis_ok(2, None, now);
    b.redis_failed(now);
    let t = b.join("g");
    assert!(matches!(b.release("g", leases[0]), Released::Gone(_)));
    assert!(matches!(b.release("g", leases[1]), Released::Gone(_)));
    assert_eq!(b.step("g", t, now), Step::Wait, "2 held, share 2");
    assert_eq!(b.release("g", leases[2]), Released::Handed);
    assert_eq!(b.step("g", t, now), Step::Granted(leases[2]));
}
