//! `[STDIOTunnel]`: stdin and stdout as one TCP connection through the
//! tunnel, for ssh's `ProxyCommand`.
//!
//! The two directions end apart, as TCP's do: stdin's end becomes our FIN
//! (the remote may still answer), the remote's FIN closes stdout (the
//! reader sees its end at once, whether or not the process goes on). The
//! stream is over when both have ended, or when the connection fails (a
//! reset, a timeout: an error).
//! What then happens to the process is the caller's: when the stream was
//! all the config asked for, it exits; otherwise it keeps serving.
//!
//! stdin and stdout are served by a thread each, not by tokio's handles:
//! a read of a terminal or a pipe nobody writes to blocks for good, and
//! tokio waits for its blocking reads when the runtime stops, which would
//! keep the process from exiting.

// Unsafe only for libc calls, each block with its SAFETY comment.
#![allow(unsafe_code)]

use std::io::{Read, Write};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};

use crate::config::Target;
use crate::tunnel::Tunnel;

/// Chunk size per read of stdin and per write to stdout.
const CHUNK: usize = 64 * 1024;
/// Chunks in flight each way: the threads wait when the tunnel (or the
/// reader of stdout) does, so memory stays bounded.
const CHUNKS: usize = 4;

/// Carries stdin to `target` and its answers to stdout until both
/// directions have ended. Errors say why the stream could not start, or
/// that the connection failed (reset by the target, timed out).
pub async fn run(tunnel: Tunnel, target: Target) -> Result<(), String> {
    let remote = match tunnel.connect_host(&target.host, target.port).await {
        Ok(remote) => remote,
        Err(e) => {
            // Whoever reads stdout must not wait for an answer that will
            // not come.
            close_stdout();
            return Err(format!("STDIOTunnel: cannot reach {target}: {e}"));
        }
    };
    tracing::debug!(%target, "STDIOTunnel connected");
    let (mut from_remote, mut to_remote) = tokio::io::split(remote);
    let mut stdin = read_stdin();
    let (stdout, stdout_closed) = write_stdout();
    let up = async {
        while let Some(chunk) = stdin.recv().await {
            if to_remote.write_all(&chunk).await.is_err() {
                // The connection failed: nothing more goes up.
                return;
            }
        }
        let _ = to_remote.shutdown().await;
        tracing::debug!("STDIOTunnel: stdin ended; FIN sent");
    };
    // The error when the connection failed rather than closed.
    let down = async {
        let mut failed = None;
        loop {
            let mut chunk = vec![0u8; CHUNK];
            match from_remote.read(&mut chunk).await {
                Ok(0) => break,
                Err(e) => {
                    failed = Some(e);
                    break;
                }
                Ok(n) => {
                    chunk.truncate(n);
                    if stdout.send(chunk).await.is_err() {
                        break; // stdout's reader has gone
                    }
                }
            }
        }
        drop(stdout);
        let _ = stdout_closed.await;
        tracing::debug!(failed = ?failed, "STDIOTunnel: the remote closed; stdout closed");
        failed
    };
    let (mut up, mut down) = (std::pin::pin!(up), std::pin::pin!(down));
    let mut up_done = false;
    let failed = tokio::select! {
        failed = &mut down => failed,
        () = &mut up => {
            up_done = true;
            (&mut down).await
        }
    };
    // After a failure nothing more can go up: the stream is over even if
    // stdin has not ended.
    if let Some(e) = failed {
        return Err(format!(
            "STDIOTunnel: the connection to {target} failed: {e}"
        ));
    }
    if !up_done {
        up.await;
    }
    Ok(())
}

/// stdin's chunks, until its end (the channel closes) or a read error.
fn read_stdin() -> mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::channel(CHUNKS);
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin().lock();
        loop {
            let mut chunk = vec![0u8; CHUNK];
            match stdin.read(&mut chunk) {
                Ok(0) => return,
                Ok(n) => {
                    chunk.truncate(n);
                    if tx.blocking_send(chunk).is_err() {
                        return; // the stream is over
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => return,
            }
        }
    });
    rx
}

/// A sender of chunks for stdout; once it is dropped and they are
/// written, stdout is closed and the receiver resolves.
fn write_stdout() -> (mpsc::Sender<Vec<u8>>, oneshot::Receiver<()>) {
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(CHUNKS);
    let (closed_tx, closed_rx) = oneshot::channel();
    std::thread::spawn(move || {
        let mut stdout = std::io::stdout().lock();
        while let Some(chunk) = rx.blocking_recv() {
            if stdout
                .write_all(&chunk)
                .and_then(|()| stdout.flush())
                .is_err()
            {
                break;
            }
        }
        drop(stdout);
        close_stdout();
        let _ = closed_tx.send(());
    });
    (tx, closed_rx)
}

/// Closes the process's stdout, so its reader sees the end, while fd 1
/// stays valid (it then points at /dev/null): a later write to stdout
/// must not land in whatever file the descriptor is reused for.
fn close_stdout() {
    use std::os::fd::AsRawFd;
    let _ = std::io::stdout().lock().flush();
    let Ok(null) = std::fs::OpenOptions::new().write(true).open("/dev/null") else {
        return;
    };
    // SAFETY: dup2 onto fd 1 with a descriptor we own; both stay valid.
    unsafe {
        libc::dup2(null.as_raw_fd(), libc::STDOUT_FILENO);
    }
}
