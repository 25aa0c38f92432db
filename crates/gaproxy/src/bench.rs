//! `gaproxy bench`: throughput, latency, CPU and memory of the proxy, compared with MTAs
//! talking to the MX directly or through HAProxy in TCP mode (issue 7).
//!
//! One run measures one scenario: `--concurrency` MTA threads, each repeating SMTP sessions
//! of `--messages` messages of `--size` octets until `--duration` has passed (or
//! `--sessions-per-mta` sessions are done). Everything runs on loopback: a lean test MX in
//! this process (it offers STARTTLS), and the proxy as a child process (the real daemon
//! binary, so `/proc/<pid>` gives its CPU seconds and peak RSS) or in-process.
//!
//! The last line of output is `RESULT key=value ...` for scripts (`benches/run.sh`).
//! `--scale` measures memory with thousands of MTA sessions instead ([`scale`]).

mod children;
mod delay;
mod direct;
mod load;
mod passthrough;
mod scale;

use children::{cpu_seconds, status_kib, Haproxy, ProxySpec, ProxyUnderTest};
use clap::{Args, ValueEnum};
use greenarrow_proxy_net::tls::TlsAcceptor;
use greenarrow_proxy_testkit::certgen;
use greenarrow_proxy_testkit::testmx::{TestMx, TestMxConfig};
use load::{percentile_ms, Load, Sample, TargetKind};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

type BoxError = Box<dyn std::error::Error>;

/// What the MTAs send their SMTP sessions to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Target {
    /// Through greenarrow_proxy (CONNECT, then the relayed session).
    Proxy,
    /// Straight to the MX (the direct SMTP client, same logic as the proxy client).
    Direct,
    /// Through HAProxy in TCP mode (a new backend connection per session).
    Haproxy,
}

#[derive(Args)]
pub struct BenchArgs {
    /// What the MTAs talk to.
    #[arg(long, value_enum, default_value = "proxy")]
    pub target: Target,
    /// Concurrent MTAs (threads), each with its own proxy connection.
    #[arg(long, default_value_t = 20)]
    pub concurrency: usize,
    /// Messages per SMTP session.
    #[arg(long, default_value_t = 1)]
    pub messages: usize,
    /// Size of each message in octets.
    #[arg(long, default_value_t = 5 * 1024)]
    pub size: usize,
    /// How long the MTAs keep starting new sessions.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Stop each MTA after this many sessions (even before --duration).
    #[arg(long)]
    pub sessions_per_mta: Option<u64>,
    /// Ask the proxy for connection reuse (reuse=yes).
    #[arg(long)]
    pub reuse: bool,
    /// TLS to the MX: STARTTLS (proxy: tls=required; direct: STARTTLS every session).
    #[arg(long)]
    pub mx_tls: bool,
    /// Reconnect to the proxy (TLS handshake, AUTH) for every session instead of keeping
    /// the proxy connection open.
    #[arg(long)]
    pub fresh_mta_connection: bool,
    /// Run the proxy inside this process instead of the daemon binary (no CPU/RSS figures).
    #[arg(long)]
    pub in_process: bool,
    /// The daemon binary [default: greenarrow_proxy next to this executable].
    #[arg(long)]
    pub proxy_bin: Option<PathBuf>,
    /// The HAProxy binary for --target haproxy.
    #[arg(long, default_value = "haproxy")]
    pub haproxy_bin: PathBuf,
    /// Count the proxy's (or HAProxy's) system calls with `strace -c -f` into this file
    /// (slows it down a lot: use a separate run for the figures).
    #[arg(long)]
    pub strace: Option<PathBuf>,
    /// A name for the RESULT line.
    #[arg(long, default_value = "run")]
    pub label: String,
    /// Memory at scale instead: many MTA sessions held open, some with idle MX connections.
    #[arg(long)]
    pub scale: bool,
    /// --scale: MTA sessions held open.
    #[arg(long, default_value_t = 10_000)]
    pub scale_sessions: usize,
    /// --scale: how many of them open an MX connection that then goes idle into the pool.
    #[arg(long, default_value_t = 4_500)]
    pub scale_pooled: usize,
    /// Round-trip time toward the MX, emulated by a delay relay in front of it (each chunk
    /// delayed by half of it each way, one more for a new connection); 0: plain loopback.
    #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
    pub rtt: Duration,
    /// Timeout of every network step.
    #[arg(long, default_value = "120s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    /// --target proxy: cap the MX connections per (source, MX) at this many (`caps:
    /// max_connections`, `wait: 60s`); the MTAs wait for a pooled connection.
    #[arg(long)]
    pub cap: Option<usize>,
    /// Every MTA uses the same source address (127.0.0.2) instead of one of its own.
    #[arg(long)]
    pub one_source: bool,
    /// --target proxy: the MTAs go through this front-end of the proxy in `mode:
    /// passthrough` (a PROXY v2 header, or SOCKS5 BIND and CONNECT), then speak SMTP to the
    /// MX as the direct client does, instead of using the native protocol (issue 24).
    #[arg(long, value_enum)]
    pub passthrough: Option<passthrough::Front>,
    /// --passthrough: the front-ends never splice (`splice: false`): every byte is copied
    /// through the relay's buffers, for comparison.
    #[arg(long)]
    pub no_splice: bool,
    /// Send each message as one pipelined flight: MAIL, RCPT and `BDAT <size> LAST` with the
    /// message in one write, then the three replies (RFC 3030 with PIPELINING, as Exim does;
    /// the MX offers both). Through the proxy and directly alike.
    #[arg(long)]
    pub bdat_pipelined: bool,
}

/// The daemon binary to run.
fn proxy_binary(a: &BenchArgs) -> Result<Option<PathBuf>, BoxError> {
    if a.in_process {
        return Ok(None);
    }
    if let Some(p) = &a.proxy_bin {
        return Ok(Some(p.clone()));
    }
    let me = std::env::current_exe()?;
    let bin = me.with_file_name("greenarrow_proxy");
    if !bin.exists() {
        return Err(format!(
            "{} not found: build it (cargo build --release) or give --proxy-bin / --in-process",
            bin.display()
        )
        .into());
    }
    Ok(Some(bin))
}

/// A lean test MX on loopback that offers STARTTLS.
fn start_mx() -> Result<TestMx, BoxError> {
    let cert = certgen::self_signed(&["mx.test"])?;
    Ok(TestMx::start(TestMxConfig {
        starttls: Some(TlsAcceptor::from_pem(&cert.cert_pem, &cert.key_pem)?),
        lean: true,
        ..TestMxConfig::default()
    })?)
}

pub fn run(a: BenchArgs) -> Result<(), BoxError> {
    if a.concurrency == 0 || a.messages == 0 {
        return Err("--concurrency and --messages must be at least 1".into());
    }
    let mx = start_mx()?;
    if a.scale {
        if !a.rtt.is_zero() {
            return Err("--scale does not emulate latency (--rtt)".into());
        }
        let bin = proxy_binary(&a)?.ok_or("--scale needs the daemon binary (not --in-process)")?;
        return scale::run(&a, &mx, bin);
    }
    // Every path dials the MX through the delay relay when there is one.
    let relay = if a.rtt.is_zero() {
        None
    } else {
        Some(delay::DelayRelay::start(mx.addr(), a.rtt)?)
    };
    let mx_addr = relay.as_ref().map_or(mx.addr(), |r| r.addr());
    // Keep the proxy or HAProxy alive until the end of the run.
    let mut proxy = None;
    let mut haproxy = None;
    if a.passthrough.is_some()
        && (a.target != Target::Proxy || a.reuse || a.mx_tls || a.bdat_pipelined)
    {
        return Err(
            "--passthrough goes with --target proxy, without --reuse, --mx-tls and --bdat-pipelined"
                .into(),
        );
    }
    let (kind, pid) = match a.target {
        Target::Proxy => {
            let p = ProxyUnderTest::start(&ProxySpec {
                mx_port: mx_addr.port(),
                max_sessions: a.concurrency + 16,
                max_idle: a.concurrency * 2 + 16,
                binary: proxy_binary(&a)?,
                cap: a.cap,
                passthrough: a.passthrough.is_some(),
                splice: !a.no_splice,
            })?;
            let pid = p.pid;
            let kind = match (a.passthrough, p.fronts) {
                (Some(front), Some(f)) => TargetKind::Front(passthrough::FrontTarget {
                    kind: front,
                    addr: match front {
                        passthrough::Front::ProxyV2 => f.proxy_protocol,
                        passthrough::Front::Socks5 => f.socks5,
                    },
                    mx: mx_addr,
                    timeout: a.timeout,
                }),
                _ => TargetKind::Proxy(p.client.clone()),
            };
            proxy = Some(p);
            (kind, pid)
        }
        Target::Direct => (
            TargetKind::Direct(direct::DirectTarget::new(mx_addr, a.mx_tls, a.timeout)?),
            None,
        ),
        Target::Haproxy => {
            let h = Haproxy::start(&a.haproxy_bin, mx_addr)?;
            let pid = Some(h.pid);
            let kind = TargetKind::Direct(direct::DirectTarget::new(h.addr, a.mx_tls, a.timeout)?);
            haproxy = Some(h);
            (kind, pid)
        }
    };
    let load = Load {
        kind,
        mx: mx_addr,
        concurrency: a.concurrency,
        messages: a.messages,
        size: a.size,
        duration: a.duration,
        sessions_per_mta: a.sessions_per_mta.unwrap_or(u64::MAX),
        reuse: a.reuse,
        mx_tls: a.mx_tls,
        fresh_mta_connection: a.fresh_mta_connection,
        one_source: a.one_source,
        bdat_pipelined: a.bdat_pipelined,
    };
    let mut tracer = None;
    let outcome = load::run(&load, || {
        // Runs once every MTA is connected, just before the clock starts.
        if let (Some(path), Some(pid)) = (&a.strace, pid) {
            tracer = start_strace(path, pid);
        }
        pid.and_then(cpu_seconds)
    })?;
    let syscalls = tracer.and_then(|t| stop_strace(t, a.strace.as_deref()));
    let cpu = match (pid.and_then(cpu_seconds), outcome.cpu_before) {
        (Some(after), Some(before)) => Some(after - before),
        _ => None,
    };
    let peak_kib = pid.and_then(|p| status_kib(p, "VmHWM"));
    let s = &outcome.sample;
    let mx_ok = mx.wait_until(Duration::from_secs(30), |st| {
        st.stats.messages >= s.messages
    });
    let mx_stats = mx.stats();
    if a.cap.is_some() || a.one_source {
        println!(
            "CAPS label={} cap={} mx_connections={} mx_max_open={}",
            a.label,
            a.cap.map_or("none".to_string(), |c| c.to_string()),
            mx_stats.connections,
            mx_stats.max_open_connections
        );
    }
    drop(proxy);
    drop(haproxy);
    drop(relay);
    report(&a, &outcome, cpu, peak_kib, syscalls, &mx_stats, mx_ok);
    if s.errors > 0 || !mx_ok {
        return Err(format!(
            "{} error(s); first: {}",
            s.errors,
            s.first_error
                .as_deref()
                .unwrap_or("MX did not receive every message")
        )
        .into());
    }
    Ok(())
}

fn fmt_opt(v: Option<f64>, digits: usize) -> String {
    v.map_or("-".to_string(), |x| format!("{x:.digits$}"))
}

fn report(
    a: &BenchArgs,
    o: &load::Outcome,
    cpu: Option<f64>,
    peak_kib: Option<u64>,
    syscalls: Option<u64>,
    mx: &greenarrow_proxy_testkit::testmx::Stats,
    mx_ok: bool,
) {
    let mx_messages = mx.messages;
    let s: &Sample = &o.sample;
    let secs = o.elapsed.as_secs_f64().max(1e-9);
    let rate = s.messages as f64 / secs;
    let mbps = s.messages as f64 * a.size as f64 / secs / 1e6;
    let target = format!("{:?}", a.target).to_lowercase();
    println!(
        "== bench {}: target={target} reuse={} mx_tls={} concurrency={} messages/session={} size={} fresh_mta_connection={} rtt={}{}",
        a.label,
        if a.reuse { "yes" } else { "no" },
        if a.mx_tls { "yes" } else { "no" },
        a.concurrency,
        a.messages,
        a.size,
        a.fresh_mta_connection,
        humantime::format_duration(a.rtt),
        if a.bdat_pipelined {
            " bdat_pipelined=yes"
        } else {
            ""
        }
    );
    println!(
        "   {} messages in {} sessions, {secs:.2} s: {rate:.1} msgs/s, {mbps:.1} MB/s; errors {}; MX accepted {mx_messages}{}",
        s.messages,
        s.sessions,
        s.errors,
        if mx_ok { "" } else { " (MISMATCH)" }
    );
    let lat = |v: &[Duration]| {
        format!(
            "n={} p50 {} ms p99 {} ms",
            v.len(),
            fmt_opt(percentile_ms(v, 50.0), 3),
            fmt_opt(percentile_ms(v, 99.0), 3)
        )
    };
    println!("   connect-to-ready, new:    {}", lat(&s.ready_new));
    println!("   connect-to-ready, reused: {}", lat(&s.ready_reused));
    println!("   per message:              {}", lat(&s.per_message));
    println!(
        "   session start to the MX's reply after the first message's dot, new MX connection: {}",
        lat(&s.first_reply_new)
    );
    println!(
        "   the same, reused MX connection: {}",
        lat(&s.first_reply_reused)
    );
    let conns_per_msg = mx.connections as f64 / (s.messages.max(1) as f64);
    println!(
        "   MX: {} connections, {conns_per_msg:.4} per message",
        mx.connections
    );
    let per_msg_syscalls = syscalls.map(|n| n as f64 / (s.messages.max(1) as f64));
    if a.target != Target::Direct {
        println!(
            "   {} CPU {} s ({} ms per message), peak RSS {} MiB{}",
            if a.target == Target::Proxy {
                "proxy"
            } else {
                "haproxy"
            },
            fmt_opt(cpu, 2),
            fmt_opt(cpu.map(|c| c * 1000.0 / s.messages.max(1) as f64), 3),
            fmt_opt(peak_kib.map(|k| k as f64 / 1024.0), 1),
            per_msg_syscalls
                .map(|n| format!(", {n:.1} system calls per message (strace)"))
                .unwrap_or_default()
        );
    }
    if let Some(e) = &s.first_error {
        println!("   first error: {e}");
    }
    println!(
        "RESULT label={} target={target} reuse={} mx_tls={} msgs_per_s={rate:.2} mb_per_s={mbps:.2} ready_new_p50_ms={} ready_new_p99_ms={} ready_reused_p50_ms={} ready_reused_p99_ms={} msg_p50_ms={} msg_p99_ms={} first_new_p50_ms={} first_new_p99_ms={} first_reused_p50_ms={} first_reused_p99_ms={} mx_connections={} mx_conns_per_msg={conns_per_msg:.4} cpu_s={} cpu_ms_per_msg={} rss_peak_kib={} syscalls_per_msg={} errors={}",
        a.label,
        a.reuse,
        a.mx_tls,
        fmt_opt(percentile_ms(&s.ready_new, 50.0), 3),
        fmt_opt(percentile_ms(&s.ready_new, 99.0), 3),
        fmt_opt(percentile_ms(&s.ready_reused, 50.0), 3),
        fmt_opt(percentile_ms(&s.ready_reused, 99.0), 3),
        fmt_opt(percentile_ms(&s.per_message, 50.0), 3),
        fmt_opt(percentile_ms(&s.per_message, 99.0), 3),
        fmt_opt(percentile_ms(&s.first_reply_new, 50.0), 3),
        fmt_opt(percentile_ms(&s.first_reply_new, 99.0), 3),
        fmt_opt(percentile_ms(&s.first_reply_reused, 50.0), 3),
        fmt_opt(percentile_ms(&s.first_reply_reused, 99.0), 3),
        mx.connections,
        fmt_opt(cpu, 3),
        fmt_opt(cpu.map(|c| c * 1000.0 / s.messages.max(1) as f64), 4),
        peak_kib.map_or("-".to_string(), |k| k.to_string()),
        fmt_opt(per_msg_syscalls, 1),
        s.errors
    );
}

/// Attach `strace -c -f` to `pid`, writing its summary to `path`.
fn start_strace(path: &std::path::Path, pid: u32) -> Option<Child> {
    let child = Command::new("strace")
        .args(["-c", "-f", "-o"])
        .arg(path)
        .arg("-p")
        .arg(pid.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    match child {
        Ok(c) => {
            // strace attaches to every thread asynchronously; give it a moment (a tool, not a
            // test: nothing depends on the exact moment).
            std::thread::sleep(Duration::from_millis(500));
            Some(c)
        }
        Err(e) => {
            eprintln!("gaproxy bench: cannot run strace: {e}");
            None
        }
    }
}

/// Stop strace and return the total number of system calls from its summary.
fn stop_strace(mut child: Child, path: Option<&std::path::Path>) -> Option<u64> {
    let pid = i32::try_from(child.id()).ok()?;
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGINT,
    );
    let _ = child.wait();
    let text = std::fs::read_to_string(path?).ok()?;
    // "100.00    0.123456           1    123456      1234 total": calls is the 4th column.
    let total = text
        .lines()
        .rev()
        .find(|l| l.trim_end().ends_with("total"))?;
    total.split_whitespace().nth(3)?.parse().ok()
}
