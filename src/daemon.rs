//! The daemon's main loop: start the server, then serve signals on this thread
//! (signal-hook's iterator: no work is ever done inside a signal handler).
//!
//! - SIGUSR1: log the report of pooled connections and counters ([`crate::report`]), and
//!   write the day's TLS-RPT reports so far (`tlspolicy::rpt`; also at shutdown).
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
#[non_exhaustive]
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

/// `EX_CONFIG` of sysexits.h: the configuration (or a file it names: certificate, key, CA,
/// secret file) must be fixed; restarting will not help. The unit has
/// `RestartPreventExitStatus=78`.
pub const EX_CONFIG: u8 = 78;

impl DaemonError {
    /// Whether the state directory's content (not the configuration) is what must be fixed.
    pub fn is_state(&self) -> bool {
        matches!(self, DaemonError::Start(StartError::State(_)))
    }

    /// The exit status for this error: [`EX_CONFIG`] when the configuration must be edited
    /// (invalid or unreadable file, placeholder secret, certificate or key that cannot be
    /// loaded) or the kept drains cannot be read (a restart would not bring them back), 1
    /// otherwise (a listen address that cannot be bound may become available).
    pub fn exit_code(&self) -> u8 {
        match self {
            DaemonError::Config { .. }
            | DaemonError::Start(
                StartError::Tls(_)
                | StartError::File(_)
                | StartError::State(_)
                | StartError::Unusable { .. }
                | StartError::KeyMismatch { .. },
            ) => EX_CONFIG,
            DaemonError::Start(StartError::Bind { .. }) | DaemonError::Signals(_) => 1,
        }
    }
}

/// The `STATUS=` text (shown by `systemctl status`) after a reload: empty when it worked
/// (which clears the text of an earlier failure), otherwise what failed and that the
/// running configuration stays. One line: a newline would end the notification field.
pub fn reload_status(outcome: Result<(), &dyn fmt::Display>) -> String {
    match outcome {
        Ok(()) => String::new(),
        Err(e) => one_line(&format!(
            "reload failed, still running the previous configuration: {e}"
        )),
    }
}

/// The `STATUS=` text of a failed `--check-config` run under a service manager (the unit's
/// `ExecReload=` check, which stops the reload before the daemon is signalled).
pub fn check_failed_status(e: &DaemonError) -> String {
    one_line(&format!(
        "configuration check failed, not reloaded; still running the previous \
         configuration: {e}"
    ))
}

fn one_line(text: &str) -> String {
    text.replace(['\r', '\n'], " ")
}

/// Every warning about a configuration that loads: the file's own (`Config::warnings`), the
/// host's (addresses not here, a CA as the server certificate) and sizing (`max_sessions`
/// against the process's limits). Logged at start and at every reload, printed by
/// `--check-config`.
pub fn warnings(rt: &Runtime) -> Vec<String> {
    let mut w = rt.config.warnings.clone();
    w.extend(crate::config::host::warnings(&rt.config));
    w.extend(crate::server::sizing_warnings(
        &rt.config,
        &crate::server::ProcessLimits::current(),
    ));
    let dane = rt.config.mx_tls.dane;
    if dane != greenarrow_proxy_proto::tls_policy::Enforcement::Off
        && rt.resolver.as_ref().is_some_and(|r| !r.dnssec_trusted())
    {
        w.push(format!(
            "mx_tls.dane: {}, but the DNS name servers are not all on loopback: their DNSSEC \
             answers (the AD bit) are not trusted, so DANE is not applied; run a validating \
             resolver (unbound) on this host and list it in dns.nameservers \
             (docs/TLS-POLICY.md)",
            crate::config::enforcement_word(dane)
        ));
    }
    let sts = &rt.config.mx_tls.sts;
    if sts.mta_sts_test_ca_file.is_some() || sts.mta_sts_test_port.is_some() {
        w.push(
            "mx_tls.mta_sts_test_ca_file / mta_sts_test_port are set: they are for tests only \
             (an extra CA trusted for MTA-STS policy hosts, another port than 443); remove \
             them in production"
                .into(),
        );
    }
    w
}

/// Load and check a configuration file completely (including certificate and key).
pub fn load(path: &Path) -> Result<Runtime, DaemonError> {
    let config = Config::load(path).map_err(|error| DaemonError::Config {
        path: path.to_path_buf(),
        error,
    })?;
    Runtime::build(config).map_err(DaemonError::Start)
}

/// Where the server listens, for the ready line: the native listener's addresses, then the
/// front-ends' with their kind and mode (`127.0.0.1:807, [::1]:807; front-ends: socks5
/// 127.0.0.1:1080 (smtp)`).
fn listening(server: &Server) -> String {
    let join = |v: Vec<String>| v.join(", ");
    let native = server.local_addrs();
    let mut text = if native.is_empty() {
        "with front-ends only (listen: [])".to_string()
    } else {
        format!(
            "on {}",
            join(native.iter().map(|a| a.to_string()).collect())
        )
    };
    let rt = server.shared().runtime();
    let fronts: Vec<String> = rt
        .config
        .frontends
        .iter()
        .enumerate()
        .flat_map(|(i, fe)| {
            let mode = fe.mode.name();
            server
                .frontend_addrs(i)
                .into_iter()
                .map(move |a| format!("{} {a} ({mode})", fe.kind.name()))
        })
        .collect();
    if !fronts.is_empty() {
        text.push_str("; front-ends: ");
        text.push_str(&join(fronts));
    }
    text
}

/// Run until SIGTERM/SIGINT.
pub fn run(path: &Path) -> Result<(), DaemonError> {
    let mut signals =
        Signals::new([SIGUSR1, SIGHUP, SIGTERM, SIGINT]).map_err(DaemonError::Signals)?;
    let rt = load(path)?;
    for w in warnings(&rt) {
        warn!("{w}");
    }
    let server = Server::start(rt).map_err(DaemonError::Start)?;
    info!(
        "greenarrow_proxy {} ready {}",
        env!("CARGO_PKG_VERSION"),
        listening(&server)
    );
    let _ = sd_notify::notify(&[NotifyState::Ready]);
    let mut draining: Option<std::thread::JoinHandle<()>> = None;
    let signals_handle = signals.handle();
    for sig in signals.forever() {
        match sig {
            SIGUSR1 => {
                crate::report::log_report(&server.snapshot());
                // The TLS-RPT reports of the day so far (and any closed day not yet written).
                server.shared().tls_policies().reports.flush();
            }
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
    let at = std::time::SystemTime::now();
    let status = match put_in_force(server, path) {
        // Noted before it is logged: whoever reads the log line then sees it in the status.
        Err(e) => {
            server.shared().note_reload(at, Some(e.to_string()));
            error!("reload failed, keeping the running configuration: {e}");
            reload_status(Err(&e))
        }
        Ok(()) => {
            server.shared().note_reload(at, None);
            info!("configuration reloaded from {}", path.display());
            reload_status(Ok(()))
        }
    };
    let _ = sd_notify::notify(&[NotifyState::Ready, NotifyState::Status(&status)]);
}

/// Load `path` and put it in force; on error the running configuration stays.
fn put_in_force(server: &Arc<Server>, path: &Path) -> Result<(), DaemonError> {
    let rt = load(path)?;
    for w in warnings(&rt) {
        warn!("{w}");
    }
    let listen = crate::server::wanted_listeners(&rt.config);
    let freebind = rt.config.listen_freebind;
    let kept = server.shared().drains().directory();
    let state_moved = rt.config.state_directory != kept;
    server
        .set_listen(&listen, freebind, || {
            server.set_endpoints(&rt.config);
            server.shared().replace_runtime(rt);
        })
        .map_err(DaemonError::Start)?;
    if state_moved {
        warn!(
            "state_directory: a change applies at the next start; drains are kept in {} until then",
            kept.as_deref()
                .map_or("no file".into(), |d| d.display().to_string())
        );
    }
    let gone = server.take_unpermitted_idle();
    // QUIT can wait on slow MXes: not on the signal thread.
    quit_detached(gone);
    Ok(())
}

fn stop(server: &Arc<Server>) {
    let _ = sd_notify::notify(&[NotifyState::Stopping]);
    info!("stopping: no longer accepting connections");
    server.stop_accepting();
    server.close_all_idle();
    let grace = server.shared().runtime().config.timeouts.shutdown_grace;
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
    server.shared().tls_policies().reports.flush();
}

#[cfg(test)]
mod tests {
    use super::*;
    use greenarrow_proxy_net::tls::TlsError;

    fn config_error() -> DaemonError {
        DaemonError::Config {
            path: "/etc/gp/gp.yaml".into(),
            error: ConfigError::invalid("auth_shared_secret", "still the public placeholder"),
        }
    }

    #[test]
    fn configuration_errors_exit_78_others_1() {
        assert_eq!(config_error().exit_code(), EX_CONFIG);
        let unreadable = DaemonError::Config {
            path: "/etc/gp/gp.yaml".into(),
            error: ConfigError::Io {
                path: "/etc/gp/gp.yaml".into(),
                source: std::io::ErrorKind::PermissionDenied.into(),
            },
        };
        assert_eq!(unreadable.exit_code(), 78);
        let no_cert = DaemonError::Start(StartError::Tls(TlsError::Pem {
            path: "/etc/gp/cert.pem".into(),
            error: greenarrow_proxy_net::tls::PemError::Read(std::io::ErrorKind::NotFound.into()),
        }));
        assert_eq!(no_cert.exit_code(), 78);
        let bind = DaemonError::Start(StartError::Bind {
            addr: "127.0.0.1:807".parse().unwrap(),
            error: std::io::ErrorKind::AddrInUse.into(),
        });
        assert_eq!(bind.exit_code(), 1);
        let signals = DaemonError::Signals(std::io::ErrorKind::Other.into());
        assert_eq!(signals.exit_code(), 1);
    }

    #[test]
    fn a_good_reload_clears_the_status_a_failed_one_says_what_stays() {
        assert_eq!(reload_status(Ok(())), "");
        let e = config_error();
        let status = reload_status(Err(&e));
        assert_eq!(
            status,
            "reload failed, still running the previous configuration: \
             /etc/gp/gp.yaml: auth_shared_secret: still the public placeholder"
        );
        // One line whatever the error says.
        let multi = "line one\nline two\r\n";
        assert_eq!(
            reload_status(Err(&multi)),
            "reload failed, still running the previous configuration: line one line two  "
        );
        let check = check_failed_status(&e);
        assert!(check.starts_with("configuration check failed, not reloaded"));
        assert!(check.ends_with("auth_shared_secret: still the public placeholder"));
    }
}
