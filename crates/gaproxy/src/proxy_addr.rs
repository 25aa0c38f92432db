//! What `gaproxy send` says when no proxy can be reached: the address it tried, `--ca-file`
//! when the proxy's certificate has another issuer, "this port speaks SMTP" when an SMTP
//! server answered (sans-I/O except [`probe`]). `--proxy` itself is parsed by
//! `client::Endpoint`.

use greenarrow_proxy_client::ClientError;
use greenarrow_proxy_net::tls::{CertificateError, TlsError};
use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::Duration;

/// What the server at `addr` says first, within a short wait (empty if nothing).
pub fn probe(addr: SocketAddr) -> Vec<u8> {
    let wait = Duration::from_secs(2);
    let Ok(mut s) = TcpStream::connect_timeout(&addr, wait) else {
        return Vec::new();
    };
    let _ = s.set_read_timeout(Some(wait));
    let mut buf = [0u8; 256];
    match s.read(&mut buf) {
        Ok(n) => buf.get(..n).unwrap_or_default().to_vec(),
        Err(_) => Vec::new(),
    }
}

/// Whether `first` looks like an SMTP greeting (`220 `, `220-`, or a 4xx/5xx greeting).
pub fn is_smtp_banner(first: &[u8]) -> bool {
    matches!(first, [a, b, c, d, ..]
        if matches!(a, b'2' | b'4' | b'5') && b.is_ascii_digit() && c.is_ascii_digit()
            && matches!(d, b' ' | b'-'))
}

/// Whether a failed connection is worth probing for an SMTP banner (the TLS handshake
/// failed, not on the certificate).
pub fn worth_probing(e: &ClientError) -> bool {
    matches!(
        e,
        ClientError::Tls(
            TlsError::Handshake(_)
                | TlsError::HandshakeTimeout(_)
                | TlsError::ClosedDuringHandshake
        )
    )
}

/// The error `gaproxy send` prints for a failed connection to the proxy: what was tried and
/// what to check. `banner` is what a plain connection read first (see [`probe`]).
pub fn explain(
    e: &ClientError,
    proxy: SocketAddr,
    tls_name: &str,
    ca_file: &Path,
    banner: &[u8],
) -> String {
    match e {
        ClientError::Connect(io) => format!(
            "cannot connect to the proxy at {proxy}: {io}; check --proxy and that greenarrow_proxy \
             listens there (its `listen` key)"
        ),
        ClientError::Tls(TlsError::Certificate(d))
            if matches!(d.reason(), Some(CertificateError::UnknownIssuer)) =>
        {
            format!(
            "TLS with the proxy at {proxy}: its certificate is not issued by the CA in --ca-file \
             {}: give the CA that issued the proxy's certificate (or that certificate itself)",
                ca_file.display()
            )
        }
        ClientError::Tls(TlsError::Certificate(d))
            if matches!(
                d.reason(),
                Some(
                    CertificateError::NotValidForName
                        | CertificateError::NotValidForNameContext { .. }
                )
            ) =>
        {
            format!(
                "TLS with the proxy at {proxy}: its certificate is not valid for {tls_name:?}: \
                 give a name the certificate holds with --proxy-name ({d})"
            )
        }
        e if worth_probing(e) && is_smtp_banner(banner) => {
            let line = String::from_utf8_lossy(banner);
            let line = line.lines().next().unwrap_or_default();
            format!(
                "the server at {proxy} answered with an SMTP banner ({line:?}): this port speaks \
                 SMTP, not the proxy protocol; give the address greenarrow_proxy listens on with \
                 --proxy"
            )
        }
        e => format!("proxy at {proxy}: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use greenarrow_proxy_net::tls::{CertRefusal, RustlsError};

    #[test]
    fn errors_name_what_to_check() {
        let proxy: SocketAddr = "127.0.0.1:807".parse().unwrap();
        let ca = Path::new("/tmp/ca.pem");
        let refused = ClientError::Connect(std::io::Error::from_raw_os_error(111));
        let m = explain(&refused, proxy, "127.0.0.1", ca, b"");
        assert!(
            m.starts_with("cannot connect to the proxy at 127.0.0.1:807: "),
            "{m}"
        );
        let issuer = ClientError::Tls(TlsError::Certificate(CertRefusal::Invalid(Box::new(
            CertificateError::UnknownIssuer.into(),
        ))));
        let m = explain(&issuer, proxy, "127.0.0.1", ca, b"");
        assert!(
            m.contains("not issued by the CA in --ca-file /tmp/ca.pem"),
            "{m}"
        );
        let smtp = ClientError::Tls(TlsError::Handshake(Box::new(RustlsError::DecryptError)));
        let m = explain(&smtp, proxy, "127.0.0.1", ca, b"220 mx.test ESMTP\r\n");
        assert!(
            m.contains("(\"220 mx.test ESMTP\"): this port speaks SMTP, not the proxy protocol"),
            "{m}"
        );
        // Not a banner: the error as it is, with the address.
        let m = explain(&smtp, proxy, "127.0.0.1", ca, b"\x15\x03\x03");
        assert!(
            m.starts_with("proxy at 127.0.0.1:807: TLS with the proxy"),
            "{m}"
        );
    }

    #[test]
    fn banners() {
        assert!(is_smtp_banner(b"220 mx ESMTP\r\n"));
        assert!(is_smtp_banner(b"220-mx\r\n"));
        assert!(is_smtp_banner(b"554 go away\r\n"));
        assert!(!is_smtp_banner(b"\x16\x03\x01"));
        assert!(!is_smtp_banner(b"22"));
    }
}
