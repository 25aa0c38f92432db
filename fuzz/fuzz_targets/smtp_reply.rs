//! `smtp::parse_reply` on arbitrary bytes and limits (see `greenarrow_proxy_proto::fuzzing::smtp_reply`).
//! The logic lives in the library so that `tests/fuzz_corpus.rs` runs it on the seed corpus.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| greenarrow_proxy_proto::fuzzing::smtp_reply(data));
