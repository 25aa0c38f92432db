//! Minimal stand-in PROXY and SOCKS5 egress servers, independent of the proxy's front-ends:
//! they let `tests/clients` check each real client's command line end to end (client →
//! stand-in → test MX from the requested source) and record the exact handshake bytes each
//! client sends. When a front-end test fails while its `clients.rs` twin passes, the fault is
//! in the front-end, not in the client invocation.
//!
//! Deliberately small and strict: the PROXY header is read byte by byte (nothing after it is
//! consumed), SOCKS5 follows the request order of the clients in the notes, the MX is dialled
//! with [`greenarrow_proxy::dial::dial`] and bytes are moved with
//! [`greenarrow_proxy::frontend::passthrough::relay`].

use greenarrow_proxy::dial::dial;
use greenarrow_proxy::frontend::passthrough::{relay, PassthroughLimits};
use parking_lot::Mutex;
use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

/// What a client sent before the SMTP bytes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Seen {
    /// PROXY: the header. SOCKS5: the greeting (`05 n methods…`).
    pub header: Vec<u8>,
    /// SOCKS5: the RFC 1929 sub-negotiation, when there was one.
    pub auth: Option<Vec<u8>>,
    /// SOCKS5: each request (BIND, CONNECT) as sent.
    pub requests: Vec<Vec<u8>>,
    /// The source the MX connection was made from.
    pub source: Option<IpAddr>,
    /// The MX it reached.
    pub dest: Option<SocketAddr>,
    /// Why the stand-in gave up, if it did.
    pub error: Option<String>,
}

/// Publishes what a session saw (before the client gets its go-ahead).
type Publish<'a> = &'a dyn Fn(&Seen);
type Handler = dyn Fn(TcpStream, &mut Seen, Publish<'_>) -> io::Result<()> + Send + Sync;

/// A running stand-in; stops accepting when dropped.
pub struct Standin {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    stop: Arc<AtomicBool>,
}

impl Standin {
    fn start(bind: &str, handler: Arc<Handler>) -> Standin {
        let l = TcpListener::bind(bind).unwrap();
        let addr = l.local_addr().unwrap();
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (seen2, stop2) = (seen.clone(), stop.clone());
        thread::spawn(move || {
            for conn in l.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let (seen, handler) = (seen2.clone(), handler.clone());
                thread::spawn(move || {
                    conn.set_read_timeout(Some(Duration::from_secs(20)))
                        .unwrap();
                    let mut s = Seen::default();
                    let published = AtomicBool::new(false);
                    let publish = |s: &Seen| {
                        published.store(true, Ordering::SeqCst);
                        seen.lock().push(s.clone());
                    };
                    if let Err(e) = handler(conn, &mut s, &publish) {
                        s.error = Some(e.to_string());
                        if !published.load(Ordering::SeqCst) {
                            seen.lock().push(s);
                        }
                    }
                });
            }
        });
        Standin { addr, seen, stop }
    }

    /// A PROXY v1/v2 stand-in: binds the header's source, connects to its destination.
    pub fn proxy(bind: &str) -> Standin {
        Standin::start(bind, Arc::new(proxy_session))
    }

    /// A SOCKS5 stand-in. With `password`, method 02 is chosen when offered and the password
    /// must match; the source is the BIND address, else the user name as an IP, else
    /// loopback of the destination's family.
    pub fn socks5(bind: &str, password: Option<&str>) -> Standin {
        let password = password.map(str::to_string);
        Standin::start(
            bind,
            Arc::new(move |c, s: &mut Seen, p: Publish<'_>| {
                socks_session(c, s, p, password.as_deref())
            }),
        )
    }

    /// What each session saw, in the order their MX connections were made (or they failed).
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().clone()
    }
}

impl Drop for Standin {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
    }
}

fn read_n(c: &mut TcpStream, n: usize) -> io::Result<Vec<u8>> {
    let mut v = vec![0u8; n];
    c.read_exact(&mut v)?;
    Ok(v)
}

fn bad(m: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, m.into())
}

/// Dial from `source` and relay until the end.
fn finish(
    client: TcpStream,
    source: IpAddr,
    dest: SocketAddr,
    s: &mut Seen,
    publish: Publish<'_>,
    reply: impl FnOnce(&TcpStream, Option<SocketAddr>) -> io::Result<()>,
) -> io::Result<()> {
    s.source = Some(source);
    s.dest = Some(dest);
    let mx = match dial(source, dest, Duration::from_secs(5)) {
        Ok(mx) => mx,
        Err(e) => {
            reply(&client, None)?;
            return Err(io::Error::other(e.to_string()));
        }
    };
    publish(s);
    reply(&client, mx.local_addr().ok())?;
    client.set_read_timeout(None)?;
    let limits = PassthroughLimits {
        idle: Duration::from_secs(30),
        ..PassthroughLimits::default()
    };
    relay(&client, &mx, &[], &limits);
    Ok(())
}

fn proxy_session(mut c: TcpStream, s: &mut Seen, publish: Publish<'_>) -> io::Result<()> {
    let first = read_n(&mut c, 1)?;
    let (source, dest) = if first == b"P" {
        let mut line = first;
        while !line.ends_with(b"\r\n") {
            if line.len() >= 107 {
                return Err(bad("PROXY v1 line too long"));
            }
            line.extend(read_n(&mut c, 1)?);
        }
        s.header = line.clone();
        let text = String::from_utf8_lossy(&line[..line.len() - 2]).into_owned();
        let f: Vec<&str> = text.split(' ').collect();
        let [_, _, src, dst, _, dport] = f[..] else {
            return Err(bad(format!("PROXY v1: {text:?}")));
        };
        let ip = |a: &str| a.parse::<IpAddr>().map_err(|e| bad(e.to_string()));
        let port: u16 = dport.parse().map_err(|_| bad("port"))?;
        (ip(src)?, SocketAddr::new(ip(dst)?, port))
    } else {
        let mut h = first;
        h.extend(read_n(&mut c, 15)?);
        let len = u16::from_be_bytes([h[14], h[15]]) as usize;
        h.extend(read_n(&mut c, len)?);
        s.header = h.clone();
        let b = &h[16..];
        match h[13] {
            0x11 if len >= 12 => {
                let src = Ipv4Addr::new(b[0], b[1], b[2], b[3]);
                let dst = Ipv4Addr::new(b[4], b[5], b[6], b[7]);
                (
                    src.into(),
                    SocketAddr::new(dst.into(), u16::from_be_bytes([b[10], b[11]])),
                )
            }
            0x21 if len >= 36 => {
                let a = |o: usize| Ipv6Addr::from(<[u8; 16]>::try_from(&b[o..o + 16]).unwrap());
                (
                    a(0).into(),
                    SocketAddr::new(a(16).into(), u16::from_be_bytes([b[34], b[35]])),
                )
            }
            f => return Err(bad(format!("PROXY v2 family {f:02x}"))),
        }
    };
    finish(c, source, dest, s, publish, |_, _| Ok(()))
}

fn socks_addr(c: &mut TcpStream, atyp: u8, req: &mut Vec<u8>) -> io::Result<SocketAddr> {
    let ip: IpAddr = match atyp {
        1 => {
            let b = read_n(c, 4)?;
            req.extend_from_slice(&b);
            <[u8; 4]>::try_from(&b[..]).unwrap().into()
        }
        4 => {
            let b = read_n(c, 16)?;
            req.extend_from_slice(&b);
            <[u8; 16]>::try_from(&b[..]).unwrap().into()
        }
        3 => {
            let n = read_n(c, 1)?;
            let name = read_n(c, n[0] as usize)?;
            req.extend_from_slice(&n);
            req.extend_from_slice(&name);
            String::from_utf8_lossy(&name)
                .parse()
                .map_err(|_| bad("type 3 holds no IP literal"))?
        }
        t => return Err(bad(format!("address type {t}"))),
    };
    let p = read_n(c, 2)?;
    req.extend_from_slice(&p);
    Ok(SocketAddr::new(ip, u16::from_be_bytes([p[0], p[1]])))
}

fn socks_reply(code: u8, addr: SocketAddr) -> Vec<u8> {
    let mut r = vec![5, code, 0];
    match addr.ip() {
        IpAddr::V4(a) => {
            r.push(1);
            r.extend_from_slice(&a.octets());
        }
        IpAddr::V6(a) => {
            r.push(4);
            r.extend_from_slice(&a.octets());
        }
    }
    r.extend_from_slice(&addr.port().to_be_bytes());
    r
}

fn socks_session(
    mut c: TcpStream,
    s: &mut Seen,
    publish: Publish<'_>,
    password: Option<&str>,
) -> io::Result<()> {
    let mut g = read_n(&mut c, 2)?;
    let n = g[1] as usize;
    g.extend(read_n(&mut c, n)?);
    s.header = g.clone();
    let methods = &g[2..];
    let method = if password.is_some() && methods.contains(&2) {
        2
    } else if methods.contains(&0) {
        0
    } else {
        0xff
    };
    c.write_all(&[5, method])?;
    let mut user = None;
    if method == 2 {
        let mut a = read_n(&mut c, 2)?;
        let u = read_n(&mut c, a[1] as usize)?;
        a.extend_from_slice(&u);
        let pl = read_n(&mut c, 1)?;
        let p = read_n(&mut c, pl[0] as usize)?;
        a.extend_from_slice(&pl);
        a.extend_from_slice(&p);
        s.auth = Some(a);
        if Some(p.as_slice()) != password.map(str::as_bytes) {
            c.write_all(&[1, 1])?;
            return Err(bad("wrong password"));
        }
        c.write_all(&[1, 0])?;
        user = String::from_utf8_lossy(&u).parse::<IpAddr>().ok();
    } else if method == 0xff {
        return Err(bad("no acceptable method"));
    }
    let mut bound: Option<IpAddr> = None;
    loop {
        let mut req = read_n(&mut c, 4)?;
        let addr = socks_addr(&mut c, req[3], &mut req)?;
        s.requests.push(req.clone());
        match req[1] {
            2 => {
                bound = Some(addr.ip());
                c.write_all(&socks_reply(0, SocketAddr::new(addr.ip(), 0)))?;
            }
            1 => {
                let default: IpAddr = if addr.is_ipv4() {
                    Ipv4Addr::LOCALHOST.into()
                } else {
                    Ipv6Addr::LOCALHOST.into()
                };
                let source = bound.or(user).unwrap_or(default);
                let unspecified = SocketAddr::new(default, 0);
                return finish(c, source, addr, s, publish, |mut c, local| {
                    // One write: Exim reads the reply with a single read().
                    let r = match local {
                        Some(l) => socks_reply(0, l),
                        None => socks_reply(5, unspecified),
                    };
                    c.write_all(&r)
                });
            }
            cmd => {
                c.write_all(&socks_reply(7, addr))?;
                return Err(bad(format!("command {cmd}")));
            }
        }
    }
}
