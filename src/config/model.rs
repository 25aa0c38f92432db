//! [`Config`], the validated configuration, and what the daemon asks of it: who a secret or
//! a client certificate identifies, whether an MX address may be reached.
//!
//! `Config` serialises itself as the file writes it (the effective configuration): its field
//! names and those of its sections are the keys, in the order of the file.

use super::access::{self, embedded_ipv4, Client, Identity, DEFAULT_CLIENT};
use super::caps::CapsConfig;
use super::frontends::Frontend;
use super::mx_tls::MxTls;
use super::net::IpNet;
use super::sections::{DnsConfig, Limits, PoolConfig, Timeouts};
use super::ser;
use super::status::MetricsConfig;
use serde::Serialize;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use subtle::{Choice, ConditionallySelectable};

/// The validated configuration.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Config {
    /// Addresses the MTA-facing TLS listener binds; empty in a front-end-only deployment.
    pub listen: Vec<SocketAddr>,
    /// Bind every listener (native and front-ends) with `IP_FREEBIND`, so that an address
    /// not (yet) on the host — a virtual address keepalived moves here — can be listened on.
    pub listen_freebind: bool,
    /// Networks MTAs may connect from.
    pub allow_from: Vec<IpNet>,
    /// Every client: `default` (the top-level `auth_shared_secret[_file]`, if any) first,
    /// then `clients:`. Written back as those keys ([`access::serialize_clients`]).
    #[serde(flatten, serialize_with = "access::serialize_clients")]
    pub clients: Vec<Client>,
    /// CA whose client certificates identify clients (mutual TLS); None: no client certificates.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_client_ca: Option<PathBuf>,
    /// Log every session event, not only problems.
    pub log_verbose: bool,
    /// Log one line per relayed session at info level (the audit trail).
    pub log_sessions: bool,
    /// Where drains are kept across restarts; None: not kept.
    #[serde(serialize_with = "ser::or_none")]
    pub state_directory: Option<PathBuf>,
    /// PEM certificate chain of the MTA-facing listener; `None` only without a native
    /// listener (`listen: []`, front-ends only).
    pub tls_certificate: Option<PathBuf>,
    /// PEM private key of the MTA-facing listener; `None` as `tls_certificate`.
    pub tls_private_key: Option<PathBuf>,
    /// Addresses (networks) MTAs may ask to use as the source address.
    pub source_addresses: Vec<IpNet>,
    /// MX ports MTAs may ask to connect to.
    pub destination_ports: Vec<u16>,
    /// MX networks that may not be reached (unless in `destination_allow`).
    pub destination_deny: Vec<IpNet>,
    /// Exceptions to `destination_deny`.
    pub destination_allow: Vec<IpNet>,
    /// Concurrent MTA sessions (worker threads).
    pub max_sessions: usize,
    /// Concurrent sessions from one MTA address.
    pub max_sessions_per_ip: usize,
    /// Accepted connections that may wait for a free worker.
    pub max_queued_sessions: usize,
    /// Line and count limits.
    pub limits: Limits,
    /// Timeouts.
    pub timeouts: Timeouts,
    /// TLS towards the MX.
    pub mx_tls: MxTls,
    /// Pool of idle MX connections.
    pub pool: PoolConfig,
    /// DNS resolution.
    pub dns: DnsConfig,
    /// PROXY protocol and SOCKS5 listeners for MTAs that do not speak the native protocol.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub frontends: Vec<Frontend>,
    /// Connection caps per (source IP, destination), destination groups, waiting at a cap.
    pub caps: CapsConfig,
    /// The control socket (`gaproxy status`, `drain`); None: none.
    #[serde(serialize_with = "ser::or_none")]
    pub control_socket: Option<PathBuf>,
    /// The metrics listener.
    pub metrics: MetricsConfig,
    /// Things that are allowed but probably wrong; log them at startup.
    #[serde(skip)]
    pub warnings: Vec<String>,
}

impl Config {
    /// Whether `candidate` is the secret of any client (see [`Config::authenticate`]).
    pub fn secret_matches(&self, candidate: &[u8]) -> bool {
        self.authenticate(candidate).is_some()
    }

    /// The `default` client (the top-level `auth_shared_secret[_file]`), if configured.
    pub fn default_client(&self) -> Option<&Client> {
        self.clients.iter().find(|c| c.name == DEFAULT_CLIENT)
    }

    /// Where the top-level secret was read from (`auth_shared_secret_file`, resolved), if
    /// it was read from a file.
    pub fn auth_shared_secret_file(&self) -> Option<&Path> {
        self.default_client()?
            .secret_files
            .first()
            .map(PathBuf::as_path)
    }

    /// The client named `name` (a front-end's `client`).
    pub fn client_named(&self, name: &str) -> Option<Identity<'_>> {
        self.all_clients()
            .find(|c| c.name == name)
            .map(|c| self.identity(c))
    }

    /// Every client: the `default` one (top-level secret) first when configured.
    fn all_clients(&self) -> impl Iterator<Item = &Client> {
        self.clients.iter()
    }

    fn identity<'a>(&'a self, c: &'a Client) -> Identity<'a> {
        Identity {
            name: &c.name,
            sources: c
                .source_addresses
                .as_deref()
                .unwrap_or(&self.source_addresses),
        }
    }

    /// The client whose secret `candidate` is. Every secret of every client is compared, in
    /// constant time for candidates of the secret's length, with no early exit.
    pub fn authenticate(&self, candidate: &[u8]) -> Option<Identity<'_>> {
        let mut found = Choice::from(0);
        let mut index = 0u32;
        for (i, c) in self.all_clients().enumerate() {
            for s in &c.secrets {
                let m = s.ct_matches(candidate) & !found;
                index.conditional_assign(&(i as u32), m);
                found |= m;
            }
        }
        if bool::from(found) {
            self.all_clients()
                .nth(index as usize)
                .map(|c| self.identity(c))
        } else {
            None
        }
    }

    /// The client a verified client certificate with `names` identifies, if any.
    pub fn identify_certificate(&self, names: &[String]) -> Option<Identity<'_>> {
        self.all_clients()
            .find(|c| {
                c.tls_client_names
                    .iter()
                    .any(|n| names.iter().any(|m| m.eq_ignore_ascii_case(n)))
            })
            .map(|c| self.identity(c))
    }

    /// Whether an MX address may be reached: refused when it is in `destination_deny` and
    /// not in `destination_allow`. An IPv6 address that carries an IPv4 address
    /// ([`embedded_ipv4`]: mapped, compatible, NAT64, 6to4) is checked in both forms: refused
    /// when either is denied, unless either is allowed.
    pub fn destination_permitted(&self, ip: IpAddr) -> bool {
        let forms = [
            Some(ip.to_canonical()),
            match ip {
                IpAddr::V6(v6) => embedded_ipv4(v6).map(IpAddr::V4),
                IpAddr::V4(_) => None,
            },
        ];
        let any_in = |nets: &[IpNet]| {
            forms
                .iter()
                .flatten()
                .any(|&f| nets.iter().any(|n| n.contains(f)))
        };
        any_in(&self.destination_allow) || !any_in(&self.destination_deny)
    }
}
