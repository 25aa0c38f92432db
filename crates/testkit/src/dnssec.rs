//! A DNSSEC world on loopback for the DANE tests: nsd serving a parent zone `dane.test.` and
//! child zones (signed with ldns-keygen/ldns-signzone and delegated with a DS: secure; or
//! delegated without a DS: insecure; or signed and then altered: bogus), and unbound, a
//! validating resolver, with the parent's DS as its only trust anchor. Everything lives in a
//! temporary directory; both servers run in the foreground on free loopback ports and are
//! killed on drop. Nothing leaves loopback: even the root is a stub to nsd (which refuses it).
//!
//! [`DnssecWorld::start`] returns `None` (with the reason printed) when unbound, nsd or the
//! ldns tools are missing, unless `CI=true`: CI installs them (`.ci/run`), so there a missing
//! tool is a failure.

use crate::fixtures::TempDir;
use hickory_proto::op::{Edns, Message, Query, ResponseCode};
use hickory_proto::rr::{Name, RecordType};
use std::fmt::Write as _;
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The parent zone.
pub const PARENT: &str = "dane.test";

/// How a child zone is served.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Signed, with its DS in the signed parent: answers are secure.
    Secure,
    /// Unsigned, delegated without a DS: answers are insecure.
    Insecure,
    /// Signed with its DS in the parent, then its TLSA records altered after signing: the
    /// signatures no longer verify, answers are bogus (SERVFAIL from unbound).
    Bogus,
}

/// A child zone `<label>.dane.test.` and its records, each a zone-file line relative to
/// the zone (`mx A 127.0.0.1`, `_2525._tcp.mx TLSA 3 1 1 ab12…`).
#[derive(Clone, Debug)]
pub struct Zone {
    pub label: String,
    pub kind: Kind,
    pub records: Vec<String>,
}

impl Zone {
    pub fn new(label: &str, kind: Kind) -> Zone {
        Zone {
            label: label.to_string(),
            kind,
            records: Vec::new(),
        }
    }

    /// Add a zone-file line (relative owner names).
    pub fn record(mut self, line: &str) -> Zone {
        self.records.push(line.to_string());
        self
    }

    /// The zone's name, without the trailing dot.
    pub fn name(&self) -> String {
        format!("{}.{PARENT}", self.label)
    }
}

/// nsd and unbound, running.
pub struct DnssecWorld {
    /// The validating resolver (unbound): the daemon's `dns.nameservers`.
    pub resolver: SocketAddr,
    /// The authoritative server (nsd).
    pub authority: SocketAddr,
    nsd: Child,
    unbound: Child,
    dir: TempDir,
}

impl Drop for DnssecWorld {
    fn drop(&mut self) {
        for child in [&mut self.unbound, &mut self.nsd] {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

const TOOLS: [&str; 4] = ["nsd", "unbound", "ldns-keygen", "ldns-signzone"];

/// Where a program is, searching PATH and the sbin directories (nsd and unbound live there).
fn find(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/local/sbin"].map(PathBuf::from))
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}

/// A free port on 127.0.0.1 for both UDP and TCP (bound and released: another process could
/// take it in between, which the start-up check would show).
fn free_port() -> u16 {
    loop {
        let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = tcp.local_addr().unwrap().port();
        if UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// A copy of `program` in `dir`, to run from there: Debian's AppArmor profile for
/// /usr/sbin/unbound (attached by path) would keep it from reading a configuration, zone or
/// log in a temporary directory.
fn private_copy(dir: &Path, program: &str) -> Result<PathBuf, String> {
    let from = find(program).ok_or(format!("{program} is not installed"))?;
    let to = dir.join(format!("{program}-bin"));
    std::fs::copy(&from, &to).map_err(|e| format!("copy {}: {e}", from.display()))?;
    Ok(to)
}

/// Start `program -d -c <dir>/<conf>` in the foreground, its stderr in `<program>.stderr`: from
/// a private copy, or from where it is installed if the temporary directory does not allow
/// running programs (noexec).
fn serve(dir: &Path, program: &str, conf: &str) -> Result<Child, String> {
    let start = |path: &Path| -> Result<Child, String> {
        let stderr = std::fs::File::create(dir.join(format!("{program}.stderr")))
            .map_err(|e| e.to_string())?;
        Command::new(path)
            .args(["-d", "-c"])
            .arg(dir.join(conf))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .map_err(|e| format!("{program}: {e}"))
    };
    let copy = private_copy(dir, program)?;
    start(&copy).or_else(|_| start(&find(program).ok_or(format!("{program}: not found"))?))
}

fn run(cmd: &mut Command) -> Result<String, String> {
    let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{cmd:?}: {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// A key (KSK flag, ECDSA P-256) for `zone` in `dir`; returns (base name, DS line).
fn keygen(dir: &Path, zone: &str) -> Result<(String, String), String> {
    let base = run(Command::new(find("ldns-keygen").ok_or("ldns-keygen")?)
        .current_dir(dir)
        .args(["-a", "ECDSAP256SHA256", "-k", zone]))?;
    let ds = std::fs::read_to_string(dir.join(format!("{base}.ds")))
        .map_err(|e| format!("{base}.ds: {e}"))?;
    Ok((base, ds.trim().to_string()))
}

/// Sign `file` (in `dir`) with the key `base`: writes `file.signed`.
fn sign(dir: &Path, file: &str, base: &str) -> Result<(), String> {
    run(Command::new(find("ldns-signzone").ok_or("ldns-signzone")?)
        .current_dir(dir)
        .args([file, base]))
    .map(|_| ())
}

fn soa(zone: &str) -> String {
    format!(
        "$ORIGIN {zone}.\n$TTL 300\n@ IN SOA ns.{PARENT}. hostmaster.{PARENT}. 1 3600 600 86400 300\n@ IN NS ns.{PARENT}.\n"
    )
}

impl DnssecWorld {
    /// Start nsd and unbound serving `zones` under `dane.test.`; `None` (printed why) when a
    /// tool is missing outside CI.
    pub fn start(zones: &[Zone]) -> Option<DnssecWorld> {
        if let Some(missing) = TOOLS.iter().find(|t| find(t).is_none()) {
            let why = format!("{missing} is not installed (apt-get install unbound nsd ldnsutils)");
            crate::fixtures::missing_program(&why);
            return None;
        }
        // A free port taken by another process between our probe and nsd's or unbound's bind
        // shows as a start that never answers: try again on new ports.
        let mut errors = Vec::new();
        for _ in 0..3 {
            match DnssecWorld::try_start(zones) {
                Ok(w) => return Some(w),
                Err(e) => errors.push(e),
            }
        }
        panic!(
            "the DNSSEC test world did not start: {}",
            errors.join("\n---\n")
        )
    }

    fn try_start(zones: &[Zone]) -> Result<DnssecWorld, String> {
        let dir = TempDir::new("dnssec");
        let d = dir.0.clone();
        let mut parent = soa(PARENT);
        parent.push_str("ns IN A 127.0.0.1\n");
        let mut zone_files = Vec::new();
        for z in zones {
            let name = z.name();
            let mut text = soa(&name);
            for r in &z.records {
                text.push_str(r);
                text.push('\n');
            }
            let file = format!("{name}.zone");
            std::fs::write(d.join(&file), &text).map_err(|e| e.to_string())?;
            writeln!(parent, "{} IN NS ns.{PARENT}.", z.label).map_err(|e| e.to_string())?;
            let served = match z.kind {
                Kind::Insecure => file,
                Kind::Secure | Kind::Bogus => {
                    let (key, ds) = keygen(&d, &name)?;
                    sign(&d, &file, &key)?;
                    parent.push_str(&ds);
                    parent.push('\n');
                    let signed = format!("{file}.signed");
                    if z.kind == Kind::Bogus {
                        corrupt_tlsa(&d.join(&signed))?;
                    }
                    signed
                }
            };
            zone_files.push((name, served));
        }
        let parent_file = format!("{PARENT}.zone");
        std::fs::write(d.join(&parent_file), &parent).map_err(|e| e.to_string())?;
        let (pkey, pds) = keygen(&d, PARENT)?;
        sign(&d, &parent_file, &pkey)?;
        zone_files.push((PARENT.to_string(), format!("{parent_file}.signed")));
        std::fs::write(d.join("anchor.ds"), format!("{pds}\n")).map_err(|e| e.to_string())?;

        let nport = free_port();
        let mut nsd_conf = format!(
            "server:\n  ip-address: 127.0.0.1@{nport}\n  port: {nport}\n  username: \"\"\n  chroot: \"\"\n  zonesdir: \"{dd}\"\n  database: \"\"\n  pidfile: \"{dd}/nsd.pid\"\n  logfile: \"{dd}/nsd.log\"\n  xfrdfile: \"{dd}/xfrd.state\"\n  zonelistfile: \"{dd}/zone.list\"\n  xfrdir: \"{dd}\"\n  server-count: 1\n  verbosity: 1\nremote-control:\n  control-enable: no\n",
            dd = d.display()
        );
        for (name, file) in &zone_files {
            writeln!(
                nsd_conf,
                "zone:\n  name: \"{name}\"\n  zonefile: \"{file}\""
            )
            .map_err(|e| e.to_string())?;
        }
        std::fs::write(d.join("nsd.conf"), &nsd_conf).map_err(|e| e.to_string())?;
        let nsd = serve(&d, "nsd", "nsd.conf")?;

        let uport = free_port();
        let mut ub = format!(
            "server:\n  interface: 127.0.0.1@{uport}\n  port: {uport}\n  do-daemonize: no\n  username: \"\"\n  chroot: \"\"\n  directory: \"{dd}\"\n  pidfile: \"{dd}/unbound.pid\"\n  use-syslog: no\n  logfile: \"{dd}/unbound.log\"\n  verbosity: 1\n  val-log-level: 2\n  do-ip6: no\n  do-not-query-localhost: no\n  module-config: \"validator iterator\"\n  trust-anchor-file: \"{dd}/anchor.ds\"\n  access-control: 127.0.0.0/8 allow\n  num-threads: 1\n  harden-dnssec-stripped: yes\n  qname-minimisation: no\n  aggressive-nsec: no\n  local-zone: \"test.\" nodefault\nremote-control:\n  control-enable: no\n",
            dd = d.display()
        );
        // Every zone, the parent and the root (which nsd refuses) asked of nsd: nothing leaves
        // loopback, and the NS names' port 53 is never used.
        for name in
            std::iter::once(".".to_string()).chain(zone_files.iter().map(|(n, _)| n.clone()))
        {
            writeln!(
                ub,
                "stub-zone:\n  name: \"{name}\"\n  stub-addr: 127.0.0.1@{nport}"
            )
            .map_err(|e| e.to_string())?;
        }
        std::fs::write(d.join("unbound.conf"), &ub).map_err(|e| e.to_string())?;
        let unbound = serve(&d, "unbound", "unbound.conf")?;
        let mut world = DnssecWorld {
            resolver: SocketAddr::from(([127, 0, 0, 1], uport)),
            authority: SocketAddr::from(([127, 0, 0, 1], nport)),
            nsd,
            unbound,
            dir,
        };
        // Ready when unbound answers the parent's SOA as secure (nsd up, anchor accepted).
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let exited = [("nsd", &mut world.nsd), ("unbound", &mut world.unbound)]
                .into_iter()
                .find_map(|(name, child)| match child.try_wait() {
                    Ok(Some(status)) => Some(format!("{name} exited: {status}")),
                    _ => None,
                });
            if let Some(why) = exited {
                return Err(format!("{why}\n{}", world.logs()));
            }
            match world.ask(PARENT, RecordType::SOA) {
                Ok((ResponseCode::NoError, true)) => return Ok(world),
                other if Instant::now() > deadline => {
                    return Err(format!(
                        "unbound did not answer {PARENT} SOA securely: {other:?}\n{}",
                        world.logs()
                    ))
                }
                _ => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }

    /// Ask the resolver for `name`/`rtype`: the response code and the AD bit.
    pub fn ask(&self, name: &str, rtype: RecordType) -> Result<(ResponseCode, bool), String> {
        let mut m = Message::query();
        m.metadata.recursion_desired = true;
        m.metadata.authentic_data = true;
        m.add_query(Query::query(
            Name::from_ascii(format!("{name}.")).map_err(|e| e.to_string())?,
            rtype,
        ));
        let mut edns = Edns::new();
        edns.set_dnssec_ok(true);
        m.set_edns(edns);
        let udp = UdpSocket::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
        udp.set_read_timeout(Some(Duration::from_secs(3)))
            .map_err(|e| e.to_string())?;
        udp.send_to(&m.to_vec().map_err(|e| e.to_string())?, self.resolver)
            .map_err(|e| e.to_string())?;
        let mut buf = [0u8; 4096];
        let n = udp.recv(&mut buf).map_err(|e| e.to_string())?;
        let r = Message::from_vec(&buf[..n]).map_err(|e| e.to_string())?;
        Ok((r.metadata.response_code, r.metadata.authentic_data))
    }

    /// What nsd and unbound logged (for a failure's message).
    pub fn logs(&self) -> String {
        ["nsd.log", "nsd.stderr", "unbound.log", "unbound.stderr"]
            .iter()
            .map(|f| {
                format!(
                    "--- {f}\n{}",
                    std::fs::read_to_string(self.dir.0.join(f)).unwrap_or_default()
                )
            })
            .collect()
    }
}

/// Alter the data of every TLSA record of a signed zone file (flip its last hex digit): the
/// RRSIGs over them no longer verify.
fn corrupt_tlsa(path: &Path) -> Result<(), String> {
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    let mut changed = 0;
    let out: Vec<String> = text
        .lines()
        .map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.get(3) == Some(&"TLSA") {
                changed += 1;
                let mut l = line.trim_end().to_string();
                let last = l.pop().unwrap_or('0');
                l.push(if last == '0' { '1' } else { '0' });
                l
            } else {
                line.to_string()
            }
        })
        .collect();
    if changed == 0 {
        return Err(format!("{}: no TLSA record to corrupt", path.display()));
    }
    std::fs::write(path, out.join("\n") + "\n").map_err(|e| e.to_string())
}

/// The presentation form of a TLSA record's data for `cert_pem`'s first certificate.
pub fn tlsa_data(cert_pem: &str, selector: u8, matching: u8) -> String {
    use rustls_pki_types::pem::PemObject;
    let der = rustls_pki_types::CertificateDer::from_pem_slice(cert_pem.as_bytes()).unwrap();
    greenarrow_proxy_net::tls::dane::association(&der, selector, matching)
        .unwrap()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
