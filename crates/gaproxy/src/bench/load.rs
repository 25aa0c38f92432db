//! The load: MTA threads repeating SMTP sessions, through the proxy or directly, timing
//! connect-to-ready and every message.

use super::direct::{self, DirectTarget};
use super::passthrough::{self, FrontTarget};
use crate::send::sample_message;
use greenarrow_proxy_client::{ProxyClient, ProxyClientConfig};
use greenarrow_proxy_proto::protocol::{ConnectRequest, Destination, Origin, TlsPolicy};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

/// An MTA thread gives up after this many errors.
const MAX_ERRORS_PER_MTA: u64 = 20;
const FROM: &str = "bench@sender.test";
const TO: &str = "user@mx.test";
const EHLO: &str = "mta.bench.test";

/// Who the MTAs talk to.
#[derive(Clone)]
pub enum TargetKind {
    Proxy(ProxyClientConfig),
    Direct(DirectTarget),
    /// Through a passthrough front-end of the proxy (PROXY v2 or SOCKS5).
    Front(FrontTarget),
}

/// One scenario.
pub struct Load {
    pub kind: TargetKind,
    pub mx: SocketAddr,
    pub concurrency: usize,
    pub messages: usize,
    pub size: usize,
    pub duration: Duration,
    pub sessions_per_mta: u64,
    pub reuse: bool,
    pub mx_tls: bool,
    pub fresh_mta_connection: bool,
    /// Every MTA uses 127.0.0.2.
    pub one_source: bool,
    /// Each message as one flight: MAIL, RCPT, `BDAT <size> LAST` and the message.
    pub bdat_pipelined: bool,
}

/// What the MTAs measured.
#[derive(Default)]
pub struct Sample {
    pub sessions: u64,
    pub messages: u64,
    pub errors: u64,
    pub first_error: Option<String>,
    pub ready_new: Vec<Duration>,
    pub ready_reused: Vec<Duration>,
    pub per_message: Vec<Duration>,
    /// From the start of a session (the CONNECT, or the direct client's dial) to the MX's
    /// reply after its first message's dot, on a new MX connection.
    pub first_reply_new: Vec<Duration>,
    /// The same on a reused (pooled) MX connection.
    pub first_reply_reused: Vec<Duration>,
}

impl Sample {
    fn error(&mut self, e: impl std::fmt::Display) {
        self.errors += 1;
        self.first_error.get_or_insert_with(|| e.to_string());
    }

    fn first_reply(&mut self, reused: bool, d: Duration) {
        if reused {
            self.first_reply_reused.push(d);
        } else {
            self.first_reply_new.push(d);
        }
    }

    fn merge(&mut self, o: Sample) {
        self.sessions += o.sessions;
        self.messages += o.messages;
        self.errors += o.errors;
        if self.first_error.is_none() {
            self.first_error = o.first_error;
        }
        self.ready_new.extend(o.ready_new);
        self.ready_reused.extend(o.ready_reused);
        self.per_message.extend(o.per_message);
        self.first_reply_new.extend(o.first_reply_new);
        self.first_reply_reused.extend(o.first_reply_reused);
    }
}

/// The result of [`run`].
pub struct Outcome {
    pub sample: Sample,
    /// From the start signal to the end of the last MTA's last session.
    pub elapsed: Duration,
    /// What the `at_start` hook returned.
    pub cpu_before: Option<f64>,
}

/// The `p`th percentile (nearest rank) in milliseconds.
pub fn percentile_ms(v: &[Duration], p: f64) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    let mut s = v.to_vec();
    s.sort_unstable();
    let rank = ((p / 100.0) * s.len() as f64).ceil() as usize;
    s.get(rank.clamp(1, s.len()) - 1)
        .map(|d| d.as_secs_f64() * 1000.0)
}

/// Each MTA its own source address (spreads ephemeral ports; one pool key per MTA).
fn source_of(i: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(
        127,
        0,
        1 + (i / 250) as u8,
        2 + (i % 250) as u8,
    ))
}

/// Run the MTAs: they connect, then all start together once `at_start` has run.
pub fn run(load: &Load, at_start: impl FnOnce() -> Option<f64>) -> Result<Outcome, String> {
    let barrier = Arc::new(Barrier::new(load.concurrency + 1));
    std::thread::scope(|scope| {
        let mut handles = Vec::with_capacity(load.concurrency);
        for i in 0..load.concurrency {
            let barrier = barrier.clone();
            let h = std::thread::Builder::new()
                .name(format!("mta-{i}"))
                .spawn_scoped(scope, move || mta(load, i, &barrier))
                .map_err(|e| format!("cannot start MTA thread: {e}"));
            match h {
                Ok(h) => handles.push(h),
                Err(e) => {
                    // The barrier can never fill: the threads already started would wait
                    // forever. Abort the process rather than hang.
                    eprintln!("gaproxy bench: {e}");
                    std::process::exit(1);
                }
            }
        }
        barrier.wait();
        let cpu_before = at_start();
        barrier.wait();
        let started = Instant::now();
        let mut sample = Sample::default();
        for h in handles {
            match h.join() {
                Ok(s) => sample.merge(s),
                Err(_) => sample.error("an MTA thread panicked"),
            }
        }
        Ok(Outcome {
            sample,
            elapsed: started.elapsed(),
            cpu_before,
        })
    })
}

/// One MTA: connect, wait for the start, then sessions until the deadline.
fn mta(load: &Load, i: usize, barrier: &Barrier) -> Sample {
    let source = if load.one_source {
        IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2))
    } else {
        source_of(i)
    };
    let message = sample_message(FROM, TO, i as u32, load.size);
    let mut sample = Sample::default();
    match &load.kind {
        TargetKind::Proxy(cfg) => {
            let mut client = connect_proxy(cfg, load.fresh_mta_connection, &mut sample);
            barrier.wait();
            barrier.wait();
            let deadline = Instant::now() + load.duration;
            let req = request(load, source);
            while Instant::now() < deadline
                && sample.sessions < load.sessions_per_mta
                && sample.errors < MAX_ERRORS_PER_MTA
            {
                sample.sessions += 1;
                let started = Instant::now();
                if load.fresh_mta_connection || client.is_none() {
                    client = connect_proxy(cfg, false, &mut sample);
                }
                let Some(c) = client.as_mut() else {
                    continue;
                };
                if !proxy_session(c, &req, load, &message, started, &mut sample) {
                    client = None;
                } else if load.fresh_mta_connection {
                    if let Some(c) = client.take() {
                        let _ = c.quit();
                    }
                }
            }
            if let Some(c) = client {
                let _ = c.quit();
            }
        }
        TargetKind::Direct(target) => {
            barrier.wait();
            barrier.wait();
            let deadline = Instant::now() + load.duration;
            while Instant::now() < deadline
                && sample.sessions < load.sessions_per_mta
                && sample.errors < MAX_ERRORS_PER_MTA
            {
                sample.sessions += 1;
                direct_session(target, source, load, &message, &mut sample);
            }
        }
        TargetKind::Front(target) => {
            barrier.wait();
            barrier.wait();
            let deadline = Instant::now() + load.duration;
            while Instant::now() < deadline
                && sample.sessions < load.sessions_per_mta
                && sample.errors < MAX_ERRORS_PER_MTA
            {
                sample.sessions += 1;
                front_session(target, source, load, &message, &mut sample);
            }
        }
    }
    sample
}

fn request(load: &Load, source: IpAddr) -> ConnectRequest {
    let mut req = ConnectRequest::new(source, Destination::Ip(load.mx.ip()), EHLO);
    req.port = load.mx.port();
    req.reuse = load.reuse;
    req.tls = if load.mx_tls {
        TlsPolicy::Required
    } else {
        TlsPolicy::None
    };
    req
}

/// Connect and authenticate (`lazy`: not now, the first session will).
fn connect_proxy(cfg: &ProxyClientConfig, lazy: bool, sample: &mut Sample) -> Option<ProxyClient> {
    if lazy {
        return None;
    }
    match ProxyClient::connect(cfg).and_then(|mut c| c.authenticate().map(|()| c)) {
        Ok(c) => Some(c),
        Err(e) => {
            sample.error(format!("connecting to the proxy: {e}"));
            None
        }
    }
}

/// One SMTP session through the proxy; false when the proxy connection is no longer usable.
fn proxy_session(
    c: &mut ProxyClient,
    req: &ConnectRequest,
    load: &Load,
    message: &[u8],
    started: Instant,
    sample: &mut Sample,
) -> bool {
    let mut s = match c.open(req) {
        Ok(s) => s,
        Err(e) => {
            let usable = matches!(e, greenarrow_proxy_client::ClientError::Proxy(_));
            sample.error(format!("CONNECT: {e}"));
            return usable;
        }
    };
    let ready = started.elapsed();
    let reused = matches!(s.ready.origin, Origin::Reused { .. });
    if reused {
        sample.ready_reused.push(ready);
    } else {
        sample.ready_new.push(ready);
    }
    for i in 0..load.messages {
        let t = Instant::now();
        let sent = if load.bdat_pipelined {
            s.send_mail_bdat_pipelined(FROM, &[TO], message)
        } else {
            s.send_mail(FROM, &[TO], message)
        };
        match sent {
            Ok(_) => {
                sample.per_message.push(t.elapsed());
                sample.messages += 1;
                if i == 0 {
                    sample.first_reply(reused, started.elapsed());
                }
            }
            Err(e) => {
                sample.error(format!("message: {e}"));
                break;
            }
        }
    }
    match s.quit() {
        Ok(()) => true,
        Err(e) => {
            sample.error(format!("QUIT: {e}"));
            false
        }
    }
}

/// One SMTP session straight to the MX (or through the TCP relay).
fn direct_session(
    target: &DirectTarget,
    source: IpAddr,
    load: &Load,
    message: &[u8],
    sample: &mut Sample,
) {
    let started = Instant::now();
    let mut mx = match target.open(source, EHLO) {
        Ok(mx) => mx,
        Err(e) => return sample.error(e),
    };
    sample.ready_new.push(started.elapsed());
    send_messages(load, sample, started, || {
        if load.bdat_pipelined {
            direct::send_mail_bdat_pipelined(&mut mx, FROM, &[TO], message)
        } else {
            direct::send_mail(&mut mx, FROM, &[TO], message)
        }
    });
    if let Err(e) = direct::quit(mx) {
        sample.error(format!("QUIT: {e}"));
    }
}

/// One SMTP session to the MX through a passthrough front-end: what [`direct_session`] does,
/// over the front-end's connection.
fn front_session(
    target: &FrontTarget,
    source: IpAddr,
    load: &Load,
    message: &[u8],
    sample: &mut Sample,
) {
    let started = Instant::now();
    let mut c = match target.open(source, EHLO) {
        Ok(c) => c,
        Err(e) => return sample.error(e),
    };
    sample.ready_new.push(started.elapsed());
    send_messages(load, sample, started, || {
        direct::send_on(&mut c.conn, c.pipelining, FROM, &[TO], message)
    });
    if let Err(e) = passthrough::quit(c) {
        sample.error(format!("QUIT: {e}"));
    }
}

/// The messages of one session over a connection without the proxy's protocol (direct, or
/// through a passthrough front-end): each timed, the first reply's time noted, the first
/// failure recorded and the rest of the session's messages not sent.
fn send_messages<T, E: std::fmt::Display>(
    load: &Load,
    sample: &mut Sample,
    started: Instant,
    mut send: impl FnMut() -> Result<T, E>,
) {
    for i in 0..load.messages {
        let t = Instant::now();
        match send() {
            Ok(_) => {
                sample.per_message.push(t.elapsed());
                sample.messages += 1;
                if i == 0 {
                    sample.first_reply(false, started.elapsed());
                }
            }
            Err(e) => {
                sample.error(format!("message: {e}"));
                break;
            }
        }
    }
}
