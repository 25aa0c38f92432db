//! The daemon's server: listeners and their accept threads (`listen`), the worker pool
//! (`workers`) and the panic guard around each session job (`guard`), the file-descriptor
//! budget (`limits`), and start, reload and drain.

pub mod guard;
mod limits;
mod listen;
mod observe;
pub use crate::workers;

pub use crate::runtime::{pool_limits, Runtime, StartError};
pub use crate::shared::{IpSlot, Shared, Stats};
pub use limits::{fds_needed, raise_nofile, sizing_warnings, tasks_needed, ProcessLimits};

use crate::config::FrontendKind;
use crate::control::ControlSocket;
use crate::metrics::MetricsListener;
use crate::pool::reaper::{quit_all, wait_detached_quits, Reaper, QUIT_WAIT};
use crate::pool::Pool;
use listen::bind;
use log::{error, info, warn};
use parking_lot::Mutex;
use socket2::Socket;
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;
use workers::{PoolCounts, WorkerPool};

/// Stack size of a session thread. Sessions keep their buffers on the heap; 256 KiB leaves
/// ample room for rustls and the parsers while costing only the pages actually touched.
pub const SESSION_STACK: usize = 256 * 1024;

/// What a listener serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ListenKind {
    /// The native protocol over TLS (`listen`).
    Native,
    /// The front-end at this index of `frontends`, of this kind.
    Frontend(usize, FrontendKind),
}

/// Whether `config` asks for a listener on `addr` (as configured) serving `kind`: a connection
/// accepted there can be served under that configuration.
pub fn configures(config: &crate::config::Config, addr: SocketAddr, kind: ListenKind) -> bool {
    wanted_listeners(config).contains(&(addr, kind))
}

/// Every listener a configuration asks for.
pub fn wanted_listeners(config: &crate::config::Config) -> Vec<(SocketAddr, ListenKind)> {
    let native = config.listen.iter().map(|a| (*a, ListenKind::Native));
    let fronts = config.frontends.iter().enumerate().flat_map(|(i, f)| {
        f.listen
            .iter()
            .map(move |a| (*a, ListenKind::Frontend(i, f.kind)))
    });
    native.chain(fronts).collect()
}

struct Listener {
    addr: SocketAddr,
    kind: ListenKind,
    socket: Arc<Socket>,
    thread: Option<JoinHandle<()>>,
}

/// Put the drains kept in `state_directory` back in force; returns what to say about them
/// (where drains are kept, or that they are not).
fn restore_drains(shared: &Shared) -> Result<String, StartError> {
    let Some(dir) = shared.runtime().config.state_directory.clone() else {
        return Ok(
            "state_directory: none; drains (gaproxy drain) are not kept across restarts".into(),
        );
    };
    let n = shared.drains().open(&dir).map_err(StartError::State)?;
    // Written back at once: a directory the service cannot write is found now, not at the
    // first drain (the drains read are in force either way).
    if let Err(e) = shared.drains().persist() {
        warn!("state_directory: {e}; drains will not be kept across restarts");
    }
    let file = dir.join(crate::drain::store::FILE_NAME);
    if n == 0 {
        return Ok(format!(
            "drains are kept in {}: none in force",
            file.display()
        ));
    }
    let list = shared.drains().list();
    let sources: Vec<String> = list.sources.iter().map(|s| s.to_string()).collect();
    Ok(format!(
        "drains are kept in {}: {n} restored, sources [{}], mx [{}]; new connections through \
         them refused until undrained",
        file.display(),
        sources.join(", "),
        list.mx.join(", ")
    ))
}

/// A running server.
pub struct Server {
    shared: Arc<Shared>,
    workers: WorkerPool,
    listeners: Mutex<Vec<Listener>>,
    reaper: Mutex<Option<Reaper>>,
    /// The control socket and the metrics listener (`control_socket`, `metrics.listen`).
    control: Mutex<Option<ControlSocket>>,
    metrics: Mutex<Option<MetricsListener>>,
}

impl Server {
    /// The state every session reads (pool, caps, drains, counters, the runtime in force).
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Bind every `listen` address and start accepting.
    pub fn start(rt: Runtime) -> Result<Arc<Server>, StartError> {
        raise_nofile();
        let listen = wanted_listeners(&rt.config);
        let freebind = rt.config.listen_freebind;
        let workers = WorkerPool::new(
            rt.config.max_sessions,
            rt.config.max_queued_sessions,
            SESSION_STACK,
        );
        let pool = Arc::new(Pool::new(pool_limits(&rt.config)));
        let shared = Arc::new(Shared::new(rt, pool.clone()));
        // In force before any connection is accepted; said once the start went through.
        let drains_note = restore_drains(&shared)?;
        let server = Arc::new(Server {
            shared,
            workers,
            listeners: Mutex::new(Vec::new()),
            reaper: Mutex::new(None),
            control: Mutex::new(None),
            metrics: Mutex::new(None),
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
        if let Err(e) = crate::localaddr::watch::start(
            Arc::downgrade(&server.shared) as std::sync::Weak<Shared>
        ) {
            warn!("cannot start the address watcher thread (a source address that leaves the host fails only when bound): {e}");
        }
        let reports = Arc::downgrade(&server.shared);
        if let Err(e) = crate::tlspolicy::rpt::start_day_closer(move || {
            reports
                .upgrade()
                .map(|s| s.tls_policies().reports.close_days())
                .is_some()
        }) {
            warn!("cannot start the TLS-RPT day closer thread (a day's reports are written at the next day's first session, SIGUSR1 or shutdown): {e}");
        }
        let mut sockets = Vec::new();
        for (addr, kind) in listen {
            sockets.push((addr, kind, bind(addr, freebind, kind)?));
        }
        server.add_listeners(sockets);
        server.set_endpoints(&server.shared.runtime().config);
        info!("{drains_note}");
        Ok(server)
    }

    /// Make the control socket and the metrics listener match `config` (at start and on
    /// reload): a changed path or address is rebound, an unchanged one left alone (one that
    /// failed is tried again). A failure is logged; the proxy goes on without it.
    pub fn set_endpoints(self: &Arc<Self>, config: &crate::config::Config) {
        let mut control = self.control.lock();
        let want = config.control_socket.as_deref();
        if control.as_ref().map(|c| c.path()) != want {
            if let Some(mut old) = control.take() {
                old.stop();
                info!("control socket {} closed", old.path().display());
            }
            if let Some(path) = want {
                let me: std::sync::Weak<dyn crate::control::Controlled> =
                    Arc::downgrade(self) as std::sync::Weak<Server>;
                match ControlSocket::start(path, me) {
                    Ok(c) => *control = Some(c),
                    Err(e) => warn!("{e}; no control socket (gaproxy status, drain)"),
                }
            }
        }
        drop(control);
        let mut metrics = self.metrics.lock();
        let want = config.metrics.listen;
        if metrics.as_ref().map(|m| m.configured()) != want {
            if let Some(mut old) = metrics.take() {
                old.stop();
                info!("metrics listener {} closed", old.local_addr());
            }
            if let Some(addr) = want {
                let me: std::sync::Weak<dyn crate::report::SnapshotSource> =
                    Arc::downgrade(self) as std::sync::Weak<Server>;
                match MetricsListener::start(addr, me) {
                    Ok(m) => *metrics = Some(m),
                    Err(e) => error!("metrics.listen {addr}: cannot listen: {e}; no metrics"),
                }
            }
        }
    }

    /// The control socket's path, when it is open.
    pub fn control_path(&self) -> Option<std::path::PathBuf> {
        self.control.lock().as_ref().map(|c| c.path().to_path_buf())
    }

    /// The metrics listener's bound address, when it is open.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics.lock().as_ref().map(|m| m.local_addr())
    }

    /// Close the control socket and the metrics listener.
    fn stop_endpoints(&self) {
        if let Some(mut c) = self.control.lock().take() {
            c.stop();
        }
        if let Some(mut m) = self.metrics.lock().take() {
            m.stop();
        }
    }

    /// Start accepting on each bound socket.
    fn add_listeners(self: &Arc<Self>, sockets: Vec<(SocketAddr, ListenKind, Socket)>) {
        for (addr, kind, socket) in sockets {
            self.add_listener(addr, kind, socket);
        }
    }

    fn add_listener(self: &Arc<Self>, configured: SocketAddr, kind: ListenKind, socket: Socket) {
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
            .spawn(move || me.accept_loop(&s2, configured, addr, kind));
        match thread {
            Ok(t) => {
                match kind {
                    ListenKind::Native => info!("listening on {addr}"),
                    ListenKind::Frontend(i, k) => {
                        info!("listening on {addr} (frontends[{i}], {})", k.name())
                    }
                }
                self.listeners.lock().push(Listener {
                    addr: configured,
                    kind,
                    socket,
                    thread: Some(t),
                });
            }
            Err(e) => error!("cannot start the accept thread for {addr}: {e}"),
        }
    }

    /// The native listener's addresses actually bound (with the ports chosen when `:0` was
    /// configured).
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.bound(|k| k == ListenKind::Native)
    }

    /// The addresses actually bound for `frontends[index]`, in `listen` order.
    pub fn frontend_addrs(&self, index: usize) -> Vec<SocketAddr> {
        self.bound(|k| matches!(k, ListenKind::Frontend(i, _) if i == index))
    }

    fn bound(&self, which: impl Fn(ListenKind) -> bool) -> Vec<SocketAddr> {
        self.listeners
            .lock()
            .iter()
            .filter(|l| which(l.kind))
            .filter_map(|l| l.socket.local_addr().ok().and_then(|a| a.as_socket()))
            .collect()
    }

    /// Sessions running and queued.
    pub fn worker_counts(&self) -> PoolCounts {
        self.workers.counts()
    }

    /// Stop accepting: wake every accept thread and join it.
    pub fn stop_accepting(&self) {
        self.shared.set_stopping();
        let mut ls = self.listeners.lock();
        for l in ls.iter_mut() {
            let _ = l.socket.shutdown(std::net::Shutdown::Read);
            if let Some(t) = l.thread.take() {
                let _ = t.join();
            }
        }
        ls.clear();
        drop(ls);
        // Sessions idle between requests, or waiting at a connection cap, would otherwise
        // keep the drain waiting.
        self.shared.wake_idle_sessions();
        self.shared.caps().close();
    }

    /// Wait for sessions in progress to end, up to `grace`; then QUIT and close every
    /// pooled connection (including those the sessions just returned). True if all ended.
    pub fn drain(&self, grace: std::time::Duration) -> bool {
        self.workers.shutdown();
        let started = std::time::Instant::now();
        let idle = self.workers.wait_idle(grace);
        if let Some(mut r) = self.reaper.lock().take() {
            r.stop();
        }
        quit_all(self.shared.pool().take_all());
        // QUITs the sessions left running off their path: let them finish (each waits at most
        // QUIT_WAIT for the MX), within what is left of the grace period.
        let until =
            greenarrow_proxy_net::deadline::Deadline::after_at(started, grace.max(QUIT_WAIT));
        let quits = wait_detached_quits(until);
        self.stop_endpoints();
        quits && idle
    }

    /// The configured listeners currently bound.
    pub fn listen_config(&self) -> Vec<(SocketAddr, ListenKind)> {
        self.listeners
            .lock()
            .iter()
            .map(|l| (l.addr, l.kind))
            .collect()
    }

    /// Make the listeners match `wanted` (see [`wanted_listeners`]) around `install`, which puts
    /// the configuration that wants them in force: bind the new ones first (all or nothing; on
    /// error `install` is not called), stop the ones no longer configured, call `install`, then
    /// start accepting on the new ones. Unchanged listeners are not touched.
    ///
    /// So an accept thread only ever runs under a runtime that configures its listener: a
    /// connection is served under the runtime in force when it was accepted (the job carries
    /// it), never under a later one's entry at the same index. `freebind`: bind new listeners
    /// with `IP_FREEBIND` (`listen_freebind`; listeners already bound keep theirs).
    pub fn set_listen(
        self: &Arc<Self>,
        wanted: &[(SocketAddr, ListenKind)],
        freebind: bool,
        install: impl FnOnce(),
    ) -> Result<(), StartError> {
        let current = self.listen_config();
        // An address that moves to another listener is rebound: stop the old one first (port
        // 0 asks for a new port each time, so it never collides).
        let moved: Vec<(SocketAddr, ListenKind)> = current
            .iter()
            .filter(|c| c.0.port() != 0 && !wanted.contains(c))
            .filter(|c| wanted.iter().any(|w| w.0 == c.0))
            .copied()
            .collect();
        self.stop_listeners(|l| moved.contains(&(l.addr, l.kind)));
        let current = self.listen_config();
        let mut fresh = Vec::new();
        for (addr, kind) in wanted.iter().filter(|w| !current.contains(w)) {
            match bind(*addr, freebind, *kind) {
                Ok(socket) => fresh.push((*addr, *kind, socket)),
                Err(e) => {
                    // Refused as a whole: the moved addresses listen again as they were (the
                    // runtime in force still configures them), after the new sockets let go.
                    drop(fresh);
                    self.restore_listeners(&moved, freebind);
                    return Err(e);
                }
            }
        }
        // Joined: every connection the old listeners accepted has its (old) runtime.
        self.stop_listeners(|l| !wanted.contains(&(l.addr, l.kind)));
        install();
        self.add_listeners(fresh);
        Ok(())
    }

    /// Bind and start again the listeners a refused [`Server::set_listen`] had stopped.
    fn restore_listeners(self: &Arc<Self>, stopped: &[(SocketAddr, ListenKind)], freebind: bool) {
        for &(addr, kind) in stopped {
            match bind(addr, freebind, kind) {
                Ok(socket) => self.add_listener(addr, kind, socket),
                Err(e) => warn!("{e}: it stays closed until a reload that binds it works"),
            }
        }
    }

    /// Stop (and join) the listeners `which` selects.
    fn stop_listeners(&self, which: impl Fn(&Listener) -> bool) {
        let mut gone = Vec::new();
        self.listeners.lock().retain_mut(|l| {
            if !which(l) {
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
    }
}
