//! The MTAs: worker threads that each loop over random sessions (their own seeded generator)
//! through every way in — the native protocol with and without reuse, PROXY and SOCKS5 in
//! passthrough and `mode: smtp` — and deliver messages by DATA, BDAT (one or two chunks) and
//! pipelined BDAT batches, writing down what each message was told in the ledger.
//! What each message was told is judged and written down by [`crate::transact`].

use crate::rig::{secret, Files, Front, Mx, FRONTS};
use crate::rng::Rng;
use crate::transact::{message, transact, How, Ledger, Msg, Who, Wire, IO};
use greenarrow_proxy_net::tls::ProxyClientTls;
use greenarrow_proxy_proto::protocol::{ConnectRequest, Destination, TlsPolicy};
use greenarrow_proxy_testkit::mta::kumo::{proxy_v2_header, socks5_handshake, Smtp};
use greenarrow_proxy_testkit::raw::Raw;
use std::io::{self, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// One MTA thread.
pub struct Mta {
    pub k: usize,
    pub rng: Rng,
    pub files: Arc<Files>,
    pub mxes: Arc<Vec<Mx>>,
    pub ledger: Arc<Ledger>,
    pub stop: Arc<AtomicBool>,
    pub tls: ProxyClientTls,
}

impl Mta {
    /// Sessions until told to stop.
    pub fn run(mut self) {
        while !self.stop.load(Ordering::Relaxed) {
            let front = match self.rng.below(10) {
                0..=4 => None,
                n => Some(FRONTS[(n - 5) as usize % FRONTS.len()]),
            };
            match front {
                None => self.native(),
                Some(f) => self.front(f),
            }
        }
    }

    fn pick(&mut self) -> (usize, IpAddr, String) {
        let mx = self.rng.below(self.mxes.len() as u64) as usize;
        let sources = &self.mxes[mx].sources;
        let source = sources[self.rng.below(sources.len() as u64) as usize];
        let ehlo = format!("mta{}-{}.soak.test", self.k, self.rng.below(2));
        (mx, source, ehlo)
    }

    fn batch(&mut self, max: u64) -> (Vec<Msg>, How) {
        let how = match self.rng.below(3) {
            0 => How::Data,
            1 => How::Bdat,
            _ => How::Batch,
        };
        let n = 1 + self.rng.below(max);
        let msgs = (0..n)
            .map(|_| {
                let id = self.ledger.next.fetch_add(1, Ordering::Relaxed) + 1;
                message(&mut self.rng, id, self.k)
            })
            .collect();
        (msgs, how)
    }

    /// Up to `max` messages from `source` as `ehlo` to MX `mx`, as [`transact`] says.
    fn deliver(
        &mut self,
        w: &mut dyn Wire,
        mx: usize,
        source: IpAddr,
        ehlo: String,
        max: u64,
        way: &'static str,
    ) -> bool {
        let (msgs, how) = self.batch(max);
        let who = Who {
            way,
            mta: self.k,
            mx,
            source,
            ehlo,
            ledger: &self.ledger,
        };
        transact(w, &who, &msgs, how, &mut self.rng)
    }

    /// The native protocol: one TLS connection, one to three CONNECTs, reuse or not.
    fn native(&mut self) {
        let Ok(tcp) = TcpStream::connect_timeout(&self.files.listen, IO) else {
            self.ledger.refused.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let Ok(tls) = self.tls.connect(tcp, "localhost", IO) else {
            self.ledger.refused.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let mut raw = Raw::from_stream(tls);
        let _ = raw.s.tcp().set_read_timeout(Some(IO));
        let _ = raw.s.tcp().set_write_timeout(Some(IO));
        let mut first = true;
        for _ in 0..1 + self.rng.below(3) {
            let (mx, source, ehlo) = self.pick();
            let m = &self.mxes[mx];
            let mut r = ConnectRequest::new(source, Destination::Ip(m.mx.addr().ip()), &ehlo);
            r.port = m.mx.addr().port();
            r.reuse = self.rng.below(3) != 0;
            r.tls = match (m.tls, self.rng.below(2)) {
                (true, 0) => TlsPolicy::Required,
                (false, 0) => TlsPolicy::None,
                _ => TlsPolicy::Opportunistic,
            };
            let mut line = String::new();
            if first {
                line = format!("AUTH 1 {}\r\n", secret());
            }
            line.push_str(&r.to_line());
            if Wire::send(&mut raw, line.as_bytes()).is_err() {
                return;
            }
            if first {
                match Wire::reply(&mut raw) {
                    Ok(a) if a.starts_with("235 ") => {}
                    _ => {
                        self.ledger.refused.fetch_add(1, Ordering::Relaxed);
                        return;
                    }
                }
                first = false;
            }
            match Wire::reply(&mut raw) {
                Ok(ready) if ready.ends_with("250 ready\r\n") => {}
                Ok(_) => {
                    // Refused (source not local, cap, drain, MX trouble): ask again or go.
                    self.ledger.refused.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                Err(_) => return,
            }
            // Messages of the batch after a failure were not sent: not in the ledger.
            if !self.deliver(&mut raw, mx, source, ehlo, 4, "native") {
                return;
            }
            match Wire::send(&mut raw, b"QUIT\r\n").and_then(|()| Wire::reply(&mut raw)) {
                Ok(r) if r.starts_with("221") => {}
                _ => return,
            }
        }
        let _ = Wire::send(&mut raw, b"QUIT\r\n").and_then(|()| Wire::reply(&mut raw));
    }

    /// A front-end session: the PROXY header or the SOCKS5 handshake, then SMTP.
    fn front(&mut self, front: Front) {
        let (mx, source, ehlo) = self.pick();
        let fe = self.files.fronts[FRONTS.iter().position(|f| *f == front).unwrap()];
        let m = &self.mxes[mx];
        let mx_addr = m.mx.addr();
        let mx_tls = m.tls;
        let Ok(mut tcp) = TcpStream::connect_timeout(&fe, IO) else {
            self.ledger.refused.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let set_up = match front {
            Front::ProxyPassthrough | Front::ProxySmtp => {
                let header = if self.rng.below(2) == 0 {
                    proxy_v2_header(source, mx_addr)
                } else {
                    v1_header(source, mx_addr)
                };
                tcp.write_all(&header).is_ok()
            }
            Front::SocksPassthrough | Front::SocksSmtp => {
                let user = source.to_string();
                socks5_handshake(&mut tcp, Some((&user, secret())), None, mx_addr).is_ok()
            }
        };
        if !set_up {
            self.ledger.refused.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let mut smtp = Smtp::new(tcp);
        let greeted = (|| -> io::Result<bool> {
            if !smtp.reply()?.starts_with("220") {
                return Ok(false);
            }
            let e = smtp.command(&format!("EHLO {ehlo}"))?;
            if !e.starts_with("250") {
                return Ok(false);
            }
            if !front.smtp_mode() && mx_tls {
                smtp.starttls("mx.test")?;
                if !smtp.command(&format!("EHLO {ehlo}"))?.starts_with("250") {
                    return Ok(false);
                }
            }
            Ok(true)
        })();
        smtp.transcript.clear();
        if !matches!(greeted, Ok(true)) {
            self.ledger.refused.fetch_add(1, Ordering::Relaxed);
            return;
        }
        if self.deliver(&mut smtp, mx, source, ehlo, 3, front.name()) {
            let _ = smtp.command("QUIT");
        }
    }
}

fn v1_header(source: IpAddr, mx: SocketAddr) -> Vec<u8> {
    let fam = if source.is_ipv4() { "TCP4" } else { "TCP6" };
    format!("PROXY {fam} {source} {} 40000 {}\r\n", mx.ip(), mx.port()).into_bytes()
}
