//! greenarrow_proxy: an SMTP egress connection proxy.
//!
//! See `docs/ARCHITECTURE.md` for how the modules fit together.

pub mod certgen;
pub mod config;
pub mod dial;
pub mod dns;
pub mod protocol;
pub mod smtp;
pub mod testmx;
pub mod tls;
