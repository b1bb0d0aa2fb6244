//! underpass: a WireGuard client that needs no root and no TUN device.
//!
//! The library is the binary's body; it exists so the fuzz targets and
//! their corpus replay reach the parsers the binary uses.
//!
//! The tunnel ends in a userspace TCP/IP stack exposed as SOCKS5 and HTTP
//! proxies and port forwards; `gateway` is the matching exit peer, also
//! without root; `quickstart` runs both on loopback.

mod accept;
mod cli;
mod client;
mod config;
mod config_source;
mod daemon;
mod dns_answer;
mod exec;
mod forward;
#[doc(hidden)]
pub mod fuzz;
mod gateway;
mod http_proxy;
mod http_serve;
mod log_limit;
mod metrics;
mod options;
mod pcap;
mod quickstart;
mod relay;
mod setup;
mod signals;
mod sni;
mod socks;
mod splice;
mod stdio;
mod tls;
mod tunnel;
mod udp;
mod udp_sessions;

use std::process::ExitCode;

use clap::Parser;

use cli::{Cli, Command};

/// Exit status for usage and configuration errors, as for clap's own.
pub const EXIT_USAGE: u8 = 2;
/// Exit status for failures at run time (a listener that cannot bind...).
pub const EXIT_FAILURE: u8 = 1;

/// An error with the exit status it deserves.
#[derive(Debug)]
pub struct Failure {
    pub status: u8,
    pub message: String,
}

impl Failure {
    pub fn usage(message: impl std::fmt::Display) -> Failure {
        Failure {
            status: EXIT_USAGE,
            message: message.to_string(),
        }
    }

    pub fn runtime(message: impl std::fmt::Display) -> Failure {
        Failure {
            status: EXIT_FAILURE,
            message: message.to_string(),
        }
    }
}

/// Logs go to stderr at `default` unless RUST_LOG says otherwise.
fn init_logging(default: &str) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .try_init();
}

/// Socket buffers are large (512 KiB a side per connection) but only the
/// pages data touched should cost memory. glibc raises its mmap threshold
/// after the first large free, and then serves such buffers from the heap
/// with calloc zeroing them all: fixing the threshold keeps them lazily
/// mapped (see BENCHMARKS.md, userspace-stack memory). At 64 KiB it also
/// covers the copy buffers of HTTP CONNECT tunnels, which from the heap
/// were zeroed whole and, freed, stayed with the process (RELIABILITY.md,
/// connections and memory).
#[allow(unsafe_code)] // mallopt
fn fix_mmap_threshold() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: called first thing in main, before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 64 * 1024);
    }
}

/// The whole program, from the command line to its exit status.
pub fn main() -> ExitCode {
    fix_mmap_threshold();
    let cli = Cli::parse();
    // exec shares stderr with the command: only warnings, unless asked.
    let client = match &cli.command {
        None => Some(&cli.client),
        Some(Command::Up(args)) => Some(&args.client),
        _ => None,
    };
    let quiet = matches!(cli.command, Some(Command::Exec(_))) || client.is_some_and(|c| c.silent);
    init_logging(if quiet { "warn" } else { "info" });
    if client.is_some_and(|c| c.daemon && !c.check) {
        if let Err(f) = daemon::detach() {
            eprintln!("underpass: {}", f.message);
            return ExitCode::from(f.status);
        }
    }
    setup::raise_fd_limit();
    let result = match cli.command {
        Some(Command::Genkey) => cli::genkey(),
        Some(Command::Pubkey) => cli::pubkey(),
        Some(Command::Gateway(args)) => run(gateway::run(args)),
        Some(Command::Quickstart(args)) => run(quickstart::run(args)),
        Some(Command::Relay(args)) => run(relay::run(args)),
        Some(Command::Up(args)) => run(client::run(args)),
        Some(Command::Exec(args)) => match run(exec::run(args)) {
            Ok(status) => return ExitCode::from(status),
            Err(f) => Err(f),
        },
        None => run(client::run(cli::UpArgs {
            client: cli.client,
            wait: false,
            handshake_timeout: 0,
        })),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            eprintln!("underpass: {}", f.message);
            ExitCode::from(f.status)
        }
    }
}

/// Runs `fut` on the single-threaded runtime every mode uses.
fn run<T>(fut: impl std::future::Future<Output = Result<T, Failure>>) -> Result<T, Failure> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(Failure::runtime)?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, fut)
}
