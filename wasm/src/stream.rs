//! A TCP stream through the tunnel, as the page sees it: promises for
//! reads and writes, driven by the stack's wakers.

use std::cell::Cell;
use std::future::poll_fn;
use std::net::SocketAddr;
use std::task::Poll;

use underpass_stack::{ConnId, TcpError};
use wasm_bindgen::prelude::*;

use crate::driver::Shared;
use crate::http::{HttpError, Response, ResponseDecoder};

/// The most one `read()` hands back.
const READ_CHUNK: usize = 256 * 1024;

/// A TCP connection through the tunnel.
#[wasm_bindgen]
pub struct TcpStream {
    shared: Shared,
    conn: ConnId,
    remote: SocketAddr,
    closed: Cell<bool>,
}

fn describe(e: TcpError) -> String {
    match e {
        TcpError::Refused => "connection refused".into(),
        TcpError::Reset => "connection reset by the peer".into(),
        TcpError::TimedOut => "connection timed out".into(),
        TcpError::InvalidHandle => "the stream is closed".into(),
        other => other.to_string(),
    }
}

impl TcpStream {
    pub(crate) async fn connect(shared: Shared, remote: SocketAddr) -> Result<TcpStream, String> {
        let conn = {
            let mut e = shared.borrow_mut();
            if let Some(why) = &e.closed {
                return Err(why.clone());
            }
            let conn = e.stack().tcp_connect(remote).map_err(describe)?;
            e.schedule();
            conn
        };
        let stream = TcpStream {
            shared,
            conn,
            remote,
            closed: Cell::new(false),
        };
        poll_fn(|cx| {
            let mut e = stream.shared.borrow_mut();
            if let Some(why) = &e.closed {
                return Poll::Ready(Err(why.clone()));
            }
            e.wait_for_change(cx.waker());
            e.stack().poll_connected(cx, stream.conn).map_err(describe)
        })
        .await?;
        Ok(stream)
    }

    /// Reads what has arrived, waiting for some; empty at EOF.
    pub(crate) async fn read_some(&self) -> Result<Vec<u8>, String> {
        poll_fn(|cx| {
            let mut e = self.shared.borrow_mut();
            if let Some(why) = &e.closed {
                return Poll::Ready(Err(why.clone()));
            }
            let mut out = Vec::new();
            match e.stack().tcp_read_with(self.conn, |data| {
                let n = data.len().min(READ_CHUNK);
                out.extend_from_slice(&data[..n]);
                n
            }) {
                Ok(0) => Poll::Ready(Ok(Vec::new())),
                Ok(_) => {
                    // Take a second contiguous piece if the ring wrapped.
                    let _ = e.stack().tcp_read_with(self.conn, |data| {
                        let n = data.len().min(READ_CHUNK - out.len());
                        out.extend_from_slice(&data[..n]);
                        n
                    });
                    // The window opened: tell the peer.
                    e.schedule();
                    Poll::Ready(Ok(out))
                }
                Err(TcpError::WouldBlock) => {
                    e.stack().register_read_waker(cx, self.conn);
                    e.wait_for_change(cx.waker());
                    Poll::Pending
                }
                Err(err) => Poll::Ready(Err(describe(err))),
            }
        })
        .await
    }

    /// Writes all of `data`, waiting for room as needed.
    pub(crate) async fn write_all(&self, data: &[u8]) -> Result<(), String> {
        let mut done = 0;
        poll_fn(|cx| loop {
            let mut e = self.shared.borrow_mut();
            if let Some(why) = &e.closed {
                return Poll::Ready(Err(why.clone()));
            }
            if done == data.len() {
                return Poll::Ready(Ok(()));
            }
            match e.stack().tcp_write(self.conn, &data[done..]) {
                Ok(n) => {
                    done += n;
                    e.schedule();
                }
                Err(TcpError::WouldBlock) => {
                    e.stack().register_write_waker(cx, self.conn);
                    e.wait_for_change(cx.waker());
                    return Poll::Pending;
                }
                Err(err) => return Poll::Ready(Err(describe(err))),
            }
        })
        .await
    }

    /// Sends `request` and decodes one response.
    pub(crate) async fn exchange(
        &self,
        request: &[u8],
        head_only: bool,
    ) -> Result<Response, HttpError> {
        self.write_all(request).await.map_err(HttpError)?;
        let mut decoder = ResponseDecoder::new(head_only);
        loop {
            let data = self.read_some().await.map_err(HttpError)?;
            if data.is_empty() {
                return decoder.finish();
            }
            if decoder.feed(&data)? {
                return Ok(decoder.into_response());
            }
        }
    }
}

#[wasm_bindgen]
impl TcpStream {
    /// Resolves once all of `data` is in the send buffer.
    pub async fn write(&self, data: Vec<u8>) -> Result<(), JsError> {
        self.write_all(&data).await.map_err(|e| JsError::new(&e))
    }

    /// The next bytes to arrive (a Uint8Array), or null at EOF.
    pub async fn read(&self) -> Result<JsValue, JsError> {
        let data = self.read_some().await.map_err(|e| JsError::new(&e))?;
        Ok(if data.is_empty() {
            JsValue::NULL
        } else {
            js_sys::Uint8Array::from(data.as_slice()).into()
        })
    }

    /// Half-close: sends FIN after what was written; reading goes on.
    #[wasm_bindgen(js_name = closeWrite)]
    pub fn close_write(&self) {
        let mut e = self.shared.borrow_mut();
        let _ = e.stack().tcp_shutdown(self.conn);
        e.schedule();
    }

    /// Closes the stream; what was written is still delivered.
    pub fn close(&self) {
        if self.closed.replace(true) {
            return;
        }
        let mut e = self.shared.borrow_mut();
        e.stack().tcp_close(self.conn);
        e.schedule();
    }

    /// The remote address, as `ip:port`.
    #[wasm_bindgen(getter, js_name = remoteAddress)]
    pub fn remote_address(&self) -> String {
        self.remote.to_string()
    }
}

impl Drop for TcpStream {
    fn drop(&mut self) {
        self.close();
    }
}
