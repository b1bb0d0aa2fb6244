use super::*;
use crate::keys::KeyError;
use proptest::prelude::*;

const PRIVATE: &str = "yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=";
const PEER_A: &str = "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=";
const PEER_B: &str = "TrMvSoP4jYQlY6RIzBgbssQqY3vxI2Pi+y71lOWWXX0=";
const PSK: &str = "BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=";

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

fn base() -> String {
    format!("[Interface]\nPrivateKey = {PRIVATE}\n")
}

fn realistic() -> String {
    [
        "\u{feff}# Office VPN, written by hand",
        "[interface]",
        &format!("  privatekey={PRIVATE}  # the key"),
        "Address = 10.0.0.2/32, fd00::2/128",
        "address = 10.1.0.2",
        "DNS = 10.0.0.1, fd00::1, corp.example",
        "MTU = 1420",
        "ListenPort = 51820",
        "PostUp = iptables -A FORWARD -j ACCEPT",
        "",
        "[Peer]   # the office",
        &format!("PublicKey = {PEER_A}"),
        &format!("PresharedKey = {PSK}"),
        "Endpoint = vpn.example.com:51820",
        "AllowedIPs = 10.0.0.5/24, fd00::/64",
        "AllowedIPs = 192.168.1.0/24",
        "PersistentKeepalive = 25",
        "",
        "[PEER]",
        &format!("PublicKey={PEER_B}"),
        "Endpoint = [2001:db8::1]:51821",
        "AllowedIPs = 0.0.0.0/0, ::/0",
        "PersistentKeepalive = off",
        "",
        "[Socks5]",
        "BindAddress = 127.0.0.1:1080",
        "[http]",
        "Password = pa#ss # a comment",
        "[TCPClientTunnel]",
        "Target = a:1",
        "[tcpclienttunnel]",
        "Target = b:2",
        "target = c:3",
    ]
    .join("\r\n")
}

#[test]
fn a_realistic_config_parses() {
    let c = Config::parse(&realistic()).unwrap();
    let i = &c.interface;
    assert_eq!(i.private_key.to_base64(), PRIVATE);
    assert_eq!(i.line, 2);
    assert_eq!(
        i.addresses,
        [net("10.0.0.2/32"), net("fd00::2/128"), net("10.1.0.2/32")]
    );
    assert_eq!(
        i.dns,
        [
            "10.0.0.1".parse::<IpAddr>().unwrap(),
            "fd00::1".parse().unwrap()
        ]
    );
    assert_eq!(i.dns_search, ["corp.example"]);
    assert_eq!((i.mtu, i.listen_port), (Some(1420), Some(51820)));

    let [a, b] = &c.peers[..] else {
        panic!("two peers: {:?}", c.peers)
    };
    assert_eq!((a.public_key.to_base64(), a.line), (PEER_A.to_string(), 11));
    assert_eq!(a.preshared_key.as_ref().unwrap().to_base64(), PSK);
    assert_eq!(
        a.endpoint.as_ref().unwrap().to_string(),
        "vpn.example.com:51820"
    );
    assert_eq!(
        a.allowed_ips,
        [net("10.0.0.0/24"), net("fd00::/64"), net("192.168.1.0/24")]
    );
    assert_eq!(a.persistent_keepalive, Some(25));
    assert_eq!((b.public_key.to_base64(), b.line), (PEER_B.to_string(), 19));
    assert_eq!(
        b.endpoint,
        Some(Endpoint::Addr("[2001:db8::1]:51821".parse().unwrap()))
    );
    assert_eq!(b.persistent_keepalive, None);
    assert_eq!(b.preshared_key, None);

    let lines: Vec<_> = c.warnings.iter().map(|w| w.line).collect();
    assert_eq!(lines, [9, 15, 28]);
    assert_eq!(
        c.warnings[0].to_string(),
        "line 9: ignored: PostUp runs commands, underpass does not"
    );
    assert!(
        c.warnings[1].message.contains("10.0.0.5/24")
            && c.warnings[1].message.contains("10.0.0.0/24")
    );

    let names: Vec<_> = c
        .sections
        .iter()
        .map(|s| (s.name.as_str(), s.line))
        .collect();
    assert_eq!(
        names,
        [
            ("Socks5", 25),
            ("http", 27),
            ("TCPClientTunnel", 29),
            ("tcpclienttunnel", 31)
        ]
    );
    // As wireproxy reads it: the `#` starts a comment, with a warning.
    assert_eq!(c.sections[1].get("PASSWORD").unwrap().value, "pa");
    assert!(c
        .warnings
        .iter()
        .any(|w| w.line == 28 && w.message.contains("backquotes")));
    assert_eq!(c.sections[1].get("password").unwrap().line, 28);
    let last = &c.sections[3];
    assert_eq!(last.get("Target").unwrap().value, "c:3");
    let all: Vec<_> = last.get_all("TARGET").map(|e| e.value.as_str()).collect();
    assert_eq!(all, ["b:2", "c:3"]);
    assert_eq!(c.sections_named("TCPCLIENTTUNNEL").count(), 2);

    let debug = format!("{c:?}");
    assert!(!debug.contains(PRIVATE) && !debug.contains(PSK) && !debug.contains("\"pa\""));
}

#[test]
fn it_round_trips() {
    let c = Config::parse(&realistic()).unwrap();
    let text = c.to_wg_quick();
    assert!(text.starts_with(&format!("[Interface]\nPrivateKey = {PRIVATE}\n")));
    assert!(text.contains("DNS = 10.0.0.1, fd00::1, corp.example\n"));
    assert!(text.contains("AllowedIPs = 10.0.0.0/24, fd00::/64, 192.168.1.0/24\n"));
    let again = Config::parse(&text).unwrap();
    assert_eq!(again, c);
    assert!(again.warnings.is_empty(), "{:?}", again.warnings);
    assert_eq!(again.to_wg_quick(), text);
}

/// Parses `text` and returns the error's (line, key, kind) and its message.
fn fails(text: &str) -> (usize, Option<String>, ConfigErrorKind, String) {
    let e = Config::parse(text).unwrap_err();
    let message = e.to_string();
    (e.line, e.key, e.kind, message)
}

#[test]
fn each_error_names_its_line_and_key_and_what_was_expected() {
    use ConfigErrorKind as K;
    let b = base();
    let peer = |body: &str| format!("{b}[Peer]\nPublicKey = {PEER_A}\n{body}\n");
    let key = |k: &str| Some(k.to_string());
    let cases: Vec<(String, usize, Option<String>, K, &str)> = vec![
        ("# nothing\n".into(), 0, None, K::NoInterface, "no [Interface] section"),
        (format!("{b}[Interface]\n"), 3, None, K::DuplicateInterface { first_line: 1 }, "first is at line 1"),
        (format!("{b}[Peer\n"), 3, None, K::MalformedHeader("[Peer".into()), "`[Peer` is not a section header"),
        (format!("{b}[]\n"), 3, None, K::MalformedHeader("[]".into()), "such as [Peer]"),
        (format!("{b}[Peer] x\n"), 3, None, K::MalformedHeader("[Peer] x".into()), "alone on its line"),
        ("Address = 10.0.0.1\n[Interface]\n".into(), 1, None, K::OutsideSection, "outside any section"),
        (format!("{b}Address\n"), 3, None, K::NotKeyValue, "expected Key = Value"),
        (format!("{b}= 1\n"), 3, None, K::NotKeyValue, "expected Key = Value"),
        (format!("{b}Adress = 10.0.0.1\n"), 3, key("Adress"),
            K::UnknownKey { section: SectionKind::Interface, suggestion: Some("Address") },
            "line 3: Adress: not a key of [Interface]; did you mean Address? expected one of PrivateKey, Address, DNS, MTU, ListenPort"),
        (peer("Bogus = 1"), 5, key("Bogus"),
            K::UnknownKey { section: SectionKind::Peer, suggestion: None },
            "expected one of PublicKey, PresharedKey, Endpoint, AllowedIPs, PersistentKeepalive"),
        (format!("{b}Endpoint = 1.2.3.4:5\n"), 3, key("Endpoint"),
            K::WrongSection { section: SectionKind::Interface, belongs_in: SectionKind::Peer },
            "line 3: Endpoint: belongs in [Peer], not [Interface]"),
        (peer("postup = x"), 5, key("PostUp"),
            K::WrongSection { section: SectionKind::Peer, belongs_in: SectionKind::Interface },
            "belongs in [Interface]"),
        (format!("{b}Address =  \n"), 3, key("Address"), K::EmptyValue { expected: ADDRESS }, "empty value; expected addresses such as"),
        (peer("AllowedIPs = ,"), 5, key("AllowedIPs"), K::EmptyValue { expected: ALLOWED_IPS }, "expected networks"),
        (format!("{b}mtu = 1400\nMTU = 1400\n"), 4, key("MTU"), K::Repeated { first_line: 3 }, "first at line 3"),
        (peer("Endpoint = a:1\nendpoint = a:1"), 6, key("Endpoint"), K::Repeated { first_line: 5 }, "once per section"),
        ("[Interface]\nAddress = 10.0.0.1\n".into(), 1, key("PrivateKey"), K::MissingPrivateKey, "missing from [Interface]"),
        (format!("{b}[Peer]\nAllowedIPs = 0.0.0.0/0\n"), 3, key("PublicKey"), K::MissingPublicKey, "expected the peer's public key, a 32-byte key"),
        (format!("{b}[Peer]\nPublicKey = nope!\n"), 4, key("PublicKey"), K::Key(KeyError::Base64),
            "line 4: PublicKey: not valid base64, expected a 32-byte key in base64 (44 characters)"),
        (format!("{b}[Peer]\nPublicKey = AAAA\n"), 4, key("PublicKey"), K::Key(KeyError::Length(3)), "decodes to 3 bytes"),
        (format!("{b}Address = 10.0.0.1/33\n"), 3, key("Address"), K::Address("10.0.0.1/33".into()), "`10.0.0.1/33` is not an IP address"),
        (format!("{b}DNS = 1.1.1.1, not_a_name\n"), 3, key("DNS"), K::Dns("not_a_name".into()), "search domains"),
        (format!("{b}DNS = 10.0.0.300\n"), 3, key("DNS"), K::Dns("10.0.0.300".into()), "neither an IP address nor a domain name"),
        (format!("{b}MTU = 500\n"), 3, key("MTU"), K::Mtu("500".into()), "from 576 (the smallest packet IPv4 must carry) to 65535"),
        (format!("{b}MTU = 70000\n"), 3, key("MTU"), K::Mtu("70000".into()), "to 65535"),
        (format!("{b}ListenPort = -1\n"), 3, key("ListenPort"), K::ListenPort("-1".into()), "from 0 to 65535"),
        (peer("AllowedIPs = 10.0.0.0/8, 10.0.0/8"), 5, key("AllowedIPs"), K::AllowedIp("10.0.0/8".into()), "expected networks such as"),
        (peer("Endpoint = 1.2.3.4"), 5, key("Endpoint"), K::Endpoint(EndpointError::NoPort("1.2.3.4".into())), "has no port; expected host:port"),
        (peer("Endpoint = a.b:0"), 5, key("Endpoint"), K::Endpoint(EndpointError::Port("a.b:0".into())), "from 1 to 65535"),
        (peer("Endpoint = bad_host:1"), 5, key("Endpoint"), K::Endpoint(EndpointError::Host("bad_host:1".into())), "host name"),
        (peer("Endpoint = fd00::1:51820"), 5, key("Endpoint"), K::Endpoint(EndpointError::Ipv6NeedsBrackets("fd00::1:51820".into())), "[2001:db8::1]:51820"),
        (peer("PersistentKeepalive = sometimes"), 5, key("PersistentKeepalive"), K::Keepalive("sometimes".into()), "or 0 or off"),
        (format!("{b}[Peer]\nPublicKey = {PEER_A}\n[Peer]\nPublicKey = {PEER_A}\n"), 6, key("PublicKey"),
            K::DuplicatePeer { first_line: 3 }, "same public key as the [Peer] at line 3"),
        (format!("{b}[Peer]\nPublicKey = {}\n", PRIVATE.parse::<PrivateKey>().unwrap().public_key()), 4, key("PublicKey"),
            K::OwnPublicKey, "own public key"),
    ];
    for (text, line, key, kind, snippet) in cases {
        let (l, k, got, message) = fails(&text);
        assert_eq!((l, &k, &got), (line, &key, &kind), "{text}");
        assert!(message.contains(snippet), "{message:?} lacks {snippet:?}");
        assert!(
            message.contains("expected"),
            "{message:?} says what was expected"
        );
        let prefix = match (line, &key) {
            (0, _) => String::new(),
            (n, Some(k)) => format!("line {n}: {k}: "),
            (n, None) => format!("line {n}: "),
        };
        assert!(message.starts_with(&prefix), "{message:?}");
    }
}

#[test]
fn long_values_are_shortened_in_messages() {
    let long = "x-".repeat(300);
    let (_, _, _, message) = fails(&format!("{}DNS = {long}\n", base()));
    assert!(
        message.contains(&format!("`{}…`", "x-".repeat(20))),
        "{message}"
    );
    let (_, _, kind, _) = fails(&format!("{}DNS = {}\n", base(), "x".repeat(300)));
    assert_eq!(
        kind,
        ConfigErrorKind::Dns("<not shown: looks like a key>".into())
    );
    let (_, _, kind, _) = fails(&format!("{}DNS = a\u{1b}[31m\n", base()));
    assert_eq!(kind, ConfigErrorKind::Dns("a\\u{1b}[31m".into()));
}

#[test]
fn secrets_never_appear_in_errors_or_warnings() {
    let secret = "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlYw=="; // base64, 32+ bytes: refused
    let secret_body = secret.trim_end_matches('=');
    let b = base();
    let texts = [
        format!("[Interface]\nPrivateKey = {secret}\n"),
        format!("[Interface]\nPrivateKey = {secret_body}x!\n"),
        format!("{b}PrivateKey = {PRIVATE}\n"),
        format!("{b}[Peer]\nPublicKey = {PEER_A}\nPresharedKey = {secret}\n"),
        format!("{b}[Peer]\nPublicKey = {PEER_A}\nPresharedKey = {PSK}\nPresharedKey = {PSK}\n"),
        format!("{b}[Peer]\nPrivateKey = {PRIVATE}\n"),
        format!("{b}{PRIVATE}\n"),
        format!("{b}{secret_body}\n"),
        format!("{b}{PRIVATE} = 1\n"),
        format!("{PRIVATE}\n{b}"),
        format!("[{PRIVATE}\n{b}"),
    ];
    for text in texts {
        let e = Config::parse(&text).unwrap_err();
        for shown in [e.to_string(), format!("{e:?}")] {
            for s in [secret_body, &PRIVATE[..40], &PSK[..40]] {
                if text.contains(s) {
                    assert!(!shown.contains(s), "{shown} leaks a secret from {text:?}");
                }
            }
        }
    }
    let c = Config::parse(&format!("{b}PostUp = echo {PRIVATE}\n")).unwrap();
    assert!(!c.warnings[0].message.contains(PRIVATE));
}

#[test]
fn warnings_for_ignored_keys_and_mtu() {
    let text = format!(
        "{}Table = off\nSaveConfig = true\nFwMark = 0x1\nPreDown = x\nAddress = fd00::2/64\nMTU = 1000\n",
        base()
    );
    let c = Config::parse(&text).unwrap();
    let w: Vec<_> = c.warnings.iter().map(ToString::to_string).collect();
    assert!(w[0].starts_with("line 3: ignored: Table "), "{w:?}");
    assert!(w[1].starts_with("line 4: ignored: SaveConfig "), "{w:?}");
    assert!(w[2].starts_with("line 5: ignored: FwMark "), "{w:?}");
    assert_eq!(
        w[3],
        "line 6: ignored: PreDown runs commands, underpass does not"
    );
    assert!(w[4].starts_with("line 8: MTU 1000 is below 1280"), "{w:?}");
    assert_eq!(w.len(), 5);
}

#[test]
fn endpoints_parse_and_print_as_wg_does() {
    for (text, printed) in [
        ("1.2.3.4:51820", "1.2.3.4:51820"),
        (" [::1]:51820 ", "[::1]:51820"),
        ("[2001:db8::1]:1", "[2001:db8::1]:1"),
        ("vpn.example.com:51820", "vpn.example.com:51820"),
        ("VPN-1.Example.com.:00080", "VPN-1.Example.com.:80"),
        ("localhost:9", "localhost:9"),
    ] {
        let e: Endpoint = text.parse().unwrap();
        assert_eq!(e.to_string(), printed);
        assert_eq!(parse_endpoint(printed), Ok(e));
    }
    assert_eq!(parse_endpoint("h:7").unwrap().port(), 7);
    for bad in [
        "",
        ":1",
        "a:",
        "a:+1",
        "a:65536",
        "[::1]",
        "[::1]1",
        "[zz]:1",
        "[::1:1",
        "-a.com:1",
        "a..b:1",
        "1.2.3:4",
        "1.2.3.4:0",
        "::1",
        "a b:1",
        "é.com:1",
    ] {
        assert!(parse_endpoint(bad).is_err(), "{bad:?}");
    }
    let long = format!("{}.com:1", "a.".repeat(130));
    assert!(parse_endpoint(&long).is_err());
}

#[test]
fn odd_but_valid_layouts_are_accepted() {
    let text = format!(
        "\n  # lead\n\t[ Interface ]#c\nPrivateKey\t=\t{PRIVATE}#c\nListenPort = 0\n[Peer]\nPublicKey = {PEER_A}\nPersistentKeepalive = 0\n[Empty]\n[S]\nA=#c\nB = x=#y\nC = a#b\n"
    );
    let c = Config::parse(&text).unwrap();
    assert_eq!(c.interface.line, 3);
    assert_eq!(c.interface.listen_port, Some(0));
    assert_eq!(c.peers[0].persistent_keepalive, None);
    assert!(c.peers[0].allowed_ips.is_empty() && c.peers[0].endpoint.is_none());
    assert_eq!(c.sections[0].name, "Empty");
    assert!(c.sections[0].entries.is_empty());
    let values: Vec<_> = c.sections[1]
        .entries
        .iter()
        .map(|e| e.value.as_str())
        .collect();
    assert_eq!(values, ["", "x=", "a"]);
    assert_eq!(Config::parse(&c.to_wg_quick()), Ok(c));
    let crlf = format!("[Interface]\r\nPrivateKey = {PRIVATE}\r\n\r\n");
    assert!(Config::parse(&crlf).is_ok());
}

fn plausible_line() -> impl Strategy<Value = String> {
    let keys = prop::sample::select(vec![
        "PrivateKey",
        "PublicKey",
        "PresharedKey",
        "Address",
        "DNS",
        "MTU",
        "ListenPort",
        "Endpoint",
        "AllowedIPs",
        "PersistentKeepalive",
        "PostUp",
        "Table",
        "BindAddress",
        "Password",
        "",
        "é",
    ]);
    let values = prop::sample::select(vec![
        PRIVATE,
        PEER_A,
        PEER_B,
        PSK,
        "10.0.0.2/32",
        "fd00::1/64",
        "10.0.0.5/24",
        "1.1.1.1",
        "corp.example",
        "1420",
        "0",
        "off",
        "65535",
        "99999",
        "1.2.3.4:51820",
        "[::1]:1",
        "host:80",
        "fd00::1:80",
        "",
        ",",
        "a#b",
        "x, ,y",
        "\u{0}",
        "é",
    ]);
    prop_oneof![
        (keys, values, "[ \t]{0,2}", "( *#.*)?")
            .prop_map(|(k, v, ws, c)| format!("{k}{ws}={ws}{v}{c}")),
        prop::sample::select(vec![
            "[Interface]",
            "[Peer]",
            "[peer]",
            "[Socks5]",
            "[http]",
            "[Peer",
            "[]",
            "",
            "# comment",
            "garbage",
            "=",
            "[[x]]",
        ])
        .prop_map(String::from),
        ".{0,20}",
    ]
}

/// Mostly valid configs, with now and then a line from [`plausible_line`].
fn mostly_valid() -> impl Strategy<Value = String> {
    use prop::collection::vec;
    use prop::sample::select;
    let iface = select(vec![
        "Address = 10.0.0.2/32, fd00::2/128",
        "address=10.9.0.1",
        "DNS = 1.1.1.1, corp.example",
        "MTU = 1420",
        "ListenPort = 51820",
        "PostUp = echo hi # c",
        "",
        "Table = off",
    ]);
    let peer = select(vec![
        "AllowedIPs = 10.0.0.5/24",
        "AllowedIPs = ::/0, 0.0.0.0/0",
        "Endpoint = [::1]:5",
        "endpoint = vpn.example.com:51820",
        "PersistentKeepalive = 25",
        "PersistentKeepalive = off",
        "PersistentKeepalive = 0",
        "# comment",
        "",
    ]);
    let other = select(vec![
        "BindAddress = 127.0.0.1:1080",
        "Password = pa#ss # c",
        "Target = x",
        "a b = = c",
        "Empty =",
    ]);
    let peers = vec((any::<[u8; 32]>(), any::<bool>(), vec(peer, 0..5)), 0..3);
    let others = vec(
        (
            select(vec!["Socks5", "http", "TCPClientTunnel"]),
            vec(other, 0..3),
        ),
        0..3,
    );
    let noise = vec((any::<prop::sample::Index>(), plausible_line()), 0..2);
    (vec(iface, 0..5), peers, others, noise, any::<bool>()).prop_map(
        |(iface, peers, others, noise, crlf)| {
            let mut lines = vec!["[Interface]".to_string(), format!("PrivateKey = {PRIVATE}")];
            lines.extend(iface.into_iter().map(String::from));
            for (key, psk, body) in peers {
                lines.push("[Peer]".into());
                lines.push(format!("PublicKey = {}", PublicKey::from_bytes(key)));
                if psk {
                    lines.push(format!("PresharedKey = {PSK}"));
                }
                lines.extend(body.into_iter().map(String::from));
            }
            for (name, body) in others {
                lines.push(format!("[{name}]"));
                lines.extend(body.into_iter().map(String::from));
            }
            for (at, line) in noise {
                lines.insert(at.index(lines.len() + 1), line);
            }
            lines.join(if crlf { "\r\n" } else { "\n" })
        },
    )
}

/// What every outcome must satisfy: a config reads back from its own
/// text; an error points inside the text and quotes no key.
fn check(text: &str) -> Result<(), TestCaseError> {
    match Config::parse(text) {
        Ok(c) => prop_assert_eq!(Config::parse(&c.to_wg_quick()), Ok(c)),
        Err(e) => {
            prop_assert!(e.line <= text.lines().count());
            let message = e.to_string();
            for secret in [PRIVATE, PEER_A, PSK] {
                prop_assert!(!message.contains(&secret[..20]), "{}", message);
            }
        }
    }
    Ok(())
}

prop_compose! {
    fn any_config()(
        secret in any::<[u8; 32]>(),
        addresses in prop::collection::vec(any::<IpAddr>().prop_flat_map(|ip| {
            let max: u8 = if ip.is_ipv4() { 32 } else { 128 };
            (Just(ip), 0..=max)
        }), 0..3),
        dns in prop::collection::vec(any::<IpAddr>(), 0..3),
        search in prop::collection::vec("[a-z][a-z0-9-]{0,8}[a-z](\\.[a-z]{2,5}){0,2}", 0..2),
        mtu in prop::option::of(576u16..),
        listen_port in any::<Option<u16>>(),
        check_alive in (prop::collection::vec(any::<IpAddr>(), 0..3), prop::option::of(1u16..))
            .prop_map(|(ips, interval)| { let interval = interval.filter(|_| !ips.is_empty()); (ips, interval) }),
        peers in prop::collection::vec((
            any::<[u8; 32]>(),
            prop::option::of(any::<[u8; 32]>()),
            prop::option::of(prop_oneof![
                (any::<IpAddr>(), 1u16..).prop_map(|(ip, port)| Endpoint::Addr(SocketAddr::new(ip, port))),
                ("[a-z]{1,10}(\\.[a-z]([a-z0-9-]{0,4}[a-z])?){0,3}", 1u16..).prop_map(|(host, port)| Endpoint::Host { host, port }),
            ]),
            prop::collection::vec((any::<IpAddr>(), 0u8..=128), 0..4),
            prop::option::of(1u16..),
        ), 0..4),
        sections in prop::collection::vec((
            "[A-Za-z][A-Za-z0-9]{0,10}",
            prop::collection::vec(("[A-Za-z][A-Za-z0-9 ]{0,8}[A-Za-z0-9]", "[!-~]([ -~]{0,20}[!-~])?"), 0..4),
        ), 0..3),
    ) -> Config {
        let net = |ip: IpAddr, len: u8| IpNet::new(ip, len.min(if ip.is_ipv4() { 32 } else { 128 })).unwrap();
        let mut peers: Vec<PeerConfig> = peers.into_iter().map(|(pk, psk, endpoint, ips, keepalive)| PeerConfig {
            public_key: PublicKey::from_bytes(pk),
            preshared_key: psk.map(PresharedKey::from_bytes),
            endpoint,
            allowed_ips: ips.into_iter().map(|(ip, len)| net(ip, len).trunc()).collect(),
            persistent_keepalive: keepalive,
            line: 0,
        }).collect();
        peers.dedup_by_key(|p| p.public_key);
        Config {
            interface: Interface {
                private_key: PrivateKey::from_bytes(secret),
                addresses: addresses.into_iter().map(|(ip, len)| net(ip, len)).collect(),
                dns, dns_search: search, mtu, listen_port, line: 0,
                check_alive: check_alive.0, check_alive_interval: check_alive.1,
            },
            peers,
            sections: sections.into_iter()
                .filter(|(name, _)| !["interface", "peer"].contains(&name.to_ascii_lowercase().as_str()))
                .map(|(name, entries)| Section {
                    name,
                    line: 0,
                    entries: entries.into_iter()
                        .map(|(key, value)| {
                            // Neither backquotes nor triple quotes can hold a
                            // value with both in it.
                            let value = if ini_value(&ini_quoted(&value)).0 == value { value } else { value.replace('`', "x") };
                            Entry { key, value, line: 0 }
                        })
                        .collect(),
                }).collect(),
            warnings: Vec::new(),
        }
    }
}

proptest! {
    #[test]
    fn any_text_is_refused_or_read_without_panicking(text in any::<String>()) {
        check(&text)?;
        let _ = parse_endpoint(&text);
    }

    #[test]
    fn plausible_lines_never_panic_and_what_parses_round_trips(
        lines in prop::collection::vec(plausible_line(), 0..16),
        crlf in any::<bool>(),
    ) {
        check(&lines.join(if crlf { "\r\n" } else { "\n" }))?;
    }

    #[test]
    fn mostly_valid_configs_never_panic_and_round_trip(text in mostly_valid()) {
        check(&text)?;
    }

    #[test]
    fn generated_configs_round_trip(c in any_config()) {
        prop_assume!(c.peers.iter().all(|p| p.public_key != c.interface.public_key()));
        let text = c.to_wg_quick();
        prop_assert_eq!(Config::parse(&text), Ok(c), "{}", text);
    }
}

#[test]
fn values_read_as_wireproxy_reads_them() {
    let cases = [
        ("plain", "plain", None),
        ("  spaced  ", "spaced", None),
        ("pa#ss", "pa", Some('#')),
        ("pa;ss", "pa", Some(';')),
        ("value # comment", "value", None),
        ("value ;comment", "value", None),
        ("`pa#ss` # kept", "pa#ss", None),
        ("\"\"\"a;b`c\"\"\"", "a;b`c", None),
        ("\"quoted\"", "quoted", None),
        ("'single'", "single", None),
        ("\"pa#ss\"", "\"pa", Some('#')),
        ("'a'b'", "'a'b'", None),
        ("$$HOME", "$$HOME", None),
        ("#all comment", "", None),
        ("`unclosed", "`unclosed", None),
    ];
    for (raw, value, glued) in cases {
        assert_eq!(ini_value(raw), (value.to_string(), glued), "{raw}");
    }
    for value in ["a#b", "a;b", "'q'", "\"q\"", " x ", "a`b#", "plain"] {
        assert_eq!(ini_value(&ini_quoted(value)).0, value, "{value}");
    }
}

#[test]
fn semicolon_lines_and_header_comments_are_comments() {
    let text = format!("; wireproxy style\n[Interface] ; the interface\nPrivateKey = {PRIVATE} ; key\nAddress = 10.0.0.2/32;home\n[Socks5]\n; BindAddress = 1.2.3.4:1\nBindAddress = `127.0.0.1:1080`\n");
    let c = Config::parse(&text).unwrap();
    assert_eq!(c.interface.addresses, [net("10.0.0.2/32")]);
    assert_eq!(c.sections[0].entries.len(), 1);
    assert_eq!(c.sections[0].entries[0].value, "127.0.0.1:1080");
}

#[test]
fn check_alive_is_read_and_checked() {
    let c = Config::parse(&format!(
        "{}CheckAlive = 10.0.0.1, fd00::1\nCheckAlive = 1.1.1.1\nCheckAliveInterval = 3\n",
        base()
    ))
    .unwrap();
    let ips: Vec<IpAddr> = ["10.0.0.1", "fd00::1", "1.1.1.1"]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
    assert_eq!(c.interface.check_alive, ips);
    assert_eq!(c.interface.check_alive_interval, Some(3));
    assert_eq!(Config::parse(&c.to_wg_quick()), Ok(c));

    let e = Config::parse(&format!("{}CheckAliveInterval = 3\n", base())).unwrap_err();
    assert_eq!(
        (e.line, e.kind),
        (3, ConfigErrorKind::IntervalWithoutCheckAlive)
    );
    let e = Config::parse(&format!("{}CheckAlive = example.com\n", base())).unwrap_err();
    assert!(e.to_string().contains("is not an IP address"), "{e}");
    let e = Config::parse(&format!(
        "{}CheckAlive = 10.0.0.1\nCheckAliveInterval = 0\n",
        base()
    ))
    .unwrap_err();
    assert!(e.to_string().contains("from 1 to 65535"), "{e}");
}
