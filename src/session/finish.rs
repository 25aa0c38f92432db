//! The end of a relayed SMTP session on the native protocol: answer the MTA (221 and back to
//! the command state, or a last 421), and hand the MX connection to the egress core.

use super::audit::Opened;
use super::relay::{RelayEnd, RelayOutcome};
use super::{Next, Session};
use greenarrow_proxy_net::bufconn::BufConn;
use greenarrow_proxy_net::tls::ServerTlsStream;
use greenarrow_proxy_proto::protocol::ConnectRequest;

impl Session<'_> {
    pub(super) fn finish(
        &mut self,
        mta: &mut BufConn<ServerTlsStream>,
        req: &ConnectRequest,
        out: RelayOutcome,
        opened: &Opened,
    ) -> Next {
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
        self.egress().conclude(req, out, opened);
        next
    }
}
