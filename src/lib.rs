//! greenarrow_proxy: an SMTP egress connection proxy.
//!
//! See `docs/ARCHITECTURE.md` for how the modules fit together.

#[macro_use]
mod macros;

pub mod bufconn;
pub mod caps;
pub mod certgen;
pub mod client;
pub mod config;
pub mod control;
pub mod daemon;
pub mod deadline;
pub mod dial;
pub mod dns;
pub mod drain;
pub mod duration;
mod endpoint;
pub mod frontend;
#[doc(hidden)]
pub mod fuzzing;
pub mod localaddr;
pub mod logging;
pub mod metrics;
pub mod mx;
pub mod pool;
pub mod procstat;
pub mod protocol;
pub mod report;
pub mod runtime;
pub mod server;
pub mod session;
pub mod shared;
pub mod smtp;
pub mod status;
pub mod testmx;
pub mod tls;
pub mod workers;
