//! An HTTPS server on loopback serving an MTA-STS policy (`/.well-known/mta-sts.txt`) with a
//! certificate for `mta-sts.<domain>` from a test CA: what it serves can be changed (an
//! `enforce` or `testing` policy, a broken one, an HTTP error, a redirect) and it can be
//! stopped, to test a proxy's policy fetch and cache.

use crate::certgen::Ca;
use greenarrow_proxy_net::tls::TlsAcceptor;
use parking_lot::Mutex;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

/// What the server answers.
#[derive(Clone, Debug)]
pub enum Serve {
    /// `200`, `text/plain`, this body.
    Policy(String),
    /// This whole response, as is (status line, headers, body).
    Raw(String),
}

impl Serve {
    /// A policy: `mode`, the `mx` patterns, `max_age`.
    pub fn policy(mode: &str, mx: &[&str], max_age: u64) -> Serve {
        let mut body = format!("version: STSv1\r\nmode: {mode}\r\n");
        for m in mx {
            body.push_str(&format!("mx: {m}\r\n"));
        }
        body.push_str(&format!("max_age: {max_age}\r\n"));
        Serve::Policy(body)
    }

    fn response(&self) -> String {
        match self {
            Serve::Policy(body) => format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            ),
            Serve::Raw(r) => r.clone(),
        }
    }
}

/// The server; stops on drop (or [`PolicyServer::stop`]).
pub struct PolicyServer {
    pub addr: SocketAddr,
    /// Requests answered.
    pub requests: Arc<AtomicUsize>,
    serve: Arc<Mutex<Serve>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl PolicyServer {
    /// Serve `serve` on `bind` (port 0 for any) with a certificate for `mta-sts.<domain>`
    /// issued by `ca`.
    pub fn start(bind: SocketAddr, ca: &Ca, domain: &str, serve: Serve) -> PolicyServer {
        let leaf = ca.issue(&[&format!("mta-sts.{domain}")]).unwrap();
        let acceptor = TlsAcceptor::from_pem(&leaf.cert_pem, &leaf.key_pem).unwrap();
        let listener = TcpListener::bind(bind).unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let serve = Arc::new(Mutex::new(serve));
        let stop = Arc::new(AtomicBool::new(false));
        let requests = Arc::new(AtomicUsize::new(0));
        let thread = {
            let (serve, stop, requests) = (serve.clone(), stop.clone(), requests.clone());
            thread::spawn(move || accept_loop(listener, acceptor, serve, stop, requests))
        };
        PolicyServer {
            addr,
            requests,
            serve,
            stop,
            thread: Some(thread),
        }
    }

    /// Serve something else from now on.
    pub fn set(&self, serve: Serve) {
        *self.serve.lock() = serve;
    }

    /// Stop listening (the port is closed when this returns).
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for PolicyServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn accept_loop(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    serve: Arc<Mutex<Serve>>,
    stop: Arc<AtomicBool>,
    requests: Arc<AtomicUsize>,
) {
    while !stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((tcp, _)) => {
                let (acceptor, serve, requests) =
                    (acceptor.clone(), serve.clone(), requests.clone());
                thread::spawn(move || answer(tcp, &acceptor, &serve, &requests));
            }
            // The listener is polled so that a stop is seen (no request is waited for).
            Err(_) => thread::sleep(Duration::from_millis(20)),
        }
    }
}

fn answer(tcp: TcpStream, acceptor: &TlsAcceptor, serve: &Mutex<Serve>, requests: &AtomicUsize) {
    let _ = tcp.set_nonblocking(false);
    let Ok(mut tls) = acceptor.accept(tcp, Duration::from_secs(5)) else {
        return;
    };
    let _ = tls.tcp().set_read_timeout(Some(Duration::from_secs(5)));
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16 * 1024 {
        match tls.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let response = serve.lock().response();
    requests.fetch_add(1, Ordering::SeqCst);
    let _ = tls.write_all(response.as_bytes());
    let _ = tls.flush();
    tls.close();
}
