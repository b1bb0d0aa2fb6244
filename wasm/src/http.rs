//! HTTP/1.1 over one tunnel TCP stream, for `Tunnel.fetch`: the request
//! encoder, and a response decoder fed as bytes arrive. Plain Rust, no JS,
//! so it is tested natively.

use std::fmt;

/// The largest response body `fetch` keeps in memory.
pub const MAX_BODY: usize = 512 << 20;
/// The most memory a `Content-Length` reserves before the body arrives.
const PRESIZE_MAX: usize = 64 << 20;
/// The largest response head (status line and headers).
const MAX_HEAD: usize = 64 << 10;
const MAX_HEADERS: usize = 128;

/// Why a URL, a request or a response was refused: a message for the page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpError(pub String);

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn err<T>(message: impl Into<String>) -> Result<T, HttpError> {
    Err(HttpError(message.into()))
}

/// An `http://` URL split into what the request needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Url {
    /// A name or an IP address (IPv6 without brackets).
    pub host: String,
    /// The port, 80 unless the URL says otherwise.
    pub port: u16,
    /// Path and query, at least `/`.
    pub target: String,
    /// The `Host` header: the host as written, with a non-default port.
    pub authority: String,
}

impl Url {
    /// Splits an `http://` URL; anything else is refused with the reason.
    pub fn parse(text: &str) -> Result<Url, HttpError> {
        let text = text.trim();
        let Some((scheme, rest)) = text.split_once("://") else {
            return err(format!(
                "{text:?} is not an absolute URL (http://host/path)"
            ));
        };
        match scheme.to_ascii_lowercase().as_str() {
            "http" => {}
            "https" => {
                return err(
                    "https:// needs TLS, which fetch does not do; use http://, or openTcp with a TLS library of your own",
                )
            }
            other => return err(format!("unsupported URL scheme {other:?}; fetch speaks http://")),
        }
        let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (authority, target) = rest.split_at(end);
        let target = target.split('#').next().unwrap_or("");
        let target = match target {
            "" => "/".to_string(),
            t if t.starts_with('?') => format!("/{t}"),
            t => t.to_string(),
        };
        if target.bytes().any(|b| b <= b' ' || b == 0x7f) {
            return err("the URL's path has spaces or control characters; percent-encode them");
        }
        if authority.contains('@') {
            return err("user names and passwords in the URL are not supported; send an Authorization header");
        }
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let Some((host, after)) = v6.split_once(']') else {
                return err(format!("{authority:?}: unclosed [ in the host"));
            };
            let port = match after {
                "" => None,
                p => Some(p.strip_prefix(':').unwrap_or("x")),
            };
            (host, port)
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            }
        };
        if host.is_empty() {
            return err(format!("{text:?} has no host"));
        }
        let port = match port {
            None | Some("") => 80,
            Some(p) => match p.parse::<u16>() {
                Ok(p) if p > 0 => p,
                _ => return err(format!("{p:?} is not a port number")),
            },
        };
        Ok(Url {
            host: host.to_string(),
            port,
            target,
            authority: authority.to_string(),
        })
    }
}

fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// The request bytes: head and body. `Host`, `Connection: close` and
/// `Content-Length` are added unless given.
pub fn encode_request(
    method: &str,
    url: &Url,
    headers: &[(String, String)],
    body: &[u8],
) -> Result<Vec<u8>, HttpError> {
    if !is_token(method) {
        return err(format!("{method:?} is not a valid HTTP method"));
    }
    let mut out = Vec::with_capacity(256 + body.len());
    out.extend_from_slice(format!("{method} {} HTTP/1.1\r\n", url.target).as_bytes());
    let has = |name: &str| headers.iter().any(|(n, _)| n.eq_ignore_ascii_case(name));
    if !has("host") {
        out.extend_from_slice(format!("Host: {}\r\n", url.authority).as_bytes());
    }
    if !has("connection") {
        out.extend_from_slice(b"Connection: close\r\n");
    }
    let sized = has("content-length") || has("transfer-encoding");
    if !sized && (!body.is_empty() || !matches!(method, "GET" | "HEAD" | "DELETE" | "OPTIONS")) {
        out.extend_from_slice(format!("Content-Length: {}\r\n", body.len()).as_bytes());
    }
    for (name, value) in headers {
        if !is_token(name) {
            return err(format!("{name:?} is not a valid header name"));
        }
        if value.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0) {
            return err(format!("the value of header {name} has a line break"));
        }
        out.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
    Ok(out)
}

/// An HTTP/1.1 response as the page receives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// The reason phrase, as sent.
    pub reason: String,
    /// The header fields, in order, as sent.
    pub headers: Vec<(String, String)>,
    /// The body, de-chunked.
    pub body: Vec<u8>,
}

#[derive(Debug)]
enum Body {
    Length(usize),
    /// Bytes left in the current chunk; `None` before a size line.
    Chunked(Option<usize>),
    /// After the last chunk: trailers until an empty line.
    Trailers,
    UntilClose,
}

#[derive(Debug)]
enum State {
    Head,
    Body(Body),
    Done,
}

/// Decodes one response as its bytes arrive.
#[derive(Debug)]
pub struct ResponseDecoder {
    head_only: bool,
    buf: Vec<u8>,
    state: State,
    response: Response,
}

impl ResponseDecoder {
    /// `head_only` for a HEAD request, whose response has no body whatever
    /// its headers say.
    pub fn new(head_only: bool) -> Self {
        ResponseDecoder {
            head_only,
            buf: Vec::new(),
            state: State::Head,
            response: Response {
                status: 0,
                reason: String::new(),
                headers: Vec::new(),
                body: Vec::new(),
            },
        }
    }

    /// Feeds bytes; `Ok(true)` once the response is complete (more bytes
    /// after it are ignored).
    pub fn feed(&mut self, mut data: &[u8]) -> Result<bool, HttpError> {
        // A download is mostly body: its bytes go straight into the body,
        // not through `buf` first.
        if self.buf.is_empty() {
            match &mut self.state {
                State::Body(Body::Length(left)) => {
                    let n = (*left).min(data.len());
                    self.response.body.extend_from_slice(&data[..n]);
                    data = &data[n..];
                    *left -= n;
                    if *left == 0 {
                        self.state = State::Done;
                    }
                }
                State::Body(Body::UntilClose) => {
                    if self.response.body.len() + data.len() > MAX_BODY {
                        return err(format!("the response body is over {MAX_BODY} bytes"));
                    }
                    self.response.body.extend_from_slice(data);
                    return Ok(false);
                }
                _ => {}
            }
        }
        self.buf.extend_from_slice(data);
        loop {
            match &mut self.state {
                State::Done => return Ok(true),
                State::Head => {
                    if !self.head()? {
                        return Ok(false);
                    }
                }
                State::Body(Body::Length(left)) => {
                    let n = (*left).min(self.buf.len());
                    self.response.body.extend_from_slice(&self.buf[..n]);
                    self.buf.drain(..n);
                    *left -= n;
                    if *left > 0 {
                        return Ok(false);
                    }
                    self.state = State::Done;
                }
                State::Body(Body::UntilClose) => {
                    self.response.body.append(&mut self.buf);
                    if self.response.body.len() > MAX_BODY {
                        return err(format!("the response body is over {MAX_BODY} bytes"));
                    }
                    return Ok(false);
                }
                State::Body(Body::Chunked(None)) => match httparse::parse_chunk_size(&self.buf) {
                    Ok(httparse::Status::Complete((used, size))) => {
                        self.buf.drain(..used);
                        let size = usize::try_from(size)
                            .ok()
                            .filter(|s| self.response.body.len() + s <= MAX_BODY);
                        let Some(size) = size else {
                            return err(format!("the response body is over {MAX_BODY} bytes"));
                        };
                        self.state = State::Body(if size == 0 {
                            Body::Trailers
                        } else {
                            Body::Chunked(Some(size))
                        });
                    }
                    Ok(httparse::Status::Partial) if self.buf.len() < 1024 => return Ok(false),
                    _ => return err("the response has a malformed chunk size line"),
                },
                State::Body(Body::Chunked(Some(left))) => {
                    if *left > 0 {
                        let n = (*left).min(self.buf.len());
                        self.response.body.extend_from_slice(&self.buf[..n]);
                        self.buf.drain(..n);
                        *left -= n;
                        if *left > 0 {
                            return Ok(false);
                        }
                    }
                    // The CRLF after the chunk's data.
                    if self.buf.len() < 2 {
                        return Ok(false);
                    }
                    if &self.buf[..2] != b"\r\n" {
                        return err("a chunk of the response is longer than its size line says");
                    }
                    self.buf.drain(..2);
                    self.state = State::Body(Body::Chunked(None));
                }
                State::Body(Body::Trailers) => {
                    let Some(end) = self.buf.windows(2).position(|w| w == b"\r\n") else {
                        if self.buf.len() > MAX_HEAD {
                            return err("the response's trailers are too long");
                        }
                        return Ok(false);
                    };
                    self.buf.drain(..end + 2);
                    if end == 0 {
                        self.state = State::Done;
                    }
                }
            }
        }
    }

    /// Parses the head if it is all there; skips 1xx responses.
    fn head(&mut self) -> Result<bool, HttpError> {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut parsed = httparse::Response::new(&mut headers);
        let used = match parsed.parse(&self.buf) {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) if self.buf.len() <= MAX_HEAD => return Ok(false),
            Ok(httparse::Status::Partial) => return err("the response head is over 64 KiB"),
            Err(e) => return err(format!("the server's response is not HTTP/1.x: {e}")),
        };
        let status = parsed.code.unwrap_or(0);
        let reason = parsed.reason.unwrap_or("").to_string();
        let headers: Vec<(String, String)> = parsed
            .headers
            .iter()
            .map(|h| {
                (
                    h.name.to_string(),
                    String::from_utf8_lossy(h.value).into_owned(),
                )
            })
            .collect();
        self.buf.drain(..used);
        if (100..200).contains(&status) && status != 101 {
            return Ok(true);
        }
        let header = |name: &str| {
            headers
                .iter()
                .rev()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.trim().to_string())
        };
        let chunked = header("transfer-encoding").is_some_and(|te| {
            te.rsplit(',')
                .next()
                .unwrap_or("")
                .trim()
                .eq_ignore_ascii_case("chunked")
        });
        let body = if self.head_only || status == 204 || status == 304 {
            None
        } else if chunked {
            Some(Body::Chunked(None))
        } else if let Some(len) = header("content-length") {
            match len.parse::<usize>() {
                Ok(n) if n <= MAX_BODY => Some(Body::Length(n)),
                Ok(_) => return err(format!("the response body is over {MAX_BODY} bytes")),
                Err(_) => {
                    return err(format!(
                        "the response's Content-Length {len:?} is not a number"
                    ))
                }
            }
        } else {
            Some(Body::UntilClose)
        };
        self.response.status = status;
        self.response.reason = reason;
        self.response.headers = headers;
        if let Some(Body::Length(n)) = body {
            // Sized once, not doubled on the way up (a lying length costs
            // the page at most PRESIZE_MAX).
            self.response.body.reserve_exact(n.min(PRESIZE_MAX));
        }
        self.state = match body {
            None | Some(Body::Length(0)) => State::Done,
            Some(b) => State::Body(b),
        };
        Ok(true)
    }

    /// The connection ended: the response, if that completes it.
    pub fn finish(mut self) -> Result<Response, HttpError> {
        match self.state {
            State::Done | State::Body(Body::UntilClose) => {
                self.response.body.append(&mut self.buf);
                Ok(self.response)
            }
            State::Head => err("the connection closed before a complete response head arrived"),
            State::Body(_) => err("the connection closed in the middle of the response body"),
        }
    }

    /// The response, once `feed` said it is complete.
    pub fn into_response(self) -> Response {
        self.response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(chunks: &[&[u8]], head_only: bool) -> Result<Response, HttpError> {
        let mut d = ResponseDecoder::new(head_only);
        for c in chunks {
            if d.feed(c)? {
                return Ok(d.into_response());
            }
        }
        d.finish()
    }

    #[test]
    fn urls() {
        let u = Url::parse("http://example.com:8080/a/b?c=d#frag").unwrap();
        assert_eq!(
            (
                u.host.as_str(),
                u.port,
                u.target.as_str(),
                u.authority.as_str()
            ),
            ("example.com", 8080, "/a/b?c=d", "example.com:8080")
        );
        let u = Url::parse("HTTP://[fd00::1]").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.target.as_str()),
            ("fd00::1", 80, "/")
        );
        let u = Url::parse("http://h?q").unwrap();
        assert_eq!(u.target, "/?q");
        assert!(Url::parse("https://h/").unwrap_err().0.contains("TLS"));
        assert!(Url::parse("ftp://h/").is_err());
        assert!(Url::parse("h/x").is_err());
        assert!(Url::parse("http://h:99999/").is_err());
        assert!(Url::parse("http://:80/").is_err());
        assert!(Url::parse("http://[::1/").is_err());
        assert!(Url::parse("http://h/a b").is_err());
    }

    #[test]
    fn requests() {
        let u = Url::parse("http://h:81/x").unwrap();
        let r = encode_request("POST", &u, &[("X-A".into(), "1".into())], b"hi").unwrap();
        assert_eq!(
            String::from_utf8(r).unwrap(),
            "POST /x HTTP/1.1\r\nHost: h:81\r\nConnection: close\r\nContent-Length: 2\r\nX-A: 1\r\n\r\nhi"
        );
        let r = encode_request("GET", &u, &[], b"").unwrap();
        assert!(!String::from_utf8(r).unwrap().contains("Content-Length"));
        assert!(encode_request("GE T", &u, &[], b"").is_err());
        assert!(encode_request("GET", &u, &[("A".into(), "x\r\nB: y".into())], b"").is_err());
        assert!(encode_request("GET", &u, &[("A:".into(), "x".into())], b"").is_err());
    }

    #[test]
    fn content_length_bodies_split_anywhere() {
        let wire = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX: y\r\n\r\nhelloEXTRA";
        for split in 0..wire.len() {
            let r = decode(&[&wire[..split], &wire[split..]], false).unwrap();
            assert_eq!((r.status, r.body.as_slice()), (200, &b"hello"[..]));
            assert_eq!(r.headers[1], ("X".into(), "y".into()));
        }
    }

    #[test]
    fn chunked_bodies_split_anywhere() {
        let wire = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\nB\r\n, chunked!!\r\n0\r\nTrailer: t\r\n\r\n";
        for split in 0..wire.len() {
            let r = decode(&[&wire[..split], &wire[split..]], false).unwrap();
            assert_eq!(r.body, b"hello, chunked!!");
        }
        // One byte at a time.
        let parts: Vec<&[u8]> = wire.chunks(1).collect();
        assert_eq!(decode(&parts, false).unwrap().body, b"hello, chunked!!");
    }

    #[test]
    fn close_delimited_informational_and_bodiless() {
        let r = decode(&[b"HTTP/1.0 200 OK\r\n\r\nall", b" of it"], false).unwrap();
        assert_eq!(r.body, b"all of it");
        let r = decode(
            &[b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok"],
            false,
        )
        .unwrap();
        assert_eq!((r.status, r.body.as_slice()), (201, &b"ok"[..]));
        let r = decode(&[b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n"], true).unwrap();
        assert!(r.body.is_empty());
        let r = decode(&[b"HTTP/1.1 204 No Content\r\n\r\n"], false).unwrap();
        assert_eq!(r.status, 204);
    }

    #[test]
    fn truncated_and_malformed_responses_are_errors() {
        let e = decode(
            &[b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nshort"],
            false,
        );
        assert!(e.unwrap_err().0.contains("middle of the response body"));
        assert!(decode(&[b"HTTP/1.1 200 OK\r\nCont"], false).is_err());
        assert!(decode(&[b"SSH-2.0-OpenSSH\r\n\r\n"], false).is_err());
        let e = decode(
            &[b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"],
            false,
        );
        assert!(e.is_err());
        let e = decode(&[b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n"], false);
        assert!(e.is_err());
        let e = decode(
            &[b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabc\r\n"],
            false,
        );
        assert!(e.unwrap_err().0.contains("longer than"));
    }
}
