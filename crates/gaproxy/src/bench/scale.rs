//! `gaproxy bench --scale`: the proxy's memory with thousands of MTA sessions held open.
//!
//! 1. `--scale-sessions` MTAs connect and authenticate, then sit idle in the command state.
//! 2. `--scale-pooled` of them CONNECT (reuse=yes) at the same time, so each gets its own MX
//!    connection, and send one message: that many relayed sessions are open and idle.
//! 3. They QUIT the SMTP session: their MX connections go idle into the pool (a NOOP on each
//!    proxy connection afterwards proves the proxy has put them there).
//!
//! The proxy's RSS is read after each step; RSS per idle pooled connection is
//! (RSS after 3 − RSS after 1) / pooled. It is an upper bound: memory freed by the relayed
//! sessions of step 2 and kept by the allocator counts too.

use super::children::{stack_rss_kib, status_kib, ProxySpec, ProxyUnderTest};
use super::BenchArgs;
use crate::send::sample_message;
use greenarrow_proxy::server::SESSION_STACK;
use greenarrow_proxy_client::{ProxyClient, ProxyClientConfig};
use greenarrow_proxy_proto::protocol::{ConnectRequest, Destination, TlsPolicy};
use greenarrow_proxy_testkit::testmx::TestMx;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::time::Instant;

type BoxError = Box<dyn std::error::Error>;

/// Threads opening MTA connections (TLS handshakes) in parallel.
const CONNECT_THREADS: usize = 4;

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// Open `n` authenticated proxy connections with a few threads.
fn open_clients(cfg: &ProxyClientConfig, n: usize) -> Result<Vec<ProxyClient>, BoxError> {
    let per = n.div_ceil(CONNECT_THREADS);
    let parts: Vec<Result<Vec<ProxyClient>, String>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..CONNECT_THREADS)
            .map(|t| {
                let count = per.min(n.saturating_sub(t * per));
                s.spawn(move || {
                    let mut v = Vec::with_capacity(count);
                    for _ in 0..count {
                        let mut c = ProxyClient::connect(cfg).map_err(|e| e.to_string())?;
                        c.authenticate().map_err(|e| e.to_string())?;
                        v.push(c);
                    }
                    Ok(v)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err("thread panicked".into())))
            .collect()
    });
    let mut all = Vec::with_capacity(n);
    for p in parts {
        all.extend(p?);
    }
    Ok(all)
}

pub fn run(a: &BenchArgs, mx: &TestMx, bin: PathBuf) -> Result<(), BoxError> {
    let sessions = a.scale_sessions.max(1);
    let pooled = a.scale_pooled.min(sessions);
    let proxy = ProxyUnderTest::start(&ProxySpec {
        mx_port: mx.addr().port(),
        max_sessions: sessions + 16,
        max_idle: pooled + 16,
        binary: Some(bin),
        cap: None,
        passthrough: false,
        splice: true,
    })?;
    let pid = proxy.pid.ok_or("no proxy pid")?;
    let rss = || status_kib(pid, "VmRSS").unwrap_or(0);
    println!(
        "== bench scale: {sessions} MTA sessions, {pooled} idle pooled MX connections, mx_tls={}",
        a.mx_tls
    );
    let rss_start = rss();
    println!("   proxy started: RSS {:.1} MiB", mib(rss_start));

    let t = Instant::now();
    let mut clients = open_clients(&proxy.client, sessions)?;
    let rss_sessions = rss();
    let stacks = || stack_rss_kib(pid, SESSION_STACK as u64).unwrap_or(0);
    let stacks_sessions = stacks();
    println!(
        "   {sessions} MTA sessions open and authenticated ({:.1} s): RSS {:.1} MiB, {:.1} KiB per MTA session",
        t.elapsed().as_secs_f64(),
        mib(rss_sessions),
        rss_sessions.saturating_sub(rss_start) as f64 / sessions as f64
    );

    let message = sample_message("bench@sender.test", "user@mx.test", 1, a.size);
    let mut req = ConnectRequest::new(
        IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)),
        Destination::Ip(mx.addr().ip()),
        "mta.bench.test",
    );
    req.port = mx.addr().port();
    req.reuse = true;
    req.tls = if a.mx_tls {
        TlsPolicy::Required
    } else {
        TlsPolicy::None
    };
    let t = Instant::now();
    let (rss_active, rss_pooled) = {
        let mut open = Vec::with_capacity(pooled);
        for c in clients.iter_mut().take(pooled) {
            let mut s = c.open(&req)?;
            s.send_mail("bench@sender.test", &["user@mx.test"], &message)?;
            open.push(s);
        }
        let rss_active = rss();
        println!(
            "   {pooled} of them in a relayed SMTP session on their own MX connection ({:.1} s): RSS {:.1} MiB, {:.1} KiB per active MX connection",
            t.elapsed().as_secs_f64(),
            mib(rss_active),
            rss_active.saturating_sub(rss_sessions) as f64 / pooled.max(1) as f64
        );
        for s in open {
            s.quit()?;
        }
        for c in clients.iter_mut().take(pooled) {
            c.noop()?;
        }
        (rss_active, rss())
    };
    let stacks_pooled = stacks();
    let per_pooled = rss_pooled.saturating_sub(rss_sessions) as f64 / pooled.max(1) as f64;
    println!(
        "   after QUIT, {pooled} idle MX connections in the pool: RSS {:.1} MiB, {per_pooled:.1} KiB per idle pooled connection",
        mib(rss_pooled)
    );
    // The sessions that opened the MX connections stay open: stack pages their threads
    // touched for the set-up (a TLS handshake goes deeper than a plaintext one) stay resident
    // and are counted above. Without them:
    let stack_growth = stacks_pooled.saturating_sub(stacks_sessions);
    let per_pooled_heap = rss_pooled
        .saturating_sub(rss_sessions)
        .saturating_sub(stack_growth) as f64
        / pooled.max(1) as f64;
    println!(
        "   of which session thread stacks grew by {:.1} MiB ({:.1} KiB per session that opened one); without them {per_pooled_heap:.1} KiB per idle pooled connection",
        mib(stack_growth),
        stack_growth as f64 / pooled.max(1) as f64
    );
    let peak = status_kib(pid, "VmHWM").unwrap_or(0);
    println!(
        "   MX: {} connections, {} messages; proxy peak RSS {:.1} MiB",
        mx.stats().connections,
        mx.stats().messages,
        mib(peak)
    );
    println!(
        "RESULT label={} scale_sessions={sessions} scale_pooled={pooled} mx_tls={} rss_start_kib={rss_start} rss_sessions_kib={rss_sessions} rss_active_kib={rss_active} rss_pooled_kib={rss_pooled} rss_peak_kib={peak} kib_per_session={:.1} kib_per_pooled={per_pooled:.1} kib_per_pooled_without_stacks={per_pooled_heap:.1}",
        a.label,
        a.mx_tls,
        rss_sessions.saturating_sub(rss_start) as f64 / sessions as f64,
    );
    for c in clients {
        let _ = c.quit();
    }
    drop(proxy);
    Ok(())
}
