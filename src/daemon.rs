//! The daemon's main loop: start the server, then serve signals on this thread
//! (signal-hook's iterator: no work is ever done inside a signal handler).
//!
//! - SIGUSR1: log the report of pooled connections and counters ([`crate::report`]).
//! - SIGHUP: re-read the configuration; an invalid file keeps the running one.
//! - SIGTERM / SIGINT: stop accepting, let sessions finish up to `timeouts.shutdown_grace`,
//!   exit.

use crate::config::{Config, ConfigError};
use crate::pool::reaper::quit_detached;
use crate::server::{Runtime, Server, StartError};
use log::{error, info, warn};
use sd_notify::NotifyState;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM, SIGUSR1};
use signal_hook::iterator::Signals;
use std::fmt;
use std::path::Path;
use std::sync::Arc;

/// Why the daemon could not start.
#[derive(Debug)]
pub enum DaemonError {
    Config {
        path: std::path::PathBuf,
        error: ConfigError,
    },
    Start(StartError),
    Signals(std::io::Error),
}

impl fmt::Display for DaemonError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            // I/O errors name the file already.
            DaemonError::Config {
                error: e @ ConfigError::Io { .. },
                ..
            } => write!(f, "{e}"),
            DaemonError::Config { path, error } => write!(f, "{}: {error}", path.display()),
            DaemonError::Start(e) => write!(f, "{e}"),
            DaemonError::Signals(e) => write!(f, "cannot install signal handlers: {e}"),
        }
    }
}

impl std::error::Error for DaemonError {}

/// Load and check a configuration file completely (including certificate and key).
pub fn load(path: &Path) -> Result<Runtime, DaemonError> {
    let config = Config::load(path).map_err(|error| DaemonError::Config {
        path: path.to_path_buf(),
        error,
    })?;
    Runtime::build(config).map_err(DaemonError::Start)
}

/// Run until SIGTERM/SIGINT.
pub fn run(path: &Path) -> Result<(), DaemonError> {
    let mut signals =
        Signals::new([SIGUSR1, SIGHUP, SIGTERM, SIGINT]).map_err(DaemonError::Signals)?;
    let rt = load(path)?;
    for w in &rt.config.warnings {
        warn!("{w}");
    }
    let server = Server::start(rt).map_err(DaemonError::Start)?;
    info!(
        "greenarrow_proxy {} ready on {}",
        env!("CARGO_PKG_VERSION"),
        server
            .local_addrs()
            .iter()
            .map(|a| a.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    let _ = sd_notify::notify(&[NotifyState::Ready]);
    let mut draining: Option<std::thread::JoinHandle<()>> = None;
    let signals_handle = signals.handle();
    for sig in signals.forever() {
        match sig {
            SIGUSR1 => crate::report::log_report(&server),
            SIGHUP if draining.is_none() => reload(&server, path),
            SIGTERM | SIGINT if draining.is_none() => {
                // Drain on another thread so that a second signal can still cut it short;
                // closing the iterator ends this loop when the drain is over.
                let handle = signals_handle.clone();
                let s = server.clone();
                let spawned = std::thread::Builder::new()
                    .name("drain".into())
                    .spawn(move || {
                        stop(&s);
                        handle.close();
                    });
                match spawned {
                    Ok(t) => draining = Some(t),
                    Err(_) => {
                        stop(&server);
                        return Ok(());
                    }
                }
            }
            SIGTERM | SIGINT => {
                warn!("second stop signal: exiting now without waiting for sessions in progress");
                return Ok(());
            }
            _ => {}
        }
    }
    if let Some(t) = draining {
        let _ = t.join();
    }
    Ok(())
}

fn reload(server: &Arc<Server>, path: &Path) {
    let _ = sd_notify::notify(&[
        NotifyState::Reloading,
        NotifyState::monotonic_usec_now().unwrap_or(NotifyState::Status("reloading")),
    ]);
    match load(path) {
        Err(e) => error!("reload failed, keeping the running configuration: {e}"),
        Ok(rt) => {
            for w in &rt.config.warnings {
                warn!("{w}");
            }
            let listen = crate::server::wanted_listeners(&rt.config);
            match server.set_listen(&listen, rt.config.listen_freebind) {
                Err(e) => error!("reload failed, keeping the running configuration: {e}"),
                Ok(()) => {
                    server.shared.replace_runtime(rt);
                    let gone = crate::report::after_reload(server);
                    // QUIT can wait on slow MXes: not on the signal thread.
                    quit_detached(gone);
                    info!("configuration reloaded from {}", path.display());
                }
            }
        }
    }
    let _ = sd_notify::notify(&[NotifyState::Ready]);
}

fn stop(server: &Arc<Server>) {
    let _ = sd_notify::notify(&[NotifyState::Stopping]);
    info!("stopping: no longer accepting connections");
    server.stop_accepting();
    crate::report::before_drain(server);
    let grace = server.shared.runtime().config.timeouts.shutdown_grace;
    let counts = server.worker_counts();
    if counts.busy + counts.queued > 0 {
        info!(
            "waiting up to {} for {} session(s) in progress",
            humantime::format_duration(grace),
            counts.busy + counts.queued
        );
    }
    if server.drain(grace) {
        info!("all sessions ended; exiting");
    } else {
        let c = server.worker_counts();
        warn!(
            "shutdown grace period over with {} session(s) still running; exiting",
            c.busy
        );
    }
}
