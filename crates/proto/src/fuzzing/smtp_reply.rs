//! `smtp::parse_reply` on arbitrary bytes and limits: never panics; a reply it returns is a
//! prefix of the input, within the limits, and parses the same from exactly that prefix;
//! "need more" never turns into a different reply when the rest arrives.

use crate::smtp::{parse_reply, ReplyLimits};

/// The `smtp_reply` target: two bytes of limits, then the input.
pub fn smtp_reply(data: &[u8]) {
    let Some((&[a, b], buf)) = data.split_first_chunk::<2>() else {
        return;
    };
    let limits = ReplyLimits {
        max_line: 4 + usize::from(a),
        max_lines: 1 + usize::from(b % 16),
    };
    match parse_reply(buf, &limits) {
        Ok(Some((reply, n))) => {
            assert!(n > 0 && n <= buf.len());
            assert_eq!(reply.raw(), &buf[..n]);
            assert!((200..600).contains(&reply.code()));
            assert!(reply.lines().count() <= limits.max_lines);
            assert!(reply.raw().ends_with(b"\n"));
            assert_eq!(
                parse_reply(&buf[..n], &limits),
                Ok(Some((reply.clone(), n)))
            );
            // Every strict prefix needs more (or is already known bad, never another reply).
            for cut in 0..n {
                if let Ok(Some(_)) = parse_reply(&buf[..cut], &limits) {
                    panic!("prefix {cut} of {n} parsed as a complete reply");
                }
            }
        }
        Ok(None) => assert!(buf.len() < limits.max_line * limits.max_lines),
        Err(_) => {}
    }
}
