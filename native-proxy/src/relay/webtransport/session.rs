//! One WebTransport session: the relay's checks on its request, then
//! datagrams both ways between the page and the session's UDP socket to
//! its upstream (either way batched on a stream where the page asks),
//! and what QUIC saw, logged.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::{header, HeaderMap, HeaderValue};
use bytes::Bytes;
use underpass_core::relay_batch::{self, Batcher, StreamSplitter};
use wtransport::endpoint::SessionRequest;
use wtransport::proto::datagram::Datagram as H3Datagram;
use wtransport::proto::ids::QStreamId;
use wtransport::{Connection, VarInt};

use super::super::access::shown;
use super::super::pump::Loss;
use super::super::{Relay, MAX_FRAME};
use super::{udp_socket, CLOSE_IDLE, CLOSE_MALFORMED};
use crate::log_limit::LogLimit;

/// A session request: the relay's checks, then the session.
pub(super) async fn session(relay: Arc<Relay>, client: SocketAddr, request: SessionRequest) {
    let (path, query) = request
        .path()
        .split_once('?')
        .unwrap_or((request.path(), ""));
    if path != "/relay" {
        return request.not_found().await;
    }
    let mut headers = HeaderMap::new();
    let valid = HeaderValue::from_str(request.authority())
        .map(|v| headers.insert(header::HOST, v))
        .is_ok()
        && request.origin().is_none_or(|o| {
            HeaderValue::from_str(o)
                .map(|v| headers.insert(header::ORIGIN, v))
                .is_ok()
        });
    if !valid {
        return request.forbidden().await;
    }
    let query = query.to_string();
    let checked = relay
        .access
        .check("/relay (WebTransport)", client, &headers, Some(&query));
    let Ok(query) = checked else {
        return request.forbidden().await;
    };
    // `download=underpass.batch.v1`: downloads on a stream (see
    // `download_on_stream`); a page asks only where `/webtransport`
    // offered it.
    let download_stream = match query.download.as_deref() {
        None => false,
        Some(p) if p == relay_batch::PROTOCOL && relay.webtransport_stream => true,
        Some(other) => {
            tracing::info!(%client, download = %shown(other), "relay: refused a WebTransport session, a download it does not offer");
            return request.forbidden().await;
        }
    };
    let upstream = match relay.upstream(query.endpoint.as_deref()) {
        Ok(upstream) => upstream,
        Err(shown) => {
            tracing::info!(%client, endpoint = %shown, "relay: refused a WebTransport session, not an upstream");
            return request.forbidden().await;
        }
    };
    let conn = match request.accept().await {
        Ok(conn) => conn,
        Err(e) => {
            tracing::debug!(%client, error = %e, "relay: WebTransport session failed");
            return;
        }
    };
    tracing::debug!(%client, %upstream, download_stream, "relay: WebTransport session");
    let counts = Counts::default();
    let ended = {
        let pumped = pump(&relay, &conn, upstream, client, download_stream, &counts);
        tokio::pin!(pumped);
        // At debug, what QUIC sees every few seconds while the page is
        // busy, for looking into a slow one.
        let mut tick = tokio::time::interval(Duration::from_secs(2));
        let mut sent = 0;
        loop {
            tokio::select! {
                ended = &mut pumped => break ended,
                _ = tick.tick(), if tracing::enabled!(tracing::Level::DEBUG) => {
                    let now = conn.quic_connection().stats().udp_tx.datagrams;
                    if now != sent {
                        sent = now;
                        quic_stats(&conn, client, &counts, "relay: WebTransport session", None);
                    }
                }
            }
        }
    };
    quic_stats(
        &conn,
        client,
        &counts,
        "relay: WebTransport session ended",
        ended.err(),
    );
}

fn quic_stats(
    conn: &Connection,
    client: SocketAddr,
    counts: &Counts,
    what: &str,
    error: Option<std::io::Error>,
) {
    let stats = conn.quic_connection().stats();
    tracing::debug!(
        %client,
        error = ?error,
        rtt_ms = stats.path.rtt.as_secs_f64() * 1000.0,
        cwnd = stats.path.cwnd,
        lost_packets = stats.path.lost_packets,
        sent_packets = stats.path.sent_packets,
        congestion_events = stats.path.congestion_events,
        datagrams_out = stats.frame_tx.datagram,
        datagrams_in = stats.frame_rx.datagram,
        stream_datagrams_in = Counts::get(&counts.stream_datagrams),
        stream_reads = Counts::get(&counts.stream_reads),
        download_stream_datagrams = Counts::get(&counts.download_datagrams),
        download_stream_writes = Counts::get(&counts.download_writes),
        send_waits = Counts::get(&counts.send_waits),
        send_waited_ms = Counts::get(&counts.send_waited_us) / 1000,
        "{what}"
    );
}

/// What a session did, for the log line at its end: where a slow page's
/// time went.
#[derive(Default)]
struct Counts {
    /// Datagrams the page sent on its upload stream, and the reads that
    /// brought them.
    stream_datagrams: AtomicU64,
    stream_reads: AtomicU64,
    /// Datagrams sent to the page on its download stream, and the writes
    /// (of at most 64 KiB) that carried them.
    download_datagrams: AtomicU64,
    download_writes: AtomicU64,
    /// Datagrams to the page that waited for room in quinn's send buffer,
    /// and how many microseconds they waited in all.
    send_waits: AtomicU64,
    send_waited_us: AtomicU64,
}

impl Counts {
    fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// Moves datagrams both ways until the page leaves, the session errs or
/// nothing moved for the idle timeout.
///
/// From the page they come as QUIC datagrams, or on a unidirectional
/// stream in `underpass.batch.v1`'s framing, batches written one after
/// another (`/webtransport` tells pages the relay reads it: `uploadStream`).
/// Why a stream, when WireGuard wants an unreliable path: Chromium writes
/// one QUIC datagram per `write`, at most 1,211 bytes, and spends enough
/// per write that uploads stopped at ~90 Mbit/s, where a stream takes 64
/// KiB per write (figures in BENCHMARKS.md, "WebTransport"). Datagrams
/// read off it go upstream at once, waiting while the socket is full, so
/// the stream's flow control slows the page instead of the kernel
/// dropping them.
///
/// To the page they go as QUIC datagrams, or with `download_stream` on
/// one unidirectional stream the relay opens, in the same framing (see
/// `download_on_stream`).
async fn pump(
    relay: &Relay,
    conn: &Connection,
    upstream: SocketAddr,
    client: SocketAddr,
    download_stream: bool,
    counts: &Counts,
) -> std::io::Result<()> {
    let unspecified = match upstream {
        SocketAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        SocketAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    };
    let udp = udp_socket(SocketAddr::new(unspecified, 0))?;
    udp.connect(upstream).await?;
    let start = Instant::now();
    // Milliseconds since `start` of the last datagram either way.
    let last = AtomicU64::new(0);
    let touch = || last.store(start.elapsed().as_millis() as u64, Ordering::Relaxed);
    let bench_loss = relay.bench_loss;

    let to_upstream = async {
        let mut loss = Loss::new(bench_loss);
        loop {
            let datagram = conn
                .receive_datagram()
                .await
                .map_err(std::io::Error::other)?;
            touch();
            if loss.drops() {
                continue;
            }
            // UDP: a datagram the kernel will not take is lost, as on any path.
            let _ = udp.send(&datagram).await;
        }
    };

    let from_stream = async {
        if !relay.webtransport_stream {
            return std::future::pending().await;
        }
        let mut loss = Loss::new(bench_loss);
        // One stream at a time: a page opens one; more wait their turn.
        loop {
            let mut stream = conn.accept_uni().await.map_err(std::io::Error::other)?;
            // Only sessions that open a stream pay for its buffers.
            let mut buf = vec![0u8; MAX_FRAME];
            // What one read completes, less what the bench loss drops.
            let mut datagrams = Vec::with_capacity(2 * MAX_FRAME);
            let mut ends = Vec::new();
            let mut splitter = StreamSplitter::new();
            let fault = loop {
                let n = match stream.read(&mut buf).await {
                    Ok(Some(n)) => n,
                    Ok(None) => break splitter.finish().err(),
                    Err(e) => return Err(std::io::Error::other(e)),
                };
                touch();
                datagrams.clear();
                ends.clear();
                let split = splitter.feed(&buf[..n], |d| {
                    if !loss.drops() {
                        datagrams.extend_from_slice(d);
                        ends.push(datagrams.len());
                    }
                });
                match split {
                    Ok(k) => {
                        Counts::add(&counts.stream_datagrams, k as u64);
                        Counts::add(&counts.stream_reads, 1);
                    }
                    Err(e) => break Some(e),
                }
                let mut start = 0;
                for &end in &ends {
                    let _ = udp.send(&datagrams[start..end]).await;
                    start = end;
                }
            };
            if let Some(e) = fault {
                tracing::info!(%client, error = %e, "relay: malformed WebTransport upload stream, session closed");
                let reason = format!("malformed batch: {e}");
                conn.close(VarInt::from_u32(CLOSE_MALFORMED), reason.as_bytes());
                return Ok(());
            }
        }
    };

    let to_page = async {
        if download_stream {
            return download_on_stream(conn, &udp, Loss::new(bench_loss), &touch, counts).await;
        }
        let quic = conn.quic_connection();
        let qstream = QStreamId::from_session_id(conn.session_id());
        let header_len = H3Datagram::header_size(qstream);
        let mut buf = vec![0u8; header_len + MAX_FRAME];
        H3Datagram::new(qstream, &[])
            .write(&mut buf[..header_len])
            .map_err(|_| std::io::Error::other("datagram header"))?;
        let too_large = LogLimit::default();
        let mut loss = Loss::new(bench_loss);

        loop {
            udp.readable().await?;
            // Until WouldBlock, or an ICMP error the peer may recover from.
            while let Ok(n) = udp.try_recv(&mut buf[header_len..]) {
                touch();
                if loss.drops() {
                    continue;
                }
                let datagram = Bytes::copy_from_slice(&buf[..header_len + n]);
                // Waits for room rather than let quinn drop the oldest
                // datagrams queued: a full buffer is the page's
                // congestion window speaking, and the upstream's socket
                // buffer holds the rest meanwhile.
                let full = quic.datagram_send_buffer_space() < datagram.len();
                let began = full.then(Instant::now);
                let sent = quic.send_datagram_wait(datagram).await;
                if let Some(began) = began {
                    Counts::add(&counts.send_waits, 1);
                    Counts::add(&counts.send_waited_us, began.elapsed().as_micros() as u64);
                }
                match sent {
                    Ok(()) => {}
                    Err(wtransport::quinn::SendDatagramError::TooLarge) => {
                        if let Some(more) = too_large.pass() {
                            tracing::warn!(
                                bytes = n,
                                limit = conn.max_datagram_size().unwrap_or(0),
                                more_since_last = more,
                                "relay: dropped a datagram larger than the page's WebTransport datagrams; lower the tunnel's MTU"
                            );
                        }
                    }
                    Err(e) => return Err(std::io::Error::other(e)),
                }
            }
        }
    };

    let idle = async {
        loop {
            let since = Duration::from_millis(last.load(Ordering::Relaxed));
            let deadline = start + since + relay.idle;
            if Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep_until(deadline.into()).await;
        }
    };

    tokio::select! {
        r = to_upstream => r,
        r = from_stream => r,
        r = to_page => r,
        () = idle => {
            conn.close(VarInt::from_u32(CLOSE_IDLE), b"idle");
            Ok(())
        }
    }
}

/// Downloads on one unidirectional stream: what the upstream sent, in
/// `underpass.batch.v1`'s framing, every datagram that one drain of the
/// socket gives (the bench loss taken out first) in writes of at most 64
/// KiB. Only for pages that ask (`download=underpass.batch.v1`).
///
/// Why, when WireGuard wants an unreliable path: Chromium's renderer
/// spends some 40-53 us on every QUIC datagram a page reads, so
/// downloads as datagrams stop at ~80-150 Mbit/s where the batched
/// WebSocket, one read per 64 KiB, reaches ~300. A stream gives the same
/// per-read economy over QUIC. A write waits while QUIC's flow and
/// congestion control hold it; meanwhile the upstream's socket buffer
/// fills and then drops, as on a WebSocket.
async fn download_on_stream(
    conn: &Connection,
    udp: &tokio::net::UdpSocket,
    mut loss: Loss,
    touch: &impl Fn(),
    counts: &Counts,
) -> std::io::Result<()> {
    let mut stream = conn
        .open_uni()
        .await
        .map_err(std::io::Error::other)?
        .await
        .map_err(std::io::Error::other)?;
    let mut buf = vec![0u8; MAX_FRAME];
    let mut batcher = Batcher::new();
    loop {
        udp.readable().await?;
        // Until WouldBlock, or an ICMP error the peer may recover from.
        while let Ok(n) = udp.try_recv(&mut buf) {
            touch();
            if n == 0 || loss.drops() {
                continue;
            }
            if !batcher.push(&buf[..n]) {
                write_batch(&mut stream, &mut batcher, counts).await?;
                // Every UDP datagram fits an empty batch.
                batcher.push(&buf[..n]);
            }
        }
        if !batcher.is_empty() {
            write_batch(&mut stream, &mut batcher, counts).await?;
        }
    }
}

/// Writes the batch so far on the download stream and empties it.
async fn write_batch(
    stream: &mut wtransport::SendStream,
    batcher: &mut Batcher,
    counts: &Counts,
) -> std::io::Result<()> {
    stream
        .write_all(batcher.message())
        .await
        .map_err(std::io::Error::other)?;
    Counts::add(&counts.download_datagrams, batcher.len_datagrams() as u64);
    Counts::add(&counts.download_writes, 1);
    batcher.clear();
    Ok(())
}
