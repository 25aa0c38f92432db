//! Exim as an MTA-side client: non-daemon (`-odf`), with its own configuration file and spool
//! in a temporary directory (`shared/notes/mta-compat.md` §3.3/3.4), through a SOCKS5 server
//! (`socks_proxy`) or directly. Bounded and skipped like the clients of `clients.rs`.

use super::clients::{available, run, Mail, Output};
use crate::fixtures::TempDir;
use std::fmt;
use std::net::SocketAddr;

/// One Exim run: its output and its logs.
#[derive(Debug)]
pub struct EximRun {
    pub output: Output,
    pub mainlog: String,
    pub paniclog: String,
}

impl EximRun {
    /// The mainlog has a delivery line (`=> rcpt`): Exim's exit status is 0 even on deferral.
    pub fn delivered(&self, rcpt: &str) -> bool {
        self.mainlog
            .lines()
            .any(|l| l.contains(&format!(" => {rcpt} ")))
    }
}

impl fmt::Display for EximRun {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}\n--- mainlog\n{}\n--- paniclog\n{}",
            self.output, self.mainlog, self.paniclog
        )
    }
}

/// Exim, non-daemon (`-odf`: delivery in the foreground), with its own configuration and
/// spool in a temporary directory (notes §3.3): every address is routed to `mx`
/// (`manualroute`, `self = send`, `allow_localhost`), through the SOCKS5 server `socks` with
/// the `socks_proxy` options `socks_opts` (e.g. `auth=name name=127.0.0.2 pass=<secret>`) or
/// directly; `hosts_avoid_tls = *` when `!tls`. A retry rule makes a failure a deferral.
/// Must run as root (Exim drops to Debian-exim for `-C`): skipped otherwise.
pub fn exim(
    socks: Option<(SocketAddr, &str)>,
    mx: SocketAddr,
    tls: bool,
    mail: &Mail,
) -> Option<EximRun> {
    if !available("exim") {
        return None;
    }
    if !is_root() {
        eprintln!("SKIP: exim needs root (it runs -C configurations as Debian-exim)");
        return None;
    }
    let dir = TempDir::new("exim");
    let d = dir.0.display().to_string();
    for sub in ["spool", "log"] {
        std::fs::create_dir_all(dir.0.join(sub)).unwrap();
    }
    let chown = run(
        "chown",
        &[
            "-R".into(),
            "Debian-exim:Debian-exim".into(),
            format!("{d}/spool"),
            format!("{d}/log"),
        ],
        b"",
    );
    assert!(chown.ok(), "{chown}");
    let socks_line = match socks {
        Some((addr, opts)) => format!(
            "  socks_proxy      = {} port={} tmo=5 {opts}\n",
            addr.ip(),
            addr.port()
        ),
        None => String::new(),
    };
    let config = format!(
        "primary_hostname = {ehlo}\n\
         spool_directory  = {d}/spool\n\
         log_file_path    = {d}/log/%slog\n\
         exim_user        = Debian-exim\n\
         exim_group       = Debian-exim\n\
         keep_environment =\n\
         tls_advertise_hosts =\n\
         \n\
         begin routers\n\
         to_mx:\n\
         \x20 driver      = manualroute\n\
         \x20 route_list  = * {mx_ip} byname\n\
         \x20 self        = send\n\
         \x20 transport   = to_mx\n\
         \n\
         begin transports\n\
         to_mx:\n\
         \x20 driver           = smtp\n\
         \x20 port             = {mx_port}\n\
         {socks_line}\
         \x20 hosts_avoid_tls  = {avoid}\n\
         \x20 tls_verify_hosts =\n\
         \x20 hosts_try_dane   =\n\
         \x20 helo_data        = {ehlo}\n\
         \x20 allow_localhost\n\
         \n\
         begin retry\n\
         *  *  F,1h,1m\n",
        ehlo = mail.ehlo,
        mx_ip = mx.ip(),
        mx_port = mx.port(),
        avoid = if tls { "" } else { "*" },
    );
    let conf = dir.0.join("exim.conf");
    std::fs::write(&conf, config).unwrap();
    let args: Vec<String> = vec![
        "-C".into(),
        conf.display().to_string(),
        "-odf".into(),
        "-oi".into(),
        "-f".into(),
        mail.from.clone(),
        mail.to.clone(),
    ];
    let output = run("exim", &args, &mail.data);
    let read =
        |name: &str| std::fs::read_to_string(dir.0.join("log").join(name)).unwrap_or_default();
    Some(EximRun {
        output,
        mainlog: read("mainlog"),
        paniclog: read("paniclog"),
    })
}

fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}
