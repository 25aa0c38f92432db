//! gaproxy: the greenarrow_proxy tool for MTA authors and operators.
//!
//! - `gaproxy send`: deliver messages through a proxy, like swaks, printing the transcript;
//! - `gaproxy testmx`: run a local test MX that prints what it receives;
//! - `gaproxy demo`: start a proxy and a test MX on loopback and send mail through it;
//! - `gaproxy bench`: measure the proxy against direct delivery (see `benches/run.sh`);
//! - `gaproxy status`, `drain`, `undrain`: the running proxy's control socket;
//! - `gaproxy cert`: a private CA, the proxy's certificate and MTA client certificates.

mod bench;
mod cert;
mod control;
mod demo;
mod proxy_addr;
mod send;
mod testmx;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "gaproxy",
    version,
    about = "greenarrow_proxy client, test MX and demo"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
#[allow(clippy::large_enum_variant)] // parsed once per run
enum Command {
    /// Deliver one or more messages through a proxy and print the SMTP transcript.
    Send(send::SendArgs),
    /// Run a test MX on loopback that prints every message it receives.
    Testmx(testmx::TestMxArgs),
    /// Start a proxy and a test MX on loopback (nothing to prepare) and send mail through it.
    Demo(demo::DemoArgs),
    /// Benchmark the proxy against direct delivery and HAProxy (throughput, latency, CPU, RSS).
    Bench(bench::BenchArgs),
    /// Show the running proxy's connections, caps, waits, counters and drains.
    Status(control::StatusArgs),
    /// Close a source address's or an MX's idle pooled connections and refuse new ones.
    Drain(control::DrainArgs),
    /// End a drain (or all of them).
    Undrain(control::UndrainArgs),
    /// Make a private CA, the proxy's server certificate and MTA client certificates.
    Cert(cert::CertArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let r = match cli.command {
        Command::Send(a) => send::run(a),
        Command::Testmx(a) => testmx::run(a),
        Command::Demo(a) => demo::run(a),
        Command::Bench(a) => bench::run(a),
        Command::Status(a) => control::status(a),
        Command::Drain(a) => control::drain(a),
        Command::Undrain(a) => control::undrain(a),
        Command::Cert(a) => cert::run(a),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gaproxy: {e}");
            ExitCode::FAILURE
        }
    }
}
