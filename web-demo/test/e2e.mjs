// The web demo, end to end in Debian's chromium: connect through the relay,
// fetch a known body through the tunnel and compare it with the same URL
// fetched directly, echo over raw TCP, see a refused connection reported,
// move 64 MiB each way intact, run the 64 MiB benchmark, save a
// screenshot.
//
// Started by tests/tests/browser.rs with, in the environment:
//   PAGE_URL   the relay's page          CONFIG    the client config
//   TOKEN      the relay token           FETCH_URL a URL behind the gateway
//   ECHO       host:port of a TCP echo   BENCH_URL a URL of >= 64 MiB
//   CLOSED_URL a URL nothing listens on  OUT_DIR   where the screenshot goes
//   BIG_URL    64 MiB of known content   SINK_URL  where to POST them back
//   SINK_WANT  what SINK_URL answers for them ("LEN CHECKSUM")
//   TRANSPORT  what the page must end up on: "webtransport-stream" (a
//              stream both ways), "webtransport-datagrams-down" (uploads
//              on a stream), "webtransport-datagrams" (both ways),
//              "websocket-batched" or "websocket-plain"; PAGE_URL's query
//              says what the page asks for
//
// QUIC stays enabled: WebTransport runs on it.
import { chromium } from "playwright-core";
import { createHash } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const env = (name) => {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set`);
  return v;
};
const ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
  "--disable-background-networking", "--disable-component-update", "--disable-sync"];

const profile = mkdtempSync(join(tmpdir(), "underpass-chromium-"));
const context = await chromium.launchPersistentContext(profile, {
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  args: ARGS,
  viewport: { width: 900, height: 1400 },
});
const result = {};
let failed = null;
const page = context.pages()[0] || await context.newPage();
const consoleLines = [];
page.on("console", (m) => consoleLines.push(`${m.type()}: ${m.text()}`));
page.on("pageerror", (e) => consoleLines.push(`pageerror: ${e.message}`));

async function waitAttr(selector, attr, ms, what) {
  try {
    await page.waitForFunction(([s, a]) => document.querySelector(s)?.getAttribute(a), [selector, attr], { timeout: ms, polling: 200 });
  } catch {
    throw new Error(`${what}: nothing after ${ms / 1000} s`);
  }
  return page.getAttribute(selector, attr);
}

try {
  await page.goto(env("PAGE_URL"));
  await waitAttr("body", "data-ready", 20000, "the wasm module loading");

  // Connect and see the handshake on the page.
  await page.fill("#config", env("CONFIG"));
  await page.fill("#token", process.env.TOKEN || "");
  await page.click("#connect");
  await page.waitForFunction(() => ["up", "error", "closed"].includes(document.querySelector("#state").dataset.state), null, { timeout: 30000, polling: 200 });
  const state = await page.getAttribute("#state", "data-state");
  if (state !== "up") throw new Error(`the page did not connect: ${state}: ${await page.textContent("#state-detail")}`);
  await page.waitForFunction(() => document.querySelector("#stats").textContent.includes("handshakes"), null, { timeout: 5000, polling: 200 });
  result.stats = await page.evaluate(() => window.underpass.tunnel.stats());
  if (!(result.stats.handshakes >= 1) || result.stats.state !== "up") throw new Error(`stats say ${JSON.stringify(result.stats)}`);
  const expected = {
    "webtransport-stream": { transport: "webtransport", batched: true, downloadStream: true, shown: "webtransport · a stream both ways" },
    "webtransport-datagrams-down": { transport: "webtransport", batched: true, shown: "webtransport · QUIC datagrams down, a stream up" },
    "webtransport-datagrams": { transport: "webtransport", batched: false, shown: "webtransport · QUIC datagrams" },
    "websocket-batched": { transport: "websocket", batched: true, shown: "websocket · batched" },
    "websocket-plain": { transport: "websocket", batched: false, shown: "websocket · one datagram" },
  }[env("TRANSPORT")];
  if (result.stats.transport !== expected.transport || result.stats.batched !== expected.batched
      || result.stats.downloadStream !== (expected.downloadStream || false)) {
    throw new Error(`expected ${env("TRANSPORT")}, stats say ${JSON.stringify(result.stats)}; page console:\n${consoleLines.join("\n")}`);
  }
  if (!(await page.textContent("#stats")).includes(expected.shown)) {
    throw new Error(`the page does not show the transport: ${await page.textContent("#stats")}`);
  }

  // A known body, through the tunnel and directly.
  const direct = Buffer.from(await (await fetch(env("FETCH_URL"))).arrayBuffer());
  const want = createHash("sha256").update(direct).digest("hex");
  await page.fill("#url", env("FETCH_URL"));
  await page.click("#fetch");
  const status = await waitAttr("#fetch-meta", "data-status", 30000, "the fetch");
  const got = await page.getAttribute("#fetch-meta", "data-sha256");
  const length = Number(await page.getAttribute("#fetch-meta", "data-length"));
  result.fetch = { status, length, sha256: got };
  if (status !== "200" || got !== want || length !== direct.length) {
    throw new Error(`fetch through the tunnel: ${await page.textContent("#fetch-meta")}; expected 200, ${direct.length} bytes, SHA-256 ${want}`);
  }

  // 64 MiB down and the same 64 MiB back up, intact.
  const big = Buffer.from(await (await fetch(env("BIG_URL"))).arrayBuffer());
  const bigWant = createHash("sha256").update(big).digest("hex");
  result.big = await page.evaluate(async ([url, sink]) => {
    const t = window.underpass.tunnel;
    const hex = async (b) => [...new Uint8Array(await crypto.subtle.digest("SHA-256", b))].map((x) => x.toString(16).padStart(2, "0")).join("");
    let started = performance.now();
    const down = await t.fetch(url, { method: "GET" });
    const downSeconds = (performance.now() - started) / 1000;
    started = performance.now();
    const up = await t.fetch(sink, { method: "POST", body: down.body });
    const upSeconds = (performance.now() - started) / 1000;
    return {
      status: down.status, length: down.body.length, sha256: await hex(down.body), downSeconds,
      sinkStatus: up.status, sink: new TextDecoder().decode(up.body).trim(), upSeconds,
    };
  }, [env("BIG_URL"), env("SINK_URL")]);
  if (result.big.status !== 200 || result.big.length !== big.length || result.big.sha256 !== bigWant) {
    throw new Error(`64 MiB down: ${JSON.stringify(result.big)}; expected 200, ${big.length} bytes, SHA-256 ${bigWant}`);
  }
  if (result.big.sinkStatus !== 200 || result.big.sink !== env("SINK_WANT")) {
    throw new Error(`64 MiB up: the server got ${JSON.stringify(result.big.sink)}, expected ${env("SINK_WANT")}`);
  }

  // A refused connection is reported, not hung.
  await page.evaluate(() => { document.querySelector("#fetch-meta").removeAttribute("data-status"); });
  await page.fill("#url", env("CLOSED_URL"));
  await page.click("#fetch");
  await waitAttr("#fetch-meta", "data-status", 30000, "the refused fetch");
  result.refused = await page.textContent("#fetch-meta");
  if (!/refused/i.test(result.refused)) throw new Error(`a fetch to a closed port says: ${result.refused}`);

  // Raw TCP echo.
  await page.fill("#tcp-target", env("ECHO"));
  await page.fill("#tcp-message", "ping through the tunnel");
  await page.click("#tcp-send");
  await page.waitForFunction(() => /←|error/.test(document.querySelector("#tcp-log").textContent), null, { timeout: 30000, polling: 200 });
  result.echo = await page.textContent("#tcp-log");
  if (!result.echo.includes("← ping through the tunnel")) throw new Error(`echo: ${result.echo}`);

  // The benchmark.
  await page.fill("#bench-url", env("BENCH_URL"));
  await page.click("#bench");
  const mbps = await waitAttr("#bench-result", "data-mbps", 300000, "the benchmark");
  result.bench = await page.textContent("#bench-result");
  if (mbps === "error") throw new Error(`benchmark: ${result.bench}`);
  result.benchBytes = Number(await page.getAttribute("#bench-result", "data-bytes"));
  if (result.benchBytes !== 64 * 1024 * 1024) throw new Error(`benchmark moved ${result.benchBytes} bytes`);
} catch (e) {
  failed = e;
} finally {
  if (process.env.OUT_DIR) {
    await page.screenshot({ path: join(process.env.OUT_DIR, "web-demo.png"), fullPage: true }).catch(() => {});
  }
  await context.close();
  rmSync(profile, { recursive: true, force: true });
}
console.log(`RESULT ${JSON.stringify(result)}`);
if (failed) {
  console.error(`FAILED: ${failed.message}`);
  console.error(`page console:\n${consoleLines.join("\n")}`);
  process.exit(1);
}
