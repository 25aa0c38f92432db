//! The client side: STARTTLS / SMTPS toward MX servers, and an MTA's TLS toward the proxy.

use super::dane::{self, DaneFailure, DaneMatch, DaneVerifier};
use super::{
    certs_from_pem, dns_names, handshake, key_from_pem, provider, read_file, session_facts,
    versions,
};
use super::{CertRefusal, ClientTlsStream, MinVersion, PemError, TlsError};
use greenarrow_proxy_proto::tls_policy::dane::Tlsa;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    ClientConfig, ClientConnection, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use std::net::{IpAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// How the MX's certificate is judged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CertPolicy {
    /// Any certificate is accepted (RFC 7435 opportunistic TLS); the handshake signature is
    /// still verified against the presented certificate, and whether the chain would have
    /// verified is reported in [`super::TlsFacts`].
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
        let certs = certs_from_pem(&read_file(path)?).map_err(|error| TlsError::Pem {
            path: path.to_owned(),
            error,
        })?;
        for cert in certs {
            roots.add(cert).map_err(|e| TlsError::Pem {
                path: path.to_owned(),
                error: PemError::BadAnchor(Box::new(e)),
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
    provider: Arc<CryptoProvider>,
    min: MinVersion,
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
                    .map_err(|e| TlsError::Verifier(Box::new(e)))?;
            let config = ClientConfig::builder_with_provider(provider.clone())
                .with_protocol_versions(versions(min))
                .map_err(|e| TlsError::Config(Box::new(e)))?
                .with_webpki_verifier(verifier.clone())
                .with_no_client_auth();
            Some((Arc::new(config), verifier))
        };
        let any = ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(versions(min))
            .map_err(|e| TlsError::Config(Box::new(e)))?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate {
                algorithms: provider.signature_verification_algorithms,
            }))
            .with_no_client_auth();
        Ok(MxTlsConnector {
            verifying,
            any: Arc::new(any),
            provider,
            min,
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
                return Err(TlsError::Certificate(CertRefusal::NoTrustAnchors))
            }
            (CertPolicy::AcceptAny, _) => self.any.clone(),
        };
        let mut conn =
            ClientConnection::new(config, sn.clone()).map_err(|e| TlsError::Config(Box::new(e)))?;
        handshake(&mut conn, &mut tcp, timeout)?;
        let facts = self.facts(&conn, &sn);
        Ok(ClientTlsStream::new(conn, tcp, facts))
    }

    /// Run a client handshake under DANE (RFC 7672): the chain must satisfy the usable
    /// records of `records` for the MX host `name` (also sent as SNI). Which kind of record
    /// matched comes back with the stream; a chain that matches none is
    /// [`TlsError::Dane`]. Whether the chain would also verify by WebPKI for `name` is in the
    /// stream's [`super::TlsFacts`], as for any connection.
    pub fn connect_dane(
        &self,
        mut tcp: TcpStream,
        records: &[Tlsa],
        name: &str,
        ip: IpAddr,
        timeout: Duration,
    ) -> Result<(ClientTlsStream, DaneMatch), TlsError> {
        let sn = server_name(Some(name), ip)?;
        let verifier = DaneVerifier::new(
            records,
            name,
            self.provider.signature_verification_algorithms,
        );
        let config = ClientConfig::builder_with_provider(self.provider.clone())
            .with_protocol_versions(versions(self.min))
            .map_err(|e| TlsError::Config(Box::new(e)))?
            .dangerous()
            .with_custom_certificate_verifier(verifier.clone())
            .with_no_client_auth();
        let mut conn = ClientConnection::new(Arc::new(config), sn.clone())
            .map_err(|e| TlsError::Config(Box::new(e)))?;
        let shaken = handshake(&mut conn, &mut tcp, timeout);
        let matched = match (shaken, verifier.verdict()) {
            (_, Some(Err(failure))) => return Err(TlsError::Dane(Box::new(failure))),
            (Err(e), _) => return Err(e),
            (Ok(()), Some(Ok(m))) => m,
            (Ok(()), None) => return Err(TlsError::Dane(Box::new(DaneFailure::NoCertificate))),
        };
        let facts = self.facts(&conn, &sn);
        Ok((ClientTlsStream::new(conn, tcp, facts), matched))
    }

    /// Check an established connection's chain against `records` for `name` without having
    /// enforced it (a `testing-only` DANE policy is observed this way).
    pub fn dane_check(
        &self,
        stream: &ClientTlsStream,
        records: &[Tlsa],
        name: &str,
    ) -> Result<DaneMatch, DaneFailure> {
        dane::check(
            records,
            stream.peer_chain(),
            name,
            UnixTime::now(),
            &self.provider.signature_verification_algorithms,
        )
    }

    /// The facts of a finished handshake, with whether the chain verifies by WebPKI for `sn`.
    fn facts(&self, conn: &ClientConnection, sn: &ServerName<'static>) -> super::TlsFacts {
        let mut facts = session_facts(conn.protocol_version(), conn.negotiated_cipher_suite());
        match conn.peer_certificates() {
            Some([ee, rest @ ..]) => {
                facts.peer_names = dns_names(ee);
                let outcome = match &self.verifying {
                    Some((_, verifier)) => verifier
                        .verify_server_cert(ee, rest, sn, &[], UnixTime::now())
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
        facts
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
            TlsError::PemText(error) => TlsError::Pem {
                path: path.to_owned(),
                error,
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
                .map_err(|e| TlsError::PemText(PemError::BadAnchor(Box::new(e))))?;
        }
        let config = ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(versions(MinVersion::Tls12))
            .map_err(|e| TlsError::Config(Box::new(e)))?
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
            .map_err(|e| TlsError::Config(Box::new(e)))?
            .with_root_certificates(self.roots.clone())
            .with_client_auth_cert(certs, key)
            .map_err(|e| TlsError::Config(Box::new(e)))?;
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
            .map_err(|e| TlsError::Config(Box::new(e)))?;
        handshake(&mut conn, &mut tcp, timeout)?;
        let facts = session_facts(conn.protocol_version(), conn.negotiated_cipher_suite());
        Ok(ClientTlsStream::new(conn, tcp, facts))
    }
}
