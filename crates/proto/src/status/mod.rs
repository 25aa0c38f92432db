//! The live status view: what `gaproxy status` shows (over the control socket) and what the
//! metrics expose, from one [`Snapshot`] of the running server.
//!
//! A snapshot copies what it needs (the pool under its lock, the caps ledger, the counters of
//! the SIGUSR1 report, the drains) and everything else — the JSON [`Status`], the text table
//! ([`table`]), the Prometheus exposition ([`exposition`]) — is made from it outside any
//! lock. The JSON shape is documented in docs/STATUS.md; [`STATUS_VERSION`] changes only when a
//! field is removed or changes meaning (fields may be added).

pub mod exposition;
mod snapshot;
pub mod table;

pub use snapshot::{
    unix_seconds, CapRow, ConfigState, DrainList, Figure, IdleConnection, Kind, LastReload,
    PooledInfo, SharedGroup, SharedHolder, SharedStatus, Snapshot, TlsRptDomain, TlsRptSnapshot,
    WaitSnapshot,
};

use crate::protocol::reuse::PoolKey;
use serde::de::{MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::SystemTime;

/// The version of the JSON shape.
pub const STATUS_VERSION: u32 = 1;

/// The status view (`gaproxy status --json`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Status {
    pub version: u32,
    pub proxy_version: String,
    /// When the proxy started (RFC 3339, UTC) and how long ago. (Absent from a proxy older
    /// than these fields, as are `config` and `sessions`.)
    #[serde(default)]
    pub started_at: Option<String>,
    #[serde(default)]
    pub uptime_seconds: Option<f64>,
    /// When the configuration in force was loaded, and how the last reload went.
    #[serde(default)]
    pub config: Option<ConfigView>,
    /// MTA sessions in use against `max_sessions`.
    #[serde(default)]
    pub sessions: Option<Sessions>,
    /// One entry per pool key with a connection in use or idle.
    pub pools: Vec<PoolEntry>,
    /// One entry per (source, destination) pair with an open connection, a cap or a waiter.
    pub caps: Vec<CapRow>,
    pub waits: WaitSnapshot,
    /// `caps.shared`: the health, the live hosts, the leases per group and host (absent or
    /// null when off).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shared: Option<SharedStatus>,
    /// The counters of the SIGUSR1 report's summary, same names, same order.
    pub counters: Counters,
    /// Failed connect requests per failure (every failure, zeros included).
    pub failures: Vec<FailureCount>,
    pub drains: DrainList,
    /// TLS reporting (RFC 8460): today's counts per policy domain, with its `rua`. (Absent
    /// from a proxy older than this field.)
    #[serde(default)]
    pub tls_rpt: Option<TlsRptView>,
}

/// The status view's `tls_rpt`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TlsRptView {
    /// The UTC day the counts are of (`YYYY-MM-DD`).
    pub day: String,
    pub domains: Vec<TlsRptDomain>,
    /// Domains with an MTA-STS policy in the cache.
    pub sts_cached: u64,
}

/// The configuration in force and the last reload.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ConfigView {
    /// At start, or by the last reload that worked (RFC 3339, UTC).
    pub loaded_at: String,
    /// Null until the first reload (SIGHUP).
    pub last_reload: Option<ReloadView>,
}

/// One reload: when, whether it worked, and why not.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReloadView {
    pub at: String,
    pub ok: bool,
    /// Why it failed (the previous configuration still runs); null when it worked.
    pub error: Option<String>,
}

/// MTA sessions now against the limit.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Sessions {
    /// Served by a worker thread now.
    pub active: u64,
    /// Accepted, waiting for a free worker.
    pub queued: u64,
    pub max_sessions: u64,
}

/// A time as RFC 3339 text, UTC, whole seconds.
fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
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

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FailureCount {
    pub tag: String,
    pub code: u16,
    pub count: u64,
}

/// Named counters in a fixed order; a JSON object (keys in that order). Whole numbers are
/// written as JSON integers, others (seconds) with a fraction.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Counters(pub Vec<(String, f64)>);

impl Counters {
    pub fn get(&self, name: &str) -> Option<f64> {
        self.0.iter().find(|(n, _)| n == name).map(|(_, v)| *v)
    }
}

/// Whole numbers below 2^53 (exact in an f64) as integers.
fn as_integer(v: f64) -> Option<u64> {
    (v.fract() == 0.0 && (0.0..9_007_199_254_740_992.0).contains(&v)).then_some(v as u64)
}

impl Serialize for Counters {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            match as_integer(*v) {
                Some(n) => m.serialize_entry(k, &n)?,
                None => m.serialize_entry(k, v)?,
            }
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
                while let Some((k, v)) = a.next_entry::<String, f64>()? {
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
            keys.entry((p.key.source, p.key.ehlo.clone(), p.key.mx))
                .or_insert_with(|| empty_entry(&p.key))
                .idle
                .push(p.conn.clone());
        }
        let c = &snap.config;
        let uptime = snap
            .now
            .duration_since(c.started)
            .map_or(0.0, |d| d.as_secs_f64());
        let whole = |name| as_integer(snap.figure(name)).unwrap_or(0);
        Status {
            version: STATUS_VERSION,
            proxy_version: env!("CARGO_PKG_VERSION").to_string(),
            started_at: Some(rfc3339(c.started)),
            uptime_seconds: Some(uptime),
            config: Some(ConfigView {
                loaded_at: rfc3339(c.loaded),
                last_reload: c.last_reload.as_ref().map(|r| ReloadView {
                    at: rfc3339(r.at),
                    ok: r.error.is_none(),
                    error: r.error.clone(),
                }),
            }),
            sessions: Some(Sessions {
                active: whole("sessions_active"),
                queued: whole("sessions_queued"),
                max_sessions: whole("max_sessions"),
            }),
            pools: keys.into_values().collect(),
            caps: snap.rows.clone(),
            waits: snap.waits.clone(),
            shared: snap.shared.clone(),
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
                    tag: f.code().tag.to_string(),
                    code: f.code().reply,
                    count: *n,
                })
                .collect(),
            drains: snap.drains.clone(),
            tls_rpt: Some(TlsRptView {
                day: crate::tls_policy::rpt::Day::of(
                    snap.now
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.as_secs()),
                )
                .iso(),
                domains: snap.tls_rpt.domains.clone(),
                sts_cached: snap.tls_rpt.sts_cached,
            }),
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
mod tests;
