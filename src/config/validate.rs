//! From [`RawConfig`] to [`Config`]: defaults, parsing and range checks. Every
//! error names the full dotted key.

use super::access;
use super::raw::{RawConfig, RawDns, RawLimits, RawMxTls, RawPool, RawTimeouts, StringList};
use super::{
    Config, ConfigError, DnsConfig, IpNet, Limits, MxTls, PoolConfig, Probe, Timeouts, TlsVersion,
    DEFAULT_ALLOW_FROM, DEFAULT_DESTINATION_PORTS, DEFAULT_LISTEN, DEFAULT_MAX_QUEUED_SESSIONS,
    DEFAULT_MAX_SESSIONS, DEFAULT_MAX_SESSIONS_PER_IP,
};
use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Longest duration accepted anywhere: longer is a mistake (and would risk
/// overflow in `Instant` arithmetic).
const MAX_DURATION: Duration = Duration::from_secs(7 * 24 * 3600);

type Result<T> = std::result::Result<T, ConfigError>;

pub(crate) fn validate(raw: RawConfig, base_dir: &Path) -> Result<Config> {
    let mut warnings = Vec::new();

    let listen = socket_addrs("listen", raw.listen, DEFAULT_LISTEN, None)?;
    // Front-ends only: no native listener, so no certificate and no secret needed for it.
    let frontends_only = listen.is_empty();
    if frontends_only && raw.frontends.as_ref().is_none_or(Vec::is_empty) {
        return Err(ConfigError::invalid(
            "listen",
            "empty list; at least one address to listen on is required (an empty list is \
             for a proxy with front-ends only: then set frontends)",
        ));
    }
    for (i, addr) in listen.iter().enumerate() {
        if listen[..i].contains(addr) {
            return Err(ConfigError::invalid(
                format!("listen[{i}]"),
                format!("{addr} is listed twice"),
            ));
        }
    }

    let allow_from = networks("allow_from", raw.allow_from, DEFAULT_ALLOW_FROM)?;
    if allow_from.is_empty() {
        return Err(ConfigError::invalid(
            "allow_from",
            "empty list; no MTA could connect",
        ));
    }

    let tls_client_ca = raw
        .tls_client_ca
        .map(|p| required_path("tls_client_ca", Some(p), base_dir))
        .transpose()?;
    let named = access::clients(raw.clients, tls_client_ca.is_some(), base_dir)?;
    let inline = raw.auth_shared_secret.map(|s| s.0);
    let given = inline.is_some() || raw.auth_shared_secret_file.is_some();
    let (secrets, auth_shared_secret_file) = if given || (named.is_empty() && !frontends_only) {
        let (s, f) =
            super::secret::top_level(inline, raw.auth_shared_secret_file, base_dir, &mut warnings)?;
        (vec![s], f)
    } else {
        (Vec::new(), None)
    };
    let mut clients = Vec::with_capacity(named.len() + 1);
    // Front-ends only and no clients: a `default` client without a secret, which front-ends
    // that do not authenticate act as (a SOCKS5 `auth: password` one then has no secret to
    // check: refused in `frontends`).
    if !secrets.is_empty() || (frontends_only && named.is_empty()) {
        clients.push(access::Client {
            name: access::DEFAULT_CLIENT.to_string(),
            secrets: secrets.clone(),
            inline_secrets: usize::from(auth_shared_secret_file.is_none()),
            secret_files: auth_shared_secret_file.iter().cloned().collect(),
            source_addresses: None,
            tls_client_names: Vec::new(),
        });
    }
    clients.extend(named);
    access::check_unique_secrets(&clients)?;
    let (destination_deny, destination_allow) =
        access::destination_policy(raw.destination_deny, raw.destination_allow)?;

    // Optional without a native listener (if set, still loaded and checked, in pairs).
    let tls_path = |key: &str, value: Option<String>, other: bool| match value {
        None if frontends_only && !other => Ok(None),
        value => required_path(key, value, base_dir).map(Some),
    };
    let tls_certificate = tls_path(
        "tls_certificate",
        raw.tls_certificate,
        raw.tls_private_key.is_some(),
    )?;
    let tls_private_key = tls_path(
        "tls_private_key",
        raw.tls_private_key,
        tls_certificate.is_some(),
    )?;

    let source_addresses = networks("source_addresses", raw.source_addresses, &[])?;
    let uses_top_level = clients.iter().any(|c| c.source_addresses.is_none());
    if source_addresses.is_empty() && uses_top_level {
        return Err(ConfigError::invalid(
            "source_addresses",
            "required and must not be empty: no MTA could connect otherwise",
        ));
    }

    let destination_ports = ports(raw.destination_ports)?;
    let frontends = super::frontends::frontends(raw.frontends, &listen, &clients)?;

    Ok(Config {
        listen,
        listen_freebind: raw.listen_freebind.unwrap_or(false),
        allow_from,
        secrets,
        auth_shared_secret_file,
        clients,
        tls_client_ca,
        destination_deny,
        destination_allow,
        max_sessions_per_ip: number(
            "max_sessions_per_ip",
            raw.max_sessions_per_ip,
            DEFAULT_MAX_SESSIONS_PER_IP,
            1..=100_000,
        )?,
        log_verbose: raw.log_verbose.unwrap_or(false),
        log_sessions: raw.log_sessions.unwrap_or(true),
        state_directory: super::status::state_directory(
            raw.state_directory,
            std::env::var_os("STATE_DIRECTORY"),
            base_dir,
        )?,
        tls_certificate,
        tls_private_key,
        source_addresses,
        destination_ports,
        max_sessions: number(
            "max_sessions",
            raw.max_sessions,
            DEFAULT_MAX_SESSIONS,
            1..=100_000,
        )?,
        max_queued_sessions: number(
            "max_queued_sessions",
            raw.max_queued_sessions,
            DEFAULT_MAX_QUEUED_SESSIONS,
            0..=100_000,
        )?,
        limits: limits(raw.limits.unwrap_or_default())?,
        timeouts: timeouts(raw.timeouts.unwrap_or_default())?,
        mx_tls: mx_tls(raw.mx_tls.unwrap_or_default(), base_dir)?,
        pool: pool(raw.pool.unwrap_or_default())?,
        dns: dns(raw.dns.unwrap_or_default())?,
        frontends,
        caps: super::caps::caps(raw.caps)?,
        control_socket: super::status::control_socket(raw.control_socket, base_dir)?,
        metrics: super::status::metrics(raw.metrics)?,
        warnings,
    })
}

fn limits(raw: RawLimits) -> Result<Limits> {
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

fn timeouts(raw: RawTimeouts) -> Result<Timeouts> {
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

fn mx_tls(raw: RawMxTls, base_dir: &Path) -> Result<MxTls> {
    let min_version = match raw.min_version.as_deref() {
        None => TlsVersion::default(),
        Some("1.2") => TlsVersion::Tls12,
        Some("1.3") => TlsVersion::Tls13,
        Some(other) => {
            return Err(ConfigError::invalid(
                "mx_tls.min_version",
                format!("{other:?} is not supported; use \"1.2\" or \"1.3\""),
            ))
        }
    };
    let ca_file = match raw.ca_file {
        None => None,
        Some(p) => Some(required_path("mx_tls.ca_file", Some(p), base_dir)?),
    };
    Ok(MxTls {
        min_version,
        ca_file,
    })
}

fn pool(raw: RawPool) -> Result<PoolConfig> {
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

fn dns(raw: RawDns) -> Result<DnsConfig> {
    let d = DnsConfig::default();
    Ok(DnsConfig {
        nameservers: socket_addrs("dns.nameservers", raw.nameservers, &[], Some(53))?,
        timeout: duration("dns.timeout", raw.timeout, d.timeout)?,
        attempts: number("dns.attempts", raw.attempts, d.attempts, 1..=10)?,
    })
}

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

/// A duration ([`crate::duration`]), not zero and not absurdly long.
fn duration(key: &str, value: Option<String>, default: Duration) -> Result<Duration> {
    bounded_duration(key, value, default, false, MAX_DURATION)
}

/// A duration ([`crate::duration`]: `30s`, `500ms`, `5m`; `0` where zero is accepted) within
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
    let bounds = crate::duration::Bounds {
        zero_ok,
        bare_seconds: false,
        max,
    };
    crate::duration::parse(&text, bounds).map_err(|e| {
        let why = match e {
            crate::duration::DurationError::Syntax(_) => format!("invalid duration {text:?}: {e}"),
            _ => format!("duration {text:?} {e}"),
        };
        ConfigError::invalid(key, why)
    })
}

/// An integer within `range`.
fn number(
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

fn ports(value: Option<Vec<u64>>) -> Result<Vec<u16>> {
    const KEY: &str = "destination_ports";
    let Some(list) = value else {
        return Ok(DEFAULT_DESTINATION_PORTS.to_vec());
    };
    if list.is_empty() {
        return Err(ConfigError::invalid(
            KEY,
            "empty list; no MTA could connect to any MX",
        ));
    }
    list.iter()
        .enumerate()
        .map(|(i, &p)| match u16::try_from(p) {
            Ok(port) if port != 0 => Ok(port),
            _ => Err(ConfigError::invalid(
                format!("{KEY}[{i}]"),
                format!("port {p} is not valid; use 1 to 65535"),
            )),
        })
        .collect()
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
