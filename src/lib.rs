//! greenarrow_proxy: an SMTP egress connection proxy.
//!
//! See `docs/ARCHITECTURE.md` for how the modules fit together.

#[macro_use]
mod macros;

pub mod caps;
pub mod config;
pub mod control;
pub mod daemon;
pub mod dial;
pub mod dns;
pub mod drain;
mod endpoint;
pub mod frontend;
pub mod localaddr;
pub mod logging;
pub mod metrics;
pub mod mx;
pub mod pool;
pub mod procstat;
pub mod report;
pub mod runtime;
pub mod server;
pub mod session;
pub mod shared;
pub mod statefile;
pub mod tlspolicy;
pub use greenarrow_proxy_proto::status;
pub mod workers;
