//! The PROXY header parser on arbitrary bytes: never panics; a header it returns is exact (the
//! same from exactly its bytes, `Incomplete` from every shorter prefix); `Incomplete` only
//! below the bound; an error is one printable line, and every prefix of the input is either
//! `Incomplete` or the same kind of error (incremental reading cannot change the verdict).
use crate::proxy_header::{parse, Parsed, MAX_HEADER_LEN};
use std::mem::discriminant;

/// The `proxy_header` target.
pub fn proxy_header(data: &[u8]) {
    match parse(data) {
        Ok(Parsed::Incomplete) => assert!(data.len() < MAX_HEADER_LEN),
        Ok(Parsed::Header(header)) => {
            let n = header.consumed;
            assert!(n <= data.len() && n <= MAX_HEADER_LEN);
            assert_eq!(parse(&data[..n]), Ok(Parsed::Header(header)));
            for cut in 0..n {
                assert_eq!(parse(&data[..cut]), Ok(Parsed::Incomplete), "cut {cut}");
            }
        }
        Err(error) => {
            let text = error.to_string();
            assert!(
                !text.is_empty() && !text.chars().any(char::is_control),
                "{text:?}"
            );
            assert!(error.tag().starts_with("proxy_header_"));
            for cut in 0..data.len().min(MAX_HEADER_LEN) {
                match parse(&data[..cut]) {
                    Ok(Parsed::Incomplete) => {}
                    Err(e) => assert_eq!(discriminant(&e), discriminant(&error), "cut {cut}"),
                    Ok(other) => panic!("cut {cut}: {other:?}, whole input: {error}"),
                }
            }
        }
    }
}
