//! Every rustls call of the project lives here.
//!
//! Three roles:
//! - [`TlsAcceptor`]: the proxy's TLS listener toward MTAs (and the test MX's STARTTLS);
//! - [`MxTlsConnector`]: the proxy's STARTTLS / SMTPS client toward MX servers, with the
//!   policies `opportunistic` (any certificate, but the handshake signature is still
//!   verified) and `verify` (chain to the roots and match the name);
//! - [`ProxyClientTls`]: an MTA's TLS client toward the proxy (the `client` module);
//! - [`dane`]: DANE (RFC 7672) matching of a presented chain against TLSA records, and the
//!   verifier [`MxTlsConnector::connect_dane`] enforces it with.
//!
//! All three hand out one blocking stream type, [`TlsStream`] (aliases [`ServerTlsStream`],
//! [`ClientTlsStream`]) over a [`TcpStream`]; [`MaybeTlsStream`] is a connection's stream
//! before and after STARTTLS. The handshake runs with a deadline given by the caller. The
//! ring provider is always passed explicitly: `ClientConfig::builder()` would panic at run
//! time if feature unification ever enabled a second provider.
//!
//! Errors: [`TlsError`] keeps what rustls (or the socket, or the PEM reader) said as its
//! `source()`, boxed where rustls's error is large.

mod client;
pub mod dane;
mod server;
mod stream;
#[cfg(test)]
mod tests;

pub use client::{load_roots, CertPolicy, MxTlsConnector, ProxyClientTls};
pub use greenarrow_proxy_proto::tls_facts::TlsFacts;
/// rustls's reasons and errors, for matching on what a [`TlsError`] holds.
pub use rustls::{CertificateError, Error as RustlsError};
pub use server::TlsAcceptor;
pub use stream::{
    ClientStream, ClientTlsStream, MaybeTlsStream, ServerStream, ServerTlsStream, TlsStream,
};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use std::fmt;
use std::io;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// What went wrong with TLS set-up or a TLS session. The rustls or socket error underneath
/// is the [`source`](std::error::Error::source); the message names it too. rustls's errors
/// are boxed: they are large, and this error travels up in `Result`s.
#[derive(Debug)]
#[non_exhaustive]
pub enum TlsError {
    /// A PEM file could not be read or holds nothing usable.
    Pem { path: PathBuf, error: PemError },
    /// PEM text (not from a file) holds nothing usable.
    PemText(PemError),
    /// rustls refused the configuration.
    Config(Box<rustls::Error>),
    /// rustls refused to build a certificate verifier from the roots.
    Verifier(Box<rustls::client::VerifierBuilderError>),
    /// The private key is not the key of the (first) certificate.
    KeyMismatch,
    /// The name given for the peer is not a valid DNS name or IP address.
    InvalidName(String),
    /// The handshake did not finish within its deadline.
    HandshakeTimeout(Duration),
    /// The peer's certificate was refused (does not chain to the roots, wrong name, expired),
    /// or could not be checked.
    Certificate(CertRefusal),
    /// The handshake failed: a TLS alert, a protocol error.
    Handshake(Box<rustls::Error>),
    /// The peer closed the connection during the handshake.
    ClosedDuringHandshake,
    /// Socket error during the handshake.
    Io(io::Error),
    /// DANE: the certificate chain matches no usable TLSA record (or the chain to a DANE-TA
    /// anchor failed); the handshake was aborted.
    Dane(Box<dane::DaneFailure>),
}

/// Why a certificate was not accepted.
#[derive(Debug)]
#[non_exhaustive]
pub enum CertRefusal {
    /// rustls refused it (its [`rustls::Error::InvalidCertificate`] names why).
    Invalid(Box<rustls::Error>),
    /// Verification was asked for, but there are no trust anchors to verify with.
    NoTrustAnchors,
}

impl CertRefusal {
    /// rustls's reason, when rustls refused the certificate.
    pub fn reason(&self) -> Option<&rustls::CertificateError> {
        match self {
            CertRefusal::Invalid(e) => match e.as_ref() {
                rustls::Error::InvalidCertificate(e) => Some(e),
                _ => None,
            },
            CertRefusal::NoTrustAnchors => None,
        }
    }
}

impl fmt::Display for CertRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CertRefusal::Invalid(e) => write!(f, "{e}"),
            CertRefusal::NoTrustAnchors => write!(
                f,
                "no trust anchors are configured: certificate verification is impossible"
            ),
        }
    }
}

impl std::error::Error for CertRefusal {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            CertRefusal::Invalid(e) => Some(&**e),
            CertRefusal::NoTrustAnchors => None,
        }
    }
}

/// Why PEM input is unusable.
#[derive(Debug)]
#[non_exhaustive]
pub enum PemError {
    /// The file could not be read.
    Read(io::Error),
    /// The certificate PEM is malformed.
    BadCertificate(Box<rustls::pki_types::pem::Error>),
    /// No certificate in it.
    NoCertificate,
    /// No private key could be read from it.
    NoKey(Box<rustls::pki_types::pem::Error>),
    /// rustls refused a certificate as a trust anchor.
    BadAnchor(Box<rustls::Error>),
}

impl fmt::Display for PemError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PemError::Read(e) => write!(f, "{e}"),
            PemError::BadCertificate(e) => write!(f, "bad certificate PEM: {e}"),
            PemError::NoCertificate => write!(f, "no certificate found"),
            PemError::NoKey(e) => write!(f, "no usable private key: {e}"),
            PemError::BadAnchor(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for PemError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            PemError::Read(e) => Some(e),
            PemError::BadCertificate(e) | PemError::NoKey(e) => Some(&**e),
            PemError::BadAnchor(e) => Some(&**e),
            PemError::NoCertificate => None,
        }
    }
}

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TlsError::Pem { path, error } => write!(f, "{}: {error}", path.display()),
            TlsError::PemText(e) => write!(f, "PEM: {e}"),
            TlsError::Config(e) => write!(f, "TLS configuration: {e}"),
            TlsError::Verifier(e) => write!(f, "TLS configuration: {e}"),
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
            TlsError::Certificate(e) => write!(f, "certificate not accepted: {e}"),
            TlsError::Handshake(e) => write!(f, "TLS handshake failed: {e}"),
            TlsError::ClosedDuringHandshake => {
                write!(f, "peer closed the connection during the TLS handshake")
            }
            TlsError::Io(e) => write!(f, "TLS handshake: {e}"),
            TlsError::Dane(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for TlsError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            TlsError::Pem { error, .. } | TlsError::PemText(error) => Some(error),
            TlsError::Config(e) | TlsError::Handshake(e) => Some(&**e),
            TlsError::Verifier(e) => Some(&**e),
            TlsError::Certificate(e) => Some(e),
            TlsError::Io(e) => Some(e),
            TlsError::Dane(e) => Some(&**e),
            TlsError::KeyMismatch
            | TlsError::InvalidName(_)
            | TlsError::HandshakeTimeout(_)
            | TlsError::ClosedDuringHandshake => None,
        }
    }
}

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
        error: PemError::Read(e),
    })
}

pub(crate) fn certs_from_pem(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, PemError> {
    let certs: Result<Vec<_>, _> = CertificateDer::pem_slice_iter(pem).collect();
    let certs = certs.map_err(|e| PemError::BadCertificate(Box::new(e)))?;
    if certs.is_empty() {
        return Err(PemError::NoCertificate);
    }
    Ok(certs)
}

pub(crate) fn key_from_pem(pem: &[u8]) -> Result<PrivateKeyDer<'static>, PemError> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| PemError::NoKey(Box::new(e)))
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
    let deadline = crate::deadline::Deadline::after(timeout);
    // Driven one record at a time (not `complete_io`, which loops inside one call): before
    // every socket operation the timeout is what is left until the deadline, so a peer that
    // trickles bytes cannot stretch the handshake.
    let left = || deadline.left().ok_or(TlsError::HandshakeTimeout(timeout));
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
                rustls::Error::InvalidCertificate(_) => {
                    TlsError::Certificate(CertRefusal::Invalid(Box::new(e)))
                }
                other => TlsError::Handshake(Box::new(other)),
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
