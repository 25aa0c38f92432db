//! greenarrow_proxy: an SMTP egress connection proxy.
//!
//! See `docs/ARCHITECTURE.md` for how the modules fit together.

pub mod bufconn;
pub mod certgen;
pub mod client;
pub mod config;
pub mod daemon;
pub mod dial;
pub mod dns;
pub mod frontend;
pub mod logging;
pub mod mx;
pub mod pool;
pub mod protocol;
pub mod report;
pub mod server;
pub mod session;
pub mod smtp;
pub mod testmx;
pub mod tls;
