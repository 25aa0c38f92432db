//! The I/O driver of the set-up sequence: dial, then perform [`Setup`]'s actions on a
//! [`BufConn`], mapping every failure to the protocol's [`FailureReply`].

use super::setup::{Action, Phase, Setup, SetupFailure};
use super::{say_quit, MxConnection, MxStream, MxTimeouts};

/// How long to wait for the 221 when giving up on an MX during set-up.
const QUIT_WAIT: Duration = Duration::from_secs(2);
use crate::bufconn::{BufConn, ReadError};
use crate::deadline::Deadline;
use crate::dial::{dial, DialError};
use crate::protocol::{reply_lines, ConnectRequest, Failure, FailureReply, TlsPolicy};
use crate::smtp::ReplyLimits;
use crate::tls::{CertPolicy, MxTlsConnector, TlsError};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Everything the driver needs besides the request.
#[derive(Clone)]
pub struct MxSettings {
    pub tls: MxTlsConnector,
    pub timeouts: MxTimeouts,
    pub reply_limits: ReplyLimits,
}

pub fn dial_failure(e: &DialError) -> FailureReply {
    let f = match &e {
        DialError::SourceNotLocal { .. } => Failure::SourceNotLocal,
        DialError::FamilyMismatch { .. } => Failure::DestinationNotPermitted,
        DialError::Refused { .. } => Failure::ConnectRefused,
        DialError::Timeout { .. } => Failure::ConnectTimeout,
        DialError::Network { .. } => Failure::NetworkError,
    };
    FailureReply::new(f, e.to_string())
}

fn read_failure(stage: &str, e: ReadError) -> FailureReply {
    FailureReply::new(Failure::MxSetupFailed, format!("{stage}: {e}"))
}

fn tls_failure(e: &TlsError, policy: TlsPolicy) -> FailureReply {
    let f = if policy == TlsPolicy::Verify && matches!(e, TlsError::Certificate(_)) {
        Failure::TlsVerifyFailed
    } else {
        Failure::TlsFailed
    };
    FailureReply::new(f, e.to_string())
}

/// Whether a failed attempt is worth another address (connection-level failures).
pub fn try_next_address(f: &FailureReply) -> bool {
    matches!(
        f.failure,
        Failure::ConnectRefused
            | Failure::ConnectTimeout
            | Failure::NetworkError
            | Failure::MxSetupFailed
            | Failure::BannerRejected { permanent: false }
    )
}

/// Dial `addr` from the request's source and run the set-up sequence.
///
/// On an opportunistic request with `tls_fallback=yes`, a failed STARTTLS handshake is followed
/// by one new connection without TLS; the connection then carries a `tls_note` saying so. With
/// `smtps=yes` there is no plaintext to fall back to: the failure stands.
///
/// Every phase keeps its own timeout, cut short by `deadline` (the session's lifetime): no
/// step of the set-up outlives it.
pub fn establish(
    settings: &MxSettings,
    req: &ConnectRequest,
    addr: SocketAddr,
    mx_host: Option<&str>,
    deadline: Deadline,
) -> Result<MxConnection, FailureReply> {
    match attempt(settings, req, req.tls, addr, mx_host, deadline) {
        Err((f, true))
            if req.tls == TlsPolicy::Opportunistic
                && req.tls_fallback
                && !req.smtps
                && f.failure == Failure::TlsFailed =>
        {
            let mut c = attempt(settings, req, TlsPolicy::None, addr, mx_host, deadline)
                .map_err(|(f, _)| f)?;
            c.tls_note = Some(format!(
                "TLS handshake failed ({}); reconnected without TLS (tls_fallback=yes)",
                f.text
            ));
            Ok(c)
        }
        r => r.map_err(|(f, _)| f),
    }
}

/// One attempt; on failure also says whether it failed in the TLS handshake.
fn attempt(
    settings: &MxSettings,
    req: &ConnectRequest,
    policy: TlsPolicy,
    addr: SocketAddr,
    mx_host: Option<&str>,
    deadline: Deadline,
) -> Result<MxConnection, (FailureReply, bool)> {
    let t = &settings.timeouts;
    // A phase's timeout, cut short by the session's deadline (never zero: the socket calls
    // refuse a zero timeout; an expired deadline leaves a millisecond).
    let within = |timeout: Duration| deadline.cap(timeout);
    let tcp = dial(req.source, addr, within(t.connect)).map_err(|e| (dial_failure(&e), false))?;
    let local = tcp.local_addr().map_err(|e| {
        (
            FailureReply::new(Failure::NetworkError, format!("local address: {e}")),
            false,
        )
    })?;
    let created = Instant::now();
    let mut conn = BufConn::new(MxStream::Plain(tcp));
    let mut setup = Setup::new(&req.ehlo, policy, req.smtps);
    let tls_name = req.tls_name.as_deref().or(mx_host);
    let mut tls_facts = None;
    let mut action = setup.start();
    loop {
        action = match action {
            Action::Send(bytes, phase) => {
                out_of_step(&conn, addr)?;
                if let Err(e) = conn.send(&bytes) {
                    return Err((read_failure("sending to the MX", e.into()), false));
                }
                read_step(&mut conn, &mut setup, settings, phase, deadline)?
            }
            Action::ReadReply(phase) => {
                read_step(&mut conn, &mut setup, settings, phase, deadline)?
            }
            Action::StartTls => {
                let (stream, rest) = conn.into_parts();
                if !rest.is_empty() {
                    return Err((
                        FailureReply::new(
                            Failure::MxSetupFailed,
                            format!(
                                "the MX sent {} octets after its 220 reply to STARTTLS (possible command injection, CVE-2011-0411)",
                                rest.len()
                            ),
                        ),
                        false,
                    ));
                }
                let MxStream::Plain(tcp) = stream else {
                    return Err((
                        FailureReply::new(Failure::TlsFailed, "TLS requested twice"),
                        false,
                    ));
                };
                let cert_policy = if policy == TlsPolicy::Verify {
                    CertPolicy::Verify
                } else {
                    CertPolicy::AcceptAny
                };
                let tls = settings
                    .tls
                    .connect(
                        tcp,
                        cert_policy,
                        tls_name,
                        addr.ip(),
                        within(t.tls_handshake),
                    )
                    .map_err(|e| (tls_failure(&e, policy), true))?;
                tls_facts = Some(tls.facts().clone());
                conn = BufConn::new(MxStream::Tls(Box::new(tls)));
                setup.on_tls_established()
            }
            Action::Done => {
                out_of_step(&conn, addr)?;
                break;
            }
            Action::Fail(f) => {
                let (reply, polite) = match f {
                    SetupFailure::BannerRejected(r) => (
                        FailureReply::new(
                            Failure::BannerRejected {
                                permanent: r.is_permanent(),
                            },
                            format!("{addr} rejected the connection in its banner"),
                        )
                        .with_mx_lines(reply_lines(r.raw())),
                        true,
                    ),
                    SetupFailure::EhloRejected(r) => (
                        FailureReply::new(
                            Failure::EhloRejected {
                                permanent: r.is_permanent(),
                            },
                            format!("{addr} rejected EHLO and HELO {}", req.ehlo),
                        )
                        .with_mx_lines(reply_lines(r.raw())),
                        true,
                    ),
                    SetupFailure::Closing(r) => (
                        FailureReply::new(
                            Failure::MxSetupFailed,
                            format!("{addr} closed the session during set-up"),
                        )
                        .with_mx_lines(reply_lines(r.raw())),
                        false,
                    ),
                    SetupFailure::TlsNotOffered(note) => {
                        (FailureReply::new(Failure::TlsNotOffered, note), true)
                    }
                    SetupFailure::Unexpected(r) => (
                        FailureReply::new(
                            Failure::MxSetupFailed,
                            format!("{addr} gave an unexpected reply"),
                        )
                        .with_mx_lines(reply_lines(r.raw())),
                        true,
                    ),
                };
                if polite {
                    say_quit(&mut conn, QUIT_WAIT);
                }
                return Err((reply, false));
            }
        };
    }
    let verified_name = match (&tls_facts, policy) {
        (Some(f), TlsPolicy::Verify) if f.verified => Some(
            tls_name
                .map(str::to_string)
                .unwrap_or_else(|| addr.ip().to_string()),
        ),
        _ => None,
    };
    // The last deadline-bound read may have left a short socket timeout: the relay's first
    // write to the MX gets the command timeout (which the relay keeps, so no extra call).
    let _ = conn.set_timeout(t.command);
    let (Some(banner), Some(greeting)) = (setup.banner.take(), setup.greeting.take()) else {
        return Err((
            FailureReply::new(Failure::MxSetupFailed, "set-up ended early"),
            false,
        ));
    };
    Ok(MxConnection {
        conn,
        remote: addr,
        local,
        mx_host: mx_host.map(str::to_string),
        banner,
        greeting,
        caps: std::mem::take(&mut setup.caps),
        tls: tls_facts,
        tls_note: setup.tls_note.take(),
        verified_name,
        tls_attempted: policy != TlsPolicy::None,
        created,
        uses: 1,
        messages: 0,
        bytes: 0,
        last_mta: None,
        permit: None,
    })
}

/// Bytes already read past the reply just handled, before anything more was asked: the MX is
/// out of step (a stray reply, or one for a command not sent) and no later reply of it can be
/// matched to its command. Set-up fails rather than take the next reply for the wrong one.
fn out_of_step(
    conn: &BufConn<crate::mx::MxStream>,
    addr: SocketAddr,
) -> Result<(), (FailureReply, bool)> {
    let n = conn.pending().len();
    if n == 0 {
        return Ok(());
    }
    Err((
        FailureReply::new(
            Failure::MxSetupFailed,
            format!("{addr} sent {n} octets nobody asked for during set-up (out of step)"),
        ),
        false,
    ))
}

fn read_step(
    conn: &mut BufConn<crate::mx::MxStream>,
    setup: &mut Setup,
    settings: &MxSettings,
    phase: Phase,
    deadline: Deadline,
) -> Result<Action, (FailureReply, bool)> {
    let timeout = match phase {
        Phase::Banner => settings.timeouts.banner,
        Phase::Command => settings.timeouts.command,
    };
    let stage = match phase {
        Phase::Banner => "waiting for the MX banner",
        Phase::Command => "waiting for the MX reply",
    };
    // One deadline for the whole reply: an MX trickling a byte now and then cannot stretch it.
    let reply = conn
        .read_reply_until(&settings.reply_limits, deadline.within(timeout))
        .map_err(|e| (read_failure(stage, e), false))?;
    Ok(setup.on_reply(reply))
}
