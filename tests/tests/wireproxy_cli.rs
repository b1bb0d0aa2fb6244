//! wireproxy's command line and its config's finer points, with the real
//! binary: the shipped systemd unit's command pair (`-n -c FILE`, then
//! `-c FILE`), `-i` with `/readyz` and `CheckAlive`, `-d`, `-v`, the
//! default config files, and a gateway refusing client sections.

// libc calls, each with its SAFETY comment.
#![allow(unsafe_code)]

use std::net::{SocketAddr, UdpSocket};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use underpass_tests::http_server::HttpServer;
use underpass_tests::*;

/// The status and body of a GET.
fn get(url: &str) -> (u16, String) {
    let out = curl(&["-w", "\n%{http_code}", url]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, status) = text.rsplit_once('\n').unwrap_or(("", ""));
    let status = status.trim().parse().unwrap_or_else(|_| {
        panic!(
            "no answer from {url}: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (status, body.to_string())
}

/// Polls `url` until it answers `status`, for at most `limit`.
fn wait_status(url: &str, status: u16, limit: Duration) -> String {
    let deadline = Instant::now() + limit;
    loop {
        let (got, body) = get(url);
        if got == status {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "{url} still answers {got} ({body}) after {limit:?}, expected {status}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A wireproxy config for a client of `gateway` using what wireproxy
/// allows and underpass used to refuse or read otherwise: a peer without
/// AllowedIPs, `BindAddress = :PORT`, `$$`, a backquoted `#`, a glued `#`
/// comment, `[Resolve]`, `CheckAlive`, `InactivityTimeout = 0`.
fn wireproxy_config(
    keys: &Keys,
    gateway: &Keys,
    port: u16,
    socks_port: u16,
    udp_port: u16,
) -> String {
    format!(
        "# wireproxy.conf\n\
         [Interface]\nPrivateKey = {}\nAddress = {CLIENT_IP}/32\nDNS = {GATEWAY_IP}\n\
         CheckAlive = {GATEWAY_IP}\nCheckAliveInterval = 1\n\n\
         [Peer]\nPublicKey = {}\nEndpoint = 127.0.0.1:{port}\n\n\
         [Socks5]\nBindAddress = :{socks_port}\nUsername = $$user\nPassword = `pa#ss`\n\n\
         [UDPProxyTunnel]\nBindAddress = 127.0.0.1:{udp_port}\nTarget = {GATEWAY_IP}:53\nInactivityTimeout = 0 # never\n\n\
         [Resolve]\nResolveStrategy = ipv4\n",
        keys.private, gateway.public,
    )
}

#[test]
fn the_systemd_units_command_pair_runs_a_wireproxy_config() {
    let scratch = Scratch::new("wireproxy-unit");
    let c = keys();
    let (_gateway, port, g) = start_gateway(&scratch, &c.public, "", None);
    let socks_port = free_port();
    // systemd's LoadCredential= hands the service a file only it may read.
    let config = scratch.write(
        "conf",
        &wireproxy_config(&c, &g, port, socks_port, free_port()),
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o400)).unwrap();
    }
    let file = config.to_str().unwrap();

    // ExecStartPre=underpass -n -c FILE
    let check = run(&["-n", "-c", file]);
    let stderr = String::from_utf8_lossy(&check.stderr);
    assert!(check.status.success(), "-n failed: {stderr}");
    assert_eq!(String::from_utf8_lossy(&check.stdout), "config OK\n");
    assert!(
        stderr.contains("[Peer] has no AllowedIPs: all traffic goes to it (0.0.0.0/0, ::/0)"),
        "-n says nothing of the missing AllowedIPs: {stderr}"
    );

    // ExecStart=underpass -c FILE (with -i, wireproxy's health address)
    let info = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let mut client = Process::start("client", &scratch, &["-c", file, "-i", &info.to_string()]);
    client.wait_for_log("handshake completed", Duration::from_secs(20));
    let socks = SocketAddr::from(([127, 0, 0, 1], socks_port));
    wait_tcp(socks, Duration::from_secs(10));
    let server = HttpServer::start();
    // `$$user` is the user `$user`; the backquoted password keeps its `#`.
    let out = curl(&[
        "--socks5-hostname",
        &socks.to_string(),
        "--proxy-user",
        "$user:pa#ss",
        &server.url("/hello"),
    ]);
    assert_eq!(curl_text(&out), "hello underpass\n");
    // `:PORT` listens on every address, IPv6 too where the host has it.
    if std::net::TcpListener::bind("[::1]:0").is_ok() {
        wait_tcp(
            SocketAddr::from(([0, 0, 0, 0, 0, 0, 0, 1], socks_port)),
            Duration::from_secs(5),
        );
    }
    // CheckAlive pings the gateway's tunnel address, which answers.
    let body = wait_status(
        &format!("http://{info}/readyz"),
        200,
        Duration::from_secs(10),
    );
    assert!(body.starts_with(&format!("{{\"{GATEWAY_IP}\":")), "{body}");
    let (status, metrics) = get(&format!("http://{info}/metrics"));
    assert_eq!(status, 200);
    assert!(metrics.contains("underpass_handshakes_total"), "{metrics}");
}

#[test]
fn readyz_fails_while_a_check_alive_target_does_not_answer() {
    let scratch = Scratch::new("wireproxy-readyz");
    let c = keys();
    let (mut gateway, port, g) = start_gateway(&scratch, &c.public, "", None);
    let info = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let readyz = format!("http://{info}/readyz");
    let config = scratch.write(
        "client.conf",
        &wireproxy_config(&c, &g, port, free_port(), free_port()),
    );
    let mut client = Process::start(
        "client",
        &scratch,
        &["-c", config.to_str().unwrap(), "-i", &info.to_string()],
    );
    client.wait_for_log("handshake completed", Duration::from_secs(20));
    wait_status(&readyz, 200, Duration::from_secs(10));
    // The gateway goes away: within the interval (1 s) and wireproxy's
    // 2 s of leeway, /readyz fails.
    let gone = Instant::now();
    assert!(gateway.terminate().success());
    let body = wait_status(&readyz, 503, Duration::from_secs(10));
    assert!(body.contains(GATEWAY_IP), "{body}");
    println!(
        "/readyz failed {:.1} s after the gateway stopped",
        gone.elapsed().as_secs_f64()
    );
    assert!(
        gone.elapsed() >= Duration::from_secs(2),
        "failed before the interval and leeway ran out"
    );
    drop(client);

    // A target nobody answers for (the gateway answers for its own
    // address only): never ready, and shown as never answered.
    let (_gateway, port, g) = start_gateway(&scratch, &c.public, "", None);
    let text = wireproxy_config(&c, &g, port, free_port(), free_port()).replace(
        &format!("CheckAlive = {GATEWAY_IP}\n"),
        &format!("CheckAlive = {GATEWAY_IP}, 10.50.0.99\n"),
    );
    let config = scratch.write("client2.conf", &text);
    let info = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let mut client = Process::start(
        "client2",
        &scratch,
        &["-c", config.to_str().unwrap(), "--info", &info.to_string()],
    );
    client.wait_for_log("handshake completed", Duration::from_secs(20));
    let readyz = format!("http://{info}/readyz");
    let deadline = Instant::now() + Duration::from_secs(10);
    let body = loop {
        let (status, body) = get(&readyz);
        assert_eq!(status, 503, "{body}");
        if !body.contains(&format!("\"{GATEWAY_IP}\":0")) {
            break body;
        }
        assert!(
            Instant::now() < deadline,
            "the gateway never answered: {body}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(body.contains("\"10.50.0.99\":0"), "{body}");
}

#[test]
fn readyz_without_check_alive_says_whether_the_peer_answered() {
    let info = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let mut pair = Pair::start(
        "wireproxy-readyz-plain",
        PairOptions {
            client_args: vec!["-i".into(), info.to_string()],
            ..Default::default()
        },
    );
    assert_eq!(
        get(&format!("http://{info}/readyz")),
        (200, "{}\n".to_string())
    );
    assert!(pair.gateway.terminate().success());
}

#[test]
fn daemon_returns_once_listening_or_with_the_error() {
    let scratch = Scratch::new("wireproxy-daemon");
    let c = keys();
    let (_gateway, port, g) = start_gateway(&scratch, &c.public, "", None);
    let socks_port = free_port();
    let config = scratch.write(
        "client.conf",
        &wireproxy_config(&c, &g, port, socks_port, free_port()),
    );
    let file = config.to_str().unwrap();
    let out = output_within(
        {
            let mut c = Command::new(binary());
            c.args(["-d", "-c", file]);
            c
        },
        Duration::from_secs(20),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let pid: i32 = stderr
        .lines()
        .find_map(|l| l.strip_prefix("underpass: running in the background as process "))
        .and_then(|p| p.trim().parse().ok())
        .unwrap_or_else(|| panic!("no process id in: {stderr}"));
    struct Kill(i32);
    impl Drop for Kill {
        fn drop(&mut self) {
            // SAFETY: signals the daemon this test started.
            unsafe { libc::kill(self.0, libc::SIGTERM) };
        }
    }
    let _daemon = Kill(pid);
    // It returned after binding: the proxy is there at once.
    std::net::TcpStream::connect(("127.0.0.1", socks_port)).expect("the daemon listens");

    // A second one cannot bind the same port: the command says so and
    // fails, though the error happened in the background process.
    let out = output_within(
        {
            let mut c = Command::new(binary());
            c.args(["--daemon", "--config", file]).stdout(Stdio::null());
            c
        },
        Duration::from_secs(20),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("cannot listen for SOCKS5 on [::]:{socks_port}")),
        "{stderr}"
    );
}

#[test]
fn version_configtest_and_default_config_files() {
    for flag in ["-v", "-V", "--version"] {
        let out = run(&[flag]);
        assert!(out.status.success());
        assert!(String::from_utf8_lossy(&out.stdout).starts_with("underpass "));
    }
    let scratch = Scratch::new("wireproxy-defaults");
    let c = keys();
    let g = keys();
    let text = wireproxy_config(&c, &g, 51820, free_port(), free_port());
    let config = scratch.write(
        "bad.conf",
        &text.replace("ResolveStrategy = ipv4", "ResolveStrategy = ipv5"),
    );
    let out = run(&["--configtest", "-c", config.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("bad.conf:") && stderr.contains("ResolveStrategy: `ipv5`"),
        "{stderr}"
    );

    // Without -c or UNDERPASS_CONFIG: wireproxy's files, /etc's first.
    if std::path::Path::new("/etc/wireproxy/wireproxy.conf").exists() {
        return;
    }
    let home = scratch.path("home");
    std::fs::create_dir_all(home.join(".config")).unwrap();
    let mut cmd = Command::new(binary());
    cmd.arg("-n")
        .env("HOME", &home)
        .env_remove("UNDERPASS_CONFIG")
        .env_remove("UNDERPASS_CONFIG_FILE");
    let out = output_within(cmd, Duration::from_secs(10));
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("~/.config/wireproxy.conf"));
    std::fs::write(home.join(".config/wireproxy.conf"), &text).unwrap();
    let mut cmd = Command::new(binary());
    cmd.arg("-n")
        .env("HOME", &home)
        .env_remove("UNDERPASS_CONFIG")
        .env_remove("UNDERPASS_CONFIG_FILE");
    let out = output_within(cmd, Duration::from_secs(10));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains(".config/wireproxy.conf"));
}

#[test]
fn a_gateway_refuses_client_sections_and_warns_of_client_settings() {
    let scratch = Scratch::new("wireproxy-gateway-check");
    let (g, c) = (keys(), keys());
    let base = format!(
        "[Interface]\nPrivateKey = {}\nAddress = {GATEWAY_IP}/32\nListenPort = 51820\n\n\
         [Peer]\nPublicKey = {}\nAllowedIPs = {CLIENT_IP}/32\n",
        g.private, c.public
    );
    for section in [
        "[Socks5]\nBindAddress = 127.0.0.1:1080",
        "[TCPClientTunnel]\nBindAddress = 127.0.0.1:1\nTarget = a:1",
        "[STDIOTunnel]\nTarget = a:22",
    ] {
        let config = scratch.write("gateway.conf", &format!("{base}\n{section}\n"));
        let out = run(&["gateway", "--check", "--config", config.to_str().unwrap()]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{section}: {stderr}");
        assert!(
            stderr.contains("gateway.conf:10: [") && stderr.contains("is a client's section"),
            "{stderr}"
        );
    }
    let config = scratch.write(
        "gateway.conf",
        &format!(
            "{}\n[Resolve]\nResolveStrategy = ipv6\n",
            base.replace("ListenPort", "CheckAlive = 10.0.0.9\nListenPort")
        ),
    );
    let out = run(&["gateway", "--check", "--config", config.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("[Resolve] is for a client")
            && stderr.contains("CheckAlive is for a client"),
        "{stderr}"
    );
}

#[test]
fn a_udp_proxy_tunnel_that_never_times_out_still_answers() {
    // InactivityTimeout = 0: the DNS forward keeps its client.
    let scratch = Scratch::new("wireproxy-udp");
    let c = keys();
    let (_gateway, port, g) = start_gateway(&scratch, &c.public, "", None);
    let udp_port = free_port();
    let text = wireproxy_config(&c, &g, port, free_port(), udp_port);
    let config = scratch.write("client.conf", &text);
    let mut client = Process::start("client", &scratch, &["-c", config.to_str().unwrap()]);
    client.wait_for_log("handshake completed", Duration::from_secs(20));
    let out = Command::new("dig")
        .args([
            "+short",
            "+time=5",
            "+tries=2",
            "-p",
            &udp_port.to_string(),
            "@127.0.0.1",
            "localhost",
            "A",
        ])
        .output();
    let Ok(out) = out else {
        // dig is not installed: ask with a hand-made query instead.
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let query =
            b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x09localhost\x00\x00\x01\x00\x01";
        socket.send_to(query, ("127.0.0.1", udp_port)).unwrap();
        let mut buf = [0u8; 512];
        let (n, _) = socket
            .recv_from(&mut buf)
            .expect("an answer through the UDPProxyTunnel");
        assert!(n > 12 && buf[..2] == [0x12, 0x34]);
        return;
    };
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "127.0.0.1");
}

#[test]
fn a_dns_line_of_search_domains_is_warned_about_as_such_and_only_without_a_server() {
    let scratch = Scratch::new("wireproxy-dns-search");
    let (c, g) = (keys(), keys());
    let config = |dns: &str| {
        format!(
            "[Interface]\nPrivateKey = {}\nAddress = {CLIENT_IP}/32\nDNS = {dns}\n\n\
             [Peer]\nPublicKey = {}\nEndpoint = 127.0.0.1:9\n\n\
             [Socks5]\nBindAddress = 127.0.0.1:{}\n",
            c.private,
            g.public,
            free_port()
        )
    };
    let search_only = scratch.write("search.conf", &config("corp.example"));
    let mut client = Process::start("search", &scratch, &["-c", search_only.to_str().unwrap()]);
    client.wait_for_log(
        "DNS = names search domains (corp.example) but no server address",
        Duration::from_secs(10),
    );
    assert!(!client.log().contains("no DNS ="), "{}", client.log());

    let with_server = scratch.write("server.conf", &config("10.50.0.1, corp.example"));
    let mut client = Process::start("server", &scratch, &["-c", with_server.to_str().unwrap()]);
    client.wait_for_log("socks5 listening", Duration::from_secs(10));
    assert!(!client.log().contains("DNS"), "{}", client.log());
}

#[test]
fn silent_logs_warnings_but_not_information() {
    let scratch = Scratch::new("wireproxy-silent");
    let (c, g) = (keys(), keys());
    let socks_port = free_port();
    let config = scratch.write(
        "client.conf",
        &wireproxy_config(&c, &g, 9, socks_port, free_port()),
    );
    for (flag, info_expected) in [("-s", false), ("--silent", false), ("-c", true)] {
        let log = scratch.path(&format!("{flag}.log"));
        let mut args = vec![flag, "-c", config.to_str().unwrap()];
        if flag == "-c" {
            args.remove(0);
        }
        let mut child = Command::new(binary())
            .args(&args)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        wait_tcp(
            SocketAddr::from(([127, 0, 0, 1], socks_port)),
            Duration::from_secs(10),
        );
        let _ = child.kill();
        let _ = child.wait();
        let text = std::fs::read_to_string(&log).unwrap();
        assert!(text.contains("WARN"), "{flag}: {text}");
        assert_eq!(text.contains("INFO"), info_expected, "{flag}: {text}");
    }
}
