//! The ledger's decisions, without sockets.

use super::{
    Acquire, Ask, Block, CapDestination, CapLimits, Ledger, Offer, Pair, PairCaps, Reuse, Scope,
};
use crate::protocol::{PoolKey, TlsWant};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

const MX: &str = "192.0.2.25:25";

fn caps(max: Option<usize>, rate: Option<usize>, per_source: Option<usize>) -> PairCaps {
    PairCaps {
        destination: CapDestination::Mx(MX.parse().unwrap()),
        limits: CapLimits {
            max_connections: max,
            max_new_connections: rate,
        },
        max_connections_per_source: per_source,
    }
}

fn ask_to(source: &str, ehlo: &str, mx: &str, c: &PairCaps, reuse: bool) -> Ask {
    let source: IpAddr = source.parse().unwrap();
    let mx: SocketAddr = mx.parse().unwrap();
    Ask {
        pair: Pair {
            source,
            destination: CapDestination::Mx(mx),
        },
        key: PoolKey::new(source, ehlo, mx),
        mx,
        caps: PairCaps {
            destination: CapDestination::Mx(mx),
            ..c.clone()
        },
        reuse: reuse.then_some(Reuse {
            want: TlsWant::Any,
            max_messages: None,
        }),
    }
}

fn ask(ehlo: &str, c: &PairCaps) -> Ask {
    ask_to("198.51.100.1", ehlo, MX, c, true)
}

fn window() -> Ledger<&'static str> {
    Ledger::new(Duration::from_secs(60))
}

#[test]
fn grants_up_to_the_cap_then_queues_in_order() {
    let c = caps(Some(2), None, None);
    let mut l = window();
    let t = Instant::now();
    assert_eq!(l.acquire(ask("a", &c), t, true, "1"), Acquire::Granted);
    assert_eq!(l.acquire(ask("a", &c), t, true, "2"), Acquire::Granted);
    let q3 = l.acquire(ask("a", &c), t, true, "3");
    let q4 = l.acquire(ask("b", &c), t, true, "4");
    assert!(
        matches!(
            q3,
            Acquire::Queued {
                block: Block::Pair,
                wake: None,
                ..
            }
        ),
        "{q3:?}"
    );
    assert!(matches!(q4, Acquire::Queued { .. }));
    let a = ask("a", &c);
    // A connection comes back: the oldest waiter of its key gets it directly.
    match l.offer(&a.pair, &a.key, |_| true, t) {
        Offer::Hand(tok, _) => assert_eq!(tok, "3"),
        o => panic!("{o:?}"),
    }
    // A connection closes: the next waiter (another key) may dial.
    let served = l.release_and_pump(&a.pair, &a.key, false, t);
    assert_eq!(served.len(), 1);
    assert_eq!(served[0].0, "4");
    assert_eq!(served[0].3, ask("b", &c).key);
    // Without wait: refused.
    assert_eq!(
        l.acquire(ask("a", &c), t, false, "5"),
        Acquire::Refused(Block::Pair)
    );
    let v = l.view();
    assert_eq!((v[0].open, v[0].idle, v[0].waiting), (2, 0, 0));
    assert_eq!(l.stats.waited, 2);
}

#[test]
fn a_newcomer_queues_behind_an_older_waiter() {
    let c = caps(Some(1), None, None);
    let mut l = window();
    let t = Instant::now();
    assert_eq!(l.acquire(ask("a", &c), t, true, "1"), Acquire::Granted);
    assert!(matches!(
        l.acquire(ask("b", &c), t, true, "2"),
        Acquire::Queued { .. }
    ));
    // The released place goes to waiter 2, and a newcomer does not jump the queue.
    let a = ask("a", &c);
    let served = l.release_and_pump(&a.pair, &a.key, false, t);
    assert_eq!(served.iter().map(|s| s.0).collect::<Vec<_>>(), vec!["2"]);
    assert!(matches!(
        l.acquire(ask("c", &c), t, true, "3"),
        Acquire::Queued { .. }
    ));
}

#[test]
fn idle_connections_of_another_key_are_evicted_and_their_place_transferred() {
    let c = caps(Some(2), None, None);
    let mut l = window();
    let t = Instant::now();
    let a = ask("a", &c);
    for tok in ["1", "2"] {
        assert_eq!(l.acquire(a.clone(), t, true, tok), Acquire::Granted);
        assert_eq!(l.offer(&a.pair, &a.key, |_| true, t), Offer::Pool);
    }
    assert_eq!(l.view()[0].idle, 2);
    let b = ask("b", &c);
    assert_eq!(
        l.acquire(b.clone(), t, true, "3"),
        Acquire::Evict(Scope::Pair)
    );
    assert!(l.transfer((&a.pair, &a.key), &b, t).is_ok());
    let v = l.view();
    assert_eq!((v[0].open, v[0].idle), (2, 1));
    let in_use = l.in_use_by_key();
    assert_eq!(in_use, vec![(b.key.clone(), 1)]);
}

#[test]
fn a_returning_connection_nobody_can_use_is_closed_for_an_older_waiter() {
    let c = caps(Some(1), None, None);
    let mut l = window();
    let t = Instant::now();
    let a = ask("a", &c);
    assert_eq!(l.acquire(a.clone(), t, true, "1"), Acquire::Granted);
    let b = ask("b", &c);
    assert!(matches!(
        l.acquire(b.clone(), t, true, "2"),
        Acquire::Queued { .. }
    ));
    match l.offer(&a.pair, &a.key, |_| true, t) {
        Offer::CloseFor(tok, _, pair, key) => {
            assert_eq!(tok, "2");
            assert_eq!((pair, key), (b.pair.clone(), b.key.clone()));
        }
        o => panic!("{o:?}"),
    }
    let v = l.view();
    assert_eq!((v[0].open, v[0].idle, v[0].waiting), (1, 0, 0));
}

#[test]
fn a_waiter_whose_tls_want_is_not_met_is_not_handed_the_connection() {
    let c = caps(Some(1), None, None);
    let mut l = window();
    let t = Instant::now();
    let a = ask("a", &c);
    assert_eq!(l.acquire(a.clone(), t, true, "1"), Acquire::Granted);
    let mut strict = a.clone();
    strict.reuse = Some(Reuse {
        want: TlsWant::Tls,
        max_messages: None,
    });
    assert!(matches!(
        l.acquire(strict, t, true, "2"),
        Acquire::Queued { .. }
    ));
    // The connection does not satisfy the waiter: it closes and the waiter dials instead.
    let o = l.offer(&a.pair, &a.key, |r| r.want == TlsWant::Any, t);
    assert!(matches!(o, Offer::CloseFor("2", ..)), "{o:?}");
}

#[test]
fn the_rate_window_blocks_then_frees() {
    let c = caps(None, Some(2), None);
    let mut l = window();
    let t = Instant::now();
    let a = ask("a", &c);
    assert_eq!(l.acquire(a.clone(), t, true, "1"), Acquire::Granted);
    assert_eq!(
        l.acquire(a.clone(), t + Duration::from_secs(10), true, "2"),
        Acquire::Granted
    );
    let q = l.acquire(a.clone(), t + Duration::from_secs(20), true, "3");
    let Acquire::Queued { id, wake, block } = q else {
        panic!("{q:?}")
    };
    assert_eq!(wake, Some(t + Duration::from_secs(60)));
    assert_eq!(block, Block::Rate(t + Duration::from_secs(60)));
    // Closing connections does not help the rate.
    assert!(l
        .release_and_pump(&a.pair, &a.key, false, t + Duration::from_secs(30))
        .is_empty());
    assert_eq!(
        l.wake_of(id, t + Duration::from_secs(30)),
        Some(t + Duration::from_secs(60))
    );
    // Once the first dial leaves the window, the waiter dials.
    let served = l.pump(t + Duration::from_secs(60));
    assert_eq!(served.iter().map(|s| s.0).collect::<Vec<_>>(), vec!["3"]);
}

#[test]
fn an_expired_wait_is_counted_and_leaves_the_queue() {
    let c = caps(Some(1), None, None);
    let mut l = window();
    let t = Instant::now();
    let a = ask("a", &c);
    assert_eq!(l.acquire(a.clone(), t, true, "1"), Acquire::Granted);
    let Acquire::Queued { id, .. } = l.acquire(a.clone(), t, true, "2") else {
        panic!()
    };
    assert_eq!(l.view()[0].waiting, 1);
    assert!(l.cancel(id, t + Duration::from_millis(300)));
    assert!(!l.cancel(id, t + Duration::from_millis(300)), "only once");
    assert_eq!(l.view()[0].waiting, 0);
    let s = &l.stats;
    assert_eq!((s.waited, s.timed_out), (1, 1));
    assert!((s.sum_seconds() - 0.3).abs() < 1e-9);
    let buckets = s.cumulative();
    assert_eq!(buckets.last().map(|b| b.1), Some(1));
    assert_eq!(buckets.iter().find(|b| b.0 == 0.25).map(|b| b.1), Some(0));
    assert_eq!(buckets.iter().find(|b| b.0 == 0.5).map(|b| b.1), Some(1));
}

#[test]
fn two_sources_have_their_own_caps_and_the_per_source_cap_spans_destinations() {
    let c = caps(Some(1), None, Some(2));
    let mut l = window();
    let t = Instant::now();
    let s1 = ask_to("198.51.100.1", "a", MX, &c, true);
    let s2 = ask_to("198.51.100.2", "a", MX, &c, true);
    assert_eq!(l.acquire(s1.clone(), t, true, "1"), Acquire::Granted);
    assert_eq!(l.acquire(s2.clone(), t, true, "2"), Acquire::Granted);
    let other = ask_to("198.51.100.1", "a", "192.0.2.26:25", &c, false);
    assert_eq!(l.acquire(other.clone(), t, true, "3"), Acquire::Granted);
    let third = ask_to("198.51.100.1", "a", "192.0.2.27:25", &c, false);
    assert_eq!(
        l.acquire(third.clone(), t, false, "4"),
        Acquire::Refused(Block::Source)
    );
    // An idle connection of the source (another destination) makes room.
    assert_eq!(l.offer(&other.pair, &other.key, |_| true, t), Offer::Pool);
    assert_eq!(
        l.acquire(third, t, true, "5"),
        Acquire::Evict(Scope::Source)
    );
}

#[test]
fn a_reload_that_raises_the_cap_lets_waiters_dial() {
    let c = caps(Some(1), None, None);
    let mut l = window();
    let t = Instant::now();
    let a = ask("a", &c);
    assert_eq!(l.acquire(a.clone(), t, true, "1"), Acquire::Granted);
    assert!(matches!(
        l.acquire(a.clone(), t, true, "2"),
        Acquire::Queued { .. }
    ));
    let served = l.reconfigure(Duration::from_secs(60), |_, _| caps(Some(2), None, None), t);
    assert_eq!(served.iter().map(|s| s.0).collect::<Vec<_>>(), vec!["2"]);
    // Lowered below what is open: nothing is closed, nothing new is granted.
    assert!(l
        .reconfigure(Duration::from_secs(60), |_, _| caps(Some(1), None, None), t)
        .is_empty());
    assert_eq!(l.view()[0].open, 2);
    assert!(matches!(l.acquire(a, t, true, "3"), Acquire::Queued { .. }));
}
