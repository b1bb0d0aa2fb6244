// Sums a Chromium trace (as bench.mjs writes with TRACE set) for one
// thread, the renderer's main thread unless told: the thread time of
// its top-level tasks by where they were posted from, and of every
// event by name (events nest, so those overlap). First, the busiest
// threads of all the processes, to see what else ran meanwhile.
//
//   node web-demo/test/trace-tasks.mjs FILE.trace.json [N=30] [THREAD=CrRendererMain]
import { readFileSync } from "node:fs";

const [file, n = "30", threadName = "CrRendererMain"] = process.argv.slice(2);
const trace = JSON.parse(readFileSync(file, "utf8"));
const events = Array.isArray(trace) ? trace : trace.traceEvents;
const threads = events.filter((e) => e.ph === "M" && e.name === "thread_name" && e.args.name === threadName);
// The busiest such thread (other renderers, e.g. a spare one, idle).
const key = (e) => `${e.pid}:${e.tid}`;
const busy = new Map();
for (const e of events) if (e.ph === "X" && e.dur) busy.set(key(e), (busy.get(key(e)) || 0) + e.dur);
// The page's renderer is "Renderer"; a WebUI one ("WebUI Top Renderer")
// may run at the same time.
const processName = new Map(events.filter((e) => e.ph === "M" && e.name === "process_name").map((e) => [e.pid, e.args.name]));
const rank = (k) => (processName.get(Number(k.split(":")[0])) === "Renderer" ? 1e15 : 0) + (busy.get(k) || 0);
const thread = threads.map(key).sort((a, b) => rank(b) - rank(a))[0];
if (!thread) throw new Error(`no thread named ${threadName}`);
const mine = events.filter((e) => key(e) === thread && e.ph === "X").sort((a, b) => a.ts - b.ts || b.dur - a.dur);
const time = (e) => e.tdur ?? e.dur ?? 0; // thread time when recorded
const first = mine.reduce((m, e) => Math.min(m, e.ts), Infinity);
const last = mine.reduce((m, e) => Math.max(m, e.ts + e.dur), -Infinity);

// Self time of each event: its own less its children's.
const self = new Map();
{
  const stack = [];
  for (const e of mine) {
    while (stack.length && e.ts >= stack.at(-1).ts + stack.at(-1).dur) stack.pop();
    const parent = stack.at(-1);
    const k = e.name;
    self.set(k, (self.get(k) || 0) + time(e));
    if (parent) self.set(parent.name, (self.get(parent.name) || 0) - time(e));
    stack.push(e);
  }
}
// Tasks by where they were posted from.
const posted = new Map();
for (const e of mine) {
  if (e.name !== "ThreadControllerImpl::RunTask" || !e.args?.src_func) continue;
  const k = `${e.args.src_file.split("/").slice(-2).join("/")}:${e.args.src_func}`;
  posted.set(k, (posted.get(k) || 0) + time(e));
}
const top = new Map();
const byName = new Map();
let end = -1;
let busyTotal = 0;
for (const e of mine) {
  byName.set(e.name, (byName.get(e.name) || 0) + time(e));
  if (e.ts >= end) {
    // A top-level event: the outermost on the thread at its time.
    end = e.ts + e.dur;
    const from = e.args?.src_func ? `${e.args.src_file?.split("/").slice(-2).join("/")}:${e.args.src_func}` : "";
    const k = from ? `${e.name} <- ${from}` : e.name;
    top.set(k, (top.get(k) || 0) + time(e));
    busyTotal += time(e);
  }
}
const span = last - first;
{
  const threadName = new Map(events.filter((e) => e.ph === "M" && e.name === "thread_name").map((e) => [key(e), e.args.name]));
  const ends = new Map();
  const perThread = new Map();
  for (const e of events.filter((e) => e.ph === "X").sort((a, b) => a.ts - b.ts || b.dur - a.dur)) {
    const k = key(e);
    if (e.ts < (ends.get(k) ?? -1)) continue;
    ends.set(k, e.ts + e.dur);
    perThread.set(k, (perThread.get(k) || 0) + time(e));
  }
  console.log(`${file}: busiest threads (thread time of their top-level events):`);
  for (const [k, us] of [...perThread].sort((a, b) => b[1] - a[1]).slice(0, 8)) {
    console.log(`${(us / 1000).toFixed(0).padStart(6)} ms  ${processName.get(Number(k.split(":")[0]))} / ${threadName.get(k)}`);
  }
  console.log();
}
const ms = (us) => `${(us / 1000).toFixed(0).padStart(6)} ms`;
const pct = (us) => `${(100 * us / busyTotal).toFixed(1).padStart(5)}%`;
console.log(`${file}: thread ${threadName} of ${processName.get(Number(thread.split(":")[0]))} (${thread}); ${(span / 1e6).toFixed(2)} s traced, top-level events ${ms(busyTotal)} of thread time`);
console.log(`\ntasks by where they were posted from:`);
for (const [k, us] of [...posted].sort((a, b) => b[1] - a[1]).slice(0, Number(n))) console.log(`${pct(us)} ${ms(us)}  ${k}`);
console.log(`\nself time by event name (less the events nested in it):`);
for (const [k, us] of [...self].sort((a, b) => b[1] - a[1]).slice(0, Number(n))) console.log(`${pct(us)} ${ms(us)}  ${k}`);
console.log(`\nall events by name (nested, so overlapping):`);
for (const [k, us] of [...byName].sort((a, b) => b[1] - a[1]).slice(0, Number(n))) console.log(`${pct(us)} ${ms(us)}  ${k}`);
