//! The native protocol's CONNECT: the egress core opens the MX connection, the MTA gets the
//! ready reply (or the failure), then the relayed SMTP session and its end.

use super::audit::Opened;
use super::{Next, Session};
use greenarrow_proxy_net::bufconn::BufConn;
use greenarrow_proxy_net::tls::ServerTlsStream;
use greenarrow_proxy_proto::protocol::{reply_lines, ConnectReady, ConnectRequest};
use std::time::Instant;

impl Session<'_> {
    pub(super) fn connect(
        &mut self,
        mta: &mut BufConn<ServerTlsStream>,
        req: ConnectRequest,
    ) -> Next {
        let started = Instant::now();
        let egress = self.egress();
        let stats = self.shared.stats();
        let opened = match &self.identity {
            // The one place the native protocol renders an egress error for its MTA.
            Some(id) => egress.open_mx(id, &req).map_err(|e| e.reply()),
            None => Err(super::auth_required()),
        };
        let (mut mx, origin) = match opened {
            Ok(x) => x,
            Err(f) => {
                stats.count_connect_failure(f.failure);
                let client = self.identity.as_ref().map_or("-", |id| id.name);
                crate::logging::request_failed(
                    self.rt.config.log_verbose,
                    "connect failed",
                    self.peer,
                    client,
                    &req,
                    &f,
                );
                return if mta.send(&f.render()).is_err() {
                    Next::Close
                } else {
                    Next::Continue
                };
            }
        };
        stats.connected();
        mx.used_by(self.peer);
        let ready = ConnectReady {
            origin: origin.clone(),
            mx_host: mx.mx_host().map(str::to_string),
            remote: mx.remote(),
            local: mx.local(),
            tls: mx.tls().cloned(),
            tls_note: mx.tls_note().map(str::to_string),
            tls_policy: Some(mx.applied()),
            banner: reply_lines(mx.banner().raw()),
            ehlo: reply_lines(mx.greeting().raw()),
        };
        egress.log_ready(started, &mx, &origin);
        if mta.send(&ready.render()).is_err() {
            egress.release(&req, mx, None);
            return Next::Close;
        }
        let client = self.identity.as_ref().map_or("-", |id| id.name);
        let opened = Opened::new(client, started, &mx, &origin);
        let out = egress.relay(mta, mx, &req, self.deadline);
        self.finish(mta, &req, out, &opened)
    }
}
