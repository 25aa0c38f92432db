//! The fuzz targets' logic, shared by the cargo-fuzz binaries (`fuzz/fuzz_targets/*.rs`, each
//! a one-line call into this module) and by `tests/fuzz_corpus.rs`, which runs every target
//! over its checked-in seed corpus (`fuzz/seeds/<target>/`) on the stable toolchain in the
//! normal `cargo test`. Not part of the proxy's API.
//!
//! Each function takes arbitrary bytes and panics (an assertion) when a property fails.
//!
//! Adding a target: a module here, one line in [`TARGETS`], its cargo-fuzz binary and a
//! `[[bin]]` entry in `fuzz/Cargo.toml`, and a few seed files in `fuzz/seeds/<name>/`
//! (`fuzz/corpus/` is cargo-fuzz's working corpus, not checked in).

mod connect_ready;
mod proxy_header;
mod relay;
mod request;
mod smtp_reply;
mod socks5;

pub use connect_ready::connect_ready;
pub use proxy_header::proxy_header;
pub use relay::relay;
pub use request::request;
pub use smtp_reply::smtp_reply;
pub use socks5::socks5;

/// A target's logic: arbitrary bytes in, a panic when a property fails.
pub type Target = fn(&[u8]);

/// Every fuzz target: the name of its cargo-fuzz binary and seed directory, and its logic.
pub const TARGETS: &[(&str, Target)] = &[
    ("connect_ready", connect_ready),
    ("proxy_header", proxy_header),
    ("relay", relay),
    ("request", request),
    ("smtp_reply", smtp_reply),
    ("socks5", socks5),
];
