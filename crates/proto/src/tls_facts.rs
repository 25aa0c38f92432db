//! What was negotiated on a TLS session: data, no TLS library.

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
