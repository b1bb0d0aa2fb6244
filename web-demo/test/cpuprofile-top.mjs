// Sums a .cpuprofile (Chrome DevTools' format, as bench.mjs writes with
// PROFILE set) by function: self time per name, the top N with their share
// of the recorded time, then the same summed by rough kind (crypto, the
// rest of the wasm, memcpy/alloc, JS, GC, Chromium's own), each as a
// share of all the time recorded and of the time the thread was not idle.
//
//   node web-demo/test/cpuprofile-top.mjs FILE.cpuprofile [N=40] [--total] [--callers=TEXT]
//
// --total also lists the top N by total (self + callees) time;
// --callers=TEXT splits the self time of the functions whose name has
// TEXT by their callers (--depth=N frames up, 2 unless told).
import { readFileSync } from "node:fs";

const args = process.argv.slice(2);
const file = args.find((a) => !/^--|^\d+$/.test(a));
const callersOf = args.find((a) => a.startsWith("--callers="))?.slice("--callers=".length);
const depth = Number(args.find((a) => a.startsWith("--depth="))?.slice("--depth=".length) || 2);
const top = Number(args.find((a) => /^\d+$/.test(a)) || 40);
if (!file) {
  console.error("usage: cpuprofile-top.mjs FILE.cpuprofile [N] [--total]");
  process.exit(2);
}
const profile = JSON.parse(readFileSync(file, "utf8"));
const nodes = new Map(profile.nodes.map((n) => [n.id, n]));

// Each sample stands for the time up to the next one.
const selfUs = new Map();
const { samples, timeDeltas } = profile;
for (let i = 0; i < samples.length; i++) {
  const dt = i + 1 < timeDeltas.length ? timeDeltas[i + 1] : 0;
  selfUs.set(samples[i], (selfUs.get(samples[i]) || 0) + Math.max(dt, 0));
}
const total = [...selfUs.values()].reduce((a, b) => a + b, 0);
// The share of the time the thread was busy, too: (idle) left out.
let idle = 0;
for (const [id, us] of selfUs) if (nodes.get(id).callFrame.functionName === "(idle)") idle += us;
const busy = total - idle;

// Chromium names a wasm frame's url after the module's (…_bg.wasm), or
// wasm://wasm/… when it has none; its wrappers are js-to-wasm/wasm-to-js.
const isWasm = (f) => /^wasm:\/\/|\.wasm$/.test(f.url);

function label(n) {
  const f = n.callFrame;
  const name = f.functionName || "(anonymous)";
  let where = "";
  if (isWasm(f)) where = "wasm";
  else if (f.url) where = `${f.url.split("/").pop()}:${f.lineNumber + 1}`;
  return where ? `${name}  [${where}]` : name;
}

function kind(n) {
  const f = n.callFrame;
  const name = f.functionName;
  if (name === "(garbage collector)") return "GC";
  if (name === "(idle)") return "(idle)";
  if (name === "(program)" || name === "(root)") return "(program): Chromium outside JS/wasm";
  if (name === "js-to-wasm::" || name === "wasm-to-js" || /^js-to-wasm|^wasm-to-js/.test(name)) return "JS<->wasm wrappers";
  if (isWasm(f)) {
    if (/chacha|poly1305|ChaCha|Poly1305|aead|ring_core/.test(name)) return "wasm: crypto (ring ChaCha20/Poly1305)";
    if (/^(memcpy|memmove|memset|memcmp)$|compiler_builtins::mem|dlmalloc|__rust_(alloc|dealloc|realloc)|alloc::raw_vec|__rdl_|RawVec|<alloc::vec|alloc::alloc/.test(name)) return "wasm: memcpy/alloc";
    if (/smoltcp/.test(name)) return "wasm: smoltcp";
    if (/ResponseDecoder|TcpStream::read_some/.test(name)) return "wasm: Tunnel.fetch's body (http, stream.rs)";
    if (/wasm_bindgen|js_sys|web_sys|__wbg|__wbindgen|externref/.test(name)) return "wasm: wasm-bindgen glue";
    return "wasm: engine/other";
  }
  if (/underpass_wasm\.js$/.test(f.url)) return "JS: wasm-bindgen glue (underpass_wasm.js)";
  if (/snippets\//.test(f.url)) return "JS: our inline JS (snippets)";
  if (f.url) return `JS: other (${f.url.split("/").pop() || f.url})`;
  return "JS builtins / Chromium bindings (no url)";
}

const byName = new Map();
const byKind = new Map();
for (const [id, us] of selfUs) {
  const n = nodes.get(id);
  const l = label(n);
  byName.set(l, (byName.get(l) || 0) + us);
  const k = kind(n);
  byKind.set(k, (byKind.get(k) || 0) + us);
}
const pct = (us, l = "") => `${(100 * us / total).toFixed(1).padStart(5)}% ${l.startsWith("(idle)") ? "     -" : `${(100 * us / busy).toFixed(1).padStart(5)}%`}`;
const ms = (us) => `${(us / 1000).toFixed(0).padStart(7)} ms`;

console.log(`${file}: ${samples.length} samples, ${(total / 1e6).toFixed(2)} s recorded, ${(busy / 1e6).toFixed(2)} s not idle`);
console.log("(each line: % of the recorded time, % of the time not idle, ms)");
console.log(`\nself time by function (top ${top}):`);
for (const [l, us] of [...byName].sort((a, b) => b[1] - a[1]).slice(0, top)) {
  console.log(`${pct(us, l)} ${ms(us)}  ${l}`);
}
console.log("\nself time by kind:");
for (const [k, us] of [...byKind].sort((a, b) => b[1] - a[1])) {
  console.log(`${pct(us, k)} ${ms(us)}  ${k}`);
}

if (callersOf) {
  const parent = new Map();
  for (const n of profile.nodes) for (const c of n.children || []) parent.set(c, n.id);
  const byCaller = new Map();
  for (const [id, us] of selfUs) {
    if (!label(nodes.get(id)).includes(callersOf)) continue;
    const up = [];
    for (let p = parent.get(id); p !== undefined && up.length < depth; p = parent.get(p)) up.push(label(nodes.get(p)));
    const l = up.join("  <-  ");
    byCaller.set(l, (byCaller.get(l) || 0) + us);
  }
  console.log(`\nself time of *${callersOf}* by caller:`);
  for (const [l, us] of [...byCaller].sort((a, b) => b[1] - a[1]).slice(0, top)) {
    console.log(`${pct(us)} ${ms(us)}  ${l}`);
  }
}

if (args.includes("--total")) {
  // Total time: a node's self plus its descendants', once per name on a
  // path (recursion is not counted twice).
  const parent = new Map();
  for (const n of profile.nodes) for (const c of n.children || []) parent.set(c, n.id);
  const totalByName = new Map();
  for (const [id, us] of selfUs) {
    const seen = new Set();
    for (let p = id; p !== undefined; p = parent.get(p)) {
      const l = label(nodes.get(p));
      if (seen.has(l)) continue;
      seen.add(l);
      totalByName.set(l, (totalByName.get(l) || 0) + us);
    }
  }
  console.log(`\ntotal time by function (top ${top}):`);
  for (const [l, us] of [...totalByName].sort((a, b) => b[1] - a[1]).slice(0, top)) {
    console.log(`${pct(us)} ${ms(us)}  ${l}`);
  }
}
