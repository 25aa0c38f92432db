//! Configuration: the YAML file, its defaults and its validation.
//!
//! The file is read in two layers: `raw` (serde structs, every key optional,
//! unknown keys refused) and [`Config`] (validated, parsed types, defaults
//! filled in). Every error names the full dotted key, e.g.
//! `timeouts.mx_command: invalid duration "5 parsecs": ...`.
//! See `docs/CONFIG.md` for the reference of every key.
//!
//! Modules import one way, from the serde layer up (tests/architecture.rs finds no circle):
//! `raw` (serde types, imports nothing here) → `values` (one value parsed, the key named) →
//! the sections, each its typed form, its `Serialize` (the effective configuration) and its
//! validation: `sections` (limits, timeouts, pool, dns), `mx_tls`, `secret`, `access`,
//! `frontends`, `caps`, `status` → `model` (`Config` and its lookups) → `validate` (the
//! whole file) → this module (`load`, `from_yaml_str`, `to_effective_yaml`). Beside them:
//! `error`/`suggest` (diagnostics), `net`, `ser`, `readable`; above `model`: `files`, `host`.

mod access;
mod caps;
mod error;
pub mod files;
mod frontends;
pub mod host;
mod model;
mod mta_sts;
mod mx_tls;
mod net;
mod raw;
mod readable;
mod secret;
mod sections;
mod ser;
mod shared_caps;
mod status;
mod suggest;
mod validate;
mod values;

#[cfg(test)]
mod tests;

pub use access::{valid_client_name, Client, Identity, DEFAULT_CLIENT, DEFAULT_DESTINATION_DENY};
pub use caps::{
    CapDestination, CapLimits, CapsConfig, DestinationGroup, PairCaps, SharedConfig, SourceCaps,
    DEFAULT_CAPS_WAIT, DEFAULT_CAPS_WINDOW,
};
pub use error::ConfigError;
pub use frontends::{Frontend, FrontendKind, FrontendMode, SmtpMode, SocksAuth};
pub use model::Config;
pub use mta_sts::StsSettings;
pub use mx_tls::{enforcement_word, MxTls, TlsVersion};
pub use net::{IpNet, IpNetError};
pub use secret::Secret;
pub use sections::{DnsConfig, Limits, PoolConfig, Probe, Timeouts};
pub use status::{MetricsConfig, DEFAULT_CONTROL_SOCKET};
pub use validate::{
    DEFAULT_ALLOW_FROM, DEFAULT_DESTINATION_PORTS, DEFAULT_LISTEN, DEFAULT_MAX_QUEUED_SESSIONS,
    DEFAULT_MAX_SESSIONS, DEFAULT_MAX_SESSIONS_PER_IP,
};

use std::io::Read;
use std::path::Path;

/// Where the daemon looks for its configuration by default.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/greenarrow_proxy/greenarrow_proxy.yaml";

/// Largest configuration file accepted.
const MAX_CONFIG_FILE_BYTES: u64 = 1024 * 1024;

impl Config {
    /// Reads and validates the configuration file at `path`. Relative paths
    /// in it are resolved against the file's directory.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let io_err = |source| ConfigError::Io {
            path: path.to_path_buf(),
            source,
        };
        let file = std::fs::File::open(path).map_err(io_err)?;
        let mut text = String::new();
        file.take(MAX_CONFIG_FILE_BYTES + 1)
            .read_to_string(&mut text)
            .map_err(io_err)?;
        if text.len() as u64 > MAX_CONFIG_FILE_BYTES {
            return Err(io_err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "file is larger than 1 MiB",
            )));
        }
        let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
        let base_dir = absolute.parent().unwrap_or(Path::new("/"));
        Config::from_yaml_str(&text, base_dir)
    }

    /// Parses and validates configuration text. Relative paths (certificate,
    /// key, secret file, CA file) are resolved against `base_dir`, and the
    /// secret file, if any, is read.
    pub fn from_yaml_str(yaml: &str, base_dir: &Path) -> Result<Config, ConfigError> {
        let raw: raw::RawConfig = yaml_serde::from_str(yaml).map_err(|e| error::from_yaml(&e))?;
        validate::validate(raw, base_dir)
    }

    /// The effective configuration as YAML: every key, defaults filled in,
    /// paths resolved, the inline secrets shown as `<redacted>`. Parsing it
    /// back (with the real secrets put in) gives the same `Config`. It is `Config`'s own
    /// serialisation: the keys are declared once, by the typed configuration.
    pub fn to_effective_yaml(&self) -> String {
        let body = yaml_serde::to_string(self)
            .unwrap_or_else(|e| format!("# cannot serialize the effective configuration: {e}\n"));
        format!(
            "# Effective greenarrow_proxy configuration: every key, defaults filled in.\n\
             # An inline auth_shared_secret is redacted.\n{body}"
        )
    }
}
