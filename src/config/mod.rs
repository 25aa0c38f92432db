//! Configuration: the YAML file, its defaults and its validation.
//!
//! The file is read in two layers: `raw` (serde structs, every key optional,
//! unknown keys refused) and [`Config`] (validated, parsed types, defaults
//! filled in). Every error names the full dotted key, e.g.
//! `timeouts.mx_command: invalid duration "5 parsecs": ...`.
//! See `docs/CONFIG.md` for the reference of every key.

mod access;
mod caps;
mod effective;
mod error;
pub mod files;
mod frontends;
pub mod host;
mod net;
mod raw;
mod secret;
mod status;
mod suggest;
mod validate;

#[cfg(test)]
mod tests;

pub use access::{valid_client_name, Client, Identity, DEFAULT_CLIENT, DEFAULT_DESTINATION_DENY};
pub use caps::{
    CapDestination, CapLimits, CapsConfig, DestinationGroup, PairCaps, SourceCaps,
    DEFAULT_CAPS_WAIT, DEFAULT_CAPS_WINDOW,
};
pub use error::ConfigError;
pub use frontends::{Frontend, FrontendKind, FrontendMode, SmtpMode, SocksAuth};
pub use net::{IpNet, IpNetError};
pub use secret::Secret;
pub use status::{MetricsConfig, DEFAULT_CONTROL_SOCKET};

use std::fmt;
use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where the daemon looks for its configuration by default.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/greenarrow_proxy/greenarrow_proxy.yaml";

/// Default `listen` addresses.
pub const DEFAULT_LISTEN: &[&str] = &["127.0.0.1:807", "[::1]:807"];
/// Default `allow_from` networks.
pub const DEFAULT_ALLOW_FROM: &[&str] = &["127.0.0.0/8", "::1/128"];
/// Default `destination_ports`.
pub const DEFAULT_DESTINATION_PORTS: &[u16] = &[25, 465, 587, 2525];
/// Default `max_sessions`.
pub const DEFAULT_MAX_SESSIONS: usize = 1000;
/// Default `max_sessions_per_ip`.
pub const DEFAULT_MAX_SESSIONS_PER_IP: usize = 500;
/// Default `max_queued_sessions`.
pub const DEFAULT_MAX_QUEUED_SESSIONS: usize = 64;

/// Largest configuration file accepted.
const MAX_CONFIG_FILE_BYTES: u64 = 1024 * 1024;

/// The validated configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Addresses the MTA-facing TLS listener binds; empty in a front-end-only deployment.
    pub listen: Vec<SocketAddr>,
    /// Bind every listener (native and front-ends) with `IP_FREEBIND`, so that an address
    /// not (yet) on the host — a virtual address keepalived moves here — can be listened on.
    pub listen_freebind: bool,
    /// Networks MTAs may connect from.
    pub allow_from: Vec<IpNet>,
    /// The top-level shared secret(s) (`auth_shared_secret[_file]`); empty when only
    /// named clients are configured.
    pub secrets: Vec<Secret>,
    /// Where the secret was read from, if `auth_shared_secret_file` was used
    /// (absolute or relative to the config file's directory, resolved).
    pub auth_shared_secret_file: Option<PathBuf>,
    /// Every client: `default` (the top-level secret, if any) first, then `clients:`.
    pub clients: Vec<Client>,
    /// CA whose client certificates identify clients (mutual TLS); None: no client certificates.
    pub tls_client_ca: Option<PathBuf>,
    /// MX networks that may not be reached (unless in `destination_allow`).
    pub destination_deny: Vec<IpNet>,
    /// Exceptions to `destination_deny`.
    pub destination_allow: Vec<IpNet>,
    /// Concurrent sessions from one MTA address.
    pub max_sessions_per_ip: usize,
    /// Log every session event, not only problems.
    pub log_verbose: bool,
    /// Log one line per relayed session at info level (the audit trail).
    pub log_sessions: bool,
    /// Where drains are kept across restarts; None: not kept.
    pub state_directory: Option<PathBuf>,
    /// PEM certificate chain of the MTA-facing listener; `None` only without a native
    /// listener (`listen: []`, front-ends only).
    pub tls_certificate: Option<PathBuf>,
    /// PEM private key of the MTA-facing listener; `None` as `tls_certificate`.
    pub tls_private_key: Option<PathBuf>,
    /// Addresses (networks) MTAs may ask to use as the source address.
    pub source_addresses: Vec<IpNet>,
    /// MX ports MTAs may ask to connect to.
    pub destination_ports: Vec<u16>,
    /// Concurrent MTA sessions (worker threads).
    pub max_sessions: usize,
    /// Accepted connections that may wait for a free worker.
    pub max_queued_sessions: usize,
    /// Line and count limits.
    pub limits: Limits,
    /// Timeouts.
    pub timeouts: Timeouts,
    /// TLS towards the MX.
    pub mx_tls: MxTls,
    /// Pool of idle MX connections.
    pub pool: PoolConfig,
    /// DNS resolution.
    pub dns: DnsConfig,
    /// PROXY protocol and SOCKS5 listeners for MTAs that do not speak the native protocol.
    pub frontends: Vec<frontends::Frontend>,
    /// Connection caps per (source IP, destination), destination groups, waiting at a cap.
    pub caps: CapsConfig,
    /// The control socket (`gaproxy status`, `drain`); None: none.
    pub control_socket: Option<PathBuf>,
    /// The metrics listener.
    pub metrics: MetricsConfig,
    /// Things that are allowed but probably wrong; log them at startup.
    pub warnings: Vec<String>,
}

/// `limits:` bounds on what peers send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Longest command line from the MTA, in bytes including CRLF.
    pub max_command_line: usize,
    /// Longest reply line from the MX, in bytes including CRLF.
    pub max_reply_line: usize,
    /// Most lines in one (multi-line) MX reply.
    pub max_reply_lines: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_command_line: 4096,
            max_reply_line: 4096,
            max_reply_lines: 128,
        }
    }
}

/// `timeouts:`
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// TLS handshake with the MTA.
    pub mta_handshake: Duration,
    /// Waiting for the MTA's next bytes.
    pub mta_idle: Duration,
    /// From accept (TLS handshake included) to a successful `AUTH`: one deadline for a
    /// connection not yet authenticated.
    pub mta_auth: Duration,
    /// Longest life of one MTA connection.
    pub session_lifetime: Duration,
    /// TCP connect to the MX.
    pub mx_connect: Duration,
    /// The MX's greeting banner.
    pub mx_banner: Duration,
    /// Each reply to a command, EHLO included.
    pub mx_command: Duration,
    /// The reply after the end of a message.
    pub mx_data_done: Duration,
    /// STARTTLS handshake with the MX.
    pub mx_tls_handshake: Duration,
    /// How long SIGTERM waits for sessions in progress.
    pub shutdown_grace: Duration,
}

impl Default for Timeouts {
    fn default() -> Timeouts {
        Timeouts {
            mta_handshake: Duration::from_secs(10),
            mta_idle: Duration::from_secs(5 * 60),
            mta_auth: Duration::from_secs(10),
            session_lifetime: Duration::from_secs(3600),
            mx_connect: Duration::from_secs(30),
            mx_banner: Duration::from_secs(5 * 60),
            mx_command: Duration::from_secs(5 * 60),
            mx_data_done: Duration::from_secs(10 * 60),
            mx_tls_handshake: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(30),
        }
    }
}

/// Lowest TLS version accepted towards the MX.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TlsVersion {
    /// TLS 1.2 (and 1.3).
    #[default]
    Tls12,
    /// TLS 1.3 only.
    Tls13,
}

impl fmt::Display for TlsVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TlsVersion::Tls12 => "1.2",
            TlsVersion::Tls13 => "1.3",
        })
    }
}

/// `mx_tls:`
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MxTls {
    /// Lowest TLS version accepted.
    pub min_version: TlsVersion,
    /// Extra PEM roots added to the system roots for certificate verification.
    pub ca_file: Option<PathBuf>,
}

/// What to send on a pooled connection before handing it out again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Probe {
    /// Nothing; a dead connection shows up on the MTA's first command.
    #[default]
    None,
    /// `NOOP`, expecting 250.
    Noop,
    /// `RSET`, expecting 250.
    Rset,
}

impl fmt::Display for Probe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Probe::None => "none",
            Probe::Noop => "noop",
            Probe::Rset => "rset",
        })
    }
}

/// `pool:` reuse of idle MX connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolConfig {
    /// A connection is not reused after this age, counted from connect.
    pub reuse_time_limit: Duration,
    /// Idle connections older than this are closed.
    pub idle_ttl: Duration,
    /// Most idle connections per (source, EHLO name, MX address and port) key; 0 disables pooling.
    pub max_idle_per_key: usize,
    /// Most idle connections in total; 0 disables pooling.
    pub max_idle_total: usize,
    /// What to send before handing out a pooled connection.
    pub checkout_probe: Probe,
}

impl Default for PoolConfig {
    fn default() -> PoolConfig {
        PoolConfig {
            reuse_time_limit: Duration::from_secs(300),
            idle_ttl: Duration::from_secs(30),
            max_idle_per_key: 16,
            max_idle_total: 2000,
            checkout_probe: Probe::None,
        }
    }
}

/// `dns:`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsConfig {
    /// Name servers to ask; empty means those of `/etc/resolv.conf`.
    pub nameservers: Vec<SocketAddr>,
    /// Timeout of one query attempt.
    pub timeout: Duration,
    /// Retries of a query after a timeout or network error (sent `attempts + 1` times at most).
    pub attempts: usize,
}

impl Default for DnsConfig {
    fn default() -> DnsConfig {
        DnsConfig {
            nameservers: Vec::new(),
            timeout: Duration::from_secs(5),
            attempts: 2,
        }
    }
}

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
    /// paths resolved, the inline secret shown as `<redacted>`. Parsing it
    /// back (with the real secret put in) gives the same `Config`.
    pub fn to_effective_yaml(&self) -> String {
        effective::to_yaml(self)
    }

    /// Whether `candidate` is the secret of any client (see [`Config::authenticate`]).
    pub fn secret_matches(&self, candidate: &[u8]) -> bool {
        self.authenticate(candidate).is_some()
    }
}
