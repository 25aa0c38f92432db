//! `frontends:` — listeners for MTAs that speak HAProxy's PROXY protocol or SOCKS5 instead of
//! the native protocol. Each entry is validated here; every error names its dotted key
//! (`frontends[1].mode`).

use super::access::{Client, DEFAULT_CLIENT};
use super::error::ConfigError;
use super::raw::RawFrontend;
use super::values::socket_addrs;
use greenarrow_proxy_proto::protocol::TlsPolicy;
use serde::ser::{Serialize, SerializeMap, Serializer};
use std::net::SocketAddr;

/// Which protocol the MTAs speak to a front-end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrontendKind {
    /// HAProxy PROXY protocol v1 or v2 (auto-detected), then SMTP.
    ProxyProtocol,
    /// SOCKS5 (RFC 1928, RFC 1929), then SMTP.
    Socks5,
}

impl FrontendKind {
    pub fn name(self) -> &'static str {
        match self {
            FrontendKind::ProxyProtocol => "proxy_protocol",
            FrontendKind::Socks5 => "socks5",
        }
    }
}

/// How a front-end serves a connection once the destination is known.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FrontendMode {
    /// Bytes relayed both ways; the MTA does EHLO and STARTTLS end to end with the MX.
    Passthrough,
    /// The proxy answers banner, EHLO and QUIT, does STARTTLS itself, relays transactions and
    /// pools the MX connection (shared with the native protocol's pool).
    Smtp(SmtpMode),
}

impl FrontendMode {
    /// `passthrough` or `smtp`, as the configuration writes it.
    pub fn name(&self) -> &'static str {
        match self {
            FrontendMode::Passthrough => "passthrough",
            FrontendMode::Smtp(_) => "smtp",
        }
    }
}

/// `mode: smtp` settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SmtpMode {
    /// TLS toward the MX: none, opportunistic or required.
    pub tls: TlsPolicy,
    /// Take and return pooled connections (default true).
    pub reuse: bool,
    /// Do not keep a connection that has carried this many messages.
    pub reuse_max_messages: Option<u64>,
}

/// How a SOCKS5 front-end identifies its clients.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SocksAuth {
    /// Username/password (RFC 1929): the password is a client's secret, the username the
    /// source IP literal wanted (or empty).
    Password,
    /// No authentication: connections act as the front-end's `client`.
    None,
}

impl SocksAuth {
    /// `password` or `none`, as the configuration writes it.
    pub fn name(self) -> &'static str {
        match self {
            SocksAuth::Password => "password",
            SocksAuth::None => "none",
        }
    }
}

/// One validated front-end.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frontend {
    pub kind: FrontendKind,
    pub listen: Vec<SocketAddr>,
    pub mode: FrontendMode,
    /// The named client whose source addresses apply (PROXY, and SOCKS5 with `auth: none`).
    pub client: String,
    /// SOCKS5 only.
    pub auth: SocksAuth,
    /// `mode: passthrough` only: move bulk data with `splice(2)` (default true; `false` always
    /// copies, HAProxy's `nosplice`).
    pub splice: bool,
}

/// The entry as the file writes it: `client` only where it is used (PROXY, SOCKS5 with
/// `auth: none`), `auth` only for SOCKS5, `tls`/`reuse`/`reuse_max_messages` only with
/// `mode: smtp`, `splice` only with `mode: passthrough`.
impl Serialize for Frontend {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let socks = self.kind == FrontendKind::Socks5;
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("kind", self.kind.name())?;
        m.serialize_entry("listen", &self.listen)?;
        m.serialize_entry("mode", self.mode.name())?;
        if !socks || self.auth == SocksAuth::None {
            m.serialize_entry("client", &self.client)?;
        }
        if socks {
            m.serialize_entry("auth", self.auth.name())?;
        }
        if self.mode == FrontendMode::Passthrough {
            m.serialize_entry("splice", &self.splice)?;
        }
        if let FrontendMode::Smtp(smtp) = &self.mode {
            m.serialize_entry("tls", smtp.tls.as_str())?;
            m.serialize_entry("reuse", &smtp.reuse)?;
            if let Some(n) = smtp.reuse_max_messages {
                m.serialize_entry("reuse_max_messages", &n)?;
            }
        }
        m.end()
    }
}

type Result<T, E = ConfigError> = std::result::Result<T, E>;

/// Validate `frontends:`; `native` are the native listener's addresses (no overlap allowed).
pub(crate) fn frontends(
    raw: Option<Vec<RawFrontend>>,
    native: &[SocketAddr],
    clients: &[Client],
) -> Result<Vec<Frontend>> {
    let mut out: Vec<Frontend> = Vec::new();
    for (i, rf) in raw.unwrap_or_default().into_iter().enumerate() {
        let key = |k: &str| format!("frontends[{i}].{k}");
        let kind = match rf.kind.as_deref() {
            Some("proxy_protocol") => FrontendKind::ProxyProtocol,
            Some("socks5") => FrontendKind::Socks5,
            Some(other) => {
                return Err(ConfigError::invalid(
                    key("kind"),
                    format!("{other:?}: expected proxy_protocol or socks5"),
                ))
            }
            None => {
                return Err(ConfigError::invalid(
                    key("kind"),
                    "required: proxy_protocol or socks5",
                ))
            }
        };
        let listen = socket_addrs(&key("listen"), rf.listen, &[], None)?;
        if listen.is_empty() {
            return Err(ConfigError::invalid(
                key("listen"),
                "required: at least one IP:port to listen on",
            ));
        }
        for (j, addr) in listen.iter().enumerate() {
            let taken = native.contains(addr)
                || listen[..j].contains(addr)
                || out.iter().any(|f| f.listen.contains(addr));
            if taken && addr.port() != 0 {
                return Err(ConfigError::invalid(
                    format!("frontends[{i}].listen[{j}]"),
                    format!("{addr} is already used by another listener"),
                ));
            }
        }
        let smtp_only = |name: &str, set: bool| -> Result<()> {
            if set {
                return Err(ConfigError::invalid(
                    key(name),
                    "only valid with mode: smtp",
                ));
            }
            Ok(())
        };
        let mode = match rf.mode.as_deref().unwrap_or("passthrough") {
            "passthrough" => {
                smtp_only("tls", rf.tls.is_some())?;
                smtp_only("reuse", rf.reuse.is_some())?;
                smtp_only("reuse_max_messages", rf.reuse_max_messages.is_some())?;
                FrontendMode::Passthrough
            }
            "smtp" => {
                if rf.splice.is_some() {
                    return Err(ConfigError::invalid(
                        key("splice"),
                        "only valid with mode: passthrough (mode: smtp relays SMTP itself)",
                    ));
                }
                let tls = match rf.tls.as_deref().unwrap_or("opportunistic") {
                    "none" => TlsPolicy::None,
                    "opportunistic" => TlsPolicy::Opportunistic,
                    "required" => TlsPolicy::Required,
                    other => {
                        return Err(ConfigError::invalid(
                            key("tls"),
                            format!("{other:?}: expected none, opportunistic or required (a front-end knows the MX only by address, so it cannot verify a name)"),
                        ))
                    }
                };
                if rf.reuse_max_messages == Some(0) {
                    return Err(ConfigError::invalid(
                        key("reuse_max_messages"),
                        "must be at least 1",
                    ));
                }
                FrontendMode::Smtp(SmtpMode {
                    tls,
                    reuse: rf.reuse.unwrap_or(true),
                    reuse_max_messages: rf.reuse_max_messages,
                })
            }
            other => {
                return Err(ConfigError::invalid(
                    key("mode"),
                    format!("{other:?}: expected passthrough or smtp"),
                ))
            }
        };
        let auth = match (kind, rf.auth.as_deref()) {
            (FrontendKind::Socks5, None | Some("password")) => SocksAuth::Password,
            (FrontendKind::Socks5, Some("none")) => SocksAuth::None,
            (FrontendKind::Socks5, Some(other)) => {
                return Err(ConfigError::invalid(
                    key("auth"),
                    format!("{other:?}: expected password or none"),
                ))
            }
            (FrontendKind::ProxyProtocol, Some(_)) => {
                return Err(ConfigError::invalid(
                    key("auth"),
                    "only valid with kind: socks5 (the PROXY protocol carries no credentials)",
                ))
            }
            (FrontendKind::ProxyProtocol, None) => SocksAuth::None,
        };
        if auth == SocksAuth::Password && rf.client.is_some() {
            return Err(ConfigError::invalid(
                key("client"),
                "not used with auth: password (the password identifies the client)",
            ));
        }
        let default = DEFAULT_CLIENT;
        let has_default = clients.iter().any(|c| c.name == default);
        let client = match rf.client {
            Some(c) => c,
            // No credentials on this front-end and no `default` client to act as.
            None if auth == SocksAuth::None && !has_default => {
                let names: Vec<&str> = clients.iter().map(|c| c.name.as_str()).collect();
                let how = match kind {
                    FrontendKind::ProxyProtocol => "a PROXY protocol front-end",
                    FrontendKind::Socks5 => "a SOCKS5 front-end with auth: none",
                };
                return Err(ConfigError::invalid(
                    key("client"),
                    format!(
                        "required: {how} carries no credentials, so it must name the client \
                         whose source addresses it uses, and there is no \"default\" client \
                         (no auth_shared_secret); clients: {}",
                        names.join(", ")
                    ),
                ));
            }
            // With auth: password the password picks the client (any client's secret).
            None => default.to_string(),
        };
        if auth == SocksAuth::Password && !clients.iter().any(|c| !c.secrets.is_empty()) {
            return Err(ConfigError::invalid(
                key("auth"),
                "password: no client has a secret to check the password against; set \
                 auth_shared_secret or a client's secrets, or use auth: none with client:",
            ));
        }
        if auth == SocksAuth::None && !clients.iter().any(|c| c.name == client) {
            let names: Vec<&str> = clients.iter().map(|c| c.name.as_str()).collect();
            return Err(ConfigError::invalid(
                key("client"),
                format!("no client named {client:?} (clients: {})", names.join(", ")),
            ));
        }
        out.push(Frontend {
            kind,
            listen,
            mode,
            client,
            auth,
            splice: rf.splice.unwrap_or(true),
        });
    }
    Ok(out)
}
