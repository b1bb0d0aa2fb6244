use super::*;
use proptest::prelude::*;

const PRIVATE: &str = "yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=";
const PEER: &str = "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=";

fn no_env(_: &str) -> Option<String> {
    None
}

fn parse(text: &str) -> Result<ProxyConfig, LoadError> {
    ProxyConfig::from_text(text, "test.conf", Path::new("."), &no_env)
}

fn wg() -> String {
    format!("[Interface]\nPrivateKey = {PRIVATE}\nAddress = 10.0.0.2/32\nDNS = 10.0.0.1\n\n[Peer]\nPublicKey = {PEER}\nEndpoint = 203.0.113.1:51820\nAllowedIPs = 0.0.0.0/0\n")
}

#[test]
fn a_wireproxy_config_with_every_section_parses() {
    let text = format!(
        "{}\n[Socks5]\nBindAddress = 127.0.0.1:25344\n\n[http]\nBindAddress = 127.0.0.1:25345\nUsername = alice\nPassword = `pa#ss`\n\n\
         [TCPClientTunnel]\nBindAddress = 127.0.0.1:2222\nTarget = 10.0.0.5:22\n\n\
         [TCPClientTunnel]\nBindAddress = localhost:5432\nTarget = db.internal:5432\n\n\
         [TCPServerTunnel]\nListenPort = 8080\nTarget = localhost:80\n\n\
         [UDPProxyTunnel]\nBindAddress = 127.0.0.1:5353\nTarget = [fd00::53]:53\nInactivityTimeout = 30\n\n\
         [STDIOTunnel]\nTarget = ssh.internal:22\n\n[Gateway]\nAllowedDestinations = 10.0.0.0/8, 192.168.1.5\n",
        wg()
    );
    let c = parse(&text).unwrap();
    assert_eq!(
        c.socks5,
        [ProxyListener {
            bind: "127.0.0.1:25344".parse().unwrap(),
            auth: None,
            tls: None,
        }]
    );
    assert_eq!(c.http[0].auth.as_ref().unwrap().password, "pa#ss");
    assert_eq!(c.tcp_client_tunnels.len(), 2);
    assert_eq!(
        c.tcp_client_tunnels[1].bind,
        "127.0.0.1:5432".parse().unwrap()
    );
    assert_eq!(
        c.tcp_client_tunnels[1].target.to_string(),
        "db.internal:5432"
    );
    assert_eq!(c.tcp_server_tunnels[0].listen_port, 8080);
    assert_eq!(c.udp_proxy_tunnels[0].target.to_string(), "[fd00::53]:53");
    assert_eq!(
        c.udp_proxy_tunnels[0].inactivity_timeout,
        Some(Duration::from_secs(30))
    );
    assert_eq!(c.stdio_tunnels[0].target.host, "ssh.internal");
    assert_eq!(
        c.gateway.allowed_destinations,
        Some(vec![
            "10.0.0.0/8".parse().unwrap(),
            "192.168.1.5/32".parse().unwrap()
        ])
    );
    assert!(c.wg.sections.is_empty());
    assert!(
        !format!("{:?}", c.http[0]).contains("pa#ss"),
        "Debug hides the password"
    );
}

#[test]
fn wgconfig_imports_a_file_and_errors_point_into_it() {
    let dir = std::env::temp_dir().join(format!("underpass-cfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("wg.conf"), wg()).unwrap();
    std::fs::write(
        dir.join("main.conf"),
        "WGConfig = wg.conf\n\n[Socks5]\nBindAddress = 127.0.0.1:1080\n",
    )
    .unwrap();
    let c = ProxyConfig::load(&dir.join("main.conf")).unwrap();
    assert_eq!(c.wg.peers.len(), 1);
    assert_eq!(c.socks5.len(), 1);

    std::fs::write(
        dir.join("bad.conf"),
        format!("[Interface]\nPrivateKey = {PRIVATE}\n\n[Peer]\nPublicKey = nope\n"),
    )
    .unwrap();
    std::fs::write(dir.join("main2.conf"), "# comment\nWGConfig = bad.conf\n").unwrap();
    let e = ProxyConfig::load(&dir.join("main2.conf")).unwrap_err();
    assert!(e.file.ends_with("bad.conf"), "{e}");
    assert_eq!((e.line, e.key.as_deref()), (5, Some("PublicKey")));

    std::fs::write(dir.join("main3.conf"), "WGConfig = missing.conf\n").unwrap();
    let e = ProxyConfig::load(&dir.join("main3.conf")).unwrap_err();
    assert!(
        e.file.ends_with("main3.conf") && e.line == 1 && e.message.contains("missing.conf"),
        "{e}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn values_come_from_the_environment_and_never_leak() {
    let env = |name: &str| match name {
        "WG_KEY" => Some(PRIVATE.to_string()),
        "BAD_KEY" => Some("c2VjcmV0LXNlY3JldC1zZWNyZXQ=".to_string()),
        "PORT" => Some("1081".to_string()),
        _ => None,
    };
    let text = "[Interface]\nPrivateKey = $WG_KEY\nAddress = 10.0.0.2/32\n\n[Socks5]\nBindAddress = 127.0.0.1:1080\nUsername = u\nPassword = ${WG_KEY}\n";
    let c = ProxyConfig::from_text(text, "env.conf", Path::new("."), &env).unwrap();
    assert_eq!(c.wg.interface.private_key.to_base64(), PRIVATE);
    assert_eq!(c.socks5[0].auth.as_ref().unwrap().password, PRIVATE);

    let e = ProxyConfig::from_text(
        "[Interface]\nPrivateKey = $NOPE\n",
        "env.conf",
        Path::new("."),
        &env,
    )
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "env.conf:2: PrivateKey: environment variable NOPE is not set"
    );
    let e = ProxyConfig::from_text(
        "[Interface]\nPrivateKey = $BAD_KEY\n",
        "env.conf",
        Path::new("."),
        &env,
    )
    .unwrap_err();
    assert!(e.to_string().starts_with("env.conf:2: PrivateKey:"), "{e}");
    assert!(
        !e.to_string().contains("c2VjcmV0"),
        "the secret is never shown: {e}"
    );
}

#[test]
fn mistakes_in_proxy_sections_name_line_and_key() {
    let cases = [
        (
            "[Socks5]\nBindAddress = nowhere\n",
            11,
            Some("BindAddress"),
            "not an address and port",
        ),
        ("[Socks5]\nUsername = a\n", 10, None, "needs BindAddress"),
        (
            "[Socks5]\nBindAddress = 127.0.0.1:1\nUsername = a\n",
            12,
            Some("Username"),
            "give both",
        ),
        (
            "[http]\nBindAddres = 127.0.0.1:1\n",
            11,
            Some("BindAddres"),
            "expected one of: BindAddress",
        ),
        (
            "[TCPClientTunnel]\nBindAddress = 127.0.0.1:1\n",
            10,
            None,
            "needs Target",
        ),
        (
            "[TCPClientTunnel]\nBindAddress = 127.0.0.1:1\nTarget = host\n",
            12,
            Some("Target"),
            "not host:port",
        ),
        (
            "[TCPServerTunnel]\nListenPort = 0\nTarget = a:1\n",
            11,
            Some("ListenPort"),
            "from 1 to 65535",
        ),
        (
            "[UDPProxyTunnel]\nBindAddress = 127.0.0.1:1\nTarget = a:1\nInactivityTimeout = soon\n",
            13,
            Some("InactivityTimeout"),
            "whole number",
        ),
        (
            "[Gateway]\nAllowedDestinations = 10.0.0.0/33\n",
            11,
            Some("AllowedDestinations"),
            "not a network",
        ),
        ("[Gateway]\n[Gateway]\n", 11, None, "second [Gateway]"),
        (
            "[Socks]\nBindAddress = 127.0.0.1:1\n",
            10,
            None,
            "unknown section [Socks]",
        ),
    ];
    for (extra, line, key, needle) in cases {
        let e = parse(&format!("{}{extra}", wg())).unwrap_err();
        assert_eq!((e.line, e.key.as_deref()), (line, key), "{e}");
        assert!(e.to_string().contains(needle), "{e} should say {needle:?}");
        assert!(
            e.to_string().starts_with(&format!("test.conf:{line}")),
            "{e}"
        );
    }
}

#[test]
fn an_open_proxy_is_warned_about() {
    let c = parse(&format!("{}[Socks5]\nBindAddress = 0.0.0.0:1080\n", wg())).unwrap();
    assert!(
        c.warnings
            .iter()
            .any(|w| w.contains("open proxy on 0.0.0.0:1080")),
        "{:?}",
        c.warnings
    );
    let c = parse(&format!(
        "{}[Socks5]\nBindAddress = 0.0.0.0:1080\nUsername = a\nPassword = b\n",
        wg()
    ))
    .unwrap();
    assert!(c.warnings.is_empty());
}

#[test]
fn gateway_peer_to_peer_is_off_unless_asked_and_takes_yes_or_no() {
    let c = parse(&format!(
        "{}[Gateway]\nAllowedDestinations = 10.0.0.0/8\n",
        wg()
    ))
    .unwrap();
    assert!(!c.gateway.peer_to_peer);
    let c = parse(&format!("{}[Gateway]\nPeerToPeer = true\n", wg())).unwrap();
    assert!(c.gateway.peer_to_peer);
    assert_eq!(
        c.gateway.allowed_destinations, None,
        "a [Gateway] without AllowedDestinations keeps the default policy"
    );
    let c = parse(&format!("{}[Gateway]\nPeerToPeer = No\n", wg())).unwrap();
    assert!(!c.gateway.peer_to_peer);
    let e = parse(&format!("{}[Gateway]\nPeerToPeer = sometimes\n", wg())).unwrap_err();
    assert_eq!((e.line, e.key.as_deref()), (11, Some("PeerToPeer")), "{e}");
    assert!(e.to_string().contains("expected true or false"), "{e}");
}

proptest! {
    #[test]
    fn arbitrary_text_never_panics(text in any::<String>()) {
        let _ = parse(&text);
        let _ = parse(&format!("{}{text}", wg()));
    }
}

/// Every way a line holding a secret can be wrong: the message names the
/// file, line and key, and never the value (a CI log is public).
#[test]
fn errors_never_repeat_a_secret() {
    let password = "hunter2-s3cret";
    let bad_key = "AAAAsecretbutnotakey";
    let cases = [
        // Not a key; a key in the wrong section; given twice.
        wg().replace(PRIVATE, bad_key),
        format!(
            "{}\n[Peer]\nPublicKey = {PEER}\nPrivateKey = {PRIVATE}\n",
            wg()
        ),
        wg().replace(
            "Address",
            &format!("PrivateKey = {PRIVATE}\nPrivateKey = {PRIVATE}\nAddress"),
        ),
        wg().replace(
            "[Peer]",
            &format!("PresharedKey = {PRIVATE}\n[Peer]\nPresharedKey = {bad_key}"),
        ),
        // A password without a user, in the wrong section, misspelt.
        format!(
            "{}\n[Socks5]\nBindAddress = 127.0.0.1:1\nPassword = {password}\n",
            wg()
        ),
        format!("{}\n[TCPClientTunnel]\nPassword = {password}\n", wg()),
        format!(
            "{}\n[http]\nBindAddress = 127.0.0.1:1\nUsername = a\nPasword = {password}\n",
            wg()
        ),
        format!("{}\nPrivatekey = {PRIVATE}\n", wg()),
    ];
    for text in cases {
        let err = parse(&text).expect_err(&text).to_string();
        for secret in [PRIVATE, bad_key, password] {
            assert!(
                !err.contains(secret),
                "{err:?} repeats a secret of:\n{text}"
            );
        }
        assert!(err.starts_with("test.conf:"), "{err:?} names no line");
    }
}

#[test]
fn variables_that_hold_a_key_or_password_are_remembered() {
    let env = |name: &str| match name {
        "WG_KEY" => Some(PRIVATE.to_string()),
        "PW" => Some("hunter2".to_string()),
        "WHO" => Some("alice".to_string()),
        _ => None,
    };
    let text = "[Interface]\nPrivateKey = $WG_KEY\nAddress = 10.0.0.2/32\n\n[Socks5]\nBindAddress = 127.0.0.1:1080\nUsername = $WHO\nPassword = ${PW}\n";
    let c = ProxyConfig::from_text(text, "env.conf", Path::new("."), &env).unwrap();
    assert_eq!(c.secret_vars, ["WG_KEY", "PW"]);
}

#[cfg(unix)]
#[test]
fn a_key_file_others_may_read_is_warned_about_with_the_fix() {
    use std::os::unix::fs::PermissionsExt;
    let dir = std::env::temp_dir().join(format!("underpass-mode-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let write = |name: &str, text: &str, mode: u32| {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        path
    };
    let warned = |path: &Path| {
        let c = ProxyConfig::load(path).unwrap();
        c.warnings.into_iter().find(|w| w.contains("chmod 600"))
    };
    for mode in [0o644, 0o640, 0o604] {
        let path = write("open.conf", &wg(), mode);
        let w = warned(&path).unwrap_or_else(|| panic!("no warning at {mode:o}"));
        assert!(
            w.contains(&format!("chmod 600 {}", path.display()))
                && w.contains(&format!("{mode:04o}")),
            "{w}"
        );
        assert!(!w.contains(PRIVATE), "{w}");
    }
    assert_eq!(warned(&write("closed.conf", &wg(), 0o600)), None);
    // A key that comes from the environment is not in the file.
    let by_name = wg().replace(PRIVATE, "$WG_KEY");
    assert_eq!(
        exposure_warning(&write("var.conf", &by_name, 0o644), &by_name),
        None
    );
    // An imported file is checked on its own.
    let wg_path = write("wg.conf", &wg(), 0o644);
    let main = write(
        "main.conf",
        "WGConfig = wg.conf\n\n[Socks5]\nBindAddress = 127.0.0.1:1080\n",
        0o644,
    );
    let w = warned(&main).expect("the import holding the key");
    assert!(w.starts_with(&wg_path.display().to_string()), "{w}");
    // Text from stdin or the environment has no mode to check.
    assert!(parse(&wg()).unwrap().warnings.is_empty());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn wireproxys_finer_points_read_as_wireproxy_reads_them() {
    let env = |name: &str| (name == "PW").then(|| "from#env".to_string());
    let text = format!(
        "{}\n[Socks5]\nBindAddress = :1080\nUsername = $$HOME\nPassword = pa#ss;x\n\n\
         [http]\nBindAddress = 127.0.0.1:8118\nUsername = \"bob\"\nPassword = $PW\n\n\
         [UDPProxyTunnel]\nBindAddress = 127.0.0.1:5353\nTarget = 10.0.0.1:53\nInactivityTimeout = 0\n\n\
         [Resolve]\nResolveStrategy = IPv6\n",
        wg()
    );
    let c = ProxyConfig::from_text(&text, "w.conf", Path::new("."), &env).unwrap();
    let socks = &c.socks5[0];
    assert_eq!(socks.bind, "[::]:1080".parse().unwrap());
    let auth = socks.auth.as_ref().unwrap();
    // `$$` is a literal `$`; a glued `#` starts a comment (with a warning).
    assert_eq!(
        (auth.username.as_str(), auth.password.as_str()),
        ("$HOME", "pa")
    );
    assert!(
        c.warnings
            .iter()
            .any(|w| w.starts_with("w.conf:14: Password: `#` starts a comment")),
        "{:?}",
        c.warnings
    );
    // A variable's value is taken whole, `#` and all; quotes come off.
    let auth = c.http[0].auth.as_ref().unwrap();
    assert_eq!(
        (auth.username.as_str(), auth.password.as_str()),
        ("bob", "from#env")
    );
    assert_eq!(c.udp_proxy_tunnels[0].inactivity_timeout, None);
    assert_eq!(c.resolve, ResolveStrategy::Ipv6);
    assert_eq!(parse(&wg()).unwrap().resolve, ResolveStrategy::Auto);
    let bad = parse(&format!("{}\n[Resolve]\nResolveStrategy = both\n", wg())).unwrap_err();
    assert_eq!(
        (bad.line, bad.key.as_deref()),
        (12, Some("ResolveStrategy"))
    );
    assert!(bad.message.contains("expected auto, ipv4 or ipv6"), "{bad}");
}

#[test]
fn resolve_strategies_order_a_names_addresses() {
    let ips = || -> Vec<IpAddr> {
        ["10.0.0.1", "fd00::1", "10.0.0.2"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect()
    };
    let v4_only: Vec<IpNet> = vec!["10.0.0.2/32".parse().unwrap()];
    let dual: Vec<IpNet> = vec![
        "10.0.0.2/32".parse().unwrap(),
        "fd00::2/128".parse().unwrap(),
    ];
    let order = |s: ResolveStrategy, addrs: &[IpNet]| {
        let mut v = ips();
        s.order(addrs, &mut v);
        v.iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(" ")
    };
    assert_eq!(
        order(ResolveStrategy::Auto, &v4_only),
        "10.0.0.1 10.0.0.2 fd00::1"
    );
    assert_eq!(
        order(ResolveStrategy::Auto, &dual),
        "fd00::1 10.0.0.1 10.0.0.2"
    );
    assert_eq!(
        order(ResolveStrategy::Ipv4, &dual),
        "10.0.0.1 10.0.0.2 fd00::1"
    );
    assert_eq!(
        order(ResolveStrategy::Ipv6, &v4_only),
        "fd00::1 10.0.0.1 10.0.0.2"
    );
}

#[test]
fn a_client_gives_a_peer_without_allowed_ips_all_traffic_and_a_gateway_does_not() {
    let text = wg().replace("AllowedIPs = 0.0.0.0/0\n", "");
    let mut client = parse(&text).unwrap();
    client.for_client();
    let all: Vec<IpNet> = vec!["0.0.0.0/0".parse().unwrap(), "::/0".parse().unwrap()];
    assert_eq!(client.wg.peers[0].allowed_ips, all);
    assert!(
        client
            .warnings
            .iter()
            .any(|w| w.starts_with("test.conf:6: [Peer] has no AllowedIPs")),
        "{:?}",
        client.warnings
    );

    let mut gateway = parse(&text).unwrap();
    gateway.for_gateway().unwrap();
    assert!(gateway.wg.peers[0].allowed_ips.is_empty());
    assert!(gateway
        .warnings
        .iter()
        .any(|w| w.contains("the gateway accepts nothing from it")));

    // Sections a gateway would not serve are refused, by file and line.
    let mut with_socks =
        parse(&format!("{text}\n[Socks5]\nBindAddress = 127.0.0.1:1080\n")).unwrap();
    let e = with_socks.for_gateway().unwrap_err();
    assert_eq!(e.line, 10);
    assert!(
        e.to_string()
            .starts_with("test.conf:10: [Socks5] is a client's section"),
        "{e}"
    );
    // A client warns of [Gateway], which it does not read.
    let mut with_gateway = parse(&format!(
        "{}\n[Gateway]\nAllowedDestinations = 10.0.0.0/8\n",
        wg()
    ))
    .unwrap();
    with_gateway.for_client();
    assert!(with_gateway
        .warnings
        .iter()
        .any(|w| w.contains("[Gateway] is read by `underpass gateway` only")));
}

#[test]
fn an_sni_section_parses_with_port_443_unless_target_port_is_set() {
    let c = parse(&format!(
        "{}\n[SNI]\nBindAddress = 0.0.0.0:443\n\n[SNI]\nBindAddress = 127.0.0.1:8443\nTargetPort = 8443\n",
        wg()
    ))
    .unwrap();
    assert_eq!(c.sni.len(), 2);
    assert!(
        c.warnings
            .iter()
            .any(|w| w.contains("test.conf:") && w.contains("[SNI] on 0.0.0.0:443")),
        "{:?}",
        c.warnings
    );
    assert_eq!(
        c.warnings.iter().filter(|w| w.contains("[SNI]")).count(),
        1,
        "loopback is not warned about"
    );
    assert_eq!(c.sni[0].bind, "0.0.0.0:443".parse().unwrap());
    assert_eq!(c.sni[0].port, 443);
    assert_eq!(c.sni[1].port, 8443);
    for (bad, key) in [
        ("BindAddress = 127.0.0.1:1\nTargetPort = 0\n", "TargetPort"),
        ("BindAddress = 127.0.0.1:1\nTarget = x:1\n", "Target"),
        ("TargetPort = 443\n", "BindAddress"),
    ] {
        let e = parse(&format!("{}\n[SNI]\n{bad}", wg())).unwrap_err();
        assert!(
            e.key.as_deref() == Some(key) || e.message.contains(key),
            "{bad:?}: {e}"
        );
    }
}

#[test]
fn https_proxy_files_go_together_and_must_be_readable() {
    let e = parse(&format!(
        "{}\n[http]\nBindAddress = 127.0.0.1:1\nKeyFile = key.pem\n",
        wg()
    ))
    .unwrap_err();
    assert_eq!(e.key.as_deref(), Some("KeyFile"));
    assert!(e.message.contains("go together"), "{e}");
    let e = parse(&format!(
        "{}\n[http]\nBindAddress = 127.0.0.1:1\nCertFile = /nonexistent/cert.pem\nKeyFile = /nonexistent/key.pem\n",
        wg()
    ))
    .unwrap_err();
    assert_eq!((e.line, e.key.as_deref()), (13, Some("CertFile")), "{e}");
    assert!(e.message.contains("/nonexistent/cert.pem"), "{e}");
    // The SOCKS5 section has no such keys.
    let e = parse(&format!(
        "{}\n[Socks5]\nBindAddress = 127.0.0.1:1\nCertFile = c.pem\n",
        wg()
    ))
    .unwrap_err();
    assert_eq!(e.key.as_deref(), Some("CertFile"));
}

/// The lines this module looks at before core parses them (`WGConfig`,
/// `$VAR`) are read by core's lexer, so a comment or quotes mean there
/// what they mean everywhere else.
#[test]
fn imports_and_variables_read_comments_and_quotes_as_core_does() {
    let dir = std::env::temp_dir().join(format!("underpass-lex-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("wg.conf"), wg()).unwrap();
    for import in [
        "WGConfig = wg.conf # the tunnel",
        "WGConfig = \"wg.conf\" ; quoted",
        "WGConfig = `wg.conf`",
        "  ; WGConfig = nothing.conf\nWGConfig = wg.conf",
    ] {
        let text = format!("{import}\n\n[Socks5]\nBindAddress = 127.0.0.1:1080\n");
        let c = ProxyConfig::from_text(&text, "main.conf", &dir, &no_env);
        let c = c.unwrap_or_else(|e| panic!("{import:?}: {e}"));
        assert_eq!(c.wg.peers.len(), 1, "{import:?}");
    }
    std::fs::remove_dir_all(&dir).unwrap();

    let env = |name: &str| (name == "PW").then(|| "se;cr#et".to_string());
    let text = format!(
        "{}\n[Socks5]\nBindAddress = 127.0.0.1:1080\nUsername = u ; who\nPassword = $PW # from CI\n",
        wg()
    );
    let c = ProxyConfig::from_text(&text, "v.conf", Path::new("."), &env).unwrap();
    let auth = c.socks5[0].auth.as_ref().unwrap();
    assert_eq!(
        (auth.username.as_str(), auth.password.as_str()),
        ("u", "se;cr#et")
    );
    assert_eq!(c.secret_vars, ["PW"]);
}

#[test]
fn credentials_match_only_when_both_halves_match_whole() {
    let c = Credentials {
        username: "alice".into(),
        password: "s3cret".into(),
    };
    assert!(c.matches("alice", "s3cret"));
    for (user, pass) in [
        ("alice", "s3cre"),
        ("alice", "s3cret!"),
        ("alic", "s3cret"),
        ("bob", "s3cret"),
        ("", ""),
        ("alices3cret", ""),
    ] {
        assert!(!c.matches(user, pass), "{user:?} {pass:?}");
    }
}
