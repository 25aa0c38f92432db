//! Drains kept across restarts: `drains.json` in `state_directory` (systemd's
//! `StateDirectory=`, `/var/lib/greenarrow_proxy`), rewritten atomically (`statefile`) after every drain and undrain, read at start.
//!
//! A file that cannot be read or understood stops the start (exit 78): the operator drained
//! a blocked source address so that it stays out of service, and a proxy that started without
//! its drains would bring it back silently. Deleting the file is the explicit way to start
//! with none. A missing file is no drains (the first start).
//!
//! [`encode`] and [`decode`] are sans-I/O; [`load`] and [`save`] do the file work.

use super::{DrainList, MxTarget};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::fs;
use std::io;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

/// The file's name in the state directory.
pub const FILE_NAME: &str = "drains.json";

/// The format's version (`"version"` in the file).
const VERSION: u32 = 1;

/// The file's content.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct DrainFile {
    version: u32,
    sources: Vec<IpAddr>,
    mx: Vec<String>,
}

/// The drains a file holds.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stored {
    pub sources: Vec<IpAddr>,
    pub mx: Vec<MxTarget>,
}

/// Why the drains file could not be read or written.
#[derive(Debug)]
#[non_exhaustive]
pub enum StoreError {
    /// The file (or the directory) could not be read or written.
    Io { path: PathBuf, error: io::Error },
    /// The file's content is not a drains file this version understands.
    Corrupt { path: PathBuf, why: String },
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::Io { path, error } => write!(f, "{}: {error}", path.display()),
            StoreError::Corrupt { path, why } => write!(
                f,
                "{}: not a drains file ({why}); the drains it held are unknown: fix it, or \
                 delete it to start with no drains",
                path.display()
            ),
        }
    }
}

impl std::error::Error for StoreError {}

/// The file's text for `list` (one line of JSON, newline-terminated).
pub fn encode(list: &DrainList) -> String {
    let file = DrainFile {
        version: VERSION,
        sources: list.sources.clone(),
        mx: list.mx.clone(),
    };
    // Plain data: serialising cannot fail.
    let mut text = serde_json::to_string(&file).unwrap_or_default();
    text.push('\n');
    text
}

/// The drains in a file's text; Err with why it is not a drains file.
pub fn decode(text: &str) -> Result<Stored, String> {
    let file: DrainFile = serde_json::from_str(text).map_err(|e| e.to_string())?;
    if file.version != VERSION {
        return Err(format!(
            "version {} (this proxy writes version {VERSION})",
            file.version
        ));
    }
    let mx = file
        .mx
        .iter()
        .map(|m| m.parse::<MxTarget>())
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Stored {
        sources: file.sources,
        mx,
    })
}

/// The drains kept in `dir`: none when the file does not exist yet.
pub fn load(dir: &Path) -> Result<Stored, StoreError> {
    let path = dir.join(FILE_NAME);
    // The directory itself must be there (a wrong `state_directory` is not a first start).
    fs::metadata(dir).map_err(|error| StoreError::Io {
        path: dir.to_path_buf(),
        error,
    })?;
    let text = match fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Stored::default()),
        Err(error) => return Err(StoreError::Io { path, error }),
    };
    decode(&text).map_err(|why| StoreError::Corrupt { path, why })
}

/// Replace the file in `dir` with `list`, atomically: a reader (or a crash) sees the old
/// file or the new one, never a part.
pub fn save(dir: &Path, list: &DrainList) -> Result<(), StoreError> {
    crate::statefile::write_atomic(dir, FILE_NAME, encode(list).as_bytes())
        .map_err(|(path, error)| StoreError::Io { path, error })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_list_round_trips_through_the_file_text() {
        let list = DrainList {
            sources: vec!["127.0.0.2".parse().unwrap(), "2001:db8::1".parse().unwrap()],
            mx: vec!["192.0.2.1".into(), "[2001:db8::25]:25".into()],
        };
        let text = encode(&list);
        assert_eq!(
            text,
            "{\"version\":1,\"sources\":[\"127.0.0.2\",\"2001:db8::1\"],\
             \"mx\":[\"192.0.2.1\",\"[2001:db8::25]:25\"]}\n"
        );
        let back = decode(&text).unwrap();
        assert_eq!(back.sources, list.sources);
        let mx: Vec<String> = back.mx.iter().map(|m| m.to_string()).collect();
        assert_eq!(mx, list.mx);
    }

    #[test]
    fn anything_else_is_refused_with_the_reason() {
        for (text, why) in [
            ("", "EOF while parsing"),
            (
                "{\"version\":1,\"sources\":[\"127.0.0.",
                "EOF while parsing",
            ),
            ("{\"version\":2,\"sources\":[],\"mx\":[]}", "version 2"),
            (
                "{\"version\":1,\"sources\":[\"mx.example\"],\"mx\":[]}",
                "invalid IP address",
            ),
            (
                "{\"version\":1,\"sources\":[],\"mx\":[\"mx.example\"]}",
                "not an MX address",
            ),
            (
                "{\"version\":1,\"sources\":[],\"mx\":[],\"extra\":1}",
                "unknown field",
            ),
        ] {
            let e = decode(text).unwrap_err();
            assert!(e.contains(why), "{text:?}: {e}");
        }
    }
}
