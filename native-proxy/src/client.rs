//! The client: the tunnel plus every proxy and forward its configuration
//! asks for.

use std::net::SocketAddr;
use std::path::Path;
use std::rc::Rc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::accept::{ListenerKind, Listening, Negotiations};
use crate::cli::UpArgs;
use crate::config::{ProxyConfig, ProxyListener};
use crate::config_source::{ConfigSource, ServedBy, ENV_FILE, ENV_TEXT};
use crate::forward::{self, Forwards};
use crate::options::TunnelOptions;
use crate::setup::{self, Role};
use crate::tunnel::Tunnel;
use crate::{http_proxy, sni, socks, Failure};

/// The client's configuration from `--config`, stdin or the environment,
/// its warnings logged.
pub fn load_config(flag: Option<&Path>) -> Result<ProxyConfig, Failure> {
    let chosen =
        ConfigSource::choose(flag, &|name| std::env::var(name).ok()).map_err(Failure::usage)?;
    let home = std::env::var("HOME").ok();
    let source = match chosen {
        Some(source) => source,
        None => match ConfigSource::default_file(home.as_deref(), &|p| p.is_file()) {
            Some(path) => {
                tracing::info!("config from {}", path.display());
                ConfigSource::File(path)
            }
            None => {
                return Err(Failure::usage(format!(
                    "no configuration: give --config FILE (or - for stdin), set {ENV_TEXT} or {ENV_FILE}, \
                     or write /etc/wireproxy/wireproxy.conf or ~/.config/wireproxy.conf \
                     (try `underpass quickstart` to run without a WireGuard server)"
                )))
            }
        },
    };
    source.load_for(ServedBy::Client)
}

/// The warning for a client without a DNS server, worded after what its
/// `DNS =` holds: nothing, or search domains only.
fn no_dns_server_warning(search: &[String]) -> String {
    let leak =
        "host names given to the proxies resolve on this host, outside the tunnel (DNS leaks)";
    if search.is_empty() {
        format!("the config has no DNS =: {leak}")
    } else {
        format!(
            "DNS = names search domains ({}) but no server address: {leak}; add the tunnel's DNS server, e.g. DNS = 10.0.0.1, {}",
            search.join(", "),
            search[0]
        )
    }
}

/// `underpass up` (and `underpass --config FILE`).
pub async fn run(args: UpArgs) -> Result<(), Failure> {
    let cfg = load_config(args.client.config.as_deref())?;
    if args.client.check {
        println!("config OK");
        return Ok(());
    }
    if args.wait && !cfg.stdio_tunnels.is_empty() {
        return Err(Failure::usage(
            "--wait prints the listeners on stdout, which a [STDIOTunnel] uses for its data; use one or the other",
        ));
    }
    let mut socks5 = cfg.socks5.clone();
    if let Some(bind) = args.client.socks5 {
        socks5.push(ProxyListener {
            bind,
            auth: None,
            tls: None,
        });
    }
    let mut http = cfg.http.clone();
    if let Some(bind) = args.client.http {
        http.push(ProxyListener {
            bind,
            auth: None,
            tls: None,
        });
    }
    let client = Client::start(&cfg, &socks5, &http, &(&args.client.common).into()).await?;
    let running = client.launch(&cfg).await?;
    if args.wait {
        let limit = Duration::from_secs(args.handshake_timeout);
        if let Err(f) = running.wait_for_handshakes(limit).await {
            running.stop().await;
            return Err(f);
        }
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        for l in &running.listening {
            let _ = writeln!(out, "{l}");
        }
        let _ = writeln!(out, "ready");
        let _ = out.flush();
    }
    crate::daemon::started();
    running.serve().await
}

/// A client whose listeners are bound and whose engine is built, not yet
/// running.
pub struct Client {
    pub tunnel: Tunnel,
    listeners: Vec<(ListenerKind, TcpListener, ProxyListener)>,
    /// `[SNI]` listeners and the port they connect to.
    sni: Vec<(TcpListener, u16)>,
    /// `--max-negotiating`: one pool for all the proxy listeners.
    negotiations: Negotiations,
}

async fn bind(addr: SocketAddr, what: &str) -> Result<TcpListener, Failure> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| Failure::runtime(format!("cannot listen for {what} on {addr}: {e}")))
}

impl Client {
    /// Builds the tunnel and binds every listener: a listener that cannot
    /// bind is an error here, before anything runs.
    pub async fn start(
        cfg: &ProxyConfig,
        socks5: &[ProxyListener],
        http: &[ProxyListener],
        common: &TunnelOptions,
    ) -> Result<Client, Failure> {
        let mut listeners = Vec::new();
        for l in socks5 {
            listeners.push((
                ListenerKind::Socks5,
                bind(l.bind, "SOCKS5").await?,
                l.clone(),
            ));
        }
        for l in http {
            let kind = if l.tls.is_some() {
                ListenerKind::Https
            } else {
                ListenerKind::Http
            };
            listeners.push((kind, bind(l.bind, "the HTTP proxy").await?, l.clone()));
        }
        let mut sni = Vec::new();
        for s in &cfg.sni {
            sni.push((bind(s.bind, "the SNI proxy").await?, s.port));
        }
        let tunnel = setup::build(cfg, Role::Client, common).await?;
        let proxies = !listeners.is_empty() || !sni.is_empty();
        if !tunnel.has_dns() && proxies {
            tracing::warn!("{}", no_dns_server_warning(&cfg.wg.interface.dns_search));
        }
        Ok(Client {
            tunnel,
            listeners,
            sni,
            negotiations: Negotiations::new(common.max_negotiating as usize),
        })
    }

    /// The addresses the proxies listen on, `(kind, addr)`.
    pub fn local_addrs(&self) -> Vec<(ListenerKind, SocketAddr)> {
        self.listeners
            .iter()
            .filter_map(|(kind, l, _)| l.local_addr().ok().map(|a| (*kind, a)))
            .collect()
    }

    /// Starts the forwards, the proxies and the engine, and dials the
    /// peers.
    pub async fn launch(self, cfg: &ProxyConfig) -> Result<Running, Failure> {
        let tunnel = self.tunnel.clone();
        let stdio_is_all = forward::stdio_is_all(cfg, self.listeners.len());
        let forwards = forward::start(&tunnel, cfg, stdio_is_all).await?;
        let mut listening = Vec::new();
        for (kind, listener, config) in self.listeners {
            let addr = listener.local_addr().map_err(Failure::runtime)?;
            tracing::info!("{kind} listening on {addr}");
            listening.push(Listening {
                kind,
                addr,
                target: None,
            });
            let auth = config.auth.map(Rc::new);
            let (t, n) = (tunnel.clone(), self.negotiations.clone());
            match kind {
                ListenerKind::Socks5 => {
                    tokio::task::spawn_local(socks::serve(listener, t, auth, n));
                }
                _ => {
                    let tls = match &config.tls {
                        Some(files) => Some(crate::tls::server_config(files).map_err(|e| {
                            Failure::usage(format!("[http] on {addr}: {}: {}", e.key, e.message))
                        })?),
                        None => None,
                    };
                    tokio::task::spawn_local(http_proxy::serve(listener, t, auth, tls, n));
                }
            }
        }
        for (listener, port) in self.sni {
            let addr = listener.local_addr().map_err(Failure::runtime)?;
            tracing::info!("SNI proxy listening on {addr} (to port {port} of each name)");
            listening.push(Listening {
                kind: ListenerKind::Sni,
                addr,
                target: None,
            });
            let (t, n) = (tunnel.clone(), self.negotiations.clone());
            tokio::task::spawn_local(sni::serve(listener, t, port, n));
        }
        listening.extend(forwards.listening.iter().cloned());
        tunnel.connect_peers();
        let pings = tunnel
            .metrics()
            .check_alive
            .as_ref()
            .map(|c| (c.targets().collect::<Vec<_>>(), c.interval));
        if let Some((targets, interval)) = pings {
            tokio::task::spawn_local(check_alive(tunnel.clone(), targets, interval));
        }
        let engine = tunnel.clone();
        let run = tokio::task::spawn_local(async move { engine.run().await });
        Ok(Running {
            tunnel,
            forwards,
            run,
            listening,
        })
    }

    /// Runs everything until SIGINT/SIGTERM (or the STDIO stream ends, when
    /// it is all the config asks for).
    pub async fn serve(self, cfg: &ProxyConfig) -> Result<(), Failure> {
        self.launch(cfg).await?.serve().await
    }
}

/// wireproxy's `CheckAlive`: pings every target through the tunnel each
/// `interval`; the engine notes the answers for `/readyz`.
async fn check_alive(tunnel: Tunnel, targets: Vec<std::net::IpAddr>, interval: Duration) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        for &ip in &targets {
            if let Err(e) = tunnel.ping(ip) {
                tracing::debug!(%ip, error = %e, "CheckAlive: ping not sent");
            }
        }
        tunnel.wake();
    }
}

/// A client at work: proxies, forwards and the engine running.
pub struct Running {
    pub tunnel: Tunnel,
    forwards: Forwards,
    run: JoinHandle<()>,
    /// Where the proxies and forwards listen, proxies first.
    pub listening: Vec<Listening>,
}

impl Running {
    /// Waits for a session with every peer that has an endpoint; the error
    /// names each peer that did not answer (its public key, never a
    /// secret).
    pub async fn wait_for_handshakes(&self, limit: Duration) -> Result<(), Failure> {
        self.tunnel
            .wait_for_handshakes(limit)
            .await
            .map_err(|missing| {
                let each: Vec<String> = missing
                    .iter()
                    .map(|(key, endpoint)| {
                        format!(
                            "no handshake with {key} at {endpoint} after {} s",
                            limit.as_secs()
                        )
                    })
                    .collect();
                Failure::runtime(format!(
                    "{} (is the peer up and reachable over UDP, and do the keys match?)",
                    each.join("; ")
                ))
            })
    }

    /// Runs until SIGINT/SIGTERM (or the STDIO stream ends, when it is all
    /// the config asks for), then stops.
    pub async fn serve(self) -> Result<(), Failure> {
        let Running {
            tunnel,
            forwards,
            run,
            ..
        } = self;
        let result = tokio::select! {
            _ = crate::signals::shutdown_signal() => {
                tracing::info!("shutting down");
                Ok(())
            }
            result = forwards.stdio_done() => result.map_err(Failure::runtime),
        };
        tunnel.shutdown();
        let _ = run.await;
        result
    }

    /// Stops the engine.
    pub async fn stop(self) {
        self.tunnel.shutdown();
        let _ = self.run.await;
    }
}

#[cfg(test)]
mod tests {
    use super::no_dns_server_warning;

    #[test]
    fn a_dns_line_with_search_domains_only_is_named_as_such() {
        let none = no_dns_server_warning(&[]);
        assert!(none.starts_with("the config has no DNS =:"), "{none}");
        let search = no_dns_server_warning(&["corp.example".into()]);
        assert!(
            search.starts_with("DNS = names search domains (corp.example) but no server address")
                && !search.contains("no DNS ="),
            "{search}"
        );
    }
}
