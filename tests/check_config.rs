//! `greenarrow_proxy --check-config` diagnostics (issue 14, item 4): files the daemon cannot
//! read name the key, the file and the user; a key that is not the certificate's; a CA
//! certificate as the server certificate and addresses not on this host are warnings.
//! `caps.shared.tls_ca_file` (Redis over TLS) is read by the check too.

use greenarrow_proxy_testkit::certgen;
use greenarrow_proxy_testkit::daemon;
use greenarrow_proxy_testkit::fixtures;
use greenarrow_proxy_testkit::fixtures::{proxy_files, TempDir};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};

/// A working configuration (certificate, key, listen on loopback) plus `extra`.
fn files(extra: &str) -> (TempDir, PathBuf) {
    let (dir, yaml, _) = proxy_files(&[25], extra);
    let config = dir.0.join("greenarrow_proxy.yaml");
    std::fs::write(&config, yaml).unwrap();
    (dir, config)
}

fn check(config: &Path) -> Output {
    daemon::run(&[
        "--check-config",
        "--config-filename",
        config.to_str().unwrap(),
    ])
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `--check-config` of `config` run as a user who cannot read `file` (root reads anything:
/// as root, the check runs as nobody, 65534; otherwise `file` gets mode 000). Returns the
/// output and that user's name. As root the binary run is a copy in `dir` (made reachable):
/// the build's own may be in a checkout nobody can enter (`/root`, mode 700).
fn check_unreadable(dir: &TempDir, config: &Path, file: &Path) -> (Output, String) {
    for entry in std::fs::read_dir(&dir.0).unwrap() {
        let p = entry.unwrap().path();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    std::fs::set_permissions(&dir.0, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let root = nix::unistd::geteuid().is_root();
    let mut cmd = if root {
        let copy = dir.0.join("greenarrow_proxy");
        std::fs::copy(env!("CARGO_BIN_EXE_greenarrow_proxy"), &copy).unwrap();
        std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755)).unwrap();
        let mut cmd = std::process::Command::new(copy);
        cmd.env_remove("JOURNAL_STREAM").env_remove("NOTIFY_SOCKET");
        // Nobody may not be able to enter the test's working directory either.
        cmd.current_dir("/");
        cmd
    } else {
        daemon::binary()
    };
    cmd.args(["--check-config", "--config-filename"])
        .arg(config)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let user = if root {
        assert_reachable_by_nobody(&dir.0);
        cmd.uid(65534).gid(65534);
        nix::unistd::User::from_uid(65534.into())
            .ok()
            .flatten()
            .map_or("uid 65534".to_string(), |u| u.name)
    } else {
        std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o000)).unwrap();
        nix::unistd::User::from_uid(nix::unistd::geteuid())
            .unwrap()
            .unwrap()
            .name
    };
    // The copy above was written through a file descriptor that a process forked meanwhile by
    // another test's thread may still hold until its exec: running the copy then fails with
    // ETXTBSY ("Text file busy") for that short while. No event tells when it ends; try again.
    let mut tries = 0;
    let output = loop {
        match cmd.output() {
            Err(e) if e.kind() == std::io::ErrorKind::ExecutableFileBusy && tries < 100 => {
                tries += 1;
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            r => break r.unwrap(),
        }
    };
    (output, user)
}

/// Every directory above `dir` lets others through (else the test's temporary directory,
/// TMPDIR, is itself out of nobody's reach: say so rather than fail obscurely).
fn assert_reachable_by_nobody(dir: &Path) {
    use std::os::unix::fs::MetadataExt;
    for a in dir.ancestors().skip(1) {
        let mode = std::fs::metadata(a).unwrap().mode();
        assert!(
            mode & 0o001 != 0,
            "{} (mode {:o}) cannot be entered by nobody: set TMPDIR to a directory others can \
             reach, e.g. /tmp",
            a.display(),
            mode & 0o777
        );
    }
}

#[test]
fn a_key_the_daemon_cannot_read_names_key_file_and_user() {
    let (dir, config) = files("");
    let key = dir.0.join("key.pem");
    let (out, user) = check_unreadable(&dir, &config, &key);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(78), "{err}");
    assert_eq!(
        err.trim_end(),
        format!(
            "greenarrow_proxy: tls_private_key: {}: permission denied (greenarrow_proxy runs as \
             user {user})",
            key.display()
        )
    );
}

#[test]
fn a_secret_file_the_daemon_cannot_read_names_key_file_and_user() {
    let (dir, config) = files("");
    let secret = dir.0.join("secret");
    std::fs::write(&secret, fixtures::SECRET).unwrap();
    let yaml = std::fs::read_to_string(&config).unwrap();
    let yaml = yaml.replace(
        &format!("auth_shared_secret: \"{}\"\n", fixtures::SECRET),
        "auth_shared_secret_file: secret\n",
    );
    std::fs::write(&config, yaml).unwrap();
    let (out, user) = check_unreadable(&dir, &config, &secret);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(78), "{err}");
    assert!(
        err.trim_end().ends_with(&format!(
            "auth_shared_secret_file: {}: permission denied (greenarrow_proxy runs as user {user})",
            secret.display()
        )),
        "{err}"
    );
}

#[test]
fn a_redis_ca_file_the_daemon_cannot_read_names_key_file_and_user() {
    let (dir, config) = files(
        "caps:\n  destinations:\n    - name: big\n      addresses: [192.0.2.0/24]\n  shared:\n\
         \x20   redis: rediss://127.0.0.1:6380/0\n    tls_ca_file: redis-ca.pem\n\
         \x20   destinations:\n      big: {max_connections: 4}\n",
    );
    let ca = dir.0.join("redis-ca.pem");
    let pem = certgen::Ca::new("redis CA").unwrap().cert_pem();
    std::fs::write(&ca, pem).unwrap();
    let out = check(&config);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let effective = String::from_utf8_lossy(&out.stdout);
    assert!(
        effective.contains(&format!("tls_ca_file: {}", ca.display())),
        "{effective}"
    );
    let (out, user) = check_unreadable(&dir, &config, &ca);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(78), "{err}");
    assert!(
        err.trim_end().ends_with(&format!(
            "caps.shared.tls_ca_file: {}: permission denied (greenarrow_proxy runs as user {user})",
            ca.display()
        )),
        "{err}"
    );
}

#[test]
fn a_missing_ca_file_names_its_key() {
    let (dir, config) = files("mx_tls:\n  ca_file: missing-ca.pem\n");
    let out = check(&config);
    assert_eq!(out.status.code(), Some(78));
    assert_eq!(
        stderr(&out).trim_end(),
        format!(
            "greenarrow_proxy: mx_tls.ca_file: {}: no such file",
            dir.0.join("missing-ca.pem").display()
        )
    );
}

#[test]
fn a_key_of_another_certificate_is_named_as_such() {
    let (dir, config) = files("");
    let other = certgen::self_signed(&["localhost"]).unwrap();
    std::fs::write(dir.0.join("key.pem"), &other.key_pem).unwrap();
    let out = check(&config);
    assert_eq!(out.status.code(), Some(78));
    assert_eq!(
        stderr(&out).trim_end(),
        format!(
            "greenarrow_proxy: tls_private_key: {} is not the key of the certificate in \
             tls_certificate ({})",
            dir.0.join("key.pem").display(),
            dir.0.join("cert.pem").display()
        )
    );
}

#[test]
fn a_ca_certificate_and_absent_addresses_are_warnings() {
    let (dir, config) = files(
        "source_addresses: [127.0.0.2, 198.51.100.7]\n\
         frontends:\n  - kind: socks5\n    listen: [\"198.51.100.8:1080\"]\n\
         dns:\n  nameservers: [\"127.0.0.1:53\"]\n",
    );
    // (A loopback name server: the host's own resolv.conf would add the DANE warning where
    // it lists a remote one; `dane_with_a_remote_resolver_is_a_warning` checks that one.)
    // A CA certificate (and its key) as the server certificate.
    let ca = greenarrow_proxy_testkit::certgen::Ca::new("localhost").unwrap();
    std::fs::write(dir.0.join("cert.pem"), ca.cert_pem()).unwrap();
    std::fs::write(dir.0.join("key.pem"), ca.key_pem()).unwrap();
    let out = check(&config);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    let warnings: Vec<&str> = err.lines().filter(|l| l.starts_with("warning: ")).collect();
    assert_eq!(
        warnings,
        [
            "warning: source_addresses[1]: 198.51.100.7 is not an address of this host: requests \
             from it will fail with source_not_local until it is added"
                .to_string(),
            "warning: frontends[0].listen[0]: 198.51.100.8 is not an address of this host: the \
             proxy cannot listen on 198.51.100.8:1080"
                .to_string(),
            format!(
                "warning: tls_certificate: {}: the first certificate is a CA certificate \
                 (CA:TRUE), not a server certificate: MTAs will refuse it; put the server's own \
                 certificate first",
                dir.0.join("cert.pem").display()
            ),
        ],
        "{err}"
    );
}

/// DANE trusts only the AD bit of a resolver on loopback: with a remote name server the check
/// says DANE cannot apply (and not when DANE is off, or the resolver is local).
#[test]
fn dane_with_a_remote_resolver_is_a_warning() {
    for (extra, warned) in [
        ("dns:\n  nameservers: [\"192.0.2.53:53\"]\n", true),
        (
            "dns:\n  nameservers: [\"192.0.2.53:53\"]\nmx_tls:\n  dane: off\n",
            false,
        ),
        (
            "dns:\n  nameservers: [\"127.0.0.1:53\", \"[::1]:53\"]\n",
            false,
        ),
    ] {
        let (_dir, config) = files(extra);
        let out = check(&config);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(0), "{err}");
        assert_eq!(
            err.contains(
                "warning: mx_tls.dane: enforce, but the DNS name servers are not all on loopback"
            ),
            warned,
            "{extra}: {err}"
        );
    }
}
