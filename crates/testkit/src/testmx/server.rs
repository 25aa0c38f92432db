//! The blocking I/O around [`Session`]: the accept loop and one thread per connection.

use super::record::{ConnRecord, Message, Shared, MAX_RECORDED_COMMANDS, MAX_RECORDED_NAMES};
use super::session::{Accepted, Action, Session};
use super::TestMxConfig;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

/// Stack size of a connection thread: small, as the benchmark holds thousands of idle
/// connections (only touched pages cost memory). 128 KiB suffices even for a debug-build TLS
/// handshake in the tests; 256 KiB leaves a margin, since an overflow aborts the process.
const CONN_STACK: usize = 256 * 1024;
/// Deadline of a TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Bytes asked for per read.
const READ_CHUNK: usize = 8192;
/// Back-off after a failed accept (e.g. out of file descriptors), so the loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(20);

/// Accept until the server stops; returns the handles of the connection threads.
pub(crate) fn accept_loop(listener: TcpListener, shared: Arc<Shared>) -> Vec<JoinHandle<()>> {
    let queue_ids = Arc::new(AtomicU64::new(0));
    let mut handles: Vec<JoinHandle<()>> = Vec::new();
    loop {
        let (tcp, peer) = match listener.accept() {
            Ok(x) => x,
            Err(e) => {
                if shared.is_stopping() {
                    break;
                }
                log::debug!("test MX: accept failed: {e}");
                if !shared.pause(ACCEPT_BACKOFF) {
                    break;
                }
                continue;
            }
        };
        if shared.is_stopping() {
            break;
        }
        let local = tcp.local_addr().unwrap_or(peer);
        let _ = tcp.set_nodelay(true);
        let index = shared.register(ConnRecord::new(peer, local), tcp.try_clone().ok());
        let (sh, ids) = (shared.clone(), queue_ids.clone());
        let spawned = thread::Builder::new()
            .name(format!("testmx-conn-{index}"))
            .stack_size(CONN_STACK)
            .spawn(move || serve(tcp, peer, index, sh, ids));
        match spawned {
            Ok(h) => handles.push(h),
            Err(e) => {
                log::warn!("test MX: cannot spawn a connection thread: {e}");
                shared.unregister(index, false);
            }
        }
        if handles.len().is_multiple_of(64) {
            handles.retain(|h| !h.is_finished());
        }
    }
    handles
}

/// The connection's byte stream, plain or TLS.
type Stream = greenarrow_proxy_net::tls::ServerStream;

/// One connection, from accept to close.
struct Conn {
    index: usize,
    peer: SocketAddr,
    config: Arc<TestMxConfig>,
    shared: Arc<Shared>,
}

/// Why the connection loop ended.
enum End {
    /// Closed normally or by the peer.
    Closed,
    /// The peer vanished or the socket failed.
    Lost,
}

fn serve(
    tcp: TcpStream,
    peer: SocketAddr,
    index: usize,
    shared: Arc<Shared>,
    queue_ids: Arc<AtomicU64>,
) {
    let (config, generation) = shared.config();
    let conn = Conn {
        index,
        peer,
        config: config.clone(),
        shared: shared.clone(),
    };
    let _ = tcp.set_read_timeout(config.faults.idle_close_after);
    let mut session = Session::new(config.clone(), queue_ids, config.implicit_tls);
    let stream = if config.implicit_tls {
        match conn.start_tls(tcp) {
            Some(s) => s,
            None => return shared.unregister(index, false),
        }
    } else {
        Stream::Plain(tcp)
    };
    let (stream, end) = conn.run(stream, &mut session, generation);
    let aborted = matches!(end, End::Lost) && session.in_body();
    if let Some(s) = stream {
        s.close();
    }
    shared.unregister(index, aborted);
}

impl Conn {
    /// Run the TLS handshake; on failure record why and return `None` (the socket is closed).
    fn start_tls(&self, tcp: TcpStream) -> Option<Stream> {
        let acceptor = self.config.starttls.as_ref()?;
        match acceptor.accept(tcp, HANDSHAKE_TIMEOUT) {
            Ok(s) => {
                let facts = s.facts().clone();
                self.shared.update(|st| {
                    st.stats.tls_handshakes += 1;
                    if let Some(c) = st.connections.get_mut(self.index) {
                        c.tls_version = Some(facts.version);
                        c.tls_cipher = Some(facts.cipher);
                    }
                });
                Some(Stream::Tls(Box::new(s)))
            }
            Err(e) => {
                self.record_tls_error(e.to_string());
                None
            }
        }
    }

    fn record_tls_error(&self, error: String) {
        self.shared
            .update_conn(self.index, |c| c.tls_error = Some(error));
    }

    /// The read/act loop. Returns the stream (unless it was consumed by a failed switch to
    /// TLS) and how the loop ended.
    /// `generation`: that of the configuration the session started with.
    fn run(
        &self,
        mut stream: Stream,
        session: &mut Session,
        mut generation: u64,
    ) -> (Option<Stream>, End) {
        let mut buf: Vec<u8> = Vec::new();
        let mut actions = Vec::new();
        // Replies held by the `hold_replies_in_transaction` fault, written once it ends.
        let mut held: Vec<u8> = Vec::new();
        session.greeting(&mut actions);
        loop {
            if let Some(config) = self.shared.config_if_changed(&mut generation) {
                session.set_config(config);
            }
            let consumed = session.handle(&buf, &mut actions);
            buf.drain(..consumed.min(buf.len()));
            let progressed = consumed > 0 || !actions.is_empty();
            for action in actions.drain(..) {
                // What was held goes out before a switch to TLS or a close.
                if matches!(action, Action::StartTls | Action::Close)
                    && !held.is_empty()
                    && write_out(&mut stream, &std::mem::take(&mut held)).is_err()
                {
                    return (Some(stream), End::Lost);
                }
                match action {
                    Action::Reply { text, delay } => {
                        if !delay.is_zero() && !self.shared.pause(delay) {
                            return (Some(stream), End::Closed);
                        }
                        if self.config.faults.hold_replies_in_transaction {
                            held.extend_from_slice(text.as_bytes());
                            continue;
                        }
                        if write_out(&mut stream, text.as_bytes()).is_err() {
                            return (Some(stream), End::Lost);
                        }
                    }
                    Action::StartTls => {
                        if !buf.is_empty() {
                            self.record_tls_error(format!(
                                "client pipelined {} bytes after STARTTLS; connection dropped",
                                buf.len()
                            ));
                            return (Some(stream), End::Closed);
                        }
                        stream = match stream {
                            Stream::Plain(tcp) => match self.start_tls(tcp) {
                                Some(s) => s,
                                None => return (None, End::Closed),
                            },
                            tls => return (Some(tls), End::Closed),
                        };
                        session.tls_established();
                    }
                    Action::Close => return (Some(stream), End::Closed),
                    other => self.record(other),
                }
            }
            if !held.is_empty()
                && !session.holds_replies()
                && write_out(&mut stream, &std::mem::take(&mut held)).is_err()
            {
                return (Some(stream), End::Lost);
            }
            if progressed {
                continue;
            }
            let old = buf.len();
            buf.resize(old + READ_CHUNK, 0);
            let got = stream.read(buf.get_mut(old..).unwrap_or_default());
            match got {
                Ok(0) => {
                    buf.truncate(old);
                    return (Some(stream), End::Lost);
                }
                Ok(n) => buf.truncate(old + n),
                Err(e) => {
                    buf.truncate(old);
                    match e.kind() {
                        io::ErrorKind::Interrupted => {}
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                            if self.config.faults.idle_close_after.is_some() =>
                        {
                            let text =
                                format!("421 4.4.2 {} idle timeout\r\n", self.config.hostname);
                            let _ = stream.write_all(text.as_bytes());
                            let _ = stream.flush();
                            return (Some(stream), End::Closed);
                        }
                        _ => return (Some(stream), End::Lost),
                    }
                }
            }
        }
    }

    /// Record what a session action reports.
    fn record(&self, action: Action) {
        match action {
            Action::Command(line) => self.shared.update_conn(self.index, |c| {
                if c.commands.len() < MAX_RECORDED_COMMANDS {
                    c.commands.push(line);
                } else {
                    c.commands_dropped += 1;
                }
            }),
            Action::Hello { name, helo } => self.shared.update_conn(self.index, |c| {
                if c.ehlo_names.len() < MAX_RECORDED_NAMES {
                    c.ehlo_names.push(name);
                }
                c.helo_used |= helo;
            }),
            Action::Authenticated => self
                .shared
                .update_conn(self.index, |c| c.authenticated = true),
            Action::Quit => self.shared.update(|s| {
                s.stats.quits += 1;
                if let Some(c) = s.connections.get_mut(self.index) {
                    if !c.quit_received && !c.closed {
                        s.stats.active_sessions = s.stats.active_sessions.saturating_sub(1);
                    }
                    c.quit_received = true;
                }
            }),
            Action::Accepted(m) => self.accepted(m),
            Action::Reply { .. } | Action::StartTls | Action::Close => {}
        }
    }

    fn accepted(&self, m: Accepted) {
        let lean = self.config.lean;
        self.shared.update(|s| {
            s.stats.messages += 1;
            s.stats.bytes += m.body.size as u64;
            let mut ehlo = None;
            if let Some(c) = s.connections.get_mut(self.index) {
                c.messages += 1;
                ehlo = c.ehlo_names.last().cloned();
            }
            if !lean {
                s.messages.push(Message {
                    conn_index: self.index,
                    peer: self.peer,
                    mail_from: m.mail_from,
                    rcpt_to: m.rcpt_to,
                    content: m.body.content,
                    raw: m.body.raw,
                    via_bdat: m.via_bdat,
                    tls: m.tls,
                    ehlo,
                });
            }
        })
    }
}

/// Write `bytes` in one write and flush.
fn write_out(stream: &mut Stream, bytes: &[u8]) -> io::Result<()> {
    stream.write_all(bytes)?;
    stream.flush()
}
