// The demo page: everything the user does goes through the wasm Tunnel.
import init, { Tunnel } from "./pkg/underpass_wasm.js";

const $ = (id) => document.getElementById(id);
const BENCH_BYTES = 64 * 1024 * 1024;
let tunnel = null;
let statsTimer = null;

function setState(state, detail = "") {
  $("state").textContent = state;
  $("state").dataset.state = state;
  $("state-detail").textContent = detail;
  const up = state === "up";
  for (const id of ["fetch", "tcp-send", "bench", "disconnect"]) $(id).disabled = !up;
  $("connect").disabled = up || state === "connecting";
}

function formatBytes(n) {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KiB`;
  return `${(n / 1024 / 1024).toFixed(1)} MiB`;
}

async function sha256(bytes) {
  const digest = await crypto.subtle.digest("SHA-256", bytes);
  return [...new Uint8Array(digest)].map((b) => b.toString(16).padStart(2, "0")).join("");
}

function showStats() {
  if (!tunnel) return;
  const s = tunnel.stats();
  if (s.state === "closed") {
    setState("closed", s.closedBecause || "");
    stopStats();
    return;
  }
  const rows = [
    ["handshake", s.handshakeAgeMs === undefined ? "none yet" : `${(s.handshakeAgeMs / 1000).toFixed(0)} s ago`],
    ["handshakes", s.handshakes],
    ["handshake RTT", s.rttMs === undefined ? "—" : `${s.rttMs.toFixed(1)} ms`],
    ["sent", `${formatBytes(s.txBytes)} · ${s.txPackets} pkts`],
    ["received", `${formatBytes(s.rxBytes)} · ${s.rxPackets} pkts`],
    ["TCP streams", s.tcpConnections],
    ["transport", `${s.transport}${s.transport === "websocket" ? (s.batched ? " · batched" : " · one datagram per message") : (s.downloadStream ? " · a stream both ways" : s.batched ? " · QUIC datagrams down, a stream up" : " · QUIC datagrams")}`],
    ["tunnel address", s.tunnelAddresses.join(", ")],
  ];
  $("stats").replaceChildren(...rows.map(([k, v]) => {
    const div = document.createElement("div");
    const dt = document.createElement("dt");
    const dd = document.createElement("dd");
    dt.textContent = k;
    dd.textContent = String(v);
    div.append(dt, dd);
    return div;
  }));
  if (s.state !== $("state").dataset.state) setState(s.state);
}

function stopStats() {
  clearInterval(statsTimer);
  statsTimer = null;
}

async function connect() {
  setState("connecting", "opening the relay and handshaking…");
  try {
    tunnel = await Tunnel.connect({
      config: $("config").value,
      relayUrl: $("relay").value.trim(),
      token: $("token").value,
      // `?transport=webtransport` (or `prefer-webtransport`) and
      // `?webtransportDownload=datagrams` in the page's URL, for trying
      // them out; by default the batched WebSocket.
      transport: new URLSearchParams(location.search).get("transport") || undefined,
      webtransportDownload: new URLSearchParams(location.search).get("webtransportDownload") || undefined,
    });
    window.underpass.tunnel = tunnel;
    setState("up");
    showStats();
    statsTimer = setInterval(showStats, 500);
  } catch (e) {
    tunnel = null;
    setState("error", e.message || String(e));
  }
}

function disconnect() {
  if (tunnel) tunnel.close();
  showStats();
  tunnel = null;
  stopStats();
  setState("disconnected");
}

async function useDemo() {
  try {
    // The relay hands the demo config only to holders of its token.
    const token = $("token").value;
    const r = await fetch(token ? `demo?token=${encodeURIComponent(token)}` : "demo", { cache: "no-store" });
    if (r.status === 404) throw new Error("the relay has no demo gateway (404); start it with underpass relay --demo");
    if (r.status === 401) throw new Error("the relay wants its token for the demo config: fill in Token first");
    if (!r.ok) throw new Error(`the relay refused the demo config (${r.status}): ${(await r.text()).trim()}`);
    const demo = await r.json();
    $("config").value = demo.config;
    $("url").value = demo.httpUrl;
    $("tcp-target").value = demo.echo;
    $("bench-url").value = demo.bytesUrl + BENCH_BYTES;
    $("state-detail").textContent = "demo config loaded: press Connect";
  } catch (e) {
    setState("error", e.message);
  }
}

async function doFetch() {
  const meta = $("fetch-meta");
  meta.className = "meta";
  meta.textContent = "fetching…";
  $("fetch-headers").textContent = "";
  $("fetch-body").textContent = "";
  const method = $("method").value;
  const init = { method };
  if (!["GET", "HEAD"].includes(method) && $("body").value) init.body = $("body").value;
  const started = performance.now();
  try {
    const r = await tunnel.fetch($("url").value, init);
    const ms = performance.now() - started;
    const hash = await sha256(r.body);
    meta.textContent = `${r.status} ${r.statusText} · ${r.body.length} bytes · ${ms.toFixed(0)} ms · SHA-256 ${hash}`;
    meta.dataset.status = r.status;
    meta.dataset.length = r.body.length;
    meta.dataset.sha256 = hash;
    $("fetch-headers").textContent = r.headers.map(([k, v]) => `${k}: ${v}`).join("\n");
    const shown = r.body.subarray(0, 64 * 1024);
    $("fetch-body").textContent = new TextDecoder().decode(shown) + (r.body.length > shown.length ? "\n…" : "");
  } catch (e) {
    meta.className = "meta error";
    meta.textContent = e.message;
    meta.dataset.status = "error";
  }
}

async function tcpSend() {
  const log = $("tcp-log");
  const target = $("tcp-target").value.trim();
  const at = target.lastIndexOf(":");
  const host = target.slice(0, at), port = Number(target.slice(at + 1));
  if (at < 0 || !port) {
    log.textContent += `"${target}" is not host:port\n`;
    return;
  }
  try {
    const s = await tunnel.openTcp(host, port);
    const message = new TextEncoder().encode($("tcp-message").value);
    await s.write(message);
    s.closeWrite();
    const chunks = [];
    for (let c = await s.read(); c !== null; c = await s.read()) chunks.push(c);
    s.close();
    const reply = new TextDecoder().decode(await new Blob(chunks).arrayBuffer());
    log.textContent += `→ ${s.remoteAddress}: ${$("tcp-message").value}\n← ${reply}\n`;
  } catch (e) {
    log.textContent += `error: ${e.message}\n`;
  }
}

async function bench() {
  const out = $("bench-result");
  out.className = "meta";
  out.textContent = "downloading…";
  const started = performance.now();
  try {
    const r = await tunnel.fetch($("bench-url").value, { method: "GET" });
    const seconds = (performance.now() - started) / 1000;
    if (r.status !== 200) throw new Error(`HTTP ${r.status}`);
    const mbps = r.body.length / seconds / 1e6;
    out.textContent = `${formatBytes(r.body.length)} in ${seconds.toFixed(2)} s: ${mbps.toFixed(1)} MB/s (${(mbps * 8).toFixed(0)} Mbit/s)`;
    out.dataset.bytes = r.body.length;
    out.dataset.mbps = mbps.toFixed(2);
  } catch (e) {
    out.className = "meta error";
    out.textContent = e.message;
    out.dataset.mbps = "error";
  }
}

window.underpass = { Tunnel, tunnel: null };
const relay = new URL("relay", location.href);
relay.protocol = location.protocol === "https:" ? "wss:" : "ws:";
$("relay").value = relay.href;
$("connect").onclick = connect;
$("disconnect").onclick = disconnect;
$("use-demo").onclick = useDemo;
$("fetch").onclick = doFetch;
$("tcp-send").onclick = tcpSend;
$("bench").onclick = bench;
setState("disconnected");
init().then(
  () => document.body.dataset.ready = "true",
  (e) => setState("error", `the WebAssembly module did not load: ${e.message}`),
);
