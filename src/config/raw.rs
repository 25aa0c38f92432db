//! The serde layer: the YAML file as written, every key optional, unknown keys
//! refused. Values stay strings here so that validation can name the key in
//! its messages; see `validate.rs`.

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use std::fmt;

/// The whole file.
#[derive(Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawConfig {
    pub listen: Option<StringList>,
    pub listen_freebind: Option<bool>,
    pub allow_from: Option<StringList>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth_shared_secret: Option<RawSecret>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth_shared_secret_file: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub clients: Option<Vec<RawClient>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_client_ca: Option<String>,
    pub log_verbose: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_sessions: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
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
    #[serde(skip_serializing_if = "Option::is_none")]
    pub frontends: Option<Vec<super::frontends::RawFrontend>>,
    pub caps: Option<super::caps::RawCaps>,
    pub control_socket: Option<String>,
    pub metrics: Option<RawMetrics>,
}

/// `metrics:`
#[derive(Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawMetrics {
    pub listen: Option<String>,
    pub allow_remote: Option<bool>,
}

/// One entry of `clients:`.
#[derive(Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawClient {
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secrets: Option<Vec<RawSecret>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret_files: Option<StringList>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_addresses: Option<StringList>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_client_names: Option<StringList>,
}

/// `limits:`
#[derive(Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawLimits {
    pub max_command_line: Option<u64>,
    pub max_reply_line: Option<u64>,
    pub max_reply_lines: Option<u64>,
}

/// `timeouts:` (humantime durations).
#[derive(Default, Deserialize, Serialize)]
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
#[derive(Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawMxTls {
    pub min_version: Option<String>,
    pub ca_file: Option<String>,
}

/// `pool:`
#[derive(Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPool {
    pub reuse_time_limit: Option<String>,
    pub idle_ttl: Option<String>,
    pub max_idle_per_key: Option<u64>,
    pub max_idle_total: Option<u64>,
    pub checkout_probe: Option<String>,
}

/// `dns:`
#[derive(Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawDns {
    pub nameservers: Option<StringList>,
    pub timeout: Option<String>,
    pub attempts: Option<u64>,
}

/// A secret as written in the file; `Debug` never shows it.
#[derive(Deserialize, Serialize)]
#[serde(transparent)]
pub(crate) struct RawSecret(pub String);

impl fmt::Debug for RawSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// A list of strings; a single string is accepted as a list of one.
#[derive(Serialize, Default)]
#[serde(transparent)]
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
