//! Why a file the configuration names cannot be read, as the operator reads it: the path, a
//! short reason, and the process's user when permission was denied.

use std::io;
use std::path::Path;

/// `path: reason`, and the user when permission was denied.
pub(crate) fn describe(path: &Path, error: &io::Error, user: impl FnOnce() -> String) -> String {
    let mut s = format!("{}: {}", path.display(), io_reason(error));
    if error.kind() == io::ErrorKind::PermissionDenied {
        s.push_str(&format!(" (greenarrow_proxy runs as user {})", user()));
    }
    s
}

/// An I/O error as a short lower-case reason, without `(os error N)`.
pub fn io_reason(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::PermissionDenied => "permission denied".into(),
        io::ErrorKind::NotFound => "no such file".into(),
        io::ErrorKind::IsADirectory => "is a directory, not a file".into(),
        _ => {
            let s = e.to_string();
            s.split(" (os error ")
                .next()
                .unwrap_or_default()
                .to_lowercase()
        }
    }
}

/// `path: reason`, naming the process's user when permission was denied (for the secret
/// files, read while the configuration is validated).
pub fn unreadable(path: &Path, error: &io::Error) -> String {
    describe(path, error, process_user)
}

/// The name of the user the process runs as (its uid when it has no name).
pub fn process_user() -> String {
    let uid = nix::unistd::geteuid();
    match nix::unistd::User::from_uid(uid) {
        Ok(Some(u)) => u.name,
        _ => format!("uid {uid}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_process_user_has_a_name() {
        assert!(!process_user().is_empty());
    }
}
