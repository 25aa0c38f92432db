//! The file-descriptor budget a configuration needs.

use crate::config::Config;

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
