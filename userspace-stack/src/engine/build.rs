//! An engine from a parsed wg-quick config: the node with its peers, the
//! stack with the interface's addresses, MTU and DNS. Native and browser
//! builds differ only in how endpoints become addresses and how the stack
//! is tuned.

use std::net::SocketAddr;
use std::time::Duration;

use underpass_core::config::{Config, Endpoint};
use underpass_core::random::CryptoRngCore;
use underpass_core::{Instant, Node, NodeOptions};

use super::{DynamicEndpoint, Engine, EngineOptions};
use crate::{Stack, StackOptions};

/// How the peers' configured endpoints become socket addresses.
#[derive(Debug, Clone, Copy)]
pub enum Endpoints<'a> {
    /// Resolved by the caller, one entry per peer in config order; `None`
    /// for a name that does not resolve now (it is tried again when
    /// handshakes go unanswered).
    Resolved(&'a [Option<SocketAddr>]),
    /// Every datagram goes to this address whatever the config says (the
    /// browser: the relay, not the page, knows where the peer is).
    All(SocketAddr),
}

/// Why a config does not make an engine; names the config line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct BuildError {
    /// The line of the section at fault.
    pub line: usize,
    /// What is wrong and what was expected.
    pub message: String,
}

impl Engine {
    /// Builds the node and the stack `config` describes. `tune` adjusts the
    /// stack's options (limits, buffers, congestion control) before it is
    /// made; `rng` seeds both; `wall` is the wall-clock time now (since the
    /// UNIX epoch), which handshakes carry. The engine's clock starts at
    /// [`Instant::ZERO`].
    pub fn from_config(
        config: &Config,
        endpoints: Endpoints<'_>,
        tune: impl FnOnce(&mut StackOptions),
        options: EngineOptions,
        mut rng: Box<dyn CryptoRngCore + Send>,
        wall: Duration,
    ) -> Result<Engine, BuildError> {
        let iface = &config.interface;
        if iface.addresses.is_empty() {
            return Err(BuildError {
                line: iface.line,
                message: "[Interface] needs an Address: the tunnel address the peer routes to \
                          this side (e.g. Address = 10.0.0.2/32)"
                    .into(),
            });
        }
        let mtu = iface.mtu.map_or(NodeOptions::default().mtu, usize::from);
        let stack_seed = underpass_core::random::seed_from(&mut *rng);
        let mut node = Node::new(
            iface.private_key.clone(),
            NodeOptions {
                mtu,
                ..NodeOptions::default()
            },
            rng,
            Instant::ZERO,
            wall,
        );
        let mut dynamic = Vec::new();
        for (i, peer) in config.peers.iter().enumerate() {
            let endpoint = match endpoints {
                Endpoints::All(addr) => Some(addr),
                Endpoints::Resolved(addrs) => match &peer.endpoint {
                    Some(Endpoint::Addr(a)) => Some(*a),
                    _ => addrs.get(i).copied().flatten(),
                },
            };
            let id = node
                .add_peer(peer.options(endpoint), Instant::ZERO)
                .map_err(|e| BuildError {
                    line: peer.line,
                    message: e.to_string(),
                })?;
            if let (Endpoints::Resolved(_), Some(Endpoint::Host { host, port })) =
                (endpoints, &peer.endpoint)
            {
                dynamic.push(DynamicEndpoint {
                    peer: id,
                    host: host.clone(),
                    port: *port,
                });
            }
        }
        let mut stack_options = StackOptions::new(iface.addresses.clone(), stack_seed);
        stack_options.mtu = mtu;
        stack_options.dns_servers = iface.dns.clone();
        tune(&mut stack_options);
        let stack = Stack::new(stack_options, Instant::ZERO).map_err(|e| BuildError {
            line: iface.line,
            message: format!("[Interface]: {e}"),
        })?;
        let mut engine = Engine::new(node, stack, options);
        engine.dynamic = dynamic;
        Ok(engine)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEYS: &str = "PrivateKey = yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=\n";
    const PEER: &str = "PublicKey = xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=\n";

    fn build(text: &str, endpoints: Endpoints<'_>) -> Result<Engine, BuildError> {
        let config = Config::parse(text).unwrap();
        Engine::from_config(
            &config,
            endpoints,
            |_| {},
            EngineOptions::default(),
            Box::new(<rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(1)),
            Duration::from_secs(1_764_000_000),
        )
    }

    #[test]
    fn a_config_without_an_address_is_refused_with_its_line() {
        let text = format!("\n[Interface]\n{KEYS}\n[Peer]\n{PEER}AllowedIPs = 0.0.0.0/0\n");
        let err = build(&text, Endpoints::Resolved(&[])).err().unwrap();
        assert_eq!(err.line, 2);
        assert!(err
            .to_string()
            .starts_with("line 2: [Interface] needs an Address"));
    }

    #[test]
    fn endpoints_come_from_the_config_the_caller_or_the_relay() {
        let text = format!(
            "[Interface]\n{KEYS}Address = 10.0.0.2/32\nMTU = 1280\n\
             [Peer]\n{PEER}AllowedIPs = 0.0.0.0/0\nEndpoint = vpn.example.net:51820\n"
        );
        let now = Instant::ZERO;
        let resolved: SocketAddr = "192.0.2.7:51820".parse().unwrap();
        let engine = build(&text, Endpoints::Resolved(&[Some(resolved)])).unwrap();
        let peer = engine.node().peer_ids().next().unwrap();
        assert_eq!(
            engine.node().peer(peer, now).unwrap().endpoint,
            Some(resolved)
        );
        assert_eq!(
            engine.configured_endpoint(peer, now).as_deref(),
            Some("vpn.example.net:51820"),
            "a name is shown as configured, and resolved again later"
        );

        let relay: SocketAddr = "192.0.2.1:51820".parse().unwrap();
        let engine = build(&text, Endpoints::All(relay)).unwrap();
        assert_eq!(engine.node().peer(peer, now).unwrap().endpoint, Some(relay));
        assert_eq!(
            engine.configured_endpoint(peer, now).as_deref(),
            Some("192.0.2.1:51820"),
            "behind a relay no name is resolved"
        );
    }
}
