//! Sizing: what a configuration may need of the process's limits (open files, tasks) at its
//! busiest, against what the limits allow. One thread per MTA session: `max_sessions` needs as
//! many tasks (threads), under `RLIMIT_NPROC` and the cgroup's `pids.max` (systemd's
//! `TasksMax=`), and about three descriptors each, under `RLIMIT_NOFILE` (`LimitNOFILE=`).

use crate::config::{Config, FrontendMode};

/// Descriptors of a running session: the MTA's socket, the MX's, and a transient one (a DNS
/// query, a pooled connection being checked out).
const FDS_PER_SESSION: u64 = 3;
/// More for a passthrough session that splices: the read and write ends of a kernel pipe
/// per direction (`frontend::passthrough::splice`).
const FDS_PER_SPLICE: u64 = 4;
/// Descriptors besides sessions, pooled connections and listeners: the journal or stderr,
/// the control socket and metrics listener with a client each, the address watcher's netlink
/// socket, the DNS resolver, the configuration and certificate files while reloading.
const FDS_BESIDES: u64 = 64;
/// Threads besides the session workers: main, signals, drain, pool reaper, address watcher,
/// TLS-RPT day closer, the DNS runtime, control socket, metrics, and the 16 threads that say QUIT off the
/// sessions' path.
const TASKS_BESIDES: u64 = 32;

/// File descriptors the configuration may need at its limits: about three per running
/// session (seven with a passthrough front-end, whose sessions splice through two pipes),
/// one per queued connection, one per idle pooled connection, one per listener, and
/// [`FDS_BESIDES`].
pub fn fds_needed(config: &Config) -> u64 {
    config.max_sessions as u64 * fds_per_session(config)
        + config.max_queued_sessions as u64
        + config.pool.max_idle_total as u64
        + listeners(config)
        + FDS_BESIDES
}

/// Tasks (threads) the configuration may need: one per session, one per listener (its accept
/// thread) and [`TASKS_BESIDES`].
pub fn tasks_needed(config: &Config) -> u64 {
    config.max_sessions as u64 + listeners(config) + TASKS_BESIDES
}

/// Descriptors per running session: [`FDS_PER_SESSION`], plus [`FDS_PER_SPLICE`] when a
/// front-end relays in `mode: passthrough` with `splice` on.
fn fds_per_session(config: &Config) -> u64 {
    let splices = config
        .frontends
        .iter()
        .any(|f| f.mode == FrontendMode::Passthrough && f.splice);
    FDS_PER_SESSION + if splices { FDS_PER_SPLICE } else { 0 }
}

fn listeners(config: &Config) -> u64 {
    (config.listen.len()
        + config
            .frontends
            .iter()
            .map(|f| f.listen.len())
            .sum::<usize>()) as u64
}

/// The limits that bound the daemon's size; `None`: no limit (or unknown).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProcessLimits {
    /// `RLIMIT_NOFILE`'s hard limit (the soft one is raised to it at start).
    pub nofile: Option<u64>,
    /// `RLIMIT_NPROC`'s soft limit: the tasks of the user the daemon runs as (not enforced
    /// for root).
    pub nproc: Option<u64>,
    /// `pids.max` of the process's cgroup (systemd's `TasksMax=`).
    pub pids_max: Option<u64>,
}

impl ProcessLimits {
    /// This process's limits now.
    pub fn current() -> ProcessLimits {
        use nix::sys::resource::{getrlimit, Resource, RLIM_INFINITY};
        let finite = |v: u64| (v != RLIM_INFINITY).then_some(v);
        let root = nix::unistd::geteuid().is_root();
        ProcessLimits {
            nofile: getrlimit(Resource::RLIMIT_NOFILE)
                .ok()
                .and_then(|(_, hard)| finite(hard)),
            nproc: getrlimit(Resource::RLIMIT_NPROC)
                .ok()
                .and_then(|(soft, _)| finite(soft))
                .filter(|_| !root),
            pids_max: cgroup_pids_max(),
        }
    }
}

/// The lowest `pids.max` of this process's cgroup and its ancestors, in the unified hierarchy
/// (`0::/PATH` in `/proc/self/cgroup`) or the version 1 `pids` controller's.
fn cgroup_pids_max() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let mut lowest: Option<u64> = None;
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(_), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let root = if controllers.is_empty() {
            "/sys/fs/cgroup"
        } else if controllers.split(',').any(|c| c == "pids") {
            "/sys/fs/cgroup/pids"
        } else {
            continue;
        };
        let dir = std::path::PathBuf::from(format!("{root}{path}"));
        for d in dir.ancestors().take_while(|d| d.starts_with(root)) {
            let max = std::fs::read_to_string(d.join("pids.max")).ok();
            if let Some(n) = max.and_then(|m| m.trim().parse::<u64>().ok()) {
                lowest = Some(lowest.map_or(n, |l| l.min(n)));
            }
        }
    }
    lowest
}

/// Raise the soft RLIMIT_NOFILE to the hard limit (at start).
pub fn raise_nofile() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        if soft < hard {
            let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
        }
    }
}

/// A warning for each limit in `limits` below what `config` may need.
pub fn sizing_warnings(config: &Config, limits: &ProcessLimits) -> Vec<String> {
    let mut out = Vec::new();
    let fds = fds_needed(config);
    if let Some(n) = limits.nofile.filter(|&n| n < fds) {
        out.push(format!(
            "sizing: the open-files limit is {n} but max_sessions ({}, about {} each), \
             max_queued_sessions ({}) and pool.max_idle_total ({}) may need {fds}: raise \
             LimitNOFILE= (systemd) or lower them",
            config.max_sessions,
            fds_per_session(config),
            config.max_queued_sessions,
            config.pool.max_idle_total
        ));
    }
    let tasks = tasks_needed(config);
    for (limit, what) in [
        (
            limits.nproc,
            "the process limit (RLIMIT_NPROC, LimitNPROC=)",
        ),
        (
            limits.pids_max,
            "the cgroup's task limit (pids.max, TasksMax=)",
        ),
    ] {
        if let Some(n) = limit.filter(|&n| n < tasks) {
            out.push(format!(
                "sizing: {what} is {n} but max_sessions ({}, one thread each) and the daemon's \
                 other threads may need {tasks}: sessions beyond it fail; raise it or lower \
                 max_sessions",
                config.max_sessions
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(extra: &str) -> Config {
        let yaml = format!(
            "auth_shared_secret: test-secret-0123456789abcdef-0123456789abcdef\n\
             tls_certificate: /c.pem\ntls_private_key: /k.pem\nsource_addresses: [192.0.2.10]\n\
             listen: [\"127.0.0.1:807\"]\n{extra}"
        );
        Config::from_yaml_str(&yaml, std::path::Path::new("/")).unwrap()
    }

    #[test]
    fn needs_grow_with_sessions_pool_and_listeners() {
        let c = config("max_sessions: 100\nmax_queued_sessions: 10\npool:\n  max_idle_total: 50\n");
        assert_eq!(fds_needed(&c), 300 + 10 + 50 + 1 + 64);
        assert_eq!(tasks_needed(&c), 100 + 1 + 32);
        let f = config(
            "max_sessions: 100\nfrontends:\n  - kind: socks5\n    listen: [\"127.0.0.1:1080\", \"[::1]:1080\"]\n",
        );
        assert_eq!(tasks_needed(&f), 100 + 3 + 32);
        // Passthrough sessions splice through two pipes: four more descriptors each.
        let besides = f.max_queued_sessions as u64 + f.pool.max_idle_total as u64 + 3 + 64;
        assert_eq!(fds_needed(&f), 100 * 7 + besides);
        let nosplice = config(
            "max_sessions: 100\nfrontends:\n  - kind: socks5\n    listen: [\"127.0.0.1:1080\", \"[::1]:1080\"]\n    splice: false\n",
        );
        assert_eq!(fds_needed(&nosplice), 100 * 3 + besides);
    }

    #[test]
    fn a_warning_for_each_limit_too_low_none_when_enough() {
        let c = config("max_sessions: 1000\n");
        let enough = ProcessLimits {
            nofile: Some(65536),
            nproc: Some(100_000),
            pids_max: Some(16384),
        };
        assert!(sizing_warnings(&c, &enough).is_empty());
        assert!(sizing_warnings(&c, &ProcessLimits::default()).is_empty());
        let low = ProcessLimits {
            nofile: Some(1024),
            nproc: Some(500),
            pids_max: Some(900),
        };
        let w = sizing_warnings(&c, &low);
        assert_eq!(w.len(), 3, "{w:?}");
        assert!(
            w[0].starts_with("sizing: the open-files limit is 1024 but max_sessions (1000"),
            "{}",
            w[0]
        );
        assert!(w[0].contains("LimitNOFILE="), "{}", w[0]);
        assert!(
            w[1].contains("RLIMIT_NPROC") && w[1].contains(" is 500 "),
            "{}",
            w[1]
        );
        assert!(
            w[2].contains("TasksMax=") && w[2].contains(" is 900 "),
            "{}",
            w[2]
        );
    }
}
