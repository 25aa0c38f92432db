//! The decision: from the MTA's `tls=`, the configuration's [`super::Enforcement`]s and what
//! the DANE and MTA-STS look-ups found, what a connection must be to carry the request
//! ([`crate::protocol::reuse::TlsWant`]), which [`super::Applied`] policy that is, or why the
//! request is refused or deferred.
