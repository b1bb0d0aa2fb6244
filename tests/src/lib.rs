//! Support for the end-to-end tests: the real `underpass` binary started as
//! a gateway and as a client over loopback, local servers with known
//! content, curl as the user's client, and bounded waits with clear
//! messages.

// libc calls, each with its SAFETY comment.
#![allow(unsafe_code)]

pub mod bench;
mod content;
pub mod http_server;
pub mod impair;
pub mod interop;
pub mod kernel_loss;
mod process;
pub mod relay;
pub mod socks;
pub mod unprivileged;

use std::hash::Hasher;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use underpass_core::PrivateKey;

pub use content::*;
pub use process::*;

/// The `underpass` binary, built once per test run if it is not there.
pub fn binary() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Ok(path) = std::env::var("UNDERPASS_BIN") {
            return PathBuf::from(path);
        }
        // target/<profile>/deps/<test> -> target/<profile>/underpass
        let exe = std::env::current_exe().expect("test executable path");
        let dir = exe.parent().and_then(Path::parent).expect("target dir");
        let bin = dir.join("underpass");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut build = Command::new(cargo);
        build.args(["build", "--quiet", "-p", "underpass", "--bin", "underpass"]);
        // The variables cargo sets for this test package would make the
        // build look different from test.sh's (ring's build script watches
        // CARGO_MANIFEST_DIR) and rebuild half the tree.
        for (name, _) in std::env::vars_os() {
            let name = name.to_string_lossy();
            if name.starts_with("CARGO_PKG_")
                || matches!(
                    &*name,
                    "CARGO_MANIFEST_DIR"
                        | "CARGO_MANIFEST_PATH"
                        | "CARGO_CRATE_NAME"
                        | "CARGO_PRIMARY_PACKAGE"
                        | "CARGO_TARGET_TMPDIR"
                )
            {
                build.env_remove(&*name);
            }
        }
        let status = build.status().expect("cargo build -p underpass");
        assert!(status.success(), "building the underpass binary failed");
        assert!(bin.exists(), "no binary at {}", bin.display());
        bin
    })
    .clone()
}

/// A port nobody listens on right now (TCP and UDP), for a process the
/// test starts next. Taken below the kernel's ephemeral range (32768 and
/// up by default): a port the kernel chose could be handed to some
/// outgoing connection before that process binds it. Never the same port
/// twice in one test run.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(0);
    // Each test process starts at its own place in 20000..32000.
    let _ = NEXT.compare_exchange(
        0,
        20_000 + (std::process::id() % 1000) as u16 * 12,
        Ordering::Relaxed,
        Ordering::Relaxed,
    );
    loop {
        let port = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = 20_000 + port.wrapping_sub(20_000) % 12_000;
        let free = TcpListener::bind(("127.0.0.1", port)).is_ok()
            && UdpSocket::bind(("127.0.0.1", port)).is_ok();
        if free {
            return port;
        }
    }
}

/// Gives a UDP socket 16 MiB buffers each way, past `rmem_max` /
/// `wmem_max` when root: a test that receives a burst must not lose it in
/// its own socket while its reader is not scheduled (a default 208 KiB
/// buffer holds only about 90 datagrams of 1 KB, counted with their
/// kernel overhead).
pub fn large_buffers(socket: &UdpSocket) {
    const BUFFER: libc::c_int = 16 << 20;
    if !set_socket_option(socket, libc::SO_RCVBUFFORCE, BUFFER) {
        set_socket_option(socket, libc::SO_RCVBUF, BUFFER);
    }
    if !set_socket_option(socket, libc::SO_SNDBUFFORCE, BUFFER) {
        set_socket_option(socket, libc::SO_SNDBUF, BUFFER);
    }
}

/// Sets an int `SOL_SOCKET` option; whether the kernel took it.
pub(crate) fn set_socket_option(socket: &UdpSocket, name: libc::c_int, value: libc::c_int) -> bool {
    use std::os::fd::AsRawFd;
    // SAFETY: an int option on an open socket.
    unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            name,
            (&raw const value).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        ) == 0
    }
}

/// Datagrams the kernel dropped for a full UDP receive buffer, on the
/// whole machine so far (`RcvbufErrors` in /proc/net/snmp; 0 where it
/// cannot be read): a test that lost datagrams says whether a socket
/// buffer overflowed meanwhile.
pub fn udp_receive_buffer_drops() -> u64 {
    let snmp = std::fs::read_to_string("/proc/net/snmp").unwrap_or_default();
    let mut udp = snmp.lines().filter(|l| l.starts_with("Udp: "));
    let (Some(names), Some(values)) = (udp.next(), udp.next()) else {
        return 0;
    };
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(name, _)| *name == "RcvbufErrors")
        .and_then(|(_, value)| value.parse().ok())
        .unwrap_or(0)
}

/// A scratch directory for one test, removed when dropped (kept, logs and
/// all, when `UNDERPASS_KEEP_SCRATCH` is set: for looking into a run).
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!(
            "underpass-test-{name}-{}-{}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    pub fn write(&self, name: &str, contents: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, contents).unwrap();
        path
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if std::env::var_os("UNDERPASS_KEEP_SCRATCH").is_none() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// Runs the binary to completion (for --check, genkey, errors).
pub fn run(args: &[&str]) -> Output {
    Command::new(binary())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("running underpass")
}

/// Waits until something accepts TCP connections on `addr`.
pub fn wait_tcp(addr: SocketAddr, limit: Duration) {
    let deadline = Instant::now() + limit;
    while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        assert!(
            Instant::now() < deadline,
            "nothing listens on {addr} after {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs curl; returns its output. Fails with curl's stderr on error
/// unless `expect_failure`.
pub fn curl(args: &[&str]) -> Output {
    Command::new("curl")
        .args(["--silent", "--show-error", "--max-time", "120"])
        .args(args)
        .output()
        .expect("curl is installed (the test command installs it)")
}

/// The stdout of a curl that must have succeeded; its stderr otherwise.
pub fn curl_text(out: &Output) -> String {
    assert!(
        out.status.success(),
        "curl failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A pair of keys.
pub struct Keys {
    pub private: String,
    pub public: String,
}

pub fn keys() -> Keys {
    let k = PrivateKey::generate(&mut rand::rngs::OsRng);
    Keys {
        private: k.to_base64(),
        public: k.public_key().to_base64(),
    }
}

/// A gateway process and a client process joined over loopback UDP.
pub struct Pair {
    pub gateway: Process,
    pub client: Process,
    pub socks: SocketAddr,
    pub http: SocketAddr,
    pub gateway_port: u16,
    pub client_config: PathBuf,
    /// Between client and gateway, when the pair was asked for one.
    pub relay: Option<impair::ImpairRelay>,
    pub client_keys: Keys,
    pub gateway_keys: Keys,
    /// Last, so the processes (dropped first) can still show their logs.
    pub scratch: Scratch,
}

/// How a pair is set up; `extra_client` is appended to the client config.
#[derive(Default)]
pub struct PairOptions {
    pub extra_client: String,
    pub extra_gateway: String,
    pub client_args: Vec<String>,
    /// CPUs to pin the processes to (benchmarks).
    pub gateway_cpu: Option<u32>,
    pub client_cpu: Option<u32>,
    /// Puts an impairing relay (seeded) between client and gateway.
    pub impair: Option<(impair::Impairment, u64)>,
    /// The CPU of the relay's threads (benchmarks).
    pub relay_cpu: Option<usize>,
    pub gateway_args: Vec<String>,
    /// `RUST_LOG` of both processes.
    pub log: Option<&'static str>,
}

pub const GATEWAY_IP: &str = "10.50.0.1";
pub const CLIENT_IP: &str = "10.50.0.2";

/// A gateway process on a free loopback port for the client key
/// `client_public` (tunnel address CLIENT_IP), allowed everywhere; `extra`
/// is appended to its config. Returns it, its port and its keys.
pub fn start_gateway(
    scratch: &Scratch,
    client_public: &str,
    extra: &str,
    cpu: Option<u32>,
) -> (Process, u16, Keys) {
    start_gateway_with(scratch, client_public, extra, cpu, &[], None)
}

/// [`start_gateway`] with more command-line arguments (`--metrics ...`)
/// and its own `RUST_LOG`.
pub fn start_gateway_with(
    scratch: &Scratch,
    client_public: &str,
    extra: &str,
    cpu: Option<u32>,
    args: &[&str],
    log: Option<&str>,
) -> (Process, u16, Keys) {
    let g = keys();
    let port = free_port();
    let config = scratch.write(
        "gateway.conf",
        &format!(
            "[Interface]\nPrivateKey = {}\nAddress = {GATEWAY_IP}/32\nListenPort = {port}\n\n\
             [Peer]\nPublicKey = {client_public}\nAllowedIPs = {CLIENT_IP}/32\n\n\
             [Gateway]\nAllowedDestinations = 127.0.0.0/8, 0.0.0.0/0\n{extra}",
            g.private
        ),
    );
    let mut all = vec!["gateway", "--config", config.to_str().unwrap()];
    all.extend_from_slice(args);
    let mut gateway = Process::start_logged(cpu, "gateway", scratch, &all, log);
    gateway.wait_for_log("gateway listening", Duration::from_secs(20));
    (gateway, port, g)
}

/// The value of counter `name` (`underpass_...`) on a `--metrics` address.
pub fn metric(addr: SocketAddr, name: &str) -> u64 {
    let body = curl_text(&curl(&[&format!("http://{addr}/metrics")]));
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no metric {name} in:\n{body}"))
}

impl Pair {
    /// Downloads `len` bytes of stream `seed` from `server` through the
    /// SOCKS proxy (curl with `extra` arguments) and checks every byte.
    pub fn download_checked(
        &self,
        server: &http_server::HttpServer,
        len: u64,
        seed: u64,
        extra: &[&str],
    ) {
        let file = self.scratch.path(&format!("down-{seed}.bin"));
        let url = server.url(&format!("/bytes/{len}?seed={seed}"));
        let socks = self.socks.to_string();
        let mut args = vec!["--socks5", &socks, "-o", file.to_str().unwrap()];
        args.extend_from_slice(extra);
        args.push(&url);
        curl_text(&curl(&args));
        let expected = content_checksum(seed, len);
        assert_eq!(Checksum::of_file(&file), (expected, len), "download {seed}");
        std::fs::remove_file(&file).unwrap();
    }

    /// Uploads `len` bytes of stream `seed` to `server` through the SOCKS
    /// proxy; the server's checksum of what it got must match.
    pub fn upload_checked(&self, server: &http_server::HttpServer, len: u64, seed: u64) {
        let file = self.scratch.path(&format!("up-{seed}.bin"));
        let expected = write_content(&file, seed, len);
        let out = curl_text(&curl(&[
            "--socks5",
            &self.socks.to_string(),
            "-T",
            file.to_str().unwrap(),
            &server.url("/sink"),
        ]));
        assert_eq!(out, format!("{len} {expected}\n"), "upload {seed}");
        std::fs::remove_file(&file).unwrap();
    }

    pub fn start(name: &str, options: PairOptions) -> Pair {
        let scratch = Scratch::new(name);
        let c = keys();
        let gateway_args: Vec<&str> = options.gateway_args.iter().map(String::as_str).collect();
        let (gateway, gateway_port, g) = start_gateway_with(
            &scratch,
            &c.public,
            &options.extra_gateway,
            options.gateway_cpu,
            &gateway_args,
            options.log,
        );
        let socks = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let http = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let relay = options.impair.map(|(impairment, seed)| {
            let upstream = ([127, 0, 0, 1], gateway_port).into();
            impair::ImpairRelay::start_on(upstream, impairment, seed, options.relay_cpu)
        });
        let endpoint = relay
            .as_ref()
            .map_or(SocketAddr::from(([127, 0, 0, 1], gateway_port)), |r| r.addr);
        let client_config = scratch.write(
            "client.conf",
            &format!(
                "[Interface]\nPrivateKey = {}\nAddress = {CLIENT_IP}/32\nDNS = {GATEWAY_IP}\n\n\
                 [Peer]\nPublicKey = {}\nEndpoint = {endpoint}\nAllowedIPs = 0.0.0.0/0\n\n\
                 [Socks5]\nBindAddress = {socks}\n\n[http]\nBindAddress = {http}\n{}",
                c.private, g.public, options.extra_client
            ),
        );
        let mut args: Vec<String> = vec!["--config".into(), client_config.to_str().unwrap().into()];
        args.extend(options.client_args.iter().cloned());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut client =
            Process::start_logged(options.client_cpu, "client", &scratch, &args, options.log);
        client.wait_for_log("handshake completed", Duration::from_secs(20));
        wait_tcp(socks, Duration::from_secs(10));
        wait_tcp(http, Duration::from_secs(10));
        Pair {
            scratch,
            gateway,
            client,
            socks,
            http,
            gateway_port,
            client_config,
            relay,
            client_keys: c,
            gateway_keys: g,
        }
    }
}

/// Runs `command` to completion with its output captured, killing it and
/// failing if it takes longer than `limit`.
pub fn output_within(mut command: Command, limit: Duration) -> Output {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {command:?}: {e}"));
    let drain = |mut from: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = from.read_to_end(&mut bytes);
            bytes
        })
    };
    let stdout = drain(Box::new(child.stdout.take().unwrap()));
    let stderr = drain(Box::new(child.stderr.take().unwrap()));
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{command:?} did not finish within {limit:?}; stderr:\n{}",
                String::from_utf8_lossy(&stderr.join().unwrap())
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output {
        status,
        stdout: stdout.join().unwrap(),
        stderr: stderr.join().unwrap(),
    }
}
