//! greenarrow_proxy_proto: the proxy's protocols as data and state machines, with no I/O.
//!
//! Nothing here opens a socket, starts a thread or names a TLS library: parsers and machines
//! take bytes (and, where time matters, the time) and return decisions, so that every rule is
//! unit-tested without a network. The daemon (`greenarrow_proxy`), the client library and
//! the test kit drive them over real streams. See docs/ARCHITECTURE.md.
//!
//! - [`smtp`]: replies, commands, EHLO capabilities, dot-stuffing and the relay machine;
//! - [`protocol`]: the native proxy protocol (CONNECT request, READY and failure replies);
//! - [`proxy_header`], [`socks5`]: the front-ends' handshakes;
//! - [`caps`]: the connection caps' ledger (open connections, dials, waiters; time given);
//! - [`mx_setup`]: the set-up sequence toward an MX (banner, EHLO/HELO, STARTTLS, EHLO);
//! - [`tls_policy`]: DANE, MTA-STS and TLS-RPT toward the MX (what the domain publishes and
//!   what a connection must therefore be);
//! - [`family`], [`tls_facts`], [`duration`], [`escape`]: small shared vocabulary.

pub mod caps;
pub mod control;
pub mod duration;
pub mod escape;
pub mod family;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
pub mod mx_setup;
pub mod protocol;
pub mod proxy_header;
pub mod smtp;
pub mod socks5;
pub mod status;
pub mod tls_facts;
pub mod tls_policy;
