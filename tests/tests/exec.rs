//! `underpass exec` and `underpass up --wait` as a CI job uses them: the
//! client runs as a user without root (see `underpass_tests::unprivileged`)
//! and reaches a server that stands for the private network behind a
//! gateway. The server listens on 127.0.0.3, which is not in the NO_PROXY
//! list exec sets, so the tools send it through the proxies; the gateway's
//! metrics prove the bytes crossed the tunnel.

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use underpass_tests::http_server::HttpServer;
use underpass_tests::{
    content, free_port, keys, metric, output_within, start_gateway_with, unprivileged, Checksum,
    Keys, Process, Scratch, CLIENT_IP, GATEWAY_IP,
};

const SENT_BYTES: &str = "underpass_udp_sent_bytes_total";

/// A gateway with metrics, the private server behind it and the keys a
/// client needs.
struct Site {
    scratch: Scratch,
    _gateway: Process,
    gateway_port: u16,
    gateway_keys: Keys,
    client_keys: Keys,
    metrics: SocketAddr,
    server: HttpServer,
}

impl Site {
    fn start(name: &str) -> Site {
        let scratch = Scratch::new(name);
        std::fs::set_permissions(&scratch.0, std::fs::Permissions::from_mode(0o755)).unwrap();
        let client_keys = keys();
        let metrics = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let (gateway, gateway_port, gateway_keys) = start_gateway_with(
            &scratch,
            &client_keys.public,
            "",
            None,
            &["--metrics", &metrics.to_string()],
            None,
        );
        let server = HttpServer::start_on("127.0.0.3:0".parse().unwrap());
        Site {
            scratch,
            _gateway: gateway,
            gateway_port,
            gateway_keys,
            client_keys,
            metrics,
            server,
        }
    }

    /// A client config for this site; `peer_key` replaces the gateway's
    /// public key (to make a wrong one).
    fn client_config(&self, peer_key: Option<&str>, extra: &str) -> String {
        format!(
            "[Interface]\nPrivateKey = {}\nAddress = {CLIENT_IP}/32\nDNS = {GATEWAY_IP}\n\n\
             [Peer]\nPublicKey = {}\nEndpoint = 127.0.0.1:{}\nAllowedIPs = 0.0.0.0/0\n{extra}",
            self.client_keys.private,
            peer_key.unwrap_or(&self.gateway_keys.public),
            self.gateway_port,
        )
    }

    /// The config written where the unprivileged user can read it.
    fn write_config(&self, name: &str, text: &str) -> PathBuf {
        let path = self.scratch.write(name, text);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        path
    }
}

fn exec(args: &[&str], env: &[(&str, &str)], limit: Duration) -> Output {
    let mut command = unprivileged::get().command(&[&["exec"], args].concat());
    command.env_remove("RUST_LOG");
    for (k, v) in env {
        command.env(k, v);
    }
    output_within(command, limit)
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn exec_runs_curl_through_the_tunnel_as_an_unprivileged_user() {
    let site = Site::start("exec-curl");
    let config = site.write_config("client.conf", &site.client_config(None, ""));
    let len = 300_000;
    let url = site.server.url(&format!("/bytes/{len}?seed=81"));
    let before = metric(site.metrics, SENT_BYTES);
    // Once through HTTP_PROXY (curl's default for http://), once through
    // ALL_PROXY given explicitly: both proxies, both with credentials.
    let script = r#"curl -sSf --max-time 60 "$1" && curl -sSf --max-time 60 -x "$ALL_PROXY" "$1""#;
    let out = exec(
        &[
            "--config",
            config.to_str().unwrap(),
            "--",
            "sh",
            "-c",
            script,
            "sh",
            &url,
        ],
        &[],
        Duration::from_secs(90),
    );
    assert!(
        out.status.success(),
        "exec failed ({}): {}",
        out.status,
        stderr(&out)
    );
    let expected = content(81, len);
    assert_eq!(out.stdout.len(), 2 * len, "two copies of the file");
    assert_eq!(
        Checksum::of(&out.stdout[..len]),
        Checksum::of(&expected),
        "via HTTP_PROXY"
    );
    assert_eq!(
        Checksum::of(&out.stdout[len..]),
        Checksum::of(&expected),
        "via ALL_PROXY"
    );
    let carried = metric(site.metrics, SENT_BYTES) - before;
    assert!(
        carried >= 2 * len as u64,
        "the gateway sent only {carried} bytes: the downloads did not go through the tunnel"
    );
    assert!(
        !stderr(&out).contains(&site.client_keys.private),
        "the private key appeared on stderr"
    );
}

#[test]
fn exec_passes_the_command_status_through() {
    let site = Site::start("exec-status");
    let config = site.write_config("client.conf", &site.client_config(None, ""));
    let config = config.to_str().unwrap();
    let limit = Duration::from_secs(60);
    let out = exec(
        &["--config", config, "--", "sh", "-c", "exit 7"],
        &[],
        limit,
    );
    assert_eq!(out.status.code(), Some(7), "{}", stderr(&out));
    let out = exec(
        &["--config", config, "--", "sh", "-c", "kill -TERM $$"],
        &[],
        limit,
    );
    assert_eq!(
        out.status.code(),
        Some(128 + 15),
        "killed by SIGTERM: {}",
        stderr(&out)
    );
    let out = exec(
        &["--config", config, "--", "no-such-command-here"],
        &[],
        limit,
    );
    assert_eq!(out.status.code(), Some(127), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("cannot run no-such-command-here"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn exec_with_a_wrong_peer_key_fails_within_the_bound_and_runs_nothing() {
    let site = Site::start("exec-wrong-key");
    let wrong = keys().public;
    let config = site.write_config("client.conf", &site.client_config(Some(&wrong), ""));
    let marker = site.scratch.path("ran");
    let started = Instant::now();
    let out = exec(
        &[
            "--config",
            config.to_str().unwrap(),
            "--handshake-timeout",
            "2",
            "--",
            "touch",
            marker.to_str().unwrap(),
        ],
        &[],
        Duration::from_secs(30),
    );
    let took = started.elapsed();
    let text = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    let expected = format!(
        "no handshake with {wrong} at 127.0.0.1:{} after 2 s",
        site.gateway_port
    );
    assert!(
        text.contains(&expected),
        "expected {expected:?} in:\n{text}"
    );
    assert!(
        took < Duration::from_secs(10),
        "gave up only after {took:?}"
    );
    assert!(!marker.exists(), "the command ran without a tunnel");
    assert!(
        !text.contains(&site.client_keys.private),
        "the private key appeared: {text}"
    );
}

#[test]
fn exec_takes_the_config_from_the_environment() {
    let site = Site::start("exec-env");
    let url = site.server.url("/hello");
    let out = exec(
        &["--", "curl", "-sSf", "--max-time", "30", &url],
        &[("UNDERPASS_CONFIG", &site.client_config(None, ""))],
        Duration::from_secs(60),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello underpass\n");

    // A CI secret that is not defined arrives as an empty variable.
    let out = exec(
        &["--", "true"],
        &[("UNDERPASS_CONFIG", "")],
        Duration::from_secs(30),
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("UNDERPASS_CONFIG is set but empty"),
        "{}",
        stderr(&out)
    );

    // A broken config names the line, never the secret on it.
    let broken = site.client_config(None, "").replace(
        "AllowedIPs = 0.0.0.0/0",
        "AllowedIPs = 0.0.0.0/0\nPrivateKey = x",
    );
    let out = exec(
        &["--", "true"],
        &[("UNDERPASS_CONFIG", &broken)],
        Duration::from_secs(30),
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("UNDERPASS_CONFIG:"),
        "{}",
        stderr(&out)
    );
    assert!(
        !stderr(&out).contains(&site.client_keys.private),
        "{}",
        stderr(&out)
    );
}

#[test]
fn exec_serves_the_config_forwards_to_a_plain_client() {
    let site = Site::start("exec-forward");
    let port = free_port();
    let forward = format!(
        "\n[TCPClientTunnel]\nBindAddress = 127.0.0.1:{port}\nTarget = {}\n",
        site.server.addr
    );
    let config = site.write_config("client.conf", &site.client_config(None, &forward));
    let len = 100_000;
    // nc knows nothing of proxies: it talks HTTP/1.0 to the forward's port.
    let script = format!(
        "printf 'GET /bytes/{len}?seed=82 HTTP/1.0\\r\\nHost: x\\r\\n\\r\\n' | nc -N 127.0.0.1 {port}"
    );
    let out = exec(
        &[
            "--config",
            config.to_str().unwrap(),
            "--",
            "sh",
            "-c",
            &script,
        ],
        &[],
        Duration::from_secs(60),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let split = out
        .stdout
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| {
            panic!(
                "no HTTP response: {:?}",
                String::from_utf8_lossy(&out.stdout)
            )
        });
    let body = &out.stdout[split + 4..];
    assert_eq!(body.len(), len, "body length");
    assert_eq!(Checksum::of(body), Checksum::of(&content(82, len)));
}

#[test]
fn exec_passes_signals_to_the_command() {
    let site = Site::start("exec-signal");
    let config = site.write_config("client.conf", &site.client_config(None, ""));
    let script = "trap 'exit 42' TERM; echo started; while :; do sleep 0.05; done";
    let mut child = unprivileged::get()
        .command(&[
            "exec",
            "--config",
            config.to_str().unwrap(),
            "--",
            "sh",
            "-c",
            script,
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line, "started\n", "the command did not start");
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "exec did not exit after SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(42), "the command's trap did not run");
}

#[test]
fn up_wait_prints_the_listeners_once_the_peer_answers() {
    let site = Site::start("up-wait");
    let socks = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let text = site.client_config(None, &format!("\n[Socks5]\nBindAddress = {socks}\n"));
    let mut child = unprivileged::get()
        .command(&["up", "--config", "-", "--wait"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let mut lines = Vec::new();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    loop {
        let mut line = String::new();
        if out.read_line(&mut line).unwrap() == 0 {
            let _ = child.kill();
            panic!("stdout ended before `ready`: {lines:?}");
        }
        if line == "ready\n" {
            break;
        }
        lines.push(line);
    }
    assert_eq!(lines, vec![format!("socks5 {socks}\n")]);
    let url = site.server.url("/hello");
    let got = underpass_tests::curl(&["--socks5-hostname", &socks.to_string(), &url]);
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(underpass_tests::curl_text(&got), "hello underpass\n");

    // With no answer it fails fast, saying whom it waited for.
    let wrong = keys().public;
    let config = site.write_config("wrong.conf", &site.client_config(Some(&wrong), ""));
    let command = unprivileged::get().command(&[
        "up",
        "--config",
        config.to_str().unwrap(),
        "--wait",
        "--handshake-timeout",
        "1",
    ]);
    let out = output_within(command, Duration::from_secs(20));
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        out.stdout.is_empty(),
        "printed listeners without a handshake"
    );
    assert!(
        stderr(&out).contains(&format!("no handshake with {wrong}")),
        "{}",
        stderr(&out)
    );
}

#[test]
fn exec_keeps_the_config_and_its_secrets_from_the_command() {
    let site = Site::start("exec-env-secrets");
    let text = site.client_config(None, "");
    let key = site.client_keys.private.clone();
    // The command prints its environment; it still gets the proxies and
    // the variables that are not secrets.
    let env_of = |out: &Output| {
        assert!(out.status.success(), "{}", stderr(out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let names = |env: &str| -> Vec<String> {
        env.lines()
            .filter_map(|l| l.split_once('=').map(|(k, _)| k.to_string()))
            .collect()
    };

    // The whole config in UNDERPASS_CONFIG.
    let env = env_of(&exec(
        &["--", "env"],
        &[("UNDERPASS_CONFIG", &text), ("UNRELATED", "kept")],
        Duration::from_secs(60),
    ));
    assert!(names(&env).iter().any(|n| n == "ALL_PROXY"), "{env}");
    // Node.js reads the proxy variables only when told to.
    assert!(
        env.lines().any(|l| l == "NODE_USE_ENV_PROXY=1"),
        "NODE_USE_ENV_PROXY=1 missing: {env}"
    );
    assert!(env.contains("UNRELATED=kept"), "{env}");
    assert!(
        !names(&env).iter().any(|n| n == "UNDERPASS_CONFIG"),
        "the command got UNDERPASS_CONFIG"
    );
    assert!(!env.contains(&key), "the private key reached the command");

    // Its path in UNDERPASS_CONFIG_FILE, the key in a variable it names.
    let by_name = text.replace(&key, "$WG_TEST_PRIVATE_KEY");
    let config = site.write_config("by-name.conf", &by_name);
    let env = env_of(&exec(
        &["--", "env"],
        &[
            ("UNDERPASS_CONFIG_FILE", config.to_str().unwrap()),
            ("WG_TEST_PRIVATE_KEY", &key),
            ("UNRELATED", "kept"),
        ],
        Duration::from_secs(60),
    ));
    assert!(env.contains("UNRELATED=kept"), "{env}");
    for withheld in ["UNDERPASS_CONFIG_FILE", "WG_TEST_PRIVATE_KEY"] {
        assert!(
            !names(&env).iter().any(|n| n == withheld),
            "the command got {withheld}"
        );
    }
    assert!(!env.contains(&key), "the private key reached the command");
}
