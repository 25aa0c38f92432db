//! The fault driver: at moments drawn from the seed (about one event a second), one of
//! - an MX resets every open connection (in use and pooled);
//! - an MX answers `421` and closes at a verb (EHLO, MAIL, RCPT, DATA, end of data);
//! - an MX sends a stray (unsolicited) reply after a verb;
//! - an MX stalls: its end-of-data reply comes after the proxy's `mx_data_done`, or every reply
//!   comes after `mx_command`;
//! - an MX black-holes: accepts and never answers at a verb (or never sends its banner);
//! - an MX answers `451` at the end of data;
//! - the daemon is reloaded (SIGHUP) with a valid changed file, or with an invalid one (it
//!   must keep running the previous configuration);
//! - the daemon is asked for its report (SIGUSR1);
//! - a source address or an MX is drained, and undrained a few seconds later (`gaproxy`);
//! - the source address 192.0.2.10 leaves the host and comes back (only in the soak's own
//!   network namespace: needs root).
//!
//! MX faults last 1-4 s (then the MX behaves again); at most one per MX at a time. The driver
//! waits for the daemon's acknowledgement of every signal (its log line) and counts one that
//! does not come as a failure.

use crate::rig::{gaproxy, Daemon, Files, Mx, EGRESS};
use crate::rng::Rng;
use greenarrow_proxy_testkit::netns::Netns;
use greenarrow_proxy_testkit::testmx::Faults;
use nix::sys::signal::Signal;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// What the driver did, for the summary and the failures.
#[derive(Default, Debug)]
pub struct Tally {
    pub events: BTreeMap<&'static str, u64>,
    pub problems: Vec<String>,
}

impl Tally {
    /// Add `other`'s counts and problems.
    pub fn add(&mut self, other: Tally) {
        for (k, n) in other.events {
            *self.events.entry(k).or_default() += n;
        }
        self.problems.extend(other.problems);
    }

    fn count(&mut self, what: &'static str) {
        *self.events.entry(what).or_default() += 1;
    }
}

/// Something to undo at a moment.
enum Undo {
    MxFaults(usize),
    Undrain(String),
    AddressBack,
}

pub struct Driver<'a> {
    pub rng: Rng,
    pub daemon: &'a Daemon,
    pub files: &'a Files,
    pub mxes: &'a [Mx],
    pub netns: Option<&'a Netns>,
    pub tally: Tally,
    pending: Vec<(Instant, Undo)>,
    faulty: Vec<bool>,
    address_gone: bool,
    reloads: u64,
    bad_reloads: u64,
    reports: u64,
}

const WAIT: Duration = Duration::from_secs(10);

impl<'a> Driver<'a> {
    pub fn new(
        rng: Rng,
        daemon: &'a Daemon,
        files: &'a Files,
        mxes: &'a [Mx],
        netns: Option<&'a Netns>,
    ) -> Driver<'a> {
        let (reloads, bad_reloads, reports) =
            daemon.counts(|k| (k.reloaded, k.reload_failed, k.reports));
        Driver {
            rng,
            daemon,
            files,
            mxes,
            netns,
            tally: Tally::default(),
            pending: Vec::new(),
            faulty: vec![false; mxes.len()],
            address_gone: false,
            reloads,
            bad_reloads,
            reports,
        }
    }

    /// Inject faults until `stop`; then undo everything.
    pub fn run(&mut self, stop: &AtomicBool) {
        let mut next = Instant::now() + self.gap();
        while !stop.load(Ordering::Relaxed) {
            let now = Instant::now();
            self.undo_due(now, false);
            if now >= next {
                self.event();
                next = Instant::now() + self.gap();
            }
            // The schedule's own clock: a tick, not a synchronisation.
            std::thread::sleep(Duration::from_millis(20));
        }
        self.undo_due(Instant::now(), true);
    }

    /// 0.2-2 s between events.
    fn gap(&mut self) -> Duration {
        Duration::from_millis(200 + self.rng.below(1800))
    }

    fn undo_due(&mut self, now: Instant, all: bool) {
        let (due, keep): (Vec<_>, Vec<_>) = std::mem::take(&mut self.pending)
            .into_iter()
            .partition(|(at, _)| all || *at <= now);
        self.pending = keep;
        for (_, undo) in due {
            match undo {
                Undo::MxFaults(i) => {
                    self.mxes[i].mx.set_faults(Faults::default());
                    self.faulty[i] = false;
                }
                Undo::Undrain(what) => {
                    let args: Vec<&str> =
                        std::iter::once("undrain").chain(what.split(' ')).collect();
                    let (ok, out) = gaproxy(&self.files.control, &args);
                    // Two drains of one thing overlap: the first undrain ends both.
                    if !ok && !out.contains("not drained") {
                        self.tally.problems.push(format!("gaproxy {args:?}: {out}"));
                    }
                }
                Undo::AddressBack => {
                    if let Some(ns) = self.netns {
                        ns.add(EGRESS);
                    }
                    self.address_gone = false;
                }
            }
        }
    }

    fn later(&mut self, undo: Undo) {
        let at = Instant::now() + Duration::from_millis(1000 + self.rng.below(3000));
        self.pending.push((at, undo));
    }

    fn event(&mut self) {
        match self.rng.below(100) {
            0..=44 => self.mx_fault(),
            45..=54 => self.reload(true),
            55..=59 => self.reload(false),
            60..=67 => self.report(),
            68..=83 => self.drain(),
            _ => self.address(),
        }
    }

    fn mx_fault(&mut self) {
        let i = self.rng.below(self.mxes.len() as u64) as usize;
        let mx = &self.mxes[i].mx;
        if self.faulty[i] {
            return;
        }
        let verbs = ["EHLO", "MAIL", "RCPT", "DATA", "DATA-END"];
        let verb = verbs[self.rng.below(verbs.len() as u64) as usize].to_string();
        let (what, faults) = match self.rng.below(7) {
            0 => {
                mx.drop_idle_connections();
                self.tally.count("mx reset");
                return;
            }
            1 => (
                "mx 421",
                Faults {
                    reply_421_at: Some(verb),
                    ..Faults::default()
                },
            ),
            2 => (
                "mx stray reply",
                Faults {
                    stray_reply_after: Some(verb),
                    ..Faults::default()
                },
            ),
            3 => (
                "mx stall",
                if self.rng.below(2) == 0 {
                    Faults {
                        data_end_delay: Some(Duration::from_millis(3500)),
                        ..Faults::default()
                    }
                } else {
                    Faults {
                        slow_replies: Some(Duration::from_millis(2500)),
                        ..Faults::default()
                    }
                },
            ),
            4 => (
                "mx black hole",
                Faults {
                    silent_at: Some(verb),
                    ..Faults::default()
                },
            ),
            5 => (
                "mx black hole",
                Faults {
                    // No banner within the proxy's mx_banner (2 s): a black hole at connect.
                    slow_replies: Some(Duration::from_secs(30)),
                    ..Faults::default()
                },
            ),
            _ => (
                "mx 451 at end of data",
                Faults {
                    data_end_reply: Some("451 4.3.0 try later (test fault)".into()),
                    ..Faults::default()
                },
            ),
        };
        mx.set_faults(faults);
        self.faulty[i] = true;
        self.tally.count(what);
        self.later(Undo::MxFaults(i));
    }

    fn reload(&mut self, valid: bool) {
        if valid {
            let n = self.rng.next();
            self.files.write(&self.files.variant(n));
            self.daemon.signal(Signal::SIGHUP);
            self.reloads += 1;
            let want = self.reloads;
            if !self.daemon.wait(WAIT, |k| k.reloaded >= want) {
                self.tally
                    .problems
                    .push("a valid reload was not acknowledged within 10 s".into());
                self.reloads = self.daemon.counts(|k| k.reloaded);
            }
            self.tally.count("reload");
        } else {
            self.files.write(&self.files.invalid());
            self.daemon.signal(Signal::SIGHUP);
            self.bad_reloads += 1;
            let want = self.bad_reloads;
            if !self.daemon.wait(WAIT, |k| k.reload_failed >= want) {
                self.tally
                    .problems
                    .push("an invalid reload was not refused within 10 s".into());
                self.bad_reloads = self.daemon.counts(|k| k.reload_failed);
            }
            // The running configuration is still the last valid one; so is the file again.
            self.files.write(&self.files.variant(0));
            self.tally.count("invalid reload");
        }
    }

    fn report(&mut self) {
        self.daemon.signal(Signal::SIGUSR1);
        self.reports += 1;
        let want = self.reports;
        if !self.daemon.wait(WAIT, |k| k.reports >= want) {
            self.tally
                .problems
                .push("SIGUSR1 gave no report within 10 s".into());
            self.reports = self.daemon.counts(|k| k.reports);
        }
        self.tally.count("report");
    }

    fn drain(&mut self) {
        let what = if self.rng.below(2) == 0 {
            let sources = &self.mxes[0].sources;
            let s = sources[self.rng.below(sources.len() as u64) as usize];
            format!("--source {s}")
        } else {
            let i = self.rng.below(self.mxes.len() as u64) as usize;
            format!("--mx {}", self.mxes[i].mx.addr())
        };
        let args: Vec<&str> = std::iter::once("drain").chain(what.split(' ')).collect();
        let (ok, out) = gaproxy(&self.files.control, &args);
        if !ok && !out.contains("already") {
            self.tally.problems.push(format!("gaproxy {args:?}: {out}"));
        }
        self.tally.count("drain");
        self.later(Undo::Undrain(what));
    }

    fn address(&mut self) {
        let Some(ns) = self.netns else {
            return;
        };
        if self.address_gone {
            return;
        }
        ns.del(EGRESS);
        self.address_gone = true;
        self.tally.count("address lost");
        self.later(Undo::AddressBack);
    }
}
