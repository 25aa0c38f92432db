//! Certificates generated at run time, for `gaproxy demo`, the test MX and the tests.
//!
//! Nothing here is used by the daemon on a real deployment: operators bring their own
//! certificate and key (see `tls_certificate` in the configuration). Generating at run time
//! means the repository holds no key material and nothing that expires.

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
};
use std::fmt;

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

/// A throw-away certificate authority that issues leaf certificates.
pub struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl TestCa {
    /// A new CA named `common_name`.
    pub fn new(common_name: &str) -> Result<TestCa, CertGenError> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate()?;
        Ok(TestCa {
            issuer: CertifiedIssuer::self_signed(params, key)?,
        })
    }

    /// The CA certificate, PEM (give it to whoever must trust the leaves).
    pub fn cert_pem(&self) -> String {
        self.issuer.as_ref().pem()
    }

    /// A leaf certificate for `names` (DNS names or IP literals), signed by this CA.
    pub fn issue(&self, names: &[&str]) -> Result<CertifiedPem, CertGenError> {
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let mut params = CertificateParams::new(names.clone())?;
        if let Some(first) = names.first() {
            params.distinguished_name.push(DnType::CommonName, first);
        }
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(CertifiedPem {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
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
}
