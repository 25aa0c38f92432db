//! `caps.shared`: what is accepted, what is refused and how it reads.

use super::*;

fn with_shared(shared: &str) -> String {
    format!(
        "{}caps:\n  destinations:\n    - name: big\n      addresses: [203.0.113.0/24]\n  shared:\n{shared}",
        minimal()
    )
}

#[test]
fn a_minimal_shared_section_takes_the_defaults() {
    let c = parse(&with_shared(
        "    redis: redis://10.0.0.5:6379/0\n    destinations:\n      big: {max_connections: 40}\n",
    ))
    .unwrap();
    let s = c.caps.shared.unwrap();
    assert_eq!(s.key_prefix, "greenarrow_proxy");
    assert_eq!(s.lease, Duration::from_secs(30));
    assert_eq!(s.timeout, Duration::from_millis(500));
    assert!(!s.host.is_empty());
    assert_eq!(s.destinations["big"].max_connections, Some(40));
    assert_eq!(s.password, None);
}

#[test]
fn bad_shared_sections_are_refused_with_their_key() {
    let cases = [
        (
            "    redis: redis://10.0.0.5\n    destinatons: {}\n",
            "caps.shared.destinatons: unknown key; did you mean `destinations`?",
        ),
        (
            "    destinations:\n      big: {max_connections: 4}\n",
            "caps.shared.redis: required",
        ),
        (
            "    redis: redis://:pw@10.0.0.5\n    destinations:\n      big: {max_connections: 4}\n",
            "caps.shared.redis: no password in the URL",
        ),
        (
            "    redis: unix:///run/redis.sock\n    destinations:\n      big: {max_connections: 4}\n",
            "caps.shared.redis: scheme \"unix\" is not supported",
        ),
        (
            "    redis: redis://10.0.0.5\n    tls_ca_file: ca.pem\n    destinations:\n      big: {max_connections: 4}\n",
            "caps.shared.tls_ca_file: only with TLS: write the URL as rediss://",
        ),
        (
            "    redis: redis://10.0.0.5\n    tls_key_file: k.pem\n    destinations:\n      big: {max_connections: 4}\n",
            "caps.shared.tls_key_file: only with TLS",
        ),
        (
            "    redis: rediss://10.0.0.5\n    tls_ca_file: /nonexistent/redis-ca.pem\n    destinations:\n      big: {max_connections: 4}\n",
            "caps.shared.tls_ca_file: /nonexistent/redis-ca.pem: no such file",
        ),
        (
            "    redis: rediss://10.0.0.5\n    tls_cert_file: /nonexistent/c.pem\n    destinations:\n      big: {max_connections: 4}\n",
            "caps.shared.tls_key_file: required with tls_cert_file",
        ),
        (
            "    redis: rediss://10.0.0.5\n    tls_ca_fil: ca.pem\n    destinations:\n      big: {max_connections: 4}\n",
            "caps.shared.tls_ca_fil: unknown key; did you mean `tls_ca_file`?",
        ),
        (
            "    redis: redis://10.0.0.5\n    destinations:\n      small: {max_connections: 4}\n",
            "caps.shared.destinations.small: no destination group \"small\"",
        ),
        (
            "    redis: redis://10.0.0.5\n    destinations:\n      big: {}\n",
            "caps.shared.destinations.big: set max_connections",
        ),
        (
            "    redis: redis://10.0.0.5\n    destinations: {}\n",
            "caps.shared.destinations: required",
        ),
        (
            "    redis: redis://10.0.0.5\n    host: \"a b\"\n    destinations:\n      big: {max_connections: 4}\n",
            "caps.shared.host: \"a b\"",
        ),
        (
            "    redis: redis://10.0.0.5\n    lease: 2s\n    timeout: 1s\n    destinations:\n      big: {max_connections: 4}\n",
            "caps.shared.timeout: must be at most a third",
        ),
        (
            "    redis: redis://10.0.0.5\n    password_file: /nonexistent/redis.pass\n    destinations:\n      big: {max_connections: 4}\n",
            "caps.shared.password_file:",
        ),
    ];
    for (yaml, want) in cases {
        let e = error(&with_shared(yaml));
        assert!(e.starts_with(want), "{yaml}\n  got: {e}\n  want: {want}");
    }
}

#[test]
fn the_password_comes_from_its_file_and_is_never_dumped() {
    let dir = TempDir::new("shared-pass");
    std::fs::write(dir.0.join("redis.pass"), "redis-pass-1234\n").unwrap();
    let yaml = with_shared(
        "    redis: redis://10.0.0.5/1\n    password_file: redis.pass\n    destinations:\n      big: {max_new_connections: 600}\n",
    );
    let c = Config::from_yaml_str(&yaml, &dir.0).unwrap();
    let s = c.caps.shared.as_ref().unwrap();
    assert_eq!(s.password_file, Some(dir.0.join("redis.pass")));
    assert_eq!(
        s.password.as_ref().map(|p| p.expose().to_vec()),
        Some(b"redis-pass-1234".to_vec())
    );
    let effective = c.to_effective_yaml();
    assert!(!effective.contains("redis-pass-1234"), "{effective}");
    assert!(effective.contains("password_file:"), "{effective}");
}

#[test]
fn rediss_takes_the_system_roots_or_its_ca_file_and_a_client_certificate() {
    let c = parse(&with_shared(
        "    redis: rediss://redis.example:6380/0\n    destinations:\n      big: {max_connections: 4}\n",
    ))
    .unwrap();
    let s = c.caps.shared.unwrap();
    assert_eq!(s.redis, "rediss://redis.example:6380/0");
    assert_eq!((s.tls_ca_file, s.tls_ca, s.tls_client), (None, None, None));

    let dir = TempDir::new("shared-tls");
    let ca = greenarrow_proxy_testkit::certgen::Ca::new("redis CA").unwrap();
    let leaf = ca.issue(&["proxy-a"]).unwrap();
    std::fs::write(dir.0.join("redis-ca.pem"), ca.cert_pem()).unwrap();
    std::fs::write(dir.0.join("c.pem"), &leaf.cert_pem).unwrap();
    std::fs::write(dir.0.join("k.pem"), &leaf.key_pem).unwrap();
    std::fs::write(dir.0.join("junk.pem"), "not a certificate\n").unwrap();
    let yaml = |extra: &str| {
        with_shared(&format!(
            "    redis: rediss://10.0.0.5:6380/0\n{extra}    destinations:\n      big: {{max_connections: 4}}\n"
        ))
    };
    let c = Config::from_yaml_str(
        &yaml("    tls_ca_file: redis-ca.pem\n    tls_cert_file: c.pem\n    tls_key_file: k.pem\n"),
        &dir.0,
    )
    .unwrap();
    let s = c.caps.shared.as_ref().unwrap();
    assert_eq!(s.tls_ca_file, Some(dir.0.join("redis-ca.pem")));
    assert_eq!(s.tls_ca.as_deref(), Some(ca.cert_pem().as_bytes()));
    assert_eq!(s.tls_key_file, Some(dir.0.join("k.pem")));
    let (cert, key) = s.tls_client.as_ref().unwrap();
    assert_eq!(cert, leaf.cert_pem.as_bytes());
    assert_eq!(key.expose(), leaf.key_pem.as_bytes());
    let effective = c.to_effective_yaml();
    assert!(effective.contains("tls_ca_file: "), "{effective}");
    assert!(effective.contains("tls_cert_file: "), "{effective}");
    assert!(!effective.contains("PRIVATE KEY"), "{effective}");

    let refused = |extra: &str| {
        Config::from_yaml_str(&yaml(extra), &dir.0)
            .unwrap_err()
            .to_string()
    };
    let e = refused("    tls_ca_file: junk.pem\n");
    assert!(
        e.starts_with("caps.shared.tls_ca_file: ") && e.contains("junk.pem: no PEM certificate"),
        "{e}"
    );
    let e = refused("    tls_cert_file: c.pem\n    tls_key_file: junk.pem\n");
    assert!(
        e.starts_with("caps.shared.tls_key_file: ") && e.contains("no private key"),
        "{e}"
    );
}
