//! The fault matrix: every case drives the real proxy (real sockets, real TLS) against a test
//! MX, and asserts three things — what the MTA was told, what the MX received, and whether the
//! MX connection went into the pool — then runs a good session to show the daemon still
//! serves. Across all cases: no message is duplicated, lost without an error reply, or
//! delivered truncated.
//!
//! - `mx_side`: the MX closes, says 421, goes silent, is slow at the end of data, dies while
//!   pooled, or breaks TLS.
//! - `mta_side`: the MTA drops mid-body, sends garbage, over-long lines, plaintext to the TLS
//!   listener, wrong secrets, commands after QUIT, SMTP smuggling.
//! - `flood`: connections that never finish their TLS handshake.

mod common;

#[path = "faults/flood.rs"]
mod flood;
#[path = "faults/mta_side.rs"]
mod mta_side;
#[path = "faults/mx_side.rs"]
mod mx_side;
#[path = "faults/util.rs"]
mod util;
