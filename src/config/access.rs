//! Access control: named clients with their secrets, source addresses and TLS client
//! identities; and the destination policy (which MX addresses may be reached at all).

use super::error::ConfigError;
use super::net::IpNet;
use super::raw::{RawClient, StringList};
use super::readable::unreadable;
use super::secret::{check_secret, read_secret_file, Secret};
use super::ser::{self, REDACTED};
use super::values::{networks, required_path};
use serde::ser::{SerializeMap, Serializer};
use serde::Serialize;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use subtle::ConstantTimeEq;

/// Destinations refused by default: an authenticated MTA must not be able to use the proxy
/// to reach internal services. Loopback, private (RFC 1918, RFC 4193), shared (RFC 6598),
/// link-local, multicast, documentation, benchmarking and reserved ranges.
pub const DEFAULT_DESTINATION_DENY: &[&str] = &[
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.0.0.0/24",
    "192.0.2.0/24",
    "192.168.0.0/16",
    "198.18.0.0/15",
    "198.51.100.0/24",
    "203.0.113.0/24",
    "224.0.0.0/4",
    "240.0.0.0/4",
    "::/128",
    "::1/128",
    "64:ff9b:1::/48",
    "100::/64",
    "2001:db8::/32",
    "fc00::/7",
    "fe80::/10",
    "ff00::/8",
];

/// The name of the client made from the top-level `auth_shared_secret`.
pub const DEFAULT_CLIENT: &str = "default";

/// A named client (`clients:`), or the `default` client of the top-level secret. Serialised
/// as an entry of `clients:`, its inline secrets redacted.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Client {
    pub name: String,
    /// Inline secrets, then those read from `secret_files` (rotation: several are valid).
    #[serde(skip)]
    pub secrets: Vec<Secret>,
    /// How many of `secrets` were written inline (the rest came from `secret_files`).
    #[serde(
        rename = "secrets",
        serialize_with = "ser::redacted",
        skip_serializing_if = "ser::is_zero"
    )]
    pub inline_secrets: usize,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub secret_files: Vec<PathBuf>,
    /// Source addresses this client may use; `None`: the top-level `source_addresses`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_addresses: Option<Vec<IpNet>>,
    /// DNS names in a client certificate (verified against `tls_client_ca`) that identify
    /// this client without a secret.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tls_client_names: Vec<String>,
}

/// `Config::clients` as the file writes them: the `default` client as `auth_shared_secret`
/// (redacted) or `auth_shared_secret_file`, the named ones under `clients:`.
pub(crate) fn serialize_clients<S: Serializer>(
    clients: &[Client],
    s: S,
) -> Result<S::Ok, S::Error> {
    let mut map = s.serialize_map(None)?;
    let (default, named): (Vec<&Client>, Vec<&Client>) =
        clients.iter().partition(|c| c.name == DEFAULT_CLIENT);
    if let Some(d) = default.first() {
        match d.secret_files.first() {
            Some(path) => map.serialize_entry("auth_shared_secret_file", path)?,
            None if d.inline_secrets > 0 => map.serialize_entry("auth_shared_secret", REDACTED)?,
            None => {}
        }
    }
    if !named.is_empty() {
        map.serialize_entry("clients", &named)?;
    }
    map.end()
}

/// Who a session is, once authenticated.
#[derive(Debug, Clone, Copy)]
pub struct Identity<'a> {
    pub name: &'a str,
    /// The source addresses it may use.
    pub sources: &'a [IpNet],
}

/// The IPv4 address an IPv6 address leads to, for the forms that embed one: IPv4-mapped
/// (`::ffff:0:0/96`), IPv4-compatible (`::/96`), NAT64 with the well-known prefix
/// (`64:ff9b::/96`, RFC 6052) and 6to4 (`2002::/16`, the IPv4 address in bits 16 to 48,
/// RFC 3056).
pub fn embedded_ipv4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = ip.segments();
    let low = |a: u16, b: u16| Ipv4Addr::from((u32::from(a) << 16) | u32::from(b));
    match s {
        [0, 0, 0, 0, 0, 0xffff, a, b] | [0, 0, 0, 0, 0, 0, a, b] => Some(low(a, b)),
        [0x64, 0xff9b, 0, 0, 0, 0, a, b] => Some(low(a, b)),
        [0x2002, a, b, ..] => Some(low(a, b)),
        _ => None,
    }
}

/// Whether `name` may name a client: 1 to 64 letters, digits, `.`, `-` or `_` (also the rule
/// for the names `gaproxy cert --client` puts in client certificates).
pub fn valid_client_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

/// `clients:` validated. `default` (from the top-level secret) is prepended by the caller.
pub(crate) fn clients(
    raw: Option<Vec<RawClient>>,
    tls_client_ca: bool,
    base_dir: &Path,
) -> Result<Vec<Client>, ConfigError> {
    let mut out: Vec<Client> = Vec::new();
    for (i, rc) in raw.unwrap_or_default().into_iter().enumerate() {
        let key = |k: &str| format!("clients[{i}].{k}");
        let name = rc.name.ok_or_else(|| {
            ConfigError::invalid(key("name"), "missing: every client needs a name")
        })?;
        if !valid_client_name(&name) || name == DEFAULT_CLIENT {
            return Err(ConfigError::invalid(
                key("name"),
                format!("{name:?}: use 1 to 64 letters, digits, '.', '-' or '_' (and not {DEFAULT_CLIENT:?}, which is the top-level secret's)"),
            ));
        }
        if out.iter().any(|c| c.name == name) {
            return Err(ConfigError::invalid(
                key("name"),
                format!("{name:?} is used twice"),
            ));
        }
        let mut secrets = Vec::new();
        for (j, s) in rc.secrets.unwrap_or_default().into_iter().enumerate() {
            check_secret(&key(&format!("secrets[{j}]")), &s.0)?;
            secrets.push(Secret::new(s.0.into_bytes()));
        }
        let inline_secrets = secrets.len();
        let mut secret_files = Vec::new();
        for (j, p) in rc
            .secret_files
            .unwrap_or_default()
            .0
            .into_iter()
            .enumerate()
        {
            let k = key(&format!("secret_files[{j}]"));
            let path = required_path(&k, Some(p), base_dir)?;
            let text = read_secret_file(&path)
                .map_err(|e| ConfigError::invalid(&k, unreadable(&path, &e)))?;
            check_secret(&k, &text)?;
            secrets.push(Secret::new(text.into_bytes()));
            secret_files.push(path);
        }
        let tls_client_names: Vec<String> = rc
            .tls_client_names
            .unwrap_or_default()
            .0
            .into_iter()
            .map(|n| n.to_ascii_lowercase())
            .collect();
        if !tls_client_names.is_empty() && !tls_client_ca {
            return Err(ConfigError::invalid(
                key("tls_client_names"),
                "client certificates need tls_client_ca (the CA that issues them)",
            ));
        }
        if secrets.is_empty() && tls_client_names.is_empty() {
            return Err(ConfigError::invalid(
                key("secrets"),
                format!("client {name:?} has no secrets, secret_files or tls_client_names: it could never authenticate"),
            ));
        }
        let source_addresses = match rc.source_addresses {
            None => None,
            Some(list) => {
                let nets = networks(&key("source_addresses"), Some(list), &[])?;
                if nets.is_empty() {
                    return Err(ConfigError::invalid(
                        key("source_addresses"),
                        "empty list: the client could not connect anywhere; leave the key out to use the top-level source_addresses",
                    ));
                }
                Some(nets)
            }
        };
        out.push(Client {
            name,
            secrets,
            inline_secrets,
            secret_files,
            source_addresses,
            tls_client_names,
        });
    }
    Ok(out)
}

/// No secret may belong to two clients (authentication would be ambiguous).
pub(crate) fn check_unique_secrets(clients: &[Client]) -> Result<(), ConfigError> {
    let all: Vec<(&str, &Secret)> = clients
        .iter()
        .flat_map(|c| c.secrets.iter().map(move |s| (c.name.as_str(), s)))
        .collect();
    for (i, (a, s)) in all.iter().enumerate() {
        if let Some((b, _)) = all[..i]
            .iter()
            .find(|(_, t)| bool::from(t.expose().ct_eq(s.expose())))
        {
            return Err(ConfigError::invalid(
                "clients",
                format!(
                    "clients {b:?} and {a:?} share a secret; every secret must identify one client"
                ),
            ));
        }
    }
    Ok(())
}

/// `destination_deny` (default [`DEFAULT_DESTINATION_DENY`]) and `destination_allow`.
pub(crate) fn destination_policy(
    deny: Option<StringList>,
    allow: Option<StringList>,
) -> Result<(Vec<IpNet>, Vec<IpNet>), ConfigError> {
    Ok((
        networks("destination_deny", deny, DEFAULT_DESTINATION_DENY)?,
        networks("destination_allow", allow, &[])?,
    ))
}
