//! `frontends:` — accepted forms, defaults, and errors naming the key.

use super::{error, minimal, parse};
use crate::config::{FrontendKind, FrontendMode, SocksAuth};
use crate::protocol::TlsPolicy;

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
