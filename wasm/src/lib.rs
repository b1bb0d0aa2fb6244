//! underpass in the browser: the same WireGuard node and userspace TCP/IP
//! stack as the native client, compiled to WebAssembly. A page cannot send
//! UDP, so datagrams travel as WebSocket messages (many per message when the
//! relay offers batching), or over WebTransport where the page asks, to
//! `underpass relay`, which forwards them to the WireGuard endpoint it was
//! configured with.
//!
//! ```js
//! import init, { Tunnel } from "./pkg/underpass_wasm.js";
//! await init();
//! const t = await Tunnel.connect({ config, relayUrl: "ws://localhost:8080/relay", token });
//! const r = await t.fetch("http://10.0.0.1/", { method: "GET" });
//! console.log(r.status, new TextDecoder().decode(r.body));
//! const s = await t.openTcp("10.0.0.1", 7);
//! await s.write(new TextEncoder().encode("ping"));
//! const reply = await s.read(); // Uint8Array, or null at EOF
//! s.close();
//! t.close();
//! ```
//!
//! Errors reject the promise with an `Error` whose message says what went
//! wrong; nothing traps the module.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod driver;
pub mod http;
mod setup;
mod stream;
mod transport;

use std::future::poll_fn;
use std::net::{IpAddr, SocketAddr};
use std::task::Poll;

use js_sys::{Object, Reflect, Uint8Array};
use wasm_bindgen::prelude::*;

use driver::Shared;
pub use stream::TcpStream;

/// How long `connect` waits for the first handshake unless told.
const DEFAULT_HANDSHAKE_TIMEOUT_MS: f64 = 15_000.0;

/// A WireGuard tunnel from this page, through a relay.
#[wasm_bindgen]
pub struct Tunnel {
    shared: Shared,
    relay_url: String,
}

fn error(message: impl std::fmt::Display) -> JsError {
    JsError::new(&message.to_string())
}

fn get(options: &JsValue, key: &str) -> Option<JsValue> {
    Reflect::get(options, &JsValue::from_str(key))
        .ok()
        .filter(|v| !v.is_undefined() && !v.is_null())
}

fn get_string(options: &JsValue, key: &str) -> Result<Option<String>, JsError> {
    match get(options, key) {
        None => Ok(None),
        Some(v) => v
            .as_string()
            .map(Some)
            .ok_or_else(|| error(format!("option {key} must be a string"))),
    }
}

fn set(object: &Object, key: &str, value: impl Into<JsValue>) {
    let _ = Reflect::set(object, &JsValue::from_str(key), &value.into());
}

/// How the page reaches the relay, from `Tunnel.connect`'s `transport`.
#[derive(Clone, Copy, PartialEq)]
enum Wanted {
    /// The WebSocket, batched where the relay offers it: the default,
    /// since in Chromium it was as fast or faster than every WebTransport
    /// mode on every path measured (loopback, relay loss, 50 ms with and
    /// without loss; see BENCHMARKS.md).
    WebSocket,
    /// WebTransport or an error.
    WebTransport,
    /// WebTransport where the browser and the relay have it, else the
    /// WebSocket (why goes to the console).
    PreferWebTransport,
}

impl Wanted {
    fn parse(option: Option<&str>) -> Result<Wanted, JsError> {
        match option {
            None | Some("websocket") => Ok(Wanted::WebSocket),
            Some("webtransport") => Ok(Wanted::WebTransport),
            Some("prefer-webtransport") => Ok(Wanted::PreferWebTransport),
            Some(other) => Err(error(format!(
                "option transport must be \"websocket\", \"webtransport\" or \"prefer-webtransport\", not {other:?}"
            ))),
        }
    }
}

/// Opens the transport `wanted` asks for. `download` is the
/// `webtransportDownload` option.
async fn open_transport(
    url: &str,
    relay_url: &str,
    wanted: Wanted,
    download: Option<&str>,
) -> Result<Box<dyn transport::Transport>, JsError> {
    // A stream by default: one read per 64 KiB instead of one per
    // datagram, faster than datagrams in every cell measured, relay loss
    // included.
    let download_stream = match download {
        None | Some("stream") => true,
        Some("datagrams") => false,
        Some(other) => {
            return Err(error(format!(
                "option webtransportDownload must be \"stream\" or \"datagrams\", not {other:?}"
            )))
        }
    };
    if wanted != Wanted::WebSocket {
        let query = url.split_once('?').map_or("", |(_, q)| q);
        match transport::WebTransportTransport::open(relay_url, query, download_stream).await {
            Ok(t) => return Ok(Box::new(t)),
            Err(why) if wanted == Wanted::WebTransport => return Err(error(why)),
            Err(why) => {
                web_sys::console::info_1(&format!("underpass: {why}; using the WebSocket").into())
            }
        }
    }
    let ws = transport::WebSocketTransport::open(url, relay_url)
        .await
        .map_err(error)?;
    Ok(Box::new(ws))
}

#[wasm_bindgen]
impl Tunnel {
    /// Opens the WebSocket to `relayUrl` and completes a handshake with the
    /// config's peer. Options: `config` (wg-quick text, one `[Peer]`),
    /// `relayUrl` (`ws://` or `wss://`, path `/relay`), `token` (optional),
    /// `handshakeTimeoutMs` (default 15000), `transport` (optional:
    /// `"websocket"`, the default; `"webtransport"` insists on it;
    /// `"prefer-webtransport"` takes it where the browser and the relay
    /// have it, else the WebSocket), `webtransportDownload` (optional:
    /// `"stream"`, the default: downloads over WebTransport batched on one
    /// QUIC stream where the relay offers it; `"datagrams"`: one QUIC
    /// datagram each, no head-of-line blocking, but Chromium's cost per
    /// datagram read holds it to about half the rate).
    pub async fn connect(options: JsValue) -> Result<Tunnel, JsError> {
        let config = get_string(&options, "config")?
            .ok_or_else(|| error("Tunnel.connect needs { config, relayUrl }: config is missing"))?;
        let relay_url = get_string(&options, "relayUrl")?.ok_or_else(|| {
            error("Tunnel.connect needs { config, relayUrl }: relayUrl is missing")
        })?;
        let token = get_string(&options, "token")?;
        let timeout_ms = get(&options, "handshakeTimeoutMs")
            .and_then(|v| v.as_f64())
            .unwrap_or(DEFAULT_HANDSHAKE_TIMEOUT_MS);
        let plan = setup::Plan::from_config(&config).map_err(error)?;
        let url = setup::relay_url(&relay_url, &plan.endpoint, token.as_deref()).map_err(error)?;
        let wanted = Wanted::parse(get_string(&options, "transport")?.as_deref())?;
        let download = get_string(&options, "webtransportDownload")?;
        let transport = open_transport(&url, &relay_url, wanted, download.as_deref()).await?;
        let peer_name = plan.peer_name.clone();
        let endpoint = plan.endpoint.clone();
        let shared = plan.start(transport).map_err(error)?;
        shared.borrow_mut().connect();
        let deadline = driver::monotonic_ms() + timeout_ms;
        let timer = {
            let shared = shared.clone();
            async move {
                driver::sleep(timeout_ms).await;
                // Wake the waiter below so it sees the deadline.
                shared.borrow_mut().wake_waiters();
            }
        };
        wasm_bindgen_futures::spawn_local(timer);
        poll_fn(|cx| {
            let mut e = shared.borrow_mut();
            if let Some(why) = &e.closed {
                return Poll::Ready(Err(error(why)));
            }
            if e.has_session() {
                return Poll::Ready(Ok(()));
            }
            if driver::monotonic_ms() >= deadline {
                let why = format!(
                    "no handshake with peer {peer_name} at {endpoint} through the relay after {:.0} s (is the peer up, and are the keys right?)",
                    timeout_ms / 1000.0
                );
                e.shut(why.clone());
                return Poll::Ready(Err(error(why)));
            }
            e.wait_for_change(cx.waker());
            Poll::Pending
        })
        .await?;
        Ok(Tunnel { shared, relay_url })
    }

    /// Opens a TCP connection through the tunnel; `host` is an IP address
    /// or a name resolved through the config's `DNS =` servers.
    #[wasm_bindgen(js_name = openTcp)]
    pub async fn open_tcp(&self, host: String, port: u16) -> Result<TcpStream, JsError> {
        let addrs = self.resolve(&host).await?;
        let addrs = self.shared.borrow().engine().reachable(&addrs);
        let mut last =
            "no route through the tunnel (the peer's AllowedIPs, the tunnel's addresses)"
                .to_string();
        for ip in addrs {
            match TcpStream::connect(self.shared.clone(), SocketAddr::new(ip, port)).await {
                Ok(s) => return Ok(s),
                Err(e) => last = e,
            }
        }
        Err(error(format!(
            "cannot connect to {host} port {port}: {last}"
        )))
    }

    /// Resolves `host` through the tunnel's DNS (an IP address as is).
    pub async fn lookup(&self, host: String) -> Result<js_sys::Array, JsError> {
        let addrs = self.resolve(&host).await?;
        Ok(addrs
            .iter()
            .map(|a| JsValue::from_str(&a.to_string()))
            .collect())
    }

    async fn resolve(&self, host: &str) -> Result<Vec<IpAddr>, JsError> {
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = bare.parse::<IpAddr>() {
            return Ok(vec![ip]);
        }
        let id = {
            let mut e = self.shared.borrow_mut();
            if let Some(why) = &e.closed {
                return Err(error(why));
            }
            let id = e
                .stack()
                .dns_resolve(host)
                .map_err(|err| error(format!("cannot resolve {host}: {err}")))?;
            e.schedule();
            id
        };
        poll_fn(|cx| {
            let mut e = self.shared.borrow_mut();
            if let Some(why) = &e.closed {
                return Poll::Ready(Err(error(why)));
            }
            e.wait_for_change(cx.waker());
            e.stack()
                .poll_resolve(cx, id)
                .map_err(|err| error(format!("cannot resolve {host}: {err}")))
        })
        .await
    }

    /// An HTTP/1.1 request over a new TCP connection through the tunnel.
    /// `init`: `{ method, headers, body }` (headers an object or an array
    /// of pairs; body a string or a Uint8Array). Resolves to
    /// `{ status, statusText, headers, body }`, `headers` an array of
    /// [name, value] pairs, `body` a Uint8Array.
    pub async fn fetch(&self, url: String, init: JsValue) -> Result<JsValue, JsError> {
        let url = http::Url::parse(&url).map_err(error)?;
        let method = get_string(&init, "method")?.unwrap_or_else(|| "GET".into());
        let method = method.to_ascii_uppercase();
        let headers = headers_from(get(&init, "headers"))?;
        let body = match get(&init, "body") {
            None => Vec::new(),
            Some(b) if b.is_string() => b.as_string().unwrap_or_default().into_bytes(),
            Some(b) if b.is_instance_of::<Uint8Array>() => Uint8Array::from(b).to_vec(),
            Some(b) if b.is_instance_of::<js_sys::ArrayBuffer>() => Uint8Array::new(&b).to_vec(),
            Some(_) => {
                return Err(error(
                    "fetch: body must be a string, Uint8Array or ArrayBuffer",
                ))
            }
        };
        let request = http::encode_request(&method, &url, &headers, &body).map_err(error)?;
        let stream = self.open_tcp(url.host.clone(), url.port).await?;
        let result = stream.exchange(&request, method == "HEAD").await;
        stream.close();
        let response = result.map_err(error)?;
        let out = Object::new();
        set(&out, "status", response.status);
        set(&out, "statusText", response.reason);
        let pairs = js_sys::Array::new();
        for (name, value) in response.headers {
            let pair = js_sys::Array::new();
            pair.push(&JsValue::from_str(&name));
            pair.push(&JsValue::from_str(&value));
            pairs.push(&pair);
        }
        set(&out, "headers", pairs);
        set(&out, "body", Uint8Array::from(response.body.as_slice()));
        Ok(out.into())
    }

    /// `{ state, handshakeAgeMs, handshakes, rttMs, txBytes, rxBytes,
    /// txPackets, rxPackets, txMessages, rxMessages, engineMs, relayUrl, transport, batched,
    /// downloadStream, tunnelAddresses, tcpConnections }`; `transport` is
    /// `"websocket"` or `"webtransport"`, `batched` whether many datagrams
    /// go per message (over WebTransport: whether uploads go batched on its
    /// stream), `downloadStream` whether WebTransport downloads come
    /// batched on a stream (the default; not with `webtransportDownload: "datagrams"`), `engineMs`
    /// the time the engine's turns took in all.
    pub fn stats(&self) -> JsValue {
        let e = self.shared.borrow();
        let now = e.now();
        let info = e.engine().node().peer(e.peer(), now);
        let out = Object::new();
        let state = match (&e.closed, info.as_ref().is_some_and(|p| p.has_session)) {
            (Some(_), _) => "closed",
            (None, true) => "up",
            (None, false) => "handshaking",
        };
        set(&out, "state", state);
        if let Some(why) = &e.closed {
            set(&out, "closedBecause", why.as_str());
        }
        if let Some(p) = &info {
            if let Some(at) = p.last_handshake {
                set(
                    &out,
                    "handshakeAgeMs",
                    now.saturating_duration_since(at).as_secs_f64() * 1000.0,
                );
            }
            set(&out, "handshakes", p.handshakes_completed as f64);
            set(&out, "peer", p.public_key.to_string());
        }
        if let Some(rtt) = e.engine().handshake_rtt(e.peer()) {
            set(&out, "rttMs", rtt.as_secs_f64() * 1000.0);
        }
        let c = e.engine().counters();
        set(&out, "txBytes", c.tx_bytes as f64);
        set(&out, "rxBytes", c.rx_bytes as f64);
        set(&out, "txPackets", c.tx_datagrams as f64);
        set(&out, "rxPackets", c.rx_datagrams as f64);
        set(&out, "engineMs", e.turn_ms());
        let (tx_messages, rx_messages) = e.transport().messages();
        set(&out, "txMessages", tx_messages as f64);
        set(&out, "rxMessages", rx_messages as f64);
        set(&out, "relayUrl", self.relay_url.as_str());
        set(&out, "transport", e.transport().kind());
        set(&out, "batched", e.transport().batched());
        set(&out, "downloadStream", e.transport().download_stream());
        let addrs: js_sys::Array = e
            .engine()
            .stack()
            .addresses()
            .iter()
            .map(|a| JsValue::from_str(&a.to_string()))
            .collect();
        set(&out, "tunnelAddresses", addrs);
        set(
            &out,
            "tcpConnections",
            e.engine().stack().stats().tcp_open as f64,
        );
        out.into()
    }

    /// Closes the relay connection; open streams fail from now on.
    pub fn close(&self) {
        self.shared
            .borrow_mut()
            .shut("the tunnel was closed".into());
    }
}

fn headers_from(value: Option<JsValue>) -> Result<Vec<(String, String)>, JsError> {
    let Some(value) = value else {
        return Ok(Vec::new());
    };
    let pairs: Vec<JsValue> = if js_sys::Array::is_array(&value) {
        js_sys::Array::from(&value).iter().collect()
    } else if value.is_object() {
        Object::entries(value.unchecked_ref()).iter().collect()
    } else {
        return Err(error(
            "fetch: headers must be an object or an array of [name, value] pairs",
        ));
    };
    pairs
        .into_iter()
        .map(|pair| {
            let pair = js_sys::Array::from(&pair);
            match (pair.get(0).as_string(), pair.get(1).as_string()) {
                (Some(n), Some(v)) => Ok((n, v)),
                _ => Err(error(
                    "fetch: each header must be a [name, value] pair of strings",
                )),
            }
        })
        .collect()
}
