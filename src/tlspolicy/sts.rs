//! The MTA-STS policy cache (RFC 8461 section 5): in memory (a map under one mutex, no I/O
//! under it) and in `state_directory/mta-sts/<domain>.json` (written atomically, loaded at
//! start), so that a policy survives a restart and its HTTPS server going away. One fetch per
//! domain at a time: sessions that need the same domain's policy meanwhile wait for that
//! fetch (single flight). The rules of when to fetch and what to keep are
//! `proto::tls_policy::sts::plan`.

use super::https::{self, FetchError};
use super::unix_now;
use greenarrow_proxy_proto::tls_policy::decide::StsFinding;
use greenarrow_proxy_proto::tls_policy::rpt::{PolicyRef, PolicyType, ResultType};
use greenarrow_proxy_proto::tls_policy::sts::{
    self as rules, after_fetch_failure, plan, Cached, Plan, Policy, PolicyError, TxtSeen,
};
use log::{info, warn};
use parking_lot::{Condvar, Mutex};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The cache's subdirectory of `state_directory`.
pub const DIR_NAME: &str = "mta-sts";

/// Why no (new) policy was had for a delivery.
#[derive(Debug)]
#[non_exhaustive]
pub enum StsError {
    /// The policy could not be fetched.
    Fetch(FetchError),
    /// The policy fetched is not valid.
    Invalid(PolicyError),
}

impl StsError {
    /// The TLS-RPT result type (RFC 8460 section 4.3.2.2).
    pub fn result_type(&self) -> ResultType {
        match self {
            StsError::Fetch(e) if e.is_webpki() => ResultType::StsWebpkiInvalid,
            StsError::Fetch(_) => ResultType::StsPolicyFetchError,
            StsError::Invalid(_) => ResultType::StsPolicyInvalid,
        }
    }
}

impl fmt::Display for StsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StsError::Fetch(e) => write!(f, "MTA-STS policy fetch: {e}"),
            StsError::Invalid(e) => write!(f, "MTA-STS policy: {e}"),
        }
    }
}

impl std::error::Error for StsError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            StsError::Fetch(e) => Some(e),
            StsError::Invalid(e) => Some(e),
        }
    }
}

/// What a delivery's look-up gave: the policy in effect (fresh or cached), and the failure of
/// the fetch this look-up made, if it made one that failed.
#[derive(Debug, Default)]
pub struct Lookup {
    pub policy: Option<Arc<Cached>>,
    pub failure: Option<Arc<StsError>>,
}

impl Lookup {
    /// The finding the TLS policy decision takes, for this MX host.
    pub fn finding(&self, mx_host: Option<&str>) -> StsFinding {
        match &self.policy {
            None => StsFinding::NoPolicy,
            Some(c) => StsFinding::Policy {
                mode: c.policy.mode,
                mx_matches: mx_host.is_some_and(|h| c.policy.mx_matches(h)),
                policy_id: c.id.clone(),
            },
        }
    }

    /// The policy as TLS-RPT reports it (`sts` with the policy's lines and `mx` patterns), or
    /// `None` when there is no policy and no failure to report.
    pub fn report_policy(&self) -> Option<PolicyRef> {
        match (&self.policy, &self.failure) {
            (Some(c), _) => Some(PolicyRef {
                policy_type: PolicyType::Sts,
                strings: c.policy.lines.clone(),
                mx_hosts: c.policy.mx.clone(),
            }),
            (None, Some(_)) => Some(PolicyRef {
                policy_type: PolicyType::Sts,
                strings: Vec::new(),
                mx_hosts: Vec::new(),
            }),
            (None, None) => None,
        }
    }
}

/// Ends a domain's flight when dropped: the entry no longer names it, its waiters wake.
struct FlightGuard<'a> {
    cache: &'a StsCache,
    domain: &'a str,
    flight: Arc<Flight>,
}

impl Drop for FlightGuard<'_> {
    fn drop(&mut self) {
        if let Some(entry) = self.cache.entries.lock().get_mut(self.domain) {
            if entry
                .flight
                .as_ref()
                .is_some_and(|f| Arc::ptr_eq(f, &self.flight))
            {
                entry.flight = None;
            }
        }
        self.flight.finish();
    }
}

/// A fetch in progress: sessions wanting the same domain wait for it.
#[derive(Default)]
struct Flight {
    done: Mutex<bool>,
    cv: Condvar,
}

impl Flight {
    fn wait(&self) {
        let mut done = self.done.lock();
        while !*done {
            self.cv.wait(&mut done);
        }
    }

    fn finish(&self) {
        *self.done.lock() = true;
        self.cv.notify_all();
    }
}

#[derive(Default)]
struct Entry {
    cached: Option<Arc<Cached>>,
    last_failure: Option<u64>,
    flight: Option<Arc<Flight>>,
}

/// At most this many domains are cached in memory; beyond, policies are still looked up and
/// applied but not kept (the cache's memory is bounded).
pub const MAX_DOMAINS: usize = 100_000;

/// The cache (the fetching client is the runtime's: it follows reloads).
pub struct StsCache {
    dir: Option<PathBuf>,
    entries: Mutex<HashMap<String, Entry>>,
}

/// A cache file.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct CacheFile {
    version: u32,
    domain: String,
    id: String,
    fetched_at: u64,
    /// The policy file's text as fetched.
    policy: String,
}

impl StsCache {
    /// A cache; with `state_dir`, the policies kept there are loaded (unreadable files are
    /// skipped with a warning) and new ones saved there.
    pub fn new(state_dir: Option<&Path>) -> StsCache {
        let dir = state_dir.map(|d| d.join(DIR_NAME));
        let mut entries = HashMap::new();
        if let Some(dir) = &dir {
            if let Err(e) = std::fs::create_dir_all(dir) {
                warn!(
                    "{}: {e}; MTA-STS policies are not kept across restarts",
                    dir.display()
                );
            }
            for (domain, cached) in load(dir) {
                entries.insert(
                    domain,
                    Entry {
                        cached: Some(Arc::new(cached)),
                        ..Entry::default()
                    },
                );
            }
        }
        StsCache {
            dir,
            entries: Mutex::new(entries),
        }
    }

    /// The cached policy of `domain` as TLS-RPT reports it.
    pub fn policy_ref(&self, domain: &str) -> Option<PolicyRef> {
        let cached = self
            .entries
            .lock()
            .get(&rules::normalise(domain))?
            .cached
            .clone()?;
        Some(PolicyRef {
            policy_type: PolicyType::Sts,
            strings: cached.policy.lines.clone(),
            mx_hosts: cached.policy.mx.clone(),
        })
    }

    /// Domains with a cached policy (for status).
    pub fn cached_domains(&self) -> usize {
        self.entries
            .lock()
            .values()
            .filter(|e| e.cached.is_some())
            .count()
    }

    /// The policy in effect for `domain` now: the TXT record looked up, the policy fetched if
    /// the cache rule says so (once at a time per domain), the cache updated.
    pub fn lookup(&self, client: &https::Client, domain: &str) -> Lookup {
        let domain = rules::normalise(domain);
        let now = unix_now();
        let records = client.resolver.lookup_txt(rules::TXT_PREFIX, &domain);
        let parsed = records.as_ref().map(|r| rules::parse_txt(r));
        let txt = match &parsed {
            Ok(Ok(Some(id))) => TxtSeen::Id(id),
            Ok(Ok(None)) => TxtSeen::Absent,
            Ok(Err(_)) | Err(_) => TxtSeen::Unusable,
        };
        let flight = loop {
            let wait = {
                let mut entries = self.entries.lock();
                // No entry is made for a domain until a fetch is due: domains without a policy
                // cost nothing here.
                let entry = entries.get(&domain);
                let cached = entry.and_then(|e| e.cached.as_deref());
                match plan(cached, txt, entry.and_then(|e| e.last_failure), now) {
                    Plan::UseCached => {
                        return Lookup {
                            policy: entry.and_then(|e| e.cached.clone()),
                            failure: None,
                        }
                    }
                    Plan::NoPolicy => return Lookup::default(),
                    Plan::Fetch => match entry.and_then(|e| e.flight.clone()) {
                        Some(f) => f,
                        None if entry.is_none() && entries.len() >= MAX_DOMAINS => {
                            // Not kept: fetched for this delivery only.
                            drop(entries);
                            return match txt {
                                TxtSeen::Id(id) => self.fetch_uncached(client, &domain, id, now),
                                _ => Lookup::default(),
                            };
                        }
                        None => {
                            let f = Arc::new(Flight::default());
                            entries.entry(domain.clone()).or_default().flight = Some(f.clone());
                            break f;
                        }
                    },
                }
            };
            wait.wait();
        };
        // Whatever happens to this fetch (a panic included), the flight ends and its waiters
        // plan again.
        let guard = FlightGuard {
            cache: self,
            domain: &domain,
            flight,
        };
        let TxtSeen::Id(id) = txt else {
            // plan() fetches only with an id.
            return Lookup::default();
        };
        let result = fetch(client, &domain, id, now);
        let lookup = {
            let mut entries = self.entries.lock();
            let entry = entries.entry(domain.clone()).or_default();
            match result {
                Ok(cached) => {
                    entry.cached = Some(cached.clone());
                    entry.last_failure = None;
                    Ok(cached)
                }
                Err(e) => {
                    entry.last_failure = Some(now);
                    Err((
                        after_fetch_failure(entry.cached.as_deref(), now).is_some(),
                        entry.cached.clone(),
                        e,
                    ))
                }
            }
        };
        drop(guard);
        match lookup {
            Ok(cached) => {
                self.save(&domain, &cached);
                Lookup {
                    policy: Some(cached),
                    failure: None,
                }
            }
            Err((fresh, cached, e)) => {
                warn!(
                    "{domain}: {e}{}",
                    if fresh {
                        "; the cached policy stays in force"
                    } else {
                        ""
                    }
                );
                Lookup {
                    policy: cached.filter(|_| fresh),
                    failure: Some(Arc::new(e)),
                }
            }
        }
    }

    fn fetch_uncached(&self, client: &https::Client, domain: &str, id: &str, now: u64) -> Lookup {
        match fetch(client, domain, id, now) {
            Ok(c) => Lookup {
                policy: Some(c),
                failure: None,
            },
            Err(e) => Lookup {
                policy: None,
                failure: Some(Arc::new(e)),
            },
        }
    }

    fn save(&self, domain: &str, cached: &Cached) {
        let Some(dir) = &self.dir else { return };
        let file = CacheFile {
            version: 1,
            domain: domain.to_string(),
            id: cached.id.clone(),
            fetched_at: cached.fetched_at,
            policy: cached.policy.lines.join("\r\n") + "\r\n",
        };
        let text = serde_json::to_string(&file).unwrap_or_default() + "\n";
        if let Err((path, e)) =
            crate::statefile::write_atomic(dir, &format!("{domain}.json"), text.as_bytes())
        {
            warn!(
                "{}: {e}; the MTA-STS policy of {domain} is not kept",
                path.display()
            );
        }
    }
}

/// Fetch and parse (no lock held).
fn fetch(
    client: &https::Client,
    domain: &str,
    id: &str,
    now: u64,
) -> Result<Arc<Cached>, StsError> {
    let body = client
        .get(&rules::policy_host(domain), rules::POLICY_PATH)
        .map_err(StsError::Fetch)?;
    let policy = Policy::parse(&body).map_err(StsError::Invalid)?;
    info!(
        "{domain}: MTA-STS policy {id} fetched: mode {:?}, max_age {}",
        policy.mode, policy.max_age
    );
    Ok(Arc::new(Cached {
        id: id.to_string(),
        policy,
        fetched_at: now,
    }))
}

/// The policies kept in `dir` (files that cannot be read or parsed are skipped with a
/// warning: a policy missing from the cache is fetched again).
fn load(dir: &Path) -> Vec<(String, Cached)> {
    let Ok(read) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for entry in read.flatten() {
        let path = entry.path();
        if path.extension().and_then(|e| e.to_str()) != Some("json") {
            continue;
        }
        let parsed = std::fs::read_to_string(&path)
            .map_err(|e| e.to_string())
            .and_then(|t| decode(&t));
        match parsed {
            Ok(found) => out.push(found),
            Err(why) => warn!(
                "{}: not an MTA-STS cache file ({why}); skipped",
                path.display()
            ),
        }
    }
    out
}

/// A cache file's text to its domain and policy.
fn decode(text: &str) -> Result<(String, Cached), String> {
    let file: CacheFile = serde_json::from_str(text).map_err(|e| e.to_string())?;
    if file.version != 1 {
        return Err(format!("version {}", file.version));
    }
    let policy = Policy::parse(file.policy.as_bytes()).map_err(|e| e.to_string())?;
    Ok((
        rules::normalise(&file.domain),
        Cached {
            id: file.id,
            policy,
            fetched_at: file.fetched_at,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_files_round_trip() {
        let text = r#"{"version":1,"domain":"Example.com","id":"a1","fetched_at":5,"policy":"version: STSv1\r\nmode: enforce\r\nmx: mx.example.com\r\nmax_age: 86400\r\n"}"#;
        let (domain, cached) = decode(text).unwrap();
        assert_eq!(domain, "example.com");
        assert_eq!(cached.id, "a1");
        assert_eq!(cached.expires_at(), 86405);
        assert!(
            decode(r#"{"version":2,"domain":"a","id":"a","fetched_at":0,"policy":""}"#).is_err()
        );
        assert!(decode("{").is_err());
    }
}
