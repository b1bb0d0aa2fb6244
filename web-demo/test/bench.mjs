// One browser benchmark run in Debian's chromium, started by
// tests/src/bin/browser_bench.rs: connect the page's Tunnel through the
// relay, download DOWN_URL and upload BYTES to UP_URL through it, print one
// line `RESULT {...}` with Mbit/s each way and the CPU seconds each process
// (Chromium's by type, the relay, the gateway) spent in each direction.
//
// Environment:
//   PAGE_URL  the relay's page        CONFIG  the client config
//   TOKEN     the relay token         BYTES   bytes each way
//   DOWN_URL  BYTES to download       UP_URL  where to POST BYTES
//   CONNECT   JSON merged into Tunnel.connect's options (a transport's
//             own options: where WebTransport's row puts what it needs)
//   PIDS      JSON {name: pid} of other processes to account CPU time to
//   CHROMIUM_ARGS  more command-line flags for Chromium, space-separated
//   PROFILE   optional path prefix: record the renderer's main thread
//             (where the engine runs) with the CPU profiler during each
//             direction and write PROFILE-down.cpuprofile and
//             PROFILE-up.cpuprofile (test/cpuprofile-top.mjs sums them);
//             PROFILE_INTERVAL_US the sampling interval (100)
//   TRACE     optional path prefix: record a Chromium trace (tasks and
//             their thread time, all processes) during each direction
//             into TRACE-down.trace.json and TRACE-up.trace.json
//             (test/trace-tasks.mjs sums the renderer's main thread)
//   COUNT_SECONDS  instead of a tunnel: open WebTransport to the relay
//             as a bare page would, send one datagram, and count the
//             datagrams read for this many seconds from the first (how
//             many Chromium hands a page that does nothing else with
//             them); the RESULT has `count` and nothing else
import { spawn } from "node:child_process";
import { mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const env = (name) => {
  const v = process.env[name];
  if (v === undefined) throw new Error(`${name} is not set`);
  return v;
};
const TICK = 100; // clock ticks per second (USER_HZ)

/// CPU seconds (user + system) of `pid`, or 0 when it is gone.
function cpuSeconds(pid) {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    return (Number(fields[11]) + Number(fields[12])) / TICK;
  } catch {
    return 0;
  }
}

/// Chromium's processes under this one, by kind: browser, renderer,
/// network (the utility process that runs the network service), gpu, other.
function chromiumProcesses() {
  const parent = new Map();
  const kind = new Map();
  for (const name of readdirSync("/proc")) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = readFileSync(`/proc/${name}/stat`, "utf8");
      parent.set(Number(name), Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]));
      const cmd = readFileSync(`/proc/${name}/cmdline`, "utf8");
      const type = /--type=([a-z-]+)/.exec(cmd)?.[1];
      const k = !type ? "browser" : type === "utility" && /NetworkService|network\.mojom/.test(cmd) ? "network" : type === "renderer" ? "renderer" : type === "gpu-process" ? "gpu" : "other";
      kind.set(Number(name), k);
    } catch { /* gone meanwhile */ }
  }
  const mine = new Map();
  for (const [pid] of parent) {
    for (let p = parent.get(pid); p; p = parent.get(p)) {
      if (p === process.pid) { mine.set(pid, kind.get(pid)); break; }
    }
  }
  return mine;
}

const others = JSON.parse(process.env.PIDS || "{}");
function sample() {
  const out = {};
  for (const [pid, k] of chromiumProcesses()) {
    out[`chromium ${k}`] = (out[`chromium ${k}`] || 0) + cpuSeconds(pid);
  }
  for (const [name, pid] of Object.entries(others)) out[name] = cpuSeconds(pid);
  return out;
}
const diff = (a, b) => Object.fromEntries(Object.keys(b).map((k) => [k, +(b[k] - (a[k] || 0)).toFixed(2)]));

// Chromium is driven over its DevTools pipe with only Runtime.evaluate:
// playwright would turn on the Network domain, which copies every
// WebSocket message to the driver and costs the browser more than the
// messages themselves.
// Headless Chromium also starts a renderer for its omnibox popup's WebUI
// (--top-chrome-webui), ~0.9 CPU s on the core the page has; these
// features keep it from starting (smaller subsets did not).
const profile = mkdtempSync(join(tmpdir(), "underpass-bench-"));
const chrome = spawn(process.env.CHROMIUM || "/usr/bin/chromium", [
  "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
  "--disable-background-networking", "--disable-component-update", "--disable-sync",
  "--disable-features=WebUIOmniboxPopup,WebUIOmniboxFullPopup,WebUIOmniboxAimPopup,PreloadTopChromeWebUI,PreloadTopChromeWebUILessNavigations",
  ...(process.env.CHROMIUM_ARGS || "").split(" ").filter(Boolean),
  `--user-data-dir=${profile}`, "--remote-debugging-pipe", env("PAGE_URL"),
], { stdio: ["ignore", "ignore", "ignore", "pipe", "pipe"] });
let nextId = 1;
const pending = new Map();
const events = new Map(); // CDP event method -> its handler
let inbox = "";
chrome.stdio[4].on("data", (chunk) => {
  // Searched from the new chunk on: a CPU profile is megabytes.
  let from = inbox.length;
  inbox += chunk.toString("utf8");
  let end;
  while ((end = inbox.indexOf("\0", from)) >= 0) {
    const message = JSON.parse(inbox.slice(0, end));
    inbox = inbox.slice(end + 1);
    from = 0;
    if (message.method) events.get(message.method)?.(message.params);
    const waiter = pending.get(message.id);
    if (!waiter) continue;
    pending.delete(message.id);
    if (message.error) waiter.reject(new Error(`${message.error.message}`));
    else waiter.resolve(message.result);
  }
});
function send(method, params = {}, sessionId = undefined) {
  const id = nextId++;
  chrome.stdio[3].write(JSON.stringify({ id, method, params, sessionId }) + "\0");
  return new Promise((resolve, reject) => pending.set(id, { resolve, reject }));
}
let session = null;
/// Runs `fn(arg)` in the page and returns its (JSON) value.
async function evaluate(fn, arg) {
  const r = await send("Runtime.evaluate", {
    expression: `(${fn})(${JSON.stringify(arg)})`,
    awaitPromise: true,
    returnByValue: true,
  }, session);
  if (r.exceptionDetails) {
    throw new Error(r.exceptionDetails.exception?.description || r.exceptionDetails.text);
  }
  return r.result.value;
}
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

let failed = null;
const result = {};
try {
  let page = null;
  for (let i = 0; i < 200 && !page; i++) {
    const { targetInfos } = await send("Target.getTargets");
    page = targetInfos.find((t) => t.type === "page" && t.url.startsWith(env("PAGE_URL")));
    if (!page) await sleep(100);
  }
  if (!page) throw new Error("Chromium opened no page");
  ({ sessionId: session } = await send("Target.attachToTarget", { targetId: page.targetId, flatten: true }));
  for (let i = 0; !(await evaluate(() => document.body?.dataset.ready === "true")); i++) {
    if (i > 200) throw new Error("the wasm module did not load in 20 s");
    await sleep(100);
  }
  if (process.env.COUNT_SECONDS) {
    const before = sample();
    result.count = await evaluate(async ([token, seconds]) => {
      const info = await (await fetch(`/webtransport?token=${encodeURIComponent(token)}`)).json();
      const serverCertificateHashes = info.certificateHashes.map((h) => ({
        algorithm: "sha-256",
        value: new Uint8Array(h.match(/../g).map((b) => parseInt(b, 16))),
      }));
      const wt = new WebTransport(`${info.url}?token=${encodeURIComponent(token)}`, { serverCertificateHashes });
      await wt.ready;
      // As the tunnel sets them.
      wt.datagrams.incomingHighWaterMark = 4096;
      wt.datagrams.incomingMaxAge = 500;
      const reader = wt.datagrams.readable.getReader();
      const writer = wt.datagrams.writable.getWriter();
      await writer.write(new Uint8Array([1]));
      let n = 0;
      let bytes = 0;
      let first = 0;
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        if (n === 0) {
          first = performance.now();
          setTimeout(() => reader.cancel().catch(() => {}), seconds * 1000);
        }
        n++;
        bytes += value.byteLength;
      }
      const elapsed = (performance.now() - first) / 1000;
      wt.close();
      return { datagrams: n, bytes, seconds: elapsed, perSecond: Math.round(n / elapsed) };
    }, [env("TOKEN"), Number(process.env.COUNT_SECONDS)]);
    result.count.cpu = diff(before, sample());
  } else {
    const options = { config: env("CONFIG"), token: env("TOKEN"), ...JSON.parse(process.env.CONNECT || "{}") };
    const bytes = Number(env("BYTES"));
    result.stats = await evaluate(async (options) => {
      const relay = new URL("relay", location.href);
      relay.protocol = "ws:";
      const t = await window.underpass.Tunnel.connect({ relayUrl: relay.href, ...options });
      window.underpass.tunnel = t;
      return t.stats();
    }, options);
    // One direction at a time, each with its own CPU account.
    // The engine's turns are counted apart from the rest of the renderer.
    const engineSeconds = () => evaluate(() => window.underpass.tunnel.stats().engineMs / 1000);
    const run = async (what, fn, arg) => {
      if (process.env.PROFILE) {
        await send("Profiler.enable", {}, session);
        await send("Profiler.setSamplingInterval", { interval: Number(process.env.PROFILE_INTERVAL_US || 100) }, session);
        await send("Profiler.start", {}, session);
      }
      if (process.env.TRACE) {
        await send("Tracing.start", {
          transferMode: "ReturnAsStream",
          traceConfig: { includedCategories: ["toplevel", "toplevel.flow", "mojom", "blink", "v8", "v8.execute", "disabled-by-default-devtools.timeline"] },
        });
      }
      const before = sample();
      const engineBefore = await engineSeconds();
      const statsBefore = await evaluate(() => window.underpass.tunnel.stats());
      const r = await evaluate(fn, arg);
      const cpu = diff(before, sample());
      if (process.env.PROFILE) {
        const { profile } = await send("Profiler.stop", {}, session);
        writeFileSync(`${process.env.PROFILE}-${what}.cpuprofile`, JSON.stringify(profile));
      }
      if (process.env.TRACE) {
        const complete = new Promise((resolve) => events.set("Tracing.tracingComplete", resolve));
        await send("Tracing.end");
        const { stream } = await complete;
        const parts = [];
        for (;;) {
          const { data, eof, base64Encoded } = await send("IO.read", { handle: stream, size: 1 << 20 });
          parts.push(base64Encoded ? Buffer.from(data, "base64") : Buffer.from(data, "utf8"));
          if (eof) break;
        }
        await send("IO.close", { handle: stream });
        writeFileSync(`${process.env.TRACE}-${what}.trace.json`, Buffer.concat(parts));
      }
      cpu["wasm engine turns"] = +((await engineSeconds()) - engineBefore).toFixed(2);
      const st = await evaluate(() => window.underpass.tunnel.stats());
      const perMessage = (d, m) => m > 0 ? +(d / m).toFixed(1) : null;
      r.datagramsPerMessage = {
        in: perMessage(st.rxPackets - statsBefore.rxPackets, st.rxMessages - statsBefore.rxMessages),
        out: perMessage(st.txPackets - statsBefore.txPackets, st.txMessages - statsBefore.txMessages),
      };
      r.datagrams = { in: st.rxPackets - statsBefore.rxPackets, out: st.txPackets - statsBefore.txPackets };
      result[what] = { ...r, mbps: +(r.bytes * 8 / r.seconds / 1e6).toFixed(1), cpu };
    };
    await run("down", async (url) => {
      const started = performance.now();
      const r = await window.underpass.tunnel.fetch(url, { method: "GET" });
      if (r.status !== 200) throw new Error(`download: HTTP ${r.status}`);
      return { bytes: r.body.length, seconds: (performance.now() - started) / 1000 };
    }, env("DOWN_URL"));
    await run("up", async ([url, bytes]) => {
      const body = new Uint8Array(bytes).fill(0x5a);
      const started = performance.now();
      const r = await window.underpass.tunnel.fetch(url, { method: "POST", body });
      if (r.status !== 200) throw new Error(`upload: HTTP ${r.status}`);
      return { bytes, seconds: (performance.now() - started) / 1000 };
    }, [env("UP_URL"), bytes]);
    result.statsAfter = await evaluate(() => window.underpass.tunnel.stats());
  }
} catch (e) {
  failed = e;
} finally {
  await send("Browser.close").catch(() => {});
  await new Promise((resolve) => { if (chrome.exitCode !== null) resolve(); else chrome.on("exit", resolve); setTimeout(resolve, 5000); });
  chrome.kill();
  rmSync(profile, { recursive: true, force: true });
}
console.log(`RESULT ${JSON.stringify(result)}`);
if (failed) {
  console.error(`FAILED: ${failed.message}`);
  process.exit(1);
}
