//! What the test MX records, and the shared state its threads update.

use super::TestMxConfig;
use parking_lot::{Condvar, Mutex};
use std::collections::HashMap;
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The most command lines recorded per connection (later ones are counted in
/// [`ConnRecord::commands_dropped`]).
pub const MAX_RECORDED_COMMANDS: usize = 10_000;
/// The most EHLO/HELO names recorded per connection.
pub const MAX_RECORDED_NAMES: usize = 100;

/// One accepted TCP connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnRecord {
    /// The client's address.
    pub peer: SocketAddr,
    /// The MX's address the client reached.
    pub local: SocketAddr,
    /// Every EHLO/HELO argument, in order.
    pub ehlo_names: Vec<String>,
    /// Whether HELO (rather than EHLO) was used at least once.
    pub helo_used: bool,
    /// TLS protocol version once TLS is up, e.g. `TLSv1.3`.
    pub tls_version: Option<String>,
    /// TLS cipher suite once TLS is up.
    pub tls_cipher: Option<String>,
    /// Why TLS did not come up after STARTTLS (or implicit TLS): a handshake error, or
    /// bytes pipelined after STARTTLS (the connection is then dropped).
    pub tls_error: Option<String>,
    /// Every command line received, without CRLF (not body lines, not AUTH responses).
    /// Empty in lean mode.
    pub commands: Vec<String>,
    /// Command lines not recorded because [`MAX_RECORDED_COMMANDS`] was reached.
    pub commands_dropped: usize,
    /// Messages accepted on this connection.
    pub messages: usize,
    /// Whether AUTH succeeded.
    pub authenticated: bool,
    /// Whether QUIT was received.
    pub quit_received: bool,
    /// Whether the connection has ended (for any reason).
    pub closed: bool,
    /// Whether the peer vanished in the middle of a message body.
    pub aborted_data: bool,
    /// When it was accepted.
    pub accepted_at: Instant,
}

impl ConnRecord {
    pub(crate) fn new(peer: SocketAddr, local: SocketAddr) -> ConnRecord {
        ConnRecord {
            peer,
            local,
            ehlo_names: Vec::new(),
            helo_used: false,
            tls_version: None,
            tls_cipher: None,
            tls_error: None,
            commands: Vec::new(),
            commands_dropped: 0,
            messages: 0,
            authenticated: false,
            quit_received: false,
            closed: false,
            aborted_data: false,
            accepted_at: Instant::now(),
        }
    }
}

/// One accepted message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// Index of its connection in [`MxState::connections`].
    pub conn_index: usize,
    /// The client's address.
    pub peer: SocketAddr,
    /// The reverse path, without brackets (empty for `<>`).
    pub mail_from: String,
    /// The forward paths, without brackets, in order.
    pub rcpt_to: Vec<String>,
    /// The message as the client meant it: un-dot-stuffed, terminator removed.
    pub content: Vec<u8>,
    /// The bytes exactly as received after the 354 (excluding the final `.\r\n`), or the BDAT
    /// chunks concatenated.
    pub raw: Vec<u8>,
    /// Whether it came by BDAT.
    pub via_bdat: bool,
    /// Whether it came over TLS.
    pub tls: bool,
    /// The last EHLO/HELO name given on its connection before it was accepted.
    pub ehlo: Option<String>,
}

/// Counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Connections accepted.
    pub connections: u64,
    /// Connections open now.
    pub open_connections: u64,
    /// The most connections open at once (the concurrency high-water mark).
    pub max_open_connections: u64,
    /// SMTP sessions open now: accepted, no QUIT received yet, not closed.
    pub active_sessions: u64,
    /// The most sessions open at once. A session ends when its QUIT is received (before the
    /// 221 is sent) or its connection closes, so a client that dials its next connection only
    /// after the 221 or the close is never seen overlapping the one before (unlike
    /// `max_open_connections`, which ends a connection when this side reads its EOF).
    pub max_active_sessions: u64,
    /// TLS handshakes completed (STARTTLS and implicit).
    pub tls_handshakes: u64,
    /// Messages accepted.
    pub messages: u64,
    /// Bytes of accepted messages (raw size).
    pub bytes: u64,
    /// QUIT commands received.
    pub quits: u64,
}

/// Everything recorded, as seen by [`super::TestMx::wait_until`].
#[derive(Clone, Debug, Default)]
pub struct MxState {
    /// Connections in accept order.
    pub connections: Vec<ConnRecord>,
    /// Accepted messages in order of acceptance (empty in lean mode).
    pub messages: Vec<Message>,
    /// Counters.
    pub stats: Stats,
}

/// State shared by the handle, the accept thread and the connection threads.
pub(crate) struct Shared {
    state: Mutex<MxState>,
    changed: Condvar,
    /// Clones of the open sockets by connection index, to shut them down from outside.
    sockets: Mutex<HashMap<usize, TcpStream>>,
    stopping: Mutex<bool>,
    stop: Condvar,
    /// The configuration in force: the one started with, or one with the faults of the last
    /// [`super::TestMx::set_faults`].
    config: Mutex<Arc<TestMxConfig>>,
    /// Bumped by every change of `config`, so connections notice it without taking the lock.
    generation: AtomicU64,
}

impl Shared {
    pub(crate) fn new(config: Arc<TestMxConfig>) -> Shared {
        Shared {
            state: Mutex::new(MxState::default()),
            changed: Condvar::new(),
            sockets: Mutex::new(HashMap::new()),
            stopping: Mutex::new(false),
            stop: Condvar::new(),
            config: Mutex::new(config),
            generation: AtomicU64::new(0),
        }
    }

    /// The configuration in force and its generation.
    pub(crate) fn config(&self) -> (Arc<TestMxConfig>, u64) {
        let c = self.config.lock();
        (c.clone(), self.generation.load(Ordering::Acquire))
    }

    /// The configuration in force when it changed since generation `seen` (which is updated).
    pub(crate) fn config_if_changed(&self, seen: &mut u64) -> Option<Arc<TestMxConfig>> {
        if self.generation.load(Ordering::Acquire) == *seen {
            return None;
        }
        let (c, g) = self.config();
        *seen = g;
        Some(c)
    }

    /// Put `config` in force.
    pub(crate) fn set_config(&self, config: Arc<TestMxConfig>) {
        let mut c = self.config.lock();
        *c = config;
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    /// Remove and return the recorded messages.
    pub(crate) fn take_messages(&self) -> Vec<Message> {
        self.update(|s| std::mem::take(&mut s.messages))
    }

    /// Change the state and wake every waiter.
    pub(crate) fn update<R>(&self, f: impl FnOnce(&mut MxState) -> R) -> R {
        let r = f(&mut self.state.lock());
        self.changed.notify_all();
        r
    }

    /// Change one connection's record.
    pub(crate) fn update_conn(&self, index: usize, f: impl FnOnce(&mut ConnRecord)) {
        self.update(|s| {
            if let Some(c) = s.connections.get_mut(index) {
                f(c)
            }
        })
    }

    /// Read the state.
    pub(crate) fn read<R>(&self, f: impl FnOnce(&MxState) -> R) -> R {
        f(&self.state.lock())
    }

    /// Block until `pred` holds or `timeout` passes.
    pub(crate) fn wait_until(&self, timeout: Duration, pred: impl Fn(&MxState) -> bool) -> bool {
        let deadline = Instant::now().checked_add(timeout);
        let mut state = self.state.lock();
        loop {
            if pred(&state) {
                return true;
            }
            match deadline {
                Some(d) => {
                    if self.changed.wait_until(&mut state, d).timed_out() {
                        return pred(&state);
                    }
                }
                None => self.changed.wait(&mut state),
            }
        }
    }

    /// Record a new connection and keep a clone of its socket. Returns its index.
    pub(crate) fn register(&self, record: ConnRecord, socket: Option<TcpStream>) -> usize {
        // Hold the socket map while the record is added, so a concurrent shutdown sees both.
        let mut sockets = self.sockets.lock();
        let index = self.update(|s| {
            s.connections.push(record);
            s.stats.connections += 1;
            s.stats.open_connections += 1;
            s.stats.max_open_connections =
                s.stats.max_open_connections.max(s.stats.open_connections);
            s.stats.active_sessions += 1;
            s.stats.max_active_sessions = s.stats.max_active_sessions.max(s.stats.active_sessions);
            s.connections.len() - 1
        });
        if let Some(sock) = socket {
            sockets.insert(index, sock);
        }
        index
    }

    /// The connection ended: forget its socket, then record it.
    pub(crate) fn unregister(&self, index: usize, aborted_data: bool) {
        self.sockets.lock().remove(&index);
        self.update(|s| {
            s.stats.open_connections = s.stats.open_connections.saturating_sub(1);
            if let Some(c) = s.connections.get_mut(index) {
                if !c.quit_received && !c.closed {
                    s.stats.active_sessions = s.stats.active_sessions.saturating_sub(1);
                }
                c.closed = true;
                c.aborted_data = aborted_data;
            }
        })
    }

    /// Shut down every open socket (the connection threads then see EOF and end).
    pub(crate) fn shutdown_sockets(&self) {
        for sock in self.sockets.lock().values() {
            let _ = sock.shutdown(Shutdown::Both);
        }
    }

    pub(crate) fn set_stopping(&self) {
        *self.stopping.lock() = true;
        self.stop.notify_all();
    }

    pub(crate) fn is_stopping(&self) -> bool {
        *self.stopping.lock()
    }

    /// Wait `d` unless the server stops first; returns false when it is stopping.
    pub(crate) fn pause(&self, d: Duration) -> bool {
        let Some(deadline) = Instant::now().checked_add(d) else {
            return !self.is_stopping();
        };
        let mut stopping = self.stopping.lock();
        while !*stopping {
            if self.stop.wait_until(&mut stopping, deadline).timed_out() {
                break;
            }
        }
        !*stopping
    }
}
