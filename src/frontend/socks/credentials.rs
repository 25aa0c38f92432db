//! What RFC 1929 credentials mean on a SOCKS5 front-end with `auth: password`, sans I/O.
//!
//! The password is a client's secret. The user name is one of:
//! - empty: the client whose secret the password is; the source comes from a BIND, or is the
//!   client's only source address;
//! - an IP address (`192.0.2.10`, `2001:db8::10`): the same client, sending from that address;
//! - a client's name (`clients:`, or `default` for `auth_shared_secret`): that client, and the
//!   password must be one of *its* secrets (KumoMTA sends whatever `socks5_proxy_username`
//!   says); the source as for an empty user name.
//!
//! Anything else is refused. An IP address is read as an address even when a client has that
//! text as its name. Every secret of every client is compared, in constant time, whatever the
//! user name ([`Config::authenticate`]).

use crate::config::{Config, Identity};
use std::fmt;
use std::net::IpAddr;

/// Credentials accepted.
#[derive(Debug)]
pub struct Accepted<'c> {
    /// The client the connection acts as.
    pub identity: Identity<'c>,
    /// The source address the user name asks for, when it is an IP address.
    pub source: Option<IpAddr>,
}

/// Why credentials are refused. Neither the password nor the user name is kept (an
/// administrator may have swapped them).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refused {
    /// The password is no client's secret.
    UnknownSecret,
    /// The user name names a client and the password is not one of that client's secrets.
    NotThisClientsSecret { client: String },
    /// The user name is neither empty, an IP address nor a client name.
    BadUserName,
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refused::UnknownSecret => f.write_str("the password is no client's secret"),
            Refused::NotThisClientsSecret { client } => write!(
                f,
                "the user name names client {client:?} and the password is not one of its secrets"
            ),
            Refused::BadUserName => {
                f.write_str("the user name is neither empty, an IP address nor a client name")
            }
        }
    }
}

/// Check `username` and `password` against the clients of `config`.
pub fn check<'c>(
    config: &'c Config,
    username: &[u8],
    password: &[u8],
) -> Result<Accepted<'c>, Refused> {
    // The full constant-time scan, whatever the user name says.
    let identity = config.authenticate(password);
    let name = std::str::from_utf8(username).ok();
    let source = name.and_then(|n| n.parse::<IpAddr>().ok());
    let named = match name {
        Some(n) if !n.is_empty() && source.is_none() => {
            Some(config.client_named(n).ok_or(Refused::BadUserName)?.name)
        }
        Some(_) => None,
        None => return Err(Refused::BadUserName),
    };
    match (identity, named) {
        (Some(identity), Some(client)) if identity.name != client => {
            Err(Refused::NotThisClientsSecret {
                client: client.to_string(),
            })
        }
        (None, Some(client)) => Err(Refused::NotThisClientsSecret {
            client: client.to_string(),
        }),
        (Some(identity), _) => Ok(Accepted { identity, source }),
        (None, None) => Err(Refused::UnknownSecret),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KUMO: &str = "kumo-secret-0123456789abcdef-0123456789abcdef";
    const OTHER: &str = "other-secret-0123456789abcdef-0123456789abcdef";
    const DEFAULT: &str = "default-secret-0123456789abcdef-0123456789abcdef";

    fn config() -> Config {
        Config::from_yaml_str(&format!(
            "auth_shared_secret: \"{DEFAULT}\"\ntls_certificate: /c.pem\ntls_private_key: /k.pem\n\
             source_addresses: [192.0.2.0/24]\n\
             clients:\n  - name: kumo\n    secrets: [\"{KUMO}\"]\n    source_addresses: [192.0.2.10]\n\
             \x20 - name: other\n    secrets: [\"{OTHER}\"]\n\
             \x20 - name: 192.0.2.99\n    secrets: [\"{OTHER}x\"]\n"
        ), std::path::Path::new("/"))
        .unwrap()
    }

    fn ok(c: &Config, user: &str, pass: &str) -> (String, Option<IpAddr>) {
        let a =
            check(c, user.as_bytes(), pass.as_bytes()).unwrap_or_else(|e| panic!("{user:?}: {e}"));
        (a.identity.name.to_string(), a.source)
    }

    fn refused(c: &Config, user: &[u8], pass: &str) -> Refused {
        check(c, user, pass.as_bytes()).map(|_| ()).unwrap_err()
    }

    #[test]
    fn empty_and_ip_user_names_work_as_before() {
        let c = config();
        assert_eq!(ok(&c, "", KUMO), ("kumo".into(), None));
        assert_eq!(
            ok(&c, "192.0.2.10", KUMO),
            ("kumo".into(), Some("192.0.2.10".parse().unwrap()))
        );
        assert_eq!(
            ok(&c, "2001:db8::10", OTHER),
            ("other".into(), Some("2001:db8::10".parse().unwrap()))
        );
        assert_eq!(ok(&c, "", DEFAULT), ("default".into(), None));
        assert_eq!(refused(&c, b"", "wrong"), Refused::UnknownSecret);
        assert_eq!(refused(&c, b"192.0.2.10", "wrong"), Refused::UnknownSecret);
    }

    #[test]
    fn a_client_name_selects_that_client_and_needs_one_of_its_secrets() {
        let c = config();
        assert_eq!(ok(&c, "kumo", KUMO), ("kumo".into(), None));
        assert_eq!(ok(&c, "default", DEFAULT), ("default".into(), None));
        let not_kumo = Refused::NotThisClientsSecret {
            client: "kumo".into(),
        };
        // Another client's secret does not open this one, nor does a wrong password.
        assert_eq!(refused(&c, b"kumo", OTHER), not_kumo);
        assert_eq!(refused(&c, b"kumo", "wrong"), not_kumo);
        // Names are exact.
        assert_eq!(refused(&c, b"Kumo", KUMO), Refused::BadUserName);
        assert_eq!(refused(&c, b"kumo ", KUMO), Refused::BadUserName);
    }

    #[test]
    fn anything_else_is_refused_whatever_the_password() {
        let c = config();
        for user in [
            &b"egress-pool-1"[..],
            b"192.0.2.300",
            b"\xff\xfe",
            b"[192.0.2.10]",
        ] {
            assert_eq!(refused(&c, user, KUMO), Refused::BadUserName, "{user:?}");
            assert_eq!(refused(&c, user, "wrong"), Refused::BadUserName, "{user:?}");
        }
        assert_eq!(
            Refused::BadUserName.to_string(),
            "the user name is neither empty, an IP address nor a client name"
        );
    }

    #[test]
    fn an_ip_address_is_an_address_even_when_a_client_has_it_as_name() {
        let c = config();
        // "192.0.2.99" is a client's name, but read as a source address: its secret is that
        // client's, and the source is asked for.
        assert_eq!(
            ok(&c, "192.0.2.99", &format!("{OTHER}x")),
            ("192.0.2.99".into(), Some("192.0.2.99".parse().unwrap()))
        );
        assert_eq!(
            ok(&c, "192.0.2.99", KUMO),
            ("kumo".into(), Some("192.0.2.99".parse().unwrap()))
        );
    }
}
