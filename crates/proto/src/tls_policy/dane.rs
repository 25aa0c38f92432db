//! TLSA records (RFC 6698, RFC 7671, RFC 7672) as data: usage, selector, matching type and the
//! association data, and how the DNS answered (secure, insecure, bogus). Matching a certificate
//! needs hashing and X.509 parsing, so it lives beside the TLS code in crates/net.

use std::fmt;

/// Certificate usage DANE-TA (RFC 7218): a trust anchor in the presented chain.
pub const DANE_TA: u8 = 2;
/// Certificate usage DANE-EE (RFC 7218): the server's own certificate or key.
pub const DANE_EE: u8 = 3;

/// One TLSA record: `usage selector matching data`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tlsa {
    /// 0 PKIX-TA, 1 PKIX-EE, 2 DANE-TA, 3 DANE-EE.
    pub usage: u8,
    /// 0 the full certificate, 1 its SubjectPublicKeyInfo.
    pub selector: u8,
    /// 0 exact, 1 SHA2-256, 2 SHA2-512.
    pub matching: u8,
    /// The certificate association data.
    pub data: Vec<u8>,
}

impl Tlsa {
    /// Usable for SMTP (RFC 7672 section 3.1): DANE-TA or DANE-EE, a known selector, a known
    /// matching type whose digest has the right length. PKIX-TA/PKIX-EE records are unusable.
    pub fn usable(&self) -> bool {
        let usage = self.usage == DANE_TA || self.usage == DANE_EE;
        let data = match self.matching {
            0 => !self.data.is_empty(),
            1 => self.data.len() == 32,
            2 => self.data.len() == 64,
            _ => false,
        };
        usage && self.selector <= 1 && data
    }
}

impl fmt::Display for Tlsa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} {} ", self.usage, self.selector, self.matching)?;
        for b in &self.data {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// A DNSSEC-secure, non-empty TLSA RRset, sorted (its identity does not depend on the order
/// the DNS gave it in).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TlsaSet {
    records: Vec<Tlsa>,
}

impl TlsaSet {
    /// The set of `records` (sorted, duplicates removed).
    pub fn new(mut records: Vec<Tlsa>) -> TlsaSet {
        records.sort();
        records.dedup();
        TlsaSet { records }
    }

    /// Every record, usable or not.
    pub fn records(&self) -> &[Tlsa] {
        &self.records
    }

    /// The usable records (RFC 7672 section 3.1).
    pub fn usable(&self) -> impl Iterator<Item = &Tlsa> {
        self.records.iter().filter(|r| r.usable())
    }

    /// Whether any record is usable. A secure set with none makes TLS mandatory but
    /// unauthenticated (RFC 7672 section 2.2).
    pub fn has_usable(&self) -> bool {
        self.usable().next().is_some()
    }

    /// A short stable fingerprint of the set (64-bit FNV-1a over the sorted records): what,
    /// beside the MX name, identifies what a DANE connection was verified against, so the
    /// pool never hands it to a request that looked up another set.
    pub fn fingerprint(&self) -> u64 {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        let mut eat = |b: u8| {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        };
        for r in &self.records {
            for b in [r.usage, r.selector, r.matching] {
                eat(b);
            }
            for b in (r.data.len() as u32).to_be_bytes() {
                eat(b);
            }
            for &b in &r.data {
                eat(b);
            }
        }
        h
    }
}

/// What the TLSA look-up of `_<port>._tcp.<mx>` found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DaneFinding {
    /// Not looked up: DANE is off, the MX has no name (an IP literal), or the resolver is not
    /// trusted to validate.
    NotLookedUp,
    /// The answer (records or none) is not DNSSEC-secure: DANE does not apply.
    Insecure,
    /// DNSSEC-secure proof that there are no TLSA records: DANE does not apply.
    NoRecords,
    /// A DNSSEC-secure TLSA RRset.
    Secure(TlsaSet),
    /// The look-up failed or the answer was bogus (validation failed): the MX must not be used
    /// for now (RFC 7672 section 2.2).
    Failed(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(usage: u8, selector: u8, matching: u8, len: usize) -> Tlsa {
        Tlsa {
            usage,
            selector,
            matching,
            data: vec![0xab; len],
        }
    }

    #[test]
    fn usable_records() {
        assert!(rec(3, 1, 1, 32).usable());
        assert!(rec(2, 0, 2, 64).usable());
        assert!(rec(3, 0, 0, 500).usable());
        assert!(!rec(1, 1, 1, 32).usable(), "PKIX-EE is unusable for SMTP");
        assert!(!rec(0, 0, 1, 32).usable(), "PKIX-TA is unusable for SMTP");
        assert!(!rec(3, 1, 1, 31).usable(), "a short SHA-256");
        assert!(!rec(3, 2, 1, 32).usable(), "unknown selector");
        assert!(!rec(3, 1, 3, 32).usable(), "unknown matching type");
        assert!(!rec(3, 1, 0, 0).usable());
    }

    #[test]
    fn set_identity_ignores_order_and_duplicates() {
        let a = TlsaSet::new(vec![rec(3, 1, 1, 32), rec(2, 0, 1, 32), rec(3, 1, 1, 32)]);
        let b = TlsaSet::new(vec![rec(2, 0, 1, 32), rec(3, 1, 1, 32)]);
        assert_eq!(a, b);
        assert_eq!(a.fingerprint(), b.fingerprint());
        let c = TlsaSet::new(vec![rec(3, 1, 1, 32)]);
        assert_ne!(a.fingerprint(), c.fingerprint());
        assert!(a.has_usable());
        assert!(!TlsaSet::new(vec![rec(1, 1, 1, 32)]).has_usable());
        assert_eq!(rec(3, 1, 1, 2).to_string(), "3 1 1 abab");
    }
}
