//! Drains kept across restarts (issue 20): the real daemon drained through its control socket
//! (`gaproxy drain`, a real process), killed or stopped, started again on the same state
//! directory: the drain is still in force; an undrain is kept too; a corrupt file stops the
//! start with exit 78.

use greenarrow_proxy_client::ClientError;
use greenarrow_proxy_proto::protocol::Failure;
use greenarrow_proxy_testkit::daemon::setup::{gaproxy, Setup, NEW_SECRET};
use greenarrow_proxy_testkit::daemon::Daemon;
use greenarrow_proxy_testkit::fixtures::SECRET;
use nix::sys::signal::Signal::{SIGKILL, SIGTERM};
use serde_json::Value;
use std::path::Path;

fn drains(socket: &Path) -> Value {
    let out = gaproxy(&["status", "--json"], socket);
    let st: Value = serde_json::from_slice(&out.stdout).unwrap();
    st["drains"].clone()
}

/// A CONNECT from `source` is refused with `453 4.3.2 drained`, nothing sent to the MX.
fn assert_drained(s: &Setup, proxy: std::net::SocketAddr, source: &str) {
    let before = s.mx.stats().connections;
    let mut c = s.client(proxy, SECRET);
    match c.open(&s.request(source, true)) {
        Err(ClientError::Proxy(f)) => {
            assert_eq!(f.failure, Failure::Drained);
            assert_eq!(
                f.failure.code(),
                greenarrow_proxy_proto::protocol::Code {
                    reply: 453,
                    enhanced: "4.3.2",
                    tag: "drained"
                }
            );
        }
        other => panic!("expected 453 drained, got {:?}", other.map(|_| ())),
    }
    assert_eq!(s.mx.stats().connections, before);
}

#[test]
fn a_drain_survives_a_killed_daemon_and_an_undrain_survives_a_stop() {
    let s = Setup::new("control_socket: control.sock\nstate_directory: state\n");
    let state = s.dir.0.join("state");
    std::fs::create_dir(&state).unwrap();
    let file = state.join("drains.json");
    let socket = s.dir.0.join("control.sock");

    let mut d = s.daemon();
    d.wait_for(&format!(
        "drains are kept in {}: none in force",
        file.display()
    ));
    d.wait_ready();
    let out = gaproxy(&["drain", "--source", "127.0.0.2"], &socket);
    assert!(out.stderr.is_empty(), "{out:?}");
    gaproxy(&["drain", "--mx", "127.0.0.9:25"], &socket);
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        "{\"version\":1,\"sources\":[\"127.0.0.2\"],\"mx\":[\"127.0.0.9:25\"]}\n"
    );
    // A crash (or an upgrade's restart) with no chance to save anything at exit.
    d.signal(SIGKILL);
    d.wait_exit();

    let mut d = s.daemon();
    d.wait_for(&format!(
        "drains are kept in {}: 2 restored, sources [127.0.0.2], mx [127.0.0.9:25]",
        file.display()
    ));
    let proxy = d.wait_ready()[0];
    let st = drains(&socket);
    assert_eq!(st["sources"], serde_json::json!(["127.0.0.2"]));
    assert_eq!(st["mx"], serde_json::json!(["127.0.0.9:25"]));
    assert_drained(&s, proxy, "127.0.0.2");
    // Another source still delivers.
    s.deliver(proxy, SECRET, &s.request("127.0.0.3", false), b"hello\r\n");

    gaproxy(&["undrain", "--source", "127.0.0.2"], &socket);
    d.signal(SIGTERM);
    assert!(d.wait_exit().success());

    let mut d = s.daemon();
    d.wait_for("1 restored, sources [], mx [127.0.0.9:25]");
    let proxy = d.wait_ready()[0];
    s.deliver(proxy, SECRET, &s.request("127.0.0.2", false), b"again\r\n");
    assert_eq!(s.mx.state().messages.len(), 2);
    gaproxy(&["undrain", "--all"], &socket);
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        "{\"version\":1,\"sources\":[],\"mx\":[]}\n"
    );
}

#[test]
fn a_corrupt_drains_file_stops_the_start_with_exit_78() {
    // No state_directory in the file: systemd's STATE_DIRECTORY is the default.
    let s = Setup::new("control_socket: none\n");
    let state = s.dir.0.join("state");
    std::fs::create_dir(&state).unwrap();
    let file = state.join("drains.json");
    // Cut short, as by a disk that filled up under another writer.
    std::fs::write(&file, "{\"version\":1,\"sources\":[\"127.0.0.").unwrap();
    let mut d = Daemon::spawn(&s.config, &[SECRET, NEW_SECRET], |cmd| {
        cmd.env("STATE_DIRECTORY", &state);
    });
    let line = d.wait_for("not a drains file");
    assert!(
        line.starts_with(&format!(
            "ERROR cannot start: state_directory: {}: not a drains file (EOF while parsing",
            file.display()
        )),
        "{line}"
    );
    assert!(
        line.ends_with(
            "the drains it held are unknown: fix it, or delete it to start with no drains"
        ),
        "{line}"
    );
    assert_eq!(d.wait_exit().code(), Some(78));
    assert!(
        d.seen().iter().all(|l| !l.contains(" ready on ")),
        "{:?}",
        d.seen()
    );

    // Deleted: the explicit way to start with no drains.
    std::fs::remove_file(&file).unwrap();
    let mut d = Daemon::spawn(&s.config, &[SECRET, NEW_SECRET], |cmd| {
        cmd.env("STATE_DIRECTORY", &state);
    });
    d.wait_for(&format!(
        "drains are kept in {}: none in force",
        file.display()
    ));
    d.wait_ready();
}

#[test]
fn without_a_state_directory_the_start_says_drains_are_not_kept() {
    let s = Setup::new("control_socket: none\n");
    let mut d = s.daemon();
    d.wait_for("state_directory: none; drains (gaproxy drain) are not kept across restarts");
    d.wait_ready();
}

#[test]
fn a_state_directory_the_daemon_cannot_write_is_said_at_start() {
    let s = Setup::new("control_socket: control.sock\nstate_directory: state\n");
    // A directory where the temporary file goes: the write fails, as root too.
    let state = s.dir.0.join("state");
    std::fs::create_dir(&state).unwrap();
    let blocker = state.join(".drains.json.tmp");
    std::fs::create_dir(&blocker).unwrap();
    let mut d = s.daemon();
    let line = d.wait_for("drains will not be kept across restarts");
    assert!(line.starts_with("WARN  state_directory: "), "{line}");
    d.wait_ready();
    let socket = s.dir.0.join("control.sock");
    let out = gaproxy(&["drain", "--source", "127.0.0.2"], &socket);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with("gaproxy: warning: in force now, but not kept across a restart: "),
        "{err}"
    );
    d.wait_for("ERROR control: drains not kept across a restart: ");
}

#[test]
fn a_reload_that_changes_the_state_directory_says_it_applies_at_the_next_start() {
    let s = Setup::new("control_socket: none\nstate_directory: state\n");
    std::fs::create_dir(s.dir.0.join("state")).unwrap();
    let mut d = s.daemon();
    d.wait_ready();
    s.rewrite(
        &s.yaml
            .replace("state_directory: state\n", "state_directory: none\n"),
    );
    d.signal(nix::sys::signal::Signal::SIGHUP);
    let line = d.wait_for("state_directory: a change applies at the next start");
    assert!(
        line.ends_with(&format!(
            "drains are kept in {} until then",
            s.dir.0.join("state").display()
        )),
        "{line}"
    );
    d.wait_for("configuration reloaded from");
}
