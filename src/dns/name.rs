//! Syntax checks for host and domain names before they are sent to DNS.

use super::DnsError;

/// Longest name accepted, in characters, without the trailing dot (RFC 1035 §2.3.4
/// allows 255 octets on the wire, which is 253 characters in text form).
pub(crate) const MAX_NAME_LEN: usize = 253;
/// Longest label accepted (RFC 1035 §2.3.4).
pub(crate) const MAX_LABEL_LEN: usize = 63;
/// Longest prefix of a rejected name quoted back in an error.
const MAX_QUOTED: usize = 80;

/// Checks that `name` is a valid host name (RFC 1123 §2.1 letters, digits and
/// hyphens; labels of 1 to 63 characters that neither start nor end with a hyphen;
/// a top-level label that is not all digits) and returns it without its trailing
/// dot, if it had one. Case is preserved.
///
/// The result is always meant as a fully qualified name: no search domain is ever
/// appended.
pub(crate) fn normalize(name: &str) -> Result<&str, DnsError> {
    let invalid = |detail: &str| DnsError::InvalidName {
        name: quote(name),
        detail: detail.to_string(),
    };
    let bare = name.strip_suffix('.').unwrap_or(name);
    if bare.is_empty() {
        return Err(invalid("empty name"));
    }
    if bare.len() > MAX_NAME_LEN {
        return Err(invalid("name longer than 253 characters"));
    }
    let mut last = "";
    for label in bare.split('.') {
        if label.is_empty() {
            return Err(invalid("empty label"));
        }
        if label.len() > MAX_LABEL_LEN {
            return Err(invalid("label longer than 63 characters"));
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return Err(invalid(
                "only letters, digits, hyphens and dots are allowed",
            ));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(invalid("label starts or ends with a hyphen"));
        }
        last = label;
    }
    if last.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid("top-level label is all digits"));
    }
    Ok(bare)
}

/// `name` made printable and shortened for an error message (it may come from a peer).
fn quote(name: &str) -> String {
    greenarrow_proxy_proto::escape::printable(name.as_bytes(), MAX_QUOTED)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_host_names_with_or_without_trailing_dot() {
        assert_eq!(normalize("mx1.Example.test").unwrap(), "mx1.Example.test");
        assert_eq!(normalize("mx1.example.test.").unwrap(), "mx1.example.test");
        assert_eq!(normalize("localhost").unwrap(), "localhost");
        assert_eq!(normalize("3com.test").unwrap(), "3com.test");
        assert_eq!(normalize("a-b.c-d.test").unwrap(), "a-b.c-d.test");
    }

    #[test]
    fn rejects_bad_names() {
        for bad in [
            "",
            ".",
            "a..b",
            ".a.b",
            "a.b..",
            "-a.test",
            "a-.test",
            "a_b.test",
            "a b.test",
            "ex\u{e4}mple.test",
            "1.2.3.4",
            "example.123",
            "[127.0.0.1]",
            "::1",
        ] {
            let err = normalize(bad).unwrap_err();
            assert!(
                matches!(err, DnsError::InvalidName { .. }),
                "{bad:?} gave {err:?}"
            );
        }
    }

    #[test]
    fn length_limits() {
        let label63 = "a".repeat(63);
        assert!(normalize(&format!("{label63}.test")).is_ok());
        assert!(normalize(&format!("{label63}a.test")).is_err());
        // 4 x 63 + 3 dots = 255 > 253
        let long = [label63.as_str(); 4].join(".");
        assert!(normalize(&long).is_err());
        let ok = format!("{}.{}.{}.{}", label63, label63, label63, "a".repeat(61));
        assert_eq!(ok.len(), 253);
        assert!(normalize(&ok).is_ok());
        assert!(normalize(&format!("{ok}.")).is_ok());
    }

    #[test]
    fn long_bad_names_are_shortened_in_errors() {
        let bad = "\u{e9}".repeat(300);
        match normalize(&bad).unwrap_err() {
            DnsError::InvalidName { name, .. } => {
                assert_eq!(name, format!("{}…", "\u{e9}".repeat(MAX_QUOTED)))
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}
