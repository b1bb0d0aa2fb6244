//! WebTransport to `underpass relay`: each WireGuard datagram one QUIC
//! datagram, unreliable and unordered as WireGuard's own path is, so a
//! loss between page and relay costs the tunnel's TCP one segment instead
//! of stalling everything behind it as a WebSocket's TCP does.
//!
//! The relay publishes its session URL and its certificate's hash at
//! `/webtransport` next to `/relay`; a page that has WebTransport uses it
//! with nothing more to pass. Chromium's datagram high-water marks are 1
//! and it drops what is written past them, so writes wait for
//! `writer.ready`; a datagram larger than `maxDatagramSize` vanishes, so
//! the tunnel's MTU is kept under it (see `max_datagram`).

use std::cell::RefCell;
use std::collections::VecDeque;
use std::future::poll_fn;
use std::rc::Rc;
use std::task::{Poll, Waker};

use js_sys::{Array, Object, Promise, Reflect, Uint8Array};
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;

use super::{Inbound, Transport};

#[wasm_bindgen]
extern "C" {
    /// The browser's `WebTransport` (web-sys has it only behind
    /// `web_sys_unstable_apis`).
    #[wasm_bindgen(js_name = WebTransport)]
    type JsWebTransport;
    #[wasm_bindgen(constructor, catch, js_class = "WebTransport")]
    fn new(url: &str, options: &JsValue) -> Result<JsWebTransport, JsValue>;
    #[wasm_bindgen(method, getter)]
    fn ready(this: &JsWebTransport) -> Promise;
    #[wasm_bindgen(method, getter)]
    fn closed(this: &JsWebTransport) -> Promise;
    #[wasm_bindgen(method, getter)]
    fn datagrams(this: &JsWebTransport) -> JsDatagrams;
    #[wasm_bindgen(method)]
    fn close(this: &JsWebTransport);

    type JsDatagrams;
    #[wasm_bindgen(method, getter, js_name = maxDatagramSize)]
    fn max_datagram_size(this: &JsDatagrams) -> JsValue;
    #[wasm_bindgen(method, getter)]
    fn readable(this: &JsDatagrams) -> JsStream;
    #[wasm_bindgen(method, getter)]
    fn writable(this: &JsDatagrams) -> JsStream;

    type JsStream;
    #[wasm_bindgen(method, js_name = getReader)]
    fn get_reader(this: &JsStream) -> JsReader;
    #[wasm_bindgen(method, js_name = getWriter)]
    fn get_writer(this: &JsStream) -> JsWriter;

    type JsReader;
    #[wasm_bindgen(method)]
    fn read(this: &JsReader) -> Promise;
    #[wasm_bindgen(method)]
    fn cancel(this: &JsReader) -> Promise;

    type JsWriter;
    #[wasm_bindgen(method, getter)]
    fn ready(this: &JsWriter) -> Promise;
    #[wasm_bindgen(method)]
    fn write(this: &JsWriter, chunk: &Uint8Array) -> Promise;

    #[wasm_bindgen(js_name = fetch)]
    fn fetch_url(url: &str) -> Promise;
}

/// How long a session may take to open before the page uses its
/// WebSocket instead (a network that drops UDP never answers).
const OPEN_TIMEOUT_MS: f64 = 5_000.0;
/// What Chromium's `maxDatagramSize` was on loopback, for a browser that
/// does not say.
const DEFAULT_MAX_DATAGRAM: usize = 1_200;

/// The outgoing queue the writer drains, and the engine's view of it.
#[derive(Default)]
struct Outgoing {
    queue: VecDeque<Vec<u8>>,
    bytes: usize,
    writer_waiting: Option<Waker>,
    /// Set by `listen`: wakes the engine when the queue has drained, so a
    /// turn that stopped for a full queue goes on at once.
    wake_engine: Option<Rc<dyn Fn()>>,
    closed: bool,
}

pub struct WebTransportTransport {
    session: JsWebTransport,
    max_datagram: usize,
    outgoing: Rc<RefCell<Outgoing>>,
    reader: Option<JsReader>,
}

/// Why WebTransport is not used: said once on the console, then the page
/// uses its WebSocket.
pub type NotUsed = String;

impl WebTransportTransport {
    /// Asks the relay behind `relay_url` (`ws(s)://HOST:PORT/relay`)
    /// where its WebTransport is and opens a session there with `query`
    /// (endpoint and token); `Err` when the browser or the relay has none,
    /// or it did not open in time.
    pub async fn open(relay_url: &str, query: &str) -> Result<WebTransportTransport, NotUsed> {
        let global = js_sys::global();
        if !Reflect::has(&global, &JsValue::from_str("WebTransport")).unwrap_or(false) {
            return Err("this browser has no WebTransport".into());
        }
        let info_url = info_url(relay_url, query)?;
        let response = JsFuture::from(fetch_url(&info_url))
            .await
            .map_err(|_| "the relay's /webtransport did not answer".to_string())?;
        let ok = Reflect::get(&response, &"ok".into())
            .ok()
            .and_then(|v| v.as_bool())
            .unwrap_or(false);
        if !ok {
            return Err("the relay offers no WebTransport".into());
        }
        let json = call0(&response, "json")
            .map_err(|_| "the relay's /webtransport answer is not JSON".to_string())?;
        let info = JsFuture::from(json)
            .await
            .map_err(|_| "the relay's /webtransport answer is not JSON".to_string())?;
        let url = Reflect::get(&info, &"url".into())
            .ok()
            .and_then(|v| v.as_string())
            .ok_or("the relay's /webtransport answer has no url")?;
        let options = Object::new();
        let hashes = Array::new();
        if let Ok(list) = Reflect::get(&info, &"certificateHashes".into()) {
            for hex in Array::from(&list).iter().filter_map(|h| h.as_string()) {
                let bytes = decode_hex(&hex).ok_or("a certificate hash is not hex")?;
                let hash = Object::new();
                let _ = Reflect::set(&hash, &"algorithm".into(), &"sha-256".into());
                let _ = Reflect::set(&hash, &"value".into(), &Uint8Array::from(&bytes[..]).into());
                hashes.push(&hash);
            }
        }
        if hashes.length() > 0 {
            let _ = Reflect::set(&options, &"serverCertificateHashes".into(), &hashes);
        }
        let session_url = format!("{url}?{query}");
        let session = JsWebTransport::new(&session_url, &options)
            .map_err(|e| format!("WebTransport to {url}: {}", describe(&e)))?;
        let ready = JsFuture::from(session.ready());
        let timeout = crate::engine::sleep(OPEN_TIMEOUT_MS);
        let opened = futures_select(ready, timeout).await;
        match opened {
            Some(Ok(_)) => {}
            Some(Err(e)) => {
                session.close();
                return Err(format!("WebTransport to {url}: {}", describe(&e)));
            }
            None => {
                session.close();
                return Err(format!(
                    "WebTransport to {url} did not open within {} s",
                    OPEN_TIMEOUT_MS / 1000.0
                ));
            }
        }
        let datagrams = session.datagrams();
        // Room for a burst each way (the browser keeps 1 otherwise, and
        // drops the rest); where the browser ignores these, `writer.ready`
        // still paces the writes.
        let _ = Reflect::set(&datagrams, &"incomingHighWaterMark".into(), &4096.into());
        let _ = Reflect::set(&datagrams, &"outgoingHighWaterMark".into(), &64.into());
        let max_datagram = datagrams
            .max_datagram_size()
            .as_f64()
            .map(|m| m as usize)
            .filter(|&m| m > 0)
            .unwrap_or(DEFAULT_MAX_DATAGRAM);
        let transport = WebTransportTransport {
            session,
            max_datagram,
            outgoing: Rc::new(RefCell::new(Outgoing::default())),
            reader: None,
        };
        transport.spawn_writer();
        Ok(transport)
    }

    /// Drains the outgoing queue one datagram per `writer.ready`.
    fn spawn_writer(&self) {
        let writer = self.session.datagrams().writable().get_writer();
        let outgoing = self.outgoing.clone();
        wasm_bindgen_futures::spawn_local(async move {
            loop {
                if JsFuture::from(writer.ready()).await.is_err() {
                    outgoing.borrow_mut().closed = true;
                    return;
                }
                let next = poll_fn(|cx| {
                    let mut o = outgoing.borrow_mut();
                    if o.closed {
                        return Poll::Ready(None);
                    }
                    match o.queue.pop_front() {
                        Some(d) => {
                            o.bytes -= d.len();
                            Poll::Ready(Some((d, o.queue.is_empty(), o.wake_engine.clone())))
                        }
                        None => {
                            o.writer_waiting = Some(cx.waker().clone());
                            Poll::Pending
                        }
                    }
                })
                .await;
                let Some((datagram, drained, wake)) = next else {
                    return;
                };
                // Not awaited: `ready` above is the pace.
                let _ = writer.write(&Uint8Array::from(&datagram[..]));
                if drained {
                    if let Some(wake) = wake {
                        wake();
                    }
                }
            }
        });
    }
}

impl Transport for WebTransportTransport {
    fn kind(&self) -> &'static str {
        "webtransport"
    }

    fn batched(&self) -> bool {
        false
    }

    fn max_datagram(&self) -> Option<usize> {
        Some(self.max_datagram)
    }

    fn listen(&mut self, sink: Box<dyn FnMut(Inbound)>) {
        let sink = Rc::new(RefCell::new(sink));
        self.outgoing.borrow_mut().wake_engine = Some({
            let sink = sink.clone();
            Rc::new(move || {
                if let Ok(mut sink) = sink.try_borrow_mut() {
                    sink(Inbound::Datagrams(Vec::new()));
                }
            })
        });
        let reader = self.session.datagrams().readable().get_reader();
        self.reader = Some(JsValue::clone(&reader).unchecked_into());
        let closed = self.session.closed();
        let outgoing = self.outgoing.clone();
        wasm_bindgen_futures::spawn_local(async move {
            let done = loop {
                let Ok(result) = JsFuture::from(reader.read()).await else {
                    break "the relay's WebTransport session failed".to_string();
                };
                if Reflect::get(&result, &"done".into())
                    .ok()
                    .and_then(|d| d.as_bool())
                    .unwrap_or(true)
                {
                    break "the relay closed the WebTransport session".to_string();
                };
                let Ok(value) = Reflect::get(&result, &"value".into()) else {
                    continue;
                };
                let datagram = Uint8Array::new(&value).to_vec();
                if let Ok(mut sink) = sink.try_borrow_mut() {
                    sink(Inbound::Datagrams(vec![datagram]));
                }
            };
            let why = match JsFuture::from(closed).await {
                Ok(info) => Reflect::get(&info, &"reason".into())
                    .ok()
                    .and_then(|r| r.as_string())
                    .filter(|r| !r.is_empty())
                    .map(|r| format!("the relay closed the WebTransport session: {r}"))
                    .unwrap_or(done),
                Err(_) => done,
            };
            let waiting = {
                let mut o = outgoing.borrow_mut();
                o.closed = true;
                o.writer_waiting.take()
            };
            if let Some(w) = waiting {
                w.wake();
            }
            if let Ok(mut sink) = sink.try_borrow_mut() {
                sink(Inbound::Closed(why));
            }
        });
    }

    fn push(&mut self, datagram: &[u8]) -> Result<(), String> {
        if datagram.len() > self.max_datagram {
            // The browser would drop it without a word.
            return Err(format!(
                "a datagram of {} bytes, over WebTransport's {}",
                datagram.len(),
                self.max_datagram
            ));
        }
        let waiting = {
            let mut o = self.outgoing.borrow_mut();
            if o.closed {
                return Err("the relay's WebTransport session is closed".into());
            }
            o.bytes += datagram.len();
            o.queue.push_back(datagram.to_vec());
            o.writer_waiting.take()
        };
        if let Some(w) = waiting {
            w.wake();
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), String> {
        Ok(())
    }

    fn buffered(&self) -> u32 {
        u32::try_from(self.outgoing.borrow().bytes).unwrap_or(u32::MAX)
    }

    fn close(&mut self) {
        let waiting = {
            let mut o = self.outgoing.borrow_mut();
            o.closed = true;
            o.queue.clear();
            o.bytes = 0;
            o.wake_engine = None;
            o.writer_waiting.take()
        };
        if let Some(w) = waiting {
            w.wake();
        }
        if let Some(reader) = self.reader.take() {
            let _ = reader.cancel();
        }
        self.session.close();
    }
}

impl Drop for WebTransportTransport {
    fn drop(&mut self) {
        self.close();
    }
}

/// `ws(s)://HOST:PORT/relay?...` into `http(s)://HOST:PORT/webtransport?query`.
fn info_url(relay_url: &str, query: &str) -> Result<String, String> {
    let (scheme, rest) = relay_url
        .split_once("://")
        .ok_or("the relay URL has no scheme")?;
    let scheme = match scheme.to_ascii_lowercase().as_str() {
        "ws" => "http",
        "wss" => "https",
        _ => return Err("the relay URL is not ws:// or wss://".into()),
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    Ok(format!("{scheme}://{authority}/webtransport?{query}"))
}

fn decode_hex(hex: &str) -> Option<Vec<u8>> {
    if hex.len() % 2 != 0 || !hex.is_ascii() {
        return None;
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).ok())
        .collect()
}

fn call0(target: &JsValue, method: &str) -> Result<Promise, JsValue> {
    let f: js_sys::Function = Reflect::get(target, &method.into())?.dyn_into()?;
    f.call0(target)?.dyn_into()
}

fn describe(e: &JsValue) -> String {
    Reflect::get(e, &"message".into())
        .ok()
        .and_then(|m| m.as_string())
        .or_else(|| e.as_string())
        .unwrap_or_else(|| "refused".into())
}

/// The first of `a` (its result) and `b` (`None`) to finish.
async fn futures_select<A, B>(a: A, b: B) -> Option<A::Output>
where
    A: std::future::Future,
    B: std::future::Future<Output = ()>,
{
    let mut a = std::pin::pin!(a);
    let mut b = std::pin::pin!(b);
    poll_fn(|cx| {
        if let Poll::Ready(v) = a.as_mut().poll(cx) {
            return Poll::Ready(Some(v));
        }
        if b.as_mut().poll(cx).is_ready() {
            return Poll::Ready(None);
        }
        Poll::Pending
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_info_url_sits_next_to_the_relay() {
        assert_eq!(
            info_url("ws://127.0.0.1:8080/relay", "endpoint=a&token=t").unwrap(),
            "http://127.0.0.1:8080/webtransport?endpoint=a&token=t"
        );
        assert_eq!(
            info_url("WSS://relay.example/relay?x=1", "").unwrap(),
            "https://relay.example/webtransport?"
        );
        assert!(info_url("http://x/relay", "").is_err());
    }

    #[test]
    fn hashes_decode_from_hex() {
        assert_eq!(decode_hex("00ff10"), Some(vec![0, 255, 16]));
        assert_eq!(decode_hex("0"), None);
        assert_eq!(decode_hex("zz"), None);
    }
}
