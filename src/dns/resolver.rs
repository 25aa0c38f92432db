//! The blocking [`Resolver`] facade over hickory's async resolver.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hickory_resolver::config::{
    ConnectionConfig, NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts,
};
use hickory_resolver::lookup::Lookup;
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError as HickoryDnsError, NetError, NoRecords};
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::rr::{Name, RData, RecordType};
use hickory_resolver::TokioResolver;
use tokio::runtime::{Handle, Runtime};
use tokio::task::JoinSet;

use super::mx::{self, MxHost, MxPlan, MAX_ADDRS_PER_HOST};
use super::tlsa::TlsaLookup;
use super::{name, Candidate, DnsError, Family, ResolverSettings};
use greenarrow_proxy_proto::tls_policy::dane::DaneFinding;

/// At most this many addresses are returned by [`Resolver::lookup_host`].
pub const MAX_HOST_ADDRS: usize = 16;
/// Most retries accepted in [`ResolverSettings::attempts`].
const MAX_ATTEMPTS: usize = 10;
/// Name servers counted when bounding a whole lookup (hickory asks servers in
/// turn, two at a time).
const MAX_SERVERS_COUNTED: usize = 3;

/// A shared, caching DNS resolver with blocking methods.
///
/// Cloning is cheap (an `Arc`); all clones share one cache and one runtime.
/// Many threads may call it at once; their lookups run concurrently. The
/// methods must not be called from inside an async runtime (they return
/// [`DnsError::Setup`] if they are).
#[derive(Clone)]
pub struct Resolver {
    inner: Arc<Inner>,
}

struct Inner {
    resolver: TokioResolver,
    handle: Handle,
    /// `Some` until dropped; shut down without blocking on drop.
    runtime: Option<Runtime>,
    /// Upper bound on one query including hickory's own retries.
    deadline: Duration,
    /// TLSA look-ups for DANE, through the same name servers.
    tlsa: TlsaLookup,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl std::fmt::Debug for Resolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resolver")
            .field("deadline", &self.inner.deadline)
            .finish_non_exhaustive()
    }
}

impl Resolver {
    /// Builds a resolver from `settings`, starting its one-thread runtime.
    ///
    /// With no name servers in `settings`, `/etc/resolv.conf` is read for them
    /// (its `search`, `domain` and `ndots` are ignored).
    pub fn new(settings: &ResolverSettings) -> Result<Resolver, DnsError> {
        if settings.timeout.is_zero() {
            return Err(DnsError::Setup("DNS timeout must be above zero".into()));
        }
        if !(1..=MAX_ATTEMPTS).contains(&settings.attempts) {
            return Err(DnsError::Setup(format!(
                "DNS attempts must be between 1 and {MAX_ATTEMPTS}, not {}",
                settings.attempts
            )));
        }
        let servers = if settings.nameservers.is_empty() {
            let (config, _) = hickory_resolver::system_conf::read_system_conf()
                .map_err(|e| DnsError::Setup(format!("cannot read /etc/resolv.conf: {e}")))?;
            config.name_servers().to_vec()
        } else {
            settings.nameservers.iter().map(server_config).collect()
        };
        if servers.is_empty() {
            return Err(DnsError::Setup("no DNS name server configured".into()));
        }

        let mut options = ResolverOpts::default();
        options.ndots = 0;
        options.timeout = settings.timeout;
        options.attempts = settings.attempts;
        options.use_hosts_file = ResolveHosts::Never;

        // Bounded by the checks above: attempts <= 10, servers counted <= 3.
        let tries = (settings.attempts + 1) * servers.len().min(MAX_SERVERS_COUNTED);
        let deadline = settings
            .timeout
            .saturating_mul(u32::try_from(tries).unwrap_or(u32::MAX))
            .saturating_add(Duration::from_secs(1));

        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("dns")
            .enable_all()
            .build()
            .map_err(|e| DnsError::Setup(format!("cannot start the DNS runtime: {e}")))?;
        let handle = runtime.handle().clone();
        let addrs: Vec<SocketAddr> = servers
            .iter()
            .map(|s| SocketAddr::new(s.ip, s.connections.first().map_or(53, |c| c.port)))
            .collect();
        let tlsa = TlsaLookup::new(addrs, settings.timeout, settings.attempts);
        let config = ResolverConfig::from_name_servers(servers);
        let resolver = {
            let _guard = runtime.enter();
            TokioResolver::builder_with_config(config, TokioRuntimeProvider::default())
                .with_options(options)
                .build()
                .map_err(|e| DnsError::Setup(format!("cannot build the resolver: {e}")))?
        };
        Ok(Resolver {
            inner: Arc::new(Inner {
                resolver,
                handle,
                runtime: Some(runtime),
                deadline,
                tlsa,
            }),
        })
    }

    /// The A (for [`Family::V4`]) or AAAA (for [`Family::V6`]) addresses of
    /// `host`, in the order returned, at most [`MAX_HOST_ADDRS`].
    ///
    /// An IP literal is returned as is if it is of `family` (no DNS query).
    /// Errors: `InvalidName`, `NxDomain`, `NoAddress` (the name has no address
    /// of the family), `Transient`.
    pub fn lookup_host(&self, host: &str, family: Family) -> Result<Vec<IpAddr>, DnsError> {
        if let Ok(ip) = host.parse::<IpAddr>() {
            return if family.matches(&ip) {
                Ok(vec![ip])
            } else {
                Err(DnsError::NoAddress {
                    name: host.to_string(),
                    family,
                })
            };
        }
        let bare = name::normalize(host)?.to_ascii_lowercase();
        let resolver = self.inner.resolver.clone();
        let deadline = self.inner.deadline;
        self.block_on(host_addrs(resolver, bare, family, deadline, MAX_HOST_ADDRS))?
    }

    /// The ordered candidates to try for mail to `domain` (RFC 5321 §5.1).
    ///
    /// MX hosts by preference, lowest first, shuffled among equal preferences,
    /// then each host's addresses of `family` in DNS order: at most
    /// [`MAX_MX_HOSTS`](super::MAX_MX_HOSTS) hosts and
    /// [`MAX_ADDRS_PER_HOST`] addresses of each; an address already listed for
    /// a better MX is not repeated. Without MX records (NODATA) the domain's own
    /// addresses are an implicit MX of preference 0.
    ///
    /// Errors: `InvalidName`, `NxDomain`, `NullMx` (RFC 7505), `NoAddress` (no MX
    /// host has an address of `family`), `Transient` (the MX lookup failed, or
    /// no MX host could be resolved and at least one failed transiently). MX
    /// hosts that do not exist, lack the family or fail are skipped when
    /// another one works.
    pub fn resolve_mx(&self, domain: &str, family: Family) -> Result<Vec<Candidate>, DnsError> {
        let bare = name::normalize(domain)?.to_ascii_lowercase();
        let resolver = self.inner.resolver.clone();
        let deadline = self.inner.deadline;
        self.block_on(resolve_mx(resolver, bare, family, deadline))?
    }

    /// The TLSA records of `_<port>._tcp.<host>` and whether they are DNSSEC-secure (cached).
    /// `NotLookedUp` when the name servers are not on loopback: their AD bit is not trusted.
    pub fn lookup_tlsa(&self, host: &str, port: u16) -> DaneFinding {
        self.inner.tlsa.lookup(host, port)
    }

    /// Whether TLSA answers can be trusted (every name server is on loopback).
    pub fn dnssec_trusted(&self) -> bool {
        self.inner.tlsa.trusted()
    }

    /// Runs `future` to completion on the calling thread.
    fn block_on<F: Future>(&self, future: F) -> Result<F::Output, DnsError> {
        if Handle::try_current().is_ok() {
            return Err(DnsError::Setup(
                "blocking DNS lookup called from inside an async runtime".into(),
            ));
        }
        Ok(self.inner.handle.block_on(future))
    }
}

/// A name server on `addr`: UDP, with TCP on the same port for truncated answers.
fn server_config(addr: &SocketAddr) -> NameServerConfig {
    let mut udp = ConnectionConfig::udp();
    udp.port = addr.port();
    let mut tcp = ConnectionConfig::tcp();
    tcp.port = addr.port();
    NameServerConfig::new(addr.ip(), true, vec![udp, tcp])
}

/// One query's result, with the negative answers taken out of the errors.
enum Outcome {
    Answer(Lookup),
    /// The name exists but has no record of the type.
    NoData,
    NxDomain,
    /// SERVFAIL, REFUSED, timeout, network error...
    Failed(String),
}

/// Asks for `rtype` records of `bare` (a checked name without trailing dot).
async fn query(
    resolver: &TokioResolver,
    bare: &str,
    rtype: RecordType,
    deadline: Duration,
) -> Outcome {
    let fqdn = match Name::from_ascii(format!("{bare}.")) {
        Ok(n) => n,
        Err(e) => return Outcome::Failed(format!("unusable name: {e}")),
    };
    match tokio::time::timeout(deadline, resolver.lookup(fqdn, rtype)).await {
        Err(_) => Outcome::Failed(format!("no answer within {deadline:?}")),
        Ok(Ok(lookup)) => Outcome::Answer(lookup),
        Ok(Err(e)) => classify(&e),
    }
}

/// Sorts a hickory error into NXDOMAIN, NODATA or a transient failure.
fn classify(error: &NetError) -> Outcome {
    match error {
        NetError::Dns(HickoryDnsError::NoRecordsFound(NoRecords { response_code, .. })) => {
            match response_code {
                ResponseCode::NXDomain => Outcome::NxDomain,
                ResponseCode::NoError => Outcome::NoData,
                other => Outcome::Failed(format!("server answered {other}")),
            }
        }
        NetError::Dns(HickoryDnsError::ResponseCode(code)) => {
            Outcome::Failed(format!("server answered {code}"))
        }
        NetError::Timeout => Outcome::Failed("timed out".into()),
        other => Outcome::Failed(other.to_string()),
    }
}

/// The addresses of `family` among `lookup`'s answers, at most `limit`.
fn addresses(lookup: &Lookup, family: Family, limit: usize) -> Vec<IpAddr> {
    lookup
        .answers()
        .iter()
        .filter_map(|record| match (&record.data, family) {
            (RData::A(a), Family::V4) => Some(IpAddr::V4(a.0)),
            (RData::AAAA(a), Family::V6) => Some(IpAddr::V6(a.0)),
            _ => None,
        })
        .take(limit)
        .collect()
}

/// A/AAAA lookup of `bare`, mapped to this module's errors.
async fn host_addrs(
    resolver: TokioResolver,
    bare: String,
    family: Family,
    deadline: Duration,
    limit: usize,
) -> Result<Vec<IpAddr>, DnsError> {
    let rtype = match family {
        Family::V4 => RecordType::A,
        Family::V6 => RecordType::AAAA,
    };
    let found = match query(&resolver, &bare, rtype, deadline).await {
        Outcome::Answer(lookup) => addresses(&lookup, family, limit),
        Outcome::NoData => Vec::new(),
        Outcome::NxDomain => return Err(DnsError::NxDomain { name: bare }),
        Outcome::Failed(detail) => return Err(DnsError::Transient { name: bare, detail }),
    };
    if found.is_empty() {
        return Err(DnsError::NoAddress { name: bare, family });
    }
    Ok(found)
}

/// The whole RFC 5321 §5.1 procedure for `domain` (checked, no trailing dot).
async fn resolve_mx(
    resolver: TokioResolver,
    domain: String,
    family: Family,
    deadline: Duration,
) -> Result<Vec<Candidate>, DnsError> {
    let records: Vec<(u16, String)> =
        match query(&resolver, &domain, RecordType::MX, deadline).await {
            Outcome::Answer(lookup) => lookup
                .answers()
                .iter()
                .filter_map(|record| match &record.data {
                    RData::MX(mx) => Some((mx.preference, mx.exchange.to_ascii())),
                    _ => None,
                })
                .collect(),
            Outcome::NoData => Vec::new(),
            Outcome::NxDomain => return Err(DnsError::NxDomain { name: domain }),
            Outcome::Failed(detail) => {
                return Err(DnsError::Transient {
                    name: domain,
                    detail: format!("MX lookup: {detail}"),
                })
            }
        };

    if records.is_empty() {
        // RFC 5321 §5.1: no MX records, the domain itself is the implicit MX.
        let addrs = host_addrs(
            resolver,
            domain.clone(),
            family,
            deadline,
            MAX_ADDRS_PER_HOST,
        )
        .await?;
        return Ok(addrs
            .into_iter()
            .map(|addr| Candidate {
                host: domain.clone(),
                addr,
                preference: Some(0),
            })
            .collect());
    }

    let hosts = match mx::plan(&records, &mut mx::os_random_below) {
        MxPlan::Null => return Err(DnsError::NullMx { domain }),
        MxPlan::Hosts(hosts) => hosts,
    };
    resolve_hosts(resolver, domain, &hosts, family, deadline).await
}

/// Resolves the MX `hosts` concurrently and flattens them in order.
async fn resolve_hosts(
    resolver: TokioResolver,
    domain: String,
    hosts: &[MxHost],
    family: Family,
    deadline: Duration,
) -> Result<Vec<Candidate>, DnsError> {
    let mut tasks = JoinSet::new();
    for (index, host) in hosts.iter().enumerate() {
        let resolver = resolver.clone();
        let name = host.name.clone();
        tasks.spawn(async move {
            let result = host_addrs(resolver, name, family, deadline, MAX_ADDRS_PER_HOST).await;
            (index, result)
        });
    }
    let mut results: Vec<Option<Result<Vec<IpAddr>, DnsError>>> = vec![None; hosts.len()];
    while let Some(joined) = tasks.join_next().await {
        if let Ok((index, result)) = joined {
            if let Some(slot) = results.get_mut(index) {
                *slot = Some(result);
            }
        }
    }

    let mut candidates: Vec<Candidate> = Vec::new();
    let mut failures: Vec<String> = Vec::new();
    for (host, result) in hosts.iter().zip(results) {
        match result {
            Some(Ok(addrs)) => {
                for addr in addrs {
                    if !candidates.iter().any(|c| c.addr == addr) {
                        candidates.push(Candidate {
                            host: host.name.clone(),
                            addr,
                            preference: Some(host.preference),
                        });
                    }
                }
            }
            Some(Err(e)) if e.is_permanent() => {}
            Some(Err(e)) => failures.push(e.to_string()),
            None => failures.push(format!("{}: lookup task failed", host.name)),
        }
    }
    if !candidates.is_empty() {
        return Ok(candidates);
    }
    if failures.is_empty() {
        Err(DnsError::NoAddress {
            name: domain,
            family,
        })
    } else {
        Err(DnsError::Transient {
            name: domain,
            detail: format!("no MX host could be resolved: {}", failures.join("; ")),
        })
    }
}

/// At most this many TXT records of one name are read (a policy look-up wants one).
pub const MAX_TXT_RECORDS: usize = 16;

impl Resolver {
    /// The TXT records of `<prefix>.<domain>` (`_mta-sts`, `_smtp._tls`: the prefix's
    /// underscore labels are not host name syntax, the domain is checked as one), each the
    /// concatenation of its character strings, at most [`MAX_TXT_RECORDS`]: empty when the
    /// name does not exist or has none (MTA-STS and TLS-RPT read "no record" so). Errors:
    /// `InvalidName`, `Transient`.
    pub fn lookup_txt(&self, prefix: &str, domain: &str) -> Result<Vec<Vec<u8>>, DnsError> {
        let bare = format!("{prefix}.{}", name::normalize(domain)?.to_ascii_lowercase());
        let resolver = self.inner.resolver.clone();
        let deadline = self.inner.deadline;
        self.block_on(async move {
            match query(&resolver, &bare, RecordType::TXT, deadline).await {
                Outcome::Answer(lookup) => Ok(lookup
                    .answers()
                    .iter()
                    .filter_map(|record| match &record.data {
                        RData::TXT(txt) => Some(txt.txt_data.concat()),
                        _ => None,
                    })
                    .take(MAX_TXT_RECORDS)
                    .collect()),
                Outcome::NoData | Outcome::NxDomain => Ok(Vec::new()),
                Outcome::Failed(detail) => Err(DnsError::Transient {
                    name: bare,
                    detail: format!("TXT lookup: {detail}"),
                }),
            }
        })?
    }
}
