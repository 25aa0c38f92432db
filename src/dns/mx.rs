//! RFC 5321 §5.1 ordering of mail exchangers, without any I/O.
//!
//! [`plan`] turns the MX records of a domain into the ordered, bounded list of
//! host names to resolve; the resolver then looks up their addresses.

use std::collections::HashSet;

use super::name;

/// At most this many MX hosts (after ordering) are resolved and tried.
pub const MAX_MX_HOSTS: usize = 10;
/// At most this many addresses of each host are tried, in the order DNS returned them.
pub const MAX_ADDRS_PER_HOST: usize = 4;

/// What the MX records of a domain say to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum MxPlan {
    /// Only null MX records ("." as exchange, RFC 7505): the domain takes no mail.
    Null,
    /// Hosts to resolve, in the order to try them (never more than [`MAX_MX_HOSTS`]).
    /// Empty when no record named a valid host.
    Hosts(Vec<MxHost>),
}

/// One mail exchanger to resolve.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct MxHost {
    /// Host name, lower case, without trailing dot.
    pub(crate) name: String,
    /// MX preference (lower is tried first).
    pub(crate) preference: u16,
}

/// Orders MX `records` (preference, exchange in text form as DNS returned it).
///
/// - Lowest preference first; hosts of equal preference are shuffled with
///   `random_below(n)`, which must return a number below `n`.
/// - A host listed more than once keeps its lowest preference.
/// - Exchanges that are not valid host names are dropped; "." (the root, a null
///   MX) is dropped when other hosts are listed, and when it is all there is the
///   plan is [`MxPlan::Null`].
/// - At most [`MAX_MX_HOSTS`] hosts are kept.
pub(crate) fn plan(
    records: &[(u16, String)],
    random_below: &mut dyn FnMut(usize) -> usize,
) -> MxPlan {
    let mut saw_root = false;
    let mut hosts: Vec<MxHost> = Vec::new();
    for (preference, exchange) in records {
        if exchange.is_empty() || exchange == "." {
            saw_root = true;
            continue;
        }
        if let Ok(valid) = name::normalize(exchange) {
            hosts.push(MxHost {
                name: valid.to_ascii_lowercase(),
                preference: *preference,
            });
        }
    }
    if hosts.is_empty() && saw_root {
        return MxPlan::Null;
    }

    // Stable sort, then keep the first (lowest preference) entry of each name.
    hosts.sort_by_key(|h| h.preference);
    let mut seen = HashSet::new();
    hosts.retain(|h| seen.insert(h.name.clone()));

    let mut start = 0;
    while start < hosts.len() {
        let pref = hosts[start].preference;
        let len = hosts[start..]
            .iter()
            .take_while(|h| h.preference == pref)
            .count();
        shuffle(&mut hosts[start..start + len], random_below);
        start += len;
    }
    hosts.truncate(MAX_MX_HOSTS);
    MxPlan::Hosts(hosts)
}

/// Fisher-Yates shuffle of `items`.
fn shuffle<T>(items: &mut [T], random_below: &mut dyn FnMut(usize) -> usize) {
    for i in (1..items.len()).rev() {
        let j = random_below(i + 1).min(i);
        items.swap(i, j);
    }
}

/// A uniformly distributed number below `n` from the operating system's random
/// source (0 when `n` is 0 or 1, or if the OS source fails: then equal-preference
/// hosts are simply not shuffled).
pub(crate) fn os_random_below(n: usize) -> usize {
    if n <= 1 {
        return 0;
    }
    let bound = n as u64;
    // Rejection sampling so that every value is equally likely.
    let zone = u64::MAX - (u64::MAX % bound);
    for _ in 0..8 {
        match getrandom::u64() {
            Ok(r) if r < zone => return (r % bound) as usize,
            Ok(_) => continue,
            Err(_) => return 0,
        }
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recs(list: &[(u16, &str)]) -> Vec<(u16, String)> {
        list.iter().map(|(p, n)| (*p, n.to_string())).collect()
    }

    fn names(plan: &MxPlan) -> Vec<(&str, u16)> {
        match plan {
            MxPlan::Hosts(h) => h.iter().map(|h| (h.name.as_str(), h.preference)).collect(),
            MxPlan::Null => panic!("unexpected null MX"),
        }
    }

    /// Never swaps: keeps the order of equal-preference hosts.
    fn no_shuffle(n: usize) -> usize {
        n - 1
    }

    #[test]
    fn orders_by_preference() {
        let r = recs(&[
            (20, "mx2.example.test."),
            (10, "mx1.example.test."),
            (30, "MX3.Example.Test."),
        ]);
        let p = plan(&r, &mut no_shuffle);
        assert_eq!(
            names(&p),
            vec![
                ("mx1.example.test", 10),
                ("mx2.example.test", 20),
                ("mx3.example.test", 30)
            ]
        );
    }

    #[test]
    fn equal_preferences_are_shuffled_within_their_group_only() {
        let r = recs(&[
            (10, "a.test."),
            (10, "b.test."),
            (10, "c.test."),
            (5, "first.test."),
            (20, "last.test."),
        ]);
        // A source that always picks index 0: reverses rotation of the group.
        let p = plan(&r, &mut |_| 0);
        let got = names(&p);
        assert_eq!(got[0], ("first.test", 5));
        assert_eq!(got[4], ("last.test", 20));
        let mut middle: Vec<_> = got[1..4].iter().map(|(n, _)| *n).collect();
        assert_ne!(
            middle,
            vec!["a.test", "b.test", "c.test"],
            "group was not shuffled"
        );
        middle.sort();
        assert_eq!(middle, vec!["a.test", "b.test", "c.test"]);
    }

    #[test]
    fn os_random_shuffle_produces_every_order() {
        let r = recs(&[(10, "a.test."), (10, "b.test.")]);
        let mut a_first = 0;
        for _ in 0..200 {
            if names(&plan(&r, &mut os_random_below))[0].0 == "a.test" {
                a_first += 1;
            }
        }
        assert!((20..=180).contains(&a_first), "a first {a_first}/200");
    }

    #[test]
    fn null_mx() {
        assert_eq!(plan(&recs(&[(0, ".")]), &mut no_shuffle), MxPlan::Null);
        assert_eq!(plan(&recs(&[(0, "")]), &mut no_shuffle), MxPlan::Null);
        // A root exchange next to real hosts is skipped.
        let p = plan(&recs(&[(0, "."), (10, "mx.test.")]), &mut no_shuffle);
        assert_eq!(names(&p), vec![("mx.test", 10)]);
    }

    #[test]
    fn duplicates_keep_lowest_preference() {
        let p = plan(
            &recs(&[(20, "mx.test."), (10, "mx.test."), (15, "other.test.")]),
            &mut no_shuffle,
        );
        assert_eq!(names(&p), vec![("mx.test", 10), ("other.test", 15)]);
    }

    #[test]
    fn invalid_exchanges_are_dropped() {
        let p = plan(
            &recs(&[(10, "bad_name.test."), (20, "1.2.3.4"), (30, "ok.test.")]),
            &mut no_shuffle,
        );
        assert_eq!(names(&p), vec![("ok.test", 30)]);
        assert_eq!(
            plan(&recs(&[(10, "bad_name.test.")]), &mut no_shuffle),
            MxPlan::Hosts(vec![])
        );
    }

    #[test]
    fn bounded_to_max_hosts_keeping_the_best() {
        let r: Vec<(u16, String)> = (0..50u16)
            .rev()
            .map(|i| (i, format!("mx{i}.test.")))
            .collect();
        let p = plan(&r, &mut no_shuffle);
        let got = names(&p);
        assert_eq!(got.len(), MAX_MX_HOSTS);
        assert_eq!(got[0], ("mx0.test", 0));
        assert_eq!(got[MAX_MX_HOSTS - 1].1, (MAX_MX_HOSTS - 1) as u16);
    }

    #[test]
    fn os_random_below_is_in_range() {
        assert_eq!(os_random_below(0), 0);
        assert_eq!(os_random_below(1), 0);
        for n in 2..20 {
            assert!(os_random_below(n) < n);
        }
    }
}
