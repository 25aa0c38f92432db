//! Every rustls call of the project lives here.
//!
//! Three roles:
//! - [`TlsAcceptor`]: the proxy's TLS listener toward MTAs (and the test MX's STARTTLS);
//! - [`MxTlsConnector`]: the proxy's STARTTLS / SMTPS client toward MX servers, with the
//!   policies `opportunistic` (any certificate, but the handshake signature is still
//!   verified) and `verify` (chain to the roots and match the name);
//! - [`ProxyClientTls`]: an MTA's TLS client toward the proxy (the `client` module).
//!
//! All three hand out blocking streams ([`ServerTlsStream`], [`ClientTlsStream`]) over a
//! [`TcpStream`]; the handshake runs with a deadline given by the caller. The ring provider is
//! always passed explicitly: `ClientConfig::builder()` would panic at run time if feature
//! unification ever enabled a second provider.

mod client;
mod server;
#[cfg(test)]
mod tests;

pub use client::{load_roots, CertPolicy, ClientTlsStream, MxTlsConnector, ProxyClientTls};
pub use greenarrow_proxy_proto::tls_facts::TlsFacts;
pub use server::{ServerTlsStream, TlsAcceptor};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use std::fmt;
use std::io;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// What went wrong with TLS set-up or a TLS session.
#[derive(Debug)]
pub enum TlsError {
    /// A PEM file could not be read or holds nothing usable.
    Pem { path: PathBuf, detail: String },
    /// PEM text (not from a file) holds nothing usable.
    PemText(String),
    /// rustls refused the configuration.
    Config(String),
    /// The private key is not the key of the (first) certificate.
    KeyMismatch,
    /// The name given for the peer is not a valid DNS name or IP address.
    InvalidName(String),
    /// The handshake did not finish within its deadline.
    HandshakeTimeout(Duration),
    /// The peer's certificate was refused (does not chain to the roots, wrong name, expired).
    Certificate(String),
    /// The handshake failed: a TLS alert, a protocol error.
    Handshake(String),
    /// The peer closed the connection during the handshake.
    ClosedDuringHandshake,
    /// Socket error during the handshake.
    Io(io::Error),
}

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TlsError::Pem { path, detail } => write!(f, "{}: {detail}", path.display()),
            TlsError::PemText(d) => write!(f, "PEM: {d}"),
            TlsError::Config(d) => write!(f, "TLS configuration: {d}"),
            TlsError::KeyMismatch => {
                write!(f, "the private key does not match the certificate")
            }
            TlsError::InvalidName(n) => write!(f, "invalid TLS name {n:?}"),
            TlsError::HandshakeTimeout(d) => {
                write!(
                    f,
                    "TLS handshake timed out after {}",
                    humantime::format_duration(*d)
                )
            }
            TlsError::Certificate(d) => write!(f, "certificate not accepted: {d}"),
            TlsError::Handshake(d) => write!(f, "TLS handshake failed: {d}"),
            TlsError::ClosedDuringHandshake => {
                write!(f, "peer closed the connection during the TLS handshake")
            }
            TlsError::Io(e) => write!(f, "TLS handshake: {e}"),
        }
    }
}

impl std::error::Error for TlsError {}

pub(crate) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Minimum TLS protocol version accepted toward MX servers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MinVersion {
    Tls12,
    Tls13,
}

pub(crate) fn versions(min: MinVersion) -> &'static [&'static rustls::SupportedProtocolVersion] {
    static BOTH: [&rustls::SupportedProtocolVersion; 2] =
        [&rustls::version::TLS13, &rustls::version::TLS12];
    static ONLY13: [&rustls::SupportedProtocolVersion; 1] = [&rustls::version::TLS13];
    match min {
        MinVersion::Tls12 => &BOTH,
        MinVersion::Tls13 => &ONLY13,
    }
}

pub(crate) fn read_file(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|e| TlsError::Pem {
        path: path.to_owned(),
        detail: e.to_string(),
    })
}

pub(crate) fn certs_from_pem(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Result<Vec<_>, _> = CertificateDer::pem_slice_iter(pem).collect();
    let certs = certs.map_err(|e| format!("bad certificate PEM: {e}"))?;
    if certs.is_empty() {
        return Err("no certificate found".into());
    }
    Ok(certs)
}

pub(crate) fn key_from_pem(pem: &[u8]) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| format!("no usable private key: {e}"))
}

pub(crate) fn session_facts(
    version: Option<rustls::ProtocolVersion>,
    suite: Option<rustls::SupportedCipherSuite>,
) -> TlsFacts {
    TlsFacts {
        version: version
            .and_then(|v| v.as_str())
            .unwrap_or("unknown")
            .replace("TLSv1_", "TLSv1."),
        cipher: suite
            .and_then(|s| s.suite().as_str())
            .unwrap_or("unknown")
            .to_string(),
        ..TlsFacts::default()
    }
}

pub(crate) fn dns_names(cert: &CertificateDer<'_>) -> Vec<String> {
    match webpki::EndEntityCert::try_from(cert) {
        Ok(ee) => ee.valid_dns_names().map(str::to_string).collect(),
        Err(_) => Vec::new(),
    }
}

/// Drive a handshake to completion with a deadline on every socket read and write.
pub(crate) fn handshake<C, S>(
    conn: &mut C,
    tcp: &mut TcpStream,
    timeout: Duration,
) -> Result<(), TlsError>
where
    C: std::ops::DerefMut<Target = rustls::ConnectionCommon<S>>,
    S: rustls::SideData,
{
    let old_r = tcp.read_timeout().map_err(TlsError::Io)?;
    let old_w = tcp.write_timeout().map_err(TlsError::Io)?;
    let deadline = std::time::Instant::now() + timeout;
    // Driven one record at a time (not `complete_io`, which loops inside one call): before
    // every socket operation the timeout is what is left until the deadline, so a peer that
    // trickles bytes cannot stretch the handshake.
    let left = || {
        let d = deadline.saturating_duration_since(std::time::Instant::now());
        (!d.is_zero())
            .then_some(d)
            .ok_or(TlsError::HandshakeTimeout(timeout))
    };
    let io_err = |e: io::Error| match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => TlsError::HandshakeTimeout(timeout),
        io::ErrorKind::UnexpectedEof
        | io::ErrorKind::ConnectionReset
        | io::ErrorKind::BrokenPipe => TlsError::ClosedDuringHandshake,
        _ => TlsError::Io(e),
    };
    loop {
        while conn.wants_write() {
            tcp.set_write_timeout(Some(left()?)).map_err(TlsError::Io)?;
            conn.write_tls(tcp).map_err(io_err)?;
        }
        if !conn.is_handshaking() {
            break;
        }
        tcp.set_read_timeout(Some(left()?)).map_err(TlsError::Io)?;
        match conn.read_tls(tcp) {
            Ok(0) => return Err(TlsError::ClosedDuringHandshake),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(io_err(e)),
        }
        if let Err(e) = conn.process_new_packets() {
            // Tell the peer why (the alert rustls queued), best effort.
            let _ = conn.write_tls(tcp);
            return Err(match e {
                rustls::Error::InvalidCertificate(_) => TlsError::Certificate(e.to_string()),
                other => TlsError::Handshake(other.to_string()),
            });
        }
    }
    tcp.set_read_timeout(old_r).map_err(TlsError::Io)?;
    tcp.set_write_timeout(old_w).map_err(TlsError::Io)?;
    Ok(())
}

/// Whether `der` is a CA certificate (basic constraints `CA:TRUE`): not for a server.
pub fn is_ca_certificate(der: &CertificateDer<'_>) -> bool {
    let (Ok(ee), Ok(anchor)) = (
        webpki::EndEntityCert::try_from(der),
        webpki::anchor_from_trusted_cert(der),
    ) else {
        return false;
    };
    let anchors = [anchor];
    let verified = ee.verify_for_usage(
        webpki::ALL_VERIFICATION_ALGS,
        &anchors,
        &[],
        UnixTime::now(),
        webpki::KeyUsage::server_auth(),
        None,
        None,
    );
    matches!(verified, Err(webpki::Error::CaUsedAsEndEntity))
}
