//! The MTA's request line parser: never panics, and a parsed CONNECT renders back to a line
//! that parses to the same request.
#![no_main]

use greenarrow_proxy::protocol::{parse_request, Request};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(Request::Connect(c)) = parse_request(data) {
        let line = c.to_line();
        assert_eq!(
            parse_request(line.as_bytes()),
            Ok(Request::Connect(c)),
            "{line:?}"
        );
    }
});
