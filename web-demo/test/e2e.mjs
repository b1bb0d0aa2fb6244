// The web demo, end to end in Debian's chromium: connect through the relay,
// fetch a known body through the tunnel and compare it with the same URL
// fetched directly, echo over raw TCP, see a refused connection reported,
// run the 64 MiB benchmark, save a screenshot.
//
// Started by tests/tests/browser.rs with, in the environment:
//   PAGE_URL   the relay's page          CONFIG    the client config
//   TOKEN      the relay token           FETCH_URL a URL behind the gateway
//   ECHO       host:port of a TCP echo   BENCH_URL a URL of >= 64 MiB
//   CLOSED_URL a URL nothing listens on  OUT_DIR   where the screenshot goes
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
const ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
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
