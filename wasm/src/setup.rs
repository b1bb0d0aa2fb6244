//! From the wg-quick text a page hands over to a running engine: the
//! config checked, the relay URL built, the WebSocket opened.

use std::time::Duration;

use underpass_core::config::Config;
use underpass_core::PeerId;
use underpass_stack::{Endpoints, Engine, EngineOptions, StackOptions};
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use web_sys::WebSocket;

use crate::driver::{self, Driver, Shared, RELAY_LABEL};

/// Everything `connect` needs, checked and built before any network
/// activity.
pub struct Plan {
    engine: Engine,
    peer: PeerId,
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
        let (endpoint, peer_name) = (endpoint.to_string(), peer.public_key.to_string());
        let wall = Duration::from_secs_f64(js_sys::Date::now().max(0.0) / 1000.0);
        // The same engine as natively (windows that grow to the path,
        // BBR), in smaller rings: linear memory is never given back, and
        // a page has 4 GiB of it at most. 4 MiB lets a window cover
        // 300 Mbit/s at 100 ms.
        let tune = |options: &mut StackOptions| {
            options.tcp.rx_buffer = 4 << 20;
            options.tcp.tx_buffer = 2 << 20;
            options.buffer_budget = 128 << 20;
        };
        let engine = Engine::from_config(
            &config,
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
        Ok(Plan {
            engine,
            peer,
            endpoint,
            peer_name,
        })
    }

    /// The engine of the config, wired to `ws`.
    pub fn start(self, ws: WebSocket) -> Result<Shared, String> {
        Driver::start(self.engine, self.peer, ws, driver::monotonic_ms())
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

/// Opens `url`; resolves once open, with a message that names the relay
/// (not the token) when it cannot.
pub async fn open_websocket(url: &str, shown: &str) -> Result<WebSocket, String> {
    let ws = WebSocket::new(url).map_err(|_| format!("{shown:?} is not a valid WebSocket URL"))?;
    ws.set_binary_type(web_sys::BinaryType::Arraybuffer);
    let opened = js_sys::Promise::new(&mut |resolve, reject| {
        ws.set_onopen(Some(&resolve));
        let reject_close = reject.clone();
        let on_close = Closure::once_into_js(move |event: JsValue| {
            let why = match event.dyn_into::<web_sys::CloseEvent>() {
                Ok(c) if !c.reason().is_empty() => c.reason(),
                Ok(c) => format!("code {}", c.code()),
                Err(_) => String::new(),
            };
            let _ = reject_close.call1(&JsValue::NULL, &JsValue::from_str(&why));
        });
        ws.set_onclose(Some(on_close.unchecked_ref()));
        let on_error = Closure::once_into_js(move |_: JsValue| {
            let _ = reject.call1(&JsValue::NULL, &JsValue::from_str(""));
        });
        ws.set_onerror(Some(on_error.unchecked_ref()));
    });
    let result = wasm_bindgen_futures::JsFuture::from(opened).await;
    ws.set_onopen(None);
    ws.set_onerror(None);
    ws.set_onclose(None);
    match result {
        Ok(_) => Ok(ws),
        Err(why) => {
            let why = why.as_string().unwrap_or_default();
            // The relay refuses a wrong token, a page of another origin
            // or a full house with an HTTP status, which a page never
            // sees: only that the WebSocket did not open.
            Err(if why.is_empty() || why.starts_with("code ") {
                format!(
                    "cannot connect to the relay at {shown} (is it running, and are the URL and the token right?)"
                )
            } else {
                format!("the relay at {shown} refused the connection: {why}")
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Plan;

    #[test]
    fn a_peer_without_allowed_ips_gets_all_traffic() {
        let text = "[Interface]\nPrivateKey = yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=\nAddress = 10.0.0.2/32\n\n\
                    [Peer]\nPublicKey = xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=\nEndpoint = 127.0.0.1:51820\n";
        let plan = Plan::from_config(text).unwrap();
        let node = plan.engine.node();
        for ip in ["10.9.8.7", "2001:db8::1"] {
            assert_eq!(node.route(ip.parse().unwrap()), Some(plan.peer), "{ip}");
        }
    }
}
