//! DANE matching with certificates made at test time, and the verifier in real handshakes.

use super::*;
use crate::tls::{certs_from_pem, MinVersion, MxTlsConnector, TlsAcceptor, TlsError};
use greenarrow_proxy_testkit::certgen::{self, TestCa};
use rustls::RootCertStore;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

fn chain(pem: &str) -> Vec<CertificateDer<'static>> {
    certs_from_pem(pem.as_bytes()).unwrap()
}

fn record(usage: u8, selector: u8, matching: u8, cert: &CertificateDer<'_>) -> Tlsa {
    Tlsa {
        usage,
        selector,
        matching,
        data: association(cert, selector, matching).unwrap(),
    }
}

fn algs() -> WebPkiSupportedAlgorithms {
    crate::tls::provider().signature_verification_algorithms
}

fn verdict(
    records: &[Tlsa],
    chain: &[CertificateDer<'_>],
    name: &str,
) -> Result<DaneMatch, DaneFailure> {
    check(records, chain, name, UnixTime::now(), &algs())
}

#[test]
fn dane_ee_matches_every_selector_and_matching_type_and_ignores_names_and_dates() {
    let ca = TestCa::new("ee").unwrap();
    let expired = ca.issue_expired(&["other.example"]).unwrap();
    let c = chain(&expired.cert_pem);
    for selector in [0, 1] {
        for matching in [0, 1, 2] {
            let r = record(3, selector, matching, &c[0]);
            assert_eq!(
                verdict(&[r], &c, "mx.example"),
                Ok(DaneMatch::Ee),
                "3 {selector} {matching}"
            );
        }
    }
    let self_signed = certgen::self_signed(&["mx.example"]).unwrap();
    let s = chain(&self_signed.cert_pem);
    assert_eq!(
        verdict(&[record(3, 1, 1, &s[0])], &s, "x"),
        Ok(DaneMatch::Ee)
    );
}

#[test]
fn a_mismatch_and_unusable_records_do_not_match() {
    let ca = TestCa::new("mm").unwrap();
    let a = chain(&ca.issue(&["mx.example"]).unwrap().cert_pem);
    let b = chain(&ca.issue(&["mx.example"]).unwrap().cert_pem);
    let wrong = record(3, 1, 1, &b[0]);
    assert_eq!(
        verdict(std::slice::from_ref(&wrong), &a, "mx.example"),
        Err(DaneFailure::NoMatch)
    );
    // PKIX-EE(1) with the right digest is unusable for SMTP (RFC 7672 section 3.1.3).
    let pkix = record(1, 1, 1, &a[0]);
    assert_eq!(
        verdict(&[pkix], &a, "mx.example"),
        Err(DaneFailure::NoMatch)
    );
    // One matching record among others is enough.
    assert_eq!(
        verdict(&[wrong, record(3, 0, 1, &a[0])], &a, "mx.example"),
        Ok(DaneMatch::Ee)
    );
    assert_eq!(
        verdict(&[], &[], "mx.example"),
        Err(DaneFailure::NoCertificate)
    );
    assert_eq!(DaneFailure::NoMatch.result_type(), ResultType::TlsaInvalid);
}

#[test]
fn dane_ta_needs_the_chain_the_name_and_the_dates() {
    let ca = TestCa::new("ta").unwrap();
    let ca_der = chain(&ca.cert_pem()).remove(0);
    let ta = record(2, 0, 1, &ca_der);
    let with_ca = |pem: &str| {
        let mut c = chain(pem);
        c.push(ca_der.clone());
        c
    };
    let good = with_ca(&ca.issue(&["mx.example"]).unwrap().cert_pem);
    assert_eq!(
        verdict(std::slice::from_ref(&ta), &good, "mx.example"),
        Ok(DaneMatch::Ta)
    );
    assert_eq!(
        verdict(std::slice::from_ref(&ta), &good, "MX.example."),
        Ok(DaneMatch::Ta)
    );
    assert_eq!(
        verdict(&[record(2, 1, 2, &ca_der)], &good, "mx.example"),
        Ok(DaneMatch::Ta),
        "2 1 2: the TA's key"
    );
    let wrong_name = verdict(std::slice::from_ref(&ta), &good, "other.example").unwrap_err();
    assert_eq!(
        wrong_name.result_type(),
        ResultType::CertificateHostMismatch,
        "{wrong_name}"
    );
    let expired = with_ca(&ca.issue_expired(&["mx.example"]).unwrap().cert_pem);
    let e = verdict(std::slice::from_ref(&ta), &expired, "mx.example").unwrap_err();
    assert_eq!(e.result_type(), ResultType::CertificateExpired, "{e}");
    // The TA must be in the presented chain.
    assert_eq!(
        verdict(std::slice::from_ref(&ta), &good[..1], "mx.example"),
        Err(DaneFailure::NoMatch)
    );
    // A certificate from another CA, with this CA appended, does not chain to it.
    let other = TestCa::new("other").unwrap();
    let forged = with_ca(&other.issue(&["mx.example"]).unwrap().cert_pem);
    let e = verdict(&[ta], &forged, "mx.example").unwrap_err();
    assert!(matches!(e, DaneFailure::TaChain { .. }), "{e}");
}

fn serve(pem: &certgen::CertifiedPem) -> (std::net::SocketAddr, std::thread::JoinHandle<()>) {
    let acceptor = TlsAcceptor::from_pem(&pem.cert_pem, &pem.key_pem).unwrap();
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let t = std::thread::spawn(move || {
        let (s, _) = l.accept().unwrap();
        if let Ok(mut s) = acceptor.accept(s, Duration::from_secs(5)) {
            let mut b = [0u8; 4];
            if s.read_exact(&mut b).is_ok() {
                let _ = s.write_all(&b);
                let _ = s.flush();
            }
        }
    });
    (addr, t)
}

#[test]
fn the_verifier_enforces_in_a_real_handshake() {
    let ca = TestCa::new("hs").unwrap();
    let leaf = ca.issue(&["mx.example"]).unwrap();
    let der = chain(&leaf.cert_pem).remove(0);
    let mut roots = RootCertStore::empty();
    roots.add(chain(&ca.cert_pem()).remove(0)).unwrap();
    let connector = MxTlsConnector::new(roots, MinVersion::Tls12).unwrap();
    let ip = "127.0.0.1".parse().unwrap();

    let (addr, t) = serve(&leaf);
    let tcp = TcpStream::connect(addr).unwrap();
    let (mut s, matched) = connector
        .connect_dane(
            tcp,
            &[record(3, 1, 1, &der)],
            "mx.example",
            ip,
            Duration::from_secs(5),
        )
        .unwrap();
    assert_eq!(matched, DaneMatch::Ee);
    assert!(s.facts().verified, "also WebPKI-valid for the name");
    s.write_all(b"ping").unwrap();
    s.flush().unwrap();
    let mut b = [0u8; 4];
    s.read_exact(&mut b).unwrap();
    assert_eq!(&b, b"ping");
    t.join().unwrap();

    let other = chain(&ca.issue(&["mx.example"]).unwrap().cert_pem).remove(0);
    let (addr, t) = serve(&leaf);
    let tcp = TcpStream::connect(addr).unwrap();
    let err = connector
        .connect_dane(
            tcp,
            &[record(3, 1, 1, &other)],
            "mx.example",
            ip,
            Duration::from_secs(5),
        )
        .err()
        .unwrap();
    assert!(
        matches!(&err, TlsError::Dane(f) if **f == DaneFailure::NoMatch),
        "{err}"
    );
    t.join().unwrap();
}
