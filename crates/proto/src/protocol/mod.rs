//! The MTA↔proxy protocol, version 1 (sans-I/O). Specified in `docs/PROTOCOL.md`.
//!
//! After TLS, the MTA speaks first: `AUTH 1 <secret>`, then `CONNECT key=value ...`. The proxy
//! answers with SMTP-shaped replies. After a `250 ready` the connection carries the MTA's SMTP
//! session with the MX (relayed by [`crate::smtp::relay`]) until the MTA's `QUIT`, after
//! which the proxy is back in its command state.

pub mod reply;
pub mod request;
pub mod reuse;

#[cfg(test)]
mod props;

pub use reply::{reply_lines, Code, ConnectReady, Failure, FailureReply, Origin};
pub use request::{
    is_valid_secret, parse_request, ConnectRequest, Destination, Request, RequestError, TlsPolicy,
    MAX_REQUEST_LINE, MAX_SECRET_LEN, PROTOCOL_VERSION,
};
pub use reuse::{PoolKey, TlsState, TlsWant};
