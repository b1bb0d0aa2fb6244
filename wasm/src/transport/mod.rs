//! How the engine's datagrams reach the relay and come back: a transport
//! takes the datagrams one turn produces and hands inbound ones to the
//! engine, and knows nothing of WireGuard or the turn itself.

mod websocket;
mod webtransport;

pub use websocket::WebSocketTransport;
pub use webtransport::WebTransportTransport;

/// What a transport hands the engine.
pub enum Inbound {
    /// Datagrams in the order they arrived.
    Datagrams(Vec<Vec<u8>>),
    /// The transport is gone, and why (for the page).
    Closed(String),
}

/// A path to the relay that carries whole datagrams.
pub trait Transport {
    /// What `stats().transport` says: `"websocket"`, ...
    fn kind(&self) -> &'static str;
    /// Whether many datagrams travel per message (for WebTransport: per
    /// write of its upload stream; its downloads are one per datagram
    /// unless [`Transport::download_stream`]).
    fn batched(&self) -> bool;
    /// Whether downloads come batched on a WebTransport stream.
    fn download_stream(&self) -> bool {
        false
    }
    /// The largest datagram the path carries, when it has a limit below
    /// any tunnel MTU (the tunnel's MTU is lowered to fit).
    fn max_datagram(&self) -> Option<usize> {
        None
    }
    /// Starts delivering inbound datagrams and the close to `sink`.
    fn listen(&mut self, sink: Box<dyn FnMut(Inbound)>);
    /// Queues a datagram of this turn; it may leave at once or at
    /// [`Transport::flush`].
    fn push(&mut self, datagram: &[u8]) -> Result<(), String>;
    /// Sends what this turn queued.
    fn flush(&mut self) -> Result<(), String>;
    /// Bytes handed to the browser and not yet sent: the engine stops
    /// producing above a bound.
    fn buffered(&self) -> u32;
    /// Messages (writes) sent and received so far: with the datagram
    /// counts, how well batching works. None counted unless a transport
    /// says.
    fn messages(&self) -> (u64, u64) {
        (0, 0)
    }
    /// Closes the path; nothing more is delivered.
    fn close(&mut self);
}
