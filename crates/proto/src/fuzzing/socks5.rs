//! The SOCKS5 server handshake on arbitrary bytes, fed as a listener does (all unconsumed
//! bytes on every poll, credentials accepted): never panics; `consume` never exceeds the
//! input; `NeedMore` only below the message bound; error messages are one printable line and
//! a refused request's reply carries its code; the same bytes in two pieces (cut where the
//! first input byte says) give exactly the same steps and leftover bytes.
use crate::socks5::{AuthMode, Socks5Server, Step, MAX_MESSAGE_LEN};

/// The steps taken (as text) and the bytes left unconsumed.
fn run(auth: AuthMode, chunks: &[&[u8]]) -> (Vec<String>, Vec<u8>) {
    let mut machine = Socks5Server::new(auth);
    let mut buf = Vec::new();
    let mut steps = Vec::new();
    let mut stopped = false;
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        while !stopped {
            let step = machine.poll(&buf);
            let consume = step.as_ref().map_or(0, Step::consumed);
            assert!(consume <= buf.len() && consume <= MAX_MESSAGE_LEN);
            buf.drain(..consume);
            steps.push(format!("{step:?}"));
            match step {
                Ok(Step::NeedMore) => {
                    assert!(buf.len() < MAX_MESSAGE_LEN);
                    steps.pop();
                    break;
                }
                Ok(Step::Done) => {
                    assert!(machine.is_done());
                    steps.pop();
                    break;
                }
                Ok(Step::Credentials { .. }) => {
                    assert_eq!(machine.credentials_result(true), [1, 0]);
                }
                Ok(_) => {}
                Err(error) => {
                    let text = error.to_string();
                    assert!(!text.chars().any(char::is_control), "{text:?}");
                    if let (Some(code), Some(bytes)) = (error.reply_code(), error.reply_bytes()) {
                        assert!(bytes.len() == 10 || bytes.len() == 22);
                        assert_eq!(bytes[1], code.code());
                    }
                    stopped = true;
                }
            }
        }
    }
    (steps, buf)
}

/// The `socks5` target.
pub fn socks5(data: &[u8]) {
    let Some((&control, input)) = data.split_first() else {
        return;
    };
    let auth = if control & 0x80 != 0 {
        AuthMode::Password
    } else {
        AuthMode::None
    };
    let cut = usize::from(control & 0x7f).min(input.len());
    let whole = run(auth, &[input]);
    let (a, b) = input.split_at(cut);
    assert_eq!(run(auth, &[a, b]), whole);
}
