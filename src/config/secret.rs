//! The shared secret MTAs authenticate with.

use std::fmt;
use subtle::{Choice, ConstantTimeEq};

/// A shared secret. Its bytes are never printed: `Debug` and `Display` show
/// `<redacted>`. Compare with [`Secret::ct_matches`] (constant time for a
/// candidate of the same length); the bytes are zeroed (best effort) on drop.
#[derive(Clone)]
pub struct Secret(Box<[u8]>);

impl Secret {
    /// Wraps secret bytes.
    pub(crate) fn new(bytes: Vec<u8>) -> Secret {
        Secret(bytes.into_boxed_slice())
    }

    /// Whether `candidate` equals the secret, as a `subtle::Choice`. Takes the
    /// same time for every candidate of the same length; only the length of
    /// the secret can leak.
    pub fn ct_matches(&self, candidate: &[u8]) -> Choice {
        self.0.as_ref().ct_eq(candidate)
    }

    /// The secret bytes, for the authentication code in this crate.
    pub(crate) fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl PartialEq for Secret {
    fn eq(&self, other: &Secret) -> bool {
        self.ct_matches(&other.0).into()
    }
}

impl Eq for Secret {}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl Drop for Secret {
    fn drop(&mut self) {
        self.0.fill(0);
        std::hint::black_box(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_and_redacts() {
        let s = Secret::new(b"0123456789abcdef0123456789abcdef".to_vec());
        assert!(bool::from(
            s.ct_matches(b"0123456789abcdef0123456789abcdef")
        ));
        assert!(!bool::from(
            s.ct_matches(b"0123456789abcdef0123456789abcdeX")
        ));
        assert!(!bool::from(s.ct_matches(b"0123456789abcdef")));
        assert!(!bool::from(s.ct_matches(b"")));
        assert_eq!(format!("{s:?}"), "<redacted>");
        assert_eq!(format!("{s}"), "<redacted>");
        assert_eq!(s.expose(), b"0123456789abcdef0123456789abcdef");
    }
}
