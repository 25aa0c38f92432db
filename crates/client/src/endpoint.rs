//! Where the proxies are: `--proxy` arguments (IP, IP:port, [IPv6]:port, name, name:port)
//! turned into addresses, a name giving each of its addresses.

use std::fmt;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};

/// One proxy: its address and the name its certificate must match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub addr: SocketAddr,
    pub tls_name: String,
}

/// Why a `--proxy` argument gave no address.
#[derive(Debug)]
#[non_exhaustive]
pub enum ResolveError {
    /// Not `IP`, `IP:port`, `[IPv6]:port`, `name` or `name:port`.
    Syntax(String),
    /// The name did not resolve.
    Lookup { spec: String, error: std::io::Error },
}

impl fmt::Display for ResolveError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ResolveError::Syntax(s) => write!(
                f,
                "proxy {s:?}: expected IP, IP:port, [IPv6]:port, name or name:port"
            ),
            ResolveError::Lookup { spec, error } => write!(f, "proxy {spec:?}: {error}"),
        }
    }
}

impl std::error::Error for ResolveError {}

/// Split a proxy argument into host and port (`default_port` when none is given). Pure.
pub fn split_spec(spec: &str, default_port: u16) -> Result<(String, u16), ResolveError> {
    let bad = || ResolveError::Syntax(spec.to_string());
    if let Ok(sa) = spec.parse::<SocketAddr>() {
        return Ok((sa.ip().to_string(), sa.port()));
    }
    if let Ok(ip) = spec.parse::<IpAddr>() {
        return Ok((ip.to_string(), default_port));
    }
    if let Some(inner) = spec.strip_prefix('[').and_then(|s| s.strip_suffix(']')) {
        let ip: IpAddr = inner.parse().map_err(|_| bad())?;
        return Ok((ip.to_string(), default_port));
    }
    let (host, port) = match spec.rsplit_once(':') {
        Some((h, p)) => (h, p.parse::<u16>().map_err(|_| bad())?),
        None => (spec, default_port),
    };
    let ok = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b == b'_');
    if !ok || port == 0 {
        return Err(bad());
    }
    Ok((host.to_string(), port))
}

impl Endpoint {
    /// The endpoints `specs` name, in order (a name gives each of its addresses, in the
    /// resolver's order; duplicates are dropped). The TLS name is `tls_name` when given,
    /// otherwise the name or IP as written.
    pub fn resolve(
        specs: &[String],
        default_port: u16,
        tls_name: Option<&str>,
    ) -> Result<Vec<Endpoint>, ResolveError> {
        let mut out: Vec<Endpoint> = Vec::new();
        for spec in specs {
            let (host, port) = split_spec(spec, default_port)?;
            let addrs: Vec<SocketAddr> = match host.parse::<IpAddr>() {
                Ok(ip) => vec![SocketAddr::new(ip, port)],
                Err(_) => (host.as_str(), port)
                    .to_socket_addrs()
                    .map_err(|error| ResolveError::Lookup {
                        spec: spec.clone(),
                        error,
                    })?
                    .collect(),
            };
            for addr in addrs {
                if !out.iter().any(|e| e.addr == addr) {
                    out.push(Endpoint {
                        addr,
                        tls_name: tls_name.unwrap_or(&host).to_string(),
                    });
                }
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxy_arguments() {
        let ok = |s: &str| split_spec(s, 807).unwrap();
        assert_eq!(ok("192.0.2.1"), ("192.0.2.1".into(), 807));
        assert_eq!(ok("192.0.2.1:9807"), ("192.0.2.1".into(), 9807));
        assert_eq!(ok("[2001:db8::1]:9807"), ("2001:db8::1".into(), 9807));
        assert_eq!(ok("2001:db8::1"), ("2001:db8::1".into(), 807));
        assert_eq!(ok("[2001:db8::1]"), ("2001:db8::1".into(), 807));
        assert_eq!(ok("proxy.example.net"), ("proxy.example.net".into(), 807));
        assert_eq!(
            ok("proxy-1.example.net:808"),
            ("proxy-1.example.net".into(), 808)
        );
        for bad in [
            "",
            ":807",
            "host:",
            "host:99999",
            "host:0",
            "a b",
            "[x]:1",
            "h/x",
        ] {
            assert!(split_spec(bad, 807).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn resolve_keeps_order_drops_duplicates_and_names_tls() {
        let specs: Vec<String> = ["127.0.0.2:1", "localhost:2", "127.0.0.2:1", "[::1]:3"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let eps = Endpoint::resolve(&specs, 807, None).unwrap();
        assert_eq!(eps[0].addr, "127.0.0.2:1".parse().unwrap());
        assert_eq!(eps[0].tls_name, "127.0.0.2");
        // localhost gives one endpoint per address, named "localhost".
        let local: Vec<&Endpoint> = eps.iter().filter(|e| e.addr.port() == 2).collect();
        assert!(!local.is_empty());
        assert!(local.iter().all(|e| e.tls_name == "localhost"));
        assert_eq!(eps.iter().filter(|e| e.addr.port() == 1).count(), 1);
        assert_eq!(eps.last().unwrap().addr, "[::1]:3".parse().unwrap());
        let named = Endpoint::resolve(&specs[..1], 807, Some("proxy.test")).unwrap();
        assert_eq!(named[0].tls_name, "proxy.test");
    }
}
