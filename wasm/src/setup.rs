//! From the wg-quick text a page hands over to a running engine: the
//! config checked, the relay URL built.

use std::time::Duration;

use crate::engine::{self, Engine, Shared, RELAY_LABEL};
use crate::transport::Transport;
use underpass_core::config::Config;
use underpass_core::{Instant, Node, NodeOptions};
use underpass_stack::{Stack, StackOptions};

/// Everything `connect` needs, checked before any network activity.
pub struct Plan {
    config: Config,
    /// The peer's `Endpoint` as written: the relay must serve it.
    pub endpoint: String,
    pub peer_name: String,
}

impl Plan {
    pub fn from_config(text: &str) -> Result<Plan, String> {
        let mut config = Config::parse(text).map_err(|e| format!("config: {e}"))?;
        // A peer without AllowedIPs gets all traffic, as wireproxy (and
        // the native client) has it.
        if let [peer] = config.peers.as_mut_slice() {
            if peer.allowed_ips.is_empty() {
                peer.allowed_ips = ["0.0.0.0/0", "::/0"]
                    .iter()
                    .filter_map(|n| n.parse().ok())
                    .collect();
            }
        }
        if config.interface.addresses.is_empty() {
            return Err(format!(
                "config line {}: [Interface] needs an Address (the tunnel address the peer routes to this page)",
                config.interface.line
            ));
        }
        let peer = match config.peers.as_slice() {
            [] => return Err("config: a [Peer] is needed: the WireGuard peer the relay forwards to".into()),
            [peer] => peer,
            more => {
                return Err(format!(
                    "config: the browser client talks to one [Peer] (through one relay connection); this config has {}",
                    more.len()
                ))
            }
        };
        let Some(endpoint) = &peer.endpoint else {
            return Err(format!(
                "config line {}: [Peer] needs an Endpoint: the relay forwards to it and only to the endpoints it was started with",
                peer.line
            ));
        };
        Ok(Plan {
            endpoint: endpoint.to_string(),
            peer_name: peer.public_key.to_string(),
            config,
        })
    }

    /// The node and stack of the config, wired to `transport`.
    pub fn start(self, transport: Box<dyn Transport>) -> Result<Shared, String> {
        let iface = &self.config.interface;
        let mut mtu = usize::from(iface.mtu.unwrap_or(1420));
        if let Some(max) = transport.max_datagram() {
            // WireGuard adds 32 bytes (header and tag) and pads no
            // further than the MTU.
            mtu = mtu.min(max.saturating_sub(32));
        }
        let wall = Duration::from_secs_f64(js_sys::Date::now().max(0.0) / 1000.0);
        let mut node = Node::new(
            iface.private_key.clone(),
            NodeOptions {
                mtu,
                ..NodeOptions::default()
            },
            Box::new(rand_core::OsRng),
            Instant::ZERO,
            wall,
        );
        let peer = node
            .add_peer(
                self.config.peers[0].options(Some(RELAY_LABEL)),
                Instant::ZERO,
            )
            .map_err(|e| format!("config line {}: {e}", self.config.peers[0].line))?;
        let mut seed = [0u8; 8];
        rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut seed);
        let mut options = StackOptions::new(iface.addresses.clone(), u64::from_le_bytes(seed));
        options.mtu = mtu;
        options.dns_servers = iface.dns.clone();
        // The same engine as natively (windows that grow to the path,
        // BBR), in smaller rings: linear memory is never given back, and
        // a page has 4 GiB of it at most. 4 MiB lets a window cover
        // 300 Mbit/s at 100 ms.
        options.tcp.rx_buffer = 4 << 20;
        options.tcp.tx_buffer = 2 << 20;
        options.buffer_budget = 128 << 20;
        let stack =
            Stack::new(options, Instant::ZERO).map_err(|e| format!("config: [Interface]: {e}"))?;
        Engine::start(node, stack, peer, transport, engine::monotonic_ms())
    }
}

/// `relay` with the peer's endpoint and the token in its query: a browser
/// cannot set headers on a WebSocket.
pub fn relay_url(relay: &str, endpoint: &str, token: Option<&str>) -> Result<String, String> {
    let lower = relay.to_ascii_lowercase();
    if !(lower.starts_with("ws://") || lower.starts_with("wss://")) {
        return Err(format!(
            "relayUrl {relay:?} must start with ws:// or wss:// (the relay's /relay endpoint)"
        ));
    }
    let mut url = relay.to_string();
    url.push(if url.contains('?') { '&' } else { '?' });
    url.push_str("endpoint=");
    url.push_str(&String::from(js_sys::encode_uri_component(endpoint)));
    if let Some(token) = token.filter(|t| !t.is_empty()) {
        url.push_str("&token=");
        url.push_str(&String::from(js_sys::encode_uri_component(token)));
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::Plan;

    #[test]
    fn a_peer_without_allowed_ips_gets_all_traffic() {
        let text = "[Interface]\nPrivateKey = yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=\nAddress = 10.0.0.2/32\n\n\
                    [Peer]\nPublicKey = xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=\nEndpoint = 127.0.0.1:51820\n";
        let plan = Plan::from_config(text).unwrap();
        let all: Vec<String> = plan.config.peers[0]
            .allowed_ips
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(all, ["0.0.0.0/0", "::/0"]);
    }
}
