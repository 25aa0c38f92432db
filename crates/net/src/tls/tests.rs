//! Tests of the TLS roles against each other on loopback.

use super::*;
use greenarrow_proxy_testkit::certgen;
use rustls::RootCertStore;
use std::io::{Read, Write};
use std::net::IpAddr;
use std::net::TcpListener;

fn pair() -> (TcpStream, TcpStream) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
    let (s, _) = l.accept().unwrap();
    (c, s)
}

#[test]
fn client_and_server_talk_and_verify() {
    let ca = certgen::TestCa::new("t").unwrap();
    let leaf = ca.issue(&["mx.test"]).unwrap();
    let acceptor = TlsAcceptor::from_pem(&leaf.cert_pem, &leaf.key_pem).unwrap();
    let (c, s) = pair();
    let t = std::thread::spawn(move || {
        let mut s = acceptor.accept(s, Duration::from_secs(5)).unwrap();
        let mut b = [0u8; 5];
        s.read_exact(&mut b).unwrap();
        s.write_all(&b).unwrap();
        s.flush().unwrap();
        s.facts().clone()
    });
    let mut roots = RootCertStore::empty();
    roots
        .add(certs_from_pem(ca.cert_pem().as_bytes()).unwrap().remove(0))
        .unwrap();
    let conn = MxTlsConnector::new(roots, MinVersion::Tls12).unwrap();
    let mut cs = conn
        .connect(
            c,
            CertPolicy::Verify,
            Some("mx.test"),
            "127.0.0.1".parse().unwrap(),
            Duration::from_secs(5),
        )
        .unwrap();
    cs.write_all(b"hello").unwrap();
    let mut b = [0u8; 5];
    cs.read_exact(&mut b).unwrap();
    assert_eq!(&b, b"hello");
    assert!(cs.facts().verified);
    assert_eq!(cs.facts().peer_names, vec!["mx.test".to_string()]);
    assert_eq!(cs.facts().version, "TLSv1.3");
    let sf = t.join().unwrap();
    assert_eq!(sf.version, "TLSv1.3");
}

#[test]
fn accept_any_reports_unverified_and_verify_fails() {
    let leaf = certgen::self_signed(&["mx.test"]).unwrap();
    let acceptor = TlsAcceptor::from_pem(&leaf.cert_pem, &leaf.key_pem).unwrap();
    let other_ca = certgen::TestCa::new("unrelated").unwrap();
    let mut roots = RootCertStore::empty();
    roots
        .add(
            certs_from_pem(other_ca.cert_pem().as_bytes())
                .unwrap()
                .remove(0),
        )
        .unwrap();
    let conn = MxTlsConnector::new(roots, MinVersion::Tls12).unwrap();
    let ip: IpAddr = "127.0.0.1".parse().unwrap();

    let (c, s) = pair();
    let a = acceptor.clone();
    let t = std::thread::spawn(move || a.accept(s, Duration::from_secs(5)).map(|_| ()));
    let cs = conn
        .connect(
            c,
            CertPolicy::AcceptAny,
            Some("mx.test"),
            ip,
            Duration::from_secs(5),
        )
        .unwrap();
    assert!(!cs.facts().verified);
    assert!(!cs.facts().verify_error.is_empty());
    t.join().unwrap().unwrap();

    let (c, s) = pair();
    let t = std::thread::spawn(move || acceptor.accept(s, Duration::from_secs(5)).map(|_| ()));
    let err = conn
        .connect(
            c,
            CertPolicy::Verify,
            Some("mx.test"),
            ip,
            Duration::from_secs(5),
        )
        .err()
        .unwrap();
    assert!(matches!(err, TlsError::Certificate(_)), "{err}");
    // The rustls error is kept, as the source, and named in the message.
    let TlsError::Certificate(refusal) = &err else {
        unreachable!()
    };
    assert_eq!(refusal.reason(), Some(&CertificateError::UnknownIssuer));
    let source = std::error::Error::source(&err).expect("a source");
    let rustls_err = source
        .source()
        .and_then(|e| e.downcast_ref::<rustls::Error>())
        .expect("rustls's error under the refusal");
    assert!(matches!(rustls_err, rustls::Error::InvalidCertificate(_)));
    assert_eq!(
        err.to_string(),
        "certificate not accepted: invalid peer certificate: UnknownIssuer"
    );
    assert!(t.join().unwrap().is_err());
}

#[test]
fn verify_without_trust_anchors_is_a_certificate_refusal() {
    let conn = MxTlsConnector::new(RootCertStore::empty(), MinVersion::Tls12).unwrap();
    let (c, _s) = pair();
    let err = conn
        .connect(
            c,
            CertPolicy::Verify,
            Some("mx.test"),
            "127.0.0.1".parse().unwrap(),
            Duration::from_secs(5),
        )
        .err()
        .unwrap();
    assert!(
        matches!(err, TlsError::Certificate(CertRefusal::NoTrustAnchors)),
        "{err}"
    );
    assert_eq!(
        err.to_string(),
        "certificate not accepted: no trust anchors are configured: certificate verification is impossible"
    );
}

#[test]
fn handshake_times_out_against_a_silent_peer() {
    let conn = MxTlsConnector::new(RootCertStore::empty(), MinVersion::Tls12).unwrap();
    let (c, _s) = pair();
    let err = conn
        .connect(
            c,
            CertPolicy::AcceptAny,
            None,
            "127.0.0.1".parse().unwrap(),
            Duration::from_millis(200),
        )
        .err()
        .unwrap();
    assert!(matches!(err, TlsError::HandshakeTimeout(_)), "{err}");
}

#[test]
fn client_certificates_are_verified_and_their_names_reported() {
    let dir = std::env::temp_dir().join(format!("gap-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let server_ca = certgen::TestCa::new("server CA").unwrap();
    let server = server_ca.issue(&["localhost"]).unwrap();
    let client_ca = certgen::TestCa::new("client CA").unwrap();
    let client = client_ca.issue(&["mta1.test"]).unwrap();
    let (c, k, ca) = (dir.join("c.pem"), dir.join("k.pem"), dir.join("ca.pem"));
    std::fs::write(&c, &server.cert_pem).unwrap();
    std::fs::write(&k, &server.key_pem).unwrap();
    std::fs::write(&ca, client_ca.cert_pem()).unwrap();
    let acceptor = TlsAcceptor::from_pem_files_with_client_ca(&c, &k, Some(&ca)).unwrap();
    let (ct, st) = pair();
    let t = std::thread::spawn(move || {
        let mut s = acceptor.accept(st, Duration::from_secs(5)).unwrap();
        let mut b = [0u8; 2];
        s.read_exact(&mut b).unwrap();
        s.peer_names()
    });
    let tls = ProxyClientTls::from_ca_pem(server_ca.cert_pem().as_bytes())
        .unwrap()
        .with_client_cert(client.cert_pem.as_bytes(), client.key_pem.as_bytes())
        .unwrap();
    let mut cs = tls
        .connect(ct, "localhost", Duration::from_secs(5))
        .unwrap();
    cs.write_all(b"hi").unwrap();
    cs.flush().unwrap();
    assert_eq!(t.join().unwrap(), vec!["mta1.test".to_string()]);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_pem_is_reported_with_the_path() {
    let err = TlsAcceptor::from_pem_files(Path::new("/nonexistent/cert.pem"), Path::new("/x"))
        .err()
        .unwrap();
    assert!(err.to_string().contains("/nonexistent/cert.pem"), "{err}");
    // The io error is the source, its kind intact.
    let io = std::error::Error::source(&err)
        .and_then(|e| e.source())
        .and_then(|e| e.downcast_ref::<io::Error>())
        .expect("the io error under the PEM error");
    assert_eq!(io.kind(), io::ErrorKind::NotFound);
    let junk = TlsAcceptor::from_pem("junk", "junk").err().unwrap();
    assert!(
        matches!(junk, TlsError::PemText(PemError::NoCertificate)),
        "{junk}"
    );
    assert_eq!(junk.to_string(), "PEM: no certificate found");
}

#[test]
fn drained_after_a_read_that_emptied_the_socket_not_after_one_that_left_records() {
    let leaf = certgen::self_signed(&["mx.test"]).unwrap();
    let acceptor = TlsAcceptor::from_pem(&leaf.cert_pem, &leaf.key_pem).unwrap();
    let (c, s) = pair();
    let (go, wait) = std::sync::mpsc::channel::<()>();
    let t = std::thread::spawn(move || {
        let mut s = acceptor.accept(s, Duration::from_secs(5)).unwrap();
        s.write_all(b"a").unwrap();
        s.flush().unwrap();
        wait.recv().unwrap();
        s.write_all(&vec![b'b'; 40_000]).unwrap();
        s.flush().unwrap();
        wait.recv().unwrap();
    });
    let conn = MxTlsConnector::new(RootCertStore::empty(), MinVersion::Tls12).unwrap();
    let mut cs = conn
        .connect(
            c,
            CertPolicy::AcceptAny,
            Some("mx.test"),
            "127.0.0.1".parse().unwrap(),
            Duration::from_secs(5),
        )
        .unwrap();
    let mut b = [0u8; 1];
    cs.read_exact(&mut b).unwrap();
    assert!(cs.drained(), "one small record, read whole");
    go.send(()).unwrap();
    cs.read_exact(&mut b).unwrap();
    assert_eq!(&b, b"b");
    assert!(!cs.drained(), "most of 40,000 bytes are still to come");
    let mut rest = vec![0u8; 39_999];
    cs.read_exact(&mut rest).unwrap();
    go.send(()).unwrap();
    t.join().unwrap();
}
