//! The relay's WebTransport side: HTTP/3 on the relay's port number over
//! UDP, each session tied to one UDP socket to an upstream, WireGuard
//! datagrams carried as QUIC datagrams to the page, and from it either as
//! QUIC datagrams or, batched, on a QUIC stream (see `pump`).
//!
//! A WebSocket is TCP: a datagram lost between page and relay stalls
//! every later one until TCP repairs it, under the tunnel's own TCP. QUIC
//! datagrams are neither retransmitted nor ordered, which is what
//! WireGuard expects of its path. The rules are the WebSocket's: the same
//! `Access` checks on the session request (authority as `Host`, its
//! `Origin`, `?token=`), the same upstreams, the same connection limits
//! (a QUIC connection takes a slot from the moment it arrives) and the
//! same idle timeout.
//!
//! Browsers trust a certificate they cannot verify when the page names
//! its SHA-256 hash (`serverCertificateHashes`), if it is ECDSA and valid
//! for at most 14 days. Without `--cert`/`--key` the relay makes such a
//! certificate, renews it well before it expires and publishes its hash
//! at `GET /webtransport` (see `info`).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use wtransport::config::QuicTransportConfig;
use wtransport::endpoint::{endpoint_side, IncomingSession, SessionRequest};
use wtransport::proto::datagram::Datagram as H3Datagram;
use wtransport::proto::ids::QStreamId;
use wtransport::{Connection, Endpoint, Identity, ServerConfig, VarInt};

use underpass_core::relay_batch::StreamSplitter;

use super::pump::Loss;
use super::{access, relay_batch, Relay, MAX_FRAME};
use crate::http_serve::Counter;
use crate::log_limit::LogLimit;
use crate::udp::SOCKET_BUFFER;
use crate::Failure;

/// How long a made certificate is valid: Chromium takes at most 14 days
/// for a certificate it is given by hash.
const VALIDITY_DAYS: u32 = 13;
/// A made certificate is replaced after this long, days before it
/// expires; sessions that started under the old one keep it.
const RENEW_EVERY: Duration = Duration::from_secs(6 * 24 * 3600);
/// Session close codes a page sees (WebTransport application codes).
const CLOSE_IDLE: u32 = 4408;
/// The upload stream broke the batch framing (as the WebSocket's 1007).
const CLOSE_MALFORMED: u32 = 4400;

/// Where the WebTransport side listens, and the hash pages must trust.
pub struct Published {
    pub port: u16,
    /// Hex SHA-256 of the made certificate; `None` with `--cert`, which
    /// browsers verify as any other.
    hash: RwLock<Option<String>>,
}

impl Published {
    pub fn hash(&self) -> Option<String> {
        self.hash.read().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// Where the certificate comes from.
pub enum Certificate {
    /// Made here, for these names, and renewed.
    SelfSigned(Vec<String>),
    /// PEM files (`--cert`, `--key`), read once at start.
    Files { cert: PathBuf, key: PathBuf },
}

/// The QUIC side of one relay.
pub struct Server {
    endpoint: Endpoint<endpoint_side::Server>,
    pub published: Arc<Published>,
    certificate: Certificate,
    tuning: QuicTuning,
}

/// The lower-case hex SHA-256 of the leaf certificate, the form pages
/// decode for `serverCertificateHashes`.
fn hex_hash(identity: &Identity) -> Option<String> {
    let leaf = identity.certificate_chain().as_slice().first()?;
    let digest = ring::digest::digest(&ring::digest::SHA256, leaf.der());
    Some(digest.as_ref().iter().map(|b| format!("{b:02x}")).collect())
}

fn make_identity(names: &[String]) -> Result<Identity, Failure> {
    Identity::self_signed_builder()
        .subject_alt_names(names)
        .from_now_utc()
        .validity_days(VALIDITY_DAYS)
        .build()
        .map_err(|e| Failure::runtime(format!("relay: cannot make a certificate: {e}")))
}

/// How the relay's QUIC sends to pages, for benchmarks to vary
/// (`--bench-quic congestion=bbr,window=BYTES,sendbuf=BYTES`); the
/// defaults are what was measured best (BENCHMARKS.md, "WebTransport").
#[derive(Debug, Clone)]
pub struct QuicTuning {
    congestion: &'static str,
    /// The congestion controller's initial window, bytes.
    initial_window: Option<u64>,
    /// quinn's queue of datagrams not yet in a packet, bytes.
    datagram_send_buffer: usize,
}

impl Default for QuicTuning {
    fn default() -> Self {
        QuicTuning {
            congestion: "cubic",
            initial_window: None,
            datagram_send_buffer: 4 << 20,
        }
    }
}

impl QuicTuning {
    /// `key=value,...` over the defaults.
    pub fn parse(spec: &str) -> Result<QuicTuning, String> {
        let mut t = QuicTuning::default();
        for item in spec.split(',').filter(|i| !i.is_empty()) {
            let (key, value) = item
                .split_once('=')
                .ok_or_else(|| format!("{item:?}: expected KEY=VALUE"))?;
            let number = || {
                value
                    .parse::<u64>()
                    .map_err(|_| format!("{key}={value:?}: expected a number of bytes"))
            };
            match key {
                "congestion" => {
                    t.congestion = match value {
                        "cubic" => "cubic",
                        "bbr" => "bbr",
                        "newreno" => "newreno",
                        _ => return Err(format!("congestion={value:?}: cubic, bbr or newreno")),
                    }
                }
                "window" => t.initial_window = Some(number()?),
                "sendbuf" => {
                    t.datagram_send_buffer = usize::try_from(number()?).unwrap_or(usize::MAX)
                }
                _ => return Err(format!("{key:?}: congestion, window or sendbuf")),
            }
        }
        Ok(t)
    }

    fn apply(&self, transport: &mut QuicTransportConfig) {
        use wtransport::quinn::congestion::{BbrConfig, CubicConfig, NewRenoConfig};
        transport.datagram_send_buffer_size(self.datagram_send_buffer);
        match self.congestion {
            "bbr" => {
                let mut c = BbrConfig::default();
                if let Some(w) = self.initial_window {
                    c.initial_window(w);
                }
                transport.congestion_controller_factory(Arc::new(c));
            }
            "newreno" => {
                let mut c = NewRenoConfig::default();
                if let Some(w) = self.initial_window {
                    c.initial_window(w);
                }
                transport.congestion_controller_factory(Arc::new(c));
            }
            _ => {
                let mut c = CubicConfig::default();
                if let Some(w) = self.initial_window {
                    c.initial_window(w);
                }
                transport.congestion_controller_factory(Arc::new(c));
            }
        }
    }
}

fn server_config(identity: Identity, idle: Duration, tuning: &QuicTuning) -> ServerConfig {
    let mut transport = QuicTransportConfig::default();
    // QUIC's own idle timeout follows the relay's; keep-alives keep a
    // quiet but open page from hitting the browser's shorter one.
    let _ = transport.max_idle_timeout(idle.try_into().ok());
    transport.keep_alive_interval(Some(Duration::from_secs(10)));
    // Room for a burst from the upstream (a GSO batch is ~45 datagrams).
    transport.datagram_receive_buffer_size(Some(4 << 20));
    tuning.apply(&mut transport);
    ServerConfig::builder()
        // A placeholder: `Server::bind` gives its own socket, and a
        // renewal keeps the one bound.
        .with_bind_default(0)
        .with_custom_transport(identity, transport)
        .build()
}

impl Server {
    /// Binds UDP `bind` (the relay's port number, so a page's origin and
    /// the session's authority name the same port) with the certificate.
    pub async fn bind(
        bind: SocketAddr,
        certificate: Certificate,
        idle: Duration,
        tuning: QuicTuning,
    ) -> Result<Server, Failure> {
        let (identity, hash) = match &certificate {
            Certificate::SelfSigned(names) => {
                let identity = make_identity(names)?;
                let hash = hex_hash(&identity);
                (identity, hash)
            }
            Certificate::Files { cert, key } => {
                let identity = Identity::load_pemfiles(cert, key).await.map_err(|e| {
                    Failure::usage(format!(
                        "--cert {} / --key {}: {e}",
                        cert.display(),
                        key.display()
                    ))
                })?;
                (identity, None)
            }
        };
        let socket = udp_socket(bind)
            .and_then(|s| s.into_std())
            .map_err(|e| {
                Failure::runtime(format!(
                    "relay: cannot listen for WebTransport on UDP {bind}: {e} (--no-webtransport to go without)"
                ))
            })?;
        let port = socket.local_addr().map_err(Failure::runtime)?.port();
        // The placeholder bind of `server_config` gives way to our socket
        // (with its buffer sizes).
        let quic = server_config(identity, idle, &tuning).quic_config().clone();
        let config = ServerConfig::builder()
            .with_bind_socket(socket)
            .build_with_quic_config(quic);
        let endpoint = Endpoint::server(config)
            .map_err(|e| Failure::runtime(format!("relay: WebTransport: {e}")))?;
        Ok(Server {
            endpoint,
            published: Arc::new(Published {
                port,
                hash: RwLock::new(hash),
            }),
            certificate,
            tuning,
        })
    }

    /// Accepts sessions until the process ends, each counted in `counter`
    /// like a WebSocket's TCP connection.
    pub async fn serve(self, relay: Arc<Relay>, counter: Arc<Counter>, handshake: Duration) {
        let Server {
            endpoint,
            published,
            certificate,
            tuning,
        } = self;
        let endpoint = Arc::new(endpoint);
        if let Certificate::SelfSigned(names) = certificate {
            let renewal = renew(endpoint.clone(), published, names, relay.idle, tuning);
            tokio::spawn(renewal);
        }
        loop {
            let incoming = endpoint.accept().await;
            let client = incoming.remote_address();
            let Ok(slot) = counter.admit(client.ip()) else {
                incoming.refuse();
                continue;
            };
            let relay = relay.clone();
            tokio::spawn(async move {
                let _slot = slot;
                match tokio::time::timeout(handshake, incoming_request(incoming)).await {
                    Ok(Some(request)) => session(relay, client, request).await,
                    Ok(None) => {}
                    Err(_) => tracing::debug!(%client, "relay: WebTransport handshake timed out"),
                }
            });
        }
    }
}

async fn incoming_request(incoming: IncomingSession) -> Option<SessionRequest> {
    match incoming.await {
        Ok(request) => Some(request),
        Err(e) => {
            tracing::debug!(error = %e, "relay: WebTransport connection failed");
            None
        }
    }
}

/// Makes a new certificate every `RENEW_EVERY` and gives it to new
/// sessions; the hash pages fetch changes with it.
async fn renew(
    endpoint: Arc<Endpoint<endpoint_side::Server>>,
    published: Arc<Published>,
    names: Vec<String>,
    idle: Duration,
    tuning: QuicTuning,
) {
    let mut wait = RENEW_EVERY;
    loop {
        tokio::time::sleep(wait).await;
        // On failure, again in an hour: the current one has days left.
        wait = Duration::from_secs(3600);
        let identity = match make_identity(&names) {
            Ok(identity) => identity,
            Err(e) => {
                tracing::error!("{}; trying again in an hour", e.message);
                continue;
            }
        };
        let hash = hex_hash(&identity);
        match endpoint.reload_config(server_config(identity, idle, &tuning), false) {
            Ok(()) => {
                wait = RENEW_EVERY;
                tracing::info!(
                    hash = hash.as_deref().unwrap_or("?"),
                    "relay: WebTransport certificate renewed"
                );
                *published.hash.write().unwrap_or_else(|e| e.into_inner()) = hash;
            }
            Err(e) => {
                tracing::error!(error = %e, "relay: cannot renew the WebTransport certificate")
            }
        }
    }
}

/// A session request: the relay's checks, then the session.
async fn session(relay: Arc<Relay>, client: SocketAddr, request: SessionRequest) {
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
    tracing::debug!(%client, %upstream, "relay: WebTransport session");
    let counts = Counts::default();
    let ended = {
        let pumped = pump(&relay, &conn, upstream, client, &counts);
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
async fn pump(
    relay: &Relay,
    conn: &Connection,
    upstream: SocketAddr,
    client: SocketAddr,
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
        let mut buf = vec![0u8; MAX_FRAME];
        // What one read completes, minus what the bench loss drops.
        let mut datagrams = Vec::with_capacity(2 * MAX_FRAME);
        let mut ends = Vec::new();
        // One stream at a time: a page opens one; more wait their turn.
        loop {
            let mut stream = conn.accept_uni().await.map_err(std::io::Error::other)?;
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

/// A UDP socket with the tunnel's buffer sizes: a peer sends bursts
/// (GSO batches) that a default buffer drops. Best effort: the kernel caps
/// them at rmem_max / wmem_max.
fn udp_socket(bind: SocketAddr) -> std::io::Result<tokio::net::UdpSocket> {
    let domain = socket2::Domain::for_address(bind);
    let socket = socket2::Socket::new(domain, socket2::Type::DGRAM, Some(socket2::Protocol::UDP))?;
    let _ = socket.set_recv_buffer_size(SOCKET_BUFFER);
    let _ = socket.set_send_buffer_size(SOCKET_BUFFER);
    socket.set_nonblocking(true)?;
    socket.bind(&bind.into())?;
    tokio::net::UdpSocket::from_std(socket.into())
}

/// `GET /webtransport`: where a page opens its WebTransport session and
/// the certificate hash it must trust, under the same checks as `/relay`
/// (`{"url": "https://HOST:PORT/relay", "certificateHashes": ["hex"],
/// "uploadStream": "underpass.batch.v1"}`, the last when the relay reads
/// a page's datagrams off a stream).
/// 404 when the relay runs without WebTransport.
pub async fn info(
    State(relay): State<Arc<Relay>>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Response {
    let Some(published) = &relay.webtransport else {
        return (StatusCode::NOT_FOUND, "this relay has no WebTransport\n").into_response();
    };
    if let Err(refused) = relay
        .access
        .check("/webtransport", client, &headers, raw.as_deref())
    {
        return refused.response();
    }
    // The name the page used (checked above), with the QUIC port.
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .and_then(access::host_name)
        .unwrap_or_else(|| "127.0.0.1".into());
    let host = if host.contains(':') {
        format!("[{host}]")
    } else {
        host
    };
    let url = format!("https://{host}:{}/relay", published.port);
    let hashes: Vec<String> = published.hash().into_iter().collect();
    let mut body = serde_json::json!({ "url": url, "certificateHashes": hashes });
    if relay.webtransport_stream {
        // Pages of relays before it send every datagram as a datagram.
        body["uploadStream"] = relay_batch::PROTOCOL.into();
    }
    let body = body.to_string();
    (
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn made_certificates_are_short_lived_ecdsa_with_a_hex_hash() {
        let identity = make_identity(&["localhost".into(), "127.0.0.1".into()]).unwrap();
        let hash = hex_hash(&identity).unwrap();
        assert_eq!(hash.len(), 64, "{hash}");
        assert!(hash.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(
            hash,
            hex_hash(&make_identity(&["localhost".into()]).unwrap()).unwrap()
        );
    }
}
