//! A gateway as a hub: with `[Gateway] PeerToPeer = true`, one client
//! reaches another client's `[TCPServerTunnel]` through the gateway, the
//! packets routed between them at the IP level; without it (the default)
//! the gateway refuses such flows.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use underpass_tests::http_server::HttpServer;
use underpass_tests::{
    content_checksum, curl, curl_text, free_port, keys, metric, wait_tcp, write_content, Checksum,
    Keys, Process, Scratch,
};

const GATEWAY_IP: &str = "10.60.0.1";
const A_IP: &str = "10.60.0.2";
const B_IP: &str = "10.60.0.3";
const A_IP6: &str = "fd60::2";
const B_IP6: &str = "fd60::3";
/// The tunnel port of B's `[TCPServerTunnel]`.
const B_PORT: u16 = 8080;

struct Hub {
    _gateway: Process,
    _a: Process,
    _b: Process,
    gateway_log: PathBuf,
    /// The gateway's `--metrics` address.
    metrics: SocketAddr,
    /// Client A's SOCKS5 proxy.
    socks: String,
    scratch: Scratch,
}

/// A gateway with two clients: B serves `web` on its tunnel port
/// [`B_PORT`], A has a SOCKS5 proxy. `gateway_extra` goes into the
/// gateway's `[Gateway]` section.
fn start(name: &str, gateway_extra: &str, web: &HttpServer) -> Hub {
    let scratch = Scratch::new(name);
    let (g, a, b): (Keys, Keys, Keys) = (keys(), keys(), keys());
    let port = free_port();
    let gateway_config = scratch.write(
        "gateway.conf",
        &format!(
            "[Interface]\nPrivateKey = {}\nAddress = {GATEWAY_IP}/24, fd60::1/64\nListenPort = {port}\n\n\
             [Peer]\nPublicKey = {}\nAllowedIPs = {A_IP}/32, {A_IP6}/128\n\n\
             [Peer]\nPublicKey = {}\nAllowedIPs = {B_IP}/32, {B_IP6}/128\n\n\
             [Gateway]\n{gateway_extra}\n",
            g.private, a.public, b.public
        ),
    );
    let metrics = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let mut gateway = Process::start(
        "gateway",
        &scratch,
        &[
            "gateway",
            "--config",
            gateway_config.to_str().unwrap(),
            "--metrics",
            &metrics.to_string(),
        ],
    );
    gateway.wait_for_log("gateway listening", Duration::from_secs(20));
    let client = |keys: &Keys, ip: &str, ip6: &str, extra: String| {
        format!(
            "[Interface]\nPrivateKey = {}\nAddress = {ip}/32, {ip6}/128\n\n\
             [Peer]\nPublicKey = {}\nEndpoint = 127.0.0.1:{port}\nAllowedIPs = 10.60.0.0/24, fd60::/64\n\
             PersistentKeepalive = 25\n\n{extra}",
            keys.private, g.public
        )
    };
    let b_config = scratch.write(
        "b.conf",
        &client(
            &b,
            B_IP,
            B_IP6,
            format!(
                "[TCPServerTunnel]\nListenPort = {B_PORT}\nTarget = {}\n",
                web.addr
            ),
        ),
    );
    let mut b_proc = Process::start(
        "client-b",
        &scratch,
        &["--config", b_config.to_str().unwrap()],
    );
    // The gateway learns B's endpoint from B's handshake.
    b_proc.wait_for_log("handshake completed", Duration::from_secs(20));
    let socks = format!("127.0.0.1:{}", free_port());
    let a_config = scratch.write(
        "a.conf",
        &client(
            &a,
            A_IP,
            A_IP6,
            format!("[Socks5]\nBindAddress = {socks}\n"),
        ),
    );
    let mut a_proc = Process::start(
        "client-a",
        &scratch,
        &["--config", a_config.to_str().unwrap()],
    );
    a_proc.wait_for_log("handshake completed", Duration::from_secs(20));
    wait_tcp(socks.parse().unwrap(), Duration::from_secs(10));
    Hub {
        _gateway: gateway,
        _a: a_proc,
        _b: b_proc,
        gateway_log: scratch.path("gateway.log"),
        metrics,
        socks,
        scratch,
    }
}

#[test]
fn with_peer_to_peer_one_client_reaches_anothers_server_tunnel_through_the_gateway() {
    let web = HttpServer::start();
    let hub = start("hub-on", "PeerToPeer = true", &web);
    let url = |path: &str| format!("http://{B_IP}:{B_PORT}{path}");
    let body = curl_text(&curl(&["--socks5", &hub.socks, &url("/hello")]));
    assert_eq!(body, "hello underpass\n");
    // IPv6 between the peers too.
    let body = curl_text(&curl(&[
        "--socks5",
        &hub.socks,
        &format!("http://[{B_IP6}]:{B_PORT}/hello"),
    ]));
    assert_eq!(body, "hello underpass\n");
    // 4 MiB each way, every byte checked.
    let len = 4u64 << 20;
    let file = hub.scratch.path("down.bin");
    curl_text(&curl(&[
        "--socks5",
        &hub.socks,
        "-o",
        file.to_str().unwrap(),
        &url(&format!("/bytes/{len}?seed=7")),
    ]));
    assert_eq!(Checksum::of_file(&file), (content_checksum(7, len), len));
    let up = hub.scratch.path("up.bin");
    let expected = write_content(&up, 8, len);
    let out = curl_text(&curl(&[
        "--socks5",
        &hub.socks,
        "-T",
        up.to_str().unwrap(),
        &url("/sink"),
    ]));
    assert_eq!(out, format!("{len} {expected}\n"));
    // Every segment of both transfers crossed the gateway as a routed
    // packet (8 MiB is over 5,000 full segments), none through its stack.
    let routed = metric(hub.metrics, "underpass_peer_to_peer_packets_total");
    assert!(
        routed > 5_000,
        "only {routed} packets routed between the peers"
    );
    let log = std::fs::read_to_string(&hub.gateway_log).unwrap();
    assert!(
        !log.contains("refused a flow"),
        "the gateway refused something:\n{log}"
    );
}

/// Asks for B's page through A and expects the gateway to refuse it.
fn refused(hub: &Hub) {
    let out = curl(&[
        "--max-time",
        "10",
        "--socks5",
        &hub.socks,
        &format!("http://{B_IP}:{B_PORT}/hello"),
    ]);
    assert!(
        !out.status.success(),
        "curl reached the other peer: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    // curl's --max-time is 10 s: a refusal, not a timeout.
    assert_ne!(
        out.status.code(),
        Some(28),
        "curl timed out instead of being refused"
    );
    let log = std::fs::read_to_string(&hub.gateway_log).unwrap();
    assert!(
        log.contains("refused a flow") && log.contains("PeerToPeer = true"),
        "the gateway should log the refusal and say how to allow it:\n{log}"
    );
    assert_eq!(
        metric(hub.metrics, "underpass_peer_to_peer_packets_total"),
        0
    );
}

#[test]
fn without_peer_to_peer_the_gateway_refuses_flows_between_its_peers() {
    let web = HttpServer::start();
    refused(&start("hub-off", "AllowedDestinations = 0.0.0.0/0", &web));
}

#[test]
fn peer_to_peer_reaches_only_the_peers_allowed_destinations_lists() {
    let web = HttpServer::start();
    refused(&start(
        "hub-unlisted",
        "PeerToPeer = true\nAllowedDestinations = 10.60.0.2/32, 192.0.2.0/24",
        &web,
    ));
}
