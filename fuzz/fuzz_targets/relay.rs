//! The relay state machine driven by random MTA bytes, MX replies and losses of the MX
//! connection (see `greenarrow_proxy::fuzzing::relay`).
//! The logic lives in the library so that `tests/fuzz_corpus.rs` runs it on the seed corpus.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| greenarrow_proxy::fuzzing::relay(data));
