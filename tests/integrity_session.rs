//! Session-layer integrity (issue 11): what an unauthenticated client, a trickling MX, a
//! panicking session and a misbehaving pooled connection can no longer do. Each test drives the
//! real proxy over loopback and asserts what the MTA got, what the MX received, and what the
//! proxy kept.
//!
//! - `mta`: the unauthenticated deadline, a panicking session, the MTA's next request after 221.
//! - `mx`: a trickled set-up reply, IPv6 forms that embed a denied IPv4 address.
//! - `pool`: the message cap at checkout, one deadline for all checkout probes, unread MX bytes
//!   at check-in, a disconnect after a finished transaction.

mod common;

#[path = "integrity_session/capture.rs"]
mod capture;
#[path = "integrity_session/mta.rs"]
mod mta;
#[path = "integrity_session/mx.rs"]
mod mx;
#[path = "integrity_session/pool.rs"]
mod pool;
#[path = "integrity_session/scripted.rs"]
mod scripted;
