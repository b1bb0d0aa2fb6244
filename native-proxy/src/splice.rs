//! Moving bytes both ways between a local socket and a tunnel stream.

use std::future::poll_fn;
use std::io;
use std::net::Shutdown;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::tunnel::TunnelStream;

/// Copy buffer per direction for [`splice`]: large enough that a bulk
/// transfer moves in few, big writes (fewer loop turns), small enough for
/// many connections.
pub const COPY_BUFFER: usize = 64 * 1024;

/// Socket reads or writes per direction before a busy splice lets other
/// tasks run.
const TURNS_PER_POLL: usize = 4;

/// Copies both ways until both directions have ended; a half-close on one
/// side becomes a half-close on the other. Returns the bytes moved each
/// way (a to b, b to a). For streams other than a host TCP socket (an
/// upgraded HTTP connection); [`splice_host`] is the fast path.
pub async fn splice<A, B>(a: &mut A, b: &mut B) -> io::Result<(u64, u64)>
where
    A: AsyncRead + AsyncWrite + Unpin + ?Sized,
    B: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    tokio::io::copy_bidirectional_with_sizes(a, b, COPY_BUFFER, COPY_BUFFER).await
}

/// [`splice`] for a host TCP socket: reads from the host socket land
/// straight in the stack's send buffer and writes to it come straight from
/// the stack's receive buffer, so a byte is copied once less each way and
/// a connection carries no copy buffers. `first` goes into the tunnel
/// before anything else (bytes a client sent ahead of a proxy's reply).
/// Returns the bytes moved (host to tunnel, tunnel to host).
pub async fn splice_host(
    host: &mut TcpStream,
    tunnel: &mut TunnelStream,
    first: &[u8],
) -> io::Result<(u64, u64)> {
    if !first.is_empty() {
        tunnel.write_all(first).await?;
    }
    let (mut up, mut down) = (Some(first.len() as u64), Some(0u64));
    let (mut sent, mut received) = (0, 0);
    poll_fn(|cx| {
        if let Some(moved) = up.as_mut() {
            if ready_or_pending(poll_up(cx, host, tunnel, moved))?.is_some() {
                sent = *moved;
                up = None;
            }
        }
        if let Some(moved) = down.as_mut() {
            if ready_or_pending(poll_down(cx, host, tunnel, moved))?.is_some() {
                received = *moved;
                down = None;
            }
        }
        if up.is_none() && down.is_none() {
            Poll::Ready(Ok((sent, received)))
        } else {
            Poll::Pending
        }
    })
    .await
}

/// `Ok(Some(()))` when a direction finished, `Ok(None)` while it waits.
fn ready_or_pending(p: Poll<io::Result<()>>) -> io::Result<Option<()>> {
    match p {
        Poll::Ready(r) => r.map(Some),
        Poll::Pending => Ok(None),
    }
}

/// Host to tunnel until the host's EOF, which becomes our FIN.
fn poll_up(
    cx: &mut Context<'_>,
    host: &TcpStream,
    tunnel: &TunnelStream,
    moved: &mut u64,
) -> Poll<io::Result<()>> {
    for _ in 0..TURNS_PER_POLL {
        ready!(host.poll_read_ready(cx))?;
        let mut read = None;
        ready!(tunnel.poll_fill(cx, |room| {
            let r = host.try_read(room);
            let n = *r.as_ref().unwrap_or(&0);
            read = Some(r);
            n
        }))?;
        match read {
            // The room was empty after all; poll again.
            None => {}
            Some(Ok(0)) => {
                tunnel.shutdown_write()?;
                return Poll::Ready(Ok(()));
            }
            Some(Ok(n)) => *moved += n as u64,
            // Readiness was stale; polling again registers for the next.
            Some(Err(e)) if e.kind() == io::ErrorKind::WouldBlock => {}
            Some(Err(e)) => return Poll::Ready(Err(e)),
        }
    }
    cx.waker().wake_by_ref();
    Poll::Pending
}

/// Tunnel to host until our peer's FIN, which becomes the host's.
fn poll_down(
    cx: &mut Context<'_>,
    host: &TcpStream,
    tunnel: &TunnelStream,
    moved: &mut u64,
) -> Poll<io::Result<()>> {
    for _ in 0..TURNS_PER_POLL {
        ready!(host.poll_write_ready(cx))?;
        let mut wrote = None;
        let drained = tunnel.poll_drain(cx, |data| {
            let r = host.try_write(data);
            let n = *r.as_ref().unwrap_or(&0);
            wrote = Some(r);
            n
        });
        match (drained, wrote) {
            (_, Some(Err(e))) if e.kind() == io::ErrorKind::WouldBlock => continue,
            (_, Some(Err(e))) => return Poll::Ready(Err(e)),
            (Poll::Pending, _) => return Poll::Pending,
            (Poll::Ready(Err(e)), _) => return Poll::Ready(Err(e)),
            (Poll::Ready(Ok(0)), _) => {
                // Our peer finished: pass the FIN on; a host that already
                // closed has nothing left to tell.
                match socket2::SockRef::from(host).shutdown(Shutdown::Write) {
                    Err(e) if e.kind() != io::ErrorKind::NotConnected => {
                        return Poll::Ready(Err(e))
                    }
                    _ => return Poll::Ready(Ok(())),
                }
            }
            (Poll::Ready(Ok(n)), _) => *moved += n as u64,
        }
    }
    cx.waker().wake_by_ref();
    Poll::Pending
}
