//! `mode: smtp`: the SMTP-aware front for unmodified MTAs that leave STARTTLS to the proxy.
//!
//! The proxy sends its own banner (the MX connection is chosen only once the EHLO name is
//! known: the pool key is source, EHLO name and MX), answers commands before EHLO itself, then
//! on `EHLO name` takes a pooled connection for (source, name, MX) or sets one up — banner,
//! EHLO, STARTTLS per the front-end's `tls`, EHLO — through the same egress core as the
//! native protocol, and answers the MTA's EHLO with the MX's post-TLS capabilities minus
//! STARTTLS and AUTH. The transactions then go through the same relay machine; the proxy
//! answers QUIT itself and keeps or closes the MX connection by the same rules.

pub mod greet;

use self::greet::{
    before_hello, failure_421, hello_reply, refusal_451, refusing, Greet, Refusing, BANNER,
    LINE_TOO_LONG,
};
use super::Target;
use crate::config::SmtpMode;
use crate::session::audit::Opened;
use crate::session::relay::RelayEnd;
use crate::session::{read_timeout, Egress, EgressError, IDLE_TIMEOUT, LIFETIME_EXCEEDED};
use greenarrow_proxy_net::bufconn::{BufConn, ReadError};
use greenarrow_proxy_net::deadline::Deadline;
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// Errors tolerated before EHLO.
const MAX_ERRORS: u32 = 10;

/// Serve an MTA whose destination is `target`, on `mta` (bytes already read after the
/// front-end's handshake in `initial`).
pub(super) fn serve(
    egress: &Egress,
    mta: TcpStream,
    initial: &[u8],
    target: Target,
    settings: &SmtpMode,
    deadline: Deadline,
    banner_delay: Duration,
) {
    let rt = egress.rt;
    let mut mta = BufConn::with_input(mta, initial);
    if !banner_delay.is_zero() {
        // A SOCKS client may read its reply and the first SMTP bytes in one read and lose
        // the latter (nodemailer): let the reply travel alone.
        std::thread::sleep(banner_delay);
    }
    if mta.send(BANNER).is_err() {
        return;
    }
    let mut errors = 0;
    let (name, extended) = loop {
        let Some(n) = next_line(egress, &mut mta, deadline) else {
            return;
        };
        let step = before_hello(mta.pending().get(..n).unwrap_or_default());
        mta.consume(n);
        match step {
            Greet::Reply { reply, error } => {
                errors += u32::from(error);
                if errors >= MAX_ERRORS {
                    let _ = mta.send(greet::TOO_MANY_ERRORS);
                    return;
                }
                if mta.send(reply).is_err() {
                    return;
                }
            }
            Greet::Close(reply) => {
                let _ = mta.send(reply);
                return;
            }
            Greet::Hello { name, extended } => break (name, extended),
        }
    };
    let mut req = target.request(&name);
    req.smtps = target.port == 465;
    req.tls = settings.tls;
    req.reuse = settings.reuse;
    req.reuse_max_messages = settings.reuse_max_messages;
    let started = Instant::now();
    let stats = egress.shared.stats();
    let (mut mx, origin) = match egress.open_mx(&target.identity, &req) {
        Ok(x) => x,
        Err(e) => {
            // The one place this front-end renders an egress error for its MTA.
            let f = e.reply();
            stats.count_connect_failure(f.failure);
            crate::logging::request_failed(
                rt.config.log_verbose,
                "smtp front: connect failed",
                egress.peer,
                target.identity.name,
                &req,
                &f,
            );
            let _ = mta.send(&failure_421(&f));
            return;
        }
    };
    stats.connected();
    mx.used_by(egress.peer);
    egress.log_ready(started, &mx, &origin);
    if mta.send(&hello_reply(mx.greeting(), extended)).is_err() {
        egress.release(&req, mx, None, false);
        return;
    }
    let opened = Opened::new(target.identity.name, started, &mx, &origin);
    let out = egress.relay(&mut mta, mx, &req, deadline);
    let last: &[u8] = match out.end {
        RelayEnd::Quit => greet::BYE,
        RelayEnd::MtaTimeout => IDLE_TIMEOUT,
        RelayEnd::Lifetime => LIFETIME_EXCEEDED,
        RelayEnd::MtaGone => b"",
    };
    // The MX connection is back in the pool (or closing) before the MTA hears 221: an MTA that
    // opens its next session at once finds it there.
    egress.conclude(&req, out, &opened);
    if !last.is_empty() {
        let _ = mta.send(last);
    }
    let _ = mta.get_ref().shutdown(std::net::Shutdown::Both);
}

/// The next complete command line from the MTA (its length in `mta.pending()`), within
/// `timeouts.mta_idle` and the session deadline; None (after telling the MTA why, when there
/// is something to say) when the session must end.
fn next_line(egress: &Egress, mta: &mut BufConn<TcpStream>, deadline: Deadline) -> Option<usize> {
    let rt = egress.rt;
    let Some(timeout) = read_timeout(rt.config.timeouts.mta_idle, deadline) else {
        let _ = mta.send(LIFETIME_EXCEEDED);
        return None;
    };
    // One deadline for the whole line: an MTA trickling bytes cannot stretch it.
    match mta.read_line_until(rt.config.limits.max_command_line, Deadline::after(timeout)) {
        Ok(n) => Some(n),
        Err(ReadError::Timeout) => {
            let _ = mta.send(IDLE_TIMEOUT);
            None
        }
        Err(ReadError::LineTooLong(_)) => {
            let _ = mta.send(LINE_TOO_LONG);
            None
        }
        Err(_) => None,
    }
}

/// Serve an MTA whose target the proxy refused by policy (source, port or destination not
/// permitted): the proxy's banner and EHLO reply, then `refusal` as a `451` to each MAIL, RCPT
/// and DATA, until QUIT. An MTA records a 4xx to MAIL against the message; a failure before
/// it (a SOCKS refusal, a 421 banner) against the MX, for every message to it.
pub(super) fn refuse(
    egress: &Egress,
    mta: TcpStream,
    initial: &[u8],
    refusal: &EgressError,
    deadline: Deadline,
    banner_delay: Duration,
) {
    let mut mta = BufConn::with_input(mta, initial);
    if !banner_delay.is_zero() {
        std::thread::sleep(banner_delay);
    }
    if mta.send(BANNER).is_err() {
        return;
    }
    // The other place this front-end renders an egress error (see `serve`).
    let refused = refusal_451(&refusal.reply());
    let mut errors = 0;
    while let Some(n) = next_line(egress, &mut mta, deadline) {
        let step = refusing(mta.pending().get(..n).unwrap_or_default());
        mta.consume(n);
        let (reply, error, close): (&[u8], bool, bool) = match step {
            Refusing::Reply { reply, error } => (reply, error, false),
            Refusing::Refuse { close } => (&refused, true, close),
            Refusing::Close(reply) => (reply, false, true),
        };
        errors += u32::from(error);
        if errors >= MAX_ERRORS {
            let _ = mta.send(greet::TOO_MANY_ERRORS);
            break;
        }
        if mta.send(reply).is_err() || close {
            break;
        }
    }
    let _ = mta.get_ref().shutdown(std::net::Shutdown::Both);
}
