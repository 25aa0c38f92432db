//! What the soak runs against: the test MXes, the daemon's files, the daemon itself (the built
//! binary, a child process whose stderr a thread copies to a file while counting what the
//! checks need), `gaproxy` for the control socket, and the daemon's figures from /proc.

use greenarrow_proxy_net::tls::TlsAcceptor;
use greenarrow_proxy_testkit::certgen;
use greenarrow_proxy_testkit::daemon::{binary, each_line, ready_addrs};
use greenarrow_proxy_testkit::fixtures::{proxy_files, TempDir, SECRET};
use greenarrow_proxy_testkit::testmx::{Faults, TestMx, TestMxConfig};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use parking_lot::{Condvar, Mutex};
use std::collections::BTreeMap;
use std::io::Write;
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The address that leaves and comes back (TEST-NET-1, inside the soak's namespace only).
pub const EGRESS: &str = "192.0.2.10";

/// One test MX of the soak.
pub struct Mx {
    pub mx: TestMx,
    /// Whether it offers STARTTLS.
    pub tls: bool,
    /// The source addresses MTAs use toward it (its address family).
    pub sources: Vec<IpAddr>,
}

/// The MXes: 0 plaintext, 1 STARTTLS (IPv4), 2 plaintext over IPv6 (when ::1 works).
pub fn start_mxes(egress: bool) -> Vec<Mx> {
    let cert = certgen::self_signed(&["mx.test"]).unwrap();
    let acceptor = TlsAcceptor::from_pem(&cert.cert_pem, &cert.key_pem).unwrap();
    let mut v4: Vec<IpAddr> = ["127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5"]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
    if egress {
        v4.push(EGRESS.parse().unwrap());
    }
    let mut out = Vec::new();
    for (i, (bind, tls)) in [
        ("127.0.0.1:0", false),
        ("127.0.0.1:0", true),
        ("[::1]:0", false),
    ]
    .iter()
    .enumerate()
    {
        let name = format!("mx{i}.soak");
        let cfg = TestMxConfig {
            bind: bind.parse().unwrap(),
            hostname: name.clone(),
            starttls: tls.then(|| acceptor.clone()),
            faults: Faults::default(),
            ..TestMxConfig::default()
        };
        let mx = match TestMx::start(cfg) {
            Ok(mx) => mx,
            Err(e) if bind.starts_with('[') => {
                eprintln!("soak: no IPv6 MX ({e}); IPv4 only");
                continue;
            }
            Err(e) => panic!("cannot start a test MX: {e}"),
        };
        let sources = if mx.addr().is_ipv6() {
            vec!["::1".parse().unwrap()]
        } else {
            v4.clone()
        };
        out.push(Mx {
            mx,

            tls: *tls,
            sources,
        });
    }
    out
}

/// A free TCP port on `ip` (bound and released: the soak's namespace is its own).
fn free_port(ip: &str) -> u16 {
    TcpListener::bind((ip, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The front-ends, in the order of the configuration's `frontends` list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Front {
    ProxyPassthrough,
    ProxySmtp,
    SocksPassthrough,
    SocksSmtp,
}

pub const FRONTS: [Front; 4] = [
    Front::ProxyPassthrough,
    Front::ProxySmtp,
    Front::SocksPassthrough,
    Front::SocksSmtp,
];

impl Front {
    pub fn name(self) -> &'static str {
        match self {
            Front::ProxyPassthrough => "PROXY passthrough",
            Front::ProxySmtp => "PROXY smtp",
            Front::SocksPassthrough => "SOCKS5 passthrough",
            Front::SocksSmtp => "SOCKS5 smtp",
        }
    }

    pub fn smtp_mode(self) -> bool {
        matches!(self, Front::ProxySmtp | Front::SocksSmtp)
    }
}

/// The daemon's files and addresses.
pub struct Files {
    pub dir: TempDir,
    pub config: PathBuf,
    pub ca_pem: String,
    pub listen: SocketAddr,
    pub fronts: Vec<SocketAddr>,
    pub control: PathBuf,
    /// The base configuration; [`Files::variant`] makes the valid reloads from it.
    base: String,
}

/// `max_sessions`: small enough that the warm-up starts every worker thread.
pub const MAX_SESSIONS: usize = 40;
/// The cap per (source, MX): several MTAs share a source and an MX, so requests wait.
pub const CAP: usize = 3;

impl Files {
    pub fn new(mxes: &[Mx], egress: bool) -> Files {
        let ports: Vec<u16> = mxes.iter().map(|m| m.mx.addr().port()).collect();
        let listen = SocketAddr::new("127.0.0.1".parse().unwrap(), free_port("127.0.0.1"));
        let fronts: Vec<SocketAddr> = FRONTS
            .iter()
            .map(|_| SocketAddr::new("127.0.0.1".parse().unwrap(), free_port("127.0.0.1")))
            .collect();
        let sources = if egress {
            format!("[127.0.0.0/8, \"::1\", {EGRESS}]")
        } else {
            "[127.0.0.0/8, \"::1\"]".to_string()
        };
        let fe = |i: usize, kind: &str, extra: &str| {
            format!("  - kind: {kind}\n    listen: [\"{}\"]\n{extra}", fronts[i])
        };
        let smtp = "    mode: smtp\n    tls: opportunistic\n    reuse: true\n";
        let extra = format!(
            "listen: [\"{listen}\"]\n\
             source_addresses: {sources}\n\
             control_socket: control.sock\n\
             max_sessions: {MAX_SESSIONS}\n\
             max_queued_sessions: 200\n\
             timeouts:\n  mx_connect: 2s\n  mx_banner: 2s\n  mx_command: 2s\n  mx_data_done: 3s\n  mx_tls_handshake: 3s\n  shutdown_grace: 5s\n\
             pool:\n  idle_ttl: 3s\n  reuse_time_limit: 20s\n  max_idle_per_key: 4\n\
             caps:\n  wait: 2s\n  max_connections: {CAP}\n\
             frontends:\n{}{}{}{}",
            fe(0, "proxy_protocol", "    mode: passthrough\n"),
            fe(1, "proxy_protocol", smtp),
            fe(2, "socks5", "    mode: passthrough\n    auth: password\n"),
            fe(3, "socks5", &format!("{smtp}    auth: password\n")),
        );
        let (dir, yaml, ca_pem) = proxy_files(&ports, &extra);
        // Problems only: a long run logs every session otherwise.
        let yaml = yaml.replace("log_verbose: true\n", "log_verbose: false\n");
        let config = dir.0.join("greenarrow_proxy.yaml");
        std::fs::write(&config, &yaml).unwrap();
        let control = dir.0.join("control.sock");
        Files {
            dir,
            config,
            ca_pem,
            listen,
            fronts,
            control,
            base: yaml,
        }
    }

    /// A valid configuration, different from the base by `n` (cap, pool size, verbosity).
    pub fn variant(&self, n: u64) -> String {
        let cap = CAP + (n % 2) as usize;
        let idle = 4 + 4 * (n % 3);
        self.base
            .replace(
                &format!("  max_connections: {CAP}\n"),
                &format!("  max_connections: {cap}\n"),
            )
            .replace(
                "  max_idle_per_key: 4\n",
                &format!("  max_idle_per_key: {idle}\n"),
            )
    }

    /// An invalid configuration: an unknown key (the daemon keeps the running one).
    pub fn invalid(&self) -> String {
        format!("{}no_such_key_for_the_soak: 1\n", self.base)
    }

    pub fn write(&self, yaml: &str) {
        std::fs::write(&self.config, yaml).unwrap();
    }
}

/// What the log tee counts.
#[derive(Default, Debug)]
pub struct LogCounts {
    pub lines: u64,
    pub reloaded: u64,
    pub reload_failed: u64,
    pub reports: u64,
    /// ERROR lines other than the expected `reload failed` ones, and panics.
    pub bad: Vec<String>,
    pub ready: Option<Vec<SocketAddr>>,
    pub closed: bool,
}

/// The running daemon.
pub struct Daemon {
    child: Child,
    pub log_path: PathBuf,
    counts: Arc<(Mutex<LogCounts>, Condvar)>,
}

impl Daemon {
    pub fn spawn(files: &Files) -> Daemon {
        let log_path = files.dir.0.join("daemon.log");
        let mut child = binary()
            .arg("--config-filename")
            .arg(&files.config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("cannot start the daemon");
        let stderr = child.stderr.take().unwrap();
        let counts: Arc<(Mutex<LogCounts>, Condvar)> = Arc::default();
        let c = counts.clone();
        let mut file = std::fs::File::create(&log_path).unwrap();
        std::thread::spawn(move || {
            each_line(stderr, |buf| {
                let _ = file.write_all(buf);
                let line = String::from_utf8_lossy(buf).trim_end().to_string();
                let mut k = c.0.lock();
                k.lines += 1;
                let rest = line.split_once(' ').map_or(line.as_str(), |(_, r)| r);
                if rest.contains(" ready on ") && k.ready.is_none() {
                    k.ready = Some(ready_addrs(rest));
                }
                if rest.contains("configuration reloaded") {
                    k.reloaded += 1;
                }
                if rest.starts_with("ERROR reload failed") {
                    k.reload_failed += 1;
                } else if rest.starts_with("ERROR") || line.contains("panicked") {
                    k.bad.push(line.clone());
                }
                if rest.starts_with("INFO  report ") {
                    k.reports += 1;
                }
                c.1.notify_all();
                true
            });
            c.0.lock().closed = true;
            c.1.notify_all();
        });
        Daemon {
            child,
            log_path,
            counts,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn signal(&self, sig: Signal) {
        kill(Pid::from_raw(self.child.id() as i32), sig).expect("kill");
    }

    /// Wait (at most `limit`) until `pred` holds for the counts; whether it did.
    pub fn wait(&self, limit: Duration, pred: impl Fn(&LogCounts) -> bool) -> bool {
        let deadline = Instant::now() + limit;
        let mut k = self.counts.0.lock();
        while !pred(&k) {
            if k.closed || self.counts.1.wait_until(&mut k, deadline).timed_out() {
                return pred(&k);
            }
        }
        true
    }

    pub fn counts<R>(&self, f: impl FnOnce(&LogCounts) -> R) -> R {
        f(&self.counts.0.lock())
    }

    /// SIGTERM and wait for the end (bounded); the exit status's success.
    pub fn stop(mut self) -> bool {
        self.signal(Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(st)) = self.child.try_wait() {
                self.wait(Duration::from_secs(5), |k| k.closed);
                return st.success();
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `gaproxy ARGS --socket CONTROL`, bounded to 10 s: (success, stdout).
pub fn gaproxy(control: &std::path::Path, args: &[&str]) -> (bool, String) {
    let child = Command::new(greenarrow_proxy_testkit::bin_path::workspace_bin("gaproxy"))
        .args(args)
        .arg("--socket")
        .arg(control)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cannot run gaproxy");
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(Duration::from_secs(10)) {
        Ok(Ok(out)) => (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        ),
        _ => {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
            (false, "gaproxy did not answer within 10 s".into())
        }
    }
}

/// The daemon's RSS (KiB), open descriptors and threads, from /proc.
#[derive(Clone, Copy, Debug, Default)]
pub struct Figures {
    pub rss_kib: u64,
    /// Of which anonymous memory (heap, arenas, thread stacks) and file pages (the binary's
    /// code as it gets run: a debug build's error paths are paged in by the faults).
    pub rss_anon_kib: u64,
    pub rss_file_kib: u64,
    pub fds: u64,
    pub threads: u64,
}

/// The daemon's threads by name, and what its descriptors point at (for a drift's report).
pub fn inventory(pid: u32) -> (BTreeMap<String, u64>, BTreeMap<String, u64>) {
    let mut threads = BTreeMap::new();
    for t in std::fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let name = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
        *threads.entry(name.trim().to_string()).or_default() += 1;
    }
    let mut fds = BTreeMap::new();
    for f in std::fs::read_dir(format!("/proc/{pid}/fd"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let target = std::fs::read_link(f.path()).map_or("?".into(), |p| {
            let s = p.display().to_string();
            // socket:[12345] → socket
            s.split(':').next().unwrap_or_default().to_string()
        });
        *fds.entry(target).or_default() += 1;
    }
    (threads, fds)
}

pub fn figures(pid: u32) -> Figures {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count() as u64)
        .unwrap_or(0);
    Figures {
        rss_kib: field("VmRSS:"),
        rss_anon_kib: field("RssAnon:"),
        rss_file_kib: field("RssFile:"),
        fds,
        threads: field("Threads:"),
    }
}

/// `gaproxy status --json`, or None when it did not answer.
pub fn status(control: &std::path::Path) -> Option<serde_json::Value> {
    let (ok, out) = gaproxy(control, &["status", "--json"]);
    if !ok {
        return None;
    }
    serde_json::from_str(out.trim()).ok()
}

/// What `gaproxy status --json` says about connections in use: (in use, idle, waiting,
/// sessions active), or None when it did not answer.
pub fn in_use(control: &std::path::Path) -> Option<(u64, u64, u64, u64)> {
    let v = status(control)?;
    let mut used = 0;
    let mut idle = 0;
    let mut waiting = 0;
    for p in v["pools"].as_array()? {
        used += p["in_use"].as_u64().unwrap_or(0);
        idle += p["idle"].as_array().map_or(0, |a| a.len() as u64);
    }
    for c in v["caps"].as_array()? {
        used += c["in_use"].as_u64().unwrap_or(0);
        idle += c["idle"].as_u64().unwrap_or(0);
        waiting += c["waiting"].as_u64().unwrap_or(0);
    }
    let active = v["counters"]["sessions_active"].as_u64().unwrap_or(0);
    Some((used, idle, waiting, active))
}

/// The secret, for the native protocol and SOCKS5 passwords.
pub fn secret() -> &'static str {
    SECRET
}
