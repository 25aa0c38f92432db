//! State shared by the accept threads and every session of a running server: the runtime in
//! force, the pool, counters, per-address session counts, and the registry of sessions idle
//! between requests (so that a stop can wake them).

use crate::caps::{Caps, Permit};
use crate::drain::Drains;
use crate::localaddr::LocalAddrs;
use crate::pool::Pool;
use crate::runtime::{pool_limits, Runtime};
use crate::tlspolicy::TlsPolicies;
pub use greenarrow_proxy_proto::status::{ConfigState, LastReload};
pub use greenarrow_proxy_proto::tls_policy::TlsOutcome;
use parking_lot::{Mutex, RwLock};
use std::collections::HashMap;
use std::net::{IpAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

mod stats;
pub use stats::{Peer, Refusal, Stats, StatsSnapshot};

/// One session's claim on its MTA address's share of `max_sessions_per_ip`; released on drop.
pub struct IpSlot {
    shared: Arc<Shared>,
    ip: IpAddr,
}

impl IpSlot {
    /// Claim a slot for `ip`, unless it already has `limit` sessions.
    pub(crate) fn take(shared: &Arc<Shared>, ip: IpAddr, limit: usize) -> Option<IpSlot> {
        let ip = ip.to_canonical();
        let mut map = shared.per_ip.lock();
        let n = map.entry(ip).or_insert(0);
        if *n >= limit {
            return None;
        }
        *n += 1;
        Some(IpSlot {
            shared: shared.clone(),
            ip,
        })
    }
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut map = self.shared.per_ip.lock();
        if let Some(n) = map.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.ip);
            }
        }
    }
}

/// What receives every set-up outcome under the TLS policies ([`Shared::tls_outcome`]): the
/// TLS reporting ledger (RFC 8460), or a test's recorder. Called on session threads, outside
/// every lock of the daemon; it must not block.
pub trait TlsOutcomes: Send + Sync {
    fn record(&self, outcome: &TlsOutcome<'_>);
}

/// State shared by the accept threads and every session.
pub struct Shared {
    /// Sessions (queued or running) per MTA address.
    per_ip: Mutex<HashMap<IpAddr, usize>>,
    /// Sessions waiting for the MTA's next request (command state), by session number: a
    /// handle on each socket so that a stop can wake them.
    idle_mtas: Mutex<HashMap<u64, std::os::fd::RawFd>>,
    next_session: AtomicU64,
    runtime: RwLock<Arc<Runtime>>,
    pool: Arc<Pool<Permit>>,
    caps: Caps,
    drains: Drains,
    local: LocalAddrs,
    stats: Stats,
    /// The MTA-STS cache and the TLS-RPT reports (outlive reloads).
    tls_policies: TlsPolicies,
    /// Start and reload times, and the last reload's outcome.
    config_state: Mutex<ConfigState>,
    stopping: AtomicBool,
    /// Where TLS set-up outcomes go ([`Shared::set_tls_outcomes`]).
    tls_outcomes: RwLock<Option<Arc<dyn TlsOutcomes>>>,
    /// Test builds only: the next session panics right after its TLS handshake (to exercise
    /// the worker's panic guard).
    #[cfg(any(test, feature = "test-hooks"))]
    panic_next_session: AtomicBool,
}

impl Shared {
    /// Shared state for a server starting with `rt` and `pool`.
    pub fn new(rt: Runtime, pool: Arc<Pool<Permit>>) -> Shared {
        let caps = Caps::new();
        caps.set_config(&rt.config.caps);
        Shared {
            per_ip: Mutex::new(HashMap::new()),
            idle_mtas: Mutex::new(HashMap::new()),
            next_session: AtomicU64::new(0),
            pool,
            caps,
            drains: Drains::default(),
            local: LocalAddrs::new(),
            tls_policies: TlsPolicies::new(
                rt.config.state_directory.as_deref(),
                &rt.config.mx_tls.sts.tls_rpt_organization,
                rt.config.mx_tls.sts.tls_rpt_contact.as_deref(),
            ),
            runtime: RwLock::new(Arc::new(rt)),
            stats: Stats::default(),
            config_state: Mutex::new(ConfigState::new(SystemTime::now())),
            stopping: AtomicBool::new(false),
            tls_outcomes: RwLock::new(None),
            #[cfg(any(test, feature = "test-hooks"))]
            panic_next_session: AtomicBool::new(false),
        }
    }

    /// Idle MX connections for reuse.
    pub fn pool(&self) -> &Arc<Pool<Permit>> {
        &self.pool
    }

    /// Open MX connections under caps, and the requests waiting for one.
    pub fn caps(&self) -> &Caps {
        &self.caps
    }

    /// Source addresses and MXes drained by the operator (`gaproxy drain`).
    pub fn drains(&self) -> &Drains {
        &self.drains
    }

    /// Source addresses that left the host (kept up to date by `localaddr::watch`).
    pub fn local(&self) -> &LocalAddrs {
        &self.local
    }

    /// Counters since start.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// The MTA-STS cache and the TLS-RPT reports.
    pub fn tls_policies(&self) -> &TlsPolicies {
        &self.tls_policies
    }

    /// The policy in force for `domain` (MTA-STS), looked up with the runtime's client;
    /// `None` when MTA-STS cannot be looked up (no resolver).
    pub fn sts_lookup(&self, domain: &str) -> Option<crate::tlspolicy::sts::Lookup> {
        let rt = self.runtime();
        let client = rt.sts_client.as_ref()?;
        Some(self.tls_policies.sts.lookup(client, domain))
    }

    /// Send every TLS set-up outcome to `sink` too from now on (a test's recorder).
    pub fn set_tls_outcomes(&self, sink: Arc<dyn TlsOutcomes>) {
        *self.tls_outcomes.write() = Some(sink);
    }

    /// The hook a session calls after each set-up attempt at an MX host under the TLS
    /// policies (success or failure, refusals before a dial included): the policy domain, the
    /// MX host, the policy applied and the RFC 8460 result type of a failure. Counted in the
    /// metrics (per result type, per policy type) and, with a policy domain, in the day's
    /// TLS-RPT ledger.
    pub fn tls_outcome(&self, outcome: &TlsOutcome<'_>) {
        self.stats.tls_rpt_outcome(outcome.policy, outcome.result);
        self.tls_policies
            .record(outcome, self.runtime().resolver.as_ref());
        let sink = self.tls_outcomes.read().clone();
        if let Some(sink) = sink {
            sink.record(outcome);
        }
    }

    /// Whether the proxy is stopping (no new sessions, no new waits).
    pub fn stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    /// The proxy stops: from now on [`Shared::stopping`] says so.
    pub(crate) fn set_stopping(&self) {
        self.stopping.store(true, Ordering::SeqCst);
    }

    /// Test builds only (`cfg(test)` or the `test-hooks` feature, which the integration tests
    /// enable): make the next session panic right after its TLS handshake.
    #[cfg(any(test, feature = "test-hooks"))]
    pub fn panic_next_session_for_tests(&self) {
        self.panic_next_session.store(true, Ordering::SeqCst);
    }

    /// Panic if a test asked for it ([`Shared::panic_next_session_for_tests`]).
    #[cfg(any(test, feature = "test-hooks"))]
    pub(crate) fn panic_if_a_test_asks(&self) {
        if self.panic_next_session.load(Ordering::Relaxed)
            && self.panic_next_session.swap(false, Ordering::SeqCst)
        {
            panic!("session panic requested by a test");
        }
    }

    /// Nothing: the daemon has no test hooks.
    #[cfg(not(any(test, feature = "test-hooks")))]
    #[inline(always)]
    pub(crate) fn panic_if_a_test_asks(&self) {}
}

impl Shared {
    /// A number for a new session.
    pub fn session_number(&self) -> u64 {
        self.next_session.fetch_add(1, Ordering::Relaxed)
    }

    /// A session is about to wait for its MTA's next request: if the proxy is stopping, say so
    /// (false: do not wait, end the session); otherwise register `socket` so that a stop wakes
    /// the wait (by shutting its read side down).
    pub fn waiting_for_request(&self, session: u64, socket: &TcpStream) -> bool {
        use std::os::fd::AsRawFd;
        // The descriptor stays valid while registered: the session deregisters (under the
        // lock) before it closes its socket, and the stop shuts sockets down under the lock.
        self.idle_mtas.lock().insert(session, socket.as_raw_fd());
        // Checked after registering: a stop either sees the entry or is seen here.
        !self.stopping()
    }

    /// The session has its request (or is ending).
    pub fn request_arrived(&self, session: u64) {
        self.idle_mtas.lock().remove(&session);
    }

    /// Wake every session waiting for a request, so that it can end at once.
    pub(crate) fn wake_idle_sessions(&self) {
        for &fd in self.idle_mtas.lock().values() {
            let _ = nix::sys::socket::shutdown(fd, nix::sys::socket::Shutdown::Read);
        }
    }

    /// The runtime in force now (sessions keep the one they started with).
    pub fn runtime(&self) -> Arc<Runtime> {
        self.runtime.read().clone()
    }

    /// Start and reload times, and the last reload's outcome.
    pub fn config_state(&self) -> ConfigState {
        self.config_state.lock().clone()
    }

    /// A reload was tried at `at`: `error` is why it failed (None: the new configuration is in
    /// force).
    pub fn note_reload(&self, at: SystemTime, error: Option<String>) {
        let mut st = self.config_state.lock();
        if error.is_none() {
            st.loaded = at;
        }
        st.last_reload = Some(LastReload { at, error });
    }

    /// Put a new runtime in force for new sessions (and the pool's new limits, and the new
    /// connection caps for new connections).
    pub fn replace_runtime(&self, rt: Runtime) {
        self.pool.set_limits(pool_limits(&rt.config));
        self.caps.set_config(&rt.config.caps);
        *self.runtime.write() = Arc::new(rt);
    }
}

/// The address watcher's view of the proxy ([`crate::localaddr::watch`]).
impl crate::localaddr::watch::Host for Shared {
    fn stopping(&self) -> bool {
        Shared::stopping(self)
    }

    fn local(&self) -> &LocalAddrs {
        &self.local
    }

    fn configured(&self, ip: IpAddr) -> bool {
        let rt = self.runtime();
        let c = &rt.config;
        c.source_addresses
            .iter()
            .chain(
                c.clients
                    .iter()
                    .flat_map(|cl| cl.source_addresses.iter().flatten()),
            )
            .any(|n| n.contains(ip))
    }

    fn close_idle_from(&self, ip: IpAddr) -> usize {
        let conns = self.pool.take_keys_where(|k| k.source != ip);
        let n = conns.len();
        // No QUIT: the address is gone, nothing can reach the MX from it.
        for c in conns {
            c.close();
        }
        n
    }
}
