//! Sans-I/O SMTP: reply parsing, command classification and the relay state machine.
//!
//! Nothing in this module performs I/O. Every parser takes a byte slice and returns a decision;
//! the I/O loops elsewhere in the crate own the sockets and buffers and act on those decisions.
//!
//! - [`reply`]: parse SMTP replies from the MX (bounded, byte-exact).
//! - [`command`]: classify a command line sent by the MTA.
//! - [`ehlo`]: extract the extensions advertised in an EHLO reply.
//! - [`stuff`]: dot-stuff a message body for sending with DATA (client side).
//! - [`relay`]: the state machine that relays an MTA's SMTP session to an MX in lockstep,
//!   including the SMTP smuggling defence and pool-reuse tracking.

pub mod command;
pub mod ehlo;
pub mod relay;
pub mod reply;
pub mod stuff;

pub use command::{classify, CommandError, Verb};
pub use ehlo::Capabilities;
pub use relay::{
    InputStep, MxFacts, MxStep, PoolState, Relay, RelayError, RelayLimits, ReplyEffect,
};
pub use reply::{parse_reply, Reply, ReplyError, ReplyLimits, ReplyScan};
pub use stuff::dot_stuff;

/// Strip one line ending (LF, or CR LF) from the end of `line`.
pub fn strip_line_end(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strip_line_end_variants() {
        assert_eq!(strip_line_end(b"abc\r\n"), b"abc");
        assert_eq!(strip_line_end(b"abc\n"), b"abc");
        assert_eq!(strip_line_end(b"abc\r"), b"abc");
        assert_eq!(strip_line_end(b"abc"), b"abc");
        assert_eq!(strip_line_end(b"\r\r\n"), b"\r");
    }
}
