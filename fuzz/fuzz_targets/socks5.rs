//! See `greenarrow_proxy_proto::fuzzing::socks5`.
//! The logic lives in the library so that `tests/fuzz_corpus.rs` runs it on the seed corpus.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| greenarrow_proxy_proto::fuzzing::socks5(data));
