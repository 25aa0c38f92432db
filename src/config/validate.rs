//! From [`RawConfig`] to [`Config`]: the top-level keys, and each section through its own
//! module (`sections`, `access`, `secret`, `frontends`, `caps`, `status`). Every error names
//! the full dotted key. Nothing in the configuration imports this module but `mod.rs`.

use super::access::{self, Client, DEFAULT_CLIENT};
use super::error::ConfigError;
use super::model::Config;
use super::raw::RawConfig;
use super::values::{networks, number, required_path, socket_addrs};
use super::{caps, frontends, secret, sections, status};
use std::path::Path;

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
            secret::top_level(inline, raw.auth_shared_secret_file, base_dir, &mut warnings)?;
        (vec![s], f)
    } else {
        (Vec::new(), None)
    };
    let mut clients = Vec::with_capacity(named.len() + 1);
    // Front-ends only and no clients: a `default` client without a secret, which front-ends
    // that do not authenticate act as (a SOCKS5 `auth: password` one then has no secret to
    // check: refused in `frontends`).
    if !secrets.is_empty() || (frontends_only && named.is_empty()) {
        clients.push(Client {
            name: DEFAULT_CLIENT.to_string(),
            inline_secrets: usize::from(!secrets.is_empty() && auth_shared_secret_file.is_none()),
            secrets,
            secret_files: auth_shared_secret_file.into_iter().collect(),
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
    let frontends = frontends::frontends(raw.frontends, &listen, &clients)?;

    Ok(Config {
        listen,
        listen_freebind: raw.listen_freebind.unwrap_or(false),
        allow_from,
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
        state_directory: status::state_directory(
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
        limits: sections::limits(raw.limits.unwrap_or_default())?,
        timeouts: sections::timeouts(raw.timeouts.unwrap_or_default())?,
        mx_tls: super::mx_tls::mx_tls(raw.mx_tls.unwrap_or_default(), base_dir)?,
        pool: sections::pool(raw.pool.unwrap_or_default())?,
        dns: sections::dns(raw.dns.unwrap_or_default())?,
        frontends,
        caps: caps::caps(raw.caps, base_dir)?,
        control_socket: status::control_socket(raw.control_socket, base_dir)?,
        metrics: status::metrics(raw.metrics)?,
        warnings,
    })
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
