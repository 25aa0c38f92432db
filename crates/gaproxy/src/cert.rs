//! `gaproxy cert`: a private CA, the proxy's server certificate and MTA client certificates in
//! one directory, with the modes and the group the daemon (user `greenarrow_proxy`) needs.
//! What exists is kept (an existing CA signs what is added); `--force` re-issues the server
//! certificate and the client certificates named, never the CA. The certificates themselves
//! are made by [`greenarrow_proxy_testkit::certgen`].

use clap::Args;
use greenarrow_proxy::config::valid_client_name;
use greenarrow_proxy_testkit::certgen::{self, Ca, Usage, CA_DAYS, LEAF_DAYS};
use nix::unistd::{Gid, Group};
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::net::IpAddr;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The daemon's group (the package creates it): it must read `key.pem`.
const SERVICE_GROUP: &str = "greenarrow_proxy";

#[derive(Args)]
pub struct CertArgs {
    /// Directory of the files; created (mode 0750, group GROUP) when missing. The example
    /// configuration's tls_certificate and tls_private_key are in /etc/greenarrow_proxy/tls.
    #[arg(long, value_name = "DIR")]
    pub dir: PathBuf,
    /// A DNS name MTAs reach the proxy by, put in the server certificate (repeatable).
    #[arg(long = "host", value_name = "NAME")]
    pub hosts: Vec<String>,
    /// An IP address MTAs reach the proxy at, put in the server certificate (repeatable).
    #[arg(long = "ip", value_name = "ADDR")]
    pub ips: Vec<IpAddr>,
    /// Also make client-NAME.pem and client-NAME.key, a client certificate for an MTA
    /// (mutual TLS: the name goes in a client's tls_client_names) (repeatable).
    #[arg(long = "client", value_name = "NAME")]
    pub clients: Vec<String>,
    /// The group that may read key.pem (the daemon's): by default greenarrow_proxy when that
    /// group exists, else the current group.
    #[arg(long, value_name = "GROUP")]
    pub group: Option<String>,
    /// Validity of the server and client certificates, in days (a new CA gets 3650 days,
    /// or N when longer).
    #[arg(long, value_name = "N", default_value_t = LEAF_DAYS,
          value_parser = clap::value_parser!(u32).range(1..=36500))]
    pub days: u32,
    /// Re-issue the server certificate (for the --host and --ip given) and the --client
    /// certificates even when they exist. The CA is never replaced.
    #[arg(long)]
    pub force: bool,
}

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// What happened to one file, for the summary.
struct Line {
    what: &'static str,
    path: PathBuf,
    note: String,
}

pub fn run(a: CertArgs) -> Result<()> {
    let (gid, group, defaulted) = resolve_group(a.group.as_deref())?;
    if defaulted {
        println!(
            "note: no group {SERVICE_GROUP:?} on this host: key.pem is for group {group:?} \
             (the current group); give --group to choose"
        );
    }
    let names = server_names(&a)?;
    for c in &a.clients {
        check_client_name(c)?;
    }
    let dir = a.dir.as_path();
    let mut lines = Vec::new();
    if !dir.exists() {
        if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
        }
        fs::DirBuilder::new()
            .mode(0o750)
            .create(dir)
            .map_err(|e| format!("{}: {e}", dir.display()))?;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o750))?;
        std::os::unix::fs::chown(dir, None, Some(gid.as_raw()))
            .map_err(|e| format!("{}: cannot give it to group {group}: {e}", dir.display()))?;
        lines.push(Line {
            what: "created",
            path: dir.to_path_buf(),
            note: format!("0750, group {group}"),
        });
    }

    // The CA: kept when it is there, made when it is not.
    let (ca_pem, ca_key) = (dir.join("ca.pem"), dir.join("ca.key"));
    let ca = match (ca_pem.exists(), ca_key.exists()) {
        (true, true) => {
            let ca = Ca::from_pem(&read(&ca_pem)?, &read(&ca_key)?)
                .map_err(|e| format!("{} and {}: {e}", ca_pem.display(), ca_key.display()))?;
            lines.push(Line {
                what: "kept",
                path: ca_pem.clone(),
                note: "the CA: it signs what is added".into(),
            });
            ca
        }
        (false, false) => {
            let host = fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
            let host = host.trim();
            let ca = Ca::generate(
                &format!("greenarrow_proxy private CA {host}"),
                a.days.max(CA_DAYS),
            )?;
            write_file(&ca_key, &ca.key_pem(), 0o600, None, false)?;
            write_file(&ca_pem, &ca.cert_pem(), 0o644, None, false)?;
            lines.push(Line {
                what: "wrote",
                path: ca_pem.clone(),
                note: format!("0644, the private CA, valid {} days", a.days.max(CA_DAYS)),
            });
            lines.push(Line {
                what: "wrote",
                path: ca_key.clone(),
                note: "0600, the CA's key: keep it here, copy it nowhere".into(),
            });
            ca
        }
        (true, false) | (false, true) => {
            return Err(format!(
                "{} and {} go together and only one exists: restore the other, or remove it \
                 to make a new CA (every certificate it issued must then be re-issued)",
                ca_pem.display(),
                ca_key.display()
            )
            .into())
        }
    };

    // The server certificate.
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let have = pair_exists(&cert, &key, a.force)?;
    if !have || (a.force && !names.is_empty()) {
        if names.is_empty() {
            return Err(format!(
                "{} is missing: give the names MTAs reach the proxy by, --host NAME and/or \
                 --ip ADDR (repeatable)",
                cert.display()
            )
            .into());
        }
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let issued = ca.issue_for(&refs, Usage::Server, a.days)?;
        write_file(&key, &issued.key_pem, 0o640, Some(gid), a.force)?;
        write_file(&cert, &issued.cert_pem, 0o644, None, a.force)?;
        lines.push(Line {
            what: "wrote",
            path: cert.clone(),
            note: format!(
                "0644, server certificate for {}, valid {} days",
                names.join(", "),
                a.days
            ),
        });
        lines.push(Line {
            what: "wrote",
            path: key.clone(),
            note: format!("0640, group {group}: the daemon reads it"),
        });
    } else {
        let why = if names.is_empty() {
            String::new()
        } else {
            " (--force re-issues it for the names given)".to_string()
        };
        lines.push(Line {
            what: "kept",
            path: cert.clone(),
            note: format!("server certificate{why}"),
        });
    }

    // Client certificates.
    for name in &a.clients {
        let (pem, k) = (
            dir.join(format!("client-{name}.pem")),
            dir.join(format!("client-{name}.key")),
        );
        if pair_exists(&pem, &k, a.force)? && !a.force {
            lines.push(Line {
                what: "kept",
                path: pem,
                note: format!("client certificate {name} (--force re-issues it)"),
            });
            continue;
        }
        let issued = ca.issue_for(&[name.as_str()], Usage::Client, a.days)?;
        write_file(&k, &issued.key_pem, 0o600, None, a.force)?;
        write_file(&pem, &issued.cert_pem, 0o644, None, a.force)?;
        lines.push(Line {
            what: "wrote",
            path: pem,
            note: format!("0644, client certificate for {name}, valid {} days", a.days),
        });
        lines.push(Line {
            what: "wrote",
            path: k,
            note: "0600: copy it to the MTA host, readable by the MTA only".into(),
        });
    }

    // Whatever was kept or made, the proxy's certificate must be the CA's.
    let ca_text = ca.cert_pem();
    let mut problems = Vec::new();
    if let Ok(text) = read(&cert) {
        if let Err(e) = certgen::verify(&ca_text, &text, Usage::Server) {
            problems.push(format!(
                "{} is not a valid server certificate issued by {} ({e}): MTAs that trust \
                 ca.pem will refuse it; re-issue it with --force --host NAME",
                cert.display(),
                ca_pem.display()
            ));
        }
    }
    for name in &a.clients {
        let pem = dir.join(format!("client-{name}.pem"));
        if let Ok(text) = read(&pem) {
            if let Err(e) = certgen::verify(&ca_text, &text, Usage::Client) {
                problems.push(format!(
                    "{} is not a valid client certificate issued by {} ({e}): re-issue it \
                     with --force --client {name}",
                    pem.display(),
                    ca_pem.display()
                ));
            }
        }
    }
    if let Some(note) = directory_access(dir, gid, &group) {
        problems.push(note);
    }

    for l in &lines {
        println!("{:<8} {}  ({})", l.what, l.path.display(), l.note);
    }
    print_next_steps(dir, &a.clients);
    for p in &problems {
        eprintln!("gaproxy: warning: {p}");
    }
    Ok(())
}

/// Whether a certificate and its key both exist; only one of them is an error (nothing is
/// written then) unless `force`, which replaces both.
fn pair_exists(cert: &Path, key: &Path, force: bool) -> Result<bool> {
    match (cert.exists(), key.exists()) {
        (true, true) => Ok(true),
        (false, false) => Ok(false),
        _ if force => Ok(false),
        _ => Err(format!(
            "{} and {} go together and only one exists: restore the other, or give --force \
             to issue both anew",
            cert.display(),
            key.display()
        )
        .into()),
    }
}

/// The names of the server certificate: `--host` names, then `--ip` addresses.
fn server_names(a: &CertArgs) -> Result<Vec<String>> {
    let mut names = Vec::new();
    for h in &a.hosts {
        if h.parse::<IpAddr>().is_ok() {
            names.push(h.clone());
            continue;
        }
        if rustls_pki_types::DnsName::try_from(h.as_str()).is_err() {
            return Err(format!("--host {h:?} is not a DNS name").into());
        }
        names.push(h.to_ascii_lowercase());
    }
    names.extend(a.ips.iter().map(IpAddr::to_string));
    Ok(names)
}

fn check_client_name(name: &str) -> Result<()> {
    if !valid_client_name(name) || rustls_pki_types::DnsName::try_from(name).is_err() {
        return Err(format!(
            "--client {name:?}: use 1 to 64 letters, digits, '.', '-' or '_', as a DNS name \
             (it goes in the certificate and in the configuration's tls_client_names)"
        )
        .into());
    }
    Ok(())
}

/// `--group`, else `greenarrow_proxy` when it exists, else the current group; and whether
/// the current group was taken because `greenarrow_proxy` does not exist.
fn resolve_group(asked: Option<&str>) -> Result<(Gid, String, bool)> {
    if let Some(name) = asked {
        return match Group::from_name(name)? {
            Some(g) => Ok((g.gid, g.name, false)),
            None => Err(format!("--group {name}: no such group").into()),
        };
    }
    if let Some(g) = Group::from_name(SERVICE_GROUP)? {
        return Ok((g.gid, g.name, false));
    }
    let gid = nix::unistd::getegid();
    let name = Group::from_gid(gid)?
        .map(|g| g.name)
        .unwrap_or_else(|| gid.to_string());
    Ok((gid, name, true))
}

fn read(path: &Path) -> Result<String> {
    fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()).into())
}

/// Write `text` to `path` with `mode` (and group `gid`) set before any byte is written, through
/// a temporary file renamed into place; an existing file is an error unless `replace`.
fn write_file(path: &Path, text: &str, mode: u32, gid: Option<Gid>, replace: bool) -> Result<()> {
    if path.exists() && !replace {
        return Err(format!("{} exists (--force replaces it)", path.display()).into());
    }
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let err = |e: &dyn std::fmt::Display| format!("{}: {e}", tmp.display());
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| err(&e))?;
    let done = (|| -> Result<()> {
        if let Some(g) = gid {
            std::os::unix::fs::fchown(&f, None, Some(g.as_raw()))?;
        }
        f.set_permissions(fs::Permissions::from_mode(mode))?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        Ok(())
    })();
    if let Err(e) = done {
        let _ = fs::remove_file(&tmp);
        return Err(format!("{}: {e}", path.display()).into());
    }
    Ok(())
}

/// A warning when members of `group` cannot enter `dir` (the daemon could not read key.pem).
fn directory_access(dir: &Path, gid: Gid, group: &str) -> Option<String> {
    let meta = fs::metadata(dir).ok()?;
    let mode = meta.mode();
    let enter = mode & 0o001 != 0 || (meta.gid() == gid.as_raw() && mode & 0o010 != 0);
    (!enter).then(|| {
        format!(
            "{}: group {group} cannot enter this directory (mode {:03o}): the daemon could not \
             read key.pem; chgrp {group} {0}; chmod 750 {0}",
            dir.display(),
            mode & 0o777
        )
    })
}

fn print_next_steps(dir: &Path, clients: &[String]) {
    let d = dir.display();
    println!();
    println!("Next:");
    println!(
        "  1. Copy {d}/ca.pem to every MTA host: the MTAs trust the proxy's certificate \
         through it (gaproxy send --ca-file, COMPAT.md)."
    );
    println!(
        "  2. In greenarrow_proxy.yaml: tls_certificate: {d}/cert.pem and tls_private_key: \
         {d}/key.pem (the example configuration's values with --dir /etc/greenarrow_proxy/tls)."
    );
    if !clients.is_empty() {
        println!(
            "  3. Client certificates: set tls_client_ca: {d}/ca.pem and, for each, a client \
             with its name in tls_client_names, e.g.:"
        );
        println!("       clients:");
        for c in clients {
            println!("         - name: {c}");
            println!("           tls_client_names: [{c}]");
        }
        println!(
            "     and copy client-NAME.pem and client-NAME.key to that MTA host (the key \
             readable by the MTA's user only)."
        );
    }
    println!(
        "  {}. Check as the service user, then start or reload: \
         runuser -u greenarrow_proxy -- greenarrow_proxy --check-config; \
         systemctl reload-or-restart greenarrow_proxy",
        if clients.is_empty() { 3 } else { 4 }
    );
}
