//! `caps.shared:` — caps per destination group counted across every proxy host through Redis
//! (the endpoint, its password file, the key prefix, this host's name, the lease time, the call
//! timeout), and which of a group's caps are shared.

use super::error::ConfigError;
use super::raw::{RawCapLimits, RawShared};
use super::readable::unreadable;
use super::secret::{read_secret_file, Secret};
use super::ser;
use super::values::{bounded_duration, required_path};
pub use greenarrow_proxy_proto::caps::CapLimits;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// Default `caps.shared.lease`.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(30);
/// Default `caps.shared.timeout`.
pub const DEFAULT_REDIS_TIMEOUT: Duration = Duration::from_millis(500);
/// Default `caps.shared.key_prefix`.
pub const DEFAULT_KEY_PREFIX: &str = "greenarrow_proxy";

/// `caps.shared` validated.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SharedConfig {
    /// `redis://host:port/db` (no password in it: `password_file`).
    pub redis: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
    #[serde(skip)]
    pub password: Option<Secret>,
    pub key_prefix: String,
    /// This host's name in Redis (default: the system's host name).
    pub host: String,
    /// How long a lease (and a host's heartbeat) lives without renewal.
    #[serde(serialize_with = "ser::duration")]
    pub lease: Duration,
    /// The bound on every Redis call (connect, read, write).
    #[serde(serialize_with = "ser::duration")]
    pub timeout: Duration,
    /// The shared caps per destination group (all sources of all hosts together).
    pub destinations: BTreeMap<String, CapLimits>,
}

type Result<T> = std::result::Result<T, ConfigError>;

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 100
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

/// The system's host name (`/proc/sys/kernel/hostname`), or `localhost`.
fn system_host() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| valid_name(s))
        .unwrap_or_else(|| "localhost".to_string())
}

/// Validate `caps.shared`: `groups` are the names of `caps.destinations`, `limits` checks a
/// cap pair (`caps`' own rule).
pub(super) fn shared(
    raw: RawShared,
    groups: &[&str],
    limits: impl Fn(&str, &RawCapLimits) -> Result<CapLimits>,
    base_dir: &std::path::Path,
) -> Result<SharedConfig> {
    const K: &str = "caps.shared";
    let url = raw.redis.ok_or_else(|| {
        ConfigError::invalid(format!("{K}.redis"), "required (redis://host:port/db)")
    })?;
    let info = redis::parse_redis_url(&url).ok_or_else(|| {
        ConfigError::invalid(
            format!("{K}.redis"),
            format!("{url:?} is not a Redis URL (redis://host:port/db)"),
        )
    })?;
    match info.scheme() {
        "redis" => {}
        "rediss" => {
            return Err(ConfigError::invalid(
                format!("{K}.redis"),
                "rediss:// (TLS) is not supported; reach Redis over a private network or a \
                 local TLS tunnel (redis://127.0.0.1:port)",
            ))
        }
        other => {
            return Err(ConfigError::invalid(
                format!("{K}.redis"),
                format!("scheme {other:?} is not supported; use redis://host:port/db"),
            ))
        }
    }
    if info.password().is_some() {
        return Err(ConfigError::invalid(
            format!("{K}.redis"),
            "no password in the URL; put it in caps.shared.password_file",
        ));
    }
    let (password, password_file) = match raw.password_file {
        None => (None, None),
        Some(p) => {
            let key = format!("{K}.password_file");
            let path = required_path(&key, Some(p), base_dir)?;
            let text = read_secret_file(&path)
                .map_err(|e| ConfigError::invalid(key.clone(), unreadable(&path, &e)))?;
            if text.is_empty() {
                return Err(ConfigError::invalid(
                    key,
                    format!("{} is empty", path.display()),
                ));
            }
            (Some(Secret::new(text.into_bytes())), Some(path))
        }
    };
    let key_prefix = raw
        .key_prefix
        .unwrap_or_else(|| DEFAULT_KEY_PREFIX.to_string());
    if !valid_name(&key_prefix) {
        return Err(ConfigError::invalid(
            format!("{K}.key_prefix"),
            format!("{key_prefix:?}: use letters, digits, '-', '_' and '.'"),
        ));
    }
    let host = raw.host.unwrap_or_else(system_host);
    if !valid_name(&host) {
        return Err(ConfigError::invalid(
            format!("{K}.host"),
            format!("{host:?}: use letters, digits, '-', '_' and '.' (at most 100)"),
        ));
    }
    let lease = bounded_duration(
        &format!("{K}.lease"),
        raw.lease,
        DEFAULT_LEASE,
        false,
        Duration::from_secs(3600),
    )?;
    if lease < Duration::from_secs(1) {
        return Err(ConfigError::invalid(
            format!("{K}.lease"),
            "at least 1s (leases are renewed every third of it)",
        ));
    }
    let timeout = bounded_duration(
        &format!("{K}.timeout"),
        raw.timeout,
        DEFAULT_REDIS_TIMEOUT,
        false,
        Duration::from_secs(60),
    )?;
    if timeout * 3 > lease {
        return Err(ConfigError::invalid(
            format!("{K}.timeout"),
            "must be at most a third of caps.shared.lease (renewals must fit in a lease)",
        ));
    }
    let mut destinations = BTreeMap::new();
    for (name, l) in raw.destinations.unwrap_or_default() {
        let dkey = format!("{K}.destinations.{name}");
        if !groups.contains(&name.as_str()) {
            return Err(ConfigError::invalid(
                dkey,
                format!("no destination group {name:?} in caps.destinations"),
            ));
        }
        let l = limits(&dkey, &l)?;
        if l == CapLimits::default() {
            return Err(ConfigError::invalid(
                dkey,
                "set max_connections and/or max_new_connections (what is shared)",
            ));
        }
        destinations.insert(name, l);
    }
    if destinations.is_empty() {
        return Err(ConfigError::invalid(
            format!("{K}.destinations"),
            "required: the destination groups whose caps are shared",
        ));
    }
    Ok(SharedConfig {
        redis: url,
        password_file,
        password,
        key_prefix,
        host,
        lease,
        timeout,
        destinations,
    })
}
