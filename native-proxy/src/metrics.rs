//! `--metrics ADDR` (or wireproxy's `-i`/`--info`): Prometheus text on
//! `/metrics`, a health check on `/healthz`, and wireproxy's readiness
//! check on `/readyz` (its `CheckAlive` pings).
//!
//! The loop copies its counters into atomics once per turn; the HTTP
//! server only reads them, so it needs nothing from the single-threaded
//! engine. Ages are computed when asked: an idle loop does not turn, so a
//! clock it updated would stop with it.

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use underpass_core::DatagramError;
use underpass_stack::Stack;

/// A session older than this (Reject-After-Time) no longer carries data.
const HEALTHY_HANDSHAKE_AGE: Duration = underpass_core::timers::REJECT_AFTER_TIME;

/// The metrics server's limits: a scraper or a health check needs a
/// connection or two.
const SERVER_LIMITS: crate::http_serve::Limits = crate::http_serve::Limits {
    header_timeout: Duration::from_secs(10),
    max_connections: 64,
    max_per_client: 16,
};

/// When the metrics were made: the origin of their timestamps.
struct Clock(Instant);

impl Default for Clock {
    fn default() -> Self {
        Clock(Instant::now())
    }
}

impl Clock {
    fn ms(&self) -> u64 {
        self.0.elapsed().as_millis() as u64
    }
}

#[derive(Default)]
pub struct Metrics {
    clock: Clock,
    rx_datagrams: AtomicU64,
    rx_bytes: AtomicU64,
    tx_datagrams: AtomicU64,
    tx_bytes: AtomicU64,
    tx_sends: AtomicU64,
    handshakes: AtomicU64,
    reresolves: AtomicU64,
    packets_in: AtomicU64,
    packets_out: AtomicU64,
    cookies_sent: AtomicU64,
    tcp_open: AtomicU64,
    tcp_refused_by_limit: AtomicU64,
    tcp_retransmitted: AtomicU64,
    tcp_timeouts: AtomicU64,
    buffer_resident: AtomicU64,
    buffer_claimed: AtomicU64,
    udp_open: AtomicU64,
    dropped: [AtomicU64; DatagramError::ALL.len()],
    /// Milliseconds on `clock` at the last handshake; 0 = never.
    last_handshake_ms: AtomicU64,
    /// Connections accepted by the proxies and forwards.
    pub proxy_connections: AtomicU64,
    /// Proxy requests refused (auth, policy, bad input).
    pub proxy_refused: AtomicU64,
    /// Whether this process dials out (client) or only answers (gateway).
    pub dials_out: std::sync::atomic::AtomicBool,
    /// The config's `CheckAlive` targets (a client's).
    pub check_alive: Option<CheckAlive>,
    /// Gateway with PeerToPeer: packets routed from one peer to another.
    peer_to_peer_packets: AtomicU64,
}

/// wireproxy's `CheckAlive`: targets pinged through the tunnel every
/// `interval`, and when each last answered.
pub struct CheckAlive {
    pub interval: Duration,
    targets: Vec<PingTarget>,
    /// The stack's count of echo replies when last looked at.
    replies_seen: AtomicU64,
}

struct PingTarget {
    ip: IpAddr,
    /// On the engine's clock, milliseconds: the answer last noted.
    answered_ms: AtomicU64,
    /// Unix time of that answer, seconds; 0: never (as wireproxy shows it).
    answered_unix: AtomicU64,
}

/// How late an answer may be before /readyz fails: the interval plus
/// this, as wireproxy allows for the round trip.
const READY_LEEWAY: Duration = Duration::from_secs(2);

impl CheckAlive {
    pub fn new(targets: &[IpAddr], interval: Duration) -> CheckAlive {
        CheckAlive {
            interval,
            targets: targets
                .iter()
                .map(|&ip| PingTarget {
                    ip,
                    answered_ms: AtomicU64::new(0),
                    answered_unix: AtomicU64::new(0),
                })
                .collect(),
            replies_seen: AtomicU64::new(0),
        }
    }

    pub fn targets(&self) -> impl Iterator<Item = IpAddr> + '_ {
        self.targets.iter().map(|t| t.ip)
    }

    /// Notes the answers the stack has seen since the last look.
    fn update(&self, stack: &Stack) {
        let replies = stack.echo_replies();
        if self.replies_seen.swap(replies, Relaxed) == replies {
            return;
        }
        let unix = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        for t in &self.targets {
            let Some(at) = stack.echo_answered(t.ip) else {
                continue;
            };
            let ms = at.since_epoch().as_millis() as u64 + 1;
            if t.answered_ms.swap(ms, Relaxed) != ms {
                t.answered_unix.store(unix, Relaxed);
            }
        }
    }

    /// Whether every target answered within the interval (and leeway),
    /// and the JSON wireproxy's /readyz shows: `{"10.0.0.1":1712796899}`.
    fn readiness(&self) -> (bool, String) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let limit = (self.interval + READY_LEEWAY).as_secs();
        let mut ready = true;
        let mut body = String::from("{");
        for (i, t) in self.targets.iter().enumerate() {
            let last = t.answered_unix.load(Relaxed);
            ready &= last > 0 && now.saturating_sub(last) <= limit;
            let comma = if i > 0 { "," } else { "" };
            let _ = write!(body, "{comma}\"{}\":{last}", t.ip);
        }
        body.push('}');
        (ready, body)
    }
}

impl Metrics {
    pub fn handshake(&self) {
        self.handshakes.fetch_add(1, Relaxed);
        self.last_handshake_ms
            .store(self.clock.ms().max(1), Relaxed);
    }

    pub fn reresolve(&self) {
        self.reresolves.fetch_add(1, Relaxed);
    }

    /// Copies the engine's counters; called once per loop turn.
    pub fn update(&self, engine: &underpass_stack::Engine) {
        let (node, stack) = (engine.node(), engine.stack());
        let c = engine.counters();
        self.rx_datagrams.store(c.rx_datagrams, Relaxed);
        self.rx_bytes.store(c.rx_bytes, Relaxed);
        self.tx_datagrams.store(c.tx_datagrams, Relaxed);
        self.tx_bytes.store(c.tx_bytes, Relaxed);
        self.tx_sends.store(c.tx_batches, Relaxed);
        self.peer_to_peer_packets
            .store(c.peer_to_peer_packets, Relaxed);
        let s = node.stats();
        self.packets_in.store(s.packets_received, Relaxed);
        self.packets_out.store(s.packets_sent, Relaxed);
        self.cookies_sent.store(s.cookies_sent, Relaxed);
        for (slot, reason) in self.dropped.iter().zip(DatagramError::ALL) {
            slot.store(s.dropped(reason), Relaxed);
        }
        let st = stack.stats();
        self.tcp_open.store(st.tcp_open as u64, Relaxed);
        self.tcp_refused_by_limit
            .store(st.refused_by_limit, Relaxed);
        self.udp_open.store(st.udp_open as u64, Relaxed);
        self.tcp_retransmitted.store(st.retransmitted, Relaxed);
        self.tcp_timeouts.store(st.timeouts, Relaxed);
        self.buffer_resident
            .store(st.buffer_resident as u64, Relaxed);
        self.buffer_claimed.store(st.buffer_claimed as u64, Relaxed);
        if let Some(c) = &self.check_alive {
            c.update(stack);
        }
    }

    /// `/readyz`: with `CheckAlive`, whether every target answered in
    /// time (wireproxy's check); without, whether the peer answered
    /// recently (as `/healthz`). The body is wireproxy's JSON.
    pub fn readiness(&self) -> (bool, String) {
        match &self.check_alive {
            Some(c) => c.readiness(),
            None => (self.healthy(), "{}".to_string()),
        }
    }

    /// Time since the last handshake, now; `None` before the first.
    fn handshake_age(&self) -> Option<Duration> {
        let last = self.last_handshake_ms.load(Relaxed);
        (last > 0).then(|| Duration::from_millis(self.clock.ms().saturating_sub(last)))
    }

    /// Healthy: a gateway always; a client once a handshake is recent.
    pub fn healthy(&self) -> bool {
        if !self.dials_out.load(Relaxed) {
            return true;
        }
        self.handshake_age()
            .is_some_and(|age| age < HEALTHY_HANDSHAKE_AGE)
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        let mut counter = |name: &str, help: &str, kind: &str, value: u64| {
            let _ = writeln!(out, "# HELP underpass_{name} {help}\n# TYPE underpass_{name} {kind}\nunderpass_{name} {value}");
        };
        counter(
            "udp_received_datagrams_total",
            "WireGuard datagrams received.",
            "counter",
            self.rx_datagrams.load(Relaxed),
        );
        counter(
            "udp_received_bytes_total",
            "WireGuard bytes received.",
            "counter",
            self.rx_bytes.load(Relaxed),
        );
        counter(
            "udp_sent_datagrams_total",
            "WireGuard datagrams sent.",
            "counter",
            self.tx_datagrams.load(Relaxed),
        );
        counter(
            "udp_sent_bytes_total",
            "WireGuard bytes sent.",
            "counter",
            self.tx_bytes.load(Relaxed),
        );
        counter(
            "udp_send_calls_total",
            "sendmsg calls (one per GSO batch).",
            "counter",
            self.tx_sends.load(Relaxed),
        );
        counter(
            "tunnel_packets_received_total",
            "IP packets decrypted.",
            "counter",
            self.packets_in.load(Relaxed),
        );
        counter(
            "tunnel_packets_sent_total",
            "IP packets encrypted.",
            "counter",
            self.packets_out.load(Relaxed),
        );
        counter(
            "handshakes_total",
            "Handshakes completed.",
            "counter",
            self.handshakes.load(Relaxed),
        );
        counter(
            "cookie_replies_total",
            "Cookie replies sent under load.",
            "counter",
            self.cookies_sent.load(Relaxed),
        );
        counter(
            "endpoint_reresolves_total",
            "Host-name endpoints resolved again.",
            "counter",
            self.reresolves.load(Relaxed),
        );
        counter(
            "tcp_connections_open",
            "TCP connections open in the userspace stack.",
            "gauge",
            self.tcp_open.load(Relaxed),
        );
        counter(
            "tcp_refused_by_limit_total",
            "TCP connections refused at --max-connections or --max-connections-per-client.",
            "counter",
            self.tcp_refused_by_limit.load(Relaxed),
        );
        counter(
            "tcp_retransmitted_segments_total",
            "TCP segments sent again through the tunnel (losses repaired, and tail probes).",
            "counter",
            self.tcp_retransmitted.load(Relaxed),
        );
        counter(
            "tcp_retransmission_timeouts_total",
            "TCP retransmission timeouts (losses no ACK revealed).",
            "counter",
            self.tcp_timeouts.load(Relaxed),
        );
        counter(
            "tcp_buffer_resident_bytes",
            "TCP buffer memory in use (estimated: written since its pages were last given back).",
            "gauge",
            self.buffer_resident.load(Relaxed),
        );
        counter(
            "tcp_buffer_claimed_bytes",
            "TCP receive windows and send allowances granted, against --buffer-budget.",
            "gauge",
            self.buffer_claimed.load(Relaxed),
        );
        counter(
            "udp_sockets_open",
            "UDP sockets open in the userspace stack.",
            "gauge",
            self.udp_open.load(Relaxed),
        );
        counter(
            "proxy_connections_total",
            "Connections accepted by the proxies and forwards.",
            "counter",
            self.proxy_connections.load(Relaxed),
        );
        counter(
            "proxy_refused_total",
            "Proxy requests refused.",
            "counter",
            self.proxy_refused.load(Relaxed),
        );
        counter(
            "peer_to_peer_packets_total",
            "Packets a gateway with PeerToPeer routed from one peer to another.",
            "counter",
            self.peer_to_peer_packets.load(Relaxed),
        );
        let _ = writeln!(out, "# HELP underpass_datagrams_dropped_total Datagrams dropped, by reason.\n# TYPE underpass_datagrams_dropped_total counter");
        for (slot, reason) in self.dropped.iter().zip(DatagramError::ALL) {
            let _ = writeln!(
                out,
                "underpass_datagrams_dropped_total{{reason=\"{}\"}} {}",
                reason.name(),
                slot.load(Relaxed)
            );
        }
        if let Some(age) = self.handshake_age() {
            let age = age.as_secs_f64();
            let _ = writeln!(out, "# HELP underpass_last_handshake_age_seconds Time since the last handshake.\n# TYPE underpass_last_handshake_age_seconds gauge\nunderpass_last_handshake_age_seconds {age}");
        }
        out
    }
}

/// Serves `/metrics`, `/healthz` and `/readyz` on `listener` until the
/// process ends.
pub async fn serve(listener: tokio::net::TcpListener, metrics: Arc<Metrics>) {
    use axum::http::StatusCode;
    use axum::routing::get;
    let m = metrics.clone();
    let app = axum::Router::new()
        .route(
            "/metrics",
            get(move || {
                let m = m.clone();
                async move { ([("content-type", "text/plain; version=0.0.4")], m.render()) }
            }),
        )
        .route(
            "/readyz",
            get({
                let m = metrics.clone();
                move || {
                    let (ready, body) = m.readiness();
                    let status = if ready {
                        StatusCode::OK
                    } else {
                        StatusCode::SERVICE_UNAVAILABLE
                    };
                    async move { (status, [("content-type", "application/json")], body + "\n") }
                }
            }),
        )
        .route(
            "/healthz",
            get(move || {
                let m = metrics.clone();
                async move {
                    if m.healthy() {
                        (StatusCode::OK, "ok\n")
                    } else {
                        (StatusCode::SERVICE_UNAVAILABLE, "no recent handshake\n")
                    }
                }
            }),
        );
    crate::http_serve::serve(listener, app, SERVER_LIMITS, "metrics").await;
}

pub async fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await
}
