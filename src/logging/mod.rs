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
use std::io::Write;
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
        let message = line::message(record);
        match &self.0 {
            Sink::Journal(j) => {
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
                let l = line::stderr_line(SystemTime::now(), record.level(), &message);
                let _ = std::io::stderr().lock().write_all(l.as_bytes());
            }
        }
    }

    fn flush(&self) {}
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
