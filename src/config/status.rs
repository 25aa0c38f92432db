//! `control_socket:` and `metrics:` — the control socket's path and the optional metrics
//! listener.

use super::error::ConfigError;
use super::raw::RawMetrics;
use super::ser;
use serde::Serialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// Default `control_socket` (systemd creates the directory: `RuntimeDirectory=`).
pub const DEFAULT_CONTROL_SOCKET: &str = "/run/greenarrow_proxy/control.sock";

/// Longest socket path the kernel takes (`sun_path` less its terminating NUL).
const MAX_SOCKET_PATH: usize = 107;

/// `metrics:`
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct MetricsConfig {
    /// Where to serve `/metrics`; None (`none`, the default): no listener.
    #[serde(serialize_with = "ser::or_none")]
    pub listen: Option<SocketAddr>,
    /// Whether `listen` may be other than a loopback address.
    pub allow_remote: bool,
}

/// `control_socket`: a path (relative to the configuration file's directory), or `none`.
pub(crate) fn control_socket(
    raw: Option<String>,
    base_dir: &Path,
) -> Result<Option<PathBuf>, ConfigError> {
    let key = "control_socket";
    let raw = raw.unwrap_or_else(|| DEFAULT_CONTROL_SOCKET.to_string());
    if raw == "none" {
        return Ok(None);
    }
    if raw.is_empty() {
        return Err(ConfigError::invalid(
            key,
            "empty; give a path, or none to have no control socket",
        ));
    }
    let path = base_dir.join(&raw);
    let len = path.as_os_str().len();
    if len > MAX_SOCKET_PATH {
        return Err(ConfigError::invalid(
            key,
            format!(
                "{} is {len} bytes long; a Unix socket path has at most {MAX_SOCKET_PATH}",
                path.display()
            ),
        ));
    }
    Ok(Some(path))
}

/// `state_directory`: a path (relative to the configuration file's directory) or `none`;
/// unset, the first directory of `env` (`STATE_DIRECTORY`, set by systemd for
/// `StateDirectory=`; a colon-separated list), else none.
pub(crate) fn state_directory(
    raw: Option<String>,
    env: Option<std::ffi::OsString>,
    base_dir: &Path,
) -> Result<Option<PathBuf>, ConfigError> {
    match raw.as_deref() {
        Some("none") => Ok(None),
        Some("") => Err(ConfigError::invalid(
            "state_directory",
            "empty; give a directory, or none to keep no state across restarts",
        )),
        Some(p) => Ok(Some(base_dir.join(p))),
        None => Ok(env.and_then(|v| {
            let first = v.to_string_lossy().split(':').next()?.to_string();
            (!first.is_empty()).then(|| PathBuf::from(first))
        })),
    }
}

/// `metrics:`
pub(crate) fn metrics(raw: Option<RawMetrics>) -> Result<MetricsConfig, ConfigError> {
    let raw = raw.unwrap_or_default();
    let allow_remote = raw.allow_remote.unwrap_or(false);
    let listen = match raw.listen.as_deref() {
        None | Some("none") => None,
        Some(s) => {
            let addr: SocketAddr = s.parse().map_err(|_| {
                ConfigError::invalid(
                    "metrics.listen",
                    format!("{s:?} is not an address and port (e.g. 127.0.0.1:9807), or none"),
                )
            })?;
            if !addr.ip().is_loopback() && !allow_remote {
                return Err(ConfigError::invalid(
                    "metrics.listen",
                    format!(
                        "{addr} is not a loopback address; set metrics.allow_remote: true to serve the metrics beyond this host"
                    ),
                ));
            }
            Some(addr)
        }
    };
    Ok(MetricsConfig {
        listen,
        allow_remote,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(listen: &str, allow_remote: Option<bool>) -> Option<RawMetrics> {
        Some(RawMetrics {
            listen: Some(listen.into()),
            allow_remote,
        })
    }

    #[test]
    fn metrics_listen_only_on_loopback_unless_allowed() {
        assert_eq!(metrics(None).unwrap(), MetricsConfig::default());
        assert_eq!(metrics(raw("none", None)).unwrap().listen, None);
        let l = metrics(raw("[::1]:9807", None)).unwrap();
        assert_eq!(l.listen, Some("[::1]:9807".parse().unwrap()));
        let e = metrics(raw("192.0.2.1:9807", None))
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "metrics.listen: 192.0.2.1:9807 is not a loopback address; set metrics.allow_remote: true to serve the metrics beyond this host"
        );
        assert!(metrics(raw("192.0.2.1:9807", Some(true))).is_ok());
        let e = metrics(raw("localhost:9807", None))
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("metrics.listen: \"localhost:9807\" is not"),
            "{e}"
        );
    }

    #[test]
    fn control_socket_default_relative_none_and_too_long() {
        let base = Path::new("/etc/gap");
        assert_eq!(
            control_socket(None, base).unwrap(),
            Some(PathBuf::from(DEFAULT_CONTROL_SOCKET))
        );
        assert_eq!(
            control_socket(Some("c.sock".into()), base).unwrap(),
            Some(PathBuf::from("/etc/gap/c.sock"))
        );
        assert_eq!(control_socket(Some("none".into()), base).unwrap(), None);
        let e = control_socket(Some("/x".repeat(60)), base)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("control_socket: /x/x"), "{e}");
        assert!(e.ends_with("a Unix socket path has at most 107"), "{e}");
        assert!(control_socket(Some(String::new()), base).is_err());
    }
}
