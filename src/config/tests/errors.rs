//! Every bad input gives an error that names the full dotted key.

use super::{error, minimal, parse, ConfigError, SECRET};

#[test]
fn unknown_top_level_key() {
    let e = error(&format!("{}listne: 127.0.0.1:807\n", minimal()));
    assert!(
        e.starts_with("listne: unknown key; did you mean `listen`? (expected one of `listen`"),
        "{e}"
    );
    assert!(e.ends_with("at line 5 column 1"), "{e}");
    // Also as the very first key (yaml_serde omits line 1 column 1 itself).
    let e = error(&format!("bogus: 1\n{}", minimal()));
    assert!(e.starts_with("bogus: unknown key;"), "{e}");
    assert!(e.ends_with("at line 1 column 1"), "{e}");
}

#[test]
fn unknown_nested_key() {
    let e = error(&format!(
        "{}timeouts:\n  mx_connect: 5s\n  mx_comand: 5m\n",
        minimal()
    ));
    assert!(
        e.starts_with(
            "timeouts.mx_comand: unknown key; did you mean `mx_command`? (expected one of `mta_handshake`"
        ),
        "{e}"
    );
    let e = error(&format!("{}dns: {{nameserver: [192.0.2.1]}}\n", minimal()));
    assert!(
        e.starts_with("dns.nameserver: unknown key; did you mean `nameservers`?"),
        "{e}"
    );
    // Nothing near: no suggestion, the list.
    let e = error(&format!("{}dns: {{bogus: 1}}\n", minimal()));
    assert!(
        e.starts_with("dns.bogus: unknown key; expected one of `"),
        "{e}"
    );
}

#[test]
fn wrong_types_name_the_key() {
    let e = error(&format!("{}timeouts:\n  mx_command: [5m]\n", minimal()));
    assert!(
        e.starts_with("timeouts.mx_command: invalid type: sequence, expected a string"),
        "{e}"
    );
    let e = error(&format!("{}listen: [127.0.0.1:807, [x]]\n", minimal()));
    assert!(e.starts_with("listen[1]: invalid type: sequence"), "{e}");
    let e = error(&format!("{}max_sessions: many\n", minimal()));
    assert!(
        e.starts_with("max_sessions: invalid type: string \"many\""),
        "{e}"
    );
    let e = error(&format!("{}pool: 5\n", minimal()));
    assert_eq!(
        e,
        "pool: invalid type: integer `5`, expected a mapping of keys at line 5 column 7"
    );
    let e = error(&format!(
        "{}log_verbose: false\nlog_verbose: true\n",
        minimal()
    ));
    assert_eq!(
        e,
        "log_verbose: duplicate key (in the mapping that starts at line 1 column 1)"
    );
}

#[test]
fn yaml_syntax_error() {
    let e = error("listen: \"127.0.0.1:807\n");
    assert!(e.contains("line"), "{e}");
    assert!(matches!(
        parse("listen: \"x\n"),
        Err(ConfigError::Yaml { key: None, .. })
    ));
}

#[test]
fn short_secret_is_refused_without_echo() {
    let yaml = minimal().replace(SECRET, "short-secret-123");
    let e = error(&yaml);
    assert!(
        e.starts_with("auth_shared_secret: the secret is 16 characters long; at least 32"),
        "{e}"
    );
    assert!(!e.contains("short-secret-123"), "{e}");
}

/// Issue 11 item 9e: a secret `AUTH` could never carry (a space, a control or non-ASCII
/// character, longer than a request line allows) is refused, without echoing it.
#[test]
fn secrets_auth_cannot_carry_are_refused_without_echo() {
    let long = "x".repeat(greenarrow_proxy_proto::protocol::MAX_SECRET_LEN + 1);
    for bad in [
        "a secret with spaces in it, 32 characters or more",
        "non-ascii-secret-\u{e9}\u{e9}\u{e9}-0123456789abcdef",
        "tab-in-the-secret\t0123456789abcdef0123",
        long.as_str(),
    ] {
        let yaml = minimal().replace(SECRET, &bad.replace('\t', "\\t"));
        let e = error(&yaml);
        assert!(
            e.starts_with(
                "auth_shared_secret: the secret contains a space, a control or non-ASCII character"
            ),
            "{e}"
        );
        assert!(!e.contains(bad), "{e}");
        let yaml = format!(
            "{}clients:\n  - name: a\n    secrets: [\"{}\"]\n",
            minimal(),
            bad.replace('\t', "\\t")
        );
        let e = error(&yaml);
        assert!(
            e.starts_with("clients[0].secrets[0]: the secret contains a space"),
            "{e}"
        );
    }
    // The longest secret AUTH can carry is accepted.
    let longest = "y".repeat(greenarrow_proxy_proto::protocol::MAX_SECRET_LEN);
    let c = parse(&minimal().replace(SECRET, &longest)).unwrap();
    let line = format!("AUTH 1 {longest}\r\n");
    assert_eq!(
        line.len(),
        greenarrow_proxy_proto::protocol::MAX_REQUEST_LINE
    );
    match greenarrow_proxy_proto::protocol::parse_request(line.as_bytes()).unwrap() {
        greenarrow_proxy_proto::protocol::Request::Auth { secret, .. } => {
            assert!(c.secret_matches(&secret));
        }
        r => panic!("{r:?}"),
    }
}

#[test]
fn both_or_neither_secret() {
    let both = format!("{}auth_shared_secret_file: /etc/gp/secret\n", minimal());
    let e = error(&both);
    assert!(
        e.starts_with("auth_shared_secret: both auth_shared_secret and auth_shared_secret_file"),
        "{e}"
    );
    assert!(!e.contains(SECRET));
    let neither: String = minimal()
        .lines()
        .skip(1)
        .map(|l| format!("{l}\n"))
        .collect();
    let e = error(&neither);
    assert!(e.starts_with("auth_shared_secret: missing"), "{e}");
}

#[test]
fn bad_cidr() {
    let e = error(&format!(
        "{}allow_from: [127.0.0.0/8, 10.1.0.0/8]\n",
        minimal()
    ));
    assert_eq!(
        e,
        "allow_from[1]: invalid network \"10.1.0.0/8\": host bits are set after the prefix \
         length; did you mean 10.0.0.0/8?"
    );
    let e = error(&minimal().replace("[192.0.2.10]", "[192.0.2.0/33]"));
    assert!(
        e.starts_with("source_addresses[0]: invalid network \"192.0.2.0/33\""),
        "{e}"
    );
    let e = error(&minimal().replace("[192.0.2.10]", "[mail.example]"));
    assert!(e.starts_with("source_addresses[0]: invalid network"), "{e}");
}

#[test]
fn bad_and_zero_durations() {
    let e = error(&format!(
        "{}timeouts:\n  mx_command: 5 parsecs\n",
        minimal()
    ));
    assert!(
        e.starts_with("timeouts.mx_command: invalid duration \"5 parsecs\": unknown time unit"),
        "{e}"
    );
    let e = error(&format!("{}pool:\n  idle_ttl: 300\n", minimal()));
    assert!(
        e.starts_with("pool.idle_ttl: invalid duration \"300\""),
        "{e}"
    );
    let e = error(&format!("{}pool:\n  idle_ttl: 0s\n", minimal()));
    assert_eq!(
        e,
        "pool.idle_ttl: duration \"0s\" is zero; it must be positive"
    );
    let e = error(&format!("{}dns:\n  timeout: 8d\n", minimal()));
    assert!(
        e.starts_with("dns.timeout: duration \"8d\" is longer than"),
        "{e}"
    );
}

#[test]
fn bad_ports_and_numbers() {
    let e = error(&format!("{}destination_ports: [25, 0]\n", minimal()));
    assert_eq!(
        e,
        "destination_ports[1]: port 0 is not valid; use 1 to 65535"
    );
    let e = error(&format!("{}destination_ports: [65536]\n", minimal()));
    assert!(e.starts_with("destination_ports[0]: port 65536"), "{e}");
    let e = error(&format!(
        "{}dns:\n  nameservers: [\"192.0.2.1:0\"]\n",
        minimal()
    ));
    assert!(e.starts_with("dns.nameservers[0]: port 0"), "{e}");
    let e = error(&format!("{}max_sessions: 0\n", minimal()));
    assert_eq!(e, "max_sessions: 0 is out of range; allowed: 1 to 100000");
    let e = error(&format!("{}limits:\n  max_reply_lines: 0\n", minimal()));
    assert!(
        e.starts_with("limits.max_reply_lines: 0 is out of range"),
        "{e}"
    );
    let e = error(&format!("{}dns:\n  attempts: 11\n", minimal()));
    assert!(e.starts_with("dns.attempts: 11 is out of range"), "{e}");
}

#[test]
fn empty_listen_and_source_addresses() {
    let e = error(&format!("{}listen: []\n", minimal()));
    assert!(e.starts_with("listen: empty list"), "{e}");
    let e = error(&format!("{}listen: [\"127.0.0.1\"]\n", minimal()));
    assert!(
        e.starts_with("listen[0]: \"127.0.0.1\" is not an IP:port"),
        "{e}"
    );
    let e = error(&minimal().replace("[192.0.2.10]", "[]"));
    assert_eq!(
        e,
        "source_addresses: required and must not be empty: no MTA could connect otherwise"
    );
    let missing: String = minimal()
        .lines()
        .filter(|l| !l.starts_with("source_addresses"))
        .map(|l| format!("{l}\n"))
        .collect();
    assert!(error(&missing).starts_with("source_addresses: required"));
    let missing = minimal().replace("tls_private_key: /etc/gp/key.pem\n", "");
    assert_eq!(error(&missing), "tls_private_key: required");
}

#[test]
fn bad_min_version_and_probe() {
    let e = error(&format!("{}mx_tls:\n  min_version: 1.1\n", minimal()));
    assert_eq!(
        e,
        "mx_tls.min_version: \"1.1\" is not supported; use \"1.2\" or \"1.3\""
    );
    let e = error(&format!("{}pool:\n  checkout_probe: ping\n", minimal()));
    assert_eq!(
        e,
        "pool.checkout_probe: \"ping\" is not one of \"none\", \"noop\", \"rset\""
    );
}
