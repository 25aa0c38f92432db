//! The text of a log record (sans-I/O): the message with its key fields (`mta=`, `client=`,
//! `source=`, `mx=`, `tag=`) appended, the stderr line with its timestamp and level, and the
//! level a record is given to the journal so that its priority is the one documented.

use log::kv::{Key, Value, VisitSource};
use log::Level;
use std::fmt::Write as _;
use std::time::SystemTime;

/// Collects a record's key-values as ` key=value` pairs, in order.
#[derive(Default)]
pub struct KeyFields(pub String);

impl<'kvs> VisitSource<'kvs> for KeyFields {
    fn visit_pair(&mut self, key: Key<'kvs>, value: Value<'kvs>) -> Result<(), log::kv::Error> {
        let _ = write!(self.0, " {key}={value}");
        Ok(())
    }
}

/// The message text of `record` followed by its key fields: what the journal's `MESSAGE` and
/// the stderr line both carry, so that `journalctl` shows the peer address without `-o verbose`.
pub fn message(record: &log::Record) -> String {
    message_after(String::new(), record)
}

/// [`message`] appended to `text`.
fn message_after(mut text: String, record: &log::Record) -> String {
    let _ = write!(text, "{}", record.args());
    let mut kv = KeyFields(text);
    let _ = record.key_values().visit(&mut kv);
    kv.0
}

/// The stderr line of `record`: RFC 3339 UTC timestamp (milliseconds), level padded to 5, its
/// [`message`]; written into one string.
pub fn stderr_record(at: SystemTime, record: &log::Record) -> String {
    let mut l = message_after(stderr_prefix(at, record.level()), record);
    l.push('\n');
    l
}

/// The start of a stderr line: timestamp, level padded to 5, a space.
fn stderr_prefix(at: SystemTime, level: Level) -> String {
    let mut p = String::with_capacity(256);
    let _ = write!(p, "{} {:<5} ", humantime::format_rfc3339_millis(at), level);
    p
}

/// The syslog priority a level is logged with: error 3, warning 4, info 6.
pub fn priority(level: Level) -> u8 {
    match level {
        Level::Error => 3,
        Level::Warn => 4,
        Level::Info => 6,
        Level::Debug | Level::Trace => 7,
    }
}

/// The level to hand `systemd-journal-logger` so that the journal gets [`priority`]: the
/// crate maps error→3, warn→4, info→5 (notice), debug→6, trace→7; the proxy's info is 6.
pub fn journal_level(level: Level) -> Level {
    match level {
        Level::Info => Level::Debug,
        Level::Debug => Level::Trace,
        other => other,
    }
}

/// The priority `systemd-journal-logger` 2.x writes for a level (its documented mapping).
pub fn crate_priority(level: Level) -> u8 {
    match level {
        Level::Error => 3,
        Level::Warn => 4,
        Level::Info => 5,
        Level::Debug => 6,
        Level::Trace => 7,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn the_journal_gets_the_documented_priorities() {
        for (level, p) in [(Level::Error, 3), (Level::Warn, 4), (Level::Info, 6)] {
            assert_eq!(priority(level), p, "{level}");
            assert_eq!(crate_priority(journal_level(level)), p, "{level}");
        }
    }

    #[test]
    fn the_message_carries_the_key_fields() {
        let peer: std::net::SocketAddr = "127.0.0.1:4567".parse().unwrap();
        let text = message(
            &log::Record::builder()
                .args(format_args!("authentication failed"))
                .level(Level::Warn)
                .key_values(&[("mta", log::kv::Value::from_display(&peer))])
                .build(),
        );
        assert_eq!(text, "authentication failed mta=127.0.0.1:4567");
    }

    #[test]
    fn stderr_lines_start_with_a_utc_timestamp() {
        let at = UNIX_EPOCH + Duration::from_millis(1_796_078_838_123);
        let peer: std::net::SocketAddr = "127.0.0.1:1".parse().unwrap();
        let kvs = [("mta", log::kv::Value::from_display(&peer))];
        let line = stderr_record(
            at,
            &log::Record::builder()
                .args(format_args!("x"))
                .level(Level::Warn)
                .key_values(&kvs)
                .build(),
        );
        assert_eq!(line, "2026-11-30T22:47:18.123Z WARN  x mta=127.0.0.1:1\n");
    }
}
