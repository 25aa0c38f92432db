//! `gaproxy status`, `gaproxy drain`, `gaproxy undrain`: the running proxy's control socket.

use clap::{ArgGroup, Args};
use greenarrow_proxy::config::DEFAULT_CONTROL_SOCKET;
use greenarrow_proxy::control::client;
use greenarrow_proxy::control::{DrainTarget, Request};
use greenarrow_proxy::drain::MxTarget;
use greenarrow_proxy::status::table;
use serde_json::Value;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

/// How long to wait for the proxy's answer.
const TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Args)]
pub struct StatusArgs {
    /// Print the status as JSON (the shape is documented in STATUS.md).
    #[arg(long)]
    pub json: bool,
    /// The proxy's control socket (control_socket in its configuration).
    #[arg(long, default_value = DEFAULT_CONTROL_SOCKET)]
    pub socket: PathBuf,
}

#[derive(Args)]
#[command(group(ArgGroup::new("what").required(true).args(["source", "mx"])))]
pub struct DrainArgs {
    /// Drain this source address: its idle pooled connections are closed, new connections
    /// from it refused (453 drained) until undrained.
    #[arg(long, value_name = "IP")]
    pub source: Option<IpAddr>,
    /// Drain this MX: IP (every port) or IP:PORT.
    #[arg(long, value_name = "ADDR")]
    pub mx: Option<MxTarget>,
    /// The proxy's control socket (control_socket in its configuration).
    #[arg(long, default_value = DEFAULT_CONTROL_SOCKET)]
    pub socket: PathBuf,
}

#[derive(Args)]
#[command(group(ArgGroup::new("what").required(true).args(["source", "mx", "all"])))]
pub struct UndrainArgs {
    /// End the drain of this source address.
    #[arg(long, value_name = "IP")]
    pub source: Option<IpAddr>,
    /// End the drain of this MX (as it was drained: IP or IP:PORT).
    #[arg(long, value_name = "ADDR")]
    pub mx: Option<MxTarget>,
    /// End every drain.
    #[arg(long)]
    pub all: bool,
    /// The proxy's control socket (control_socket in its configuration).
    #[arg(long, default_value = DEFAULT_CONTROL_SOCKET)]
    pub socket: PathBuf,
}

type Result = std::result::Result<(), Box<dyn std::error::Error>>;

pub fn status(a: StatusArgs) -> Result {
    let st = client::status(&a.socket, TIMEOUT)?;
    if a.json {
        // From the typed status, not a serde_json::Value (whose objects sort their keys): the
        // counters keep the report's order.
        println!("{}", serde_json::to_string_pretty(&st)?);
    } else {
        print!("{}", table::render(&st));
    }
    Ok(())
}

fn drains(v: &Value) -> String {
    let list = |k: &str| {
        v.pointer(&format!("/drains/{k}"))
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .map(|x| x.as_str().unwrap_or_default().to_string())
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default()
    };
    let (s, m) = (list("sources"), list("mx"));
    if s.is_empty() && m.is_empty() {
        "drains in force: none".into()
    } else {
        format!(
            "drains in force: sources [{}], mx [{}]",
            s.join(", "),
            m.join(", ")
        )
    }
}

/// Warn when the daemon could not keep the change in its state directory.
fn warn_not_kept(v: &Value) {
    if let Some(e) = v.get("not_kept").and_then(Value::as_str) {
        eprintln!("gaproxy: warning: in force now, but not kept across a restart: {e}");
    }
}

pub fn drain(a: DrainArgs) -> Result {
    let target = match (a.source, a.mx) {
        (Some(ip), _) => DrainTarget::Source(ip),
        (None, Some(m)) => DrainTarget::Mx(m),
        (None, None) => return Err("give --source IP or --mx ADDR".into()),
    };
    let v = client::request(&a.socket, &Request::Drain(target), TIMEOUT)?;
    let closed = v.get("closed").and_then(Value::as_u64).unwrap_or(0);
    let already = v.get("already").and_then(Value::as_bool).unwrap_or(false);
    println!(
        "drained {target}{}: {closed} idle pooled connection(s) closed",
        if already { " (already drained)" } else { "" }
    );
    println!("{}", drains(&v));
    warn_not_kept(&v);
    Ok(())
}

pub fn undrain(a: UndrainArgs) -> Result {
    let req = match (a.source, a.mx, a.all) {
        (_, _, true) => Request::UndrainAll,
        (Some(ip), _, _) => Request::Undrain(DrainTarget::Source(ip)),
        (None, Some(m), _) => Request::Undrain(DrainTarget::Mx(m)),
        (None, None, false) => return Err("give --source IP, --mx ADDR or --all".into()),
    };
    let v = client::request(&a.socket, &req, TIMEOUT)?;
    let n = v.get("undrained").and_then(Value::as_u64).unwrap_or(0);
    println!("undrained {n}");
    println!("{}", drains(&v));
    warn_not_kept(&v);
    Ok(())
}
