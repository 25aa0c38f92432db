//! The greenarrow_proxy daemon. See `man greenarrow_proxy`.

use clap::Parser;
use greenarrow_proxy::config::DEFAULT_CONFIG_PATH;
use greenarrow_proxy::daemon;
use std::path::PathBuf;
use std::process::ExitCode;

/// SMTP egress connection proxy: owns source IPs, STARTTLS and reusable MX connections.
#[derive(Parser)]
#[command(name = "greenarrow_proxy", version, about)]
struct Args {
    /// Configuration file.
    #[arg(
        short = 'c',
        long = "config-filename",
        visible_alias = "config",
        value_name = "PATH",
        default_value = DEFAULT_CONFIG_PATH
    )]
    config: PathBuf,

    /// Validate the configuration (including certificate and key), print the effective
    /// configuration, and exit: 0 if valid, 78 with a precise message if not.
    #[arg(long)]
    check_config: bool,

    /// With --check-config: print only errors (no effective configuration, no warnings,
    /// no "valid" line), as the unit's ExecReload= check does.
    #[arg(short = 'q', long, requires = "check_config")]
    quiet: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    // The process-wide rustls provider, ring: the redis crate (caps.shared over rediss://)
    // builds its TLS configuration with `ClientConfig::builder()`, which uses it. Our own
    // TLS names ring explicitly. Err = already installed: nothing to do.
    let _ = rustls::crypto::ring::default_provider().install_default();
    if args.check_config {
        return match daemon::load(&args.config) {
            Ok(_) if args.quiet => ExitCode::SUCCESS,
            Ok(rt) => {
                for w in daemon::warnings(&rt) {
                    eprintln!("warning: {w}");
                }
                print!("{}", rt.config.to_effective_yaml());
                eprintln!("{}: configuration is valid", args.config.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("greenarrow_proxy: {e}");
                // Under a service manager (the unit's ExecReload= check, NotifyAccess=all):
                // `systemctl status` says why the reload did not happen.
                let status = daemon::check_failed_status(&e);
                let _ = sd_notify::notify(&[sd_notify::NotifyState::Status(&status)]);
                ExitCode::from(e.exit_code())
            }
        };
    }
    greenarrow_proxy::logging::init();
    match daemon::run(&args.config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Logged once: on stderr, or in the journal (where stderr also goes, so a second
            // copy with eprintln would only duplicate it).
            let code = e.exit_code();
            if code == daemon::EX_CONFIG && !e.is_state() {
                // The check must read the files as the daemon does: as its user.
                let check = if nix::unistd::geteuid().is_root() {
                    String::new()
                } else {
                    let user = greenarrow_proxy::config::files::process_user();
                    format!("runuser -u {user} -- ")
                };
                log::error!(
                    "cannot start: {e}; edit {} (see greenarrow_proxy.yaml(5)) and check it \
                     with {check}greenarrow_proxy --check-config",
                    args.config.display()
                );
            } else {
                log::error!("cannot start: {e}");
            }
            ExitCode::from(code)
        }
    }
}
