//! The relay's WebTransport side: HTTP/3 on the relay's port number over
//! UDP, each session tied to one UDP socket to an upstream, WireGuard
//! datagrams carried as QUIC datagrams to the page (or, batched, on a
//! QUIC stream for a page that asks), and from it either as QUIC
//! datagrams or, batched, on a QUIC stream (see `pump`).
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

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::extract::{ConnectInfo, RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use wtransport::config::QuicTransportConfig;
use wtransport::endpoint::{endpoint_side, IncomingSession, SessionRequest};
use wtransport::{Endpoint, Identity, ServerConfig};

mod session;

use super::{access, relay_batch, Relay};
use crate::http_serve::Counter;
use crate::udp::SOCKET_BUFFER;
use crate::Failure;
use session::session;

/// How long a made certificate is valid: Chromium takes at most 14 days
/// for a certificate it is given by hash.
const VALIDITY_DAYS: u32 = 13;
/// A made certificate is replaced after this long, days before it
/// expires; sessions that started under the old one keep it.
pub const RENEW_EVERY: Duration = Duration::from_secs(6 * 24 * 3600);
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
    /// Made here, for these names, and replaced every `renew_every`.
    SelfSigned {
        names: Vec<String>,
        renew_every: Duration,
    },
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

/// How the relay's QUIC sends to pages: the controller of `--congestion`,
/// and for benchmarks to vary
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
    /// `key=value,...` over the defaults, with `congestion` ("bbr" or
    /// "cubic") unless the spec names one.
    pub fn parse(congestion: &'static str, spec: &str) -> Result<QuicTuning, String> {
        let mut t = QuicTuning {
            congestion,
            ..QuicTuning::default()
        };
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
            Certificate::SelfSigned { names, .. } => {
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
        if let Certificate::SelfSigned { names, renew_every } = certificate {
            let renewal = renew(
                endpoint.clone(),
                published,
                names,
                renew_every,
                relay.idle,
                tuning,
            );
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

/// Makes a new certificate every `every` and gives it to new sessions;
/// the hash pages fetch changes with it.
async fn renew(
    endpoint: Arc<Endpoint<endpoint_side::Server>>,
    published: Arc<Published>,
    names: Vec<String>,
    every: Duration,
    idle: Duration,
    tuning: QuicTuning,
) {
    let mut wait = every;
    loop {
        tokio::time::sleep(wait).await;
        // On failure, again in an hour: the current one has days left.
        wait = every.min(Duration::from_secs(3600));
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
                wait = every;
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
/// "uploadStream": "underpass.batch.v1", "downloadStream":
/// "underpass.batch.v1"}`, the last two when the relay reads a page's
/// datagrams off a stream, and writes them on one to a page whose session
/// URL adds `download=underpass.batch.v1`).
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
        // Offered, not imposed: a page takes it by asking in its session
        // URL; the others get datagrams.
        body["downloadStream"] = relay_batch::PROTOCOL.into();
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
