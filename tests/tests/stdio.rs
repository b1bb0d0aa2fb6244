//! `[STDIOTunnel]`: stdin and stdout as a TCP connection through the
//! tunnel. stdin's end half-closes the connection, the remote's end closes
//! stdout; a process that serves only the STDIO stream exits 0 once both
//! directions have ended, one with other sections keeps serving them; ssh
//! works with underpass as its ProxyCommand.

// libc calls, each with its SAFETY comment.
#![allow(unsafe_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use underpass_tests::http_server::HttpServer;
use underpass_tests::{
    binary, curl, curl_text, free_port, keys, start_gateway, Keys, Pair, PairOptions, Scratch,
    CLIENT_IP,
};

/// A server on loopback that answers each connection's first line with
/// `reply: LINE` and closes the connection.
fn reply_once_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { continue };
            std::thread::spawn(move || {
                let mut line = String::new();
                let mut reader = BufReader::new(&conn);
                if reader.read_line(&mut line).is_ok() {
                    let _ = (&conn).write_all(format!("reply: {line}").as_bytes());
                }
                // Dropped: the server closes its socket for good.
            });
        }
    });
    addr
}

/// A client config with only a `[STDIOTunnel]` to `target`, for a
/// gateway on `gateway_port`.
fn stdio_config(
    scratch: &Scratch,
    client: &Keys,
    gateway: &Keys,
    port: u16,
    target: &str,
) -> PathBuf {
    scratch.write(
        "stdio.conf",
        &format!(
            "[Interface]\nPrivateKey = {}\nAddress = {CLIENT_IP}/32\n\n\
             [Peer]\nPublicKey = {}\nEndpoint = 127.0.0.1:{port}\nAllowedIPs = 0.0.0.0/0\n\n\
             [STDIOTunnel]\nTarget = {target}\n",
            client.private, gateway.public
        ),
    )
}

/// The client on `config` with stdin and stdout piped and stderr in
/// `client.log` (returned, for failure messages); `RUST_LOG` when given.
fn spawn_client(
    scratch: &Scratch,
    config: &std::path::Path,
    rust_log: Option<&str>,
) -> (std::process::Child, std::path::PathBuf) {
    let log = scratch.path("client.log");
    let mut command = Command::new(binary());
    command
        .args(["--config", config.to_str().unwrap()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap());
    if let Some(level) = rust_log {
        command.env("RUST_LOG", level);
    }
    (command.spawn().unwrap(), log)
}

/// Reads `from` to its end on a thread; the receiver gets the bytes.
fn read_to_end(mut from: impl Read + Send + 'static) -> mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = from.read_to_end(&mut bytes);
        let _ = tx.send(bytes);
    });
    rx
}

/// Waits (bounded) for `child` to exit; fails with its log otherwise.
fn exit_within(child: &mut Child, limit: Duration, log: &Path) -> std::process::ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "underpass did not exit within {limit:?}:\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_stdio_only_config_closes_stdout_at_the_remotes_end_and_exits_0_after_stdin_ends() {
    let scratch = Scratch::new("stdio-only");
    let server = reply_once_server();
    let client = keys();
    let (_gateway, port, gateway) = start_gateway(&scratch, &client.public, "", None);
    let config = stdio_config(&scratch, &client, &gateway, port, &server.to_string());
    let (mut child, log) = spawn_client(&scratch, &config, Some("debug"));
    let mut stdin = child.stdin.take().unwrap();
    let stdout = read_to_end(child.stdout.take().unwrap());
    stdin.write_all(b"hello through the tunnel\n").unwrap();
    // stdin stays open: stdout must still end when the server closes.
    let got = stdout
        .recv_timeout(Duration::from_secs(20))
        .unwrap_or_else(|_| {
            panic!(
                "stdout did not end after the server closed:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            )
        });
    assert_eq!(
        String::from_utf8_lossy(&got),
        "reply: hello through the tunnel\n"
    );
    drop(stdin);
    let status = exit_within(&mut child, Duration::from_secs(10), &log);
    assert!(
        status.success(),
        "exit status {status}:\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
}

#[test]
fn a_stdio_only_config_exits_1_and_closes_stdout_when_the_target_cannot_be_reached() {
    let scratch = Scratch::new("stdio-refused");
    // A port nothing listens on: the gateway's connect is refused.
    let closed = free_port();
    let client = keys();
    let (_gateway, port, gateway) = start_gateway(&scratch, &client.public, "", None);
    let config = stdio_config(
        &scratch,
        &client,
        &gateway,
        port,
        &format!("127.0.0.1:{closed}"),
    );
    let (mut child, log) = spawn_client(&scratch, &config, None);
    // stdin stays open: the refusal alone must end the process.
    let stdin = child.stdin.take().unwrap();
    let stdout = read_to_end(child.stdout.take().unwrap());
    let status = exit_within(&mut child, Duration::from_secs(20), &log);
    let log_text = std::fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(status.code(), Some(1), "{log_text}");
    assert!(log_text.contains("STDIOTunnel: cannot reach"), "{log_text}");
    assert!(stdout
        .recv_timeout(Duration::from_secs(5))
        .unwrap()
        .is_empty());
    drop(stdin);
}

#[test]
fn stdin_at_its_end_ends_only_the_stdio_stream_and_the_socks_proxy_goes_on_serving() {
    let server = reply_once_server();
    let web = HttpServer::start();
    // The client's stdin is /dev/null: it ends at once.
    let mut pair = Pair::start(
        "stdio-and-socks",
        PairOptions {
            extra_client: format!("\n[STDIOTunnel]\nTarget = {server}\n"),
            ..Default::default()
        },
    );
    pair.client
        .wait_for_log("the STDIO stream ended", Duration::from_secs(20));
    let body = curl_text(&curl(&[
        "--socks5-hostname",
        &pair.socks.to_string(),
        &web.url("/hello"),
    ]));
    assert_eq!(body, "hello underpass\n");
    assert!(
        pair.client.is_running(),
        "the client exited:\n{}",
        pair.client.log()
    );
}

#[test]
fn with_a_socks_section_the_remotes_end_closes_stdout_and_the_proxy_goes_on_serving() {
    let scratch = Scratch::new("stdio-stdout-socks");
    let server = reply_once_server();
    let web = HttpServer::start();
    let client = keys();
    let (_gateway, port, gateway) = start_gateway(&scratch, &client.public, "", None);
    let socks = format!("127.0.0.1:{}", free_port());
    let config = scratch.write(
        "client.conf",
        &format!(
            "[Interface]\nPrivateKey = {}\nAddress = {CLIENT_IP}/32\n\n\
             [Peer]\nPublicKey = {}\nEndpoint = 127.0.0.1:{port}\nAllowedIPs = 0.0.0.0/0\n\n\
             [Socks5]\nBindAddress = {socks}\n\n[STDIOTunnel]\nTarget = {server}\n",
            client.private, gateway.public
        ),
    );
    let (mut child, log) = spawn_client(&scratch, &config, None);
    let mut stdin = child.stdin.take().unwrap();
    let stdout = read_to_end(child.stdout.take().unwrap());
    stdin.write_all(b"ping\n").unwrap();
    let got = stdout
        .recv_timeout(Duration::from_secs(20))
        .unwrap_or_else(|_| {
            let _ = child.kill();
            panic!(
                "stdout did not end after the server closed:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            )
        });
    assert_eq!(String::from_utf8_lossy(&got), "reply: ping\n");
    drop(stdin);
    let body = curl_text(&curl(&["--socks5-hostname", &socks, &web.url("/hello")]));
    assert_eq!(body, "hello underpass\n");
    assert!(
        child.try_wait().unwrap().is_none(),
        "the client exited:\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    let _ = child.kill();
    let _ = child.wait();
}

/// sshd on a free loopback port, as this user, with a fresh host key and
/// a client key it accepts; `None` with the reason when it cannot run.
struct Sshd {
    child: Child,
    port: u16,
    client_key: PathBuf,
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_sshd(scratch: &Scratch) -> Result<Sshd, String> {
    let sshd = ["/usr/sbin/sshd", "/usr/bin/sshd"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .ok_or("no sshd (Debian package openssh-server)")?;
    if Command::new("ssh").arg("-V").output().is_err() {
        return Err("no ssh client (Debian package openssh-client)".into());
    }
    for (name, kind) in [("host_key", "ed25519"), ("client_key", "ed25519")] {
        let out = Command::new("ssh-keygen")
            .args(["-q", "-t", kind, "-N", "", "-f"])
            .arg(scratch.path(name))
            .output()
            .map_err(|e| format!("ssh-keygen: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "ssh-keygen: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
    }
    // sshd started as root wants its privilege separation directory,
    // which the package's service creates at boot; as any other user it
    // runs without.
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 && !Path::new("/run/sshd").exists() {
        std::fs::create_dir_all("/run/sshd").map_err(|e| format!("/run/sshd: {e}"))?;
    }
    std::fs::copy(
        scratch.path("client_key.pub"),
        scratch.path("authorized_keys"),
    )
    .unwrap();
    let port = underpass_tests::free_port();
    let config = scratch.write(
        "sshd_config",
        &format!(
            "Port {port}\nListenAddress 127.0.0.1\nHostKey {}\nAuthorizedKeysFile {}\n\
             PidFile {}\nStrictModes no\nUsePAM no\nPasswordAuthentication no\n\
             KbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\n",
            scratch.path("host_key").display(),
            scratch.path("authorized_keys").display(),
            scratch.path("sshd.pid").display(),
        ),
    );
    let log = scratch.path("sshd.log");
    let mut child = Command::new(sshd)
        .args(["-D", "-e", "-f"])
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .map_err(|e| format!("starting sshd: {e}"))?;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!(
                "sshd exited ({status}): {}",
                std::fs::read_to_string(&log).unwrap_or_default().trim()
            ));
        }
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            return Err("sshd did not listen within 10 s".into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(Sshd {
        child,
        port,
        client_key: scratch.path("client_key"),
    })
}

#[test]
fn ssh_works_with_underpass_as_its_proxy_command_and_does_not_hang() {
    let scratch = Scratch::new("stdio-ssh");
    let sshd = match start_sshd(&scratch) {
        Ok(s) => s,
        Err(why) => {
            eprintln!("skipped: cannot run sshd without help here: {why}");
            return;
        }
    };
    let client = keys();
    let (_gateway, port, gateway) = start_gateway(&scratch, &client.public, "", None);
    let config = stdio_config(
        &scratch,
        &client,
        &gateway,
        port,
        &format!("127.0.0.1:{}", sshd.port),
    );
    let user = std::env::var("USER")
        .ok()
        .or_else(|| {
            let out = Command::new("id").arg("-un").output().ok()?;
            Some(String::from_utf8_lossy(&out.stdout).trim().to_string())
        })
        .unwrap();
    let proxy = format!(
        "ProxyCommand={} --config {}",
        binary().display(),
        config.display()
    );
    // 256 KiB up through ssh and back: bytes intact both ways, then ssh
    // must finish (stdin's end, the remote's close) well within the limit.
    let input: Vec<u8> = (0..256 * 1024u32).map(|i| (i * 7 % 251) as u8).collect();
    let mut ssh = Command::new("ssh")
        .args(["-F", "/dev/null", "-i"])
        .arg(&sshd.client_key)
        .args([
            "-o",
            "BatchMode=yes",
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "LogLevel=ERROR",
            "-o",
            &proxy,
            "-p",
            &sshd.port.to_string(),
            &format!("{user}@tunnel-host"),
            "cat",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("ssh");
    let mut stdin = ssh.stdin.take().unwrap();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
        input
    });
    let stdout = read_to_end(ssh.stdout.take().unwrap());
    let stderr = read_to_end(ssh.stderr.take().unwrap());
    let status = exit_within(&mut ssh, Duration::from_secs(30), &scratch.path("sshd.log"));
    let input = writer.join().unwrap();
    let got = stdout.recv_timeout(Duration::from_secs(5)).unwrap();
    let err = stderr.recv_timeout(Duration::from_secs(5)).unwrap();
    assert!(
        status.success(),
        "ssh: {status}: {}",
        String::from_utf8_lossy(&err)
    );
    assert_eq!(got.len(), input.len(), "bytes back through ssh");
    assert!(got == input, "the bytes came back changed");
}
