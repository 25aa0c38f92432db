//! The shared secret MTAs authenticate with, and the rules a configured secret must follow
//! (length, characters, not the example's placeholder; secret files read bounded).

use super::error::ConfigError;
use super::readable::unreadable;
use super::values::required_path;
use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};
use subtle::{Choice, ConstantTimeEq};

type Result<T> = std::result::Result<T, ConfigError>;

/// Shortest secret accepted, in characters.
const MIN_SECRET_CHARS: usize = 32;
/// Largest secret file read.
const MAX_SECRET_FILE_BYTES: u64 = 64 * 1024;
/// The placeholder secret of `etc/greenarrow_proxy.yaml`.
pub(crate) const EXAMPLE_SECRET: &str = "CHANGE-ME-this-example-secret-is-public-CHANGE-ME";

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

/// Exactly one of `auth_shared_secret` / `auth_shared_secret_file`.
pub(crate) fn top_level(
    inline: Option<String>,
    file: Option<String>,
    base_dir: &Path,
    warnings: &mut Vec<String>,
) -> Result<(Secret, Option<PathBuf>)> {
    match (inline, file) {
        (Some(_), Some(_)) => Err(ConfigError::invalid(
            "auth_shared_secret",
            "both auth_shared_secret and auth_shared_secret_file are set; set exactly one",
        )),
        (None, None) => Err(ConfigError::invalid(
            "auth_shared_secret",
            "missing: set auth_shared_secret or auth_shared_secret_file (exactly one)",
        )),
        (Some(text), None) => {
            check_secret("auth_shared_secret", &text)?;
            Ok((Secret::new(text.into_bytes()), None))
        }
        (None, Some(path)) => {
            const KEY: &str = "auth_shared_secret_file";
            let path = required_path(KEY, Some(path), base_dir)?;
            let text = read_secret_file(&path)
                .map_err(|e| ConfigError::invalid(KEY, unreadable(&path, &e)))?;
            check_secret(KEY, &text)?;
            if let Ok(meta) = std::fs::metadata(&path) {
                use std::os::unix::fs::PermissionsExt;
                let mode = meta.permissions().mode();
                if mode & 0o004 != 0 {
                    warnings.push(format!(
                        "{KEY}: {} is readable by all users (mode {:03o}); restrict it: \
                         chown root:greenarrow_proxy, chmod 640",
                        path.display(),
                        mode & 0o777
                    ));
                }
            }
            Ok((Secret::new(text.into_bytes()), Some(path)))
        }
    }
}

/// Reads the secret file (bounded) and trims trailing CR/LF.
pub(crate) fn read_secret_file(path: &Path) -> std::io::Result<String> {
    let file = std::fs::File::open(path)?;
    let mut bytes = Vec::new();
    file.take(MAX_SECRET_FILE_BYTES + 1)
        .read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_SECRET_FILE_BYTES {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "file is larger than 64 KiB",
        ));
    }
    let mut text = String::from_utf8(bytes).map_err(|_| {
        std::io::Error::new(std::io::ErrorKind::InvalidData, "not valid UTF-8 text")
    })?;
    let trimmed = text.trim_end_matches(['\r', '\n']).len();
    text.truncate(trimmed);
    Ok(text)
}

/// The 32-character rule, and the characters `AUTH` can carry
/// ([`greenarrow_proxy_proto::protocol::is_valid_secret`]). The message never contains the secret.
pub(crate) fn check_secret(key: &str, secret: &str) -> Result<()> {
    let chars = secret.chars().count();
    if !greenarrow_proxy_proto::protocol::is_valid_secret(secret.as_bytes()) {
        return Err(ConfigError::invalid(
            key,
            format!(
                "the secret contains a space, a control or non-ASCII character, or is longer \
                 than {} characters: AUTH carries only printable ASCII characters other than \
                 space, so no MTA could ever send it (generate one with e.g. \
                 `openssl rand -hex 32`)",
                greenarrow_proxy_proto::protocol::MAX_SECRET_LEN
            ),
        ));
    }
    if chars < MIN_SECRET_CHARS {
        return Err(ConfigError::invalid(
            key,
            format!(
                "the secret is {chars} characters long; at least {MIN_SECRET_CHARS} are required \
                 so that it cannot be guessed (generate one with e.g. `openssl rand -hex 32`)"
            ),
        ));
    }
    if secret == EXAMPLE_SECRET {
        // Refused, not warned about: an unconfigured install must not serve anyone who has
        // read the public example (the daemon exits with EX_CONFIG, 78).
        return Err(ConfigError::invalid(
            key,
            "still the public placeholder of the example configuration: set a secret of \
             your own (generate one with e.g. `openssl rand -hex 32`)",
        ));
    }
    Ok(())
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
