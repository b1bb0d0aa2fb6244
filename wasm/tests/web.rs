//! The JS API in headless chromium (wasm-bindgen-test-runner with Debian's
//! chromedriver): bad input is a rejected promise with a message, and,
//! with a demo relay running (wasm/run-browser-tests.sh starts one), a
//! tunnel fetches, echoes, resolves and closes.
#![cfg(target_arch = "wasm32")]

use js_sys::{Reflect, Uint8Array, JSON};
use underpass_wasm::Tunnel;
use wasm_bindgen::prelude::*;
use wasm_bindgen_test::*;

wasm_bindgen_test_configure!(run_in_browser);

fn options(pairs: &[(&str, &str)]) -> JsValue {
    let o = js_sys::Object::new();
    for (k, v) in pairs {
        Reflect::set(&o, &(*k).into(), &(*v).into()).unwrap();
    }
    o.into()
}

async fn connect_error(pairs: &[(&str, &str)]) -> String {
    match Tunnel::connect(options(pairs)).await {
        Ok(_) => panic!("connect with {pairs:?} should fail"),
        Err(e) => {
            let v: JsValue = e.into();
            Reflect::get(&v, &"message".into())
                .unwrap()
                .as_string()
                .unwrap()
        }
    }
}

const KEY_A: &str = "yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=";
const KEY_B: &str = "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=";
const KEY_C: &str = "TrMvSoP4jYQlY6RIzBgbssQqY3vxI2Pi+y71lOWWXX0=";

fn config(peers: usize, endpoint: bool) -> String {
    let mut c = format!("[Interface]\nPrivateKey = {KEY_A}\nAddress = 10.9.0.2/32\n");
    for key in [KEY_B, KEY_C].iter().take(peers) {
        c.push_str(&format!(
            "\n[Peer]\nPublicKey = {key}\nAllowedIPs = 0.0.0.0/0\n"
        ));
        if endpoint {
            c.push_str("Endpoint = 127.0.0.1:9\n");
        }
    }
    c
}

#[wasm_bindgen_test]
async fn bad_options_and_configs_reject_with_a_reason() {
    let m = connect_error(&[("relayUrl", "ws://127.0.0.1:9/relay")]).await;
    assert!(m.contains("config is missing"), "{m}");
    let m = connect_error(&[
        ("config", "[Interface]\nPrivateKey = nope\n"),
        ("relayUrl", "ws://x/relay"),
    ])
    .await;
    assert!(m.contains("line 2"), "{m}");
    assert!(!m.contains("nope") || m.contains("PrivateKey"), "{m}");
    let m = connect_error(&[("config", &config(0, true)), ("relayUrl", "ws://x/relay")]).await;
    assert!(m.contains("[Peer] is needed"), "{m}");
    let m = connect_error(&[("config", &config(2, true)), ("relayUrl", "ws://x/relay")]).await;
    assert!(m.contains("one [Peer]"), "{m}");
    let m = connect_error(&[("config", &config(1, false)), ("relayUrl", "ws://x/relay")]).await;
    assert!(m.contains("needs an Endpoint"), "{m}");
    let m = connect_error(&[("config", &config(1, true)), ("relayUrl", "http://x/relay")]).await;
    assert!(m.contains("ws://"), "{m}");
}

#[wasm_bindgen_test]
async fn an_unreachable_relay_rejects() {
    let m = connect_error(&[
        ("config", &config(1, true)),
        ("relayUrl", "ws://127.0.0.1:9/relay"),
    ])
    .await;
    assert!(m.contains("cannot connect to the relay"), "{m}");
}

/// The demo relay's WebSocket URL and its `/demo` answer (`{ config,
/// echo, httpUrl, bytesUrl }`), when one runs.
fn demo() -> Option<(&'static str, JsValue)> {
    let relay = option_env!("UNDERPASS_TEST_RELAY")?;
    let text = option_env!("UNDERPASS_TEST_DEMO")?;
    Some((
        relay,
        JSON::parse(text).expect("UNDERPASS_TEST_DEMO is JSON"),
    ))
}

fn field(v: &JsValue, k: &str) -> String {
    Reflect::get(v, &k.into())
        .unwrap()
        .as_string()
        .unwrap_or_default()
}

async fn message_of<T>(r: Result<T, JsError>) -> String {
    match r {
        Ok(_) => panic!("expected an error"),
        Err(e) => {
            let v: JsValue = e.into();
            Reflect::get(&v, &"message".into())
                .unwrap()
                .as_string()
                .unwrap()
        }
    }
}

#[wasm_bindgen_test]
async fn a_tunnel_through_the_demo_relay_fetches_echoes_resolves_and_closes() {
    let Some((relay, demo)) = demo() else {
        console_log!("skipped: no demo relay (wasm/run-browser-tests.sh starts one)");
        return;
    };
    let t = Tunnel::connect(options(&[
        ("config", &field(&demo, "config")),
        ("relayUrl", relay),
    ]))
    .await
    .map_err(JsValue::from)
    .expect("connect");
    let stats = t.stats();
    assert_eq!(field(&stats, "state"), "up");

    // HTTP with a body whose every byte is known.
    let r = t
        .fetch(field(&demo, "bytesUrl") + "70001", JsValue::UNDEFINED)
        .await
        .map_err(JsValue::from)
        .unwrap();
    assert_eq!(
        Reflect::get(&r, &"status".into()).unwrap().as_f64(),
        Some(200.0)
    );
    let body = Uint8Array::from(Reflect::get(&r, &"body".into()).unwrap()).to_vec();
    assert_eq!(body.len(), 70001);
    assert!(
        body.iter().enumerate().all(|(i, b)| *b == (i % 251) as u8),
        "body corrupted"
    );

    // Raw TCP both ways, with half-close.
    let echo = field(&demo, "echo");
    let (host, port) = echo.rsplit_once(':').unwrap();
    let s = t
        .open_tcp(host.into(), port.parse().unwrap())
        .await
        .map_err(JsValue::from)
        .unwrap();
    let sent: Vec<u8> = (0..300_000u32).map(|i| (i * 31 % 256) as u8).collect();
    s.write(sent.clone()).await.map_err(JsValue::from).unwrap();
    s.close_write();
    let mut got = Vec::new();
    loop {
        let chunk = s.read().await.map_err(JsValue::from).unwrap();
        if chunk.is_null() {
            break;
        }
        got.extend_from_slice(&Uint8Array::from(chunk).to_vec());
    }
    assert!(
        got == sent,
        "echo returned {} bytes, not the {} sent",
        got.len(),
        sent.len()
    );
    s.close();

    // DNS through the tunnel: the gateway answers from the host.
    let addrs = t
        .lookup("localhost".into())
        .await
        .map_err(JsValue::from)
        .unwrap();
    assert!(
        addrs
            .iter()
            .any(|a| a.as_string().as_deref() == Some("127.0.0.1")),
        "{addrs:?}"
    );
    let m = message_of(t.lookup("no-such-name.invalid".into()).await).await;
    assert!(m.contains("NXDOMAIN") || m.contains("no such name"), "{m}");

    // A port the demo gateway's policy does not allow is refused, at once
    // and saying why (the gateway's ICMP "administratively prohibited").
    let m = message_of(t.open_tcp("127.0.0.1".into(), 9).await).await;
    assert!(m.contains("not allowed by the gateway's policy"), "{m}");
    let m = message_of(
        t.fetch("https://127.0.0.1/".into(), JsValue::UNDEFINED)
            .await,
    )
    .await;
    assert!(m.contains("TLS"), "{m}");

    t.close();
    assert_eq!(field(&t.stats(), "state"), "closed");
    let m = message_of(t.open_tcp("127.0.0.1".into(), 80).await).await;
    assert!(m.contains("closed"), "{m}");
}
