//! One value of the file parsed and checked: paths, durations, numbers, networks, socket
//! addresses. Every error names the full dotted key it is given.

use super::error::ConfigError;
use super::net::IpNet;
use super::raw::StringList;
use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Longest duration accepted anywhere: longer is a mistake (and would risk
/// overflow in `Instant` arithmetic).
const MAX_DURATION: Duration = Duration::from_secs(7 * 24 * 3600);

type Result<T> = std::result::Result<T, ConfigError>;

/// A path that must be present and not empty, resolved against `base_dir`.
pub(crate) fn required_path(key: &str, value: Option<String>, base_dir: &Path) -> Result<PathBuf> {
    let value = value.ok_or_else(|| ConfigError::invalid(key, "required"))?;
    if value.is_empty() {
        return Err(ConfigError::invalid(key, "empty path"));
    }
    let path = Path::new(&value);
    Ok(if path.is_absolute() {
        path.to_path_buf()
    } else {
        base_dir.join(path)
    })
}

/// A duration ([`greenarrow_proxy_proto::duration`]), not zero and not absurdly long.
pub(crate) fn duration(key: &str, value: Option<String>, default: Duration) -> Result<Duration> {
    bounded_duration(key, value, default, false, MAX_DURATION)
}

/// A duration ([`greenarrow_proxy_proto::duration`]: `30s`, `500ms`, `5m`; `0` where zero is accepted) within
/// `max`, zero accepted when `zero_ok`; the error names `key` and the text.
pub(crate) fn bounded_duration(
    key: &str,
    value: Option<String>,
    default: Duration,
    zero_ok: bool,
    max: Duration,
) -> Result<Duration> {
    let Some(text) = value else {
        return Ok(default);
    };
    let bounds = greenarrow_proxy_proto::duration::Bounds {
        zero_ok,
        bare_seconds: false,
        max,
    };
    greenarrow_proxy_proto::duration::parse(&text, bounds).map_err(|e| {
        let why = match e {
            greenarrow_proxy_proto::duration::DurationError::Syntax(_) => {
                format!("invalid duration {text:?}: {e}")
            }
            _ => format!("duration {text:?} {e}"),
        };
        ConfigError::invalid(key, why)
    })
}

/// An integer within `range`.
pub(crate) fn number(
    key: &str,
    value: Option<u64>,
    default: usize,
    range: RangeInclusive<u64>,
) -> Result<usize> {
    let Some(n) = value else {
        return Ok(default);
    };
    if !range.contains(&n) {
        return Err(ConfigError::invalid(
            key,
            format!(
                "{n} is out of range; allowed: {} to {}",
                range.start(),
                range.end()
            ),
        ));
    }
    usize::try_from(n).map_err(|_| ConfigError::invalid(key, format!("{n} is too large")))
}

pub(crate) fn networks(
    key: &str,
    value: Option<StringList>,
    default: &[&str],
) -> Result<Vec<IpNet>> {
    let list = value.map_or_else(|| default.iter().map(|s| s.to_string()).collect(), |l| l.0);
    list.iter()
        .enumerate()
        .map(|(i, s)| {
            IpNet::parse(s).map_err(|e| {
                ConfigError::invalid(format!("{key}[{i}]"), format!("invalid network {s:?}: {e}"))
            })
        })
        .collect()
}

/// `IP:port` (IPv6 as `[::1]:807`); with `default_port`, a bare IP too.
pub(crate) fn socket_addrs(
    key: &str,
    value: Option<StringList>,
    default: &[&str],
    default_port: Option<u16>,
) -> Result<Vec<SocketAddr>> {
    let list = value.map_or_else(|| default.iter().map(|s| s.to_string()).collect(), |l| l.0);
    list.iter()
        .enumerate()
        .map(|(i, s)| {
            let key = || format!("{key}[{i}]");
            let addr = match (s.parse::<SocketAddr>(), default_port) {
                (Ok(addr), _) => addr,
                (Err(_), Some(port)) => match s.parse::<IpAddr>() {
                    Ok(ip) => SocketAddr::new(ip, port),
                    Err(_) => {
                        return Err(ConfigError::invalid(
                            key(),
                            format!("{s:?} is not an IP address or IP:port (IPv6 as [::1]:53)"),
                        ))
                    }
                },
                (Err(_), None) => {
                    return Err(ConfigError::invalid(
                        key(),
                        format!(
                            "{s:?} is not an IP:port address (e.g. 127.0.0.1:807 or [::1]:807)"
                        ),
                    ))
                }
            };
            if default_port.is_some() && addr.port() == 0 {
                return Err(ConfigError::invalid(key(), format!("port 0 in {s:?}")));
            }
            Ok(addr)
        })
        .collect()
}
