use super::*;
use proptest::prelude::*;

const PRIVATE: &str = "yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=";
const PEER_A: &str = "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=";
const PEER_B: &str = "TrMvSoP4jYQlY6RIzBgbssQqY3vxI2Pi+y71lOWWXX0=";
const PSK: &str = "FpCyhws9cxwWoV4xELtfJvjJN+zQVRPISllRWgeopVE=";

fn full() -> String {
    format!(
        "\u{feff}# a laptop\r\n\
         [Interface]\r\n\
         PrivateKey = {PRIVATE}\r\n\
         Address = 10.200.100.8/24, fd42:42:42::8/64\r\n\
         Address = 10.9.0.1\r\n\
         DNS = 10.200.100.1, 2001:4860:4860::8888, corp.example.com\r\n\
         mtu = 1380   # lowercase key\r\n\
         ListenPort = 0\r\n\
         PostUp = iptables -A FORWARD\r\n\
         \r\n\
         [Peer]\r\n\
         PublicKey = {PEER_A}\r\n\
         PresharedKey = {PSK}\r\n\
         AllowedIPs = 0.0.0.0/0, ::/0\r\n\
         Endpoint = demo.wireguard.com:51820\r\n\
         PersistentKeepalive = 25\r\n\
         \r\n\
         [peer]\r\n\
         PublicKey = {PEER_B}\r\n\
         Endpoint = [2001:db8::1]:51820\r\n\
         AllowedIPs = 10.0.0.5/24\r\n\
         AllowedIPs = fd00::/8\r\n\
         PersistentKeepalive = off\r\n\
         \r\n\
         [Socks5]\r\n\
         BindAddress = 127.0.0.1:25344\r\n\
         Password = pa#ss # trailing comment\r\n\
         [TCPClientTunnel]\r\n\
         BindAddress = 127.0.0.1:2222\r\n\
         Target = 10.0.0.5:22\r\n\
         [TCPClientTunnel]\r\n\
         BindAddress = 127.0.0.1:2223\r\n\
         Target = 10.0.0.6:22\r\n"
    )
}

fn err(text: &str) -> ConfigError {
    Config::parse(text).expect_err("config should be refused")
}

fn with_interface(rest: &str) -> String {
    format!("[Interface]\nPrivateKey = {PRIVATE}\n{rest}")
}

#[test]
fn a_realistic_config_parses() {
    let c = Config::parse(&full()).unwrap();
    let i = &c.interface;
    assert_eq!(i.private_key.to_base64(), PRIVATE);
    assert_eq!(
        i.addresses,
        ["10.200.100.8/24", "fd42:42:42::8/64", "10.9.0.1/32"].map(|s| s.parse::<IpNet>().unwrap())
    );
    assert_eq!(
        i.dns,
        ["10.200.100.1", "2001:4860:4860::8888"].map(|s| s.parse::<IpAddr>().unwrap())
    );
    assert_eq!(i.dns_search, ["corp.example.com"]);
    assert_eq!((i.mtu, i.listen_port, i.line), (Some(1380), Some(0), 2));

    assert_eq!(c.peers.len(), 2);
    let a = &c.peers[0];
    assert_eq!(a.public_key.to_base64(), PEER_A);
    assert_eq!(a.preshared_key.as_ref().unwrap().to_base64(), PSK);
    assert_eq!(
        a.endpoint,
        Some(Endpoint::Host {
            host: "demo.wireguard.com".into(),
            port: 51820
        })
    );
    assert_eq!(a.persistent_keepalive, Some(25));
    assert_eq!(a.line, 11);
    let b = &c.peers[1];
    assert_eq!(
        b.endpoint,
        Some(Endpoint::Addr("[2001:db8::1]:51820".parse().unwrap()))
    );
    assert_eq!(
        b.allowed_ips,
        ["10.0.0.0/24", "fd00::/8"].map(|s| s.parse::<IpNet>().unwrap())
    );
    assert_eq!(b.persistent_keepalive, None);

    assert_eq!(c.sections.len(), 3);
    let socks = c.sections_named("socks5").next().unwrap();
    assert_eq!((socks.name.as_str(), socks.line), ("Socks5", 25));
    assert_eq!(socks.get("password").unwrap().value, "pa#ss");
    let tunnels: Vec<_> = c.sections_named("TCPClientTunnel").collect();
    assert_eq!(tunnels.len(), 2);
    assert_eq!(tunnels[1].get("Target").unwrap().value, "10.0.0.6:22");
    assert_eq!(tunnels[1].get("Target").unwrap().line, 33);

    let lines: Vec<usize> = c.warnings.iter().map(|w| w.line).collect();
    assert_eq!(
        lines,
        [9, 21],
        "PostUp ignored, host bits masked: {:?}",
        c.warnings
    );
    assert!(c.warnings[0].message.contains("PostUp"));
}

#[test]
fn writing_and_reading_back_gives_the_same_config() {
    let c = Config::parse(&full()).unwrap();
    let again = Config::parse(&c.to_wg_quick()).unwrap();
    assert_eq!(again.interface.private_key, c.interface.private_key);
    assert_eq!(again.interface.addresses, c.interface.addresses);
    assert_eq!(again.interface.dns, c.interface.dns);
    assert_eq!(again.interface.dns_search, c.interface.dns_search);
    assert_eq!(again.interface.mtu, c.interface.mtu);
    let strip = |p: &PeerConfig| PeerConfig {
        line: 0,
        ..p.clone()
    };
    assert_eq!(
        again.peers.iter().map(strip).collect::<Vec<_>>(),
        c.peers.iter().map(strip).collect::<Vec<_>>()
    );
    let entries = |c: &Config| -> Vec<(String, Vec<(String, String)>)> {
        c.sections
            .iter()
            .map(|s| {
                (
                    s.name.clone(),
                    s.entries
                        .iter()
                        .map(|e| (e.key.clone(), e.value.clone()))
                        .collect(),
                )
            })
            .collect()
    };
    assert_eq!(entries(&again), entries(&c));
}

#[test]
fn errors_name_the_line_and_the_key_and_say_what_was_expected() {
    let cases: Vec<(String, usize, Option<&str>, &str)> = vec![
        ("".into(), 0, None, "no [Interface] section"),
        (
            "[Peer]\nPublicKey = x".into(),
            2,
            Some("PublicKey"),
            "not valid base64",
        ),
        ("Address = 10.0.0.1\n".into(), 1, None, "before any section"),
        (
            "[Interface\n".into(),
            1,
            None,
            "expected a name in brackets",
        ),
        (
            "[Interface]\nPrivateKey\n".into(),
            2,
            None,
            "expected `Key = value`",
        ),
        (
            "[Interface]\nAddress = 10.0.0.1\n".into(),
            1,
            None,
            "[Interface] has no PrivateKey",
        ),
        (
            with_interface("[Interface]\n"),
            3,
            None,
            "first is on line 1",
        ),
        (
            with_interface("Adress = 10.0.0.1\n"),
            3,
            Some("Adress"),
            "expected one of: PrivateKey, Address",
        ),
        (
            with_interface("Address = 10.0.0.300/24\n"),
            3,
            Some("Address"),
            "e.g. 10.0.0.2/32",
        ),
        (
            with_interface("DNS = 1.1.1.1, not a name!\n"),
            3,
            Some("DNS"),
            "neither an IP address",
        ),
        (
            with_interface("MTU = 70000\n"),
            3,
            Some("MTU"),
            "from 576 to 65535",
        ),
        (
            with_interface("MTU = 1400\nMTU = 1300\n"),
            4,
            Some("MTU"),
            "first on line 3",
        ),
        (
            with_interface("ListenPort = -1\n"),
            3,
            Some("ListenPort"),
            "from 0 to 65535",
        ),
        (with_interface("MTU =\n"), 3, Some("MTU"), "empty"),
        (
            with_interface("[Peer]\nEndpoint = 1.2.3.4:5\n"),
            3,
            None,
            "[Peer] has no PublicKey",
        ),
        (
            with_interface(&format!(
                "[Peer]\nPublicKey = {PEER_A}\nEndpoint = 1.2.3.4\n"
            )),
            5,
            Some("Endpoint"),
            "expected host:port",
        ),
        (
            with_interface(&format!(
                "[Peer]\nPublicKey = {PEER_A}\nEndpoint = [::1:51820\n"
            )),
            5,
            Some("Endpoint"),
            "expected host:port",
        ),
        (
            with_interface(&format!(
                "[Peer]\nPublicKey = {PEER_A}\nAllowedIPs = 10.0.0.0/33\n"
            )),
            5,
            Some("AllowedIPs"),
            "not a network",
        ),
        (
            with_interface(&format!(
                "[Peer]\nPublicKey = {PEER_A}\nPersistentKeepalive = often\n"
            )),
            5,
            Some("PersistentKeepalive"),
            "or off",
        ),
        (
            with_interface(&format!(
                "[Peer]\nPublicKey = {PEER_A}\nPublicKey = {PEER_B}\n"
            )),
            5,
            Some("PublicKey"),
            "first on line 4",
        ),
        (
            with_interface(&format!(
                "[Peer]\nPublicKey = {PEER_A}\n[Peer]\nPublicKey = {PEER_A}\n"
            )),
            5,
            Some("PublicKey"),
            "used by the peer on line 3",
        ),
        (
            with_interface(&format!("[Peer]\nPublicKey = {PEER_A}\nEndpint = x:1\n")),
            5,
            Some("Endpint"),
            "expected one of: PublicKey",
        ),
        (
            with_interface(&format!(
                "[Peer]\nPublicKey = {PEER_A}\nPresharedKey = AAAA\n"
            )),
            5,
            Some("PresharedKey"),
            "decodes to 3 bytes",
        ),
    ];
    for (text, line, key, needle) in cases {
        let e = err(&text);
        assert_eq!(e.line, line, "line of {e} for {text:?}");
        assert_eq!(e.key.as_deref(), key, "key of {e}");
        let message = e.to_string();
        assert!(
            message.contains(needle),
            "{message:?} should say {needle:?}"
        );
        if line > 0 {
            assert!(message.starts_with(&format!("line {line}: ")), "{message}");
        }
    }
}

#[test]
fn a_peer_with_our_own_key_is_refused() {
    let own = PRIVATE.parse::<PrivateKey>().unwrap().public_key();
    let e = err(&with_interface(&format!("[Peer]\nPublicKey = {own}\n")));
    assert_eq!((e.line, e.kind), (3, ConfigErrorKind::OwnKey));
}

#[test]
fn errors_never_quote_secrets() {
    let secretish = "c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0";
    for text in [
        format!("[Interface]\nPrivateKey = {secretish}\n"),
        format!("[Interface]\nPrivateKey = {secretish}!!\n"),
        with_interface(&format!(
            "[Peer]\nPublicKey = {PEER_A}\nPresharedKey = {secretish}\n"
        )),
    ] {
        let message = err(&text).to_string();
        assert!(!message.contains(secretish), "{message}");
        assert!(!message.contains(PRIVATE), "{message}");
    }
    let c = Config::parse(&full()).unwrap();
    let debug = format!("{c:?}");
    assert!(
        !debug.contains(PRIVATE) && !debug.contains(PSK),
        "Debug leaks a secret"
    );
}

#[test]
fn endpoints_of_every_shape() {
    assert_eq!(
        "1.2.3.4:5".parse::<Endpoint>(),
        Ok(Endpoint::Addr("1.2.3.4:5".parse().unwrap()))
    );
    assert_eq!(
        "VPN.Example.com.:443".parse::<Endpoint>(),
        Ok(Endpoint::Host {
            host: "vpn.example.com.".into(),
            port: 443
        })
    );
    for bad in [
        "",
        ":1",
        "host",
        "host:",
        "host:99999",
        "-bad-:1",
        "a..b:1",
        "::1:51820",
        "h st:1",
    ] {
        assert!(bad.parse::<Endpoint>().is_err(), "{bad:?}");
    }
    assert_eq!(
        Endpoint::Host {
            host: "x.org".into(),
            port: 1
        }
        .to_string(),
        "x.org:1"
    );
}

#[test]
fn long_values_are_shortened_in_errors() {
    let long = "9".repeat(5000);
    let message = err(&with_interface(&format!("MTU = {long}\n"))).to_string();
    assert!(message.len() < 200, "{message}");
}

const KEYS: &[&str] = &[
    "PrivateKey",
    "Address",
    "DNS",
    "MTU",
    "ListenPort",
    "PublicKey",
    "PresharedKey",
    "Endpoint",
    "AllowedIPs",
    "PersistentKeepalive",
    "Table",
    "BindAddress",
    "Target",
    "=",
    "",
];
const VALUES: &[&str] = &[
    PRIVATE,
    PEER_A,
    PEER_B,
    "10.0.0.1/24",
    "::/0",
    "1.2.3.4:5",
    "[::1]:9",
    "host.name:1",
    "25",
    "off",
    "0",
    "70000",
    "",
    "#",
    "x,y,,",
    "1.1.1.1, 8.8.8.8",
];

fn plausible_line() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "[Interface]",
            "[Peer]",
            "[Socks5]",
            "[",
            "]",
            "[]",
            "# c"
        ])
        .prop_map(String::from),
        (prop::sample::select(KEYS), prop::sample::select(VALUES))
            .prop_map(|(k, v)| format!("{k} = {v}")),
        "[ -~]{0,40}",
    ]
}

proptest! {
    #[test]
    fn arbitrary_text_never_panics(text in any::<String>()) {
        let _ = Config::parse(&text);
    }

    #[test]
    fn plausible_configs_never_panic_and_round_trip(lines in proptest::collection::vec(plausible_line(), 0..30)) {
        let text = lines.join("\n");
        if let Ok(c) = Config::parse(&text) {
            let again = Config::parse(&c.to_wg_quick()).expect("what we write, we read");
            prop_assert_eq!(again.interface.private_key, c.interface.private_key);
            prop_assert_eq!(again.peers.len(), c.peers.len());
            prop_assert_eq!(again.sections.len(), c.sections.len());
        }
    }
}
