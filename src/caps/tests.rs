//! How the configuration resolves caps per (source, MX) and names its errors (the ledger's
//! own decisions are tested beside it, in the protocol crate).

use crate::config::{CapDestination, CapsConfig};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

#[test]
fn config_resolves_each_cap_from_the_most_specific_level() {
    let yaml = "auth_shared_secret: \"s3cr3t-s3cr3t-s3cr3t-s3cr3t-s3cr3t-42\"\n\
        tls_certificate: /c.pem\ntls_private_key: /k.pem\nsource_addresses: [192.0.2.10]\n\
        caps:\n  wait: 5s\n  max_connections: 10\n  max_new_connections: 100\n\
        \x20 max_connections_per_source: 50\n  destinations:\n\
        \x20   - name: big\n      addresses: [203.0.113.0/24, \"2001:db8::/32\"]\n      max_connections: 3\n\
        \x20 sources:\n    - addresses: [192.0.2.10]\n      max_connections: 7\n\
        \x20     max_connections_per_source: 20\n      destinations:\n        big: {max_new_connections: 4}\n";
    let cfg = crate::config::Config::from_yaml_str(yaml, std::path::Path::new("/")).unwrap();
    let c: &CapsConfig = &cfg.caps;
    assert_eq!(c.wait, Duration::from_secs(5));
    let src: IpAddr = "192.0.2.10".parse().unwrap();
    let other: IpAddr = "192.0.2.11".parse().unwrap();
    let big: SocketAddr = "203.0.113.5:25".parse().unwrap();
    let big6: SocketAddr = "[2001:db8::5]:25".parse().unwrap();
    let lone: SocketAddr = "198.51.100.9:25".parse().unwrap();
    let p = c.pair(src, big);
    assert_eq!(p.destination, CapDestination::Group("big".into()));
    assert_eq!(p.limits.max_connections, Some(3));
    assert_eq!(p.limits.max_new_connections, Some(4));
    assert_eq!(p.max_connections_per_source, Some(20));
    assert_eq!(
        c.pair(src, big6).destination,
        CapDestination::Group("big".into())
    );
    let p = c.pair(src, lone);
    assert_eq!(p.destination, CapDestination::Mx(lone));
    assert_eq!(p.limits.max_connections, Some(7));
    assert_eq!(p.limits.max_new_connections, Some(100));
    let p = c.pair(other, big);
    assert_eq!(p.limits.max_connections, Some(3));
    assert_eq!(p.limits.max_new_connections, Some(100));
    assert_eq!(p.max_connections_per_source, Some(50));
    // The effective configuration shows it and parses back to the same.
    let eff = cfg.to_effective_yaml();
    assert!(eff.contains("caps:") && eff.contains("name: big"), "{eff}");
    let back = crate::config::Config::from_yaml_str(
        &eff.replace("<redacted>", "s3cr3t-s3cr3t-s3cr3t-s3cr3t-s3cr3t-42"),
        std::path::Path::new("/"),
    )
    .unwrap();
    assert_eq!(back.caps, cfg.caps);
}

#[test]
fn config_errors_name_the_key() {
    let base = "auth_shared_secret: \"s3cr3t-s3cr3t-s3cr3t-s3cr3t-s3cr3t-42\"\n\
        tls_certificate: /c.pem\ntls_private_key: /k.pem\nsource_addresses: [192.0.2.10]\n";
    let err = |extra: &str| {
        crate::config::Config::from_yaml_str(&format!("{base}{extra}"), std::path::Path::new("/"))
            .unwrap_err()
            .to_string()
    };
    let e = err("caps:\n  max_connections: 0\n");
    assert!(e.contains("caps.max_connections"), "{e}");
    let e = err("caps:\n  destinations:\n    - name: x\n      addresses: [10.0.0.1/8]\n");
    assert!(e.contains("caps.destinations[0].addresses[0]"), "{e}");
    let e = err("caps:\n  sources:\n    - addresses: [192.0.2.10]\n      destinations:\n        nope: {max_connections: 1}\n");
    assert!(e.contains("caps.sources[0].destinations.nope"), "{e}");
    let e = err("caps:\n  wait: forever\n");
    assert!(e.contains("caps.wait"), "{e}");
    let e = err("caps:\n  destinations:\n    - name: a\n      addresses: [10.0.0.1]\n    - name: a\n      addresses: [10.0.0.2]\n");
    assert!(e.contains("caps.destinations[1].name"), "{e}");
}
