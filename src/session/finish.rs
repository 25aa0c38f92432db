//! The end of a relayed SMTP session: answer the MTA, then keep the MX connection for reuse
//! or close it — and log why.

use super::relay::{RelayEnd, RelayOutcome};
use super::{Next, Session, QUIT_WAIT};
use crate::bufconn::BufConn;
use crate::mx::MxConnection;
use crate::pool::PoolKey;
use crate::protocol::ConnectRequest;
use crate::smtp::PoolState;
use crate::tls::ServerTlsStream;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

impl Session<'_> {
    pub(super) fn finish(
        &mut self,
        mta: &mut BufConn<ServerTlsStream>,
        req: &ConnectRequest,
        out: RelayOutcome,
    ) -> Next {
        let messages = out.relay.messages_accepted();
        self.shared
            .stats
            .messages
            .fetch_add(messages, Ordering::Relaxed);
        if let Some(why) = &out.mx_lost {
            verbose!(self.rt, mta = self.peer; "MX connection lost: {why}");
        }
        let next = match out.end {
            RelayEnd::Quit => {
                if mta
                    .send(b"221 2.0.0 greenarrow_proxy: SMTP session closed\r\n")
                    .is_err()
                {
                    Next::Close
                } else {
                    Next::Continue
                }
            }
            RelayEnd::MtaTimeout => {
                let _ = mta.send(super::IDLE_TIMEOUT);
                Next::Close
            }
            RelayEnd::Lifetime => {
                let _ = mta.send(super::LIFETIME_EXCEEDED);
                Next::Close
            }
            RelayEnd::MtaGone => Next::Close,
        };
        if let Some(mut mx) = out.mx {
            mx.messages += messages;
            if out.mid_body {
                // Never complete a message the MTA did not finish.
                verbose!(self.rt, mta = self.peer, mx = mx.remote; "the MTA left in the middle of a message: MX connection closed without end of data");
                mx.close();
            } else {
                let state = out.relay.pool_state();
                self.release(req, mx, Some(state));
            }
        }
        next
    }

    /// Keep `mx` in the pool when everything allows it, otherwise QUIT and close it.
    /// `state` is the relay's view (None when no SMTP session took place).
    pub(super) fn release(
        &self,
        req: &ConnectRequest,
        mut mx: MxConnection,
        state: Option<PoolState>,
    ) {
        let why_not: Option<String> = (|| {
            if !req.reuse {
                return Some("the request did not allow reuse".to_string());
            }
            if self.shared.stopping.load(Ordering::SeqCst) {
                return Some("the proxy is stopping".to_string());
            }
            match state {
                Some(PoolState::Clean) | None => {}
                Some(PoolState::NeedsRset) => {
                    if !mx.probe(b"RSET\r\n", Duration::from_secs(10)) {
                        return Some("RSET after an unfinished transaction failed".into());
                    }
                }
                Some(PoolState::Unusable(reason)) => return Some(reason.to_string()),
            }
            if let Some(cap) = req.reuse_max_messages {
                if mx.messages >= cap {
                    return Some(format!("message cap reached ({} of {cap})", mx.messages));
                }
            }
            None
        })();
        let mx = match why_not {
            Some(reason) => {
                verbose!(self.rt, mta = self.peer, mx = mx.remote; "not kept: {reason}");
                mx.quit(QUIT_WAIT);
                return;
            }
            None => mx,
        };
        let key = PoolKey::new(req.source, &req.ehlo, mx.remote);
        let remote = mx.remote;
        match self.shared.pool.checkin(key, mx, Instant::now()) {
            Ok(()) => verbose!(self.rt, mta = self.peer, mx = remote; "kept for reuse"),
            Err(rejected) => {
                verbose!(self.rt, mta = self.peer, mx = remote; "not kept: {}", rejected.why.reason());
                rejected.conn.quit(QUIT_WAIT);
            }
        }
    }
}
