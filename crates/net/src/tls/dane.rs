//! DANE for SMTP (RFC 7671, RFC 7672): does a presented certificate chain match a TLSA RRset?
//!
//! - DANE-EE(3): the server's own certificate (selector 0) or public key (selector 1) matches;
//!   names and dates are ignored (RFC 7672 section 3.1.1).
//! - DANE-TA(2): a certificate of the presented chain (after the end entity) matches and is
//!   used as the only trust anchor: the chain to it must verify (signatures, dates, server
//!   authentication) and the end entity must be valid for the MX name, the reference
//!   identifier of RFC 7672 section 3.2.2. A TA given only as a bare key that the server does
//!   not send as a certificate is not supported (RFC 7672 section 3.1.2 asks servers to send it).
//! - PKIX-TA(0) and PKIX-EE(1), and unknown selectors or matching types, are unusable: they
//!   are skipped ([`Tlsa::usable`]).
//!
//! [`check`] is the pure verdict (also used to observe a `testing-only` policy after an
//! ordinary handshake); [`DaneVerifier`] is the rustls verifier that enforces it. Handshake
//! signatures are always verified against the end entity's key.

use greenarrow_proxy_proto::tls_policy::dane::{Tlsa, DANE_EE, DANE_TA};
use greenarrow_proxy_proto::tls_policy::rpt::ResultType;
use ring::digest;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use std::fmt;
use std::sync::{Arc, Mutex};

/// Which kind of record matched.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DaneMatch {
    /// A DANE-EE(3) record matched the server's certificate or key.
    Ee,
    /// A DANE-TA(2) record matched a certificate of the chain, which verified to it for the name.
    Ta,
}

/// Why a chain does not satisfy a TLSA RRset.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DaneFailure {
    /// No certificate was presented.
    NoCertificate,
    /// The end-entity certificate could not be parsed.
    BadCertificate(webpki::Error),
    /// No usable record matched the end entity (EE) or a certificate of the chain (TA).
    NoMatch,
    /// A DANE-TA record matched a certificate of the chain, but the chain to it did not verify
    /// or the end entity is not valid for the name (webpki's reason).
    TaChain { name: String, error: webpki::Error },
}

impl DaneFailure {
    /// The RFC 8460 result type it is reported as.
    pub fn result_type(&self) -> ResultType {
        match self {
            DaneFailure::NoMatch => ResultType::TlsaInvalid,
            DaneFailure::TaChain { error, .. } => match error {
                webpki::Error::CertExpired { .. } | webpki::Error::CertNotValidYet { .. } => {
                    ResultType::CertificateExpired
                }
                webpki::Error::CertNotValidForName(_) => ResultType::CertificateHostMismatch,
                webpki::Error::UnknownIssuer => ResultType::CertificateNotTrusted,
                _ => ResultType::ValidationFailure,
            },
            DaneFailure::NoCertificate | DaneFailure::BadCertificate(_) => {
                ResultType::ValidationFailure
            }
        }
    }
}

impl fmt::Display for DaneFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DaneFailure::NoCertificate => f.write_str("the MX presented no certificate"),
            DaneFailure::BadCertificate(e) => write!(f, "the MX certificate is unreadable: {e}"),
            DaneFailure::NoMatch => {
                f.write_str("no TLSA record matches the MX certificate chain (DANE)")
            }
            DaneFailure::TaChain { name, error } => write!(
                f,
                "the MX certificate does not verify to its DANE-TA trust anchor for {name}: {error}"
            ),
        }
    }
}

impl std::error::Error for DaneFailure {}

/// The association data of `cert` for a selector (0 the whole certificate, 1 its
/// SubjectPublicKeyInfo) and a matching type (0 exact, 1 SHA2-256, 2 SHA2-512), as a TLSA
/// record would carry it; `None` for unknown values or an unparsable certificate.
pub fn association(cert: &CertificateDer<'_>, selector: u8, matching: u8) -> Option<Vec<u8>> {
    let spki;
    let selected: &[u8] = match selector {
        0 => cert.as_ref(),
        1 => {
            spki = webpki::EndEntityCert::try_from(cert)
                .ok()?
                .subject_public_key_info();
            spki.as_ref()
        }
        _ => return None,
    };
    match matching {
        0 => Some(selected.to_vec()),
        1 => Some(digest::digest(&digest::SHA256, selected).as_ref().to_vec()),
        2 => Some(digest::digest(&digest::SHA512, selected).as_ref().to_vec()),
        _ => None,
    }
}

/// Whether `record` matches `cert`.
fn matches(record: &Tlsa, cert: &CertificateDer<'_>) -> bool {
    association(cert, record.selector, record.matching).is_some_and(|d| d == record.data)
}

/// The verdict for a presented chain (`chain[0]` the end entity) against `records` (unusable
/// ones are skipped), `name` the MX host name (DANE-TA's reference identifier).
pub fn check(
    records: &[Tlsa],
    chain: &[CertificateDer<'_>],
    name: &str,
    now: UnixTime,
    algorithms: &WebPkiSupportedAlgorithms,
) -> Result<DaneMatch, DaneFailure> {
    let Some((ee, rest)) = chain.split_first() else {
        return Err(DaneFailure::NoCertificate);
    };
    let usable: Vec<&Tlsa> = records.iter().filter(|r| r.usable()).collect();
    if usable.iter().any(|r| r.usage == DANE_EE && matches(r, ee)) {
        return Ok(DaneMatch::Ee);
    }
    let mut failure = DaneFailure::NoMatch;
    for ta in rest
        .iter()
        .filter(|c| usable.iter().any(|r| r.usage == DANE_TA && matches(r, c)))
    {
        let parsed = webpki::EndEntityCert::try_from(ee).map_err(DaneFailure::BadCertificate)?;
        let Ok(anchor) = webpki::anchor_from_trusted_cert(ta) else {
            continue;
        };
        let verified = parsed
            .verify_for_usage(
                algorithms.all,
                &[anchor],
                rest,
                now,
                webpki::KeyUsage::server_auth(),
                None,
                None,
            )
            .map(|_| ())
            .and_then(|()| {
                let server = ServerName::try_from(name.trim_end_matches('.'))
                    .map_err(|_| webpki::Error::MalformedDnsIdentifier)?;
                parsed.verify_is_valid_for_subject_name(&server)
            });
        match verified {
            Ok(()) => return Ok(DaneMatch::Ta),
            Err(error) => {
                failure = DaneFailure::TaChain {
                    name: name.to_string(),
                    error,
                }
            }
        }
    }
    Err(failure)
}

/// The rustls verifier that enforces a TLSA RRset for one connection; its verdict is kept for
/// the caller ([`DaneVerifier::verdict`]), so a refusal stays typed.
#[derive(Debug)]
pub(crate) struct DaneVerifier {
    records: Vec<Tlsa>,
    name: String,
    algorithms: WebPkiSupportedAlgorithms,
    verdict: Mutex<Option<Result<DaneMatch, DaneFailure>>>,
}

impl DaneVerifier {
    pub(crate) fn new(
        records: &[Tlsa],
        name: &str,
        algorithms: WebPkiSupportedAlgorithms,
    ) -> Arc<DaneVerifier> {
        Arc::new(DaneVerifier {
            records: records.to_vec(),
            name: name.to_string(),
            algorithms,
            verdict: Mutex::new(None),
        })
    }

    /// What the handshake's certificate check decided (`None` if it never ran).
    pub(crate) fn verdict(&self) -> Option<Result<DaneMatch, DaneFailure>> {
        self.verdict
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl ServerCertVerifier for DaneVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let mut chain = Vec::with_capacity(intermediates.len() + 1);
        chain.push(end_entity.clone());
        chain.extend(intermediates.iter().cloned());
        let verdict = check(&self.records, &chain, &self.name, now, &self.algorithms);
        let ok = verdict.is_ok();
        *self.verdict.lock().unwrap_or_else(|e| e.into_inner()) = Some(verdict);
        if ok {
            Ok(ServerCertVerified::assertion())
        } else {
            // The typed reason is the verdict; rustls sends the peer a bad_certificate alert.
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::ApplicationVerificationFailure,
            ))
        }
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

#[cfg(test)]
mod tests;
