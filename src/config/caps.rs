//! `caps:` — proxy-wide connection caps per (source IP, destination), named destination
//! groups, and how long a request may wait for a connection under a cap. Every error names its
//! dotted key (`caps.destinations[1].addresses[0]`).

use super::error::ConfigError;
use super::net::IpNet;
use super::raw::{RawCapLimits, RawCaps, StringList};
use super::ser;
use super::shared_caps;
pub use super::shared_caps::SharedConfig;
use super::values::{bounded_duration, networks};
pub use greenarrow_proxy_proto::caps::{CapDestination, CapLimits, PairCaps};
use serde::Serialize;
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::Duration;

/// Default `caps.wait`.
pub const DEFAULT_CAPS_WAIT: Duration = Duration::from_secs(30);
/// Default `caps.window`.
pub const DEFAULT_CAPS_WINDOW: Duration = Duration::from_secs(60);
/// Longest `caps.wait` / `caps.window` accepted.
const MAX_CAPS_DURATION: Duration = Duration::from_secs(3600);
/// Largest cap accepted.
const MAX_CAP: u64 = 1_000_000;

/// A named destination group: MX addresses and networks that share caps.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DestinationGroup {
    pub name: String,
    pub addresses: Vec<IpNet>,
    #[serde(flatten)]
    pub limits: CapLimits,
}

/// Caps for the source addresses of one `caps.sources` entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SourceCaps {
    pub addresses: Vec<IpNet>,
    /// Per destination, for these sources (over the default).
    #[serde(flatten)]
    pub limits: CapLimits,
    /// All destinations together, per source IP.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_connections_per_source: Option<usize>,
    /// Per destination group, for these sources (over everything else).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub destinations: BTreeMap<String, CapLimits>,
}

/// `caps:` validated. The default (nothing configured) caps nothing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CapsConfig {
    /// How long a request may wait for a connection at a cap (the default and the most a
    /// request's `wait=` may ask for); zero: fail at once.
    #[serde(serialize_with = "ser::duration")]
    pub wait: Duration,
    /// The window of `max_new_connections`.
    #[serde(serialize_with = "ser::duration")]
    pub window: Duration,
    /// Per (source, destination), for every source and destination: `caps.max_connections`
    /// and `caps.max_new_connections`.
    #[serde(flatten)]
    pub default: CapLimits,
    /// Per source IP, all destinations together.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_connections_per_source: Option<usize>,
    /// `caps.destinations`.
    #[serde(rename = "destinations", skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<DestinationGroup>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub sources: Vec<SourceCaps>,
    /// `caps.shared`: caps per destination group across proxy hosts, through Redis.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shared: Option<SharedConfig>,
}

impl Default for CapsConfig {
    fn default() -> CapsConfig {
        CapsConfig {
            wait: DEFAULT_CAPS_WAIT,
            window: DEFAULT_CAPS_WINDOW,
            default: CapLimits::default(),
            max_connections_per_source: None,
            groups: Vec::new(),
            sources: Vec::new(),
            shared: None,
        }
    }
}

impl CapsConfig {
    /// The destination `mx` counts as: its group (the first that contains it), or itself.
    pub fn destination(&self, mx: SocketAddr) -> CapDestination {
        let ip = mx.ip().to_canonical();
        match self
            .groups
            .iter()
            .find(|g| g.addresses.iter().any(|n| n.contains(ip)))
        {
            Some(g) => CapDestination::Group(g.name.clone()),
            None => CapDestination::Mx(SocketAddr::new(ip, mx.port())),
        }
    }

    /// The caps of (source, mx). Each cap separately comes from the first that sets it:
    /// the source entry's `destinations.<group>`, the group, the source entry, the default.
    pub fn pair(&self, source: IpAddr, mx: SocketAddr) -> PairCaps {
        let destination = self.destination(mx);
        let src = self
            .sources
            .iter()
            .find(|s| s.addresses.iter().any(|n| n.contains(source)));
        let group = match &destination {
            CapDestination::Group(name) => self.groups.iter().find(|g| &g.name == name),
            CapDestination::Mx(_) => None,
        };
        let mut limits = CapLimits::default();
        if let (Some(s), Some(g)) = (src, group) {
            if let Some(l) = s.destinations.get(&g.name) {
                limits = limits.or(*l);
            }
        }
        if let Some(g) = group {
            limits = limits.or(g.limits);
        }
        if let Some(s) = src {
            limits = limits.or(s.limits);
        }
        limits = limits.or(self.default);
        PairCaps {
            destination,
            limits,
            max_connections_per_source: src
                .and_then(|s| s.max_connections_per_source)
                .or(self.max_connections_per_source),
        }
    }
}

type Result<T> = std::result::Result<T, ConfigError>;

/// Validate `caps:`.
pub(crate) fn caps(raw: Option<RawCaps>, base_dir: &Path) -> Result<CapsConfig> {
    let Some(raw) = raw else {
        return Ok(CapsConfig::default());
    };
    let wait = duration("caps.wait", raw.wait, DEFAULT_CAPS_WAIT, true)?;
    let window = duration("caps.window", raw.window, DEFAULT_CAPS_WINDOW, false)?;
    let default = limits(
        "caps",
        &RawCapLimits {
            max_connections: raw.max_connections,
            max_new_connections: raw.max_new_connections,
        },
    )?;
    let max_connections_per_source = cap(
        "caps.max_connections_per_source",
        raw.max_connections_per_source,
    )?;
    let mut groups: Vec<DestinationGroup> = Vec::new();
    for (i, g) in raw.destinations.unwrap_or_default().into_iter().enumerate() {
        let key = format!("caps.destinations[{i}]");
        let name = g
            .name
            .ok_or_else(|| ConfigError::invalid(format!("{key}.name"), "required"))?;
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        {
            return Err(ConfigError::invalid(
                format!("{key}.name"),
                format!("{name:?}: use letters, digits, '-', '_' and '.'"),
            ));
        }
        if name.parse::<SocketAddr>().is_ok() || name.parse::<IpAddr>().is_ok() {
            return Err(ConfigError::invalid(
                format!("{key}.name"),
                format!("{name:?} looks like an address; a group needs a name"),
            ));
        }
        if groups.iter().any(|o| o.name == name) {
            return Err(ConfigError::invalid(
                format!("{key}.name"),
                format!("group {name:?} is defined twice"),
            ));
        }
        let addresses = addresses(&key, g.addresses)?;
        let limits = limits(
            &key,
            &RawCapLimits {
                max_connections: g.max_connections,
                max_new_connections: g.max_new_connections,
            },
        )?;
        groups.push(DestinationGroup {
            name,
            addresses,
            limits,
        });
    }
    let mut sources = Vec::new();
    for (i, s) in raw.sources.unwrap_or_default().into_iter().enumerate() {
        let key = format!("caps.sources[{i}]");
        let addresses = addresses(&key, s.addresses)?;
        let own = limits(
            &key,
            &RawCapLimits {
                max_connections: s.max_connections,
                max_new_connections: s.max_new_connections,
            },
        )?;
        let per_source = cap(
            &format!("{key}.max_connections_per_source"),
            s.max_connections_per_source,
        )?;
        let mut destinations = BTreeMap::new();
        for (name, l) in s.destinations.unwrap_or_default() {
            let dkey = format!("{key}.destinations.{name}");
            if !groups.iter().any(|g| g.name == name) {
                return Err(ConfigError::invalid(
                    dkey,
                    format!("no destination group {name:?} in caps.destinations"),
                ));
            }
            destinations.insert(name, limits(&dkey, &l)?);
        }
        sources.push(SourceCaps {
            addresses,
            limits: own,
            max_connections_per_source: per_source,
            destinations,
        });
    }
    let shared = match raw.shared {
        Some(r) => {
            let names: Vec<&str> = groups.iter().map(|g| g.name.as_str()).collect();
            Some(shared_caps::shared(r, &names, limits, base_dir)?)
        }
        None => None,
    };
    Ok(CapsConfig {
        wait,
        window,
        default,
        max_connections_per_source,
        groups,
        sources,
        shared,
    })
}

/// `KEY.addresses` of a group or source entry: IPs or networks, at least one.
fn addresses(key: &str, raw: Option<StringList>) -> Result<Vec<IpNet>> {
    let key = format!("{key}.addresses");
    let list = networks(&key, raw, &[])?;
    if list.is_empty() {
        return Err(ConfigError::invalid(key, "required and must not be empty"));
    }
    Ok(list)
}

fn limits(key: &str, raw: &RawCapLimits) -> Result<CapLimits> {
    Ok(CapLimits {
        max_connections: cap(&format!("{key}.max_connections"), raw.max_connections)?,
        max_new_connections: cap(
            &format!("{key}.max_new_connections"),
            raw.max_new_connections,
        )?,
    })
}

fn cap(key: &str, value: Option<u64>) -> Result<Option<usize>> {
    match value {
        None => Ok(None),
        Some(n) if (1..=MAX_CAP).contains(&n) => Ok(usize::try_from(n).ok()),
        Some(n) => Err(ConfigError::invalid(
            key,
            format!("{n} is out of range; allowed: 1 to {MAX_CAP} (leave the key out for no cap)"),
        )),
    }
}

fn duration(
    key: &str,
    value: Option<String>,
    default: Duration,
    zero_ok: bool,
) -> Result<Duration> {
    bounded_duration(key, value, default, zero_ok, MAX_CAPS_DURATION)
}
