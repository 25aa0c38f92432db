//! `caps:` — proxy-wide connection caps per (source IP, destination), named destination
//! groups, and how long a request may wait for a connection under a cap. Every error names its
//! dotted key (`caps.destinations[1].addresses[0]`).

use super::raw::StringList;
use super::validate::networks;
use super::{ConfigError, IpNet};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// Default `caps.wait`.
pub const DEFAULT_CAPS_WAIT: Duration = Duration::from_secs(30);
/// Default `caps.window`.
pub const DEFAULT_CAPS_WINDOW: Duration = Duration::from_secs(60);
/// Longest `caps.wait` / `caps.window` accepted.
const MAX_CAPS_DURATION: Duration = Duration::from_secs(3600);
/// Largest cap accepted.
const MAX_CAP: u64 = 1_000_000;

/// `caps:` as written.
#[derive(Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCaps {
    pub wait: Option<String>,
    pub window: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_new_connections: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_connections_per_source: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub destinations: Option<Vec<RawGroup>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sources: Option<Vec<RawSource>>,
}

/// One entry of `caps.destinations`.
#[derive(Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawGroup {
    pub name: Option<String>,
    pub addresses: Option<StringList>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_new_connections: Option<u64>,
}

/// One entry of `caps.sources`.
#[derive(Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSource {
    pub addresses: Option<StringList>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_new_connections: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_connections_per_source: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub destinations: Option<BTreeMap<String, RawLimits>>,
}

/// `caps.sources[i].destinations.<group>`.
#[derive(Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawLimits {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_new_connections: Option<u64>,
}

/// The caps of one (source, destination) pair; `None`: no cap.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CapLimits {
    /// Open connections (in use and idle in the pool).
    pub max_connections: Option<usize>,
    /// New connections (dials) per `caps.window`.
    pub max_new_connections: Option<usize>,
}

impl CapLimits {
    /// Each cap from `self`, or else from `other`.
    fn or(self, other: CapLimits) -> CapLimits {
        CapLimits {
            max_connections: self.max_connections.or(other.max_connections),
            max_new_connections: self.max_new_connections.or(other.max_new_connections),
        }
    }
}

/// A named destination group: MX addresses and networks that share caps.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DestinationGroup {
    pub name: String,
    pub addresses: Vec<IpNet>,
    pub limits: CapLimits,
}

/// Caps for the source addresses of one `caps.sources` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceCaps {
    pub addresses: Vec<IpNet>,
    /// Per destination, for these sources (over the default).
    pub limits: CapLimits,
    /// All destinations together, per source IP.
    pub max_connections_per_source: Option<usize>,
    /// Per destination group, for these sources (over everything else).
    pub destinations: BTreeMap<String, CapLimits>,
}

/// A destination as caps count it: a named group, or one MX address.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CapDestination {
    Group(String),
    Mx(SocketAddr),
}

impl std::fmt::Display for CapDestination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CapDestination::Group(g) => f.write_str(g),
            CapDestination::Mx(a) => write!(f, "{a}"),
        }
    }
}

/// What applies to one (source IP, MX address).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PairCaps {
    pub destination: CapDestination,
    pub limits: CapLimits,
    pub max_connections_per_source: Option<usize>,
}

/// `caps:` validated. The default (nothing configured) caps nothing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CapsConfig {
    /// How long a request may wait for a connection at a cap (the default and the most a
    /// request's `wait=` may ask for); zero: fail at once.
    pub wait: Duration,
    /// The window of `max_new_connections`.
    pub window: Duration,
    /// Per (source, destination), for every source and destination.
    pub default: CapLimits,
    /// Per source IP, all destinations together.
    pub max_connections_per_source: Option<usize>,
    pub groups: Vec<DestinationGroup>,
    pub sources: Vec<SourceCaps>,
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

    /// The section as written in the effective configuration.
    pub(crate) fn to_raw(&self) -> RawCaps {
        let n = |v: Option<usize>| v.map(|v| v as u64);
        let nets = |l: &[IpNet]| Some(StringList(l.iter().map(|n| n.to_string()).collect()));
        RawCaps {
            wait: Some(humantime::format_duration(self.wait).to_string()),
            window: Some(humantime::format_duration(self.window).to_string()),
            max_connections: n(self.default.max_connections),
            max_new_connections: n(self.default.max_new_connections),
            max_connections_per_source: n(self.max_connections_per_source),
            destinations: (!self.groups.is_empty()).then(|| {
                self.groups
                    .iter()
                    .map(|g| RawGroup {
                        name: Some(g.name.clone()),
                        addresses: nets(&g.addresses),
                        max_connections: n(g.limits.max_connections),
                        max_new_connections: n(g.limits.max_new_connections),
                    })
                    .collect()
            }),
            sources: (!self.sources.is_empty()).then(|| {
                self.sources
                    .iter()
                    .map(|s| RawSource {
                        addresses: nets(&s.addresses),
                        max_connections: n(s.limits.max_connections),
                        max_new_connections: n(s.limits.max_new_connections),
                        max_connections_per_source: n(s.max_connections_per_source),
                        destinations: (!s.destinations.is_empty()).then(|| {
                            s.destinations
                                .iter()
                                .map(|(k, l)| {
                                    (
                                        k.clone(),
                                        RawLimits {
                                            max_connections: n(l.max_connections),
                                            max_new_connections: n(l.max_new_connections),
                                        },
                                    )
                                })
                                .collect()
                        }),
                    })
                    .collect()
            }),
        }
    }
}

type Result<T> = std::result::Result<T, ConfigError>;

/// Validate `caps:`.
pub(crate) fn caps(raw: Option<RawCaps>) -> Result<CapsConfig> {
    let Some(raw) = raw else {
        return Ok(CapsConfig::default());
    };
    let wait = duration("caps.wait", raw.wait, DEFAULT_CAPS_WAIT, true)?;
    let window = duration("caps.window", raw.window, DEFAULT_CAPS_WINDOW, false)?;
    let default = limits(
        "caps",
        &RawLimits {
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
            &RawLimits {
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
            &RawLimits {
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
    Ok(CapsConfig {
        wait,
        window,
        default,
        max_connections_per_source,
        groups,
        sources,
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

fn limits(key: &str, raw: &RawLimits) -> Result<CapLimits> {
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
    super::validate::bounded_duration(key, value, default, zero_ok, MAX_CAPS_DURATION)
}
