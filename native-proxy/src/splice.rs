//! Moving bytes both ways between a local socket and a tunnel stream.

use tokio::io::{AsyncRead, AsyncWrite};

/// Copy buffer per direction: large enough that a bulk transfer moves in
/// few, big writes (fewer loop turns), small enough for many connections.
pub const COPY_BUFFER: usize = 64 * 1024;

/// Copies both ways until both directions have ended; a half-close on one
/// side becomes a half-close on the other. Returns the bytes moved each
/// way (a to b, b to a).
pub async fn splice<A, B>(a: &mut A, b: &mut B) -> std::io::Result<(u64, u64)>
where
    A: AsyncRead + AsyncWrite + Unpin + ?Sized,
    B: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    tokio::io::copy_bidirectional_with_sizes(a, b, COPY_BUFFER, COPY_BUFFER).await
}
