//! The client: the tunnel plus every proxy and forward its configuration
//! asks for.

use std::net::SocketAddr;
use std::rc::Rc;

use tokio::net::TcpListener;

use crate::cli::ClientArgs;
use crate::config::{ProxyConfig, ProxyListener};
use crate::setup::{self, Role};
use crate::tunnel::Tunnel;
use crate::{forward, http_proxy, socks, Failure};

pub async fn run(args: ClientArgs) -> Result<(), Failure> {
    let Some(path) = args.config.as_deref() else {
        return Err(Failure::usage(
            "no configuration: give --config FILE (try `underpass quickstart` to run without a WireGuard server)",
        ));
    };
    let cfg = ProxyConfig::load(path).map_err(Failure::usage)?;
    for w in &cfg.warnings {
        tracing::warn!("{w}");
    }
    if args.check {
        println!("config OK");
        return Ok(());
    }
    let mut socks5 = cfg.socks5.clone();
    if let Some(bind) = args.socks5 {
        socks5.push(ProxyListener { bind, auth: None });
    }
    let mut http = cfg.http.clone();
    if let Some(bind) = args.http {
        http.push(ProxyListener { bind, auth: None });
    }
    let client = Client::start(&cfg, &socks5, &http, &args.common).await?;
    client.serve(&cfg).await
}

/// A running client, its listeners bound.
pub struct Client {
    pub tunnel: Tunnel,
    listeners: Vec<(&'static str, TcpListener, ProxyListener)>,
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
        common: &crate::cli::Common,
    ) -> Result<Client, Failure> {
        let mut listeners = Vec::new();
        for l in socks5 {
            listeners.push(("socks5", bind(l.bind, "SOCKS5").await?, l.clone()));
        }
        for l in http {
            listeners.push(("http", bind(l.bind, "the HTTP proxy").await?, l.clone()));
        }
        let tunnel = setup::build(cfg, Role::Client, common).await?;
        if !tunnel.has_dns() && !listeners.is_empty() {
            tracing::warn!(
                "the config has no DNS =: host names given to the proxies resolve on this host, outside the tunnel (DNS leaks)"
            );
        }
        Ok(Client { tunnel, listeners })
    }

    /// The addresses the proxies listen on, `(kind, addr)`.
    pub fn local_addrs(&self) -> Vec<(&'static str, SocketAddr)> {
        self.listeners
            .iter()
            .filter_map(|(kind, l, _)| l.local_addr().ok().map(|a| (*kind, a)))
            .collect()
    }

    /// Runs everything until SIGINT/SIGTERM (or the stdio tunnel ends).
    pub async fn serve(self, cfg: &ProxyConfig) -> Result<(), Failure> {
        let tunnel = self.tunnel.clone();
        let forwards = forward::start(&tunnel, cfg).await?;
        for (kind, listener, config) in self.listeners {
            let addr = listener.local_addr().map_err(Failure::runtime)?;
            tracing::info!("{kind} listening on {addr}");
            let auth = config.auth.map(Rc::new);
            let t = tunnel.clone();
            match kind {
                "socks5" => {
                    tokio::task::spawn_local(socks::serve(listener, t, auth));
                }
                _ => {
                    tokio::task::spawn_local(http_proxy::serve(listener, t, auth));
                }
            }
        }
        tunnel.connect_peers();
        let engine = tunnel.clone();
        let run = tokio::task::spawn_local(async move { engine.run().await });
        tokio::select! {
            _ = setup::shutdown_signal() => tracing::info!("shutting down"),
            result = forwards.stdio_done() => {
                if let Err(e) = result {
                    tunnel.shutdown();
                    let _ = run.await;
                    return Err(Failure::runtime(e));
                }
            }
        }
        tunnel.shutdown();
        let _ = run.await;
        Ok(())
    }
}
