//! UDP through the gateway. Accept-any makes one stack socket per
//! destination (capped in the stack: `UdpOptions`); behind it each client
//! gets a host socket of its own, so that replies find their way back.
//!
//! A host socket is a file descriptor and a local port of the host, so
//! these are capped too, per client and in all, with the same limits: a
//! client spraying datagrams at thousands of destinations must not take
//! the descriptors TCP needs, nor the host's ports. A flow nobody answered
//! goes after 30 s, as Linux's conntrack forgets an unanswered UDP flow;
//! one that was answered after 120 s of silence both ways (RFC 4787's
//! two minutes).

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::rc::Rc;
use std::time::{Duration, Instant as Clock};

use tokio::net::UdpSocket;
use tokio::task::JoinHandle;
use underpass_stack::UdpId;

use crate::log_limit::LogLimit;
use crate::tunnel::{Tunnel, TunnelUdp};
use crate::udp_sessions::UdpSessions;

/// A flow whose destination answered, silent both ways this long, goes.
const ANSWERED_IDLE: Duration = Duration::from_secs(120);
/// A flow whose destination never answered goes this long after the
/// client's last datagram.
const UNANSWERED_IDLE: Duration = Duration::from_secs(30);

/// The gateway's UDP limits (`--max-udp-flows`, `--max-udp-flows-per-client`).
pub struct Limits {
    pub max_flows: usize,
    pub max_flows_per_client: usize,
    /// The tunnel's MTU: no datagram larger than it fits minus headers.
    pub mtu: usize,
}

/// The host flows open, counted against the limits.
pub struct HostFlows {
    limits: Limits,
    open: Cell<usize>,
    per_client: RefCell<HashMap<IpAddr, usize>>,
    refusals: LogLimit,
}

/// A host flow's place in the counts, given back when it is dropped.
struct Counted {
    flows: Rc<HostFlows>,
    client: IpAddr,
}

impl Drop for Counted {
    fn drop(&mut self) {
        let flows = &self.flows;
        flows.open.set(flows.open.get() - 1);
        let mut per_client = flows.per_client.borrow_mut();
        if let Some(n) = per_client.get_mut(&self.client) {
            *n -= 1;
            if *n == 0 {
                per_client.remove(&self.client);
            }
        }
    }
}

impl HostFlows {
    pub fn new(limits: Limits) -> Rc<HostFlows> {
        Rc::new(HostFlows {
            limits,
            open: Cell::new(0),
            per_client: RefCell::new(HashMap::new()),
            refusals: LogLimit::default(),
        })
    }

    /// A place for a new flow of `client`, if the limits leave one.
    fn admit(self: &Rc<Self>, client: IpAddr, dst: SocketAddr) -> Option<Counted> {
        let mine = self.per_client.borrow().get(&client).copied().unwrap_or(0);
        if self.open.get() >= self.limits.max_flows || mine >= self.limits.max_flows_per_client {
            self.refused(client, dst);
            return None;
        }
        *self.per_client.borrow_mut().entry(client).or_default() += 1;
        self.open.set(self.open.get() + 1);
        Some(Counted {
            flows: self.clone(),
            client,
        })
    }

    fn refused(&self, client: IpAddr, dst: SocketAddr) {
        let Some(more) = self.refusals.pass() else {
            return;
        };
        tracing::info!(
            %client,
            %dst,
            more_since_last = more,
            open = self.open.get(),
            "UDP flow limit reached (--max-udp-flows-per-client or --max-udp-flows): datagram dropped"
        );
    }
}

/// One client's flow to the destination: its host socket, and the task
/// that carries the destination's replies back.
struct HostFlow {
    socket: Rc<UdpSocket>,
    last_in: Rc<Cell<Option<Clock>>>,
    replies: JoinHandle<()>,
    _counted: Counted,
}

impl Drop for HostFlow {
    fn drop(&mut self) {
        // Its socket closes with it.
        self.replies.abort();
    }
}

impl HostFlow {
    fn open(
        dst: SocketAddr,
        client: SocketAddr,
        inner: &Rc<TunnelUdp>,
        counted: Counted,
        max_payload: usize,
    ) -> io::Result<HostFlow> {
        let any: IpAddr = if dst.is_ipv4() {
            Ipv4Addr::UNSPECIFIED.into()
        } else {
            Ipv6Addr::UNSPECIFIED.into()
        };
        let socket = std::net::UdpSocket::bind((any, 0))?;
        socket.connect(dst)?;
        socket.set_nonblocking(true)?;
        let socket = Rc::new(UdpSocket::from_std(socket)?);
        let last_in = Rc::new(Cell::new(None));
        let replies = tokio::task::spawn_local(replies(
            socket.clone(),
            inner.clone(),
            client,
            last_in.clone(),
            max_payload,
        ));
        Ok(HostFlow {
            socket,
            last_in,
            replies,
            _counted: counted,
        })
    }

    /// When the flow goes, given when its client last sent.
    fn expires(&self, last_out: Clock) -> Clock {
        match self.last_in.get() {
            Some(t) => t.max(last_out) + ANSWERED_IDLE,
            None => last_out + UNANSWERED_IDLE,
        }
    }
}

/// Carries the datagrams clients send to `dst` (arriving on the stack
/// socket `id`) to it, each client from its own host socket, until no
/// client has a live flow left.
pub async fn flow(tunnel: Tunnel, id: UdpId, dst: SocketAddr, flows: Rc<HostFlows>) {
    let inner = Rc::new(tunnel.udp(id));
    // The host reaches an IPv4-mapped address as IPv4, as the policy
    // judged it.
    let host_dst = SocketAddr::new(dst.ip().to_canonical(), dst.port());
    // Replies leave from `dst`, so in its family's packets.
    let headers = if dst.is_ipv4() { 20 + 8 } else { 40 + 8 };
    let max_payload = flows.limits.mtu.saturating_sub(headers);
    // Bounded by the host flow counts (`admit`) before this bound.
    let mut clients: UdpSessions<HostFlow> = UdpSessions::new(flows.limits.max_flows);
    let mut buf = vec![0u8; flows.limits.mtu];
    // When to look for flows that expired; expiries only move later, so
    // until then no flow has.
    let mut check_at = Clock::now() + UNANSWERED_IDLE;
    loop {
        let now = Clock::now();
        if now >= check_at {
            clients.retain(|_, f, last_out| f.expires(last_out) > now);
            let Some(next) = clients.iter().map(|(_, f, last)| f.expires(last)).min() else {
                return; // the stack socket goes too; a new datagram makes another
            };
            check_at = next;
        }
        let received = tokio::time::timeout_at(check_at.into(), inner.recv_from(&mut buf)).await;
        let (n, client) = match received {
            Ok(Ok(x)) => x,
            Ok(Err(_)) => return,
            Err(_) => continue,
        };
        let now = Clock::now();
        let flow = match clients.touch(client, now) {
            Some(flow) => flow,
            None => {
                let opened = flows.admit(client.ip(), dst).and_then(|counted| {
                    HostFlow::open(host_dst, client, &inner, counted, max_payload)
                        .map_err(|err| {
                            tracing::debug!(%client, %dst, error = %err, "no host socket for a UDP flow");
                        })
                        .ok()
                });
                match opened {
                    Some(f) => {
                        check_at = check_at.min(f.expires(now));
                        clients.insert(client, f, now).0
                    }
                    None if clients.is_empty() => return,
                    None => continue,
                }
            }
        };
        let _ = flow.socket.send(&buf[..n]).await;
    }
}

/// Carries the destination's replies to `client` through the tunnel.
async fn replies(
    host: Rc<UdpSocket>,
    inner: Rc<TunnelUdp>,
    client: SocketAddr,
    last_in: Rc<Cell<Option<Clock>>>,
    max_payload: usize,
) {
    // One byte more than fits: a datagram that fills it is too large.
    let mut buf = vec![0u8; max_payload + 1];
    loop {
        let n = match host.recv(&mut buf).await {
            Ok(n) => n,
            // ICMP errors from the destination's side; the client may try
            // again, and the flow expires unanswered otherwise.
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::ConnectionRefused
                        | io::ErrorKind::HostUnreachable
                        | io::ErrorKind::NetworkUnreachable
                ) =>
            {
                continue
            }
            Err(e) => {
                tracing::debug!(%client, error = %e, "UDP flow's host socket failed");
                return;
            }
        };
        if n > max_payload {
            tracing::debug!(%client, "a UDP reply larger than the tunnel carries; dropped");
            continue;
        }
        last_in.set(Some(Clock::now()));
        if inner.send_to(&buf[..n], client).await.is_err() {
            return;
        }
    }
}
