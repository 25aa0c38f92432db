//! gaproxy's command line, run as a real process. (The tests of what each command does live
//! with the daemon's tests at the top level, which run this binary; this package having an
//! integration test is also what makes `cargo test` build it before them.)

use std::process::Command;

#[test]
fn help_names_every_command_and_version_is_the_packages() {
    let out = Command::new(env!("CARGO_BIN_EXE_gaproxy"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    for command in [
        "send", "testmx", "demo", "bench", "status", "drain", "undrain", "cert",
    ] {
        assert!(
            help.lines().any(|l| l.trim_start().starts_with(command)),
            "gaproxy --help does not list {command}:\n{help}"
        );
    }
    let out = Command::new(env!("CARGO_BIN_EXE_gaproxy"))
        .arg("--version")
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8(out.stdout).unwrap().trim(),
        format!("gaproxy {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn an_unknown_command_is_a_usage_error() {
    let out = Command::new(env!("CARGO_BIN_EXE_gaproxy"))
        .arg("sned")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("sned"), "{err}");
}
