//! Tests of the whole configuration: parsing, defaults, errors, effective YAML.

use super::*;
use std::net::{IpAddr, SocketAddr};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

mod access;
mod docs;
mod effective;
mod errors;
mod frontends;
mod shared;

const SECRET: &str = "s3cr3t-s3cr3t-s3cr3t-s3cr3t-s3cr3t-42";
const EXAMPLE: &str = include_str!("../../../etc/greenarrow_proxy.yaml");
const DOCS: &str = include_str!("../../../docs/CONFIG.md");

/// The required keys only.
fn minimal() -> String {
    format!(
        "auth_shared_secret: \"{SECRET}\"\n\
         tls_certificate: /etc/gp/cert.pem\n\
         tls_private_key: /etc/gp/key.pem\n\
         source_addresses: [192.0.2.10]\n"
    )
}

fn parse(yaml: &str) -> Result<Config, ConfigError> {
    Config::from_yaml_str(yaml, Path::new("/etc/gp"))
}

/// Parses `yaml` expecting an error; returns its Display.
fn error(yaml: &str) -> String {
    match parse(yaml) {
        Ok(_) => panic!("expected an error for:\n{yaml}"),
        Err(e) => e.to_string(),
    }
}

/// A unique directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!(
            "greenarrow_proxy-config-{name}-{}-{n}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

const FULL: &str = r#"
listen: ["127.0.0.2:1807", "[::1]:1808"]
allow_from: [10.0.0.0/8, "192.0.2.1", "2001:db8::/48"]
auth_shared_secret: "s3cr3t-s3cr3t-s3cr3t-s3cr3t-s3cr3t-42"
log_verbose: true
tls_certificate: tls/cert.pem
tls_private_key: /srv/key.pem
source_addresses: [192.0.2.0/28, "2001:db8:1::5"]
destination_ports: [25, 2525]
max_sessions: 50
max_queued_sessions: 0
limits:
  max_command_line: 1000
  max_reply_line: 2000
  max_reply_lines: 64
timeouts:
  mta_handshake: 1s
  mta_idle: 2m
  mta_auth: 3s
  mx_connect: 3s
  mx_banner: 4s
  mx_command: 5s
  mx_data_done: 1h 30m
  mx_tls_handshake: 7s
  shutdown_grace: 500ms
mx_tls:
  min_version: 1.3
  ca_file: extra-roots.pem
  mta_sts_fetch_timeout: 5s
  mta_sts_max_size: 32768
  mta_sts_test_ca_file: sts-ca.pem
  mta_sts_test_port: 8443
  tls_rpt_organization: proxy.example
  tls_rpt_contact: tls-reports@proxy.example
pool:
  reuse_time_limit: 10m
  idle_ttl: 20s
  max_idle_per_key: 0
  max_idle_total: 10
  checkout_probe: rset
dns:
  nameservers: ["192.0.2.53", "[2001:db8::53]:5353", "::1"]
  timeout: 2s
  attempts: 3
"#;

#[test]
fn full_valid_file() {
    let c = parse(FULL).unwrap();
    let sa = |s: &str| s.parse::<SocketAddr>().unwrap();
    let net = |s: &str| IpNet::parse(s).unwrap();
    assert_eq!(c.listen, vec![sa("127.0.0.2:1807"), sa("[::1]:1808")]);
    assert_eq!(
        c.allow_from,
        vec![net("10.0.0.0/8"), net("192.0.2.1/32"), net("2001:db8::/48")]
    );
    assert!(c.secret_matches(SECRET.as_bytes()));
    assert!(!c.secret_matches(b"s3cr3t-s3cr3t-s3cr3t-s3cr3t-s3cr3t-43"));
    assert_eq!(c.auth_shared_secret_file(), None);
    assert!(c.log_verbose);
    assert_eq!(
        c.tls_certificate,
        Some(PathBuf::from("/etc/gp/tls/cert.pem"))
    );
    assert_eq!(c.tls_private_key, Some(PathBuf::from("/srv/key.pem")));
    assert_eq!(
        c.source_addresses,
        vec![net("192.0.2.0/28"), net("2001:db8:1::5/128")]
    );
    assert_eq!(c.destination_ports, vec![25, 2525]);
    assert_eq!((c.max_sessions, c.max_queued_sessions), (50, 0));
    assert_eq!(
        c.limits,
        Limits {
            max_command_line: 1000,
            max_reply_line: 2000,
            max_reply_lines: 64
        }
    );
    let s = Duration::from_secs;
    assert_eq!(
        c.timeouts,
        Timeouts {
            mta_handshake: s(1),
            mta_idle: s(120),
            mta_auth: s(3),
            session_lifetime: s(3600),
            mx_connect: s(3),
            mx_banner: s(4),
            mx_command: s(5),
            mx_data_done: s(5400),
            mx_tls_handshake: s(7),
            shutdown_grace: Duration::from_millis(500),
        }
    );
    assert_eq!(c.mx_tls.min_version, TlsVersion::Tls13);
    assert_eq!(
        c.mx_tls.ca_file,
        Some(PathBuf::from("/etc/gp/extra-roots.pem"))
    );
    assert_eq!(
        c.pool,
        PoolConfig {
            reuse_time_limit: s(600),
            idle_ttl: s(20),
            max_idle_per_key: 0,
            max_idle_total: 10,
            checkout_probe: Probe::Rset,
        }
    );
    assert_eq!(
        c.dns.nameservers,
        vec![
            sa("192.0.2.53:53"),
            sa("[2001:db8::53]:5353"),
            sa("[::1]:53")
        ]
    );
    assert_eq!((c.dns.timeout, c.dns.attempts), (s(2), 3));
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
}

#[test]
fn minimal_file_gets_defaults() {
    let c = parse(&minimal()).unwrap();
    assert_eq!(
        c.listen,
        vec![
            "127.0.0.1:807".parse::<SocketAddr>().unwrap(),
            "[::1]:807".parse().unwrap()
        ]
    );
    assert_eq!(
        c.allow_from
            .iter()
            .map(|n| n.to_string())
            .collect::<Vec<_>>(),
        ["127.0.0.0/8", "::1/128"]
    );
    assert!(!c.log_verbose);
    assert_eq!(c.destination_ports, vec![25, 465, 587, 2525]);
    assert_eq!((c.max_sessions, c.max_queued_sessions), (1000, 64));
    assert_eq!(c.limits, Limits::default());
    assert_eq!(c.limits.max_reply_lines, 128);
    assert_eq!(c.timeouts, Timeouts::default());
    assert_eq!(c.timeouts.mx_data_done, Duration::from_secs(600));
    assert_eq!(c.mx_tls, MxTls::default());
    assert_eq!(c.mx_tls.min_version, TlsVersion::Tls12);
    assert_eq!(c.pool, PoolConfig::default());
    assert_eq!(c.pool.reuse_time_limit, Duration::from_secs(300));
    assert_eq!(c.dns, DnsConfig::default());
    assert!(c.dns.nameservers.is_empty());
}

#[test]
fn listen_accepts_a_single_string() {
    let c = parse(&format!("{}listen: 127.0.0.1:2525\n", minimal())).unwrap();
    assert_eq!(
        c.listen,
        vec!["127.0.0.1:2525".parse::<SocketAddr>().unwrap()]
    );
}

#[test]
fn example_file_parses_with_defaults() {
    // The placeholder secret is refused (an unconfigured install must not start).
    let e = Config::from_yaml_str(EXAMPLE, Path::new("/etc/greenarrow_proxy")).unwrap_err();
    assert_eq!(e.key(), Some("auth_shared_secret"), "{e}");
    assert!(e.to_string().contains("placeholder"), "{e}");
    assert!(e.to_string().contains("openssl rand -hex 32"), "{e}");
    assert!(EXAMPLE.contains("CHANGE THIS"));
    let own = "0123456789abcdef0123456789abcdef";
    let configured = EXAMPLE.replace(secret::EXAMPLE_SECRET, own);
    let example = Config::from_yaml_str(&configured, Path::new("/etc/greenarrow_proxy")).unwrap();
    // Apart from the required keys, every value in the example is the default.
    let required_only = format!(
        "auth_shared_secret: \"{own}\"\n\
         tls_certificate: /etc/greenarrow_proxy/tls/cert.pem\n\
         tls_private_key: /etc/greenarrow_proxy/tls/key.pem\n\
         source_addresses: [192.0.2.10, \"2001:db8::10\"]\n"
    );
    let defaults = parse(&required_only).unwrap();
    assert_eq!(example, defaults);
    // Documentation addresses only.
    let doc_v4 = IpNet::parse("192.0.2.0/24").unwrap();
    let doc_v6 = IpNet::parse("2001:db8::/32").unwrap();
    for net in &example.source_addresses {
        assert!(
            doc_v4.contains(net.addr()) || doc_v6.contains(net.addr()),
            "{net}"
        );
    }
    assert!(example.warnings.is_empty(), "{:?}", example.warnings);
}

#[test]
fn the_placeholder_secret_is_refused_wherever_a_secret_goes() {
    let placeholder = secret::EXAMPLE_SECRET;
    let e = parse(&minimal().replace(SECRET, placeholder)).unwrap_err();
    assert_eq!(e.key(), Some("auth_shared_secret"), "{e}");
    assert!(!e.to_string().contains(placeholder), "{e}");
    let dir = TempDir::new("placeholder");
    let file = dir.0.join("secret");
    std::fs::write(&file, format!("{placeholder}\n")).unwrap();
    let yaml = minimal().replace(
        &format!("auth_shared_secret: \"{SECRET}\""),
        &format!("auth_shared_secret_file: {}", file.display()),
    );
    let e = parse(&yaml).unwrap_err();
    assert_eq!(e.key(), Some("auth_shared_secret_file"), "{e}");
}

/// Every key of the effective YAML, as dotted paths.
fn all_keys(config: &Config) -> Vec<String> {
    fn walk(value: &yaml_serde::Value, prefix: &str, out: &mut Vec<String>) {
        if let yaml_serde::Value::Mapping(map) = value {
            for (k, v) in map {
                let k = k.as_str().unwrap();
                let path = if prefix.is_empty() {
                    k.to_string()
                } else {
                    format!("{prefix}.{k}")
                };
                walk(v, &path, out);
                out.push(path);
            }
        }
    }
    let value: yaml_serde::Value = yaml_serde::from_str(&config.to_effective_yaml()).unwrap();
    let mut keys = Vec::new();
    walk(&value, "", &mut keys);
    keys
}

#[test]
fn example_and_docs_list_every_key() {
    let mut keys = all_keys(&parse(FULL).unwrap());
    keys.push("auth_shared_secret_file".into());
    for k in [
        "clients",
        "tls_client_ca",
        "name",
        "secrets",
        "secret_files",
        "tls_client_names",
        "max_connections",
        "max_new_connections",
        "max_connections_per_source",
        "destinations",
        "addresses",
        "sources",
    ] {
        keys.push(k.into());
    }
    assert_eq!(keys.len(), 73, "{keys:?}");
    for key in &keys {
        let leaf = key.rsplit('.').next().unwrap();
        assert!(EXAMPLE.contains(&format!("{leaf}:")), "example lacks {key}");
        assert!(
            DOCS.contains(&format!("`{leaf}`")) || DOCS.contains(&format!("`{leaf}:`")),
            "docs lack {key}"
        );
    }
}

#[test]
fn effective_yaml_round_trips() {
    for yaml in [FULL.to_string(), minimal()] {
        let c = parse(&yaml).unwrap();
        let effective = c.to_effective_yaml();
        assert!(!effective.contains(SECRET), "{effective}");
        assert!(effective.contains("<redacted>"));
        let back = effective.replace("<redacted>", SECRET);
        // Paths are absolute now, so another base dir gives the same result.
        let again = Config::from_yaml_str(&back, Path::new("/elsewhere")).unwrap();
        assert_eq!(again, c, "{effective}");
    }
    // Fed back as is, the redacted secret is refused (too short).
    let effective = parse(FULL).unwrap().to_effective_yaml();
    assert!(error(&effective).starts_with("auth_shared_secret: "));
}

#[test]
fn secret_never_printed() {
    let c = parse(FULL).unwrap();
    assert!(!format!("{c:?}").contains(SECRET));
    assert!(!format!("{c:#?}").contains("s3cr3t"));
    assert!(!c.to_effective_yaml().contains("s3cr3t"));
    assert_eq!(
        format!("{:?}", c.default_client().unwrap().secrets),
        "[<redacted>]"
    );
}

#[test]
fn secret_matches_any_and_only_exact() {
    let mut c = parse(&minimal()).unwrap();
    c.clients[0]
        .secrets
        .push(Secret::new(b"another-secret-another-secret-0000".to_vec()));
    assert!(c.secret_matches(SECRET.as_bytes()));
    assert!(c.secret_matches(b"another-secret-another-secret-0000"));
    assert!(!c.secret_matches(&SECRET.as_bytes()[1..]));
    assert!(!c.secret_matches(b""));
}

// --- files ---

#[test]
fn secret_file_trimmed_and_relative() {
    let dir = TempDir::new("secret");
    let secret_path = dir.0.join("secret.txt");
    std::fs::write(&secret_path, format!("{SECRET}\r\n\n")).unwrap();
    std::fs::set_permissions(&secret_path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let yaml = minimal().replace(
        &format!("auth_shared_secret: \"{SECRET}\""),
        "auth_shared_secret_file: secret.txt",
    );
    let c = Config::from_yaml_str(&yaml, &dir.0).unwrap();
    assert!(c.secret_matches(SECRET.as_bytes()));
    assert!(!c.secret_matches(format!("{SECRET}\r\n").as_bytes()));
    assert_eq!(c.auth_shared_secret_file(), Some(secret_path.as_path()));
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);

    // The effective YAML names the file, and round-trips from anywhere.
    let effective = c.to_effective_yaml();
    assert!(!effective.contains(SECRET) && !effective.contains("<redacted>"));
    assert_eq!(
        Config::from_yaml_str(&effective, Path::new("/")).unwrap(),
        c
    );

    // Readable by others: a warning naming the key.
    std::fs::set_permissions(&secret_path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let c = Config::from_yaml_str(&yaml, &dir.0).unwrap();
    assert_eq!(c.warnings.len(), 1);
    assert!(
        c.warnings[0].starts_with("auth_shared_secret_file: "),
        "{:?}",
        c.warnings
    );
    assert!(c.warnings[0].contains("mode 644"));

    // Too short after trimming.
    std::fs::write(&secret_path, "short\n").unwrap();
    let e = Config::from_yaml_str(&yaml, &dir.0)
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("auth_shared_secret_file: the secret is 5 characters"),
        "{e}"
    );

    // A space inside: AUTH could never carry it.
    std::fs::write(&secret_path, format!("{SECRET} {SECRET}\n")).unwrap();
    let e = Config::from_yaml_str(&yaml, &dir.0)
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("auth_shared_secret_file: the secret contains a space"),
        "{e}"
    );
    assert!(!e.contains(SECRET), "{e}");

    // Missing file.
    std::fs::remove_file(&secret_path).unwrap();
    let e = Config::from_yaml_str(&yaml, &dir.0).unwrap_err();
    assert_eq!(e.key(), Some("auth_shared_secret_file"));
    assert!(e.to_string().contains("secret.txt"), "{e}");
}

#[test]
fn load_resolves_against_the_config_directory() {
    let dir = TempDir::new("load");
    let path = dir.0.join("gp.yaml");
    let yaml = minimal().replace("/etc/gp/cert.pem", "tls/cert.pem");
    std::fs::write(&path, yaml).unwrap();
    let c = Config::load(&path).unwrap();
    assert_eq!(c.tls_certificate, Some(dir.0.join("tls/cert.pem")));
    assert_eq!(c.tls_private_key, Some(PathBuf::from("/etc/gp/key.pem")));

    let missing = dir.0.join("nope.yaml");
    let e = Config::load(&missing).unwrap_err();
    assert!(matches!(e, ConfigError::Io { .. }));
    assert!(e.to_string().contains("nope.yaml"), "{e}");
}

#[test]
fn ipv4_mapped_peers_match_allow_from() {
    let c = parse(&minimal()).unwrap();
    let mapped: IpAddr = "::ffff:127.0.0.1".parse().unwrap();
    assert!(c.allow_from.iter().any(|n| n.contains(mapped)));
    let outside: IpAddr = "::ffff:192.0.2.1".parse().unwrap();
    assert!(!c.allow_from.iter().any(|n| n.contains(outside)));
}
