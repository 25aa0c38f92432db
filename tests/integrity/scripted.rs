//! The scripted MX and the proxy helpers of the relay-integrity tests.

use super::*;

/// What the scripted MX answers to one command.
pub enum Answer {
    /// These bytes.
    Send(Vec<u8>),
    /// A shared block, then a small tail (a big reply without a copy per reply).
    Big(Arc<Vec<u8>>, Vec<u8>),
    /// These bytes, one at a time, with this pause before each.
    Trickle(Vec<u8>, Duration),
}

/// The script: (connection index, command line without CRLF, or `DATA-END`) → an answer, or
/// None for the default (EHLO: no CHUNKING, no STARTTLS; DATA: 354; QUIT: 221 and close;
/// anything else: 250).
type Script = dyn Fn(usize, &str) -> Option<Answer> + Send + Sync;

#[derive(Default)]
pub struct Conn {
    /// Every line received, without its line ending.
    lines: Vec<String>,
    closed: bool,
}

#[derive(Default)]
pub struct State {
    conns: Vec<Conn>,
}

pub struct ScriptedMx {
    addr: SocketAddr,
    state: Arc<(Mutex<State>, Condvar)>,
}

impl ScriptedMx {
    pub fn start(script: impl Fn(usize, &str) -> Option<Answer> + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let state: Arc<(Mutex<State>, Condvar)> = Arc::default();
        let script: Arc<Script> = Arc::new(script);
        let st = state.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                let index = {
                    let mut s = st.0.lock().unwrap();
                    s.conns.push(Conn::default());
                    s.conns.len() - 1
                };
                let (st, script) = (st.clone(), script.clone());
                std::thread::spawn(move || {
                    let _ = serve(stream, index, &st, &*script);
                    st.0.lock().unwrap().conns[index].closed = true;
                    st.1.notify_all();
                });
            }
        });
        ScriptedMx { addr, state }
    }

    pub fn connections(&self) -> usize {
        self.state.0.lock().unwrap().conns.len()
    }

    pub fn lines(&self, conn: usize) -> Vec<String> {
        self.state.0.lock().unwrap().conns[conn].lines.clone()
    }

    pub fn wait_closed(&self, conn: usize) {
        let (lock, cv) = &*self.state;
        let guard = lock.lock().unwrap();
        let (_guard, timeout) = cv
            .wait_timeout_while(guard, WAIT, |s| {
                !s.conns.get(conn).is_some_and(|c| c.closed)
            })
            .unwrap();
        assert!(!timeout.timed_out(), "MX connection {conn} still open");
    }
}

/// One MX connection: banner, then commands; replies are written when no complete command
/// is left in the input (one write per pipelined batch).
pub fn serve(
    stream: TcpStream,
    index: usize,
    st: &(Mutex<State>, Condvar),
    script: &Script,
) -> std::io::Result<()> {
    let mut out = stream.try_clone()?;
    let mut input = BufReader::new(stream);
    out.write_all(b"220 scripted.test ESMTP\r\n")?;
    let mut pending: Vec<u8> = Vec::new();
    let mut in_body = false;
    let mut line = Vec::new();
    loop {
        line.clear();
        if input.read_until(b'\n', &mut line)? == 0 {
            return Ok(());
        }
        let text = String::from_utf8_lossy(&line).trim_end().to_string();
        st.0.lock().unwrap().conns[index].lines.push(text.clone());
        st.1.notify_all();
        let cmd = if in_body {
            if text != "." {
                continue;
            }
            in_body = false;
            "DATA-END".to_string()
        } else {
            text
        };
        let upper = cmd.to_ascii_uppercase();
        let answer = script(index, &cmd).unwrap_or_else(|| {
            Answer::Send(
                if upper.starts_with("EHLO") {
                    &b"250-scripted.test\r\n250-PIPELINING\r\n250 8BITMIME\r\n"[..]
                } else if upper == "DATA" {
                    &b"354 go ahead\r\n"[..]
                } else if upper == "QUIT" {
                    &b"221 bye\r\n"[..]
                } else if upper.starts_with("BDAT") {
                    &b"500 5.5.1 command unrecognized\r\n"[..]
                } else {
                    &b"250 2.0.0 ok\r\n"[..]
                }
                .to_vec(),
            )
        });
        match answer {
            Answer::Send(bytes) => {
                if upper == "DATA" && bytes.starts_with(b"354") {
                    in_body = true;
                }
                pending.extend_from_slice(&bytes);
            }
            Answer::Big(block, tail) => {
                out.write_all(&pending)?;
                pending.clear();
                out.write_all(&block)?;
                out.write_all(&tail)?;
            }
            Answer::Trickle(bytes, pause) => {
                out.write_all(&pending)?;
                pending.clear();
                for b in bytes {
                    std::thread::sleep(pause);
                    out.write_all(&[b])?;
                }
            }
        }
        if upper == "QUIT" {
            out.write_all(&pending)?;
            return Ok(());
        }
        if input.buffer().is_empty() {
            out.write_all(&pending)?;
            pending.clear();
        }
    }
}

pub fn proxy(mx: &ScriptedMx, yaml: &str) -> Harness {
    Harness::start(&[mx.addr.port()], yaml)
}

pub fn request(mx: &ScriptedMx, reuse: bool) -> ConnectRequest {
    let mut r = req("127.0.0.2", mx.addr, TlsPolicy::None);
    r.reuse = reuse;
    r
}

/// QUIT the SMTP session (221), then a proxy NOOP: its answer comes once the session thread
/// is done with the MX connection (pooled or closed).
pub fn quit_then_noop(raw: &mut Raw) {
    let q = exchange(raw, b"QUIT\r\n", 1);
    assert!(q[0].starts_with("221 "), "{q:?}");
    let n = exchange(raw, b"NOOP\r\n", 1);
    assert_eq!(n[0], "250 2.0.0 ok\r\n");
}
