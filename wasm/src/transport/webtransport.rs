//! WebTransport to `underpass relay`, where a page asks for it
//! (`transport: "webtransport"` or `"prefer-webtransport"`; the batched
//! WebSocket is the default, as fast or faster in Chromium on every path
//! measured).
//!
//! Uploads go on a QUIC stream in `underpass.batch.v1`'s framing, up to
//! 64 KiB per write, where the relay says it reads one (`uploadStream` in
//! its `/webtransport` answer), else one QUIC datagram each. Chromium pays
//! so much per datagram written that uploads as datagrams stopped at ~90
//! Mbit/s; on the stream they run several times faster (BENCHMARKS.md,
//! "WebTransport"), and a loss between page and relay is repaired by QUIC
//! within its round trip, short next to the tunnel's.
//!
//! Downloads come batched too, on one stream the relay opens, in the same
//! framing, where the relay offers it (`downloadStream`) unless the page
//! asks for datagrams (`webtransportDownload: "datagrams"`): each
//! WireGuard datagram one QUIC datagram, unreliable and unordered as
//! WireGuard's own path is, so a loss between page and relay costs the
//! tunnel's TCP one segment instead of stalling everything behind it. But
//! Chromium's renderer spends some 40-53 us on every datagram a page
//! reads, which held datagram downloads to ~80-150 Mbit/s here against
//! ~200-300 on the stream, one read per 64 KiB, and the stream kept 90% of
//! its rate at the relay's 1% loss.
//!
//! The relay publishes its session URL and its certificate's hash at
//! `/webtransport` next to `/relay`; a page that asks for WebTransport
//! needs nothing more to pass. Chromium's datagram high-water marks are 1
//! and it drops what is written past them, so writes wait for
//! `writer.ready`; a datagram larger than `maxDatagramSize` vanishes, so
//! the tunnel's MTU is kept under it (see `max_datagram`).

use std::cell::{Cell, RefCell};
use std::future::poll_fn;
use std::rc::Rc;
use std::task::Poll;

use js_sys::{Array, Object, Promise, Reflect, Uint8Array};
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;

use underpass_core::relay_batch::{self, Batcher, StreamSplitter};

use super::{Inbound, Transport};

/// The per-datagram work stays in JS, where an `await` costs little:
/// reads are handed to the engine in batches, one per task, and writes
/// wait for `writer.ready` (Chromium keeps one datagram queued and drops
/// what is written past it).
#[wasm_bindgen(inline_js = r#"
// Hands what a reader reads to `deliver` in batches, one per task, and
// at the end what is left with why (unless cancelled).
function perTask(deliver) {
  let inbox = [];
  let scheduled = false;
  let cancelled = false;
  const channel = new MessageChannel();
  channel.port1.onmessage = () => {
    scheduled = false;
    if (cancelled) return;
    const batch = inbox;
    inbox = [];
    deliver(batch, undefined);
  };
  return {
    push(value) {
      inbox.push(value);
      if (!scheduled) {
        scheduled = true;
        channel.port2.postMessage(0);
      }
    },
    end(why) {
      channel.port1.close();
      if (!cancelled) deliver(inbox, why);
      inbox = [];
    },
    cancel() { cancelled = true; },
  };
}

export function datagramPump(session, deliver, drained) {
  const reader = session.datagrams.readable.getReader();
  const writer = session.datagrams.writable.getWriter();
  const inbound = perTask(deliver);
  let cancelled = false;
  let closed = false;
  const out = [];
  let outBytes = 0;
  let writing = false;
  (async () => {
    let why = "the relay closed the WebTransport session";
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        inbound.push(value);
      }
    } catch (e) {
      why = "the relay's WebTransport session failed";
    }
    try {
      const info = await session.closed;
      if (info && info.reason) why = `the relay closed the WebTransport session: ${info.reason}`;
    } catch (e) {
      if (e && e.message) why = `the relay's WebTransport session failed: ${e.message}`;
    }
    closed = true;
    out.length = 0;
    outBytes = 0;
    inbound.end(why);
  })();
  async function drain() {
    writing = true;
    try {
      while (out.length > 0) {
        await writer.ready;
        const d = out.shift();
        outBytes -= d.byteLength;
        writer.write(d).catch(() => {});
      }
    } catch (e) {
      closed = true;
      out.length = 0;
      outBytes = 0;
    }
    writing = false;
    if (!closed && !cancelled) drained();
  }
  return {
    send(d) {
      if (closed) return false;
      out.push(d);
      outBytes += d.byteLength;
      if (!writing) drain();
      return true;
    },
    buffered() { return outBytes; },
    cancel() {
      cancelled = true;
      inbound.cancel();
      closed = true;
      out.length = 0;
      outBytes = 0;
      reader.cancel().catch(() => {});
    },
  };
}

export function downloadPump(session, deliver) {
  const inbound = perTask(deliver);
  let cancelled = false;
  let reader = null;
  (async () => {
    try {
      const streams = session.incomingUnidirectionalStreams.getReader();
      const { value, done } = await streams.read();
      streams.releaseLock();
      if (!done && !cancelled) {
        reader = value.getReader();
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          inbound.push(value);
        }
      }
    } catch (e) {}
    // The session's end is the datagram pump's to report; a stream that
    // ends while the session goes on is an end of its own.
    const open = await Promise.race([
      session.closed.then(() => false, () => false),
      new Promise((r) => setTimeout(() => r(true), 1000)),
    ]);
    inbound.end(open ? "the relay ended its WebTransport download stream" : undefined);
  })();
  return {
    cancel() {
      cancelled = true;
      inbound.cancel();
      if (reader) reader.cancel().catch(() => {});
    },
  };
}

export async function openUploadStream(session) {
  const stream = await session.createUnidirectionalStream();
  return stream.getWriter();
}

export function streamPump(writer, drained) {
  let closed = false;
  let outBytes = 0;
  return {
    send(batch) {
      if (closed) return false;
      outBytes += batch.byteLength;
      writer.write(batch).then(() => {
        outBytes -= batch.byteLength;
        if (!closed) drained();
      }, () => {
        closed = true;
        outBytes = 0;
      });
      return true;
    },
    buffered() { return outBytes; },
    cancel() {
      closed = true;
      outBytes = 0;
      writer.abort().catch(() => {});
    },
  };
}
"#)]
extern "C" {
    type JsPump;
    #[wasm_bindgen(js_name = datagramPump)]
    fn datagram_pump(
        session: &JsWebTransport,
        deliver: &Closure<dyn FnMut(Array, JsValue)>,
        drained: &Closure<dyn FnMut()>,
    ) -> JsPump;
    #[wasm_bindgen(method)]
    fn send(this: &JsPump, datagram: &Uint8Array) -> bool;
    #[wasm_bindgen(method)]
    fn buffered(this: &JsPump) -> f64;
    #[wasm_bindgen(method)]
    fn cancel(this: &JsPump);

    /// Reads the relay's download stream, handing what each task read to
    /// `deliver` (chunks of the stream, not datagrams), and at its end
    /// why, unless the session's end is why.
    type JsDownload;
    #[wasm_bindgen(js_name = downloadPump)]
    fn download_pump(
        session: &JsWebTransport,
        deliver: &Closure<dyn FnMut(Array, JsValue)>,
    ) -> JsDownload;
    #[wasm_bindgen(method, js_name = cancel)]
    fn cancel_download(this: &JsDownload);

    #[wasm_bindgen(js_name = openUploadStream)]
    fn open_upload_stream(session: &JsWebTransport) -> Promise;
    /// The upload stream's writes; its `send`, `buffered` and `cancel`
    /// are the datagram pump's.
    #[wasm_bindgen(js_name = streamPump)]
    fn stream_pump(writer: &JsValue, drained: &Closure<dyn FnMut()>) -> JsPump;
}

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

    #[wasm_bindgen(js_name = fetch)]
    fn fetch_url(url: &str) -> Promise;
}

/// How long a session may take to open before the page uses its
/// WebSocket instead (a network that drops UDP never answers).
const OPEN_TIMEOUT_MS: f64 = 5_000.0;
/// What Chromium's `maxDatagramSize` was on loopback, for a browser that
/// does not say.
const DEFAULT_MAX_DATAGRAM: usize = 1_200;

/// Called with a batch of datagrams, and at the end with why.
type Deliver = Closure<dyn FnMut(Array, JsValue)>;
/// Where `listen` hands what arrives, shared by the callbacks.
type Sink = Rc<RefCell<Box<dyn FnMut(Inbound)>>>;

pub struct WebTransportTransport {
    session: JsWebTransport,
    max_datagram: usize,
    /// Made by `listen`: the reader and writer loops.
    pump: Option<JsPump>,
    /// The JS callbacks, kept alive as long as the transport.
    hooks: Option<(Deliver, Closure<dyn FnMut()>)>,
    /// Uploads on a stream, when the relay reads one.
    upload: Option<Upload>,
    /// Downloads on a stream, when the page asked and the relay offered:
    /// its reader (from `listen`) and the callback it calls.
    download: Option<(Option<JsDownload>, Option<Deliver>)>,
    /// Datagrams written (or stream writes) and datagrams read.
    sent: u64,
    received: Rc<Cell<u64>>,
}

/// The upload stream: its writer until `listen`, then its pump, and the
/// batch this turn is filling.
struct Upload {
    writer: JsValue,
    pump: Option<JsPump>,
    batcher: Batcher,
}

/// Why WebTransport is not used: said once on the console, then the page
/// uses its WebSocket.
pub type NotUsed = String;

impl WebTransportTransport {
    /// Asks the relay behind `relay_url` (`ws(s)://HOST:PORT/relay`)
    /// where its WebTransport is and opens a session there with `query`
    /// (endpoint and token); `Err` when the browser or the relay has none,
    /// or it did not open in time. With `download_stream` downloads come
    /// on a stream where the relay offers one.
    pub async fn open(
        relay_url: &str,
        query: &str,
        download_stream: bool,
    ) -> Result<WebTransportTransport, NotUsed> {
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
        let download = download_stream && offers(&info, "downloadStream");
        let mut session_url = format!("{url}?{query}");
        if download {
            if !query.is_empty() {
                session_url.push('&');
            }
            session_url.push_str("download=");
            session_url.push_str(relay_batch::PROTOCOL);
        }
        let session = JsWebTransport::new(&session_url, &options)
            .map_err(|e| format!("WebTransport to {url}: {}", describe(&e)))?;
        let ready = JsFuture::from(session.ready());
        let timeout = crate::driver::sleep(OPEN_TIMEOUT_MS);
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
        // A datagram queued behind QUIC's congestion window expires after
        // about an RTT by default, and on a short path that is almost at
        // once: a tunnel's TCP would rather have it late than lost.
        let _ = Reflect::set(&datagrams, &"outgoingMaxAge".into(), &500.into());
        let _ = Reflect::set(&datagrams, &"incomingMaxAge".into(), &500.into());
        let max_datagram = datagrams
            .max_datagram_size()
            .as_f64()
            .map(|m| m as usize)
            .filter(|&m| m > 0)
            .unwrap_or(DEFAULT_MAX_DATAGRAM);
        let upload = if offers(&info, "uploadStream") {
            // A stream that will not open leaves the datagrams.
            JsFuture::from(open_upload_stream(&session))
                .await
                .ok()
                .map(|writer| Upload {
                    writer,
                    pump: None,
                    batcher: Batcher::new(),
                })
        } else {
            None
        };
        Ok(WebTransportTransport {
            session,
            max_datagram,
            pump: None,
            hooks: None,
            upload,
            download: download.then_some((None, None)),
            sent: 0,
            received: Rc::default(),
        })
    }
}

impl Transport for WebTransportTransport {
    fn kind(&self) -> &'static str {
        "webtransport"
    }

    /// Uploads are, on the stream (downloads: see `download_stream`).
    fn batched(&self) -> bool {
        self.upload.is_some()
    }

    fn download_stream(&self) -> bool {
        self.download.is_some()
    }

    fn max_datagram(&self) -> Option<usize> {
        Some(self.max_datagram)
    }

    fn listen(&mut self, sink: Box<dyn FnMut(Inbound)>) {
        let sink = Rc::new(RefCell::new(sink));
        let deliver = Closure::<dyn FnMut(Array, JsValue)>::new({
            let sink = sink.clone();
            let received = self.received.clone();
            move |batch: Array, why: JsValue| {
                received.set(received.get() + u64::from(batch.length()));
                let Ok(mut sink) = sink.try_borrow_mut() else {
                    return;
                };
                // The reader's chunks are Uint8Arrays: `Uint8Array::new`
                // of one would copy it first.
                let datagrams: Vec<Vec<u8>> = batch
                    .iter()
                    .map(|d| d.unchecked_into::<Uint8Array>().to_vec())
                    .collect();
                if !datagrams.is_empty() {
                    sink(Inbound::Datagrams(datagrams));
                }
                if let Some(why) = why.as_string() {
                    sink(Inbound::Closed(why));
                }
            }
        });
        if let Some(download) = &mut self.download {
            let hook = download_hook(sink.clone(), self.received.clone());
            download.0 = Some(download_pump(&self.session, &hook));
            download.1 = Some(hook);
        }
        // The queue drained: a turn that stopped for a full queue goes on.
        let drained = Closure::<dyn FnMut()>::new(move || {
            if let Ok(mut sink) = sink.try_borrow_mut() {
                sink(Inbound::Datagrams(Vec::new()));
            }
        });
        self.pump = Some(datagram_pump(&self.session, &deliver, &drained));
        if let Some(upload) = &mut self.upload {
            upload.pump = Some(stream_pump(&upload.writer, &drained));
        }
        self.hooks = Some((deliver, drained));
    }

    fn push(&mut self, datagram: &[u8]) -> Result<(), String> {
        if self.upload.is_some() {
            return self.push_on_stream(datagram);
        }
        if datagram.len() > self.max_datagram {
            // The browser would drop it without a word.
            return Err(format!(
                "a datagram of {} bytes, over WebTransport's {}",
                datagram.len(),
                self.max_datagram
            ));
        }
        match &self.pump {
            Some(pump) if pump.send(&Uint8Array::from(datagram)) => {
                self.sent += 1;
                Ok(())
            }
            _ => Err(CLOSED.into()),
        }
    }

    fn flush(&mut self) -> Result<(), String> {
        let Some(upload) = &mut self.upload else {
            return Ok(());
        };
        if upload.batcher.is_empty() {
            return Ok(());
        }
        let batch = Uint8Array::from(upload.batcher.message());
        upload.batcher.clear();
        match &upload.pump {
            Some(pump) if pump.send(&batch) => {
                self.sent += 1;
                Ok(())
            }
            _ => Err(CLOSED.into()),
        }
    }

    fn messages(&self) -> (u64, u64) {
        (self.sent, self.received.get())
    }

    fn buffered(&self) -> u32 {
        let stream = self.upload.as_ref().and_then(|u| u.pump.as_ref());
        [self.pump.as_ref(), stream]
            .into_iter()
            .flatten()
            .map(|p| p.buffered() as u32)
            .sum()
    }

    fn close(&mut self) {
        if let Some(pump) = self.pump.take() {
            pump.cancel();
        }
        if let Some(pump) = self.upload.as_mut().and_then(|u| u.pump.take()) {
            pump.cancel();
        }
        if let Some((pump, hook)) = &mut self.download {
            if let Some(pump) = pump.take() {
                pump.cancel_download();
            }
            *hook = None;
        }
        self.session.close();
        self.hooks = None;
    }
}

const CLOSED: &str = "the relay's WebTransport session is closed";

impl WebTransportTransport {
    /// Adds `datagram` to this turn's batch, writing the batch first
    /// when it is full (64 KiB per write, the WebSocket's bound).
    fn push_on_stream(&mut self, datagram: &[u8]) -> Result<(), String> {
        let Some(upload) = &mut self.upload else {
            return Err(CLOSED.into());
        };
        if upload.batcher.push(datagram) {
            return Ok(());
        }
        self.flush()?;
        let pushed = self
            .upload
            .as_mut()
            .is_some_and(|upload| upload.batcher.push(datagram));
        if pushed {
            Ok(())
        } else {
            // Larger than any batch: not a WireGuard datagram.
            Err(format!("a datagram of {} bytes", datagram.len()))
        }
    }
}

impl Drop for WebTransportTransport {
    fn drop(&mut self) {
        self.close();
    }
}

/// Whether the relay's `/webtransport` answer offers `key` in the batch
/// framing.
fn offers(info: &JsValue, key: &str) -> bool {
    Reflect::get(info, &key.into())
        .ok()
        .and_then(|v| v.as_string())
        .is_some_and(|p| p == relay_batch::PROTOCOL)
}

/// The download stream's callback: splits the chunks each task read into
/// datagrams for the engine (one delivery per task, as the datagram
/// pump's); a stream that breaks the framing, or ends, ends the tunnel.
fn download_hook(sink: Sink, received: Rc<Cell<u64>>) -> Deliver {
    let mut splitter = StreamSplitter::new();
    let mut chunk = Vec::new();
    Closure::<dyn FnMut(Array, JsValue)>::new(move |chunks: Array, why: JsValue| {
        received.set(received.get() + u64::from(chunks.length()));
        let Ok(mut sink) = sink.try_borrow_mut() else {
            return;
        };
        let mut datagrams = Vec::new();
        let mut fault = None;
        for c in chunks.iter() {
            let c = c.unchecked_into::<Uint8Array>();
            chunk.resize(c.length() as usize, 0);
            c.copy_to(&mut chunk);
            if let Err(e) = splitter.feed(&chunk, |d| datagrams.push(d.to_vec())) {
                fault = Some(e);
                break;
            }
        }
        if !datagrams.is_empty() {
            sink(Inbound::Datagrams(datagrams));
        }
        let why = why.as_string();
        if fault.is_none() && why.is_some() {
            fault = splitter.finish().err();
        }
        if let Some(e) = fault {
            sink(Inbound::Closed(format!(
                "the relay's WebTransport download stream is malformed: {e}"
            )));
        } else if let Some(why) = why {
            sink(Inbound::Closed(why));
        }
    })
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
