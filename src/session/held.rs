//! MX replies queued for the MTA but not yet written, so that they can be withdrawn.
//!
//! The relay streams replies to the MTA as the machine accepts them, but writes them out only
//! at the end of a batch (or above [`super::relay::MTA_FLUSH_AT`]). When the MX turns out to
//! be out of step at the end of a batch — more bytes after the last reply it owed — the
//! replies of that batch that are still unwritten cannot be trusted either: one of them may
//! be the stray, the rest shifted onto the wrong commands (a `550` meant for one RCPT given to
//! the next). They are withdrawn: each becomes the proxy's `421`, so the MTA retries instead of
//! taking a shifted reply for the truth. Replies already written cannot be taken back; only a
//! batch whose replies pass 64 KiB gets written before its end. A pipelined flight the MTA
//! sends in pieces (`MAIL`, `RCPT`, `BDAT n LAST` and a large chunk) is one batch: replies
//! accepted while the rest of it is read stay held until the last one owed.

/// Where the unwritten MX replies sit in the MTA's output buffer.
#[derive(Debug, Default)]
pub(super) struct Held {
    /// `(start, end)` offsets in the output buffer, in order.
    ranges: Vec<(usize, usize)>,
}

impl Held {
    /// A reply now occupies `start..end` of the output buffer.
    pub(super) fn push(&mut self, start: usize, end: usize) {
        self.ranges.push((start, end));
    }

    /// The output was written: nothing is held any more.
    pub(super) fn clear(&mut self) {
        self.ranges.clear();
    }

    /// How many replies are held.
    pub(super) fn len(&self) -> usize {
        self.ranges.len()
    }

    /// `out` (the whole unwritten output) with every held reply replaced by `with`; the
    /// proxy's own replies between them stay where they are.
    pub(super) fn withdraw(&mut self, out: &[u8], with: &[u8]) -> Vec<u8> {
        let mut rebuilt = Vec::with_capacity(out.len());
        let mut at = 0;
        for &(start, end) in &self.ranges {
            rebuilt.extend_from_slice(out.get(at..start).unwrap_or_default());
            rebuilt.extend_from_slice(with);
            at = end;
        }
        rebuilt.extend_from_slice(out.get(at..).unwrap_or_default());
        self.ranges.clear();
        rebuilt
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn withdrawn_replies_become_421_and_local_replies_stay() {
        let mut out = Vec::new();
        let mut held = Held::default();
        for (mx, text) in [
            (true, &b"250 2.1.0 sender ok\r\n"[..]),
            (false, &b"500 5.5.2 line too long\r\n"[..]),
            (true, &b"250-a\r\n250 stray\r\n"[..]),
            (true, &b"550 5.1.1 no such user\r\n"[..]),
        ] {
            let start = out.len();
            out.extend_from_slice(text);
            if mx {
                held.push(start, out.len());
            }
        }
        assert_eq!(held.len(), 3);
        let with = b"421 4.4.2 out of step\r\n";
        assert_eq!(
            held.withdraw(&out, with),
            b"421 4.4.2 out of step\r\n500 5.5.2 line too long\r\n421 4.4.2 out of step\r\n421 4.4.2 out of step\r\n"
                .to_vec()
        );
        assert_eq!(held.len(), 0);
        // Nothing held: the output is unchanged.
        assert_eq!(held.withdraw(b"250 ok\r\n", with), b"250 ok\r\n".to_vec());
    }
}
