//! The command line, and the small commands that need no tunnel.

use std::io::Read;
use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use underpass_core::PrivateKey;

use crate::Failure;

#[derive(Parser, Debug)]
#[command(
    name = "underpass",
    version,
    about = "A WireGuard client without root or TUN: SOCKS5 and HTTP proxies and port forwards",
    long_about = "A WireGuard client without root or TUN: SOCKS5 and HTTP proxies and port forwards.\n\n\
                  Without a subcommand it runs the client from --config: the proxies and forwards of its \
                  [Socks5], [http], [TCPClientTunnel], [TCPServerTunnel], [UDPProxyTunnel] and [STDIOTunnel] \
                  sections (wireproxy's format), plus --socks5 and --http."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the userspace exit peer: answers its peers' handshakes and
    /// connects their flows to the real destinations, without root.
    Gateway(GatewayArgs),
    /// Run a gateway and a client in one process on loopback, with fresh
    /// keys: a SOCKS5 and an HTTP proxy that work with no WireGuard server.
    Quickstart(QuickstartArgs),
    /// Carry browsers' WireGuard datagrams between WebSockets and UDP to
    /// fixed upstream endpoints, and serve the web demo.
    Relay(crate::relay::RelayArgs),
    /// Print a new private key (base64).
    Genkey,
    /// Read a private key on stdin and print its public key.
    Pubkey,
}

/// What every tunnel-running mode shares.
#[derive(Args, Debug, Clone, Default)]
pub struct Common {
    /// Serve Prometheus metrics on /metrics and a health check on /healthz.
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<SocketAddr>,
    /// Write the tunnel's inner IP packets to a pcap file.
    #[arg(long, value_name = "FILE")]
    pub pcap: Option<PathBuf>,
}

#[derive(Args, Debug, Clone, Default)]
pub struct ClientArgs {
    /// The configuration: wg-quick format plus wireproxy's sections.
    #[arg(short, long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Serve SOCKS5 here (in addition to the config's [Socks5]).
    #[arg(long, value_name = "ADDR")]
    pub socks5: Option<SocketAddr>,
    /// Serve an HTTP proxy here (in addition to the config's [http]).
    #[arg(long, value_name = "ADDR")]
    pub http: Option<SocketAddr>,
    /// Check the configuration, print `config OK` and exit.
    #[arg(long)]
    pub check: bool,
    #[command(flatten)]
    pub common: Common,
}

#[derive(Args, Debug, Clone)]
pub struct GatewayArgs {
    /// The gateway's configuration: [Interface] with ListenPort, a [Peer]
    /// per client, and optionally [Gateway] AllowedDestinations.
    #[arg(short, long, value_name = "FILE")]
    pub config: PathBuf,
    /// Check the configuration, print `config OK` and exit.
    #[arg(long)]
    pub check: bool,
    #[command(flatten)]
    pub common: Common,
}

#[derive(Args, Debug, Clone)]
pub struct QuickstartArgs {
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:1080")]
    pub socks5: SocketAddr,
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8118")]
    pub http: SocketAddr,
    #[command(flatten)]
    pub common: Common,
}

pub fn genkey() -> Result<(), Failure> {
    let key = PrivateKey::generate(&mut rand::rngs::OsRng);
    println!("{}", key.to_base64());
    Ok(())
}

pub fn pubkey() -> Result<(), Failure> {
    let mut text = String::new();
    std::io::stdin()
        .take(4096)
        .read_to_string(&mut text)
        .map_err(|e| Failure::usage(format!("reading the private key from stdin: {e}")))?;
    let key: PrivateKey = text
        .trim()
        .parse()
        .map_err(|e| Failure::usage(format!("the private key on stdin is not valid: {e}")))?;
    println!("{}", key.public_key());
    Ok(())
}
