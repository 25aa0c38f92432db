//! TLS reporting (RFC 8460): the day's ledger (`proto::tls_policy::rpt::Ledger`) under one
//! mutex, fed with each set-up outcome; the reporting addresses (`_smtp._tls.<domain>` TXT
//! `rua=`) looked up once per domain and day; each closed day's reports written into
//! `state_directory/tls-rpt/<YYYY-MM-DD>/<domain>.json` (and the `rua` beside it,
//! `<domain>.rua`, one URI a line), the current day's so far on SIGUSR1 and at shutdown.
//! A day closes just after midnight UTC (a thread of its own, [`start_day_closer`]), or at the
//! first outcome of the next day, whichever comes first; SIGUSR1 and shutdown write the
//! current day so far.
//! Sending is the operator's (docs/TLS-POLICY.md has a script).

use super::unix_now;
use crate::dns::Resolver;
use greenarrow_proxy_proto::tls_policy::rpt::{
    parse_rua, Day, DomainDay, FailureKey, Ledger, PolicyRef, TXT_PREFIX,
};
use log::{info, warn};
use parking_lot::Mutex;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

/// The reports' subdirectory of `state_directory`.
pub const DIR_NAME: &str = "tls-rpt";

/// Today's counts of one domain, for status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DomainToday {
    pub domain: String,
    pub successes: u64,
    pub failures: u64,
    /// The `rua` URIs, when the domain publishes them.
    pub rua: Vec<String>,
}

struct State {
    ledger: Ledger,
    /// The day of the last outcome recorded.
    today: Option<Day>,
    /// Domains' `rua`: `None` while being looked up or when none is published.
    rua: HashMap<String, Option<Vec<String>>>,
}

/// The reporter.
pub struct Reports {
    state: Mutex<State>,
    dir: Option<PathBuf>,
    organization: String,
    contact: String,
}

impl Reports {
    /// Reports signed by `organization` (and `contact`), written under `state_dir` if any.
    pub fn new(state_dir: Option<&Path>, organization: &str, contact: Option<&str>) -> Reports {
        Reports {
            state: Mutex::new(State {
                ledger: Ledger::default(),
                today: None,
                rua: HashMap::new(),
            }),
            dir: state_dir.map(|d| d.join(DIR_NAME)),
            organization: organization.to_string(),
            contact: contact.unwrap_or("").to_string(),
        }
    }

    /// Count one session's outcome (a success when `failure` is `None`); the domain's `rua`
    /// is looked up with `resolver` (the runtime's) at its first outcome of the day.
    pub fn record(
        &self,
        domain: &str,
        policy: &PolicyRef,
        failure: Option<FailureKey>,
        resolver: Option<&Resolver>,
    ) {
        let day = Day::of(unix_now());
        let domain = domain.trim_end_matches('.').to_ascii_lowercase();
        let (closed, look_up) = {
            let mut s = self.state.lock();
            let closed = match s.today {
                Some(d) if d < day => {
                    s.rua.clear();
                    s.ledger.take_before(day)
                }
                _ => Vec::new(),
            };
            s.today = Some(day);
            s.ledger.record(day, &domain, policy, failure);
            let look_up = !s.rua.contains_key(&domain);
            if look_up {
                s.rua.insert(domain.clone(), None);
            }
            (closed, look_up)
        };
        if look_up {
            self.look_up_rua(&domain, resolver);
        }
        for (day, domains) in closed {
            self.write(day, &domains);
        }
    }

    fn look_up_rua(&self, domain: &str, resolver: Option<&Resolver>) {
        let Some(resolver) = resolver else {
            return;
        };
        let rua = match resolver.lookup_txt(TXT_PREFIX, domain) {
            Ok(records) => parse_rua(&records),
            Err(e) => {
                warn!("{domain}: TLS-RPT rua look-up: {e}");
                None
            }
        };
        self.state.lock().rua.insert(domain.to_string(), rua);
    }

    /// Today's counts per domain (for status), sorted by domain.
    pub fn today(&self) -> Vec<DomainToday> {
        let s = self.state.lock();
        let Some(day) = s.today else {
            return Vec::new();
        };
        if day < Day::of(unix_now()) {
            return Vec::new();
        }
        s.ledger
            .day(day)
            .map(|(domain, dd)| {
                let (successes, failures) = dd.totals();
                DomainToday {
                    domain: domain.to_string(),
                    successes,
                    failures,
                    rua: s.rua.get(domain).cloned().flatten().unwrap_or_default(),
                }
            })
            .collect()
    }

    /// Write the closed days' reports (the day closer, just after midnight UTC).
    pub fn close_days(&self) {
        let today = Day::of(unix_now());
        let closed = self.state.lock().ledger.take_before(today);
        for (day, domains) in closed {
            self.write(day, &domains);
        }
    }

    /// Write the closed days' reports and the current day's so far (SIGUSR1, shutdown).
    pub fn flush(&self) {
        let now = Day::of(unix_now());
        let (closed, current) = {
            let mut s = self.state.lock();
            let closed = s.ledger.take_before(now);
            let current: BTreeMap<String, DomainDay> = s
                .ledger
                .day(now)
                .map(|(d, dd)| (d.to_string(), dd.clone()))
                .collect();
            (closed, current)
        };
        for (day, domains) in closed {
            self.write(day, &domains);
        }
        self.write(now, &current);
    }

    /// Write one day's reports (outside the lock).
    fn write(&self, day: Day, domains: &BTreeMap<String, DomainDay>) {
        let Some(root) = &self.dir else { return };
        if domains.is_empty() {
            return;
        }
        let dir = root.join(day.iso());
        if let Err(e) = std::fs::create_dir_all(&dir) {
            warn!(
                "{}: {e}; TLS-RPT reports of {} not written",
                dir.display(),
                day.iso()
            );
            return;
        }
        let ruas: HashMap<String, Vec<String>> = {
            let s = self.state.lock();
            domains
                .keys()
                .filter_map(|d| Some((d.clone(), s.rua.get(d)?.clone()?)))
                .collect()
        };
        let mut written = 0;
        for (domain, dd) in domains {
            let report = dd.report(day, domain, &self.organization, &self.contact);
            let Ok(mut text) = serde_json::to_string_pretty(&report) else {
                continue;
            };
            text.push('\n');
            let result =
                crate::statefile::write_atomic(&dir, &format!("{domain}.json"), text.as_bytes())
                    .and_then(|()| match ruas.get(domain) {
                        Some(uris) => crate::statefile::write_atomic(
                            &dir,
                            &format!("{domain}.rua"),
                            (uris.join("\n") + "\n").as_bytes(),
                        ),
                        None => Ok(()),
                    });
            match result {
                Ok(()) => written += 1,
                Err((path, e)) => warn!("{}: {e}; TLS-RPT report not written", path.display()),
            }
        }
        info!(
            "TLS-RPT: {written} report(s) of {} written in {}",
            day.iso(),
            dir.display()
        );
    }
}

/// Start the thread that closes each UTC day: it wakes one second after midnight and calls
/// `close` (which writes the day just closed), until `close` says the server is gone. A timer,
/// not a synchronisation: the reports are also written at the next day's first session.
pub fn start_day_closer(
    close: impl Fn() -> bool + Send + 'static,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("tls-rpt".into())
        .spawn(move || loop {
            let now = unix_now();
            let next = Day::of(now).start() + 86_400 + 1;
            std::thread::sleep(std::time::Duration::from_secs(next.saturating_sub(now)));
            if !close() {
                return;
            }
        })
}
