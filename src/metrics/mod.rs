//! The optional metrics listener (`metrics.listen`): Prometheus text exposition at `/metrics`,
//! read-only, served by one thread.
//!
//! Requests are parsed with `httparse`; the thread serves one connection at a time, each
//! within [`CLIENT_TIME`], one request per connection (`Connection: close`). A slow scraper
//! delays other scrapers by that much at most, never the proxy. (tiny_http was not used: it
//! starts a thread per connection, without bound.)

pub use greenarrow_proxy_proto::status::exposition;

use crate::endpoint::accept_until_stopped;
use crate::report::SnapshotSource;
use greenarrow_proxy_net::bufconn::{BufConn, ReadError};
use greenarrow_proxy_net::deadline::Deadline;
use log::info;
use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::thread::JoinHandle;
use std::time::Duration;

/// How long one scraper may take to send its request and read the answer.
pub const CLIENT_TIME: Duration = Duration::from_secs(5);

/// Largest request head read.
const MAX_REQUEST_HEAD: usize = 8 * 1024;

/// The running metrics listener.
pub struct MetricsListener {
    configured: SocketAddr,
    local: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl MetricsListener {
    /// Bind `addr` and serve the metrics of the snapshots `source` takes, on one thread.
    pub fn start(
        addr: SocketAddr,
        source: Weak<dyn SnapshotSource>,
    ) -> std::io::Result<MetricsListener> {
        let listener = TcpListener::bind(addr)?;
        listener.set_nonblocking(true)?;
        let local = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let s2 = stop.clone();
        let thread = std::thread::Builder::new()
            .name("metrics".into())
            .spawn(move || accept_loop(&listener, &s2, &source))?;
        info!("metrics on http://{local}/metrics");
        Ok(MetricsListener {
            configured: addr,
            local,
            stop,
            thread: Some(thread),
        })
    }

    /// The address as configured (port 0 stays 0).
    pub fn configured(&self) -> SocketAddr {
        self.configured
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            if t.thread().id() != std::thread::current().id() {
                let _ = t.join();
            }
        }
    }
}

impl Drop for MetricsListener {
    fn drop(&mut self) {
        self.stop();
    }
}

fn accept_loop(listener: &TcpListener, stop: &AtomicBool, source: &Weak<dyn SnapshotSource>) {
    let accept = |l: &TcpListener| l.accept().map(|(s, _)| s);
    accept_until_stopped(listener, stop, "metrics", accept, |stream| {
        // The server is going away: this scrape gets nothing.
        if let Some(source) = source.upgrade() {
            serve(stream, &*source);
        }
    });
}

/// What to answer to a request head (sans-I/O).
#[derive(Debug, PartialEq, Eq)]
pub enum Route {
    /// `GET` or `HEAD /metrics` (a query string is ignored).
    Metrics {
        head: bool,
    },
    NotFound,
    MethodNotAllowed,
    BadRequest(String),
    /// The head is not complete yet.
    Partial,
}

/// Route a request head (the bytes read so far).
pub fn route(buf: &[u8]) -> Route {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(buf) {
        Ok(httparse::Status::Partial) => Route::Partial,
        Err(e) => Route::BadRequest(e.to_string()),
        Ok(httparse::Status::Complete(_)) => {
            let path = req.path.unwrap_or("");
            let path = path.split('?').next().unwrap_or("");
            let head = match req.method {
                Some("GET") => false,
                Some("HEAD") => true,
                _ => return Route::MethodNotAllowed,
            };
            if path == "/metrics" {
                Route::Metrics { head }
            } else {
                Route::NotFound
            }
        }
    }
}

fn respond(stream: &mut TcpStream, status: &str, content_type: &str, body: &str, head: bool) {
    let mut out = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    if status.starts_with("405") {
        out.push_str("Allow: GET, HEAD\r\n");
    }
    out.push_str("\r\n");
    if !head {
        out.push_str(body);
    }
    let _ = stream.write_all(out.as_bytes());
}

fn serve(stream: TcpStream, source: &dyn SnapshotSource) {
    let _ = stream.set_nonblocking(false);
    let mut conn = BufConn::new(stream);
    let read = conn.read_until(MAX_REQUEST_HEAD, Deadline::after(CLIENT_TIME), |head| {
        Some(route(head)).filter(|r| !matches!(r, Route::Partial))
    });
    let (mut stream, _) = conn.into_parts();
    let _ = stream.set_write_timeout(Some(CLIENT_TIME));
    let route = match read {
        Ok(r) => r,
        Err(ReadError::LineTooLong(_)) => Route::BadRequest("request head too long".into()),
        Err(_) => return,
    };
    let text = "text/plain; charset=utf-8";
    match route {
        Route::Metrics { head } => {
            let body = exposition::render(&source.snapshot());
            respond(&mut stream, "200 OK", exposition::CONTENT_TYPE, &body, head);
        }
        Route::NotFound => respond(&mut stream, "404 Not Found", text, "try /metrics\n", false),
        Route::MethodNotAllowed => respond(
            &mut stream,
            "405 Method Not Allowed",
            text,
            "read-only: GET /metrics\n",
            false,
        ),
        Route::BadRequest(e) => respond(
            &mut stream,
            "400 Bad Request",
            text,
            &format!("{e}\n"),
            false,
        ),
        Route::Partial => {}
    }
    let _ = stream.shutdown(std::net::Shutdown::Both);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_get_and_head_of_metrics_are_served() {
        assert_eq!(
            route(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"),
            Route::Metrics { head: false }
        );
        assert_eq!(
            route(b"HEAD /metrics?x=1 HTTP/1.0\r\n\r\n"),
            Route::Metrics { head: true }
        );
        assert_eq!(route(b"GET /metrics HTTP/1.1\r\nHost"), Route::Partial);
        assert_eq!(route(b"GET / HTTP/1.1\r\n\r\n"), Route::NotFound);
        assert_eq!(
            route(b"POST /metrics HTTP/1.1\r\n\r\n"),
            Route::MethodNotAllowed
        );
        assert!(matches!(
            route(b"\x01\x02 nonsense\r\n\r\n"),
            Route::BadRequest(_)
        ));
    }
}
