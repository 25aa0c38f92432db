//! The effective configuration as YAML (every key, defaults filled in).

use super::raw::{
    RawClient, RawConfig, RawDns, RawLimits, RawMxTls, RawPool, RawSecret, RawTimeouts, StringList,
};
use super::{Config, DEFAULT_CLIENT};
use std::path::Path;
use std::time::Duration;

/// What an inline secret is shown as.
pub(crate) const REDACTED: &str = "<redacted>";

pub(crate) fn to_yaml(config: &Config) -> String {
    let raw = to_raw(config);
    let body = yaml_serde::to_string(&raw)
        .unwrap_or_else(|e| format!("# cannot serialize the effective configuration: {e}\n"));
    format!(
        "# Effective greenarrow_proxy configuration: every key, defaults filled in.\n\
         # An inline auth_shared_secret is redacted.\n{body}"
    )
}

fn to_raw(c: &Config) -> RawConfig {
    let strings = |items: Vec<String>| Some(StringList(items));
    let (auth_shared_secret, auth_shared_secret_file) = match &c.auth_shared_secret_file {
        Some(path) => (None, Some(path_str(path))),
        None if c.secrets.is_empty() => (None, None),
        None => (Some(RawSecret(REDACTED.to_string())), None),
    };
    let t = &c.timeouts;
    RawConfig {
        listen: strings(c.listen.iter().map(|a| a.to_string()).collect()),
        listen_freebind: Some(c.listen_freebind),
        allow_from: strings(c.allow_from.iter().map(|n| n.to_string()).collect()),
        auth_shared_secret,
        auth_shared_secret_file,
        clients: {
            let named: Vec<RawClient> = c
                .clients
                .iter()
                .filter(|cl| cl.name != DEFAULT_CLIENT)
                .map(|cl| RawClient {
                    name: Some(cl.name.clone()),
                    secrets: (cl.inline_secrets > 0).then(|| {
                        (0..cl.inline_secrets)
                            .map(|_| RawSecret(REDACTED.into()))
                            .collect()
                    }),
                    secret_files: (!cl.secret_files.is_empty())
                        .then(|| StringList(cl.secret_files.iter().map(|p| path_str(p)).collect())),
                    source_addresses: cl
                        .source_addresses
                        .as_ref()
                        .map(|l| StringList(l.iter().map(|n| n.to_string()).collect())),
                    tls_client_names: (!cl.tls_client_names.is_empty())
                        .then(|| StringList(cl.tls_client_names.clone())),
                })
                .collect();
            (!named.is_empty()).then_some(named)
        },
        tls_client_ca: c.tls_client_ca.as_deref().map(path_str),
        log_verbose: Some(c.log_verbose),
        log_sessions: Some(c.log_sessions),
        state_directory: Some(
            c.state_directory
                .as_deref()
                .map_or_else(|| "none".to_string(), path_str),
        ),
        tls_certificate: c.tls_certificate.as_deref().map(path_str),
        tls_private_key: c.tls_private_key.as_deref().map(path_str),
        source_addresses: strings(c.source_addresses.iter().map(|n| n.to_string()).collect()),
        destination_ports: Some(c.destination_ports.iter().map(|&p| u64::from(p)).collect()),
        destination_deny: strings(c.destination_deny.iter().map(|n| n.to_string()).collect()),
        destination_allow: strings(c.destination_allow.iter().map(|n| n.to_string()).collect()),
        max_sessions: Some(c.max_sessions as u64),
        max_sessions_per_ip: Some(c.max_sessions_per_ip as u64),
        max_queued_sessions: Some(c.max_queued_sessions as u64),
        limits: Some(RawLimits {
            max_command_line: Some(c.limits.max_command_line as u64),
            max_reply_line: Some(c.limits.max_reply_line as u64),
            max_reply_lines: Some(c.limits.max_reply_lines as u64),
        }),
        timeouts: Some(RawTimeouts {
            mta_handshake: duration(t.mta_handshake),
            mta_idle: duration(t.mta_idle),
            mta_auth: duration(t.mta_auth),
            session_lifetime: duration(t.session_lifetime),
            mx_connect: duration(t.mx_connect),
            mx_banner: duration(t.mx_banner),
            mx_command: duration(t.mx_command),
            mx_data_done: duration(t.mx_data_done),
            mx_tls_handshake: duration(t.mx_tls_handshake),
            shutdown_grace: duration(t.shutdown_grace),
        }),
        mx_tls: Some(RawMxTls {
            min_version: Some(c.mx_tls.min_version.to_string()),
            ca_file: c.mx_tls.ca_file.as_deref().map(path_str),
        }),
        pool: Some(RawPool {
            reuse_time_limit: duration(c.pool.reuse_time_limit),
            idle_ttl: duration(c.pool.idle_ttl),
            max_idle_per_key: Some(c.pool.max_idle_per_key as u64),
            max_idle_total: Some(c.pool.max_idle_total as u64),
            checkout_probe: Some(c.pool.checkout_probe.to_string()),
        }),
        dns: Some(RawDns {
            nameservers: strings(c.dns.nameservers.iter().map(|a| a.to_string()).collect()),
            timeout: duration(c.dns.timeout),
            attempts: Some(c.dns.attempts as u64),
        }),
        frontends: (!c.frontends.is_empty())
            .then(|| c.frontends.iter().map(|f| f.to_raw()).collect()),
        caps: Some(c.caps.to_raw()),
        control_socket: Some(
            c.control_socket
                .as_deref()
                .map_or("none".to_string(), path_str),
        ),
        metrics: Some(super::raw::RawMetrics {
            listen: Some(
                c.metrics
                    .listen
                    .map_or("none".to_string(), |a| a.to_string()),
            ),
            allow_remote: Some(c.metrics.allow_remote),
        }),
    }
}

fn duration(d: Duration) -> Option<String> {
    Some(humantime::format_duration(d).to_string())
}

fn path_str(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}
