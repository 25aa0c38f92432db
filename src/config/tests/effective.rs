//! The effective configuration: every key set, dumped byte for byte as before, parsed back to
//! the same `Config`; the example file round-trips too.

use super::*;

const A1: &str = "cluster-a-secret-0123456789abcdef-one";
const F1: &str = "cluster-a-secret-0123456789abcdef-file";
const F2: &str = "top-level-secret-0123456789abcdef-file";

/// A file that sets every key the file format has (no value left to its default), with the
/// secret files it names in `dir`; `secret_file`: the top-level secret from a file.
fn every_key(dir: &Path, secret_file: bool) -> String {
    std::fs::write(dir.join("a.secret"), format!("{F1}\n")).unwrap();
    std::fs::write(dir.join("top.secret"), format!("{F2}\n")).unwrap();
    std::fs::write(dir.join("redis.pass"), "redis-password\n").unwrap();
    std::fs::set_permissions(
        dir.join("top.secret"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    let top = if secret_file {
        "auth_shared_secret_file: top.secret".to_string()
    } else {
        format!("auth_shared_secret: \"{SECRET}\"")
    };
    format!(
        r#"
listen: ["127.0.0.2:1807", "[::1]:1808"]
listen_freebind: true
allow_from: [10.0.0.0/8, "192.0.2.1", "2001:db8::/48"]
{top}
clients:
  - name: cluster-a
    secrets: ["{A1}"]
    secret_files: [a.secret]
    source_addresses: [192.0.2.20, "2001:db8:2::/64"]
    tls_client_names: [MTA1.example.com]
  - name: cert-only
    tls_client_names: [mta2.example.com]
tls_client_ca: clients-ca.pem
log_verbose: true
log_sessions: false
state_directory: state
tls_certificate: tls/cert.pem
tls_private_key: /srv/key.pem
source_addresses: [192.0.2.0/28, "2001:db8:1::5"]
destination_ports: [25, 2525]
destination_deny: [10.0.0.0/8, "fc00::/7"]
destination_allow: [10.1.0.0/16]
max_sessions: 50
max_sessions_per_ip: 7
max_queued_sessions: 0
limits:
  max_command_line: 1000
  max_reply_line: 2000
  max_reply_lines: 64
timeouts:
  mta_handshake: 1s
  mta_idle: 2m
  mta_auth: 3s
  session_lifetime: 2h
  mx_connect: 3s
  mx_banner: 4s
  mx_command: 5s
  mx_data_done: 1h 30m
  mx_tls_handshake: 7s
  shutdown_grace: 500ms
mx_tls:
  min_version: 1.3
  ca_file: extra-roots.pem
  dane: testing-only
  mta_sts: 'off'
  allow_none_when_required: true
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
  checkout_probe: noop
dns:
  nameservers: ["192.0.2.53", "[2001:db8::53]:5353", "::1"]
  timeout: 2s
  attempts: 3
frontends:
  - kind: proxy_protocol
    listen: 127.0.0.1:2600
    client: cluster-a
  - kind: socks5
    listen: ["127.0.0.1:1080", "[::1]:1080"]
    mode: smtp
    tls: none
    reuse: false
    reuse_max_messages: 5
  - kind: socks5
    listen: 127.0.0.1:1081
    auth: none
    client: cert-only
    mode: smtp
caps:
  wait: 0
  window: 90s
  max_connections: 10
  max_new_connections: 100
  max_connections_per_source: 50
  destinations:
    - name: big
      addresses: [203.0.113.0/24, "2001:db8::/32"]
      max_connections: 3
      max_new_connections: 30
  sources:
    - addresses: [192.0.2.10]
      max_connections: 7
      max_new_connections: 70
      max_connections_per_source: 20
      destinations:
        big: {{max_connections: 2, max_new_connections: 4}}
  shared:
    redis: redis://10.0.0.5:6379/2
    password_file: redis.pass
    key_prefix: gp-eu
    host: proxy-1
    lease: 20s
    timeout: 250ms
    destinations:
      big: {{max_connections: 40, max_new_connections: 600}}
control_socket: none
metrics:
  listen: "[::1]:9807"
  allow_remote: true
"#
    )
}

/// The effective configuration of [`every_key`] (inline top-level secret), `DIR` for the
/// directory of the file.
const EVERY_KEY_EFFECTIVE: &str = "\
# Effective greenarrow_proxy configuration: every key, defaults filled in.
# An inline auth_shared_secret is redacted.
listen:
- 127.0.0.2:1807
- '[::1]:1808'
listen_freebind: true
allow_from:
- 10.0.0.0/8
- 192.0.2.1/32
- 2001:db8::/48
auth_shared_secret: <redacted>
clients:
- name: cluster-a
  secrets:
  - <redacted>
  secret_files:
  - DIR/a.secret
  source_addresses:
  - 192.0.2.20/32
  - 2001:db8:2::/64
  tls_client_names:
  - mta1.example.com
- name: cert-only
  tls_client_names:
  - mta2.example.com
tls_client_ca: DIR/clients-ca.pem
log_verbose: true
log_sessions: false
state_directory: DIR/state
tls_certificate: DIR/tls/cert.pem
tls_private_key: /srv/key.pem
source_addresses:
- 192.0.2.0/28
- 2001:db8:1::5/128
destination_ports:
- 25
- 2525
destination_deny:
- 10.0.0.0/8
- fc00::/7
destination_allow:
- 10.1.0.0/16
max_sessions: 50
max_sessions_per_ip: 7
max_queued_sessions: 0
limits:
  max_command_line: 1000
  max_reply_line: 2000
  max_reply_lines: 64
timeouts:
  mta_handshake: 1s
  mta_idle: 2m
  mta_auth: 3s
  session_lifetime: 2h
  mx_connect: 3s
  mx_banner: 4s
  mx_command: 5s
  mx_data_done: 1h 30m
  mx_tls_handshake: 7s
  shutdown_grace: 500ms
mx_tls:
  min_version: '1.3'
  ca_file: DIR/extra-roots.pem
  dane: testing-only
  mta_sts: off
  allow_none_when_required: true
  mta_sts_fetch_timeout: 5s
  mta_sts_max_size: 32768
  mta_sts_test_ca_file: DIR/sts-ca.pem
  mta_sts_test_port: 8443
  tls_rpt_organization: proxy.example
  tls_rpt_contact: tls-reports@proxy.example
pool:
  reuse_time_limit: 10m
  idle_ttl: 20s
  max_idle_per_key: 0
  max_idle_total: 10
  checkout_probe: noop
dns:
  nameservers:
  - 192.0.2.53:53
  - '[2001:db8::53]:5353'
  - '[::1]:53'
  timeout: 2s
  attempts: 3
frontends:
- kind: proxy_protocol
  listen:
  - 127.0.0.1:2600
  mode: passthrough
  client: cluster-a
  splice: true
- kind: socks5
  listen:
  - 127.0.0.1:1080
  - '[::1]:1080'
  mode: smtp
  auth: password
  tls: none
  reuse: false
  reuse_max_messages: 5
- kind: socks5
  listen:
  - 127.0.0.1:1081
  mode: smtp
  client: cert-only
  auth: none
  tls: opportunistic
  reuse: true
caps:
  wait: 0s
  window: 1m 30s
  max_connections: 10
  max_new_connections: 100
  max_connections_per_source: 50
  destinations:
  - name: big
    addresses:
    - 203.0.113.0/24
    - 2001:db8::/32
    max_connections: 3
    max_new_connections: 30
  sources:
  - addresses:
    - 192.0.2.10/32
    max_connections: 7
    max_new_connections: 70
    max_connections_per_source: 20
    destinations:
      big:
        max_connections: 2
        max_new_connections: 4
  shared:
    redis: redis://10.0.0.5:6379/2
    password_file: DIR/redis.pass
    key_prefix: gp-eu
    host: proxy-1
    lease: 20s
    timeout: 250ms
    destinations:
      big:
        max_connections: 40
        max_new_connections: 600
control_socket: none
metrics:
  listen: '[::1]:9807'
  allow_remote: true
";

#[test]
fn every_key_dumps_as_before_and_parses_back_to_the_same() {
    for secret_file in [false, true] {
        let dir = TempDir::new("effective");
        let c = Config::from_yaml_str(&every_key(&dir.0, secret_file), &dir.0).unwrap();
        let effective = c.to_effective_yaml();
        for secret in [SECRET, A1, F1, F2] {
            assert!(!effective.contains(secret), "{effective}");
        }
        if !secret_file {
            let shown = effective.replace(&dir.0.display().to_string(), "DIR");
            assert_eq!(shown, EVERY_KEY_EFFECTIVE, "{shown}");
        }
        // The inline secrets redacted in order: the top-level one, then the client's.
        let back = effective.replacen("<redacted>", SECRET, usize::from(!secret_file));
        let back = back.replacen("<redacted>", A1, 1);
        assert!(!back.contains("<redacted>"), "{back}");
        let again = Config::from_yaml_str(&back, Path::new("/elsewhere")).unwrap();
        assert_eq!(again, c, "{effective}");
        assert_eq!(again.to_effective_yaml(), effective);
    }
}

#[test]
fn the_example_file_round_trips() {
    let own = "0123456789abcdef0123456789abcdef";
    let configured = EXAMPLE.replace(secret::EXAMPLE_SECRET, own);
    let example = Config::from_yaml_str(&configured, Path::new("/etc/greenarrow_proxy")).unwrap();
    let effective = example.to_effective_yaml();
    assert!(!effective.contains(own), "{effective}");
    let back = effective.replace("<redacted>", own);
    assert_eq!(
        Config::from_yaml_str(&back, Path::new("/elsewhere")).unwrap(),
        example,
        "{effective}"
    );
}
