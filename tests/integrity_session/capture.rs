//! A logger for this test binary that keeps every record, so that tests can assert what the
//! proxy logged (level, message and key-value fields).

use log::{Level, LevelFilter, Log, Metadata, Record};
use parking_lot::Mutex;
use std::sync::Once;

static LINES: Mutex<Vec<String>> = Mutex::new(Vec::new());

struct Capture;

struct Kv(String);

impl<'k> log::kv::VisitSource<'k> for Kv {
    fn visit_pair(
        &mut self,
        key: log::kv::Key<'k>,
        value: log::kv::Value<'k>,
    ) -> Result<(), log::kv::Error> {
        self.0.push_str(&format!(" {key}={value}"));
        Ok(())
    }
}

impl Log for Capture {
    fn enabled(&self, m: &Metadata) -> bool {
        m.level() <= Level::Info
    }

    fn log(&self, r: &Record) {
        if !self.enabled(r.metadata()) {
            return;
        }
        let mut kv = Kv(String::new());
        let _ = r.key_values().visit(&mut kv);
        LINES
            .lock()
            .push(format!("{} {}{}", r.level(), r.args(), kv.0));
    }

    fn flush(&self) {}
}

static CAPTURE: Capture = Capture;

/// Install the capturing logger (once per test binary).
pub fn install() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if log::set_logger(&CAPTURE).is_ok() {
            log::set_max_level(LevelFilter::Info);
        }
    });
}

/// The lines logged so far that satisfy `pred`.
pub fn lines_where(pred: impl Fn(&str) -> bool) -> Vec<String> {
    LINES.lock().iter().filter(|l| pred(l)).cloned().collect()
}
