//! The serde layer: the YAML file as written, every key optional, unknown keys
//! refused. Values stay strings here so that validation can name the key in
//! its messages; see `validate.rs` and the section modules. This module imports no other
//! module of the configuration: everything else is built on it.
//!
//! Only read, never written: the effective configuration is the typed `Config`'s own
//! serialisation (the `Serialize` impls beside each typed section).

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;

/// The whole file.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawConfig {
    pub listen: Option<StringList>,
    pub listen_freebind: Option<bool>,
    pub allow_from: Option<StringList>,
    pub auth_shared_secret: Option<RawSecret>,
    pub auth_shared_secret_file: Option<String>,
    pub clients: Option<Vec<RawClient>>,
    pub tls_client_ca: Option<String>,
    pub log_verbose: Option<bool>,
    pub log_sessions: Option<bool>,
    pub state_directory: Option<String>,
    pub tls_certificate: Option<String>,
    pub tls_private_key: Option<String>,
    pub source_addresses: Option<StringList>,
    pub destination_ports: Option<Vec<u64>>,
    pub destination_deny: Option<StringList>,
    pub destination_allow: Option<StringList>,
    pub max_sessions: Option<u64>,
    pub max_sessions_per_ip: Option<u64>,
    pub max_queued_sessions: Option<u64>,
    pub limits: Option<RawLimits>,
    pub timeouts: Option<RawTimeouts>,
    pub mx_tls: Option<RawMxTls>,
    pub pool: Option<RawPool>,
    pub dns: Option<RawDns>,
    pub frontends: Option<Vec<RawFrontend>>,
    pub caps: Option<RawCaps>,
    pub control_socket: Option<String>,
    pub metrics: Option<RawMetrics>,
}

/// `metrics:`
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawMetrics {
    pub listen: Option<String>,
    pub allow_remote: Option<bool>,
}

/// One entry of `clients:`.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawClient {
    pub name: Option<String>,
    pub secrets: Option<Vec<RawSecret>>,
    pub secret_files: Option<StringList>,
    pub source_addresses: Option<StringList>,
    pub tls_client_names: Option<StringList>,
}

/// `limits:`
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawLimits {
    pub max_command_line: Option<u64>,
    pub max_reply_line: Option<u64>,
    pub max_reply_lines: Option<u64>,
}

/// `timeouts:` (humantime durations).
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTimeouts {
    pub mta_handshake: Option<String>,
    pub mta_idle: Option<String>,
    pub mta_auth: Option<String>,
    pub session_lifetime: Option<String>,
    pub mx_connect: Option<String>,
    pub mx_banner: Option<String>,
    pub mx_command: Option<String>,
    pub mx_data_done: Option<String>,
    pub mx_tls_handshake: Option<String>,
    pub shutdown_grace: Option<String>,
}

/// `mx_tls:`
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawMxTls {
    pub min_version: Option<String>,
    pub ca_file: Option<String>,
    pub dane: Option<String>,
    pub mta_sts: Option<String>,
    pub allow_none_when_required: Option<bool>,
    // MTA-STS and TLS reporting (config::mta_sts).
    pub mta_sts_fetch_timeout: Option<String>,
    pub mta_sts_max_size: Option<u64>,
    pub mta_sts_test_ca_file: Option<String>,
    pub mta_sts_test_port: Option<u64>,
    pub tls_rpt_organization: Option<String>,
    pub tls_rpt_contact: Option<String>,
}

/// `pool:`
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPool {
    pub reuse_time_limit: Option<String>,
    pub idle_ttl: Option<String>,
    pub max_idle_per_key: Option<u64>,
    pub max_idle_total: Option<u64>,
    pub checkout_probe: Option<String>,
}

/// `dns:`
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawDns {
    pub nameservers: Option<StringList>,
    pub timeout: Option<String>,
    pub attempts: Option<u64>,
}

/// One entry of `frontends:`.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawFrontend {
    pub kind: Option<String>,
    pub listen: Option<StringList>,
    pub mode: Option<String>,
    pub client: Option<String>,
    pub auth: Option<String>,
    pub tls: Option<String>,
    pub reuse: Option<bool>,
    pub reuse_max_messages: Option<u64>,
    pub splice: Option<bool>,
}

/// `caps:`
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCaps {
    pub wait: Option<String>,
    pub window: Option<String>,
    pub max_connections: Option<u64>,
    pub max_new_connections: Option<u64>,
    pub max_connections_per_source: Option<u64>,
    pub destinations: Option<Vec<RawGroup>>,
    pub sources: Option<Vec<RawSource>>,
    pub shared: Option<RawShared>,
}

/// `caps.shared`.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawShared {
    pub redis: Option<String>,
    pub password_file: Option<String>,
    pub tls_ca_file: Option<String>,
    pub tls_cert_file: Option<String>,
    pub tls_key_file: Option<String>,
    pub key_prefix: Option<String>,
    pub host: Option<String>,
    pub lease: Option<String>,
    pub timeout: Option<String>,
    pub destinations: Option<BTreeMap<String, RawCapLimits>>,
}

/// One entry of `caps.destinations`.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawGroup {
    pub name: Option<String>,
    pub addresses: Option<StringList>,
    pub max_connections: Option<u64>,
    pub max_new_connections: Option<u64>,
}

/// One entry of `caps.sources`.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSource {
    pub addresses: Option<StringList>,
    pub max_connections: Option<u64>,
    pub max_new_connections: Option<u64>,
    pub max_connections_per_source: Option<u64>,
    pub destinations: Option<BTreeMap<String, RawCapLimits>>,
}

/// `caps.sources[i].destinations.<group>`.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCapLimits {
    pub max_connections: Option<u64>,
    pub max_new_connections: Option<u64>,
}

/// A secret as written in the file; `Debug` never shows it.
#[derive(Deserialize)]
#[serde(transparent)]
pub(crate) struct RawSecret(pub String);

impl fmt::Debug for RawSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// A list of strings; a single string is accepted as a list of one.
#[derive(Default)]
pub(crate) struct StringList(pub Vec<String>);

impl<'de> Deserialize<'de> for StringList {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<StringList, D::Error> {
        struct ListVisitor;

        impl<'de> Visitor<'de> for ListVisitor {
            type Value = StringList;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string or a list of strings")
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<StringList, E> {
                Ok(StringList(vec![v.to_string()]))
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<StringList, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element::<String>()? {
                    items.push(item);
                }
                Ok(StringList(items))
            }
        }

        deserializer.deserialize_any(ListVisitor)
    }
}
