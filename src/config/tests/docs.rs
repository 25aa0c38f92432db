//! What CONFIG.md and greenarrow_proxy.yaml(5) say about every list and every path holds for
//! the parser: the lists that take a single string, the paths resolved against the
//! configuration file's directory, and the keys required (issue 20, "Contradictions").

use super::*;

const MAN5: &str = include_str!("../../../man/greenarrow_proxy.yaml.5");

/// The backquoted keys of the CONFIG.md rule that starts with `rule`, up to `until`.
fn keys_of_rule(rule: &str, until: &str) -> Vec<String> {
    let start = DOCS
        .find(rule)
        .unwrap_or_else(|| panic!("CONFIG.md: no rule {rule:?}"));
    let text = &DOCS[start + rule.len()..];
    let text = &text[..text.find(until).unwrap_or_else(|| panic!("no {until:?}"))];
    let mut keys: Vec<String> = text
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect();
    keys.sort();
    keys
}

/// A configuration of the required keys plus `extra` (top-level YAML), with the secret in a
/// client when `extra` has `clients:` already.
fn config_with(extra: &str) -> String {
    format!(
        "tls_certificate: /etc/gp/cert.pem\ntls_private_key: /etc/gp/key.pem\n\
         auth_shared_secret: \"{SECRET}\"\n{extra}\n{}",
        if extra.contains("source_addresses:") && !extra.contains("clients:") {
            ""
        } else {
            "source_addresses: [192.0.2.10]"
        }
    )
}

const OTHER_SECRET: &str = "another-secret-another-secret-another-42";

/// Every list of strings, written as one string; whether the parser took it.
fn single_string_lists(dir: &Path) -> Vec<(&'static str, bool)> {
    let file = dir.join("one.secret");
    std::fs::write(&file, OTHER_SECRET).unwrap();
    let cases: Vec<(&str, String)> = vec![
        ("listen", "listen: \"127.0.0.1:1807\"".into()),
        ("allow_from", "allow_from: 10.0.0.0/8".into()),
        ("source_addresses", "source_addresses: 192.0.2.10".into()),
        ("destination_deny", "destination_deny: 10.0.0.0/8".into()),
        ("destination_allow", "destination_allow: 10.0.0.0/8".into()),
        ("dns.nameservers", "dns: {nameservers: \"192.0.2.53\"}".into()),
        ("destination_ports", "destination_ports: 25".into()),
        (
            "clients[].secrets",
            format!("clients: [{{name: a, secrets: \"{OTHER_SECRET}\"}}]"),
        ),
        (
            "clients[].secret_files",
            format!("clients: [{{name: a, secret_files: \"{}\"}}]", file.display()),
        ),
        (
            "clients[].source_addresses",
            format!(
                "clients: [{{name: a, secrets: [\"{OTHER_SECRET}\"], source_addresses: 192.0.2.11}}]"
            ),
        ),
        (
            "clients[].tls_client_names",
            "tls_client_ca: ca.pem\nclients: [{name: a, tls_client_names: mta.example}]".into(),
        ),
        (
            "frontends[].listen",
            "frontends: [{kind: proxy_protocol, listen: \"127.0.0.1:2600\"}]".into(),
        ),
        (
            "caps.destinations[].addresses",
            "caps: {destinations: [{name: g, addresses: 192.0.2.0/24}]}".into(),
        ),
        (
            "caps.sources[].addresses",
            "caps: {sources: [{addresses: 192.0.2.10}]}".into(),
        ),
    ];
    cases
        .into_iter()
        .map(|(key, yaml)| (key, parse(&config_with(&yaml)).is_ok()))
        .collect()
}

#[test]
fn the_lists_said_to_take_a_single_string_are_exactly_those_that_do() {
    let dir = TempDir::new("single-string");
    let results = single_string_lists(&dir.0);
    let mut accepted: Vec<String> = results
        .iter()
        .filter(|(_, ok)| *ok)
        .map(|(k, _)| k.to_string())
        .collect();
    accepted.sort();
    let documented = keys_of_rule(
        "**Lists that also accept a single string**",
        "The other lists",
    );
    assert_eq!(documented, accepted, "CONFIG.md's single-string lists");
    let refused = keys_of_rule("The other lists", "must be written as lists");
    for (key, ok) in &results {
        if !ok {
            assert!(
                refused.contains(&key.to_string()),
                "CONFIG.md: {key} is not among the other lists"
            );
        }
    }
    // The man page lists the same keys.
    let man = &MAN5[MAN5
        .find("These lists also accept a single string")
        .unwrap()..];
    let man = &man[..man.find("must be written as lists").unwrap()];
    for key in &accepted {
        assert!(
            man.contains(&format!(".BR {key} ")) || man.contains(&format!(".B {key}\n")),
            "greenarrow_proxy.yaml(5) lacks {key}"
        );
    }
}

#[test]
fn the_paths_said_to_be_relative_to_the_file_are_exactly_those_that_are() {
    let dir = TempDir::new("relative-paths");
    std::fs::write(dir.0.join("one.secret"), OTHER_SECRET).unwrap();
    std::fs::write(dir.0.join("top.secret"), SECRET).unwrap();
    std::fs::write(dir.0.join("r.pass"), "redis-pass").unwrap();
    let ca = greenarrow_proxy_testkit::certgen::Ca::new("redis CA").unwrap();
    let leaf = ca.issue(&["proxy"]).unwrap();
    std::fs::write(dir.0.join("r-ca.pem"), ca.cert_pem()).unwrap();
    std::fs::write(dir.0.join("r-c.pem"), &leaf.cert_pem).unwrap();
    std::fs::write(dir.0.join("r-k.pem"), &leaf.key_pem).unwrap();
    let yaml = "tls_certificate: c.pem\ntls_private_key: k.pem\n\
                caps: {destinations: [{name: g, addresses: 192.0.2.0/24}], shared: \
                {redis: \"rediss://10.0.0.5\", password_file: r.pass, tls_ca_file: r-ca.pem, \
                tls_cert_file: r-c.pem, tls_key_file: r-k.pem, \
                destinations: {g: {max_connections: 4}}}}\n\
                auth_shared_secret_file: top.secret\ntls_client_ca: ca.pem\n\
                source_addresses: [192.0.2.10]\n\
                clients: [{name: a, secret_files: [one.secret]}]\n\
                mx_tls: {ca_file: roots.pem}\ncontrol_socket: c.sock\n";
    let c = Config::from_yaml_str(yaml, &dir.0).unwrap();
    let d = |name: &str| Some(dir.0.join(name));
    let resolved = [
        ("tls_certificate", c.tls_certificate.clone() == d("c.pem")),
        ("tls_private_key", c.tls_private_key.clone() == d("k.pem")),
        (
            "auth_shared_secret_file",
            c.auth_shared_secret_file().map(Path::to_path_buf) == d("top.secret"),
        ),
        ("tls_client_ca", c.tls_client_ca == d("ca.pem")),
        (
            "clients[].secret_files",
            c.clients[1].secret_files.first().cloned() == d("one.secret"),
        ),
        ("mx_tls.ca_file", c.mx_tls.ca_file == d("roots.pem")),
        (
            "caps.shared.password_file",
            c.caps.shared.as_ref().and_then(|s| s.password_file.clone()) == d("r.pass"),
        ),
        (
            "caps.shared.tls_ca_file",
            c.caps.shared.as_ref().and_then(|s| s.tls_ca_file.clone()) == d("r-ca.pem"),
        ),
        (
            "caps.shared.tls_cert_file",
            c.caps.shared.as_ref().and_then(|s| s.tls_cert_file.clone()) == d("r-c.pem"),
        ),
        (
            "caps.shared.tls_key_file",
            c.caps.shared.as_ref().and_then(|s| s.tls_key_file.clone()) == d("r-k.pem"),
        ),
        ("control_socket", c.control_socket == d("c.sock")),
    ];
    let mut keys: Vec<String> = resolved
        .iter()
        .map(|(k, ok)| {
            assert!(ok, "{k} is not resolved against the file's directory");
            k.to_string()
        })
        .collect();
    keys.sort();
    let documented = keys_of_rule("**Relative paths** are resolved", "- Quote values");
    assert_eq!(documented, keys, "CONFIG.md's relative paths");
    let man = &MAN5[MAN5.find("Relative paths are resolved").unwrap()..];
    let man = &man[..man.find(".TP").unwrap()];
    for key in &keys {
        assert!(
            man.contains(key.as_str()),
            "greenarrow_proxy.yaml(5) lacks {key}"
        );
    }
}

#[test]
fn the_required_keys_are_required_as_documented() {
    let cert = "tls_certificate: /c.pem\ntls_private_key: /k.pem\n";
    let client = format!("clients: [{{name: a, secrets: [\"{OTHER_SECRET}\"]");
    // With a client, no top-level secret is needed; source_addresses is, unless every client
    // has its own.
    assert!(parse(&format!(
        "{cert}{client}, source_addresses: [192.0.2.11]}}]\n"
    ))
    .is_ok());
    assert!(error(&format!("{cert}{client}}}]\n")).starts_with("source_addresses: required"));
    assert!(parse(&format!(
        "{cert}{client}}}]\nsource_addresses: [192.0.2.10]\n"
    ))
    .is_ok());
    // With a top-level secret (the client `default`), source_addresses is required.
    let both = format!(
        "{cert}auth_shared_secret: \"{SECRET}\"\n{client}, source_addresses: [192.0.2.11]}}]\n"
    );
    assert!(error(&both).starts_with("source_addresses: required"));
    // Without clients, the secret is required; the certificate and key always are.
    assert!(error(&format!("{cert}source_addresses: [192.0.2.10]\n"))
        .starts_with("auth_shared_secret: missing"));
    let no_cert = format!("{client}, source_addresses: [192.0.2.11]}}]\ntls_private_key: /k.pem\n");
    assert_eq!(error(&no_cert), "tls_certificate: required");
    for doc in [DOCS, MAN5] {
        let flat = doc.split_whitespace().collect::<Vec<_>>().join(" ");
        assert!(
            flat.contains("are always required"),
            "required keys not stated"
        );
    }
}
