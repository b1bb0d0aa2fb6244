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
import { chromium } from "playwright-core";
import { mkdtempSync, readFileSync, readdirSync, rmSync } from "node:fs";
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

const profile = mkdtempSync(join(tmpdir(), "underpass-bench-"));
const context = await chromium.launchPersistentContext(profile, {
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
let failed = null;
const result = {};
try {
  const page = context.pages()[0] || await context.newPage();
  await page.goto(env("PAGE_URL"));
  await page.waitForFunction(() => document.body.dataset.ready, null, { timeout: 20000, polling: 100 });
  const options = { config: env("CONFIG"), token: env("TOKEN"), ...JSON.parse(process.env.CONNECT || "{}") };
  const bytes = Number(env("BYTES"));
  result.stats = await page.evaluate(async (options) => {
    const relay = new URL("relay", location.href);
    relay.protocol = "ws:";
    const t = await window.underpass.Tunnel.connect({ relayUrl: relay.href, ...options });
    window.underpass.tunnel = t;
    window.benchBody = null;
    return t.stats();
  }, options);
  // One direction at a time, each with its own CPU account.
  const run = async (what, fn, arg) => {
    const before = sample();
    const r = await page.evaluate(fn, arg);
    result[what] = { ...r, mbps: +(r.bytes * 8 / r.seconds / 1e6).toFixed(1), cpu: diff(before, sample()) };
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
  result.statsAfter = await page.evaluate(() => window.underpass.tunnel.stats());
} catch (e) {
  failed = e;
} finally {
  await context.close();
  rmSync(profile, { recursive: true, force: true });
}
console.log(`RESULT ${JSON.stringify(result)}`);
if (failed) {
  console.error(`FAILED: ${failed.message}`);
  process.exit(1);
}
