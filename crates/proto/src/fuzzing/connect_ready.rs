//! `ConnectReady::parse` and `FailureReply::parse` on arbitrary lines: never panic; what parses
//! renders to something that parses again to the same rendering.

use crate::protocol::{ConnectReady, FailureReply};

/// The text after `ddd-` / `ddd ` of each line of a rendered reply.
fn texts(raw: &[u8]) -> Vec<Vec<u8>> {
    raw.split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| {
            l.strip_suffix(b"\r")
                .unwrap_or(l)
                .get(4..)
                .unwrap_or(&[])
                .to_vec()
        })
        .collect()
}

/// The `connect_ready` target: one byte choosing a failure code, then lines separated by LF.
pub fn connect_ready(data: &[u8]) {
    let Some((&code, rest)) = data.split_first() else {
        return;
    };
    let lines: Vec<&[u8]> = rest.split(|&b| b == b'\n').collect();
    if let Ok(r) = ConnectReady::parse(&lines) {
        let raw = r.render();
        assert!(raw.ends_with(b"250 ready\r\n"));
        let again = texts(&raw);
        let refs: Vec<&[u8]> = again.iter().map(Vec::as_slice).collect();
        let r2 = ConnectReady::parse(&refs).expect("a rendered ready reply parses");
        assert_eq!(r2.render(), raw);
    }
    let code = 400 + u16::from(code % 200);
    if let Some(f) = FailureReply::parse(code, &lines) {
        let raw = f.render();
        assert_eq!(
            raw.iter().filter(|&&b| b == b'\n').count(),
            1 + f.mx_lines.len()
        );
        let again = texts(&raw);
        let refs: Vec<&[u8]> = again.iter().map(Vec::as_slice).collect();
        let f2 =
            FailureReply::parse(f.failure.code().reply, &refs).expect("a rendered failure parses");
        assert_eq!(f2.failure, f.failure);
        assert_eq!(f2.render(), raw);
    }
}
