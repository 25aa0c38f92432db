//! Every configuration warning reaches the log (the journal under systemd) at start and at
//! every reload, not only `--check-config`: a CA certificate used as the server certificate,
//! an address not on this host, and `max_sessions` beyond the open-files limit (the real
//! daemon run with a low `RLIMIT_NOFILE`).

use greenarrow_proxy_testkit::certgen::TestCa;
use greenarrow_proxy_testkit::daemon;
use greenarrow_proxy_testkit::daemon::Daemon;
use greenarrow_proxy_testkit::fixtures::{TempDir, SECRET};
use nix::sys::signal::Signal::SIGHUP;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};

/// A configuration in `dir` whose server certificate is a CA certificate (CA:TRUE) and whose
/// source addresses include one that is not on this host.
fn misconfigured(dir: &Path, extra: &str) -> PathBuf {
    let ca = TestCa::new("a CA, not a server").unwrap();
    std::fs::write(dir.join("cert.pem"), ca.cert_pem()).unwrap();
    std::fs::write(dir.join("key.pem"), ca.key_pem()).unwrap();
    let config = dir.join("greenarrow_proxy.yaml");
    std::fs::write(
        &config,
        format!(
            "listen: [\"127.0.0.1:0\"]\nauth_shared_secret: \"{SECRET}\"\n\
             tls_certificate: cert.pem\ntls_private_key: key.pem\n\
             source_addresses: [127.0.0.2, 192.0.2.10]\ncontrol_socket: none\n{extra}"
        ),
    )
    .unwrap();
    config
}

const CA_WARNING: &str = "WARN  tls_certificate: ";
const ABSENT_WARNING: &str = "WARN  source_addresses[1]: 192.0.2.10 is not an address of this host";

#[test]
fn warnings_are_logged_at_start_and_after_every_reload() {
    let dir = TempDir::new("warnings");
    let config = misconfigured(&dir.0, "");
    let mut d = Daemon::spawn(&config, &[SECRET], |_| {});
    d.wait_for(ABSENT_WARNING);
    let ca = d.wait_for(CA_WARNING);
    assert!(ca.contains("is a CA certificate (CA:TRUE)"), "{ca}");
    d.wait_ready();
    for _ in 0..2 {
        d.signal(SIGHUP);
        d.wait_for(ABSENT_WARNING);
        let ca = d.wait_for(CA_WARNING);
        assert!(ca.contains("is a CA certificate (CA:TRUE)"), "{ca}");
        d.wait_for("configuration reloaded from ");
    }
}

#[test]
fn max_sessions_beyond_the_open_files_limit_is_warned_about_at_start_reload_and_check() {
    let dir = TempDir::new("sizing");
    let config = misconfigured(&dir.0, "max_sessions: 500\n");
    let low_nofile = |cmd: &mut std::process::Command| {
        // SAFETY: setrlimit is async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE, 256, 256)
                    .map_err(std::io::Error::from)
            });
        }
    };
    let mut d = Daemon::spawn(&config, &[SECRET], low_nofile);
    let w = d.wait_for("WARN  sizing: the open-files limit is 256 ");
    assert!(w.contains("max_sessions (500, about 3 each)"), "{w}");
    assert!(w.contains("raise LimitNOFILE="), "{w}");
    d.wait_ready();
    d.signal(SIGHUP);
    d.wait_for("WARN  sizing: the open-files limit is 256 ");
    d.wait_for("configuration reloaded from ");

    // --check-config says it too; with enough files, nothing.
    let c = config.to_str().unwrap();
    let out = daemon::run_with(&["--check-config", "--config-filename", c], low_nofile);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("warning: sizing: the open-files limit is 256 "),
        "{err}"
    );
    let out = daemon::run(&["--check-config", "--config-filename", c]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("sizing:"), "{err}");
}

/// The cgroup directory of this process under the `pids` controller (version 1, or the
/// unified hierarchy when it has that controller), if any.
fn pids_cgroup() -> Option<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    text.lines().find_map(|line| {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        let dir = if controllers.split(',').any(|c| c == "pids") {
            PathBuf::from(format!("/sys/fs/cgroup/pids{path}"))
        } else if controllers.is_empty() {
            let dir = PathBuf::from(format!("/sys/fs/cgroup{path}"));
            let has = std::fs::read_to_string(dir.join("cgroup.subtree_control"))
                .is_ok_and(|c| c.split_whitespace().any(|c| c == "pids"));
            if !has {
                return None;
            }
            dir
        } else {
            return None;
        };
        dir.join("cgroup.procs").exists().then_some(dir)
    })
}

/// A child cgroup with `pids.max` set, removed on drop.
struct PidsCgroup(PathBuf);

impl PidsCgroup {
    fn new(max: u64) -> Result<PidsCgroup, String> {
        let parent = pids_cgroup().ok_or("no pids cgroup controller")?;
        let dir = parent.join(format!("gap-test-{}", std::process::id()));
        std::fs::create_dir(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let cg = PidsCgroup(dir);
        std::fs::write(cg.0.join("pids.max"), max.to_string())
            .map_err(|e| format!("{}/pids.max: {e}", cg.0.display()))?;
        Ok(cg)
    }
}

impl Drop for PidsCgroup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.0);
    }
}

#[test]
fn max_sessions_beyond_the_cgroups_task_limit_is_warned_about() {
    let cg = match PidsCgroup::new(300) {
        Ok(cg) => cg,
        Err(why) => {
            eprintln!("skipped: cannot make a cgroup with pids.max here: {why}");
            return;
        }
    };
    let dir = TempDir::new("tasks");
    let config = misconfigured(&dir.0, "max_sessions: 500\n");
    let procs = std::ffi::CString::new(
        cg.0.join("cgroup.procs")
            .into_os_string()
            .into_encoded_bytes(),
    )
    .unwrap();
    let mut d = Daemon::spawn(&config, &[SECRET], |cmd| {
        // SAFETY: open, write and close are async-signal-safe; the path is made before fork.
        unsafe {
            cmd.pre_exec(move || {
                let fd = nix::libc::open(procs.as_ptr(), nix::libc::O_WRONLY);
                if fd < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                let n = nix::libc::write(fd, b"0".as_ptr().cast(), 1);
                nix::libc::close(fd);
                if n != 1 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    });
    let w = d.wait_for("WARN  sizing: the cgroup's task limit (pids.max, TasksMax=) is 300 ");
    assert!(w.contains("max_sessions (500, one thread each)"), "{w}");
    d.wait_ready();
    d.signal(SIGHUP);
    d.wait_for("WARN  sizing: the cgroup's task limit (pids.max, TasksMax=) is 300 ");
    d.wait_for("configuration reloaded from ");
    d.signal(nix::sys::signal::Signal::SIGTERM);
    d.wait_exit();
}
