//! The files a configuration names (certificate, key, CA files), checked for the user the
//! process runs as: an error names the key, the file and that user.

use super::model::Config;
use super::readable::describe;
pub use super::readable::{io_reason, process_user};
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

/// A file named by the configuration that the process cannot read.
#[derive(Debug)]
pub struct FileError {
    /// The key naming it (`tls_private_key`, `mx_tls.ca_file`, ...).
    pub key: String,
    pub path: PathBuf,
    pub error: io::Error,
    /// The user the process runs as (named when the error is "permission denied").
    pub user: String,
}

impl fmt::Display for FileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = describe(&self.path, &self.error, || self.user.clone());
        write!(f, "{}: {what}", self.key)
    }
}

impl std::error::Error for FileError {}

/// The files `config` names, each with its key.
pub fn named_files(config: &Config) -> Vec<(String, &Path)> {
    let mut files = Vec::new();
    if let Some(p) = &config.tls_certificate {
        files.push(("tls_certificate".to_string(), p.as_path()));
    }
    if let Some(p) = &config.tls_private_key {
        files.push(("tls_private_key".to_string(), p.as_path()));
    }
    if let Some(p) = &config.tls_client_ca {
        files.push(("tls_client_ca".into(), p.as_path()));
    }
    if let Some(p) = &config.mx_tls.ca_file {
        files.push(("mx_tls.ca_file".into(), p.as_path()));
    }
    if let Some(p) = &config.mx_tls.sts.mta_sts_test_ca_file {
        files.push(("mx_tls.mta_sts_test_ca_file".into(), p.as_path()));
    }
    files
}

/// Open every file `config` names; the first that cannot be opened (and read) is the error.
pub fn check_readable(config: &Config) -> Result<(), FileError> {
    for (key, path) in named_files(config) {
        let opened = std::fs::File::open(path).and_then(|f| {
            if f.metadata()?.is_dir() {
                Err(io::Error::from(io::ErrorKind::IsADirectory))
            } else {
                Ok(())
            }
        });
        if let Err(error) = opened {
            return Err(FileError {
                key,
                path: path.to_path_buf(),
                error,
                user: process_user(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permission_denied_names_key_file_and_user() {
        let e = FileError {
            key: "tls_private_key".into(),
            path: "/etc/greenarrow_proxy/key.pem".into(),
            error: io::Error::from_raw_os_error(13),
            user: "greenarrow_proxy".into(),
        };
        assert_eq!(
            e.to_string(),
            "tls_private_key: /etc/greenarrow_proxy/key.pem: permission denied \
             (greenarrow_proxy runs as user greenarrow_proxy)"
        );
        let e = FileError {
            error: io::Error::from_raw_os_error(2),
            ..e
        };
        assert_eq!(
            e.to_string(),
            "tls_private_key: /etc/greenarrow_proxy/key.pem: no such file"
        );
    }
}
