//! The server side: the proxy's MTA-facing listener (optionally asking for client
//! certificates) and the test MX's STARTTLS.

use super::{
    certs_from_pem, handshake, key_from_pem, provider, read_file, session_facts, versions,
};
use super::{MinVersion, PemError, ServerTlsStream, TlsError};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig, ServerConnection};
use std::net::TcpStream;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

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
        let certs = certs_from_pem(&read_file(cert)?).map_err(|error| TlsError::Pem {
            path: cert.to_owned(),
            error,
        })?;
        let key_der = key_from_pem(&read_file(key)?).map_err(|error| TlsError::Pem {
            path: key.to_owned(),
            error,
        })?;
        let verifier = match client_ca {
            None => None,
            Some(path) => {
                let mut roots = RootCertStore::empty();
                let pem_err = |error: PemError| TlsError::Pem {
                    path: path.to_owned(),
                    error,
                };
                for c in certs_from_pem(&read_file(path)?).map_err(pem_err)? {
                    roots
                        .add(c)
                        .map_err(|e| pem_err(PemError::BadAnchor(Box::new(e))))?;
                }
                let v = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                    .allow_unauthenticated()
                    .build()
                    .map_err(|e| TlsError::Verifier(Box::new(e)))?;
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
            .map_err(|e| TlsError::Config(Box::new(e)))?;
        let builder = match client_verifier {
            Some(v) => builder.with_client_cert_verifier(v),
            None => builder.with_no_client_auth(),
        };
        let config = builder.with_single_cert(certs, key).map_err(|e| match e {
            rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch) => {
                TlsError::KeyMismatch
            }
            e => TlsError::Config(Box::new(e)),
        })?;
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
            .map_err(|e| TlsError::Config(Box::new(e)))?;
        handshake(&mut conn, &mut tcp, timeout)?;
        let facts = session_facts(conn.protocol_version(), conn.negotiated_cipher_suite());
        Ok(ServerTlsStream::new(conn, tcp, facts))
    }
}
