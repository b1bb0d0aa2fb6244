//! The command line, and the small commands that need no tunnel.

use std::io::Read;
use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use underpass_core::PrivateKey;

use underpass_stack::{
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MAX_CONNECTIONS_PER_SOURCE as DEFAULT_MAX_CONNECTIONS_PER_CLIENT,
    DEFAULT_MAX_UDP_FLOWS, DEFAULT_MAX_UDP_FLOWS_PER_SOURCE as DEFAULT_MAX_UDP_FLOWS_PER_CLIENT,
};

use crate::options::{TunnelOptions, DEFAULT_MAX_NEGOTIATING};
use crate::Failure;

#[derive(Parser, Debug)]
#[command(
    name = "underpass",
    version,
    disable_version_flag = true,
    about = "A WireGuard client without root or TUN: SOCKS5 and HTTP proxies and port forwards",
    long_about = "A WireGuard client without root or TUN: SOCKS5 and HTTP proxies and port forwards.\n\n\
                  Without a subcommand it runs the client from --config: the proxies and forwards of its \
                  [Socks5], [http], [TCPClientTunnel], [TCPServerTunnel], [UDPProxyTunnel] and [STDIOTunnel] \
                  sections (wireproxy's format), plus --socks5 and --http."
)]
pub struct Cli {
    /// Print the version (wireproxy's -v, clap's -V).
    #[arg(short = 'v', long, visible_short_alias = 'V', action = clap::ArgAction::Version)]
    version: Option<bool>,
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the client (the same as giving no subcommand); with --wait,
    /// print the listeners once the peers have answered, or fail.
    Up(UpArgs),
    /// Bring the tunnel up, run COMMAND with the proxy variables set
    /// (ALL_PROXY, HTTP(S)_PROXY, NO_PROXY) and the config's forwards
    /// listening, and exit with its status.
    Exec(ExecArgs),
    /// Run the userspace exit peer: answers its peers' handshakes and
    /// connects their flows to the real destinations, without root.
    Gateway(GatewayArgs),
    /// Run a gateway and a client in one process on loopback, with fresh
    /// keys: a SOCKS5 and an HTTP proxy that work with no WireGuard server.
    Quickstart(QuickstartArgs),
    /// Carry browsers' WireGuard datagrams between WebSockets and UDP to
    /// fixed upstream endpoints, and serve the web demo.
    Relay(RelayArgs),
    /// Print a new private key (base64).
    Genkey,
    /// Read a private key on stdin and print its public key.
    Pubkey,
}

/// What every tunnel-running mode shares.
#[derive(Args, Debug, Clone)]
pub struct Common {
    /// Serve Prometheus metrics on /metrics, a health check on /healthz
    /// and wireproxy's readiness check on /readyz (-i/--info as in
    /// wireproxy; ADDR may be localhost:PORT or :PORT, every address).
    #[arg(short = 'i', long, visible_alias = "info", value_name = "ADDR", value_parser = listen_addr)]
    pub metrics: Option<SocketAddr>,
    /// Write the tunnel's inner IP packets to a pcap file.
    #[arg(long, value_name = "FILE")]
    pub pcap: Option<PathBuf>,
    /// TCP connections open through the tunnel at once; past it, a SOCKS
    /// client gets "general failure", an HTTP client 503, and a gateway
    /// refuses the connection.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_CONNECTIONS)]
    pub max_connections: usize,
    /// Gateway: connections open at once from one client (tunnel address).
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_CONNECTIONS_PER_CLIENT)]
    pub max_connections_per_client: usize,
    /// Proxy clients still negotiating at once (no SOCKS5 request or
    /// routable HTTP request yet), across all proxies; past it new ones
    /// are closed (SOCKS5) or answered 503 (HTTP). Keeps slow or silent
    /// clients from taking every file descriptor.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_NEGOTIATING, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_negotiating: u64,
    /// Gateway: UDP flows (a client's datagrams to one destination) open
    /// at once; past it datagrams to a new destination are dropped. Each
    /// holds a host socket until it has been quiet for 30 s (never
    /// answered) or 120 s.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_UDP_FLOWS)]
    pub max_udp_flows: usize,
    /// Gateway: UDP flows open at once from one client (tunnel address).
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_UDP_FLOWS_PER_CLIENT)]
    pub max_udp_flows_per_client: usize,
    /// Memory all TCP connections together may take for buffers, in MiB:
    /// receive windows and data queued to send grow (up to 16 MiB each)
    /// only within it; an idle connection holds a few KiB.
    #[arg(long, value_name = "MIB", default_value_t = DEFAULT_BUFFER_BUDGET_MIB)]
    pub buffer_budget: usize,
    /// Congestion control of the TCP connections through the tunnel: bbr
    /// keeps its rate through random loss on long paths (as Linux's
    /// `bbr`); cubic backs off at every loss (Linux's usual default).
    #[arg(
        long,
        value_name = "ALGORITHM",
        value_enum,
        default_value_t = Congestion::Bbr,
        env = "UNDERPASS_CONGESTION"
    )]
    pub congestion: Congestion,
    /// Where the WireGuard UDP socket binds (all interfaces when `None`).
    /// Not a flag: `relay --demo` keeps its gateway on loopback with it.
    #[arg(skip)]
    pub udp_bind: Option<std::net::IpAddr>,
}

/// The `--congestion` choices.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Congestion {
    Bbr,
    Cubic,
}

impl Congestion {
    /// The kernel's and quinn's name for it.
    pub fn name(self) -> &'static str {
        match self {
            Congestion::Bbr => "bbr",
            Congestion::Cubic => "cubic",
        }
    }
}

impl From<Congestion> for underpass_stack::Congestion {
    fn from(c: Congestion) -> Self {
        match c {
            Congestion::Bbr => underpass_stack::Congestion::Bbr,
            Congestion::Cubic => underpass_stack::Congestion::Cubic,
        }
    }
}

/// The flags' defaults are the stack's: one home for each limit.
const DEFAULT_BUFFER_BUDGET_MIB: usize = underpass_stack::DEFAULT_BUFFER_BUDGET >> 20;

impl From<&Common> for TunnelOptions {
    fn from(c: &Common) -> TunnelOptions {
        TunnelOptions {
            metrics: c.metrics,
            pcap: c.pcap.clone(),
            max_connections: c.max_connections,
            max_connections_per_client: c.max_connections_per_client,
            max_negotiating: c.max_negotiating,
            max_udp_flows: c.max_udp_flows,
            max_udp_flows_per_client: c.max_udp_flows_per_client,
            buffer_budget: c.buffer_budget,
            congestion: c.congestion.into(),
            udp_bind: c.udp_bind,
        }
    }
}

#[derive(Args, Debug, Clone)]
pub struct ClientArgs {
    /// The configuration: wg-quick format plus wireproxy's sections
    /// (`-` reads stdin). Without it, UNDERPASS_CONFIG (the text itself)
    /// or UNDERPASS_CONFIG_FILE, else wireproxy's default files:
    /// /etc/wireproxy/wireproxy.conf, $HOME/.config/wireproxy.conf.
    #[arg(short, long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Serve SOCKS5 here (in addition to the config's [Socks5]).
    #[arg(long, value_name = "ADDR")]
    pub socks5: Option<SocketAddr>,
    /// Serve an HTTP proxy here (in addition to the config's [http]).
    #[arg(long, value_name = "ADDR")]
    pub http: Option<SocketAddr>,
    /// Check the configuration, print `config OK` and exit (-n and
    /// --configtest as in wireproxy).
    #[arg(short = 'n', long, visible_alias = "configtest")]
    pub check: bool,
    /// Log only warnings and errors (RUST_LOG still decides when set).
    #[arg(short, long)]
    pub silent: bool,
    /// Run in the background: return once the listeners are up (or with
    /// the error that kept them from coming up); logs then go nowhere.
    #[arg(short, long)]
    pub daemon: bool,
    #[command(flatten)]
    pub common: Common,
}

/// A listening address: `ip:port`, `[v6]:port`, `localhost:port`, or
/// `:port` for every address (as Go, and so wireproxy's `-i`, reads it).
fn listen_addr(text: &str) -> Result<SocketAddr, String> {
    crate::config::parse_bind(text).ok_or_else(|| {
        format!("`{text}` is not an address and port; expected e.g. 127.0.0.1:9100, localhost:9100 or :9100")
    })
}

/// How long `up --wait` and `exec` wait for the peers to answer.
const DEFAULT_HANDSHAKE_TIMEOUT: &str = "15";

#[derive(Args, Debug, Clone)]
pub struct UpArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// Wait for a handshake with every peer that has an Endpoint, then
    /// print one line per listener (`socks5 127.0.0.1:1080`) and `ready`
    /// on stdout; exit 1 if a peer does not answer in time.
    #[arg(long)]
    pub wait: bool,
    /// Seconds --wait waits for the handshakes.
    #[arg(long, value_name = "SECS", default_value = DEFAULT_HANDSHAKE_TIMEOUT)]
    pub handshake_timeout: u64,
}

#[derive(Args, Debug, Clone)]
pub struct ExecArgs {
    /// The configuration (`-` reads stdin); without it, UNDERPASS_CONFIG
    /// (the text) or UNDERPASS_CONFIG_FILE.
    #[arg(short, long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Seconds to wait for the peers to answer before giving up.
    #[arg(long, value_name = "SECS", default_value = DEFAULT_HANDSHAKE_TIMEOUT)]
    pub handshake_timeout: u64,
    /// Serve the command's proxies without credentials (for tools that
    /// cannot send them); by default they take a random password that
    /// only the command's proxy variables carry.
    #[arg(long)]
    pub no_proxy_auth: bool,
    #[command(flatten)]
    pub common: Common,
    /// The command and its arguments.
    #[arg(required = true, trailing_var_arg = true, value_name = "COMMAND")]
    pub command: Vec<std::ffi::OsString>,
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

/// The environment variable that can carry the token (not shown by `ps`,
/// unlike a command line).
pub const TOKEN_ENV: &str = "UNDERPASS_RELAY_TOKEN";

/// `underpass relay`: what the browsers' relay serves and to whom.
#[derive(Args, Debug, Clone)]
pub struct RelayArgs {
    /// Where the page connects (HTTP and WebSocket).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// A WireGuard endpoint (HOST:PORT) pages may reach; repeat for more.
    /// A page names the one its config's Endpoint says; nothing else is
    /// ever sent to.
    #[arg(long, value_name = "HOST:PORT")]
    pub upstream: Vec<String>,
    /// Require `?token=T` on /relay and /demo. A command line is visible
    /// to every user of the host (`ps`): prefer --token-file or the
    /// environment variable.
    #[arg(
        long,
        value_name = "T",
        env = TOKEN_ENV,
        hide_env_values = true
    )]
    pub token: Option<String>,
    /// Read the token from the first line of FILE.
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// Also let pages from ORIGIN (`https://app.example.com[:PORT]`) use
    /// /relay and /demo; repeat for more. The relay's own pages need none
    /// when they are addressed by IP or as localhost; under a DNS name,
    /// give that name's origin here (`Host` must be a name the relay
    /// knows, or a page could rebind its own name to the relay).
    #[arg(long, value_name = "ORIGIN")]
    pub allow_origin: Vec<String>,
    /// Serve the web demo's files (index.html, pkg/...) from here
    /// (never dotfiles, never through a symlink out of it).
    #[arg(long, value_name = "DIR")]
    pub web_root: Option<PathBuf>,
    /// Also run a demo gateway on loopback, add it as an upstream and give
    /// pages its client config at /demo (the token is required there when
    /// set). Its tunnel reaches a TCP echo and a byte source on loopback,
    /// nothing else.
    #[arg(long)]
    pub demo: bool,
    /// Connections open at once, in all: WebSockets, and HTTP connections
    /// from the moment they are accepted. Lowered to what the file
    /// descriptor limit allows.
    #[arg(long, value_name = "N", default_value_t = 256)]
    pub max_connections: usize,
    /// Connections open at once from one client (an IPv4 address, or an
    /// IPv6 /64), counted the same way.
    #[arg(long, value_name = "N", default_value_t = 16)]
    pub max_per_client: usize,
    /// Seconds a connection has to send its request head; an idle
    /// keep-alive connection is closed after as long.
    #[arg(long, value_name = "SECONDS", default_value_t = 10)]
    pub header_timeout: u64,
    /// A connection with no datagram either way for this long is closed.
    #[arg(long, value_name = "SECONDS", default_value_t = 300)]
    pub idle_timeout: u64,
    /// Serve WebSockets only: no WebTransport (HTTP/3) on the relay's UDP
    /// port.
    #[arg(long)]
    pub no_webtransport: bool,
    /// The WebTransport certificate chain (PEM), for pages that should
    /// verify the relay as any HTTPS site. Without it the relay makes a
    /// short-lived one and publishes its hash at /webtransport.
    #[arg(long, value_name = "FILE", requires = "key")]
    pub cert: Option<PathBuf>,
    /// The private key (PEM) for --cert.
    #[arg(long, value_name = "FILE", requires = "cert")]
    pub key: Option<PathBuf>,
    /// Benchmarks only: drop this fraction (0 to 1) of the datagrams
    /// between page and relay, both ways, as a lossy path would.
    #[arg(long, value_name = "FRACTION", default_value_t = 0.0, hide = true)]
    pub bench_loss: f64,
    /// Benchmarks and tests: decline the batching subprotocol, so every
    /// page sends one datagram per message, as before it existed.
    #[arg(long, hide = true)]
    pub no_batch: bool,
    /// Benchmarks and tests: do not offer WebTransport pages the upload
    /// and download streams, so every datagram goes as a QUIC datagram
    /// both ways, as with older relays (a page that asks for the download
    /// stream anyway is refused).
    #[arg(long, hide = true)]
    pub no_webtransport_stream: bool,
    /// The congestion controller the relay sends to pages with, on their
    /// WebSockets (TCP) and WebTransport sessions (QUIC). `bbr` keeps a
    /// download's rate through random loss, which `cubic` takes for
    /// congestion: at 50 ms and 1% loss a page downloaded at 38-59
    /// Mbit/s with bbr and at 2 with cubic (BENCHMARKS.md). Where the
    /// kernel refuses the name for TCP (not in
    /// net.ipv4.tcp_allowed_congestion_control, or not loaded),
    /// WebSockets keep the system's, with a warning.
    #[arg(long, value_name = "ALGORITHM", value_enum, default_value_t = Congestion::Bbr)]
    pub congestion: Congestion,
    /// Benchmarks only: how the WebTransport side's QUIC sends
    /// (`congestion=cubic|bbr|newreno,window=BYTES,sendbuf=BYTES`; its
    /// `congestion` overrides `--congestion`).
    #[arg(long, value_name = "SPEC", hide = true)]
    pub bench_quic: Option<String>,
    /// Tests only: replace the made WebTransport certificate every this
    /// many seconds instead of every 6 days.
    #[arg(long, value_name = "SECONDS", hide = true)]
    pub webtransport_renew: Option<u64>,
}
