//! What a configuration turns into when it is put in force: the configuration itself plus
//! everything loaded from it (TLS acceptor and connector, MX settings, relay limits, the DNS
//! resolver). Built at start and at each reload; sessions keep the one they started with.

use crate::config::files::{check_readable, FileError};
use crate::config::Config;
use crate::dns::{Resolver, ResolverSettings};
use crate::mx::{MxSettings, MxTimeouts};
use crate::pool::PoolLimits;
use greenarrow_proxy_net::tls::{load_roots, MinVersion, MxTlsConnector, TlsAcceptor, TlsError};
use greenarrow_proxy_proto::smtp::{RelayLimits, ReplyLimits};
use log::warn;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;

/// What a configuration turns into at (re)load: the config plus everything loaded from it.
pub struct Runtime {
    pub config: Config,
    /// The native listener's TLS; `None` without one (`listen: []`, front-ends only).
    pub acceptor: Option<TlsAcceptor>,
    pub mx: MxSettings,
    pub relay_limits: RelayLimits,
    /// `None` when the resolver could not be set up (requests by name then fail with
    /// `dns_temporary`; IP literals still work).
    pub resolver: Option<Resolver>,
    /// The MTA-STS policy fetcher (`None` without a resolver): the system roots and
    /// `mx_tls.mta_sts_test_ca_file`, `mx_tls.mta_sts_*` bounds.
    pub sts_client: Option<crate::tlspolicy::https::Client>,
}

/// Why a configuration could not be put into service.
#[derive(Debug)]
#[non_exhaustive]
pub enum StartError {
    /// The MTA-facing certificate/key or the MX roots could not be loaded.
    Tls(TlsError),
    /// A file the configuration names cannot be read by this process.
    File(FileError),
    /// A file the configuration names (`key`) holds nothing usable.
    Unusable { key: String, error: TlsError },
    /// `tls_private_key` is not the key of `tls_certificate`.
    KeyMismatch { cert: PathBuf, key: PathBuf },
    /// A listen address could not be bound.
    Bind { addr: SocketAddr, error: io::Error },
    /// The drains kept in `state_directory` could not be read.
    State(crate::drain::store::StoreError),
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StartError::Tls(e) => write!(f, "{e}"),
            StartError::File(e) => write!(f, "{e}"),
            StartError::State(e) => write!(f, "state_directory: {e}"),
            StartError::Unusable { key, error } => write!(f, "{key}: {error}"),
            StartError::KeyMismatch { cert, key } => write!(
                f,
                "tls_private_key: {} is not the key of the certificate in tls_certificate ({})",
                key.display(),
                cert.display()
            ),
            StartError::Bind { addr, error } => {
                write!(f, "cannot listen on {addr}: {error}")?;
                if error.raw_os_error() == Some(nix::libc::EADDRNOTAVAIL) {
                    // A virtual address not here yet (keepalived): say how to listen anyway.
                    write!(f, " (the address is not on this host; listen_freebind: true binds it before it arrives)")?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for StartError {}

impl Runtime {
    /// Load what the configuration names (certificate, key, roots).
    pub fn build(config: Config) -> Result<Runtime, StartError> {
        check_readable(&config).map_err(StartError::File)?;
        let named = |error: TlsError| file_error(&config, error);
        let acceptor = match (&config.tls_certificate, &config.tls_private_key) {
            (Some(cert), Some(key)) => Some(
                TlsAcceptor::from_pem_files_with_client_ca(
                    cert,
                    key,
                    config.tls_client_ca.as_deref(),
                )
                .map_err(named)?,
            ),
            _ => None,
        };
        let roots = load_roots(config.mx_tls.ca_file.as_deref()).map_err(named)?;
        let min = match config.mx_tls.min_version {
            crate::config::TlsVersion::Tls12 => MinVersion::Tls12,
            crate::config::TlsVersion::Tls13 => MinVersion::Tls13,
        };
        let tls = MxTlsConnector::new(roots, min).map_err(StartError::Tls)?;
        let t = &config.timeouts;
        let mx = MxSettings {
            tls,
            timeouts: MxTimeouts {
                connect: t.mx_connect,
                banner: t.mx_banner,
                command: t.mx_command,
                data_done: t.mx_data_done,
                tls_handshake: t.mx_tls_handshake,
            },
            reply_limits: ReplyLimits {
                max_line: config.limits.max_reply_line,
                max_lines: config.limits.max_reply_lines,
            },
        };
        let relay_limits = RelayLimits {
            max_command_line: config.limits.max_command_line,
        };
        let settings = ResolverSettings {
            nameservers: config.dns.nameservers.clone(),
            timeout: config.dns.timeout,
            attempts: config.dns.attempts,
        };
        let resolver = match Resolver::new(&settings) {
            Ok(r) => Some(r),
            Err(e) => {
                warn!("DNS resolver unavailable, destinations by name will fail: {e}");
                None
            }
        };
        let sts = &config.mx_tls.sts;
        let sts_client = match &resolver {
            None => None,
            Some(resolver) => {
                let roots = load_roots(sts.mta_sts_test_ca_file.as_deref()).map_err(named)?;
                Some(crate::tlspolicy::https::Client {
                    tls: MxTlsConnector::new(roots, MinVersion::Tls12).map_err(StartError::Tls)?,
                    resolver: resolver.clone(),
                    timeout: sts.mta_sts_fetch_timeout,
                    max_size: sts.mta_sts_max_size,
                    port: sts.port(),
                })
            }
        };
        Ok(Runtime {
            config,
            acceptor,
            mx,
            relay_limits,
            resolver,
            sts_client,
        })
    }
}

/// A TLS error loading what `config` names, with the key that names the file.
fn file_error(config: &Config, error: TlsError) -> StartError {
    match error {
        TlsError::KeyMismatch => StartError::KeyMismatch {
            cert: config.tls_certificate.clone().unwrap_or_default(),
            key: config.tls_private_key.clone().unwrap_or_default(),
        },
        TlsError::Pem { ref path, .. } => {
            match crate::config::files::named_files(config)
                .into_iter()
                .find(|(_, p)| *p == path.as_path())
            {
                Some((key, _)) => StartError::Unusable { key, error },
                None => StartError::Tls(error),
            }
        }
        error => StartError::Tls(error),
    }
}

/// The pool limits a configuration asks for.
pub fn pool_limits(config: &Config) -> PoolLimits {
    PoolLimits {
        reuse_time_limit: config.pool.reuse_time_limit,
        idle_ttl: config.pool.idle_ttl,
        max_idle_per_key: config.pool.max_idle_per_key,
        max_idle_total: config.pool.max_idle_total,
    }
}
