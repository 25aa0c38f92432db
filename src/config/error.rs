//! [`ConfigError`] and the translation of `yaml_serde` errors into errors that
//! name the full dotted key.

use std::fmt;
use std::path::PathBuf;

/// Why a configuration could not be loaded. `Display` is one line that names
/// the file (for I/O errors) or the full dotted key (e.g. `timeouts.mx_command`).
#[derive(Debug)]
#[non_exhaustive]
pub enum ConfigError {
    /// The configuration file could not be read.
    Io {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        source: std::io::Error,
    },
    /// The YAML is malformed, has an unknown or duplicate key, or a value of
    /// the wrong type.
    Yaml {
        /// Full dotted key (`pool.idle_ttl`, `listen[1]`), when known.
        key: Option<String>,
        /// What is wrong, without the key or the location.
        message: String,
        /// 1-based line and column, when known and not already in `message`.
        location: Option<(usize, usize)>,
    },
    /// A key has a value that is well-formed YAML but not acceptable.
    Invalid {
        /// Full dotted key.
        key: String,
        /// What is wrong. Never contains a secret.
        message: String,
    },
}

impl ConfigError {
    /// The full dotted key the error is about, if any.
    pub fn key(&self) -> Option<&str> {
        match self {
            ConfigError::Io { .. } => None,
            ConfigError::Yaml { key, .. } => key.as_deref(),
            ConfigError::Invalid { key, .. } => Some(key),
        }
    }

    pub(crate) fn invalid(key: impl Into<String>, message: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            key: key.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Io { path, source } => {
                write!(
                    f,
                    "cannot read configuration file {}: {source}",
                    path.display()
                )
            }
            ConfigError::Yaml {
                key,
                message,
                location,
            } => {
                if let Some(key) = key {
                    write!(f, "{key}: ")?;
                }
                f.write_str(message)?;
                if let Some((line, column)) = location {
                    write!(f, " at line {line} column {column}")?;
                }
                Ok(())
            }
            ConfigError::Invalid { key, message } => write!(f, "{key}: {message}"),
        }
    }
}

impl std::error::Error for ConfigError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ConfigError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// Turns a `yaml_serde` error into a [`ConfigError::Yaml`] with the full key.
///
/// `yaml_serde` formats errors as `"{path}: {message} at line L column C"`,
/// but the path is the *enclosing* mapping for unknown and duplicate keys
/// (`timeouts: unknown field `foo``), it is left out at the top level, and the
/// location is left out when it is line 1 column 1. We split the pieces apart
/// and put the offending key into the path.
pub(crate) fn from_yaml(err: &yaml_serde::Error) -> ConfigError {
    let mut text = err.to_string();
    let mut location = err.location().map(|l| (l.line(), l.column()));
    if let Some((line, column)) = location {
        let suffix = format!(" at line {line} column {column}");
        if text.ends_with(&suffix) {
            text.truncate(text.len() - suffix.len());
        } else if text.contains(" at line ") {
            // A libyaml syntax error that embeds its own location(s).
            location = None;
        }
    }
    let (mut key, rest) = split_path(&text);
    let mut message = rest.to_string();
    for (prefix, reworded) in [
        ("unknown field `", "unknown key"),
        ("duplicate field `", "duplicate key"),
    ] {
        let Some(after) = message.strip_prefix(prefix) else {
            continue;
        };
        let Some((field, tail)) = after.split_once('`') else {
            continue;
        };
        key = Some(match key {
            Some(parent) => format!("{parent}.{field}"),
            None => field.to_string(),
        });
        let tail = tail.trim_start_matches(',').trim_start();
        let suggestion = (reworded == "unknown key")
            .then(|| super::suggest::nearest(field, super::suggest::expected_keys(tail)))
            .flatten();
        message = if let Some(s) = suggestion {
            format!("{reworded}; did you mean `{s}`? ({tail})")
        } else if tail.is_empty() {
            reworded.to_string()
        } else {
            format!("{reworded}; {tail}")
        };
        if reworded == "duplicate key" {
            // The location is that of the enclosing mapping, not of the key.
            if let Some((line, column)) = location.take() {
                message = format!(
                    "{message} (in the mapping that starts at line {line} column {column})"
                );
            }
        }
        break;
    }
    // Serde names our internal structs ("expected struct RawTimeouts").
    if let Some(idx) = message.find("expected struct ") {
        message.truncate(idx);
        message.push_str("expected a mapping of keys");
    }
    ConfigError::Yaml {
        key,
        message,
        location,
    }
}

/// Splits a leading `path: ` (as yaml_serde writes it) from the message.
/// A path is made of key characters, dots and `[n]`; messages such as
/// `invalid type: ...` contain a space before the colon and are not paths.
fn split_path(text: &str) -> (Option<String>, &str) {
    if let Some((head, tail)) = text.split_once(": ") {
        let is_path = !head.is_empty()
            && head
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_-.[]?".contains(&b));
        if is_path {
            return (Some(head.to_string()), tail);
        }
    }
    (None, text)
}
