//! Where the workspace's binaries are, for a test in another package.
//!
//! `CARGO_BIN_EXE_<name>` is only set for a package's own binaries; the daemon's tests also run
//! `gaproxy` (crates/gaproxy). Both land in the target profile directory, the parent of the
//! test executable's `deps/`. `cargo test` at the top level builds every binary first (each
//! package with binaries has integration tests); a single package's tests may not, so a missing
//! binary is reported with the command that builds it.

use std::path::PathBuf;

/// The path of the workspace binary `name` (e.g. `gaproxy`) built beside the running test.
pub fn workspace_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test executable's path");
    // target/<profile>/deps/<test>-<hash> -> target/<profile>/<name>
    let profile = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("a test executable in target/<profile>/deps");
    let bin = profile.join(name);
    assert!(
        bin.is_file(),
        "{} is not built: run `cargo build --bin {name}` (or `cargo test` at the top level)",
        bin.display()
    );
    bin
}
