//! `frontends:` — accepted forms, defaults, and errors naming the key.

use super::{error, minimal, parse};
use crate::config::{FrontendKind, FrontendMode, SocksAuth};
use greenarrow_proxy_proto::protocol::TlsPolicy;

#[test]
fn defaults_and_both_kinds() {
    let c = parse(&format!(
        "{}frontends:\n  - kind: proxy_protocol\n    listen: 127.0.0.1:2600\n  - kind: socks5\n    listen: [\"127.0.0.1:1080\", \"[::1]:1080\"]\n    mode: smtp\n    tls: required\n    reuse_max_messages: 5\n",
        minimal()
    ))
    .unwrap();
    assert_eq!(c.frontends.len(), 2);
    let p = &c.frontends[0];
    assert_eq!(p.kind, FrontendKind::ProxyProtocol);
    assert_eq!(p.mode, FrontendMode::Passthrough);
    assert_eq!(p.client, "default");
    assert!(p.splice, "splice by default");
    let s = &c.frontends[1];
    assert_eq!(s.kind, FrontendKind::Socks5);
    assert_eq!(s.auth, SocksAuth::Password);
    assert_eq!(s.listen.len(), 2);
    match &s.mode {
        FrontendMode::Smtp(m) => {
            assert_eq!(m.tls, TlsPolicy::Required);
            assert!(m.reuse);
            assert_eq!(m.reuse_max_messages, Some(5));
        }
        other => panic!("{other:?}"),
    }
    // The effective configuration shows them and parses back to the same.
    let yaml = c.to_effective_yaml();
    assert!(yaml.contains("kind: socks5"), "{yaml}");
    assert!(yaml.contains("  splice: true\n"), "{yaml}");
    assert_eq!(
        yaml.matches("splice:").count(),
        1,
        "passthrough only: {yaml}"
    );
}

#[test]
fn splice_can_be_turned_off_for_a_passthrough_front_end() {
    let c = parse(&format!(
        "{}frontends:\n  - kind: proxy_protocol\n    listen: 127.0.0.1:2600\n    splice: false\n",
        minimal()
    ))
    .unwrap();
    assert!(!c.frontends[0].splice);
    assert!(c.to_effective_yaml().contains("  splice: false\n"));
}

#[test]
fn errors_name_the_key() {
    let cases = [
        (
            "  - listen: 127.0.0.1:2600\n",
            "frontends[0].kind: required",
        ),
        (
            "  - kind: socks4\n    listen: 127.0.0.1:2600\n",
            "frontends[0].kind: \"socks4\"",
        ),
        ("  - kind: socks5\n", "frontends[0].listen: required"),
        (
            "  - kind: socks5\n    listen: 127.0.0.1:807\n",
            "frontends[0].listen[0]: 127.0.0.1:807 is already used",
        ),
        (
            "  - kind: socks5\n    listen: 127.0.0.1:1080\n    mode: tunnel\n",
            "frontends[0].mode: \"tunnel\"",
        ),
        (
            "  - kind: socks5\n    listen: 127.0.0.1:1080\n    tls: required\n",
            "frontends[0].tls: only valid with mode: smtp",
        ),
        (
            "  - kind: socks5\n    listen: 127.0.0.1:1080\n    mode: smtp\n    splice: false\n",
            "frontends[0].splice: only valid with mode: passthrough",
        ),
        (
            "  - kind: socks5\n    listen: 127.0.0.1:1080\n    mode: smtp\n    tls: verify\n",
            "frontends[0].tls: \"verify\"",
        ),
        (
            "  - kind: proxy_protocol\n    listen: 127.0.0.1:1080\n    auth: none\n",
            "frontends[0].auth: only valid with kind: socks5",
        ),
        (
            "  - kind: socks5\n    listen: 127.0.0.1:1080\n    client: default\n",
            "frontends[0].client: not used with auth: password",
        ),
        (
            "  - kind: proxy_protocol\n    listen: 127.0.0.1:1080\n    client: nobody\n",
            "frontends[0].client: no client named \"nobody\"",
        ),
        (
            "  - kind: proxy_protocol\n    listen: 127.0.0.1:1080\n    colour: red\n",
            "frontends[0].colour: unknown key",
        ),
    ];
    for (entry, want) in cases {
        let e = error(&format!("{}frontends:\n{entry}", minimal()));
        assert!(e.starts_with(want), "{entry:?}: got {e}, want {want}");
    }
}

/// Only named clients (no `auth_shared_secret`): a front-end without `client:` authenticates
/// by any client's secret under `auth: password`, and must name its client otherwise.
#[test]
fn only_named_clients_and_a_frontend_without_client() {
    let base = format!(
        "tls_certificate: /c.pem\ntls_private_key: /k.pem\nsource_addresses: [192.0.2.10]\n\
         clients:\n  - name: mta-a\n    secrets: [\"{}\"]\n  - name: mta-b\n    secrets: [\"{}\"]\n",
        "a".repeat(40),
        "b".repeat(40)
    );
    let c = parse(&format!(
        "{base}frontends:\n  - kind: socks5\n    listen: 127.0.0.1:1080\n"
    ))
    .unwrap();
    assert_eq!(c.frontends[0].auth, SocksAuth::Password);
    assert_eq!(
        c.authenticate("b".repeat(40).as_bytes()).map(|i| i.name),
        Some("mta-b")
    );
    for (fe, how) in [
        ("kind: proxy_protocol", "a PROXY protocol front-end"),
        (
            "kind: socks5\n    auth: none",
            "a SOCKS5 front-end with auth: none",
        ),
    ] {
        let e = error(&format!(
            "{base}frontends:\n  - kind: socks5\n    listen: 127.0.0.1:1081\n  - {fe}\n    listen: 127.0.0.1:2600\n"
        ));
        assert_eq!(
            e,
            format!(
                "frontends[1].client: required: {how} carries no credentials, so it must name \
                 the client whose source addresses it uses, and there is no \"default\" client \
                 (no auth_shared_secret); clients: mta-a, mta-b"
            )
        );
        let c = parse(&format!(
            "{base}frontends:\n  - {fe}\n    listen: 127.0.0.1:2600\n    client: mta-b\n"
        ))
        .unwrap();
        assert_eq!(
            c.client_named(&c.frontends[0].client).unwrap().name,
            "mta-b"
        );
    }
    // With the top-level secret there is a default client: client: may be left out.
    let c = parse(&format!(
        "{}frontends:\n  - kind: proxy_protocol\n    listen: 127.0.0.1:2600\n",
        minimal()
    ))
    .unwrap();
    assert_eq!(c.frontends[0].client, "default");
}

/// `listen: []` with front-ends: no certificate, no key and no secret required.
#[test]
fn front_ends_only_need_no_certificate_and_no_secret() {
    let fe = "frontends:\n  - kind: proxy_protocol\n    listen: 127.0.0.1:2600\n";
    let c = parse(&format!("listen: []\nsource_addresses: [192.0.2.10]\n{fe}")).unwrap();
    assert!(c.listen.is_empty());
    assert_eq!(
        (c.tls_certificate.as_ref(), c.tls_private_key.as_ref()),
        (None, None)
    );
    assert!(c.default_client().unwrap().secrets.is_empty());
    // The front-end acts as the default client, which has no secret.
    assert_eq!(c.frontends[0].client, "default");
    assert_eq!(c.client_named("default").unwrap().sources.len(), 1);
    assert!(c.authenticate(b"").is_none());
    // The effective configuration parses back to the same.
    assert_eq!(parse(&c.to_effective_yaml()).unwrap(), c);
    // A certificate without its key is still an error; a pair is loaded.
    let e = error(&format!(
        "listen: []\nsource_addresses: [192.0.2.10]\ntls_certificate: /c.pem\n{fe}"
    ));
    assert_eq!(e, "tls_private_key: required");
    // SOCKS5 with passwords needs a secret to check them against.
    let e = error(
        "listen: []\nsource_addresses: [192.0.2.10]\nfrontends:\n  - kind: socks5\n    listen: 127.0.0.1:1080\n",
    );
    assert!(
        e.starts_with("frontends[0].auth: password: no client has a secret"),
        "{e}"
    );
    // No native listener and no front-end: nothing to serve.
    let e = error("listen: []\nsource_addresses: [192.0.2.10]\n");
    assert!(e.starts_with("listen: empty list"), "{e}");
    // With a native listener, the certificate and a secret stay required.
    let e =
        error("source_addresses: [192.0.2.10]\ntls_certificate: /c.pem\ntls_private_key: /k.pem\n");
    assert!(e.starts_with("auth_shared_secret: missing"), "{e}");
}
