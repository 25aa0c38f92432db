//! Real MTA-side clients, run as child processes: swaks (PROXY v1/v2), curl and msmtp
//! (SOCKS5); Exim is in `exim.rs`. Also the message every client sends ([`Mail`]) and the
//! check of what the test MX recorded ([`check_delivery`]).
//!
//! Every run is bounded: the client runs under coreutils `timeout -s KILL` ([`CLIENT_TIMEOUT`]),
//! which kills its whole process group. A function returns `None` (after printing
//! `SKIP: <binary> not installed`) when its binary is missing, so that `cargo test` passes on a
//! machine without them; `.ci/run` installs them (Debian: swaks, msmtp, exim4-daemon-light;
//! curl is in the base image).
//!
//! The command lines are those of `shared/notes/mta-compat.md` §3.4 and §4.1, verified against
//! the test MX directly and through the stand-ins of `tests/clients/standin.rs` (see
//! `tests/clients/main.rs`).

use crate::fixtures::{ip, TempDir};
use crate::testmx::TestMx;
use std::fmt;
use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::process::{Command, Stdio};
use std::time::Duration;

/// How long to wait for the MX to record something.
pub const WAIT: Duration = Duration::from_secs(10);

/// Longest a client may run before it is killed.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(30);

/// What a client run produced.
#[derive(Debug)]
pub struct Output {
    /// The command line, for messages.
    pub command: String,
    /// Exit code (`None`: killed by a signal).
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    pub fn ok(&self) -> bool {
        self.code == Some(0)
    }

    /// Killed by the time bound (`timeout -s KILL` exits 137).
    pub fn timed_out(&self) -> bool {
        self.code == Some(137)
    }
}

impl fmt::Display for Output {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "$ {}\nexit: {:?}\n--- stdout\n{}\n--- stderr\n{}",
            self.command, self.code, self.stdout, self.stderr
        )
    }
}

/// Whether `bin` is an executable in `PATH` (or in /usr/sbin, /sbin: Exim lives there).
pub fn installed(bin: &str) -> bool {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .any(|d| {
            use std::os::unix::fs::PermissionsExt;
            std::fs::metadata(d.join(bin))
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// `true` when `bin` is installed; otherwise prints the skip notice.
pub fn available(bin: &str) -> bool {
    let ok = installed(bin);
    if !ok {
        eprintln!("SKIP: {bin} not installed");
    }
    ok
}

/// Run `program args` with `stdin`, bounded by [`CLIENT_TIMEOUT`].
pub fn run(program: &str, args: &[String], stdin: &[u8]) -> Output {
    let command = std::iter::once(program.to_string())
        .chain(args.iter().map(|a| shell_quote(a)))
        .collect::<Vec<_>>()
        .join(" ");
    let mut child = Command::new("timeout")
        .arg("-s")
        .arg("KILL")
        .arg(CLIENT_TIMEOUT.as_secs().to_string())
        .arg(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    let mut input = child.stdin.take().unwrap();
    let data = stdin.to_vec();
    // A client that never reads its input must not block us: write from a thread.
    let writer = std::thread::spawn(move || {
        let _ = input.write_all(&data);
    });
    let out = child.wait_with_output().unwrap();
    let _ = writer.join();
    Output {
        command,
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn shell_quote(s: &str) -> String {
    if s.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-_./:@=[],".contains(&b))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// The envelope and content every client sends.
#[derive(Clone, Debug)]
pub struct Mail {
    pub ehlo: String,
    pub from: String,
    pub to: String,
    /// The message as the client is given it (CRLF line ends). swaks, curl and msmtp deliver it
    /// with a CRLF appended when it does not end with one (see [`Mail::expected`]).
    pub data: Vec<u8>,
}

impl Mail {
    /// A message with a unique subject; the body has a line starting with a dot (stuffing).
    pub fn new(subject: &str) -> Mail {
        Mail {
            ehlo: "mta1.check.invalid".into(),
            from: "a@example.test".into(),
            to: "b@example.test".into(),
            data: format!(
                "From: <a@example.test>\r\nTo: <b@example.test>\r\nDate: Mon, 30 Nov 2026 12:00:00 +0000\r\nMessage-ID: <{subject}@example.test>\r\nSubject: {subject}\r\n\r\nhello\r\n.dot line\r\nlast line"
            )
            .into_bytes(),
        }
    }

    /// What the MX should record as the content (un-stuffed, terminator removed).
    pub fn expected(&self) -> Vec<u8> {
        let mut v = self.data.clone();
        if !v.ends_with(b"\r\n") {
            v.extend_from_slice(b"\r\n");
        }
        v
    }
}

/// The MX recorded message `n` from `source`, with `mail`'s envelope and exact content, over
/// TLS or not (waits for it); returns the EHLO names of its connection.
pub fn check_delivery(mx: &TestMx, n: usize, source: &str, tls: bool, mail: &Mail) -> Vec<String> {
    assert!(
        mx.wait_until(WAIT, |s| s.messages.len() > n),
        "no message {n} at the MX"
    );
    let m = &mx.messages()[n];
    assert_eq!(m.peer.ip(), ip(source), "source address");
    assert_eq!(m.mail_from, mail.from);
    assert_eq!(m.rcpt_to, vec![mail.to.clone()]);
    assert_eq!(m.tls, tls, "TLS between the MX and its client");
    assert_eq!(
        String::from_utf8_lossy(&m.content),
        String::from_utf8_lossy(&mail.expected())
    );
    mx.connections()[m.conn_index].ehlo_names.clone()
}

/// The EHLO names an MX sees from a client using `mail.ehlo`: twice with STARTTLS.
pub fn ehlos(mail: &Mail, tls: bool) -> Vec<String> {
    vec![mail.ehlo.clone(); if tls { 2 } else { 1 }]
}

/// `host` for a command line: IPv6 addresses bare (swaks, msmtp) or bracketed (URLs).
fn url_host(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(a) => a.to_string(),
        IpAddr::V6(a) => format!("[{a}]"),
    }
}

// ---------------------------------------------------------------- swaks

/// The PROXY header swaks sends.
#[derive(Clone, Debug)]
pub enum SwaksProxy {
    /// `--proxy-version V --proxy-family F --proxy-source S --proxy-source-port 1
    /// --proxy-dest D --proxy-dest-port P` (swaks refuses source port 0 in this form).
    Fields {
        version: u8,
        family: String,
        source: IpAddr,
        dest: SocketAddr,
    },
    /// `--proxy "<text>"`: sent after `PROXY ` unchanged (version 1), e.g.
    /// `TCP4 127.0.0.5 127.0.0.1 0 2526` — the only way to send source port 0.
    RawV1(String),
}

impl SwaksProxy {
    /// Version 1 (`TCP4`/`TCP6` from the source's family).
    pub fn v1(source: IpAddr, dest: SocketAddr) -> SwaksProxy {
        let family = if source.is_ipv4() { "TCP4" } else { "TCP6" };
        SwaksProxy::Fields {
            version: 1,
            family: family.into(),
            source,
            dest,
        }
    }

    /// Version 2 (`AF_INET`/`AF_INET6` from the source's family).
    pub fn v2(source: IpAddr, dest: SocketAddr) -> SwaksProxy {
        let family = if source.is_ipv4() {
            "AF_INET"
        } else {
            "AF_INET6"
        };
        SwaksProxy::Fields {
            version: 2,
            family: family.into(),
            source,
            dest,
        }
    }

    fn args(&self) -> Vec<String> {
        match self {
            SwaksProxy::Fields {
                version,
                family,
                source,
                dest,
            } => vec![
                "--proxy-version".into(),
                version.to_string(),
                "--proxy-family".into(),
                family.clone(),
                "--proxy-source".into(),
                source.to_string(),
                "--proxy-source-port".into(),
                "1".into(),
                "--proxy-dest".into(),
                dest.ip().to_string(),
                "--proxy-dest-port".into(),
                dest.port().to_string(),
            ],
            SwaksProxy::RawV1(text) => vec![
                "--proxy-version".into(),
                "1".into(),
                "--proxy".into(),
                text.clone(),
            ],
        }
    }
}

/// swaks to `server` (the proxy's PROXY front-end, or an MX directly when `proxy` is `None`),
/// with STARTTLS end to end when `tls`.
pub fn swaks(
    server: SocketAddr,
    proxy: Option<&SwaksProxy>,
    tls: bool,
    mail: &Mail,
) -> Option<Output> {
    if !available("swaks") {
        return None;
    }
    let dir = TempDir::new("swaks");
    let data = dir.0.join("message.eml");
    std::fs::write(&data, &mail.data).unwrap();
    let mut args: Vec<String> = vec![
        "--server".into(),
        server.ip().to_string(),
        "--port".into(),
        server.port().to_string(),
        "--ehlo".into(),
        mail.ehlo.clone(),
        "--from".into(),
        mail.from.clone(),
        "--to".into(),
        mail.to.clone(),
        "--data".into(),
        format!("@{}", data.display()),
        "--timeout".into(),
        "20".into(),
    ];
    if let Some(p) = proxy {
        args.extend(p.args());
    }
    if tls {
        args.push("-tls".into());
    }
    Some(run("swaks", &args, b""))
}

// ---------------------------------------------------------------- curl

/// curl's SMTP upload to `mx`, through the SOCKS5 server `socks` (`-x socks5://user:pass@…`)
/// or directly; STARTTLS end to end when `tls` (`--ssl-reqd -k`).
pub fn curl(
    socks: Option<SocketAddr>,
    credentials: Option<(&str, &str)>,
    mx: SocketAddr,
    tls: bool,
    mail: &Mail,
) -> Option<Output> {
    if !available("curl") {
        return None;
    }
    let dir = TempDir::new("curl");
    let data = dir.0.join("message.eml");
    std::fs::write(&data, &mail.data).unwrap();
    let mut args: Vec<String> = vec!["-sS".into(), "--max-time".into(), "20".into()];
    if let Some(s) = socks {
        let auth = match credentials {
            Some((u, p)) => format!("{}:{}@", url_escape(u), url_escape(p)),
            None => String::new(),
        };
        args.push("-x".into());
        args.push(format!("socks5://{auth}{}:{}", url_host(s.ip()), s.port()));
    }
    args.extend([
        format!("smtp://{}:{}/{}", url_host(mx.ip()), mx.port(), mail.ehlo),
        "--mail-from".into(),
        mail.from.clone(),
        "--mail-rcpt".into(),
        mail.to.clone(),
        "-T".into(),
        data.display().to_string(),
    ]);
    if tls {
        args.push("--ssl-reqd".into());
        args.push("-k".into());
    }
    Some(run("curl", &args, b""))
}

/// Percent-encode what a URL's user-info cannot hold literally (`:` of an IPv6 user name).
fn url_escape(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

// ---------------------------------------------------------------- msmtp

/// msmtp to `mx`, through the SOCKS5 server `socks` (`--proxy-host/--proxy-port`: no
/// authentication, address type 3 even for an IP literal) or directly; STARTTLS end to end
/// when `tls`. No configuration file, no added headers.
pub fn msmtp(socks: Option<SocketAddr>, mx: SocketAddr, tls: bool, mail: &Mail) -> Option<Output> {
    if !available("msmtp") {
        return None;
    }
    let mut args: Vec<String> = vec![
        "--file=/dev/null".into(),
        format!("--host={}", mx.ip()),
        format!("--port={}", mx.port()),
        format!("--from={}", mail.from),
        format!("--domain={}", mail.ehlo),
        "--auth=off".into(),
        "--timeout=20".into(),
        "--set-from-header=off".into(),
        "--set-date-header=off".into(),
        "--set-msgid-header=off".into(),
    ];
    if let Some(s) = socks {
        args.push(format!("--proxy-host={}", s.ip()));
        args.push(format!("--proxy-port={}", s.port()));
    }
    if tls {
        args.extend([
            "--tls=on".into(),
            "--tls-starttls=on".into(),
            "--tls-certcheck=off".into(),
        ]);
    } else {
        args.push("--tls=off".into());
    }
    args.push(mail.to.clone());
    Some(run("msmtp", &args, &mail.data))
}

/// The versions of the installed clients, one line each (for the test log).
pub fn versions() -> String {
    let first = |program: &str, args: &[&str]| -> String {
        if !installed(program) {
            return format!("{program}: not installed");
        }
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let out = run(program, &args, b"");
        out.stdout
            .lines()
            .chain(out.stderr.lines())
            .find(|l| !l.trim().is_empty())
            .unwrap_or("")
            .to_string()
    };
    [
        first("swaks", &["--version"]),
        first("curl", &["--version"]),
        first("msmtp", &["--version"]),
        first("exim", &["-bV"]),
    ]
    .join("\n")
}
