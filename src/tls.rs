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

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::{
    ClientConfig, ClientConnection, DigitallySignedStruct, RootCertStore, ServerConfig,
    ServerConnection, SignatureScheme, StreamOwned,
};
use std::fmt;
use std::io::{self, Read, Write};
use std::net::{IpAddr, TcpStream};
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
    /// rustls refused the configuration (e.g. key does not match certificate).
    Config(String),
    /// The name given for the peer is not a valid DNS name or IP address.
    InvalidName(String),
    /// The handshake did not finish within its deadline.
    HandshakeTimeout(Duration),
    /// The handshake failed: a TLS alert, a bad certificate, a protocol error.
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
            TlsError::InvalidName(n) => write!(f, "invalid TLS name {n:?}"),
            TlsError::HandshakeTimeout(d) => {
                write!(
                    f,
                    "TLS handshake timed out after {}",
                    humantime::format_duration(*d)
                )
            }
            TlsError::Handshake(d) => write!(f, "TLS handshake failed: {d}"),
            TlsError::ClosedDuringHandshake => {
                write!(f, "peer closed the connection during the TLS handshake")
            }
            TlsError::Io(e) => write!(f, "TLS handshake: {e}"),
        }
    }
}

impl std::error::Error for TlsError {}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Minimum TLS protocol version accepted toward MX servers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MinVersion {
    Tls12,
    Tls13,
}

fn versions(min: MinVersion) -> &'static [&'static rustls::SupportedProtocolVersion] {
    static BOTH: [&rustls::SupportedProtocolVersion; 2] =
        [&rustls::version::TLS13, &rustls::version::TLS12];
    static ONLY13: [&rustls::SupportedProtocolVersion; 1] = [&rustls::version::TLS13];
    match min {
        MinVersion::Tls12 => &BOTH,
        MinVersion::Tls13 => &ONLY13,
    }
}

fn read_file(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|e| TlsError::Pem {
        path: path.to_owned(),
        detail: e.to_string(),
    })
}

fn certs_from_pem(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Result<Vec<_>, _> = CertificateDer::pem_slice_iter(pem).collect();
    let certs = certs.map_err(|e| format!("bad certificate PEM: {e}"))?;
    if certs.is_empty() {
        return Err("no certificate found".into());
    }
    Ok(certs)
}

fn key_from_pem(pem: &[u8]) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| format!("no usable private key: {e}"))
}

/// Facts about an established TLS session, for the connect reply and the logs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsFacts {
    /// e.g. `TLSv1.3`.
    pub version: String,
    /// e.g. `TLS13_AES_256_GCM_SHA384`.
    pub cipher: String,
    /// Whether the peer certificate chains to the roots and matches the name.
    pub verified: bool,
    /// Why it did not verify (empty when verified).
    pub verify_error: String,
    /// DNS names in the peer certificate (subjectAltName).
    pub peer_names: Vec<String>,
}

fn session_facts(
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

fn dns_names(cert: &CertificateDer<'_>) -> Vec<String> {
    match webpki::EndEntityCert::try_from(cert) {
        Ok(ee) => ee.valid_dns_names().map(str::to_string).collect(),
        Err(_) => Vec::new(),
    }
}

/// Drive a handshake to completion with a deadline on every socket read and write.
fn handshake<C, S>(conn: &mut C, tcp: &mut TcpStream, timeout: Duration) -> Result<(), TlsError>
where
    C: std::ops::DerefMut<Target = rustls::ConnectionCommon<S>>,
    S: rustls::SideData,
{
    let old_r = tcp.read_timeout().map_err(TlsError::Io)?;
    let old_w = tcp.write_timeout().map_err(TlsError::Io)?;
    tcp.set_read_timeout(Some(timeout)).map_err(TlsError::Io)?;
    tcp.set_write_timeout(Some(timeout)).map_err(TlsError::Io)?;
    let deadline = std::time::Instant::now() + timeout;
    while conn.is_handshaking() {
        if std::time::Instant::now() >= deadline {
            return Err(TlsError::HandshakeTimeout(timeout));
        }
        match conn.complete_io(tcp) {
            Ok((0, 0)) if conn.is_handshaking() && !conn.wants_write() => {
                return Err(TlsError::ClosedDuringHandshake)
            }
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Err(TlsError::HandshakeTimeout(timeout))
            }
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                return Err(TlsError::ClosedDuringHandshake)
            }
            Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                return Err(TlsError::Handshake(e.to_string()))
            }
            Err(e) => return Err(TlsError::Io(e)),
        }
    }
    // Flush whatever the handshake left to send (e.g. the client's Finished).
    while conn.wants_write() {
        conn.write_tls(tcp).map_err(TlsError::Io)?;
    }
    tcp.set_read_timeout(old_r).map_err(TlsError::Io)?;
    tcp.set_write_timeout(old_w).map_err(TlsError::Io)?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Server side

/// Accepts TLS connections with one certificate (the proxy's MTA-facing listener, the test MX).
#[derive(Clone)]
pub struct TlsAcceptor {
    config: Arc<ServerConfig>,
}

impl TlsAcceptor {
    /// Load the certificate chain and private key from PEM files.
    pub fn from_pem_files(cert: &Path, key: &Path) -> Result<TlsAcceptor, TlsError> {
        Self::from_pem_files_with_client_ca(cert, key, None)
    }

    /// As [`TlsAcceptor::from_pem_files`], and when `client_ca` is given, ask clients for a
    /// certificate issued by it (optional: clients without one can still authenticate with a
    /// secret; a certificate that does not verify fails the handshake).
    pub fn from_pem_files_with_client_ca(
        cert: &Path,
        key: &Path,
        client_ca: Option<&Path>,
    ) -> Result<TlsAcceptor, TlsError> {
        let certs = certs_from_pem(&read_file(cert)?).map_err(|detail| TlsError::Pem {
            path: cert.to_owned(),
            detail,
        })?;
        let key_der = key_from_pem(&read_file(key)?).map_err(|detail| TlsError::Pem {
            path: key.to_owned(),
            detail,
        })?;
        let verifier = match client_ca {
            None => None,
            Some(path) => {
                let mut roots = RootCertStore::empty();
                let pem_err = |detail: String| TlsError::Pem {
                    path: path.to_owned(),
                    detail,
                };
                for c in certs_from_pem(&read_file(path)?).map_err(pem_err)? {
                    roots.add(c).map_err(|e| pem_err(e.to_string()))?;
                }
                let v = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                    .allow_unauthenticated()
                    .build()
                    .map_err(|e| TlsError::Config(e.to_string()))?;
                Some(v)
            }
        };
        Self::build_with(certs, key_der, verifier)
    }

    /// Build from PEM text (generated certificates).
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<TlsAcceptor, TlsError> {
        let certs = certs_from_pem(cert_pem.as_bytes()).map_err(TlsError::PemText)?;
        let key = key_from_pem(key_pem.as_bytes()).map_err(TlsError::PemText)?;
        Self::build(certs, key)
    }

    fn build(
        certs: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> Result<TlsAcceptor, TlsError> {
        Self::build_with(certs, key, None)
    }

    fn build_with(
        certs: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
        client_verifier: Option<Arc<dyn rustls::server::danger::ClientCertVerifier>>,
    ) -> Result<TlsAcceptor, TlsError> {
        let builder = ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(versions(MinVersion::Tls12))
            .map_err(|e| TlsError::Config(e.to_string()))?;
        let builder = match client_verifier {
            Some(v) => builder.with_client_cert_verifier(v),
            None => builder.with_no_client_auth(),
        };
        let config = builder
            .with_single_cert(certs, key)
            .map_err(|e| TlsError::Config(e.to_string()))?;
        Ok(TlsAcceptor {
            config: Arc::new(config),
        })
    }

    /// Run the server handshake on `tcp`, bounded by `timeout`.
    pub fn accept(
        &self,
        mut tcp: TcpStream,
        timeout: Duration,
    ) -> Result<ServerTlsStream, TlsError> {
        let mut conn = ServerConnection::new(self.config.clone())
            .map_err(|e| TlsError::Config(e.to_string()))?;
        handshake(&mut conn, &mut tcp, timeout)?;
        Ok(ServerTlsStream {
            inner: StreamOwned::new(conn, tcp),
        })
    }
}

/// A server-side TLS stream (blocking).
pub struct ServerTlsStream {
    inner: StreamOwned<ServerConnection, TcpStream>,
}

impl ServerTlsStream {
    /// The underlying socket (for timeouts, addresses, shutdown).
    pub fn tcp(&self) -> &TcpStream {
        &self.inner.sock
    }

    /// DNS names of the client's certificate, when it presented one (rustls has verified it
    /// against the client CA during the handshake).
    pub fn peer_names(&self) -> Vec<String> {
        match self.inner.conn.peer_certificates() {
            Some([ee, ..]) => dns_names(ee),
            _ => Vec::new(),
        }
    }

    /// Protocol version and cipher suite negotiated.
    pub fn facts(&self) -> TlsFacts {
        session_facts(
            self.inner.conn.protocol_version(),
            self.inner.conn.negotiated_cipher_suite(),
        )
    }

    /// Send close_notify (best effort) and shut the socket down.
    pub fn close(mut self) {
        self.inner.conn.send_close_notify();
        let _ = self.inner.flush();
        let _ = self.inner.sock.shutdown(std::net::Shutdown::Both);
    }
}

impl Read for ServerTlsStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read(buf)
    }
}

impl Write for ServerTlsStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.inner.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

// ---------------------------------------------------------------------------------------------
// Client side

/// How the MX's certificate is judged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CertPolicy {
    /// Any certificate is accepted (RFC 7435 opportunistic TLS); the handshake signature is
    /// still verified against the presented certificate, and whether the chain would have
    /// verified is reported in [`TlsFacts`].
    AcceptAny,
    /// The chain must verify against the roots and match the name.
    Verify,
}

/// Accepts any certificate chain but verifies every handshake signature with the provider's
/// algorithms: an active attacker still cannot complete a handshake with a certificate whose
/// key it does not hold.
#[derive(Debug)]
struct AnyCertificate {
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// Load the system roots (rustls-native-certs, which honours SSL_CERT_FILE / SSL_CERT_DIR) and
/// an optional extra CA file. Unreadable system certificates are skipped; an unreadable extra
/// file is an error.
pub fn load_roots(extra_ca_file: Option<&Path>) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for cert in native.certs {
        let _ = roots.add(cert);
    }
    if let Some(path) = extra_ca_file {
        let certs = certs_from_pem(&read_file(path)?).map_err(|detail| TlsError::Pem {
            path: path.to_owned(),
            detail,
        })?;
        for cert in certs {
            roots.add(cert).map_err(|e| TlsError::Pem {
                path: path.to_owned(),
                detail: e.to_string(),
            })?;
        }
    }
    Ok(roots)
}

fn server_name(name: Option<&str>, ip: IpAddr) -> Result<ServerName<'static>, TlsError> {
    match name {
        Some(n) => ServerName::try_from(n.trim_end_matches('.').to_string())
            .map_err(|_| TlsError::InvalidName(n.to_string())),
        None => Ok(ServerName::IpAddress(ip.into())),
    }
}

/// The proxy's TLS client toward MX servers. Built once (loading roots is costly) and shared.
#[derive(Clone)]
pub struct MxTlsConnector {
    /// `None` when there are no trust anchors at all: `verify` is then impossible.
    verifying: Option<(Arc<ClientConfig>, Arc<WebPkiServerVerifier>)>,
    any: Arc<ClientConfig>,
}

impl MxTlsConnector {
    /// Build with the given roots and minimum protocol version.
    pub fn new(roots: RootCertStore, min: MinVersion) -> Result<MxTlsConnector, TlsError> {
        let provider = provider();
        let verifying = if roots.is_empty() {
            None
        } else {
            let verifier =
                WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                    .build()
                    .map_err(|e| TlsError::Config(e.to_string()))?;
            let config = ClientConfig::builder_with_provider(provider.clone())
                .with_protocol_versions(versions(min))
                .map_err(|e| TlsError::Config(e.to_string()))?
                .with_webpki_verifier(verifier.clone())
                .with_no_client_auth();
            Some((Arc::new(config), verifier))
        };
        let any = ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(versions(min))
            .map_err(|e| TlsError::Config(e.to_string()))?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate {
                algorithms: provider.signature_verification_algorithms,
            }))
            .with_no_client_auth();
        Ok(MxTlsConnector {
            verifying,
            any: Arc::new(any),
        })
    }

    /// Run a client handshake on `tcp` toward the MX at `ip`, sending `name` as SNI when given
    /// (an IP address is never sent as SNI). Under [`CertPolicy::Verify`] the certificate
    /// must match `name` (or `ip` when no name is given).
    pub fn connect(
        &self,
        mut tcp: TcpStream,
        policy: CertPolicy,
        name: Option<&str>,
        ip: IpAddr,
        timeout: Duration,
    ) -> Result<ClientTlsStream, TlsError> {
        let sn = server_name(name, ip)?;
        let config = match (policy, &self.verifying) {
            (CertPolicy::Verify, Some((config, _))) => config.clone(),
            (CertPolicy::Verify, None) => {
                return Err(TlsError::Handshake(
                    "no trust anchors are configured: certificate verification is impossible"
                        .into(),
                ))
            }
            (CertPolicy::AcceptAny, _) => self.any.clone(),
        };
        let mut conn = ClientConnection::new(config, sn.clone())
            .map_err(|e| TlsError::Config(e.to_string()))?;
        handshake(&mut conn, &mut tcp, timeout)?;
        let mut facts = session_facts(conn.protocol_version(), conn.negotiated_cipher_suite());
        match conn.peer_certificates() {
            Some([ee, rest @ ..]) => {
                facts.peer_names = dns_names(ee);
                let outcome = match &self.verifying {
                    Some((_, verifier)) => verifier
                        .verify_server_cert(ee, rest, &sn, &[], UnixTime::now())
                        .map(|_| ())
                        .map_err(|e| e.to_string()),
                    None => Err("no trust anchors are configured".to_string()),
                };
                match outcome {
                    Ok(()) => facts.verified = true,
                    Err(e) => facts.verify_error = e,
                }
            }
            _ => facts.verify_error = "no certificate presented".into(),
        }
        Ok(ClientTlsStream {
            inner: StreamOwned::new(conn, tcp),
            facts,
        })
    }
}

/// A client-side TLS stream (blocking), with the facts of its handshake.
pub struct ClientTlsStream {
    inner: StreamOwned<ClientConnection, TcpStream>,
    facts: TlsFacts,
}

impl ClientTlsStream {
    /// The underlying socket.
    pub fn tcp(&self) -> &TcpStream {
        &self.inner.sock
    }

    /// Facts of the handshake.
    pub fn facts(&self) -> &TlsFacts {
        &self.facts
    }

    /// Send close_notify (best effort) and shut the socket down.
    pub fn close(mut self) {
        self.inner.conn.send_close_notify();
        let _ = self.inner.flush();
        let _ = self.inner.sock.shutdown(std::net::Shutdown::Both);
    }
}

impl Read for ClientTlsStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read(buf)
    }
}

impl Write for ClientTlsStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.inner.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// An MTA's TLS client configuration toward the proxy: trusts only the given CA/certificate.
#[derive(Clone)]
pub struct ProxyClientTls {
    config: Arc<ClientConfig>,
    roots: RootCertStore,
}

impl ProxyClientTls {
    /// Trust the certificates in a PEM file (a CA, or the proxy's own certificate).
    pub fn from_ca_file(path: &Path) -> Result<ProxyClientTls, TlsError> {
        let pem = read_file(path)?;
        Self::from_ca_pem(&pem).map_err(|e| match e {
            TlsError::PemText(detail) => TlsError::Pem {
                path: path.to_owned(),
                detail,
            },
            other => other,
        })
    }

    /// Trust the certificates in PEM text.
    pub fn from_ca_pem(pem: &[u8]) -> Result<ProxyClientTls, TlsError> {
        let mut roots = RootCertStore::empty();
        for cert in certs_from_pem(pem).map_err(TlsError::PemText)? {
            roots
                .add(cert)
                .map_err(|e| TlsError::PemText(e.to_string()))?;
        }
        let config = ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(versions(MinVersion::Tls12))
            .map_err(|e| TlsError::Config(e.to_string()))?
            .with_root_certificates(roots.clone())
            .with_no_client_auth();
        Ok(ProxyClientTls {
            config: Arc::new(config),
            roots,
        })
    }

    /// Present this certificate chain and key to the proxy (mutual TLS).
    pub fn with_client_cert(
        self,
        cert_pem: &[u8],
        key_pem: &[u8],
    ) -> Result<ProxyClientTls, TlsError> {
        let certs = certs_from_pem(cert_pem).map_err(TlsError::PemText)?;
        let key = key_from_pem(key_pem).map_err(TlsError::PemText)?;
        let config = ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(versions(MinVersion::Tls12))
            .map_err(|e| TlsError::Config(e.to_string()))?
            .with_root_certificates(self.roots.clone())
            .with_client_auth_cert(certs, key)
            .map_err(|e| TlsError::Config(e.to_string()))?;
        Ok(ProxyClientTls {
            config: Arc::new(config),
            roots: self.roots,
        })
    }

    /// Handshake with the proxy on `tcp`; `name` must match the proxy's certificate (a DNS
    /// name or an IP address).
    pub fn connect(
        &self,
        mut tcp: TcpStream,
        name: &str,
        timeout: Duration,
    ) -> Result<ClientTlsStream, TlsError> {
        let sn = ServerName::try_from(name.to_string())
            .map_err(|_| TlsError::InvalidName(name.to_string()))?;
        let mut conn = ClientConnection::new(self.config.clone(), sn)
            .map_err(|e| TlsError::Config(e.to_string()))?;
        handshake(&mut conn, &mut tcp, timeout)?;
        let facts = session_facts(conn.protocol_version(), conn.negotiated_cipher_suite());
        Ok(ClientTlsStream {
            inner: StreamOwned::new(conn, tcp),
            facts,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::certgen;
    use std::net::TcpListener;

    fn pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (s, _) = l.accept().unwrap();
        (c, s)
    }

    #[test]
    fn client_and_server_talk_and_verify() {
        let ca = certgen::TestCa::new("t").unwrap();
        let leaf = ca.issue(&["mx.test"]).unwrap();
        let acceptor = TlsAcceptor::from_pem(&leaf.cert_pem, &leaf.key_pem).unwrap();
        let (c, s) = pair();
        let t = std::thread::spawn(move || {
            let mut s = acceptor.accept(s, Duration::from_secs(5)).unwrap();
            let mut b = [0u8; 5];
            s.read_exact(&mut b).unwrap();
            s.write_all(&b).unwrap();
            s.flush().unwrap();
            s.facts()
        });
        let mut roots = RootCertStore::empty();
        roots
            .add(certs_from_pem(ca.cert_pem().as_bytes()).unwrap().remove(0))
            .unwrap();
        let conn = MxTlsConnector::new(roots, MinVersion::Tls12).unwrap();
        let mut cs = conn
            .connect(
                c,
                CertPolicy::Verify,
                Some("mx.test"),
                "127.0.0.1".parse().unwrap(),
                Duration::from_secs(5),
            )
            .unwrap();
        cs.write_all(b"hello").unwrap();
        let mut b = [0u8; 5];
        cs.read_exact(&mut b).unwrap();
        assert_eq!(&b, b"hello");
        assert!(cs.facts().verified);
        assert_eq!(cs.facts().peer_names, vec!["mx.test".to_string()]);
        assert_eq!(cs.facts().version, "TLSv1.3");
        let sf = t.join().unwrap();
        assert_eq!(sf.version, "TLSv1.3");
    }

    #[test]
    fn accept_any_reports_unverified_and_verify_fails() {
        let leaf = certgen::self_signed(&["mx.test"]).unwrap();
        let acceptor = TlsAcceptor::from_pem(&leaf.cert_pem, &leaf.key_pem).unwrap();
        let other_ca = certgen::TestCa::new("unrelated").unwrap();
        let mut roots = RootCertStore::empty();
        roots
            .add(
                certs_from_pem(other_ca.cert_pem().as_bytes())
                    .unwrap()
                    .remove(0),
            )
            .unwrap();
        let conn = MxTlsConnector::new(roots, MinVersion::Tls12).unwrap();
        let ip: IpAddr = "127.0.0.1".parse().unwrap();

        let (c, s) = pair();
        let a = acceptor.clone();
        let t = std::thread::spawn(move || a.accept(s, Duration::from_secs(5)).map(|_| ()));
        let cs = conn
            .connect(
                c,
                CertPolicy::AcceptAny,
                Some("mx.test"),
                ip,
                Duration::from_secs(5),
            )
            .unwrap();
        assert!(!cs.facts().verified);
        assert!(!cs.facts().verify_error.is_empty());
        t.join().unwrap().unwrap();

        let (c, s) = pair();
        let t = std::thread::spawn(move || acceptor.accept(s, Duration::from_secs(5)).map(|_| ()));
        let err = conn
            .connect(
                c,
                CertPolicy::Verify,
                Some("mx.test"),
                ip,
                Duration::from_secs(5),
            )
            .err()
            .unwrap();
        assert!(matches!(err, TlsError::Handshake(_)), "{err}");
        assert!(t.join().unwrap().is_err());
    }

    #[test]
    fn handshake_times_out_against_a_silent_peer() {
        let conn = MxTlsConnector::new(RootCertStore::empty(), MinVersion::Tls12).unwrap();
        let (c, _s) = pair();
        let err = conn
            .connect(
                c,
                CertPolicy::AcceptAny,
                None,
                "127.0.0.1".parse().unwrap(),
                Duration::from_millis(200),
            )
            .err()
            .unwrap();
        assert!(matches!(err, TlsError::HandshakeTimeout(_)), "{err}");
    }

    #[test]
    fn client_certificates_are_verified_and_their_names_reported() {
        let dir = std::env::temp_dir().join(format!("gap-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let server_ca = certgen::TestCa::new("server CA").unwrap();
        let server = server_ca.issue(&["localhost"]).unwrap();
        let client_ca = certgen::TestCa::new("client CA").unwrap();
        let client = client_ca.issue(&["mta1.test"]).unwrap();
        let (c, k, ca) = (dir.join("c.pem"), dir.join("k.pem"), dir.join("ca.pem"));
        std::fs::write(&c, &server.cert_pem).unwrap();
        std::fs::write(&k, &server.key_pem).unwrap();
        std::fs::write(&ca, client_ca.cert_pem()).unwrap();
        let acceptor = TlsAcceptor::from_pem_files_with_client_ca(&c, &k, Some(&ca)).unwrap();
        let (ct, st) = pair();
        let t = std::thread::spawn(move || {
            let mut s = acceptor.accept(st, Duration::from_secs(5)).unwrap();
            let mut b = [0u8; 2];
            s.read_exact(&mut b).unwrap();
            s.peer_names()
        });
        let tls = ProxyClientTls::from_ca_pem(server_ca.cert_pem().as_bytes())
            .unwrap()
            .with_client_cert(client.cert_pem.as_bytes(), client.key_pem.as_bytes())
            .unwrap();
        let mut cs = tls
            .connect(ct, "localhost", Duration::from_secs(5))
            .unwrap();
        cs.write_all(b"hi").unwrap();
        cs.flush().unwrap();
        assert_eq!(t.join().unwrap(), vec!["mta1.test".to_string()]);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn bad_pem_is_reported_with_the_path() {
        let err = TlsAcceptor::from_pem_files(Path::new("/nonexistent/cert.pem"), Path::new("/x"))
            .err()
            .unwrap();
        assert!(err.to_string().contains("/nonexistent/cert.pem"), "{err}");
        assert!(TlsAcceptor::from_pem("junk", "junk").is_err());
    }
}
