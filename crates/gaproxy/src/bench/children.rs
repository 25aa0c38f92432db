//! The processes under measurement: the proxy (the real daemon binary as a child, or a server
//! in this process) and HAProxy in TCP mode; and what `/proc` says about them.

use greenarrow_proxy::config::Config;
use greenarrow_proxy::server::{Runtime, Server};
use greenarrow_proxy_client::ProxyClientConfig;
use greenarrow_proxy_net::tls::ProxyClientTls;
use greenarrow_proxy_testkit::certgen::TestCa;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

type BoxError = Box<dyn std::error::Error>;

/// How long a child may take to start listening.
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// Pause between two checks whether a child listens (bounded by [`START_TIMEOUT`]).
const START_POLL: Duration = Duration::from_millis(20);
/// How long a child may take to exit after SIGTERM before it gets SIGKILL.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// A scratch directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Result<TempDir, BoxError> {
        let p = std::env::temp_dir().join(format!("gaproxy-bench-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&p)?;
        Ok(TempDir(p))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A free loopback port (bound and released: a small race, acceptable for a benchmark).
fn free_port() -> Result<u16, BoxError> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Wait until `addr` accepts connections or the child exits.
fn wait_listening(child: &mut Child, addr: SocketAddr, log: &Path) -> Result<(), BoxError> {
    let deadline = Instant::now() + START_TIMEOUT;
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait()? {
            let tail = std::fs::read_to_string(log).unwrap_or_default();
            return Err(format!("child exited at start ({status}):\n{tail}").into());
        }
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(START_POLL);
    }
    Err(format!("child did not listen on {addr} within {START_TIMEOUT:?}").into())
}

fn stop_child(child: &mut Child) {
    if let Ok(pid) = i32::try_from(child.id()) {
        let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
    }
    let deadline = Instant::now() + STOP_TIMEOUT;
    while Instant::now() < deadline {
        if !matches!(child.try_wait(), Ok(None)) {
            return;
        }
        std::thread::sleep(START_POLL);
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Settings of the proxy under test.
pub struct ProxySpec {
    pub mx_port: u16,
    pub max_sessions: usize,
    pub max_idle: usize,
    /// Run the daemon binary at this path; `None`: a server in this process.
    pub binary: Option<PathBuf>,
    /// `caps: max_connections` per (source, MX).
    pub cap: Option<usize>,
    /// Also listen with a PROXY protocol and a SOCKS5 front-end in `mode: passthrough`
    /// (issue 24 part 2).
    pub passthrough: bool,
    /// Those front-ends splice bulk data (`splice: true`, the default).
    pub splice: bool,
}

/// The passthrough front-ends' addresses ([`ProxySpec::passthrough`]).
#[derive(Clone, Copy, Debug)]
pub struct Fronts {
    pub proxy_protocol: SocketAddr,
    pub socks5: SocketAddr,
}

/// A running proxy and how to reach it.
pub struct ProxyUnderTest {
    pub client: ProxyClientConfig,
    /// The daemon's pid (`None` when in-process: its CPU and RSS are then not separable).
    pub pid: Option<u32>,
    /// The passthrough front-ends, when asked for.
    pub fronts: Option<Fronts>,
    child: Option<Child>,
    server: Option<Arc<Server>>,
    _dir: TempDir,
}

impl ProxyUnderTest {
    pub fn start(spec: &ProxySpec) -> Result<ProxyUnderTest, BoxError> {
        let dir = TempDir::new("proxy")?;
        let ca = TestCa::new("greenarrow_proxy bench CA")?;
        let cert = ca.issue(&["localhost", "127.0.0.1"])?;
        let cert_path = dir.0.join("proxy-cert.pem");
        let key_path = dir.0.join("proxy-key.pem");
        std::fs::write(&cert_path, &cert.cert_pem)?;
        std::fs::write(&key_path, &cert.key_pem)?;
        let mut secret = [0u8; 32];
        getrandom::fill(&mut secret).map_err(|e| format!("random: {e}"))?;
        let secret: String = secret.iter().map(|b| format!("{b:02x}")).collect();
        let port = if spec.binary.is_some() {
            free_port()?
        } else {
            0
        };
        let yaml = format!(
            "listen: [\"127.0.0.1:{port}\"]\n\
             allow_from: [127.0.0.0/8]\n\
             auth_shared_secret: \"{secret}\"\n\
             tls_certificate: {}\n\
             tls_private_key: {}\n\
             source_addresses: [127.0.0.0/8]\n\
             destination_ports: [{}]\n\
             destination_allow: [127.0.0.0/8]\n\
             max_sessions: {}\n\
             max_sessions_per_ip: 100000\n\
             max_queued_sessions: 1000\n\
             timeouts:\n  mta_idle: 30m\n\
             pool:\n  max_idle_per_key: {}\n  max_idle_total: {}\n  idle_ttl: 30m\n  reuse_time_limit: 1h\n",
            cert_path.display(),
            key_path.display(),
            spec.mx_port,
            spec.max_sessions,
            spec.max_idle.clamp(1, 100_000),
            spec.max_idle.max(1),
        );
        let yaml = match spec.cap {
            Some(n) => format!("{yaml}caps:\n  wait: 60s\n  max_connections: {n}\n"),
            None => yaml,
        };
        let fronts = if spec.passthrough {
            Some(Fronts {
                proxy_protocol: SocketAddr::from(([127, 0, 0, 1], free_port()?)),
                socks5: SocketAddr::from(([127, 0, 0, 1], free_port()?)),
            })
        } else {
            None
        };
        let yaml = match fronts {
            Some(f) => format!(
                "{yaml}frontends:\n\
                 \x20 - kind: proxy_protocol\n    listen: [\"{}\"]\n    mode: passthrough\n    client: default\n    splice: {}\n\
                 \x20 - kind: socks5\n    listen: [\"{}\"]\n    mode: passthrough\n    auth: none\n    client: default\n    splice: {}\n",
                f.proxy_protocol, spec.splice, f.socks5, spec.splice
            ),
            None => yaml,
        };
        let client = |addr| -> Result<ProxyClientConfig, BoxError> {
            Ok(ProxyClientConfig {
                proxy: addr,
                tls_name: "localhost".into(),
                tls: ProxyClientTls::from_ca_pem(ca.cert_pem().as_bytes())?,
                secret: secret.clone(),
                timeout: Duration::from_secs(120),
            })
        };
        match &spec.binary {
            Some(bin) => {
                let config_path = dir.0.join("proxy.yaml");
                std::fs::write(&config_path, &yaml)?;
                let addr = SocketAddr::from(([127, 0, 0, 1], port));
                let child = spawn_listening(
                    bin,
                    &["--config-filename".as_ref(), config_path.as_os_str()],
                    &dir.0.join("proxy.log"),
                    addr,
                )?;
                Ok(ProxyUnderTest {
                    client: client(addr)?,
                    pid: Some(child.id()),
                    fronts,
                    child: Some(child),
                    server: None,
                    _dir: dir,
                })
            }
            None => {
                let config = Config::from_yaml_str(&yaml, &dir.0)?;
                let server = Server::start(Runtime::build(config)?)?;
                let addr = *server
                    .local_addrs()
                    .first()
                    .ok_or("the in-process proxy has no listener")?;
                Ok(ProxyUnderTest {
                    client: client(addr)?,
                    pid: None,
                    fronts,
                    child: None,
                    server: Some(server),
                    _dir: dir,
                })
            }
        }
    }
}

impl Drop for ProxyUnderTest {
    fn drop(&mut self) {
        if let Some(c) = self.child.as_mut() {
            stop_child(c);
        }
        if let Some(s) = self.server.take() {
            s.stop_accepting();
            s.drain(Duration::from_secs(5));
        }
    }
}

/// Start `bin` with `args`, its stderr to `log_path`, and wait until it listens on `addr`
/// (stopping it if it does not).
fn spawn_listening(
    bin: &Path,
    args: &[&std::ffi::OsStr],
    log_path: &Path,
    addr: SocketAddr,
) -> Result<Child, BoxError> {
    let log = std::fs::File::create(log_path)?;
    let mut child = Command::new(bin)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .map_err(|e| format!("{}: {e}", bin.display()))?;
    if let Err(e) = wait_listening(&mut child, addr, log_path) {
        stop_child(&mut child);
        return Err(e);
    }
    Ok(child)
}

/// HAProxy in TCP mode in front of the MX.
pub struct Haproxy {
    pub addr: SocketAddr,
    pub pid: u32,
    child: Child,
    _dir: TempDir,
}

impl Haproxy {
    pub fn start(bin: &Path, mx: SocketAddr) -> Result<Haproxy, BoxError> {
        let dir = TempDir::new("haproxy")?;
        let port = free_port()?;
        let cfg = format!(
            "global\n  maxconn 4000\n\
             defaults\n  mode tcp\n  timeout connect 10s\n  timeout client 120s\n  timeout server 120s\n\
             frontend smtp\n  bind 127.0.0.1:{port}\n  default_backend mx\n\
             backend mx\n  server mx {mx}\n"
        );
        let cfg_path = dir.0.join("haproxy.cfg");
        std::fs::write(&cfg_path, cfg)?;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let child = spawn_listening(
            bin,
            &["-db".as_ref(), "-f".as_ref(), cfg_path.as_os_str()],
            &dir.0.join("haproxy.log"),
            addr,
        )?;
        Ok(Haproxy {
            addr,
            pid: child.id(),
            child,
            _dir: dir,
        })
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        stop_child(&mut self.child);
    }
}

/// User plus system CPU seconds of process `pid` (all its threads, live and exited).
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may contain spaces.
    let rest = stat.get(stat.rfind(')')? + 2..)?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / clock_ticks())
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf only reads a system constant.
    let t = unsafe { nix::libc::sysconf(nix::libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// A `kB` line of `/proc/<pid>/status`, e.g. `VmRSS` or `VmHWM`, in KiB.
pub fn status_kib(pid: u32, key: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|l| {
        let v = l.strip_prefix(key)?.strip_prefix(':')?;
        v.trim().trim_end_matches("kB").trim().parse().ok()
    })
}

/// Resident KiB of process `pid` in the session threads' stacks: the writable anonymous
/// mappings of exactly `stack_bytes` in `/proc/<pid>/smaps` (glibc maps a thread's stack
/// with its guard page as a separate, inaccessible mapping).
pub fn stack_rss_kib(pid: u32, stack_bytes: u64) -> Option<u64> {
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).ok()?;
    let mut total = 0;
    let mut in_stack = false;
    for line in smaps.lines() {
        let mut f = line.split_whitespace();
        let first = f.next().unwrap_or_default();
        if let Some((lo, hi)) = first.split_once('-') {
            // A mapping header: "lo-hi perms offset dev inode [path]".
            let (Ok(lo), Ok(hi)) = (u64::from_str_radix(lo, 16), u64::from_str_radix(hi, 16))
            else {
                in_stack = false;
                continue;
            };
            let perms = f.next().unwrap_or_default();
            let anonymous = f.nth(2) == Some("0") && f.next().is_none();
            in_stack = hi - lo == stack_bytes && perms.starts_with("rw") && anonymous;
        } else if in_stack && first == "Rss:" {
            total += f.next()?.parse::<u64>().ok()?;
        }
    }
    Some(total)
}
