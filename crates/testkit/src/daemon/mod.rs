//! The daemon as a child process: its stderr read line by line by a thread and handed over a
//! channel (every wait is bounded by [`WAIT`]), signals sent with `nix`, and a guard that
//! kills the process if the test ends early. [`setup`] adds a test MX and a configuration file
//! around it.
//!
//! The binary is the workspace's `greenarrow_proxy` ([`crate::bin_path::workspace_bin`]):
//! `cargo test` builds a package's binaries before its integration tests, so it is there for
//! the daemon's tests.

pub mod setup;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

/// The bound on every wait.
pub const WAIT: Duration = Duration::from_secs(10);

/// The daemon binary under test.
pub fn binary() -> Command {
    let mut cmd = Command::new(crate::bin_path::workspace_bin("greenarrow_proxy"));
    // Whatever runs the tests must not leak into the daemon: no journal, no service manager.
    cmd.env_remove("JOURNAL_STREAM").env_remove("NOTIFY_SOCKET");
    cmd
}

/// A running daemon. Dropping it kills the process (if still running) and, unless the test
/// is already failing, checks that no secret ever appeared in its stderr.
pub struct Daemon {
    child: Child,
    lines: Receiver<String>,
    /// Every stderr line received so far, in order, without its timestamp.
    seen: Vec<String>,
    exited: bool,
    secrets: Vec<String>,
}

impl Daemon {
    /// Start `greenarrow_proxy --config-filename <config>` with `cmd`'s environment changes
    /// applied by `setup`. `secrets` must never appear in its stderr.
    pub fn spawn(config: &Path, secrets: &[&str], setup: impl FnOnce(&mut Command)) -> Daemon {
        let mut cmd = binary();
        cmd.arg("--config-filename")
            .arg(config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        setup(&mut cmd);
        let mut child = cmd.spawn().expect("cannot start the daemon");
        let stderr = child.stderr.take().expect("stderr is piped");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            each_line(stderr, |line| {
                let line = String::from_utf8_lossy(line).trim_end().to_string();
                tx.send(line).is_ok()
            })
        });
        Daemon {
            child,
            lines: rx,
            seen: Vec::new(),
            exited: false,
            secrets: secrets.iter().map(|s| s.to_string()).collect(),
        }
    }

    /// The process id.
    pub fn pid(&self) -> Pid {
        Pid::from_raw(self.child.id() as i32)
    }

    /// Send `sig` to the daemon.
    pub fn signal(&self, sig: Signal) {
        kill(self.pid(), sig).expect("kill");
    }

    /// Every stderr line so far.
    pub fn seen(&self) -> &[String] {
        &self.seen
    }

    /// The next line without its timestamp, or None at EOF; panics after the deadline, and
    /// on a line that does not start with a timestamp.
    fn next_line(&mut self, deadline: Instant, what: &str) -> Option<String> {
        let left = deadline.saturating_duration_since(Instant::now());
        match self.lines.recv_timeout(left) {
            Ok(line) => {
                let line = strip_timestamp(&line).to_string();
                self.seen.push(line.clone());
                Some(line)
            }
            Err(RecvTimeoutError::Disconnected) => None,
            Err(RecvTimeoutError::Timeout) => panic!(
                "timed out after {WAIT:?} waiting for {what}; the daemon said:\n{}",
                self.seen.join("\n")
            ),
        }
    }

    /// Wait for the next stderr line (after those already consumed) satisfying `pred`.
    pub fn wait_line(&mut self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            match self.next_line(deadline, what) {
                Some(line) if pred(&line) => return line,
                Some(_) => {}
                None => panic!(
                    "the daemon closed stderr while we waited for {what}; it said:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }

    /// Wait for the next stderr line containing `needle`.
    pub fn wait_for(&mut self, needle: &str) -> String {
        self.wait_line(&format!("{needle:?}"), |l| l.contains(needle))
    }

    /// Wait for the "ready on ..." line and return the addresses it names.
    pub fn wait_ready(&mut self) -> Vec<SocketAddr> {
        ready_addrs(&self.wait_for(" ready on "))
    }

    /// Wait (bounded) for the process to end: collect the rest of its stderr to EOF, then reap
    /// it. Panics (the guard then kills it) if it does not end in time.
    pub fn wait_exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + WAIT;
        while self.next_line(deadline, "the daemon to exit").is_some() {}
        // stderr is closed: the process has exited (or is about to); reaping is immediate.
        let status = self.child.wait().expect("wait");
        self.exited = true;
        status
    }

    /// Panic if a secret appears in any stderr line seen so far.
    pub fn assert_no_secret(&self) {
        for line in &self.seen {
            for s in &self.secrets {
                assert!(!line.contains(s.as_str()), "a secret was logged: {line:?}");
            }
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if !self.exited {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if !std::thread::panicking() {
            // Lines still in the channel count too.
            while let Ok(line) = self.lines.try_recv() {
                self.seen.push(line);
            }
            self.assert_no_secret();
        }
    }
}

/// Read `r` line by line (each line with its newline) until EOF, an error, or `f` returning
/// false.
pub fn each_line(r: impl Read, mut f: impl FnMut(&[u8]) -> bool) {
    let mut r = BufReader::new(r);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match r.read_until(b'\n', &mut buf) {
            Ok(0) | Err(_) => return,
            Ok(_) => {
                if !f(&buf) {
                    return;
                }
            }
        }
    }
}

/// A log line without its leading RFC 3339 UTC timestamp (`2026-11-30T22:47:18.123Z `);
/// panics if it has none.
pub fn strip_timestamp(line: &str) -> &str {
    let (stamp, rest) = line
        .split_once(' ')
        .unwrap_or_else(|| panic!("a log line without a timestamp: {line:?}"));
    let ok = stamp.len() == 24
        && stamp.ends_with('Z')
        && stamp.as_bytes().get(10) == Some(&b'T')
        && humantime::parse_rfc3339(stamp).is_ok();
    assert!(ok, "a log line without a timestamp: {line:?}");
    rest
}

/// The native listener's addresses a "... ready on A, B[; front-ends: ...]" line names.
pub fn ready_addrs(line: &str) -> Vec<SocketAddr> {
    let (_, addrs) = line
        .split_once(" ready on ")
        .unwrap_or_else(|| panic!("not a ready line: {line:?}"));
    let addrs = addrs.split_once("; ").map_or(addrs, |(native, _)| native);
    addrs
        .split(", ")
        .map(|a| {
            a.parse()
                .unwrap_or_else(|e| panic!("{a:?}: {e} in {line:?}"))
        })
        .collect()
}

/// Run the binary with `args` to its end (bounded by [`WAIT`]; killed after it) and return
/// its output.
pub fn run(args: &[&str]) -> Output {
    run_with(args, |_| {})
}

/// [`run`] with `cmd`'s environment changes applied by `setup`.
pub fn run_with(args: &[&str], setup: impl FnOnce(&mut Command)) -> Output {
    let mut cmd = binary();
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    setup(&mut cmd);
    let child = cmd.spawn().expect("cannot start the daemon");
    let pid = Pid::from_raw(child.id() as i32);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(WAIT) {
        Ok(out) => out.expect("wait"),
        Err(_) => {
            let _ = kill(pid, Signal::SIGKILL);
            panic!("greenarrow_proxy {args:?} did not finish within {WAIT:?}");
        }
    }
}
