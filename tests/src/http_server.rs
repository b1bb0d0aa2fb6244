//! A small HTTP/1.1 origin server for the tests, on loopback, with content
//! whose checksum the test knows:
//!
//! - `GET /bytes/LEN?seed=S` answers LEN bytes of stream S;
//! - `GET /hello` answers `hello underpass\n`;
//! - `GET /host` answers the `Host` header it received (or nothing);
//! - `POST` or `PUT /sink` reads the body (sized or chunked) and answers
//!   `LEN CHECKSUM\n`;
//! - `GET /fast/LEN` answers LEN bytes as fast as it can (benchmarks), and
//!   `POST` or `PUT /discard` swallows the body unchecked.
//!
//! Keep-alive works; every connection gets its own thread.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use crate::{fill, Checksum};

pub struct HttpServer {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    /// Connections accepted so far.
    pub connections: Arc<AtomicUsize>,
}

impl HttpServer {
    pub fn start() -> HttpServer {
        Self::start_on("127.0.0.1:0".parse().expect("literal"))
    }

    pub fn start_on(addr: SocketAddr) -> HttpServer {
        let listener =
            TcpListener::bind(addr).unwrap_or_else(|e| panic!("test server on {addr}: {e}"));
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let connections = Arc::new(AtomicUsize::new(0));
        let (s, c) = (stop.clone(), connections.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if s.load(Ordering::Relaxed) {
                    return;
                }
                let Ok(stream) = stream else { continue };
                c.fetch_add(1, Ordering::Relaxed);
                std::thread::spawn(move || {
                    let _ = serve(stream);
                });
            }
        });
        HttpServer {
            addr,
            stop,
            connections,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(self.addr);
    }
}

fn serve(stream: TcpStream) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    // A response leaves in as few segments as it fits, as real servers
    // send it: written piece by piece, `write!` made three segments of a
    // head, and Nagle held the later ones for a round trip.
    let mut out = std::io::BufWriter::new(stream);
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let mut parts = line.split_whitespace();
        let (method, target) = (
            parts.next().unwrap_or(""),
            parts.next().unwrap_or("").to_string(),
        );
        let mut length = None;
        let mut chunked = false;
        let mut close = false;
        let mut host = String::new();
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h)? == 0 {
                return Ok(());
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            let (name, value) = h.split_once(':').unwrap_or((h, ""));
            let value = value.trim();
            match name.to_ascii_lowercase().as_str() {
                "content-length" => length = value.parse::<u64>().ok(),
                "transfer-encoding" => chunked = value.eq_ignore_ascii_case("chunked"),
                "connection" => close = value.eq_ignore_ascii_case("close"),
                "host" => host = value.to_string(),
                _ => {}
            }
        }
        let path = target.split('?').next().unwrap_or("").to_string();
        let check = path != "/discard";
        let mut body = Checksum::default();
        let mut body_len = 0u64;
        let mut consume = |data: &[u8]| {
            if check {
                body.update(data);
            }
            body_len += data.len() as u64;
        };
        if chunked {
            loop {
                let mut size = String::new();
                reader.read_line(&mut size)?;
                let size = u64::from_str_radix(size.trim().split(';').next().unwrap_or("0"), 16)
                    .unwrap_or(0);
                if size == 0 {
                    let mut end = String::new();
                    reader.read_line(&mut end)?;
                    break;
                }
                copy_exact(&mut reader, size, &mut consume)?;
                let mut crlf = [0u8; 2];
                reader.read_exact(&mut crlf)?;
            }
        } else if let Some(len) = length {
            copy_exact(&mut reader, len, &mut consume)?;
        }
        let path = path.as_str();
        if (method == "POST" || method == "PUT") && (path == "/sink" || path == "/discard") {
            let reply = format!("{} {}\n", body_len, body.value());
            write!(
                out,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{reply}",
                reply.len()
            )?;
        } else if path == "/host" {
            write!(
                out,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{host}",
                host.len()
            )?;
        } else if path == "/hello" {
            let text = "hello underpass\n";
            write!(
                out,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n",
                text.len()
            )?;
            if method != "HEAD" {
                out.write_all(text.as_bytes())?;
            }
        } else if let Some(len) = path
            .strip_prefix("/fast/")
            .and_then(|l| l.parse::<u64>().ok())
        {
            write!(out, "HTTP/1.1 200 OK\r\nContent-Length: {len}\r\n\r\n")?;
            let buf = vec![0x5au8; 256 * 1024];
            let mut off = 0;
            while off < len {
                let n = (len - off).min(buf.len() as u64) as usize;
                out.write_all(&buf[..n])?;
                off += n as u64;
            }
        } else if let Some(len) = path
            .strip_prefix("/bytes/")
            .and_then(|l| l.parse::<u64>().ok())
        {
            let seed = target
                .split_once("seed=")
                .and_then(|(_, s)| s.parse::<u64>().ok())
                .unwrap_or(0);
            write!(out, "HTTP/1.1 200 OK\r\nContent-Length: {len}\r\nContent-Type: application/octet-stream\r\n\r\n")?;
            if method != "HEAD" {
                let mut buf = vec![0u8; 256 * 1024];
                let mut off = 0;
                while off < len {
                    let n = (len - off).min(buf.len() as u64) as usize;
                    fill(seed, off, &mut buf[..n]);
                    out.write_all(&buf[..n])?;
                    off += n as u64;
                }
            }
        } else {
            write!(out, "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")?;
        }
        out.flush()?;
        if close {
            return Ok(());
        }
    }
}

fn copy_exact(
    reader: &mut impl Read,
    mut len: u64,
    sink: &mut impl FnMut(&[u8]),
) -> std::io::Result<()> {
    let mut buf = vec![0u8; 256 * 1024];
    while len > 0 {
        let want = len.min(buf.len() as u64) as usize;
        let n = reader.read(&mut buf[..want])?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        sink(&buf[..n]);
        len -= n as u64;
    }
    Ok(())
}
