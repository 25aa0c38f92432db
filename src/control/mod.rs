//! The control socket: a Unix stream socket (mode 0660: the service user, its group and root)
//! served by one thread. A client sends one request line ([`request`]), gets one JSON answer
//! line, and the connection closes. Clients are served one at a time, each within
//! [`CLIENT_TIME`]: a slow or silent client delays other control clients by that much at most,
//! never the proxy. It is the only way to change the proxy's state at run time (drains).

pub mod client;
pub use greenarrow_proxy_proto::control as request;

pub use request::{DrainTarget, Request, RequestError, MAX_REQUEST};

use crate::drain::Drains;
use crate::endpoint::accept_until_stopped;
use crate::report::SnapshotSource;
use crate::status::Status;
use greenarrow_proxy_net::bufconn::{BufConn, ReadError};
use greenarrow_proxy_net::deadline::Deadline;
use log::{error, info};
use serde_json::{json, Value};
use std::fmt;
use std::io::{ErrorKind, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::thread::JoinHandle;
use std::time::Duration;

/// Mode of the socket file: read and write for the owner and the group.
pub const SOCKET_MODE: u32 = 0o660;

/// How long one client may take to send its request and read the answer.
pub const CLIENT_TIME: Duration = Duration::from_secs(2);

/// Why the control socket could not be set up, or a request could not be made.
#[derive(Debug)]
pub enum ControlError {
    /// Another process answers on the socket.
    InUse {
        path: PathBuf,
    },
    /// Something that is not a socket is in the way.
    NotASocket {
        path: PathBuf,
    },
    Bind {
        path: PathBuf,
        source: std::io::Error,
    },
    Permissions {
        path: PathBuf,
        source: std::io::Error,
    },
    Thread(std::io::Error),
    /// Client side: no proxy answers there.
    Connect {
        path: PathBuf,
        source: std::io::Error,
    },
    Io(std::io::Error),
    /// The answer was not the JSON expected.
    BadAnswer(String),
    /// The proxy refused the request.
    Refused(String),
}

impl fmt::Display for ControlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ControlError::InUse { path } => write!(
                f,
                "control socket {}: another process is serving it",
                path.display()
            ),
            ControlError::NotASocket { path } => write!(
                f,
                "control socket {}: the path exists and is not a socket (not removed)",
                path.display()
            ),
            ControlError::Bind { path, source } => {
                write!(f, "control socket {}: cannot bind: {source}", path.display())
            }
            ControlError::Permissions { path, source } => write!(
                f,
                "control socket {}: cannot set mode 0660: {source}",
                path.display()
            ),
            ControlError::Thread(e) => write!(f, "cannot start the control thread: {e}"),
            ControlError::Connect { path, source } => write!(
                f,
                "cannot connect to the control socket {}: {source} (is greenarrow_proxy running, with control_socket set to this path?)",
                path.display()
            ),
            ControlError::Io(e) => write!(f, "control socket: {e}"),
            ControlError::BadAnswer(e) => write!(f, "control socket: unexpected answer: {e}"),
            ControlError::Refused(e) => write!(f, "refused: {e}"),
        }
    }
}

impl std::error::Error for ControlError {}

/// What the control socket may ask of the proxy it serves: its status, and the drains. The
/// running server implements it and hands itself over as one, so that the control socket
/// never sees the server.
pub trait Controlled: SnapshotSource {
    /// The drains in force: the operator's changes are made here.
    fn drains(&self) -> &Drains;
    /// Take out the idle pooled connections the drains in force refuse and QUIT them off this
    /// thread; how many.
    fn close_drained_idle(&self) -> usize;
}

/// The running control socket.
pub struct ControlSocket {
    path: PathBuf,
    /// The socket file's identity, so that stopping removes ours only.
    inode: (u64, u64),
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// Remove a socket file nobody answers on (left by a process that died).
fn clear_stale(path: &Path) -> Result<(), ControlError> {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return Ok(());
    };
    if !meta.file_type().is_socket() {
        return Err(ControlError::NotASocket {
            path: path.to_path_buf(),
        });
    }
    let bind_err = |source| ControlError::Bind {
        path: path.to_path_buf(),
        source,
    };
    match UnixStream::connect(path) {
        Ok(_) => Err(ControlError::InUse {
            path: path.to_path_buf(),
        }),
        // Nobody listens: left by a process that ended.
        Err(e) if e.kind() == ErrorKind::ConnectionRefused => {
            std::fs::remove_file(path).map_err(bind_err)
        }
        Err(e) => Err(bind_err(e)),
    }
}

impl ControlSocket {
    /// Bind `path` (mode 0660) and serve requests about `proxy` on one thread.
    pub fn start(path: &Path, proxy: Weak<dyn Controlled>) -> Result<ControlSocket, ControlError> {
        clear_stale(path)?;
        let bind_err = |source| ControlError::Bind {
            path: path.to_path_buf(),
            source,
        };
        let listener = UnixListener::bind(path).map_err(bind_err)?;
        // From here on, a failure removes the file it made.
        let undo = |e: ControlError| {
            let _ = std::fs::remove_file(path);
            e
        };
        let perm_err = |source| {
            undo(ControlError::Permissions {
                path: path.to_path_buf(),
                source,
            })
        };
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(SOCKET_MODE))
            .map_err(perm_err)?;
        let meta = std::fs::symlink_metadata(path).map_err(perm_err)?;
        listener
            .set_nonblocking(true)
            .map_err(|e| undo(bind_err(e)))?;
        let stop = Arc::new(AtomicBool::new(false));
        let s2 = stop.clone();
        let thread = std::thread::Builder::new()
            .name("control".into())
            .spawn(move || accept_loop(&listener, &s2, &proxy))
            .map_err(|e| undo(ControlError::Thread(e)))?;
        info!("control socket on {}", path.display());
        Ok(ControlSocket {
            path: path.to_path_buf(),
            inode: (meta.dev(), meta.ino()),
            stop,
            thread: Some(thread),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Stop serving and remove the socket file (if it is still ours).
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            // The last handle on the server may go on the control thread itself.
            if t.thread().id() != std::thread::current().id() {
                let _ = t.join();
            }
            if std::fs::symlink_metadata(&self.path).is_ok_and(|m| (m.dev(), m.ino()) == self.inode)
            {
                let _ = std::fs::remove_file(&self.path);
            }
        }
    }
}

impl Drop for ControlSocket {
    fn drop(&mut self) {
        self.stop();
    }
}

fn accept_loop(listener: &UnixListener, stop: &AtomicBool, proxy: &Weak<dyn Controlled>) {
    let accept = |l: &UnixListener| l.accept().map(|(s, _)| s);
    accept_until_stopped(listener, stop, "control socket", accept, |stream| {
        // The server is going away: refuse this client (closing its connection) but keep
        // the socket until `stop`, so that a probe of it still finds it served.
        if let Some(proxy) = proxy.upgrade() {
            serve_client(stream, &*proxy);
        }
    });
}

/// Read one request line within `deadline`: the bytes up to and including `\n` (or up to the
/// end of input, when the client closes after an unterminated line), or an error answer when
/// the client sends too much, too slowly, or closes first.
fn read_request(conn: &mut BufConn<UnixStream>, deadline: Deadline) -> Result<Vec<u8>, String> {
    match conn.read_line_until(MAX_REQUEST, deadline) {
        Ok(n) => Ok(conn.pending().get(..n).unwrap_or_default().to_vec()),
        Err(ReadError::Closed) if conn.pending().is_empty() => Err("no request".into()),
        Err(ReadError::Closed) => Ok(conn.pending().to_vec()),
        Err(ReadError::LineTooLong(_)) => Err(RequestError::TooLong.to_string()),
        Err(ReadError::Timeout) => Err(format!(
            "no complete request line within {}s",
            CLIENT_TIME.as_secs()
        )),
        Err(e) => Err(e.to_string()),
    }
}

fn serve_client(stream: UnixStream, proxy: &dyn Controlled) {
    let deadline = Deadline::after(CLIENT_TIME);
    let _ = stream.set_nonblocking(false);
    let mut conn = BufConn::new(stream);
    let answer = match read_request(&mut conn, deadline) {
        Err(e) => refusal(&e),
        Ok(line) => match request::parse(&line) {
            Err(e) => refusal(&e.to_string()),
            Ok(req) => answer(proxy, req),
        },
    };
    let (mut stream, _) = conn.into_parts();
    let mut text = answer.to_string();
    text.push('\n');
    let _ = stream.set_write_timeout(Some(deadline.remaining().max(Duration::from_millis(100))));
    let _ = stream.write_all(text.as_bytes());
    let _ = stream.shutdown(std::net::Shutdown::Both);
}

fn refusal(e: &str) -> Value {
    json!({ "ok": false, "error": e })
}

/// Keep the drains in force in the state directory after a change, and say in the answer
/// where (`"kept_in"`) or why not (`"not_kept"`: the change is in force, but ends with the
/// process; also logged as an error).
fn persisted(drains: &crate::drain::Drains, answer: &mut Value) {
    match drains.persist() {
        Ok(Some(file)) => answer["kept_in"] = json!(file.display().to_string()),
        Ok(None) => {}
        Err(e) => {
            error!("control: drains not kept across a restart: {e}");
            answer["not_kept"] = json!(e.to_string());
        }
    }
}

/// Carry out `req` and make its answer.
pub fn answer(proxy: &dyn Controlled, req: Request) -> Value {
    let drains = proxy.drains();
    match req {
        Request::Status => {
            let status = Status::from_snapshot(&proxy.snapshot());
            match serde_json::to_value(status) {
                Ok(v) => json!({ "ok": true, "status": v }),
                Err(e) => refusal(&format!("cannot encode the status: {e}")),
            }
        }
        Request::Drain(target) => {
            let new = match target {
                DrainTarget::Source(ip) => drains.drain_source(ip),
                DrainTarget::Mx(m) => drains.drain_mx(m),
            };
            let closed = proxy.close_drained_idle();
            info!("control: drained {target}: {closed} idle pooled connection(s) closed; new connections refused until undrained");
            let mut v = json!({
                "ok": true,
                "drained": target.to_string(),
                "already": !new,
                "closed": closed,
                "drains": drains.list(),
            });
            persisted(drains, &mut v);
            v
        }
        Request::Undrain(target) => {
            let was = match target {
                DrainTarget::Source(ip) => drains.undrain_source(ip),
                DrainTarget::Mx(m) => drains.undrain_mx(m),
            };
            if !was {
                return refusal(&format!("{target} is not drained"));
            }
            info!("control: undrained {target}");
            let mut v = json!({ "ok": true, "undrained": 1, "drains": drains.list() });
            persisted(drains, &mut v);
            v
        }
        Request::UndrainAll => {
            let n = drains.undrain_all();
            info!("control: undrained all ({n})");
            let mut v = json!({ "ok": true, "undrained": n, "drains": drains.list() });
            persisted(drains, &mut v);
            v
        }
    }
}
