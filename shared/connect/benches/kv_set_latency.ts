// Sequential `kv.set` latency through a KV Connect server, from a real client: Deno's
// own (`Deno.openKv`) when run by Deno, the npm client `@deno/kv` when run by Node.
//
//   SUBKV_KV_URL=http://127.0.0.1:9000/databases/<id>/connect \
//   DENO_KV_ACCESS_TOKEN=<token> deno run --unstable-kv --allow-env --allow-net \
//     shared/connect/benches/kv_set_latency.ts
//
//   SUBKV_KV_URL=... DENO_KV_ACCESS_TOKEN=... SUBKV_KV_NODE_DIR=tests/kv-node \
//     node shared/connect/benches/kv_set_latency.ts
//
// (Node 23.6 or newer runs TypeScript by stripping its types; SUBKV_KV_NODE_DIR is
// the folder whose node_modules holds @deno/kv.)
//
// Opens the database (the metadata exchange happens here, untimed), does
// SUBKV_LATENCY_WARMUP sets (default 20) untimed, then SUBKV_LATENCY_SETS sets
// (default 200), one at a time, each timed from the call to its resolved promise.
// Every set writes its own key (["latency", <run>, i]) with a small object value.
// Prints one markdown table row (label from SUBKV_LATENCY_LABEL) and a JSON line.

type SetResult = { ok: boolean };
type Kv = { set(key: Deno.KvKey, value: unknown): Promise<SetResult>; close(): void };
// deno-lint-ignore no-explicit-any
const node = (globalThis as any).process;
const deno = "Deno" in globalThis;
const env = (name: string): string | undefined => deno ? Deno.env.get(name) : node.env[name];
const exit = (code: number): never => deno ? Deno.exit(code) : node.exit(code) as never;

const url = env("SUBKV_KV_URL");
if (!url) {
  console.error("SUBKV_KV_URL must be the database's KV Connect URL");
  exit(2);
}
const warmup = Number(env("SUBKV_LATENCY_WARMUP") ?? "20");
const sets = Number(env("SUBKV_LATENCY_SETS") ?? "200");
const label = env("SUBKV_LATENCY_LABEL") ?? url;

async function open(url: string): Promise<Kv> {
  if (deno) return await Deno.openKv(url);
  const { createRequire } = await import("node:module");
  const dir = env("SUBKV_KV_NODE_DIR");
  if (!dir) {
    console.error("SUBKV_KV_NODE_DIR must be a folder whose node_modules holds @deno/kv");
    return exit(2);
  }
  const require = createRequire(`${node.cwd()}/${dir}/package.json`);
  const { openKv } = require("@deno/kv");
  return await openKv(url, { accessToken: env("DENO_KV_ACCESS_TOKEN") });
}

const kv = await open(url!);
const run = crypto.randomUUID();
const value = (i: number) => ({ i, name: `entry ${i}`, at: Date.now(), tags: ["a", "b", "c"] });

for (let i = 0; i < warmup; i++) {
  const r = await kv.set(["latency", run, "warmup", i], value(i));
  if (!r.ok) throw new Error("warm-up set failed");
}
const times: number[] = [];
for (let i = 0; i < sets; i++) {
  const started = performance.now();
  const r = await kv.set(["latency", run, i], value(i));
  times.push(performance.now() - started);
  if (!r.ok) throw new Error(`set ${i} failed`);
}
kv.close();

times.sort((a, b) => a - b);
const pct = (p: number) => times[Math.min(times.length - 1, Math.ceil((p / 100) * times.length) - 1)];
const mean = times.reduce((a, b) => a + b, 0) / times.length;
const ms = (x: number) => `${x.toFixed(2)} ms`;
console.log("| server | sets | min | p50 | p90 | p99 | max | mean |");
console.log("|---|---|---|---|---|---|---|---|");
console.log(
  `| ${label} | ${sets} | ${ms(times[0])} | ${ms(pct(50))} | ${ms(pct(90))} | ${ms(pct(99))} | ${
    ms(times[times.length - 1])
  } | ${ms(mean)} |`,
);
console.log(JSON.stringify({
  label,
  sets,
  warmup,
  min: times[0],
  p50: pct(50),
  p90: pct(90),
  p99: pct(99),
  max: times[times.length - 1],
  mean,
}));
