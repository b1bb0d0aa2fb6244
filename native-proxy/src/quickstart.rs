//! `underpass quickstart`: a gateway and a client in one process, joined
//! over loopback UDP with fresh keys, so the proxies work on a bare machine
//! with no WireGuard server anywhere. The gateway runs on its own thread
//! (its own engine), as it would in its own process.

use underpass_core::PrivateKey;

use crate::accept::ListenerKind;
use crate::cli::QuickstartArgs;
use crate::client::Client;
use crate::config::{ProxyConfig, ProxyListener};
use crate::gateway::{self, Defaults};
use crate::Failure;

const GATEWAY_V4: &str = "10.77.0.1";
const CLIENT_V4: &str = "10.77.0.2";

pub async fn run(args: QuickstartArgs) -> Result<(), Failure> {
    let mut rng = rand::rngs::OsRng;
    let (gateway_key, client_key) = (
        PrivateKey::generate(&mut rng),
        PrivateKey::generate(&mut rng),
    );
    let gateway_cfg = ProxyConfig::generated(
        &format!(
            "[Interface]\nPrivateKey = {}\nAddress = {GATEWAY_V4}/32, fd77::1/128\nListenPort = 0\n\n\
             [Peer]\nPublicKey = {}\nAllowedIPs = {CLIENT_V4}/32, fd77::2/128\n",
            gateway_key.to_base64(),
            client_key.public_key()
        ),
        "quickstart gateway",
    )?;

    let port = gateway::spawn(
        gateway_cfg,
        Defaults::Everything,
        crate::options::TunnelOptions::default(),
        None,
    )?;

    let client_cfg = ProxyConfig::generated(
        &format!(
            "[Interface]\nPrivateKey = {}\nAddress = {CLIENT_V4}/32, fd77::2/128\nDNS = {GATEWAY_V4}\n\n\
             [Peer]\nPublicKey = {}\nEndpoint = 127.0.0.1:{port}\nAllowedIPs = 0.0.0.0/0, ::/0\nPersistentKeepalive = 25\n",
            client_key.to_base64(),
            gateway_key.public_key()
        ),
        "quickstart client",
    )?;
    let socks = [ProxyListener {
        bind: args.socks5,
        auth: None,
        tls: None,
    }];
    let http = [ProxyListener {
        bind: args.http,
        auth: None,
        tls: None,
    }];
    let client = Client::start(&client_cfg, &socks, &http, &(&args.common).into()).await?;
    let addrs = client.local_addrs();
    let find = |kind| addrs.iter().find(|(k, _)| *k == kind).map(|(_, a)| *a);
    let (socks_addr, http_addr) = (find(ListenerKind::Socks5), find(ListenerKind::Http));
    println!("underpass quickstart: a WireGuard client and gateway on loopback (gateway UDP port {port})");
    if let Some(a) = socks_addr {
        println!("  SOCKS5 proxy  {a}");
    }
    if let Some(a) = http_addr {
        println!("  HTTP proxy    {a}");
    }
    if let (Some(s), Some(h)) = (socks_addr, http_addr) {
        println!("try:");
        println!(
            "  curl --socks5-hostname {s} http://127.0.0.1:PORT/   (any server on this machine)"
        );
        println!("  curl -x http://{h} http://localhost:PORT/");
    }
    println!("Ctrl-C stops it.");
    client.serve(&client_cfg).await
}
