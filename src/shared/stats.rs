//! The server's counters: one event method per thing counted, read as one [`StatsSnapshot`]
//! (what the report, the status view and the metrics show). Bounded: one counter per failure
//! tag, RFC 8460 result type and policy type, never per peer or domain.

use greenarrow_proxy_proto::protocol::reply::ALL_FAILURES;
use greenarrow_proxy_proto::protocol::Failure;
use greenarrow_proxy_proto::tls_policy::rpt::{PolicyType, ResultType};
use std::sync::atomic::{AtomicU64, Ordering};

/// Why an MTA connection was refused before a session started.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Not in `allow_from`.
    AllowFrom,
    /// No free worker and a full queue.
    Busy,
    /// `max_sessions_per_ip` reached.
    PerIp,
}

/// The other end of a TLS handshake.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Peer {
    Mta,
    Mx,
}

/// Counters since start, bumped through one method per event and read through
/// [`Stats::snapshot`] (the report's, the status view's and the metrics' figures).
#[derive(Default)]
pub struct Stats {
    sessions: AtomicU64,
    refused_allow_from: AtomicU64,
    refused_busy: AtomicU64,
    refused_per_ip: AtomicU64,
    connects: AtomicU64,
    connect_failures: AtomicU64,
    messages: AtomicU64,
    frontend_sessions: AtomicU64,
    passthrough_bytes_to_mx: AtomicU64,
    passthrough_bytes_to_mta: AtomicU64,
    relay_bytes_to_mx: AtomicU64,
    panics: AtomicU64,
    failures: FailureCounts,
    tls_handshakes_mta: AtomicU64,
    tls_handshakes_mx: AtomicU64,
    tls_rpt: TlsRptCounts,
}

/// The counters of [`Stats`] at one moment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    /// MTA connections accepted (sessions started, any listener).
    pub sessions: u64,
    pub refused_allow_from: u64,
    pub refused_busy: u64,
    pub refused_per_ip: u64,
    /// Connect requests that got an MX connection.
    pub connects: u64,
    /// Connect requests that failed (the sum of `failures`).
    pub connect_failures: u64,
    /// Messages the MX accepted.
    pub messages: u64,
    /// Connections accepted on a front-end (PROXY, SOCKS5, SMTP).
    pub frontend_sessions: u64,
    /// Octets relayed by passthrough sessions, each way.
    pub passthrough_bytes_to_mx: u64,
    pub passthrough_bytes_to_mta: u64,
    /// Octets MTAs sent through the SMTP relay (native protocol, SMTP-aware front-ends) to
    /// MXes: commands and message data.
    pub relay_bytes_to_mx: u64,
    /// Session jobs that panicked (caught; the worker went on).
    pub panics: u64,
    /// TLS handshakes completed with MTAs (native listener) and with MXes (STARTTLS or
    /// implicit TLS; a reused connection does none).
    pub tls_handshakes_mta: u64,
    pub tls_handshakes_mx: u64,
    /// Failed connects by failure, in [`ALL_FAILURES`] order (zeros included).
    pub failures: Vec<(Failure, u64)>,
    /// TLS-RPT: failed sessions per result type, in [`ResultType::ALL`] order.
    pub tls_rpt_failures: Vec<(ResultType, u64)>,
    /// TLS-RPT: successful sessions per policy type, in [`POLICY_TYPES`] order.
    pub tls_rpt_successes: Vec<(PolicyType, u64)>,
}

fn bump(a: &AtomicU64, n: u64) {
    a.fetch_add(n, Ordering::Relaxed);
}

impl Stats {
    /// An MTA connection was accepted and its session job started.
    pub fn session_started(&self) {
        bump(&self.sessions, 1);
    }

    /// A connection was accepted on a front-end.
    pub fn frontend_session_started(&self) {
        bump(&self.frontend_sessions, 1);
    }

    /// An MTA connection was refused before its session started.
    pub fn refused(&self, why: Refusal) {
        bump(
            match why {
                Refusal::AllowFrom => &self.refused_allow_from,
                Refusal::Busy => &self.refused_busy,
                Refusal::PerIp => &self.refused_per_ip,
            },
            1,
        );
    }

    /// A connect request got an MX connection.
    pub fn connected(&self) {
        bump(&self.connects, 1);
    }

    /// A connect request failed with `f`: counted in `connect_failures` and per failure.
    pub fn count_connect_failure(&self, f: Failure) {
        bump(&self.connect_failures, 1);
        self.failures.add(f);
    }

    /// The MX accepted `n` messages.
    pub fn messages_accepted(&self, n: u64) {
        bump(&self.messages, n);
    }

    /// `n` octets went from an MTA to an MX through the SMTP relay.
    pub fn relayed_to_mx(&self, n: u64) {
        bump(&self.relay_bytes_to_mx, n);
    }

    /// A passthrough session ended, having relayed these octets each way.
    pub fn passed_through(&self, to_mx: u64, to_mta: u64) {
        bump(&self.passthrough_bytes_to_mx, to_mx);
        bump(&self.passthrough_bytes_to_mta, to_mta);
    }

    /// A session job panicked (and was caught).
    pub fn session_panicked(&self) {
        bump(&self.panics, 1);
    }

    /// A TLS handshake with `peer` completed.
    pub fn tls_handshake(&self, peer: Peer) {
        bump(
            match peer {
                Peer::Mta => &self.tls_handshakes_mta,
                Peer::Mx => &self.tls_handshakes_mx,
            },
            1,
        );
    }

    /// A session toward a policy domain's MX was set up under `policy` (a success), or
    /// failed (or would have, under `testing`) with `failure`.
    pub fn tls_rpt_outcome(&self, policy: PolicyType, failure: Option<ResultType>) {
        let slot = match failure {
            Some(r) => ResultType::ALL
                .iter()
                .position(|x| *x == r)
                .and_then(|i| self.tls_rpt.failures.get(i)),
            None => POLICY_TYPES
                .iter()
                .position(|x| *x == policy)
                .and_then(|i| self.tls_rpt.successes.get(i)),
        };
        if let Some(n) = slot {
            bump(n, 1);
        }
    }

    /// Every counter now.
    pub fn snapshot(&self) -> StatsSnapshot {
        let n = |a: &AtomicU64| a.load(Ordering::Relaxed);
        StatsSnapshot {
            sessions: n(&self.sessions),
            refused_allow_from: n(&self.refused_allow_from),
            refused_busy: n(&self.refused_busy),
            refused_per_ip: n(&self.refused_per_ip),
            connects: n(&self.connects),
            connect_failures: n(&self.connect_failures),
            messages: n(&self.messages),
            frontend_sessions: n(&self.frontend_sessions),
            passthrough_bytes_to_mx: n(&self.passthrough_bytes_to_mx),
            passthrough_bytes_to_mta: n(&self.passthrough_bytes_to_mta),
            relay_bytes_to_mx: n(&self.relay_bytes_to_mx),
            panics: n(&self.panics),
            tls_handshakes_mta: n(&self.tls_handshakes_mta),
            tls_handshakes_mx: n(&self.tls_handshakes_mx),
            failures: self.failures.snapshot(),
            tls_rpt_failures: ResultType::ALL
                .iter()
                .zip(&self.tls_rpt.failures)
                .map(|(r, a)| (*r, n(a)))
                .collect(),
            tls_rpt_successes: POLICY_TYPES
                .iter()
                .zip(&self.tls_rpt.successes)
                .map(|(p, a)| (*p, n(a)))
                .collect(),
        }
    }
}

/// The policy types TLS-RPT counts successes under.
pub const POLICY_TYPES: [PolicyType; 3] =
    [PolicyType::Tlsa, PolicyType::Sts, PolicyType::NoPolicyFound];

/// One counter per RFC 8460 result type and per policy type: bounded (never per domain).
#[derive(Default)]
struct TlsRptCounts {
    failures: [AtomicU64; ResultType::ALL.len()],
    successes: [AtomicU64; POLICY_TYPES.len()],
}

/// One counter per [`Failure`] (in [`ALL_FAILURES`] order): bounded, one series per code.
struct FailureCounts(Vec<AtomicU64>);

impl Default for FailureCounts {
    fn default() -> FailureCounts {
        FailureCounts(ALL_FAILURES.iter().map(|_| AtomicU64::new(0)).collect())
    }
}

impl FailureCounts {
    fn add(&self, f: Failure) {
        let slot = ALL_FAILURES
            .iter()
            .position(|x| *x == f)
            .and_then(|i| self.0.get(i));
        if let Some(n) = slot {
            n.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Every failure with its count, in [`ALL_FAILURES`] order (zeros included).
    fn snapshot(&self) -> Vec<(Failure, u64)> {
        ALL_FAILURES
            .iter()
            .zip(&self.0)
            .map(|(f, n)| (*f, n.load(Ordering::Relaxed)))
            .collect()
    }
}
