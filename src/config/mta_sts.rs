//! `mx_tls:`'s MTA-STS and TLS reporting keys (docs/TLS-POLICY.md): the policy fetch's
//! timeout and size cap, the reports' organisation and contact, and two keys for tests only
//! (an extra CA trusted for policy hosts, the policy hosts' port).

use super::error::ConfigError;
use super::ser;
use super::values::{bounded_duration, number, required_path};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

type Result<T, E = ConfigError> = std::result::Result<T, E>;

/// What `mx_tls:` says of MTA-STS fetching and TLS-RPT reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StsSettings {
    /// The whole policy fetch (connect, TLS, request, response) must finish within this.
    #[serde(serialize_with = "ser::duration")]
    pub mta_sts_fetch_timeout: Duration,
    /// Largest policy file accepted, in octets.
    pub mta_sts_max_size: usize,
    /// FOR TESTS ONLY: an extra CA trusted for policy hosts (on top of the system roots).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mta_sts_test_ca_file: Option<PathBuf>,
    /// FOR TESTS ONLY: the policy hosts' HTTPS port (443 otherwise).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mta_sts_test_port: Option<u16>,
    /// The reports' `organization-name`.
    pub tls_rpt_organization: String,
    /// The reports' `contact-info`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_rpt_contact: Option<String>,
}

impl Default for StsSettings {
    fn default() -> StsSettings {
        StsSettings {
            mta_sts_fetch_timeout: Duration::from_secs(10),
            mta_sts_max_size: 64 * 1024,
            mta_sts_test_ca_file: None,
            mta_sts_test_port: None,
            tls_rpt_organization: "greenarrow_proxy".into(),
            tls_rpt_contact: None,
        }
    }
}

impl StsSettings {
    /// The port policies are fetched from.
    pub fn port(&self) -> u16 {
        self.mta_sts_test_port.unwrap_or(443)
    }
}

/// The raw keys, as `RawMxTls` holds them.
pub(crate) struct RawSts {
    pub fetch_timeout: Option<String>,
    pub max_size: Option<u64>,
    pub test_ca_file: Option<String>,
    pub test_port: Option<u64>,
    pub organization: Option<String>,
    pub contact: Option<String>,
}

fn text(key: &str, value: String) -> Result<String> {
    if value.is_empty() || value.len() > 255 || value.chars().any(|c| c.is_control()) {
        return Err(ConfigError::invalid(
            key,
            "must be 1 to 255 printable characters",
        ));
    }
    Ok(value)
}

pub(crate) fn sts(raw: RawSts, base_dir: &Path) -> Result<StsSettings> {
    let d = StsSettings::default();
    Ok(StsSettings {
        mta_sts_fetch_timeout: bounded_duration(
            "mx_tls.mta_sts_fetch_timeout",
            raw.fetch_timeout,
            d.mta_sts_fetch_timeout,
            false,
            Duration::from_secs(120),
        )?,
        mta_sts_max_size: number(
            "mx_tls.mta_sts_max_size",
            raw.max_size,
            d.mta_sts_max_size,
            1024..=1024 * 1024,
        )?,
        mta_sts_test_ca_file: match raw.test_ca_file {
            None => None,
            Some(p) => Some(required_path(
                "mx_tls.mta_sts_test_ca_file",
                Some(p),
                base_dir,
            )?),
        },
        mta_sts_test_port: match raw.test_port {
            None => None,
            Some(p) => Some(number("mx_tls.mta_sts_test_port", Some(p), 443, 1..=65535)? as u16),
        },
        tls_rpt_organization: match raw.organization {
            None => d.tls_rpt_organization,
            Some(o) => text("mx_tls.tls_rpt_organization", o)?,
        },
        tls_rpt_contact: raw
            .contact
            .map(|c| text("mx_tls.tls_rpt_contact", c))
            .transpose()?,
    })
}
