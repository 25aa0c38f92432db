//! What `--check-config` warns about beyond the file itself: addresses the configuration
//! names that are not on this host (`source_addresses`, clients' `source_addresses`, `listen`,
//! `frontends[i].listen`) and a CA certificate used as the server certificate. Warnings, not
//! errors: addresses may be added after the configuration is written (and a source address
//! absent at start is legal).

use super::model::Config;
use super::net::IpNet;
use greenarrow_proxy_net::tls::is_ca_certificate;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use std::net::{IpAddr, SocketAddr, UdpSocket};

/// Whether `ip` can be bound on this host (an address of an interface, or of a local route).
/// The unspecified address always can.
pub fn is_local(ip: IpAddr) -> bool {
    ip.is_unspecified() || UdpSocket::bind(SocketAddr::new(ip, 0)).is_ok()
}

/// Whether a network of source addresses has an address on this host: its own address, or
/// (for a network of more than one address) any address of an interface inside it.
fn has_local(net: &IpNet, interfaces: &[IpAddr]) -> bool {
    is_local(net.addr()) || interfaces.iter().any(|ip| net.contains(*ip))
}

/// The addresses of this host's interfaces (empty if they cannot be listed).
fn interface_addresses() -> Vec<IpAddr> {
    let Ok(addrs) = nix::ifaddrs::getifaddrs() else {
        return Vec::new();
    };
    addrs
        .filter_map(|a| {
            let a = a.address?;
            if let Some(v4) = a.as_sockaddr_in() {
                Some(IpAddr::V4(v4.ip()))
            } else {
                a.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip()))
            }
        })
        .collect()
}

/// Warnings about addresses not on this host, in the order of the configuration.
pub fn absent_addresses(config: &Config) -> Vec<String> {
    let interfaces = interface_addresses();
    let mut out = Vec::new();
    let mut nets: Vec<(String, &IpNet)> = config
        .source_addresses
        .iter()
        .enumerate()
        .map(|(i, n)| (format!("source_addresses[{i}]"), n))
        .collect();
    for c in &config.clients {
        for (i, n) in c.source_addresses.iter().flatten().enumerate() {
            nets.push((format!("clients[{}].source_addresses[{i}]", c.name), n));
        }
    }
    for (key, net) in nets {
        if !has_local(net, &interfaces) {
            let single = net.prefix_len() == if net.addr().is_ipv4() { 32 } else { 128 };
            let shown = if single {
                net.addr().to_string()
            } else {
                net.to_string()
            };
            out.push(format!(
                "{key}: {shown} is not an address of this host: requests from it will fail with \
                 source_not_local until it is added"
            ));
        }
    }
    let mut listen: Vec<(String, SocketAddr)> = config
        .listen
        .iter()
        .enumerate()
        .map(|(i, a)| (format!("listen[{i}]"), *a))
        .collect();
    for (f, fe) in config.frontends.iter().enumerate() {
        for (i, a) in fe.listen.iter().enumerate() {
            listen.push((format!("frontends[{f}].listen[{i}]"), *a));
        }
    }
    for (key, addr) in listen {
        if !is_local(addr.ip()) {
            out.push(format!(
                "{key}: {} is not an address of this host: the proxy cannot listen on {addr}",
                addr.ip()
            ));
        }
    }
    out
}

/// A warning when the first certificate of `tls_certificate` is a CA certificate.
pub fn ca_as_server_certificate(config: &Config) -> Option<String> {
    let path = config.tls_certificate.as_ref()?;
    let pem = std::fs::read(path).ok()?;
    let first = CertificateDer::pem_slice_iter(&pem).next()?.ok()?;
    is_ca_certificate(&first).then(|| {
        format!(
            "tls_certificate: {}: the first certificate is a CA certificate (CA:TRUE), not a \
             server certificate: MTAs will refuse it; put the server's own certificate first",
            path.display()
        )
    })
}

/// Every warning of this module.
pub fn warnings(config: &Config) -> Vec<String> {
    let mut w = absent_addresses(config);
    w.extend(ca_as_server_certificate(config));
    w
}

#[cfg(test)]
mod tests {
    use super::*;
    use greenarrow_proxy_testkit::certgen::TestCa;

    #[test]
    fn loopback_is_local_documentation_addresses_are_not() {
        assert!(is_local("127.0.0.1".parse().unwrap()));
        assert!(is_local("0.0.0.0".parse().unwrap()));
        assert!(!is_local("192.0.2.1".parse().unwrap()));
        let interfaces = interface_addresses();
        assert!(
            interfaces.contains(&"127.0.0.1".parse().unwrap()),
            "{interfaces:?}"
        );
        assert!(has_local(
            &IpNet::parse("127.0.0.0/8").unwrap(),
            &interfaces
        ));
        assert!(!has_local(
            &IpNet::parse("198.51.100.0/24").unwrap(),
            &interfaces
        ));
    }

    #[test]
    fn a_ca_certificate_is_recognised() {
        let ca = TestCa::new("test CA").unwrap();
        let leaf = ca.issue(&["localhost"]).unwrap();
        let der = |pem: &str| CertificateDer::from_pem_slice(pem.as_bytes()).unwrap();
        assert!(is_ca_certificate(&der(&ca.cert_pem())));
        assert!(!is_ca_certificate(&der(&leaf.cert_pem)));
        let self_signed = greenarrow_proxy_testkit::certgen::self_signed(&["mx.test"]).unwrap();
        assert!(!is_ca_certificate(&der(&self_signed.cert_pem)));
    }
}
