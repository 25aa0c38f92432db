//! The I/O driver of the set-up sequence: dial, then perform [`Setup`]'s actions on a
//! [`BufConn`]; every failure is an [`AttemptError`] (rendered only by the front-end).

use super::error::{AttemptError, SetupError, Stage};
use super::setup::{Action, Phase, Setup, SetupFailure};
use super::{say_quit, MxConnection, MxStream, MxTimeouts};
use crate::dial::dial;
use greenarrow_proxy_net::bufconn::BufConn;
use greenarrow_proxy_net::deadline::Deadline;
use greenarrow_proxy_net::tls::dane::DaneMatch;
use greenarrow_proxy_net::tls::{CertPolicy, MxTlsConnector};
use greenarrow_proxy_proto::protocol::{ConnectRequest, TlsPolicy};
use greenarrow_proxy_proto::smtp::ReplyLimits;
use greenarrow_proxy_proto::tls_policy::decide::{CertCheck, Decision, Observe};
use greenarrow_proxy_proto::tls_policy::rpt::{PolicyType, ResultType};
use greenarrow_proxy_proto::tls_policy::Applied;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// How long to wait for the 221 when giving up on an MX during set-up.
const QUIT_WAIT: Duration = Duration::from_secs(2);

/// Everything the driver needs besides the request.
#[derive(Clone)]
pub struct MxSettings {
    pub tls: MxTlsConnector,
    pub timeouts: MxTimeouts,
    pub reply_limits: ReplyLimits,
}

/// Dial `addr` from the request's source and run the set-up sequence under `decision` (the
/// TLS policy decided for this MX host: `tls_policy::decide`).
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
    decision: &Decision,
    deadline: Deadline,
) -> Result<MxConnection, AttemptError> {
    match attempt(
        settings,
        req,
        decision,
        decision.setup,
        addr,
        mx_host,
        deadline,
    ) {
        Err(AttemptError::Setup(SetupError::Tls { error, .. }))
            if decision.setup == TlsPolicy::Opportunistic
                && !decision.enforced
                && req.tls_fallback
                && !req.smtps =>
        {
            let mut c = attempt(
                settings,
                req,
                decision,
                TlsPolicy::None,
                addr,
                mx_host,
                deadline,
            )?;
            c.tls_note = Some(format!(
                "TLS handshake failed ({error}); reconnected without TLS (tls_fallback=yes)"
            ));
            Ok(c)
        }
        r => r,
    }
}

/// One attempt: dial, then the set-up.
fn attempt(
    settings: &MxSettings,
    req: &ConnectRequest,
    decision: &Decision,
    policy: TlsPolicy,
    addr: SocketAddr,
    mx_host: Option<&str>,
    deadline: Deadline,
) -> Result<MxConnection, AttemptError> {
    let t = &settings.timeouts;
    // A phase's timeout, cut short by the session's deadline (never zero: the socket calls
    // refuse a zero timeout; an expired deadline leaves a millisecond).
    let within = |timeout: Duration| deadline.cap(timeout);
    let tcp = dial(req.source, addr, within(t.connect))?;
    let local = tcp.local_addr().map_err(SetupError::LocalAddr)?;
    let created = Instant::now();
    let mut conn = BufConn::new(MxStream::Plain(tcp));
    let mut setup = Setup::new(&req.ehlo, policy, req.smtps);
    let tls_name = req.tls_name.as_deref().or(mx_host);
    let mut tls_facts = None;
    let mut dane_match = None;
    let mut observed = None;
    // A TLS failure under an enforced policy gets the policy's own failure (and tag).
    let enforced = if decision.enforced {
        decision.policy
    } else {
        PolicyType::NoPolicyFound
    };
    let mut action = setup.start();
    loop {
        action = match action {
            Action::Send(bytes, phase) => {
                out_of_step(&conn, addr)?;
                if let Err(e) = conn.send(&bytes) {
                    return Err(SetupError::Io {
                        stage: Stage::Sending,
                        error: e.into(),
                    }
                    .into());
                }
                read_step(&mut conn, &mut setup, settings, phase, deadline)?
            }
            Action::ReadReply(phase) => {
                read_step(&mut conn, &mut setup, settings, phase, deadline)?
            }
            Action::StartTls => {
                let (stream, rest) = conn.into_parts();
                if !rest.is_empty() {
                    return Err(SetupError::AfterStartTls { octets: rest.len() }.into());
                }
                let MxStream::Plain(tcp) = stream else {
                    return Err(SetupError::TlsTwice.into());
                };
                let timeout = within(t.tls_handshake);
                let ip = addr.ip();
                let tls = match &decision.check {
                    CertCheck::Dane { name, tlsa } if policy != TlsPolicy::None => {
                        let (tls, matched) = settings
                            .tls
                            .connect_dane(tcp, tlsa.records(), name, ip, timeout)
                            .map_err(|error| SetupError::Tls { error, policy }.under(enforced))?;
                        dane_match = Some((name.clone(), tlsa.fingerprint(), matched));
                        tls
                    }
                    check => {
                        let (cert_policy, name) = match check {
                            CertCheck::WebPki(name) if policy == TlsPolicy::Verify => {
                                (CertPolicy::Verify, Some(name.as_str()))
                            }
                            _ => (CertPolicy::AcceptAny, tls_name),
                        };
                        settings
                            .tls
                            .connect(tcp, cert_policy, name, ip, timeout)
                            .map_err(|error| SetupError::Tls { error, policy }.under(enforced))?
                    }
                };
                observed = match &decision.observe {
                    Some(Observe::Dane { name, tlsa }) => Some((
                        PolicyType::Tlsa,
                        settings
                            .tls
                            .dane_check(&tls, tlsa.records(), name)
                            .err()
                            .map(|f| f.result_type()),
                    )),
                    Some(Observe::Sts { mx_matches, .. }) => Some((
                        PolicyType::Sts,
                        if !mx_matches {
                            Some(ResultType::ValidationFailure)
                        } else if !tls.facts().verified {
                            Some(ResultType::StsWebpkiInvalid)
                        } else {
                            None
                        },
                    )),
                    None => None,
                };
                tls_facts = Some(tls.facts().clone());
                conn = BufConn::new(MxStream::Tls(Box::new(tls)));
                setup.on_tls_established()
            }
            Action::Done => {
                out_of_step(&conn, addr)?;
                break;
            }
            Action::Fail(f) => {
                let (error, polite) = match f {
                    SetupFailure::BannerRejected(reply) => {
                        (SetupError::BannerRejected { mx: addr, reply }, true)
                    }
                    SetupFailure::EhloRejected(reply) => (
                        SetupError::EhloRejected {
                            mx: addr,
                            ehlo: req.ehlo.clone(),
                            reply,
                        },
                        true,
                    ),
                    SetupFailure::Closing(reply) => {
                        (SetupError::Closing { mx: addr, reply }, false)
                    }
                    SetupFailure::TlsNotOffered(note) => {
                        (SetupError::TlsNotOffered(note).under(enforced), true)
                    }
                    SetupFailure::Unexpected(reply) => {
                        (SetupError::Unexpected { mx: addr, reply }, true)
                    }
                };
                if polite {
                    say_quit(&mut conn, QUIT_WAIT);
                }
                return Err(error.into());
            }
        };
    }
    let verified_name = match (&tls_facts, policy, &decision.check, &dane_match) {
        (Some(f), TlsPolicy::Verify, CertCheck::WebPki(name), _) if f.verified => {
            Some(name.clone())
        }
        (Some(f), TlsPolicy::Verify, _, _) if f.verified => Some(
            tls_name
                .map(str::to_string)
                .unwrap_or_else(|| addr.ip().to_string()),
        ),
        // DANE-verified and WebPKI-valid for the MX name too: it may serve tls=verify.
        (Some(f), _, _, Some((name, _, _))) if f.verified => Some(name.clone()),
        _ => None,
    };
    let applied = match (&dane_match, policy) {
        (Some((_, _, DaneMatch::Ta)), _) => Applied::DaneTa,
        (Some((_, _, DaneMatch::Ee)), _) => Applied::DaneEe,
        // The plaintext fallback of tls_fallback=yes stays `opportunistic` (tls_note says it).
        _ => decision.applied,
    };
    // An opportunistic request that stayed plaintext (no STARTTLS, or an observation that had
    // no TLS to look at): what an enforced policy would have said.
    if tls_facts.is_none() && observed.is_none() && policy != TlsPolicy::None {
        observed = match &decision.observe {
            Some(Observe::Dane { .. }) => {
                Some((PolicyType::Tlsa, Some(ResultType::StarttlsNotSupported)))
            }
            Some(Observe::Sts { .. }) => {
                Some((PolicyType::Sts, Some(ResultType::StarttlsNotSupported)))
            }
            None => None,
        };
    }
    // The last deadline-bound read may have left a short socket timeout: the relay's first
    // write to the MX gets the command timeout (which the relay keeps, so no extra call).
    let _ = conn.set_timeout(t.command);
    let (Some(banner), Some(greeting)) = (setup.banner.take(), setup.greeting.take()) else {
        return Err(SetupError::EndedEarly.into());
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
        applied,
        dane: dane_match.map(|(name, fingerprint, _)| (name, fingerprint)),
        observed,
        created,
        uses: 1,
        messages: 0,
        bytes: 0,
        last_mta: None,
    })
}

/// Bytes already read past the reply just handled, before anything more was asked: the MX is
/// out of step (a stray reply, or one for a command not sent) and no later reply of it can be
/// matched to its command. Set-up fails rather than take the next reply for the wrong one.
fn out_of_step(conn: &BufConn<crate::mx::MxStream>, addr: SocketAddr) -> Result<(), SetupError> {
    let n = conn.pending().len();
    if n == 0 {
        return Ok(());
    }
    Err(SetupError::OutOfStep {
        mx: addr,
        octets: n,
    })
}

fn read_step(
    conn: &mut BufConn<crate::mx::MxStream>,
    setup: &mut Setup,
    settings: &MxSettings,
    phase: Phase,
    deadline: Deadline,
) -> Result<Action, SetupError> {
    let timeout = match phase {
        Phase::Banner => settings.timeouts.banner,
        Phase::Command => settings.timeouts.command,
    };
    let stage = match phase {
        Phase::Banner => Stage::Banner,
        Phase::Command => Stage::Reply,
    };
    // One deadline for the whole reply: an MX trickling a byte now and then cannot stretch it.
    let reply = conn
        .read_reply_until(&settings.reply_limits, deadline.within(timeout))
        .map_err(|error| SetupError::Io { stage, error })?;
    Ok(setup.on_reply(reply))
}
