//! TLSA records (RFC 6698, RFC 7671, RFC 7672) as data: usage, selector, matching type and the
//! association data, and how the DNS answered (secure, insecure, bogus). Matching a certificate
//! needs hashing and X.509 parsing, so it lives beside the TLS code in crates/net.
