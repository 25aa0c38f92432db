//! The plain sections: `limits`, `timeouts`, `pool` and `dns` (`mx_tls` has its own file): their validated
//! types (serialised as the file writes them, for the effective configuration), defaults,
//! and their validation from the raw form. Every error names the full dotted key.

use super::error::ConfigError;
use super::raw::{RawDns, RawLimits, RawPool, RawTimeouts};
use super::ser;
use super::values::{duration, number, socket_addrs};
use serde::{Serialize, Serializer};
use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

type Result<T, E = ConfigError> = std::result::Result<T, E>;

/// `limits:` bounds on what peers send.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Timeouts {
    /// TLS handshake with the MTA.
    #[serde(serialize_with = "ser::duration")]
    pub mta_handshake: Duration,
    /// Waiting for the MTA's next bytes.
    #[serde(serialize_with = "ser::duration")]
    pub mta_idle: Duration,
    /// From accept (TLS handshake included) to a successful `AUTH`: one deadline for a
    /// connection not yet authenticated.
    #[serde(serialize_with = "ser::duration")]
    pub mta_auth: Duration,
    /// Longest life of one MTA connection.
    #[serde(serialize_with = "ser::duration")]
    pub session_lifetime: Duration,
    /// TCP connect to the MX.
    #[serde(serialize_with = "ser::duration")]
    pub mx_connect: Duration,
    /// The MX's greeting banner.
    #[serde(serialize_with = "ser::duration")]
    pub mx_banner: Duration,
    /// Each reply to a command, EHLO included.
    #[serde(serialize_with = "ser::duration")]
    pub mx_command: Duration,
    /// The reply after the end of a message.
    #[serde(serialize_with = "ser::duration")]
    pub mx_data_done: Duration,
    /// STARTTLS handshake with the MX.
    #[serde(serialize_with = "ser::duration")]
    pub mx_tls_handshake: Duration,
    /// How long SIGTERM waits for sessions in progress.
    #[serde(serialize_with = "ser::duration")]
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

impl Serialize for Probe {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct PoolConfig {
    /// A connection is not reused after this age, counted from connect.
    #[serde(serialize_with = "ser::duration")]
    pub reuse_time_limit: Duration,
    /// Idle connections older than this are closed.
    #[serde(serialize_with = "ser::duration")]
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DnsConfig {
    /// Name servers to ask; empty means those of `/etc/resolv.conf`.
    pub nameservers: Vec<SocketAddr>,
    /// Timeout of one query attempt.
    #[serde(serialize_with = "ser::duration")]
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

pub(crate) fn limits(raw: RawLimits) -> Result<Limits> {
    let d = Limits::default();
    // RFC 5321 4.5.3.1.4/.5: lines of 512 octets must be accepted.
    Ok(Limits {
        max_command_line: number(
            "limits.max_command_line",
            raw.max_command_line,
            d.max_command_line,
            512..=1024 * 1024,
        )?,
        max_reply_line: number(
            "limits.max_reply_line",
            raw.max_reply_line,
            d.max_reply_line,
            512..=1024 * 1024,
        )?,
        max_reply_lines: number(
            "limits.max_reply_lines",
            raw.max_reply_lines,
            d.max_reply_lines,
            1..=10_000,
        )?,
    })
}

pub(crate) fn timeouts(raw: RawTimeouts) -> Result<Timeouts> {
    let d = Timeouts::default();
    let t = |name: &str, value: Option<String>, default| {
        duration(&format!("timeouts.{name}"), value, default)
    };
    Ok(Timeouts {
        mta_handshake: t("mta_handshake", raw.mta_handshake, d.mta_handshake)?,
        mta_idle: t("mta_idle", raw.mta_idle, d.mta_idle)?,
        mta_auth: t("mta_auth", raw.mta_auth, d.mta_auth)?,
        session_lifetime: t("session_lifetime", raw.session_lifetime, d.session_lifetime)?,
        mx_connect: t("mx_connect", raw.mx_connect, d.mx_connect)?,
        mx_banner: t("mx_banner", raw.mx_banner, d.mx_banner)?,
        mx_command: t("mx_command", raw.mx_command, d.mx_command)?,
        mx_data_done: t("mx_data_done", raw.mx_data_done, d.mx_data_done)?,
        mx_tls_handshake: t("mx_tls_handshake", raw.mx_tls_handshake, d.mx_tls_handshake)?,
        shutdown_grace: t("shutdown_grace", raw.shutdown_grace, d.shutdown_grace)?,
    })
}

pub(crate) fn pool(raw: RawPool) -> Result<PoolConfig> {
    let d = PoolConfig::default();
    let checkout_probe = match raw.checkout_probe.as_deref() {
        None => d.checkout_probe,
        Some("none") => Probe::None,
        Some("noop") => Probe::Noop,
        Some("rset") => Probe::Rset,
        Some(other) => {
            return Err(ConfigError::invalid(
                "pool.checkout_probe",
                format!("{other:?} is not one of \"none\", \"noop\", \"rset\""),
            ))
        }
    };
    Ok(PoolConfig {
        reuse_time_limit: duration(
            "pool.reuse_time_limit",
            raw.reuse_time_limit,
            d.reuse_time_limit,
        )?,
        idle_ttl: duration("pool.idle_ttl", raw.idle_ttl, d.idle_ttl)?,
        max_idle_per_key: number(
            "pool.max_idle_per_key",
            raw.max_idle_per_key,
            d.max_idle_per_key,
            0..=100_000,
        )?,
        max_idle_total: number(
            "pool.max_idle_total",
            raw.max_idle_total,
            d.max_idle_total,
            0..=1_000_000,
        )?,
        checkout_probe,
    })
}

pub(crate) fn dns(raw: RawDns) -> Result<DnsConfig> {
    let d = DnsConfig::default();
    Ok(DnsConfig {
        nameservers: socket_addrs("dns.nameservers", raw.nameservers, &[], Some(53))?,
        timeout: duration("dns.timeout", raw.timeout, d.timeout)?,
        attempts: number("dns.attempts", raw.attempts, d.attempts, 1..=10)?,
    })
}
