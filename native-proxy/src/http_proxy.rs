//! The HTTP proxy: `CONNECT` tunnels and absolute-form requests of every
//! method, through the tunnel, on hyper.
//!
//! Bodies stream both ways (sized or chunked, never buffered whole); the
//! client's connection is kept alive, and so is the upstream one, reused
//! for the next request to the same host. Failures answer as a proxy
//! should: 407 for missing credentials, 502 for a host that cannot be
//! reached, 504 for one that does not answer, 400 for what is not a proxy
//! request. Until a client's first request that is forwarded or tunnelled
//! it counts as negotiating ([`crate::accept::Negotiations`]), for 30 s
//! at most.
//!
//! With `CertFile`/`KeyFile` it is an HTTPS proxy: clients speak TLS to it
//! (`curl --proxy https://...`). The handshake counts as negotiating too,
//! and must end within [`TLS_HANDSHAKE_TIMEOUT`].

use std::cell::RefCell;
use std::collections::HashMap;
use std::convert::Infallible;
use std::io;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri};
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::accept::{accept, Negotiating, Negotiations};
use crate::config::Credentials;
use crate::splice::splice;
use crate::tunnel::{is_connection_limit, ConnectError, Tunnel};

/// Requests whose headers take longer than this are dropped.
const HEADER_TIMEOUT: Duration = Duration::from_secs(30);
/// A client must have sent a request the proxy serves (see [`route`])
/// this long after connecting, or it is dropped.
const NEGOTIATION_TIMEOUT: Duration = HEADER_TIMEOUT;
/// Largest request head accepted.
const MAX_HEAD: usize = 64 * 1024;
/// An HTTPS proxy client must have finished its TLS handshake this long
/// after connecting, or it is dropped.
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

type Body = Either<Incoming, Full<Bytes>>;

/// Upstream connections of one client connection, by host and port.
type Upstreams = Rc<RefCell<HashMap<(String, u16), SendRequest<Incoming>>>>;

/// Serves the proxy on `listener`; over TLS when `tls` is given.
pub async fn serve(
    listener: TcpListener,
    tunnel: Tunnel,
    auth: Option<Rc<Credentials>>,
    tls: Option<Arc<rustls::ServerConfig>>,
    negotiations: Negotiations,
) {
    let tls = tls.map(TlsAcceptor::from);
    let what = if tls.is_some() {
        "HTTPS proxy"
    } else {
        "HTTP proxy"
    };
    loop {
        let (stream, peer) = accept(&listener, &tunnel, what).await;
        let Some(slot) = negotiations.enter(what) else {
            tunnel
                .metrics()
                .proxy_refused
                .fetch_add(1, Ordering::Relaxed);
            // A plain 503 means nothing to a client expecting TLS: it is
            // closed instead.
            if tls.is_none() {
                negotiations.refuse_http(stream);
            }
            continue;
        };
        let (tunnel, auth, tls) = (tunnel.clone(), auth.clone(), tls.clone());
        tokio::task::spawn_local(async move {
            let served = match tls {
                None => serve_connection(stream, tunnel, auth, slot).await,
                Some(acceptor) => {
                    let handshake =
                        tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await;
                    match handshake {
                        Ok(Ok(stream)) => serve_connection(stream, tunnel, auth, slot).await,
                        Ok(Err(e)) => {
                            tracing::info!(%peer, error = %e, "HTTPS proxy: TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            tracing::info!(
                                %peer,
                                "HTTPS proxy: TLS handshake not finished in {} s; closed",
                                TLS_HANDSHAKE_TIMEOUT.as_secs()
                            );
                            return;
                        }
                    }
                }
            };
            if let Err(e) = served {
                tracing::debug!(%peer, error = %e, "HTTP proxy connection ended");
            }
        });
    }
}

/// Serves one client connection; it counts as negotiating (holds `slot`)
/// until a request passes [`route`].
async fn serve_connection<S>(
    stream: S,
    tunnel: Tunnel,
    auth: Option<Rc<Credentials>>,
    slot: Negotiating,
) -> Result<(), hyper::Error>
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let upstreams: Upstreams = Rc::default();
    let slot = Rc::new(RefCell::new(Some(slot)));
    let negotiating = slot.clone();
    let service = hyper::service::service_fn(move |req| {
        let (tunnel, auth, upstreams) = (tunnel.clone(), auth.clone(), upstreams.clone());
        let slot = slot.clone();
        async move { Ok::<_, Infallible>(handle(req, tunnel, auth.as_deref(), upstreams, &slot).await) }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .max_buf_size(MAX_HEAD)
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    tokio::pin!(conn);
    // hyper times out each head alone: a client could send refused
    // requests one after another and stay negotiating for ever.
    tokio::select! {
        r = conn.as_mut() => return r,
        _ = tokio::time::sleep(NEGOTIATION_TIMEOUT) => {}
    }
    if negotiating.borrow().is_some() {
        tracing::debug!("HTTP proxy client sent no request to forward in time; closed");
        return Ok(());
    }
    conn.await
}

fn text(status: StatusCode, body: &str) -> Response<Body> {
    let mut r = Response::new(Either::Right(Full::new(Bytes::from(format!("{body}\n")))));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

fn authorized(headers: &HeaderMap, creds: &Credentials) -> bool {
    let Some(value) = headers
        .get(header::PROXY_AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let Some(encoded) = value
        .strip_prefix("Basic ")
        .or_else(|| value.strip_prefix("basic "))
    else {
        return false;
    };
    let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(encoded.trim()) else {
        return false;
    };
    // RFC 7617: the user-id ends at the first colon.
    let Some(colon) = decoded.iter().position(|&b| b == b':') else {
        return false;
    };
    creds.matches(&decoded[..colon], &decoded[colon + 1..])
}

/// The answer to a failed dial.
fn dial_failure(host: &str, e: &ConnectError) -> Response<Body> {
    match e {
        ConnectError::Dns(d) => text(
            StatusCode::BAD_GATEWAY,
            &format!("cannot resolve {host}: {d}"),
        ),
        ConnectError::Io(io) if is_connection_limit(io) => {
            let mut r = text(
                StatusCode::SERVICE_UNAVAILABLE,
                &format!("{host}: too many connections open through the tunnel; try again later"),
            );
            r.headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
            r
        }
        ConnectError::Io(io) if io.kind() == io::ErrorKind::PermissionDenied => text(
            StatusCode::FORBIDDEN,
            &format!("{host}: the gateway's policy does not allow this destination"),
        ),
        ConnectError::Io(io) if io.kind() == io::ErrorKind::TimedOut => text(
            StatusCode::GATEWAY_TIMEOUT,
            &format!("{host} did not answer"),
        ),
        ConnectError::Io(io) => text(
            StatusCode::BAD_GATEWAY,
            &format!("cannot connect to {host}: {io}"),
        ),
    }
}

/// Headers that describe one hop, not the message: never forwarded.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let listed: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in listed {
        headers.remove(name);
    }
    for name in [
        header::CONNECTION,
        HeaderName::from_static("proxy-connection"),
        HeaderName::from_static("keep-alive"),
        header::PROXY_AUTHENTICATE,
        header::PROXY_AUTHORIZATION,
        header::TE,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
    ] {
        headers.remove(name);
    }
}

/// What a request asks of the proxy, decided from its head alone.
#[derive(Debug, PartialEq, Eq)]
pub enum Route {
    /// `CONNECT host:port`: a byte tunnel.
    Connect { host: String, port: u16 },
    /// An absolute-form `http://` request, forwarded.
    Forward { host: String, port: u16 },
}

/// A request refused before anything is dialled.
#[derive(Debug, PartialEq, Eq)]
pub struct Refusal {
    pub status: StatusCode,
    pub message: &'static str,
}

fn refuse(status: StatusCode, message: &'static str) -> Refusal {
    Refusal { status, message }
}

fn unbracket(host: &str) -> String {
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .to_string()
}

/// Checks credentials and reads the destination of a request head.
pub fn route(
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    auth: Option<&Credentials>,
) -> Result<Route, Refusal> {
    if auth.is_some_and(|creds| !authorized(headers, creds)) {
        return Err(refuse(
            StatusCode::PROXY_AUTHENTICATION_REQUIRED,
            "proxy credentials needed",
        ));
    }
    if method == Method::CONNECT {
        let authority = uri
            .authority()
            .ok_or(refuse(StatusCode::BAD_REQUEST, "CONNECT needs host:port"))?;
        let port = authority
            .port_u16()
            .ok_or(refuse(StatusCode::BAD_REQUEST, "CONNECT needs host:port"))?;
        return Ok(Route::Connect {
            host: unbracket(authority.host()),
            port,
        });
    }
    match uri.scheme_str() {
        Some("http") => {}
        Some("https") => {
            return Err(refuse(
                StatusCode::BAD_REQUEST,
                "this proxy takes https:// through CONNECT (curl does that by itself)",
            ))
        }
        _ => {
            return Err(refuse(
                StatusCode::BAD_REQUEST,
                "this is an HTTP proxy: ask it for absolute URLs (GET http://host/path) or CONNECT host:port",
            ))
        }
    }
    let host = uri
        .host()
        .ok_or(refuse(StatusCode::BAD_REQUEST, "the URL has no host"))?;
    Ok(Route::Forward {
        host: unbracket(host),
        port: uri.port_u16().unwrap_or(80),
    })
}

async fn handle(
    req: Request<Incoming>,
    tunnel: Tunnel,
    auth: Option<&Credentials>,
    upstreams: Upstreams,
    negotiating: &RefCell<Option<Negotiating>>,
) -> Response<Body> {
    let routed = route(req.method(), req.uri(), req.headers(), auth);
    if routed.is_ok() {
        negotiating.borrow_mut().take();
    }
    match routed {
        Ok(Route::Connect { host, port }) => connect(req, &host, port, tunnel).await,
        Ok(Route::Forward { host, port }) => forward(req, &host, port, &tunnel, &upstreams).await,
        Err(refusal) => {
            let mut r = text(refusal.status, refusal.message);
            if refusal.status == StatusCode::PROXY_AUTHENTICATION_REQUIRED {
                tunnel
                    .metrics()
                    .proxy_refused
                    .fetch_add(1, Ordering::Relaxed);
                r.headers_mut().insert(
                    header::PROXY_AUTHENTICATE,
                    HeaderValue::from_static("Basic realm=\"underpass\""),
                );
            }
            r
        }
    }
}

async fn connect(req: Request<Incoming>, host: &str, port: u16, tunnel: Tunnel) -> Response<Body> {
    let mut remote = match tunnel.connect_host(host, port).await {
        Ok(s) => s,
        Err(e) => {
            tracing::debug!(%host, port, error = %e, "CONNECT failed");
            return dial_failure(host, &e);
        }
    };
    tracing::debug!(%host, port, "CONNECT");
    tokio::task::spawn_local(async move {
        match hyper::upgrade::on(req).await {
            Ok(upgraded) => {
                let mut client = TokioIo::new(upgraded);
                let _ = splice(&mut client, &mut remote).await;
            }
            Err(e) => tracing::debug!(error = %e, "CONNECT upgrade failed"),
        }
    });
    Response::new(Either::Right(Full::new(Bytes::new())))
}

/// A ready connection to `host:port`: the kept one if it still works.
async fn upstream(
    host: &str,
    port: u16,
    tunnel: &Tunnel,
    upstreams: &Upstreams,
) -> Result<SendRequest<Incoming>, Response<Body>> {
    let kept = upstreams.borrow_mut().remove(&(host.to_string(), port));
    if let Some(mut sender) = kept {
        if sender.ready().await.is_ok() {
            return Ok(sender);
        }
    }
    let stream = tunnel
        .connect_host(host, port)
        .await
        .map_err(|e| dial_failure(host, &e))?;
    let (sender, conn) = hyper::client::conn::http1::Builder::new()
        .handshake(TokioIo::new(stream))
        .await
        .map_err(|e| text(StatusCode::BAD_GATEWAY, &format!("{host}: {e}")))?;
    tokio::task::spawn_local(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "upstream connection ended");
        }
    });
    Ok(sender)
}

/// The `Host` value for `host:port` (the host unbracketed, as [`route`]
/// gives it): an IPv6 literal in brackets, the port unless it is 80.
fn host_header(host: &str, port: u16) -> String {
    let host = if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_string()
    };
    if port == 80 {
        host
    } else {
        format!("{host}:{port}")
    }
}

async fn forward(
    req: Request<Incoming>,
    host: &str,
    port: u16,
    tunnel: &Tunnel,
    upstreams: &Upstreams,
) -> Response<Body> {
    let (mut parts, body) = req.into_parts();
    let path = parts
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_string();
    parts.uri = match path.parse::<Uri>() {
        Ok(u) => u,
        Err(_) => return text(StatusCode::BAD_REQUEST, "invalid path"),
    };
    strip_hop_by_hop(&mut parts.headers);
    // RFC 9112 section 3.2.2: the target's host replaces whatever Host the
    // client sent, so the origin never sees a name the request did not go
    // to.
    match HeaderValue::from_str(&host_header(host, port)) {
        Ok(v) => {
            parts.headers.insert(header::HOST, v);
        }
        Err(_) => return text(StatusCode::BAD_REQUEST, "invalid host"),
    }
    let method = parts.method.clone();
    let mut sender = match upstream(host, port, tunnel, upstreams).await {
        Ok(s) => s,
        Err(response) => return response,
    };
    let response = match sender.send_request(Request::from_parts(parts, body)).await {
        Ok(r) => r,
        Err(e) => return text(StatusCode::BAD_GATEWAY, &format!("{host}: {e}")),
    };
    upstreams
        .borrow_mut()
        .insert((host.to_string(), port), sender);
    tracing::debug!(%method, %host, status = %response.status(), "forwarded");
    let (mut parts, body) = response.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    Response::from_parts(parts, Either::Left(body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_by_the_gateways_policy_is_403_a_closed_port_502() {
        let failed =
            |kind| dial_failure("h", &ConnectError::Io(io::Error::new(kind, "x"))).status();
        assert_eq!(
            failed(io::ErrorKind::PermissionDenied),
            StatusCode::FORBIDDEN
        );
        assert_eq!(
            failed(io::ErrorKind::ConnectionRefused),
            StatusCode::BAD_GATEWAY
        );
    }

    #[test]
    fn the_host_header_names_the_target_with_ipv6_in_brackets() {
        assert_eq!(host_header("example.com", 80), "example.com");
        assert_eq!(host_header("example.com", 8080), "example.com:8080");
        assert_eq!(host_header("10.0.0.5", 81), "10.0.0.5:81");
        assert_eq!(host_header("::1", 80), "[::1]");
        assert_eq!(host_header("fd00::5", 8080), "[fd00::5]:8080");
    }
}
