//! Sans-I/O decoder for a DATA body: finds `CRLF.CRLF` and removes dot-stuffing.

/// Where the decoder is within the current line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// At the start of a line (also right after the DATA command).
    LineStart,
    /// Saw `.` at the start of a line.
    Dot,
    /// Saw `.\r` at the start of a line.
    DotCr,
    /// Inside a line.
    Mid,
    /// Saw `\r` inside a line.
    Cr,
}

fn after(b: u8) -> State {
    if b == b'\r' {
        State::Cr
    } else {
        State::Mid
    }
}

/// A message body taken out of the decoder.
#[derive(Debug, Default)]
pub(crate) struct Body {
    /// Bytes as received, without the final `.\r\n` (empty when not kept).
    pub raw: Vec<u8>,
    /// Un-dot-stuffed content (empty when not kept).
    pub content: Vec<u8>,
    /// Size of `raw`, counted even when the bytes are not kept.
    pub size: usize,
    /// The body went past the size limit (nothing is kept then).
    pub oversized: bool,
}

/// Decodes one DATA body fed in arbitrary pieces.
#[derive(Debug)]
pub(crate) struct DotDecoder {
    state: State,
    keep: bool,
    limit: usize,
    /// Bytes fed so far, the terminator included once it arrives.
    received: usize,
    body: Body,
}

impl DotDecoder {
    /// `keep`: store raw bytes and content; `limit`: the largest body accepted.
    pub(crate) fn new(keep: bool, limit: usize) -> DotDecoder {
        DotDecoder {
            state: State::LineStart,
            keep,
            limit,
            received: 0,
            body: Body::default(),
        }
    }

    /// Bytes fed so far.
    pub(crate) fn received(&self) -> usize {
        self.received
    }

    /// Feed bytes. Returns `Some(n)` when the terminator ends within `input` (the first `n`
    /// bytes were consumed, terminator included), `None` when all of `input` was consumed and
    /// more is needed.
    pub(crate) fn feed(&mut self, input: &[u8]) -> Option<usize> {
        let mut end = None;
        for (i, &b) in input.iter().enumerate() {
            match self.state {
                State::LineStart => {
                    if b == b'.' {
                        self.state = State::Dot;
                    } else {
                        self.push(b);
                        self.state = after(b);
                    }
                }
                State::Dot => {
                    // A leading dot followed by anything but CRLF is stuffing: drop it.
                    if b == b'\r' {
                        self.state = State::DotCr;
                    } else {
                        self.push(b);
                        self.state = after(b);
                    }
                }
                State::DotCr => {
                    if b == b'\n' {
                        end = Some(i + 1);
                        break;
                    }
                    self.push(b'\r');
                    self.push(b);
                    self.state = after(b);
                }
                State::Mid => {
                    self.push(b);
                    self.state = after(b);
                }
                State::Cr => {
                    self.push(b);
                    self.state = if b == b'\n' {
                        State::LineStart
                    } else {
                        after(b)
                    };
                }
            }
        }
        let consumed = end.unwrap_or(input.len());
        let taken = input.get(..consumed).unwrap_or(input);
        self.received += taken.len();
        // Raw size excludes the terminator's ".\r\n" once it is complete.
        let raw_len = if end.is_some() {
            self.received.saturating_sub(3)
        } else {
            self.received
        };
        self.body.size = raw_len;
        if raw_len > self.limit {
            self.body.oversized = true;
        }
        if self.keep && !self.body.oversized {
            self.body.raw.extend_from_slice(taken);
            if end.is_some() {
                self.body.raw.truncate(raw_len);
            }
        } else {
            self.body.raw = Vec::new();
            self.body.content = Vec::new();
        }
        end
    }

    fn push(&mut self, b: u8) {
        if self.keep && !self.body.oversized {
            self.body.content.push(b);
        }
    }

    /// The decoded body (call after `feed` returned `Some`).
    pub(crate) fn finish(self) -> Body {
        self.body
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn decode(chunks: &[&[u8]]) -> (Body, usize) {
        let mut d = DotDecoder::new(true, 1 << 20);
        let mut total = 0;
        for c in chunks {
            match d.feed(c) {
                Some(n) => return (d.finish(), total + n),
                None => total += c.len(),
            }
        }
        panic!("no terminator");
    }

    #[test]
    fn unstuffs_and_stops_at_the_terminator() {
        let (b, n) = decode(&[b"a\r\n..b\r\n.\r\nNEXT"]);
        assert_eq!(n, 11);
        assert_eq!(b.raw, b"a\r\n..b\r\n");
        assert_eq!(b.content, b"a\r\n.b\r\n");
        assert_eq!(b.size, 8);
    }

    #[test]
    fn empty_body_and_split_terminator() {
        let (b, n) = decode(&[b".\r\n"]);
        assert_eq!((b.raw.len(), b.content.len(), n), (0, 0, 3));
        let (b, _) = decode(&[b"x\r", b"\n", b".", b"\r", b"\n"]);
        assert_eq!(b.content, b"x\r\n");
    }

    #[test]
    fn dot_lines_that_are_not_terminators() {
        // ".\rX" at a line start: stuffed dot dropped, the CR kept; ".x." mid-line untouched.
        let (b, _) = decode(&[b".\rX\r\nab.\r\n.\r\n"]);
        assert_eq!(b.content, b"\rX\r\nab.\r\n");
        // A lone "\n." is not a line start in SMTP.
        let (b, _) = decode(&[b"a\n.\r\nz\r\n.\r\n"]);
        assert_eq!(b.content, b"a\n.\r\nz\r\n");
    }

    #[test]
    fn oversized_bodies_are_counted_not_kept() {
        let mut d = DotDecoder::new(true, 4);
        assert_eq!(d.feed(b"0123456789\r\n"), None);
        assert_eq!(d.feed(b".\r\n"), Some(3));
        let b = d.finish();
        assert!(b.oversized);
        assert!(b.raw.is_empty() && b.content.is_empty());
        assert_eq!(b.size, 12);
    }

    fn stuff(content: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut line_start = true;
        for (i, &b) in content.iter().enumerate() {
            if line_start && b == b'.' {
                out.push(b'.');
            }
            out.push(b);
            line_start = b == b'\n' && i > 0 && content[i - 1] == b'\r';
        }
        out
    }

    proptest! {
        #[test]
        fn round_trips_any_content_in_any_split(
            mut content in proptest::collection::vec(
                prop_oneof![Just(b'.'), Just(b'\r'), Just(b'\n'), any::<u8>()], 0..200),
            cuts in proptest::collection::vec(0usize..250, 0..8),
        ) {
            if !content.is_empty() && !content.ends_with(b"\r\n") {
                content.extend_from_slice(b"\r\n");
            }
            let stuffed = stuff(&content);
            let mut wire = stuffed.clone();
            wire.extend_from_slice(b".\r\n");
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(wire.len())).collect();
            cuts.sort_unstable();
            let mut d = DotDecoder::new(true, 1 << 20);
            let mut prev = 0;
            let mut done = None;
            for cut in cuts.into_iter().chain(std::iter::once(wire.len())) {
                if let Some(n) = d.feed(&wire[prev..cut]) {
                    done = Some(prev + n);
                    break;
                }
                prev = cut;
            }
            prop_assert_eq!(done, Some(wire.len()));
            let b = d.finish();
            prop_assert_eq!(&b.content, &content);
            prop_assert_eq!(&b.raw, &stuffed);
            prop_assert_eq!(b.size, stuffed.len());
        }
    }
}
