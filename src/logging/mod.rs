//! Logging: to the systemd journal when stderr is connected to it, otherwise lines on stderr.
//!
//! Either way the message text carries the record's key fields (`mta=`, `client=`, `source=`,
//! `mx=`, `tag=`), so that `journalctl` and fail2ban see them; in the journal they are also
//! structured fields (`MTA`, `CLIENT`, `SOURCE`, `MX`, `TAG`) and the priority is error 3,
//! warning 4, info 6. On stderr each line starts with an RFC 3339 UTC timestamp and the level:
//! `2026-11-30T22:47:18.123Z WARN  authentication failed mta=192.0.2.7:40000 tag=auth_failed`.
//!
//! What is logged when: [`problem`]. Secrets and message content are never logged by any caller.

pub mod limit;
pub mod line;
pub mod problem;
pub mod session;

pub use problem::{peer_warning, request_failed, PeerEvent};

use log::{Level, LevelFilter, Log, Metadata, Record};
use std::time::SystemTime;
use systemd_journal_logger::JournalLog;

/// Where records go.
enum Sink {
    Journal(JournalLog),
    Stderr,
}

/// The proxy's logger: info and above, text with key fields, journal or stderr.
struct ProxyLog(Sink);

impl Log for ProxyLog {
    fn enabled(&self, metadata: &Metadata) -> bool {
        metadata.level() <= Level::Info
    }

    fn log(&self, record: &Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        match &self.0 {
            Sink::Journal(j) => {
                let message = line::message(record);
                let kvs = record.key_values();
                let _ = j.journal_send(
                    &Record::builder()
                        .args(format_args!("{message}"))
                        .level(line::journal_level(record.level()))
                        .target(record.target())
                        .module_path(record.module_path())
                        .file(record.file())
                        .line(record.line())
                        .key_values(&kvs)
                        .build(),
                );
            }
            Sink::Stderr => {
                let l = line::stderr_record(SystemTime::now(), record);
                write_line(l.as_bytes());
            }
        }
    }

    fn flush(&self) {}
}

/// Write a line to stderr in one `write(2)` (more only if one is cut short), without the
/// standard library's lock on stderr: the kernel keeps concurrent writes whole, and session
/// threads do not queue for a lock (with a session line per message, that lock was the
/// proxy's most contended one: most of its `futex` calls under load).
fn write_line(mut bytes: &[u8]) {
    use std::os::fd::AsFd;
    let err = std::io::stderr();
    while !bytes.is_empty() {
        match nix::unistd::write(err.as_fd(), bytes) {
            Ok(0) => return,
            Ok(n) => bytes = bytes.get(n..).unwrap_or_default(),
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => return,
        }
    }
}

/// Install the logger (once per process). Returns where logs go.
pub fn init() -> &'static str {
    let (sink, name) = match journal() {
        Some(j) => (Sink::Journal(j), "journal"),
        None => (Sink::Stderr, "stderr"),
    };
    if log::set_boxed_logger(Box::new(ProxyLog(sink))).is_ok() {
        log::set_max_level(LevelFilter::Info);
    }
    name
}

fn journal() -> Option<JournalLog> {
    if !systemd_journal_logger::connected_to_journal() {
        return None;
    }
    JournalLog::new()
        .ok()
        .map(|j| j.with_syslog_identifier("greenarrow_proxy".to_string()))
}
