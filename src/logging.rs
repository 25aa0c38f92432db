//! Logging: to the systemd journal when stderr is connected to it (with structured fields
//! from `log`'s key-values, e.g. `MTA`, `SOURCE`, `MX`), otherwise plain lines on stderr.
//!
//! Secrets and message content are never logged by any caller.

use log::{Level, LevelFilter, Log, Metadata, Record};
use std::io::Write;

/// A minimal stderr logger: `LEVEL message key=value ...`, one line per record.
struct StderrLog;

struct KvLine(String);

impl<'kvs> log::kv::VisitSource<'kvs> for KvLine {
    fn visit_pair(
        &mut self,
        key: log::kv::Key<'kvs>,
        value: log::kv::Value<'kvs>,
    ) -> Result<(), log::kv::Error> {
        self.0.push_str(&format!(" {key}={value}"));
        Ok(())
    }
}

impl Log for StderrLog {
    fn enabled(&self, metadata: &Metadata) -> bool {
        metadata.level() <= Level::Info
    }

    fn log(&self, record: &Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let mut kv = KvLine(String::new());
        let _ = record.key_values().visit(&mut kv);
        let line = format!("{:<5} {}{}\n", record.level(), record.args(), kv.0);
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }

    fn flush(&self) {}
}

static STDERR_LOG: StderrLog = StderrLog;

/// Install the logger (once per process). Returns where logs go.
pub fn init() -> &'static str {
    if systemd_journal_logger::connected_to_journal() {
        if let Ok(j) = systemd_journal_logger::JournalLog::new() {
            let j = j.with_syslog_identifier("greenarrow_proxy".to_string());
            if j.install().is_ok() {
                log::set_max_level(LevelFilter::Info);
                return "journal";
            }
        }
    }
    if log::set_logger(&STDERR_LOG).is_ok() {
        log::set_max_level(LevelFilter::Info);
    }
    "stderr"
}
