//! `caps.shared:` — caps per destination group counted across every proxy host through Redis
//! (the endpoint, its password file, its TLS files, the key prefix, this host's name, the lease
//! time, the call timeout), and which of a group's caps are shared.

use super::error::ConfigError;
use super::raw::{RawCapLimits, RawShared};
use super::readable::unreadable;
use super::secret::{read_secret_file, Secret};
use super::ser;
use super::values::{bounded_duration, required_path};
pub use greenarrow_proxy_proto::caps::CapLimits;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Default `caps.shared.lease`.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(30);
/// Default `caps.shared.timeout`.
pub const DEFAULT_REDIS_TIMEOUT: Duration = Duration::from_millis(500);
/// Default `caps.shared.key_prefix`.
pub const DEFAULT_KEY_PREFIX: &str = "greenarrow_proxy";

/// `caps.shared` validated.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SharedConfig {
    /// `redis://host:port/db` or `rediss://` (TLS; no password in it: `password_file`).
    pub redis: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
    #[serde(skip)]
    pub password: Option<Secret>,
    /// `rediss://` only: the CA that signed Redis's certificate (default: the system's roots).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_ca_file: Option<PathBuf>,
    /// Its PEM text, read and checked when the configuration is.
    #[serde(skip)]
    pub tls_ca: Option<Vec<u8>>,
    /// `rediss://` only: a client certificate (with `tls_key_file`) for a Redis that asks for one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_cert_file: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_key_file: Option<PathBuf>,
    /// The client certificate chain and key, PEM, read and checked with the configuration.
    #[serde(skip)]
    pub tls_client: Option<(Vec<u8>, Secret)>,
    pub key_prefix: String,
    /// This host's name in Redis (default: the system's host name).
    pub host: String,
    /// How long a lease (and a host's heartbeat) lives without renewal.
    #[serde(serialize_with = "ser::duration")]
    pub lease: Duration,
    /// The bound on every Redis call (connect, read, write).
    #[serde(serialize_with = "ser::duration")]
    pub timeout: Duration,
    /// The shared caps per destination group (all sources of all hosts together).
    pub destinations: BTreeMap<String, CapLimits>,
}

type Result<T> = std::result::Result<T, ConfigError>;

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 100
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

/// The system's host name (`/proc/sys/kernel/hostname`), or `localhost`.
fn system_host() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| valid_name(s))
        .unwrap_or_else(|| "localhost".to_string())
}

/// Validate `caps.shared`: `groups` are the names of `caps.destinations`, `limits` checks a
/// cap pair (`caps`' own rule).
pub(super) fn shared(
    raw: RawShared,
    groups: &[&str],
    limits: impl Fn(&str, &RawCapLimits) -> Result<CapLimits>,
    base_dir: &std::path::Path,
) -> Result<SharedConfig> {
    const K: &str = "caps.shared";
    let url = raw.redis.ok_or_else(|| {
        ConfigError::invalid(format!("{K}.redis"), "required (redis://host:port/db)")
    })?;
    let info = redis::parse_redis_url(&url).ok_or_else(|| {
        ConfigError::invalid(
            format!("{K}.redis"),
            format!("{url:?} is not a Redis URL (redis://host:port/db)"),
        )
    })?;
    let tls = match info.scheme() {
        "redis" => false,
        "rediss" => true,
        other => {
            return Err(ConfigError::invalid(
                format!("{K}.redis"),
                format!(
                    "scheme {other:?} is not supported; use redis://host:port/db or \
                     rediss://host:port/db (TLS)"
                ),
            ))
        }
    };
    if info.password().is_some() {
        return Err(ConfigError::invalid(
            format!("{K}.redis"),
            "no password in the URL; put it in caps.shared.password_file",
        ));
    }
    let tls_files = TlsFiles::read(
        [raw.tls_ca_file, raw.tls_cert_file, raw.tls_key_file],
        tls,
        base_dir,
    )?;
    let (password, password_file) = match raw.password_file {
        None => (None, None),
        Some(p) => {
            let key = format!("{K}.password_file");
            let path = required_path(&key, Some(p), base_dir)?;
            let text = read_secret_file(&path)
                .map_err(|e| ConfigError::invalid(key.clone(), unreadable(&path, &e)))?;
            if text.is_empty() {
                return Err(ConfigError::invalid(
                    key,
                    format!("{} is empty", path.display()),
                ));
            }
            (Some(Secret::new(text.into_bytes())), Some(path))
        }
    };
    let key_prefix = raw
        .key_prefix
        .unwrap_or_else(|| DEFAULT_KEY_PREFIX.to_string());
    if !valid_name(&key_prefix) {
        return Err(ConfigError::invalid(
            format!("{K}.key_prefix"),
            format!("{key_prefix:?}: use letters, digits, '-', '_' and '.'"),
        ));
    }
    let host = raw.host.unwrap_or_else(system_host);
    if !valid_name(&host) {
        return Err(ConfigError::invalid(
            format!("{K}.host"),
            format!("{host:?}: use letters, digits, '-', '_' and '.' (at most 100)"),
        ));
    }
    let lease = bounded_duration(
        &format!("{K}.lease"),
        raw.lease,
        DEFAULT_LEASE,
        false,
        Duration::from_secs(3600),
    )?;
    if lease < Duration::from_secs(1) {
        return Err(ConfigError::invalid(
            format!("{K}.lease"),
            "at least 1s (leases are renewed every third of it)",
        ));
    }
    let timeout = bounded_duration(
        &format!("{K}.timeout"),
        raw.timeout,
        DEFAULT_REDIS_TIMEOUT,
        false,
        Duration::from_secs(60),
    )?;
    if timeout * 3 > lease {
        return Err(ConfigError::invalid(
            format!("{K}.timeout"),
            "must be at most a third of caps.shared.lease (renewals must fit in a lease)",
        ));
    }
    let mut destinations = BTreeMap::new();
    for (name, l) in raw.destinations.unwrap_or_default() {
        let dkey = format!("{K}.destinations.{name}");
        if !groups.contains(&name.as_str()) {
            return Err(ConfigError::invalid(
                dkey,
                format!("no destination group {name:?} in caps.destinations"),
            ));
        }
        let l = limits(&dkey, &l)?;
        if l == CapLimits::default() {
            return Err(ConfigError::invalid(
                dkey,
                "set max_connections and/or max_new_connections (what is shared)",
            ));
        }
        destinations.insert(name, l);
    }
    if destinations.is_empty() {
        return Err(ConfigError::invalid(
            format!("{K}.destinations"),
            "required: the destination groups whose caps are shared",
        ));
    }
    Ok(SharedConfig {
        redis: url,
        password_file,
        password,
        tls_ca_file: tls_files.ca_file,
        tls_ca: tls_files.ca,
        tls_cert_file: tls_files.cert_file,
        tls_key_file: tls_files.key_file,
        tls_client: tls_files.client,
        key_prefix,
        host,
        lease,
        timeout,
        destinations,
    })
}

/// The TLS files of `caps.shared`, read and checked.
#[derive(Default)]
struct TlsFiles {
    ca_file: Option<PathBuf>,
    ca: Option<Vec<u8>>,
    cert_file: Option<PathBuf>,
    key_file: Option<PathBuf>,
    client: Option<(Vec<u8>, Secret)>,
}

/// Largest CA or certificate file read (a CA bundle).
const MAX_PEM_FILE_BYTES: u64 = 4 * 1024 * 1024;

fn read_pem(key: &str, value: String, base_dir: &Path) -> Result<(PathBuf, Vec<u8>)> {
    use std::io::Read;
    let path = required_path(key, Some(value), base_dir)?;
    let mut bytes = Vec::new();
    std::fs::File::open(&path)
        .and_then(|f| f.take(MAX_PEM_FILE_BYTES + 1).read_to_end(&mut bytes))
        .map_err(|e| ConfigError::invalid(key, unreadable(&path, &e)))?;
    if bytes.len() as u64 > MAX_PEM_FILE_BYTES {
        return Err(ConfigError::invalid(
            key,
            format!("{}: larger than 4 MiB", path.display()),
        ));
    }
    Ok((path, bytes))
}

/// At least one certificate, and every PEM certificate block well formed.
fn check_certs(key: &str, path: &Path, pem: &[u8]) -> Result<()> {
    let mut n = 0;
    for c in CertificateDer::pem_slice_iter(pem) {
        c.map_err(|e| ConfigError::invalid(key, format!("{}: {e}", path.display())))?;
        n += 1;
    }
    if n == 0 {
        return Err(ConfigError::invalid(
            key,
            format!("{}: no PEM certificate in it", path.display()),
        ));
    }
    Ok(())
}

impl TlsFiles {
    /// `files`: `tls_ca_file`, `tls_cert_file`, `tls_key_file`; `tls`: a `rediss://` URL.
    fn read(files: [Option<String>; 3], tls: bool, base_dir: &Path) -> Result<TlsFiles> {
        const K: &str = "caps.shared";
        const NAMES: [&str; 3] = ["tls_ca_file", "tls_cert_file", "tls_key_file"];
        if !tls {
            if let Some(i) = files.iter().position(Option::is_some) {
                let name = NAMES[i];
                return Err(ConfigError::invalid(
                    format!("{K}.{name}"),
                    "only with TLS: write the URL as rediss://host:port/db",
                ));
            }
            return Ok(TlsFiles::default());
        }
        let [ca, cert, key] = files;
        let mut out = TlsFiles::default();
        if let Some(v) = ca {
            let key = format!("{K}.tls_ca_file");
            let (path, pem) = read_pem(&key, v, base_dir)?;
            check_certs(&key, &path, &pem)?;
            out.ca_file = Some(path);
            out.ca = Some(pem);
        }
        match (cert, key) {
            (None, None) => {}
            (Some(_), None) => {
                return Err(ConfigError::invalid(
                    format!("{K}.tls_key_file"),
                    "required with tls_cert_file",
                ))
            }
            (None, Some(_)) => {
                return Err(ConfigError::invalid(
                    format!("{K}.tls_cert_file"),
                    "required with tls_key_file",
                ))
            }
            (Some(c), Some(k)) => {
                let ckey = format!("{K}.tls_cert_file");
                let (cpath, cpem) = read_pem(&ckey, c, base_dir)?;
                check_certs(&ckey, &cpath, &cpem)?;
                let kkey = format!("{K}.tls_key_file");
                let (kpath, kpem) = read_pem(&kkey, k, base_dir)?;
                if let Err(e) = PrivateKeyDer::from_pem_slice(&kpem) {
                    return Err(ConfigError::invalid(
                        kkey,
                        format!("{}: no private key: {e}", kpath.display()),
                    ));
                }
                out.cert_file = Some(cpath);
                out.key_file = Some(kpath);
                out.client = Some((cpem, Secret::new(kpem)));
            }
        }
        Ok(out)
    }
}
