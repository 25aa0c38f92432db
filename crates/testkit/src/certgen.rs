//! Certificates generated at run time: the private CA, server and client certificates of
//! `gaproxy cert` (an operator's deployment), and those of `gaproxy demo`, the test MX and the
//! tests. Pure: PEM text in and out; writing files (modes, group) is `gaproxy cert`'s job.
//! Generating at run time means the repository holds no key material and nothing that expires.

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, UnixTime};
use std::fmt;
use std::time::Duration;
/// A certificate and its private key, both PEM-encoded.
#[derive(Clone)]
pub struct CertifiedPem {
    /// The certificate, PEM.
    pub cert_pem: String,
    /// The private key (PKCS#8), PEM.
    pub key_pem: String,
}

impl fmt::Debug for CertifiedPem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertifiedPem")
            .field("cert_pem", &self.cert_pem)
            .field("key_pem", &"<redacted>")
            .finish()
    }
}

/// Certificate generation failed (an rcgen error, e.g. an invalid name).
#[derive(Debug)]
pub struct CertGenError(String);

impl fmt::Display for CertGenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "certificate generation failed: {}", self.0)
    }
}

impl std::error::Error for CertGenError {}

impl From<rcgen::Error> for CertGenError {
    fn from(e: rcgen::Error) -> Self {
        CertGenError(e.to_string())
    }
}

/// A self-signed leaf certificate for `names` (DNS names or IP literals).
pub fn self_signed(names: &[&str]) -> Result<CertifiedPem, CertGenError> {
    let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    let ck = rcgen::generate_simple_self_signed(names)?;
    Ok(CertifiedPem {
        cert_pem: ck.cert.pem(),
        key_pem: ck.signing_key.serialize_pem(),
    })
}

/// Default validity of a CA certificate made by [`Ca::generate`], in days.
pub const CA_DAYS: u32 = 3650;
/// Default validity of a server or client certificate, in days (825: the longest that
/// Apple's platforms accept for a TLS server certificate).
pub const LEAF_DAYS: u32 = 825;

/// What an end-entity certificate is for (its extended key usage).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Usage {
    /// A TLS server (`serverAuth`): the proxy's listener.
    Server,
    /// A TLS client (`clientAuth`): an MTA authenticating with a client certificate.
    Client,
}

/// A certificate authority that issues end-entity certificates: one made now
/// ([`Ca::generate`], [`Ca::new`]) or an existing one loaded from PEM ([`Ca::from_pem`]).
pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    cert_pem: String,
}

/// The name the tests and the demo use for a throw-away [`Ca`].
pub type TestCa = Ca;

impl Ca {
    /// A new CA named `common_name`, valid for [`CA_DAYS`] days.
    pub fn new(common_name: &str) -> Result<Ca, CertGenError> {
        Ca::generate(common_name, CA_DAYS)
    }

    /// A new CA named `common_name` (CA:TRUE, keyCertSign and cRLSign), valid from now for
    /// `days` days.
    pub fn generate(common_name: &str, days: u32) -> Result<Ca, CertGenError> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        validity(&mut params, days);
        let key = KeyPair::generate()?;
        let cert_pem = params.self_signed(&key)?.pem();
        Ok(Ca {
            issuer: Issuer::new(params, key),
            cert_pem,
        })
    }

    /// An existing CA: its certificate and private key, PEM. Refused when the certificate
    /// is not a CA certificate or the key is not its key.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Ca, CertGenError> {
        let key = KeyPair::from_pem(key_pem)?;
        let der = CertificateDer::from_pem_slice(cert_pem.as_bytes())
            .map_err(|e| CertGenError(format!("not a PEM certificate: {e}")))?;
        if !greenarrow_proxy_net::tls::is_ca_certificate(&der) {
            return Err(CertGenError(
                "the certificate is not a CA certificate (no CA:TRUE)".into(),
            ));
        }
        let ca = Ca {
            issuer: Issuer::from_ca_cert_pem(cert_pem, key)?,
            cert_pem: cert_pem.to_string(),
        };
        // The key is the certificate's when what it signs verifies against the certificate.
        let probe = ca.issue_for(&["key-check.invalid"], Usage::Server, 1)?;
        verify(cert_pem, &probe.cert_pem, Usage::Server).map_err(|e| {
            CertGenError(format!(
                "the private key is not the key of the CA certificate ({e})"
            ))
        })?;
        Ok(ca)
    }

    /// The CA certificate, PEM (give it to whoever must trust the leaves).
    pub fn cert_pem(&self) -> String {
        self.cert_pem.clone()
    }

    /// The CA's private key, PEM (PKCS#8): whoever holds it can issue certificates that
    /// everything trusting this CA accepts.
    pub fn key_pem(&self) -> String {
        self.issuer.key().serialize_pem()
    }

    /// A leaf certificate for `names` (DNS names or IP literals), signed by this CA, with no
    /// usage restriction (the test MX and the tests).
    pub fn issue(&self, names: &[&str]) -> Result<CertifiedPem, CertGenError> {
        let params = leaf_params(names)?;
        self.sign(params)
    }

    /// An end-entity certificate for `names` (DNS names or IP literals, all in the subject
    /// alternative names, the first also the common name): CA:FALSE, digitalSignature and
    /// keyEncipherment, the extended key usage of `usage`, valid from now for `days` days.
    pub fn issue_for(
        &self,
        names: &[&str],
        usage: Usage,
        days: u32,
    ) -> Result<CertifiedPem, CertGenError> {
        let mut params = usage_params(names, usage)?;
        validity(&mut params, days);
        self.sign(params)
    }

    /// A server certificate for `names` that expired a day ago (valid for the 30 days before):
    /// for tests of what ignores dates (DANE-EE) and what does not (DANE-TA, WebPKI).
    pub fn issue_expired(&self, names: &[&str]) -> Result<CertifiedPem, CertGenError> {
        let mut params = usage_params(names, Usage::Server)?;
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - Duration::from_secs(31 * 86_400);
        params.not_after = now - Duration::from_secs(86_400);
        self.sign(params)
    }

    fn sign(&self, params: CertificateParams) -> Result<CertifiedPem, CertGenError> {
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(CertifiedPem {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

fn leaf_params(names: &[&str]) -> Result<CertificateParams, CertGenError> {
    let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    let mut params = CertificateParams::new(names.clone())?;
    if let Some(first) = names.first() {
        params.distinguished_name.push(DnType::CommonName, first);
    }
    Ok(params)
}

/// Valid from one hour ago (clocks differ a little) for `days` days.
/// A leaf's parameters for `usage` (no validity yet).
fn usage_params(names: &[&str], usage: Usage) -> Result<CertificateParams, CertGenError> {
    let mut params = leaf_params(names)?;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![match usage {
        Usage::Server => ExtendedKeyUsagePurpose::ServerAuth,
        Usage::Client => ExtendedKeyUsagePurpose::ClientAuth,
    }];
    params.use_authority_key_identifier_extension = true;
    Ok(params)
}

fn validity(params: &mut CertificateParams, days: u32) {
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - Duration::from_secs(3600);
    params.not_after = now + Duration::from_secs(u64::from(days) * 86_400);
}

/// Whether the first certificate of `cert_pem` is valid now for `usage`, issued by the CA
/// certificate `ca_pem` (a client of the proxy, or the proxy checking an MTA, would accept
/// it). `Err` says why not.
pub fn verify(ca_pem: &str, cert_pem: &str, usage: Usage) -> Result<(), String> {
    let ca = CertificateDer::from_pem_slice(ca_pem.as_bytes())
        .map_err(|e| format!("the CA certificate: {e}"))?;
    let der = CertificateDer::from_pem_slice(cert_pem.as_bytes())
        .map_err(|e| format!("the certificate: {e}"))?;
    let anchor = webpki::anchor_from_trusted_cert(&ca).map_err(|e| format!("the CA: {e}"))?;
    let ee = webpki::EndEntityCert::try_from(&der).map_err(|e| e.to_string())?;
    let anchors = [anchor];
    ee.verify_for_usage(
        webpki::ALL_VERIFICATION_ALGS,
        &anchors,
        &[],
        UnixTime::now(),
        match usage {
            Usage::Server => webpki::KeyUsage::server_auth(),
            Usage::Client => webpki::KeyUsage::client_auth(),
        },
        None,
        None,
    )
    .map(|_| ())
    .map_err(|e| format!("{e:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generates_pem() {
        let c = self_signed(&["localhost", "127.0.0.1"]).unwrap();
        assert!(c.cert_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(c.key_pem.contains("PRIVATE KEY"));
        assert!(!format!("{c:?}").contains("PRIVATE KEY"));
        let ca = TestCa::new("test CA").unwrap();
        let leaf = ca.issue(&["mx.test"]).unwrap();
        assert_ne!(leaf.cert_pem, ca.cert_pem());
    }

    #[test]
    fn issued_certificates_verify_for_their_usage_only() {
        let ca = Ca::generate("test CA", 30).unwrap();
        let server = ca
            .issue_for(&["proxy.test", "192.0.2.1"], Usage::Server, 10)
            .unwrap();
        let client = ca.issue_for(&["mta1"], Usage::Client, 10).unwrap();
        let ca_pem = ca.cert_pem();
        assert_eq!(verify(&ca_pem, &server.cert_pem, Usage::Server), Ok(()));
        assert_eq!(verify(&ca_pem, &client.cert_pem, Usage::Client), Ok(()));
        assert!(verify(&ca_pem, &server.cert_pem, Usage::Client).is_err());
        assert!(verify(&ca_pem, &client.cert_pem, Usage::Server).is_err());
        // A certificate of another CA does not verify.
        let other = Ca::new("other").unwrap();
        assert!(verify(&other.cert_pem(), &server.cert_pem, Usage::Server).is_err());
        // The server certificate is no CA: the daemon's own check agrees.
        let der = CertificateDer::from_pem_slice(server.cert_pem.as_bytes()).unwrap();
        assert!(!greenarrow_proxy_net::tls::is_ca_certificate(&der));
    }

    #[test]
    fn an_existing_ca_loaded_from_pem_issues_what_its_certificate_verifies() {
        let made = Ca::generate("loaded CA", 30).unwrap();
        let key_pem = made.key_pem();
        assert!(key_pem.contains("PRIVATE KEY"));
        let loaded = Ca::from_pem(&made.cert_pem(), &key_pem).unwrap();
        let leaf = loaded.issue_for(&["proxy.test"], Usage::Server, 5).unwrap();
        assert_eq!(
            verify(&made.cert_pem(), &leaf.cert_pem, Usage::Server),
            Ok(())
        );
        // Another key, or a leaf for a CA: refused.
        let other = KeyPair::generate().unwrap().serialize_pem();
        let e = Ca::from_pem(&made.cert_pem(), &other).err().unwrap();
        assert!(e.to_string().contains("not the key"), "{e}");
        let e = Ca::from_pem(&leaf.cert_pem, &leaf.key_pem).err().unwrap();
        assert!(e.to_string().contains("not a CA"), "{e}");
    }
}
