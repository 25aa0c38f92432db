//! The client side of the control socket (`gaproxy status`, `drain`, `undrain`, tests).

use super::{ControlError, Request, MAX_REQUEST};
use crate::status::Status;
use serde_json::Value;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

/// Largest answer read (a status with many pool keys is long, but not unbounded).
const MAX_ANSWER: u64 = 64 * 1024 * 1024;

/// Send one raw request line (`\n` is added) and read the JSON answer, whatever it says.
pub fn send_line(path: &Path, line: &str, timeout: Duration) -> Result<Value, ControlError> {
    if line.len() >= MAX_REQUEST {
        return Err(ControlError::Refused(format!(
            "request longer than {MAX_REQUEST} bytes"
        )));
    }
    let mut s = UnixStream::connect(path).map_err(|source| ControlError::Connect {
        path: path.to_path_buf(),
        source,
    })?;
    s.set_read_timeout(Some(timeout))
        .map_err(ControlError::Io)?;
    s.set_write_timeout(Some(timeout))
        .map_err(ControlError::Io)?;
    s.write_all(format!("{line}\n").as_bytes())
        .map_err(ControlError::Io)?;
    let mut text = String::new();
    s.take(MAX_ANSWER)
        .read_to_string(&mut text)
        .map_err(ControlError::Io)?;
    serde_json::from_str(&text).map_err(|e| ControlError::BadAnswer(format!("{e}: {text:?}")))
}

/// Make `req` and return the answer when the proxy carried it out (`"ok": true`).
pub fn request(path: &Path, req: &Request, timeout: Duration) -> Result<Value, ControlError> {
    let v = send_line(path, &req.to_string(), timeout)?;
    match v.get("ok").and_then(Value::as_bool) {
        Some(true) => Ok(v),
        Some(false) => Err(ControlError::Refused(
            v.get("error")
                .and_then(Value::as_str)
                .unwrap_or("no reason given")
                .to_string(),
        )),
        None => Err(ControlError::BadAnswer(v.to_string())),
    }
}

/// The proxy's status.
pub fn status(path: &Path, timeout: Duration) -> Result<Status, ControlError> {
    let v = request(path, &Request::Status, timeout)?;
    let st = v
        .get("status")
        .cloned()
        .ok_or_else(|| ControlError::BadAnswer("no \"status\" in the answer".into()))?;
    serde_json::from_value(st).map_err(|e| ControlError::BadAnswer(e.to_string()))
}
