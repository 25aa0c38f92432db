//! The MTA's request line parser: never panics, and a parsed CONNECT renders back to a line
//! that parses to the same request.

use crate::protocol::{parse_request, Request};

/// The `request` target.
pub fn request(data: &[u8]) {
    if let Ok(Request::Connect(c)) = parse_request(data) {
        let line = c.to_line();
        assert_eq!(
            parse_request(line.as_bytes()),
            Ok(Request::Connect(c)),
            "{line:?}"
        );
    }
}
