//! `mx_tls:`: TLS toward the MX servers: the lowest version, extra roots, and the TLS policies
//! of the recipient domains (DANE, MTA-STS; docs/TLS-POLICY.md). One struct, one file: the
//! MTA-STS and TLS reporting keys join it here.

use super::error::ConfigError;
use super::mta_sts::{RawSts, StsSettings};
use super::raw::RawMxTls;
use super::values::required_path;
use greenarrow_proxy_proto::tls_policy::decide::Settings;
use greenarrow_proxy_proto::tls_policy::Enforcement;
use serde::{Serialize, Serializer};
use std::fmt;
use std::path::{Path, PathBuf};

type Result<T, E = ConfigError> = std::result::Result<T, E>;

/// `mx_tls:`
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MxTls {
    /// Lowest TLS version accepted.
    pub min_version: TlsVersion,
    /// Extra PEM roots added to the system roots for certificate verification.
    pub ca_file: Option<PathBuf>,
    /// DANE (RFC 7672) for MX hosts known by name.
    #[serde(serialize_with = "enforcement")]
    pub dane: Enforcement,
    /// MTA-STS (RFC 8461) for the recipient domain.
    #[serde(serialize_with = "enforcement")]
    pub mta_sts: Enforcement,
    /// `tls=none` toward a domain whose policy requires TLS is carried out in plaintext
    /// rather than refused.
    pub allow_none_when_required: bool,
    /// MTA-STS fetching and TLS-RPT reports (`config::mta_sts`).
    #[serde(flatten)]
    pub sts: StsSettings,
}

impl Default for MxTls {
    /// DANE and MTA-STS enforced; `tls=none` refused where the domain requires TLS.
    fn default() -> MxTls {
        let d = Settings::default();
        MxTls {
            min_version: TlsVersion::default(),
            ca_file: None,
            dane: d.dane,
            mta_sts: d.mta_sts,
            allow_none_when_required: d.allow_none_when_required,
            sts: StsSettings::default(),
        }
    }
}

impl MxTls {
    /// The decision's settings (`tls_policy::decide`).
    pub fn policy(&self) -> Settings {
        Settings {
            dane: self.dane,
            mta_sts: self.mta_sts,
            allow_none_when_required: self.allow_none_when_required,
        }
    }
}

/// The word of the file for an [`Enforcement`].
pub fn enforcement_word(e: Enforcement) -> &'static str {
    match e {
        Enforcement::Enforce => "enforce",
        Enforcement::TestingOnly => "testing-only",
        Enforcement::Off => "off",
    }
}

fn enforcement<S: Serializer>(e: &Enforcement, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(enforcement_word(*e))
}

fn parse_enforcement(key: &str, raw: Option<String>, default: Enforcement) -> Result<Enforcement> {
    match raw.as_deref() {
        None => Ok(default),
        Some("enforce") => Ok(Enforcement::Enforce),
        Some("testing-only") => Ok(Enforcement::TestingOnly),
        Some("off") => Ok(Enforcement::Off),
        Some(other) => Err(ConfigError::invalid(
            key,
            format!("{other:?} is not one of \"enforce\", \"testing-only\", \"off\""),
        )),
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

impl Serialize for TlsVersion {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl fmt::Display for TlsVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TlsVersion::Tls12 => "1.2",
            TlsVersion::Tls13 => "1.3",
        })
    }
}

pub(crate) fn mx_tls(raw: RawMxTls, base_dir: &Path) -> Result<MxTls> {
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
    let d = MxTls::default();
    let sts = super::mta_sts::sts(
        RawSts {
            fetch_timeout: raw.mta_sts_fetch_timeout,
            max_size: raw.mta_sts_max_size,
            test_ca_file: raw.mta_sts_test_ca_file,
            test_port: raw.mta_sts_test_port,
            organization: raw.tls_rpt_organization,
            contact: raw.tls_rpt_contact,
        },
        base_dir,
    )?;
    Ok(MxTls {
        min_version,
        ca_file,
        dane: parse_enforcement("mx_tls.dane", raw.dane, d.dane)?,
        mta_sts: parse_enforcement("mx_tls.mta_sts", raw.mta_sts, d.mta_sts)?,
        allow_none_when_required: raw
            .allow_none_when_required
            .unwrap_or(d.allow_none_when_required),
        sts,
    })
}
