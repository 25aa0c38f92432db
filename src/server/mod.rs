//! The daemon's server: listeners, the accept threads, `allow_from`, the worker pool, and the
//! shared state every session reads.

pub mod workers;

use crate::config::Config;
use crate::dns::{Resolver, ResolverSettings};
use crate::mx::{MxSettings, MxTimeouts};
use crate::pool::reaper::{quit_all, Reaper};
use crate::pool::{Pool, PoolLimits};
use crate::smtp::{RelayLimits, ReplyLimits};
use crate::tls::{load_roots, MinVersion, MxTlsConnector, TlsAcceptor, TlsError};
use log::{error, info, warn};
use parking_lot::{Mutex, RwLock};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use std::collections::HashMap;
use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use workers::{PoolCounts, WorkerPool};

/// Stack size of a session thread. Sessions keep their buffers on the heap; 256 KiB leaves
/// ample room for rustls and the parsers while costing only the pages actually touched.
pub const SESSION_STACK: usize = 256 * 1024;

/// What a configuration turns into at (re)load: the config plus everything loaded from it.
pub struct Runtime {
    pub config: Config,
    pub acceptor: TlsAcceptor,
    pub mx: MxSettings,
    pub relay_limits: RelayLimits,
    /// `None` when the resolver could not be set up (requests by name then fail with
    /// `dns_temporary`; IP literals still work).
    pub resolver: Option<Resolver>,
}

/// Why a configuration could not be put into service.
#[derive(Debug)]
pub enum StartError {
    /// The MTA-facing certificate/key or the MX roots could not be loaded.
    Tls(TlsError),
    /// A listen address could not be bound.
    Bind { addr: SocketAddr, error: io::Error },
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StartError::Tls(e) => write!(f, "{e}"),
            StartError::Bind { addr, error } => write!(f, "cannot listen on {addr}: {error}"),
        }
    }
}

impl std::error::Error for StartError {}

impl Runtime {
    /// Load what the configuration names (certificate, key, roots).
    pub fn build(config: Config) -> Result<Runtime, StartError> {
        let acceptor = TlsAcceptor::from_pem_files_with_client_ca(
            &config.tls_certificate,
            &config.tls_private_key,
            config.tls_client_ca.as_deref(),
        )
        .map_err(StartError::Tls)?;
        let roots = load_roots(config.mx_tls.ca_file.as_deref()).map_err(StartError::Tls)?;
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
        Ok(Runtime {
            config,
            acceptor,
            mx,
            relay_limits,
            resolver,
        })
    }
}

/// Counters since start.
#[derive(Default)]
pub struct Stats {
    pub sessions: AtomicU64,
    pub refused_allow_from: AtomicU64,
    pub refused_busy: AtomicU64,
    pub refused_per_ip: AtomicU64,
    pub connects: AtomicU64,
    pub connect_failures: AtomicU64,
    pub messages: AtomicU64,
}

/// One session's claim on its MTA address's share of `max_sessions_per_ip`; released on drop.
pub struct IpSlot {
    shared: Arc<Shared>,
    ip: IpAddr,
}

impl IpSlot {
    /// Claim a slot for `ip`, unless it already has `limit` sessions.
    fn take(shared: &Arc<Shared>, ip: IpAddr, limit: usize) -> Option<IpSlot> {
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

/// State shared by the accept threads and every session.
pub struct Shared {
    /// Sessions (queued or running) per MTA address.
    per_ip: Mutex<HashMap<IpAddr, usize>>,
    /// Sessions waiting for the MTA's next request (command state), by session number: a
    /// handle on each socket so that a stop can wake them.
    idle_mtas: Mutex<HashMap<u64, std::os::fd::RawFd>>,
    next_session: AtomicU64,
    runtime: RwLock<Arc<Runtime>>,
    /// Idle MX connections for reuse.
    pub pool: Arc<Pool>,
    pub stats: Stats,
    pub stopping: AtomicBool,
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
        !self.stopping.load(Ordering::SeqCst)
    }

    /// The session has its request (or is ending).
    pub fn request_arrived(&self, session: u64) {
        self.idle_mtas.lock().remove(&session);
    }

    /// Wake every session waiting for a request, so that it can end at once.
    fn wake_idle_sessions(&self) {
        for &fd in self.idle_mtas.lock().values() {
            let _ = nix::sys::socket::shutdown(fd, nix::sys::socket::Shutdown::Read);
        }
    }

    /// The runtime in force now (sessions keep the one they started with).
    pub fn runtime(&self) -> Arc<Runtime> {
        self.runtime.read().clone()
    }

    /// Put a new runtime in force for new sessions (and the pool's new limits).
    pub fn replace_runtime(&self, rt: Runtime) {
        self.pool.set_limits(pool_limits(&rt.config));
        *self.runtime.write() = Arc::new(rt);
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

/// File descriptors the configuration may need at its limits: two per session (MTA and MX
/// sockets), one per idle pooled connection, plus listeners, DNS and logging.
pub fn fds_needed(config: &Config) -> u64 {
    (config.max_sessions as u64 + config.max_queued_sessions as u64) * 2
        + config.pool.max_idle_total as u64
        + config.listen.len() as u64
        + 64
}

/// Raise the soft RLIMIT_NOFILE to the hard limit; a warning when even that is below what
/// the configuration may need.
pub fn fd_budget(config: &Config) -> Option<String> {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).ok()?;
    if soft < hard {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    }
    let need = fds_needed(config);
    (hard < need).then(|| {
        format!(
            "the open-files limit is {hard} but max_sessions, max_queued_sessions and pool.max_idle_total may need {need}: raise LimitNOFILE (systemd) or lower them"
        )
    })
}

struct Listener {
    addr: SocketAddr,
    socket: Arc<Socket>,
    thread: Option<JoinHandle<()>>,
}

/// A running server.
pub struct Server {
    pub shared: Arc<Shared>,
    workers: WorkerPool,
    listeners: Mutex<Vec<Listener>>,
    reaper: Mutex<Option<Reaper>>,
}

fn bind(addr: SocketAddr) -> Result<Socket, StartError> {
    let err = |error| StartError::Bind { addr, error };
    let s =
        Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP)).map_err(err)?;
    s.set_reuse_address(true).map_err(err)?;
    if addr.is_ipv6() {
        s.set_only_v6(true).map_err(err)?;
    }
    s.bind(&SockAddr::from(addr)).map_err(err)?;
    s.listen(1024).map_err(err)?;
    Ok(s)
}

impl Server {
    /// Bind every `listen` address and start accepting.
    pub fn start(rt: Runtime) -> Result<Arc<Server>, StartError> {
        if let Some(w) = fd_budget(&rt.config) {
            warn!("{w}");
        }
        let listen = rt.config.listen.clone();
        let workers = WorkerPool::new(
            rt.config.max_sessions,
            rt.config.max_queued_sessions,
            SESSION_STACK,
        );
        let pool = Arc::new(Pool::new(pool_limits(&rt.config)));
        let shared = Arc::new(Shared {
            per_ip: Mutex::new(HashMap::new()),
            idle_mtas: Mutex::new(HashMap::new()),
            next_session: AtomicU64::new(0),
            pool: pool.clone(),
            runtime: RwLock::new(Arc::new(rt)),
            stats: Stats::default(),
            stopping: AtomicBool::new(false),
        });
        let server = Arc::new(Server {
            shared,
            workers,
            listeners: Mutex::new(Vec::new()),
            reaper: Mutex::new(None),
        });
        let weak = Arc::downgrade(&server.shared);
        let verbose = move || {
            weak.upgrade()
                .is_some_and(|s| s.runtime().config.log_verbose)
        };
        match Reaper::start(pool, verbose) {
            Ok(r) => *server.reaper.lock() = Some(r),
            Err(e) => warn!("cannot start the pool reaper thread (pooled connections will expire only at checkout): {e}"),
        }
        let mut sockets = Vec::new();
        for addr in listen {
            sockets.push((addr, bind(addr)?));
        }
        for (addr, socket) in sockets {
            server.add_listener(addr, socket);
        }
        Ok(server)
    }

    fn add_listener(self: &Arc<Self>, configured: SocketAddr, socket: Socket) {
        let addr = socket
            .local_addr()
            .ok()
            .and_then(|a| a.as_socket())
            .unwrap_or(configured);
        let socket = Arc::new(socket);
        let me = self.clone();
        let s2 = socket.clone();
        let thread = std::thread::Builder::new()
            .name(format!("accept {addr}"))
            .spawn(move || me.accept_loop(&s2, addr));
        match thread {
            Ok(t) => {
                info!("listening on {addr}");
                self.listeners.lock().push(Listener {
                    addr: configured,
                    socket,
                    thread: Some(t),
                });
            }
            Err(e) => error!("cannot start the accept thread for {addr}: {e}"),
        }
    }

    /// The addresses actually bound (with the ports chosen when `:0` was configured).
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.listeners
            .lock()
            .iter()
            .filter_map(|l| l.socket.local_addr().ok().and_then(|a| a.as_socket()))
            .collect()
    }

    fn accept_loop(&self, socket: &Socket, addr: SocketAddr) {
        loop {
            let (conn, peer) = match socket.accept() {
                Ok((c, p)) => (c, p),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    if self.shared.stopping.load(Ordering::SeqCst) {
                        return;
                    }
                    if matches!(
                        e.raw_os_error(),
                        Some(nix::libc::EINVAL) | Some(nix::libc::EBADF)
                    ) {
                        // The listener was shut down (reload removed it).
                        return;
                    }
                    // EMFILE and friends: log and back off briefly so we do not spin.
                    warn!("accept on {addr}: {e}");
                    std::thread::sleep(std::time::Duration::from_millis(100));
                    continue;
                }
            };
            let Some(peer) = peer.as_socket() else {
                continue;
            };
            if self.shared.stopping.load(Ordering::SeqCst) {
                return;
            }
            let rt = self.shared.runtime();
            if !rt.config.allow_from.iter().any(|n| n.contains(peer.ip())) {
                self.shared
                    .stats
                    .refused_allow_from
                    .fetch_add(1, Ordering::Relaxed);
                warn!(mta:% = peer; "refused: not in allow_from");
                drop(conn);
                continue;
            }
            let Some(slot) = IpSlot::take(&self.shared, peer.ip(), rt.config.max_sessions_per_ip)
            else {
                self.shared
                    .stats
                    .refused_per_ip
                    .fetch_add(1, Ordering::Relaxed);
                warn!(mta:% = peer; "refused: {} sessions from this address already (max_sessions_per_ip)", rt.config.max_sessions_per_ip);
                continue;
            };
            drop(rt);
            let tcp: TcpStream = conn.into();
            let shared = self.shared.clone();
            let job = Box::new(move || {
                let _slot = slot;
                shared.stats.sessions.fetch_add(1, Ordering::Relaxed);
                crate::session::serve(shared, tcp, peer);
            });
            if let Err(job) = self.workers.try_submit(job) {
                // Dropping the job closes its socket.
                drop(job);
                self.shared
                    .stats
                    .refused_busy
                    .fetch_add(1, Ordering::Relaxed);
                warn!(
                    mta:% = peer;
                    "refused: all {} session threads busy and the queue is full",
                    self.shared.runtime().config.max_sessions
                );
            }
        }
    }

    /// The bound addresses of front-end `index` (the config's `frontends` list), in `listen`
    /// order.
    // stub: replaced by the front-end integration
    pub fn frontend_addrs(&self, _index: usize) -> Vec<SocketAddr> {
        Vec::new()
    }

    /// Sessions running and queued.
    pub fn worker_counts(&self) -> PoolCounts {
        self.workers.counts()
    }

    /// Stop accepting: wake every accept thread and join it.
    pub fn stop_accepting(&self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        let mut ls = self.listeners.lock();
        for l in ls.iter_mut() {
            let _ = l.socket.shutdown(std::net::Shutdown::Read);
            if let Some(t) = l.thread.take() {
                let _ = t.join();
            }
        }
        ls.clear();
        drop(ls);
        // Sessions idle between requests would otherwise keep the drain waiting.
        self.shared.wake_idle_sessions();
    }

    /// Wait for sessions in progress to end, up to `grace`; then QUIT and close every
    /// pooled connection (including those the sessions just returned). True if all ended.
    pub fn drain(&self, grace: std::time::Duration) -> bool {
        self.workers.shutdown();
        let idle = self.workers.wait_idle(grace);
        if let Some(mut r) = self.reaper.lock().take() {
            r.stop();
        }
        quit_all(self.shared.pool.take_all());
        idle
    }

    /// The configured listen addresses currently bound.
    pub fn listen_config(&self) -> Vec<SocketAddr> {
        self.listeners.lock().iter().map(|l| l.addr).collect()
    }

    /// Make the listeners match `wanted`: bind the new addresses first (all or nothing),
    /// then stop the ones no longer configured. Unchanged listeners are not touched.
    pub fn set_listen(self: &Arc<Self>, wanted: &[SocketAddr]) -> Result<(), StartError> {
        let current = self.listen_config();
        let mut fresh = Vec::new();
        for addr in wanted.iter().filter(|a| !current.contains(a)) {
            fresh.push((*addr, bind(*addr)?));
        }
        for (addr, socket) in fresh {
            self.add_listener(addr, socket);
        }
        let mut gone = Vec::new();
        self.listeners.lock().retain_mut(|l| {
            if wanted.contains(&l.addr) {
                true
            } else {
                let _ = l.socket.shutdown(std::net::Shutdown::Read);
                gone.push((l.addr, l.thread.take()));
                false
            }
        });
        for (addr, t) in gone {
            if let Some(t) = t {
                let _ = t.join();
            }
            info!("stopped listening on {addr}");
        }
        Ok(())
    }
}
