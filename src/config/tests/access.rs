//! Named clients, secret rotation, client certificates and the destination policy.

use super::*;

const A1: &str = "cluster-a-secret-0123456789abcdef-one";
const A2: &str = "cluster-a-secret-0123456789abcdef-two";
const B1: &str = "cluster-b-secret-0123456789abcdef-one";

fn with_clients() -> String {
    format!(
        "{}clients:\n  - name: cluster-a\n    secrets: [\"{A1}\", \"{A2}\"]\n    source_addresses: [192.0.2.20]\n  - name: cluster-b\n    secrets: [\"{B1}\"]\n",
        minimal()
    )
}

#[test]
fn each_secret_identifies_its_client_and_rotation_keeps_both_valid() {
    let c = parse(&with_clients()).unwrap();
    let names: Vec<&str> = c.clients.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, vec!["default", "cluster-a", "cluster-b"]);
    let a = c.authenticate(A1.as_bytes()).unwrap();
    assert_eq!(a.name, "cluster-a");
    assert_eq!(a.sources, &[IpNet::parse("192.0.2.20").unwrap()][..]);
    assert_eq!(c.authenticate(A2.as_bytes()).unwrap().name, "cluster-a");
    let b = c.authenticate(B1.as_bytes()).unwrap();
    assert_eq!(b.name, "cluster-b");
    // Without its own list, the top-level source_addresses apply.
    assert_eq!(b.sources, &c.source_addresses[..]);
    assert_eq!(c.authenticate(SECRET.as_bytes()).unwrap().name, "default");
    assert!(c
        .authenticate(b"cluster-a-secret-0123456789abcdef-six")
        .is_none());
    assert!(c.authenticate(b"").is_none());
}

#[test]
fn clients_alone_need_no_top_level_secret() {
    let yaml = format!(
        "tls_certificate: /c.pem\ntls_private_key: /k.pem\nclients:\n  - name: only\n    secrets: [\"{A1}\"]\n    source_addresses: [192.0.2.20]\n"
    );
    let c = parse(&yaml).unwrap();
    assert!(c.default_client().is_none());
    assert_eq!(c.authenticate(A1.as_bytes()).unwrap().name, "only");
    // The effective YAML round-trips (secrets redacted).
    let eff = c.to_effective_yaml();
    assert!(!eff.contains(A1), "{eff}");
    assert!(!eff.contains("\nauth_shared_secret:"), "{eff}");
    let back = Config::from_yaml_str(&eff.replace("<redacted>", A1), Path::new("/")).unwrap();
    assert_eq!(back, c);
}

#[test]
fn client_errors_name_the_key() {
    let cases = [
        ("clients:\n  - secrets: [\"x\"]\n", "clients[0].name: missing"),
        (
            &format!("clients:\n  - name: default\n    secrets: [\"{A1}\"]\n"),
            "clients[0].name: \"default\"",
        ),
        ("clients:\n  - name: a\n    secrets: [\"short\"]\n", "clients[0].secrets[0]: the secret is 5 characters"),
        ("clients:\n  - name: a\n", "clients[0].secrets: client \"a\" has no secrets"),
        (
            &format!("clients:\n  - name: a\n    secrets: [\"{A1}\"]\n  - name: a\n    secrets: [\"{B1}\"]\n"),
            "clients[1].name: \"a\" is used twice",
        ),
        (
            &format!("clients:\n  - name: a\n    secrets: [\"{A1}\"]\n  - name: b\n    secrets: [\"{A1}\"]\n"),
            "clients: clients \"a\" and \"b\" share a secret",
        ),
        (
            "clients:\n  - name: a\n    tls_client_names: [mta.test]\n",
            "clients[0].tls_client_names: client certificates need tls_client_ca",
        ),
        ("clients:\n  - name: a\n    colour: blue\n", "clients[0].colour: unknown key"),
        (
            &format!("clients:\n  - name: a\n    secrets: [\"{A1}\"]\n    source_addresses: []\n"),
            "clients[0].source_addresses: empty list",
        ),
    ];
    for (extra, want) in cases {
        let e = error(&format!("{}{extra}", minimal()));
        assert!(e.starts_with(want), "{extra}\n=> {e}");
        assert!(!e.contains(A1));
    }
}

#[test]
fn certificate_names_identify_clients() {
    let yaml = format!(
        "{}tls_client_ca: /ca.pem\nclients:\n  - name: certs\n    tls_client_names: [MTA1.example.com]\n",
        minimal()
    );
    let c = parse(&yaml).unwrap();
    assert_eq!(c.tls_client_ca, Some(PathBuf::from("/ca.pem")));
    let names = vec![
        "other.example.com".to_string(),
        "mta1.example.com".to_string(),
    ];
    assert_eq!(c.identify_certificate(&names).unwrap().name, "certs");
    assert!(c
        .identify_certificate(&["mta2.example.com".to_string()])
        .is_none());
}

#[test]
fn destination_policy_denies_internal_ranges_by_default() {
    let c = parse(&minimal()).unwrap();
    let ip = |s: &str| s.parse::<IpAddr>().unwrap();
    for denied in [
        "127.0.0.1",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "169.254.1.1",
        "::1",
        "fe80::1",
        "fd00::1",
        "224.0.0.1",
        "::ffff:127.0.0.1",
        "0.0.0.0",
    ] {
        assert!(!c.destination_permitted(ip(denied)), "{denied}");
    }
    for ok in ["8.8.8.8", "2a00:1450::1", "1.1.1.1"] {
        assert!(c.destination_permitted(ip(ok)), "{ok}");
    }
    let c = parse(&format!(
        "{}destination_allow: [127.0.0.0/8]\ndestination_deny: [8.8.8.0/24]\n",
        minimal()
    ))
    .unwrap();
    assert!(c.destination_permitted(ip("127.0.0.1")));
    assert!(!c.destination_permitted(ip("8.8.8.8")));
    assert!(
        c.destination_permitted(ip("10.0.0.1")),
        "an explicit deny list replaces the default"
    );
}

/// Issue 11 item 9d: IPv6 forms that carry an IPv4 address are checked in their IPv4 form too.
#[test]
fn ipv6_forms_embedding_an_ipv4_address_are_checked_against_the_ipv4_deny_list() {
    let ip = |s: &str| s.parse::<IpAddr>().unwrap();
    let c = parse(&minimal()).unwrap();
    for denied in [
        "64:ff9b::a9fe:a9fe",     // NAT64 of 169.254.169.254
        "64:ff9b::7f00:1",        // NAT64 of 127.0.0.1
        "64:ff9b::c0a8:101",      // NAT64 of 192.168.1.1
        "2002:a9fe:a9fe::",       // 6to4 of 169.254.169.254
        "2002:0a00:0001:1::1",    // 6to4 of 10.0.0.1
        "::a9fe:a9fe",            // IPv4-compatible
        "::ffff:169.254.169.254", // IPv4-mapped
    ] {
        assert!(!c.destination_permitted(ip(denied)), "{denied}");
    }
    for ok in [
        "64:ff9b::808:808", // NAT64 of 8.8.8.8
        "2002:808:808::1",  // 6to4 of 8.8.8.8
        "::ffff:1.1.1.1",
        "2a00:1450::a9fe:a9fe", // not a form that embeds IPv4
    ] {
        assert!(c.destination_permitted(ip(ok)), "{ok}");
    }
    // An allowed form wins: allowing 127.0.0.0/8 allows its NAT64 form, and allowing the
    // NAT64 prefix allows what it carries.
    let c = parse(&format!(
        "{}destination_allow: [127.0.0.0/8]
",
        minimal()
    ))
    .unwrap();
    assert!(c.destination_permitted(ip("64:ff9b::7f00:1")));
    assert!(!c.destination_permitted(ip("64:ff9b::a9fe:a9fe")));
    let c = parse(&format!(
        "{}destination_allow: [\"64:ff9b::/96\"]\n",
        minimal()
    ))
    .unwrap();
    assert!(c.destination_permitted(ip("64:ff9b::a9fe:a9fe")));
}

#[test]
fn embedded_ipv4_addresses_are_found_in_their_forms_only() {
    use crate::config::access::embedded_ipv4;
    let v6 = |s: &str| s.parse::<std::net::Ipv6Addr>().unwrap();
    let v4 = |s: &str| Some(s.parse::<std::net::Ipv4Addr>().unwrap());
    assert_eq!(
        embedded_ipv4(v6("64:ff9b::a9fe:a9fe")),
        v4("169.254.169.254")
    );
    assert_eq!(
        embedded_ipv4(v6("2002:a9fe:a9fe:1:2:3:4:5")),
        v4("169.254.169.254")
    );
    assert_eq!(embedded_ipv4(v6("::a9fe:a9fe")), v4("169.254.169.254"));
    assert_eq!(embedded_ipv4(v6("::ffff:a9fe:a9fe")), v4("169.254.169.254"));
    assert_eq!(embedded_ipv4(v6("::1")), v4("0.0.0.1"));
    assert_eq!(embedded_ipv4(v6("64:ff9b:1::a9fe:a9fe")), None);
    assert_eq!(embedded_ipv4(v6("2001:db8::a9fe:a9fe")), None);
    assert_eq!(embedded_ipv4(v6("fe80::a9fe:a9fe")), None);
}

#[test]
fn session_limits_have_defaults_and_bounds() {
    let c = parse(&minimal()).unwrap();
    assert_eq!(c.max_sessions_per_ip, 500);
    assert_eq!(c.timeouts.session_lifetime, Duration::from_secs(3600));
    assert!(error(&format!("{}max_sessions_per_ip: 0\n", minimal()))
        .starts_with("max_sessions_per_ip:"));
    assert!(
        error(&format!("{}timeouts:\n  session_lifetime: 0s\n", minimal()))
            .starts_with("timeouts.session_lifetime:")
    );
}
