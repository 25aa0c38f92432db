//! The live status view: what `gaproxy status` shows (over the control socket) and what the
//! metrics expose, from one [`Snapshot`] of the running server.
//!
//! A snapshot copies what it needs (the pool under its lock, the caps ledger, the counters of
//! the SIGUSR1 report, the drains) and everything else — the JSON [`Status`], the text table
//! ([`table`]), the Prometheus exposition ([`crate::metrics`]) — is made from it outside any
//! lock. The JSON shape is documented in docs/STATUS.md; [`STATUS_VERSION`] changes only when a
//! field is removed or changes meaning (fields may be added).

pub mod table;

use crate::caps::{CapRow, WaitSnapshot};
use crate::drain::DrainList;
use crate::pool::{PoolKey, PooledInfo};
use crate::protocol::Failure;
use crate::report::{figures, Figure};
use crate::server::Server;
use serde::de::{MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

/// The version of the JSON shape.
pub const STATUS_VERSION: u32 = 1;

/// Everything the status view and the metrics show, copied from the server at one moment.
#[derive(Clone, Debug)]
pub struct Snapshot {
    pub figures: Vec<Figure>,
    pub pooled: Vec<PooledInfo>,
    pub in_use: Vec<(PoolKey, usize)>,
    pub rows: Vec<CapRow>,
    pub waits: WaitSnapshot,
    pub failures: Vec<(Failure, u64)>,
    pub drains: DrainList,
}

impl Snapshot {
    /// Copy the server's state now.
    pub fn take(server: &Server) -> Snapshot {
        let now = Instant::now();
        let shared = &server.shared;
        let (pooled, counters) = shared.pool.snapshot(now);
        Snapshot {
            figures: figures(server, &counters),
            pooled,
            in_use: shared.caps.in_use_by_key(),
            rows: shared.caps.rows(now),
            waits: shared.caps.wait_stats(),
            failures: shared.stats.failures.snapshot(),
            drains: shared.drains.list(),
        }
    }
}

/// The status view (`gaproxy status --json`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Status {
    pub version: u32,
    pub proxy_version: String,
    /// One entry per pool key with a connection in use or idle.
    pub pools: Vec<PoolEntry>,
    /// One entry per (source, destination) pair with an open connection, a cap or a waiter.
    pub caps: Vec<CapEntry>,
    pub waits: Waits,
    /// The counters of the SIGUSR1 report's summary, same names, same order.
    pub counters: Counters,
    /// Failed connect requests per failure (every failure, zeros included).
    pub failures: Vec<FailureCount>,
    pub drains: DrainList,
}

/// Connections of one pool key.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PoolEntry {
    pub source: IpAddr,
    pub ehlo: String,
    pub mx: SocketAddr,
    /// In use by a session now.
    pub in_use: usize,
    /// Idle in the pool, most recently checked in last.
    pub idle: Vec<IdleConnection>,
}

/// One idle pooled connection.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct IdleConnection {
    pub age_seconds: f64,
    pub idle_seconds: f64,
    pub uses: u64,
    pub messages: u64,
    pub tls_version: Option<String>,
    pub tls_cipher: Option<String>,
    pub last_mta: Option<SocketAddr>,
}

/// One (source, destination) pair against its cap.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CapEntry {
    pub source: IpAddr,
    pub destination: String,
    pub in_use: usize,
    pub idle: usize,
    pub max_connections: Option<usize>,
    pub waiting: usize,
    pub oldest_wait_seconds: Option<f64>,
}

/// Waits for a connection under a cap, since start.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Waits {
    pub waited: u64,
    pub timed_out: u64,
    pub sum_seconds: f64,
    /// Cumulative histogram; `le` null is +Inf.
    pub buckets: Vec<Bucket>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Bucket {
    pub le: Option<f64>,
    pub count: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FailureCount {
    pub tag: String,
    pub code: u16,
    pub count: u64,
}

/// Named counters in a fixed order; a JSON object (keys in that order).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Counters(pub Vec<(String, u64)>);

impl Counters {
    pub fn get(&self, name: &str) -> Option<u64> {
        self.0.iter().find(|(n, _)| n == name).map(|(_, v)| *v)
    }
}

impl Serialize for Counters {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            m.serialize_entry(k, v)?;
        }
        m.end()
    }
}

impl<'de> Deserialize<'de> for Counters {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Counters, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Counters;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object of counters")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<Counters, A::Error> {
                let mut out = Vec::new();
                while let Some((k, v)) = a.next_entry::<String, u64>()? {
                    out.push((k, v));
                }
                Ok(Counters(out))
            }
        }
        d.deserialize_map(V)
    }
}

impl Status {
    /// The status view of `snap`.
    pub fn from_snapshot(snap: &Snapshot) -> Status {
        let mut keys: BTreeMap<(IpAddr, String, SocketAddr), PoolEntry> = BTreeMap::new();
        for (k, n) in &snap.in_use {
            keys.entry((k.source, k.ehlo.clone(), k.mx))
                .or_insert_with(|| empty_entry(k))
                .in_use += n;
        }
        for p in &snap.pooled {
            let (tls_version, tls_cipher) = match &p.tls {
                Some((v, c)) => (Some(v.clone()), Some(c.clone())),
                None => (None, None),
            };
            keys.entry((p.key.source, p.key.ehlo.clone(), p.key.mx))
                .or_insert_with(|| empty_entry(&p.key))
                .idle
                .push(IdleConnection {
                    age_seconds: p.age.as_secs_f64(),
                    idle_seconds: p.idle.as_secs_f64(),
                    uses: p.uses,
                    messages: p.messages,
                    tls_version,
                    tls_cipher,
                    last_mta: p.last_mta,
                });
        }
        let caps = snap
            .rows
            .iter()
            .map(|r| CapEntry {
                source: r.source,
                destination: r.destination.clone(),
                in_use: r.in_use,
                idle: r.idle,
                max_connections: r.max_connections,
                waiting: r.waiting,
                oldest_wait_seconds: r.oldest_wait.map(|d| d.as_secs_f64()),
            })
            .collect();
        Status {
            version: STATUS_VERSION,
            proxy_version: env!("CARGO_PKG_VERSION").to_string(),
            pools: keys.into_values().collect(),
            caps,
            waits: Waits {
                waited: snap.waits.waited,
                timed_out: snap.waits.timed_out,
                sum_seconds: snap.waits.sum_seconds,
                buckets: snap
                    .waits
                    .buckets
                    .iter()
                    .map(|(le, count)| Bucket {
                        le: le.is_finite().then_some(*le),
                        count: *count,
                    })
                    .collect(),
            },
            counters: Counters(
                snap.figures
                    .iter()
                    .map(|f| (f.name.to_string(), f.value))
                    .collect(),
            ),
            failures: snap
                .failures
                .iter()
                .map(|(f, n)| FailureCount {
                    tag: f.code().2.to_string(),
                    code: f.code().0,
                    count: *n,
                })
                .collect(),
            drains: snap.drains.clone(),
        }
    }
}

fn empty_entry(k: &PoolKey) -> PoolEntry {
    PoolEntry {
        source: k.source,
        ehlo: k.ehlo.clone(),
        mx: k.mx,
        in_use: 0,
        idle: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::caps::WaitSnapshot;
    use crate::report::Kind;
    use std::time::Duration;

    fn key(source: &str) -> PoolKey {
        PoolKey::new(
            source.parse().unwrap(),
            "MTA.test",
            "127.0.0.1:25".parse().unwrap(),
        )
    }

    fn snapshot() -> Snapshot {
        let figure = |name, value| Figure {
            name,
            metric: name,
            kind: Kind::Gauge,
            help: "",
            value,
        };
        Snapshot {
            figures: vec![
                figure("pooled", 1),
                figure("keys", 1),
                figure("connects", 9),
            ],
            pooled: vec![PooledInfo {
                key: key("127.0.0.2"),
                tls: Some(("TLSv1.3".into(), "TLS13_AES_256_GCM_SHA384".into())),
                age: Duration::from_millis(2500),
                idle: Duration::from_millis(500),
                uses: 3,
                messages: 4,
                last_mta: Some("127.0.0.1:40000".parse().unwrap()),
            }],
            in_use: vec![(key("127.0.0.2"), 2), (key("127.0.0.3"), 1)],
            rows: Vec::new(),
            waits: WaitSnapshot {
                waited: 2,
                timed_out: 0,
                buckets: vec![(0.25, 1), (f64::INFINITY, 2)],
                sum_seconds: 0.5,
            },
            failures: vec![(Failure::Drained, 1)],
            drains: DrainList::default(),
        }
    }

    #[test]
    fn keys_in_use_and_idle_merge_and_the_json_keeps_the_counters_order() {
        let st = Status::from_snapshot(&snapshot());
        assert_eq!(st.pools.len(), 2);
        let p = &st.pools[0];
        assert_eq!(
            (p.source.to_string(), p.ehlo.as_str()),
            ("127.0.0.2".into(), "mta.test")
        );
        assert_eq!((p.in_use, p.idle.len()), (2, 1));
        assert_eq!(p.idle[0].tls_version.as_deref(), Some("TLSv1.3"));
        assert_eq!((st.pools[1].in_use, st.pools[1].idle.len()), (1, 0));
        assert_eq!(
            st.waits.buckets,
            vec![
                Bucket {
                    le: Some(0.25),
                    count: 1
                },
                Bucket { le: None, count: 2 }
            ]
        );
        let text = serde_json::to_string(&st).unwrap();
        assert!(
            text.contains(r#""counters":{"pooled":1,"keys":1,"connects":9}"#),
            "{text}"
        );
        assert!(
            text.contains(r#"{"tag":"drained","code":453,"count":1}"#),
            "{text}"
        );
        let back: Status = serde_json::from_str(&text).unwrap();
        assert_eq!(back, st);
        assert_eq!(back.counters.get("connects"), Some(9));
    }

    #[test]
    fn the_table_shows_keys_idle_connections_counters_and_failures() {
        let text = table::render(&Status::from_snapshot(&snapshot()));
        for want in [
            "  127.0.0.2  mta.test  127.0.0.1:25  2       1",
            "  127.0.0.2  127.0.0.1:25  2.5s  0.5s  3     4     TLSv1.3 TLS13_AES_256_GCM_SHA384  127.0.0.1:40000",
            "  connects  9",
            "Failed connects: 453 drained: 1",
            "Waits: 2 waited, 0 timed out, 0.5s in all",
        ] {
            assert!(text.lines().any(|l| l == want), "no {want:?} in\n{text}");
        }
    }
}
