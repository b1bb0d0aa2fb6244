//! The WebSocket to `underpass relay`: one datagram per binary message, or
//! many with the batching subprotocol (`underpass.batch.v1`, see
//! `underpass_core::relay_batch`), which the page always asks for and
//! uses when the relay picks it. A browser pays per message, so batching
//! is what lets it move more than a few hundred Mbit/s.

use underpass_core::relay_batch::{self, Batcher};
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use web_sys::{BinaryType, CloseEvent, MessageEvent, WebSocket};

use super::{Inbound, Transport};

pub struct WebSocketTransport {
    ws: WebSocket,
    batched: bool,
    batcher: Batcher,
    sent: u64,
    received: std::rc::Rc<std::cell::Cell<u64>>,
    /// The JS callbacks, kept alive as long as the transport.
    hooks: Vec<Closure<dyn FnMut(JsValue)>>,
}

impl WebSocketTransport {
    /// Opens `url`, asking for batching; resolves once open, with a
    /// message that names the relay as `shown` (never the token) when it
    /// cannot.
    ///
    /// A browser fails the handshake when it asked for a subprotocol and
    /// the relay named none, which is what a relay without batching does
    /// (and a page cannot tell that from any other refusal): so a failed
    /// open is tried once more without asking.
    pub async fn open(url: &str, shown: &str) -> Result<WebSocketTransport, String> {
        let asking = WebSocket::new_with_str(url, relay_batch::PROTOCOL)
            .map_err(|_| format!("{shown:?} is not a valid WebSocket URL"))?;
        let ws = match opened(asking, shown).await {
            Ok(ws) => ws,
            Err(_) => {
                let plain = WebSocket::new(url)
                    .map_err(|_| format!("{shown:?} is not a valid WebSocket URL"))?;
                opened(plain, shown).await?
            }
        };
        let batched = ws.protocol() == relay_batch::PROTOCOL;
        Ok(WebSocketTransport {
            ws,
            batched,
            batcher: Batcher::new(),
            sent: 0,
            received: Default::default(),
            hooks: Vec::new(),
        })
    }

    fn send(&mut self, message: &[u8]) -> Result<(), String> {
        self.sent += 1;
        send(&self.ws, message)
    }
}

impl Transport for WebSocketTransport {
    fn kind(&self) -> &'static str {
        "websocket"
    }

    fn batched(&self) -> bool {
        self.batched
    }

    fn listen(&mut self, sink: Box<dyn FnMut(Inbound)>) {
        let sink = std::rc::Rc::new(std::cell::RefCell::new(sink));
        let batched = self.batched;
        let received = self.received.clone();
        let on_message = Closure::<dyn FnMut(JsValue)>::new({
            let sink = sink.clone();
            move |event: JsValue| {
                let Ok(event) = event.dyn_into::<MessageEvent>() else {
                    return;
                };
                let Ok(buffer) = event.data().dyn_into::<js_sys::ArrayBuffer>() else {
                    return;
                };
                let message = js_sys::Uint8Array::new(&buffer).to_vec();
                received.set(received.get() + 1);
                let inbound = if !batched {
                    Inbound::Datagrams(vec![message])
                } else {
                    match relay_batch::split(&message) {
                        Ok(datagrams) => {
                            Inbound::Datagrams(datagrams.into_iter().map(<[u8]>::to_vec).collect())
                        }
                        Err(e) => Inbound::Closed(format!("the relay sent {e}")),
                    }
                };
                if let Ok(mut sink) = sink.try_borrow_mut() {
                    sink(inbound);
                }
            }
        });
        let on_close = Closure::<dyn FnMut(JsValue)>::new(move |event: JsValue| {
            let why = match event.dyn_into::<CloseEvent>() {
                Ok(c) if !c.reason().is_empty() => {
                    format!(
                        "the relay closed the connection: {} ({})",
                        c.reason(),
                        c.code()
                    )
                }
                Ok(c) => format!("the relay connection closed (code {})", c.code()),
                Err(_) => "the relay connection closed".to_string(),
            };
            if let Ok(mut sink) = sink.try_borrow_mut() {
                sink(Inbound::Closed(why));
            }
        });
        self.ws
            .set_onmessage(Some(on_message.as_ref().unchecked_ref()));
        self.ws.set_onclose(Some(on_close.as_ref().unchecked_ref()));
        self.hooks = vec![on_message, on_close];
    }

    fn push(&mut self, datagram: &[u8]) -> Result<(), String> {
        if !self.batched {
            return self.send(datagram);
        }
        if self.batcher.push(datagram) {
            return Ok(());
        }
        self.flush()?;
        if self.batcher.push(datagram) {
            Ok(())
        } else {
            // Larger than any message may be: not a WireGuard datagram.
            Err(format!("a datagram of {} bytes", datagram.len()))
        }
    }

    fn flush(&mut self) -> Result<(), String> {
        if self.batcher.is_empty() {
            return Ok(());
        }
        self.sent += 1;
        let sent = send(&self.ws, self.batcher.message());
        self.batcher.clear();
        sent
    }

    fn messages(&self) -> (u64, u64) {
        (self.sent, self.received.get())
    }

    fn buffered(&self) -> u32 {
        self.ws.buffered_amount()
    }

    fn close(&mut self) {
        let _ = self.ws.close();
        self.ws.set_onmessage(None);
        self.ws.set_onclose(None);
    }
}

impl Drop for WebSocketTransport {
    fn drop(&mut self) {
        self.close();
    }
}

fn send(ws: &WebSocket, message: &[u8]) -> Result<(), String> {
    ws.send_with_u8_array(message)
        .map_err(|_| "the relay connection is closed".to_string())
}

/// Resolves once `ws` is open; the refusal in words otherwise.
async fn opened(ws: WebSocket, shown: &str) -> Result<WebSocket, String> {
    ws.set_binary_type(BinaryType::Arraybuffer);
    let opened = js_sys::Promise::new(&mut |resolve, reject| {
        ws.set_onopen(Some(&resolve));
        let reject_close = reject.clone();
        let on_close = Closure::once_into_js(move |event: JsValue| {
            let why = match event.dyn_into::<CloseEvent>() {
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
