//! Front-ends for unmodified MTAs (PROXY protocol, SOCKS5) and what they share.

pub mod passthrough;
