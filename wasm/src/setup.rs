//! From the wg-quick text a page hands over to a running engine: the
//! config checked, the relay URL built.

use std::time::Duration;

use crate::driver::{self, Driver, Shared, RELAY_LABEL};
use crate::transport::Transport;
use underpass_core::config::Config;
use underpass_core::{PeerId, DEFAULT_MTU};
use underpass_stack::{Endpoints, Engine, EngineOptions, StackOptions};

/// Everything `connect` needs, checked before any network activity: the
/// engine is built once here, so a config it refuses fails before the
/// relay is contacted.
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
        let plan = Plan {
            endpoint: endpoint.to_string(),
            peer_name: peer.public_key.to_string(),
            config,
        };
        // Built once to check it; the real one is built at `start`, with
        // the transport's MTU and the wall clock.
        plan.engine(Duration::ZERO)?;
        Ok(plan)
    }

    /// The engine of the config: the same engine as natively (windows
    /// that grow to the path, BBR), in smaller rings: linear memory is
    /// never given back, and a page has 4 GiB of it at most. 4 MiB lets a
    /// window cover 300 Mbit/s at 100 ms.
    fn engine(&self, wall: Duration) -> Result<(Engine, PeerId), String> {
        let tune = |options: &mut StackOptions| {
            options.tcp.rx_buffer = 4 << 20;
            options.tcp.tx_buffer = 2 << 20;
            options.buffer_budget = 128 << 20;
        };
        let engine = Engine::from_config(
            &self.config,
            Endpoints::All(RELAY_LABEL),
            tune,
            EngineOptions::default(),
            Box::new(rand_core::OsRng),
            wall,
        )
        .map_err(|e| format!("config {e}"))?;
        let peer = engine
            .node()
            .peer_ids()
            .next()
            .ok_or("config: a [Peer] is needed")?;
        Ok((engine, peer))
    }

    /// The engine of the config, wired to `transport`.
    pub fn start(mut self, transport: Box<dyn Transport>) -> Result<Shared, String> {
        if let Some(max) = transport.max_datagram() {
            // WireGuard adds 32 bytes (header and tag) and pads no
            // further than the MTU.
            let mtu = self.config.interface.mtu.unwrap_or(DEFAULT_MTU);
            let fits = u16::try_from(max.saturating_sub(32)).unwrap_or(u16::MAX);
            self.config.interface.mtu = Some(mtu.min(fits));
        }
        let wall = Duration::from_secs_f64(js_sys::Date::now().max(0.0) / 1000.0);
        let (engine, peer) = self.engine(wall)?;
        Driver::start(engine, peer, transport, driver::monotonic_ms())
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
